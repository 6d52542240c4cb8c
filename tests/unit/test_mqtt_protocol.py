"""broker/mqtt.py: packet encoding, and the connection fed over a real socket pair in arbitrary chunks."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import mqtt
from broker.bus import ERR_QUEUE_SIZE, ERR_SUCCESS
from schemas.errors import BusConnectionError, PublishError


@given(st.integers(min_value=0, max_value=268_435_455))
def test_varint_round_trip(n: int) -> None:
    raw = mqtt.varint(n)
    assert len(raw) <= 4
    assert mqtt.read_varint(raw, 0) == (n, len(raw))
    assert mqtt.read_varint_safe(raw[:-1], 0) == (0, -1)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            # a UTF-8 string of the protocol: no U+0000 and no surrogates [MQTT-1.5.4-1, -2]
            mqtt.CONTENT_TYPE: st.text(
                st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40
            ),
            mqtt.SESSION_EXPIRY: st.integers(0, 2**32 - 1),
            mqtt.RECEIVE_MAXIMUM: st.integers(1, 65535),
            0x01: st.integers(0, 1),
            0x09: st.binary(max_size=30),
        },
    )
)
def test_properties_round_trip(props: dict[int, Any]) -> None:
    raw = mqtt.encode_properties(props)
    decoded, end = mqtt.read_properties(raw, 0)
    assert end == len(raw)
    assert decoded == props


def test_connect_packet_carries_everything() -> None:
    spec = mqtt.ConnectSpec(
        client_id="alice/ring/ring-1",
        v5=True,
        keepalive_s=30,
        clean_start=False,
        session_expiry_s=3600,
        receive_maximum=500,
        username="alice/ring/ring-1",
        password="pw",
        will=mqtt.Will("wb/v1/alice/ring/ring-1/state", b"offline", 1, True),
    )
    raw = mqtt.encode_connect(spec)
    assert raw[0] == mqtt.CONNECT
    length, pos = mqtt.read_varint(raw, 1)
    assert pos + length == len(raw)
    assert raw[pos : pos + 6] == b"\x00\x04MQTT"
    level, flags = raw[pos + 6], raw[pos + 7]
    assert level == 5
    assert flags == 0x80 | 0x40 | 0x20 | (1 << 3) | 0x04  # user, password, will retain, will QoS 1, will; no clean
    props, pos = mqtt.read_properties(raw, pos + 10)
    assert props == {
        mqtt.RECEIVE_MAXIMUM: 500,
        mqtt.SESSION_EXPIRY: 3600,
        mqtt.MAXIMUM_PACKET_SIZE: mqtt.MAX_PACKET_SIZE,
    }
    assert b"alice/ring/ring-1" in raw[pos:]
    assert raw.endswith(b"\x00\x02pw")


# ---------------------------------------------------------------------------------------------- over a socket pair


class Peer:
    """The broker's side of a socket pair, driven by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.buf = b""

    async def read_packet(self, timeout: float = 5.0) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                if len(self.buf) >= 2:
                    length, pos = mqtt.read_varint_safe(self.buf, 1)
                    if pos > 0 and pos + length <= len(self.buf):
                        first, body = self.buf[0], self.buf[pos : pos + length]
                        self.buf = self.buf[pos + length :]
                        return first, body
                chunk = await loop.sock_recv(self.sock, 65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buf += chunk

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)


class Received(list[tuple[str, bytes, int, bool, int, str | None]]):
    """What the connection handed over, with a way to wait for more."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    def __call__(self, *item: Any) -> None:
        self.append(item)
        self.arrived.set()

    async def wait(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self) < n:
                self.arrived.clear()
                await self.arrived.wait()


async def open_pair(v5: bool, *, manual_ack: bool = False, receive_maximum: int | None = None) -> tuple[Any, ...]:
    ours, theirs = socket.socketpair()
    received = Received()
    spec = mqtt.ConnectSpec(client_id="c1", v5=v5, keepalive_s=60)
    conn = mqtt.Connection(spec, received, manual_ack=manual_ack, max_queued=10)
    connected = asyncio.Event()
    conn.on_connack = lambda _present: connected.set()
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: conn, sock=ours)
    peer = Peer(theirs)
    first, _ = await peer.read_packet()
    assert first == mqtt.CONNECT
    connack = b"\x00\x00"
    if v5:
        props = {mqtt.RECEIVE_MAXIMUM: receive_maximum} if receive_maximum else {}
        connack += mqtt.encode_properties(props)
    await peer.send(bytes((mqtt.CONNACK,)) + mqtt.varint(len(connack)) + connack)
    await asyncio.wait_for(connected.wait(), 5)
    return conn, peer, received


messages = st.lists(
    st.tuples(
        st.text(alphabet="abcxyz/", min_size=1, max_size=60),
        st.binary(max_size=300),
        st.integers(0, 1),
        st.booleans(),
        st.none() | st.sampled_from(["application/msgpack", "application/json"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=messages, cuts=st.lists(st.integers(1, 400), max_size=20), v5=st.booleans())
def test_publishes_arrive_whole_whatever_the_chunking(
    batch: list[tuple[str, bytes, int, bool, str | None]], cuts: list[int], v5: bool
) -> None:
    async def run() -> None:
        conn, peer, received = await open_pair(v5)
        stream = b""
        for i, (topic, payload, qos, retain, ctype) in enumerate(batch, start=1):
            props = mqtt.content_type_properties(ctype) if v5 else b""
            stream += mqtt.encode_publish(topic.encode(), payload, qos, retain, i, props)
        at = 0
        for cut in cuts:  # the same bytes, split where hypothesis likes
            await peer.send(stream[at : at + cut])
            at += cut
        await peer.send(stream[at:])
        await received.wait(len(batch))
        for (topic, payload, qos, retain, ctype), (t, p, q, r, _mid, c) in zip(batch, received, strict=True):
            assert (t, p, q, r) == (topic, payload, qos, retain)
            assert c == (ctype if v5 else None)
        acks = [i for i, m in enumerate(batch, start=1) if m[2] == 1]
        for mid in acks:  # QoS 1 is acknowledged automatically (manual_ack off), in order
            first, body = await peer.read_packet()
            assert first == mqtt.PUBACK
            assert int.from_bytes(body[:2], "big") == mid
        conn.abort()
        peer.sock.close()

    asyncio.run(run())


async def test_flow_control_queues_beyond_the_brokers_receive_maximum() -> None:
    conn, peer, _ = await open_pair(True, receive_maximum=2)
    futures = []
    for i in range(5):
        rc, fut = conn.publish(f"t/{i}", b"x", 1, track=True)
        assert rc == ERR_SUCCESS
        futures.append(fut)
    sent = [await peer.read_packet() for _ in range(2)]
    assert all(first & 0xF0 == mqtt.PUBLISH for first, _ in sent)
    with pytest.raises(TimeoutError):
        await peer.read_packet(timeout=0.2)  # the third waits for a PUBACK
    mid = int.from_bytes(sent[0][1][5:7], "big")  # after the 2-byte length and "t/0"
    await peer.send(bytes((mqtt.PUBACK, 2)) + mid.to_bytes(2, "big"))
    _, body = await peer.read_packet()
    assert body[2:5] == b"t/2"
    await asyncio.wait_for(futures[0], 5)
    # a refusal (MQTT 5 reason >= 0x80) fails that publish's future
    mid = int.from_bytes(sent[1][1][5:7], "big")
    await peer.send(bytes((mqtt.PUBACK, 3)) + mid.to_bytes(2, "big") + b"\x87")
    with pytest.raises(PublishError, match="Not authorized"):
        await asyncio.wait_for(futures[1], 5)
    # the queue is bounded: ERR_QUEUE_SIZE, never a silent drop
    codes = [conn.publish("t/q", b"x", 1)[0] for _ in range(20)]
    assert ERR_QUEUE_SIZE in codes
    # the connection ends: what is in flight or queued fails, nothing hangs
    peer.sock.close()
    for fut in futures[2:]:
        with pytest.raises(BusConnectionError):
            await asyncio.wait_for(fut, 5)
    with pytest.raises(BusConnectionError):
        await asyncio.wait_for(conn.closed, 5)


async def test_manual_ack_and_backpressure() -> None:
    conn, peer, received = await open_pair(False, manual_ack=True)
    await peer.send(mqtt.encode_publish(b"a/b", b"1", 1, False, 77, b""))
    await received.wait(1)
    with pytest.raises(TimeoutError):
        await peer.read_packet(timeout=0.2)  # nothing acknowledged yet
    conn.ack(77)
    first, body = await peer.read_packet()
    assert (first, body) == (mqtt.PUBACK, b"\x00\x4d")
    conn.pause()
    await peer.send(mqtt.encode_publish(b"a/b", b"2", 0, False, 0, b""))
    await asyncio.sleep(0.1)
    assert len(received) == 1  # paused: the message is held back (the socket is still read)
    conn.resume()
    await received.wait(2)
    conn.disconnect()
    first, _ = await peer.read_packet()
    assert first == mqtt.DISCONNECT
    assert conn.closed.done()
    assert conn.closed.exception() is None
    peer.sock.close()


async def test_refusals_and_garbage_end_the_connection_with_a_reason() -> None:
    conn, peer, _ = await open_pair(True)
    await peer.send(bytes((mqtt.DISCONNECT, 1, 0x8E)))
    with pytest.raises(BusConnectionError, match="Session taken over"):
        await asyncio.wait_for(conn.closed, 5)
    peer.sock.close()
    conn, peer, _ = await open_pair(False)
    await peer.send(b"\xf0\x00")  # not a packet a broker sends
    with pytest.raises(BusConnectionError, match="unexpected packet"):
        await asyncio.wait_for(conn.closed, 5)
    peer.sock.close()


async def test_open_reports_a_refused_login_and_no_answer() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    loop = asyncio.get_running_loop()

    async def refuse() -> None:
        sock, _ = await loop.sock_accept(server)
        await loop.sock_recv(sock, 4096)
        await loop.sock_sendall(sock, b"\x20\x02\x00\x05")  # 3.1.1: not authorised
        await asyncio.sleep(0.5)
        sock.close()

    task = asyncio.create_task(refuse())
    spec = mqtt.ConnectSpec(client_id="x", v5=False)
    with pytest.raises(mqtt.Refused, match="not authorised") as info:
        await mqtt.Connection.open("127.0.0.1", port, spec, lambda *a: None, timeout=5)
    assert not info.value.unsupported_version
    await task

    async def silent() -> None:
        sock, _ = await loop.sock_accept(server)
        await asyncio.sleep(1.0)
        sock.close()

    task = asyncio.create_task(silent())
    with pytest.raises(mqtt.NoAnswer):
        await mqtt.Connection.open("127.0.0.1", port, spec, lambda *a: None, timeout=0.3)
    await task
    server.close()
