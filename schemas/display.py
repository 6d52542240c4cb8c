"""The heads-up display's real limits: 5 lines of ~40 Latin or ~24 CJK characters per screen.

Width is counted in units so that mixed text fits the same way it does on the glasses: a wide (CJK) character
costs 5 units, anything else 3, and a line holds 120 units (40 x 3 = 24 x 5).
"""

from __future__ import annotations

import unicodedata

LINES_PER_SCREEN = 5
LINE_UNITS = 120
_WIDE = frozenset({"W", "F"})
# The first wide code point of this Python's Unicode tables: every character before it (ASCII, Latin-1, ...) costs
# 3 units, so the common Latin text is measured without a table look-up per character.
_FIRST_WIDE = chr(next(cp for cp in range(0x110000) if unicodedata.east_asian_width(chr(cp)) in _WIDE))


def char_units(ch: str) -> int:
    """Display units of one character (5 for CJK / full-width, 3 otherwise)."""
    if ch < _FIRST_WIDE and len(ch) == 1:
        return 3
    return 5 if unicodedata.east_asian_width(ch) in _WIDE else 3


def _narrow(text: str) -> bool:
    """Whether no character of ``text`` is wide (each then costs 3 units)."""
    return text.isascii() or max(text) < _FIRST_WIDE


def text_units(text: str) -> int:
    """Display units of a string."""
    if _narrow(text):
        return 3 * len(text)
    return sum(char_units(ch) for ch in text)


def wrap(text: str, units: int = LINE_UNITS) -> list[str]:
    """Wrap text into display lines: at spaces for Latin words, anywhere between CJK characters.

    Existing newlines are kept. A single word longer than a line is broken where it must be.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if text_units(paragraph) <= units:
            lines.append(paragraph.strip())  # what the loop below makes of a paragraph that fits one line
            continue
        line = ""
        for token in _tokens(paragraph):
            candidate = (line + token) if line else token.lstrip()
            if text_units(candidate) <= units:
                line = candidate
                continue
            if line:
                lines.append(line.rstrip())
            line = token.lstrip()
            while text_units(line) > units:  # a word longer than a line
                cut = _fit(line, units)
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line.rstrip())
    return lines


def paginate(text: str, lines: int = LINES_PER_SCREEN, units: int = LINE_UNITS) -> list[str]:
    """Split text into screens of at most ``lines`` wrapped lines each."""
    wrapped = wrap(text, units)
    while wrapped and not wrapped[-1]:
        wrapped.pop()
    if not wrapped:
        return [""]
    return ["\n".join(wrapped[i : i + lines]) for i in range(0, len(wrapped), lines)]


def fits(text: str, lines: int = LINES_PER_SCREEN, units: int = LINE_UNITS) -> bool:
    """Whether the text fits on one screen of ``lines`` lines."""
    return len(wrap(text, units)) <= lines


def _tokens(paragraph: str) -> list[str]:
    """Split into wrap points: a CJK character is its own token; Latin words keep their leading space."""
    tokens: list[str] = []
    word = ""
    narrow = _narrow(paragraph)
    for ch in paragraph:
        if not narrow and char_units(ch) == 5:
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


def _fit(text: str, units: int) -> int:
    total = 0
    for i, ch in enumerate(text):
        total += char_units(ch)
        if total > units:
            return max(i, 1)
    return len(text)


ELLIPSIS = "…"


def clip_line(text: str, units: int = LINE_UNITS) -> str:
    """One display line of at most ``units`` (runs of white space, newlines included, become one space), ending in
    an ellipsis when cut. The glasses' cards, the agent's wording and the console's mirror all clip with this."""
    text = " ".join(text.split())
    if text_units(text) <= units:
        return text
    budget = units - char_units(ELLIPSIS)
    out: list[str] = []
    used = 0
    for ch in text:
        cost = char_units(ch)
        if used + cost > budget:
            break
        out.append(ch)
        used += cost
    return "".join(out).rstrip() + ELLIPSIS
