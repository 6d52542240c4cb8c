"""Bounds and units of the context, and the user's local time (their profile's offset from UTC)."""

from __future__ import annotations

from agent.core.config import UserProfile

MIN_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
BUCKET_MS = 300_000  # heart-rate rule buckets: the ring's periodic cadence
SESSION_GAP_MS = 3 * HOUR_MS  # hypnogram segments further apart belong to different sleeps
MOVING = frozenset({"walking", "running", "cycling", "automotive"})
MAX_DEVICES = 6
MAX_CELLS = 8
MAX_EVENTS = 2
MAX_ACT = 4
MAX_STEP_BUCKETS = 4
MAX_SPO2 = 3
SlotValue = str | int | float | bool


def local(t: int, profile: UserProfile) -> int:
    """``t`` shifted to the user's wall time (still ms; only hours, days and weekdays are read from it)."""
    return t + profile.tz_offset_min * MIN_MS


def hour_of(t_local: int) -> int:
    """The hour (0-23) of a local time."""
    return (t_local // HOUR_MS) % 24


def weekday_of(t_local: int) -> int:
    """Monday 0 .. Sunday 6 (1970-01-01 was a Thursday)."""
    return (t_local // DAY_MS + 3) % 7


def in_hours(hour: int, start: int, end: int) -> bool:
    """Whether ``hour`` falls in ``[start, end)``, a window that may wrap midnight."""
    return start <= hour < end if start <= end else (hour >= start or hour < end)
