"""The dedup table's merge (store v11, :class:`agent.store.Unmerged`): pure bookkeeping, checked against a model of
the store's rows and table, with crashes (the memory lost, read back from the rows after the mark) anywhere."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.store import Unmerged

MOST = 40  # QoS 1 ids a batch adds at most
# A step: a batch of this many new QoS 1 ids, its transaction committed or not, and a crash after it or not.
steps = st.lists(st.tuples(st.integers(0, MOST), st.booleans(), st.booleans()), max_size=80)


@settings(max_examples=300, deadline=None)
@given(steps=steps, merge_at=st.integers(1, 64), chunk=st.integers(1, 16))
def test_held_and_merged_ids_are_exactly_the_stored_ones(
    steps: list[tuple[int, bool, bool]], merge_at: int, chunk: int
) -> None:
    rows: list[str] = []  # the stored QoS 1 ids, in seq order (seq = place + 1)
    table: set[str] = set()  # the dedup table
    mark = 0  # dedup_mark: every id at or before it is in the table
    held = Unmerged(merge_at=merge_at, chunk=chunk)
    n = 0
    crashed = False
    for size, commits, crash in steps:
        added = [f"d{n + i}" for i in range(size)]
        n += size
        merge = held.chunk(len(added))
        if commits:  # the transaction: the rows, the chunk, the mark if the run ends; then the bookkeeping
            rows += added
            table.update(merge)
            if held.ends(merge):
                mark = held.run_mark
            held.committed(merge, added, functools.partial(len, rows))
        if crash:  # the memory is lost; the store reads back the ids after the mark
            held = Unmerged(rows[mark:], merge_at=merge_at, chunk=chunk)
            crashed = True
        assert set(rows) == held.ids | table
        assert set(rows[:mark]) <= table
        assert table <= set(rows)
        if not crashed:  # a merge outpaces what comes in (2x), so what is held stays bounded
            assert len(held) <= 2 * (merge_at + MOST), len(held)


def test_a_run_is_written_sorted_in_chunks_of_twice_what_a_batch_adds() -> None:
    held = Unmerged(merge_at=4, chunk=1)
    assert held.chunk(3) == []  # no run yet
    assert held.committed([], ["d", "b", "c", "a"], lambda: 4)  # four held: a run begins
    assert held.run_mark == 4
    first = held.chunk(1)
    assert first == ["a", "b"]  # sorted, twice the batch's one new id
    assert not held.ends(first)
    assert not held.committed(first, ["e"], lambda: 5)
    assert held.ids == {"c", "d", "e"}
    last = held.chunk(0)
    assert last == ["c"]  # at least ``chunk``
    held.committed(last, [], lambda: 5)
    final = held.chunk(0)
    assert held.ends(final)
    held.committed(final, [], lambda: 5)
    assert held.ids == {"e"}
    assert held.chunk(10) == []  # the run is over; one id held is not enough for the next
