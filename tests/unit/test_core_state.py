"""Core state: export/restore carries on identically, memory stays bounded, display text always fits."""

from __future__ import annotations

import json
import pickle
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.config import CoreConfig, UserProfile
from agent.core.context import Output, UserContext
from agent.core.engine import AgentCore
from agent.core.routing import action_id, build, card
from agent.core.testing import HOME, OFFICE, STATION, Rig, config, of, profile
from schemas.actions import ShowCard, TaskStart
from schemas.display import LINE_UNITS, LINES_PER_SCREEN, text_units, wrap
from schemas.errors import AgentError
from schemas.events import (
    Activity,
    CalendarNext,
    Cell,
    GlassesBattery,
    HeadPose,
    HeartRate,
    Location,
    Money,
    Person,
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
Step = Callable[[Rig], Any]


def _hr_batch(r: Rig) -> Any:
    start = r.now - 20 * MIN
    items: list[Any] = [HeartRate(bpm=125 + i, src_ts=start + i * 5 * MIN) for i in range(3)]
    items += [Steps(steps=0, bucket_start=start - 15 * MIN + k * 15 * MIN, src_ts=start) for k in range(3)]
    return r.send(Kind.RING, SyncBatch(from_ts=start - 15 * MIN, to_ts=r.now, items=items))


def _ack_last(r: Rig) -> Any:
    return r.ack(r.sent[-1]) if r.sent else None


def _status(name: str, seq: int, **kw: Any) -> Step:
    def step(r: Rig) -> Any:
        return r.send(Kind.PHONE, TaskStatus(task_id="alice-1", skill="order_food", status=name, status_seq=seq, **kw))

    return step


SCRIPT: list[Step] = [
    lambda r: r.ready(),
    lambda r: r.say("Order my usual."),
    lambda r: r.send(
        Kind.PHONE,
        TaskStatus(task_id="alice-1", skill="order_food", status="quoted", price=Money(amount=32), eta_s=1500),
    ),
    lambda r: r.tick(3),
    lambda r: r.send(Kind.RING, RingGesture(gesture="pinch")),
    _ack_last,
    _status("placed", 1, eta_s=1500),
    lambda r: r.tick(30),
    _hr_batch,
    lambda r: r.say("Remind me to drink water every hour."),
    lambda r: r.tick(5),
    lambda r: r.send(Kind.EARPHONES, Activity(activity="walking")),
    _status("near_customer", 6, eta_s=120),
    lambda r: r.say("Get me a taxi"),
    lambda r: r.say("to the airport"),
    lambda r: r.send(Kind.PHONE, TaskStatus(task_id="alice-3", skill="hail_ride", status="quoted", eta_s=240)),
    lambda r: r.tick(61),
    _status("delivered", 7),
    lambda r: r.send(
        Kind.GLASSES,
        GlassesBattery(level_pct=40, cells=[Cell(slot="left", level_pct=9), Cell(slot="right", level_pct=70)]),
    ),
    lambda r: r.send(Kind.PHONE, Location(lat=OFFICE.lat, lon=OFFICE.lon, speed_mps=0.0)),
    lambda r: r.send(
        Kind.PHONE, CalendarNext(title="Review", start_ts=r.now + 40 * MIN, lat=STATION.lat, lon=STATION.lon)
    ),
    lambda r: r.tick(20 * 60),
    lambda r: r.send(Kind.EARPHONES, Activity(activity="stationary")),
    lambda r: r.send(Kind.RING, SpO2(pct=87)),
    lambda r: r.tick(60),
    lambda r: r.send(Kind.RING, SpO2(pct=86)),
    lambda r: r.tick(3600),
    lambda r: r.send(Kind.RING, SkinTemp(deviation_c=0.9, src_ts=r.now - HOUR)),
    lambda r: r.say("undo"),
    lambda r: r.tick(5),
]


def run(r: Rig, steps: list[Step]) -> list[Any]:
    """Run steps; keep what each produced (commands, tasks, alerts)."""
    results = []
    for step in steps:
        out = step(r)
        results.append(None if out is None else (out.commands, out.tasks, out.alerts, out.context_changed))
    return results


@settings(max_examples=30, deadline=None)
@given(split=st.integers(min_value=0, max_value=len(SCRIPT)))
def test_a_restored_core_carries_on_exactly_like_the_original(split: int) -> None:
    cfg = config()
    original = Rig(AgentCore(cfg))
    expected = run(original, SCRIPT)

    restarted = Rig(AgentCore(cfg))
    run(restarted, SCRIPT[:split])
    state = json.loads(json.dumps(restarted.core.export_state()))  # through JSON, as a store would keep it
    restarted.core = AgentCore(cfg)
    restarted.core.restore(state)
    assert run(restarted, SCRIPT[split:]) == expected[split:]
    assert restarted.core.export_state() == original.core.export_state()
    assert restarted.core.snapshot("alice") == original.core.snapshot("alice")


def test_the_script_exercises_what_must_survive_a_restart() -> None:
    r = Rig(AgentCore(config()))
    results = run(r, SCRIPT)
    alerts = {a[0] for res in results if res for a in res[2]}
    assert {"hr_high", "courier_near", "glasses_battery", "leave_now", "spo2_low", "skin_temp"} <= alerts
    states = {t.state for res in results if res for t in res[1]}
    assert {"committed", "asking", "awaiting_confirmation", "expired", "delivered"} <= states


def test_restore_refuses_another_version() -> None:
    with pytest.raises(AgentError):
        AgentCore().restore({"version": 99, "users": {}})


def test_a_version_1_state_goes_on_past_the_shared_action_counter() -> None:
    """Version 1 counted every user's action ids together: after it, each user's own count starts past it."""
    r = Rig(AgentCore(config()))
    r.ready()
    [before] = r.say("blah blah").commands
    state = json.loads(json.dumps(r.core.export_state()))
    for data in state["users"].values():
        data["talk"].pop("action_counter")
    r.core = AgentCore(config())
    r.core.restore({**state, "version": 1, "ids": 57})
    [after] = r.say("blah blah").commands
    assert before.id.endswith(":1")
    assert after.id.endswith(":58")


def test_action_ids_are_each_users_own_and_fit_an_envelope() -> None:
    core = AgentCore(config())
    alice, bob = Rig(core, user="alice"), Rig(core, user="bob")
    alice.ready()
    bob.ready()
    [a] = alice.say("blah blah").commands
    [b] = bob.say("blah blah").commands
    assert (a.id.rsplit(":", 1)[1], b.id.rsplit(":", 1)[1]) == ("1", "1")  # one counter per user
    assert action_id("x" * 128, 7) != action_id("x" * 127 + "y", 7)
    assert len(action_id("x" * 128, 10**9)) <= 128


# --- memory


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of an object graph (each object once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset | deque):
        size += sum(deep_size(x, seen) for x in obj)
    elif not isinstance(obj, str | bytes | int | float | bool) and obj is not None:
        names = [n for c in type(obj).__mro__ for n in getattr(c, "__slots__", ())]
        size += sum(deep_size(getattr(obj, n), seen) for n in names if hasattr(obj, n))
        if hasattr(obj, "__dict__"):
            size += deep_size(vars(obj), seen)
    return size


def busy_day(r: Rig, events: int) -> None:
    """A mix of everything a user's devices send, one message every 20 s of simulated time."""
    places = [(HOME.lat, HOME.lon), (OFFICE.lat, OFFICE.lon), (30.25, 120.17), (STATION.lat, STATION.lon)]
    task: TaskStart | None = None
    for n in range(events):
        r.at(20)
        k = n % 50
        if k == 0:
            start = r.now - 30 * MIN
            items: list[Any] = [HeartRate(bpm=60 + i % 7, src_ts=start + i * 5 * MIN) for i in range(6)]
            items += [SpO2(pct=97, src_ts=start + 2 * MIN), SkinTemp(celsius=32.5, src_ts=start)]
            items += [Steps(steps=n % 400, bucket_start=start + j * 15 * MIN, src_ts=start) for j in range(2)]
            r.send(Kind.RING, SyncBatch(from_ts=start, to_ts=r.now, items=items))
        elif k == 10:
            lat, lon = places[(n // 50) % len(places)]
            r.send(Kind.PHONE, Location(lat=lat, lon=lon, speed_mps=float(n % 3)))
        elif k == 20:
            said = r.say("Order my usual." if n % 100 else "Get me a taxi to Hangzhou East Station.")
            task = next(iter(of(said, TaskStart)), None)
        elif k == 21 and task is not None:
            r.send(Kind.PHONE, TaskStatus(task_id=task.task_id, skill=task.skill, status="quoted", eta_s=600))
        elif k == 22:
            r.send(Kind.RING, RingGesture(gesture="press"))
        elif k == 23 and r.sent:
            r.ack(r.sent[-1])
        elif k == 30 and task is not None:
            name = "delivered" if task.skill == "order_food" else "completed"
            driver = Person(name="Li", plate="A1", vehicle="car")
            r.send(
                Kind.PHONE,
                TaskStatus(task_id=task.task_id, skill=task.skill, status=name, status_seq=9, driver=driver),
            )
        elif k == 40:
            r.send(Kind.PHONE, CalendarNext(title=f"Meeting {n}", start_ts=r.now + HOUR, lat=30.3, lon=120.1))
        elif k == 45:
            r.say(f"Remind me to stretch {n % 7} in 5 minutes")
        elif k % 5 == 0:
            r.tick()
        else:
            r.send(Kind.RING, HeartRate(bpm=70 + k % 9, source="realtime"))


def test_a_context_stays_small_and_bounded_after_ten_thousand_events() -> None:
    r = Rig(AgentCore(config()))
    r.ready()
    busy_day(r, 1_000)
    ctx = r.core.context("alice")
    assert isinstance(ctx, UserContext)
    after_1k = deep_size(ctx)
    busy_day(r, 9_000)
    after_10k = deep_size(ctx)
    assert after_10k < 16 * 1024, after_10k  # in memory, every object counted
    assert after_10k < after_1k * 1.25, (after_1k, after_10k)  # bounded: no growth per event
    assert len(pickle.dumps(ctx)) < 8 * 1024
    assert len(json.dumps(r.core.export_state())) < 12 * 1024


# --- display limits

texty = st.text(
    alphabet=st.sampled_from("abc XYZ 0123456789 ,.!?\n中文字符测试，。长长长 ¥…-"), min_size=0, max_size=600
)


@settings(max_examples=150, deadline=None)
@given(title=texty, body=texty, label=texty, short=st.booleans())
def test_outputs_always_fit_the_devices(title: str, body: str, label: str, short: bool) -> None:
    out = Output(title=title, body=body, buttons=[(label or "x", "confirm:t-1"), ("No", "deny:t-1")])
    shown = card(out, short=short)
    assert text_units(shown.title) <= LINE_UNITS
    assert "\n" not in shown.title
    assert len(wrap(shown.body)) <= (1 if short else LINES_PER_SCREEN - 2)
    for channel in ("speak_ear", "notify", "prompt"):
        build(channel, out)


@settings(max_examples=40, deadline=None)
@given(what=st.text(alphabet=st.sampled_from("abcdefgh ijk 中文提醒喝水事情"), min_size=1, max_size=300))
def test_user_text_on_a_card_never_breaks_the_display(what: str) -> None:
    r = Rig(AgentCore(config()))
    r.ready()
    out = r.say(f"Remind me to {what} in 5 minutes")
    cards = of(out, ShowCard)
    assert all(isinstance(c, ShowCard) for c in cards)


# --- fusion and snapshot


def test_home_and_office_are_learned_from_where_the_user_sleeps_and_works() -> None:
    core = AgentCore(CoreConfig(default_profile=UserProfile()))
    r = Rig(core)
    r.ready(at_home=False)
    day0 = r.now - r.now % (24 * HOUR)  # a Monday
    for day in range(3):
        r.now = day0 + day * 24 * HOUR + 8 * HOUR + 30 * MIN
        r.send(Kind.PHONE, Location(lat=OFFICE.lat, lon=OFFICE.lon))
        r.now = day0 + day * 24 * HOUR + 19 * HOUR
        r.send(Kind.PHONE, Location(lat=HOME.lat, lon=HOME.lon))
    r.now = day0 + 3 * 24 * HOUR + 8 * HOUR + 30 * MIN
    r.send(Kind.PHONE, Location(lat=OFFICE.lat + 0.0002, lon=OFFICE.lon))
    assert r.core.snapshot("alice").place == "office"
    [start] = of(r.say("Order a latte."), TaskStart)
    assert start.slots["address"] == "office"
    r.now += 11 * HOUR
    r.send(Kind.PHONE, Location(lat=HOME.lat, lon=HOME.lon + 0.0003))
    assert r.core.snapshot("alice").place == "home"


def test_snapshot_shows_devices_health_place_and_tasks() -> None:
    r = Rig(AgentCore(config()))
    r.ready()
    r.send(Kind.RING, HeartRate(bpm=66))
    r.send(Kind.RING, SpO2(pct=98))
    r.say("Order my usual.")
    snap = r.core.snapshot("alice")
    assert snap.place == "home"
    assert snap.devices["g1"].worn is True
    assert snap.devices["p1"].online is True
    assert (snap.health["hr"], snap.health["spo2"]) == (66, 98)
    assert snap.tasks[0]["state"] == "quoting"
    assert AgentCore().snapshot("nobody").user == "nobody"


def test_profile_language_sets_the_language_of_proactive_messages() -> None:
    r = Rig(AgentCore(CoreConfig(default_profile=profile("zh"))))
    r.ready()
    out = r.send(
        Kind.GLASSES,
        GlassesBattery(level_pct=40, cells=[Cell(slot="right", level_pct=9), Cell(slot="left", level_pct=70)]),
    )
    assert out.alerts[0][2] == "请更换右侧电池，剩余9%。"


POOL: list[Step] = [
    *SCRIPT[1:],
    lambda r: r.say("x" * 1999),
    lambda r: r.say("Remind me to " + "喝水" * 400 + " in 5 minutes", "zh"),
    lambda r: r.state(Kind.EARPHONES, online=False),
    lambda r: r.state(Kind.GLASSES, online=True),
    lambda r: r.send(Kind.RING, RingGesture(gesture="long_press")),
    lambda r: r.tick(5),
    lambda r: r.tick(3600),
]


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.integers(min_value=0, max_value=len(POOL) - 1), max_size=30))
def test_any_order_of_events_is_handled(steps: list[int]) -> None:
    r = Rig(AgentCore(config()))
    r.ready()
    for i in steps:
        POOL[i](r)
    state = json.loads(json.dumps(r.core.export_state()))
    AgentCore(config()).restore(state)
    r.core.snapshot("alice")


def test_a_sample_the_context_keeps_only_the_time_of_changes_nothing_else_and_is_still_saved() -> None:
    """A head pose has no handler: from a device already online it only refreshes ``last_seen`` (and the user is
    still saved in the next snapshot); from a device not seen online yet it also brings it online."""
    r = Rig()
    first = r.send(Kind.GLASSES, HeadPose(roll_deg=1.0, pitch_deg=2.0, heading_deg=90.0))
    assert first.context_changed == {"alice"}  # the glasses came online with it
    assert r.core.take_changed() == ["alice"]
    r.now += 5_000
    again = r.send(Kind.GLASSES, HeadPose(roll_deg=1.0, pitch_deg=2.0, heading_deg=91.0))
    assert (again.commands, again.tasks, again.alerts, again.desired, again.context_changed) == ([], [], [], [], set())
    assert r.core.take_changed() == ["alice"]
    saved = r.core.export_users(["alice"])["users"]["alice"]
    assert saved["devices"]["glasses/g1"]["last_seen"] == r.now
    assert saved["devices"]["glasses/g1"]["online"] is True


def test_dump_gives_json_ready_data_of_every_shape_a_state_holds() -> None:
    """The shapes of the core's state, dumped as before the field names were cached and plain values taken without
    a call: enums by value, sets sorted, sequences as lists, mapping keys as strings, nested dataclasses as maps."""
    from dataclasses import dataclass, field  # noqa: PLC0415
    from enum import Enum, IntEnum, StrEnum  # noqa: PLC0415

    from agent.core.state import dump  # noqa: PLC0415

    class Colour(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 2

    class Mood(Enum):
        CALM = "calm"

    @dataclass
    class Inner:
        at: int = 1
        mood: Mood = Mood.CALM

    @dataclass
    class Outer:
        name: str = "a"
        flag: bool = True
        ratio: float = 0.5
        none: None = None
        colour: Colour = Colour.RED
        level: Level = Level.HIGH
        tags: set[str] = field(default_factory=lambda: {"b", "a"})
        recent: deque[int] = field(default_factory=lambda: deque([3, 4]))
        pair: tuple[int, str] = (1, "x")
        by_hour: dict[int, Inner] = field(default_factory=lambda: {7: Inner(2)})
        inner: Inner = field(default_factory=Inner)
        items: list[Inner | None] = field(default_factory=lambda: [Inner(), None])

    data = dump(Outer())
    assert data == {
        "name": "a", "flag": True, "ratio": 0.5, "none": None, "colour": Colour.RED, "level": Level.HIGH,
        "tags": ["a", "b"], "recent": [3, 4], "pair": [1, "x"], "by_hour": {"7": {"at": 2, "mood": "calm"}},
        "inner": {"at": 1, "mood": "calm"}, "items": [{"at": 1, "mood": "calm"}, None],
    }  # fmt: skip
    assert json.loads(json.dumps(data)) == {**data, "colour": "red", "level": 2}
    for odd in (object(), Inner):  # a dataclass itself is not its instance
        with pytest.raises(AgentError, match="cannot export"):
            dump(odd)
