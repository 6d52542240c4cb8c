"""The ring emulator: native-cadence samples synced every ~30 min, spot measurements, gestures, wear, haptics."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.models import (
    HrSample,
    MeasureKind,
    RespRateSample,
    RingSample,
    SkinTempSample,
    SleepSegmentSample,
    Spo2Sample,
    StepsSample,
    TempDeviationSample,
)
from devices.models.physiology import MEASURE_LATENCY_MS
from devices.ring import RingEmulator, to_item
from devices.scenario import parse
from devices.sdk import ActionRejected
from schemas.actions import Haptic, MeasureNow, RingSync
from schemas.clock import ManualClock
from schemas.envelope import make
from schemas.events import (
    BatchItem,
    Body,
    HeartRate,
    Hrv,
    RingBattery,
    RingGesture,
    RingWear,
    SkinTemp,
    SleepSegment,
    SpO2,
    Steps,
    Stress,
    SyncBatch,
)

T0 = 1_764_018_000_000  # 05:00 in Hangzhou
MIN = 60_000


def ring(steps: str = "", person: str = "{}", **spec: object) -> tuple[RingEmulator, ManualClock]:
    clock = ManualClock(T0)
    devices = ", ".join(f"{k}: {v}" for k, v in spec.items())
    s = parse(
        f"name: r\nduration: '06:00:00'\nprofile: {{tz_offset_min: 480}}\nperson: {person}\n"
        f"devices: {{ring: {{{devices}}}}}\nsteps:\n{steps}"
    )
    dev = RingEmulator("alice", "ring-1", clock=clock, scenario=s, seed=11, start_ms=T0)
    dev.begin()
    return dev, clock


def items(dev: RingEmulator) -> list[BatchItem]:
    return [it for b in dev.emitted(SyncBatch) for it in b.items]


def at(item: BatchItem) -> int:
    assert item.src_ts is not None  # every batch item carries its sample time
    return item.src_ts


async def call(handler: Any, body: Body) -> str:
    detail = await handler(body, make(body))
    assert isinstance(detail, str)
    return detail


def test_every_stored_sample_becomes_a_valid_batch_item() -> None:
    samples: list[RingSample] = [
        HrSample(T0, 61.23, "sleep", 0.97),
        Spo2Sample(T0, 96.44, "spot", 0.9),
        SkinTempSample(T0, 33.456),
        StepsSample(T0, T0, 900, 120, 8.3, 86.4),
        SleepSegmentSample(T0, "deep", T0, T0 + 20 * MIN),
        RespRateSample(T0, 14.44),
        TempDeviationSample(T0, 3.7),
    ]
    out = [to_item(s) for s in samples]
    assert out[0] == HeartRate(bpm=61.2, source="sleep", quality=0.97, src_ts=T0)
    assert out[1] == SpO2(pct=96.4, source="spot", quality=0.9, src_ts=T0)
    assert out[2] == SkinTemp(celsius=33.46, src_ts=T0)
    assert isinstance(out[3], Steps)
    assert out[4] == SleepSegment(stage="deep", start_ts=T0, end_ts=T0 + 20 * MIN, src_ts=T0)
    assert out[6] == SkinTemp(deviation_c=3.0, src_ts=T0)  # clipped into the wire range
    assert to_item(StepsSample(T0, T0, 30, 5, 0.1, 3.0)) is None  # a bucket the wire cannot carry


async def test_the_ring_syncs_every_thirty_minutes_give_or_take_five() -> None:
    dev, _ = ring()
    await dev.run_until(T0 + 4 * 60 * MIN)
    syncs = [b.to_ts for b in dev.emitted(SyncBatch)]
    gaps = [(b - a) / MIN for a, b in itertools.pairwise(syncs)]
    assert len(syncs) >= 7
    assert all(25 <= g <= 35.5 for g in gaps), gaps  # plus at most one 30 s tick of lateness
    assert len(dev.emitted(RingBattery)) == len(syncs) + 1  # one at start, one per sync


async def test_a_batch_carries_each_sample_once_with_its_own_time() -> None:
    dev, _ = ring()
    await dev.run_until(T0 + 3 * 60 * MIN)
    batches = dev.emitted(SyncBatch)
    seen: set[tuple[str, int]] = set()
    for b in batches:
        for it in b.items:
            assert b.from_ts <= at(it) <= b.to_ts
            key = (it.type, at(it))
            assert key not in seen
            seen.add(key)
    hr = [at(it) for it in items(dev) if isinstance(it, HeartRate)]
    assert hr == list(
        range(T0 + 5 * MIN, batches[-1].to_ts + 1, 5 * MIN)
    )  # every 5 min on the ring's grid, none missing


async def test_a_night_of_history_arrives_with_the_first_sync_and_a_sleep_report_after_waking() -> None:
    dev, _ = ring(
        "  - {at: +00:00:00, force: {skin_temp_offset: 1.0, for: '00:30:00'}}\n"
        "  - {at: +00:30:00, activity: resting}\n",
        person="{activity: sleeping, history: '06:00:00'}",
    )
    await dev.run_until(T0 + 90 * MIN)
    all_items = items(dev)
    first_hr = min(at(it) for it in all_items if isinstance(it, HeartRate))
    assert first_hr <= T0 - 5 * 60 * MIN
    segments = [it for it in all_items if isinstance(it, SleepSegment)]
    assert segments[0].start_ts == T0 - 6 * 60 * MIN
    assert segments[-1].end_ts == T0 + 30 * MIN
    deviation = next(it for it in all_items if isinstance(it, SkinTemp) and it.deviation_c is not None)
    assert deviation.deviation_c == pytest.approx(1.0, abs=0.3)
    assert any(isinstance(it, Hrv) for it in all_items)
    assert any(isinstance(it, HeartRate) and it.source == "sleep" for it in all_items)


async def test_a_forced_heart_rate_at_rest_reads_past_the_alert_threshold() -> None:
    dev, _ = ring("  - {at: +00:10:00, force: {hr: 132, for: '00:20:00'}}\n", person="{activity: sitting}")
    await dev.run_until(T0 + 70 * MIN)
    held = [it.bpm for it in items(dev) if isinstance(it, HeartRate) and T0 + 10 * MIN <= at(it) < T0 + 30 * MIN]
    assert len(held) == 4
    assert min(held) > 120


@pytest.mark.parametrize("kind", list(MeasureKind))
async def test_a_spot_measurement_answers_after_the_sensor_locks(kind: MeasureKind) -> None:
    dev, clock = ring()
    action = MeasureNow(kind=kind.value, timeout_s=40)
    detail = await call(dev.measure_now, action)
    assert detail.startswith(f"measuring {kind.value}: result in ~")
    _lo, hi = MEASURE_LATENCY_MS[kind]
    start = clock.now_ms()
    await dev.run_until(start + hi + 1_000)
    models: dict[str, type[Body]] = {"hr": HeartRate, "spo2": SpO2, "hrv": Hrv, "stress": Stress}
    model = models[kind.value]
    results = dev.emitted(model)
    assert len(results) == 1
    result = results[0]
    if isinstance(result, HeartRate | SpO2):
        assert result.source == "spot"
        assert result.quality >= 0.6
    assert not dev.measuring


async def test_a_forced_low_spo2_is_what_a_spot_check_reads() -> None:
    dev, _clock = ring("  - {at: +00:01:00, force: {spo2: 87, for: '00:15:00'}}\n  - {at: +00:02:00, measure: spo2}\n")
    await dev.run_until(T0 + 5 * MIN)
    readings = dev.emitted(SpO2)
    assert len(readings) == 1
    assert readings[0].pct < 90


async def test_gestures_are_published_under_their_own_name() -> None:
    dev, _ = ring("  - {at: +00:00:05, ring: double_pinch}\n  - {at: +00:00:06, ring: long_press}\n")
    await dev.run_until(T0 + 10_000)
    assert [(g.gesture, g.duration_ms) for g in dev.emitted(RingGesture)] == [
        ("double_pinch", 350),
        ("long_press", 1200),
    ]


async def test_off_the_finger_nothing_is_sampled_and_buzzes_are_refused() -> None:
    dev, _clock = ring("  - {at: +00:20:00, device: ring, wear: off}\n  - {at: +01:20:00, device: ring, wear: on}\n")
    await dev.run_until(T0 + 19 * MIN)
    haptic = Haptic(pattern="heartbeat")
    assert await dev.haptic(haptic, make(haptic)) == "buzzed heartbeat at 60%"
    assert dev.haptics == [haptic]
    await dev.run_until(T0 + 30 * MIN)
    assert dev.emitted(RingWear)[-1] == RingWear(state="off_finger")
    with pytest.raises(ActionRejected, match="not on a finger"):
        await dev.haptic(haptic, make(haptic))
    with pytest.raises(ActionRejected, match="not on a finger"):
        await dev.measure_now(MeasureNow(kind="hr"), make(MeasureNow(kind="hr")))
    await dev.run_until(T0 + 150 * MIN)
    gap = [it for it in items(dev) if isinstance(it, HeartRate) and T0 + 21 * MIN <= at(it) < T0 + 80 * MIN]
    assert gap == []
    assert any(isinstance(it, HeartRate) and at(it) > T0 + 81 * MIN for it in items(dev))


async def test_sync_now_flushes_the_store() -> None:
    dev, _clock = ring()
    await dev.run_until(T0 + 20 * MIN)
    before = len(dev.emitted(SyncBatch))
    detail = await call(dev.sync_now, RingSync())
    assert detail.startswith("synced ")
    assert int(detail.split()[1]) > 0
    assert len(dev.emitted(SyncBatch)) == before + 1
    assert dev.sampler.pending == 0


async def test_syncing_can_wait_for_the_morning() -> None:
    dev, _ = ring(
        "  - {at: +01:30:00, activity: resting}\n",
        person="{activity: sleeping}",
        sync_during_sleep="false",
    )
    await dev.run_until(T0 + 89 * MIN)
    assert dev.emitted(SyncBatch) == []
    await dev.run_until(T0 + 92 * MIN)
    assert len(dev.emitted(SyncBatch)) == 1


activity = st.sampled_from(["resting", "sitting", "walking", "running", "sleeping"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), plan=st.lists(st.tuples(st.integers(1, 60), activity), max_size=5))
async def test_every_emitted_value_stays_in_its_documented_range(seed: int, plan: list[tuple[int, str]]) -> None:
    t = 0
    steps = ""
    for minutes, act in plan:
        t += minutes
        steps += f"  - {{at: {t * 60}, activity: {act}}}\n"
    clock = ManualClock(T0)
    s = parse(f"name: r\nduration: '06:00:00'\nsteps:\n{steps}")
    dev = RingEmulator("alice", "ring-1", clock=clock, scenario=s, seed=seed, start_ms=T0)
    await dev.run_until(T0 + (t + 40) * MIN)
    await dev.sync_now(RingSync(), make(RingSync()))
    for it in items(dev):
        match it:
            case HeartRate():
                assert 30 <= it.bpm <= 220
                assert 0 <= it.quality <= 1
            case Hrv():
                assert 5 <= it.rmssd_ms <= 200
            case SpO2():
                assert 70 <= it.pct <= 100
            case SkinTemp():
                assert it.celsius is None or 25 <= it.celsius <= 38
            case Steps():
                assert 0 <= it.steps <= 10_000
    for b in dev.emitted(RingBattery):
        assert 0 <= b.level_pct <= 100
