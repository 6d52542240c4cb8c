"""Turn the core's dataclasses into JSON-ready data and back, driven by their type annotations."""

from __future__ import annotations

import types
import typing
from collections import deque
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from enum import Enum
from functools import cache
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from schemas.errors import AgentError

T = TypeVar("T")


#: Types dumped as they are, looked up by exact type first (the values of a user's state are mostly these).
_PLAIN = frozenset({type(None), bool, int, float, str})


_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    """The field names of a dataclass, None for any other class; once per class (``dataclasses.fields`` builds its
    tuple on every call: a snapshot's dump called it for every object of every user's state)."""
    try:
        return _FIELD_NAMES[cls]
    except KeyError:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None
        return names


def dump(obj: Any) -> Any:
    """JSON-ready data (dicts with string keys, lists, str, int, float, bool, None) of a state object."""
    if type(obj) in _PLAIN or isinstance(obj, bool | int | float | str):  # (their subclasses too: a str enum)
        return obj
    if isinstance(obj, Enum):
        return obj.value
    to_data = getattr(obj, "to_data", None)
    if to_data is not None:
        return to_data()
    # Below, a plain value is taken as it is without a call (most of a state's values; ~155 calls a user before).
    plain = _PLAIN
    names = _field_names(type(obj))
    if names is not None:
        out: dict[str, Any] = {}
        for name in names:
            value = getattr(obj, name)
            out[name] = value if type(value) in plain else dump(value)
        return out
    if isinstance(obj, list | tuple | deque):
        return [x if type(x) in plain else dump(x) for x in obj]
    if isinstance(obj, set | frozenset):
        return sorted(dump(x) for x in obj)
    if isinstance(obj, Mapping):
        return {str(k): v if type(v) in plain else dump(v) for k, v in obj.items()}
    raise AgentError(f"cannot export a {type(obj).__name__}")


def load(cls: type[T], data: Any) -> T:
    """Rebuild an object of dataclass ``cls`` from what :func:`dump` returned.

    Raises:
        AgentError: the data does not fit the class.
    """
    try:
        value: T = _load(cls, data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise AgentError(f"cannot restore {cls.__name__}: {exc}") from exc
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _load(tp: Any, data: Any) -> Any:
    if tp is Any:
        return data
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = get_args(tp)
        if data is None:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:
            return _load(real[0], data)
        return data  # a union of scalars: JSON kept the type
    if origin is Literal:
        return data
    if origin in (list, tuple, deque, dict) or origin is Mapping:
        return _load_container(tp, origin, data)
    if isinstance(tp, type):
        from_data = getattr(tp, "from_data", None)
        if from_data is not None:
            return from_data(data)
        if is_dataclass(tp):
            return _load_dataclass(tp, data)
        if issubclass(tp, Enum):
            return tp(data)
        if tp is float:
            return float(data)
        if tp in (int, str, bool):
            return tp(data)
    raise TypeError(f"unsupported type {tp!r}")


def _load_container(tp: Any, origin: Any, data: Any) -> Any:
    args = get_args(tp)
    if origin is list:
        return [_load(args[0], x) for x in data]
    if origin is deque:
        return deque(_load(args[0], x) for x in data)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(args[0], x) for x in data)
        return tuple(_load(a, x) for a, x in zip(args, data, strict=True))
    key_t, val_t = args
    return {_load(key_t, k): _load(val_t, v) for k, v in data.items()}


def _load_dataclass(cls: type, data: Mapping[str, Any]) -> Any:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data or not f.init:
            continue
        value = _load(hints[f.name], data[f.name])
        if isinstance(value, deque) and f.default_factory is not MISSING:
            # A bounded deque keeps its maxlen: refill the one the field's factory makes.
            fresh = f.default_factory()
            if isinstance(fresh, deque):
                fresh.extend(value)
                value = fresh
        kwargs[f.name] = value
    return cls(**kwargs)
