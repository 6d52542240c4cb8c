"""Timing of the pump's turns: how much work fits a time budget (:class:`Pace`), and where a slow turn's time went
(:class:`Turn`, with the garbage collections in it from :class:`GcClock`)."""

from __future__ import annotations

import time
from typing import Any


def wall_ms() -> int:
    """Wall-clock ms (for latency accounting only)."""
    return time.time_ns() // 1_000_000


class Pace:
    """How many items of some work fit a time budget, from the time an item took lately (a moving average)."""

    __slots__ = ("budget_s", "hi", "lo", "per_item_s")

    def __init__(self, budget_s: float, lo: int, hi: int, *, guess_s: float) -> None:
        self.budget_s = budget_s
        self.lo = lo
        self.hi = hi
        self.per_item_s = guess_s

    def size(self) -> int:
        """Items for the next turn: as many as fit the budget, within ``lo`` and ``hi``."""
        return max(self.lo, min(self.hi, int(self.budget_s / self.per_item_s)))

    def record(self, items: int, seconds: float) -> None:
        """``items`` took ``seconds``."""
        if items > 0:
            self.per_item_s += 0.2 * (seconds / items - self.per_item_s)


class GcClock:
    """Wall time the process spent in garbage collection, and its full collections (a ``gc.callbacks`` entry)."""

    __slots__ = ("full", "spent_s", "started")

    def __init__(self) -> None:
        self.spent_s = 0.0
        self.full = 0
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        self.spent_s += time.perf_counter() - self.started
        self.full += info.get("generation") == 2


class Turn:
    """The wall time of the parts of one pump turn, and of the garbage collections in it (for ``pump_turn_slow``)."""

    __slots__ = ("batch", "contexts", "gc", "gc_full", "gc_spent_s", "laps", "mark", "snapshot_users", "start")

    def __init__(self, batch: int, gc_clock: GcClock) -> None:
        self.batch = batch
        self.start = self.mark = time.perf_counter()
        self.laps: dict[str, float] = {}
        self.snapshot_users = 0
        self.contexts = 0
        self.gc = gc_clock
        self.gc_spent_s, self.gc_full = gc_clock.spent_s, gc_clock.full

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.laps[part] = (now - self.mark) * 1000
        self.mark = now

    def total_ms(self) -> float:
        return (self.mark - self.start) * 1000

    def report(self) -> dict[str, Any]:
        parts = {f"{part}_ms": round(ms, 1) for part, ms in self.laps.items()}
        gc_ms = round((self.gc.spent_s - self.gc_spent_s) * 1000, 1)
        return {"total_ms": round(self.total_ms(), 1), "batch": self.batch, "snapshot_users": self.snapshot_users,
                "contexts": self.contexts, **parts, "gc_ms": gc_ms, "gc_full": self.gc.full - self.gc_full}  # fmt: skip
