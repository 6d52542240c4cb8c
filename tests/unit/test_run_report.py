"""The run summary (``wearbus report``, the end of ``wearbus up``) from a real SQLite store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.store import Store
from cli.report import summarize, timed_note
from tests.unit.test_store import action, event


async def test_a_timed_action_is_not_counted_as_the_latency_of_the_event_that_scheduled_it(tmp_path: Path) -> None:
    """An answer is made in the turn that handled its event; a card at the time to leave comes much later, by design."""
    db = tmp_path / "a.db"
    answer = action(1)  # created when e1 was handled (1001)
    later = dataclasses.replace(action(2), created_ms=event(2).handled_ms + 24_000)  # a timer, 24 s after e2
    async with Store(db) as store:
        await store.commit_batch([event(1), event(2)], [answer, later], [], [])
        await store.mark_published([answer.id], 2001 + 7)  # 7 ms after e1 was received (2001)
        await store.mark_published([later.id], 2002 + 5_000)
    summary = await summarize(db)
    assert summary.latency_samples == 1
    assert summary.latency_ms == {"p50": 7.0, "p99": 7.0, "max": 7.0}
    assert summary.timed_actions == 1
    assert summary.answered == {"e1"}
    assert "answered" not in summary.as_dict()
    assert timed_note(0) == ""
    assert "1 timed action not counted" in timed_note(1)
