"""The core's snapshots: every changed user's state written in rounds, a slice of users per pump turn.

A user's state takes ~0.1-0.4 ms to write and thousands may have changed: a round written at once held the event
loop for hundreds of ms. The store keeps how far each user's row goes, so a restart replays into each user only what
their row does not include.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.core.engine import AgentCore
from agent.runtime.pacing import Pace, wall_ms
from agent.storage import AgentStore, Mark
from schemas.clock import Clock

#: Users written in one slice of a snapshot round (one pump turn) at most; fewer when they take long to write.
SNAPSHOT_SLICE = 50
#: Wall seconds a slice of a snapshot round aims to take.
SNAPSHOT_BUDGET_S = 0.0015


@dataclass(slots=True)
class SnapshotRound:
    """One snapshot round: the users changed when it began, written a slice at a time."""

    users: list[str]
    pos: int = 0
    start: Mark | None = None  # the store's mark when the round began (its first slice)
    spent: float = 0.0  # seconds the round's slices took


class Snapshots:
    """When the next round begins, the round being written, and how many users a slice of it takes."""

    __slots__ = ("_every_s", "_last", "every_s", "pace", "round")

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s  # the setting: never more often than this
        self._every_s = every_s  # longer when rounds take long
        self._last = 0.0
        self.round: SnapshotRound | None = None
        self.pace = Pace(SNAPSHOT_BUDGET_S, 1, SNAPSHOT_SLICE, guess_s=300e-6)

    def begin_when_due(self, core: AgentCore, mono: float) -> None:
        """Begin a round of the users changed since the last one, when one is due and none is being written."""
        if self.round is None and mono - self._last >= self._every_s:
            self._last = mono
            self.begin(core)

    def begin(self, core: AgentCore) -> SnapshotRound:
        """The round being written, or a new one of the users changed since the last."""
        if self.round is None:
            self.round = SnapshotRound(core.take_changed())
        return self.round

    async def write_slice(self, store: AgentStore, core: AgentCore, clock: Clock) -> int:
        """Write the next slice of the round; at its end, plan the next round. How many users it wrote."""
        snap = self.round
        if snap is None:
            return 0
        started = time.perf_counter()
        size = self.pace.size() if store.sliced_snapshots else len(snap.users)
        users = snap.users[snap.pos : snap.pos + size]
        snap.pos += len(users)
        done = snap.pos >= len(snap.users)
        mark = await store.save_core(
            core.export_users(users), clock.now_ms(), wall_ms(), round_start=snap.start, complete=done
        )
        snap.start = snap.start or mark
        took = time.perf_counter() - started
        snap.spent += took
        self.pace.record(len(users), took)
        if done:
            self.round = None
            # keep snapshots under ~4 % of the time: thousands of busy users snapshot less often
            self._every_s = max(self.every_s, 25 * snap.spent)
        return len(users)

    async def save_all(self, store: AgentStore, core: AgentCore, clock: Clock) -> int:
        """Write the round in progress and every other changed user at once (at shutdown); how many."""
        snap = self.round or SnapshotRound([])
        self.round = None
        users = [*snap.users[snap.pos :], *core.take_changed()]
        await store.save_core(
            core.export_users(users), clock.now_ms(), wall_ms(), round_start=snap.start, complete=True
        )
        return len(users)
