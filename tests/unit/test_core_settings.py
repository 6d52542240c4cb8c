"""The settings skill, pure: EN/ZH sentences to desired settings, confirmation by impact, desired vs applied in the
context, and rejections told to the user."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import settings as settings_skill
from agent.core.engine import AgentCore
from agent.core.settings import CONFIRM_S, SettingRequest, parse, tier, where_applied
from agent.core.state import dump, load
from agent.core.testing import Rig, config
from schemas.actions import Speak
from schemas.events import RingGesture
from schemas.shadow import (
    EarphonesSettings,
    GlassesSettings,
    RingSettings,
    ShadowDesired,
    ShadowReported,
    setting_keys,
)
from schemas.topics import Kind, desired_topic, reported_topic


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("turn the glasses brightness down", SettingRequest("brightness", Kind.GLASSES, step=-1)),
        ("make the display brighter", SettingRequest("brightness", Kind.GLASSES, step=+1)),
        ("set glasses brightness to 30%", SettingRequest("brightness", Kind.GLASSES, 0.3)),
        ("眼镜亮度调低一点", SettingRequest("brightness", Kind.GLASSES, step=-1)),
        ("把戒指心率测量改成每五分钟", SettingRequest("hr_interval_s", Kind.RING, 300)),
        ("measure my heart rate every 10 minutes", SettingRequest("hr_interval_s", Kind.RING, 600)),
        ("心率每隔一小时测一次", SettingRequest("hr_interval_s", Kind.RING, 3600)),
        ("turn off blood oxygen tracking on my ring", SettingRequest("streams", Kind.RING, "spo2", stream_on=False)),
        ("打开睡眠监测", SettingRequest("streams", Kind.RING, "sleep", stream_on=True)),
        ("show the glasses display in Chinese", SettingRequest("display_lang", Kind.GLASSES, "zh")),
        ("眼镜显示改成英文", SettingRequest("display_lang", Kind.GLASSES, "en")),
        ("change the wake word to Hey Ring", SettingRequest("wake_word", Kind.EARPHONES, "Hey Ring")),
        ("turn the earphones volume up", SettingRequest("volume", Kind.EARPHONES, step=+1)),
        ("戒指震动弱一点", SettingRequest("haptic_strength", Kind.RING, step=-1)),
        (
            "quiet hours from 10pm to 7am",
            SettingRequest("quiet_hours", None, {"start": "22:00", "end": "07:00"}),
        ),
        ("免打扰时间晚上十点到早上七点", SettingRequest("quiet_hours", None, {"start": "22:00", "end": "07:00"})),
        ("turn off quiet hours", SettingRequest("quiet_hours", None, None)),
    ],
)
def test_sentences(text: str, want: SettingRequest) -> None:
    assert parse(text) == want


@pytest.mark.parametrize(
    "text", ["order my usual noodles", "what's my heart rate", "帮我打车去杭州东站", "remind me in 5 minutes", ""]
)
def test_other_sentences_are_not_settings(text: str) -> None:
    assert parse(text) is None


#: Words of settings requests and of ordinary sentences, English and Chinese, for sentences made at random.
_WORDS = (
    "turn", "off", "on", "stop", "start", "the", "glasses", "ring", "earbuds", "phone", "brightness", "volume", "dim",
    "louder", "vibration", "heart rate", "every", "5", "minutes", "hours", "quiet hours", "from", "10pm", "to", "7am",
    "do not disturb", "wake word", "hey nova", "display", "language", "chinese", "english", "steps", "sleep",
    "blood oxygen", "how many", "today", "what time is it", "order", "noodles", "30%", "down", "up", "a bit", "-",
    "眼镜", "戒指", "耳机", "亮度", "调低", "一点", "音量", "关闭", "打开", "心率", "每隔", "五分钟",
    "免打扰", "晚上十点", "到", "早上七点", "唤醒词", "改成", "显示", "英文", "中文", "步数", "睡眠", "今天",
    "走了多少步", "帮我", "点外卖",
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=8), st.sampled_from([" ", ""]))
def test_the_quick_refusal_never_turns_away_a_settings_request(words: list[str], sep: str) -> None:
    """``parse`` turns a sentence away with one search when it holds no trigger word; the full parse (every branch
    tried) must agree on every sentence."""
    text = sep.join(words)
    quick = parse(text)
    everything = re.compile("")  # matches every sentence: the full parse
    original = settings_skill.TRIGGER
    settings_skill.TRIGGER = everything
    try:
        full = parse(text)
    finally:
        settings_skill.TRIGGER = original
    assert quick == full


def test_tiers() -> None:
    assert tier(SettingRequest("brightness", Kind.GLASSES, step=-1)) == 0
    assert tier(SettingRequest("streams", Kind.RING, "spo2", stream_on=False)) == 1
    assert tier(SettingRequest("streams", Kind.RING, "spo2", stream_on=True)) == 0
    assert tier(SettingRequest("wake_word", Kind.EARPHONES, "x")) == 1


def rig(lang: str = "en") -> Rig:
    r = Rig(AgentCore(config(lang)))
    for kind in (Kind.RING, Kind.GLASSES, Kind.EARPHONES):
        r.state(kind, True, settings=setting_keys(kind))
    return r


def spoken(out: Any) -> list[str]:
    return [c.body.text for c in out.commands if isinstance(c.body, Speak)]


def titles(out: Any) -> str:
    return " | ".join(
        f"{getattr(c.body, 'title', getattr(c.body, 'text', ''))} {getattr(c.body, 'body', '')}".replace("\n", " ")
        for c in out.commands
    )


def test_low_impact_is_just_done_and_builds_on_what_is_known() -> None:
    r = rig()
    r.feed(
        r.message(
            reported_topic(r.dev(Kind.GLASSES)),
            r.envelope(ShadowReported(version=0, settings=GlassesSettings(brightness=0.7))),
        )
    )
    out = r.say("turn the glasses brightness down")
    assert len(out.desired) == 1
    dev, doc = out.desired[0]
    assert dev == r.dev(Kind.GLASSES)
    assert doc.version == 1
    assert isinstance(doc.settings, GlassesSettings)
    assert doc.settings.brightness == 0.5
    assert doc.by == "agent"
    assert "Brightness set to 50%" in titles(out)
    again = r.say("turn the glasses brightness down")
    assert again.desired[0][1].version == 2
    assert isinstance(again.desired[0][1].settings, GlassesSettings)
    assert again.desired[0][1].settings.brightness == 0.3


def test_chinese_ring_interval() -> None:
    r = rig("zh")
    out = r.say("把戒指心率测量改成每五分钟", lang="zh")
    dev, doc = out.desired[0]
    assert dev.kind is Kind.RING
    assert isinstance(doc.settings, RingSettings)
    assert doc.settings.hr_interval_s == 300
    assert "心率测量间隔已设为5 min" in titles(out)


def test_turning_a_stream_off_asks_first() -> None:
    r = rig()
    out = r.say("turn off blood oxygen tracking on my ring")
    assert out.desired == []
    assert "Turn off blood-oxygen tracking on the ring?" in titles(out)
    yes = r.say("yes")
    _, doc = yes.desired[0]
    assert isinstance(doc.settings, RingSettings)
    assert doc.settings.streams == ["hr", "hrv", "skin_temp", "sleep", "steps"]
    r.say("stop heart rate tracking")
    no = r.say("no")
    assert no.desired == []
    assert "left as it is" in titles(no)


def test_a_setting_the_device_cannot_apply_is_refused_at_set_time() -> None:
    r = rig()
    r.state(Kind.RING, True, settings=["hr_interval_s"])
    out = r.say("make the ring vibration weaker")
    assert out.desired == []
    assert "can't change that setting" in titles(out)


def test_context_knows_desired_vs_applied_and_tells_rejections() -> None:
    r = rig()
    out = r.say("quiet hours from 10pm to 7am")
    assert {d.kind for d, _ in out.desired} == {Kind.RING, Kind.GLASSES, Kind.EARPHONES}
    buds_doc = next(doc for d, doc in out.desired if d.kind is Kind.EARPHONES)
    r.feed(r.message(desired_topic(r.dev(Kind.EARPHONES)), r.envelope(buds_doc)))
    applied = ShadowReported(
        version=buds_doc.version, settings=EarphonesSettings(quiet_hours=buds_doc.settings.quiet_hours)
    )
    r.feed(r.message(reported_topic(r.dev(Kind.EARPHONES)), r.envelope(applied)))
    ctx = r.core.context("alice")
    assert ctx is not None
    done, waiting = where_applied(ctx, "quiet_hours")
    assert len(done) == 1
    assert done[0].startswith("earphones/")
    assert all(not w.startswith("earphones/") for w in waiting)
    assert any(w.startswith("ring/") for w in waiting)
    snap = r.core.snapshot("alice")
    ring_key = next(k for k in snap.settings if k.startswith("ring/"))
    buds_key = next(k for k in snap.settings if k.startswith("earphones/"))
    assert snap.settings[buds_key]["quiet_hours"] == "applied"
    assert snap.settings[ring_key]["quiet_hours"] == "pending"

    ring_doc = ShadowDesired(version=2, settings=RingSettings(hr_interval_s=60))
    r.feed(r.message(desired_topic(r.dev(Kind.RING)), r.envelope(ring_doc)))
    rejected = ShadowReported(version=2, settings=RingSettings(), rejected={"hr_interval_s": "battery saver is on"})
    told = r.feed(r.message(reported_topic(r.dev(Kind.RING)), r.envelope(rejected)))
    assert "The ring did not apply it" in titles(told)
    assert r.core.snapshot("alice").settings[ring_key]["hr_interval_s"] == "rejected: battery saver is on"
    again = r.feed(r.message(reported_topic(r.dev(Kind.RING)), r.envelope(rejected)))
    assert "did not apply" not in titles(again)  # told once


def test_settings_survive_a_restore() -> None:
    r = rig()
    r.say("set glasses brightness to 40%")
    state = r.core.export_state()
    core = AgentCore(config("en"))
    core.restore(state)
    ctx = core.context("alice")
    assert ctx is not None
    glasses = next(v for k, v in ctx.settings.devices.items() if k.startswith("glasses/"))
    assert glasses.desired == {"brightness": 0.4}
    assert load(type(glasses), dump(glasses)) == glasses


def test_a_write_never_heard_back_is_published_again_a_few_times() -> None:
    r = rig()
    out = r.say("set glasses brightness to 40%")
    [(dev, doc)] = out.desired
    assert r.tick(5).desired == []  # too soon: the echo may still be on its way
    again = r.tick(6).desired
    assert again == [(dev, doc.model_copy(update={"by": "agent"}))]
    r.tick(11)
    r.tick(11)
    assert r.tick(11).desired == []  # at most three times
    heard = Rig(AgentCore(config("en")))
    heard.state(Kind.GLASSES, True, settings=setting_keys(Kind.GLASSES))
    [(dev, doc)] = heard.say("set glasses brightness to 40%").desired
    heard.feed(heard.message(desired_topic(dev), heard.envelope(doc)))  # the agent hears its own write
    assert heard.tick(30).desired == []


def test_a_ring_press_confirms_a_settings_change() -> None:
    r = rig()
    assert r.say("change the wake word to Hey Ring").desired == []
    pressed = r.send(Kind.RING, RingGesture(gesture="press"))
    [(dev, doc)] = pressed.desired
    assert dev.kind is Kind.EARPHONES
    assert isinstance(doc.settings, EarphonesSettings)
    assert doc.settings.wake_word == "Hey Ring"
    r.say("stop sleep tracking")
    r.tick(CONFIRM_S + 1)  # nobody answered: it lapses
    assert r.send(Kind.RING, RingGesture(gesture="press")).desired == []
