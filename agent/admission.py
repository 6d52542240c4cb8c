"""Admission of incoming messages beyond the schema: timestamps that cannot be right, and floods (pure)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from schemas.envelope import Message


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
        self._buckets: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def check(self, message: Message, now_ms: int) -> tuple[str, str] | None:
        """``None`` when admitted, else ``(reason, explanation)``."""
        cfg = self.config
        ts = message.envelope.ts
        if ts > now_ms + cfg.max_future_s * 1000:
            return "future", f"publish time {ts} is {(ts - now_ms) / 1000:.0f} s ahead of the agent's clock"
        if ts < now_ms - cfg.max_past_s * 1000 and not message.retain:
            return "stale", f"publish time {ts} is {(now_ms - ts) / 86_400_000:.1f} days old"
        where = message.where
        if where.device is None:
            return None
        key = f"{where.user}/{where.kind}/{where.device}"
        sent = min(now_ms, max(ts, now_ms - int(cfg.backlog_s * 1000)))
        tokens, last = self._buckets.pop(key, (cfg.burst, sent))
        sent = max(sent, last)
        tokens = min(cfg.burst, tokens + (sent - last) / 1000 * cfg.rate_per_s)
        if tokens < 1:
            self._remember(key, tokens, sent)
            return "rate", f"{key} sends faster than {cfg.rate_per_s:g}/s (burst {cfg.burst:g})"
        self._remember(key, tokens - 1, sent)
        return None

    def _remember(self, key: str, tokens: float, now_ms: int) -> None:
        self._buckets[key] = (tokens, now_ms)
        if len(self._buckets) > self.config.max_devices:
            self._buckets.popitem(last=False)
