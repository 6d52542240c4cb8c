"""Clocks: time comes in through one of these, so a scenario can run accelerated and tests can step time."""

from __future__ import annotations

import asyncio
import math
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

    With ``wall_after_ms`` (a simulated time: the scenario's end), the clock becomes the wall clock once simulated
    time reaches it (``wearbus up --forever``), so devices on the wall clock (a real ring, a ``mosquitto_pub`` with
    the current time) are accepted from then on.
    """

    def __init__(
        self,
        speed: float = 1.0,
        start_ms: int | None = None,
        anchor_wall_ms: int | None = None,
        wall_after_ms: int | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        wall = time.time_ns() // 1_000_000
        self._speed = speed
        self.anchor_wall_ms = wall if anchor_wall_ms is None else anchor_wall_ms
        self.start_ms = self.anchor_wall_ms if start_ms is None else start_ms
        self.wall_after_ms = wall_after_ms
        #: the wall time (ms) at which the clock becomes the wall clock (None: never)
        self.switch_wall_ms: int | None = None
        if wall_after_ms is not None:
            self.switch_wall_ms = self.anchor_wall_ms + math.ceil((wall_after_ms - self.start_ms) / speed)

    @property
    def on_wall(self) -> bool:
        """Whether simulated time is over and the clock is the wall clock."""
        return self.switch_wall_ms is not None and time.time_ns() // 1_000_000 >= self.switch_wall_ms

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second (1 once on the wall clock)."""
        return 1.0 if self.on_wall else self._speed

    def now_ms(self) -> int:
        """Simulated ms since the epoch (the wall clock's after ``wall_after_ms``)."""
        wall = time.time_ns() // 1_000_000
        if self.switch_wall_ms is not None and wall >= self.switch_wall_ms:
            return wall
        return self.start_ms + int((wall - self.anchor_wall_ms) * self._speed)

    def judge_ms(self, ts: int) -> int:
        """The time a publish time ``ts`` is judged against: now; but after the switch to the wall clock, a
        timestamp nearer the simulated timeline (an emulator still finishing its scenario, an event sent before the
        switch) is judged against where simulated time would be now."""
        wall = time.time_ns() // 1_000_000
        if self.switch_wall_ms is None or wall < self.switch_wall_ms:
            return self.now_ms()
        simulated = self.start_ms + int((wall - self.anchor_wall_ms) * self._speed)
        return simulated if abs(ts - simulated) < abs(ts - wall) else wall

    async def sleep(self, seconds: float) -> None:
        """Sleep for simulated seconds (``seconds / speed`` of wall time; wall seconds after the switch)."""
        seconds = max(0.0, seconds)
        if self.switch_wall_ms is None or self.on_wall:
            await asyncio.sleep(seconds / self.speed)
            return
        to_switch_s = (self.switch_wall_ms - time.time_ns() // 1_000_000) / 1000
        sim_s = seconds / self._speed
        await asyncio.sleep(sim_s if sim_s <= to_switch_s else to_switch_s + (seconds - to_switch_s * self._speed))

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
