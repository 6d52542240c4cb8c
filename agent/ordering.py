"""Per-device order of events by their ``seq``, whatever order the broker delivers them in (pure: no I/O, no clock).

Every device numbers its events ``seq`` 1, 2, 3 ... within a session epoch (:attr:`schemas.actions.DeviceState.epoch`;
a restarted device starts a new epoch at 1 again). A broker may deliver them out of that order: NATS redelivers what
a lost connection had not acknowledged after newer messages, sometimes many seconds later. :class:`OrderGate` holds
an event whose predecessor has not come yet, releases the device's events in ``seq`` order as soon as the missing one
arrives, and when it does not arrive within ``wait_ms`` (a QoS 0 event may be lost for good) gives up on it, releases
what it held in order and records the :class:`Gap`, so a device is never stalled for longer than that.

An event at or below the last released ``seq`` of its device is a duplicate (the agent's dedup drops it) or came
after its place was given up on: it is released at once and counted as ``behind``.

The contract says ``seq`` increases; the device SDK counts 1, 2, 3. A device that numbers with holes of its own (a
timestamp, a counter shared by several devices) would wait out every event: once ``sparse_after`` of its gaps were
given up and none of its events ever followed its predecessor, it is taken as sparse and no longer held (counted in
``sparse``; a new epoch gives it another chance).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Gap(Generic[K]):
    """Events of one device given up on: ``seq`` ``after + 1`` to ``resumed - 1`` never came within the wait.

    Attributes:
        key: the device.
        after: the last ``seq`` released before the gap.
        resumed: the first ``seq`` released after it.
        waited_ms: how long the event after the gap was held.
    """

    key: K
    after: int
    resumed: int
    waited_ms: int

    @property
    def missing(self) -> int:
        """How many ``seq`` numbers were skipped."""
        return self.resumed - self.after - 1


@dataclass(slots=True)
class GateStats:
    """What the gate counts.

    Attributes:
        held: events that had to wait for a predecessor.
        gaps: gaps given up on (a wait that ran out, or a device holding more than ``max_held`` events).
        missing: ``seq`` numbers skipped in those gaps.
        behind: events at or below their device's last released ``seq`` (duplicates, or late after a gap).
        epochs: new epochs seen (a device restarted: its ``seq`` starts again).
        sparse: devices found to number with holes of their own (no longer held).
    """

    held: int = 0
    gaps: int = 0
    missing: int = 0
    behind: int = 0
    epochs: int = 0
    sparse: int = 0


#: ``_Lane.last`` of a device whose first event has not come yet.
_UNKNOWN = -1


@dataclass(slots=True)
class _Lane(Generic[T]):
    """One device: the last ``seq`` released (:data:`_UNKNOWN` before its first event) and the events waiting, by
    ``seq`` (arrival ms, items)."""

    last: int
    epoch: int = 0
    held: dict[int, tuple[int, list[T]]] = field(default_factory=dict)
    in_step: int = 0  # events that came right after their predecessor
    given_up: int = 0  # gaps given up after the wait
    sparse: bool = False


class OrderGate(Generic[K, T]):
    """Releases each device's events in ``seq`` order; a missing one is waited for at most ``wait_ms``.

    Args:
        wait_ms: how long an event may wait for a missing predecessor (from its arrival) before the gap is given up.
        max_held: events held for one device at most; one more gives up the gap at once.
        gaps_kept: how many of the latest gaps :attr:`recent_gaps` keeps.
        sparse_after: gaps given up, with no event ever in step, after which a device is no longer held.
        max_lanes: devices remembered at most; past it the longest-known device holding nothing is forgotten (its
            next event starts it afresh, as a device's first one does), so device ids that keep changing cannot
            grow the gate without bound.

    ``offer`` an event when it arrives, call ``due`` regularly (each turn of the consumer) to release what waited
    long enough, and ``epoch`` when a device announces its session epoch. Each returns the events to handle now, in
    order. The first event of a device not seen before (unless :meth:`note` said where it is) sets where it starts.
    """

    def __init__(
        self, wait_ms: int, *, max_held: int = 1000, gaps_kept: int = 100, sparse_after: int = 2,
        max_lanes: int = 100_000,
    ) -> None:  # fmt: skip
        if wait_ms < 0 or max_held < 1 or sparse_after < 1 or max_lanes < 1:
            raise ValueError("wait_ms must be >= 0, max_held, sparse_after and max_lanes >= 1")
        self.wait_ms = wait_ms
        self.max_held = max_held
        self.sparse_after = sparse_after
        self.max_lanes = max_lanes
        self.stats = GateStats()
        self.recent_gaps: deque[Gap[K]] = deque(maxlen=gaps_kept)
        self._lanes: dict[K, _Lane[T]] = {}
        self._waiting: set[K] = set()  # lanes holding something

    @property
    def devices(self) -> int:
        """Devices the gate remembers now."""
        return len(self._lanes)

    @property
    def holding(self) -> int:
        """Events held now, over all devices."""
        return sum(len(items) for key in self._waiting for _, items in self._lanes[key].held.values())

    def next_due(self) -> int | None:
        """The earliest time (ms) at which :meth:`due` would give up a gap, or None when nothing is held."""
        times = [min(at for at, _ in self._lanes[key].held.values()) for key in self._waiting]
        return min(times) + self.wait_ms if times else None

    def note(self, key: K, seq: int) -> None:
        """Record that ``seq`` of ``key`` was handled before (a replay after a restart; 0: none yet, it starts at 1):
        later ones follow it."""
        if seq < 0:
            return
        lane = self._lanes.get(key)
        if lane is None:
            self._add(key, _Lane(last=seq))
        elif seq > lane.last and not lane.held:
            lane.last = seq

    def offer(self, key: K, seq: int, item: T, now_ms: int) -> list[T]:
        """An event arrived: the events of ``key`` that can be handled now, in order (possibly none)."""
        lane = self._lanes.get(key)
        first = lane is None or lane.last < 0  # its first event says where it is
        if lane is None:
            lane = self._add(key, _Lane(last=seq - 1))
        elif lane.last < 0:  # known by its epoch only
            lane.last = seq - 1
        if seq <= lane.last:
            self.stats.behind += 1
            return [item]
        if lane.sparse:
            lane.last = seq
            return [item]
        if seq == lane.last + 1 and not lane.held:  # the usual case: in step, nothing waiting (no dict touched)
            lane.in_step += not first
            lane.last = seq
            return [item]
        slot = lane.held.get(seq)
        if slot is None:
            lane.held[seq] = (now_ms, [item])
        else:
            slot[1].append(item)  # the same seq twice (a redelivery): both go together, the dedup keeps one
        if seq == lane.last + 1:
            lane.in_step += not first
            return self._drain(key, lane)
        self.stats.held += 1
        self._waiting.add(key)
        if len(lane.held) > self.max_held:
            return self._skip(key, lane, now_ms)
        return []

    def due(self, now_ms: int) -> list[T]:
        """Give up the gaps whose events waited ``wait_ms``; their devices' held events, in order."""
        out: list[T] = []
        for key in list(self._waiting):
            lane = self._lanes[key]
            while lane.held and now_ms - min(at for at, _ in lane.held.values()) >= self.wait_ms:
                out += self._skip(key, lane, now_ms)
                lane.given_up += 1
                if not lane.in_step and lane.given_up >= self.sparse_after:
                    lane.sparse = True  # it numbers with holes of its own: waiting would only delay it
                    self.stats.sparse += 1
                    rest = sorted(lane.held)
                    out += [item for seq in rest for item in lane.held[seq][1]]
                    lane.last = max(lane.last, *rest) if rest else lane.last
                    lane.held.clear()
                    self._waiting.discard(key)
        return out

    def epoch(self, key: K, epoch: int) -> list[T]:
        """A device announced its session epoch; a new one releases what it held (in order) and restarts at 1.

        The first epoch seen for a device is taken as its current one, and says nothing of where its ``seq`` is (a
        retained birth may come long after the device started); only a change of epoch restarts it at 1.
        """
        if epoch <= 0:
            return []
        lane = self._lanes.get(key)
        if lane is None:
            self._add(key, _Lane(last=_UNKNOWN, epoch=epoch))
            return []
        if lane.epoch in (0, epoch):
            lane.epoch = epoch
            return []
        self.stats.epochs += 1
        out = [item for seq in sorted(lane.held) for item in lane.held[seq][1]]
        self._lanes[key] = _Lane(last=0, epoch=epoch)
        self._waiting.discard(key)
        return out

    def _add(self, key: K, lane: _Lane[T]) -> _Lane[T]:
        """Remember a device not known yet; past ``max_lanes`` forget the longest-known one that holds nothing."""
        lanes = self._lanes
        if len(lanes) >= self.max_lanes:
            waiting = self._waiting
            old = next((k for k in lanes if k not in waiting), None)  # the oldest first (insertion order)
            if old is not None:
                del lanes[old]
        lanes[key] = lane
        return lane

    def _skip(self, key: K, lane: _Lane[T], now_ms: int) -> list[T]:
        """Give up the gap before the lowest held ``seq`` and release from there."""
        first = min(lane.held)
        gap = Gap(key, lane.last, first, now_ms - lane.held[first][0])
        self.stats.gaps += 1
        self.stats.missing += gap.missing
        self.recent_gaps.append(gap)
        lane.last = first - 1
        return self._drain(key, lane)

    def _drain(self, key: K, lane: _Lane[T]) -> list[T]:
        """Release the held events that follow ``lane.last`` without a hole."""
        out: list[T] = []
        held = lane.held
        while (slot := held.pop(lane.last + 1, None)) is not None:
            out += slot[1]
            lane.last += 1
        if not held:
            self._waiting.discard(key)
        return out
