"""Core proactive rules: judged in sample time (late ring batches count), stale data dropped, rate limited."""

from __future__ import annotations

from typing import Any

import pytest

from agent.core.config import CoreConfig, UserProfile
from agent.core.engine import AgentCore
from agent.core.testing import STATION, Rig, of, profile, to
from schemas.actions import Haptic, MeasureNow, ShowCard, Speak, TaskConfirm, TaskStart
from schemas.events import (
    BatchItem,
    BatterySwap,
    CalendarNext,
    Cell,
    GlassesBattery,
    HeartRate,
    Location,
    Money,
    RingGesture,
    SkinTemp,
    SpO2,
    Steps,
    SyncBatch,
    TaskStatus,
)
from schemas.topics import Kind

MIN = 60_000
HOUR = 60 * MIN
HR_HIGH_EN = "Your heart rate has stayed above 120 for 10 minutes while resting. Feeling OK? Take a slow breath."
SPO2_EN = "Blood oxygen read low twice. Re-measure when still; if it stays low, consider medical advice."


def rig(prof: UserProfile | None = None) -> Rig:
    r = Rig(AgentCore(CoreConfig(default_profile=prof or profile())))
    r.ready()
    return r


def hr_items(start: int, bpms: list[float], *, source: str = "periodic", steps: int = 0) -> list[BatchItem]:
    """Heart-rate samples every 5 min from ``start``, with the 15-min step buckets around them."""
    items: list[BatchItem] = [HeartRate(bpm=b, source=source, src_ts=start + i * 5 * MIN) for i, b in enumerate(bpms)]
    end = start + len(bpms) * 5 * MIN
    bucket = start - start % (15 * MIN) - 15 * MIN
    while bucket < end:
        items.append(Steps(steps=steps, bucket_start=bucket, src_ts=bucket))
        bucket += 15 * MIN
    return items


def batch(r: Rig, items: list[BatchItem]) -> Any:
    ts = [i.src_ts or 0 for i in items]
    return r.send(Kind.RING, SyncBatch(from_ts=min(ts), to_ts=max(ts), items=items))


# --- sustained heart rate ---------------------------------------------------------------------------------


def test_high_heart_rate_at_rest_in_a_late_batch_fires_once() -> None:
    r = rig()
    start = r.now
    r.at(40 * 60)  # the ring syncs 40 min later
    out = batch(r, hr_items(start, [125, 128, 126]))
    assert out.alerts == [("hr_high", "alice", HR_HIGH_EN)]
    [card] = of(to(out, Kind.GLASSES), ShowCard)
    assert (card.title, card.icon, card.buttons[0].label) == ("Heart rate", "heart", "Dismiss")
    assert of(to(out, Kind.RING), Haptic) == [Haptic(pattern="heartbeat")]
    assert all(c.reason == "rule:hr_high" and c.corr == f"m{r.n}" for c in out.commands)
    assert of(out, Speak) == []  # discreet: no loud speech for a health nudge
    later = batch(r, hr_items(start + 15 * MIN, [127, 129, 130]))
    assert later.alerts == []  # still high: not repeated


def test_the_same_nudge_in_chinese() -> None:
    r = rig(profile("zh"))
    out = batch(r, hr_items(r.now - 20 * MIN, [125, 128, 126]))
    assert out.alerts[0][2] == "你静息时心率持续10分钟高于120。感觉还好吗？慢慢深呼吸。"


@pytest.mark.parametrize(
    ("bpms", "kw", "why"),
    [
        ([125, 128], {}, "only five minutes"),
        ([125, 110, 126], {}, "not sustained"),
        ([125, 128, 126], {"steps": 1500}, "walking"),
        ([125, 128, 126], {"source": "workout"}, "a workout"),
    ],
)
def test_high_heart_rate_that_is_not_sustained_or_not_at_rest_is_quiet(
    bpms: list[float], kw: dict[str, Any], why: str
) -> None:
    r = rig()
    out = batch(r, hr_items(r.now - 30 * MIN, bpms, **kw))
    assert out.alerts == [], why


def test_stale_samples_raise_nothing() -> None:
    r = rig()
    start = r.now
    r.at(3 * 3600)  # synced three hours later: older than the acute TTL
    out = batch(r, hr_items(start, [125, 128, 126]))
    assert out.alerts == []
    assert out.commands == []


def test_samples_in_reverse_order_are_judged_in_sample_time() -> None:
    r = rig()
    start = r.now - 20 * MIN
    buckets = [start - 15 * MIN + k * 15 * MIN for k in range(3)]
    batch(r, [Steps(steps=0, bucket_start=b, src_ts=b) for b in buckets])
    alerts = []
    for i in (2, 1, 0):
        out = r.send(Kind.RING, HeartRate(bpm=130, src_ts=start + i * 5 * MIN))
        alerts += out.alerts
    assert [a[0] for a in alerts] == ["hr_high"]


def test_rate_limited_per_metric_for_six_hours() -> None:
    r = rig()
    assert batch(r, hr_items(r.now - 20 * MIN, [125, 128, 126])).alerts
    r.at(3 * 3600)
    assert batch(r, hr_items(r.now - 20 * MIN, [125, 128, 126])).alerts == []
    r.at(3 * 3600 + 60)
    assert [a[0] for a in batch(r, hr_items(r.now - 20 * MIN, [125, 128, 126])).alerts] == ["hr_high"]


def test_high_and_low_heart_rate_are_rate_limited_apart() -> None:
    r = rig()
    assert [a[0] for a in batch(r, hr_items(r.now - 20 * MIN, [125, 128, 126])).alerts] == ["hr_high"]
    r.at(3600)  # an hour later, well inside the six hours: a low heart rate is a different nudge
    assert [a[0] for a in batch(r, hr_items(r.now - 20 * MIN, [42, 41, 43])).alerts] == ["hr_low"]


def test_low_heart_rate_awake_fires_but_not_asleep() -> None:
    r = rig()
    out = batch(r, hr_items(r.now - 20 * MIN, [42, 41, 43]))
    assert out.alerts == [("hr_low", "alice", "Your heart rate has stayed below 45 for 10 minutes. Feeling OK?")]
    r2 = rig()
    assert batch(r2, hr_items(r2.now - 20 * MIN, [42, 41, 43], source="sleep")).alerts == []


def test_muted_rule_stays_quiet() -> None:
    r = rig(profile(muted_rules=frozenset({"hr_high"})))
    assert batch(r, hr_items(r.now - 20 * MIN, [125, 128, 126])).alerts == []


# --- SpO2 ---------------------------------------------------------------------------------------------------


def test_two_valid_low_spo2_readings_in_a_row() -> None:
    r = rig()
    first = r.send(Kind.RING, SpO2(pct=88, quality=0.9, src_ts=r.now - MIN))
    assert first.alerts == []
    assert of(to(first, Kind.RING), MeasureNow) == [MeasureNow(kind="spo2", timeout_s=40)]  # re-measure now
    r.at(40)
    out = r.send(Kind.RING, SpO2(pct=87, quality=0.8))
    assert out.alerts == [("spo2_low", "alice", SPO2_EN)]


@pytest.mark.parametrize(
    ("readings", "why"),
    [
        ([(88, 0.9), (96, 0.9), (87, 0.9)], "not in a row"),
        ([(85, 0.4), (84, 0.3)], "poor signal"),
        ([(88, 0.9)], "once"),
    ],
)
def test_spo2_that_is_not_two_valid_lows_in_a_row_is_quiet(readings: list[tuple[float, float]], why: str) -> None:
    r = rig()
    start = r.now - 30 * MIN
    items: list[BatchItem] = [
        SpO2(pct=p, quality=q, source="night", src_ts=start + i * 5 * MIN) for i, (p, q) in enumerate(readings)
    ]
    assert batch(r, items).alerts == [], why


def test_spo2_in_motion_is_not_valid() -> None:
    r = rig()
    start = r.now - 30 * MIN
    items: list[BatchItem] = [Steps(steps=1800, bucket_start=start - 10 * MIN, src_ts=start - 10 * MIN)]
    items += [SpO2(pct=86, src_ts=start + i * MIN) for i in range(2)]
    assert batch(r, items).alerts == []


def test_late_spo2_batch_within_ttl_fires_and_beyond_ttl_does_not() -> None:
    r = rig()
    start = r.now
    r.at(90 * 60)
    items: list[BatchItem] = [SpO2(pct=86, source="night", src_ts=start + i * 5 * MIN) for i in range(2)]
    assert [a[0] for a in batch(r, items).alerts] == ["spo2_low"]
    r2 = rig()
    start = r2.now
    r2.at(150 * 60)
    assert batch(r2, [SpO2(pct=86, source="night", src_ts=start + i * 5 * MIN) for i in range(2)]).alerts == []


# --- night rules ----------------------------------------------------------------------------------------


def night(r: Rig, lowest: float, *, temp: float | None = None) -> Any:
    """A night of sleep samples (23:00-06:30) synced at 07:30 with one morning sample, as one batch."""
    day0 = r.now - r.now % (24 * HOUR)
    bed = day0 + 23 * HOUR
    items: list[BatchItem] = []
    for i in range(15):
        t = bed + i * 30 * MIN
        items.append(HeartRate(bpm=lowest + (3 if i % 3 else 0), source="sleep", src_ts=t))
        if temp is not None:
            items.append(SkinTemp(celsius=temp, src_ts=t))
    items.append(HeartRate(bpm=70, source="periodic", src_ts=day0 + 31 * HOUR + 10 * MIN))
    r.now = day0 + 31 * HOUR + 30 * MIN
    return batch(r, items)


def test_elevated_night_resting_heart_rate_gives_a_morning_card() -> None:
    r = rig(profile(baselines={"rhr_bpm": 55.0}))
    out = night(r, 61)
    assert out.alerts == [("night_rhr", "alice", "Your resting heart rate was up last night. Consider an easier day.")]
    assert r.core.snapshot("alice").health["rhr_baseline"] == pytest.approx(55 + 6 / 7, abs=0.05)  # the night folded in


@pytest.mark.parametrize(("prof", "lowest"), [(profile(baselines={"rhr_bpm": 55.0}), 58), (profile(), 75)])
def test_normal_night_or_unlearned_baseline_is_quiet(prof: UserProfile, lowest: float) -> None:
    assert night(rig(prof), lowest).alerts == []


def test_a_night_closes_on_tick_when_no_morning_sample_comes() -> None:
    r = rig(profile(baselines={"rhr_bpm": 55.0}))
    day0 = r.now - r.now % (24 * HOUR)
    bed = day0 + 23 * HOUR
    items: list[BatchItem] = [HeartRate(bpm=64, source="sleep", src_ts=bed + i * 20 * MIN) for i in range(8)]
    r.now = max(r.now, bed + 8 * 20 * MIN)  # the ring syncs after its samples (src_ts is never in the future)
    batch(r, items)
    r.now = day0 + 32 * HOUR + 59 * MIN
    assert r.tick().alerts == []  # still inside the grace for a late sync
    assert [a[0] for a in r.tick(2 * 60).alerts] == ["night_rhr"]


def test_warm_night_from_absolute_skin_temperature() -> None:
    r = rig(profile(baselines={"skin_temp_c": 33.0}))
    out = night(r, 60, temp=33.9)
    assert [a[0] for a in out.alerts] == ["skin_temp"]
    assert out.alerts[0][2] == "Your temperature is above your usual. Rest and hydrate."


@pytest.mark.parametrize(("deviation", "fires"), [(0.8, True), (0.6, False), (-0.5, False)])
def test_nightly_skin_temperature_deviation(deviation: float, fires: bool) -> None:
    r = rig()
    out = r.send(Kind.RING, SkinTemp(deviation_c=deviation, src_ts=r.now - 2 * HOUR))
    assert bool(out.alerts) is fires


# --- glasses battery --------------------------------------------------------------------------------------


def battery(left: float, right: float, right_present: bool = True) -> GlassesBattery:
    cells = [Cell(slot="left", level_pct=left), Cell(slot="right", level_pct=right, present=right_present)]
    return GlassesBattery(level_pct=(left + right) / 2, cells=cells)


def test_low_glasses_cell_asks_for_a_swap_once_and_again_after_a_swap() -> None:
    r = rig()
    out = r.send(Kind.GLASSES, battery(12, 80))
    assert out.alerts == [("glasses_battery", "alice", "Swap the left battery: 12% left.")]
    assert of(out, ShowCard)[0].icon == "battery"
    assert r.send(Kind.GLASSES, battery(11, 79)).alerts == []
    r.send(Kind.GLASSES, BatterySwap(slot="left", action="inserted", remaining_pct_other=78))
    r.at(600)
    assert [a[0] for a in r.send(Kind.GLASSES, battery(14, 77)).alerts] == ["glasses_battery"]


def test_no_swap_advice_without_a_second_cell() -> None:
    assert rig().send(Kind.GLASSES, battery(12, 0, right_present=False)).alerts == []


# --- leave now ----------------------------------------------------------------------------------------


def test_leave_now_offers_a_ride_booked_with_one_tap() -> None:
    r = rig()
    start = r.now + 30 * MIN
    event = CalendarNext(title="Design review", start_ts=start, location=STATION.name, lat=STATION.lat, lon=STATION.lon)
    assert r.send(Kind.PHONE, event).alerts == []  # ~17 min away + 5 min buffer: not yet
    assert r.tick(7 * 60).alerts == []
    out = r.tick(60)
    [(rule, _, text)] = out.alerts
    assert rule == "leave_now"
    assert text.startswith("Leave now for Design review: about 1")
    [start_cmd] = of(out, TaskStart)
    assert start_cmd.slots["destination"] == STATION.name
    assert start_cmd.slots["pickup"] == "home"
    quote = TaskStatus(task_id=start_cmd.task_id, skill="hail_ride", status="quoted", price=Money(amount=38), eta_s=180)
    out = r.send(Kind.PHONE, quote)
    [card] = of(out, ShowCard)
    assert card.title == "Taxi to Hangzhou East Station"
    assert card.buttons[0].label == "Book"
    out = r.send(Kind.RING, RingGesture(gesture="pinch"))
    assert of(out, TaskConfirm)[0].confirm is True
    assert out.tasks[-1].rounds == 1
    assert r.tick(60).alerts == []  # once per event


def test_no_leave_now_when_already_there() -> None:
    r = rig()
    r.send(Kind.PHONE, Location(lat=STATION.lat, lon=STATION.lon))
    r.send(Kind.PHONE, CalendarNext(title="Train", start_ts=r.now + 10 * MIN, lat=STATION.lat, lon=STATION.lon))
    assert r.tick(60).alerts == []


# --- consent (issue 22): no proactive-health consent, no health rule and no vital kept


def _sustained_high_hr(consent: bool | None, *, profile_consent: bool = True) -> tuple[int, Any]:
    from agent.core.config import CoreConfig, UserProfile  # noqa: PLC0415
    from agent.core.engine import AgentCore  # noqa: PLC0415
    from schemas import codec  # noqa: PLC0415
    from schemas.actions import ConsentRequest  # noqa: PLC0415
    from schemas.envelope import make  # noqa: PLC0415
    from schemas.events import HeartRate  # noqa: PLC0415
    from schemas.topics import consent_set_topic  # noqa: PLC0415

    profile = UserProfile(consent=frozenset({"proactive-health"}) if profile_consent else frozenset())
    core = AgentCore(CoreConfig(profiles={"u1": profile}))
    t0 = 1_764_018_000_000
    if consent is not None:
        req = make(ConsentRequest(purpose="proactive-health", granted=consent), ts=t0)
        core.handle(codec.decode(consent_set_topic("u1"), codec.encode(req)), t0)
    alerts = 0
    for i in range(0, 40 * 60, 60):  # 40 min at 131 bpm, sitting still
        env = make(HeartRate(bpm=131, source="periodic"), ts=t0 + i * 1000)
        out = core.handle(codec.decode("wb/v1/u1/ring/r1/evt/sensor/hr", codec.encode(env)), t0 + i * 1000)
        alerts += sum(1 for rule, _, _ in out.alerts if rule == "hr_high")
    return alerts, core


def test_without_consent_sustained_high_hr_raises_no_alert_and_keeps_no_sample() -> None:
    alerts, core = _sustained_high_hr(False)
    assert alerts == 0
    ctx = core.context("u1")
    assert ctx is not None
    assert ctx.health.hr is None
    assert len(ctx.health.hr_window) == 0
    assert core.snapshot("u1").health["hr"] is None
    assert core.consent("u1").purposes == {"proactive-health": False}


def test_with_consent_sustained_high_hr_raises_exactly_one_alert() -> None:
    alerts, core = _sustained_high_hr(True, profile_consent=False)
    assert alerts == 1
    assert core.consent("u1").purposes == {"proactive-health": True}


def test_a_new_user_without_a_profile_consent_gets_no_health_rules() -> None:
    assert _sustained_high_hr(None, profile_consent=False)[0] == 0
    assert _sustained_high_hr(None, profile_consent=True)[0] == 1
