"""Current means current: "now" health questions measure, answer when the reading comes, and fall back to the
last reading and its age when the ring does not answer in time."""

from __future__ import annotations

from typing import Any

import pytest

from agent.core.engine import AgentCore
from agent.core.testing import Rig, config, of, to
from schemas.actions import MeasureNow, ShowCard, Speak
from schemas.events import HeartRate
from schemas.topics import Kind


def _texts(out: Any) -> str:
    return " | ".join([f"{c.title} {c.body}" for c in of(out, ShowCard)] + [s.text for s in of(out, Speak)])


def _rig(lang: str) -> Rig:
    r = Rig(AgentCore(config(lang)))
    r.ready()
    r.send(Kind.RING, HeartRate(bpm=64))  # a periodic reading...
    r.at(240)  # ...four minutes old: "fresh" for "what's my heart rate", not for "now"
    return r


@pytest.mark.parametrize(
    ("text", "lang", "answer"),
    [
        ("what's my heart rate now", "en", "Your heart rate is 81 bpm."),
        ("现在心率多少", "zh", "你的心率是每分钟81次。"),
    ],
)
def test_now_measures_and_answers_with_the_new_reading(text: str, lang: str, answer: str) -> None:
    """The issue: "what's my heart rate now" answered with a reading minutes old instead of measuring."""
    r = _rig(lang)
    out = r.say(text, lang)
    assert of(to(out, Kind.RING), MeasureNow) == [MeasureNow(kind="hr", timeout_s=40)]
    assert "64" not in _texts(out)
    r.at(15)
    out = r.send(Kind.RING, HeartRate(bpm=81, source="spot"))
    assert answer in _texts(out)
    assert out.tasks[-1].state == "completed"


@pytest.mark.parametrize(
    ("lang", "answer", "age"),
    [
        ("en", "Your heart rate is 64 bpm.", "That reading is 5 min old."),
        ("zh", "你的心率是每分钟64次。", "这是5分钟前的读数。"),
    ],
)
def test_no_answer_from_the_ring_falls_back_to_the_last_reading_and_its_age(lang: str, answer: str, age: str) -> None:
    r = _rig(lang)
    r.say("what's my heart rate now" if lang == "en" else "现在心率多少", lang)
    assert answer not in _texts(r.tick(60))  # still measuring
    out = r.tick(31)  # the measurement's time is up (90 s)
    said = " ".join(_texts(out).split())
    assert answer in said
    assert age in said
    assert out.tasks[-1].state == "completed"


def test_without_now_a_fresh_reading_still_answers_at_once() -> None:
    r = _rig("en")
    out = r.say("what's my heart rate", "en")
    assert of(out, MeasureNow) == []
    assert "64 bpm" in _texts(out)
