"""A smart ring's view of a :class:`~devices.models.physiology.Physiology`: native-cadence samples, batched for sync."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from devices.models.physiology import Activity, MeasureKind, Physiology
from schemas.errors import ConfigError
from schemas.events import HrSource, SleepStage, Spo2Source


class Spo2Mode(StrEnum):
    """When the ring samples SpO2 on its own: never, while asleep, or always (costs battery)."""

    OFF = "off"
    NIGHT = "night"
    CONTINUOUS = "continuous"


@dataclass(frozen=True, slots=True)
class HrSample:
    """A stored heart-rate reading."""

    src_ts: int
    bpm: float
    source: HrSource
    quality: float


@dataclass(frozen=True, slots=True)
class HrvSample:
    """A stored HRV reading (RMSSD over ``window_s``), taken while asleep."""

    src_ts: int
    rmssd_ms: float
    window_s: int


@dataclass(frozen=True, slots=True)
class SkinTempSample:
    """A stored absolute skin temperature."""

    src_ts: int
    celsius: float


@dataclass(frozen=True, slots=True)
class Spo2Sample:
    """A stored SpO2 reading."""

    src_ts: int
    pct: float
    source: Spo2Source
    quality: float


@dataclass(frozen=True, slots=True)
class StepsSample:
    """Movement in one bucket ``[bucket_start, bucket_start + bucket_s)``; ``src_ts`` is the bucket start."""

    src_ts: int
    bucket_start: int
    bucket_s: int
    steps: int
    calories_kcal: float
    distance_m: float


@dataclass(frozen=True, slots=True)
class SleepSegmentSample:
    """One hypnogram segment, reported after waking; ``src_ts`` is the segment start."""

    src_ts: int
    stage: SleepStage
    start_ts: int
    end_ts: int


@dataclass(frozen=True, slots=True)
class RespRateSample:
    """The average breathing rate over one sleep period; ``src_ts`` is the wake time."""

    src_ts: int
    brpm: float


@dataclass(frozen=True, slots=True)
class TempDeviationSample:
    """The night's skin temperature deviation from the personal norm; ``src_ts`` is the wake time."""

    src_ts: int
    deviation_c: float


RingSample: TypeAlias = (
    HrSample
    | HrvSample
    | SkinTempSample
    | Spo2Sample
    | StepsSample
    | SleepSegmentSample
    | RespRateSample
    | TempDeviationSample
)


@dataclass(frozen=True, slots=True)
class RingCadence:
    """How often the ring samples on its own (``ring.set_interval``); intervals in seconds, 60..15300.

    Attributes:
        hr_interval_s: periodic heart rate (Colmi: 288 slots a day).
        hr_enabled: whether periodic heart rate is on.
        hrv_interval_s: HRV while asleep.
        skin_temp_interval_s: absolute skin temperature.
        spo2_interval_s: SpO2 when ``spo2_mode`` allows.
        spo2_mode: off, night or continuous.
        steps_bucket_s: step bucket length (15 min).
    """

    hr_interval_s: int = 300
    hr_enabled: bool = True
    hrv_interval_s: int = 300
    skin_temp_interval_s: int = 300
    spo2_interval_s: int = 300
    spo2_mode: Spo2Mode = Spo2Mode.NIGHT
    steps_bucket_s: int = 900

    def __post_init__(self) -> None:
        for name in (
            "hr_interval_s",
            "hrv_interval_s",
            "skin_temp_interval_s",
            "spo2_interval_s",
            "steps_bucket_s",
        ):
            value = getattr(self, name)
            if not 60 <= value <= 255 * 60:  # the ring protocol's interval field is 1-255 minutes
                raise ConfigError(f"{name} must be within 60..15300 s, got {value}")


def next_sync_ms(now_ms: int, rng: random.Random, *, interval_ms: int = 1_800_000, jitter_ms: int = 300_000) -> int:
    """When the ring next syncs its batch: ``interval_ms`` after ``now_ms``, ± uniform ``jitter_ms``."""
    return now_ms + interval_ms + rng.randint(-jitter_ms, jitter_ms)


def _next_grid(after_ms: int, interval_ms: int) -> int:
    return (after_ms // interval_ms + 1) * interval_ms


class RingSampler:
    """Samples a :class:`Physiology` at the ring's native cadence and buffers the results for a sync.

    Sample times sit on a grid aligned to the epoch (every 5 min by default), the way a ring fills its
    fixed daily slots. :meth:`advance` takes every sample due up to a time, in time order; sleep segments,
    the nightly breathing rate and the temperature deviation are added when the person wakes (with their
    own, earlier, ``src_ts``). :meth:`drain` hands over the buffer sorted by ``src_ts``.

    Args:
        physiology: the person; the sampler drives its clock forward.
        cadence: the sampling plan.
    """

    def __init__(self, physiology: Physiology, *, cadence: RingCadence | None = None) -> None:
        self.physiology = physiology
        self._cadence = cadence or RingCadence()
        self._t = physiology.now_ms
        self._buffer: list[RingSample] = []
        self._sessions_seen = len(physiology.sleep_sessions)
        bucket_ms = self._cadence.steps_bucket_s * 1000
        self._bucket_start = (self._t // bucket_ms) * bucket_ms
        self._bucket_totals = physiology.totals(self._t)

    @property
    def cadence(self) -> RingCadence:
        """The current sampling plan."""
        return self._cadence

    def set_cadence(self, cadence: RingCadence) -> None:
        """Change the sampling plan from the sampler's clock on (the open step bucket keeps its start)."""
        self._cadence = cadence

    @property
    def pending(self) -> int:
        """How many samples wait in the buffer."""
        return len(self._buffer)

    def _due(self) -> list[tuple[str, int]]:
        c = self._cadence
        grids: list[tuple[str, int]] = [
            ("temp", c.skin_temp_interval_s),
            ("hrv", c.hrv_interval_s),
            ("steps", c.steps_bucket_s),
        ]
        if c.hr_enabled:
            grids.append(("hr", c.hr_interval_s))
        if c.spo2_mode is not Spo2Mode.OFF:
            grids.append(("spo2", c.spo2_interval_s))
        return [(kind, _next_grid(self._t, s * 1000)) for kind, s in grids]

    def advance(self, now_ms: int) -> None:
        """Take every sample due in ``(last advance, now_ms]`` into the buffer."""
        phys = self.physiology
        while True:
            due = self._due()
            t = min(at for _, at in due)
            if t > now_ms:
                break
            kinds = {kind for kind, at in due if at == t}
            self._take(t, kinds)
            self._t = t
            self._collect_sleep()
        phys.advance(now_ms)
        self._t = max(self._t, now_ms)
        self._collect_sleep()

    def _take(self, t: int, kinds: set[str]) -> None:
        phys = self.physiology
        if "steps" in kinds:
            totals = phys.totals(t)
            prev = self._bucket_totals
            self._buffer.append(
                StepsSample(
                    src_ts=self._bucket_start,
                    bucket_start=self._bucket_start,
                    bucket_s=(t - self._bucket_start) // 1000,
                    steps=totals.steps - prev.steps,
                    calories_kcal=totals.calories_kcal - prev.calories_kcal,
                    distance_m=totals.distance_m - prev.distance_m,
                )
            )
            self._bucket_start, self._bucket_totals = t, totals
        if not kinds - {"steps"}:
            return
        v = phys.sample(t)
        asleep = v.sleep_stage is not None
        if "hr" in kinds:
            source: HrSource = "sleep" if asleep else "workout" if v.activity is Activity.RUNNING else "periodic"
            self._buffer.append(HrSample(t, v.hr_bpm, source, v.quality))
        if "temp" in kinds:
            self._buffer.append(SkinTempSample(t, v.skin_temp_c))
        if "hrv" in kinds and asleep:
            self._buffer.append(HrvSample(t, v.hrv_ms, self._cadence.hrv_interval_s))
        if "spo2" in kinds and (asleep or self._cadence.spo2_mode is Spo2Mode.CONTINUOUS):
            spo2_source: Spo2Source = "night" if asleep else "spot"  # daytime sampling in continuous mode: "spot"
            self._buffer.append(Spo2Sample(t, v.spo2_pct, spo2_source, v.quality))

    def _collect_sleep(self) -> None:
        sessions = self.physiology.sleep_sessions
        for s in sessions[self._sessions_seen :]:
            self._buffer.extend(SleepSegmentSample(g.start_ms, g.stage, g.start_ms, g.end_ms) for g in s.segments)
            self._buffer.append(RespRateSample(s.end_ms, s.resp_avg_brpm))
            self._buffer.append(TempDeviationSample(s.end_ms, s.temp_dev_c))
        self._sessions_seen = len(sessions)

    def drain(self) -> list[RingSample]:
        """Hand over and clear the buffer, ordered by ``src_ts`` (stable for equal times)."""
        out = sorted(self._buffer, key=lambda s: s.src_ts)
        self._buffer.clear()
        return out

    def collect(self, now_ms: int) -> list[RingSample]:
        """:meth:`advance` to ``now_ms``, then :meth:`drain`."""
        self.advance(now_ms)
        return self.drain()

    def measure_now(self, kind: MeasureKind, now_ms: int) -> float:
        """A spot measurement; takes the samples due before ``now_ms`` first so none is read out of order."""
        self.advance(now_ms)
        return self.physiology.measure_now(kind, now_ms)
