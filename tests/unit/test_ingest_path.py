"""The agent's ingest path without a broker: what is stored (the wire bytes), in which order things happen (commit,
publish, acknowledge), dedup across a restart, the store's two connections and its background checkpoint."""

from __future__ import annotations

import asyncio
import gc
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest

import agent.runtime.contexts as contexts_module
import agent.runtime.pump as pump_module
import agent.store as store_module
from agent.core.api import TaskRecord
from agent.runtime import AgentRuntime, AgentSettings
from agent.runtime.pacing import GcClock, Pace, Turn
from agent.runtime.rows import event_row
from agent.store import ActionRow, EventRow, Store
from bench import mix
from broker.bus import BusOptions, Outgoing
from broker.memory import MemoryBroker, MemoryBus
from schemas import codec
from schemas.actions import DeviceState
from schemas.clock import Clock, ManualClock
from schemas.envelope import Message, envelope_of, now_ms
from schemas.errors import StoreError
from schemas.topics import Channel, Kind, parse

USER = "alice"


def _noon_ms() -> int:
    """The last noon (UTC, the core's default time zone) within a day: what the core decides about a question
    depends on the hour (quiet hours, 23:00-07:00, send a haptic instead of speech), and a test must not."""
    day, now = 86_400_000, now_ms()
    noon = now // day * day + day // 2
    return noon if noon <= now else noon - day


#: The time every message of these tests is sent at and the agent's clock shows (a daytime hour, and within the
#: admission's limits on publish times).
NOON = _noon_ms()


class SpyBus(MemoryBus):
    """The in-memory bus, checking through its own connection to the store what is committed when the runtime
    publishes or acknowledges; a second bus on the same broker watches the dead-letter topics."""

    def __init__(self, db: Path, broker: MemoryBroker) -> None:
        super().__init__(BusOptions(url=broker.url, manual_ack=True, name="t-agent"), broker=broker)
        self.db = db
        self.published: list[Outgoing] = []
        self.uncommitted_publishes: list[str] = []
        self.acked: list[str] = []
        self.uncommitted_acks: list[str] = []
        self.flushes = 0
        self.dlq = MemoryBus(BusOptions(url=broker.url, name="ops"), broker=broker)

    @property
    def dead_letters(self) -> list[str]:
        return [m.topic for m in self.dlq.inbox]

    def _committed(self, table: str, row_id: str) -> bool:
        con = sqlite3.connect(self.db)
        try:
            return con.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is not None  # noqa: S608
        finally:
            con.close()

    def publish_future(self, out: Outgoing, *, fmt: codec.Format | None = None) -> asyncio.Future[None]:
        action_id = msgpack.unpackb(out.payload)["id"]
        if not self._committed("actions", action_id):
            self.uncommitted_publishes.append(action_id)
        self.published.append(out)
        return super().publish_future(out, fmt=fmt)

    async def publish_raw(self, out: Outgoing, *, wait: bool = False, fmt: codec.Format | None = None) -> None:
        self.published.append(out)
        await super().publish_raw(out, wait=wait, fmt=fmt)

    def flush(self) -> None:
        self.flushes += 1

    def ack(self, message: Message) -> bool:
        eid = message.envelope.id
        if message.where.channel is not Channel.DLQ and not self._committed("events", eid):
            self.uncommitted_acks.append(eid)
        self.acked.append(eid)
        return super().ack(message)


@asynccontextmanager
async def runtime(db: Path, clock: Clock | None = None, **settings: Any) -> AsyncIterator[tuple[AgentRuntime, SpyBus]]:
    """An agent runtime with its real store, on the in-memory bus, its pump not started."""
    clock = clock or ManualClock(NOON)
    agent = AgentRuntime(AgentSettings(db=db, instance="t-agent", heartbeat_misses=0, **settings), clock)
    bus = SpyBus(db, MemoryBroker())
    agent._store = await Store(db).__aenter__()
    agent._bus = bus
    try:
        async with bus, bus.dlq:
            await bus.dlq.subscribe("wb/v1/_dlq/#")
            yield agent, bus
    finally:
        await agent.store.__aexit__(None, None, None)


def sqlite(agent: AgentRuntime) -> Store:
    """The agent's store, which these tests open as SQLite (to read it with SQL)."""
    assert isinstance(agent.store, Store)
    return agent.store


def wire(topic: str, payload: bytes, mid: int = 1) -> Message:
    """A message exactly as the bus hands it over."""
    return codec.decode(topic, payload, qos=1, mid=mid, link=1)


def births() -> list[Message]:
    rng = random.Random(1)
    return [wire(t, p, i) for i, (t, p) in enumerate(mix.backlog(1, 0, rng, NOON, prefix=USER), start=1)]


def question(event_id: str, text: str = "what time is it") -> Message:
    topic = f"wb/v1/{USER}00000/earphones/e1/evt/voice/utterance"
    return wire(topic, mix.pack(event_id, NOON, 1, mix.utterance(text)))


async def stored_payloads(store: Store) -> dict[str, bytes]:
    return {str(r[0]): bytes(r[1]) for r in await store.rows("SELECT id, payload FROM events")}


async def test_stored_as_received_published_before_the_commit_and_acked_after_it(tmp_path: Path) -> None:
    async with runtime(tmp_path / "a.db") as (agent, bus):
        batch = [*births(), question("q-1")]
        await agent.process(batch)
        cards = [o for o in bus.published if o.topic.endswith("/cmd/display.card")]
        assert len(cards) == 1
        # The answer does not wait for the commit (its id is deterministic; devices absorb a repeat after a crash),
        # but nothing is acknowledged before it is stored.
        assert bus.uncommitted_publishes == [msgpack.unpackb(cards[0].payload)["id"]]
        assert bus.uncommitted_acks == []
        assert sorted(bus.acked) == sorted(m.envelope.id for m in batch)
        stored = await stored_payloads(sqlite(agent))
        assert stored == {m.envelope.id: m.raw for m in batch}  # the bytes that came off the wire
        assert await sqlite(agent).scalar("SELECT COUNT(*) FROM actions WHERE type = 'display.card'") == 1


async def test_a_question_is_answered_before_the_rest_of_its_batch_is_stored(tmp_path: Path) -> None:
    async with runtime(tmp_path / "a.db") as (agent, bus):
        rng = random.Random(2)
        backlog = [wire(t, p, i) for i, (t, p) in enumerate(mix.backlog(3, 20, rng, NOON, prefix=USER), start=1)]
        await agent.process(backlog[: len(backlog) // 2])
        stored_before = await sqlite(agent).scalar("SELECT COUNT(*) FROM events")
        rest = [*backlog[len(backlog) // 2 :], question("q-1")]
        asker = rest[-1].where.user
        published_at: list[int] = []
        original = bus.publish_future

        def spy(out: Outgoing, *, fmt: codec.Format | None = None) -> asyncio.Future[None]:
            con = sqlite3.connect(bus.db)
            try:
                published_at.append(con.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            finally:
                con.close()
            return original(out, fmt=fmt)

        bus.publish_future = spy  # type: ignore[method-assign]
        await agent.process(rest)
        theirs = sum(1 for m in rest if m.where.user == asker)
        assert 0 < theirs < len(rest)
        assert published_at == [stored_before]  # the card went out before anything of this batch was stored
        users = [u for (u,) in await sqlite(agent).rows("SELECT user FROM events ORDER BY seq")][stored_before:]
        assert users[:theirs] == [asker] * theirs
        assert asker not in users[theirs:]
        # each user's messages keep their order
        for user in {m.where.user for m in rest}:
            mine = [m.envelope.id for m in rest if m.where.user == user]
            ids = [i for (i,) in await sqlite(agent).rows("SELECT id FROM events WHERE user = ? ORDER BY seq", user)]
            assert ids[-len(mine) :] == mine
        assert {m.envelope.id for m in rest} <= set(bus.acked)
        assert bus.uncommitted_acks == []


@pytest.mark.parametrize("slice_size", [1, 2, 3])
async def test_a_restart_in_the_middle_of_a_snapshot_round_restores_the_live_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slice_size: int
) -> None:
    """Users ticked and written a few at a time, timers firing, then a crash before the round ends: each user's row
    covers its own part of the log, and the replay into each user of the rest gives back the live core.

    The slice's size is fixed here (the runtime sizes it from the time a user took to write, so a slow machine wrote
    1 or 2 a slice and a fast one 3). A tick that only refreshed a user's quiet/asleep/moving flags is not stored: it
    fires again on the restored state (``AgentRuntime._tick_slice``). So both cores tick once, at the same moment,
    before they are compared; without that, a user whose row was not written yet differed in those flags.
    """
    monkeypatch.setattr(Pace, "size", lambda _: slice_size)
    monkeypatch.setattr(pump_module, "TICK_SLICE", 4)
    db = tmp_path / "a.db"
    clock = ManualClock(NOON)
    rng = random.Random(5)
    backlog = mix.backlog(12, 12, rng, clock.now_ms(), prefix=USER)
    users = sorted({parse(t).user or "" for t, _ in backlog})

    def asks(n: int) -> list[tuple[str, bytes]]:
        return [(f"wb/v1/{u}/earphones/e1/evt/voice/utterance", mix.pack(f"ask{n}-{u}", clock.now_ms(), n,
                 mix.utterance("how many steps today"))) for u in users[::2]]  # fmt: skip

    third = len(backlog) // 3
    ordered = [*backlog[:third], *asks(1), *backlog[third : 2 * third], *asks(2), *backlog[2 * third :]]
    messages = [wire(t, p, i) for i, (t, p) in enumerate(ordered, start=1)]
    async with runtime(db, clock) as (agent, _):
        for k in range(0, len(messages), 15):
            if agent._tick_pos >= len(agent._tick_users):
                agent._tick_users, agent._tick_pos = agent.core.users, 0
            await agent.process(messages[k : k + 15])  # the questions first, then a slice of timers, then the rest
            agent.snapshots.begin(agent.core)
            await agent.snapshots.write_slice(agent.store, agent.core, agent.clock)
            clock.advance(2.5)  # the cards' ack deadlines pass: ticks fall back to the earphones
        assert agent.snapshots.round is not None  # a crash in the middle of a round
        live = agent.core
        stored_ticks = sqlite(agent).writer.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
    assert stored_ticks > 0
    async with runtime(db, clock) as (restarted, _):
        await restarted._restore()
        live.tick(clock.now_ms())
        restarted.core.tick(clock.now_ms())
        assert restarted.core.export_state() == live.export_state()


async def test_duplicates_are_dropped_in_a_batch_and_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    async with runtime(db) as (agent, bus):
        await agent.process([*births(), question("q-1"), question("q-1")])
        assert agent.stats.duplicates == 1
        published = len(bus.published)
    async with runtime(db) as (agent, bus):
        await agent.process([question("q-1")])
        assert agent.stats.duplicates == 1
        assert bus.published == []
        assert bus.acked == ["q-1"]  # acknowledged all the same: it is safely stored
    assert published > 0
    async with Store(db) as store:
        assert await store.scalar("SELECT COUNT(*) FROM events WHERE id = 'q-1'") == 1


async def test_a_refused_message_goes_to_the_dlq_unstored_and_is_acknowledged(tmp_path: Path) -> None:
    async with runtime(tmp_path / "a.db") as (agent, bus):
        topic = f"wb/v1/{USER}/ring/r1/evt/system/battery"
        body = {"type": "ring.battery", "level_pct": 50.0, "charging": False}
        future = wire(topic, mix.pack("far-ahead", NOON + 86_400_000, 1, body))
        await agent.process([future])
        assert bus.dead_letters == ["wb/v1/_dlq/future"]
        assert bus.acked == ["far-ahead"]
        assert await stored_payloads(sqlite(agent)) == {}


def test_a_message_made_in_process_or_not_self_describing_is_stored_encoded() -> None:
    topic = f"wb/v1/{USER}/ring/r1/state"
    env = envelope_of(DeviceState)(id="silent-1", ts=NOON, data=DeviceState(online=False, kind=Kind.RING))
    made = Message(topic, parse(topic), env, qos=1)
    assert made.raw == b""
    assert event_row(made, 1, 2).payload == codec.encode(env)
    # JSON with a byte order mark, accepted because its content type said so: a replay could not sniff it
    text = b"\xef\xbb\xbf" + codec.encode(env, "json")
    received = codec.decode(topic, text, content_type=codec.JSON)
    assert received.raw == text
    stored = event_row(received, 1, 2).payload
    assert codec.decode(topic, stored).envelope == env
    plain_json = codec.encode(env, "json")
    assert event_row(codec.decode(topic, plain_json), 1, 2).payload == plain_json


def test_raw_takes_no_part_in_equality_or_repr() -> None:
    topic = f"wb/v1/{USER}/ring/r1/state"
    payload = codec.encode(envelope_of(DeviceState)(id="s-1", ts=NOON, data=DeviceState(online=True)))
    received = codec.decode(topic, payload)
    assert received.raw == payload
    assert received == Message(topic, received.where, received.envelope, size=len(payload))
    assert "raw" not in repr(received)


async def test_contexts_are_republished_once_per_interval(tmp_path: Path) -> None:
    async with runtime(tmp_path / "a.db", context_s=3600.0) as (agent, bus):
        await agent.process(births())
        await agent.publish_contexts()
        first = [o.topic for o in bus.published if o.topic.endswith("/agent/context")]
        assert first == [f"wb/v1/{USER}00000/agent/context"]
        ring_gone = mix.state_payload("ring-off", NOON, Kind.RING, online=False)
        await agent.process([wire(f"wb/v1/{USER}00000/ring/r1/state", ring_gone)])
        await agent.publish_contexts()  # changed again, but not due for an hour
        assert [o.topic for o in bus.published if o.topic.endswith("/agent/context")] == first
        assert agent.contexts.dirty == {f"{USER}00000"}
        assert await sqlite(agent).scalar("SELECT COUNT(*) FROM context") == 1


async def test_behind_a_backlog_a_context_published_before_waits_longer(tmp_path: Path) -> None:
    user = f"{USER}00000"
    every = 1.0  # BEHIND_WAIT (10) times that: 10 s of the monotonic time given to each call

    def contexts(bus: Any) -> int:
        return sum(o.topic == f"wb/v1/{user}/agent/context" for o in bus.published)

    async with runtime(tmp_path / "a.db", context_s=every) as (agent, bus):
        t0 = 1_000.0
        await agent.process(births())
        assert await agent.publish_contexts(behind=True, mono=t0) == 1  # a user's first context is not held back
        ring_gone = mix.state_payload("ring-off", NOON, Kind.RING, online=False)
        await agent.process([wire(f"wb/v1/{user}/ring/r1/state", ring_gone)])
        due = t0 + 2 * every  # due, were the agent not behind
        assert await agent.publish_contexts(behind=True, mono=due) == 0
        assert contexts(bus) == 1
        assert await agent.publish_contexts(mono=due) == 1  # caught up: it goes
        ring_back = mix.state_payload("ring-on", NOON + 1, Kind.RING, online=True)
        await agent.process([wire(f"wb/v1/{user}/ring/r1/state", ring_back)])
        still_behind = due + contexts_module.BEHIND_WAIT * every - every / 2
        assert await agent.publish_contexts(behind=True, mono=still_behind) == 0  # not waited long enough yet
        waited = due + contexts_module.BEHIND_WAIT * every
        assert await agent.publish_contexts(behind=True, mono=waited) == 1  # waited long enough: goes though behind
        assert contexts(bus) == 3


async def test_behind_a_backlog_a_round_of_every_users_ticks_waits_longer(tmp_path: Path) -> None:
    """Every user is ticked once per FULL_TICK_MS of agent time; while the agent is behind, once per
    FULL_TICK_BEHIND times that. In between, only the users with a timer of seconds (none here)."""
    clock = ManualClock(NOON)
    every_s = pump_module.FULL_TICK_MS / 1000
    async with runtime(tmp_path / "a.db", clock) as (agent, _):
        await agent.process(births())
        everyone = agent.core.users
        assert everyone
        assert agent.core.timed_users() == []
        assert agent._tick_round(behind=True) == everyone  # the first round ticks everyone
        clock.advance(every_s)
        assert agent._tick_round(behind=True) == []  # due, were the agent not behind
        clock.advance(every_s * (pump_module.FULL_TICK_BEHIND - 1) - 0.001)
        assert agent._tick_round(behind=True) == []  # not waited long enough yet
        clock.advance(0.001)
        assert agent._tick_round(behind=True) == everyone  # waited long enough: everyone though behind
        clock.advance(every_s)
        assert agent._tick_round() == everyone  # caught up: once per FULL_TICK_MS again


async def test_the_retained_consent_is_sent_only_when_it_changed(tmp_path: Path) -> None:
    user = f"{USER}00000"
    async with runtime(tmp_path / "a.db", context_s=0.0) as (agent, bus):
        await agent.process(births())
        await agent.publish_contexts()
        ring_gone = mix.state_payload("ring-off", NOON, Kind.RING, online=False)
        await agent.process([wire(f"wb/v1/{user}/ring/r1/state", ring_gone)])
        await agent.publish_contexts()  # the context changed and is due at once; the consent did not change
        contexts = [o for o in bus.published if o.topic == f"wb/v1/{user}/agent/context"]
        consents = [o for o in bus.published if o.topic == f"wb/v1/{user}/agent/consent"]
        assert len(contexts) == 2
        assert len(consents) == 1
        assert consents[0].retain


def event(i: int) -> EventRow:
    return EventRow(f"e{i}", "wb/v1/a/ring/r/evt/sensor/hr", "a", "ring", "r", "evt", "ring.hr", i, i, i, None,
                    1000 + i, 2000 + i, 1, False, b"\x80")  # fmt: skip


async def test_writes_have_their_own_connection_and_a_failed_batch_leaves_nothing(tmp_path: Path) -> None:
    async with Store(tmp_path / "a.db") as store:
        await store.commit_batch([event(1)], [], [], [])
        assert await store.scalar("SELECT COUNT(*) FROM events") == 1  # the read side sees the commit
        assert not store.db.in_transaction
        assert not store.writer.in_transaction
        action = ActionRow("a1", "wb/v1/a/glasses/g/cmd/display.card", "a", "glasses", "g", "display.card", "e2",
                           "skill", 1, 2, b"\x80")  # fmt: skip
        broken = TaskRecord("t1", None, "order_food", "asking", {}, 1, (), (), None, 1, 2)  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="a batch of 1 events"):
            await store.commit_batch([event(2)], [action], [broken], [])
        assert not store.writer.in_transaction
        assert await store.known(["e1", "e2"]) == {"e1"}
        assert await store.unpublished() == []
        await store.commit_batch([event(2)], [], [], [])
        assert await store.known(["e1", "e2", "e3"]) == {"e1", "e2"}


async def test_the_wal_is_checkpointed_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "a.db"
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY_S", 1e9)
    async with Store(db) as store:
        before = db.stat().st_size
        await store.commit_batch([event(i) for i in range(2000)], [], [], [])
        assert db.stat().st_size == before  # no automatic checkpoint inside the commit
        monkeypatch.setattr(store_module, "CHECKPOINT_EVERY_S", 0.0)
        await store.commit_batch([event(5000)], [], [], [])
        task = store._checkpoint
        assert task is not None
        await task
        assert db.stat().st_size > before


def test_the_pace_fits_its_budget_within_its_bounds() -> None:
    pace = Pace(0.008, 50, 500, guess_s=50e-6)
    assert pace.size() == 160
    for _ in range(50):
        pace.record(100, 0.001)  # 10 µs an item: 800 would fit
    assert pace.size() == 500
    for _ in range(50):
        pace.record(10, 0.01)  # 1 ms an item: 8 would fit
    assert pace.size() == 50
    pace.record(0, 1.0)  # nothing was done: nothing learnt
    assert pace.size() == 50


def test_a_slow_turn_reports_its_parts_and_the_garbage_collections_in_it() -> None:
    clock = GcClock()
    gc.callbacks.append(clock)
    try:
        turn = Turn(7, clock)
        turn.lap("process")
        gc.collect()
        turn.lap("snapshot")
    finally:
        gc.callbacks.remove(clock)
    report = turn.report()
    assert (report["batch"], report["gc_full"]) == (7, 1)
    assert report["gc_ms"] > 0
    assert set(report) >= {"total_ms", "process_ms", "snapshot_ms", "contexts", "snapshot_users"}
