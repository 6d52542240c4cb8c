"""ConsoleState: bounded history, batching into deltas, the display mirror within the real limits, injection."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.state import (
    ConsoleState,
    Limits,
    build_injection,
    inject_catalogue,
    mirror,
    screen_lines,
)
from schemas import actions as act
from schemas import codec
from schemas import events as ev
from schemas.display import LINE_UNITS, LINES_PER_SCREEN, clip_line, text_units
from schemas.envelope import Message, make
from schemas.errors import TopicError, ValidationFailed
from schemas.topics import (
    DeviceId,
    Kind,
    ack_topic,
    agent_state_topic,
    command_topic,
    context_topic,
    event_topic,
    health_topic,
)
from schemas.topics import state_topic as device_state_topic

NOW = 1_700_000_000_000
GLASSES = DeviceId("alice", Kind.GLASSES, "s1")
RING = DeviceId("alice", Kind.RING, "ring-1")
BUDS = DeviceId("alice", Kind.EARPHONES, "buds-1")
PHONE = DeviceId("alice", Kind.PHONE, "phone-1")


def msg(
    topic: str,
    body: ev.Body,
    *,
    retain: bool = False,
    ts: int = NOW,
    corr: str | None = None,
    src_ts: int | None = None,
) -> Message:
    """A message as the bus hands it over: encoded, then decoded and validated."""
    return codec.decode(topic, codec.encode(make(body, ts=ts, corr=corr, src_ts=src_ts)), retain=retain)


def action(dev: DeviceId, body: ev.Body, corr: str = "evt-1") -> Message:
    name = str(type(body).model_fields["type"].default)
    return msg(command_topic(dev, name), body, corr=corr)


def view(state: ConsoleState, user: str = "alice") -> dict[str, Any]:
    v = state.user_view(user)
    assert v is not None
    return v


# ------------------------------------------------------------------------------------------------ devices


def test_births_and_wills_show_online_and_offline() -> None:
    state = ConsoleState()
    for dev in (GLASSES, RING, BUDS, PHONE):
        birth = act.DeviceState(online=True, kind=dev.kind, battery_pct=80)
        state.feed(msg(device_state_topic(dev), birth, retain=True, ts=NOW - 5000), NOW)
    devices = view(state)["devices"]
    assert {k: d["online"] for k, d in devices.items()} == {
        "glasses/s1": True,
        "ring/ring-1": True,
        "earphones/buds-1": True,
        "phone/phone-1": True,
    }
    # A retained birth was published earlier: last seen is its time, not the time the console read it.
    assert devices["ring/ring-1"]["last_seen"] == NOW - 5000
    state.feed(msg(device_state_topic(RING), act.DeviceState(online=False, kind=Kind.RING)), NOW + 10)
    ring = view(state)["devices"]["ring/ring-1"]
    assert ring["online"] is False
    assert ring["last_seen"] == NOW + 10


def test_worn_and_batteries_per_kind() -> None:
    state = ConsoleState()
    cells = [ev.Cell(slot="left", level_pct=12), ev.Cell(slot="right", level_pct=70)]
    state.feed(msg(event_topic(GLASSES, "system", "battery"), ev.GlassesBattery(level_pct=41, cells=cells)), NOW)
    swap = ev.BatterySwap(slot="left", action="removed", remaining_pct_other=69)
    state.feed(msg(event_topic(GLASSES, "system", "battery_swap"), swap), NOW)
    state.feed(msg(event_topic(GLASSES, "system", "wear"), ev.GlassesWear(state="donned")), NOW)
    state.feed(msg(event_topic(RING, "system", "wear"), ev.RingWear(state="off_finger")), NOW)
    state.feed(msg(event_topic(BUDS, "system", "in_ear"), ev.InEar(side="right", state="in")), NOW)
    state.feed(msg(event_topic(BUDS, "system", "battery"), ev.EarBattery(left_pct=30, right_pct=60, case_pct=90)), NOW)
    devices = view(state)["devices"]
    glasses = devices["glasses/s1"]
    assert glasses["worn"] is True
    assert glasses["battery"] == 41
    assert glasses["cells"] == [
        {"slot": "left", "level": 12, "present": False},
        {"slot": "right", "level": 69, "present": True},
    ]
    assert devices["ring/ring-1"]["worn"] is False
    buds = devices["earphones/buds-1"]
    assert buds["worn"] is True
    assert buds["battery"] == 30
    assert buds["buds"]["case"] == 90


# ------------------------------------------------------------------------------------------------ display mirror


def test_card_mirror_has_title_body_and_buttons_within_five_lines() -> None:
    state = ConsoleState()
    card = act.ShowCard(
        title="Ride arriving",
        body="White Tesla Model 3, plate A·12345, at the north gate in 2 min.",
        buttons=[act.CardButton(label="Call", action_id="call"), act.CardButton(label="OK", action_id="ok")],
        ttl_s=45,
    )
    state.feed(action(GLASSES, card), NOW)
    shown = view(state)["displays"]["glasses/s1"]
    assert shown["app"] == "card"
    assert shown["lines"][0] == "Ride arriving"
    assert " ".join(shown["lines"][1:]).startswith("White Tesla Model 3")
    assert len(shown["lines"]) <= LINES_PER_SCREEN - 1  # the buttons take the last line
    assert shown["buttons"] == ["Call", "OK"]
    assert shown["until"] == NOW + 45_000
    assert shown["corr"] == "evt-1"


def test_a_rejected_ack_marks_the_mirror() -> None:
    state = ConsoleState()
    card = action(GLASSES, act.ShowCard(title="Hello"))
    state.feed(card, NOW)
    nack = act.Ack(action_id=card.envelope.id, action="display.card", status="rejected", detail="display off")
    state.feed(msg(ack_topic(GLASSES), nack), NOW + 5)
    shown = view(state)["displays"]["glasses/s1"]
    assert shown["ack"] == "rejected"
    assert shown["ack_detail"] == "display off"
    state.feed(action(GLASSES, act.ClearDisplay()), NOW + 10)
    assert view(state)["displays"]["glasses/s1"]["lines"] == []


def test_nav_teleprompter_and_caption() -> None:
    nav = mirror(act.ShowNav(maneuver="turn_left", distance_m=1500, street="Wensan Rd", eta_s=600), NOW)
    assert nav is not None
    assert nav["lines"] == ["← 1.5 km", "Wensan Rd", "ETA 10 min"]
    page = mirror(act.ShowTeleprompter(script_id="k", text="Good morning everyone.", page=2, max_page=9), NOW)
    assert page is not None
    assert (page["page"], page["max_page"]) == (2, 9)
    caption = mirror(act.ShowCaption(text="你好，欢迎来到杭州", is_final=False, speaker="Li"), NOW)
    assert caption is not None
    assert caption["lines"] == ["你好，欢迎来到杭州"]
    assert caption["final"] is False
    assert mirror(act.Haptic(), NOW) is None


_LATIN = st.text(alphabet="abcdefghij klmnopqrstuvwxyz,.ABC0123456789", max_size=600)
_CJK = st.text(alphabet="你好世界杭州欢迎来到天气。，", max_size=300)
_MIXED = st.lists(st.one_of(_LATIN, _CJK, st.just("\n"), st.just("x" * 130)), max_size=8).map("".join)


@given(_MIXED)
def test_mirror_never_shows_more_than_the_glasses_can(text: str) -> None:
    # Validation keeps real actions within a screen; the mirror must hold even for what slipped past it.
    for body in (
        act.ShowText.model_construct(text=text, page=1, max_page=1, mode="auto", priority="normal"),
        act.ShowCaption.model_construct(text=text, src_lang="en", tgt_lang="zh", is_final=True, speaker=None),
        act.ShowCard.model_construct(title=text[:64], body=text, icon="info", buttons=[], ttl_s=30),
    ):
        shown = mirror(body, NOW)
        assert shown is not None
        assert len(shown["lines"]) <= LINES_PER_SCREEN
        assert all(text_units(line) <= LINE_UNITS for line in shown["lines"])
        assert all("\n" not in line for line in shown["lines"])


@given(_MIXED)
def test_screen_lines_keeps_what_fits_unchanged(text: str) -> None:
    lines, cut = screen_lines(text)
    if not cut:
        # Only where the lines break differs: every character but white space is shown, in order.
        assert "".join("".join(lines).split()) == "".join(text.split())


def test_clip_line() -> None:
    assert clip_line("short") == "short"
    long = clip_line("a" * 50)
    assert text_units(long) <= LINE_UNITS
    assert long.endswith("…")
    assert text_units(clip_line("好" * 30)) <= LINE_UNITS


# ------------------------------------------------------------------------------------------------ speech, vitals


def test_speech_from_actions_and_playback() -> None:
    state = ConsoleState()
    state.feed(action(BUDS, act.Speak(text="Your car is here")), NOW)
    assert view(state)["audio"]["earphones/buds-1"] == {
        "state": "speaking",
        "text": "Your car is here",
        "t": NOW,
        "source": "action",
    }
    state.feed(msg(event_topic(BUDS, "system", "playback"), ev.PlaybackState(state="idle")), NOW + 3000)
    assert view(state)["audio"]["earphones/buds-1"]["state"] == "idle"


def test_vitals_sorted_by_sample_time_with_late_batches_and_baselines() -> None:
    state = ConsoleState(Limits(points=5), show_health=True)
    for i in range(4):
        state.feed(msg(event_topic(RING, "sensor", "hr"), ev.HeartRate(bpm=70 + i), src_ts=NOW + i * 1000), NOW)
    late = ev.SyncBatch(
        from_ts=NOW - 10_000,
        to_ts=NOW,
        items=[
            ev.HeartRate(bpm=55, src_ts=NOW - 500),
            ev.HeartRate(bpm=50, src_ts=NOW - 9000),  # older than all five kept: dropped
            ev.Hrv(rmssd_ms=40, src_ts=NOW - 500),
            ev.SkinTemp(deviation_c=0.4, src_ts=NOW - 500),
        ],
    )
    state.feed(msg(event_topic(RING, "sensor", "batch"), late), NOW)
    health = {"rhr_baseline": 58.0, "hr": 72.0, "nan": math.nan}
    state.feed(msg(context_topic("alice"), act.ContextSnapshot(user="alice", health=health)), NOW)
    v = view(state)
    hr = v["vitals"]["hr"]
    assert [p[0] for p in hr] == sorted(p[0] for p in hr)
    assert len(hr) == 5
    assert hr[0] == [NOW - 500, 55]
    assert v["vitals"]["hrv"] == [[NOW - 500, 40]]
    assert v["vitals"]["temp_dev"] == [[NOW - 500, 0.4]]
    assert v["baselines"]["hr"] == 58.0
    assert v["baselines"]["temp_dev"] == 0.0
    assert v["context"]["health"]["nan"] is None  # JSON has no NaN


def test_health_values_are_redacted_unless_asked_for() -> None:
    state = ConsoleState()
    state.feed(msg(event_topic(RING, "sensor", "hr"), ev.HeartRate(bpm=131.5), src_ts=NOW), NOW)
    state.feed(msg(event_topic(RING, "sensor", "spo2"), ev.SpO2(pct=87.5), src_ts=NOW), NOW)
    card = act.ShowCard(title="Heart rate high", body="It has stayed above 131 bpm.", health=True)
    state.feed(action(GLASSES, card), NOW)
    state.feed(msg(health_topic("alice"), act.HealthSnapshot(user="alice", values={"hr": 131.5})), NOW)
    v = view(state)
    text = json.dumps(v, ensure_ascii=False)
    # (values, not bare digits: a random message id or a time may hold "131")
    assert "131.5" not in text
    assert "131 bpm" not in text
    assert "87.5" not in text
    assert v["vitals"]["hr"] == []
    assert "‹redacted›" in text  # the shape stays: the events are in the timeline, their values hidden
    shown = ConsoleState(show_health=True)
    shown.feed(msg(event_topic(RING, "sensor", "hr"), ev.HeartRate(bpm=131.5), src_ts=NOW), NOW)
    shown.feed(msg(health_topic("alice"), act.HealthSnapshot(user="alice", values={"hr": 131.5})), NOW)
    assert view(shown)["vitals"]["hr"] == [[NOW, 131.5]]
    assert view(shown)["context"]["health"]["hr"] == 131.5


# ------------------------------------------------------------------------------------------------ tasks, alerts


def test_tasks_from_phone_status_and_agent_context() -> None:
    state = ConsoleState()
    t = "ride-1"
    state.feed(action(PHONE, act.TaskStart(task_id=t, skill="hail_ride")), NOW)
    for seq, status in ((2, "arriving"), (1, "accepted")):  # webhooks out of order
        body = ev.TaskStatus(task_id=t, skill="hail_ride", status=status, status_seq=seq, eta_s=120)
        state.feed(msg(event_topic(PHONE, "system", "task_status"), body), NOW + seq)
    tasks = {x["task_id"]: x for x in view(state)["tasks"]}
    assert tasks[t]["status"] == "arriving"
    assert tasks[t]["history"] == ["arriving", "accepted"]
    listed = [{"task_id": t, "skill": "hail_ride", "state": "committed", "rounds": 2, "eta_s": 100}]
    state.feed(msg(context_topic("alice"), act.ContextSnapshot(user="alice", tasks=listed)), NOW + 10)
    task = view(state)["tasks"][0]
    assert (task["state"], task["rounds"], task["eta_s"], task["active"]) == ("committed", 2, 100, True)
    state.feed(msg(context_topic("alice"), act.ContextSnapshot(user="alice", tasks=[])), NOW + 20)
    assert view(state)["tasks"][0]["active"] is False


def test_a_proactive_alert_gathers_its_outputs_and_can_be_dismissed() -> None:
    state = ConsoleState()
    card = act.ShowCard(
        title="Heart rate high",
        body="Above 120 for 10 min at rest.",
        buttons=[act.CardButton(label="Dismiss", action_id="dismiss:high_hr_rest")],
    )
    state.feed(action(GLASSES, card, corr="hr-sample-9"), NOW)
    state.feed(action(RING, act.Haptic(pattern="heartbeat"), corr="hr-sample-9"), NOW)
    state.feed(action(PHONE, act.Notify(title="Low SpO2"), corr="rule:low_spo2"), NOW)
    alerts = view(state)["alerts"]
    assert [a["rule"] for a in alerts] == ["high_hr_rest", "low_spo2"]
    assert alerts[0]["via"] == ["glasses:display.card", "ring:ring.haptic"]
    click = ev.UiEvent(action_id="dismiss:high_hr_rest")
    state.feed(msg(event_topic(GLASSES, "gesture", "ui"), click), NOW + 1)
    assert view(state)["alerts"][0]["dismissed"] is True


# ------------------------------------------------------------------------------------------------ timeline, batching


def test_timeline_links_events_actions_and_acks() -> None:
    state = ConsoleState()
    said = msg(event_topic(BUDS, "voice", "utterance"), ev.Utterance(text="call a taxi home"))
    state.feed(said, NOW)
    card = action(GLASSES, act.ShowCard(title="Taxi home?"), corr=said.envelope.id)
    state.feed(card, NOW + 1)
    ack = act.Ack(action_id=card.envelope.id, action="display.card", status="done")
    state.feed(msg(ack_topic(GLASSES), ack, corr=card.envelope.id), NOW + 2)
    line = view(state)["timeline"]
    assert [(e["dir"], e["cls"], e["type"]) for e in line] == [
        ("in", "voice", "voice.utterance"),
        ("out", "cmd", "display.card"),
        ("ack", "ack", "ack"),
    ]
    assert line[1]["corr"] == line[0]["id"]
    assert line[2]["action_id"] == line[1]["id"]
    assert line[0]["text"] == '"call a taxi home"'


def test_sensor_floods_cannot_push_actions_out_of_the_timeline() -> None:
    limits = Limits(timeline=10, sensor_timeline=5, points=20)
    state = ConsoleState(limits, show_health=True)
    state.feed(action(GLASSES, act.ShowCard(title="Keep me")), NOW)
    for i in range(1000):
        state.feed(msg(event_topic(RING, "sensor", "hr"), ev.HeartRate(bpm=60 + i % 50), src_ts=NOW + i), NOW + i)
    line = view(state)["timeline"]
    assert len(line) == 6
    assert line[0]["type"] == "display.card"
    assert len(view(state)["vitals"]["hr"]) == 20


def test_deltas_batch_changes_and_are_empty_when_nothing_changed() -> None:
    state = ConsoleState(Limits(timeline=50, sensor_timeline=20))
    assert state.delta(NOW) is not None  # the first carries the stats
    assert state.delta(NOW) is None
    for i in range(500):
        state.feed(msg(event_topic(RING, "sensor", "hr"), ev.HeartRate(bpm=70), src_ts=NOW + i), NOW)
    state.feed(msg(event_topic(RING, "system", "wear"), ev.RingWear(state="on_finger")), NOW)
    delta = state.delta(NOW + 200)
    assert delta is not None
    part = delta["users"]["alice"]
    assert part["reset"] is True
    assert part["devices"]["ring/ring-1"]["worn"] is True
    # 501 messages became one delta whose timeline holds no more than the page keeps.
    assert len(part["timeline"]) == 20 + 1
    assert delta["stats"]["received"] == 501
    assert state.delta(NOW + 300) is None
    state.set_link(True, "mqtt://x", NOW + 400)
    link = state.delta(NOW + 400)
    assert link is not None
    assert link["link"]["connected"] is True
    assert link["users"] == {}


def test_stats_rate_is_measured_over_a_second() -> None:
    state = ConsoleState()
    state.delta(NOW)
    for _ in range(50):
        state.feed(msg(event_topic(RING, "sensor", "hr"), ev.HeartRate(bpm=70)), NOW)
    state.delta(NOW + 200)
    delta = state.delta(NOW + 1000)
    assert delta is not None
    assert delta["stats"]["rate"] == 50.0


def test_users_are_bounded_and_evicted_users_are_announced() -> None:
    state = ConsoleState(Limits(users=2))
    for user in ("a", "b", "c"):
        state.feed(
            msg(event_topic(DeviceId(user, Kind.RING, "r"), "system", "wear"), ev.RingWear(state="on_finger")), NOW
        )
    assert state.users == ["b", "c"]
    delta = state.delta(NOW)
    assert delta is not None
    assert delta["removed_users"] == ["a"]
    assert delta["stats"]["evicted_users"] == 1


def test_agents_rejects_and_link_are_global() -> None:
    state = ConsoleState(Limits(rejected=2))
    state.feed(msg(agent_state_topic("agent-1"), act.AgentState(online=True, instance="agent-1")), NOW)
    for i in range(3):
        state.reject(f"wb/v1/x/ring/r/evt/sensor/hr{i}", "schema", "bpm too high", "data.bpm", NOW)
    snap = state.snapshot(NOW)
    assert snap["agents"]["agent-1"]["online"] is True
    assert [r["topic"][-3:] for r in snap["rejected"]] == ["hr1", "hr2"]
    assert snap["stats"]["rejected"] == 3
    assert snap["inject"] == {"enabled": False, "catalogue": {}}


# ------------------------------------------------------------------------------------------------ random streams

SMALL = Limits(
    users=3,
    devices=3,
    timeline=6,
    sensor_timeline=4,
    points=5,
    tasks=3,
    alerts=2,
    rejected=2,
    agents=2,
    health_keys=3,
    context_tasks=2,
)
_users = st.sampled_from(["u1", "u2", "u3", "u4", "u5"])
_names = st.sampled_from(["d1", "d2", "d3", "d4", "d5"])
_kinds = st.sampled_from(list(Kind))
_ts = st.integers(NOW - 10**7, NOW + 10**7)
_sample_ts = st.integers(NOW - 10**7, NOW)  # a sample is never after its envelope's ts (NOW) by more than 5 min
_word = st.text(alphabet="abcdefgh ", min_size=1, max_size=30).filter(str.strip)
_rule = st.sampled_from(["r1", "r2", "r3", "r4"])
_corr = st.sampled_from(["c1", "c2", "c3", "rule:r5", "tick-u1"])
_float = st.floats(allow_nan=True, allow_infinity=True)


def _dev(user: str, kind: Kind, name: str) -> DeviceId:
    return DeviceId(user, kind, name)


@st.composite
def messages(draw: st.DrawFn) -> Message | tuple[str, str]:
    user, name, t = draw(_users), draw(_names), draw(_ts)
    ring, glasses = _dev(user, Kind.RING, name), _dev(user, Kind.GLASSES, name)
    phone, kind = _dev(user, Kind.PHONE, name), draw(_kinds)
    choice = draw(st.integers(0, 11))
    match choice:
        case 0:
            body = act.DeviceState(online=draw(st.booleans()), kind=kind)
            return msg(device_state_topic(_dev(user, kind, name)), body, retain=draw(st.booleans()), ts=t)
        case 1:
            hr = ev.HeartRate(bpm=draw(st.floats(30, 220)))
            return msg(event_topic(ring, "sensor", "hr"), hr, src_ts=draw(_sample_ts))
        case 2:
            items = draw(
                st.lists(
                    st.one_of(
                        st.builds(ev.HeartRate, bpm=st.floats(30, 220), src_ts=_sample_ts),
                        st.builds(ev.SpO2, pct=st.floats(70, 100), src_ts=_sample_ts),
                        st.builds(ev.SkinTemp, celsius=st.floats(25, 38), src_ts=_sample_ts),
                    ),
                    max_size=12,
                )
            )
            return msg(event_topic(ring, "sensor", "batch"), ev.SyncBatch(from_ts=0, to_ts=NOW, items=items))
        case 3:
            return msg(
                event_topic(_dev(user, Kind.EARPHONES, name), "voice", "utterance"), ev.Utterance(text=draw(_word))
            )
        case 4:
            buttons = [act.CardButton(label="x", action_id=f"dismiss:{draw(_rule)}")] if draw(st.booleans()) else []
            card = act.ShowCard(title=draw(_word), body=draw(_word), buttons=buttons)
            return msg(command_topic(glasses, "display.card"), card, corr=draw(_corr))
        case 5:
            return msg(command_topic(ring, "ring.haptic"), act.Haptic(), corr=draw(_corr))
        case 6:
            ack = act.Ack(action_id=draw(_corr), status=draw(st.sampled_from(["done", "rejected", "expired"])))
            return msg(ack_topic(glasses), ack)
        case 7:
            status = ev.TaskStatus(
                task_id=draw(st.sampled_from(["t1", "t2", "t3", "t4", "t5"])),
                skill="hail_ride",
                status=draw(st.sampled_from(["quoted", "arriving", "completed", "failed"])),
                status_seq=draw(st.integers(0, 5)),
            )
            return msg(event_topic(phone, "system", "task_status"), status)
        case 8:
            health = draw(st.dictionaries(st.text(max_size=5), st.one_of(st.none(), _float), max_size=6))
            tasks = draw(
                st.lists(
                    st.fixed_dictionaries(
                        {"task_id": st.sampled_from(["t1", "t6", "t7", "t8"])},
                        optional={"rounds": st.one_of(_float, st.text(max_size=3)), "state": _word},
                    ),
                    max_size=5,
                )
            )
            devices = {n: act.DeviceSummary(kind=draw(_kinds), worn=True) for n in draw(st.lists(_names, max_size=4))}
            snapshot = act.ContextSnapshot(user=user, health=health, tasks=tasks, devices=devices)
            return msg(context_topic(user), snapshot, retain=True)
        case 9:
            instance = draw(st.sampled_from(["a1", "a2", "a3", "a4"]))
            return msg(agent_state_topic(instance), act.AgentState(online=draw(st.booleans()), instance=instance))
        case 10:
            click = ev.UiEvent(action_id=f"dismiss:{draw(_rule)}")
            return msg(event_topic(glasses, "gesture", "ui"), click)
        case _:
            return (f"wb/v1/{user}/ring/{name}/evt/sensor/hr", draw(_word))


def _check_bounds(state: ConsoleState) -> None:
    lim = state.limits
    assert len(state.users) <= lim.users
    for name in state.users:
        v = view(state, name)
        assert len(v["devices"]) <= lim.devices
        assert set(v["displays"]) <= set(v["devices"])
        assert set(v["audio"]) <= set(v["devices"])
        assert len([e for e in v["timeline"] if e["cls"] != "sensor"]) <= lim.timeline
        assert len([e for e in v["timeline"] if e["cls"] == "sensor"]) <= lim.sensor_timeline
        assert all(len(points) <= lim.points for points in v["vitals"].values())
        assert len(v["tasks"]) <= lim.tasks
        assert all(len(t["history"]) <= 12 for t in v["tasks"])
        assert len(v["alerts"]) <= lim.alerts
        assert len(v["context"]["health"]) <= lim.health_keys
    snap = state.snapshot(NOW)
    assert len(snap["agents"]) <= lim.agents
    assert len(snap["rejected"]) <= lim.rejected
    json.dumps(snap, allow_nan=False)  # what the page gets is plain JSON


class Page:
    """What app.js does with the frames, in Python: sections replaced, timeline appended per lane and trimmed."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.users: dict[str, dict[str, Any]] = {}

    def apply(self, frame: dict[str, Any], full: bool) -> None:
        frame = json.loads(json.dumps(frame, allow_nan=False))
        if full:
            self.users = {}
        for name in frame["removed_users"]:
            self.users.pop(name, None)
        for name, part in frame["users"].items():
            if part.get("reset") or name not in self.users:
                self.users[name] = {"tl": [], "sensor": []}
            u = self.users[name]
            seen = max([e["n"] for e in u["tl"][-1:] + u["sensor"][-1:]], default=0)
            for section, value in part.items():
                if section == "timeline":
                    for e in value:
                        if e["n"] > seen:
                            (u["sensor"] if e["cls"] == "sensor" else u["tl"]).append(e)
                    del u["tl"][: max(0, len(u["tl"]) - self.limits.timeline)]
                    del u["sensor"][: max(0, len(u["sensor"]) - self.limits.sensor_timeline)]
                elif section != "reset":
                    u[section] = value

    def view(self, name: str) -> dict[str, Any]:
        u = dict(self.users[name])
        u["timeline"] = sorted(u.pop("tl") + u.pop("sensor"), key=lambda e: e["n"])
        return u


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(messages(), st.integers(0, 3)), max_size=60))
def test_random_streams_stay_bounded_and_deltas_rebuild_the_snapshot(
    stream: list[tuple[Message | tuple[str, str], int]],
) -> None:
    state = ConsoleState(SMALL, allow_inject=True)
    page = Page(SMALL)
    page.apply(state.snapshot(NOW), full=True)
    late = Page(SMALL)  # a page that connects midway: a snapshot, then the deltas that follow
    late_on = False
    for i, (item, tick) in enumerate(stream):
        now = NOW + i * 100
        if isinstance(item, Message):
            state.feed(item, now)
        else:
            state.reject(item[0], "schema", item[1], None, now)
        if i == len(stream) // 2:
            late.apply(state.snapshot(now), full=True)
            late_on = True
        if tick == 0:
            delta = state.delta(now)
            if delta is not None:
                page.apply(delta, full=False)
                if late_on:
                    late.apply(delta, full=False)
    _check_bounds(state)
    end = NOW + len(stream) * 100
    final = state.delta(end)
    if final is not None:
        page.apply(final, full=False)
        late.apply(final, full=False)
    snap = json.loads(json.dumps(state.snapshot(end)))
    for replica in (page, late) if late_on else (page,):
        assert set(replica.users) == set(snap["users"])
        for name, expected in snap["users"].items():
            assert replica.view(name) == expected


# ------------------------------------------------------------------------------------------------ injection


def test_injection_is_validated_like_pub() -> None:
    message, qos = build_injection(
        "wb/v1/alice/earphones/buds-1/evt/voice/utterance", {"text": "hail a taxi"}, ts=NOW, msg_id="m-1"
    )
    assert isinstance(message.data, ev.Utterance)
    assert (message.envelope.id, message.envelope.ts, qos) == ("m-1", NOW, 1)
    ring, _ = build_injection("wb/v1/alice/ring/ring-1/evt/gesture/double_pinch", {}, ts=NOW, msg_id="m-2")
    assert isinstance(ring.data, ev.RingGesture)
    assert ring.data.gesture == "double_pinch"
    whole = {"id": "given", "ts": NOW - 5, "data": {"gesture": "nod"}}
    nod, _ = build_injection("wb/v1/alice/glasses/s1/evt/gesture/head", whole, ts=NOW, msg_id="m-3")
    assert nod.envelope.id == "given"


@pytest.mark.parametrize(
    ("topic", "data", "error", "field"),
    [
        ("wb/v1/alice/earphones/buds-1/evt/voice/utterance", {"text": ""}, ValidationFailed, "data.text"),
        ("wb/v1/alice/ring/ring-1/evt/gesture/pinch", {"gesture": "press"}, ValidationFailed, "data.gesture"),
        ("wb/v1/alice/ring/ring-1/evt/sensor/hr", {"bpm": 70}, TopicError, None),
        ("wb/v1/alice/glasses/s1/cmd/display.card", {"title": "x"}, TopicError, None),
        ("wb/v1/alice/watch/w1/evt/gesture/tap", {}, TopicError, None),
        ("wb/v1/alice/phone/p1/evt/gesture/tap", ["not", "an", "object"], ValidationFailed, None),
    ],
)
def test_injection_refuses_what_pub_would_and_more(
    topic: str, data: Any, error: type[Exception], field: str | None
) -> None:
    with pytest.raises(error) as info:
        build_injection(topic, data, ts=NOW, msg_id="m")
    assert getattr(info.value, "field", None) == field


def test_inject_catalogue_offers_utterances_and_gestures_only() -> None:
    catalogue = inject_catalogue()
    assert set(catalogue) == {"glasses", "ring", "earphones", "phone"}
    events = {e["event"] for entries in catalogue.values() for e in entries}
    assert all(e == "voice/utterance" or e.startswith("gesture/") for e in events)
    # Every template is valid as it stands.
    for kind, entries in catalogue.items():
        for entry in entries:
            topic = f"wb/v1/alice/{kind}/d1/evt/{entry['event']}"
            build_injection(topic, entry["template"], ts=NOW, msg_id="m")
