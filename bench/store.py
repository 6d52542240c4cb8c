"""Micro-benchmark of the store's ingest writes: the dedup query and the commit, and the WAL they write.

``python -m bench.store`` stores ``--events`` events of ``--devices`` devices (ids as devices make them: a
prefix and a counter; publish times nearly in order) in batches of ``--batch``, through a real :class:`Store` in a
temporary directory, a dedup query before each commit as the pump does, and prints the CPU per event and the bytes
of WAL per event. The WAL figure does not depend on the machine's load; the CPU figure does (compare versions in
alternating runs).

Beside it, the floor (:func:`floor`): the same rows, batches, dedup query and merge of the dedup table with bare
``sqlite3`` (the store's pragmas and SQL, no store code) into a table of the id and the payload only. It is what a
per-event durable record with a dedup key costs in this Python, so the difference to the store's figure is all the
store could still save.

:func:`replay_floor` is the same floor for the agent's own rows: ``wearbus bench`` replays the events its agent stored
in the ingest section into a fresh table of the same schema with bare ``sqlite3``, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.store import DEDUP_TABLE, MERGE_SQL, EventRow, Store, Unmerged
from schemas.topics import DeviceId, Kind, event_topic

PAYLOAD = b"\x80" * 120  # about a sensor event's msgpack envelope


def events(n: int, devices: int, seed: int = 1, qos: int = 1) -> list[EventRow]:
    """``n`` events of ``devices`` devices at random, publish times 2 ms apart with ±3 s of jitter, delivered at
    ``qos`` (0: samples, which the store's dedup index does not hold)."""
    rng = random.Random(seed)
    prefixes = [f"{rng.getrandbits(48):012x}" for _ in range(devices)]
    counters = [0] * devices
    start = 1_795_694_437_500
    rows: list[EventRow] = []
    for i in range(n):
        d = rng.randrange(devices)
        counters[d] += 1
        ts = start + 2 * i + rng.randrange(-3000, 3000)
        user = f"u{d // 4}"
        topic = event_topic(DeviceId(user, Kind.RING, "r1"), "sensor", "hr")
        eid = f"{prefixes[d]}-{counters[d]:x}"
        rows.append(EventRow(eid, topic, user, "ring", "r1", "evt", "ring.hr", ts, None, counters[d], None, ts, ts, qos,
                             False, PAYLOAD))  # fmt: skip
    return rows


async def run(n: int, devices: int, batch: int, qos: int = 1) -> tuple[float, float]:
    """CPU µs and WAL bytes per event, the events delivered at ``qos``."""
    rows = events(n, devices, qos=qos)
    with tempfile.TemporaryDirectory(prefix="wearbus-store-bench-") as tmp:
        db = Path(tmp) / "a.db"
        async with Store(db) as store:
            started = time.process_time()
            for k in range(0, n, batch):
                chunk = rows[k : k + batch]
                await store.known([r.id for r in chunk if r.qos])  # as the pump: QoS 1 ids only
                await store.commit_batch(chunk, [], [], [])
            cpu = time.process_time() - started
            wal = db.with_name(db.name + "-wal").stat().st_size
    return cpu / n * 1e6, wal / n


def _bare_cpu_us(
    schema: list[str], insert: str, rows: list[tuple[Any, ...]], batch: int, key: int = 0, qos: int | None = None
) -> float:
    """CPU µs per row (this thread's CPU time) of writing ``rows`` into a fresh database of ``schema`` with bare
    ``sqlite3`` and the store's pragmas, deduplicated as the store does (v11): per batch, a dedup query by the id
    (column ``key``) for the ids not held in memory, and one transaction that appends the rows and merges the next
    chunk of held ids into the dedup table (:class:`agent.store.Unmerged`). With ``qos`` (the QoS column), only the
    QoS 1 rows are looked up and merged, as the agent does."""
    with tempfile.TemporaryDirectory(prefix="wearbus-store-floor-") as tmp:
        con = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            for sql in [*schema, DEDUP_TABLE]:
                con.execute(sql)
            held = Unmerged()
            started = time.thread_time()
            for k in range(0, len(rows), batch):
                chunk = rows[k : k + batch]
                ids = [r[key] for r in chunk if qos is None or r[qos]]
                wanted = [i for i in ids if i not in held.ids]
                if wanted:
                    marks = ",".join(["?"] * len(wanted))
                    set(con.execute(f"SELECT id FROM dedup WHERE id IN ({marks})", wanted))  # noqa: S608
                merge = held.chunk(len(ids))
                con.execute("BEGIN IMMEDIATE")
                con.executemany(insert, chunk)
                if merge:
                    con.executemany(MERGE_SQL, [(i,) for i in merge])
                con.execute("COMMIT")
                held.committed(merge, ids, lambda: 0)
            cpu = time.thread_time() - started
        finally:
            con.close()
    return cpu / len(rows) * 1e6 if rows else 0.0


def floor(n: int, devices: int, batch: int) -> float:
    """CPU µs per event of the floor: bare ``sqlite3``, the id and the payload, a dedup query and a commit a batch."""
    rows: list[tuple[Any, ...]] = [(r.id, r.payload) for r in events(n, devices)]
    schema = ["CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, payload BLOB NOT NULL)"]
    return _bare_cpu_us(schema, "INSERT INTO events (id, payload) VALUES (?, ?)", rows, batch)


def replay_floor(source: Path, batch: int, id_like: str = "bk-%") -> dict[str, float]:
    """CPU µs per event of storing the events of ``source`` whose id is ``LIKE id_like`` again, with bare ``sqlite3``.

    The rows, the events table and its indexes are the agent's own (copied from ``source``, read only); the pragmas
    are the store's; each batch of ``batch`` rows is a dedup query by id and one transaction with the merge of the
    dedup table, as the pump and the store do (:func:`_bare_cpu_us`). SQLite checkpoints the WAL itself every 1,000
    pages (the agent checkpoints on its store's thread, in its own process, so its CPU counts that too). Measured
    with this thread's CPU time, so nothing else in the process counts.
    """
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        ddl = "SELECT sql FROM sqlite_master WHERE tbl_name = 'events' AND sql IS NOT NULL ORDER BY type DESC"
        schema = [sql for (sql,) in src.execute(ddl)]  # the table, then its indexes
        columns = [row[1] for row in src.execute("PRAGMA table_info(events)") if row[1] != "seq"]
        names = ", ".join(columns)
        rows = src.execute(f"SELECT {names} FROM events WHERE id LIKE ? ORDER BY seq", (id_like,)).fetchall()  # noqa: S608
    finally:
        src.close()
    insert = f"INSERT INTO events ({names}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
    cpu_us = _bare_cpu_us(schema, insert, rows, batch, key=columns.index("id"), qos=columns.index("qos"))
    return {"events": len(rows), "batch": batch, "cpu_us_per_event": cpu_us}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events to store")
    parser.add_argument("--devices", type=int, default=4_000, help="devices they come from")
    parser.add_argument("--batch", type=int, default=100, help="events per commit")
    args = parser.parse_args()
    cpu, wal = asyncio.run(run(args.events, args.devices, args.batch))
    cpu0, wal0 = asyncio.run(run(args.events, args.devices, args.batch, qos=0))
    bare = floor(args.events, args.devices, args.batch)
    print(f"{args.events} events of {args.devices} devices in batches of {args.batch}: "
          f"{cpu:.1f} µs of CPU an event (dedup query and commit), {wal:,.0f} B of WAL an event; "
          f"as QoS 0 samples {cpu0:.1f} µs and {wal0:,.0f} B; "
          f"the floor (bare sqlite3, id and payload only): {bare:.1f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
