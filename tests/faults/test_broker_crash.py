"""Promise 2: a broker restart loses nothing.

The broker runs the config ``wearbus broker config`` writes (``persistence true``, ``autosave_on_changes true``,
``autosave_interval 1``, a data directory the mosquitto user can write). It is killed with SIGKILL, so only what
it had saved survives; the tests check that its database file was really written.

- queued: the agent is away (its persistent session remains), devices publish, the broker dies and comes back,
  then the agent returns and gets every event the broker acknowledged.
- live: the agent is online and devices stream through their outbox while the broker dies mid-stream; everything
  the devices emitted reaches the agent once the broker is back (the outbox keeps an event until its PUBACK).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.events import (
    AncState,
    Body,
    EarBattery,
    GlassesBattery,
    HeartRate,
    Location,
    PhoneBattery,
    RingBattery,
    SpO2,
)
from schemas.topics import Kind
from tests.faults.conftest import Scale
from tests.faults.harness import (
    HOME,
    KINDS,
    TAP,
    AgentDb,
    AgentProcess,
    Counts,
    FaultDevice,
    Observer,
    broker_db,
    fleet,
    make_device,
    secure_broker,
    wait_for,
    wait_for_async,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(600)]


def users(scale: Scale) -> list[str]:
    """Two users (eight devices), four in a soak: each device stays within the agent's burst (200 events)."""
    return [f"u{i}" for i in range(scale.users)]


async def test_events_queued_for_an_offline_agent_survive_broker_kill9(
    scale: Scale, mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    names = users(scale)
    creds = fleet(names)
    counts = Counts("broker-kill9 queued")
    rng = random.Random(7)
    emitted: list[str] = []
    # Killed with SIGKILL: the deployed persistence (a save per change) is what is under test.
    async with secure_broker(creds, autosave_on_changes=True) as broker, contextlib.AsyncExitStack() as stack:
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        db = AgentDb(agent.db)
        async with Observer(broker.url, TAP.username, TAP.password) as observer:
            # The agent's first run creates its persistent session; then it goes away cleanly.
            await agent.start()
            await observer.agent_online(agent)
            assert await agent.stop() == 0
        devices = [make_device(creds, user, kind, broker.url) for user in names for kind in KINDS]
        for dev in devices:
            await stack.enter_async_context(dev)
        for dev in devices:
            await dev.wait_connected(15)
        for i in range(scale.queued):
            dev = devices[i % len(devices)]
            emitted.append(dev.emit(qos1_event(dev.kind, rng)).id)
        await wait_for(lambda: all(d.outbox_depth == 0 for d in devices), "the devices' outboxes to drain", 60)
        # SIGKILL the moment the last PUBACK is in: only what the broker had saved by then survives.
        await broker.kill9()
        saved = broker_db(broker)
        assert saved.is_file(), f"{saved} was never written; broker log:\n{broker.log_text()[-3000:]}"
        counts["db_bytes"] = saved.stat().st_size
        assert saved.stat().st_size > 0
        await broker.restart()
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        await agent.start()
        await observer.agent_online(agent)

        async def arrived() -> bool:
            return set(emitted) <= await db.ids()

        with contextlib.suppress(pytest.fail.Exception):
            counts["drain_s"] = round(await wait_for_async(arrived, "the queued events", 60 + scale.queued / 10), 1)
        stored = await db.ids()
        counts["sent"] = len(emitted)
        counts["acknowledged"] = sum(d.stats.sent for d in devices)
        counts["processed"] = len(set(emitted) & stored)
        counts["duplicates"] = sum(d.stats.resent for d in devices)
        counts["lost"] = len(set(emitted) - stored)
        counts["dead_lettered"] = len(observer.dlq)
    counts.report(record_property)
    assert counts["dead_lettered"] == 0, f"refused: {observer.dlq[:3]}"
    assert counts["lost"] == 0, "acknowledged events lost across the broker kill -9"


def qos1_event(kind: Kind, rng: random.Random) -> Body:
    """An event the device SDK publishes at QoS 1 (sensors other than HR, SpO2 and location go at QoS 0)."""
    match kind:
        case Kind.RING:
            return rng.choice([HeartRate(bpm=rng.uniform(60, 80)), SpO2(pct=rng.uniform(95, 99)),
                               RingBattery(level_pct=rng.uniform(30, 100))])  # fmt: skip
        case Kind.EARPHONES:
            return rng.choice([EarBattery(left_pct=rng.uniform(40, 100), right_pct=rng.uniform(40, 100)),
                               AncState(mode=rng.choice(["anc", "transparency"]))])  # fmt: skip
        case Kind.GLASSES:
            return GlassesBattery(level_pct=rng.uniform(50, 100))
        case Kind.PHONE:
            return rng.choice([Location(lat=HOME[0], lon=HOME[1]), PhoneBattery(level_pct=rng.uniform(30, 100))])
    raise AssertionError(kind)  # pragma: no cover


async def test_a_live_stream_survives_broker_kill9(
    scale: Scale, mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    names = users(scale)
    creds = fleet(names)
    counts = Counts("broker-kill9 live")
    rng = random.Random(11)
    emitted: list[str] = []
    # Killed with SIGKILL: the deployed persistence (a save per change) is what is under test.
    async with secure_broker(creds, autosave_on_changes=True) as broker, contextlib.AsyncExitStack() as stack:
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        db = AgentDb(agent.db)
        # The observer reconnects after the crash but keeps no session: it sees the duplicates the broker
        # delivers to live subscribers (an outbox re-sending an event whose PUBACK the crash swallowed).
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        await agent.start()
        await observer.agent_online(agent)
        devices: list[FaultDevice] = [make_device(creds, u, k, broker.url) for u in names for k in KINDS]
        for dev in devices:
            await stack.enter_async_context(dev)
        for dev in devices:
            await dev.wait_connected(15)
        kill_at = rng.randrange(scale.live // 4, scale.live * 3 // 4)

        async def emit_all() -> None:
            for i in range(scale.live):
                dev = devices[i % len(devices)]
                emitted.append(dev.emit(qos1_event(dev.kind, rng)).id)
                await asyncio.sleep(1 / 150)  # the stream's pace: 150 events/s over all devices

        async def crash() -> None:
            await wait_for(lambda: len(emitted) >= kill_at, "the kill point", 60)
            await broker.kill9()
            await asyncio.sleep(rng.uniform(0.3, 1.0))  # the downtime is part of the fault
            await broker.restart()

        await asyncio.gather(emit_all(), crash())
        saved = broker_db(broker)
        assert saved.is_file(), f"{saved} was never written; broker log:\n{broker.log_text()[-3000:]}"
        counts["db_bytes"] = saved.stat().st_size

        async def arrived() -> bool:
            return set(emitted) <= await db.ids()

        with contextlib.suppress(pytest.fail.Exception):
            counts["drain_s"] = round(await wait_for_async(arrived, "every emitted event", 60 + scale.live / 10), 1)
        stored = await db.ids()
        counts["sent"] = len(emitted)
        counts["acknowledged"] = sum(d.stats.sent for d in devices)
        counts["processed"] = len(set(emitted) & stored)
        counts["duplicates"] = sum(n - 1 for n in observer.events.values() if n > 1)
        counts["lost"] = len(set(emitted) - stored)
        counts["outbox_dropped"] = sum(d.stats.dropped for d in devices)
    counts.report(record_property)
    assert counts["outbox_dropped"] == 0
    assert counts["lost"] == 0, "events the devices emitted never reached the agent"
