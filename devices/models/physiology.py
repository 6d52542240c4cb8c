"""A person's vital signs driven by what they are doing; a ring samples them in :mod:`devices.models.ring_sampler`."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from schemas.errors import ConfigError
from schemas.events import SleepStage

# Documented sanity ranges (reference/devices.md §2.3): every value the model reports is clamped to these.
HR_RANGE = (30.0, 220.0)
HRV_RANGE = (5.0, 200.0)
SPO2_RANGE = (70.0, 100.0)
SKIN_TEMP_RANGE = (25.0, 38.0)
RESP_RANGE = (8.0, 30.0)
# Offsets a scenario may add; wide enough for every proactive rule, narrow enough to stay physiological.
HR_OFFSET_RANGE = (-40.0, 60.0)
SKIN_TEMP_OFFSET_RANGE = (-3.0, 3.0)

_STEP_MS = 30_000  # integration step: shorter than every time constant that matters at 5-min sampling
_MIN_MS = 60_000
_H_MS = 3_600_000


def _clamp(x: float, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return lo if x < lo else hi if x > hi else x


def _approach(x: float, target: float, dt_s: float, tau_s: float) -> float:
    # Exact solution of dx/dt = (target - x) / tau over dt: stable for any step length.
    return target + (x - target) * math.exp(-dt_s / tau_s)


class Activity(StrEnum):
    """What the person is doing; it sets the targets the vitals move toward."""

    RESTING = "resting"
    SITTING = "sitting"
    WALKING = "walking"
    RUNNING = "running"
    SLEEPING = "sleeping"


class OverrideKind(StrEnum):
    """What a scenario can force, so a proactive rule has something to catch.

    ``HR``, ``HRV``, ``SPO2`` and ``RESP`` hold the observed value at the given level (plus small sensor
    noise); ``HR_OFFSET`` (bpm) and ``SKIN_TEMP_OFFSET`` (°C) add to the natural value, e.g. +8 bpm over a
    night for "elevated night resting HR", +0.9 °C for a night temperature deviation.
    """

    HR = "hr"
    HR_OFFSET = "hr_offset"
    HRV = "hrv"
    SPO2 = "spo2"
    RESP = "resp"
    SKIN_TEMP_OFFSET = "skin_temp_offset"


#: What a scenario may force each kind to (or add to it, for the offsets): the model's documented ranges.
OVERRIDE_RANGES: Mapping[OverrideKind, tuple[float, float]] = MappingProxyType(
    {
        OverrideKind.HR: HR_RANGE,
        OverrideKind.HR_OFFSET: HR_OFFSET_RANGE,
        OverrideKind.HRV: HRV_RANGE,
        OverrideKind.SPO2: SPO2_RANGE,
        OverrideKind.RESP: RESP_RANGE,
        OverrideKind.SKIN_TEMP_OFFSET: SKIN_TEMP_OFFSET_RANGE,
    }
)


class MeasureKind(StrEnum):
    """Spot measurements the ring can take on request (``ring.measure_now``)."""

    HR = "hr"
    SPO2 = "spo2"
    HRV = "hrv"
    STRESS = "stress"


# How long a spot measurement takes before its result: readings are 0 until the sensor locks, the Colmi client
# waits up to 40 s for valid values, and stress arrives ~90 s after the start (reference/devices.md §2.2).
MEASURE_LATENCY_MS: Mapping[MeasureKind, tuple[int, int]] = MappingProxyType(
    {
        MeasureKind.HR: (6_000, 15_000),
        MeasureKind.SPO2: (15_000, 30_000),
        MeasureKind.HRV: (30_000, 40_000),
        MeasureKind.STRESS: (85_000, 95_000),
    }
)


def measure_latency_ms(kind: MeasureKind, rng: random.Random) -> int:
    """Draw how long a spot measurement of ``kind`` takes until its result, ms."""
    lo, hi = MEASURE_LATENCY_MS[kind]
    return rng.randint(lo, hi)


@dataclass(frozen=True, slots=True)
class PersonalBaseline:
    """One person's normal values, which the model varies around.

    Attributes:
        resting_hr_bpm: daytime resting heart rate.
        hrv_rmssd_ms: resting HRV (RMSSD).
        spo2_pct: normal SpO2.
        skin_temp_c: daytime finger skin temperature (rings read ~30-33 °C).
        resp_brpm: resting breathing rate.
        max_hr_bpm: maximum heart rate.
        walk_cadence_spm: steps per minute while walking.
        run_cadence_spm: steps per minute while running.
        stride_m: walking step length.
        weight_kg: body mass, for calories.
    """

    resting_hr_bpm: float = 62.0
    hrv_rmssd_ms: float = 45.0
    spo2_pct: float = 97.5
    skin_temp_c: float = 32.5
    resp_brpm: float = 14.5
    max_hr_bpm: float = 185.0
    walk_cadence_spm: float = 102.0
    run_cadence_spm: float = 162.0
    stride_m: float = 0.72
    weight_kg: float = 68.0

    @classmethod
    def sample(cls, rng: random.Random) -> PersonalBaseline:
        """Draw a plausible healthy adult."""
        rhr = rng.uniform(55.0, 75.0)
        # Lower resting HR goes with higher HRV: sample HRV log-uniformly, nudged by RHR.
        hrv = math.exp(rng.uniform(math.log(25.0), math.log(80.0)) + (65.0 - rhr) * 0.01)
        return cls(
            resting_hr_bpm=rhr,
            hrv_rmssd_ms=min(80.0, max(25.0, hrv)),
            spo2_pct=rng.uniform(96.0, 99.0),
            skin_temp_c=min(34.0, max(31.0, rng.gauss(32.5, 0.8))),
            resp_brpm=rng.uniform(12.0, 18.0),
            max_hr_bpm=rng.uniform(175.0, 195.0),
            walk_cadence_spm=rng.uniform(95.0, 112.0),
            run_cadence_spm=rng.uniform(152.0, 172.0),
            stride_m=rng.uniform(0.65, 0.80),
            weight_kg=rng.uniform(50.0, 90.0),
        )


@dataclass(frozen=True, slots=True)
class Vitals:
    """What a sensor would read at one instant.

    Attributes:
        ts_ms: the sample time.
        activity: what the person was doing.
        hr_bpm: heart rate, 30-220.
        hrv_ms: HRV (RMSSD), 5-200.
        spo2_pct: blood oxygen, 70-100.
        skin_temp_c: finger skin temperature, 25-38.
        resp_brpm: breathing rate, 8-30.
        quality: signal quality 0..1 (lower in motion).
        motion: movement intensity 0..1.
        sleep_stage: the stage while sleeping, else ``None``.
    """

    ts_ms: int
    activity: Activity
    hr_bpm: float
    hrv_ms: float
    spo2_pct: float
    skin_temp_c: float
    resp_brpm: float
    quality: float
    motion: float
    sleep_stage: SleepStage | None


@dataclass(frozen=True, slots=True)
class ActivityTotals:
    """Cumulative movement since the model started.

    Attributes:
        steps: whole steps.
        calories_kcal: active energy (above resting).
        distance_m: distance on foot.
    """

    steps: int
    calories_kcal: float
    distance_m: float


@dataclass(frozen=True, slots=True)
class SleepSegment:
    """One stretch of a single sleep stage.

    Attributes:
        stage: the stage.
        start_ms: start, ms since the epoch.
        end_ms: end (exclusive), ms since the epoch.
    """

    stage: SleepStage
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class SleepSession:
    """One completed sleep period, known once the person wakes.

    Attributes:
        start_ms: when the person went to bed (activity became sleeping).
        end_ms: when they woke.
        segments: the hypnogram, contiguous from ``start_ms`` to ``end_ms``.
        resp_avg_brpm: average breathing rate over the period.
        hrv_avg_ms: average HRV.
        lowest_hr_bpm: lowest heart rate (the night nadir).
        spo2_avg_pct: average SpO2.
        temp_dev_c: skin temperature deviation from the personal norm for the night.
    """

    start_ms: int
    end_ms: int
    segments: tuple[SleepSegment, ...]
    resp_avg_brpm: float
    hrv_avg_ms: float
    lowest_hr_bpm: float
    spo2_avg_pct: float
    temp_dev_c: float


@dataclass(frozen=True, slots=True)
class _Override:
    value: float
    from_ms: int
    until_ms: int


@dataclass(frozen=True, slots=True)
class _Targets:
    hr: float
    hrv: float
    spo2: float
    resp: float
    temp: float
    motion: float


@dataclass(frozen=True, slots=True)
class _True:
    """Noiseless values at an instant, overrides applied."""

    hr: float
    hrv: float
    spo2: float
    resp: float
    temp: float
    temp_offset: float


_STAGE_HR = MappingProxyType({"awake": 6.0, "light": 0.0, "deep": -3.0, "rem": 3.0})
_STAGE_HRV = MappingProxyType({"awake": 0.9, "light": 1.15, "deep": 1.35, "rem": 1.0})
_STAGE_RESP = MappingProxyType({"awake": 0.5, "light": -1.0, "deep": -1.5, "rem": 0.0})
_STAGE_MOTION = MappingProxyType({"awake": 0.10, "light": 0.02, "deep": 0.01, "rem": 0.02})
# Metabolic equivalents (Compendium of Physical Activities, rounded); active kcal = (MET - 1) * kg * h.
_MET = MappingProxyType(
    {
        Activity.RESTING: 1.0,
        Activity.SITTING: 1.3,
        Activity.WALKING: 3.5,
        Activity.RUNNING: 9.8,
        Activity.SLEEPING: 0.95,
    }
)


class _Sleep:
    """A sleep period in progress: the planned hypnogram and running statistics."""

    def __init__(self, start_ms: int, rng: random.Random) -> None:
        self.start_ms = start_ms
        self._rng = rng
        self._starts: list[int] = []
        self._segments: list[SleepSegment] = []
        self._cycle = 0
        self.weight_s = 0.0
        self.resp_sum = 0.0
        self.hrv_sum = 0.0
        self.spo2_sum = 0.0
        self.temp_off_sum = 0.0
        self.lowest_hr = math.inf

    @property
    def _end(self) -> int:
        return self._segments[-1].end_ms if self._segments else self.start_ms

    def _add(self, stage: SleepStage, minutes: float) -> None:
        dur = max(_MIN_MS, round(minutes * _MIN_MS))
        start = self._end
        last = self._segments[-1] if self._segments else None
        if last is not None and last.stage == stage:
            self._segments[-1] = SleepSegment(stage, last.start_ms, start + dur)
            return
        self._segments.append(SleepSegment(stage, start, start + dur))
        self._starts.append(start)

    def _plan_cycle(self) -> None:
        rng = self._rng
        if not self._segments:
            self._add("awake", rng.uniform(5.0, 20.0))  # sleep latency
        k = self._cycle
        self._cycle += 1
        length = rng.uniform(80.0, 100.0)  # one NREM/REM cycle, ~90 min
        deep = max(0.0, 40.0 - 12.0 * k + rng.uniform(-5.0, 5.0))  # deep sleep is front-loaded
        deep = deep if deep >= 4.0 else 0.0
        rem = min(40.0, 10.0 + 8.0 * k + rng.uniform(-3.0, 3.0))  # REM lengthens toward morning
        light = max(10.0, length - deep - rem)
        self._add("light", light * 0.6)
        if deep:
            self._add("deep", deep)
        self._add("light", light * 0.4)
        self._add("rem", rem)
        if rng.random() < 0.3:
            self._add("awake", rng.uniform(1.0, 4.0))  # brief arousal between cycles

    def stage_at(self, t_ms: int) -> SleepStage:
        while self._end <= t_ms:
            self._plan_cycle()
        i = bisect.bisect_right(self._starts, t_ms) - 1
        return self._segments[max(0, i)].stage

    def segments_until(self, end_ms: int) -> tuple[SleepSegment, ...]:
        if end_ms <= self.start_ms:
            return ()
        self.stage_at(end_ms - 1)
        out = [s for s in self._segments if s.start_ms < end_ms]
        last = out[-1]
        out[-1] = SleepSegment(last.stage, last.start_ms, min(last.end_ms, end_ms))
        return tuple(out)


class Physiology:
    """A first-order model of one person's vitals.

    Each vital relaxes toward a target set by the activity (and sleep stage, and time of day) with its own
    time constant; heart rate and HRV also wander (Ornstein-Uhlenbeck); sensors add noise on top. The model
    keeps its own clock: :meth:`advance` (and every query) integrates forward to the given time, applying
    activity changes at the times they were scheduled for. Queries for a time before the model's clock read
    the state at the model's clock. Deterministic for a given ``rng`` state and call sequence.

    Args:
        baseline: the person's normal values.
        rng: the source of every random draw.
        start_ms: the model's initial clock.
        activity: the activity at ``start_ms`` (vitals start at its steady state).
        tz_offset_min: local time offset for the circadian rhythm (Hangzhou: +480).
    """

    def __init__(
        self,
        baseline: PersonalBaseline,
        rng: random.Random,
        *,
        start_ms: int,
        activity: Activity = Activity.RESTING,
        tz_offset_min: int = 480,
    ) -> None:
        self.baseline = baseline
        self._rng = rng
        self._t = start_ms
        self._tz_ms = tz_offset_min * _MIN_MS
        self._activity = activity
        self._pending: list[tuple[int, int, Activity]] = []
        self._pending_n = 0
        self._overrides: dict[OverrideKind, _Override] = {}
        self._sleep: _Sleep | None = _Sleep(start_ms, rng) if activity is Activity.SLEEPING else None
        self._sessions: list[SleepSession] = []
        tg = self._targets(start_ms)
        self._hr, self._hrv, self._spo2 = tg.hr, tg.hrv, tg.spo2
        self._resp, self._temp, self._motion = tg.resp, tg.temp, tg.motion
        self._hr_dev = 0.0  # bpm, slow wander around the target
        self._hrv_dev = 0.0  # log-ratio wander
        self._steps = 0.0
        self._kcal = 0.0
        self._dist = 0.0

    # ----- clock and inputs -------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The model's clock."""
        return self._t

    @property
    def activity(self) -> Activity:
        """The activity at the model's clock."""
        return self._activity

    @property
    def sleep_sessions(self) -> tuple[SleepSession, ...]:
        """Every completed sleep period, oldest first."""
        return tuple(self._sessions)

    def set_activity(self, activity: Activity, at_ms: int) -> None:
        """Schedule a change of activity at ``at_ms`` (immediately if that is not after the model's clock).

        Changes at the same instant apply in call order. Leaving ``SLEEPING`` completes a
        :class:`SleepSession`.
        """
        if at_ms <= self._t:
            self._change(activity)
            return
        self._pending_n += 1
        bisect.insort(self._pending, (at_ms, self._pending_n, activity))

    def set_override(self, kind: OverrideKind, value: float, until_ms: int, *, from_ms: int | None = None) -> None:
        """Force a condition from ``from_ms`` (default: the model's clock) until ``until_ms`` (exclusive).

        One override per kind: a new one replaces the old.

        Raises:
            ConfigError: the value is outside the documented range for ``kind``, or the window is empty.
        """
        lo, hi = OVERRIDE_RANGES[kind]
        if not lo <= value <= hi:
            raise ConfigError(f"override {kind} must be within {lo}..{hi}, got {value}")
        start = self._t if from_ms is None else from_ms
        if until_ms <= start:
            raise ConfigError(f"override {kind} ends ({until_ms}) before it starts ({start})")
        self._overrides[kind] = _Override(float(value), start, until_ms)

    def clear_override(self, kind: OverrideKind) -> None:
        """Remove an override of ``kind`` if there is one."""
        self._overrides.pop(kind, None)

    def override_at(self, kind: OverrideKind, t_ms: int) -> float | None:
        """The override value of ``kind`` in force at ``t_ms``, if any."""
        o = self._overrides.get(kind)
        return o.value if o is not None and o.from_ms <= t_ms < o.until_ms else None

    def _change(self, activity: Activity) -> None:
        if activity is self._activity:
            return
        if self._sleep is not None:
            self._finish_sleep(self._t)
        if activity is Activity.SLEEPING:
            self._sleep = _Sleep(self._t, self._rng)
        self._activity = activity

    def _finish_sleep(self, end_ms: int) -> None:
        sl = self._sleep
        assert sl is not None  # noqa: S101 - only called while sleeping
        self._sleep = None
        if end_ms <= sl.start_ms:
            return
        now = self._true(end_ms)
        w = sl.weight_s
        self._sessions.append(
            SleepSession(
                start_ms=sl.start_ms,
                end_ms=end_ms,
                segments=sl.segments_until(end_ms),
                resp_avg_brpm=_clamp(sl.resp_sum / w if w else now.resp, RESP_RANGE),
                hrv_avg_ms=_clamp(sl.hrv_sum / w if w else now.hrv, HRV_RANGE),
                lowest_hr_bpm=_clamp(sl.lowest_hr if w else now.hr, HR_RANGE),
                spo2_avg_pct=_clamp(sl.spo2_sum / w if w else now.spo2, SPO2_RANGE),
                # The deviation is whatever the night ran above the personal norm, plus night-to-night noise.
                temp_dev_c=(sl.temp_off_sum / w if w else now.temp_offset) + self._rng.gauss(0.0, 0.07),
            )
        )

    # ----- dynamics -----------------------------------------------------------------------------------------

    def _hour(self, t_ms: int) -> float:
        return ((t_ms + self._tz_ms) % (24 * _H_MS)) / _H_MS

    def _stage(self, t_ms: int) -> SleepStage | None:
        return self._sleep.stage_at(t_ms) if self._sleep is not None else None

    def _targets(self, t_ms: int) -> _Targets:
        b = self.baseline
        hour = self._hour(t_ms)
        night = math.cos(2 * math.pi * (hour - 4.0) / 24)  # +1 at 04:00 (the HR nadir), -1 at 16:00
        temp_night = math.cos(2 * math.pi * (hour - 3.0) / 24)  # distal skin is warmest in the small hours
        reserve = b.max_hr_bpm - b.resting_hr_bpm
        hr_base = b.resting_hr_bpm - 2.5 * night
        hrv_base = b.hrv_rmssd_ms * (1 + 0.08 * night)
        temp_base = b.skin_temp_c + 0.3 * temp_night
        match self._activity:
            case Activity.RESTING:
                return _Targets(hr_base + 4, hrv_base, b.spo2_pct, b.resp_brpm, temp_base, 0.03)
            case Activity.SITTING:
                return _Targets(hr_base + 7, hrv_base * 0.95, b.spo2_pct, b.resp_brpm + 0.5, temp_base, 0.06)
            case Activity.WALKING:
                hr = b.resting_hr_bpm + 0.30 * reserve
                return _Targets(hr, hrv_base * 0.55, b.spo2_pct, b.resp_brpm + 6, temp_base - 0.2, 0.45)
            case Activity.RUNNING:
                hr = b.resting_hr_bpm + 0.72 * reserve
                return _Targets(hr, hrv_base * 0.25, b.spo2_pct - 0.7, b.resp_brpm + 13, temp_base - 0.7, 0.85)
            case Activity.SLEEPING:
                st = self._stage(t_ms) or "light"
                return _Targets(
                    hr_base - 5 + _STAGE_HR[st],
                    hrv_base * _STAGE_HRV[st],
                    b.spo2_pct - 0.4,
                    b.resp_brpm + _STAGE_RESP[st],
                    temp_base + 0.5,
                    _STAGE_MOTION[st],
                )

    def _true(self, t_ms: int) -> _True:
        hr_hold = self.override_at(OverrideKind.HR, t_ms)
        hr = hr_hold if hr_hold is not None else self._hr + self._hr_dev
        hr += self.override_at(OverrideKind.HR_OFFSET, t_ms) or 0.0
        hrv = self.override_at(OverrideKind.HRV, t_ms)
        spo2 = self.override_at(OverrideKind.SPO2, t_ms)
        resp = self.override_at(OverrideKind.RESP, t_ms)
        temp_off = self.override_at(OverrideKind.SKIN_TEMP_OFFSET, t_ms) or 0.0
        return _True(
            hr=_clamp(hr, HR_RANGE),
            hrv=_clamp(hrv if hrv is not None else self._hrv * math.exp(self._hrv_dev), HRV_RANGE),
            spo2=_clamp(spo2 if spo2 is not None else self._spo2, SPO2_RANGE),
            resp=_clamp(resp if resp is not None else self._resp, RESP_RANGE),
            temp=_clamp(self._temp + temp_off, SKIN_TEMP_RANGE),
            temp_offset=temp_off,
        )

    def _step(self, dt_ms: int) -> None:
        rng = self._rng
        dt = dt_ms / 1000
        tg = self._targets(self._t)
        self._hr = _approach(self._hr, tg.hr, dt, 40.0 if tg.hr > self._hr else 90.0)  # recovery is slower
        self._hrv = _approach(self._hrv, tg.hrv, dt, 180.0)
        self._spo2 = _approach(self._spo2, tg.spo2, dt, 120.0)
        self._resp = _approach(self._resp, tg.resp, dt, 60.0)
        self._temp = _approach(self._temp, tg.temp, dt, 1200.0)  # skin temperature lags by tens of minutes
        self._motion = _approach(self._motion, tg.motion, dt, 20.0)
        # Exact Ornstein-Uhlenbeck updates: stationary sd 3 bpm (tau 10 min) and 12 % HRV (tau 15 min).
        a = math.exp(-dt / 600.0)
        self._hr_dev = self._hr_dev * a + 3.0 * math.sqrt(1 - a * a) * rng.gauss(0.0, 1.0)
        a = math.exp(-dt / 900.0)
        self._hrv_dev = self._hrv_dev * a + 0.12 * math.sqrt(1 - a * a) * rng.gauss(0.0, 1.0)
        b = self.baseline
        cadence = {Activity.WALKING: b.walk_cadence_spm, Activity.RUNNING: b.run_cadence_spm}.get(self._activity)
        if cadence is not None:
            steps = cadence * dt / 60 * max(0.0, 1 + rng.gauss(0.0, 0.04))
            self._steps += steps
            self._dist += steps * b.stride_m * (1.45 if self._activity is Activity.RUNNING else 1.0)
        self._kcal += max(0.0, _MET[self._activity] - 1.0) * b.weight_kg * dt / 3600
        if self._sleep is not None:
            tv = self._true(self._t)
            sl = self._sleep
            sl.weight_s += dt
            sl.resp_sum += tv.resp * dt
            sl.hrv_sum += tv.hrv * dt
            sl.spo2_sum += tv.spo2 * dt
            sl.temp_off_sum += tv.temp_offset * dt
            sl.lowest_hr = min(sl.lowest_hr, tv.hr)

    def advance(self, now_ms: int) -> None:
        """Integrate the model forward to ``now_ms`` (no-op if it is not after the model's clock)."""
        while True:
            while self._pending and self._pending[0][0] <= self._t:
                self._change(self._pending.pop(0)[2])
            if self._t >= now_ms:
                return
            nxt = min(now_ms, self._t + _STEP_MS)
            if self._pending:
                nxt = min(nxt, self._pending[0][0])
            self._step(nxt - self._t)
            self._t = nxt

    # ----- observations -----------------------------------------------------------------------------------

    def sample(self, now_ms: int) -> Vitals:
        """Advance to ``now_ms`` and read every vital once, with sensor noise."""
        self.advance(now_ms)
        rng = self._rng
        t = self._t
        tv = self._true(t)
        motion = _clamp(self._motion + rng.gauss(0.0, 0.03), (0.0, 1.0))
        quality = _clamp(0.98 - 0.6 * motion + rng.gauss(0.0, 0.03), (0.0, 1.0))

        def noise(kind: OverrideKind, sd: float, held_sd: float, held_limit: float) -> float:
            # A held value gets small, bounded noise, so a forced 89 % SpO2 never reads 90 and a forced
            # 130 bpm never dips under a 120 bpm threshold; free values get the full sensor noise.
            if self.override_at(kind, t) is None:
                return rng.gauss(0.0, sd)
            return max(-held_limit, min(held_limit, rng.gauss(0.0, held_sd)))

        return Vitals(
            ts_ms=max(now_ms, t),
            activity=self._activity,
            hr_bpm=_clamp(tv.hr + noise(OverrideKind.HR, 0.8 + 4.0 * motion, 1.0, 3.0), HR_RANGE),
            hrv_ms=_clamp(tv.hrv * math.exp(noise(OverrideKind.HRV, 0.08, 0.03, 0.05)), HRV_RANGE),
            spo2_pct=_clamp(tv.spo2 + noise(OverrideKind.SPO2, 0.5 + 1.5 * motion, 0.3, 0.5), SPO2_RANGE),
            skin_temp_c=_clamp(tv.temp + rng.gauss(0.0, 0.08), SKIN_TEMP_RANGE),
            resp_brpm=_clamp(tv.resp + noise(OverrideKind.RESP, 0.5, 0.2, 0.5), RESP_RANGE),
            quality=quality,
            motion=motion,
            sleep_stage=self._stage(t) if self._sleep is not None else None,
        )

    def measure_now(self, kind: MeasureKind, now_ms: int) -> float:
        """A spot measurement at ``now_ms``: bpm, %, ms, or a stress level 0-100."""
        v = self.sample(now_ms)
        match kind:
            case MeasureKind.HR:
                return v.hr_bpm
            case MeasureKind.SPO2:
                return v.spo2_pct
            case MeasureKind.HRV:
                return v.hrv_ms
            case MeasureKind.STRESS:
                b = self.baseline
                hr_term = (v.hr_bpm - b.resting_hr_bpm) / (b.max_hr_bpm - b.resting_hr_bpm)
                hrv_term = math.log(b.hrv_rmssd_ms / v.hrv_ms)
                return _clamp(25.0 + 60.0 * hr_term + 30.0 * hrv_term + self._rng.gauss(0.0, 4.0), (0.0, 100.0))

    def totals(self, now_ms: int) -> ActivityTotals:
        """Advance to ``now_ms`` and return cumulative steps, active calories and distance."""
        self.advance(now_ms)
        return ActivityTotals(math.floor(self._steps), self._kcal, self._dist)

    def sleep_stage(self, now_ms: int) -> SleepStage | None:
        """Advance to ``now_ms`` and return the sleep stage, or ``None`` when awake."""
        self.advance(now_ms)
        return self._stage(self._t)
