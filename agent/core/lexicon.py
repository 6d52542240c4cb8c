"""Word lists and pattern tables (English and Chinese) that drive the one-sentence intent parser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# Every pattern here is compiled once by agent.core.intents with re.IGNORECASE, and is matched against
# text that normalize_text() has cleaned: NFKC (full-width "，？！：" become ",?!:"), "。" -> ".",
# "、" -> ",", curly quotes -> straight ones, no control characters, single spaces. Hence the ASCII
# punctuation in the patterns. The tables are kept compact on purpose (one rule a line): fmt: off.

SlotValue = str | int | float


class Conv(StrEnum):
    """How a slot rule turns the text it matched (its group ``v``, else the whole match) into a value."""

    TEXT = "text"  # free text, trimmed; None if it is a generic word (STOP_VALUES)
    PLACE = "place"  # "home" / "office" when it names one, else trimmed text
    INT = "int"  # a whole number: digits, English words or Chinese numerals
    MONEY = "money"  # the first number, int when whole
    DELAY_MIN = "delay_min"  # a duration in minutes ("in half an hour" -> 30)
    DURATION_S = "duration_s"  # a duration in seconds
    EVERY_MIN = "every_min"  # an interval in minutes; a missing count means one ("every hour" -> 60)
    CLOCK = "clock"  # a clock time as "HH:MM" (24 h)
    WEEKDAY = "weekday"  # "mon" .. "sun"
    DAYPART = "daypart"  # morning | noon | afternoon | evening | night
    LANG = "lang"  # a language name -> ISO 639-1 code (zh, en, ja, ...)


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """One slot rule: where a slot is said, and what value it gets.

    Rules of a skill run in order over a working copy of the sentence. The first rule that matches a slot
    sets it; later rules for the same slot are skipped. A consuming rule cuts what it matched out of the
    working copy, so later rules (for example a free-text dish or reminder text) do not see it.

    Attributes:
        slot: the slot name.
        pattern: a regular expression; the value is read from its group ``v`` (or ``v2``) when it has one.
        value: a constant, or a Conv naming the converter for the matched text.
        consume: cut the match out of the working copy.
        also: further constant slots set (if still unset) when this rule matches.
    """

    slot: str
    pattern: str
    value: SlotValue | Conv = Conv.TEXT
    consume: bool = True
    also: tuple[tuple[str, SlotValue], ...] = ()


def _alt(words: tuple[str, ...] | list[str]) -> str:
    """A regex alternation of literal words, longest first (so "nineteen" is tried before "nine")."""
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w))) + ")"


# fmt: off

# ---------------------------------------------------------------------------------------------------------
# Wake words: stripped from the start of an utterance.

WAKE = (
    r"^(?:(?:hey|hi|hello|ok|okay|yo)\b[\s,]*|嘿[\s,]*|你好[\s,]*|哈喽[\s,]*)?"
    r"(?:qwen\b|通义千问|千问|小问|quark\b|夸克)[\s,.!:~]*"
)

# ---------------------------------------------------------------------------------------------------------
# Numbers and durations.

EN_NUMBERS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
EN_ONE = ("a", "an")  # "in an hour", "a minute"
EN_TWO = ("a couple of", "couple of", "a couple")

_EN_TENS = _alt([w for w, n in EN_NUMBERS.items() if n >= 20])
_EN_SMALL = _alt([w for w, n in EN_NUMBERS.items() if n < 20])
_EN_UNITS = _alt([w for w, n in EN_NUMBERS.items() if 0 < n < 10])
NUM_WORD_EN = rf"(?:{_EN_TENS}(?:[\s-]{_EN_UNITS})?|{_EN_SMALL})"
# Digit runs are bounded and may not start inside a longer run, so 500 digits cost linear time.
DIGITS = r"(?<![\d.])\d{1,9}(?:\.\d{1,3})?(?![\d])"
NUM_EN = rf"(?:{DIGITS}|{NUM_WORD_EN}|{_alt(EN_TWO)}|an|a)"  # "a"/"an" count as one
QTY_EN = rf"(?:\d{{1,3}}|{NUM_WORD_EN}|{_alt(EN_TWO)})"  # an explicit count (not "a")
HOUR_EN = rf"(?:\d{{1,2}}|{_alt([w for w, n in EN_NUMBERS.items() if 0 < n <= 12])})"

ZH_DIGITS: dict[str, int] = {
    "零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "仨": 3, "四": 4, "五": 5, "六": 6,
    "七": 7, "八": 8, "九": 9,
}
ZH_UNITS: dict[str, int] = {"十": 10, "百": 100, "千": 1000}
_ZH_NUMERAL = "零〇一二两俩仨三四五六七八九十百千万"
NUM_ZH = rf"(?:{DIGITS}|(?<![{_ZH_NUMERAL}])[{_ZH_NUMERAL}]{{1,12}})"

SECONDS_PER_UNIT: dict[str, int] = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "min": 60, "mins": 60, "minute": 60,
    "minutes": 60, "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "秒": 1, "秒钟": 1, "分": 60, "分钟": 60, "小时": 3600, "钟头": 3600, "刻钟": 900,
}
UNIT_EN = r"(?:seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h)"
UNIT_ZH = r"(?:秒钟?|分钟|分|小时|钟头|刻钟)"
DUR_EN = (
    rf"(?:half\s+(?:an?\s+)?(?:hour|minute)|(?:{NUM_EN})[\s-]*(?:and\s+a\s+half\s+)?{UNIT_EN}"
    rf"(?:\s+and\s+a\s+half)?)(?![\w'])"
)
DUR_ZH = rf"(?:半个?(?:小时|钟头|分钟)|(?:{NUM_ZH})个?半?个?{UNIT_ZH})"
# "every hour" / "每小时": the count may be missing.
EVERY_EN = (
    rf"(?:half\s+(?:an\s+)?hour|(?:(?:{NUM_EN})[\s-]*)?(?:and\s+a\s+half\s+)?{UNIT_EN})(?![\w'])"
)
EVERY_ZH = rf"(?:半个?(?:小时|钟头|分钟)|(?:{NUM_ZH})?个?半?个?{UNIT_ZH})"

# ---------------------------------------------------------------------------------------------------------
# Small vocabularies used by the converters.

WEEKDAYS: dict[str, str] = {
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
    "saturday": "sat", "sunday": "sun",
    "一": "mon", "二": "tue", "三": "wed", "四": "thu", "五": "fri", "六": "sat", "日": "sun", "天": "sun",
    "1": "mon", "2": "tue", "3": "wed", "4": "thu", "5": "fri", "6": "sat", "7": "sun",
}
WEEKDAY_EN = _alt([w for w in WEEKDAYS if w.isascii() and w.isalpha()])

DAYPARTS: dict[str, str] = {
    "morning": "morning", "noon": "noon", "midday": "noon", "lunchtime": "noon", "lunch time": "noon",
    "afternoon": "afternoon", "evening": "evening", "night": "night", "tonight": "evening",
    "凌晨": "night", "清晨": "morning", "早上": "morning", "早晨": "morning", "上午": "morning",
    "中午": "noon", "下午": "afternoon", "傍晚": "evening", "晚上": "evening", "夜里": "night",
    "半夜": "night", "深夜": "night",
}
DAYPART_ZH = _alt([w for w in DAYPARTS if not w.isascii()])

LANGUAGES: dict[str, str] = {
    "chinese": "zh", "mandarin": "zh", "english": "en", "japanese": "ja", "korean": "ko", "french": "fr",
    "german": "de", "spanish": "es", "russian": "ru", "italian": "it", "portuguese": "pt", "arabic": "ar",
    "thai": "th", "vietnamese": "vi", "cantonese": "yue",
    "中文": "zh", "汉语": "zh", "普通话": "zh", "国语": "zh", "华语": "zh", "英文": "en", "英语": "en",
    "日文": "ja", "日语": "ja", "韩文": "ko", "韩语": "ko", "法语": "fr", "法文": "fr", "德语": "de",
    "德文": "de", "西班牙语": "es", "西语": "es", "俄语": "ru", "俄文": "ru", "意大利语": "it",
    "葡萄牙语": "pt", "阿拉伯语": "ar", "泰语": "th", "越南语": "vi", "粤语": "yue",
}
LANG_EN = _alt([w for w in LANGUAGES if w.isascii()])
LANG_ZH = _alt([w for w in LANGUAGES if not w.isascii()])

# Canonical places, so the agent can fill "home" and "office" from its context.
PLACES: dict[str, str] = {
    "home": "home", "my home": "home", "my place": "home", "my house": "home", "house": "home",
    "office": "office", "my office": "office", "work": "office", "my work": "office",
    "the company": "office", "company": "office", "my company": "office", "workplace": "office",
    "家": "home", "我家": "home", "家里": "home", "回家": "home",
    "公司": "office", "单位": "office", "办公室": "office", "我公司": "office",
}

# Kinds of place said without a name ("the train station", 地铁站): the nearest known place of that kind is meant.
# PLACE_KINDS maps what is said (after "the", "nearest", 最近的 are dropped) to a kind; KIND_WORDS are what a
# known place's name or address contains when it is of that kind (a kind's words never match another kind's).
PLACE_KINDS: dict[str, str] = {
    "station": "station", "train station": "station", "railway station": "station", "rail station": "station",
    "火车站": "station", "高铁站": "station", "车站": "station", "动车站": "station",
    "subway": "subway", "subway station": "subway", "metro": "subway", "metro station": "subway", "tube": "subway",
    "tube station": "subway", "地铁站": "subway", "地铁": "subway", "地铁口": "subway",
    "gym": "gym", "the gym": "gym", "健身房": "gym",
}
KIND_WORDS: dict[str, tuple[str, ...]] = {
    "subway": ("subway", "metro", "tube", "地铁"),
    "station": ("station", "railway", "火车站", "高铁站", "东站", "南站", "西站", "北站"),
    "gym": ("gym", "健身"),
}
PLACE_KIND_LEAD = r"^(?:(?:the|a|nearest|closest|near|nearby)\s+)+|^(?:最近的|附近的|离我最近的)"

# Values that name nothing in particular: the slot is left unset rather than filled with them.
STOP_ANY = frozenset({"the", "a", "an", "my", "some", "it", "me", "to", "的", "了", "我"})
STOP_VALUES: dict[str, frozenset[str]] = {
    "dish": frozenset({
        "food", "something", "something to eat", "takeout", "takeaway", "delivery", "food delivery", "lunch",
        "dinner", "breakfast", "meal", "a meal", "外卖", "东西", "饭", "吃的", "喝的", "午饭", "晚饭", "早饭",
        "午餐", "晚餐", "早餐", "点东西", "个外卖",
    }),
    "query": frozenset({
        "music", "some music", "a song", "song", "songs", "something", "anything", "歌", "音乐", "歌曲",
        "首歌", "点歌", "点音乐", "曲子", "一首歌",
    }),
    "item": frozenset({
        "this", "that", "these", "those", "this one", "that one", "这个", "那个", "这", "那", "它",
        "这个东西", "这东西", "这件", "这款",
    }),
    "title": frozenset({
        "this", "meeting", "this meeting", "the meeting", "会", "会议", "这个会", "这次会", "这个会议",
        "这次会议", "今天的会",
    }),
    "script": frozenset({"this", "提词器", "这个"}),
}

# Filler trimmed from both ends of free-text values.
LEAD_EN = r"^(?:(?:the|a|an|some|something|please|just|um|uh)\s+)+"
TRAIL_EN = r"(?:\s+(?:please|for\s+me|right\s+now|now|thanks|thank\s+you|asap))+$"
LEAD_ZH = r"^(?:一下|一个|一份|请|帮我|给我(?![妈爸们老哥姐弟妹儿女爷奶外家])|麻烦|那个|就)+"
TRAIL_ZH = r"(?:吧|呗|啊|呀|哦|呢|嘛|了|的|谢谢|一下)+$"
# Leading words of a bare answer to a question ("I'd like beef noodles", "um, the airport", "来一份牛肉面").
ANSWER_LEAD_EN = (
    r"^(?:(?:um|uh|hmm|well|ok|okay|so|maybe|just|i\s+think|i'd\s+like|i\s+would\s+like|i\s+want"
    r"|let's\s+do|let's\s+go\s+with|make\s+it|how\s+about|go\s+with|please|the)(?:\s*,\s*|\s+))+"
)
ANSWER_LEAD_ZH = r"^(?:嗯|呃|额|那|那就|就|还是|我要|我想要|我想|要|来个|来一份|来|点)+"
PLACE_LEAD_EN = r"^(?:(?:go|get|head|drive|walk|ride|travel|take\s+me|bring\s+me)\s+)?(?:to|towards|into)?\s*"
PLACE_LEAD_ZH = r"^(?:去往|前往|送到|送去|去|到|回)"

# ---------------------------------------------------------------------------------------------------------
# Replies. An utterance is a reply only if it is made of these tokens and fillers, longest token first
# ("不要了" is one token, a cancel; "不要" a deny). The strongest kind said wins: cancel > deny > confirm.

REPLY_EN: dict[str, tuple[str, ...]] = {
    "confirm": (
        "yes", "yeah", "yea", "yep", "yup", "ya", "ok", "okay", "o.k.", "sure", "sure thing", "confirm",
        "confirmed", "i confirm", "do it", "go ahead", "go for it", "please do", "correct", "right",
        "that's right", "that is right", "alright", "all right", "sounds good", "affirmative",
        "absolutely", "of course", "definitely", "book it", "order it", "send it", "buy it", "pay",
        "let's do it", "let's go", "perfect", "great", "fine", "that's fine", "that works",
        "works for me", "good", "uh huh", "mhm", "proceed", "deal", "approved", "yes please",
    ),
    "deny": (
        "no", "nope", "nah", "don't", "dont", "do not", "not now", "no thanks", "no thank you", "wrong",
        "that's wrong", "negative", "not that", "not that one", "i don't want it", "i don't want that",
        "don't do it", "not really", "incorrect", "later", "maybe later", "wait", "hold on", "not yet",
    ),
    "cancel": (
        "cancel", "cancel it", "cancel that", "cancel this", "stop", "stop it", "stop that",
        "never mind", "nevermind", "forget it", "forget about it", "abort", "quit", "exit",
        "call it off", "scratch that", "dismiss", "that's all",
    ),
}
FILLER_EN = (
    "please", "thanks", "thank you", "just", "oh", "uh", "um", "hmm", "well", "then", "actually", "and",
    "it", "that", "this", "i", "said", "hey", "now", "so", "sir", "for now",
)
# A cancel verb may carry an object: "cancel my ride", "no, stop the navigation", "never mind, I'll walk".
# "stop the music" is left to the music skill (it pauses).
_REPLY_LEAD_EN = (
    r"^(?:(?:no|nope|ok|okay|please|just|oh|actually|um|uh|hmm|yes|yeah|and|then|hey|wait)[\s,.!]+)*"
)
CANCEL_OBJECT_EN = (
    _REPLY_LEAD_EN
    + r"(?:cancel|abort|call\s+off|never\s*mind|forget\s+(?:it|about\s+it|that)|scratch\s+that)\b",
    _REPLY_LEAD_EN + r"(?:stop|quit|exit|end|close|turn\s+off|shut\s+down|dismiss)\b"
    r"(?!.*\b(?:music|songs?|playing|playback|tracks?|playlist)\b)",
)

_ZH_STOP_VERBS = (
    "要", "用", "需要", "想要", "买", "点", "打", "叫", "去", "订", "录", "拍", "做", "搞", "弄",
)
REPLY_ZH: dict[str, tuple[str, ...]] = {
    "confirm": (
        "好的", "好", "好啊", "好吧", "好呀", "好嘞", "好滴", "好了", "确认", "确定", "可以", "行", "行吧",
        "是的", "是", "是啊", "嗯", "嗯嗯", "嗯哼", "对", "对的", "对啊", "对对", "没问题", "没错",
        "就这样", "就这个", "就它了", "下单", "确认下单", "付款", "支付", "同意", "要", "要的", "ok",
        "okay", "成", "妥", "没毛病", "去吧", "走吧", "来吧", "yes",
    ),
    "deny": (
        "不要", "不用", "不", "不是", "不对", "不行", "不好", "不可以", "不需要", "不想", "没有", "别",
        "错了", "否", "不同意", "等一下", "等等", "先不要", "先别", "暂时不要", "暂时不用", "还不要",
        "不确认", "no",
    ),
    "cancel": (
        "算了", "算了吧", "取消", "取消吧", "取消掉", "停", "停止", "停下", "退出", "结束", "撤销",
        "没事了", "当我没说", "忘了吧", "别弄了", "cancel", "stop",
        *(f"不{verb}了" for verb in _ZH_STOP_VERBS),
    ),
}
FILLER_ZH = (
    "吧", "啊", "呀", "哦", "噢", "喔", "呢", "嘛", "哈", "啦", "了", "的", "谢谢", "谢了", "麻烦了", "请",
    "那", "那就", "就", "还是", "我", "先", "这个", "那个", "一下", "呃", "额", "嗨", "唉", "哎", "诶",
)
_REPLY_LEAD_ZH = r"^(?:(?:不|嗯|好|那|那就|哎|唉|诶|算了)[\s,.!]*)*"
CANCEL_OBJECT_ZH = (
    _REPLY_LEAD_ZH + r"(?:取消|撤销|算了|不要了|不用了)",
    _REPLY_LEAD_ZH + r"(?:停止|停下|停掉|关掉|关闭|退出|结束)(?!.*(?:音乐|歌|播放))",
    _REPLY_LEAD_ZH + r"别(?:打|叫|点|买|订|录|拍|导航|翻译)(?:车|了)",
)

# ---------------------------------------------------------------------------------------------------------
# Skill triggers: (skill, pattern), tried in order; the first match names the skill. The order settles
# overlaps: "remind me to order food" is a reminder, "take notes" is no photo, "play" comes after the
# teleprompter, a ride beats navigation ("taxi to the airport"), and food is last because "get a ..." is
# so broad.

_MEASURE_ZH = "(?:份|杯|碗|个|盒|瓶|袋|只|串|斤|套|笼|屉)"

TRIGGERS_EN: tuple[tuple[str, str], ...] = (
    ("remind", r"\bremind\b|\breminders?\b|\bdon'?t\s+let\s+me\s+forget\b|\bset\s+(?:an\s+|my\s+)?alarm\b"
               r"|\balarm\s+(?:for|at)\b|\bwake\s+me\b"),
    ("meeting_notes", r"\b(?:take|taking|start\s+taking|keep)\s+(?:meeting\s+)?notes\b"
                      r"|\bmeeting\s+(?:notes|minutes|summary)\b"
                      r"|\b(?:record|transcribe|summari[sz]e|note)\s+(?:this|the|my|our)\s+(?:[\w']+\s+)?"
                      r"(?:meeting|call|standup|sync)\b"),
    ("translate", r"\btranslat\w*|\binterpret\w*|\bwhat\s+(?:does|do|did)\s+"
                  r"(?:this|that|it|these|those|the\s+\w+|this\s+\w+|that\s+\w+)\s+(?:say|mean)\b"
                  r"|\bwhat(?:'s|\s+is)\s+written\b|\bsubtitles?\b|\bcaptions?\b|\bhow\s+do\s+(?:you|i)\s+say\b"),
    ("teleprompter", r"\b(?:tele)?prompter\b|\bautocue\b|\b(?:load|open|pull\s+up)\s+(?:up\s+)?(?:my|the|our)\s+"
                     r"(?:[\w'-]+\s+){0,3}(?:speech|keynote|presentation)\b|\bscript\b|\bspeaker\s+notes\b|\bspeech\s+notes\b"),
    ("capture", r"\b(?:take|snap|grab|shoot)\s+(?:a\s+|an\s+|some\s+|another\s+)?(?:\w+\s+)?"
                r"(?:photos?|pictures?|pics?|shots?|snapshots?|selfies?|videos?|clips?)\b"
                r"|\bphotograph\b|\bcapture\s+(?:this|that|it|a|the)\b|\brecord\b|\bfilm\s+(?:this|that|it)\b"
                r"|\bstart\s+recording\b|\bsay\s+cheese\b"),
    ("music", r"\b(?:play|put\s+on|listen\s+to)\b|\bmusic\b|\bsongs?\b|\bplaylist\b"
              r"|\b(?:next|previous)\s+(?:song|track)\b|\bskip\s+(?:this\s+)?(?:song|track)\b"
              r"|\b(?:pause|resume)\b"),
    ("health_query", r"\bhow\s+(?:did|have)\s+i\s+(?:sleep|slept)\b"
                     r"|\bhow\s+(?:long|well|much)\s+did\s+i\s+sleep\b"
                     r"|\b(?:breathing|respiratory|respiration)\s+rate\b"
                     r"|\bmy\s+sleep\b|\bsleep\s+(?:score|quality|data|last\s+night)\b|\bheart\s*rate\b"
                     r"|\bpulse\b|\bhrv\b|\bsp\s?o2\b|\bblood\s+oxygen\b|\boxygen\s+(?:level|saturation)\b"
                     r"|\bmy\s+stress\b|\bstress\s+(?:level|score)\b|\bam\s+i\s+stressed\b|\bhow\s+stressed\b"
                     r"|\b(?:my|body|skin)\s+temp(?:erature)?\b|\bhow\s+many\s+steps\b|\bmy\s+steps\b"
                     r"|\bstep\s+count\b|\bbpm\b"),
    ("hail_ride", r"\b(?:taxi|cab|uber|lyft|didi)\b|\b(?:get|call|book|order|need|want|hail|request)\s+"
                  r"(?:me\s+|us\s+)?(?:a\s+|an\s+)?(?:[\w-]+\s+)?(?:car|ride)\b"
                  r"|^(?:a\s+)?car\b|\bride\s+(?:to|home)\b|\bpick\s+me\s+up\b"),
    ("navigate", r"\bnavigat\w*|\bdirections?\b"
                 r"|\b(?:walk|take|guide|lead|drive|bring|get)\s+me\s+(?:to|home|there)\b"
                 r"|\bshow\s+me\s+the\s+way\b|\bhow\s+(?:do|can)\s+i\s+get\s+to\b|\bhow\s+to\s+get\s+to\b"
                 r"|\broute\s+to\b|\bway\s+to\b|\bwhere(?:'s|\s+is)\s+the\s+nearest\b"
                 r"|\b(?:walk|bike|cycle|drive)\s+to\b|\bgo\s+home\b"
                 r"|\b(?:take|taking)\s+the\s+(?:bus|subway|metro|train|tube)\s+to\b"),
    ("price_lookup", r"\bhow\s+much\s+(?:is|are|does|do|would|for)\b|\bprice\s+(?:of|for|check)\b"
                     r"|\bwhat(?:'s|\s+is)\s+the\s+(?:price|cost)\b|\bcompare\s+prices?\b"
                     r"|\bon\s+(?:taobao|tmall|jd|pinduoduo|amazon)\b"),
    ("order_food", r"\border(?:ing)?\b|\bdeliver\w*|\btake(?:out|away)\b|\bhungry\b"
                   r"|\bi(?:'d|\s+would)?\s+(?:want|like)\s+(?:to\s+(?:eat|have|drink)\b|a\b|an\b|some\b)"
                   rf"|\b(?:get|grab|bring|buy)\s+(?:me\s+|us\s+)?(?:a|an|some|{QTY_EN})\s+\w+"),
)

TRIGGERS_ZH: tuple[tuple[str, str], ...] = (
    ("remind", r"提醒|闹钟|(?<![a-z])remind(?![a-z])|叫醒我|叫我起床|别让我忘了|记得叫我"),
    ("meeting_notes", r"会议记录|(?<![a-z])meeting\s+(?:notes|minutes)"
                      r"|会议纪要|会议笔记|记录会议|(?:记|记录)一下[^,.!?]{0,8}会"
                      r"|记笔记|做笔记|做个笔记|纪要"),
    ("translate", r"翻译|翻成|译成|写的(?:是)?什么|写了什么|写着什么|(?:在)?(?:说|讲)(?:的)?(?:是)?什么"
                  r"|什么意思|怎么说|字幕|同传|同声传译|口译"),
    ("teleprompter", r"提词|提示器|讲稿|演讲稿|稿子|台词"),
    ("capture", r"拍照|拍张|拍个照|拍一张|拍几张|拍下|照相|照张相|拍一下|拍个?视频|拍段|拍一段"
                rf"|录像|录视频|录个|录一段|录\s*\d|录[一二两三四五六七八九十半]|摄像|录音|抓拍|自拍|拍(?:{NUM_ZH})张"),
    ("music", r"播放|放(?:一?点|一?首|些|一些|个)|来一?首|听(?:一?点|一?首|些)|想听|下一首|上一首"
              r"|切歌|换一?首|暂停|继续播放|音乐|歌曲|的歌|别放了"),
    ("health_query", r"睡得|睡眠|睡了多久|睡了几个?小时|睡觉质量|心率|心跳|脉搏|血氧|HRV|变异性"
                     r"|压力(?:大|怎么样|多少|值|水平|如何)|体温|皮温|步数|多少步|呼吸(?:频率|率)"),
    ("hail_ride", r"打车|打个车|打的|打个的|(?<![a-z])(?:taxi|cab|uber|didi)(?![a-z])"
                  r"|叫车|叫个车|叫辆车|叫一辆车|约车|约个车|网约车|出租车|滴滴|专车"
                  r"|快车|拼车|顺风车"),
    ("navigate", r"导航|带我去|带我到|怎么走|怎么去|路线|带路|在哪里?|在哪儿|走过去|骑车去|开车去|步行去"
                 r"|(?:坐|乘|搭)(?:地铁|公交车?|巴士|轻轨)(?:去|到)"),
    ("price_lookup", r"多少钱|什么价|价格|价钱|几块钱|贵不贵|比价"),
    ("order_food", rf"外卖|(?<![a-z])order(?![a-z])"
                   rf"|(?:帮我|给我|我要|我想)?(?:点|订)(?:{NUM_ZH})?{_MEASURE_ZH}|帮我点|给我点"
                   rf"|想吃|想喝|饿了|来(?:{NUM_ZH})?(?:份|杯|碗|盒|瓶|笼|屉)|要(?:{NUM_ZH})(?:份|杯|碗|盒|瓶)|^点"
                   rf"|^(?:{NUM_ZH})(?:份|杯|碗|盒|笼|屉)"),
)

# ---------------------------------------------------------------------------------------------------------
# Slot rules per skill and language. Time phrases come first and are cut out, so "remind me to drink water
# every hour" leaves "drink water" as the text.

_BARE = (("_bare", 1),)  # an hour said without am/pm: intents._finish reads it with the part of the day
_EVERY = (("recurrence", "interval"),)

TIME_EN: tuple[SlotSpec, ...] = (
    SlotSpec("every_min", rf"\b(?:every|each)\s+(?P<v>{EVERY_EN})", Conv.EVERY_MIN, also=_EVERY),
    SlotSpec("every_min", r"\bhourly\b", 60, also=_EVERY),
    SlotSpec("day", rf"\b(?:every|each)\s+(?P<v>{WEEKDAY_EN})\b|\bon\s+(?P<v2>{WEEKDAY_EN})s\b", Conv.WEEKDAY,
             also=(("recurrence", "weekly"),)),
    SlotSpec("recurrence", r"\b(?:every|each)\s+weekday\b|\b(?:on\s+)?weekdays\b", "weekdays"),
    SlotSpec("recurrence", r"\b(?:every|each)\s+weekend\b|\b(?:on\s+)?weekends\b", "weekends"),
    SlotSpec("daypart", r"\b(?:every|each)\s+(?P<v>morning|afternoon|evening|night)\b", Conv.DAYPART,
             also=(("recurrence", "daily"),)),
    SlotSpec("recurrence", r"\b(?:every|each)\s+(?:single\s+)?day\b|\bdaily\b|\beveryday\b", "daily"),
    SlotSpec("recurrence", r"\b(?:every|each)\s+week\b|\bweekly\b", "weekly"),
    SlotSpec("recurrence", r"\b(?:every|each)\s+month\b|\bmonthly\b", "monthly"),
    SlotSpec("delay_min", rf"\b(?:in|after)\s+(?:about\s+|around\s+|another\s+)?(?P<v>{DUR_EN})"
                          r"(?:\s+from\s+now)?", Conv.DELAY_MIN),
    SlotSpec("delay_min", rf"(?P<v>{DUR_EN})\s+(?:from\s+now|later)\b", Conv.DELAY_MIN),
    SlotSpec("day", r"\b(?:the\s+)?day\s+after\s+tomorrow\b", "day_after_tomorrow"),
    SlotSpec("day", r"\btomorrow\b", "tomorrow"),
    SlotSpec("day", r"\btonight\b", "today", also=(("daypart", "evening"),)),
    SlotSpec("day", r"\btoday\b", "today"),
    SlotSpec("day", rf"\b(?:on\s+|next\s+|this\s+|coming\s+)?(?P<v>{WEEKDAY_EN})\b", Conv.WEEKDAY),
    SlotSpec("at", rf"\b(?:at\s+|by\s+|around\s+)?(?P<v>(?:half|(?:a\s+)?quarter)\s+(?:past|after|to|before)\s+"
                   rf"{HOUR_EN}(?:\s*[ap]\.?\s?m\b\.?)?)", Conv.CLOCK, also=_BARE),
    SlotSpec("at", rf"\b(?:at\s+|by\s+|around\s+|for\s+)?(?P<v>{HOUR_EN}(?::\d{{2}})?\s*[ap]\.?\s?m\b\.?)",
             Conv.CLOCK),
    SlotSpec("at", r"\b(?:at\s+|by\s+|around\s+)?(?P<v>noon|midday|midnight)\b", Conv.CLOCK),
    SlotSpec("at", r"\b(?:at\s+|by\s+|around\s+|for\s+)?(?P<v>(?:0\d|1[3-9]|2[0-3]):[0-5]\d)\b", Conv.CLOCK),
    SlotSpec("at", r"\b(?:at\s+|by\s+|around\s+|for\s+)?(?P<v>\d{1,2}:[0-5]\d)\b", Conv.CLOCK, also=_BARE),
    SlotSpec("at", rf"\b(?:at|by|around)\s+(?P<v>{HOUR_EN})(?:\s*o'?clock)?\b"
                   r"(?!\s*(?:minutes?|mins?|hours?|seconds?|people|persons?|of\b|%|yuan|dollars?))",
             Conv.CLOCK, also=_BARE),
    SlotSpec("at", rf"\b(?P<v>{HOUR_EN})\s*o'?clock\b", Conv.CLOCK, also=_BARE),
    SlotSpec("daypart", r"\b(?:in\s+the\s+|this\s+|at\s+)?"
                        r"(?P<v>morning|afternoon|evening|night|lunch\s?time)\b", Conv.DAYPART),
)

_CLOCK_ZH = rf"(?:{NUM_ZH})\s*(?:点|时)(?:半|一刻|三刻|(?:{NUM_ZH})分?)?钟?"
TIME_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("every_min", rf"每(?:隔)?(?P<v>{EVERY_ZH})", Conv.EVERY_MIN, also=_EVERY),
    SlotSpec("day", r"每个?(?:周|星期|礼拜)(?P<v>[一二三四五六日天1-7])", Conv.WEEKDAY,
             also=(("recurrence", "weekly"),)),
    SlotSpec("recurrence", r"(?:每个?)?工作日", "weekdays"),
    SlotSpec("recurrence", r"每个?周末", "weekends"),
    SlotSpec("recurrence", r"每晚|每天晚上", "daily", also=(("daypart", "evening"),)),
    SlotSpec("recurrence", r"每早|每天早上|每天早晨", "daily", also=(("daypart", "morning"),)),
    SlotSpec("recurrence", r"每天|每日|天天|每一天", "daily"),
    SlotSpec("recurrence", r"每周|每个星期|每星期|每个礼拜|每礼拜", "weekly"),
    SlotSpec("recurrence", r"每个?月", "monthly"),
    SlotSpec("delay_min", rf"过?(?P<v>{DUR_ZH})(?:以后|之后|后)", Conv.DELAY_MIN),
    SlotSpec("delay_min", rf"过(?P<v>{DUR_ZH})", Conv.DELAY_MIN),
    SlotSpec("day", r"后天", "day_after_tomorrow"),
    SlotSpec("day", r"明早", "tomorrow", also=(("daypart", "morning"),)),
    SlotSpec("day", r"明晚", "tomorrow", also=(("daypart", "evening"),)),
    SlotSpec("day", r"明天|明日", "tomorrow"),
    SlotSpec("day", r"今晚", "today", also=(("daypart", "evening"),)),
    SlotSpec("day", r"今天|今日", "today"),
    SlotSpec("day", r"(?:下|这|本)?个?(?:周|星期|礼拜)(?P<v>[一二三四五六日天])", Conv.WEEKDAY),
    SlotSpec("at", rf"(?P<v>{DAYPART_ZH}\s*{_CLOCK_ZH})", Conv.CLOCK),
    SlotSpec("at", r"(?P<v>(?:0\d|1[3-9]|2[0-3]):[0-5]\d)", Conv.CLOCK),
    SlotSpec("at", r"(?P<v>\d{1,2}:[0-5]\d)", Conv.CLOCK, also=_BARE),
    SlotSpec("at", rf"(?P<v>{_CLOCK_ZH})", Conv.CLOCK, also=_BARE),
    SlotSpec("daypart", rf"(?P<v>{DAYPART_ZH})", Conv.DAYPART),
)

# Where a free-text value ends.
_END_EN = r"(?=\s*[,.!?;]|\s*$)"
_PLACE_END_EN = (
    r"(?=\s+(?:from|with|via|and|please|now|right\s+now|asap|using|by|for|under|below)\b|\s*[,.!?;]|\s*$)"
)
_END_ZH = r"(?=吧|呗|[,.!?;]|$)"

_FOOD_MEASURE_EN = (
    r"(?:cups?|bowls?|box(?:es)?|orders?|portions?|servings?|plates?|bottles?|glass(?:es)?|slices?|pieces?)"
)
_FOOD_END_EN = (
    r"(?=\s+(?:from|to|for|under|below|with|without|delivered|deliver|and|please|asap|now|less|extra|no)\b"
    r"|\s*[,.!?;]|\s*$)"
)
_DISH_END_ZH = r"(?=送到|送去|送往|送来|送至|送|外卖|给我|吧|[,.!?;]|$)"
_NOTE_EN = (
    r"(?:(?:less|extra|more|not|no|without|light|half|mild)\s+(?:spicy|sugar|sweet|ice|salt|oil|cilantro"
    r"|coriander|onions?|garlic|hot|cheese|sauce|milk|msg|peppers?)|(?:with\s+)?oat\s+milk|iced|hot)"
)
_NOTE_ZH = (
    r"(?:少|多|不要|不加|去|免|加|微|中|特|半|全|无|正常)"
    r"(?:辣|糖|冰|盐|油|香菜|葱|蒜|醋|辣椒|奶|芝士|酱)"
)
_MONEY_UNIT_EN = r"(?:yuan|rmb|cny|kuai|bucks|dollars?|usd|euros?|元|块)"

FOOD_EN: tuple[SlotSpec, ...] = (
    SlotSpec("currency", r"yuan|rmb|\bcny\b|\bkuai\b|¥|元|块", "CNY", consume=False),
    SlotSpec("currency", r"\$|\bdollars?\b|\bbucks\b|\busd\b", "USD", consume=False),
    SlotSpec("currency", r"€|\beuros?\b", "EUR", consume=False),
    SlotSpec("budget", r"\b(?:under|below|less\s+than|no\s+more\s+than|not\s+more\s+than|max(?:imum)?"
                       r"|at\s+most|up\s+to|within|budget(?:\s+of|\s+is)?)\s+"
                       rf"(?P<v>[¥$€£]?\s*(?:{NUM_EN})(?:\s*{_MONEY_UNIT_EN})?)", Conv.MONEY),
    SlotSpec("budget", rf"(?P<v>[¥$€£]?\s*(?:{DIGITS})(?:\s*{_MONEY_UNIT_EN})?)\s+(?:or\s+less|max|tops)\b",
             Conv.MONEY),
    SlotSpec("usual", r"\b(?:my\s+usual|the\s+usual|as\s+usual|my\s+regular|(?:the\s+)?same\s+as\s+"
                      r"(?:last\s+time|before|usual)|from\s+last\s+time|like\s+last\s+time)\b", 1),
    *TIME_EN,
    SlotSpec("notes", rf"\b(?P<v>{_NOTE_EN}(?:(?:\s*,\s*|\s+and\s+|\s+){_NOTE_EN})*)\b"),
    SlotSpec("restaurant", rf"\bfrom\s+(?:the\s+)?(?P<v>.+?){_FOOD_END_EN}"),
    SlotSpec("address", r"\b(?:deliver(?:ed)?\s+(?:it\s+)?to|send(?:\s+it)?\s+to|bring\s+it\s+to|to)\s+"
                        rf"(?!(?:order|get|eat|have|buy|drink|go|grab|try|me)\b)(?P<v>.+?){_PLACE_END_EN}",
             Conv.PLACE),
    SlotSpec("qty", rf"\b(?:order|get|buy|grab|want|like|have|bring|deliver)\s+(?:me\s+|us\s+)?(?P<v>{QTY_EN})\b",
             Conv.INT, consume=False),
    SlotSpec("dish", r"\b(?:order(?:ing)?|get|buy|grab|bring|want|like|have|deliver)\s+(?:me\s+|us\s+)?"
                     rf"(?:to\s+(?:eat|have|order|drink|get)\s+)?(?:{QTY_EN}\s+)?(?:{_FOOD_MEASURE_EN}\s+of\s+)?"
                     rf"(?:(?:a|an|some|the)\s+)?(?P<v>.+?){_FOOD_END_EN}"),
)

FOOD_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("currency", r"块|元|¥|rmb", "CNY", consume=False),
    SlotSpec("budget", rf"(?P<v>{NUM_ZH})\s*(?:块钱?|元|rmb)?\s*(?:以内|以下|之内|内)", Conv.MONEY),
    SlotSpec("budget", r"(?:不超过|不要超过|别超过|最多|预算|低于|少于|不高于)"
                       rf"\s*(?P<v>{NUM_ZH})\s*(?:块钱?|元)?", Conv.MONEY),
    SlotSpec("usual", r"上次(?:那家|那个|点)的?|老样子的?|跟上次一样的?|和上次一样的?|还是那家的?|常点的"
                      r"|平时(?:那家|点)的?|老地方的?", 1),
    SlotSpec("app", r"(?:在|用)美团(?:上)?", "meituan"),
    SlotSpec("app", r"(?:在|用)饿了么(?:上)?", "eleme"),
    *TIME_ZH,
    SlotSpec("notes", rf"(?P<v>{_NOTE_ZH}(?:[,\s]*{_NOTE_ZH})*)"),
    SlotSpec("restaurant", r"(?:从|在)(?P<v>[^,.!?;]{1,15}?)(?:那家|家)?(?=点|订|买|叫)"),
    SlotSpec("address", r"(?:送到|送去|送往|送来|送至|配送到)(?P<v>[^,.!?;]+?)" + _END_ZH, Conv.PLACE),
    SlotSpec("qty", rf"(?P<v>{NUM_ZH})(?={_MEASURE_ZH})", Conv.INT, consume=False),
    SlotSpec("dish", rf"(?:想吃|想喝|要吃|要喝|吃|喝|点|订|叫|买|要|来)(?:{NUM_ZH})?{_MEASURE_ZH}?"
                     rf"(?P<v>[^,.!?;]+?){_DISH_END_ZH}"),
    SlotSpec("dish", rf"^(?:{NUM_ZH}){_MEASURE_ZH}(?P<v>[^,.!?;]+?){_DISH_END_ZH}"),
)

RIDE_EN: tuple[SlotSpec, ...] = (
    *TIME_EN,
    SlotSpec("passengers", rf"\b(?:for\s+)?(?P<v>{NUM_EN})\s+(?:people|persons|passengers|pax|of\s+us)\b",
             Conv.INT),
    SlotSpec("product", r"\b(?:xl|suv|van|big\s+car|six[- ]seater|7[- ]seater)\b", "xl"),
    SlotSpec("product", r"\b(?:premium|black|luxury|lux|business)\b", "premium"),
    SlotSpec("product", r"\b(?:pool|shared|carpool)\b", "pool"),
    SlotSpec("product", r"\bcomfort\b", "comfort"),
    SlotSpec("product", r"\b(?:economy|uberx|cheapest|cheap)\b", "economy"),
    SlotSpec("pickup", rf"\b(?:pick\s+me\s+up\s+(?:at|from)|from)\s+(?P<v>.+?){_PLACE_END_EN}", Conv.PLACE),
    SlotSpec("destination", rf"\b(?:to|towards)\s+(?P<v>.+?){_PLACE_END_EN}", Conv.PLACE),
    SlotSpec("destination", r"\b(?P<v>home)\b", Conv.PLACE),
)

RIDE_ZH: tuple[SlotSpec, ...] = (
    *TIME_ZH,
    SlotSpec("passengers", rf"(?P<v>{NUM_ZH})\s*(?:个人|位|人)", Conv.INT),
    SlotSpec("product", r"出租车|的士", "taxi"),
    SlotSpec("product", r"快车", "economy"),
    SlotSpec("product", r"专车|豪华车", "premium"),
    SlotSpec("product", r"拼车|顺风车", "pool"),
    SlotSpec("product", r"商务车|六座|七座", "xl"),
    SlotSpec("product", r"舒适型", "comfort"),
    SlotSpec("pickup", r"从(?P<v>[^,.!?;]+?)(?=打车|叫车|出发|上车|去|到|回)", Conv.PLACE),
    SlotSpec("pickup", r"在(?P<v>[^,.!?;]+?)(?=上车|接我)", Conv.PLACE),
    SlotSpec("destination", r"(?:去往|前往|去|(?<![迟收得找])到(?!了))(?P<v>[^,.!?;]+?)" + _END_ZH, Conv.PLACE),
    SlotSpec("destination", r"回(?P<v>家)", Conv.PLACE),
)

NAV_EN: tuple[SlotSpec, ...] = (
    SlotSpec("mode", r"\b(?:walk|walking|on\s+foot|by\s+foot)\b", "walk"),
    SlotSpec("mode", r"\b(?:bike|biking|bicycle|cycle|cycling)\b", "bike"),
    SlotSpec("mode", r"\b(?:by|via|take|taking)\s+(?:the\s+)?(?:bus|subway|metro|train|transit|tube)\b"
                     r"|\b(?:public\s+transport(?:ation)?|transit)\b", "transit"),
    SlotSpec("mode", r"\b(?:drive|driving|by\s+car)\b", "drive"),
    SlotSpec("destination", rf"\b(?:to|towards)\s+(?P<v>.+?){_PLACE_END_EN}", Conv.PLACE),
    SlotSpec("destination", rf"\bwhere(?:'s|\s+is)\s+(?P<v>the\s+nearest\s+.+?){_END_EN}", Conv.PLACE),
    SlotSpec("destination", r"\b(?P<v>home)\b", Conv.PLACE),
    SlotSpec("destination", rf"\bnavigate\s+(?:me\s+)?(?P<v>.+?){_PLACE_END_EN}", Conv.PLACE),
)

NAV_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("mode", r"步行|走路|走过去|走着去|走去", "walk"),
    SlotSpec("mode", r"骑车|骑行|骑自行车|骑单车|骑电动车", "bike"),
    SlotSpec("mode", r"(?:坐|乘|搭)(?:地铁|公交车?|巴士|轻轨|火车)|公共交通", "transit"),
    SlotSpec("mode", r"开车|驾车|自驾", "drive"),
    SlotSpec("destination", r"(?:带我去|带我到|导航到|导航去|导航至|去往|前往|去|到)(?P<v>[^,.!?;]+?)"
                            r"(?=怎么走|怎么去|的路|在哪|吧|呗|[,.!?;]|$)", Conv.PLACE),
    SlotSpec("destination", r"回(?P<v>家)", Conv.PLACE),
    SlotSpec("destination", r"^(?:导航)?(?P<v>[^,.!?;]+?)(?:怎么走|怎么去|在哪里?|在哪儿)", Conv.PLACE),
    SlotSpec("destination", r"导航(?P<v>[^,.!?;]+?)" + _END_ZH, Conv.PLACE),
)

TRANSLATE_EN: tuple[SlotSpec, ...] = (
    SlotSpec("text", r"\"(?P<v>[^\"]+)\"|(?:^|\s)'(?P<v2>[^']+)'(?=[\s,.!?]|$)"),
    SlotSpec("text", rf"\bhow\s+do\s+(?:you|i)\s+say\s+(?P<v>.+?)(?=\s+in\s+{LANG_EN}\b|\s*[?.!]|\s*$)"),
    SlotSpec("mode", r"\b(?:captions?|subtitles?|live\s+transcript)\b", "caption", consume=False),
    SlotSpec("mode", r"\b(?:menu|sign|label|page|document|poster|board|screen|paper|photo|picture|camera"
                     r"|written)\b|\bwhat\s+(?:does|did)\s+(?:this|that|it)\s+say\b|\blook\s+at\b", "photo",
             consume=False),
    SlotSpec("mode", r"\b(?:saying|said|says|conversation|talking|speaking|speaks|dialog(?:ue)?"
                     r"|interpret\w*)\b|\bwhat\s+(?:he|she|they)\b", "conversation", consume=False),
    SlotSpec("source_lang", rf"\bfrom\s+(?P<v>{LANG_EN})\b", Conv.LANG),
    SlotSpec("target_lang", rf"\b(?:into|to|in)\s+(?P<v>{LANG_EN})\b", Conv.LANG),
)

TRANSLATE_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("text", r"\"(?P<v>[^\"]+)\""),
    SlotSpec("text", rf"^(?:把)?(?P<v>[^,.!?;]+?)(?=用{LANG_ZH}怎么说)"),
    SlotSpec("mode", r"字幕", "caption", consume=False),
    SlotSpec("mode", r"菜单|牌子|标牌|路牌|招牌|说明书|标签|海报|这页|文字|写的|写着|写了|拍照", "photo",
             consume=False),
    SlotSpec("mode", r"说的|说话|在说|说什么|对话|聊天|同传|同声传译|口译|交流", "conversation",
             consume=False),
    SlotSpec("source_lang", rf"(?:从)?(?P<v>{LANG_ZH})(?=翻译|翻成|译成|转成|到)", Conv.LANG),
    SlotSpec("target_lang", rf"(?:翻译成|翻译为|翻成|译成|译为|转成|换成|成|用|说)(?P<v>{LANG_ZH})",
             Conv.LANG),
)

TELEPROMPTER_EN: tuple[SlotSpec, ...] = (
    SlotSpec("advance", r"\b(?:auto(?:matic(?:ally)?)?[- ]?(?:scroll(?:ing)?|advance)"
                        r"|scroll\s+automatically)\b", "auto"),
    SlotSpec("advance", r"\bmanual(?:ly)?\b", "manual"),
    SlotSpec("script", r"\b(?:tele)?prompter\s+(?:with|for|using)\s+(?:my\s+|the\s+|our\s+)?(?P<v>.+?)"
                       rf"(?:\s+(?:script|speech|talk|notes))?{_END_EN}"),
    SlotSpec("script", r"\bscript\s+(?:for|called|named|titled)\s+(?:my\s+|the\s+|our\s+)?"
                       rf"(?P<v>.+?){_END_EN}"),
    SlotSpec("script", r"\b(?:open|load|show|start|put|pull\s+up|bring\s+up|use)\s+(?:up\s+)?(?:my|the|our)\s+"
                       r"(?P<v>(?!(?:tele)?prompter\b)[\w' -]+?)(?:\s+(?:script|speech|talk|notes))?\s+"
                       r"(?:on|in|onto|to|with)\s+(?:the\s+)?(?:tele)?prompter\b"),
    SlotSpec("script", r"\b(?:tele)?prompter\s+(?:my|the|our)\s+(?P<v>[\w' -]+?)"
                       rf"(?:\s+(?:script|speech|talk|notes))?{_END_EN}"),
    SlotSpec("script", r"\b(?:my|the|our)\s+(?P<v>(?!(?:tele)?prompter\b)[\w' -]+?)\s+"
                       r"(?:script|speech|talk|notes|deck|presentation|slides)\b"),
)

TELEPROMPTER_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("advance", r"自动(?:滚动|翻页|播放)", "auto"),
    SlotSpec("advance", r"手动", "manual"),
    SlotSpec("script", r"用(?P<v>[^,.!?;]+?)的?(?:稿子|讲稿|演讲稿|稿件|台词|稿)"),
    SlotSpec("script", r"(?:打开|开始|加载|播放|念)(?P<v>[^,.!?;]+?)的?(?:稿子|讲稿|演讲稿|稿件|台词)"),
    SlotSpec("script", r"(?:把)?(?P<v>[^,.!?;把]+?)的(?:稿子|讲稿|演讲稿|稿件|台词)"),
)

CAPTURE_EN: tuple[SlotSpec, ...] = (
    SlotSpec("duration_s", rf"\b(?:for\s+)?(?P<v>{DUR_EN})", Conv.DURATION_S),
    SlotSpec("count", r"\b(?P<v>\d{1,3}|two|three|four|five|six|seven|eight|nine|ten)\s+"
                      r"(?:photos|pictures|pics|shots|snapshots|selfies)\b", Conv.INT, consume=False),
    SlotSpec("kind", r"\b(?:audio|voice\s+memo|sound)\b", "audio"),
    SlotSpec("kind", r"\b(?:videos?|record|recording|film|clips?)\b", "video"),
    SlotSpec("kind", r"\b(?:photos?|pictures?|pics?|shots?|snapshots?|selfies?|photograph|snap|cheese)\b",
             "photo"),
)

CAPTURE_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("duration_s", rf"(?P<v>{DUR_ZH})", Conv.DURATION_S),
    SlotSpec("count", rf"(?P<v>{NUM_ZH})张", Conv.INT, consume=False),
    SlotSpec("kind", r"录音", "audio"),
    SlotSpec("kind", r"视频|录像|摄像|录(?!音)", "video"),
    SlotSpec("kind", r"照|相片|张|拍|自拍", "photo"),
)

REMIND_EN: tuple[SlotSpec, ...] = (
    *TIME_EN,
    SlotSpec("alarm", r"\b(?:alarm|wake\s+me(?:\s+up)?)\b", 1, consume=False),
    SlotSpec("text", r"\bremind\s+(?:me|us)\s+(?:to\s+|about\s+|that\s+|of\s+)?(?P<v>.+?)\s*[.!?]?$"),
    SlotSpec("text", r"\breminder\s+(?:to|for|about|that)\s+(?P<v>.+?)\s*[.!?]?$"),
    SlotSpec("text", r"\bdon'?t\s+let\s+me\s+forget\s+(?:to\s+|about\s+)?(?P<v>.+?)\s*[.!?]?$"),
)

REMIND_ZH: tuple[SlotSpec, ...] = (
    *TIME_ZH,
    SlotSpec("alarm", r"闹钟|叫醒|叫我起床", 1, consume=False),
    SlotSpec("text", r"提醒(?:一下)?(?:我们|我)?(?:一下)?(?:要|去|该|记得)?(?P<v>[^.!?;]+?)[.!?;]?$"),
    SlotSpec("text", r"叫我(?P<v>[^.!?;]+?)[.!?;]?$"),
    SlotSpec("text", r"别让我忘了(?P<v>[^.!?;]+?)[.!?;]?$"),
)

HEALTH_EN: tuple[SlotSpec, ...] = (
    SlotSpec("metric", r"\b(?:hrv|heart\s*rate\s+variability|variability)\b", "hrv"),
    SlotSpec("metric", r"\b(?:sp\s?o2|blood\s+oxygen|oxygen(?:\s+(?:level|saturation))?)\b", "spo2"),
    SlotSpec("metric", r"\bstress(?:ed)?\b", "stress"),
    SlotSpec("metric", r"\btemp(?:erature)?\b", "temp"),
    SlotSpec("metric", r"\bsteps?\b", "steps"),
    SlotSpec("metric", r"\b(?:breathing|respiratory|respiration)(?:\s+rate)?\b", "resp"),
    SlotSpec("metric", r"\b(?:sleep|slept)\b", "sleep"),
    SlotSpec("metric", r"\b(?:heart\s*rate|pulse|hr|bpm)\b", "hr"),
    SlotSpec("period", r"\blast\s+night\b", "last_night"),
    SlotSpec("period", r"\byesterday\b", "yesterday"),
    SlotSpec("period", r"\btoday\b", "today"),
    SlotSpec("period", r"\b(?:this|past)\s+week\b", "week"),
    SlotSpec("period", r"\blast\s+week\b", "last_week"),
    SlotSpec("period", r"\bthis\s+month\b", "month"),
    SlotSpec("period", r"\b(?:right\s+)?now\b|\bcurrent(?:ly)?\b", "now"),
    SlotSpec("measure", r"\b(?:measure|check|test|take|scan)\b", 1),
)

HEALTH_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("metric", r"心率变异性?|HRV|变异性", "hrv"),
    SlotSpec("metric", r"血氧(?:饱和度)?|SpO2", "spo2"),
    SlotSpec("metric", r"压力", "stress"),
    SlotSpec("metric", r"体温|皮肤温度|皮温|温度", "temp"),
    SlotSpec("metric", r"步数|多少步|走了", "steps"),
    SlotSpec("metric", r"呼吸", "resp"),
    SlotSpec("metric", r"睡", "sleep"),
    SlotSpec("metric", r"心率|心跳|脉搏", "hr"),
    SlotSpec("period", r"昨晚|昨天晚上|昨夜", "last_night"),
    SlotSpec("period", r"昨天", "yesterday"),
    SlotSpec("period", r"今天|今日", "today"),
    SlotSpec("period", r"这周|本周|这个星期|这星期|这礼拜", "week"),
    SlotSpec("period", r"上周|上个星期|上星期|上礼拜", "last_week"),
    SlotSpec("period", r"这个月|本月", "month"),
    SlotSpec("period", r"现在|当前|目前|此刻|实时", "now"),
    SlotSpec("measure", r"测|量一下|量量|量个|检测", 1),
)

MUSIC_EN: tuple[SlotSpec, ...] = (
    SlotSpec("app", r"\b(?:on|in|using|with|from)\s+qq\s*music\b", "qq_music"),
    SlotSpec("app", r"\b(?:on|in|using|with|from)\s+netease(?:\s+cloud)?(?:\s+music)?\b", "netease"),
    SlotSpec("app", r"\b(?:on|in|using|with|from)\s+spotify\b", "spotify"),
    SlotSpec("app", r"\b(?:on|in|using|with|from)\s+apple\s+music\b", "apple_music"),
    SlotSpec("action", r"\b(?:pause|stop)\b", "pause"),
    SlotSpec("action", r"\b(?:resume|continue|unpause)\b", "resume"),
    SlotSpec("action", r"\b(?:next|skip)\b", "next"),
    SlotSpec("action", r"\b(?:previous|prev|last\s+song|go\s+back)\b", "previous"),
    SlotSpec("action", r"\b(?:play|put\s+on|listen\s+to)\b", "play", consume=False),
    SlotSpec("query", r"\b(?:play|put\s+on|listen\s+to)\s+(?:me\s+|us\s+)?"
                      r"(?:(?:a\s+|some\s+)?(?:songs?|tracks?|music)\s+(?:by|from)\s+)?(?P<v>.+?)"
                      r"(?:\s+(?:music|songs?|tunes|tracks?))?(?=\s+please\b|\s*[,.!?;]|\s*$)"),
)

MUSIC_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("app", r"(?:用|在|打开)?QQ音乐(?:上|里)?", "qq_music"),
    SlotSpec("app", r"(?:用|在|打开)?网易云(?:音乐)?(?:上|里)?", "netease"),
    SlotSpec("app", r"(?:用|在|打开)?酷狗(?:音乐)?(?:上|里)?", "kugou"),
    SlotSpec("action", r"暂停|停止播放|别放了|关掉音乐|停止音乐|关掉歌", "pause"),
    SlotSpec("action", r"继续播放|继续放", "resume"),
    SlotSpec("action", r"下一首|切歌|换一?首|下首", "next"),
    SlotSpec("action", r"上一首|上首", "previous"),
    SlotSpec("action", r"播放|放|来一?首|听", "play", consume=False),
    SlotSpec("query", r"(?:我想听|想听|播放|放|来|听)(?:一下)?(?:一?点|一?首|一些|些|个|一段)?"
                      r"(?P<v>[^,.!?;]+?)(?:的)?(?:音乐|歌曲|歌|曲子|曲|专辑)?(?=吧|呗|[,.!?;]|$)"),
)

MEETING_EN: tuple[SlotSpec, ...] = (
    SlotSpec("title", r"\b(?:for|of|in|during)\s+(?:the|my|our|today's|this\s+week's)\s+(?P<v>[\w' &-]+?)"
                      r"(?:\s+(?:meeting|call))?\s*[.!?]?$"),
)

MEETING_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("title", r"(?:记一下|记录一下|记录|纪要)(?P<v>[^,.!?;]{1,12}?会(?:议)?)"
                      r"(?=的|纪要|记录|[,.!?;]|$)"),
)

_PLATFORMS_ZH = r"(?:淘宝|天猫|京东|拼多多|亚马逊|闲鱼)"
PRICE_EN: tuple[SlotSpec, ...] = (
    SlotSpec("platform", r"\btaobao\b", "taobao", consume=False),
    SlotSpec("platform", r"\btmall\b", "tmall", consume=False),
    SlotSpec("platform", r"\bjd(?:\.com)?\b", "jd", consume=False),
    SlotSpec("platform", r"\bpinduoduo\b", "pinduoduo", consume=False),
    SlotSpec("platform", r"\bamazon\b", "amazon", consume=False),
    SlotSpec("item", r"\bhow\s+much\s+(?:is|are|does|do|would|for)\s+(?:a\s+|an\s+|the\s+)?(?P<v>.+?)"
                     r"(?=\s+(?:cost|costs|go\s+for|sell\s+for|on|at|in)\b|\s*[,.!?;]|\s*$)"),
    SlotSpec("item", r"\bprice\s+(?:of|for)\s+(?:a\s+|an\s+|the\s+)?(?P<v>.+?)"
                     r"(?=\s+(?:on|at|in)\b|\s*[,.!?;]|\s*$)"),
)

PRICE_ZH: tuple[SlotSpec, ...] = (
    SlotSpec("platform", r"淘宝", "taobao", consume=False),
    SlotSpec("platform", r"天猫", "tmall", consume=False),
    SlotSpec("platform", r"京东", "jd", consume=False),
    SlotSpec("platform", r"拼多多", "pinduoduo", consume=False),
    SlotSpec("platform", r"亚马逊", "amazon", consume=False),
    SlotSpec("item", r"^(?:帮我)?(?:查一下|查查|看看|看一下|问一下)?(?P<v>[^,.!?;]+?)"
                     rf"(?:在{_PLATFORMS_ZH}上?)?(?:卖)?(?:多少钱|什么价|价格|价钱|几块钱|贵不贵)"),
)

SLOTS: dict[str, dict[str, tuple[SlotSpec, ...]]] = {
    "en": {
        "order_food": FOOD_EN, "hail_ride": RIDE_EN, "navigate": NAV_EN, "translate": TRANSLATE_EN,
        "teleprompter": TELEPROMPTER_EN, "capture": CAPTURE_EN, "remind": REMIND_EN,
        "health_query": HEALTH_EN, "music": MUSIC_EN, "meeting_notes": MEETING_EN, "price_lookup": PRICE_EN,
    },
    "zh": {
        "order_food": FOOD_ZH, "hail_ride": RIDE_ZH, "navigate": NAV_ZH, "translate": TRANSLATE_ZH,
        "teleprompter": TELEPROMPTER_ZH, "capture": CAPTURE_ZH, "remind": REMIND_ZH,
        "health_query": HEALTH_ZH, "music": MUSIC_ZH, "meeting_notes": MEETING_ZH, "price_lookup": PRICE_ZH,
    },
}
TRIGGERS: dict[str, tuple[tuple[str, str], ...]] = {"en": TRIGGERS_EN, "zh": TRIGGERS_ZH}
REPLIES: dict[str, dict[str, tuple[str, ...]]] = {"en": REPLY_EN, "zh": REPLY_ZH}
FILLERS: dict[str, tuple[str, ...]] = {"en": FILLER_EN, "zh": FILLER_ZH}
CANCEL_OBJECT: dict[str, tuple[str, ...]] = {"en": CANCEL_OBJECT_EN, "zh": CANCEL_OBJECT_ZH}

# How the answer to a slot question is read when no slot rule of the skill matches it.
ANSWER_KIND: dict[str, Conv] = {
    "destination": Conv.PLACE, "pickup": Conv.PLACE, "address": Conv.PLACE,
    "dish": Conv.TEXT, "restaurant": Conv.TEXT, "notes": Conv.TEXT, "text": Conv.TEXT, "query": Conv.TEXT,
    "script": Conv.TEXT, "title": Conv.TEXT, "item": Conv.TEXT,
    "budget": Conv.MONEY, "qty": Conv.INT, "passengers": Conv.INT, "count": Conv.INT,
    "delay_min": Conv.DELAY_MIN, "duration_s": Conv.DURATION_S, "every_min": Conv.EVERY_MIN,
    "at": Conv.CLOCK, "target_lang": Conv.LANG, "source_lang": Conv.LANG, "day": Conv.WEEKDAY,
    "daypart": Conv.DAYPART,
}

# fmt: on
