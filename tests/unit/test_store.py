"""The agent's store: migrations, one transaction per batch, dedup set, snapshot + replay log."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import agent.store
from agent.core.api import TaskRecord
from agent.core.engine import AgentCore
from agent.store import _INSERT_EVENT, MIGRATIONS, ActionRow, EventRow, Mark, Snapshot, Store, TickRow
from bench import mix
from schemas import codec
from schemas.errors import ConfigError, StoreError


def event(i: int) -> EventRow:
    return EventRow(f"e{i}", "wb/v1/a/ring/r/evt/sensor/hr", "a", "ring", "r", "evt", "ring.hr", i, i, i, None,
                    1000 + i, 2000 + i, 1, False, b"\x80")  # fmt: skip


def action(i: int) -> ActionRow:
    return ActionRow(f"a{i}", "wb/v1/a/glasses/g/cmd/display.card", "a", "glasses", "g", "display.card", f"e{i}",
                     "skill", 1000 + i, 3000 + i, b"\x80")  # fmt: skip


def database_at(db: Path, version: int) -> sqlite3.Connection:
    """A new database at schema ``version`` (the migrations up to it), open for the test to fill and close."""
    con = sqlite3.connect(db, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:version], start=1):
        con.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
    return con


async def test_migrates_and_reopens(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    async with Store(db) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        assert await store.scalar("PRAGMA journal_mode") == "wal"
    async with Store(db) as store:
        assert await store.schema_version() == len(MIGRATIONS)


async def test_v4_keeps_the_events_and_their_order(tmp_path: Path) -> None:
    """A v3 database (AUTOINCREMENT, the user index) upgrades with every event, seq and tick watermark kept."""
    db = tmp_path / "a.db"
    con = database_at(db, 3)
    con.executemany(_INSERT_EVENT, [event(i) for i in range(1, 6)])
    con.execute("INSERT INTO ticks (after_event_seq, at_ms) VALUES (4, 99)")
    con.close()
    async with Store(db) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        assert await store.rows("SELECT seq, id FROM events ORDER BY seq") == [(i, f"e{i}") for i in range(1, 6)]
        assert await store.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_user'") == 0
        assert "AUTOINCREMENT" not in await store.scalar("SELECT sql FROM sqlite_master WHERE name = 'events'")
        await store.commit_batch([event(6)], [], [], [])
        assert await store.scalar("SELECT seq FROM events WHERE id = 'e6'") == 6
        assert await store.known(["e1", "e6", "e7"]) == {"e1", "e6"}
        assert [kind for kind, _, _ in await store.since(0)] == ["event"] * 4 + ["tick", "event", "event"]


async def test_v8_keys_the_events_on_their_id_alone(tmp_path: Path) -> None:
    """A v7 database (keyed on (ts, id)) upgrades with every event kept; the dedup key is then the id alone, as the
    contract says: a device's retry with a fresh ts is the same event, and is not acted on twice."""
    db = tmp_path / "a.db"
    con = database_at(db, 7)
    con.executemany(_INSERT_EVENT, [event(i) for i in range(1, 4)])
    con.execute(_INSERT_EVENT, event(2)._replace(ts=9))  # under v7 a retry with a fresh ts was stored (and acted on)
    con.close()
    async with Store(db) as store:
        assert await store.schema_version() == len(MIGRATIONS) >= 8
        rows = await store.rows("SELECT seq, id, ts FROM events ORDER BY seq")
        assert rows == [(1, "e1", 1), (2, "e2", 2), (3, "e3", 3), (4, "e2#dup4", 9)]  # the log keeps what happened
        indexes = await store.rows("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")
        assert indexes == []  # v11: the QoS 1 ids are in a table of their own
        assert await store.rows("SELECT id FROM dedup ORDER BY id") == [("e1",), ("e2",), ("e2#dup4",), ("e3",)]
        retry = event(3)._replace(ts=7)  # the same event again, stamped anew by the device
        assert await store.known([retry.id, "e4"]) == {"e3"}  # so the pump does not store it again
        await store.commit_batch([event(4)], [], [], [])
        assert await store.rows("SELECT id, ts FROM events WHERE id IN ('e3', 'e4') ORDER BY seq") == [
            ("e3", 3),
            ("e4", 4),
        ]
        many = [f"e{i}" for i in range(1, 1200)]  # more than one chunk of the dedup query
        assert await store.known(many) == {"e1", "e2", "e3", "e4"}


def sample(i: int, received: int) -> EventRow:
    """A head pose (no health value) received at ``received``."""
    return EventRow(f"p{i}", "wb/v1/a/glasses/g/evt/sensor/head_pose", "a", "glasses", "g", "evt",
                    "glasses.head_pose", i, i, i, None, 1000 + i, received, 0, False, b"\x80")  # fmt: skip


async def test_v9_lists_the_health_events_the_retention_has_yet_to_redact(tmp_path: Path) -> None:
    """A v8 database upgrades with its unredacted health events on the retention's list (and nothing else): those
    are the only events the retention reads from then on."""
    from schemas.health import REDACTED  # noqa: PLC0415

    db = tmp_path / "a.db"
    con = database_at(db, 8)
    redacted = event(2)._replace(payload=b"\x81\xa1x" + REDACTED.encode())  # stored without the user's consent
    con.executemany(_INSERT_EVENT, [event(1), redacted, sample(3, 5), event(4)])
    con.close()
    async with Store(db) as store:
        assert await store.schema_version() == len(MIGRATIONS) >= 9
        assert await store.rows("SELECT seq, received_wall_ms FROM health_due ORDER BY seq") == [(1, 2001), (4, 2004)]
        await store.commit_batch([event(5), sample(6, 9)], [], [], [])
        assert await store.rows("SELECT seq FROM health_due ORDER BY seq") == [(1,), (4,), (5,)]
        assert await store.prune_health(2004) == 1  # e1 (received 2001); e4 and e5 are not due yet
        assert await store.rows("SELECT seq FROM health_due ORDER BY seq") == [(4,), (5,)]
        assert await store.prune_health(2004) == 0
        await store.forget("a")  # erasing the user takes their events off the list too
        assert await store.rows("SELECT seq FROM health_due") == []


async def test_v10_and_v11_keep_the_qos_1_ids_only_in_a_table_of_their_own(tmp_path: Path) -> None:
    """A v9 database upgrades with every event kept; the QoS 1 ids go into the dedup table (v10 indexed those only,
    v11 moves them out of the events, which are then never indexed: a new row goes at the end), the mark at the
    log's end and nothing held in memory. A sample's id is neither looked up nor kept (the contract's exactly-once
    is for QoS 1; a QoS 0 message is delivered at most once); the dedup query searches the table's key, and the
    retention's listing reads the batch's rows, never the whole table."""
    db = tmp_path / "a.db"
    con = database_at(db, 9)
    con.executemany(_INSERT_EVENT, [event(1), sample(2, 5), event(3)])
    con.close()
    async with Store(db) as store:
        assert await store.schema_version() == len(MIGRATIONS) >= 11
        assert await store.rows("SELECT seq, id FROM events ORDER BY seq") == [(1, "e1"), (2, "p2"), (3, "e3")]
        assert await store.rows("SELECT id FROM dedup ORDER BY id") == [("e1",), ("e3",)]
        assert await store.scalar("SELECT seq FROM dedup_mark") == 3
        assert len(store.unmerged) == 0
        assert await store.rows("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'") == []
        assert await store.known(["e1", "p2", "e3", "e4"]) == {"e1", "e3"}  # the sample is not looked up
        plan = str(await store.rows("EXPLAIN QUERY PLAN SELECT id FROM dedup WHERE id IN ('e1', 'e2')"))
        assert "SEARCH dedup USING PRIMARY KEY" in plan
        health0 = event(4)._replace(qos=0)  # a health value sent at QoS 0: still listed for the retention
        await store.commit_batch([health0, sample(2, 6), event(5)], [], [], [])
        rows = await store.rows("SELECT seq, id, qos FROM events WHERE seq > 3 ORDER BY seq")
        assert rows == [(4, "e4", 0), (5, "p2", 0), (6, "e5", 1)]  # the sample again: stored
        assert await store.known(["e4", "p2", "e5"]) == {"e5"}
        # this batch's health events (the raw inserts into the v9 file above were never listed)
        assert await store.rows("SELECT seq FROM health_due ORDER BY seq") == [(4,), (6,)]
        due = str(await store.rows(f"EXPLAIN QUERY PLAN {agent.store._INSERT_DUE}", 3))
        assert "SEARCH events USING INTEGER PRIMARY KEY" in due  # one pass over the batch's rows, not the log


def device_event(device: int, n: int, user: str = "a", qos: int = 1) -> EventRow:
    """The ``n``-th event of a device, its id made as devices make them (the device's prefix, then a counter)."""
    return event(n)._replace(id=f"{device:012x}-{n:x}", user=user, device=f"r{device}", qos=qos)


async def test_v11_merges_the_held_ids_in_sorted_runs_and_reads_them_back_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across runs of the merge, a reopen in the middle of one (the memory lost, as in a crash) and an erasure, the
    dedup check answers exactly the QoS 1 ids stored: those held in memory and those in the table."""
    monkeypatch.setattr(agent.store, "MERGE_AT", 64)
    monkeypatch.setattr(agent.store, "MERGE_CHUNK", 8)
    db = tmp_path / "a.db"
    stored: list[str] = []
    batches = [[device_event(d, b, user=f"u{d % 3}") for d in range(12)] for b in range(1, 30)]
    async with Store(db) as store:
        for batch in batches[:20]:
            assert await store.known([e.id for e in batch]) == set()
            await store.commit_batch([*batch, device_event(99, 0, qos=0)._replace(id=f"s{len(stored)}")], [], [], [])
            stored += [e.id for e in batch]
        merged = {row[0] for row in await store.rows("SELECT id FROM dedup")}
        assert merged  # runs merged
        assert merged < set(stored)  # the last one still going
        assert merged | store.unmerged.ids == set(stored)
        assert await store.scalar("SELECT seq FROM dedup_mark") > 0
    async with Store(db) as store:  # reopened mid-run: what the table lacks is read back from the events
        assert set(stored) - merged <= store.unmerged.ids
        assert await store.known([*stored, "s0", "nope"]) == set(stored)  # the samples' ids are not kept
        for batch in batches[20:]:
            await store.commit_batch(batch, [], [], [])
            stored += [e.id for e in batch]
        assert await store.known([*stored, "nope"]) == set(stored)
        await store.forget("u1")
        left = {e.id for batch in batches for e in batch if e.user != "u1"}
        assert await store.known(stored) == left
        assert {row[0] for row in await store.rows("SELECT id FROM dedup")} <= left
    async with Store(db) as store:
        assert await store.known(stored) == left


async def test_the_log_retention_deletes_old_events_no_restart_needs_and_their_ids_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Oldest first, in chunks: events received before the horizon, at or before the last complete snapshot round's
    start and merged into the dedup table, never the last one; their ids, LLM resolutions and places on the health
    retention's list go with them, and what a restart replays stays."""
    monkeypatch.setattr(agent.store, "MERGE_AT", 16)
    monkeypatch.setattr(agent.store, "MERGE_CHUNK", 8)
    batches = [
        [device_event(d, b)._replace(received_wall_ms=1000 * b) for d in range(4)]
        + [device_event(9, b, qos=0)._replace(id=f"s{b}", received_wall_ms=1000 * b)]
        for b in range(1, 31)
    ]
    ids = [e.id for batch in batches for e in batch]
    async with Store(tmp_path / "a.db") as store:
        for i, batch in enumerate(batches, start=1):
            await store.commit_batch(batch, [], [], [], resolutions=[(batch[0].id, "{}")])
            if i == 20:
                assert await store.prune_log(None) == 0  # no snapshot yet: a restart replays the whole log
                assert await store.prune_log(10**9) == 0
                await store.save_core(AgentCore().export_users([]), 0, 0)
        covered = await store.scalar("SELECT event_seq FROM core_state")
        assert covered == 100  # the snapshot after batch 20 covers its 100 events
        mark = await store.scalar("SELECT seq FROM dedup_mark")
        assert mark > 25
        upto = min(covered, mark)
        assert await store.prune_log(None) == 0  # no age given, no size cap: nothing
        assert await store.prune_log(5_500, limit=12) == 12  # a chunk at a time
        assert await store.prune_log(5_500) == 13  # the 25 events received before 5.5 s
        assert await store.prune_log(5_500) == 0
        assert await store.prune_log(10**9) == upto - 25  # then all the merged ones the snapshot covers
        assert await store.prune_log(10**9) == 0
        gone, kept = ids[:upto], ids[upto:]
        assert await store.scalar("SELECT MIN(seq) FROM events") == upto + 1
        assert await store.known(gone) == set()
        assert await store.known(kept) == {i for i in kept if not i.startswith("s")}
        assert await store.scalar("SELECT COUNT(*) FROM health_due WHERE seq <= ?", upto) == 0
        assert await store.scalar("SELECT COUNT(*) FROM resolutions") == 30 - upto // 5
        assert [kind for kind, _, _ in await store.since(covered)] == ["event"] * (150 - covered)
        await store.save_core(AgentCore().export_users([]), 0, 0)  # covers everything now
        for _ in range(10):
            await store.commit_batch([], [], [], [], [TickRow(1, None)])  # no events: the merge does not move
        while await store.prune_log(10**9):
            pass
        last = await store.scalar("SELECT MAX(seq) FROM events")
        assert last == 150
        await store.commit_batch([device_event(5, 1)], [], [], [])
        assert await store.scalar("SELECT MAX(seq) FROM events") == 151  # the numbering goes on


async def test_a_capped_log_deletes_its_oldest_events_as_it_nears_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``max_mb``, past :data:`agent.store.LOG_PRESSURE` of the cap the oldest events a restart no longer needs
    go whatever their age, until the pages in use are under it again; without a cap, age alone decides."""
    monkeypatch.setattr(agent.store, "MERGE_AT", 16)
    monkeypatch.setattr(agent.store, "MERGE_CHUNK", 64)
    big = [[device_event(d, b)._replace(payload=bytes(2000)) for d in range(8)] for b in range(1, 201)]
    pressure = agent.store.LOG_PRESSURE * 2 * 2**20  # bytes

    def in_use() -> int:
        pages, free = (int(store.writer.execute(f"PRAGMA {p}").fetchone()[0]) for p in ("page_count", "freelist_count"))
        return (pages - free) * int(store.writer.execute("PRAGMA page_size").fetchone()[0])

    async with Store(tmp_path / "a.db", max_mb=2.0) as store:
        stored = 0
        for batch in big:  # up to just past the pressure (the cap itself would refuse the batch)
            await store.commit_batch(batch, [], [], [])
            stored += len(batch)
            if in_use() > pressure:
                break
        assert in_use() > pressure
        await store.save_core(AgentCore().export_users([]), 0, 0)
        deleted = 0
        while n := await store.prune_log(None, limit=50):
            deleted += n
        assert deleted > 0
        assert in_use() <= pressure
        assert await store.scalar("SELECT COUNT(*) FROM events") == stored - deleted
    async with Store(tmp_path / "b.db") as store:
        for batch in big[:10]:
            await store.commit_batch(batch, [], [], [])
        await store.save_core(AgentCore().export_users([]), 0, 0)
        assert await store.prune_log(None) == 0


async def test_a_batch_of_health_events_is_listed_for_the_retention_in_one_pass(tmp_path: Path) -> None:
    """A ring's backlog after the agent was away is a batch of health events only: they are listed in one statement
    over the batch's rows (one per event, each a pass over the batch, was quadratic in the batch's size)."""
    async with Store(tmp_path / "a.db") as store:
        await store.commit_batch([event(i) for i in range(1, 101)], [], [], [])
        listings: list[str] = []
        store.writer.set_trace_callback(
            lambda sql: listings.append(sql) if sql.startswith("INSERT OR IGNORE INTO health_due") else None
        )
        await store.commit_batch([event(i) for i in range(101, 501)], [], [], [])
        store.writer.set_trace_callback(None)
        assert len(listings) == 1
        assert await store.scalar("SELECT COUNT(*) FROM health_due") == 500


async def test_the_health_retention_reads_what_is_due_not_the_log(tmp_path: Path) -> None:
    """The retention runs once a minute on the writer, on the event loop. It read the whole log to find what was due
    (0.4-0.8 s at 2 million events); now the work of a pass is the same for a log of 2,000 events and of 40,000:
    counted in SQLite's virtual machine steps, which do not depend on the machine's speed."""

    async def steps(path: Path, samples: int) -> int:
        async with Store(path) as store:
            rows = [sample(i, 100) for i in range(samples)]
            for k in range(0, samples, 5000):
                await store.commit_batch(rows[k : k + 5000], [], [], [])
            await store.commit_batch([event(i) for i in range(10)], [], [], [])  # received 2000-2009
            count = [0]

            def step() -> int:
                count[0] += 1
                return 0

            store.writer.set_progress_handler(step, 100)
            assert await store.prune_health(2005, hourly_before_ms=0) == 5
            store.writer.set_progress_handler(None, 0)
            return count[0]

    small, big = await steps(tmp_path / "small.db", 2_000), await steps(tmp_path / "big.db", 40_000)
    assert big <= small + 5, (small, big)  # it read the whole log: ~20 times as many steps for the bigger one
    async with Store(tmp_path / "big.db") as store:
        plan = str(await store.rows("EXPLAIN QUERY PLAN DELETE FROM health_hourly WHERE hour_ms < 1"))
        assert "health_hourly_hour" in plan  # the hourly aggregates' retention: a range, not the whole table


async def test_the_dedup_query_takes_a_few_shapes_whatever_the_batch_sizes(tmp_path: Path) -> None:
    """Each distinct SQL text is a prepared statement in the connection's cache (128 of them, ~94 KiB each for
    hundreds of ids: 12 MiB outside Python's heap). Batches of every size from 1 to 1,100 ask at most ten shapes of
    the dedup query, and each answer is exact (the padding repeats an id)."""
    async with Store(tmp_path / "a.db") as store:
        await store.commit_batch([event(i) for i in range(0, 1200, 3)], [], [], [])
        shapes: set[int] = set()  # the ids in each dedup query (the trace shows them bound)
        dedup = "SELECT id FROM dedup WHERE id IN"
        store.writer.set_trace_callback(lambda sql: shapes.add(sql.count(",") + 1) if sql.startswith(dedup) else None)
        rng = random.Random(5)
        for n in [*range(1, 600), 1024, 1100]:
            ids = [f"e{i}" for i in rng.sample(range(1300), n)]
            assert await store.known(ids) == {i for i in ids if int(i[1:]) % 3 == 0 and int(i[1:]) < 1200}
        store.writer.set_trace_callback(None)
    assert 0 < len(shapes) <= 10


async def test_the_log_starts_over_under_a_steady_stream_of_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch after batch while background checkpoints run (one per batch here): SQLite starts its log over only when a
    write begins on a log wholly copied into the database, and a stream of batches each added frames while the last
    checkpoint ran, so the log never started over and grew for as long as the agent ran (3.1 GB in 5.5 minutes at
    1,000 users). The writer now finishes a background checkpoint before its next transaction (one in
    ``CATCH_UP_EVERY_S``: each after the other here), and the log starts over. Each start bumps the checkpoint
    sequence number in the log's header (bytes 12-15): before, it stayed at its first value for 2,500 batches; now it
    moves within a few dozen. Counted, not timed: a slow disk only makes the test take more batches. With catch-ups
    an hour apart, the same batches never start it over: the catch-up is what does."""
    monkeypatch.setattr(agent.store, "CHECKPOINT_EVERY_S", 0.0)

    async def starts_over(catch_up_every_s: float, db: Path, most: int) -> tuple[int, int]:
        monkeypatch.setattr(agent.store, "CATCH_UP_EVERY_S", catch_up_every_s)
        log = db.with_name(db.name + "-wal")
        starts: set[int] = set()
        per_batch = 20
        async with Store(db) as store:
            n = 0
            while len(starts) < 3 and n < most:  # the log as first written, then two starts over
                await store.commit_batch([event(i) for i in range(n * per_batch, (n + 1) * per_batch)], [], [], [])
                await asyncio.sleep(0)  # the pump's other awaits: the background checkpoint runs meanwhile
                with log.open("rb") as header:
                    starts.add(int.from_bytes(header.read(16)[12:16], "big"))
                n += 1
            assert await store.count_events() == n * per_batch
        return len(starts), n

    started, n = await starts_over(0.0, tmp_path / "a.db", 10_000)
    assert started >= 3, f"the log never started over in {n} batches"
    started, n = await starts_over(3600.0, tmp_path / "b.db", 300)
    assert started == 1, f"the log started over without a catch-up ({n} batches)"


async def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    async with Store(db) as store:
        await store.db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="upgrade wearbus"):
        async with Store(db):
            pass


async def test_batch_dedup_publish_and_acks(tmp_path: Path) -> None:
    async with Store(tmp_path / "a.db") as store:
        task = TaskRecord("t1", "a", "order_food", "awaiting_confirmation", {"dish": "noodles"}, 1, ("address",), (),
                       None, 1, 2)  # fmt: skip
        await store.commit_batch([event(1), event(2)], [action(1)], [task], [("low_spo2", "a", "re-measure", 5)])
        assert await store.known(["e2", "e3"]) == {"e2"}  # e2 again: the pump does not store it twice
        await store.commit_batch([event(3)], [], [], [])
        assert await store.known(["e1", "e2", "e3", "e4"]) == {"e1", "e2", "e3"}
        assert await store.scalar("SELECT COUNT(*) FROM events") == 3
        assert [a[0] for a in await store.unpublished()] == ["a1"]
        await store.mark_published(["a1"], 4000)
        assert await store.unpublished() == []
        await store.mark_acks([("a1", "done", "shown", 5000)])
        assert await store.rows("SELECT status, detail FROM actions") == [("done", "shown")]
        done = TaskRecord("t1", "a", "order_food", "committed", {"dish": "noodles"}, 2, ("address",), (), "ring", 1, 9)
        await store.commit_batch([], [], [done], [])
        [t] = await store.tasks()
        assert (t.state, t.rounds, t.confirm_modality) == ("committed", 2, "ring")


async def test_snapshot_and_replay_log(tmp_path: Path) -> None:
    async with Store(tmp_path / "a.db") as store:
        await store.commit_batch([event(1)], [], [], [])
        await store.save_core({"v": 1}, 10, 0)
        await store.commit_batch([event(2)], [], [], [], ticks=[TickRow(20)])
        await store.commit_batch([event(3)], [], [], [])
        snap = await store.load_core()
        assert snap is not None
        assert snap.state == {"v": 1}
        items = await store.since(snap.replay_from)
        # live, the pump ticks before it handles a batch; the replay keeps that order
        assert [(k, v if k == "tick" else v.id, pos) for k, v, pos in items] == [
            ("tick", TickRow(20), 1),
            ("event", "e2", 2),
            ("event", "e3", 3),
        ]


async def test_a_snapshot_in_slices_marks_how_far_each_user_goes(tmp_path: Path) -> None:
    """Rows written at different times cover different parts of the log; the replay starts where the round began."""
    async with Store(tmp_path / "a.db") as store:
        await store.commit_batch([event(1)], [], [], [], ticks=[TickRow(5, ("a",))])
        start = await store.save_core({"v": 1, "users": {"a": {"n": 1}}}, 10, 0, complete=False)
        assert start == Mark(1, 1)
        await store.commit_batch([event(2)], [], [], [], ticks=[TickRow(6, ("b",))])
        assert (await store.load_core()) == Snapshot({"v": 1, "users": {"a": {"n": 1}}}, 0, 10, {"a": start})
        last = await store.save_core({"v": 1, "users": {"b": {"n": 2}}}, 11, 0, round_start=start, complete=True)
        assert last == Mark(2, 2)
        await store.commit_batch([event(3)], [], [], [])
        snap = await store.load_core()
        assert snap == Snapshot({"v": 1, "users": {"a": {"n": 1}, "b": {"n": 2}}}, 1, 11, {"a": start, "b": last})
        items = await store.since(snap.replay_from)
        assert [(k, pos) for k, _, pos in items] == [("tick", 2), ("event", 2), ("event", 3)]
        assert [snap.marks["a"].covers(k, pos) for k, _, pos in items] == [False, False, False]
        assert [snap.marks["b"].covers(k, pos) for k, _, pos in items] == [True, True, False]
        assert await store.scalar("SELECT COUNT(*) FROM ticks") == 1  # the tick before the round's start is gone


async def test_incremental_core_snapshots_add_up_to_the_whole_core(tmp_path: Path) -> None:
    """A snapshot writes only the users that changed; the rows together restore exactly the live core."""
    now = 1_800_000_000_000
    messages = [codec.decode(t, p, qos=1) for t, p in mix.backlog(6, 20, random.Random(3), now)]
    live = AgentCore()
    async with Store(tmp_path / "a.db") as store:
        for i, message in enumerate(messages):
            live.handle(message, now + i)
            if i % 25 == 0:
                live.tick(now + i)
                await store.save_core(live.export_users(live.take_changed()), now + i, now + i)
        await store.save_core(live.export_users(live.take_changed()), now, now)
        assert live.take_changed() == []  # nothing changed since
        live.handle(messages[-1], now + len(messages))  # one user's message: only that user is written
        changed = live.export_users(live.take_changed())
        assert list(changed["users"]) == [messages[-1].where.user]
        await store.save_core(changed, now, now)
        snap = await store.load_core()
    assert snap is not None
    restored = AgentCore()
    restored.restore(snap.state)
    assert restored.export_state() == live.export_state()


async def test_health_retention_redacts_old_health_payloads_only(tmp_path: Path) -> None:
    from agent.storage import HEALTH_EVENT_TYPES  # noqa: PLC0415
    from schemas.envelope import make  # noqa: PLC0415
    from schemas.events import HeartRate, Steps  # noqa: PLC0415
    from schemas.health import REDACTED  # noqa: PLC0415

    assert {"ring.hr", "ring.spo2", "ring.batch"} <= HEALTH_EVENT_TYPES
    assert "ring.steps" not in HEALTH_EVENT_TYPES
    hr, steps = make(HeartRate(bpm=141.25), ts=1000), make(Steps(steps=12, bucket_start=0), ts=1000)
    topic = "wb/v1/alice/ring/r1/evt/sensor/"

    def row(i: int, name: str, body: Any, received: int) -> EventRow:
        return EventRow(f"e{i}", topic + name, "alice", "ring", "r1", "evt", body.data.type, 1000 + i, 1000, i, None,
                        1000, received, 1, False, codec.encode(body))  # fmt: skip

    path = tmp_path / "s.db"
    async with Store(path) as store:
        await store.commit_batch([row(1, "hr", hr, 10), row(2, "steps", steps, 10), row(3, "hr", hr, 99)], [], [], [])
        assert path.stat().st_mode & 0o777 == 0o600
        assert await store.prune_health(50) == 1
        assert await store.prune_health(50) == 0  # done once
        assert await store.health_hourly("alice") == [
            ("ring.hr.bpm", 0, {"n": 1, "sum": 141.25, "min": 141.25, "max": 141.25})
        ]
        await store.prune_health(50, hourly_before_ms=1)  # aggregates of hours before 1 ms: dropped
        assert await store.health_hourly("alice") == []
        stored = dict(store.writer.execute("SELECT id, payload FROM events"))
    assert b"141.25" not in stored["e1"]
    assert REDACTED.encode() in stored["e1"]
    assert stored["e2"] == codec.encode(steps)
    assert codec.decode(topic + "hr", stored["e3"]).data == hr.data  # younger than the retention


async def test_health_values_sealed_at_rest_open_with_the_key_only(tmp_path: Path) -> None:
    from agent.sealing import HealthCipher, is_sealed, new_key_file  # noqa: PLC0415
    from cli.report import summarize  # noqa: PLC0415
    from schemas.envelope import make  # noqa: PLC0415
    from schemas.events import HeartRate, Steps  # noqa: PLC0415

    key = new_key_file(tmp_path / "health.key")
    assert key.stat().st_mode & 0o777 == 0o600
    cipher = HealthCipher.from_file(key)
    hr, steps = make(HeartRate(bpm=141.25), ts=1000), make(Steps(steps=12, bucket_start=0), ts=1000)
    topic = "wb/v1/alice/ring/r1/evt/sensor/"
    bodies: list[tuple[str, Any]] = [("hr", hr), ("steps", steps)]
    rows = [
        EventRow(
            f"e{i}",
            topic + name,
            "alice",
            "ring",
            "r1",
            "evt",
            body.data.type,
            1000 + i,
            1000,
            i,
            None,
            1000,
            10,
            1,
            False,
            codec.encode(body),
        )
        for i, (name, body) in enumerate(bodies)
    ]
    path = tmp_path / "s.db"
    async with Store(path, cipher=cipher) as store:
        await store.commit_batch(rows, [], [], [])
        await store.save_contexts([("alice", '{"health": {"hr": 141.25}}', 1000)])
        stored = dict(store.writer.execute("SELECT id, payload FROM events"))
        assert is_sealed(bytes(stored["e0"]))
        assert b"141.25" not in stored["e0"]
        assert stored["e1"] == codec.encode(steps)  # not health data: as it came
        (snapshot,) = store.writer.execute("SELECT snapshot FROM context").fetchone()
        assert "141.25" not in snapshot
        replayed = [item for kind, item, _ in await store.since(0) if kind == "event"]
        assert codec.decode(topic + "hr", replayed[0].payload).data == hr.data
    async with Store(path) as keyless:
        with pytest.raises(StoreError, match="--health-key"):
            await keyless.since(0)
    assert (await summarize(path, cipher)).health == {"ring.hr": [1, 1]}
    assert (await summarize(path)).health == {"ring.hr": [1, 0]}  # held, but not readable without the key
    other = tmp_path / "other.key"
    new_key_file(other)
    assert (await summarize(path, HealthCipher.from_file(other))).health == {"ring.hr": [1, 0]}
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        HealthCipher.from_file(key)
