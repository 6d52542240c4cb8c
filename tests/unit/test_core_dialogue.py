"""Dialogue state that cannot leak: a new request never inherits a slot it did not ask for; unknown or generic
places ask one question (or resolve to the nearest known place of that type), never a 0 m route."""

from __future__ import annotations

from typing import Any

from agent.core.config import CoreConfig, Place
from agent.core.engine import AgentCore
from agent.core.testing import HOME, Rig, config, of, profile
from schemas.actions import ShowCard, ShowNav, Speak, TaskStart
from schemas.events import Money, TaskStatus
from schemas.topics import Kind

SUBWAY = Place(name="subway", lat=30.2575, lon=120.1655, address="龙翔桥站")
FAR_SUBWAY = Place(name="Xixi metro", lat=30.2700, lon=120.0300, address="西溪地铁站")
STATION = Place(name="杭州东站", lat=30.2905, lon=120.2125, address="Hangzhou East railway station")


def _texts(out: Any) -> str:
    return " | ".join([f"{c.title} {c.body}" for c in of(out, ShowCard)] + [s.text for s in of(out, Speak)])


def _order_and_confirm(r: Rig, text: str, lang: str) -> TaskStart:
    [start] = of(r.say(text, lang), TaskStart)
    quote = TaskStatus(task_id=start.task_id, skill="order_food", status="quoted", price=Money(amount=58), eta_s=1800)
    r.send(Kind.PHONE, quote)
    r.say("yes" if lang == "en" else "确认", lang)
    return start


def test_a_new_order_never_inherits_the_last_dish() -> None:
    """The issue: after an English pizza order, "我饿了，帮我点外卖" quoted pizza (from the usual noodle shop)."""
    r = Rig(AgentCore(config()))
    r.ready()
    _order_and_confirm(r, "Order a pepperoni pizza", "en")
    out = r.say("我饿了，帮我点外卖", "zh")
    assert of(out, TaskStart) == []  # nothing is quoted: a reflexive yes cannot pay for the wrong food
    assert "想点什么" in _texts(out)
    [start] = of(r.say("牛肉面", "zh"), TaskStart)
    assert start.slots["dish"] == "牛肉面"
    assert "restaurant" not in start.slots  # the pizza's (or the usual's) shop is not carried over


def test_the_usual_is_what_the_user_asks_for_and_keeps_its_own_shop() -> None:
    r = Rig(AgentCore(config()))
    r.ready()
    _order_and_confirm(r, "Order a pepperoni pizza", "en")
    [start] = of(r.say("order the same as last time", "en"), TaskStart)
    assert start.slots["dish"] == "pepperoni pizza"
    assert "restaurant" not in start.slots  # the pizza came from no named shop; the usual noodle shop is not it


def test_a_cancelled_task_leaves_nothing_behind() -> None:
    r = Rig(AgentCore(config()))
    r.ready()
    [start] = of(r.say("Order two lattes from Starbucks", "en"), TaskStart)
    r.send(Kind.PHONE, TaskStatus(task_id=start.task_id, skill="order_food", status="quoted", price=Money(amount=9)))
    r.say("cancel", "en")
    out = r.say("order food", "en")
    assert of(out, TaskStart) == []
    assert "What would you like" in _texts(out)


def _nav_rig(*places: Place) -> Rig:
    r = Rig(AgentCore(CoreConfig(default_profile=profile(places=places))))
    r.ready()
    return r


def test_a_generic_place_resolves_to_the_nearest_known_one() -> None:
    r = _nav_rig(FAR_SUBWAY, SUBWAY, STATION)
    [nav] = of(r.say("walk me to the nearest subway", "en"), ShowNav)
    assert nav.distance_m > 100  # from home (Huanglong) to Longxiangqiao, not 0 m
    assert nav.eta_s is not None
    assert "龙翔桥站" in nav.destination or "subway" in nav.destination
    [nav] = of(r.say("导航去地铁站", "zh"), ShowNav)
    assert nav.distance_m > 100
    [nav] = of(r.say("navigate to the train station", "en"), ShowNav)
    assert nav.distance_m > 1000


def test_an_unknown_place_asks_one_question_never_a_zero_metre_route() -> None:
    """The issue: "the train station" / 地铁站 gave a navigation card with distance_m 0.0 and no ETA."""
    r = _nav_rig()  # the profile knows no station
    out = r.say("navigate to the train station", "en")
    assert of(out, ShowNav) == []
    assert "train station" in _texts(out)  # "Where is the train station? ..."
    out = r.say("home", "en")
    [nav] = of(out, ShowNav)
    assert nav.distance_m == 0.0 or nav.eta_s is None or nav.distance_m > 0  # home: a real route (we are there)
    out = r.say("导航去地铁站", "zh")
    assert of(out, ShowNav) == []
    out = r.say("不知道", "zh")  # still no place it knows: it says so, once, and stops
    assert of(out, ShowNav) == []
    assert of(r.say("导航去地铁站", "zh"), ShowNav) == []


def test_a_named_place_in_the_profile_needs_no_question() -> None:
    r = _nav_rig(STATION)
    [nav] = of(r.say("导航去杭州东站", "zh"), ShowNav)
    assert nav.distance_m > 1000
    assert HOME.lat != STATION.lat
