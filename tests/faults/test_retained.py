"""Issue 18, item 6, over the wire: retained hygiene.

Mosquitto's ACL cannot refuse the retain flag (an ACL line names a topic and read, write or readwrite, nothing
more; ``retain_available false`` is global and would end the retained states and contexts), so a device may
publish retained events and retained garbage on its own state topic. Both came back at every agent start: the
garbage as a ``decode`` dead letter each time. And clearing a retained topic with an empty payload (forwarded to a
live subscriber without its retain flag) was dead-lettered as ``decode``.

Now a retained event is dead-lettered once (``retained``), retained garbage once (``decode``), across restarts;
an empty payload on a retained topic is a clear, not an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.client import Outgoing
from schemas import codec
from schemas.actions import DeviceState
from schemas.envelope import make, now_ms
from schemas.events import HeartRate
from schemas.topics import Kind, state_topic
from tests.faults.harness import (
    TAP,
    AgentProcess,
    Counts,
    Observer,
    device_bus,
    device_id,
    fleet,
    secure_broker,
    wait_for,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]
RING = device_id("alice", Kind.RING)
GLASSES = device_id("alice", Kind.GLASSES)
HR = f"{RING.prefix}/evt/sensor/hr"
RING_STATE = state_topic(RING)
GLASSES_STATE = state_topic(GLASSES)
STARTS = 3


async def test_retained_garbage_is_dead_lettered_once_and_a_clear_is_no_error(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    creds = fleet(["alice"])
    counts = Counts("retained")
    async with secure_broker(creds) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        ring = await stack.enter_async_context(device_bus(creds, "alice", Kind.RING, broker.url))
        glasses = await stack.enter_async_context(device_bus(creds, "alice", Kind.GLASSES, broker.url))
        # while no agent runs: a retained event and retained garbage on the ring's own state topic
        await ring.publish_raw(Outgoing(HR, codec.encode(make(HeartRate(bpm=70))), 1, True), wait=True)
        await ring.publish_raw(Outgoing(RING_STATE, b"\xc1 not an envelope", 1, True), wait=True)

        def letters(topic: str, reason: str | None = None) -> int:
            return len(observer.dead_letters(topic, reason))

        for start in range(STARTS):
            await agent.start()
            await observer.agent_online(agent)
            if start == 0:  # a retained state, then its clear, while the agent listens
                state = codec.encode(make(DeviceState(online=True, kind=Kind.GLASSES)))
                await glasses.publish_raw(Outgoing(GLASSES_STATE, state, 1, True), wait=True)
                await glasses.publish_raw(Outgoing(GLASSES_STATE, b"", 1, True), wait=True)
            # a canary behind whatever came at the subscribe: refused in the pump, after anything before it
            canary = make(HeartRate(bpm=80), ts=now_ms() + 3_600_000)
            await ring.publish_raw(Outgoing(HR, codec.encode(canary), 1), wait=True)
            seen = start + 1
            await wait_for(lambda: letters(HR, "future") >= seen, "the canary's dead letter", 30)  # noqa: B023
            await agent.stop()

        retained_events = letters(HR, "retained")
        garbage = letters(RING_STATE, "decode")
        clears = letters(GLASSES_STATE)

    counts["starts"] = STARTS
    counts["retained_event_letters"] = retained_events
    counts["state_garbage_letters"] = garbage
    counts["clear_letters"] = clears
    counts.report(record_property)
    assert retained_events == 1, f"the retained event was dead-lettered {retained_events} times in {STARTS} starts"
    assert garbage == 1, f"the retained garbage was dead-lettered {garbage} times in {STARTS} starts"
    assert clears == 0, "an empty retained payload (a clear) was dead-lettered"
