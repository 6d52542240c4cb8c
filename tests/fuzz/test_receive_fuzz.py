"""Mutation fuzzing of the native transport's receive path (broker/mqtt.py), and a differential check against paho.

The outcome of any byte stream is a correct delivery or a protocol error, never a made-up message:

- a valid stream is delivered whole and the same whatever way it is split (in one piece, at every byte, at random);
- a mutated stream (truncated, bits flipped, bytes overwritten or inserted, a length field changed) delivers only
  messages that are exactly what a packet of that stream says (its topic field, its packet id, its flags, and its
  payload running to the packet's end), in order, and ends in a :class:`~schemas.errors.ProtocolViolation` or in
  waiting for more bytes; nothing else is raised;
- paho decodes the same valid streams (fed through a socket pair) to the same messages.

Seeded and bounded: ``derandomize=True`` and a fixed number of examples per test (see ``EXAMPLES``).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import paho.mqtt.client as paho
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from broker import mqtt
from schemas.errors import ProtocolViolation

#: examples per test (the report quotes these)
EXAMPLES = {"valid_splits": 300, "mutations": 2000, "paho": 300}

Delivery = tuple[str, bytes, int, bool, int, "str | None"]


class FakeTransport(asyncio.Transport):
    """What a Connection writes goes here; nothing is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def feed(stream: bytes, v5: bool, cuts: list[int]) -> tuple[list[Delivery], BaseException | None]:
    """Feed ``stream`` to a fresh Connection in pieces ending at ``cuts``; (deliveries, how it ended)."""

    async def run() -> tuple[list[Delivery], BaseException | None]:
        got: list[Delivery] = []
        conn = mqtt.Connection(
            mqtt.ConnectSpec("fuzz", v5=v5, keepalive_s=0), lambda *m: got.append(m), manual_ack=False, max_queued=10
        )
        conn.connection_made(FakeTransport())
        at = 0
        for cut in [*sorted(set(cuts)), len(stream)]:
            if cut > at:
                conn.data_received(stream[at:cut])
                at = cut
        assert conn.stats.callback_errors == 0
        error = conn.closed.exception() if conn.closed.done() else None
        return got, error

    return asyncio.run(run())


# ---------------------------------------------------------------------------------------------- streams


def connack(v5: bool) -> bytes:
    body = b"\x00\x00" + (mqtt.encode_properties({mqtt.RECEIVE_MAXIMUM: 20}) if v5 else b"")
    return bytes((mqtt.CONNACK,)) + mqtt.varint(len(body)) + body


topics = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00+#"), min_size=1, max_size=30
)
message = st.tuples(
    topics,
    st.binary(max_size=200),
    st.sampled_from([0, 1, 2]),
    st.booleans(),
    st.none() | st.sampled_from(["application/msgpack", "application/json", "text/ü"]),
)


def encode(messages: list[tuple[str, bytes, int, bool, str | None]], v5: bool) -> tuple[bytes, list[Delivery]]:
    """A valid stream (CONNACK, then each PUBLISH, a PUBREL after each QoS 2 one) and the deliveries it means."""
    stream = bytearray(connack(v5))
    expected: list[Delivery] = []
    for mid, (topic, payload, qos, retain, ctype) in enumerate(messages, start=1):
        props = mqtt.content_type_properties(ctype) if v5 else b""
        stream += mqtt.encode_publish(topic.encode(), payload, qos, retain, mid if qos else 0, props)
        if qos == 2:
            stream += bytes((mqtt.PUBREL | 0x02, 2)) + mid.to_bytes(2, "big")
        expected.append((topic, payload, qos, retain, mid if qos else 0, ctype if v5 else None))
    stream += b"\xd0\x00"  # a PINGRESP
    return bytes(stream), expected


streams = st.tuples(st.lists(message, min_size=1, max_size=12), st.booleans())


# ---------------------------------------------------------------------------------------------- valid streams


@settings(max_examples=EXAMPLES["valid_splits"], derandomize=True, deadline=None)
@given(spec=streams, cuts=st.lists(st.integers(0, 3000), max_size=30))
def test_a_valid_stream_is_delivered_whole_however_it_is_split(
    spec: tuple[list[tuple[str, bytes, int, bool, str | None]], bool], cuts: list[int]
) -> None:
    messages, v5 = spec
    stream, expected = encode(messages, v5)
    whole = feed(stream, v5, [])
    assert whole == (expected, None)
    assert feed(stream, v5, cuts) == whole
    if len(stream) <= 300:
        assert feed(stream, v5, list(range(len(stream)))) == whole  # split at every byte


# ---------------------------------------------------------------------------------------------- mutations


def frames(stream: bytes) -> list[tuple[int, int, int]]:
    """The (start, body start, end) of each complete packet, by length headers alone, up to the first that is not."""
    out = []
    pos = 0
    while pos + 2 <= len(stream):
        try:
            length, body = mqtt.read_varint_safe(stream, pos + 1)
        except ProtocolViolation:
            break
        if body < 0 or body + length > len(stream):
            break
        out.append((pos, body, body + length))
        pos = body + length
    return out


def matches(stream: bytes, frame: tuple[int, int, int], got: Delivery) -> bool:
    """Whether ``got`` is exactly what the PUBLISH in ``frame`` says."""
    start, body, end = frame
    first = stream[start]
    topic, payload, qos, retain, mid, _ = got
    if first & 0xF0 != mqtt.PUBLISH or (first >> 1) & 3 != qos or bool(first & 1) != retain:
        return False
    raw = topic.encode()
    if stream[body : body + 2] != len(raw).to_bytes(2, "big") or stream[body + 2 : body + 2 + len(raw)] != raw:
        return False
    after = body + 2 + len(raw)
    if qos and int.from_bytes(stream[after : after + 2], "big") != mid:
        return False
    return stream[end - len(payload) : end] == payload and end - len(payload) >= after + (2 if qos else 0)


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("length"), st.integers(0, 40), st.integers(-5, 5)),
)


def mutate(stream: bytes, op: tuple[str, int, int]) -> bytes:
    kind, at, arg = op
    data = bytearray(stream)
    if not data:
        return stream
    i = at % len(data)
    if kind == "truncate":
        return bytes(data[:i])
    if kind == "flip":
        data[i] ^= 1 << arg
    elif kind == "set":
        data[i] = arg
    elif kind == "insert":
        data.insert(i, arg)
    else:  # change the remaining length of the at-th packet
        found = frames(stream)
        if not found:
            return stream
        start, body, end = found[at % len(found)]
        new = max(0, end - body + arg)
        return stream[: start + 1] + mqtt.varint(new) + stream[body:]
    return bytes(data)


@settings(
    max_examples=EXAMPLES["mutations"], derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(spec=streams, ops=st.lists(mutation, min_size=1, max_size=3), cuts=st.lists(st.integers(0, 3000), max_size=8))
def test_a_mutated_stream_never_makes_up_a_message(
    spec: tuple[list[tuple[str, bytes, int, bool, str | None]], bool],
    ops: list[tuple[str, int, int]],
    cuts: list[int],
) -> None:
    messages, v5 = spec
    stream, _ = encode(messages, v5)
    for op in ops:
        stream = mutate(stream, op)
    got, error = feed(stream, v5, cuts)
    # a protocol violation, or the broker's own words: a refused CONNACK, a DISCONNECT with its reason
    assert error is None or isinstance(error, ProtocolViolation | mqtt.Refused) or "the broker closed" in str(error)
    assert feed(stream, v5, []) == (got, error) or error is not None  # splits change nothing that was delivered
    candidates = [f for f in frames(stream) if stream[f[0]] & 0xF0 == mqtt.PUBLISH]
    i = 0
    for delivery in got:  # each delivery is exactly a PUBLISH of the stream, in order (QoS 2 repeats skipped)
        while i < len(candidates) and not matches(stream, candidates[i], delivery):
            i += 1
        assert i < len(candidates), f"made-up message {delivery!r}"
        i += 1


# ---------------------------------------------------------------------------------------------- paho


def paho_decode(stream: bytes, v5: bool) -> list[Delivery]:
    """What paho's receive path makes of ``stream`` (fed through a socket pair to an unconnected client)."""
    ours, theirs = socket.socketpair()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="diff", protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
    got: list[Delivery] = []

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        ctype = getattr(props, "ContentType", None) if props is not None else None
        got.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid, ctype))

    client.on_message = on_message
    client._sock = ours
    theirs.sendall(stream)
    theirs.shutdown(socket.SHUT_WR)
    ours.setblocking(False)
    try:
        for _ in range(10 * len(stream) + 10):
            if client.loop_read() != paho.MQTT_ERR_SUCCESS:
                break
    finally:
        ours.close()
        theirs.close()
    return got


@settings(max_examples=EXAMPLES["paho"], derandomize=True, deadline=None)
@given(spec=streams)
def test_paho_decodes_the_same_valid_streams_to_the_same_messages(
    spec: tuple[list[tuple[str, bytes, int, bool, str | None]], bool],
) -> None:
    messages, v5 = spec
    stream, expected = encode(messages, v5)
    native, error = feed(stream, v5, [])
    assert error is None
    assert native == expected
    theirs = paho_decode(stream, v5)
    # paho reports a QoS 0 message's mid as 0 as well, and delivers a QoS 2 message at its PUBREL (sent right after)
    assert theirs == native
