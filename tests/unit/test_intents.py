"""One-sentence understanding: English and Chinese utterances to skills with slots, replies or unknown."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.intents import (
    MAX_CHARS,
    Intent,
    Reply,
    ReplyKind,
    Skill,
    Unknown,
    detect_lang,
    normalize_text,
    parse,
    parse_slot_answer,
)

ABSENT = object()  # the slot must not be set

# (utterance, skill, slots that must be present with these values; ABSENT: must not be present)
INTENTS: list[tuple[str, Skill, dict[str, object]]] = [
    # order_food
    ("Order my usual noodles", Skill.ORDER_FOOD, {"dish": "noodles", "usual": 1}),
    ("Order my usual beef noodles.", Skill.ORDER_FOOD, {"dish": "beef noodles", "usual": 1}),
    ("Get a latte to the office, under 30 yuan", Skill.ORDER_FOOD,
     {"dish": "latte", "address": "office", "budget": 30, "currency": "CNY"}),
    ("Order two lattes from Starbucks, less sugar", Skill.ORDER_FOOD,
     {"qty": 2, "dish": "lattes", "restaurant": "Starbucks", "notes": "less sugar"}),
    ("I want to eat beef noodles", Skill.ORDER_FOOD, {"dish": "beef noodles", "qty": ABSENT}),
    ("Order food", Skill.ORDER_FOOD, {"dish": ABSENT}),
    ("帮我点一份上次那家的牛肉面", Skill.ORDER_FOOD, {"dish": "牛肉面", "usual": 1, "qty": 1}),
    ("点杯拿铁送到公司，30块以内", Skill.ORDER_FOOD,
     {"dish": "拿铁", "address": "office", "budget": 30, "qty": ABSENT}),
    ("帮我在麦当劳点个汉堡，不要香菜，少辣", Skill.ORDER_FOOD,
     {"dish": "汉堡", "restaurant": "麦当劳", "notes": "不要香菜,少辣"}),
    ("两杯拿铁，少糖，送到公司", Skill.ORDER_FOOD, {"dish": "拿铁", "qty": 2, "address": "office"}),
    ("一百零五块以内点外卖", Skill.ORDER_FOOD, {"budget": 105, "dish": ABSENT}),
    # hail_ride
    ("Get me a taxi to Hangzhou East Station.", Skill.HAIL_RIDE, {"destination": "Hangzhou East Station"}),
    ("Car home in 10 minutes", Skill.HAIL_RIDE, {"destination": "home", "delay_min": 10}),
    ("Get me a cab to the airport at 3pm", Skill.HAIL_RIDE, {"destination": "airport", "at": "15:00"}),
    ("Book a premium car for 3 people to the airport", Skill.HAIL_RIDE,
     {"destination": "airport", "product": "premium", "passengers": 3}),
    ("Pick me up from the hotel and take me to the airport", Skill.HAIL_RIDE,
     {"pickup": "hotel", "destination": "airport"}),
    ("帮我打车去杭州东站", Skill.HAIL_RIDE, {"destination": "杭州东站"}),
    ("十分钟后叫车回家", Skill.HAIL_RIDE, {"destination": "home", "delay_min": 10}),
    ("半小时后帮我叫个车去公司", Skill.HAIL_RIDE, {"destination": "office", "delay_min": 30}),
    ("叫辆专车去机场，三个人", Skill.HAIL_RIDE,
     {"destination": "机场", "product": "premium", "passengers": 3}),
    ("从西湖打车到杭州东站", Skill.HAIL_RIDE, {"pickup": "西湖", "destination": "杭州东站"}),
    # navigate
    ("Walk me to the nearest subway", Skill.NAVIGATE, {"destination": "nearest subway", "mode": "walk"}),
    ("Navigate home", Skill.NAVIGATE, {"destination": "home", "mode": ABSENT}),
    ("Take the subway to West Lake", Skill.NAVIGATE, {"destination": "West Lake", "mode": "transit"}),
    ("How do I get to the train station by bike?", Skill.NAVIGATE,
     {"destination": "train station", "mode": "bike"}),
    ("Where is the nearest toilet?", Skill.NAVIGATE, {"destination": "nearest toilet"}),
    ("带我去最近的地铁站", Skill.NAVIGATE, {"destination": "最近的地铁站", "mode": ABSENT}),
    ("最近的地铁站怎么走", Skill.NAVIGATE, {"destination": "最近的地铁站"}),
    ("坐地铁去西湖", Skill.NAVIGATE, {"destination": "西湖", "mode": "transit"}),
    ("骑车去公司", Skill.NAVIGATE, {"destination": "office", "mode": "bike"}),
    ("导航回家", Skill.NAVIGATE, {"destination": "home"}),
    # translate
    ("Translate what she's saying", Skill.TRANSLATE, {"mode": "conversation"}),
    ("What does this menu say?", Skill.TRANSLATE, {"mode": "photo"}),
    ("Translate from Japanese to English", Skill.TRANSLATE, {"source_lang": "ja", "target_lang": "en"}),
    ('How do you say "thank you" in Japanese?', Skill.TRANSLATE, {"text": "thank you", "target_lang": "ja"}),
    ("Turn on live captions", Skill.TRANSLATE, {"mode": "caption"}),
    ("把她说的翻译成中文", Skill.TRANSLATE, {"mode": "conversation", "target_lang": "zh"}),
    ("这个菜单写的什么？", Skill.TRANSLATE, {"mode": "photo"}),
    ("谢谢用日语怎么说", Skill.TRANSLATE, {"text": "谢谢", "target_lang": "ja"}),
    ("打开字幕，翻译成英文", Skill.TRANSLATE, {"mode": "caption", "target_lang": "en"}),
    # teleprompter
    ("Start my keynote script", Skill.TELEPROMPTER, {"script": "keynote"}),
    ("Open the teleprompter with the launch speech", Skill.TELEPROMPTER, {"script": "launch"}),
    ("Start the teleprompter, auto scroll", Skill.TELEPROMPTER, {"advance": "auto", "script": ABSENT}),
    ("打开提词器，用发布会的稿子", Skill.TELEPROMPTER, {"script": "发布会"}),
    ("用年会的演讲稿打开提词器", Skill.TELEPROMPTER, {"script": "年会"}),
    # capture
    ("Take a photo", Skill.CAPTURE, {"kind": "photo", "duration_s": ABSENT}),
    ("Record 30 seconds", Skill.CAPTURE, {"kind": "video", "duration_s": 30}),
    ("Shoot a video for half a minute", Skill.CAPTURE, {"kind": "video", "duration_s": 30}),
    ("Take 3 photos", Skill.CAPTURE, {"kind": "photo", "count": 3}),
    ("拍张照", Skill.CAPTURE, {"kind": "photo"}),
    ("录30秒视频", Skill.CAPTURE, {"kind": "video", "duration_s": 30}),
    ("录一分钟视频", Skill.CAPTURE, {"kind": "video", "duration_s": 60}),
    ("拍三张照片", Skill.CAPTURE, {"kind": "photo", "count": 3}),
    # remind
    ("Remind me to drink water every hour", Skill.REMIND,
     {"text": "drink water", "every_min": 60, "recurrence": "interval"}),
    ("Remind me to call mom in 20 minutes", Skill.REMIND, {"text": "call mom", "delay_min": 20}),
    ("Remind me at 3pm to call mom", Skill.REMIND, {"text": "call mom", "at": "15:00"}),
    ("Remind me tomorrow at 8 to take my pills", Skill.REMIND,
     {"text": "take my pills", "day": "tomorrow", "at": "08:00"}),
    ("Remind me tonight at 8 to call mom", Skill.REMIND, {"at": "20:00", "day": "today"}),
    ("Remind me every weekday at 8am to check email", Skill.REMIND,
     {"text": "check email", "recurrence": "weekdays", "at": "08:00"}),
    ("Remind me in an hour and a half to leave", Skill.REMIND, {"text": "leave", "delay_min": 90}),
    ("Remind me on Monday to call Bob", Skill.REMIND, {"text": "call Bob", "day": "mon"}),
    ("Set an alarm for 7am", Skill.REMIND, {"at": "07:00", "alarm": 1, "text": ABSENT}),
    ("每小时提醒我喝水", Skill.REMIND, {"text": "喝水", "every_min": 60}),
    ("明天早上八点提醒我开会", Skill.REMIND, {"text": "开会", "day": "tomorrow", "at": "08:00"}),
    ("提醒我下午三点半给妈妈打电话", Skill.REMIND, {"text": "给妈妈打电话", "at": "15:30"}),
    ("20分钟后提醒我关火", Skill.REMIND, {"text": "关火", "delay_min": 20}),
    ("每隔两个小时提醒我活动一下", Skill.REMIND, {"every_min": 120}),
    ("每周一提醒我交周报", Skill.REMIND, {"text": "交周报", "day": "mon", "recurrence": "weekly"}),
    ("提醒我三点一刻开会", Skill.REMIND, {"at": "15:15"}),
    ("提醒我多喝一点水", Skill.REMIND, {"text": "多喝一点水", "at": ABSENT}),  # 一点 = "a little"
    ("每天早上7点提醒我吃药", Skill.REMIND, {"text": "吃药", "recurrence": "daily", "at": "07:00"}),
    # health_query
    ("How did I sleep?", Skill.HEALTH_QUERY, {"metric": "sleep", "measure": ABSENT}),
    ("Measure my heart rate", Skill.HEALTH_QUERY, {"metric": "hr", "measure": 1}),
    ("What's my blood oxygen right now?", Skill.HEALTH_QUERY, {"metric": "spo2", "period": "now"}),
    ("Check my sleep last night", Skill.HEALTH_QUERY,
     {"metric": "sleep", "period": "last_night", "measure": ABSENT}),
    ("What's my HRV?", Skill.HEALTH_QUERY, {"metric": "hrv"}),
    ("How many steps today?", Skill.HEALTH_QUERY, {"metric": "steps", "period": "today"}),
    ("我昨晚睡得怎么样？", Skill.HEALTH_QUERY, {"metric": "sleep", "period": "last_night"}),
    ("测一下心率", Skill.HEALTH_QUERY, {"metric": "hr", "measure": 1}),
    ("测一下血氧", Skill.HEALTH_QUERY, {"metric": "spo2", "measure": 1}),
    ("我这周压力怎么样", Skill.HEALTH_QUERY, {"metric": "stress", "period": "week"}),
    ("我的体温多少", Skill.HEALTH_QUERY, {"metric": "temp"}),
    # music
    ("Play something calm", Skill.MUSIC, {"query": "calm", "action": "play"}),
    ("Play Jay Chou on QQ Music", Skill.MUSIC, {"query": "Jay Chou", "app": "qq_music"}),
    ("Next song", Skill.MUSIC, {"action": "next", "query": ABSENT}),
    ("stop the music", Skill.MUSIC, {"action": "pause"}),
    ("放点轻松的音乐", Skill.MUSIC, {"query": "轻松", "action": "play"}),
    ("我想听周杰伦的歌", Skill.MUSIC, {"query": "周杰伦"}),
    ("来一首七里香", Skill.MUSIC, {"query": "七里香"}),
    ("放首歌", Skill.MUSIC, {"query": ABSENT}),
    ("下一首", Skill.MUSIC, {"action": "next"}),
    # meeting_notes
    ("Take notes for this meeting", Skill.MEETING_NOTES, {"title": ABSENT}),
    ("Take notes for the budget meeting", Skill.MEETING_NOTES, {"title": "budget"}),
    ("帮我记一下这个会", Skill.MEETING_NOTES, {"title": ABSENT}),
    ("记录一下产品评审会", Skill.MEETING_NOTES, {"title": "产品评审会"}),
    # price_lookup
    ("How much is this on Taobao?", Skill.PRICE_LOOKUP, {"platform": "taobao", "item": ABSENT}),
    ("How much is an iPhone 15 on JD?", Skill.PRICE_LOOKUP, {"platform": "jd", "item": "iPhone 15"}),
    ("这个在淘宝上多少钱？", Skill.PRICE_LOOKUP, {"platform": "taobao", "item": ABSENT}),
    # wake words are stripped
    ("Hey Qwen, order my usual noodles", Skill.ORDER_FOOD, {"dish": "noodles", "usual": 1}),
    ("千问，帮我打车去杭州东站", Skill.HAIL_RIDE, {"destination": "杭州东站"}),
    ("小问拍张照", Skill.CAPTURE, {"kind": "photo"}),
    # full-width punctuation and digits
    ("点杯拿铁送到公司，３０块以内。", Skill.ORDER_FOOD, {"budget": 30, "address": "office"}),
]  # fmt: skip

REPLIES: list[tuple[str, ReplyKind]] = [
    *[(w, ReplyKind.CONFIRM) for w in ("yes", "yeah", "ok", "sure", "confirm", "do it", "go ahead")],
    *[(w, ReplyKind.CONFIRM) for w in ("好的", "好", "确认", "可以", "行", "是的", "嗯")],
    *[(w, ReplyKind.DENY) for w in ("no", "nope", "don't", "不要", "不用", "不")],
    *[(w, ReplyKind.CANCEL) for w in ("cancel", "stop", "never mind", "forget it", "算了", "取消", "不要了")],
    ("Yes, do it.", ReplyKind.CONFIRM),
    ("YES!", ReplyKind.CONFIRM),
    ("yes please", ReplyKind.CONFIRM),
    ("好的谢谢", ReplyKind.CONFIRM),
    ("嗯嗯，没问题", ReplyKind.CONFIRM),
    ("no thanks", ReplyKind.DENY),
    ("不行", ReplyKind.DENY),
    ("不可以", ReplyKind.DENY),  # not 可以
    ("no, cancel it", ReplyKind.CANCEL),  # the strongest kind wins
    ("OK, cancel", ReplyKind.CANCEL),
    ("好的，取消吧", ReplyKind.CANCEL),
    ("cancel my ride", ReplyKind.CANCEL),
    ("No, stop the navigation", ReplyKind.CANCEL),
    ("Never mind, I'll walk", ReplyKind.CANCEL),
    ("取消订单", ReplyKind.CANCEL),
    ("别叫车了", ReplyKind.CANCEL),
    ("不用了", ReplyKind.CANCEL),
    ("Qwen, cancel", ReplyKind.CANCEL),
]

UNKNOWN = [
    "yesterday",  # contains "yes"
    "I said yesterday",
    "What's the weather like?",
    "Tell me a joke",
    "今天天气怎么样",
    "Hey Qwen",  # a wake word alone
    "千问",
    "",
    "   ",
    "😀🎉",
    "好吗",
]


@pytest.mark.parametrize(("text", "skill", "slots"), INTENTS, ids=[t for t, _, _ in INTENTS])
def test_intent_table(text: str, skill: Skill, slots: dict[str, object]) -> None:
    parsed = parse(text)
    assert isinstance(parsed, Intent), parsed
    assert parsed.skill is skill
    assert parsed.text == text
    for name, want in slots.items():
        if want is ABSENT:
            assert name not in parsed.slots, dict(parsed.slots)
        else:
            assert parsed.slots.get(name) == want, dict(parsed.slots)


def test_table_covers_every_skill_in_both_languages() -> None:
    seen = {(skill, detect_lang(text)) for text, skill, _ in INTENTS}
    assert seen == {(skill, lang) for skill in Skill for lang in ("en", "zh")}
    assert len(INTENTS) >= 60


@pytest.mark.parametrize(("text", "kind"), REPLIES, ids=[t for t, _ in REPLIES])
def test_reply_table(text: str, kind: ReplyKind) -> None:
    parsed = parse(text)
    assert isinstance(parsed, Reply), parsed
    assert parsed.kind is kind
    assert parsed.text == text


@pytest.mark.parametrize("text", UNKNOWN)
def test_unknown(text: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed, Unknown), parsed
    assert parsed.text == text


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Take a photo", "en"),
        ("拍张照", "zh"),
        ("Navigate to 西湖", "en"),
        ("Play 周杰伦", "en"),
        ("打车去 Hangzhou East Station", "zh"),
        ("iPhone 15在淘宝上多少钱", "zh"),
        ("How do you say 谢谢 in Japanese", "en"),
        ("把hello翻译成中文", "zh"),
        ("千问", "zh"),
        ("12345", "en"),
        ("", "en"),
    ],
)
def test_detect_lang(text: str, lang: str) -> None:
    assert detect_lang(text) == lang
    assert parse(text).lang == lang


@pytest.mark.parametrize(
    ("tag", "text", "lang"),
    [
        ("zh", "OK", "zh"),  # ASR says Chinese: answer in Chinese, still a confirm
        ("zh-CN", "yes", "zh"),
        ("zh_TW", "Take a photo", "zh"),
        ("en-US", "好的", "en"),
        ("fr", "好的", "zh"),  # neither: detected
        (None, "好的", "zh"),
    ],
)
def test_given_language_tag_sets_lang_and_other_tables_still_match(tag: str | None, text: str, lang: str) -> None:
    parsed = parse(text, tag)
    assert parsed.lang == lang
    assert not isinstance(parsed, Unknown)


@pytest.mark.parametrize(
    ("skill", "slot", "text", "value"),
    [
        (Skill.HAIL_RIDE, "destination", "to the airport", "airport"),
        (Skill.HAIL_RIDE, "destination", "去机场", "机场"),
        (Skill.HAIL_RIDE, "destination", "um, the airport please", "airport"),
        (Skill.HAIL_RIDE, "destination", "家", "home"),
        (Skill.HAIL_RIDE, "destination", "Hangzhou East Station", "Hangzhou East Station"),
        (Skill.NAVIGATE, "destination", "嗯，去杭州东站吧", "杭州东站"),
        (Skill.ORDER_FOOD, "dish", "beef noodles", "beef noodles"),
        (Skill.ORDER_FOOD, "dish", "牛肉面", "牛肉面"),
        (Skill.ORDER_FOOD, "dish", "I'd like a latte", "latte"),
        (Skill.ORDER_FOOD, "dish", "来一份牛肉面", "牛肉面"),
        (Skill.ORDER_FOOD, "address", "送到公司", "office"),
        (Skill.ORDER_FOOD, "budget", "30 yuan", 30),
        (Skill.ORDER_FOOD, "budget", "两百五十块", 250),
        (Skill.ORDER_FOOD, "budget", "under 12.5 dollars", 12.5),
        (Skill.ORDER_FOOD, "qty", "两份", 2),
        (Skill.ORDER_FOOD, "qty", "a couple", 2),
        (Skill.HAIL_RIDE, "delay_min", "in ten minutes", 10),
        (Skill.HAIL_RIDE, "delay_min", "十五分钟", 15),
        (Skill.HAIL_RIDE, "delay_min", "半小时", 30),
        (Skill.HAIL_RIDE, "delay_min", "10", 10),
        (Skill.HAIL_RIDE, "passengers", "三个人", 3),
        (Skill.REMIND, "at", "3pm", "15:00"),
        (Skill.REMIND, "at", "晚上八点", "20:00"),
        (Skill.REMIND, "at", "中午十二点半", "12:30"),
        (Skill.REMIND, "text", "drink water", "drink water"),
        (Skill.REMIND, "text", "call mom at 3", "call mom"),
        (Skill.TRANSLATE, "target_lang", "Chinese", "zh"),
        (Skill.TRANSLATE, "target_lang", "英文", "en"),
        (Skill.NAVIGATE, "mode", "walking", "walk"),
        (Skill.NAVIGATE, "mode", "开车", "drive"),
        (Skill.CAPTURE, "duration_s", "半分钟", 30),
        (Skill.CAPTURE, "duration_s", "two minutes", 120),
        (Skill.HEALTH_QUERY, "metric", "heart rate", "hr"),
        (Skill.TELEPROMPTER, "script", "发布会的稿子", "发布会"),
        ("music", "query", "周杰伦", "周杰伦"),  # a plain string names the skill too
    ],
)
def test_parse_slot_answer(skill: Skill | str, slot: str, text: str, value: object) -> None:
    assert parse_slot_answer(skill, slot, text) == value


@pytest.mark.parametrize(
    ("skill", "slot", "text"),
    [
        (Skill.HAIL_RIDE, "destination", "cancel"),
        (Skill.HAIL_RIDE, "destination", "no"),
        (Skill.ORDER_FOOD, "dish", "好的"),
        (Skill.ORDER_FOOD, "dish", ""),
        (Skill.ORDER_FOOD, "dish", "something"),
        (Skill.NAVIGATE, "mode", "whatever"),  # an enum slot needs a known word
        (Skill.ORDER_FOOD, "budget", "cheap"),
    ],
)
def test_parse_slot_answer_gives_none_when_nothing_usable(skill: Skill, slot: str, text: str) -> None:
    assert parse_slot_answer(skill, slot, text) is None


def test_parse_slot_answer_rejects_unknown_skill() -> None:
    with pytest.raises(ValueError, match="pay"):
        parse_slot_answer("pay", "amount", "30")


def test_non_str_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse(b"yes")  # type: ignore[arg-type]


def test_slots_are_read_only_and_results_hashable() -> None:
    parsed = parse("Take a photo")
    assert isinstance(parsed, Intent)
    with pytest.raises(TypeError):
        parsed.slots["kind"] = "video"  # type: ignore[index]
    assert hash(parsed) == hash(parse("Take a photo"))


def test_overlong_input_is_unknown() -> None:
    text = "remind me to " + "x" * MAX_CHARS
    assert isinstance(parse(text), Unknown)


def test_normalize_text_folds_full_width_and_drops_controls() -> None:
    assert normalize_text("  好的，\u200b谢谢！\x00ＯＫ１２。 ") == "好的, 谢谢! OK12."
    assert normalize_text("“hi”\t‘there’") == "\"hi\" 'there'"


# --- properties

ANY_TEXT = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()),  # every category: controls, surrogates, ...
    max_size=80,
)
MIXED_TEXT = st.lists(
    st.sampled_from([t for t, _, _ in INTENTS] + [t for t, _ in REPLIES] + ["🙂", "\x07", "，", " ", "３"]),
    max_size=4,
).map(" ".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(ANY_TEXT, MIXED_TEXT), lang=st.sampled_from([None, "en", "zh", "zh-CN", "xx", ""]))
def test_parse_never_raises_and_is_deterministic(text: str, lang: str | None) -> None:
    first = parse(text, lang)
    assert first == parse(text, lang)
    assert first.lang in ("en", "zh")
    assert first.text == text
    if isinstance(first, Intent):
        for name, value in first.slots.items():
            assert isinstance(name, str)
            assert isinstance(value, str | int | float)
            assert value != ""


@settings(max_examples=200, deadline=None)
@given(
    text=ANY_TEXT,
    skill=st.sampled_from(list(Skill)),
    slot=st.sampled_from(["destination", "dish", "budget", "at", "delay_min", "text", "mode", "qty", "x"]),
)
def test_parse_slot_answer_never_raises(text: str, skill: Skill, slot: str) -> None:
    value = parse_slot_answer(skill, slot, text)
    assert value is None or isinstance(value, str | int | float)
    assert value == parse_slot_answer(skill, slot, text)


@settings(max_examples=100, deadline=None)
@given(
    case=st.sampled_from(INTENTS),
    wake=st.sampled_from(["", "Hey Qwen, ", "千问，", "小问", "OK Qwen "]),
    tail=st.sampled_from(["", "!", "。", "？", " "]),
)
def test_wake_word_and_trailing_punctuation_do_not_change_the_meaning(
    case: tuple[str, Skill, dict[str, object]], wake: str, tail: str
) -> None:
    text, skill, _ = case
    plain = parse(text)
    decorated = parse(wake + text + tail, plain.lang)
    assert isinstance(plain, Intent)
    assert isinstance(decorated, Intent)
    assert decorated.skill is skill
    assert dict(decorated.slots) == dict(plain.slots)


@settings(max_examples=100, deadline=None)
@given(case=st.sampled_from(INTENTS), upper=st.booleans())
def test_full_width_and_case_forms_parse_alike(case: tuple[str, Skill, dict[str, object]], upper: bool) -> None:
    text, skill, _ = case
    # Full-width ASCII (U+FF01..U+FF5E) is what Chinese IMEs and some ASR engines emit.
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in (text.upper() if upper else text))
    parsed = parse(wide)
    assert isinstance(parsed, Intent)
    assert parsed.skill is skill
