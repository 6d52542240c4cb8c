"""The smart-ring emulator: vitals sampled at the ring's native cadence into a local store and synced as a batch
every ~30 minutes, spot measurements on request, gestures, wear, a battery that lasts days, and haptics.

The person's physiology follows the scenario's activity and forced conditions (see devices.models.physiology);
every sample keeps the time it was taken (``src_ts``), however late its batch arrives.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from devices.emulator import Armed, Emulator, seeded
from devices.models import (
    Activity,
    HrSample,
    HrvSample,
    MeasureKind,
    PersonalBaseline,
    Physiology,
    RespRateSample,
    RingBattery,
    RingCadence,
    RingSample,
    RingSampler,
    SkinTempSample,
    SleepSegmentSample,
    Spo2Mode,
    Spo2Sample,
    StepsSample,
    TempDeviationSample,
    measure_latency_ms,
    next_sync_ms,
)
from devices.scenario_plan import Change
from devices.scenario_spec import RingSpec, Step
from devices.sdk import ActionRejected, SettingRejected, on_action
from schemas.actions import Haptic, MeasureNow, RingSync
from schemas.envelope import Envelope
from schemas.events import (
    MAX_BATCH_ITEMS,
    BatchItem,
    HeartRate,
    Hrv,
    RespRate,
    RingGesture,
    RingWear,
    SkinTemp,
    SleepSegment,
    SpO2,
    Steps,
    Stress,
    SyncBatch,
)
from schemas.events import RingBattery as RingBatteryEvent
from schemas.shadow import RING_STREAMS
from schemas.topics import Kind

MAX_BATCH = MAX_BATCH_ITEMS  # SyncBatch.items limit
GESTURE_MS = {"press": 180, "long_press": 1200, "pinch": 120, "double_pinch": 350, "scroll_up": 250, "scroll_down": 250}
MEASURE_LOAD = 3.0  # the optical sensor runs continuously during a spot measurement
#: The stream (a ``streams`` setting value) each synced item belongs to.
STREAM_OF: dict[type[BatchItem], str] = {
    HeartRate: "hr",
    Hrv: "hrv",
    SpO2: "spo2",
    SkinTemp: "skin_temp",
    Steps: "steps",
    SleepSegment: "sleep",
    RespRate: "sleep",
}


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def to_item(sample: RingSample) -> BatchItem | None:
    """A stored sample as a batch item (``None`` for a sample the wire cannot carry, e.g. a step bucket < 60 s)."""
    match sample:
        case HrSample():
            return HeartRate(
                bpm=round(sample.bpm, 1),
                source=sample.source,
                quality=round(sample.quality, 2),
                src_ts=sample.src_ts,
            )
        case HrvSample():
            return Hrv(rmssd_ms=round(sample.rmssd_ms, 1), window_s=sample.window_s, src_ts=sample.src_ts)
        case SkinTempSample():
            return SkinTemp(celsius=round(sample.celsius, 2), src_ts=sample.src_ts)
        case Spo2Sample():
            return SpO2(
                pct=round(sample.pct, 1), source=sample.source, quality=round(sample.quality, 2), src_ts=sample.src_ts
            )
        case StepsSample():
            if not 60 <= sample.bucket_s <= 3600:
                return None
            return Steps(
                steps=min(10_000, sample.steps),
                calories_kcal=round(min(2_000.0, sample.calories_kcal), 1),
                distance_m=round(min(20_000.0, sample.distance_m), 1),
                bucket_start=sample.bucket_start,
                bucket_s=sample.bucket_s,
                src_ts=sample.src_ts,
            )
        case SleepSegmentSample():
            return SleepSegment(
                stage=sample.stage, start_ts=sample.start_ts, end_ts=sample.end_ts, src_ts=sample.src_ts
            )
        case RespRateSample():
            return RespRate(brpm=round(sample.brpm, 1), src_ts=sample.src_ts)
        case TempDeviationSample():
            return SkinTemp(deviation_c=round(_clip(sample.deviation_c, -3.0, 3.0), 2), src_ts=sample.src_ts)


class RingEmulator(Emulator):
    """A health ring with a press/pinch input (Qianwen AI ring-like; Colmi R02 and Ultrahuman behaviour)."""

    kind = Kind.RING
    model_name = "qwen-ring"
    base_tick_s: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec = self.scenario.devices.ring if self.scenario is not None else RingSpec()
        self.spec = spec
        baseline = self.scenario.person.baseline() if self.scenario is not None else PersonalBaseline()
        body_rng = seeded(self.seed, "physiology", self.ident.client_id)  # apart, so reactions never shift vitals
        history = self.scenario.person.history if self.scenario is not None else 0
        self.physiology = Physiology(
            baseline,
            body_rng,
            start_ms=self.t0 - history,
            activity=self.plan.activity_at(0),
            tz_offset_min=self.profile.tz_offset_min,
        )
        if self.scenario is not None:  # forced from the start: over the history too, before any sample is taken
            for step in self.scenario.steps:
                if step.force is not None and step.at == 0:
                    f = step.force
                    self.physiology.set_override(f.kind, f.value, self.t0 + f.for_, from_ms=self.t0 - history)
        self.sampler = RingSampler(self.physiology, cadence=RingCadence(spo2_mode=Spo2Mode(spec.spo2_mode)))
        self.battery = RingBattery(now_ms=self.t0, level_pct=spec.battery_pct)
        self.worn = spec.worn
        self.haptics: list[Haptic] = []
        self.measuring: dict[str, int] = {}
        self._interval_ms = round(spec.sync_interval_min * 60_000)
        self._jitter_ms = round(spec.sync_jitter_min * 60_000)
        # The first sync falls anywhere in the first interval: a ring's phase is whatever it was when it booted.
        self.next_sync = self.t0 + self.rng.randint(60_000, max(60_000, self._interval_ms))
        self.last_sync = self.t0
        self.synced = 0
        #: Settings (shadow): the streams the ring samples and syncs, and its haptic motor's strength.
        self.streams: set[str] = set(RING_STREAMS)
        self.haptic_strength = 1.0

    def battery_pct(self) -> float | None:
        """The ring's charge."""
        return round(self.battery.level_pct(self.clock.now_ms()), 1)

    # ------------------------------------------------------------------ loop

    def start(self, t: int) -> None:
        """Fill the store with the history, report wear and battery."""
        self.advance(t)
        self.emit(RingWear(state="on_finger" if self.worn else "off_finger"))
        self.emit(RingBatteryEvent(level_pct=round(self.battery.level_pct(t), 1), charging=self.battery.charging))

    def advance(self, t: int) -> None:
        """Bring the sampler to ``t``; what was sampled while off the finger is discarded."""
        self.sampler.advance(t)
        if not self.worn:
            self.sampler.drain()

    def tick(self, now: int) -> None:
        """Sample, and sync when due (not while asleep if the ring is told to wait for the morning)."""
        self.advance(now)
        asleep = self.physiology.activity is Activity.SLEEPING
        if now >= self.next_sync and (self.spec.sync_during_sleep or not asleep):
            self.sync(now)

    def sync(self, now: int) -> int:
        """Send what the ring stored as one batch (or several of at most MAX_BATCH_ITEMS items), then the battery.

        Returns:
            How many items were sent.
        """
        self.advance(now)
        items = [
            item
            for item in map(to_item, self.sampler.drain())
            if item is not None and STREAM_OF.get(type(item), "") in self.streams
        ]
        for i in range(0, len(items), MAX_BATCH):
            chunk = items[i : i + MAX_BATCH]
            first = min(self.last_sync, *(it.src_ts or now for it in chunk))
            self.emit(SyncBatch(from_ts=first, to_ts=now, items=chunk), src_ts=first)
        self.emit(RingBatteryEvent(level_pct=round(self.battery.level_pct(now), 1), charging=self.battery.charging))
        self.last_sync = now
        self.next_sync = next_sync_ms(now, self.rng, interval_ms=self._interval_ms, jitter_ms=self._jitter_ms)
        self.synced += len(items)
        return len(items)

    def finish(self, t: int) -> None:
        """A last sync, so the end of the scenario reaches the agent."""
        self.sync(t)

    def on_change(self, change: Change, t: int) -> None:
        """The person's activity drives the physiology (a sample at ``t`` itself already sees the new one)."""
        self.advance(t - 1)
        self.physiology.set_activity(change.activity, t)

    # ------------------------------------------------------------------ the user (scenario steps)

    def plays(self, step: Step) -> bool:
        """The ring also plays the forced vitals (those at the very start were applied from the history on)."""
        return (step.force is not None and step.at > 0) or super().plays(step)

    def perform(self, step: Step, t: int) -> None:
        """Gestures, wear, forced vitals, a spot check from the ring's app, a sync."""
        self.advance(t - 1)  # what came before the step; a sample at ``t`` itself sees the step
        if step.ring is not None:
            self.gesture(step.ring)
        elif step.wear is not None:
            self.set_worn(step.wear == "on", t)
        elif step.force is not None:
            force = step.force
            self.physiology.set_override(force.kind, force.value, t + force.for_, from_ms=t)
        elif step.measure is not None:
            self.measure(MeasureKind(step.measure), t)
        elif step.sync is not None:
            self.sync(t)

    def gesture(self, name: str) -> None:
        """A press, pinch or scroll (the topic is the gesture's name)."""
        self.emit(RingGesture.model_validate({"gesture": name, "duration_ms": GESTURE_MS[name]}))

    def set_worn(self, worn: bool, t: int) -> None:
        """On or off the finger."""
        if worn != self.worn:
            self.advance(t)
            self.worn = worn
            self.emit(RingWear(state="on_finger" if worn else "off_finger"))

    def measure(self, kind: MeasureKind, t: int) -> int:
        """Start a spot measurement; its result is emitted when the sensor locks. Returns the latency in ms."""
        latency = measure_latency_ms(kind, self.rng)
        self.measuring[kind.value] = t + latency
        self.battery.set_load(MEASURE_LOAD, t)
        self.at(t + latency, lambda when: self._result(kind, when))
        return latency

    def _result(self, kind: MeasureKind, t: int) -> None:
        self.measuring.pop(kind.value, None)
        if not self.measuring:
            self.battery.set_load(1.0, t)
        if not self.worn:
            self.log.info("measurement_lost", kind=kind.value, why="off the finger")
            return
        self.sampler.advance(t)
        v = self.physiology.sample(t)
        quality = round(v.quality, 2)
        body: BatchItem
        match kind:
            case MeasureKind.HR:
                body = HeartRate(bpm=round(v.hr_bpm, 1), source="spot", quality=quality)
            case MeasureKind.SPO2:
                body = SpO2(pct=round(v.spo2_pct, 1), source="spot", quality=quality)
            case MeasureKind.HRV:
                body = Hrv(rmssd_ms=round(v.hrv_ms, 1), window_s=60, quality=quality)
            case MeasureKind.STRESS:
                body = Stress(level=round(self.physiology.measure_now(MeasureKind.STRESS, t), 1))
        self.emit(body, src_ts=t)

    def react(self, armed: Armed, subject: int, t: int) -> None:
        """Answer a buzz with a press or pinch."""
        if self.worn:
            self.gesture(armed.spec.do)

    # ------------------------------------------------------------------ settings

    def apply_setting(self, key: str, value: Any) -> None:
        """The sampling cadence, the streams sampled and synced, the haptic strength (quiet hours: the base)."""
        now = self.clock.now_ms()
        match key:
            case "hr_interval_s":
                self.advance(now)  # what was due at the old cadence is taken first
                self.sampler.set_cadence(replace(self.sampler.cadence, hr_interval_s=int(value)))
            case "streams":
                self.advance(now)
                streams = set(value)
                spo2 = Spo2Mode(self.spec.spo2_mode) if "spo2" in streams else Spo2Mode.OFF
                if "spo2" in streams and spo2 is Spo2Mode.OFF:
                    raise SettingRejected("SpO2 is switched off on this ring (spo2_mode off)")
                self.sampler.set_cadence(replace(self.sampler.cadence, hr_enabled="hr" in streams, spo2_mode=spo2))
                self.streams = streams
            case "haptic_strength":
                self.haptic_strength = float(value)

    # ------------------------------------------------------------------ actions

    @on_action(Haptic)
    async def haptic(self, action: Haptic, envelope: Envelope[Haptic]) -> str:
        """Buzz (recorded in :attr:`haptics`)."""
        if not self.worn:
            raise ActionRejected("the ring is not on a finger: nobody would feel it")
        if action.pattern != "alert":
            self.check_quiet(self.clock.now_ms(), "haptics but alerts")
        self.haptics.append(action)
        self.trigger("haptic", [action.pattern], self.clock.now_ms())
        return f"buzzed {action.pattern} at {action.intensity * self.haptic_strength:.0%}"

    @on_action(MeasureNow)
    async def measure_now(self, action: MeasureNow, envelope: Envelope[MeasureNow]) -> str:
        """A spot measurement; the result follows as an event once the sensor locks."""
        if not self.worn:
            raise ActionRejected("the ring is not on a finger: it cannot measure")
        latency = self.measure(MeasureKind(action.kind), self.clock.now_ms())
        return f"measuring {action.kind}: result in ~{latency / 1000:.0f} s"

    @on_action(RingSync)
    async def sync_now(self, action: RingSync, envelope: Envelope[RingSync]) -> str:
        """Sync what the ring stored now."""
        n = self.sync(self.clock.now_ms())
        return f"synced {n} samples"
