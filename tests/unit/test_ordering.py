"""The per-device order gate (agent/ordering.py): any delivery order comes out in seq order; a lost event costs a
bounded wait and a recorded gap, never a stall."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.ordering import OrderGate

WAIT = 1000


Case = tuple[dict[str, int], list[tuple[str, int]], set[tuple[str, int]]]


def offer_all(
    gate: OrderGate[str, tuple[str, int]], order: list[tuple[str, int]], spacing: int, most: int | None = None
) -> tuple[list[tuple[str, int]], int]:
    """Offer ``order`` spread over ``spacing`` ms, with the gate's due events each time: what came out, and the
    time of the last offer. With ``most``: the gate never remembers more devices than that (or than it has)."""
    out: list[tuple[str, int]] = []
    now = 0
    for key, seq in order:
        now += spacing // max(1, len(order))
        out += gate.due(now)
        out += gate.offer(key, seq, (key, seq), now_ms=now)
        if most is not None:
            assert gate.devices <= max(most, len({k for k, _ in order}))
    return out, now


def released_seqs(items: list[tuple[str, int]], key: str) -> list[int]:
    return [seq for k, seq in items if k == key]


@st.composite
def deliveries(
    draw: st.DrawFn, lost: bool = False
) -> tuple[dict[str, int], list[tuple[str, int]], set[tuple[str, int]]]:
    """Devices with 1..n events each, some lost (when ``lost``), the rest interleaved in any order."""
    counts = draw(st.dictionaries(st.sampled_from(["ring", "glasses", "phone"]), st.integers(1, 30), min_size=1))
    events = [(key, seq) for key, n in counts.items() for seq in range(1, n + 1)]
    dropped: set[tuple[str, int]] = set()
    if lost:
        dropped = set(draw(st.lists(st.sampled_from(events), unique=True, max_size=len(events))))
    order = draw(st.permutations([e for e in events if e not in dropped]))
    return counts, order, dropped


@given(deliveries())
def test_any_delivery_order_within_the_wait_comes_out_in_seq_order(
    case: Case,
) -> None:
    counts, order, _ = case
    gate: OrderGate[str, tuple[str, int]] = OrderGate(WAIT)
    for key in counts:
        gate.note(key, 0)  # nothing of it seen yet: it starts at 1
    out: list[tuple[str, int]] = []
    for i, (key, seq) in enumerate(order):
        out += gate.offer(key, seq, (key, seq), now_ms=i)  # all within the wait of each other
    for key, n in counts.items():
        assert released_seqs(out, key) == list(range(1, n + 1))
    assert gate.holding == 0
    assert gate.next_due() is None
    assert gate.stats.gaps == gate.stats.behind == 0


@given(deliveries(lost=True), st.integers(0, 3 * WAIT))
def test_lost_events_cost_a_bounded_wait_then_the_rest_comes_in_order(case: Case, spacing: int) -> None:
    counts, order, dropped = case
    gate: OrderGate[str, tuple[str, int]] = OrderGate(WAIT, sparse_after=10**6)  # every gap waited for
    for key in counts:
        gate.note(key, 0)
    out, now = offer_all(gate, order, spacing)
    due = gate.next_due()
    assert due is None or due <= now + WAIT
    out += gate.due(now + WAIT)  # nothing waits longer than the wait
    assert gate.holding == 0
    assert sorted(out) == sorted(order)  # each event exactly once
    if gate.stats.behind == 0:  # none arrived after its place was given up: strictly in order
        for key in counts:
            seqs = released_seqs(out, key)
            assert seqs == sorted(seqs)
        below_last = {(k, s) for k, s in dropped if any(k == k2 and s < s2 for k2, s2 in order)}
        assert gate.stats.missing == len(below_last)
        assert sum(g.missing for g in gate.recent_gaps) == len(below_last)


@given(deliveries(lost=True), st.integers(0, 3 * WAIT), st.integers(1, 3))
def test_whatever_comes_each_event_goes_out_once_and_nothing_waits_longer_than_the_wait(
    case: Case, spacing: int, sparse_after: int
) -> None:
    _, order, _ = case
    gate: OrderGate[str, tuple[str, int]] = OrderGate(WAIT, sparse_after=sparse_after)
    out, now = offer_all(gate, order, spacing)
    assert sorted(out + gate.due(now + WAIT)) == sorted(order)
    assert gate.holding == 0


@given(deliveries(lost=True), st.integers(0, 3 * WAIT), st.integers(1, 3))
def test_with_fewer_lanes_than_devices_each_event_still_goes_out_once(case: Case, spacing: int, lanes: int) -> None:
    """Past ``max_lanes`` the gate forgets a device holding nothing: nothing it holds is lost, and it stays bounded
    by the devices holding something."""
    _, order, _ = case
    gate: OrderGate[str, tuple[str, int]] = OrderGate(WAIT, max_lanes=lanes)
    out, now = offer_all(gate, order, spacing, most=lanes)
    assert sorted(out + gate.due(now + WAIT)) == sorted(order)
    assert gate.holding == 0


def test_device_ids_that_keep_changing_do_not_grow_the_gate() -> None:
    gate: OrderGate[str, int] = OrderGate(WAIT, max_lanes=100)
    assert gate.offer("held", 1, 1, 0) == [1]
    assert gate.offer("held", 3, 3, 0) == []  # waits for seq 2: never forgotten while it holds something
    for n in range(10_000):
        assert gate.offer(f"device-{n}", 1, n, 0) == [n]
        gate.note(f"noted-{n}", 5)
        gate.epoch(f"epoch-{n}", 1)
    assert gate.devices == 100
    assert gate.offer("held", 2, 2, 1) == [2, 3]  # in order: its lane was kept
    with pytest.raises(ValueError, match="max_lanes"):
        OrderGate(WAIT, max_lanes=0)


def test_a_missing_event_is_waited_for_and_then_skipped_with_a_gap() -> None:
    gate: OrderGate[str, int] = OrderGate(WAIT)
    assert gate.offer("d", 1, 1, 0) == [1]
    assert gate.offer("d", 3, 3, 10) == []
    assert gate.offer("d", 4, 4, 20) == []
    assert gate.holding == 2
    assert gate.next_due() == 10 + WAIT
    assert gate.due(10 + WAIT - 1) == []
    assert gate.due(10 + WAIT) == [3, 4]
    (gap,) = gate.recent_gaps
    assert (gap.key, gap.after, gap.resumed, gap.missing, gap.waited_ms) == ("d", 1, 3, 1, WAIT)
    assert gate.offer("d", 2, 2, 2000) == [2]  # too late: released at once, counted
    assert gate.stats.behind == 1
    assert gate.offer("d", 5, 5, 2001) == [5]


def test_a_late_predecessor_releases_everything_it_held_at_once() -> None:
    gate: OrderGate[str, str] = OrderGate(WAIT)
    gate.note("d", 0)
    for seq in (5, 3, 4):
        assert gate.offer("d", seq, f"e{seq}", 0) == []
    assert gate.offer("d", 3, "e3-again", 1) == []  # a redelivery of a held one waits with it
    assert gate.offer("d", 2, "e2", 1) == []
    assert gate.offer("d", 1, "e1", 2) == ["e1", "e2", "e3", "e3-again", "e4", "e5"]
    assert gate.stats.gaps == 0


def test_a_new_epoch_releases_what_was_held_and_restarts_at_one() -> None:
    gate: OrderGate[str, str] = OrderGate(WAIT)
    assert gate.epoch("d", 100) == []  # a retained birth: where its seq is comes with its first event
    assert gate.offer("d", 57, "a57", 0) == ["a57"]
    assert gate.offer("d", 58, "a58", 0) == ["a58"]
    assert gate.offer("d", 60, "a60", 1) == []
    assert gate.epoch("d", 100) == []  # the same epoch again (a reconnect): nothing changes
    assert gate.epoch("d", 200) == ["a60"]  # the device restarted
    assert gate.offer("d", 2, "b2", 2) == []  # the new epoch's 1 is awaited
    assert gate.offer("d", 1, "b1", 3) == ["b1", "b2"]
    assert gate.stats.epochs == 1


def test_a_device_first_seen_mid_stream_starts_where_it_is() -> None:
    gate: OrderGate[str, int] = OrderGate(WAIT)
    assert gate.offer("d", 41, 41, 0) == [41]
    assert gate.offer("d", 43, 43, 0) == []
    gate.note("e", 9)  # replayed after a restart
    assert gate.offer("e", 11, 11, 0) == []
    assert gate.offer("e", 10, 10, 0) == [10, 11]


def test_a_device_holding_too_many_gives_up_its_gap_at_once() -> None:
    gate: OrderGate[str, int] = OrderGate(WAIT, max_held=3)
    gate.note("d", 0)
    assert gate.offer("d", 2, 2, 0) == []
    assert gate.offer("d", 3, 3, 0) == []
    assert gate.offer("d", 4, 4, 0) == []
    assert gate.offer("d", 5, 5, 0) == [2, 3, 4, 5]
    assert gate.stats.gaps == 1


def test_a_device_numbering_with_holes_of_its_own_is_not_held_for_ever() -> None:
    gate: OrderGate[str, int] = OrderGate(WAIT, sparse_after=2)
    assert gate.offer("d", 1, 1, 0) == [1]  # numbers 1, 11, 21 ... (a counter shared by ten devices)
    assert gate.offer("d", 11, 11, 10) == []
    assert gate.due(10 + WAIT) == [11]
    assert gate.offer("d", 21, 21, 2000) == []
    assert gate.due(2000 + WAIT) == [21]
    assert gate.stats.sparse == 1
    assert gate.offer("d", 31, 31, 4000) == [31]  # no longer held
    assert gate.holding == 0
    # a device that counts 1, 2, 3 and loses a few is held every time
    assert gate.offer("e", 1, 1, 0) == [1]
    assert gate.offer("e", 2, 2, 0) == [2]
    for n, seq in enumerate((4, 6, 8)):
        assert gate.offer("e", seq, seq, 5000 * n) == []
        assert gate.due(5000 * n + WAIT) == [seq]
    assert gate.stats.sparse == 1


def test_a_nonsense_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="wait_ms"):
        OrderGate(-1)
