"""A seeded generator of plain data from the JSON Schemas pydantic writes for our models (for the core fuzz).

It covers the same subset as tests/strategies.py (which drives hypothesis, ~100x slower per value): const and
enum, anyOf/oneOf, numbers and integers with bounds (edges chosen often), strings with length limits (a few
known patterns, and phrases the agent's intent parser knows for free text), arrays, objects and maps. Times
described as ms since the epoch fall near ``now`` most of the time, so rules and timers see plausible values.
"""

from __future__ import annotations

import random
import re
from typing import Any

PHRASES = (
    "order my usual noodles", "call a taxi to the station", "navigate home", "what's my heart rate",
    "measure my blood oxygen", "start teleprompter keynote", "next page", "yes", "no", "confirm", "cancel",
    "undo", "undo that", "translate this", "remind me", "zorp quux", "打车去火车站", "点我常吃的面", "撤销", "好的",
)  # fmt: skip
PATTERN_SAMPLES = ("en", "zh", "en-US", "zh-Hans", "fr", "CNY", "USD", "EUR")
TEXT = "abcxyz ABC 0123 -_.:/é中文😀\t"


class Generator:
    """Random values valid for a JSON Schema (as far as the schema can say).

    Args:
        rng: the seeded source of randomness.
        now: the time (ms) that epoch-ms fields cluster around.
    """

    def __init__(self, rng: random.Random, now: int) -> None:
        self.rng = rng
        self.now = now

    def value(self, schema: dict[str, Any]) -> Any:
        """A value for a root schema (with ``$defs``)."""
        return self._node(schema, schema.get("$defs", {}))

    def _node(self, node: dict[str, Any], defs: dict[str, Any]) -> Any:
        rng = self.rng
        if "$ref" in node:
            return self._node(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return rng.choice(node["enum"])
        for key in ("anyOf", "oneOf"):
            if key in node:
                return self._node(rng.choice(node[key]), defs)
        kind = node.get("type")
        if kind == "null":
            return None
        if kind == "boolean":
            return rng.random() < 0.5
        if kind in {"integer", "number"}:
            return self._number(node, integer=kind == "integer")
        if kind == "string":
            return self._string(node)
        if kind == "array":
            n = rng.randint(node.get("minItems", 0), min(node.get("maxItems", 3), 3))
            return [self._node(node.get("items", {}), defs) for _ in range(n)]
        if kind == "object" and "properties" in node:
            required = set(node.get("required", []))
            return {
                k: self._node(v, defs) for k, v in node["properties"].items() if k in required or rng.random() < 0.5
            }
        if kind == "object":
            values = node.get("additionalProperties", {"type": "string"})
            return {self._text(1, 8): self._node(values, defs) for _ in range(rng.randint(0, 3))}
        return rng.choice([0, "x", True])

    def _number(self, node: dict[str, Any], *, integer: bool) -> int | float:
        rng = self.rng
        lo = node.get("minimum", node.get("exclusiveMinimum", -1e6))
        hi = node.get("maximum", node.get("exclusiveMaximum", 1e6))
        if "ms since the Unix epoch" in node.get("description", "") and rng.random() < 0.8:
            return int(max(lo, min(hi, self.now + rng.randint(-86_400_000, 3_600_000))))
        roll = rng.random()
        x = lo if roll < 0.15 else hi if roll < 0.3 else rng.uniform(lo, hi)
        if integer:
            value = int(x)
            if "exclusiveMinimum" in node and value <= lo:
                value = int(lo) + 1
            if "exclusiveMaximum" in node and value >= hi:
                value = int(hi) - 1
            return value
        if "exclusiveMinimum" in node and x <= lo:
            x = lo + (hi - lo) * 1e-6
        if "exclusiveMaximum" in node and x >= hi:
            x = hi - (hi - lo) * 1e-6
        return float(x)

    def _string(self, node: dict[str, Any]) -> str:
        lo, hi = node.get("minLength", 0), min(node.get("maxLength", 40), 40)
        if "pattern" in node:
            fits = [s for s in PATTERN_SAMPLES if re.fullmatch(node["pattern"], s)]
            return self.rng.choice(fits) if fits else "x" * max(lo, 1)
        if self.rng.random() < 0.5:
            phrase = self.rng.choice(PHRASES)
            if lo <= len(phrase) <= node.get("maxLength", 10**6):
                return phrase
        return self._text(lo, max(lo, hi))

    def _text(self, lo: int, hi: int) -> str:
        return "".join(self.rng.choice(TEXT) for _ in range(self.rng.randint(lo, hi)))
