"""The fast paths of the utterance-to-card path give exactly what the plain algorithms give.

Display measuring (``char_units``, ``text_units``, ``wrap``) skips the Unicode table for text with no wide
character; ``normalize_text`` and ``detect_lang`` skip NFKC and the per-character scan for printable ASCII;
``parse`` keeps recent results. Each is checked here against a copy of the plain algorithm.
"""

from __future__ import annotations

import re
import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import intents
from agent.core.intents import detect_lang, normalize_text, parse
from schemas.display import char_units, paginate, text_units, wrap

_WIDE = frozenset({"W", "F"})


def _slow_units(ch: str) -> int:
    return 5 if unicodedata.east_asian_width(ch) in _WIDE else 3


def _slow_text_units(text: str) -> int:
    return sum(_slow_units(ch) for ch in text)


def _slow_tokens(paragraph: str) -> list[str]:
    tokens: list[str] = []
    word = ""
    for ch in paragraph:
        if _slow_units(ch) == 5:
            if word:
                tokens.append(word)
                word = ""
            tokens.append(ch)
        elif ch == " " and word.strip():
            tokens.append(word)
            word = ch
        else:
            word += ch
    if word:
        tokens.append(word)
    return tokens


def _slow_fit(text: str, units: int) -> int:
    total = 0
    for i, ch in enumerate(text):
        total += _slow_units(ch)
        if total > units:
            return max(i, 1)
    return len(text)


def _slow_wrap(text: str, units: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for token in _slow_tokens(paragraph):
            candidate = (line + token) if line else token.lstrip()
            if _slow_text_units(candidate) <= units:
                line = candidate
                continue
            if line:
                lines.append(line.rstrip())
            line = token.lstrip()
            while _slow_text_units(line) > units:
                cut = _slow_fit(line, units)
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line.rstrip())
    return lines


def _slow_normalize(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).translate(intents._PUNCT)
    cleaned = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in folded)
    return re.sub(r"\s+", " ", cleaned).strip()


# Text that mixes what the fast paths take (ASCII, Latin-1, spaces) with what they must leave to the table.
_MIXED = st.text(
    alphabet=st.one_of(
        st.sampled_from(" \t\n\r\x0b\x0c\x1f\x7f\u00a0\u3000`…—“”。、，？！"),
        st.characters(max_codepoint=0x7F),
        st.characters(max_codepoint=0x3FF),
        st.characters(min_codepoint=0x3000, max_codepoint=0x9FFF),
        st.characters(),
    ),
    max_size=120,
)


def test_char_units_of_every_code_point() -> None:
    for cp in range(0x110000):
        ch = chr(cp)
        assert char_units(ch) == _slow_units(ch), hex(cp)


@pytest.mark.parametrize("bad", ["", "ab", "ä1"])
def test_char_units_refuses_more_than_one_character(bad: str) -> None:
    with pytest.raises(TypeError):
        char_units(bad)


@given(_MIXED)
def test_text_units(text: str) -> None:
    assert text_units(text) == _slow_text_units(text)


@settings(max_examples=300)
@given(_MIXED, st.sampled_from([3, 5, 12, 30, 60, 120]))
def test_wrap(text: str, units: int) -> None:
    assert wrap(text, units) == _slow_wrap(text, units)


@given(st.text(alphabet=st.sampled_from("ab 中\t"), max_size=300))
def test_wrap_long_paragraphs(text: str) -> None:
    assert wrap(text) == _slow_wrap(text, 120)
    assert paginate(text) == paginate_slow(text)


def paginate_slow(text: str) -> list[str]:
    wrapped = _slow_wrap(text, 120)
    while wrapped and not wrapped[-1]:
        wrapped.pop()
    if not wrapped:
        return [""]
    return ["\n".join(wrapped[i : i + 5]) for i in range(0, len(wrapped), 5)]


def test_normalize_every_ascii_character() -> None:
    for cp in range(0x80):
        for text in (chr(cp), f"a{chr(cp)}b", f"  {chr(cp)}{chr(cp)}  x  "):
            assert normalize_text(text) == _slow_normalize(text), repr(text)


@given(st.text(alphabet=string.printable + "\x00\x1b\x7f`", max_size=80))
def test_normalize_ascii(text: str) -> None:
    assert normalize_text(text) == _slow_normalize(text)


@given(_MIXED)
def test_normalize_any(text: str) -> None:
    assert normalize_text(text) == _slow_normalize(text)


@given(st.one_of(st.text(alphabet=st.characters(max_codepoint=0x7F)), _MIXED))
def test_detect_lang_of_ascii_is_english(text: str) -> None:
    if text.isascii():
        assert intents._HAN.search(text) is None  # what the slow path would count: no Han character
        assert detect_lang(text) == "en"


@given(
    st.one_of(
        st.sampled_from(
            ["how many steps today", "what time is it", "how did I sleep", "yes", "cancel my ride", "打车去西湖"]
        ),
        _MIXED,
    ),
    st.sampled_from([None, "en", "zh", "zh-CN", "fr"]),
)
def test_parse_kept_equals_parse_anew(text: str, lang: str | None) -> None:
    first = parse(text, lang)
    assert parse(text, lang) == first
    assert intents._parse(text, lang) == first
    assert first.text == text


def test_parse_of_long_text_is_not_kept() -> None:
    text = "order " + "noodles " * 100
    intents._parse_cached.cache_clear()
    parse(text, "en")
    assert intents._parse_cached.cache_info().currsize == 0
    parse("order noodles", "en")
    assert intents._parse_cached.cache_info().currsize == 1


def test_parse_refuses_non_text() -> None:
    with pytest.raises(TypeError, match="text must be str"):
        parse(["not", "text"])  # type: ignore[arg-type]
