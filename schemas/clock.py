"""Clocks: time comes in through one of these, so a scenario can run accelerated and tests can step time."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What pure code and runtimes ask of time."""

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second."""
        ...

    def now_ms(self) -> int:
        """Simulated time, ms since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of simulated time."""
        ...


class SimClock:
    """Simulated time that runs ``speed`` times faster than the wall clock from ``start_ms``.

    Every process of a stack is given the same ``start_ms`` and ``anchor_wall_ms`` (the wall time at which the
    simulation started), so their clocks agree without talking to each other.
    """

    def __init__(self, speed: float = 1.0, start_ms: int | None = None, anchor_wall_ms: int | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        wall = time.time_ns() // 1_000_000
        self._speed = speed
        self.anchor_wall_ms = wall if anchor_wall_ms is None else anchor_wall_ms
        self.start_ms = self.anchor_wall_ms if start_ms is None else start_ms

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second."""
        return self._speed

    def now_ms(self) -> int:
        """Simulated ms since the epoch."""
        wall = time.time_ns() // 1_000_000
        return self.start_ms + int((wall - self.anchor_wall_ms) * self._speed)

    async def sleep(self, seconds: float) -> None:
        """Sleep for simulated seconds (that is ``seconds / speed`` of wall time)."""
        await asyncio.sleep(max(0.0, seconds) / self._speed)

    async def sleep_until(self, sim_ms: int) -> None:
        """Sleep until the simulated time ``sim_ms``."""
        await self.sleep((sim_ms - self.now_ms()) / 1000)


class WallClock(SimClock):
    """Real time."""

    def __init__(self) -> None:
        super().__init__(1.0)


class ManualClock:
    """A clock that moves only when told to (for pure tests). ``sleep`` advances it at once."""

    def __init__(self, start_ms: int = 1_764_000_000_000) -> None:
        self._now = start_ms

    @property
    def speed(self) -> float:
        """Infinitely fast, reported as 1."""
        return 1.0

    def now_ms(self) -> int:
        """The current time."""
        return self._now

    def advance(self, seconds: float) -> int:
        """Move time forward and return the new time."""
        self._now += int(seconds * 1000)
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Advance time and yield once to the loop."""
        self.advance(seconds)
        await asyncio.sleep(0)
