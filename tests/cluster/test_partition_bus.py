"""The cluster's PartitionBus composes the Bus through its public hooks only (before_connect, outgoing_topic,
deliver, inbox): each hook on a real broker (the embedded one), one process."""

from __future__ import annotations

import asyncio

import pytest

from agent.cluster import PartitionBus
from broker.bus import BusOptions, Rejected
from broker.connect import open_bus
from broker.embedded import free_port
from schemas.envelope import make
from schemas.errors import BusConnectionError
from schemas.events import HeartRate
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
