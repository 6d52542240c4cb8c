"""Promise 1: at-least-once in, exactly-once in effect, across kill -9 of a real ``wearbus agent`` process.

Devices stream a realistic mix of QoS 1 events (some sent twice on purpose, with the same id) while the agent is
killed with SIGKILL at random points and started again. The broker's PUBACK is the device's receipt, so:

- every event the broker acknowledged is in the agent's ``events`` table (none lost, none stored twice);
- every action the agent stored reached the wire, a repeat of an id on the wire is possible only for actions
  whose publication the agent had not yet recorded when it died, and each device carried out each action id once;
- each utterance was answered once (a card, plus speech while walking; never the same action type twice), whether
  it came once, twice, or again after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas import codec
from schemas.clock import ManualClock
from schemas.envelope import now_ms
from schemas.events import Utterance
from schemas.topics import Kind
from tests.faults.conftest import Scale
from tests.faults.harness import (
    KINDS,
    TAP,
    AgentDb,
    AgentProcess,
    Counts,
    FaultDevice,
    Observer,
    envelope_for,
    fleet,
    make_device,
    mixed_event,
    publish_acked,
    secure_broker,
    setup_events,
    wait_for,
    wait_for_async,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(600)]

ATTEMPTS = 5  # tries at catching the agent between its publish and its commit
LOCK_WINDOW_S = 2.0  # how long a try holds the agent's write lock (under its 5 s busy timeout)
MAX_RATE_PER_DEVICE = 12.0  # below the agent's sustained admission rate (20/s), so nothing is refused for rate
DUPLICATE_SHARE = 0.05


class Stream:
    """What the devices sent and what the broker acknowledged."""

    def __init__(self) -> None:
        self.sent = 0
        self.acked: set[str] = set()
        self.not_acked = 0
        self.duplicates_sent = 0
        self.utterances: list[str] = []

    async def run(self, dev: FaultDevice, count: int, pace_s: float, rng: random.Random) -> None:
        """Publish the device's setup events, then ``count`` mixed events, each waiting for its PUBACK."""
        bodies = setup_events(dev.kind) + [mixed_event(dev.kind, rng, i, now_ms()) for i in range(count)]
        again: list[tuple[int, str, bytes]] = []
        for i, body in enumerate(bodies):
            dev.sent_seq += 1
            topic, envelope = envelope_for(dev, body, seq=dev.sent_seq)
            payload = codec.encode(envelope)
            self.sent += 1
            if await publish_acked(dev, topic, payload):
                self.acked.add(envelope.id)
                if isinstance(body, Utterance):
                    self.utterances.append(envelope.id)
                if rng.random() < DUPLICATE_SHARE:
                    again.append((i + rng.randint(0, 20), topic, payload))
            else:
                self.not_acked += 1
            for due in [d for d in again if d[0] <= i]:
                again.remove(due)
                self.duplicates_sent += await publish_acked(dev, due[1], due[2])
            await asyncio.sleep(pace_s)  # the device's own pace, not a wait for a condition
        for _, topic, payload in again:
            self.duplicates_sent += await publish_acked(dev, topic, payload)


async def chaos(
    agent: AgentProcess,
    db: AgentDb,
    observer: Observer,
    stream: Stream,
    points: list[int],
    rng: random.Random,
    counts: Counts,
) -> None:
    """Kill the agent with SIGKILL when the broker has acknowledged ``points[i]`` events; start it again."""
    unmarked = 0
    for point in points:
        await wait_for(lambda p=point: len(stream.acked) >= p, f"{point} acknowledged events", 120)  # type: ignore[misc]
        await agent.kill9()
        # Only actions whose publication was not yet recorded can go out a second time: stored but not marked, or
        # published before their commit (answers go out first) and not stored when it died.
        unmarked += int(await db.scalar("SELECT COUNT(*) FROM actions WHERE published_wall_ms IS NULL") or 0)
        unmarked += len(set(observer.commands) - await db.ids("SELECT id FROM actions"))
        await asyncio.sleep(rng.uniform(0.1, 1.0))  # the downtime is part of the fault
        await agent.start()
    counts["kills"] = len(points)
    counts["unmarked_at_kill"] = unmarked


async def test_agent_kill9_at_random_points_loses_nothing_and_acts_once(
    seed: int,
    scale: Scale,
    mosquitto_binary: None,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(scale.users)]
    creds = fleet(users)
    counts = Counts(f"agent-kill9 seed={seed}")
    stream = Stream()
    async with secure_broker(creds) as broker, Observer(broker.url, TAP.username, TAP.password) as observer:
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        db = AgentDb(agent.db)
        devices = [make_device(creds, user, kind, broker.url) for user in users for kind in KINDS]
        try:
            await agent.start()
            await observer.agent_online(agent)
            async with contextlib.AsyncExitStack() as stack:
                for dev in devices:
                    await stack.enter_async_context(dev)
                for dev in devices:
                    await dev.wait_connected(15)
                share = scale.events // len(devices)
                pace_s = max(5.0, share / MAX_RATE_PER_DEVICE) / share
                total = share * len(devices)
                points = sorted(rng.sample(range(total // 7, total * 6 // 7), scale.kills))
                await asyncio.gather(
                    chaos(agent, db, observer, stream, points, rng, counts),
                    *(stream.run(dev, share, pace_s, random.Random(f"{seed}/{dev.ident}")) for dev in devices),
                )
                await observer.agent_online(agent)

                async def all_processed() -> bool:
                    return stream.acked <= await db.ids()

                await wait_for_async(all_processed, "every acknowledged event in the agent's events table", 120)

                async def actions_settled() -> bool:
                    rows = await db.rows("SELECT id, published_wall_ms, status FROM actions")
                    return all(pub is not None and status != "pending" and observer.commands[aid] > 0
                               for aid, pub, status in rows)  # fmt: skip

                await wait_for_async(actions_settled, "every action published, seen on the wire and acknowledged", 60)
        finally:
            code = await agent.stop()
        assert code == 0, f"the agent did not stop cleanly ({code}); log:\n{agent.log_tail()}"

        stored = await db.ids()
        rows, distinct = (await db.rows("SELECT COUNT(*), COUNT(DISTINCT id) FROM events"))[0]
        actions = dict(await db.rows("SELECT id, topic FROM actions"))
        answers = {
            (corr, kind): n
            for corr, kind, n in await db.rows(
                "SELECT corr, type, COUNT(*) FROM actions WHERE reason = 'skill:unknown' GROUP BY corr, type"
            )
        }
        carried = {aid: dev.carried[aid] for dev in devices for aid in dev.carried}

    lost = stream.acked - stored
    repeats = sum(n - 1 for n in observer.commands.values() if n > 1)
    counts["sent"] = stream.sent
    counts["acknowledged"] = len(stream.acked)
    counts["processed"] = len(stream.acked & stored)
    counts["duplicates"] = stream.duplicates_sent
    counts["lost"] = len(lost)
    counts["actions"] = len(actions)
    counts["action_repeats_on_wire"] = repeats
    counts["carried_out_twice"] = sum(1 for n in carried.values() if n > 1)
    counts["utterances"] = len(stream.utterances)
    counts["agent_starts"] = agent.starts
    counts.report(record_property)

    assert stream.not_acked == 0, "the broker stayed up: every publish should have been acknowledged"
    assert not lost, f"{len(lost)} acknowledged events never processed, e.g. {sorted(lost)[:5]}"
    assert rows == distinct, "an event id was stored twice"
    assert stream.utterances, "the mix produced no utterance, so no action was tested"
    # One answer per utterance: a card, and speech too while the user walks; never the same kind twice.
    assert {corr for corr, _ in answers} >= set(stream.utterances), "an utterance was not answered"
    assert {key: n for key, n in answers.items() if n != 1} == {}, "an utterance was answered twice"
    assert set(observer.commands) == set(actions), "the wire and the actions table disagree"
    assert repeats <= int(counts["unmarked_at_kill"]), "an action whose publication was recorded went out again"
    assert {aid: n for aid, n in carried.items() if n != 1} == {}, "a device carried out an action twice"
    assert set(carried) == set(actions), "an action was not carried out by its device"
    assert observer.dlq == [], f"nothing should be refused here: {observer.dlq[:3]}"


async def test_a_backlog_held_while_the_agent_was_away_is_not_refused_as_a_flood(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Devices that held their events for ten minutes while the agent was away (the SDK's default) send them all
    at once when it returns; they were published at an ordinary pace, so the per-device limit must let them in."""
    creds = fleet(["u0"])
    counts = Counts("agent-away backlog")
    per_device, every_s = 300, 1.5  # 7.5 minutes of one event every 1.5 s: more than the burst (200)
    async with secure_broker(creds) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        db = AgentDb(agent.db)
        await agent.start()
        await observer.agent_online(agent)
        assert await agent.stop() == 0  # its goodbye leaves the retained state offline: devices hold their events
        start = now_ms() - 600_000
        devices = [
            make_device(creds, "u0", kind, broker.url, hold=True, clock=ManualClock(start))
            for kind in (Kind.RING, Kind.PHONE)
        ]
        for dev in devices:
            await stack.enter_async_context(dev)
        await wait_for(lambda: all(d.agent_away for d in devices), "the devices to see the agent away", 15)
        held: list[str] = []
        rng = random.Random(3)
        for _ in range(per_device):
            for dev in devices:
                held.append(dev.emit(mixed_event(dev.kind, rng, 0, start)).id)
                assert isinstance(dev.clock, ManualClock)
                dev.clock.advance(every_s)
        assert all(d.outbox_depth == per_device for d in devices)
        await agent.start()
        await observer.agent_online(agent)

        async def arrived() -> bool:
            return set(held) <= await db.ids()

        with contextlib.suppress(pytest.fail.Exception):
            await wait_for_async(arrived, "the held backlog at the agent", 60)
        stored = await db.ids()
        counts["sent"] = len(held)
        counts["acknowledged"] = sum(d.stats.sent for d in devices)
        counts["processed"] = len(set(held) & stored)
        counts["lost"] = len(set(held) - stored)
        counts["refused_for_rate"] = len(observer.dead_letters("wb/v1/u0/", "rate"))
    counts.report(record_property)
    assert counts["refused_for_rate"] == 0, "a backlog sent at an ordinary pace was refused as a flood"
    assert counts["lost"] == 0


async def test_a_kill_between_the_publish_and_the_commit_repeats_nothing(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """The agent publishes an answer before it commits (answers in one round trip): killed in between, it answers
    again with the same action id after a restart, and the device carries it out once.

    The test holds the agent's database write lock, so the commit after the publish waits; the answer is seen on the
    wire, the agent is killed, the lock released, and the agent started again.
    """
    user = "u0"
    creds = fleet([user])
    counts = Counts("kill-between-publish-and-commit")
    async with secure_broker(creds) as broker, Observer(broker.url, TAP.username, TAP.password) as observer:
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        db = AgentDb(agent.db)
        glasses = make_device(creds, user, Kind.GLASSES, broker.url)
        buds = make_device(creds, user, Kind.EARPHONES, broker.url)
        try:
            await agent.start()
            await observer.agent_online(agent)
            async with glasses, buds:
                await glasses.wait_connected(15)
                await buds.wait_connected(15)
                sent = 0
                for dev in (glasses, buds):
                    for body in setup_events(dev.kind):
                        sent += 1
                        dev.sent_seq += 1
                        topic, envelope = envelope_for(dev, body, seq=dev.sent_seq)
                        assert await publish_acked(dev, topic, codec.encode(envelope))
                await wait_for_async(lambda: _stored_at_least(db, sent), "the setup events stored", 30)
                # The pump writes for other reasons too (contexts, ticks, snapshots, PUBACK marks): held behind the
                # lock, such a write keeps the utterance from being handled at all. Then the lock is let go, that
                # utterance is answered and stored as usual, and the next one tries again.
                said, first, stored_at_kill = None, {}, -1
                for attempt in range(1, ATTEMPTS + 1):
                    lock = sqlite3.connect(agent.db, timeout=10, isolation_level=None)
                    try:
                        lock.execute("BEGIN IMMEDIATE")  # the agent's next commit waits for this write lock
                        buds.sent_seq += 1
                        topic, said = envelope_for(buds, Utterance(text="what time is it"), seq=buds.sent_seq)
                        assert await publish_acked(buds, topic, codec.encode(said))
                        corr = said.id
                        answered = await _within(LOCK_WINDOW_S, lambda c=corr: c in observer.corrs)  # type: ignore[misc]
                        if answered:
                            await agent.kill9()
                            first = {a: n for a, n in observer.commands.items() if observer.command_corr.get(a) == corr}
                            stored_at_kill = int(
                                lock.execute("SELECT COUNT(*) FROM events WHERE id = ?", (corr,)).fetchone()[0]
                            )
                    finally:
                        lock.execute("ROLLBACK")
                        lock.close()
                    if answered:
                        counts["attempts"] = attempt
                        break
                    await wait_for_async(lambda c=corr: _stored_at_least(db, 1, c), "an unlocked utterance stored", 30)  # type: ignore[misc]
                else:
                    pytest.fail(f"in {ATTEMPTS} tries the agent never answered while its commit waited")
                assert said is not None
                counts["stored_at_kill"] = stored_at_kill
                await agent.start()
                await observer.agent_online(agent)
                await wait_for_async(lambda: _stored_at_least(db, 1, said.id), "the utterance stored after restart", 60)

                async def settled() -> bool:
                    rows = await db.rows("SELECT id, published_wall_ms FROM actions WHERE corr = ?", said.id)
                    return bool(rows) and all(pub is not None for _, pub in rows)

                await wait_for_async(settled, "the answer stored and marked published", 60)
                answer = await db.rows("SELECT id, type FROM actions WHERE corr = ?", said.id)
                await wait_for(lambda: all(glasses.carried[a] + buds.carried[a] >= 1 for a, _ in answer),
                               "the answer carried out", 30)  # fmt: skip
        finally:
            code = await agent.stop()
    assert code == 0, f"the agent did not stop cleanly ({code}); log:\n{agent.log_tail()}"
    before_kill = sum(1 for a, _ in answer if first.get(a))
    twice = sum(1 for a, _ in answer if glasses.carried[a] + buds.carried[a] > 1)
    counts["actions"] = len(answer)
    counts["published_before_kill"] = before_kill
    counts["on_wire"] = sum(observer.commands[a] for a, _ in answer)
    counts["carried_out_twice"] = twice
    counts.report(record_property)
    assert counts["stored_at_kill"] == 0, "the commit was expected to wait for the test's lock"
    assert set(first) <= {a for a, _ in answer}, "the restarted agent answered with other action ids"
    assert before_kill >= 1, "no answer went out before the kill"
    assert twice == 0, "a device carried out an action twice"
    assert (await db.scalar("SELECT COUNT(*) FROM events WHERE id = ?", said.id)) == 1


async def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within ``seconds`` (polled): a bounded try, not a verdict."""
    try:
        await wait_for(condition, "", seconds)
    except pytest.fail.Exception:
        return False
    return True


async def _stored_at_least(db: AgentDb, n: int, event_id: str | None = None) -> bool:
    if event_id is None:
        return int(await db.scalar("SELECT COUNT(*) FROM events") or 0) >= n
    return int(await db.scalar("SELECT COUNT(*) FROM events WHERE id = ?", event_id) or 0) >= n
