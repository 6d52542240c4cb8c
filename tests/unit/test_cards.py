"""Cards people can read: time first on reminders, pronouns turned, and every card at the display's limits in EN
and ZH (one title line, three body lines, the key fact never cut)."""

from __future__ import annotations

import string
from typing import Any

import pytest

from agent.core.context import Output, Task
from agent.core.engine import AgentCore
from agent.core.routing import card
from agent.core.tasks import summary
from agent.core.testing import Rig, config, of
from agent.core.wording import _T, say
from schemas.actions import ShowCard, ShowTeleprompter
from schemas.display import LINE_UNITS, LINES_PER_SCREEN, text_units, wrap

LONG_EN = "the big quarterly planning review with the whole product team and the designers"
LONG_ZH = "和产品团队还有设计师一起开的季度规划评审会议记得带上笔记本电脑和充电器"


def _fits(c: ShowCard) -> None:
    assert text_units(c.title) <= LINE_UNITS
    assert len(wrap(c.body)) <= LINES_PER_SCREEN - 2


def _cards(out: Any) -> list[ShowCard]:
    return of(out, ShowCard)


# --- reminders (the issue: the whole sentence in the title, empty body, the time cut off, "my" not turned)


@pytest.mark.parametrize(
    ("text", "lang", "title"),
    [
        ("Remind me to take my pills at 6pm", "en", "⏰ 18:00 · take your pills"),
        ("晚上六点提醒我吃药", "zh", "⏰ 18:00 · 吃药"),
        ("remind me to call my mom at 7:30 pm", "en", "⏰ 19:30 · call your mom"),
        ("明天早上八点提醒我给我妈打电话", "zh", "⏰ 明天 08:00 · 给你妈打电话"),
        ("remind me to stretch tomorrow at 9am", "en", "⏰ tomorrow 09:00 · stretch"),
    ],
)
def test_a_reminder_card_puts_the_time_first_and_speaks_to_the_user(text: str, lang: str, title: str) -> None:
    r = Rig(AgentCore(config(lang)))
    r.ready()
    [c] = _cards(r.say(text, lang))
    assert c.title == title
    assert say("remind.undo", lang) in c.body


@pytest.mark.parametrize(("lang", "what"), [("en", LONG_EN), ("zh", LONG_ZH)])
def test_a_long_reminder_keeps_its_time_and_shows_the_rest_in_the_body(lang: str, what: str) -> None:
    r = Rig(AgentCore(config(lang)))
    r.ready()
    text = f"remind me about {what} at 6pm" if lang == "en" else f"晚上六点提醒我{what}"
    [c] = _cards(r.say(text, lang))
    _fits(c)
    assert c.title.startswith("⏰ 18:00 · ")
    assert c.title.endswith("…")
    assert what[4:24] in c.body  # the whole text is readable below the title
    due = r.tick(3 * 3600)
    [shown] = _cards(due)
    _fits(shown)
    assert shown.title.startswith("⏰ 18:00 · ")


# --- every card type, EN and ZH, at the display's limits


def _long(lang: str) -> dict[str, str]:
    fill = LONG_EN if lang == "en" else LONG_ZH
    names = ("dish", "restaurant", "address", "dest", "name", "title", "text", "item", "query", "place", "vehicle",
             "plate", "product", "what", "language", "mode", "side")  # fmt: skip
    return dict.fromkeys(names, fill)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("key", sorted(_T))
def test_every_wording_makes_a_card_that_fits(key: str, lang: str) -> None:
    names = {f for _, f, _, _ in string.Formatter().parse(_T[key][0] + _T[key][1]) if f}
    values: dict[str, object] = {n: _long(lang).get(n, "9999") for n in names}
    text = say(key, lang, **values)
    c = card(Output(title=text, body=text, lang=lang))
    _fits(c)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("skill", ["order_food", "hail_ride"])
def test_a_confirmation_card_at_the_limits_still_shows_the_price_and_time(skill: str, lang: str) -> None:
    fill = LONG_EN if lang == "en" else LONG_ZH
    slots: dict[str, str | int | float] = {"dish": fill, "restaurant": fill, "address": fill, "destination": fill}
    task = Task(task_id="t1", skill=skill, state="quoted", slots=slots, lang=lang, created=0, updated=0)
    task.price, task.eta_s = 1234.5, 1800
    c = card(summary(task))
    _fits(c)
    assert "¥1234.50" in c.body
    assert "30" in c.body  # the ETA in minutes
    assert len(c.buttons) == 2


@pytest.mark.parametrize(
    ("text", "lang", "script"),
    [
        ("open my keynote on the teleprompter", "en", "keynote"),
        ("put my keynote on the prompter please", "en", "keynote"),
        ("把发布会的稿子放到提词器上", "zh", "发布会"),
    ],
)
def test_a_named_script_opens_without_asking_which(text: str, lang: str, script: str) -> None:
    """The issue: "open my keynote on the teleprompter" asked "Which script?"."""
    r = Rig(AgentCore(config(lang)))
    r.ready()
    out = r.say(text, lang)
    [page] = of(out, ShowTeleprompter)
    assert page.script_id == script
    assert page.page == 1
    assert say("ask.teleprompter.script", lang) not in " ".join(c.title for c in _cards(out))
