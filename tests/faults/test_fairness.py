"""Issue 18, item 5, over the wire: a flooding device does not starve another user, and its refusals are sampled.

Mosquitto 2.0 has no per-client publish rate limit (its limits, max_inflight_messages, max_queued_messages and
max_queued_bytes, are global settings applied per client), so the per-device rate limit applies in the agent.
There, a refused message costs an admission check, an acknowledgement and, before, a dead letter each (mirrored
1:1, so a flood of 6,000 doubled the traffic on the agent's link). Now the first refusal of each second per device
is dead-lettered and the others are counted and summed into one dead letter per second (``count``), so the DLQ
still accounts for every message.

A ring floods 6,000 unpaced heart rates at the real agent process; once they are all queued, another user asks
"what's my heart rate": the answer must come, and the flood must be accounted for exactly (stored + the dead
letters' counts = sent) with far fewer dead letters than refusals. The other user's answer latency is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.client import Outgoing
from schemas import codec
from schemas.envelope import make
from schemas.events import HeartRate, Utterance
from schemas.topics import Kind
from tests.faults.harness import (
    TAP,
    AgentDb,
    AgentProcess,
    Counts,
    Observer,
    device_bus,
    device_id,
    fleet,
    make_device,
    secure_broker,
    wait_for,
    wait_for_async,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]
FLOOD = 6000
RING = device_id("alice", Kind.RING)
HR = f"{RING.prefix}/evt/sensor/hr"


async def test_a_flood_does_not_starve_another_user_and_is_sampled_on_the_dlq(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    creds = fleet(["alice", "bob"])
    counts = Counts("flood")
    async with secure_broker(creds) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        db = AgentDb(agent.db)
        await agent.start()
        await observer.agent_online(agent)
        ears = make_device(creds, "bob", Kind.EARPHONES, broker.url)
        await stack.enter_async_context(ears)
        await ears.wait_connected(15)
        await wait_for(lambda: observer.device_online("bob", "e1") is True, "bob's earphones online", 30)
        ring = await stack.enter_async_context(device_bus(creds, "alice", Kind.RING, broker.url))

        flood = [make(HeartRate(bpm=60 + i % 40)) for i in range(FLOOD)]
        futures = [ring.publish_future(Outgoing(HR, codec.encode(env), 1)) for env in flood]
        await asyncio.gather(*futures)  # all of it is at the broker, queued for the agent

        asked = time.monotonic()
        ears.emit(Utterance(text="what's my heart rate"))
        # A ceiling, not a timing: the answer's latency is reported (other_user_answer_s), never asserted.
        await wait_for(lambda: sum(ears.carried.values()) > 0, "bob's answer during the flood", 150)
        answered_s = time.monotonic() - asked
        ids = {env.id for env in flood}

        def letters() -> list[int]:
            return [d.count for d in observer.dead_letters(RING.prefix, "rate")]

        async def accounted() -> bool:
            stored = len(ids & await db.ids())
            return stored + sum(letters()) == FLOOD

        await wait_for_async(accounted, "every flood message stored or counted on the DLQ", 120)
        stored = len(ids & await db.ids())

    refused = sum(letters())
    counts["sent"] = FLOOD
    counts["acknowledged"] = FLOOD
    counts["processed"] = stored
    counts["dead_lettered"] = refused
    counts["dlq_letters"] = len(letters())
    counts["other_user_answer_s"] = round(answered_s, 3)
    counts.report(record_property)
    assert refused > 0, "the flood never hit the rate limit"
    assert len(letters()) * 10 < refused, f"{len(letters())} dead letters for {refused} refusals: not sampled"
