"""Sampling of repeated failures: the first few of each second per key, the rest counted.

A flood of bad messages (1,050 poison payloads, a device past its rate) must not write a log line, or a dead
letter, for each one: a :class:`Sampler` lets the first ``per_s`` of each second and key through and counts the
others, and the next line let through says how many were left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class Sampler:
    """``allow(key)`` is true for the first ``per_s`` calls with ``key`` in each second (of ``clock``).

    Memory is bounded: the keys of the current second only (``max_keys`` at most; past it, every key shares one).
    """

    __slots__ = ("_counts", "_second", "clock", "max_keys", "per_s", "suppressed", "total_suppressed")

    def __init__(self, per_s: int = 1, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self.per_s = per_s
        self.clock = clock
        self.max_keys = max_keys
        self._second = -1
        self._counts: dict[Hashable, int] = {}
        #: left out since the last call that was let through (reset by :meth:`take_suppressed`)
        self.suppressed = 0
        #: left out since the start
        self.total_suppressed = 0

    def allow(self, key: Hashable = None) -> bool:
        """Whether this occurrence of ``key`` is let through; if not, it is counted."""
        second = int(self.clock())
        counts = self._counts
        if second != self._second:
            self._second = second
            counts.clear()
        if key not in counts and len(counts) >= self.max_keys:
            key = None
        n = counts.get(key, 0) + 1
        counts[key] = n
        if n <= self.per_s:
            return True
        self.suppressed += 1
        self.total_suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """How many were left out since the last call of this (for the next line let through)."""
        n, self.suppressed = self.suppressed, 0
        return n
