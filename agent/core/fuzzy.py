"""Tolerance for recognition errors: near-miss English words and Chinese homophones mapped onto the lexicon.

Speech recognition errs with words that sound or look alike ("txi", "ofice", 达车 for 打车), not with random noise.
The parser reads an utterance exactly first; only when that gives nothing (or a reading built on a word the
lexicon does not know) does it read a corrected text from here. Each correction has a similarity in (0, 1]; the
reading's score is the lowest one, lowered a little for every further correction, so one clear near-miss acts
and a stack of guesses asks back (``intents.ACT_SCORE``).

- English: a word that is neither a lexicon term nor a common English word is replaced by the lexicon term
  nearest in optimal-string-alignment distance (a swap of two letters counts one edit): at most 1 edit for a word
  of up to 5 letters, 2 for a longer one. Similarity: rapidfuzz's normalised Indel ratio.
- Chinese: a run of characters with the pinyin of a lexicon term (any reading of a polyphone) is replaced by that
  term when at most one character differs: 0.9 when the tones agree too, 0.85 when only the syllables do, and
  0.7 (asks back) when the run is itself a common word (大车 is a truck as well as a mishearing of 打车).
Pure and deterministic, like the parser.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

from pypinyin import Style, pinyin
from rapidfuzz.distance import OSA, Indel, JaroWinkler
from wordfreq import zipf_frequency

from agent.core import lexicon

__all__ = ["Correction", "correct_en", "correct_zh", "corrections_en", "known_en", "place_en", "place_zh", "warm"]

TONED = 0.9
TONELESS = 0.85
REAL_WORD = 0.7
EXTRA = 0.95  # each further correction in one sentence multiplies the score by this

_REGEX_ESCAPE = re.compile(r"\\[a-zA-Z]")
_WORD = re.compile(r"[a-z]+")
# Pieces of patterns that are no words ("navigat" of navigat\w*, "ation" of transport(?:ation)?).
_FRAGMENTS = frozenset(
    {"ation", "matic", "imum", "erature", "ally", "ed", "es", "ing", "ly", "ue", "sz", "ap", "sp", "summari",
     "navigat", "translat", "tele", "com", "uberx", "pax", "sec", "secs", "hrs", "min", "mins"}
)  # fmt: skip
_MORE_TERMS = (
    "navigate", "navigation", "translate", "translation", "summarize", "summarise", "temperature",
    "teleprompter", "automatic", "video", "direction", "photos", "reminder", "heartrate", "hungry",
    "takeout", "takeaway", "how", "what", "where", "remind",
)  # fmt: skip
# How often a word is written (wordfreq's Zipf scale: 6 is "the", 3 once per million words). A word this common
# is never "corrected" ("tax" is no misheard "taxi"); a rarer real word may be a homophone ("hart" for "heart"),
# read with less trust, and never starts a paid task without asking back.
VERY_COMMON = 4.5
REAL_WORD_ZIPF = 3.5
REAL_WORD_PENALTY = 0.9


@dataclass(frozen=True, slots=True)
class Correction:
    """A corrected utterance and how sure the correction is (1.0: nothing was corrected)."""

    text: str
    score: float
    changed: tuple[tuple[str, str], ...]  # (heard, read as)
    real_words: bool = False  # a word corrected was itself a real word (or a common one, for Chinese)


def _en_terms() -> frozenset[str]:
    patterns = [p for _, p in lexicon.TRIGGERS_EN]
    patterns += [spec.pattern for specs in lexicon.SLOTS["en"].values() for spec in specs]
    words: set[str] = set(_MORE_TERMS)
    for pattern in patterns:
        words.update(_WORD.findall(_REGEX_ESCAPE.sub(" ", pattern).lower()))
    words.update(w for key in (*lexicon.PLACES, *lexicon.LANGUAGES, *lexicon.EN_NUMBERS) for w in _WORD.findall(key))
    for tokens in (*lexicon.REPLY_EN.values(), lexicon.FILLER_EN):
        for token in tokens:
            words.update(_WORD.findall(token))
    return frozenset(w for w in words if len(w) >= 2 and w not in _FRAGMENTS)


EN_TERMS = _en_terms()
_EN_TRIGGER_TERMS = frozenset(
    w for _, p in lexicon.TRIGGERS_EN for w in _WORD.findall(_REGEX_ESCAPE.sub(" ", p).lower()) if len(w) >= 3
) - _FRAGMENTS | frozenset(_MORE_TERMS)
# What a misheard word may be read as: the words that name a skill, a place or a health metric (a near-miss of a
# slot's filler word, "plates" for "plants", would only corrupt the slot).
_EN_TARGETS = tuple(
    sorted(
        _EN_TRIGGER_TERMS
        | {w for key in lexicon.PLACES for w in _WORD.findall(key) if len(w) >= 3}
        | {"heart", "blood", "oxygen", "sleep", "steps", "stress", "pulse", "temperature", "notes", "meeting"}
    )
)


@functools.lru_cache(maxsize=4096)
def _nearest_en(word: str) -> tuple[tuple[str, float], ...]:
    """The lexicon terms nearest to a word (several when they tie in distance: the most alike first), with the
    similarity; () when none is near enough."""
    limit = 1 if len(word) <= 5 else 2
    found: list[tuple[int, float, str]] = []
    for term in _EN_TARGETS:
        if abs(len(term) - len(word)) > limit:
            continue
        dist = OSA.distance(word, term, score_cutoff=limit)
        if dist <= limit:
            found.append((dist, round(similarity(word, term), 3), term))
    if not found:
        return ()
    best = min(d for d, _, _ in found)
    return tuple((t, r) for d, r, t in sorted(found, key=lambda f: (-f[1], f[2])) if d == best)


def similarity(heard: str, term: str) -> float:
    """How alike two words are: the better of Jaro-Winkler (kind to swapped letters) and the Indel ratio."""
    return max(JaroWinkler.normalized_similarity(heard, term), Indel.normalized_similarity(heard, term))


@functools.lru_cache(maxsize=8192)
def zipf(word: str) -> float:
    """How common an English word is (wordfreq's Zipf scale; 0 for no word)."""
    return float(zipf_frequency(word, "en"))


def known_en(word: str) -> bool:
    """Whether a word is a lexicon term or an ordinary English word: never corrected."""
    return word in EN_TERMS or len(word) < 2 or not word.isalpha() or zipf(word) >= VERY_COMMON


def _score(sims: list[float]) -> float:
    return min(sims) * EXTRA ** (len(sims) - 1) if sims else 1.0


MAX_VARIANTS = 4


def corrections_en(text: str) -> list[Correction]:
    """``text`` with its near-miss words replaced by lexicon terms; one variant per way to read words that are
    equally near to two terms ("taki": take or taxi), each scored lower for the doubt; [] when nothing is near."""
    pieces: list[list[tuple[str, str | None, float]]] = []  # per piece: (text, heard, similarity)
    pos = 0
    real = False
    for match in re.finditer(r"[A-Za-z]+", text):
        word = match.group()
        lowered = word.lower()
        near = () if known_en(lowered) else _nearest_en(lowered)
        if not near:
            continue
        pieces.append([(text[pos : match.start()], None, 1.0)])
        trust = REAL_WORD_PENALTY if zipf(lowered) >= REAL_WORD_ZIPF else 1.0
        pieces.append([(term, word, sim * trust) for term, sim in near])
        real = real or trust < 1.0
        pos = match.end()
    if not pieces:
        return []
    pieces.append([(text[pos:], None, 1.0)])
    out: list[Correction] = []
    for combo in itertools.islice(itertools.product(*pieces), MAX_VARIANTS):
        sims = [
            sim * (EXTRA if len(options) > 1 else 1.0)
            for (_, heard, sim), options in zip(combo, pieces, strict=True)
            if heard
        ]
        changed = tuple((heard, part) for part, heard, _ in combo if heard)
        out.append(Correction("".join(part for part, _, _ in combo), _score(sims), changed, real))
    return out


def correct_en(text: str) -> Correction:
    """The first reading of :func:`corrections_en` (``text`` unchanged, score 1.0, when nothing is near)."""
    found = corrections_en(text)
    return found[0] if found else Correction(text, 1.0, ())


def names_skill(correction: Correction) -> bool:
    """Whether a correction turned a word into a word that names a skill ("txi" -> "taxi")."""
    return any(term in _EN_TRIGGER_TERMS for _, term in correction.changed)


def place_en(value: str) -> tuple[str, float] | None:
    """A place value that nearly is a known place ("ofice" -> "office"), with the similarity."""
    lowered = value.strip().lower()
    if lowered in lexicon.PLACES or not lowered.isascii() or len(lowered) < 4:
        return None
    best: tuple[float, str] | None = None
    for key, canonical in lexicon.PLACES.items():
        if not key.isascii() or abs(len(key) - len(lowered)) > 1:
            continue
        if OSA.distance(lowered, key, score_cutoff=1) <= 1:
            ratio = Indel.normalized_similarity(lowered, key)
            if best is None or ratio > best[0]:
                best = (ratio, canonical)
    return None if best is None else (best[1], best[0])


# --- Chinese


_HAN = re.compile(r"[\u4e00-\u9fff]")
_HAN_RUN = re.compile(r"[\u4e00-\u9fff]{2,}")
# Common words that sound like a lexicon term: corrected only with a question (REAL_WORD).
COMMON_ZH = frozenset({"大车", "公式", "攻势", "提携", "体形", "导向", "翻过", "事业", "大的", "记路"})
_ZH_EXTRA_TERMS = (
    "提词器", "下一首", "上一首", "会议记录", "多少钱", "睡眠", "心率", "血氧", "翻译", "导航", "打车", "外卖",
    "提醒", "播放", "拍照", "拍张照", "公司", "菜单", "闹钟",
)  # fmt: skip


def _zh_terms() -> tuple[str, ...]:
    terms: set[str] = set(_ZH_EXTRA_TERMS)
    for _, pattern in lexicon.TRIGGERS_ZH:
        for run in _HAN_RUN.findall(pattern):
            if not set(run) <= set(lexicon.ZH_DIGITS) | set(lexicon.ZH_UNITS) | {"万", "半"}:
                terms.add(run)
    terms.update(k for k in lexicon.PLACES if not k.isascii() and len(k) >= 2)
    # Longest first: 会议记录 is tried before 记录.
    return tuple(sorted(terms, key=lambda t: (-len(t), t)))


ZH_TERMS = _zh_terms()
_TERMS_BY_CHAR: dict[str, tuple[int, ...]] = {
    ch: tuple(rank for rank, term in enumerate(ZH_TERMS) if ch in term) for ch in {c for t in ZH_TERMS for c in t}
}


@functools.lru_cache(maxsize=8192)
def _readings(ch: str, toned: bool) -> frozenset[str]:
    style = Style.TONE3 if toned else Style.NORMAL
    return frozenset(pinyin(ch, style=style, heteronym=True)[0])


def _sounds(a: str, b: str, toned: bool) -> bool:
    return bool(_readings(a, toned) & _readings(b, toned))


def _match_zh(window: str, term: str) -> float | None:
    """The similarity of a run of characters heard and a lexicon term of the same length (None: no match)."""
    diffs = [(a, b) for a, b in zip(window, term, strict=True) if a != b]
    if len(diffs) != 1:
        return None
    a, b = diffs[0]
    if not (_HAN.match(a) and _HAN.match(b)):
        return None
    if _sounds(a, b, toned=True):
        sim = TONED
    elif _sounds(a, b, toned=False):
        sim = TONELESS
    else:
        return None
    return REAL_WORD if window in COMMON_ZH else sim


def correct_zh(text: str) -> Correction:
    """Replace runs of ``text`` that sound like a lexicon term with one character misheard (one per term)."""
    sims: list[float] = []
    changed: list[tuple[str, str]] = []
    out = text
    # One character misheard at most: a window holds the term's other characters, so only a term with a character
    # in the text can match (a handful of the ~170); they are tried in ZH_TERMS' order, longest first.
    for rank in sorted({rank for ch in set(text) for rank in _TERMS_BY_CHAR.get(ch, ())}):
        term = ZH_TERMS[rank]
        if term in out:
            continue
        n = len(term)
        # Windows where one of the term's characters stands at its place (a replacement keeps the length).
        starts = sorted(
            {p - j for j, ch in enumerate(term) for p, c in enumerate(out) if c == ch and 0 <= p - j <= len(out) - n}
        )
        free = 0
        for i in starts:
            if i < free:
                continue
            window = out[i : i + n]
            sim = _match_zh(window, term)
            if sim is not None:
                sims.append(sim)
                changed.append((window, term))
                out = out[:i] + term + out[i + n :]
                free = i + n
    return Correction(out, _score(sims), tuple(changed), any(heard in COMMON_ZH for heard, _ in changed))


def warm() -> None:
    """Load the word frequencies and the pinyin tables now (~1 s), not inside the first turn that needs them."""
    zipf("hello")
    _readings("打", True)
    correct_zh("达车")


def place_zh(value: str) -> tuple[str, float] | None:
    """A Chinese place value that sounds like a known place ("公思" -> "office"), with the similarity."""
    for key, canonical in lexicon.PLACES.items():
        if key.isascii() or len(key) != len(value):
            continue
        sim = _match_zh(value, key)
        if sim is not None:
            return canonical, sim
    return None
