"""Admission of incoming messages beyond the schema: timestamps that cannot be right, and floods (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.envelope import Message
from schemas.topics import DeviceKey


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """Limits on what the agent accepts.

    Attributes:
        rate_per_s: sustained messages per second one device may send (in simulated seconds).
        burst: how many it may send at once (a ring batch, a reconnect flushing an outbox).
        max_future_s: how far ahead of the agent's clock a publish time may be.
        max_past_s: how old a publish time may be (a device's outbox holds events for a while; a week is plenty).
        max_devices: devices tracked for rate limiting (least recently seen forgotten first), bounding memory.
        backlog_s: an event is charged at the time the device published it (never later than now, never before
            its previous event), up to this far back: a backlog that waited in the broker or in the device's
            outbox while the agent was away arrives all at once but was sent at an ordinary pace, so it is not a
            flood. A device that back-dates its events gains at most this many seconds of allowance. 0: charge
            every event when it arrives.
    """

    rate_per_s: float = 20.0
    burst: float = 200.0
    max_future_s: float = 300.0
    max_past_s: float = 7 * 86_400.0
    max_devices: int = 100_000
    backlog_s: float = 600.0


class Admission:
    """Decides whether a decoded message is admitted; a refusal carries the DLQ reason and a sentence."""

    def __init__(self, config: AdmissionConfig | None = None) -> None:
        self.config = config or AdmissionConfig()
        # (user, kind, device) -> (tokens, ms the device's last event was charged at), least recently seen first (a
        # plain dict keeps insertion order: a device seen again is popped and put back at the end)
        self._buckets: dict[DeviceKey, tuple[float, int]] = {}

    def check(self, message: Message, now_ms: int) -> tuple[str, str] | None:
        """``None`` when admitted, else ``(reason, explanation)``."""
        cfg = self.config
        ts = message.envelope.ts
        if ts > now_ms + cfg.max_future_s * 1000:
            return "future", f"publish time {ts} is {(ts - now_ms) / 1000:.0f} s ahead of the agent's clock"
        if ts < now_ms - cfg.max_past_s * 1000 and not message.retain:
            return "stale", f"publish time {ts} is {(now_ms - ts) / 86_400_000:.1f} days old"
        where = message.where
        key = where.key
        if key is None:
            return None
        # charged when it was published, never later than now nor earlier than the backlog allowance
        sent = now_ms if ts > now_ms else max(ts, now_ms - int(cfg.backlog_s * 1000))
        burst, rate = cfg.burst, cfg.rate_per_s
        buckets = self._buckets
        state = buckets.pop(key, None)
        if state is None:
            tokens = burst
        else:
            tokens, last = state
            if sent > last:
                tokens = min(burst, tokens + (sent - last) / 1000 * rate)
            else:
                sent, tokens = last, min(burst, tokens)
        if tokens < 1:
            self._remember(key, tokens, sent)
            device = f"{where.user}/{where.kind}/{where.device}"
            return "rate", f"{device} sends faster than {rate:g}/s (burst {burst:g})"
        self._remember(key, tokens - 1, sent)
        return None

    def _remember(self, key: DeviceKey, tokens: float, now_ms: int) -> None:
        buckets = self._buckets
        buckets[key] = (tokens, now_ms)
        if len(buckets) > self.config.max_devices:
            del buckets[next(iter(buckets))]
