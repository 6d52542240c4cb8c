"""Core skills: one sentence in (English, Chinese), commands out; slots from context, one question at most."""

from __future__ import annotations

from typing import Any

import pytest

from agent.core.engine import AgentCore
from agent.core.testing import HOME, OFFICE, Rig, config, of, to
from schemas.actions import (
    Capture,
    MeasureNow,
    MediaControl,
    Notify,
    ShowCaption,
    ShowCard,
    ShowNav,
    ShowTeleprompter,
    Speak,
    TaskStart,
)
from schemas.events import (
    Body,
    GlassesTouch,
    HeartRate,
    Location,
    Money,
    RingGesture,
    SleepSegment,
    SyncBatch,
    TaskStatus,
)
from schemas.topics import Kind

MIN = 60_000


def rig(lang: str = "en", **kw: Any) -> Rig:
    r = Rig(AgentCore(config(lang)))
    r.ready(**kw)
    return r


def texts(out: Any) -> str:
    """Everything shown or said, as one string."""
    parts = [f"{c.title} {c.body}" for c in of(out, ShowCard)]
    parts += [s.text for s in of(out, Speak)]
    parts += [f"{n.title} {n.body}" for n in of(out, Notify)]
    return " | ".join(parts)


# --- paid tasks start with a quote request, slots filled from context ---------------------------------------

START = [
    # utterance, lang, skill, expected slots (subset), autofilled (subset)
    ("Order my usual.", "en", "order_food", {"dish": "beef noodles", "address": "home"}, {"dish", "address"}),
    (
        "帮我点一份上次那家的牛肉面",
        "zh",
        "order_food",
        {"dish": "牛肉面", "restaurant": "Lanzhou Noodle House", "address": "home"},
        {"restaurant", "address"},
    ),
    (
        "Get a latte to the office, under 30 yuan.",
        "en",
        "order_food",
        {"dish": "latte", "address": "office", "address_lat": OFFICE.lat, "budget": 30},
        set(),
    ),
    (
        "Get me a taxi to Hangzhou East Station.",
        "en",
        "hail_ride",
        {"destination": "Hangzhou East Station", "pickup": "home", "product": "standard"},
        {"pickup", "product"},
    ),
    ("帮我打车去杭州东站", "zh", "hail_ride", {"destination": "杭州东站", "pickup": "home"}, {"pickup"}),
    ("十分钟后叫车回家", "zh", "hail_ride", {"destination": "home", "delay_min": 10}, {"pickup"}),
]


@pytest.mark.parametrize(("text", "lang", "skill", "slots", "auto"), START)
def test_paid_skill_asks_the_phone_for_a_quote(
    text: str, lang: str, skill: str, slots: dict[str, Any], auto: set[str]
) -> None:
    r = rig(lang)
    out = r.say(text, lang)
    [start] = of(out, TaskStart)
    assert start.skill == skill
    assert slots.items() <= start.slots.items()
    [record] = out.tasks
    assert record.state == "quoting"
    assert record.rounds == 1
    assert auto <= set(record.slots_autofilled)
    assert record.slots_asked == ()
    assert all(c.corr == f"m{r.n}" for c in out.commands)  # caused by the utterance


def test_food_order_at_the_office_on_a_weekday_goes_to_the_office() -> None:
    r = rig(at_home=False)
    r.send(Kind.PHONE, Location(lat=OFFICE.lat, lon=OFFICE.lon))
    [start] = of(r.say("Order beef noodles."), TaskStart)
    assert start.slots["address"] == "office"


def test_food_order_elsewhere_goes_to_where_the_user_is() -> None:
    r = rig(at_home=False)
    r.send(Kind.PHONE, Location(lat=30.25, lon=120.17))
    [start] = of(r.say("Order beef noodles."), TaskStart)
    assert start.slots["address"] == "current location"
    assert start.slots["address_lat"] == 30.25


@pytest.mark.parametrize(
    ("text", "lang", "expect"),
    [
        ("Order my usual.", "en", ("Order beef noodles", "¥32", "30 min", "Confirm")),
        ("帮我点一份上次那家的牛肉面", "zh", ("下单：牛肉面", "¥32", "约30分钟", "确认")),
    ],
)
def test_quote_shows_a_summary_card_with_buttons(text: str, lang: str, expect: tuple[str, ...]) -> None:
    r = rig(lang)
    [start] = of(r.say(text, lang), TaskStart)
    status = TaskStatus(task_id=start.task_id, skill="order_food", status="quoted", price=Money(amount=32), eta_s=1790)
    out = r.send(Kind.PHONE, status)
    [card] = of(out, ShowCard)
    shown = f"{card.title} {card.body} {card.buttons[0].label}"
    assert all(e in shown for e in expect), shown
    assert [b.action_id for b in card.buttons] == [f"confirm:{start.task_id}", f"deny:{start.task_id}"]
    assert out.tasks[0].state == "awaiting_confirmation"
    assert out.commands[0].corr == f"m{r.n}"  # caused by the quote
    assert out.commands[0].deadline_ms == r.now + 5_000


# --- one question at most ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer", "lang", "question", "dest"),
    [
        ("Get me a taxi", "to the airport", "en", "Where to?", "airport"),
        ("帮我叫个车", "去机场", "zh", "去哪里？", "机场"),
    ],
)
def test_missing_destination_is_asked_once(text: str, answer: str, lang: str, question: str, dest: str) -> None:
    r = rig(lang)
    out = r.say(text, lang)
    assert of(out, TaskStart) == []
    assert question in texts(out)
    assert out.tasks[0].state == "asking"
    out = r.say(answer, lang)
    [start] = of(out, TaskStart)
    assert start.slots["destination"] == dest
    record = out.tasks[-1]
    assert record.slots_asked == ("destination",)
    assert record.rounds == 2
    assert r.core.snapshot("alice").pending is None


def test_an_unusable_answer_ends_the_task_without_asking_again() -> None:
    r = rig()
    r.say("Remind me in 10 minutes")  # no text: "What should I remind you about?"
    out = r.say("   ")
    assert out.tasks == [] or out.tasks[-1].state in ("failed", "cancelled")
    out = r.say("cancel")
    assert "Ask" not in texts(out)


def test_cancel_while_asked_cancels() -> None:
    r = rig()
    r.say("Get me a taxi")
    out = r.say("never mind")
    assert out.tasks[-1].state == "cancelled"
    assert "Cancelled." in texts(out)


def test_a_new_request_while_asked_replaces_the_question() -> None:
    r = rig()
    r.say("Get me a taxi")
    out = r.say("Take a photo.")
    assert [t.state for t in out.tasks] == ["cancelled", "completed"]
    assert of(out, Capture) == [Capture(kind="photo")]


def test_an_unanswered_question_expires() -> None:
    r = rig("zh")
    r.say("帮我叫个车", "zh")
    asked = f"m{r.n}"
    assert r.tick(59).tasks == []
    out = r.tick(1)
    assert out.tasks[-1].state == "expired"
    assert "没有收到回答" in texts(out)
    assert [c.corr for c in out.commands] == [asked]  # caused by the request that asked


def test_remind_without_time_asks_when() -> None:
    r = rig()
    out = r.say("Remind me to call mom")
    assert "When should I remind you?" in texts(out)
    out = r.say("in ten minutes")
    assert "call mom" in texts(out)
    assert out.tasks[-1].slots_asked == ("when",)
    assert r.core.context("alice").reminders[0].due == r.now + 10 * MIN  # type: ignore[union-attr]


# --- T0 skills --------------------------------------------------------------------------------------------

T0 = [
    (
        "Walk me to the nearest subway.",
        "en",
        ShowNav,
        {"destination": "龙翔桥站"},  # the nearest known subway station, not a 0 m route to a name
        "walking directions",
    ),
    ("带我去最近的地铁站", "zh", ShowNav, {"destination": "龙翔桥站"}, "步行导航"),
    ("Translate what she's saying.", "en", ShowCaption, {"tgt_lang": "en", "src_lang": "zh"}, ""),
    ("把她说的翻译成中文", "zh", ShowCaption, {"tgt_lang": "zh", "src_lang": "en", "text": "正在聆听…"}, ""),
    ("Start my keynote script.", "en", ShowTeleprompter, {"script_id": "keynote", "page": 1}, ""),
    ("打开提词器，用发布会的稿子", "zh", ShowTeleprompter, {"script_id": "发布会", "page": 1}, ""),
    ("Take a photo.", "en", Capture, {"kind": "photo"}, ""),
    ("录30秒视频", "zh", Capture, {"kind": "video", "duration_s": 30}, ""),
]


@pytest.mark.parametrize(("text", "lang", "cls", "fields", "said"), T0)
def test_t0_skill_acts_at_once(text: str, lang: str, cls: type[Body], fields: dict[str, Any], said: str) -> None:
    r = rig(lang)
    out = r.say(text, lang)
    [body] = of(to(out, Kind.GLASSES), cls)
    assert fields.items() <= body.model_dump().items()
    assert said in texts(out)
    [record] = out.tasks
    assert (record.state, record.rounds, record.confirm_modality) == ("completed", 1, None)


def test_teleprompter_pages_with_temple_swipe_and_ring_scroll() -> None:
    r = rig()
    [first] = of(r.say("Start my keynote script."), ShowTeleprompter)
    assert first.max_page > 2
    [p2] = of(r.send(Kind.GLASSES, GlassesTouch(side="right", gesture="swipe_forward")), ShowTeleprompter)
    [p3] = of(r.send(Kind.RING, RingGesture(gesture="scroll_down")), ShowTeleprompter)
    [back] = of(r.send(Kind.RING, RingGesture(gesture="scroll_up")), ShowTeleprompter)
    assert (p2.page, p3.page, back.page) == (2, 3, 2)
    assert p2.text != first.text


def test_navigation_without_glasses_is_spoken() -> None:
    r = rig(glasses=False)
    out = r.say("Walk me to the nearest subway.")
    assert of(out, ShowNav) == []
    [speak] = of(to(out, Kind.EARPHONES), Speak)
    assert "龙翔桥站" in speak.text


def test_capture_needs_the_glasses() -> None:
    r = rig(glasses=False)
    out = r.say("Take a photo.")
    assert of(out, Capture) == []
    assert "glasses are offline" in texts(out)
    assert out.tasks[-1].state == "failed"


# --- T1 skills: act now, undo within the window -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang", "said"),
    [
        ("Remind me to drink water every hour.", "en", "drink water"),
        ("每小时提醒我喝水", "zh", "喝水"),
    ],
)
def test_reminder_is_set_and_fires(text: str, lang: str, said: str) -> None:
    r = rig(lang)
    out = r.say(text, lang)
    r.ack(out.commands[0])
    assert said in texts(out)
    assert out.tasks[-1].state == "committed"
    assert r.tick(3_599).commands == []
    first = r.tick(1)
    assert said in texts(first)
    assert first.commands[0].corr == out.commands[0].corr  # the utterance that set it
    assert said in texts(r.tick(3_600))  # every hour


@pytest.mark.parametrize(
    ("text", "lang", "query"),
    [("Play something calm.", "en", "calm"), ("放点轻松的音乐", "zh", "轻松")],
)
def test_music_plays_on_the_earphones(text: str, lang: str, query: str) -> None:
    r = rig(lang)
    out = r.say(text, lang)
    [play] = of(to(out, Kind.EARPHONES), MediaControl)
    assert (play.command, play.query) == ("play", query)
    assert out.tasks[-1].state == "committed"


def test_music_without_earphones_plays_on_the_phone() -> None:
    r = rig(ears=False)
    out = r.say("Play something calm.")
    assert of(to(out, Kind.PHONE), MediaControl)[0].command == "play"


# --- health questions -------------------------------------------------------------------------------------


def test_sleep_question_is_answered_from_the_ring_data() -> None:
    r = rig()
    night = r.now - 10 * 3_600_000
    segments = [
        SleepSegment(stage="light", start_ts=night, end_ts=night + 3 * 3_600_000, src_ts=night),
        SleepSegment(stage="deep", start_ts=night + 3 * 3_600_000, end_ts=night + 4 * 3_600_000, src_ts=night),
        SleepSegment(stage="rem", start_ts=night + 4 * 3_600_000, end_ts=night + 7 * 3_600_000, src_ts=night),
    ]
    r.send(Kind.RING, SyncBatch(from_ts=night, to_ts=night + 7 * 3_600_000, items=segments))
    out = r.say("How did I sleep?")
    assert "You slept 7 h 0 min, 60 min deep." in texts(out)
    assert of(out, MeasureNow) == []


def test_heart_rate_question_measures_then_answers_in_chinese() -> None:
    r = rig("zh")
    out = r.say("测一下心率", "zh")
    assert of(to(out, Kind.RING), MeasureNow) == [MeasureNow(kind="hr", timeout_s=40)]
    assert "正在测量" in texts(out)
    r.at(20)
    out = r.send(Kind.RING, HeartRate(bpm=72, source="spot"))
    assert "你的心率是每分钟72次。" in texts(out)
    assert out.tasks[-1].state == "completed"


def test_a_fresh_reading_answers_without_measuring() -> None:
    r = rig()
    r.send(Kind.RING, HeartRate(bpm=64))
    out = r.say("What's my heart rate?")
    assert of(out, MeasureNow) == []
    assert "Your heart rate is 64 bpm." in texts(out)


def test_a_measurement_without_result_times_out() -> None:
    r = rig()
    r.say("Measure my heart rate.")
    assert "couldn't get a reading" not in texts(r.tick(60))  # a ring needs up to 40 s to lock, plus the bus
    out = r.tick(31)
    assert "couldn't get a reading" in texts(out)


# --- replies follow the utterance's language; unknown requests --------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang", "reply"),
    [("blah blah", "en", "Sorry, I didn't get that."), ("天气怎么样", "zh", "抱歉，我没听懂。")],
)
def test_unknown_request(text: str, lang: str, reply: str) -> None:
    out = rig("en").say(text, lang)
    assert reply in texts(out)
    assert out.tasks == []


def test_chinese_text_with_a_default_english_tag_is_answered_in_chinese() -> None:
    out = rig().say("带我去最近的地铁站", "en")
    assert "导航" in texts(out)


def test_places_named_in_the_profile_get_coordinates() -> None:
    r = rig()
    [start] = of(r.say("Get me a taxi to Hangzhou East Station."), TaskStart)
    assert (start.slots["destination_lat"], start.slots["pickup"]) == (30.2905, "home")
    assert abs(float(start.slots["pickup_lat"]) - HOME.lat) < 1e-6


def test_teleprompter_keeps_paging_after_a_card_and_stops_for_navigation() -> None:
    r = rig()
    r.say("Start my keynote script.")
    [card] = r.say("blah blah").commands
    r.ack(card)
    [p2] = of(r.send(Kind.GLASSES, GlassesTouch(side="right", gesture="tap")), ShowTeleprompter)
    assert p2.page == 2
    r.say("Walk me to the nearest subway.")
    assert of(r.send(Kind.RING, RingGesture(gesture="scroll_down")), ShowTeleprompter) == []
