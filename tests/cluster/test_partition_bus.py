"""The cluster's PartitionBus composes the Bus through its public hooks only (before_connect, outgoing_topic,
deliver, inbox): each hook on a real broker (the embedded one), one process."""

from __future__ import annotations

import asyncio

import pytest

from agent.cluster import PartitionBus
from broker import mqtt
from broker.bus import BusOptions, Rejected
from broker.client import MAX_REFUSALS
from broker.connect import open_bus
from broker.embedded import free_port
from schemas.envelope import make
from schemas.errors import BusConnectionError
from schemas.events import HeartRate
from tests.conformance.fake_broker import FakeBroker, Peer, connack, suback
from tests.conftest import broker_under_test

pytestmark = [pytest.mark.broker]


async def test_nodes_are_tried_in_turn_and_topics_rewritten_both_ways() -> None:
    async with broker_under_test("embedded") as broker:
        dead = f"mqtt://127.0.0.1:{free_port()}"
        options = BusOptions(url=dead, protocol="3.1.1", backoff_min_s=0.05, backoff_max_s=0.1, name="member")
        member = PartitionBus(options, urls=[dead, broker.url], strip_partition=True, escape_dots=True)
        rejected: list[Rejected] = []
        watcher = open_bus(BusOptions(url=broker.url, protocol="3.1.1", name="watch", on_reject=[rejected.append]))
        async with member, watcher:
            assert member.url.port != int(dead.rsplit(":", 1)[1])  # before_connect moved it to the live node
            await watcher.subscribe("wb/v1/u/glasses/+/cmd/#", 1)
            await member.subscribe("wbp/+/wb/v1/u/#", 1)
            await member.publish("wb/v1/u/glasses/g1/cmd/display.card", make(HeartRate(bpm=60)), wait=True)
            await watcher.publish("wbp/7/wb/v1/u/ring/r1/evt/sensor/hr", make(HeartRate(bpm=70)), wait=True)
            got = await member.next_batch(1, timeout=5.0)
            async with asyncio.timeout(5):
                while not rejected:  # noqa: ASYNC110 (bounded by the timeout)
                    await asyncio.sleep(0.01)
        assert [m.topic for m in got] == ["wb/v1/u/ring/r1/evt/sensor/hr"]  # deliver: the partition prefix gone
        # outgoing_topic: sent as display_card (which no schema knows, so the watcher's bus rejects it, with its topic)
        assert [r.topic for r in rejected] == ["wb/v1/u/glasses/g1/cmd/display_card"]


async def test_a_guard_that_says_no_keeps_it_from_connecting() -> None:
    async with broker_under_test("embedded") as broker:

        async def deposed() -> bool:
            return False

        options = BusOptions(url=broker.url, protocol="3.1.1", connect_timeout_s=0.5, backoff_max_s=0.1)
        with pytest.raises(BusConnectionError, match="belongs to another member"):
            async with PartitionBus(options, guard=deposed):
                pass


async def test_a_partition_the_bus_dropped_is_confirmed_and_renewed_again() -> None:
    """The Bus stops renewing a filter refused on ``MAX_REFUSALS`` reconnects in a row (an ACL denial); a bucket's
    partition must not go that way (NATS refuses with 0x80 while it is busy): confirming subscribes it again and
    puts it back among the filters renewed on every reconnect. A scripted broker sends the SUBACKs."""

    async def answer(peer: Peer, code: int) -> None:
        _, body = await peer.expect(mqtt.SUBSCRIBE)
        await peer.send(suback(int.from_bytes(body[:2], "big"), [code], False))

    async def reconnect(broker: FakeBroker, peer: Peer) -> Peer:
        peer.close()
        peer = await broker.accept()
        await peer.read_packet()
        await peer.send(connack(False))
        return peer

    async with FakeBroker() as broker:
        options = BusOptions(url=broker.url, client_id="b7", protocol="3.1.1", backoff_min_s=0.01, backoff_max_s=0.05,
                             connect_timeout_s=0)  # fmt: skip
        async with PartitionBus(options) as bus:
            peer = await broker.accept()
            await peer.read_packet()
            await peer.send(connack(False))
            await bus.wait_connected(5)
            sub = asyncio.create_task(bus.subscribe("wbp/7/#", 1))
            await answer(peer, 1)
            await sub
            for times in range(1, MAX_REFUSALS + 1):
                peer = await reconnect(broker, peer)
                await answer(peer, 0x80)
                await peer.send(b"\xd0\x00")  # a PINGRESP after the SUBACK: once it is read, the SUBACK was handled
                async with asyncio.timeout(5):
                    while bus.stats.subscriptions_refused < times:  # noqa: ASYNC110 (a counter; bounded)
                        await asyncio.sleep(0.01)
            peer = await reconnect(broker, peer)
            assert await peer.silent(0.3)  # the Bus renews nothing now
            assert bus.subscriptions == {}
            confirm = asyncio.create_task(bus.confirm_subscriptions())
            await answer(peer, 1)  # the confirmation's SUBSCRIBE
            await answer(peer, 1)  # the renewed registration's
            assert await confirm
            assert bus.subscriptions == {"wbp/7/#": 1}
            peer = await reconnect(broker, peer)
            await answer(peer, 1)  # renewed on the next reconnect again
