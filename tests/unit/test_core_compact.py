"""The context's compact windows behave exactly as the plain lists and dicts they replace, and export the same."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.config import CoreConfig
from agent.core.context import (
    BUCKET_MS,
    MAX_CELLS,
    MAX_STEP_BUCKETS,
    HrWindow,
    StepBuckets,
    Where,
    cell_center,
    cell_key,
    learned,
)
from agent.core.state import dump, load

MIN = 60_000
T0 = 1_795_000_000_000


# --- references: the containers as they were (dict of lists, list of tuples, absolute times)


def ref_credit(cells: dict[str, list[float]], key: str, night: float, day: float) -> None:
    acc = cells.setdefault(key, [0.0, 0.0])
    acc[0] += night
    acc[1] += day
    if len(cells) > MAX_CELLS:
        smallest = min(cells, key=lambda k: cells[k][0] + cells[k][1])
        del cells[smallest]


def ref_learned(cells: dict[str, list[float]], which: str, min_s: float) -> tuple[float, float] | None:
    home = max(cells, key=lambda k: cells[k][0], default=None)
    if home is not None and cells[home][0] < min_s:
        home = None
    if which == "home":
        return cell_center(home) if home is not None else None
    office = max((k for k in cells if k != home), key=lambda k: cells[k][1], default=None)
    if office is None or cells[office][1] < min_s:
        return None
    return cell_center(office)


def ref_add_steps(steps: list[tuple[int, int, int]], start: int, seconds: int, n: int) -> int | None:
    old = next((b for b in steps if b[0] == start), None)
    if old is not None:
        steps.remove(old)
    steps.append((start, seconds, n))
    steps.sort()
    del steps[:-MAX_STEP_BUCKETS]
    return None if old is None else old[2]


class RefHr:
    """The heart-rate window with absolute sample times, rows ``[key, first, last, flags, lo, hi]``."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []

    def add(self, t: int, bpm: float, flags: int, keep_from: int) -> int:
        self.rows = [r for r in self.rows if (r[0] + 1) * BUCKET_MS > keep_from]
        key = t // BUCKET_MS
        i = next((j for j, r in enumerate(self.rows) if r[0] >= key), len(self.rows))
        if i < len(self.rows) and self.rows[i][0] == key:
            r = self.rows[i]
            r[1], r[2] = min(r[1], t), max(r[2], t)
            r[3] = (r[3] & flags & HrWindow.RESTING) | ((r[3] | flags) & HrWindow.ASLEEP)
            r[4], r[5] = min(r[4], bpm), max(r[5], bpm)
        else:
            self.rows.insert(i, [key, t, t, flags, bpm, bpm])
        return i


# --- strategies

positions = st.tuples(
    st.sampled_from([30.265, 30.2651, 30.28, -0.0004, 0.0, 51.5, -33.9]),
    st.sampled_from([120.131, 120.1312, 120.2, 0.0003, -0.1, 151.2]),
)
seconds = st.sampled_from([0.0, 60.0, 3600.0, 1800.5, 7200.0])
credits = st.lists(st.tuples(positions, seconds, seconds), max_size=40)


@settings(max_examples=200)
@given(ops=credits, min_s=st.sampled_from([0, 3600, 7200]))
def test_cells_credit_evict_and_pick_home_and_office_like_a_dict(
    ops: list[tuple[tuple[float, float], float, float]], min_s: int
) -> None:
    ref: dict[str, list[float]] = {}
    w = Where()
    cfg = CoreConfig(learn_min_s=min_s)
    for (lat, lon), night, day in ops:
        key = cell_key(lat, lon)
        if key.startswith("-0.000") or ",-0.000" in key:
            continue  # "-0.000" and "0.000" are one cell now (the same position); a dict kept two
        ref_credit(ref, key, night, day)
        w.cells.credit(key, night, day, MAX_CELLS)
        assert json.dumps(w.cells.to_data()) == json.dumps(ref)  # the same cells, in the same order
        for which in ("home", "office"):
            assert learned(w, which, cfg) == ref_learned(ref, which, min_s)
    again = load(Where, json.loads(json.dumps(dump(w))))
    assert again.cells == w.cells
    assert dump(again) == dump(w)


@given(ops=st.lists(st.tuples(st.integers(0, 6), st.sampled_from([900, 600, 3600]), st.integers(0, 9999))))
def test_step_buckets_replace_sort_and_keep_the_last_like_a_list(ops: list[tuple[int, int, int]]) -> None:
    ref: list[tuple[int, int, int]] = []
    b = StepBuckets()
    for k, secs, n in ops:
        start = T0 + k * 15 * MIN
        want_old = ref_add_steps(ref, start, secs, n)
        assert b.pop(start) == want_old
        b.put(start, secs, n, MAX_STEP_BUCKETS)
        assert list(b) == ref
    assert StepBuckets.from_data(json.loads(json.dumps(b.to_data()))) == b
    assert json.dumps(b.to_data()) == json.dumps(ref)


samples = st.lists(
    st.tuples(
        st.integers(0, 200),  # minutes after T0
        st.integers(0, 59_999),
        st.floats(35, 200, allow_nan=False),
        st.sampled_from([0, HrWindow.RESTING, HrWindow.ASLEEP, HrWindow.RESTING | HrWindow.ASLEEP]),
        st.integers(0, 60),  # how far "now" moved on
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(ops=samples)
def test_the_heart_rate_window_keeps_what_the_absolute_rows_kept(ops: list[tuple[int, int, float, int, int]]) -> None:
    ref, w = RefHr(), HrWindow()
    now = T0
    for minute, ms, bpm, flags, step in ops:
        now += step * MIN
        t = T0 + minute * MIN + ms
        keep_from = now - 135 * MIN
        assert w.add(t, bpm, flags, keep_from) == ref.add(t, bpm, flags, keep_from)
        assert json.dumps(w.to_data()) == json.dumps(ref.rows)
        for i in range(len(w)):
            assert (w.key(i), w.first(i), w.last(i)) == tuple(ref.rows[i][:3])
            for high, low in ((100.0, None), (None, 60.0)):
                span = w.run(i, high, low, 10 * MIN)
                assert span is None or span[0] <= w.first(i) <= w.last(i) <= span[1]
    restored = HrWindow.from_data(json.loads(json.dumps(w.to_data())))
    assert restored.to_data() == w.to_data()
    assert restored.mean() == w.mean()
