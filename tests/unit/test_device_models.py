"""Properties of the pure device models: physiology, ring sampling, batteries, tasks, routes."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from typing import get_args

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from devices.models.battery import EarphonesBattery, GlassesCells, RingBattery, Slot, SwapAction
from devices.models.physiology import (
    HR_RANGE,
    HRV_RANGE,
    RESP_RANGE,
    SKIN_TEMP_RANGE,
    SPO2_RANGE,
    Activity,
    MeasureKind,
    OverrideKind,
    PersonalBaseline,
    Physiology,
    Vitals,
)
from devices.models.ring_sampler import (
    HrSample,
    HrvSample,
    RespRateSample,
    RingCadence,
    RingSample,
    RingSampler,
    SkinTempSample,
    SleepSegmentSample,
    Spo2Sample,
    StepsSample,
    TempDeviationSample,
    next_sync_ms,
)
from devices.models.route import PLACES, LocationGate, Route, TravelMode, bearing_deg, haversine_m
from devices.models.tasks import (
    FAILURES,
    FOOD_HAPPY_PATH,
    RIDE_HAPPY_PATH,
    TERMINAL_STATUSES,
    FoodStatus,
    RideStatus,
    Skill,
    SpeedProfile,
    StatusUpdate,
    TaskSim,
    WebhookChaos,
    is_valid_sequence,
)
from schemas.errors import ConfigError, DeviceError
from schemas.events import SleepStage

T0 = 1_732_700_000_000  # an arbitrary instant; every model takes time as an argument
MIN = 60_000
HOUR = 3_600_000
SLOW = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])

seeds = st.integers(min_value=0, max_value=2**32 - 1)
activities = st.sampled_from(list(Activity))


def in_range(x: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= x <= bounds[1]


def vitals_in_range(v: Vitals) -> bool:
    return (
        in_range(v.hr_bpm, HR_RANGE)
        and in_range(v.hrv_ms, HRV_RANGE)
        and in_range(v.spo2_pct, SPO2_RANGE)
        and in_range(v.skin_temp_c, SKIN_TEMP_RANGE)
        and in_range(v.resp_brpm, RESP_RANGE)
        and 0.0 <= v.quality <= 1.0
        and 0.0 <= v.motion <= 1.0
    )


def person(seed: int, activity: Activity = Activity.RESTING, start_ms: int = T0) -> Physiology:
    rng = random.Random(seed)
    return Physiology(PersonalBaseline.sample(rng), rng, start_ms=start_ms, activity=activity)


_OVERRIDE_VALUES = {
    OverrideKind.HR: st.floats(30, 220),
    OverrideKind.HR_OFFSET: st.floats(-40, 60),
    OverrideKind.HRV: st.floats(5, 200),
    OverrideKind.SPO2: st.floats(70, 100),
    OverrideKind.RESP: st.floats(8, 30),
    OverrideKind.SKIN_TEMP_OFFSET: st.floats(-3, 3),
}
overrides = st.sampled_from(list(OverrideKind)).flatmap(
    lambda k: st.tuples(st.just(k), _OVERRIDE_VALUES[k], st.integers(0, 600), st.integers(1, 600))
)


# ----- physiology -------------------------------------------------------------------------------------------


@SLOW
@given(
    seed=seeds,
    plan=st.lists(st.tuples(activities, st.integers(1, 180)), min_size=1, max_size=6),
    forced=st.lists(overrides, max_size=4),
)
def test_every_vital_stays_in_its_documented_range(
    seed: int, plan: list[tuple[Activity, int]], forced: list[tuple[OverrideKind, float, int, int]]
) -> None:
    phys = person(seed)
    t = T0
    for activity, minutes in plan:
        phys.set_activity(activity, t)
        t += minutes * MIN
    for kind, value, start_min, length_min in forced:
        phys.set_override(kind, value, T0 + (start_min + length_min) * MIN, from_ms=T0 + start_min * MIN)
    sampler = RingSampler(phys, cadence=RingCadence(spo2_mode="continuous"))  # type: ignore[arg-type]
    end = t + 30 * MIN
    for now in range(T0 + 7 * MIN, end, 7 * MIN):
        sampler.advance(now)
        assert vitals_in_range(phys.sample(now))
        assert 0.0 <= sampler.measure_now(MeasureKind.STRESS, now) <= 100.0
    sampler.advance(end)
    for s in sampler.drain():
        match s:
            case HrSample():
                assert in_range(s.bpm, HR_RANGE)
                assert 0.0 <= s.quality <= 1.0
            case HrvSample():
                assert in_range(s.rmssd_ms, HRV_RANGE)
            case Spo2Sample():
                assert in_range(s.pct, SPO2_RANGE)
            case SkinTempSample():
                assert in_range(s.celsius, SKIN_TEMP_RANGE)
            case RespRateSample():
                assert in_range(s.brpm, RESP_RANGE)
            case StepsSample():
                assert s.steps >= 0
                assert s.calories_kcal >= 0.0
                assert s.distance_m >= 0.0
            case _:
                pass
    for session in phys.sleep_sessions:
        assert in_range(session.lowest_hr_bpm, HR_RANGE)
        assert in_range(session.hrv_avg_ms, HRV_RANGE)
        assert in_range(session.spo2_avg_pct, SPO2_RANGE)


@SLOW
@given(seed=seeds)
def test_running_raises_heart_rate_above_resting(seed: int) -> None:
    phys = person(seed)
    phys.set_activity(Activity.RUNNING, T0 + 60 * MIN)
    resting = [phys.sample(T0 + m * MIN).hr_bpm for m in range(20, 60)]
    running = [phys.sample(T0 + m * MIN).hr_bpm for m in range(80, 120)]
    assert statistics.mean(running) > statistics.mean(resting) + 40


@SLOW
@given(seed=seeds)
def test_quality_is_lower_in_motion(seed: int) -> None:
    phys = person(seed)
    phys.set_activity(Activity.RUNNING, T0 + 30 * MIN)
    still = [phys.sample(T0 + m * MIN).quality for m in range(5, 30)]
    moving = [phys.sample(T0 + m * MIN).quality for m in range(35, 60)]
    assert statistics.mean(moving) < statistics.mean(still) - 0.2


@SLOW
@given(seed=seeds, hours=st.integers(6, 9))
def test_a_night_has_contiguous_cycling_sleep_stages(seed: int, hours: int) -> None:
    phys = person(seed, Activity.SLEEPING)
    wake = T0 + hours * HOUR
    phys.set_activity(Activity.RESTING, wake)
    phys.advance(wake + MIN)
    (night,) = phys.sleep_sessions
    segs = night.segments
    assert segs[0].start_ms == T0
    assert segs[-1].end_ms == wake
    assert all(a.end_ms == b.start_ms and a.stage != b.stage for a, b in itertools.pairwise(segs))
    stages = [s.stage for s in segs]
    assert stages[0] == "awake"  # sleep latency
    assert "deep" in stages
    # One REM period per 80-104 min cycle, after up to 20 min of sleep latency.
    assert (hours * 60 - 20) // 104 <= stages.count("rem") <= hours * 60 // 80 + 1
    assert in_range(night.resp_avg_brpm, RESP_RANGE)


def test_sleep_stage_is_reported_only_while_sleeping() -> None:
    phys = person(7)
    assert phys.sample(T0 + MIN).sleep_stage is None
    phys.set_activity(Activity.SLEEPING, T0 + 10 * MIN)
    assert phys.sample(T0 + 2 * HOUR).sleep_stage in get_args(SleepStage)


@SLOW
@given(seed=seeds)
def test_held_high_hr_at_rest_stays_above_the_alert_threshold(seed: int) -> None:
    phys = person(seed)
    phys.set_override(OverrideKind.HR, 130, T0 + 40 * MIN, from_ms=T0 + 10 * MIN)
    held = [phys.sample(T0 + m * MIN) for m in range(10, 40)]
    assert all(v.hr_bpm > 120 and v.activity is Activity.RESTING for v in held)
    after = [phys.sample(T0 + m * MIN).hr_bpm for m in range(45, 60)]
    assert max(after) < 110  # the hold ends at until_ms


@SLOW
@given(seed=seeds, level=st.floats(87, 89))
def test_held_low_spo2_stays_below_90(seed: int, level: float) -> None:
    phys = person(seed, Activity.SLEEPING)
    phys.set_override(OverrideKind.SPO2, level, T0 + HOUR)
    assert all(phys.sample(T0 + m * MIN).spo2_pct < 90 for m in range(1, 60))


def night_with(seed: int, kind: OverrideKind | None, value: float) -> tuple[float, float]:
    phys = person(seed, Activity.SLEEPING)
    wake = T0 + 7 * HOUR
    if kind is not None:
        phys.set_override(kind, value, wake)
    phys.set_activity(Activity.RESTING, wake)
    phys.advance(wake)
    (night,) = phys.sleep_sessions
    return night.lowest_hr_bpm, night.temp_dev_c


@SLOW
@given(seed=seeds)
def test_night_overrides_raise_the_nadir_and_the_temperature_deviation(seed: int) -> None:
    base_hr, base_dev = night_with(seed, None, 0.0)
    hot_hr, hot_dev = night_with(seed, OverrideKind.SKIN_TEMP_OFFSET, 0.9)
    high_hr, _ = night_with(seed, OverrideKind.HR_OFFSET, 8.0)
    assert abs(base_dev) < 0.5
    assert hot_dev > 0.6  # the "temperature above usual" rule's threshold
    assert hot_hr == pytest.approx(base_hr)
    assert high_hr == pytest.approx(base_hr + 8.0)  # same draws, so exactly the offset


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (OverrideKind.HR, 220.0),
        (OverrideKind.HR, 30.0),
        (OverrideKind.HRV, 200.0),
        (OverrideKind.HRV, 5.0),
        (OverrideKind.SPO2, 100.0),
        (OverrideKind.SPO2, 70.0),
        (OverrideKind.RESP, 30.0),
        (OverrideKind.RESP, 8.0),
        (OverrideKind.SKIN_TEMP_OFFSET, 3.0),
        (OverrideKind.HR_OFFSET, 60.0),
        (OverrideKind.HR_OFFSET, -40.0),
    ],
)
def test_overrides_at_the_range_edges_still_read_within_range(kind: OverrideKind, value: float) -> None:
    phys = person(2, Activity.RUNNING)
    phys.set_override(kind, value, T0 + HOUR)
    assert all(vitals_in_range(phys.sample(T0 + m * MIN)) for m in range(60))


@pytest.mark.parametrize(
    ("kind", "value"),
    [(OverrideKind.HR, 221.0), (OverrideKind.SPO2, 69.0), (OverrideKind.SKIN_TEMP_OFFSET, 3.5)],
)
def test_out_of_range_overrides_are_rejected(kind: OverrideKind, value: float) -> None:
    with pytest.raises(ConfigError):
        person(1).set_override(kind, value, T0 + HOUR)


def test_steps_follow_the_activity() -> None:
    phys = person(3)
    phys.set_activity(Activity.WALKING, T0 + 10 * MIN)
    phys.set_activity(Activity.RUNNING, T0 + 20 * MIN)
    rest = phys.totals(T0 + 10 * MIN)
    walked = phys.totals(T0 + 20 * MIN)
    ran = phys.totals(T0 + 30 * MIN)
    assert rest.steps == 0
    assert 900 <= walked.steps - rest.steps <= 1_200  # ~100 steps/min
    assert 1_400 <= ran.steps - walked.steps <= 1_800  # ~160 steps/min
    assert ran.distance_m - walked.distance_m > walked.distance_m - rest.distance_m
    assert ran.calories_kcal > walked.calories_kcal > rest.calories_kcal


def test_same_seed_same_vitals() -> None:
    a, b = person(11), person(11)
    for p in (a, b):
        p.set_activity(Activity.WALKING, T0 + 30 * MIN)
    assert [a.sample(T0 + m * MIN) for m in range(0, 90, 5)] == [b.sample(T0 + m * MIN) for m in range(0, 90, 5)]


# ----- ring sampling and batching ---------------------------------------------------------------------------


def periodic(samples: list[RingSample], kind: type) -> list[int]:
    return [s.src_ts for s in samples if isinstance(s, kind)]


@SLOW
@given(
    seed=seeds,
    offset=st.integers(0, 900_000),
    chunks=st.lists(st.integers(1, 4 * HOUR), min_size=1, max_size=8),
)
def test_samples_follow_the_native_cadence_in_source_time(seed: int, offset: int, chunks: list[int]) -> None:
    start = T0 + offset
    phys = person(seed, start_ms=start)
    phys.set_activity(Activity.WALKING, start + HOUR)
    sampler = RingSampler(phys)
    batches, now = [], start
    for dt in chunks:
        now += dt
        batches.append(sampler.collect(now))
    everything = [s for b in batches for s in b]
    for batch in batches:
        assert [s.src_ts for s in batch] == sorted(s.src_ts for s in batch)
    for kind in (HrSample, SkinTempSample):
        ts = periodic(everything, kind)
        assert all(start < t <= now and t % 300_000 == 0 for t in ts)
        assert all(b - a == 300_000 for a, b in itertools.pairwise(ts))
        assert len(ts) == now // 300_000 - start // 300_000
    boundary = -(-now // 900_000) * 900_000  # close the open step bucket
    everything += sampler.collect(boundary)
    buckets = [s for s in everything if isinstance(s, StepsSample)]
    assert all(b.bucket_start - a.bucket_start == 900_000 for a, b in itertools.pairwise(buckets))
    assert sum(b.steps for b in buckets) == phys.totals(boundary).steps
    # Awake all along: no night-only samples.
    assert not [s for s in everything if isinstance(s, HrvSample | Spo2Sample | SleepSegmentSample)]


def test_night_samples_and_sleep_report_arrive_after_waking() -> None:
    phys = person(5, Activity.SLEEPING)
    wake = T0 + 8 * HOUR
    phys.set_activity(Activity.RESTING, wake)
    sampler = RingSampler(phys)
    night = sampler.collect(wake - MIN)
    assert periodic(night, HrvSample)
    assert periodic(night, Spo2Sample)
    assert all(s.source == "sleep" for s in night if isinstance(s, HrSample))
    assert not [s for s in night if isinstance(s, SleepSegmentSample | RespRateSample)]
    morning = sampler.collect(wake + 30 * MIN)
    segments = [s for s in morning if isinstance(s, SleepSegmentSample)]
    assert segments[0].start_ts == T0
    assert segments[-1].end_ts == wake
    assert all(s.src_ts < wake for s in segments)  # late data: sample time long before the sync
    assert len([s for s in morning if isinstance(s, RespRateSample | TempDeviationSample)]) == 2
    assert not periodic(morning, HrvSample)[-1:] or periodic(morning, HrvSample)[-1] < wake


def test_cadence_outside_the_ring_protocol_is_rejected() -> None:
    with pytest.raises(ConfigError):
        RingCadence(hr_interval_s=30)


@given(seed=seeds, now=st.integers(0, 2**42))
def test_next_sync_is_thirty_minutes_give_or_take_five(seed: int, now: int) -> None:
    at = next_sync_ms(now, random.Random(seed))
    assert now + 25 * MIN <= at <= now + 35 * MIN


@SLOW
@given(seed=seeds)
def test_batches_carry_every_sample_once_and_late(seed: int) -> None:
    rng = random.Random(seed)
    phys = person(seed)
    sampler = RingSampler(phys)
    syncs, batches, now = [T0], [], T0
    while now < T0 + 6 * HOUR:
        now = next_sync_ms(now, rng)
        syncs.append(now)
        batches.append(sampler.collect(now))
    gaps = [b - a for a, b in itertools.pairwise(syncs)]
    assert all(25 * MIN <= g <= 35 * MIN for g in gaps)
    for (prev, sync), batch in zip(itertools.pairwise(syncs), batches, strict=True):
        assert batch
        assert all(prev < s.src_ts <= sync for s in batch if isinstance(s, HrSample))
    hr = [t for b in batches for t in periodic(b, HrSample)]
    assert len(hr) == len(set(hr))


# ----- batteries --------------------------------------------------------------------------------------------

loads = st.floats(0.0, 5.0)
steps_of = st.lists(st.tuples(st.integers(0, 6 * HOUR), loads), min_size=1, max_size=30)


@given(steps=steps_of, spo2=st.booleans())
def test_ring_battery_drains_monotonically(steps: list[tuple[int, float]], spo2: bool) -> None:
    battery = RingBattery(now_ms=T0)
    battery.set_continuous_spo2(spo2, T0)
    now, last = T0, 100.0
    for dt, load in steps:
        now += dt
        level = battery.level_pct(now)
        assert 0.0 <= level <= last
        battery.set_load(load, now)
        last = level


def test_ring_battery_lasts_about_six_days_and_less_with_continuous_spo2() -> None:
    plain, spo2 = RingBattery(now_ms=T0), RingBattery(now_ms=T0)
    spo2.set_continuous_spo2(True, T0)
    assert plain.level_pct(T0 + 72 * HOUR) == pytest.approx(50.0)
    assert plain.level_pct(T0 + 143 * HOUR) > 0.0
    assert spo2.level_pct(T0 + 3 * 24 * HOUR) > 0.0
    assert spo2.level_pct(T0 + 5 * 24 * HOUR) == 0.0
    assert plain.level_pct(T0 + 144 * HOUR) == pytest.approx(0.0, abs=1e-9)
    plain.set_charging(True, T0 + 144 * HOUR)
    assert plain.charging
    assert plain.level_pct(T0 + 145 * HOUR) == pytest.approx(100.0 / 1.5)  # full in 1.5 h


@given(steps=steps_of, left=st.floats(0, 100), right=st.floats(0, 100))
def test_glasses_cells_drain_one_at_a_time_and_never_rise(
    steps: list[tuple[int, float]], left: float, right: float
) -> None:
    cells = GlassesCells(now_ms=T0, left_pct=left, right_pct=right)
    now = T0
    before = (cells.level(Slot.LEFT, now), cells.level(Slot.RIGHT, now))
    for dt, load in steps:
        cells.set_load(load, now)
        now += dt
        after = (cells.level(Slot.LEFT, now), cells.level(Slot.RIGHT, now))
        assert all(0.0 <= a <= b for a, b in zip(after, before, strict=True))
        # Only the emptier cell moves, unless it ran out during the step.
        fuller = 0 if before[0] > before[1] else 1
        if after[1 - fuller] > 0.0:
            assert after[fuller] == before[fuller]
        before = after


def test_glasses_cell_lasts_three_and_a_half_hours_and_swap_restores_it() -> None:
    cells = GlassesCells(now_ms=T0)
    assert cells.level(Slot.LEFT, T0 + int(3.5 * HOUR)) == pytest.approx(0.0, abs=1e-9)
    assert cells.level(Slot.RIGHT, T0 + int(3.5 * HOUR)) == 100.0
    assert cells.combined_pct(T0 + int(3.5 * HOUR)) == pytest.approx(50.0)
    removed, inserted = cells.swap(Slot.LEFT, T0 + 4 * HOUR)
    assert removed.action is SwapAction.REMOVED
    assert inserted.action is SwapAction.INSERTED
    assert removed.remaining_pct_other == pytest.approx(100.0 - 0.5 / 3.5 * 100)
    assert cells.level(Slot.LEFT, T0 + 4 * HOUR) == 100.0
    assert cells.present(Slot.LEFT)


def test_glasses_stay_powered_while_one_cell_is_out() -> None:
    cells = GlassesCells(now_ms=T0, left_pct=10.0, right_pct=90.0)
    swap = cells.remove(Slot.LEFT, T0 + MIN)
    assert swap.remaining_pct_other == 90.0
    assert not cells.present(Slot.LEFT)
    assert cells.level(Slot.LEFT, T0 + 2 * MIN) == 0.0
    assert cells.powered(T0 + 2 * MIN)
    assert cells.level(Slot.RIGHT, T0 + 2 * MIN) < 90.0  # the remaining cell carries the load
    with pytest.raises(DeviceError):
        cells.remove(Slot.LEFT, T0 + 3 * MIN)
    cells.insert(Slot.LEFT, T0 + 3 * MIN)
    with pytest.raises(DeviceError):
        cells.insert(Slot.LEFT, T0 + 4 * MIN)


def test_earphones_drain_out_of_the_case_and_charge_in_it() -> None:
    buds = EarphonesBattery(now_ms=T0)
    out = buds.levels(T0 + 3 * HOUR)
    assert out.left_pct == pytest.approx(50.0)
    assert out.right_pct == pytest.approx(50.0)
    assert out.case_pct == 100.0
    buds.set_in_case(Slot.LEFT, True, T0 + 3 * HOUR)
    later = buds.levels(T0 + 4 * HOUR)
    assert later.left_pct == 100.0
    assert later.right_pct < out.right_pct
    assert later.case_pct == pytest.approx(100.0 - 50.0 / 8)  # 4 recharges of both buds
    assert not later.charging  # the left bud is full and the case is off the cable


# ----- tasks ------------------------------------------------------------------------------------------------

task_kinds = st.sampled_from(
    [(Skill.HAIL_RIDE, None), (Skill.ORDER_FOOD, None)]
    + [(Skill.HAIL_RIDE, f) for f in sorted(FAILURES[Skill.HAIL_RIDE])]
    + [(Skill.ORDER_FOOD, f) for f in sorted(FAILURES[Skill.ORDER_FOOD])]
)
profiles = st.sampled_from(list(SpeedProfile))


def run_to_end(sim: TaskSim, start_ms: int, polls: list[int]) -> list[StatusUpdate]:
    out, now = [], start_ms
    for dt in polls:
        now += dt
        out += sim.due(now)
    return out + sim.due(2**62)


@given(kind=task_kinds, seed=seeds, profile=profiles, polls=st.lists(st.integers(1, 10 * MIN), max_size=20))
def test_task_statuses_walk_the_real_sequence_and_failures_terminate(
    kind: tuple[Skill, str | None], seed: int, profile: SpeedProfile, polls: list[int]
) -> None:
    skill, fail = kind
    sim = TaskSim.start(skill, {"destination": "station"}, T0, random.Random(seed), fail=fail, speed_profile=profile)
    assert sim.quote.price.amount > 0
    assert sim.quote.price.currency == "CNY"
    assert sim.quote.eta_s > 0
    assert sim.due(T0 + 100 * HOUR) == []  # nothing happens before confirmation
    sim.confirm(T0 + MIN)
    updates = run_to_end(sim, T0 + MIN, polls)
    statuses = [u.status for u in updates]
    assert is_valid_sequence(skill, statuses)
    assert [u.seq for u in updates] == list(range(1, len(updates) + 1))
    assert len({u.event_id for u in updates}) == len(updates)
    assert [u.occurred_ms for u in updates] == sorted(u.occurred_ms for u in updates)
    assert statuses[-1] in TERMINAL_STATUSES
    assert not [s for s in statuses[:-1] if s in TERMINAL_STATUSES]
    assert sim.done
    if fail is None:
        assert tuple(statuses) == (RIDE_HAPPY_PATH if skill is Skill.HAIL_RIDE else FOOD_HAPPY_PATH)
    elif fail == RideStatus.DRIVER_CANCELED:
        assert RideStatus.DRIVER_CANCELED in statuses  # then re-dispatched
        assert statuses[-1] is RideStatus.COMPLETED
    else:
        assert statuses[-1] == fail


@given(seed=seeds, profile=profiles)
def test_ride_arriving_and_courier_near_are_reachable_by_the_proactive_rules(seed: int, profile: SpeedProfile) -> None:
    rng = random.Random(seed)
    ride = TaskSim.start(Skill.HAIL_RIDE, {}, T0, rng, speed_profile=profile)
    food = TaskSim.start(Skill.ORDER_FOOD, {}, T0, rng, speed_profile=profile)
    for sim in (ride, food):
        sim.confirm(T0)
    rides = {u.status: u for u in ride.due(2**62)}
    foods = {u.status: u for u in food.due(2**62)}
    arriving, started = rides[RideStatus.ARRIVING], rides[RideStatus.IN_PROGRESS]
    assert arriving.eta_s is not None
    assert arriving.eta_s <= 60  # "arriving" = arrived or within 0.2 mi: the "your car is here" card
    assert arriving.driver == rides[RideStatus.ACCEPTED].driver
    assert arriving.driver is not None
    assert started.occurred_ms > arriving.occurred_ms
    near, done = foods[FoodStatus.NEAR_CUSTOMER], foods[FoodStatus.DELIVERED]
    assert near.eta_s is not None
    assert near.eta_s <= 180  # "courier ETA <= 3 min" can fire
    assert near.eta_s == math.ceil((done.occurred_ms - near.occurred_ms) / 1000)
    assert near.courier_lat is not None
    assert near.courier_lon is not None


@given(kind=st.sampled_from(list(Skill)), seed=seeds, cancel_after=st.integers(0, 90 * MIN))
def test_cancel_ends_the_task_or_is_refused_when_too_late(kind: Skill, seed: int, cancel_after: int) -> None:
    sim = TaskSim.start(kind, {}, T0, random.Random(seed))
    sim.confirm(T0)
    accepted = sim.cancel(T0 + cancel_after)
    updates = sim.due(2**62)
    statuses = [u.status for u in updates]
    assert is_valid_sequence(kind, statuses)
    assert statuses[-1] in TERMINAL_STATUSES
    if accepted:
        assert statuses[-1] in {RideStatus.RIDER_CANCELED, FoodStatus.CANCELLED}
        assert updates[-1].occurred_ms == T0 + cancel_after
        assert all(u.occurred_ms <= T0 + cancel_after for u in updates)
    else:
        assert statuses[-1] in {RideStatus.COMPLETED, FoodStatus.DELIVERED}
    assert not sim.cancel(T0 + 100 * HOUR)


def test_task_misuse_is_reported() -> None:
    with pytest.raises(ConfigError):
        TaskSim.start(Skill.ORDER_FOOD, {}, T0, random.Random(1), fail="no_drivers_available")
    with pytest.raises(ConfigError):
        TaskSim.start("fly_me_to_the_moon", {}, T0, random.Random(1))
    sim = TaskSim.start(Skill.HAIL_RIDE, {}, T0, random.Random(1))
    sim.confirm(T0)
    with pytest.raises(DeviceError):
        sim.confirm(T0)
    dropped = TaskSim.start(Skill.HAIL_RIDE, {}, T0, random.Random(1))
    assert dropped.cancel(T0)
    assert dropped.done
    assert dropped.due(2**62) == []


def test_same_seed_same_task() -> None:
    def play(seed: int) -> list[StatusUpdate]:
        sim = TaskSim.start(Skill.ORDER_FOOD, {"dish": "拿铁", "qty": 2}, T0, random.Random(seed))
        sim.confirm(T0)
        return sim.due(2**62)

    assert play(4) == play(4)
    assert play(4) != play(5)


def chaotic_delivery(
    seed: int, skill: Skill, *, dup_p: float, late_p: float, reorder_p: float
) -> tuple[list[StatusUpdate], list[StatusUpdate]]:
    """Play one task through WebhookChaos; return what the platform produced and what was delivered."""
    rng = random.Random(seed)
    sim = TaskSim.start(skill, {}, T0, rng)
    sim.confirm(T0)
    chaos = WebhookChaos(rng, dup_p=dup_p, late_p=late_p, reorder_p=reorder_p)
    produced, delivered, now = [], [], T0
    while not sim.done or chaos.pending:
        now += 20_000
        fresh = sim.due(now)
        produced += fresh
        chaos.feed(fresh)
        delivered += chaos.due(now)
    return produced, delivered


@given(
    seed=seeds,
    skill=st.sampled_from(list(Skill)),
    dup_p=st.floats(0, 1),
    late_p=st.floats(0, 1),
    reorder_p=st.floats(0, 1),
)
def test_chaos_changes_delivery_never_content(
    seed: int, skill: Skill, dup_p: float, late_p: float, reorder_p: float
) -> None:
    produced, delivered = chaotic_delivery(seed, skill, dup_p=dup_p, late_p=late_p, reorder_p=reorder_p)
    by_id = {u.event_id: u for u in produced}
    assert {u.event_id for u in delivered} == set(by_id)
    assert all(by_id[u.event_id] == u for u in delivered)  # a redelivery is the very same update
    assert all(delivered.count(u) <= 2 for u in produced)
    # Deduplicated on event_id and ordered by seq, the receiver recovers the real sequence.
    recovered = sorted({u.event_id: u for u in delivered}.values(), key=lambda u: u.seq)
    assert is_valid_sequence(skill, [u.status for u in recovered])
    assert recovered == produced


def test_chaos_duplicates_keep_the_event_id() -> None:
    produced, delivered = chaotic_delivery(1, Skill.HAIL_RIDE, dup_p=1.0, late_p=0.0, reorder_p=0.0)
    assert len(delivered) == 2 * len(produced)
    assert all(delivered.count(u) == 2 for u in produced)


def out_of_order(delivered: list[StatusUpdate]) -> bool:
    return any(b.seq < a.seq for a, b in itertools.pairwise(delivered))


def test_chaos_reorders_for_some_seed_and_is_deterministic() -> None:
    # Reordering alone (no lateness, no duplicates) must put a later status first for some seed.
    runs = {seed: chaotic_delivery(seed, Skill.ORDER_FOOD, dup_p=0.0, late_p=0.0, reorder_p=0.3) for seed in range(20)}
    assert any(out_of_order(delivered) for _, delivered in runs.values())
    assert runs[3] == chaotic_delivery(3, Skill.ORDER_FOOD, dup_p=0.0, late_p=0.0, reorder_p=0.3)
    mixed = chaotic_delivery(3, Skill.HAIL_RIDE, dup_p=0.3, late_p=0.3, reorder_p=0.3)
    assert mixed == chaotic_delivery(3, Skill.HAIL_RIDE, dup_p=0.3, late_p=0.3, reorder_p=0.3)


def test_quiet_chaos_delivers_in_order_on_time() -> None:
    produced, delivered = chaotic_delivery(3, Skill.ORDER_FOOD, dup_p=0.0, late_p=0.0, reorder_p=0.0)
    assert delivered == produced
    assert not out_of_order(delivered)


# ----- routes -----------------------------------------------------------------------------------------------

hangzhou = st.tuples(st.floats(30.15, 30.40), st.floats(120.00, 120.30))


@given(a=hangzhou, b=hangzhou, mode=st.sampled_from(list(TravelMode)), frac=st.floats(0, 1))
def test_positions_stay_on_the_segment_and_match_speed(
    a: tuple[float, float], b: tuple[float, float], mode: TravelMode, frac: float
) -> None:
    route = Route([a, b], mode, start_ms=T0)
    assume(route.distance_m > 1.0)
    now = T0 + int(frac * route.duration_ms)
    p = route.position(now)
    along = haversine_m(*a, p.lat, p.lon)
    rest = haversine_m(p.lat, p.lon, *b)
    assert along + rest == pytest.approx(route.distance_m, abs=0.5)  # on the segment
    expected = min(route.distance_m, route.speed_mps * (now - T0) / 1000)
    assert along == pytest.approx(expected, rel=1e-3, abs=0.5)  # distance and speed agree
    if now < route.end_ms:
        assert p.speed_mps == route.speed_mps
        assert p.bearing_deg == pytest.approx(bearing_deg(*a, *b))
    assert 0.0 <= p.bearing_deg < 360.0


def test_route_through_named_places_stops_at_the_ends() -> None:
    home, office = PLACES["home"], PLACES["office"]
    route = Route([home, PLACES["gym"], office], TravelMode.BIKE, start_ms=T0)
    before, after = route.position(T0 - MIN), route.position(route.end_ms + MIN)
    assert (before.lat, before.lon, before.speed_mps) == (home.lat, home.lon, 0.0)
    assert (after.lat, after.lon, after.speed_mps) == (office.lat, office.lon, 0.0)
    assert route.distance_m > haversine_m(home.lat, home.lon, office.lat, office.lon)
    assert route.eta_s(T0) == math.ceil(route.distance_m / 4.0)
    assert route.arrived(route.end_ms)


def test_haversine_matches_a_known_distance() -> None:
    assert haversine_m(30.0, 120.0, 31.0, 120.0) == pytest.approx(111_195, abs=50)
    assert bearing_deg(30.0, 120.0, 31.0, 120.0) == pytest.approx(0.0)
    assert bearing_deg(30.0, 120.0, 30.0, 121.0) == pytest.approx(90.0, abs=0.5)


def test_location_gate_publishes_on_significant_change_or_at_1hz_when_navigating() -> None:
    gate = LocationGate()
    lat, lon = PLACES["home"].lat, PLACES["home"].lon
    assert gate.should_publish(lat, lon, T0, navigating=False)
    assert not gate.should_publish(lat + 0.0002, lon, T0 + MIN, navigating=False)  # ~22 m
    assert gate.should_publish(lat + 0.0005, lon, T0 + 2 * MIN, navigating=False)  # ~55 m
    assert not gate.should_publish(lat + 0.0005, lon, T0 + 6 * MIN, navigating=False)
    assert gate.should_publish(lat + 0.0005, lon, T0 + 7 * MIN, navigating=False)  # 5 min heartbeat
    assert not gate.should_publish(lat, lon, T0 + 7 * MIN + 500, navigating=True)
    assert gate.should_publish(lat, lon, T0 + 7 * MIN + 1_000, navigating=True)
