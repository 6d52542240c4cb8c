"""The load generator's minimal MQTT 3.1.1 encoder and stream parser."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import wire


def decode_length(data: bytes) -> int:
    value, shift = 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
    return value


@given(st.integers(0, 268_435_455))
def test_remaining_length_round_trips(n: int) -> None:
    encoded = wire.remaining_length(n)
    assert 1 <= len(encoded) <= 4
    assert all(b & 0x80 for b in encoded[:-1])
    assert not encoded[-1] & 0x80
    assert decode_length(encoded) == n


@pytest.mark.parametrize("n", [-1, 268_435_456])
def test_remaining_length_out_of_range(n: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        wire.remaining_length(n)


topics = st.text(alphabet="abcdefghij/+-_0123456789", min_size=1, max_size=80)


@given(
    packets=st.lists(st.tuples(topics, st.binary(max_size=400), st.sampled_from([0, 1])), min_size=1, max_size=20),
    cuts=st.lists(st.integers(1, 64), min_size=1, max_size=50),
)
def test_parser_reassembles_publishes_cut_anywhere(packets: list[tuple[str, bytes, int]], cuts: list[int]) -> None:
    stream = b"".join(wire.publish_packet(t, p, q, pid=i + 1) for i, (t, p, q) in enumerate(packets))
    parser = wire.Parser()
    got: list[tuple[int, int, bytes]] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got += parser.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert len(got) == len(packets)
    for i, ((kind, flags, body), (topic, payload, qos)) in enumerate(zip(got, packets, strict=True)):
        assert kind == wire.PUBLISH
        assert wire.parse_publish(flags, body) == (topic, payload, qos, i + 1 if qos else 0)


def test_connect_packet_flags() -> None:
    will = wire.Will("wb/v1/u/ring/r1/state", b"off", qos=1, retain=True)
    packet = wire.connect_packet("c1", clean=True, keepalive=60, will=will, username="u", password="p")
    [(kind, _, body)] = wire.Parser().feed(packet)
    assert kind == wire.CONNECT
    assert body[:6] == b"\x00\x04MQTT"
    level, flags = body[6], body[7]
    assert level == 4
    assert flags == 0x02 | 0x04 | (1 << 3) | 0x20 | 0x80 | 0x40
    assert struct.unpack("!H", body[8:10]) == (60,)


def test_subscribe_packet_lists_filters() -> None:
    [(kind, flags, body)] = wire.Parser().feed(wire.subscribe_packet(7, [("a/#", 1), ("b/+", 0)]))
    assert (kind, flags) == (wire.SUBSCRIBE, 0x02)
    assert body == b"\x00\x07" + b"\x00\x03a/#\x01" + b"\x00\x03b/+\x00"


def test_malformed_remaining_length_is_refused() -> None:
    with pytest.raises(ValueError, match="malformed"):
        wire.Parser().feed(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
