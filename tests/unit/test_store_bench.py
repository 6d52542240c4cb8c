"""The store micro-benchmark runs, and the dedup index keeps the WAL an event writes small (a byte count, not a
time: it does not depend on the machine's load)."""

from __future__ import annotations

from bench import store as store_bench


async def test_the_dedup_index_appends_instead_of_dirtying_a_page_per_device() -> None:
    rows = store_bench.events(50, 10)
    assert len({r.id for r in rows}) == 50
    cpu_us, wal_bytes = await store_bench.run(20_000, 2_000, 100)
    assert cpu_us > 0
    # A unique index on the id alone wrote ~2.3 KB an event here (a page per device in each batch), and more as the
    # table grows (3.3 KB at 50,000 events); (ts, id) ~0.9 KB at any size.
    assert wal_bytes < 1_500, wal_bytes
