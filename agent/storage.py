"""What every agent store honours: the :class:`AgentStore` protocol, the rows it keeps, and how health values are
protected at rest and retained (one definition for the SQLite store, :class:`agent.store.Store`, and a cluster's
Redis bucket store, :class:`agent.cluster.store.RedisBucketStore`).

The runtime, a cluster member, the privacy erase (``wearbus forget``), the run report and the benches use a store
through this protocol only: domain operations, no SQL and no Redis keys. Every store error is a
:class:`~schemas.errors.StoreError`, translated from the library's at the store's edge.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Protocol, Self

from pydantic import BaseModel

from agent.core.api import TaskRecord
from agent.sealing import HealthCipher, is_sealed
from schemas import codec
from schemas.errors import ContractError, StoreError
from schemas.events import EVENTS
from schemas.health import REDACTED, always_health
from schemas.health import marks as marks_of
from schemas.topics import DeviceKey

#: The ``type`` of every event that always carries a health value (by the contract's mark): the retention applies.
HEALTH_EVENT_TYPES = frozenset(str(m.model_fields["type"].default) for m in EVENTS.values() if always_health(m))
HOUR_MS = 3_600_000
#: Events the log's retention deletes in one call at most, by default (:meth:`AgentStore.prune_log`): in SQLite each
#: QoS 1 event's id leaves the dedup table by a search of its own (~8 µs an event, ~2.5 with 85 % samples at QoS 0),
#: so a call holds the event loop 0.6-2 ms; the pump calls again while it deletes.
LOG_PRUNE_CHUNK = 250


class EventRow(NamedTuple):
    """An event as stored (a named tuple in column order: one per event on the hot path, bound as it is)."""

    id: str
    topic: str
    user: str | None
    kind: str | None
    device: str | None
    channel: str
    type: str
    ts: int
    src_ts: int | None
    dev_seq: int
    corr: str | None
    handled_ms: int
    received_wall_ms: int
    qos: int
    retain: bool
    payload: bytes


class Mark(NamedTuple):
    """How far one user's stored state goes: the last event (``seq``) and the last stored tick (``n``) it includes."""

    event_seq: int
    tick_n: int

    def covers(self, kind: str, position: int) -> bool:
        """Whether an item of :meth:`AgentStore.since` (``kind``, its position) is already in the user's state."""
        return position <= (self.tick_n if kind == "tick" else self.event_seq)


class Snapshot(NamedTuple):
    """A stored core snapshot.

    Attributes:
        state: what :meth:`AgentCore.restore` takes (the head and every user's state).
        replay_from: replay the events after this ``seq`` and the ticks stored since.
        tick_ms: the simulated time of the last snapshot.
        marks: per user, what their state already includes (an item it covers is not replayed into it); a user
            without a mark replays everything after ``replay_from``.
    """

    state: dict[str, Any]
    replay_from: int
    tick_ms: int
    marks: dict[str, Mark]


class TickRow(NamedTuple):
    """A tick that changed something, stored so that a replay fires the same timers at the same time.

    Attributes:
        at_ms: the simulated time of the tick.
        users: the users it covered (None: every user).
    """

    at_ms: int
    users: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ActionRow:
    """A command as stored before publishing."""

    id: str
    topic: str
    user: str
    kind: str
    device: str
    type: str
    corr: str
    reason: str
    created_ms: int
    created_wall_ms: int
    payload: bytes


#: One hourly aggregate of a health value: ``{n, sum, min, max}``.
Hourly = dict[str, float]
#: Health values being folded into hourly aggregates, by (user, metric, hour).
Readings = dict[tuple[str, str, int], list[float]]


class AgentStore(Protocol):
    """The agent's store: what the runtime, a cluster member, the privacy erase, the report and the benches use.

    ``async with store:`` opens and closes it. Positions (``seq``, a mark's ``event_seq`` and ``tick_n``) only grow;
    what they are is the store's own (a row number in SQLite, a stream position in Redis).
    """

    #: Whether a snapshot may be written a slice of users at a time (each user's row has its own mark).
    sliced_snapshots: ClassVar[bool]

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def schema_version(self) -> int:
        """The migration level of the stored data (0: a store without migrations)."""
        ...

    # ---- the ingest path

    async def known(self, ids: Iterable[str]) -> set[str]:
        """Which of these envelope ids were already processed (the dedup check), among the events delivered at QoS 1:
        the contract deduplicates those; a QoS 0 message comes at most once, and the pump never asks for its id."""
        ...

    async def commit_batch(
        self,
        events: Sequence[EventRow],
        actions: Sequence[ActionRow],
        tasks: Sequence[TaskRecord],
        alerts: Sequence[tuple[str, str, str, int]],
        ticks: Sequence[TickRow] = (),
        resolutions: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Store one batch atomically: events, the actions they caused, tasks, alerts ``(rule, user, text, at_ms)``,
        ticks and resolved intents ``(event_id, intent JSON)``. Health event payloads are sealed when the store has
        a key. The events are stored as given: the caller asked :meth:`known` first (the pump does), and the QoS 1
        ids among them are known from then on."""
        ...

    async def mark_published(self, ids: Sequence[str], wall_ms: int) -> None:
        """Record that these actions reached the broker (at ``wall_ms``)."""
        ...

    async def mark_acks(self, acks: Sequence[tuple[str, str, str, int]]) -> None:
        """Record device acks: ``(action_id, status, detail, at_ms)``."""
        ...

    async def unpublished(self) -> list[tuple[str, str, bytes]]:
        """Actions stored but not known to be published: ``(id, topic, payload)`` in creation order."""
        ...

    # ---- snapshots and replay

    async def save_core(
        self,
        state: dict[str, Any],
        tick_ms: int,
        wall_ms: int,
        *,
        round_start: Mark | None = None,
        complete: bool = True,
    ) -> Mark:
        """Snapshot users of the core (sealed per user when the store has a key); the mark of what it includes."""
        ...

    async def load_core(self) -> Snapshot | None:
        """The last core snapshot, or None."""
        ...

    async def since(self, event_seq: int) -> list[tuple[str, Any, int]]:
        """What happened after a position, in order: ``("event", EventRow, seq)`` and ``("tick", TickRow, n)``."""
        ...

    async def last_seqs(self, recent: int = 100_000) -> dict[DeviceKey, int]:
        """The ``seq`` of each device's last handled event among the ``recent`` last ones, by (user, kind, device)."""
        ...

    async def resolutions(self) -> dict[str, str]:
        """Resolved intents (JSON) by utterance event id."""
        ...

    async def save_contexts(self, snapshots: Sequence[tuple[str, str, int]]) -> None:
        """Keep the last context snapshot per user: ``(user, json, at_ms)`` (sealed when the store has a key)."""
        ...

    async def contexts(self) -> dict[str, tuple[str, int]]:
        """The last context snapshot per user: ``(json, at_ms)``."""
        ...

    # ---- health data (retention, inspection) and privacy

    async def prune_health(self, before_wall_ms: int, *, limit: int = 500, hourly_before_ms: int | None = None) -> int:
        """Retention: redact the payload of health events received before ``before_wall_ms`` (the event stays, for
        the dedup check and the shape of a replay) after folding their values into hourly aggregates, which are kept
        until ``hourly_before_ms`` (sample time; None: for ever). At most ``limit`` events a call; how many."""
        ...

    async def prune_log(self, before_wall_ms: int | None, *, limit: int = LOG_PRUNE_CHUNK) -> int:
        """Retention of the events log: delete at most ``limit`` of the oldest events received before
        ``before_wall_ms`` (None: none by age; a store with a size cap also deletes the oldest as it nears it) that
        no restart needs any more (a snapshot covers them), and their ids from the dedup check with them: a repeat
        of an event is recognised for as long as the event is kept. How many."""
        ...

    async def health_hourly(self, user: str) -> list[tuple[str, int, Hourly]]:
        """The hourly aggregates of a user: ``(metric, hour_ms, {n, sum, min, max})``, oldest first."""
        ...

    async def health_samples(self) -> dict[str, tuple[int, int]]:
        """Per health event type: how many stored payloads hold their values, and how many of those this store can
        read (sealed ones need the key; redacted ones are not counted)."""
        ...

    async def forget(self, user: str) -> dict[str, int]:
        """Erase every record of ``user`` (run it with the agent stopped); what was removed, per kind of record."""
        ...

    # ---- reading (report, benches, tests)

    async def tasks(self) -> list[TaskRecord]:
        """Every task, oldest first."""
        ...

    async def count_events(self, channel: str | None = None) -> int:
        """How many events are stored (of one channel: ``evt``, ``ack``, ...)."""
        ...

    async def message_counts(self) -> dict[str, int]:
        """Stored events per :func:`message_class`."""
        ...

    async def alert_counts(self) -> dict[str, int]:
        """Stored alerts per rule."""
        ...

    async def action_status_counts(self) -> dict[str, int]:
        """Stored actions per ack status (``pending`` until a device acked)."""
        ...

    async def first_action_latencies(self) -> list[tuple[str, float | None]]:
        """Per event (channel ``evt``) that caused a published action: ``(event id, ms from the event's receipt to
        the publish of the first action of the turn that handled it)``; None when every action came in a later turn
        (a timed action, which waits for its time by design)."""
        ...

    async def stored_counts(self) -> dict[str, int]:
        """Records kept per kind: ``events``, ``actions``, ``tasks``, ``alerts``, ``context``."""
        ...


def message_class(channel: str, topic: str) -> str:
    """How the report counts a message: its channel, and for ``evt`` the class (``evt/sensor``)."""
    if channel != "evt":
        return channel
    cls = topic.partition("/evt/")[2].split("/", 1)[0]
    return f"evt/{cls}" if cls else channel


def _readings(message: Any) -> Iterator[tuple[str, int, float]]:
    """``(metric, hour, value)`` of each numeric health value of a decoded event (``ring.hr.bpm``; batch items by
    their own sample time)."""
    body = message.data
    items = getattr(body, "items", None)
    timed = [(item, item.src_ts or message.envelope.sample_ts) for item in items] if items else [(body, None)]
    for item, t in timed:
        when = t if t is not None else message.envelope.sample_ts
        model: type[BaseModel] = type(item)
        for name, mark in marks_of(model).items():
            value = getattr(item, name, None)
            if mark is True and isinstance(value, int | float) and not isinstance(value, bool):
                yield f"{item.type}.{name}", when - when % HOUR_MS, float(value)


def fold(previous: Hourly | None, values: Sequence[float]) -> Hourly:
    """An hourly aggregate with more values."""
    agg = previous or {"n": 0, "sum": 0.0, "min": math.inf, "max": -math.inf}
    return {
        "n": agg["n"] + len(values),
        "sum": agg["sum"] + sum(values),
        "min": min(agg["min"], *values),
        "max": max(agg["max"], *values),
    }


def is_redacted(payload: bytes) -> bool:
    """Whether a stored payload was redacted by the retention (its health values are gone)."""
    return REDACTED.encode() in payload


class HealthSeal:
    """How a store keeps health values at rest: sealed under the operator's key when there is one (event payloads
    by event id, per-user state and context by user, hourly aggregates by user, metric and hour), and redacted past
    the retention. ``where`` names the store in errors."""

    def __init__(self, cipher: HealthCipher | None, where: str) -> None:
        self.cipher = cipher
        self.where = where

    def _missing_key(self) -> StoreError:
        return StoreError(f"{self.where} holds sealed health data: give the agent its key (--health-key)")

    def seal_event(self, row: EventRow) -> EventRow:
        """The row to store: a health event's payload sealed."""
        if self.cipher is None or row.type not in HEALTH_EVENT_TYPES:
            return row
        return row._replace(payload=self.cipher.seal(row.payload, row.id.encode()))

    def open(self, payload: bytes, event_id: str) -> bytes:
        """A stored payload as it came (a sealed one needs the key)."""
        if not is_sealed(payload):
            return payload
        if self.cipher is None:
            raise self._missing_key()
        return self.cipher.open(payload, event_id.encode())

    def seal_text(self, text: str, user: str) -> str:
        """Per-user text to store (core state, context)."""
        return text if self.cipher is None else self.cipher.seal_text(text, user.encode())

    def open_text(self, text: str, user: str) -> str:
        """Per-user text as it was given."""
        if not is_sealed(text):
            return text
        if self.cipher is None:
            raise self._missing_key()
        return self.cipher.open_text(text, user.encode())

    def seal_hour(self, agg: Hourly, user: str, metric: str, hour: int) -> str:
        """An hourly aggregate to store."""
        data = json.dumps(agg)
        return data if self.cipher is None else self.cipher.seal_text(data, f"{user}/{metric}/{hour}".encode())

    def open_hour(self, text: str, user: str, metric: str, hour: int) -> Hourly:
        """A stored hourly aggregate."""
        if is_sealed(text):
            if self.cipher is None:
                raise self._missing_key()
            text = self.cipher.open_text(text, f"{user}/{metric}/{hour}".encode())
        agg: Hourly = json.loads(text)
        return agg

    def readable(self, topic: str, payload: bytes, event_id: str) -> bool:
        """Whether a stored payload opens and decodes with this store's key."""
        try:
            codec.decode(topic, self.open(payload, event_id))
        except (StoreError, ContractError):
            return False
        return True

    def redact(self, event_id: str, topic: str, user: str | None, stored: bytes, hourly: Readings) -> bytes:
        """The retention of one stored health event: its values added to ``hourly`` (by user, metric and hour),
        and the redacted payload to store instead (plain: it holds no health value)."""
        payload = stored
        with contextlib.suppress(StoreError):  # sealed with another key: nothing to keep of it
            payload = self.open(stored, event_id)
            with contextlib.suppress(ContractError):
                for metric, hour, value in _readings(codec.decode(topic, payload)):
                    hourly.setdefault((user or "", metric, hour), []).append(value)
        return codec.redact_bytes(topic, payload)
