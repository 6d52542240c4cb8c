"""Health data as its own class: the mark on the contract's fields, and redaction driven by that mark.

A field that carries a health value (heart rate, HRV, SpO2, skin temperature, respiration, stress, sleep stages,
the health part of the fused context) is declared with :func:`health_field` (or given :data:`HEALTH` as its
``json_schema_extra``). Text fields that quote a health value only sometimes (an alert card, a spoken answer) are
declared with :data:`HEALTH_IF_FLAGGED`: they are health data when their body's ``health`` flag is set. The mark
shows in the JSON Schema and the AsyncAPI export as ``"x-wearbus-health": true`` (or ``"if-flagged"``).

Everything else (log redaction, the DLQ, the ``up`` timeline, ``wearbus tap``, the console, recordings, the broker's
ACL) asks this module, so the list of health fields lives in one place: the models.

Redaction keeps the shape: a marked field stays present, its value becomes :data:`REDACTED` (maps keep their keys,
lists their length; ``None`` stays ``None``, as it reveals nothing).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

HEALTH_KEY = "x-wearbus-health"
REDACTED = "‹redacted›"
HEALTH: dict[str, Any] = {HEALTH_KEY: True}
HEALTH_IF_FLAGGED: dict[str, Any] = {HEALTH_KEY: "if-flagged"}
#: The body field that turns :data:`HEALTH_IF_FLAGGED` fields into health data.
FLAG = "health"

Mark = Literal[True, "if-flagged"]
B = TypeVar("B", bound=BaseModel)


def health_field(default: Any = ..., **kwargs: Any) -> Any:
    """``pydantic.Field`` with the health mark (same arguments)."""
    return Field(default, json_schema_extra=dict(HEALTH), **kwargs)


def mark_of(info: FieldInfo) -> Mark | None:
    """The health mark of one pydantic field, if any."""
    extra = info.json_schema_extra
    if isinstance(extra, dict):
        value = extra.get(HEALTH_KEY)
        if value is True or value == "if-flagged":
            return typing.cast(Mark, value)
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


@cache
def marks(model: type[BaseModel]) -> dict[str, Mark]:
    """The marked fields of a model (its own, not nested ones): field name to mark."""
    return {name: m for name, info in model.model_fields.items() if (m := mark_of(info)) is not None}


@cache
def _nested(model: type[BaseModel]) -> dict[str, tuple[type[BaseModel], ...]]:
    """The unmarked fields of a model that hold other models, with the models they can hold."""
    out: dict[str, tuple[type[BaseModel], ...]] = {}
    for name, info in model.model_fields.items():
        if name in marks(model):
            continue
        found = tuple(dict.fromkeys(_models_in(info.annotation)))
        if found:
            out[name] = found
    return out


@cache
def carries_health(model: type[BaseModel]) -> bool:
    """Whether a body of this model can carry a health value (a marked field, itself or nested)."""
    if any(m is True for m in marks(model).values()):
        return True
    if any(m == "if-flagged" for m in marks(model).values()):
        return True
    return any(carries_health(m) for models in _nested(model).values() for m in models)


@cache
def always_health(model: type[BaseModel]) -> bool:
    """Whether every body of this model is health data (an unconditional mark, itself or nested)."""
    if any(m is True for m in marks(model).values()):
        return True
    return any(always_health(m) for models in _nested(model).values() for m in models)


def health_names(models: Iterable[type[BaseModel]]) -> frozenset[str]:
    """The names of the marked fields of ``models`` and the models nested in them (for maps of unknown type)."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()
    todo = list(models)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        names.update(n for n, m in marks(model).items() if m is True)
        for nested in _nested(model).values():
            todo.extend(nested)
    return frozenset(names)


def hide(value: Any) -> Any:
    """A value with every leaf replaced by :data:`REDACTED`, keeping maps' keys and lists' lengths."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: hide(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [hide(v) for v in value]
    return REDACTED


def _pick(models: tuple[type[BaseModel], ...], value: Mapping[str, Any]) -> type[BaseModel] | None:
    """Which of ``models`` a map is (by its ``type`` literal when there are several)."""
    if len(models) == 1:
        return models[0]
    kind = value.get("type")
    for m in models:
        field = m.model_fields.get("type")
        if field is not None and field.default == kind:
            return m
    return None


def redact_data(model: type[BaseModel], data: Any, *, names: frozenset[str] = frozenset()) -> Any:
    """A copy of ``data`` (a body of ``model`` as plain data) with its health values redacted.

    Args:
        model: the body's model.
        data: the body as a map (``model_dump(mode="json")`` or decoded from the wire); anything else is returned
            as it is.
        names: field names to redact where a nested map's model is unknown (see :func:`redact_by_name`).
    """
    if not isinstance(data, Mapping):
        return data
    own, nested = marks(model), _nested(model)
    flagged = bool(data.get(FLAG))
    out: dict[str, Any] = {}
    for key, value in data.items():
        mark = own.get(key)
        if mark is True or (mark == "if-flagged" and flagged):
            out[key] = hide(value)
        elif key in nested:
            out[key] = _redact_nested(nested[key], value, names)
        else:
            out[key] = value
    return out


def _redact_nested(models: tuple[type[BaseModel], ...], value: Any, names: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        model = _pick(models, value)
        if model is not None:
            return redact_data(model, value, names=names)
        if all(isinstance(v, Mapping) for v in value.values()):  # dict[str, Model]
            return {k: _redact_nested(models, v, names) for k, v in value.items()}
        return redact_by_name(value, names)
    if isinstance(value, list | tuple):
        return [_redact_nested(models, v, names) for v in value]
    return value


def redact_model(body: BaseModel) -> dict[str, Any]:
    """A body as plain JSON-able data with its health values redacted."""
    return typing.cast(dict[str, Any], redact_data(type(body), body.model_dump(mode="json")))


def redact_by_name(data: Any, names: frozenset[str]) -> Any:
    """Redact, at any depth of plain data, the values of keys in ``names`` (for maps whose model is unknown)."""
    if isinstance(data, Mapping):
        flagged = bool(data.get(FLAG))
        return {
            k: hide(v) if (k in names or (flagged and k in _FLAGGED_TEXT)) else redact_by_name(v, names)
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact_by_name(v, names) for v in data]
    if isinstance(data, BaseModel):
        return redact_model(data)
    return data


#: Text field names that quote health values when their map's ``health`` flag is set (filled by the contract).
_FLAGGED_TEXT: set[str] = set()


def register_flagged(models: Iterable[type[BaseModel]]) -> None:
    """Note the ``if-flagged`` field names of ``models`` for :func:`redact_by_name` (called by the contract)."""
    for model in models:
        _FLAGGED_TEXT.update(n for n, m in marks(model).items() if m == "if-flagged")


def holds_health(body: BaseModel) -> bool:
    """Whether this body holds a health value now (an always-health model, or a flagged text)."""
    model = type(body)
    return always_health(model) or (carries_health(model) and bool(getattr(body, FLAG, False)))


def redact_body(body: B) -> B:
    """The same body with its health values redacted, built without validation (a redacted value is a string
    where the model wants a number): for display code that reads bodies, never for the wire. Nested models stay
    models."""
    if not holds_health(body):
        return body
    return _redact_obj(body)


def _redact_obj(body: B) -> B:
    model = type(body)
    own, nested = marks(model), _nested(model)
    flagged = bool(getattr(body, FLAG, False))
    updates: dict[str, Any] = {}
    for name in model.model_fields:
        mark = own.get(name)
        if mark is True or (mark == "if-flagged" and flagged):
            updates[name] = hide(getattr(body, name))
        elif name in nested:
            updates[name] = _redact_walk(getattr(body, name))
    return body.model_copy(update=updates)


def _redact_walk(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _redact_obj(value)
    if isinstance(value, list | tuple):
        return [_redact_walk(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_walk(v) for k, v in value.items()}
    return value
