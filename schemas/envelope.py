"""The envelope every payload travels in, and the decoded message with its topic's identity."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Generic, TypeVar, dataclass_transform

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.events import MAX_COUNT, Body, Ms
from schemas.topics import Topic

B = TypeVar("B", bound=Body)
C = TypeVar("C")

#: How far a sample time (``src_ts``, of the envelope, of its body or of a batch item) may be ahead of the publish
#: time ``ts``: clock skew between a device's sensor and its radio, no more. ``src_ts`` = 10^14 (year 5138) once
#: made every later "what's my heart rate" answer a stale 199 bpm.
MAX_SRC_AHEAD_MS = 5 * 60_000
#: How far a sample time may be behind ``ts``: a ring stores samples for days between syncs.
MAX_SRC_BEHIND_MS = 7 * 86_400_000

_counter = itertools.count(1)
_prefix = os.urandom(6).hex()


def new_id() -> str:
    """A unique id: 12 random hex digits per process, then a counter (cheap, sortable within a process)."""
    return f"{_prefix}-{next(_counter):x}"


def now_ms() -> int:
    """Wall-clock ms since the epoch (for I/O edges only; pure code takes time from a clock)."""
    return time.time_ns() // 1_000_000


class Envelope(BaseModel, Generic[B]):
    """One message on the bus.

    Attributes:
        id: unique id, the dedup key.
        ts: publish time, ms since the epoch.
        seq: per-device sequence number, increasing within a session epoch (0 when the sender does not count).
        src_ts: when the sample was taken (ms); defaults to ``ts``. Ring batches arrive late.
        corr: the id of the event that caused this action (actions and acks), if any.
        data: the typed body, chosen by the topic.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    ts: Ms
    seq: int = Field(default=0, ge=0, le=MAX_COUNT)
    src_ts: Ms | None = None
    corr: str | None = Field(default=None, max_length=128)
    data: B

    @model_validator(mode="after")
    def _default_src_ts(self) -> Envelope[B]:
        ts = self.ts
        if self.src_ts is None:
            object.__setattr__(self, "src_ts", ts)
        elif not ts - MAX_SRC_BEHIND_MS <= self.src_ts <= ts + MAX_SRC_AHEAD_MS:
            _check_sample_time("src_ts", self.src_ts, ts)
        data = self.data
        own_src_ts, has_items = _sample_fields(type(data))
        if own_src_ts:
            own = data.src_ts  # type: ignore[attr-defined]
            if own is not None:
                _check_sample_time("data.src_ts", own, ts)
        if has_items:
            for i, item in enumerate(data.items):  # type: ignore[attr-defined]
                at = item.src_ts
                if at is not None and not ts - MAX_SRC_BEHIND_MS <= at <= ts + MAX_SRC_AHEAD_MS:
                    _check_sample_time(f"data.items.{i}.src_ts", at, ts)
        return self

    @property
    def sample_ts(self) -> int:
        """When the sample was taken (``src_ts``, else ``ts``)."""
        return self.src_ts if self.src_ts is not None else self.ts


@cache
def _sample_fields(model: type[BaseModel]) -> tuple[bool, bool]:
    """Whether a body model has its own ``src_ts`` and batch ``items`` (once per model: ``model_fields`` is a
    property that builds its answer on every read, ~0.3 µs, and this runs for every envelope)."""
    fields = model.model_fields
    return "src_ts" in fields, "items" in fields


def _check_sample_time(name: str, at: int, ts: int) -> None:
    """Refuse a sample time outside the window around the publish time (a ``ValueError``: pydantic names it)."""
    if at > ts + MAX_SRC_AHEAD_MS:
        raise ValueError(
            f"{name} {at} is {(at - ts) / 1000:.0f} s after ts {ts} (at most {MAX_SRC_AHEAD_MS // 1000} s)"
        )
    if at < ts - MAX_SRC_BEHIND_MS:
        days = MAX_SRC_BEHIND_MS / 86_400_000
        raise ValueError(f"{name} {at} is {(ts - at) / 86_400_000:.1f} days before ts {ts} (at most {days:g})")


@cache
def envelope_of(model: type[Body]) -> type[Envelope[Any]]:
    """The envelope class for one body model (cached: pydantic builds a validator per parametrisation)."""
    return Envelope[model]  # type: ignore[valid-type]


@cache
def validator_of(model: type[Body]) -> Callable[[Any], Envelope[Any]]:
    """Validate a plain map as the envelope of ``model``, envelope and body in one call (built once per body model).

    The envelope class's own pydantic-core validator (``__pydantic_validator__``, pydantic's documented attribute),
    called directly: ``model_validate`` and a ``TypeAdapter`` wrap the same call in ~0.3 µs of Python per message.
    Errors are pydantic's ``ValidationError``, as from ``model_validate``.
    """
    validate: Callable[[Any], Envelope[Any]] = envelope_of(model).__pydantic_validator__.validate_python
    return validate


def make(
    data: B, *, ts: int | None = None, seq: int = 0, src_ts: int | None = None, corr: str | None = None
) -> Envelope[B]:
    """Wrap a body in an envelope with a fresh id (``ts`` defaults to the wall clock)."""
    t = now_ms() if ts is None else ts
    env: Envelope[B] = envelope_of(type(data))(
        id=new_id(), ts=t, seq=seq, src_ts=t if src_ts is None else src_ts, corr=corr, data=data
    )
    return env


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[C]) -> type[C]:
    """A dataclass with slots that the type checker holds read-only, without a frozen dataclass's runtime guard.

    A frozen dataclass sets each field through ``object.__setattr__``: for :class:`Message` that was 2.8 µs of
    every received message against 0.4 µs (``python -m bench.decode``, row "Message"), a tenth of what the bus
    spends on one. ``mypy --strict`` still refuses an assignment to a field (``dataclass_transform``'s
    ``frozen_default``); ``dataclasses.replace`` makes a changed copy, and it hashes by its fields, as a frozen one.
    """
    return dataclass(slots=True, unsafe_hash=True)(cls)


@record
class Message:
    """A decoded message with the identity its topic gives it.

    Attributes:
        topic: the MQTT topic it came on.
        where: the parsed topic (user, kind, device, channel, name).
        envelope: the validated envelope.
        qos: the QoS it was delivered with.
        retain: whether it was a retained message.
        mid: the MQTT packet id (for a manual acknowledgement of QoS 1).
        size: the payload size in bytes.
        link: which connection of the receiving client delivered it (an ack is valid only on that one).
        raw: the payload bytes as received (:func:`schemas.codec.decode` fills it; empty for a message made in
            process), so a consumer that keeps the envelope can store them instead of encoding it again.
        json: the payload was JSON (the sender speaks JSON and is answered in JSON).
    """

    topic: str
    where: Topic
    envelope: Envelope[Any]
    qos: int = 0
    retain: bool = False
    mid: int = 0
    size: int = 0
    link: int = 0
    raw: bytes = field(default=b"", repr=False, compare=False)
    json: bool = False

    @property
    def data(self) -> Body:
        """The typed body."""
        body: Body = self.envelope.data
        return body


def dump(envelope: BaseModel) -> dict[str, Any]:
    """An envelope as plain data (no ``None`` fields), ready for msgpack or JSON."""
    return envelope.model_dump(exclude_none=True)
