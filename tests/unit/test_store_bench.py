"""The store micro-benchmark runs, and the WAL an event writes stays bounded (a byte count, not a time: it does not
depend on the machine's load)."""

from __future__ import annotations

import pytest

import agent.store
from bench import store as store_bench


def test_the_floor_runs_and_costs_something() -> None:
    assert store_bench.floor(2_000, 200, 100) > 0


async def test_events_of_many_devices_write_a_fraction_of_a_page_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device's ids share its prefix, so an index on them put each event of a batch on its own device's leaf page:
    a page of log an event (v10: ~3,700 B an event for QoS 1 events of 2,000 devices). Store v11 appends the events
    and merges their ids into the dedup table in sorted runs, each device's ids of a run on its page at once; QoS 0
    samples are not merged at all. Checkpoints are off, so the log's size is every page the batches wrote."""
    assert len({r.id for r in store_bench.events(50, 10)}) == 50
    monkeypatch.setattr(agent.store, "CHECKPOINT_EVERY_S", 1e9)
    cpu_us, qos1 = await store_bench.run(40_000, 2_000, 100, qos=1)
    assert cpu_us > 0
    _, qos0 = await store_bench.run(40_000, 2_000, 100, qos=0)
    assert qos0 < qos1 < 1_400, (qos0, qos1)  # measured: ~750 B and ~850 B an event
