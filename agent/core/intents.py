"""Deterministic one-sentence understanding: an English or Chinese utterance to an intent or a reply."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from agent.core import fuzzy, lexicon
from agent.core.lexicon import Conv, SlotSpec, SlotValue

__all__ = [
    "ACT_SCORE",
    "MAX_CHARS",
    "PAID_SKILLS",
    "Intent",
    "Parsed",
    "Reply",
    "ReplyKind",
    "Skill",
    "SlotValue",
    "Unknown",
    "detect_lang",
    "normalize_text",
    "parse",
    "parse_slot_answer",
]

MAX_CHARS = 500
"""Longer input is not one spoken command: it parses as Unknown (and this bounds the regex work)."""
ACT_SCORE = 0.8
"""A reading scored below this (see :attr:`Intent.score`) is asked back ("Did you mean ...?"), not acted on."""


class Skill(StrEnum):
    """What the user asked the agent to do (devices.md §4.3)."""

    ORDER_FOOD = "order_food"
    HAIL_RIDE = "hail_ride"
    NAVIGATE = "navigate"
    TRANSLATE = "translate"
    TELEPROMPTER = "teleprompter"
    CAPTURE = "capture"
    REMIND = "remind"
    HEALTH_QUERY = "health_query"
    MUSIC = "music"
    MEETING_NOTES = "meeting_notes"
    PRICE_LOOKUP = "price_lookup"


PAID_SKILLS = frozenset({Skill.ORDER_FOOD, Skill.HAIL_RIDE})
"""Skills that spend money: a phone quote and one explicit confirmation (tier 2) before anything is bought."""


class ReplyKind(StrEnum):
    """An answer to a confirmation card or a question."""

    CONFIRM = "confirm"
    DENY = "deny"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Intent:
    """A request for a skill.

    Attributes:
        skill: the skill asked for.
        slots: only what the sentence itself says (read-only); context fills the rest elsewhere.
        lang: "en" or "zh": the language to answer in (given, else detected).
        text: the utterance exactly as given.
        score: how sure the reading is: 1.0 when the words were read as said; lower when a word was taken for a
            lexicon term it nearly matches (a typo, an ASR near-miss or homophone). Below ``ACT_SCORE`` the agent
            asks back instead of acting.
    """

    skill: Skill
    slots: Mapping[str, SlotValue] = field(hash=False)
    lang: str
    text: str
    score: float = 1.0

    @property
    def sure(self) -> bool:
        """Whether the reading is good enough to act on (paid skills still ask for their confirmation)."""
        return self.score >= ACT_SCORE


@dataclass(frozen=True, slots=True)
class Reply:
    """A confirm, deny or cancel.

    Attributes:
        kind: which one; the strongest said wins (cancel > deny > confirm).
        lang: "en" or "zh".
        text: the utterance exactly as given.
    """

    kind: ReplyKind
    lang: str
    text: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """An utterance that names no skill and is no reply.

    Attributes:
        lang: "en" or "zh".
        text: the utterance exactly as given.
    """

    lang: str
    text: str


Parsed = Intent | Reply | Unknown

# ---------------------------------------------------------------------------------------------------------
# Normalisation and language.

_FLAGS = re.IGNORECASE
_PUNCT = str.maketrans(
    {
        "。": ".",
        "、": ",",
        "｡": ".",
        "“": '"',
        "”": '"',
        "„": '"',
        "「": '"',
        "」": '"',
        "『": '"',
        "』": '"',
        "《": '"',
        "》": '"',
        "‘": "'",
        "’": "'",
        "`": "'",
        "…": "...",
        "～": "~",
        "—": "-",
    }
)
_SPACES = re.compile(r"\s+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_WAKE = re.compile(lexicon.WAKE, _FLAGS)


def normalize_text(text: str) -> str:
    """Return ``text`` cleaned for matching.

    NFKC folds full-width forms ("，？！：１２" become ",?!:12"); Chinese full stops, enumeration commas and
    curly or corner quotes become ASCII; control and format characters (zero-width included) become spaces;
    whitespace is collapsed and trimmed. Case is kept, so slot values keep the user's spelling.

    Args:
        text: any string.

    Returns:
        The normalised string.
    """
    if text.isascii() and text.isprintable():
        # NFKC leaves ASCII as it is, and printable ASCII has no C* character and no whitespace but " ".
        folded = text.translate(_PUNCT)
        return (_SPACES.sub(" ", folded) if "  " in folded else folded).strip()
    folded = unicodedata.normalize("NFKC", text).translate(_PUNCT)
    # Categories C* are control, format, surrogate, private-use and unassigned code points.
    cleaned = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in folded)
    return _SPACES.sub(" ", cleaned).strip()


def detect_lang(text: str) -> str:
    """Guess whether an utterance is Chinese ("zh") or English ("en").

    Han characters count against Latin words (a word weighs 1.5 characters), and the script the utterance
    starts in adds 2, because a mixed sentence usually starts in its own language ("打车去 Hangzhou East
    Station" is Chinese, "Navigate to 西湖" English). Text without Han characters is English.

    Args:
        text: the utterance (raw or normalised).

    Returns:
        "zh" or "en".
    """
    if text.isascii():
        return "en"  # no Han character
    han = len(_HAN.findall(text))
    if han == 0:
        return "en"
    words = len(_LATIN_WORD.findall(text))
    first_han = _HAN.search(text)
    first_latin = _LATIN_WORD.search(text)
    zh_score = float(han)
    en_score = 1.5 * words
    if first_han is not None and (first_latin is None or first_han.start() < first_latin.start()):
        zh_score += 2
    else:
        en_score += 2
    return "zh" if zh_score > en_score else "en"


def _lang_code(lang: str | None) -> str | None:
    """Map a caller's language tag ("zh-CN", "en_US", "cmn", ...) to "zh"/"en"; None if unusable."""
    if not lang:
        return None
    tag = lang.strip().lower().replace("_", "-")
    if tag.startswith(("zh", "cmn", "yue", "wuu")):
        return "zh"
    if tag.startswith("en"):
        return "en"
    return None


def _other(lang: str) -> str:
    return "en" if lang == "zh" else "zh"


def _strip_wake(text: str) -> str:
    return _WAKE.sub("", text, count=1).strip(" ,.!?:;~")


# ---------------------------------------------------------------------------------------------------------
# Numbers, durations, clock times.

_EN_NUMBER_WORD = re.compile(lexicon.NUM_WORD_EN, _FLAGS)
_ANY_NUMBER = re.compile(rf"{lexicon.DIGITS}|(?<![a-z]){lexicon.NUM_WORD_EN}(?![a-z])|{lexicon.NUM_ZH}", _FLAGS)


def _as_number(value: float) -> int | float:
    """An int when the value is whole, so slots read 30 rather than 30.0."""
    return int(value) if float(value).is_integer() else value


def _zh_int(text: str) -> int | None:
    """Chinese numerals to an int: 十 10, 十五 15, 两百五 250, 一百零五 105, 一万五 15000, 二零二五 2025."""
    if not text:
        return None
    digits, units = lexicon.ZH_DIGITS, lexicon.ZH_UNITS
    if all(ch in digits for ch in text):
        number = 0
        for ch in text:
            number = number * 10 + digits[ch]
        return number
    total = section = prev_unit = 0
    digit: int | None = None
    zero_seen = False
    for ch in text:
        if ch in digits:
            if digits[ch] == 0:
                zero_seen = True
                continue
            if digit is not None:
                return None
            digit = digits[ch]
        elif ch in units:
            section += (1 if digit is None else digit) * units[ch]
            digit, prev_unit, zero_seen = None, units[ch], False
        elif ch == "万":
            section += digit or 0
            total += (section or 1) * 10_000
            section, digit, prev_unit, zero_seen = 0, None, 10_000, False
        else:
            return None
    if digit is not None:
        # A trailing digit right after 百/千/万 is one order lower: 两百五 is 250, 一千二 is 1200.
        section += digit * prev_unit // 10 if prev_unit >= 100 and not zero_seen else digit
    return total + section


def _en_number(text: str) -> int | None:
    words = re.split(r"[\s-]+", text.strip().lower())
    if not words or any(w not in lexicon.EN_NUMBERS for w in words):
        return None
    return sum(lexicon.EN_NUMBERS[w] for w in words)


_MAX_NUMBER = 1_000_000_000  # no spoken command needs more; bigger values are noise


def _number(text: str) -> int | float | None:
    """One number token: digits, English words ("twenty-five", "a", "a couple of") or Chinese numerals."""
    token = text.strip().lower()
    value: int | float | None
    if not token:
        return None
    if re.fullmatch(r"\d{1,10}(?:\.\d{1,6})?", token):
        value = _as_number(float(token))
    elif token in lexicon.EN_ONE:
        value = 1
    elif token in lexicon.EN_TWO:
        value = 2
    elif _EN_NUMBER_WORD.fullmatch(token):
        value = _en_number(token)
    else:
        value = _zh_int(token)
    return value if value is not None and value <= _MAX_NUMBER else None


def _first_number(text: str) -> int | float | None:
    """The first number anywhere in ``text``."""
    for match in _ANY_NUMBER.finditer(text):
        value = _number(match.group())
        if value is not None:
            return value
    return None


_DUR_HALF = re.compile(r"half\s+(?:an?\s+)?(?P<u>hour|minute)|半个?(?P<zu>小时|钟头|分钟)", _FLAGS)
_DUR_EN = re.compile(
    rf"(?P<n>{lexicon.NUM_EN})?[\s-]*(?P<h1>and\s+a\s+half\s+)?(?P<u>{lexicon.UNIT_EN})(?P<h2>\s+and\s+a\s+half)?$",
    _FLAGS,
)
_DUR_ZH = re.compile(rf"(?P<n>{lexicon.NUM_ZH})?个?(?P<h>半)?个?(?P<u>{lexicon.UNIT_ZH})$", _FLAGS)


def _duration_s(text: str) -> float | None:
    """A spoken duration in seconds; a missing count means one ("hour" -> 3600, "半小时" -> 1800)."""
    text = text.strip()
    half = _DUR_HALF.fullmatch(text)
    if half is not None:
        unit = (half["u"] or half["zu"]).lower()
        return lexicon.SECONDS_PER_UNIT[unit] / 2
    match = _DUR_EN.fullmatch(text) or _DUR_ZH.fullmatch(text)
    if match is None:
        return None
    count = _number(match["n"]) if match["n"] else 1
    if count is None:
        return None
    extra = 0.5 if any(match.groupdict().get(g) for g in ("h1", "h2", "h")) else 0.0
    unit = match["u"].lower()
    return (count + extra) * lexicon.SECONDS_PER_UNIT[unit]


_CLOCK_EN = re.compile(
    rf"(?P<h>{lexicon.HOUR_EN})(?::(?P<m>\d{{2}}))?\s*(?:o'?clock)?\s*(?:(?P<ap>[ap])\.?\s?m\.?)?$", _FLAGS
)
_CLOCK_ZH = re.compile(
    rf"(?P<dp>{lexicon.DAYPART_ZH})?\s*(?P<h>{lexicon.NUM_ZH})\s*(?:点|时)"
    rf"(?P<m>半|一刻|三刻|{lexicon.NUM_ZH})?分?钟?$",
    _FLAGS,
)
_PM_DAYPARTS = ("下午", "傍晚", "晚上")
_QUARTER_EN = re.compile(
    rf"(?P<q>half|(?:a\s+)?quarter)\s+(?P<dir>past|after|to|before)\s+(?P<h>{lexicon.HOUR_EN}(?:\s*[ap]\.?\s?m\.?)?)",
    _FLAGS,
)


def _clock(text: str) -> str | None:
    """A clock time as "HH:MM": "3pm", "15:30", "noon", "下午三点半", "晚上8点", "八点一刻"."""
    text = text.strip().lower()
    if text in ("noon", "midday"):
        return "12:00"
    if text == "midnight":
        return "00:00"
    quarter = _QUARTER_EN.fullmatch(text)
    if quarter is not None:
        return _quarter(quarter)
    match = _CLOCK_EN.fullmatch(text)
    if match is not None:
        hour = _number(match["h"])
        minute = int(match["m"]) if match["m"] else 0
        if match["ap"] == "p" and isinstance(hour, int) and hour < 12:
            hour += 12
        elif match["ap"] == "a" and hour == 12:
            hour = 0
        return _hhmm(hour, minute)
    match = _CLOCK_ZH.fullmatch(text)
    if match is None:
        return None
    if match["dp"] is None and match["m"] is None and match["h"] == "一" and not text.endswith("钟"):
        # "多喝一点水": 一点 alone is "a little", not one o'clock.
        return None
    hour = _number(match["h"])
    minute_text = match["m"] or ""
    named = {"半": 30, "一刻": 15, "三刻": 45}.get(minute_text)
    zh_minute = named if named is not None else (_number(minute_text) if minute_text else 0)
    if not isinstance(hour, int) or not isinstance(zh_minute, int):
        return None
    daypart = match["dp"]
    if (
        (daypart in _PM_DAYPARTS and hour < 12)
        or (daypart == "中午" and hour < 6)
        or (daypart in ("夜里", "半夜", "深夜") and 6 <= hour < 12)
    ):
        hour += 12
    elif daypart in ("晚上", "夜里", "半夜", "深夜") and hour == 12:
        hour = 0
    return _hhmm(hour, zh_minute)


def _quarter(match: re.Match[str]) -> str | None:
    """ "half past three", "a quarter to 4pm": the hour's clock time moved by 30 or 15 minutes."""
    base = _clock(match["h"])
    if base is None:
        return None
    hh, mm = (int(part) for part in base.split(":"))
    shift = 30 if match["q"] == "half" else 15
    total = (hh * 60 + mm + (shift if match["dir"] in ("past", "after") else -shift)) % (24 * 60)
    return _hhmm(total // 60, total % 60)


def _hhmm(hour: int | float | None, minute: int) -> str | None:
    if not isinstance(hour, int) or not 0 <= hour <= 24 or not 0 <= minute <= 59:
        return None
    return f"{hour % 24:02d}:{minute:02d}"


# ---------------------------------------------------------------------------------------------------------
# Converters: Conv -> (matched text, language, slot) -> value or None.

_LEAD = {"en": re.compile(lexicon.LEAD_EN, _FLAGS), "zh": re.compile(lexicon.LEAD_ZH, _FLAGS)}
_TRAIL = {"en": re.compile(lexicon.TRAIL_EN, _FLAGS), "zh": re.compile(lexicon.TRAIL_ZH, _FLAGS)}
_PLACE_LEAD = {"en": re.compile(lexicon.PLACE_LEAD_EN, _FLAGS), "zh": re.compile(lexicon.PLACE_LEAD_ZH)}
_EDGE = " ,.!?;:~'\"()[]-"


def _clean(text: str, lang: str) -> str:
    text = original = _SPACES.sub(" ", text.strip(_EDGE))
    for _ in range(2):  # "the usual please" / "一下吧": peel both ends twice
        text = _LEAD[lang].sub("", text).strip(_EDGE)
        text = _TRAIL[lang].sub("", text).strip(_EDGE)
    # Filler that is all there is, is the value ("谢谢用日语怎么说" asks about 谢谢).
    return text or original


def _text(raw: str, lang: str, slot: str) -> SlotValue | None:
    value = _clean(raw, lang)
    lowered = value.lower()
    if not value or lowered in lexicon.STOP_ANY or lowered in lexicon.STOP_VALUES.get(slot, frozenset()):
        return None
    return value


def _place(raw: str, lang: str, slot: str) -> SlotValue | None:
    value = _clean(raw, lang)
    for code in ("en", "zh"):
        value = _clean(_PLACE_LEAD[code].sub("", value), lang)
    return lexicon.PLACES.get(value.lower(), value) or None


def _int(raw: str, lang: str, slot: str) -> SlotValue | None:
    value = _number(raw)
    if value is None:
        value = _first_number(raw)
    return int(value) if value is not None and float(value).is_integer() else None


def _money(raw: str, lang: str, slot: str) -> SlotValue | None:
    return _first_number(raw)


def _delay_min(raw: str, lang: str, slot: str) -> SlotValue | None:
    seconds = _duration_s(raw)
    # A bare number is in the slot's own unit: the answer "10" to "in how many minutes?".
    return _number(raw) if seconds is None else _as_number(seconds / 60)


def _duration(raw: str, lang: str, slot: str) -> SlotValue | None:
    seconds = _duration_s(raw)
    return _number(raw) if seconds is None else _as_number(seconds)


def _clock_value(raw: str, lang: str, slot: str) -> SlotValue | None:
    return _clock(raw)


def _weekday(raw: str, lang: str, slot: str) -> SlotValue | None:
    return lexicon.WEEKDAYS.get(raw.strip().lower())


def _daypart(raw: str, lang: str, slot: str) -> SlotValue | None:
    return lexicon.DAYPARTS.get(_SPACES.sub(" ", raw.strip().lower()))


def _language(raw: str, lang: str, slot: str) -> SlotValue | None:
    return lexicon.LANGUAGES.get(raw.strip().lower())


_CONVERTERS: dict[Conv, Callable[[str, str, str], SlotValue | None]] = {
    Conv.TEXT: _text,
    Conv.PLACE: _place,
    Conv.INT: _int,
    Conv.MONEY: _money,
    Conv.DELAY_MIN: _delay_min,
    Conv.DURATION_S: _duration,
    Conv.EVERY_MIN: _delay_min,
    Conv.CLOCK: _clock_value,
    Conv.WEEKDAY: _weekday,
    Conv.DAYPART: _daypart,
    Conv.LANG: _language,
}

# ---------------------------------------------------------------------------------------------------------
# Compiled tables.


@dataclass(frozen=True, slots=True)
class _Rule:
    slot: str
    pattern: re.Pattern[str]
    value: SlotValue | Conv
    consume: bool
    also: tuple[tuple[str, SlotValue], ...]


def _compile_rules(specs: tuple[SlotSpec, ...]) -> tuple[_Rule, ...]:
    return tuple(_Rule(s.slot, re.compile(s.pattern, _FLAGS), s.value, s.consume, s.also) for s in specs)


_LANGS = ("en", "zh")
_TRIGGERS: dict[str, tuple[tuple[Skill, re.Pattern[str]], ...]] = {
    lang: tuple((Skill(skill), re.compile(pattern, _FLAGS)) for skill, pattern in lexicon.TRIGGERS[lang])
    for lang in _LANGS
}
_SLOT_RULES: dict[str, dict[Skill, tuple[_Rule, ...]]] = {
    lang: {Skill(skill): _compile_rules(specs) for skill, specs in lexicon.SLOTS[lang].items()} for lang in _LANGS
}


def _token_pattern(lang: str) -> tuple[re.Pattern[str], dict[str, str | None]]:
    """One longest-first alternation of every reply token and filler, and the kind of each token."""
    kinds: dict[str, str | None] = {}
    for kind, tokens in lexicon.REPLIES[lang].items():
        for token in tokens:
            kinds[token.lower()] = kind
    for filler in lexicon.FILLERS[lang]:
        kinds.setdefault(filler.lower(), None)
    alternation = "|".join(re.escape(t) for t in sorted(kinds, key=lambda t: (-len(t), t)))
    # English tokens must end at a word boundary ("yes" is not a prefix of "yesterday"); Chinese has none.
    tail = r"(?![\w'])" if lang == "en" else ""
    return re.compile(rf"(?:{alternation}){tail}", _FLAGS), kinds


_REPLY_TOKENS = {lang: _token_pattern(lang) for lang in _LANGS}
_REPLY_SKIP = re.compile(r"[\s,.!?;:~\"'()\-]+")
_CANCEL_OBJECT = {lang: tuple(re.compile(p, _FLAGS) for p in lexicon.CANCEL_OBJECT[lang]) for lang in _LANGS}
_KIND_RANK = {ReplyKind.CONFIRM: 0, ReplyKind.DENY: 1, ReplyKind.CANCEL: 2}
_ANSWER_LEAD = {"en": re.compile(lexicon.ANSWER_LEAD_EN, _FLAGS), "zh": re.compile(lexicon.ANSWER_LEAD_ZH)}

# ---------------------------------------------------------------------------------------------------------
# Matching.


def _reply_kind(body: str, lang: str) -> ReplyKind | None:
    """The reply an utterance makes, if it is made only of reply words and fillers (or a cancel + object)."""
    pattern, kinds = _REPLY_TOKENS[lang]
    found: list[ReplyKind] = []
    pos = 0
    while pos < len(body):
        skip = _REPLY_SKIP.match(body, pos)
        if skip is not None:
            pos = skip.end()
            continue
        token = pattern.match(body, pos)
        if token is None:
            found = []
            break
        kind = kinds[token.group().lower()]
        if kind is not None:
            found.append(ReplyKind(kind))
        pos = token.end()
    else:
        if found:
            return max(found, key=_KIND_RANK.__getitem__)
    if any(p.match(body) for p in _CANCEL_OBJECT[lang]):
        return ReplyKind.CANCEL
    return None


def _cut(text: str, start: int, end: int) -> str:
    left, right = text[:start], text[end:]
    # Keep two Latin words apart; Chinese needs no space ("提醒我" + "给妈妈打电话").
    joiner = " " if left[-1:].isascii() and left[-1:].isalnum() and right[:1].isascii() and right[:1].isalnum() else ""
    return _SPACES.sub(" ", f"{left}{joiner}{right}").strip()


def _extract(skill: Skill, text: str, lang: str) -> tuple[dict[str, SlotValue], str]:
    """Run the skill's slot rules for ``lang`` over ``text``; return the slots and what no rule consumed."""
    slots: dict[str, SlotValue] = {}
    work = text
    for rule in _SLOT_RULES[lang].get(skill, ()):
        if rule.slot in slots:
            continue
        for match in rule.pattern.finditer(work):
            value = _rule_value(rule, match, lang)
            if value is None:
                continue
            slots[rule.slot] = value
            for name, extra in rule.also:
                slots.setdefault(name, extra)
            if rule.consume:
                work = _cut(work, match.start(), match.end())
            break
    _finish(skill, slots)
    return slots, work


def _rule_value(rule: _Rule, match: re.Match[str], lang: str) -> SlotValue | None:
    if not isinstance(rule.value, Conv):
        return rule.value
    groups = match.groupdict()
    raw = next((groups[g] for g in ("v", "v2") if groups.get(g) is not None), match.group())
    return _CONVERTERS[rule.value](raw, lang, rule.slot)


_PM = ("afternoon", "evening", "night")
_PAST_PERIODS = ("last_night", "yesterday", "week", "last_week", "month")


def _finish(skill: Skill, slots: dict[str, SlotValue]) -> None:
    """Cross-slot rules that a single pattern cannot express; drops internal "_" slots."""
    at = slots.get("at")
    if slots.get("_bare") and isinstance(at, str):
        hour, minute = (int(part) for part in at.split(":"))
        daypart = slots.get("daypart")
        if daypart in _PM and hour < 12 and not (daypart == "night" and hour < 5):
            hour += 12
        elif daypart is None and 1 <= hour <= 6:
            # An hour said alone ("at 3", "三点") is taken as afternoon from 1 to 6, as people mean it.
            hour += 12
        slots["at"] = f"{hour:02d}:{minute:02d}"
    if (
        skill is Skill.HEALTH_QUERY
        and slots.get("measure")
        and (slots.get("metric") == "sleep" or slots.get("period") in _PAST_PERIODS)
    ):
        del slots["measure"]  # "check my sleep last night" reads stored data; nothing to measure now
    for name in [n for n in slots if n.startswith("_")]:
        del slots[name]


def _match_intent(body: str, lang: str) -> tuple[Skill, dict[str, SlotValue]] | None:
    for skill, trigger in _TRIGGERS[lang]:
        if trigger.search(body):
            slots, _ = _extract(skill, body, lang)
            return skill, slots
    return None


def _prepare(text: str) -> str | None:
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    normal = normalize_text(text)
    if len(normal) > MAX_CHARS:
        return None
    return _strip_wake(normal)


def parse(text: str, lang: str | None = None) -> Parsed:
    """Understand one utterance.

    The wake word ("Hey Qwen," / "千问，" / "小问") is stripped. An utterance made only of reply words is a
    Reply (the strongest wins: cancel > deny > confirm; "cancel my ride" is a cancel); otherwise the skill
    triggers are tried in a fixed order and the first match is an Intent with the slots the sentence states.
    The tables of ``lang`` are tried first, then those of the other language (ASR often tags "OK" as Chinese).
    Pure and deterministic: no I/O, no clock; the same input gives the same result.

    Args:
        text: the utterance (ASR final text).
        lang: the language tag if known ("zh", "zh-CN", "en-US", ...); otherwise, or if it is neither Chinese
            nor English, the language is detected from the text.

    Returns:
        An Intent, a Reply or an Unknown; its ``lang`` is "en" or "zh" and its ``text`` is ``text`` unchanged.

    Raises:
        TypeError: if ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if len(text) > MAX_CHARS:
        return _parse(text, lang)
    return _parse_cached(text, lang)


def _parse(text: str, lang: str | None) -> Parsed:
    body = _prepare(text)
    code = _lang_code(lang) or detect_lang(body or normalize_text(text)[:MAX_CHARS])
    if not body:
        return Unknown(lang=code, text=text)
    for table in (code, _other(code)):
        kind = _reply_kind(body, table)
        if kind is not None:
            return Reply(kind=kind, lang=code, text=text)
    found = _read(body, code)
    score = 1.0
    for fixed in _corrections(body):
        again = _read(fixed.text, code)
        # The exact reading wins, unless there is none, or it only exists because a misheard word was taken as
        # free text ("get me a txi" ordered food named "txi") and the corrected word names another skill.
        if again is not None and (found is None or (again[0] != found[0] and _names_skill(fixed))):
            found, score = again, fixed.score
            if fixed.real_words and again[0] in PAID_SKILLS:
                score = min(score, fuzzy.REAL_WORD)  # money is not spent on a word that was itself a word
            break
    if found is None:
        return Unknown(lang=code, text=text)
    skill, slots = found
    score = min(score, _near_places(slots))
    return Intent(skill=skill, slots=MappingProxyType(slots), lang=code, text=text, score=score)


def _read(body: str, code: str) -> tuple[Skill, dict[str, SlotValue]] | None:
    for table in (code, _other(code)):
        found = _match_intent(body, table)
        if found is not None:
            return found
    return None


def _corrections(body: str) -> list[fuzzy.Correction]:
    """Readings of the utterance with near-miss English words and misheard Chinese terms replaced."""
    variants = (fuzzy.corrections_en(body) if _LATIN_WORD.search(body) else []) or [fuzzy.Correction(body, 1.0, ())]
    out: list[fuzzy.Correction] = []
    for en in variants:
        zh = fuzzy.correct_zh(en.text) if _HAN.search(body) else fuzzy.Correction(en.text, 1.0, ())
        if not (en.changed or zh.changed):
            continue
        both = fuzzy.EXTRA if en.changed and zh.changed else 1.0
        real = en.real_words or zh.real_words
        out.append(fuzzy.Correction(zh.text, min(en.score, zh.score) * both, en.changed + zh.changed, real))
    return out


def _names_skill(fixed: fuzzy.Correction) -> bool:
    return fuzzy.names_skill(fixed) or any(
        term not in lexicon.PLACES for _, term in fixed.changed if not term.isascii()
    )


_PLACE_SLOTS = ("destination", "pickup", "address")


def _near_places(slots: dict[str, SlotValue]) -> float:
    """Read a place slot that nearly names a known place as that place ("ofice" -> office); the lowest similarity."""
    score = 1.0
    for name in _PLACE_SLOTS:
        value = slots.get(name)
        if not isinstance(value, str) or value in ("home", "office"):
            continue
        near = fuzzy.place_zh(value) if _HAN.search(value) else fuzzy.place_en(value)
        if near is not None:
            slots[name], sim = near
            score = min(score, sim)
    return score


PARSE_CACHE_SIZE = 1024
"""Utterances whose parse is kept: people ask the same few things again and again (what ``parse`` returns is
immutable, and the same for the same text and tag). Longer input than MAX_CHARS is never kept."""
_parse_cached = functools.lru_cache(maxsize=PARSE_CACHE_SIZE)(_parse)


def parse_slot_answer(skill: Skill | str, slot: str, text: str, lang: str | None = None) -> SlotValue | None:
    """Read the answer to a question the agent asked about one slot.

    The skill's own slot rules are tried first ("to the airport" / "去机场" for a destination, "in ten
    minutes" for delay_min, "3pm" for at); if none gives the slot, the rest of the answer is read by the kind
    of slot: a place ("the airport" -> "airport", "家" -> "home"), free text ("beef noodles", "牛肉面"), a
    number ("30 yuan" -> 30, "两份" -> 2), a duration ("十分钟" -> 10 for delay_min) or a language.

    Args:
        skill: the skill whose slot was asked for.
        slot: the slot name, as in Intent.slots.
        text: the answer.
        lang: the language tag if known, else detected.

    Returns:
        The value, or None when the answer gives none, including when it is a reply such as "no" or
        "cancel" (check ``parse(text)`` for that first).

    Raises:
        TypeError: if ``text`` is not a str.
        ValueError: if ``skill`` is not a known skill.
    """
    skill = Skill(skill)
    body = _prepare(text)
    if not body:
        return None
    code = _lang_code(lang) or detect_lang(body)
    if any(_reply_kind(body, table) is not None for table in (code, _other(code))):
        return None
    rest_by_lang: dict[str, str] = {}
    for table in (code, _other(code)):
        slots, rest = _extract(skill, body, table)
        if slot in slots:
            return slots[slot]
        rest_by_lang[table] = rest
    conv = lexicon.ANSWER_KIND.get(slot)
    if conv is None:
        return None
    rest = _ANSWER_LEAD[code].sub("", rest_by_lang[code]).strip()
    return _CONVERTERS[conv](rest, code, slot) if rest else None
