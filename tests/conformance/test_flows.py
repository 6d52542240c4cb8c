"""Conformance of the native transport's flows (QoS 2 receive, redelivery, flow control, the broker's CONNACK
limits, write backpressure) and of both transports' subscribe, against the scripted fake broker.

Statement numbers as in test_receive.py: ``3.1.1 [MQTT-x]`` and ``5.0 [MQTT-x]``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from broker import mqtt
from broker.bus import ERR_QUEUE_SIZE, ERR_SUCCESS
from broker.client import MAX_REFUSALS, Bus, BusOptions, Outgoing
from schemas.errors import (
    BusConnectionError,
    MessageTooLarge,
    PublishError,
    QosNotSupported,
    SubscribeRefused,
)
from tests.conformance.conftest import open_connection
from tests.conformance.fake_broker import FakeBroker, Peer, connack, packet, publish, suback


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition`` (polled on the event loop), at most ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110  (a counter of the bus: nothing to wait on)
            await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------------------------- QoS 2 received


async def test_qos2_delivery_is_received_once_mqtt_4_3_3_2(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-4.3.3-2] / 5.0 [MQTT-4.3.3-8] [MQTT-4.3.3-10] [MQTT-4.3.3-11] [MQTT-4.3.3-12]: PUBREC with the
    packet id; a repeat before PUBREL is answered with PUBREC and not delivered again; PUBREL gets PUBCOMP; after it
    the same id is a new message. (The issue: a QoS 2 delivery looped the connection, nothing delivered.)"""
    opened = await open_connection(broker, v5=v5)
    peer = opened.peer
    await peer.send(publish("a/b", b"once", qos=2, mid=5, v5=v5))
    first, body = await peer.expect(mqtt.PUBREC)
    assert (first, body[:2]) == (mqtt.PUBREC, b"\x00\x05")
    dup = bytearray(publish("a/b", b"once", qos=2, mid=5, v5=v5))
    dup[0] |= 0x08
    await peer.send(bytes(dup))
    first, body = await peer.expect(mqtt.PUBREC)
    assert body[:2] == b"\x00\x05"
    await peer.send(b"\x62\x02\x00\x05")
    first, body = await peer.expect(mqtt.PUBCOMP)
    assert body[:2] == b"\x00\x05"
    assert [(t, p, q) for t, p, q, *_ in opened.received] == [("a/b", b"once", 2)]
    await peer.send(publish("a/b", b"again", qos=2, mid=5, v5=v5))
    await peer.expect(mqtt.PUBREC)
    await opened.received.wait(2)
    assert opened.received[1][1] == b"again"
    assert opened.conn.connected


async def test_qos2_with_manual_ack_sends_pubrec_on_ack(broker: FakeBroker) -> None:
    """5.0 [MQTT-4.3.3-8]: PUBREC once the message is owned (with manual ack: when the consumer acknowledges)."""
    opened = await open_connection(broker, v5=True, manual_ack=True)
    await opened.peer.send(publish("a/b", b"x", qos=2, mid=3, v5=True))
    await opened.received.wait(1)
    assert await opened.peer.silent(0.2)
    opened.conn.ack(3)
    _first, body = await opened.peer.expect(mqtt.PUBREC)
    assert body == b"\x00\x03"


async def test_unknown_pubrel_gets_pubcomp_packet_identifier_not_found(broker: FakeBroker) -> None:
    """5.0 §3.7.2.1: a PUBREL for an id we do not hold is answered PUBCOMP 0x92 (Packet Identifier not found)."""
    opened = await open_connection(broker, v5=True)
    await opened.peer.send(b"\x62\x02\x00\x09")
    _, body = await opened.peer.expect(mqtt.PUBCOMP)
    assert body == b"\x00\x09\x92"


# ---------------------------------------------------------------------------------------------- redelivery


async def serve(
    peer: Peer,
    v5: bool,
    *,
    present: bool = False,
    codes: list[int] | None = None,
    ack: bool = True,
    log: list[tuple[int, bytes]] | None = None,
) -> None:
    """A broker that answers CONNECT, SUBSCRIBE (with ``codes``), PINGREQ, and (when ``ack``) QoS 1 PUBLISHes."""
    first, _ = await peer.read_packet(10)
    assert first == mqtt.CONNECT
    await peer.send(connack(v5, present=present))
    while True:
        try:
            first, body = await peer.read_packet(60)
        except (ConnectionError, TimeoutError):
            return
        if log is not None:
            log.append((first, body))
        kind = first & 0xF0
        if kind == mqtt.SUBSCRIBE & 0xF0:
            await peer.send(suback(int.from_bytes(body[:2], "big"), codes or [1] * count_filters(body, v5), v5))
        elif kind == mqtt.PINGREQ:
            await peer.send(b"\xd0\x00")
        elif kind == mqtt.PUBLISH and first & 0x06 and ack:
            at = 2 + int.from_bytes(body[:2], "big")
            await peer.send(packet(mqtt.PUBACK, body[at : at + 2]))
        elif kind == mqtt.DISCONNECT:
            return


def count_filters(body: bytes, v5: bool) -> int:
    """How many topic filters a SUBSCRIBE body carries."""
    pos = 2
    if v5:
        length, pos = mqtt.read_varint(body, pos)
        pos += length
    n = 0
    while pos < len(body):
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big") + 1
        n += 1
    return n


def options(url: str, v5: bool, **kw: Any) -> BusOptions:
    return BusOptions(
        url=url,
        client_id="conformance",
        protocol="5" if v5 else "3.1.1",
        transport=kw.pop("transport", "native"),
        backoff_min_s=0.01,
        backoff_max_s=0.05,
        connect_timeout_s=kw.pop("connect_timeout_s", 5),
        **kw,
    )


async def test_unacknowledged_publishes_are_resent_with_dup_mqtt_4_4_0_1(v5: bool) -> None:
    """3.1.1 [MQTT-4.4.0-1] [MQTT-3.3.1-1] / 5.0 [MQTT-4.4.0-1] [MQTT-3.3.1-1]: on a resumed session (Session
    Present 1) the client resends its unacknowledged QoS 1 PUBLISHes with their original packet ids and DUP set.
    (The issue: 242 messages published without waiting were lost, with no error, when the broker was killed.)"""
    async with FakeBroker() as broker, Bus(options(broker.url, v5, persistent=True, connect_timeout_s=0)) as bus:
        first_peer = await broker.accept()
        await first_peer.read_packet()
        await first_peer.send(connack(v5))
        await bus.wait_connected(5)
        for i in range(3):
            await bus.publish_raw(Outgoing(f"a/{i}", b"x", 1))  # fire-and-forget: no wait
        sent = [await first_peer.expect(mqtt.PUBLISH) for _ in range(3)]
        await first_peer.send(packet(mqtt.PUBACK, sent[0][1][5:7]))  # only the first is acknowledged
        await asyncio.sleep(0.05)
        first_peer.close()  # the broker dies
        second = await broker.accept()
        _first, connect = await second.read_packet()
        assert connect[7] & 0x02 == 0  # clean start 0: a session to resume
        await second.send(connack(v5, present=True))
        again = [await second.expect(mqtt.PUBLISH) for _ in range(2)]
        assert [f & 0x08 for f, _ in again] == [0x08, 0x08]
        assert [b[:7] for _, b in again] == [b[:7] for _, b in sent[1:]]  # same topics, same packet ids
        for _, body in again:
            await second.send(packet(mqtt.PUBACK, body[5:7]))
        assert await second.silent(0.2)
        assert bus.stats.resent == 2
        assert bus.stats.lost == 0


async def test_unacknowledged_publishes_are_sent_again_on_a_new_session(v5: bool) -> None:
    """Session Present 0: the broker has forgotten them; they go again as new publishes (new ids, no DUP)."""
    async with FakeBroker() as broker, Bus(options(broker.url, v5, connect_timeout_s=0)) as bus:
        peer = await broker.accept()
        await peer.read_packet()
        await peer.send(connack(v5))
        await bus.wait_connected(5)
        await bus.publish_raw(Outgoing("a/b", b"x", 1))
        await peer.expect(mqtt.PUBLISH)
        peer.close()
        second = await broker.accept()
        await second.read_packet()
        await second.send(connack(v5))
        first, body = await second.expect(mqtt.PUBLISH)
        assert first & 0x08 == 0
        assert body[:5] == b"\x00\x03a/b"


async def test_unacknowledged_publishes_lost_at_close_are_counted_and_logged(
    broker: FakeBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """No silent loss: what the bus closes without is counted in ``stats.lost`` and logged."""
    task = asyncio.create_task(serve_later(broker))
    async with Bus(options(broker.url, True, connect_timeout_s=5)) as bus:
        await bus.publish_raw(Outgoing("a/b", b"x", 1))
        await asyncio.sleep(0.05)
    task.cancel()
    assert bus.stats.lost == 1
    captured = capsys.readouterr()  # the log goes to stdout or stderr, as the logging was configured
    assert "unacknowledged_publishes_lost" in captured.out + captured.err


async def serve_later(broker: FakeBroker) -> None:
    peer = await broker.accept()
    await serve(peer, True, ack=False)


async def test_a_tracked_publish_fails_when_the_connection_ends(broker: FakeBroker, v5: bool) -> None:
    """A QoS 1 publish either reaches its PUBACK or its caller learns that it failed."""
    opened = await open_connection(broker, v5=v5)
    _, fut = opened.conn.publish("a/b", b"x", 1, track=True)
    await opened.peer.expect(mqtt.PUBLISH)
    opened.peer.close()
    assert fut is not None
    with pytest.raises(BusConnectionError):
        await asyncio.wait_for(fut, 5)


# ---------------------------------------------------------------------------------------------- CONNACK limits


async def test_receive_maximum_is_honoured_mqtt_4_9_0_2(broker: FakeBroker) -> None:
    """5.0 [MQTT-4.9.0-2]: at a send quota of 0 no more QoS > 0 PUBLISHes; [MQTT-4.9.0-3]: other packets (here a
    SUBACK) are still processed; a PUBACK replenishes the quota."""
    opened = await open_connection(broker, v5=True, props={mqtt.RECEIVE_MAXIMUM: 1})
    peer = opened.peer
    opened.conn.publish("a/1", b"x", 1)
    opened.conn.publish("a/2", b"x", 1)
    _, body = await peer.expect(mqtt.PUBLISH)
    sub = asyncio.create_task(opened.conn.subscribe([("s/#", 1)]))
    _first, sbody = await peer.expect(mqtt.SUBSCRIBE)  # no second PUBLISH before it
    await peer.send(suback(int.from_bytes(sbody[:2], "big"), [1], True))
    assert await asyncio.wait_for(sub, 5) == [1]
    await peer.send(packet(mqtt.PUBACK, body[5:7]))
    _, body2 = await peer.expect(mqtt.PUBLISH)
    assert body2[2:5] == b"a/2"


async def test_maximum_qos_is_honoured_mqtt_3_2_2_11(broker: FakeBroker) -> None:
    """5.0 [MQTT-3.2.2-11]: no PUBLISH above the server's Maximum QoS: a typed error, nothing sent."""
    opened = await open_connection(broker, v5=True, props={mqtt.MAXIMUM_QOS: 0})
    with pytest.raises(QosNotSupported):
        opened.conn.publish("a/b", b"x", 1)
    assert opened.conn.publish("a/b", b"x", 0)[0] == ERR_SUCCESS
    first, _ = await opened.peer.expect(mqtt.PUBLISH)
    assert first == mqtt.PUBLISH


async def test_retain_available_is_honoured_mqtt_3_2_2_14(broker: FakeBroker) -> None:
    """5.0 [MQTT-3.2.2-14]: Retain Available 0: no PUBLISH with RETAIN 1 (a PublishError, nothing sent)."""
    opened = await open_connection(broker, v5=True, props={mqtt.RETAIN_AVAILABLE: 0})
    with pytest.raises(PublishError, match="retained"):
        opened.conn.publish("a/b", b"x", 1, retain=True)
    assert await opened.peer.silent(0.2)


async def test_maximum_packet_size_of_the_server_is_honoured_mqtt_3_2_2_15(broker: FakeBroker) -> None:
    """5.0 [MQTT-3.2.2-15]: no packet above the server's Maximum Packet Size: MessageTooLarge before sending (the
    issue: a 2 MB publish went to a broker that advertised 1 MiB, which cut the connection)."""
    opened = await open_connection(broker, v5=True, props={mqtt.MAXIMUM_PACKET_SIZE: 100})
    with pytest.raises(MessageTooLarge) as info:
        opened.conn.publish("a/b", b"x" * 100, 1)
    assert info.value.limit == 100
    assert info.value.size > 100
    fits = 100 - len(publish("a/b", b"", qos=1, mid=1, v5=True)) - 1  # content type block is 1 byte (empty)
    assert opened.conn.publish("a/b", b"x" * fits, 1)[0] == ERR_SUCCESS
    _, body = await opened.peer.expect(mqtt.PUBLISH)
    assert len(body) + 2 <= 100
    assert opened.conn.connected


async def test_server_keep_alive_is_used_mqtt_3_2_2_21(broker: FakeBroker) -> None:
    """5.0 [MQTT-3.2.2-21] [MQTT-3.1.2-20]: the Server Keep Alive replaces ours; PINGREQ within it."""
    opened = await open_connection(broker, v5=True, keepalive_s=60, props={mqtt.SERVER_KEEP_ALIVE: 1})
    start = time.monotonic()
    first, _ = await opened.peer.read_packet(5)
    assert first == mqtt.PINGREQ
    assert time.monotonic() - start < 3  # well below the 60 s the client asked for


# ---------------------------------------------------------------------------------------------- flow control


async def test_held_messages_do_not_block_control_packets_mqtt_4_9_0_3(broker: FakeBroker, v5: bool) -> None:
    """5.0 [MQTT-4.9.0-3]: control packets are processed whatever the flow control holds (#18: a paused reader
    never read the SUBACK behind a backlog, and the consumer waited for it forever)."""
    opened = await open_connection(broker, v5=v5, manual_ack=True)
    opened.conn.pause()
    sub = asyncio.create_task(opened.conn.subscribe([("a/#", 1)]))
    _, body = await opened.peer.expect(mqtt.SUBSCRIBE)
    backlog = b"".join(publish(f"a/{i}", b"x" * 100, qos=1, mid=i + 1, v5=v5) for i in range(500))
    await opened.peer.send(backlog + suback(int.from_bytes(body[:2], "big"), [1], v5))
    assert await asyncio.wait_for(sub, 5) == [1]
    assert opened.received == []  # held, not delivered, not acknowledged
    opened.conn.resume()
    assert len(opened.received) == 500
    assert [t for t, *_ in opened.received[:3]] == ["a/0", "a/1", "a/2"]


async def test_held_messages_past_their_bound_stop_the_reading(broker: FakeBroker, v5: bool) -> None:
    """A held message counts its payload, its topic and what the process spends to hold it; past
    ``max_held_bytes`` the socket is no longer read (TCP backpressure), and all of it is delivered on resume.
    (Counting the payload and 64 bytes each, 200 of these came to 32,800 bytes, under the bound: an agent behind a
    backlog held ~100 MiB under a 32 MiB bound.)"""
    opened = await open_connection(broker, v5=v5, manual_ack=True)
    conn = opened.conn
    conn.max_held_bytes = 50_000
    conn.pause()
    topic = "a/" + "t" * 100
    backlog = b"".join(publish(topic, b"x" * 100, qos=1, mid=i + 1, v5=v5) for i in range(200))  # ~78,800 bytes held
    await opened.peer.send(backlog)
    async with asyncio.timeout(5):
        while not conn.stats.read_pauses:  # noqa: ASYNC110 (bounded)
            await asyncio.sleep(0.01)
    assert opened.received == []
    conn.resume()
    assert len(opened.received) == 200


async def test_write_backpressure_bounds_qos0_and_queues_qos1() -> None:
    """The issue: 100,000 QoS 0 publishes to a stalled broker grew the write buffer to 104 MB. With a broker that
    stops reading, QoS 0 beyond the bound is dropped and counted; QoS 1 waits in the bounded queue."""
    stalled = asyncio.Event()

    async def never_reads(peer: Peer) -> None:
        await peer.read_packet()
        await peer.send(connack(True))
        await stalled.wait()

    async with FakeBroker(auto=never_reads) as broker:
        conn = await mqtt.Connection.open(
            "127.0.0.1", broker.port, mqtt.ConnectSpec("c", v5=True), lambda *a: None, max_queued=50
        )
        payload = b"x" * 1000
        for _ in range(100):
            for _ in range(1000):
                conn.publish("a/b", payload, 0)
            await asyncio.sleep(0)  # let the event loop write (and the transport pause us)
        assert conn.stats.write_pauses >= 1
        assert conn.stats.qos0_dropped > 0
        assert conn.unsent < 8 * 1024 * 1024
        codes = {conn.publish("q/1", payload, 1)[0] for _ in range(60)}
        assert ERR_QUEUE_SIZE in codes  # bounded: the caller is told (publish_raw waits and retries)
        stalled.set()
        conn.abort()


# ---------------------------------------------------------------------------------------------- subscribe and QoS 2


@pytest.mark.parametrize("transport", ["native", "paho"])
async def test_a_refused_subscription_raises_mqtt_3_9_3(transport: str, v5: bool) -> None:
    """3.1.1 §3.9.3 (0x80 Failure) / 5.0 §3.9.3 (reason >= 0x80, here 0x87 Not authorized): ``subscribe`` raises
    SubscribeRefused on both transports (the issue: it returned as if it had succeeded), and the filter is not
    re-subscribed on the next connection."""
    code = 0x87 if v5 else 0x80
    log: list[tuple[int, bytes]] = []
    async with (
        FakeBroker(auto=lambda p: serve(p, v5, codes=[code], log=log)) as broker,
        Bus(options(broker.url, v5, transport=transport)) as bus,
    ):
        with pytest.raises(SubscribeRefused) as info:
            await bus.subscribe("secret/#", 1)
        assert info.value.refused == {"secret/#": code}


async def test_a_refused_resubscription_is_logged_and_dropped(v5: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """After a reconnect, a filter the broker now refuses is logged and counted each time, and dropped after
    ``MAX_REFUSALS`` reconnects in a row (a refusal may be transient), not re-subscribed for ever."""
    refused = 0x87 if v5 else 0x80
    async with FakeBroker() as broker, Bus(options(broker.url, v5, connect_timeout_s=0)) as bus:
        peer = await broker.accept()
        await peer.read_packet()
        await peer.send(connack(v5))
        await bus.wait_connected(5)
        sub = asyncio.create_task(bus.subscribe("a/#", 1))
        _, body = await peer.expect(mqtt.SUBSCRIBE)
        await peer.send(suback(int.from_bytes(body[:2], "big"), [1], v5))
        await sub
        for times in range(1, MAX_REFUSALS + 1):
            peer.close()
            peer = await broker.accept()
            await peer.read_packet()
            await peer.send(connack(v5))
            _, body = await peer.expect(mqtt.SUBSCRIBE)
            await peer.send(suback(int.from_bytes(body[:2], "big"), [refused], v5))
            await peer.send(b"\xd0\x00")  # a PINGRESP after the SUBACK: once it is read, the SUBACK was handled
            await wait_until(lambda: bus.stats.subscriptions_refused >= times)  # noqa: B023  (awaited right here)
        peer.close()
        last = await broker.accept()
        await last.read_packet()
        await last.send(connack(v5))
        assert await last.silent(0.3)  # no SUBSCRIBE again
    captured = capsys.readouterr()  # the log goes to stdout or stderr, as the logging was configured
    out = captured.out + captured.err
    assert out.count("subscription_refused") == MAX_REFUSALS
    assert "dropped=True" in out or '"dropped": true' in out  # key=value on a terminal, JSON otherwise


async def test_suback_with_reserved_codes_closes_mqtt_3_9_3_2(broker: FakeBroker) -> None:
    """3.1.1 [MQTT-3.9.3-2]: SUBACK return codes other than 0x00, 0x01, 0x02 and 0x80 are reserved."""
    opened = await open_connection(broker, v5=False)
    sub = asyncio.create_task(opened.conn.subscribe([("a/#", 1)]))
    _, body = await opened.peer.expect(mqtt.SUBSCRIBE)
    await opened.peer.send(suback(int.from_bytes(body[:2], "big"), [0x03], False))
    with pytest.raises(BusConnectionError):
        await asyncio.wait_for(sub, 5)
    with pytest.raises(BusConnectionError):
        await asyncio.wait_for(asyncio.shield(opened.conn.closed), 5)


async def test_suback_with_the_wrong_number_of_codes_closes_mqtt_3_8_4_5(broker: FakeBroker, v5: bool) -> None:
    """3.1.1 [MQTT-3.8.4-5] / 5.0 [MQTT-3.8.4-6]: one return code per topic filter."""
    opened = await open_connection(broker, v5=v5)
    sub = asyncio.create_task(opened.conn.subscribe([("a/#", 1), ("b/#", 1)]))
    _, body = await opened.peer.expect(mqtt.SUBSCRIBE)
    await opened.peer.send(suback(int.from_bytes(body[:2], "big"), [1], v5))
    with pytest.raises(BusConnectionError):
        await asyncio.wait_for(sub, 5)


@pytest.mark.parametrize("transport", ["native", "paho"])
async def test_qos2_is_refused_at_publish_and_subscribe(transport: str) -> None:
    """The contract uses QoS 0 and 1: QoS 2 is refused with a typed error (the issue: publish(qos=2) was silently
    sent as QoS 1), and nothing is sent."""
    log: list[tuple[int, bytes]] = []
    async with (
        FakeBroker(auto=lambda p: serve(p, True, log=log)) as broker,
        Bus(options(broker.url, True, transport=transport)) as bus,
    ):
        with pytest.raises(QosNotSupported):
            await bus.publish_raw(Outgoing("a/b", b"x", 2))
        with pytest.raises(QosNotSupported):
            await bus.subscribe("a/#", 2)
        await bus.subscribe("ok/#", 1)  # a round trip: anything sent before it has reached the broker
    assert [first for first, _ in log if first & 0xF0 == mqtt.PUBLISH] == []
    assert [b"a/#" in body for first, body in log if first == mqtt.SUBSCRIBE] == [False]


async def test_closing_waits_for_the_pubacks_of_what_was_published_without_waiting(broker: FakeBroker) -> None:
    """A bus that closes right after fire-and-forget publishes gives their PUBACKs a moment: nothing is lost."""
    log: list[tuple[int, bytes]] = []
    task = asyncio.create_task(serve_delayed_acks(broker, log))
    async with Bus(options(broker.url, True)) as bus:
        for i in range(20):
            await bus.publish_raw(Outgoing(f"a/{i}", b"x", 1))
    task.cancel()
    assert bus.stats.lost == 0
    assert len([first for first, _ in log if first & 0xF0 == mqtt.PUBLISH]) == 20


async def serve_delayed_acks(broker: FakeBroker, log: list[tuple[int, bytes]]) -> None:
    """A broker that acknowledges each PUBLISH 20 ms late."""
    peer = await broker.accept()
    await peer.read_packet()
    await peer.send(connack(True))
    while True:
        try:
            first, body = await peer.read_packet(60)
        except (ConnectionError, TimeoutError):
            return
        log.append((first, body))
        if first & 0xF0 == mqtt.PUBLISH:
            await asyncio.sleep(0.02)
            await peer.send(packet(mqtt.PUBACK, body[2 + int.from_bytes(body[:2], "big") :][:2]))


# ------------------------------------------------------------------------------------------ the goodbye and the Will


@pytest.mark.parametrize("acked", [True, False], ids=["goodbye-acknowledged", "goodbye-unanswered"])
async def test_an_unacknowledged_goodbye_leaves_the_will_to_say_it(broker: FakeBroker, acked: bool) -> None:
    """A clean close publishes the goodbye, then DISCONNECTs (the broker drops the Will). When the goodbye gets no
    PUBACK in time (a broker too busy), a DISCONNECT would leave the retained birth saying "online" for good: the bus
    drops the connection without one instead, so that the broker publishes the Will."""
    offline = Outgoing("wb/v1/_agent/a-1/state", b"offline", 1, True)
    opts = BusOptions(
        url=broker.url, protocol="3.1.1", transport="native", will=offline, goodbye=offline, connect_timeout_s=10
    )
    sent: list[tuple[int, bytes]] = []

    async def serve_goodbye() -> None:
        peer = await broker.accept()
        await peer.expect(mqtt.CONNECT)
        await peer.send(connack(False))
        _, body = await peer.expect(mqtt.PUBLISH)
        if acked:
            await peer.send(packet(mqtt.PUBACK, body[2 + int.from_bytes(body[:2], "big") :][:2]))
        sent.extend(await peer.closed_by_client(10))

    served = asyncio.create_task(serve_goodbye())
    async with Bus(opts) as bus:
        await bus.wait_connected(10)
    await asyncio.wait_for(served, 15)
    assert [first & 0xF0 for first, _ in sent] == ([mqtt.DISCONNECT] if acked else [])
