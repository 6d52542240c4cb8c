"""Micro-benchmark of the store's ingest writes: the dedup query and the commit, and the WAL they write.

``python -m bench.store`` stores ``--events`` events of ``--devices`` devices (ids as devices make them: a
prefix and a counter; publish times nearly in order) in batches of ``--batch``, through a real :class:`Store` in a
temporary directory, a dedup query before each commit as the pump does, and prints the CPU per event and the bytes
of WAL per event. The WAL figure does not depend on the machine's load; the CPU figure does (compare versions in
alternating runs).

Beside it, the floor (:func:`floor`): the same rows, batches and dedup query with bare ``sqlite3`` (the store's
pragmas, no store code) into a table of the id and the payload only. It is what any per-event durable record with a
dedup key costs in this Python, so the difference to the store's figure is all the store could still save.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from agent.store import EventRow, Store
from schemas.topics import DeviceId, Kind, event_topic

PAYLOAD = b"\x80" * 120  # about a sensor event's msgpack envelope


def events(n: int, devices: int, seed: int = 1) -> list[EventRow]:
    """``n`` events of ``devices`` devices at random, publish times 2 ms apart with ±3 s of jitter."""
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
        rows.append(EventRow(eid, topic, user, "ring", "r1", "evt", "ring.hr", ts, None, counters[d], None, ts, ts, 1,
                             False, PAYLOAD))  # fmt: skip
    return rows


async def run(n: int, devices: int, batch: int) -> tuple[float, float]:
    """CPU µs and WAL bytes per event."""
    rows = events(n, devices)
    with tempfile.TemporaryDirectory(prefix="wearbus-store-bench-") as tmp:
        db = Path(tmp) / "a.db"
        async with Store(db) as store:
            started = time.process_time()
            for k in range(0, n, batch):
                chunk = rows[k : k + batch]
                await store.known([r.id for r in chunk])
                await store.commit_batch(chunk, [], [], [])
            cpu = time.process_time() - started
            wal = db.with_name(db.name + "-wal").stat().st_size
    return cpu / n * 1e6, wal / n


def floor(n: int, devices: int, batch: int) -> float:
    """CPU µs per event of the floor: bare ``sqlite3``, the id and the payload, a dedup query and a commit a batch."""
    rows = [(r.id, r.payload) for r in events(n, devices)]
    with tempfile.TemporaryDirectory(prefix="wearbus-store-floor-") as tmp:
        con = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, payload BLOB NOT NULL)")
            started = time.process_time()
            for k in range(0, n, batch):
                chunk = rows[k : k + batch]
                marks = ",".join(["?"] * len(chunk))
                set(con.execute(f"SELECT id FROM events WHERE id IN ({marks})", [r[0] for r in chunk]))  # noqa: S608
                con.execute("BEGIN")
                con.executemany("INSERT OR IGNORE INTO events (id, payload) VALUES (?, ?)", chunk)
                con.execute("COMMIT")
            cpu = time.process_time() - started
        finally:
            con.close()
    return cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events to store")
    parser.add_argument("--devices", type=int, default=4_000, help="devices they come from")
    parser.add_argument("--batch", type=int, default=100, help="events per commit")
    args = parser.parse_args()
    cpu, wal = asyncio.run(run(args.events, args.devices, args.batch))
    bare = floor(args.events, args.devices, args.batch)
    print(f"{args.events} events of {args.devices} devices in batches of {args.batch}: "
          f"{cpu:.1f} µs of CPU an event (dedup query and commit), {wal:,.0f} B of WAL an event; "
          f"the floor (bare sqlite3, id and payload only): {bare:.1f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
