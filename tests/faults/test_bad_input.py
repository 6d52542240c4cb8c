"""Promise 5, over the wire: bad input gets a clear answer and breaks nothing.

A device sends the agent (a real process) malformed msgpack and JSON, wrong types, out-of-range values, unknown
topics and body types, an oversize payload, timestamps far in the past and future, replayed ids, a flood, and a
storm of mutated payloads. Every refused message must come back on ``wb/v1/_dlq/{reason}`` with its reason (the
flood and the storm are accounted for exactly: stored + dead-lettered = sent), a replayed id changes nothing,
the flood does not starve another device, both processes keep running and the agent's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from broker.client import Bus, Outgoing
from broker.mosquitto import Limits
from schemas import codec
from schemas.envelope import make, now_ms
from schemas.errors import BusConnectionError, ContractError, PublishError
from schemas.events import HeartRate, RingBattery
from schemas.topics import Kind
from tests.faults.conftest import Scale
from tests.faults.harness import (
    TAP,
    AgentDb,
    AgentProcess,
    Counts,
    Observer,
    device_bus,
    device_id,
    fleet,
    mixed_event,
    secure_broker,
    wait_for,
    wait_for_async,
)
from tests.faults.mutate import envelope, mutate

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]
MIB = 1024 * 1024
RING = device_id("alice", Kind.RING)
GLASSES = device_id("alice", Kind.GLASSES)
HR = f"{RING.prefix}/evt/sensor/hr"
DAY_MS = 86_400_000
STORM_TOPICS = {
    "glasses.head_pose": "sensor/head_pose",
    "gesture.head": "gesture/head",
    "glasses.battery": "system/battery",
}


def as_json(**fields: Any) -> bytes:
    """A JSON envelope of a heart rate with some fields replaced."""
    base: dict[str, Any] = {"id": f"{random.getrandbits(64):016x}", "ts": now_ms(), "data": {"bpm": 70}}
    base.update(fields)
    return json.dumps(base).encode()


def as_msgpack(**fields: Any) -> bytes:
    """The same in msgpack."""
    base: dict[str, Any] = {"id": f"{random.getrandbits(64):016x}", "ts": now_ms(), "data": {"bpm": 70}}
    base.update(fields)
    packed: bytes = msgpack.packb(base, use_bin_type=True)
    return packed


def cases() -> list[tuple[str, str, bytes, str]]:
    """``(name, topic, payload, expected DLQ reason)``."""
    valid = codec.encode(make(HeartRate(bpm=70)))
    return [
        ("msgpack garbage", HR, b"\xc1\xc1\xc1\xc1", "decode"),
        ("truncated msgpack", HR, valid[:-4], "decode"),
        ("msgpack list", HR, msgpack.packb([1, 2, 3]), "decode"),
        ("broken JSON", HR, b'{"id": "j1", "ts": ', "decode"),
        ("JSON not UTF-8", HR, b'{"id": "\xff\xfe"}', "decode"),
        ("empty payload", HR, b"", "decode"),
        ("oversize", HR, as_json(pad="x" * 300_000), "decode"),
        ("wrong types", HR, as_json(id=17, ts="yesterday", data={"bpm": "fast"}), "schema"),
        ("bpm out of range", HR, as_json(data={"bpm": 500}), "schema"),
        ("ts out of range", HR, as_json(ts=10**15), "schema"),
        ("seq beyond 64 bits", HR, as_json(seq=10**30), "schema"),
        ("seq beyond SQLite", HR, as_msgpack(seq=2**64 - 1), "schema"),
        ("negative seq", HR, as_msgpack(seq=-1), "schema"),
        ("unknown field", HR, as_json(data={"bpm": 70, "colour": "red"}), "schema"),
        ("body of another type", HR, as_json(data={"type": "ring.spo2", "pct": 97}), "schema"),
        ("unknown event", f"{RING.prefix}/evt/sensor/teleport", as_json(), "topic"),
        ("unknown class", f"{RING.prefix}/evt/magic/hr", as_json(), "topic"),
        ("far future", HR, as_json(ts=now_ms() + DAY_MS), "future"),
        ("far past", HR, as_json(ts=now_ms() - 30 * DAY_MS), "stale"),
    ]


async def publish(bus: Bus, topic: str, payload: bytes) -> None:
    """QoS 1, waiting for the broker's PUBACK."""
    await bus.publish_raw(Outgoing(topic, payload, 1), wait=True)


async def next_letter(observer: Observer, before: int, what: str) -> int:
    """Wait for the dead letter after the first ``before``; its index."""
    await wait_for(lambda: len(observer.dlq) > before, f"a dead letter for {what}", 15)
    return before


def storm_payloads(n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """``n`` mutated glasses payloads; those that still decode all carry distinct ids (so none is a duplicate and
    every one must be either stored or dead-lettered)."""
    bodies = [mixed_event(Kind.GLASSES, rng, i, now_ms()) for i in range(64)]
    pool = [codec.encode(envelope(b, rng, now_ms(), 0)) for b in bodies]
    ids: set[str] = set()
    out: list[tuple[str, bytes]] = []
    while len(out) < n:
        body = rng.choice(bodies)
        fmt: codec.Format = "json" if rng.random() < 0.3 else "msgpack"
        base = codec.encode(envelope(body, rng, now_ms(), len(out) + 1), fmt)
        bad = mutate(base, rng, pool)
        topic = f"{GLASSES.prefix}/evt/{STORM_TOPICS[body.type]}"  # type: ignore[attr-defined]
        content_type = codec.JSON if bad[:1] == b"{" else codec.MSGPACK  # what Bus sends with it
        with contextlib.suppress(ContractError):
            decoded = codec.decode(topic, bad, content_type=content_type)
            if decoded.envelope.id in ids:
                continue
            ids.add(decoded.envelope.id)
        out.append((topic, bad))
    return out


async def test_bad_input_gets_a_clear_answer_and_breaks_nothing(
    scale: Scale, mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    creds = fleet(["alice", "bob"])
    counts = Counts("bad-input")
    rng = random.Random(5)
    # A packet limit above the decoder's (256 KiB), so an oversize payload reaches the agent and is refused there.
    limits = Limits(max_packet_size=MIB)
    async with secure_broker(creds, limits=limits) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        db = AgentDb(agent.db)
        await agent.start()
        await observer.agent_online(agent)
        ring = await stack.enter_async_context(device_bus(creds, "alice", Kind.RING, broker.url))
        glasses = await stack.enter_async_context(device_bus(creds, "alice", Kind.GLASSES, broker.url))
        victim = await stack.enter_async_context(device_bus(creds, "bob", Kind.RING, broker.url))

        # 1. Each bad message, one at a time: its dead letter names the topic and the reason.
        wrong: list[str] = []
        for name, topic, payload, reason in cases():
            before = len(observer.dlq)
            await publish(ring, topic, payload)
            letter = observer.dlq[await next_letter(observer, before, name)]
            if (letter.reason, letter.topic, letter.seen_by) != (reason, topic, agent.instance) or not letter.error:
                wrong.append(f"{name}: {letter.reason} {letter.topic} {letter.error!r}")
        # Too big even for the broker: it disconnects the sender (DISCONNECT 0x95); nothing reaches the agent.
        with pytest.raises((BusConnectionError, PublishError)):
            await publish(ring, HR, as_json(pad="x" * (2 * MIB)))
        await ring.wait_connected(30)

        # 2. Replayed ids: the same bytes again, and the same id with other content, change nothing.
        first = make(HeartRate(bpm=70))
        await publish(ring, HR, codec.encode(first))
        await publish(ring, HR, codec.encode(first))
        await publish(ring, HR, codec.encode(first.model_copy(update={"data": HeartRate(bpm=150)})))
        marker = make(RingBattery(level_pct=50))
        await publish(ring, f"{RING.prefix}/evt/system/battery", codec.encode(marker))

        async def marker_stored() -> bool:
            return marker.id in await db.ids()

        await wait_for_async(marker_stored, "the marker after the replays", 20)
        stored_first = await db.rows("SELECT payload FROM events WHERE id = ?", first.id)
        rss_before = agent.rss()

        # 3. A flood from one device while another sends as usual.
        flood: list[str] = []
        calm: list[str] = []

        async def flood_it() -> None:
            for i in range(scale.flood):
                env = make(HeartRate(bpm=70), seq=i + 1)
                await publish(ring, HR, codec.encode(env))
                flood.append(env.id)

        async def carry_on() -> None:
            for i in range(40):
                env = make(HeartRate(bpm=64), seq=i + 1)
                await publish(victim, f"{device_id('bob', Kind.RING).prefix}/evt/sensor/hr", codec.encode(env))
                calm.append(env.id)
                await asyncio.sleep(0.05)  # an ordinary device's pace

        await asyncio.gather(flood_it(), carry_on())

        async def flood_accounted() -> bool:
            stored = await db.ids()
            refused = sum(d.count for d in observer.dead_letters(RING.prefix, "rate"))  # sampled: counts summed
            return set(calm) <= stored and len(set(flood) & stored) + refused == len(flood)

        await wait_for_async(flood_accounted, "every flood message stored or refused for rate", 60)
        flood_stored = len(set(flood) & await db.ids())
        flood_refused = sum(d.count for d in observer.dead_letters(RING.prefix, "rate"))

        # 4. A storm of mutated payloads: each one stored or dead-lettered, nothing lost, nothing twice. In two
        # halves: memory after the second (once the agent has caught up) must be about what it was after the first.
        storm = storm_payloads(scale.storm, rng)
        half = len(storm) // 2

        def storm_rows() -> Any:
            return db.scalar("SELECT COUNT(*) FROM events WHERE user = 'alice' AND device = ?", GLASSES.device)

        rss_storm: list[int] = []
        for start, end in ((0, half), (half, len(storm))):
            for topic, payload in storm[start:end]:
                await publish(glasses, topic, payload)

            async def storm_accounted(n: int = end) -> bool:
                return int(await storm_rows() or 0) + len(observer.dead_letters(GLASSES.prefix)) >= n

            with contextlib.suppress(pytest.fail.Exception):
                await wait_for_async(storm_accounted, "every storm payload stored or dead-lettered", 120)
            rss_storm.append(agent.rss())
        storm_stored = int(await storm_rows() or 0)
        storm_letters = observer.dead_letters(GLASSES.prefix)

        # 5. Still alive and still working.
        health = make(RingBattery(level_pct=90))
        await publish(victim, f"{device_id('bob', Kind.RING).prefix}/evt/system/battery", codec.encode(health))

        async def healthy() -> bool:
            return health.id in await db.ids()

        await wait_for_async(healthy, "a valid event after all that", 30)
        rss_after = agent.rss()
        alive = agent.running and broker.running
        calm_refused = len(observer.dead_letters(device_id("bob", Kind.RING).prefix))

    counts["cases"] = len(cases())
    counts["wrong_answers"] = len(wrong)
    counts["sent"] = len(flood) + len(storm) + len(calm)
    counts["acknowledged"] = len(flood) + len(storm) + len(calm)
    counts["processed"] = flood_stored + storm_stored + len(calm)
    counts["dead_lettered"] = flood_refused + len(storm_letters)
    counts["duplicates"] = 2
    counts["lost"] = len(flood) + len(storm) + len(calm) - counts["processed"] - counts["dead_lettered"]  # type: ignore[operator]
    counts["flood_stored"] = flood_stored
    counts["flood_refused"] = flood_refused
    counts["calm_refused"] = calm_refused
    counts["storm_stored"] = storm_stored
    counts["storm_dead_lettered"] = len(storm_letters)
    counts["rss_before_kib"] = rss_before // 1024
    counts["rss_half_storm_kib"] = rss_storm[0] // 1024
    counts["rss_after_storm_kib"] = rss_storm[1] // 1024
    counts["rss_after_kib"] = rss_after // 1024
    counts.report(record_property)

    assert wrong == [], wrong
    assert len(stored_first) == 1
    assert codec.decode(HR, stored_first[0][0]).data == HeartRate(bpm=70), "a replayed id changed what was stored"
    assert observer.dead_letters(RING.prefix)[len(cases()) :] == observer.dead_letters(RING.prefix, "rate")
    assert flood_refused > 0, "the flood never hit the per-device rate limit"
    assert calm_refused == 0, "the flood starved another device"
    assert counts["lost"] == 0, "a message was neither stored nor dead-lettered"
    assert alive
    # Bounded. The first half of the storm may raise the high-water mark (Python keeps freed memory), the second,
    # as big, may not add much more: a leak of even 1 KiB per message would add megabytes.
    assert rss_storm[1] - rss_storm[0] < 16 * MIB, f"the agent grew from {rss_storm[0]} to {rss_storm[1]} bytes"
    assert rss_after - rss_before < 128 * MIB, f"the agent grew from {rss_before} to {rss_after} bytes"
