"""Messages the agent refuses: counted, logged now and then, and dead-lettered (a flood's refusals sampled)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from agent.parking import SeenFile
from agent.runtime.settings import AgentStats
from broker.bus import Bus, Outgoing, retained_digest
from broker.ratelog import Sampler
from schemas import codec
from schemas.actions import DeadLetter
from schemas.clock import Clock, SimClock
from schemas.envelope import Message, make, now_ms
from schemas.errors import BusConnectionError, PublishError, ValidationFailed
from schemas.topics import dlq_topic


class Refusals:
    """Where refused messages go: the DLQ, with the refusals for rate sampled (one a second per device)."""

    __slots__ = ("_flushed", "_instance", "_letters", "_log", "_seen_retained", "_stats", "_unlettered")

    def __init__(self, instance: str, stats: AgentStats, log: Any, seen_retained: SeenFile | None) -> None:
        self._instance = instance
        self._stats = stats
        self._log = log
        self._seen_retained = seen_retained
        # A flooding device's refusals: the first of each second per device goes to the DLQ, the rest are counted.
        self._letters = Sampler(1)
        self._unlettered: dict[str, int] = {}  # topic -> refused without a dead letter of their own
        self._flushed = 0.0

    def refuse(self, bus: Bus, message: Message, reason: str, why: str) -> None:
        """Count, maybe log, and dead-letter a refused message."""
        stats = self._stats
        stats.refused += 1
        if stats.refused in {1, 10, 100} or stats.refused % 1000 == 0:
            self._log.warning("message_refused", topic=message.topic, reason=reason, why=why, total=stats.refused)
        if reason == "rate":  # a flood: sampled, not mirrored one to one (the DLQ would flood the agent's link)
            where = message.where
            if not self._letters.allow((where.user, where.kind, where.device)):
                stats.sampled_out += 1
                waiting = self._unlettered
                waiting[message.topic] = waiting.get(message.topic, 0) + 1  # summed by flush_rate_counts
                return
        error = ValidationFailed(why, topic=message.topic)
        error.reason = reason
        try:
            raw = codec.encode(message.envelope)
        except (OverflowError, TypeError, ValueError):  # what cannot be re-encoded is shown as text
            raw = repr(message.envelope).encode()
        with contextlib.suppress(BusConnectionError, PublishError):
            bus.dead_letter(message.topic, raw, error, seen_by=self._instance)

    def retained_event(self, bus: Bus, message: Message) -> None:
        """A retained event (Mosquitto's ACL cannot refuse the retain flag): dead-lettered the first time only;
        it comes again at every subscribe and is acknowledged silently then, also after a restart."""
        seen = self._seen_retained
        key = retained_digest(message.topic, message.raw or codec.encode(message.envelope))
        if seen is not None and key in seen:
            return
        if seen is not None:
            seen.add(key)
        self.refuse(bus, message, "retained", "events are never retained: it would be handled again at every start")

    def flush_rate_counts(self, bus: Bus, mono: float) -> None:
        """Once a second: one dead letter per topic standing for the refusals for rate not dead-lettered one by one
        (``count``), so the DLQ still accounts for every message."""
        if not self._unlettered or mono - self._flushed < 1.0 or not bus.connected:
            return
        self._flushed = mono
        waiting, self._unlettered = self._unlettered, {}
        for topic, count in waiting.items():
            letter = DeadLetter(
                reason="rate", topic=topic, size=0, count=count, seen_by=self._instance,
                error=f"{count} more messages refused for rate: sampled, not dead-lettered one by one",
            )  # fmt: skip
            with contextlib.suppress(BusConnectionError, PublishError):
                bus.publish_unconfirmed(Outgoing(dlq_topic("rate"), codec.encode(make(letter, ts=now_ms())), 1))


def clock_hint(clock: Clock, reason: str) -> str:
    """Why a timestamp may be off: the agent plays a scenario on simulated time (said in the refusal)."""
    if reason not in {"future", "stale"} or not isinstance(clock, SimClock) or clock.speed == 1.0:
        return ""
    now = datetime.fromtimestamp(clock.now_ms() / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    hint = f"; the agent is on a scenario's simulated clock (now {now}, x{clock.speed:g})"
    if clock.switch_wall_ms is not None:
        switch = datetime.fromtimestamp(clock.switch_wall_ms / 1000, UTC).strftime("%H:%M:%S UTC")
        return hint + f" until the scenario ends at {switch} wall time, then on the wall clock: send again then"
    return hint + " (wearbus up --forever switches to the wall clock when the scenario ends)"
