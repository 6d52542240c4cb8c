"""Health from the ring: baselines, heart-rate windows, nights and sleep, steps, vitals."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.config import CoreConfig, UserProfile
from agent.core.context.local_time import (
    BUCKET_MS,
    DAY_MS,
    HOUR_MS,
    MAX_STEP_BUCKETS,
    MIN_MS,
    MOVING,
    SESSION_GAP_MS,
    hour_of,
    in_hours,
    local,
)

if TYPE_CHECKING:
    from agent.core.context.place import Where
    from agent.core.context.state import UserContext


@dataclass(slots=True)
class Baseline:
    """A personal baseline: a running mean of one value per day that starts from a prior.

    Attributes:
        value: the current baseline.
        days: days of data folded in (a profile-given baseline starts as learned).
    """

    value: float
    days: float = 0.0

    def fold(self, x: float, prior_days: float, min_alpha: float) -> None:
        """Fold one day's value in; the prior weighs like ``prior_days`` days, old baselines move slowly."""
        self.days += 1
        alpha = max(min_alpha, 1.0 / (self.days + prior_days))
        self.value += alpha * (x - self.value)


class HrWindow:
    """Heart-rate samples of the last ~2 h summarised in 5-min buckets, in sample-time order.

    A bucket keeps its first and last sample time, its lowest and highest bpm and two flags (every sample at
    rest; any sample asleep); that is all the sustained-HR rules need, whatever order the samples arrive in.
    Two flat arrays keep it to 32 bytes a bucket: ``key, first, last, flags`` as 32-bit ints (the bucket number,
    and the sample times as ms after the bucket's start) and ``lo, hi`` as floats.
    """

    __slots__ = ("ints", "vals")
    RESTING = 1
    ASLEEP = 2

    def __init__(self) -> None:
        self.ints: array[int] = array("i")
        self.vals: array[float] = array("d")

    def __len__(self) -> int:
        return len(self.ints) // 4

    def key(self, j: int) -> int:
        """The bucket number of bucket ``j``."""
        return self.ints[4 * j]

    def first(self, j: int) -> int:
        """The first sample time in bucket ``j``."""
        return self.ints[4 * j] * BUCKET_MS + self.ints[4 * j + 1]

    def last(self, j: int) -> int:
        """The last sample time in bucket ``j``."""
        return self.ints[4 * j] * BUCKET_MS + self.ints[4 * j + 2]

    def add(self, t: int, bpm: float, flags: int, keep_from: int) -> int:
        """Add one sample; drop buckets that end before ``keep_from``. Returns the sample's bucket index."""
        ints, vals = self.ints, self.vals
        while ints and (ints[0] + 1) * BUCKET_MS <= keep_from:
            del ints[:4]
            del vals[:2]
        key, off = divmod(t, BUCKET_MS)
        n = len(ints) // 4
        last = ints[4 * n - 4] if n else -1
        if key > last:
            i = n
        elif key == last:
            i = n - 1
        else:  # an older bucket: search
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi) // 2
                if ints[4 * mid] < key:
                    lo = mid + 1
                else:
                    hi = mid
            i = lo
        if i < n and ints[4 * i] == key:
            ints[4 * i + 1] = min(ints[4 * i + 1], off)
            ints[4 * i + 2] = max(ints[4 * i + 2], off)
            old = ints[4 * i + 3]
            ints[4 * i + 3] = (old & flags & self.RESTING) | ((old | flags) & self.ASLEEP)
            vals[2 * i] = min(vals[2 * i], bpm)
            vals[2 * i + 1] = max(vals[2 * i + 1], bpm)
            return i
        ints[4 * i : 4 * i] = array("i", (key, off, off, flags))
        vals[2 * i : 2 * i] = array("d", (bpm, bpm))
        return i

    def run(
        self, i: int, high: float | None, low: float | None, max_gap: int, *, asleep_ok: bool = True
    ) -> tuple[int, int] | None:
        """The span ``(first, last)`` of the run of buckets around ``i`` that stayed above ``high`` (or
        below ``low``) at rest, no gap between samples longer than ``max_gap``; None if ``i`` is not in one.
        """

        def ok(j: int) -> bool:
            f = self.ints[4 * j + 3]
            if not f & self.RESTING or (not asleep_ok and f & self.ASLEEP):
                return False
            if high is not None:
                return self.vals[2 * j] > high
            return low is not None and self.vals[2 * j + 1] < low

        if not ok(i):
            return None
        a = b = i
        while a > 0 and ok(a - 1) and self.first(a) - self.last(a - 1) <= max_gap:
            a -= 1
        while b + 1 < len(self) and ok(b + 1) and self.first(b + 1) - self.last(b) <= max_gap:
            b += 1
        return (self.first(a), self.last(b))

    def mean(self) -> float | None:
        """The mid-range heart rate over the window."""
        n = len(self)
        if not n:
            return None
        return sum(self.vals) / (2 * n)

    def to_data(self) -> list[tuple[int, int, int, int, float, float]]:
        """JSON-ready rows ``[key, first, last, flags, lo, hi]`` (sample times in ms since the epoch).

        Rows are tuples, and a bucket of one sample repeats its time and bpm objects: the core's snapshot holds
        every user's rows at once, so they are kept small (the JSON is the same).
        """
        ints, vals, rows = self.ints, self.vals, []
        for j in range(len(ints) // 4):
            key, a, b, flags = ints[4 * j : 4 * j + 4]
            base = key * BUCKET_MS
            first = base + a
            lo, hi = vals[2 * j], vals[2 * j + 1]
            rows.append((key, first, first if b == a else base + b, flags, lo, lo if hi == lo else hi))
        return rows

    @classmethod
    def from_data(cls, rows: list[list[Any]]) -> HrWindow:
        """Rebuild from :meth:`to_data`."""
        w = cls()
        for key, first, last, flags, lo, hi in rows:
            base = int(key) * BUCKET_MS
            w.ints.extend((int(key), int(first) - base, int(last) - base, int(flags)))
            w.vals.extend((float(lo), float(hi)))
        return w


class StepBuckets:
    """The last few step buckets ``(start, seconds, steps)`` in start order, one start at most once.

    One flat array (24 bytes a bucket instead of ~170 for a list of tuples of ints); iterates as the tuples.
    """

    __slots__ = ("ints",)
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self) -> None:
        self.ints: array[int] = array("q")

    def __len__(self) -> int:
        return len(self.ints) // 3

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        ints = self.ints
        for j in range(0, len(ints), 3):
            yield ints[j], ints[j + 1], ints[j + 2]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepBuckets) and self.ints == other.ints

    def pop(self, start: int) -> int | None:
        """Remove the bucket that starts at ``start``; its steps, or None if there is none."""
        ints = self.ints
        for j in range(0, len(ints), 3):
            if ints[j] == start:
                steps = ints[j + 2]
                del ints[j : j + 3]
                return steps
        return None

    def put(self, start: int, seconds: int, steps: int, keep: int) -> None:
        """Insert a bucket in start order (none with this start may be present); keep the last ``keep``."""
        ints = self.ints
        j = len(ints)
        while j and ints[j - 3] > start:
            j -= 3
        ints[j:j] = array("q", (start, seconds, steps))
        if len(ints) > 3 * keep:
            del ints[: len(ints) - 3 * keep]

    def to_data(self) -> list[tuple[int, int, int]]:
        """JSON-ready rows ``[start, seconds, steps]``."""
        return list(self)

    @classmethod
    def from_data(cls, rows: list[list[Any]]) -> StepBuckets:
        """Rebuild from :meth:`to_data`."""
        b = cls()
        for start, seconds, steps in rows:
            b.ints.extend((int(start), int(seconds), int(steps)))
        return b


@dataclass(slots=True)
class Night:
    """What one night contributes to baselines and the night rules.

    Attributes:
        key: the night being collected: the local day of its evening (-1: none).
        closed: the last night already judged; later samples of it are ignored.
        hr_min: the lowest valid heart rate of the night.
        hr_n: how many heart-rate samples it has.
        hrv_sum: sum of HRV samples.
        hrv_n: their count.
        temp_sum: sum of skin temperature samples (°C).
        temp_n: their count.
        last_ts: the latest sample time in the night.
        corr: the event that brought that sample (commands caused by judging the night carry it).
    """

    key: int = -1
    closed: int = -1
    hr_min: float | None = None
    hr_n: int = 0
    hrv_sum: float = 0.0
    hrv_n: int = 0
    temp_sum: float = 0.0
    temp_n: int = 0
    last_ts: int = 0
    corr: str = ""


@dataclass(slots=True)
class Health:
    """Latest readings, short windows and baselines.

    Attributes:
        hr: latest heart rate, with its sample time ``hr_ts`` (same pattern for the others).
        hr_window: 5-min buckets of the last ~2 h for the sustained rules.
        spo2_recent: the last few valid SpO2 readings, in sample-time order (a bounded window).
        steps: the last few 15-min step buckets ``(start, seconds, steps)``, in start order (bounded).
        steps_day: the local day ``steps_today`` counts.
        sleep_seen: the end of the latest hypnogram segment; ``sleep_ms``/``deep_ms`` the session's totals.
        sleep_start: the first asleep segment start of that session; ``sleep_end`` the last end.
        sleep_sign: latest sample time that says the user was asleep.
        awake_sign: latest time that says the user was awake.
        night: the night accumulator.
        rhr: the resting heart-rate baseline (the others: hrv, skin temperature, breathing rate).
        fired: per metric, the sample time of the last nudge (rate limit).
        spo2_checked: when a recheck of a low SpO2 was last asked.
    """

    hr: float | None = None
    hr_ts: int = 0
    hrv: float | None = None
    hrv_ts: int = 0
    spo2: float | None = None
    spo2_ts: int = 0
    skin_temp: float | None = None
    skin_temp_ts: int = 0
    skin_dev: float | None = None
    skin_dev_ts: int = 0
    resp: float | None = None
    resp_ts: int = 0
    stress: float | None = None
    stress_ts: int = 0
    hr_window: HrWindow = field(default_factory=HrWindow)
    spo2_recent: list[tuple[int, float]] = field(default_factory=list)
    steps: StepBuckets = field(default_factory=StepBuckets)
    steps_day: int = -1
    steps_today: int = 0
    sleep_seen: int = 0
    sleep_ms: int = 0
    deep_ms: int = 0
    sleep_start: int = 0
    sleep_end: int = 0
    sleep_sign: int = 0
    awake_sign: int = 0
    night: Night = field(default_factory=Night)
    rhr: Baseline = field(default_factory=lambda: Baseline(60.0))
    hrv_base: Baseline = field(default_factory=lambda: Baseline(45.0))
    temp_base: Baseline = field(default_factory=lambda: Baseline(33.0))
    resp_base: Baseline = field(default_factory=lambda: Baseline(14.0))
    fired: dict[str, int] = field(default_factory=dict)
    spo2_checked: int = 0


def night_key(t: int, profile: UserProfile) -> int:
    """The night a sample belongs to: the local day of its evening (nights run noon to noon)."""
    return (local(t, profile) - 12 * HOUR_MS) // DAY_MS


def night_close_at(key: int, cfg: CoreConfig, profile: UserProfile) -> int:
    """When night ``key`` ends (its morning's ``night_end_hour``), in agent time."""
    return (key + 1) * DAY_MS + cfg.night_end_hour * HOUR_MS - profile.tz_offset_min * MIN_MS


def in_night(t: int, cfg: CoreConfig, profile: UserProfile) -> bool:
    """Whether ``t`` falls in the local night window."""
    return in_hours(hour_of(local(t, profile)), cfg.night_start_hour, cfg.night_end_hour)


def night_add(ctx: UserContext, t: int, corr: str, profile: UserProfile) -> Night | None:
    """The night accumulator to add a sample of time ``t`` to (None: that night was already judged)."""
    n = ctx.health.night
    key = night_key(t, profile)
    if key <= n.closed or key < n.key:
        return None
    if key > n.key:
        ctx.health.night = n = Night(key=key, closed=n.closed)
    n.last_ts = max(n.last_ts, t)
    n.corr = corr
    return n


def steps_at(h: Health, t: int, window_ms: int) -> tuple[int, int]:
    """``(steps, seconds)`` of the buckets overlapping ``[t - window_ms, t]``."""
    steps = secs = 0
    for start, seconds, n in h.steps:
        end = start + seconds * 1000
        if end > t - window_ms and start <= t:
            steps += n
            secs += seconds
    return steps, secs


def activity_at(w: Where, t: int) -> str | None:
    """The earphones' activity label at sample time ``t`` (None: unknown)."""
    label: str | None = None
    for since, act in w.act_hist:
        if since <= t:
            label = act
    return label


def moving_at(ctx: UserContext, t: int, cfg: CoreConfig) -> bool:
    """Whether the user was moving at sample time ``t`` (steps, earphones activity, phone speed)."""
    steps, secs = steps_at(ctx.health, t, 15 * MIN_MS)
    if secs and steps > cfg.rest_steps_per_bucket * max(1.0, secs / 900):
        return True
    if activity_at(ctx.where, t) in MOVING:
        return True
    w = ctx.where
    return abs(t - w.loc_ts) <= 2 * MIN_MS and w.speed >= cfg.moving_speed_mps


def add_steps(ctx: UserContext, start: int, seconds: int, steps: int, profile: UserProfile) -> None:
    """Record a step bucket (a bucket seen again replaces itself) and today's total."""
    h = ctx.health
    day = local(start, profile) // DAY_MS
    old = h.steps.pop(start)
    if old is not None and day == h.steps_day:
        h.steps_today -= old
    if day > h.steps_day:
        h.steps_day, h.steps_today = day, 0
    if day == h.steps_day:
        h.steps_today += steps
    h.steps.put(start, seconds, steps, MAX_STEP_BUCKETS)


def add_sleep(ctx: UserContext, stage: str, start: int, end: int) -> None:
    """Fold a hypnogram segment into the latest sleep session (a gap of hours starts a new one)."""
    h = ctx.health
    if h.sleep_seen and start < h.sleep_seen:
        return  # already counted, or older than the session we summarise
    if not h.sleep_seen or start > h.sleep_seen + SESSION_GAP_MS:
        h.sleep_ms = h.deep_ms = h.sleep_start = h.sleep_end = 0
    h.sleep_seen = end
    if stage == "awake":
        h.awake_sign = max(h.awake_sign, end)
        return
    h.sleep_ms += end - start
    if stage == "deep":
        h.deep_ms += end - start
    h.sleep_start = start if not h.sleep_start else min(h.sleep_start, start)
    h.sleep_end = max(h.sleep_end, end)
    h.sleep_sign = max(h.sleep_sign, end)


def asleep(ctx: UserContext, now: int, cfg: CoreConfig) -> bool:
    """Asleep: a recent sign of sleep, and nothing since that says awake."""
    h = ctx.health
    return h.sleep_sign > h.awake_sign and now - h.sleep_sign <= cfg.asleep_window_s * 1000


def in_sleep(ctx: UserContext, t: int) -> bool:
    """Whether sample time ``t`` falls in the last known sleep span."""
    h = ctx.health
    return bool(h.sleep_start) and h.sleep_start <= t <= h.sleep_end


def add_hr(
    ctx: UserContext,
    t: int,
    bpm: float,
    *,
    source: str,
    quality: float,
    corr: str,
    cfg: CoreConfig,
    profile: UserProfile,
) -> None:
    """Fuse a heart-rate sample: latest value, sleep/awake signs, the night's lowest."""
    h = ctx.health
    if t >= h.hr_ts:
        h.hr, h.hr_ts = bpm, t
    if source == "sleep":
        h.sleep_sign = max(h.sleep_sign, t)
    elif source in ("periodic", "workout", "realtime", "spot"):
        h.awake_sign = max(h.awake_sign, t)
    if quality < cfg.min_quality or source == "workout":
        return
    if source == "sleep" or in_night(t, cfg, profile):
        night = night_add(ctx, t, corr, profile)
        if night is not None:
            night.hr_min = bpm if night.hr_min is None else min(night.hr_min, bpm)
            night.hr_n += 1


def add_hrv(ctx: UserContext, t: int, rmssd: float, *, corr: str, cfg: CoreConfig, profile: UserProfile) -> None:
    """Fuse an HRV sample (night samples feed the baseline)."""
    h = ctx.health
    if t >= h.hrv_ts:
        h.hrv, h.hrv_ts = rmssd, t
    if in_night(t, cfg, profile) or in_sleep(ctx, t):
        night = night_add(ctx, t, corr, profile)
        if night is not None:
            night.hrv_sum += rmssd
            night.hrv_n += 1


def add_spo2(ctx: UserContext, t: int, pct: float, source: str) -> None:
    """Fuse an SpO2 reading's latest value."""
    h = ctx.health
    if t >= h.spo2_ts:
        h.spo2, h.spo2_ts = pct, t
    if source == "night":
        h.sleep_sign = max(h.sleep_sign, t)


def add_skin_temp(
    ctx: UserContext,
    t: int,
    *,
    celsius: float | None,
    deviation: float | None,
    corr: str,
    cfg: CoreConfig,
    profile: UserProfile,
) -> None:
    """Fuse skin temperature: absolute samples feed the night mean, deviations are kept as they are."""
    h = ctx.health
    if deviation is not None and t >= h.skin_dev_ts:
        h.skin_dev, h.skin_dev_ts = deviation, t
    if celsius is None:
        return
    if t >= h.skin_temp_ts:
        h.skin_temp, h.skin_temp_ts = celsius, t
    if in_night(t, cfg, profile) or in_sleep(ctx, t):
        night = night_add(ctx, t, corr, profile)
        if night is not None:
            night.temp_sum += celsius
            night.temp_n += 1


def add_resp(ctx: UserContext, t: int, brpm: float, cfg: CoreConfig) -> None:
    """Fuse a nightly breathing rate (it is already a night's average: fold it into the baseline)."""
    h = ctx.health
    if t > h.resp_ts:
        h.resp, h.resp_ts = brpm, t
        h.resp_base.fold(brpm, cfg.baseline_prior_days, cfg.baseline_min_alpha)


def add_stress(ctx: UserContext, t: int, level: float) -> None:
    """Fuse a stress level."""
    h = ctx.health
    if t >= h.stress_ts:
        h.stress, h.stress_ts = level, t
