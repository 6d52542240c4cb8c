"""Hypothesis strategies that generate plain data from the JSON Schemas pydantic writes for our models.

Only the subset pydantic emits for wearbus models is supported: objects with $defs references, const and enum,
anyOf (optional fields), strings with length and pattern, numbers and integers with bounds, booleans, arrays
and string-keyed maps, and discriminated unions (oneOf).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy of values valid for ``schema`` (as far as JSON Schema can say)."""
    return _strategy(schema, schema.get("$defs", {}))


def _strategy(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        return st.deferred(lambda: _strategy(defs[node["$ref"].rsplit("/", 1)[1]], defs))
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return st.one_of([_strategy(n, defs) for n in node[key]])
    kind = node.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo = node.get(
            "minimum",
            node.get("exclusiveMinimum", -(2**31) - 1) + 1 if "exclusiveMinimum" in node else -(2**31),
        )
        hi = node.get("maximum", node.get("exclusiveMaximum", 2**31 + 1) - 1 if "exclusiveMaximum" in node else 2**31)
        return st.integers(min_value=lo, max_value=hi)
    if kind == "number":
        return st.floats(
            min_value=node.get("minimum", node.get("exclusiveMinimum", -1e9)),
            max_value=node.get("maximum", node.get("exclusiveMaximum", 1e9)),
            exclude_min="exclusiveMinimum" in node,
            exclude_max="exclusiveMaximum" in node,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True).filter(
                lambda s: node.get("minLength", 0) <= len(s) <= node.get("maxLength", 10**6)
            )
        return st.text(min_size=node.get("minLength", 0), max_size=min(node.get("maxLength", 40), 40))
    if kind == "array":
        items = _strategy(node.get("items", {}), defs)
        return st.lists(items, min_size=node.get("minItems", 0), max_size=min(node.get("maxItems", 3), 3))
    if kind == "object" and "properties" in node:
        required = set(node.get("required", []))
        props = node["properties"]
        fixed = {k: _strategy(v, defs) for k, v in props.items() if k in required}
        optional = {k: _strategy(v, defs) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(fixed, optional=optional)
    if kind == "object":
        values = _strategy(node.get("additionalProperties", {"type": "string"}), defs)
        return st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=3)
    return st.one_of(st.integers(), st.text(max_size=8), st.booleans())
