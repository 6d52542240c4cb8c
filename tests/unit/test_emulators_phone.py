"""The phone emulator: the app side of tasks (quote, status sequence, webhook chaos, cancel), prompts, location,
calendar and notifications."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.models import Skill, is_valid_sequence
from devices.phone import PhoneEmulator, sim_slots
from devices.scenario import parse
from devices.sdk import ActionRejected
from schemas.actions import Notify, Prompt, TaskCancel, TaskConfirm, TaskStart
from schemas.clock import ManualClock
from schemas.envelope import Envelope, make
from schemas.events import CalendarNext, Location, Notification, PhoneTap, TaskStatus, Utterance
from schemas.geo import Place

T0 = 1_764_018_000_000
MIN = 60_000
HEAD = """\
name: p
duration: '04:00:00'
profile:
  tz_offset_min: 480
  home: {name: home, lat: 30.2745, lon: 120.1390}
  office: {name: office, lat: 30.2790, lon: 120.0265}
  places: [{name: 杭州东站, lat: 30.2905, lon: 120.2125}]
"""


def phone(steps: str = "", chaos: str = "{}", seed: int = 9, extra: str = "") -> tuple[PhoneEmulator, ManualClock]:
    clock = ManualClock(T0)
    s = parse(f"{HEAD}devices: {{phone: {{chaos: {chaos}{extra}}}}}\n{steps_block(steps)}")
    dev = PhoneEmulator("alice", "phone-1", clock=clock, scenario=s, seed=seed, start_ms=T0)
    dev.begin()
    return dev, clock


def steps_block(steps: str) -> str:
    return "steps:\n" + steps if steps and not steps.startswith("calendar") else steps


def statuses(dev: PhoneEmulator, task_id: str) -> list[TaskStatus]:
    return [s for s in dev.emitted(TaskStatus) if isinstance(s, TaskStatus) and s.task_id == task_id]


async def start(dev: PhoneEmulator, skill: str, task_id: str, **slots: object) -> Envelope[TaskStart]:
    action = TaskStart.model_validate({"task_id": task_id, "skill": skill, "slots": slots})
    envelope = make(action)
    await dev.task_start(action, envelope)
    return envelope


async def confirm(dev: PhoneEmulator, task_id: str, yes: bool = True) -> tuple[str, Envelope[TaskConfirm]]:
    action = TaskConfirm(task_id=task_id, confirm=yes, modality="tap")
    envelope = make(action)
    detail = await dev.task_confirm(action, envelope)
    assert detail is not None
    return detail, envelope


def ordered(updates: list[TaskStatus]) -> list[str]:
    """The statuses in the platform's order, each once (what an agent reconstructs)."""
    by_seq = {u.status_seq: u.status for u in updates if u.status != "quoted"}
    return [by_seq[k] for k in sorted(by_seq)]


# --------------------------------------------------------------------------- tasks


async def test_a_start_is_quoted_with_the_agents_task_id_price_and_eta() -> None:
    dev, _ = phone()
    envelope = await start(dev, "hail_ride", "alice-3", destination="杭州东站")
    [quote] = statuses(dev, "alice-3")
    assert (quote.status, quote.skill, quote.status_seq) == ("quoted", "hail_ride", 0)
    assert quote.price is not None
    assert quote.price.amount > 13  # the flag fare
    assert quote.eta_s is not None
    assert 0 < quote.eta_s <= 480
    assert dev.tasks["alice-3"].start_corr == envelope.id


async def test_quotes_carry_the_start_action_as_corr() -> None:
    dev, _ = phone()
    envelope = await start(dev, "order_food", "alice-8", dish="牛肉面", restaurant="湖滨面馆", address="home")
    outbox = list(dev._outbox)
    assert envelope.id.encode() in outbox[-1].payload  # corr travels in the envelope of the quote
    assert outbox[-1].topic.endswith("/evt/system/task_status")


async def test_a_repeated_start_quotes_the_same_again() -> None:
    dev, _ = phone()
    await start(dev, "hail_ride", "alice-3", destination="office")
    again = TaskStart(task_id="alice-3", skill="hail_ride", slots={"destination": "office"})
    assert str(await dev.task_start(again, make(again))).startswith("already quoted")
    first, second = statuses(dev, "alice-3")
    assert first == second


@pytest.mark.parametrize(("skill", "path"), [("hail_ride", Skill.HAIL_RIDE), ("order_food", Skill.ORDER_FOOD)])
async def test_a_confirmed_task_plays_its_real_status_sequence(skill: str, path: Skill) -> None:
    dev, _clock = phone(chaos="{dup_p: 0, late_p: 0, reorder_p: 0}")
    await start(dev, skill, "t-1", destination="杭州东站", dish="牛肉面", restaurant="湖滨面馆")
    detail, envelope = await confirm(dev, "t-1")
    assert detail == f"confirmed {skill} (tap)"
    await dev.run_until(T0 + 3 * 60 * MIN)
    updates = [u for u in statuses(dev, "t-1") if u.status != "quoted"]
    assert [u.status_seq for u in updates] == list(range(1, len(updates) + 1))
    assert is_valid_sequence(path, [u.status for u in updates])
    assert updates[-1].status in ("completed", "delivered")
    if skill == "order_food":
        near = next(u for u in updates if u.status == "near_customer")
        assert near.eta_s is not None
        assert near.eta_s <= 180
        assert near.courier_lat is not None
    else:
        accepted = next(u for u in updates if u.status == "accepted")
        assert accepted.driver is not None
        assert accepted.driver.plate.startswith("浙A")
    assert dev.tasks["t-1"].confirm_corr == envelope.id


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), skill=st.sampled_from(["hail_ride", "order_food"]))
async def test_webhook_chaos_never_loses_a_status_and_spares_the_ones_rules_need(seed: int, skill: str) -> None:
    dev, _ = phone(chaos="{dup_p: 0.3, late_p: 0.3, reorder_p: 0.3}", seed=seed, extra=", task_speed: fast")
    await start(dev, skill, "t-1", destination="office", dish="面")
    await confirm(dev, "t-1")
    await dev.run_until(T0 + 25 * MIN)  # the fast profile: a quarter of the real durations, chaos delays up to 12 min
    updates = [u for u in statuses(dev, "t-1") if u.status != "quoted"]
    path = Skill(skill)
    assert is_valid_sequence(path, ordered(updates))  # reordered by status_seq, deduplicated: the real sequence
    for spared in ("arriving", "near_customer"):
        assert [u.status for u in updates].count(spared) <= 1
    final = "completed" if skill == "hail_ride" else "delivered"
    assert ordered(updates)[-1] == final


async def test_chaos_delivers_some_statuses_twice_with_the_same_event() -> None:
    dev, _ = phone(chaos="{dup_p: 1.0, late_p: 0, reorder_p: 0, spare: []}")
    await start(dev, "hail_ride", "t-1", destination="office")
    await confirm(dev, "t-1")
    await dev.run_until(T0 + 60 * MIN)
    updates = [u for u in statuses(dev, "t-1") if u.status != "quoted"]
    assert len(updates) == 2 * len(ordered(updates))
    assert len({u.detail for u in updates}) == len(ordered(updates))  # a redelivery repeats its event id


async def test_cancel_before_pickup_and_too_late_after() -> None:
    dev, clock = phone(chaos="{dup_p: 0, late_p: 0, reorder_p: 0}")
    await start(dev, "hail_ride", "t-1", destination="office")
    await confirm(dev, "t-1")
    await dev.run_until(T0 + MIN)
    cancel = TaskCancel(task_id="t-1")
    assert await dev.task_cancel(cancel, make(cancel)) == "cancelling (user)"
    await dev.run_until(clock.now_ms() + MIN)
    assert ordered(statuses(dev, "t-1"))[-1] == "rider_canceled"
    await start(dev, "order_food", "t-2", dish="面")
    await confirm(dev, "t-2")
    await dev.run_until(clock.now_ms() + 75 * MIN)
    with pytest.raises(ActionRejected, match="too late to cancel t-2: delivered"):
        await dev.task_cancel(TaskCancel(task_id="t-2"), make(TaskCancel(task_id="t-2")))


async def test_a_declined_quote_plays_nothing_and_unknown_tasks_are_rejected() -> None:
    dev, _ = phone()
    await start(dev, "hail_ride", "t-1", destination="office")
    detail, _ = await confirm(dev, "t-1", yes=False)
    assert detail == "declined"
    await dev.run_until(T0 + 60 * MIN)
    assert [u.status for u in statuses(dev, "t-1")] == ["quoted"]
    with pytest.raises(ActionRejected, match="no task 'nope'"):
        await confirm(dev, "nope")


async def test_the_nth_task_can_be_told_to_fail() -> None:
    dev, _ = phone(
        chaos="{dup_p: 0, late_p: 0, reorder_p: 0}",
        extra=", failures: [{skill: hail_ride, nth: 2, fail: no_drivers_available}]",
    )
    for n in (1, 2):
        await start(dev, "hail_ride", f"t-{n}", destination="office")
        await confirm(dev, f"t-{n}")
    await dev.run_until(T0 + 75 * MIN)
    assert ordered(statuses(dev, "t-1"))[-1] == "completed"
    assert ordered(statuses(dev, "t-2")) == ["processing", "no_drivers_available"]


def test_place_slots_become_coordinates() -> None:
    places = {"杭州东站": Place(name="杭州东站", lat=30.29, lon=120.21)}
    here = (30.27, 120.13)
    slots = sim_slots({"destination": "杭州东站", "pickup_lat": 30.1, "pickup_lon": 120.1}, places, here)
    assert slots["destination"] == (30.29, 120.21)
    assert slots["pickup"] == (30.1, 120.1)
    assert sim_slots({"destination": "somewhere new"}, places, here)["pickup"] == here
    assert sim_slots({"destination": "somewhere new"}, places, here)["destination"] == "somewhere new"


# --------------------------------------------------------------------------- the rest of the phone


async def test_the_user_taps_the_prompt_shown() -> None:
    dev, clock = phone("  - {at: +00:00:00, device: phone, respond: {on: prompt, do: confirm, delay: '00:00:05'}}\n")
    await dev.run_until(T0 + 1_000)
    prompt = Prompt(prompt_id="alice-8", title="Order 牛肉面?")
    assert await dev.prompt(prompt, make(prompt)) == "prompt shown"
    await dev.run_until(clock.now_ms() + 6_000)
    assert dev.emitted(PhoneTap) == [PhoneTap(prompt_id="alice-8", choice="confirm")]


async def test_notifications_speech_and_the_agents_own_notices() -> None:
    dev, _ = phone(
        "  - {at: +00:00:10, device: phone, notify: {app: 微信, title: 妈妈, body: 早饭吃了吗？}}\n"
        "  - {at: +00:00:20, device: phone, say: 帮我打车去公司}\n"
    )
    await dev.run_until(T0 + 30_000)
    assert dev.emitted(Notification) == [Notification(app="微信", title="妈妈", body="早饭吃了吗？")]
    [said] = dev.emitted(Utterance)
    assert (said.text, said.lang) == ("帮我打车去公司", "zh")
    notice = Notify(title="Reminder", body="drink water")
    assert await dev.notify(notice, make(notice)) == "posted"
    assert dev.notices == [notice]
    assert dev.emitted(Notification) == [Notification(app="微信", title="妈妈", body="早饭吃了吗？")]  # not echoed


async def test_location_is_published_each_second_while_navigating_and_on_change_otherwise() -> None:
    dev, _ = phone("  - {at: +00:10:00, go: {to: 杭州东站, mode: walk, navigate: true}}\n")
    await dev.run_until(T0 + 9 * MIN)
    still = dev.emitted(Location)
    assert len(still) == 2  # the first fix and one after the 5-minute maximum interval
    assert still[0].place == "home"
    await dev.run_until(T0 + 12 * MIN)
    moving = dev.emitted(Location)[len(still) :]
    assert 110 <= len(moving) <= 122  # ~1 Hz for the two minutes walked
    assert all(f.speed_mps == pytest.approx(1.4) for f in moving[1:])


async def test_the_next_calendar_event_is_announced_with_its_place() -> None:
    dev, _ = phone("calendar: [{title: 高铁, at: '+01:00:00', place: 杭州东站, location: 杭州东站 2号口}]\n")
    await dev.run_until(T0 + 10_000)
    [event] = dev.emitted(CalendarNext)
    assert event == CalendarNext(
        title="高铁", start_ts=T0 + 60 * MIN, location="杭州东站 2号口", lat=30.2905, lon=120.2125
    )
    await dev.run_until(T0 + 61 * MIN)
    assert len(dev.emitted(CalendarNext)) == 4  # re-announced every 15 min until it starts, then nothing next
    assert dev.state(online=True).battery_pct is not None


async def test_lost_network_holds_events_and_drops_actions() -> None:
    dev, _ = phone("  - {at: +00:01:00, device: phone, offline: '00:02:00'}\n")
    await dev.run_until(T0 + 2 * MIN)
    assert not dev.link_up
    await dev.run_until(T0 + 4 * MIN)
    assert dev.link_up
