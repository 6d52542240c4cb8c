"""The store micro-benchmark runs, and the WAL an event writes stays bounded (a byte count, not a time: it does not
depend on the machine's load)."""

from __future__ import annotations

import pytest

import agent.store
from bench import store as store_bench


async def test_the_dedup_index_dirties_at_most_a_page_an_event() -> None:
    rows = store_bench.events(50, 10)
    assert len({r.id for r in rows}) == 50
    cpu_us, wal_bytes = await store_bench.run(20_000, 2_000, 100)
    assert cpu_us > 0
    # The dedup key is the id alone (store v8, the contract): ids are a device's prefix and counter, so a batch of
    # 100 events from 100 devices dirties ~100 leaf pages of the id index: ~2.3 KB an event here, 3.3 KB at 50,000
    # events (v7's (ts, id) wrote ~0.9 KB, but took a retry with a fresh ts for a new event). More than a 4 KB page
    # an event would mean a page written per event besides the index leaf: a regression.
    assert wal_bytes < 4_096, wal_bytes


def test_the_floor_runs_and_costs_something() -> None:
    assert store_bench.floor(2_000, 200, 100) > 0


async def test_samples_at_qos_0_write_no_page_of_the_dedup_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Store v10's dedup index holds the QoS 1 events only: the same events as QoS 0 samples (most of what devices
    send) append to the table's end instead of each dirtying its device's leaf of the index. Checkpoints are off, so
    the log's size is every page the batches wrote."""
    monkeypatch.setattr(agent.store, "CHECKPOINT_EVERY_S", 1e9)
    _, qos1 = await store_bench.run(20_000, 2_000, 100, qos=1)
    _, qos0 = await store_bench.run(20_000, 2_000, 100, qos=0)
    assert qos0 < qos1 / 3, (qos0, qos1)  # measured: ~760 B against ~3,700 B an event at 4,000 devices
