"""A bucket's state in Redis, one fenced transaction per batch: a deposed owner can neither commit nor ack.

:class:`RedisBucketStore` honours the whole :class:`~agent.storage.AgentStore` protocol, as the SQLite store does:
health values sealed at rest with the same :class:`~agent.storage.HealthSeal`, the same retention (redaction and
hourly aggregates) and the same erase of a user.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from agent.core.api import TaskRecord
from agent.sealing import HealthCipher
from agent.storage import (
    HEALTH_EVENT_TYPES,
    LOG_PRUNE_CHUNK,
    ActionRow,
    EventRow,
    HealthSeal,
    Hourly,
    Mark,
    Readings,
    Snapshot,
    TickRow,
    fold,
    is_redacted,
    message_class,
)
from schemas.errors import StoreError
from schemas.tasks import cancellation_kept
from schemas.topics import DeviceKey


class FencedError(StoreError):
    """This member no longer holds the bucket: another one took it (a higher epoch)."""


_CLAIM = """
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder and holder ~= '' and holder ~= ARGV[1] and ARGV[2] == '0' then
  for i = 3, #ARGV do
    if ARGV[i] == holder then return {0, holder} end
  end
end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'since_ms', ARGV[#ARGV])
return {epoch, ARGV[1]}
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] and redis.call('HGET', KEYS[1], 'holder') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'holder', '')
  return 1
end
return 0
"""

_ABANDON = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'holder', '')
  return 1
end
return 0
"""


#: Health payloads are trimmed this much later than their log entries (the member's clock against Redis's).
_TRIM_MARGIN_MS = 60_000


def bucket_prefix(cluster: str, bucket: int) -> str:
    """Redis key prefix of a bucket; the braces keep all its keys in one Redis Cluster slot (MULTI needs that)."""
    return f"wb:{{{cluster}-{bucket}}}:"


def _stream_id_to_int(sid: str) -> int:
    ms, _, seq = sid.partition("-")
    return (int(ms) << 20) | int(seq or 0)


def _int_to_stream_id(value: int) -> str:
    return f"{value >> 20}-{value & 0xFFFFF}"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBucketStore:
    """The :class:`~agent.storage.AgentStore` of one bucket, kept in Redis so that any member can carry it on.

    Keys under :func:`bucket_prefix`: ``meta`` (holder, epoch), ``log`` (a stream of processed events and ticks, in
    processing order, each with the member that handled it), ``seen`` (event ids, scored by time: the dedup set),
    ``actions`` and ``outbox`` (stored actions and the ids not yet published), ``published`` (when each was),
    ``acks``, ``tasks``, ``alerts``, ``core`` and ``core_users`` (the snapshot, per user, with the log position it
    includes), ``ctx`` and ``resolutions``.

    Health data: a health event's payload is kept beside the log, in ``health`` (by event id: user, topic, type,
    receipt time and the payload, sealed under the store's key), so that the retention can redact it (a stream
    entry cannot be rewritten); ``health_due`` lists the payloads not yet redacted (by receipt time), ``health_at``
    every payload, by the time it was written (trimmed with the log, a minute later than its entry). Hourly
    aggregates are in ``hourly:{user}`` (sealed as in SQLite), with ``hourly_at`` (by hour) for their own
    retention. A log entry older than the log's retention whose payload was trimmed first reads with an empty
    payload (it is before every snapshot: no replay reads it).

    Every write that matters is one ``WATCH meta`` / ``MULTI`` / ``EXEC`` transaction that checks the epoch, so a
    member that lost the bucket gets :class:`FencedError` instead of writing. Redis errors become
    :class:`~schemas.errors.StoreError`.

    Args:
        redis: a connected client (shared by a member's buckets).
        cluster: cluster name.
        bucket: bucket number.
        member: this member's id (recorded with every event it handles).
        cipher: the operator's health key (``--health-key``), as for the SQLite store.
        dedup_horizon_s: how long processed event ids are remembered (a device's outbox may resend within it).
        log_retention_s: how much of the event log is kept before the last snapshot (for reports and audits).
    """

    sliced_snapshots: ClassVar[bool] = False  # a bucket's share of the users is small: its snapshot is written whole

    def __init__(
        self,
        redis: aioredis.Redis,
        cluster: str,
        bucket: int,
        member: str,
        *,
        cipher: HealthCipher | None = None,
        dedup_horizon_s: float = 86_400.0,
        log_retention_s: float = 3_600.0,
    ) -> None:
        self.redis: Any = redis  # redis-py's annotations do not narrow async results; the calls below are checked
        self.bucket = bucket
        self.member = member
        self.epoch = 0
        self.seal = HealthSeal(cipher, f"redis:{cluster}/{bucket}")
        self.dedup_horizon_s = dedup_horizon_s
        self.log_retention_s = log_retention_s
        p = self.prefix = bucket_prefix(cluster, bucket)
        self.k_meta, self.k_log, self.k_seen = p + "meta", p + "log", p + "seen"
        self.k_actions, self.k_outbox, self.k_acks = p + "actions", p + "outbox", p + "acks"
        self.k_published = p + "published"
        self.k_tasks, self.k_alerts, self.k_ctx = p + "tasks", p + "alerts", p + "ctx"
        self.k_core, self.k_core_users = p + "core", p + "core_users"
        self.k_resolutions = p + "resolutions"
        self.k_health, self.k_health_due, self.k_health_at = p + "health", p + "health_due", p + "health_at"
        self.k_hourly_at = p + "hourly_at"
        self._saved_users: dict[str, str] = {}
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._abandon = redis.register_script(_ABANDON)

    def k_hourly(self, user: str) -> str:
        """The key of a user's hourly aggregates (fields: ``[metric, hour_ms]`` as JSON)."""
        return f"{self.prefix}hourly:{user}"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Redis errors in the block become :class:`StoreError` (a :class:`FencedError` passes as it is); a cancellation
        redis-py swallowed in the block is raised (:func:`~schemas.tasks.cancellation_kept`)."""
        try:
            with cancellation_kept():
                yield
        except RedisError as exc:
            raise StoreError(f"Redis {what} for bucket {self.bucket} failed: {exc}") from exc

    # ------------------------------------------------------------------ ownership

    async def claim(self, live: Collection[str], *, force: bool = False, now_ms: int = 0) -> str | None:
        """Take the bucket unless a member in ``live`` (other than this one) holds it; then the epoch goes up.

        Returns:
            None when taken (``self.epoch`` is the new epoch), else the live holder to wait for.
        """
        with self._errors("claim"):
            epoch, holder = await self._claim(
                keys=[self.k_meta], args=[self.member, "1" if force else "0", *live, str(now_ms)]
            )
        if int(epoch) == 0:
            return _s(holder)
        self.epoch = int(epoch)
        self._saved_users.clear()
        return None

    async def release(self) -> bool:
        """Give the bucket up (so the next owner need not wait); false when it was already taken."""
        return await self._give_up(self._release, str(self.epoch), self.member)

    async def abandon(self) -> bool:
        """Give the bucket up if this member holds it, whatever the epoch: for a claim whose answer was lost (the
        claiming task was cancelled while Redis ran it), so the bucket is not left held by a member that does not
        serve it. Only for a member with no other task on this bucket. False when it held nothing (or on a Redis
        error: the new owner then takes it over after its hand-over timeout)."""
        return await self._give_up(self._abandon, self.member)

    async def _give_up(self, script: Any, *args: str) -> bool:
        """Run a script that clears the holder; false when it did not (or on a Redis error)."""
        with contextlib.suppress(RedisError), cancellation_kept():
            return bool(await script(keys=[self.k_meta], args=list(args)))
        return False

    async def holder(self) -> tuple[str, int]:
        """The current holder (empty when released) and epoch."""
        with cancellation_kept():
            meta = await self.redis.hgetall(self.k_meta)
        return _s(meta.get(b"holder", b"")), int(meta.get(b"epoch", 0))

    async def _fenced(self, build: Callable[[Any], None]) -> None:
        """Run ``build(pipeline)`` as one transaction, only while this member's epoch is current."""
        try:
            with cancellation_kept():
                await self._fenced_once(build)
        except WatchError as exc:
            raise FencedError(f"bucket {self.bucket} was taken over during a write") from exc
        except RedisError as exc:
            raise StoreError(f"Redis write for bucket {self.bucket} failed: {exc}") from exc

    async def _fenced_once(self, build: Callable[[Any], None]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self.k_meta)
            current = await pipe.hget(self.k_meta, "epoch")
            if current is None or int(current) != self.epoch:
                raise FencedError(f"bucket {self.bucket} was taken over (epoch {_s(current)}, ours {self.epoch})")
            pipe.multi()
            build(pipe)
            await pipe.execute()

    # ------------------------------------------------------------------ the AgentStore protocol

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def schema_version(self) -> int:
        """The shared store has no migrations."""
        return 0

    async def known(self, ids: Iterable[str]) -> set[str]:
        """Which ids were processed (by any member, within the dedup horizon): QoS 1 events only, as the contract's
        dedup (a QoS 0 message comes at most once, and its id is not kept)."""
        wanted = list(ids)
        if not wanted:
            return set()
        with self._errors("dedup check"):
            scores = await self.redis.zmscore(self.k_seen, wanted)
        return {i for i, s in zip(wanted, scores, strict=True) if s is not None}

    async def commit_batch(
        self,
        events: Sequence[EventRow],
        actions: Sequence[ActionRow],
        tasks: Sequence[TaskRecord],
        alerts: Sequence[tuple[str, str, str, int]],
        ticks: Sequence[TickRow] = (),
        resolutions: Sequence[tuple[str, str]] = (),
    ) -> None:
        """One batch, atomically and fenced: log entries (a health event's payload sealed, beside the log), dedup
        ids, actions with their outbox, tasks, alerts and the optional LLM resolver's intents (kept so that a replay
        on the next owner sees them too)."""
        now = time.time()
        now_ms = int(now * 1000)  # the log entry's own time (its stream id), give or take the clocks' skew
        by = self.member

        def build(pipe: Any) -> None:
            for e in events:
                health = e.type in HEALTH_EVENT_TYPES
                pipe.xadd(self.k_log, {
                    "k": "e", "id": e.id, "topic": e.topic, "user": e.user or "", "kind": e.kind or "",
                    "device": e.device or "", "channel": e.channel, "type": e.type, "ts": e.ts,
                    "src_ts": -1 if e.src_ts is None else e.src_ts, "dev_seq": e.dev_seq, "corr": e.corr or "",
                    "handled_ms": e.handled_ms, "received_wall_ms": e.received_wall_ms, "qos": e.qos,
                    "retain": int(e.retain), "payload": b"" if health else e.payload, "h": int(health), "by": by,
                })  # fmt: skip
                if health:
                    sealed = self.seal.seal_event(e).payload
                    pipe.hset(self.k_health, e.id, msgpack.packb([e.user or "", e.topic, e.type, e.received_wall_ms,
                                                                   sealed]))  # fmt: skip
                    pipe.zadd(self.k_health_due, {e.id: e.received_wall_ms})
                    pipe.zadd(self.k_health_at, {e.id: now_ms})
            seen = {e.id: now for e in events if e.qos}  # the dedup covers QoS 1 events (as the SQLite store's)
            if seen:
                pipe.zadd(self.k_seen, seen)
            for tick in ticks:
                users = "" if tick.users is None else json.dumps(tick.users)
                pipe.xadd(self.k_log, {"k": "t", "at": tick.at_ms, "users": users, "by": by})
            for a in actions:
                row = [a.topic, a.payload, a.user, a.kind, a.device, a.type, a.corr, a.reason, a.created_ms,
                       a.created_wall_ms, by]  # fmt: skip
                pipe.hsetnx(self.k_actions, a.id, msgpack.packb(row))
            if actions:
                # score: creation order (several actions share a millisecond)
                pipe.zadd(self.k_outbox, {a.id: a.created_wall_ms * 1000 + i for i, a in enumerate(actions)}, nx=True)
            for t in tasks:
                pipe.hset(self.k_tasks, t.task_id, json.dumps([
                    t.user, t.skill, t.state, t.slots, t.rounds, list(t.slots_autofilled), list(t.slots_asked),
                    t.confirm_modality, t.created_ms, t.updated_ms,
                ], ensure_ascii=False, default=str))  # fmt: skip
            for rule, user, text, at_ms in alerts:
                pipe.xadd(self.k_alerts, {"rule": rule, "user": user, "text": text, "at_ms": at_ms, "by": by})
            if resolutions:
                pipe.hset(self.k_resolutions, mapping=dict(resolutions))

        if events or actions or tasks or alerts or ticks or resolutions:
            await self._fenced(build)

    async def mark_published(self, ids: Sequence[str], wall_ms: int) -> None:
        """Take published actions off the outbox and record when (not fenced: it only records a fact)."""
        if ids:
            with self._errors("update"):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.k_outbox, *ids)
                    pipe.hset(self.k_published, mapping=dict.fromkeys(ids, wall_ms))
                    await pipe.execute()

    async def mark_acks(self, acks: Sequence[tuple[str, str, str, int]]) -> None:
        """Record device acks: ``(action_id, status, detail, at_ms)``."""
        if acks:
            mapping = {a: json.dumps([status, detail, at]) for a, status, detail, at in acks}
            with self._errors("update"):
                await self.redis.hset(self.k_acks, mapping=mapping)

    async def unpublished(self) -> list[tuple[str, str, bytes]]:
        """Actions stored but not known to be published, in creation order."""
        with self._errors("read of the outbox"):
            ids = [_s(i) for i in await self.redis.zrange(self.k_outbox, 0, -1)]
            if not ids:
                return []
            rows = await self.redis.hmget(self.k_actions, ids)
        out: list[tuple[str, str, bytes]] = []
        for action_id, raw in zip(ids, rows, strict=True):
            if raw is not None:
                row = msgpack.unpackb(raw)
                out.append((action_id, str(row[0]), bytes(row[1])))
        return out

    async def save_core(
        self,
        state: dict[str, Any],
        tick_ms: int,
        wall_ms: int,
        *,
        round_start: Mark | None = None,
        complete: bool = True,
    ) -> Mark:
        """Snapshot the core (only the users whose state changed, sealed per user), with the log position it
        includes; trim the dedup set, the log and the health payloads of the trimmed entries.

        A bucket holds a share of the users, so its snapshot is written whole (``sliced_snapshots`` is false): every
        user as of one log position, which the replay starts after.
        """
        if round_start is not None or not complete:
            raise StoreError("the bucket store writes a snapshot whole, not in slices")
        users: dict[str, Any] = state.get("users", {})
        changed = {}
        for user, data in users.items():
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            if self._saved_users.get(user) != text:
                changed[user] = text
        head = {k: v for k, v in state.items() if k != "users"}
        with self._errors("read of the log"):
            last = await self.redis.xrevrange(self.k_log, count=1)
            watermark = _stream_id_to_int(_s(last[0][0])) if last else 0
            keep_from = max(0, (watermark >> 20) - int(self.log_retention_s * 1000))
            trimmed = (
                await self.redis.zrangebyscore(
                    self.k_health_at, "-inf", f"({keep_from - _TRIM_MARGIN_MS}", start=0, num=10_000
                )
                if keep_from
                else []
            )
        horizon = time.time() - self.dedup_horizon_s

        def build(pipe: Any) -> None:
            if changed:
                pipe.hset(self.k_core_users, mapping={u: self.seal.seal_text(t, u) for u, t in changed.items()})
            pipe.hset(self.k_core, mapping={
                "head": json.dumps(head), "watermark": watermark, "tick_ms": tick_ms, "saved_wall_ms": wall_ms,
            })  # fmt: skip
            pipe.zremrangebyscore(self.k_seen, "-inf", horizon)
            if keep_from:
                pipe.xtrim(self.k_log, minid=f"{keep_from}-0", approximate=True)
            if trimmed:
                pipe.hdel(self.k_health, *trimmed)
                pipe.zrem(self.k_health_due, *trimmed)
                pipe.zrem(self.k_health_at, *trimmed)

        await self._fenced(build)
        self._saved_users.update(changed)
        return Mark(watermark, watermark)

    async def load_core(self) -> Snapshot | None:
        """The bucket's last snapshot (every user as of its watermark, so no user has a mark of their own), or None."""
        with self._errors("read of the snapshot"):
            core = await self.redis.hgetall(self.k_core)
            if not core:
                return None
            users_raw = await self.redis.hgetall(self.k_core_users)
        state: dict[str, Any] = json.loads(core[b"head"])
        texts = {_s(u): self.seal.open_text(_s(v), _s(u)) for u, v in users_raw.items()}
        state["users"] = {u: json.loads(t) for u, t in texts.items()}
        self._saved_users = texts
        return Snapshot(state, int(core[b"watermark"]), int(core[b"tick_ms"]), {})

    async def _log(self, after: int = 0, chunk: int = 1000) -> AsyncIterator[list[tuple[int, dict[bytes, bytes]]]]:
        """The log after a position, a chunk of ``(position, fields)`` at a time."""
        start = f"({_int_to_stream_id(after)}" if after else "-"
        while True:
            with self._errors("read of the log"):
                entries = await self.redis.xrange(self.k_log, min=start, max="+", count=chunk)
            if entries:
                yield [(_stream_id_to_int(_s(sid)), f) for sid, f in entries]
            if len(entries) < chunk:
                return
            start = f"({_s(entries[-1][0])}"

    async def since(self, event_seq: int) -> list[tuple[str, Any, int]]:
        """Log entries after a snapshot's watermark, in order: ``("event", EventRow, position)`` and ``("tick",
        TickRow, position)`` (the position: the entry's stream id as a number); health payloads opened."""
        out: list[tuple[str, Any, int]] = []
        async for entries in self._log(event_seq):
            ids = [_s(f[b"id"]) for _, f in entries if f.get(b"h") == b"1"]
            with self._errors("read of health payloads"):
                bodies = dict(zip(ids, await self.redis.hmget(self.k_health, ids), strict=True)) if ids else {}
            for position, f in entries:
                kind, item = _log_item(f)
                if kind == "event" and f.get(b"h") == b"1":
                    raw = bodies.get(item.id)
                    payload = b"" if raw is None else self.seal.open(bytes(msgpack.unpackb(raw)[4]), item.id)
                    item = item._replace(payload=payload)
                out.append((kind, item, position))
        return out

    async def last_seqs(self, recent: int = 20_000) -> dict[DeviceKey, int]:
        """The ``seq`` of each device's last handled event among the ``recent`` last log entries (see
        :meth:`agent.storage.AgentStore.last_seqs`)."""
        out: dict[DeviceKey, int] = {}
        with self._errors("read of the log"):
            entries = await self.redis.xrevrange(self.k_log, max="+", min="-", count=recent)
        for _, f in entries:
            if f.get(b"k") != b"e" or f.get(b"channel") != b"evt" or int(f.get(b"dev_seq", 0)) <= 0:
                continue
            key = (_s(f[b"user"]), _s(f[b"kind"]), _s(f[b"device"]))
            if all(key):
                out.setdefault(key, int(f[b"dev_seq"]))  # newest first: the first one seen wins
        return out

    async def resolutions(self) -> dict[str, str]:
        """Resolved intents (JSON) by utterance event id."""
        with self._errors("read of the resolutions"):
            return {_s(k): _s(v) for k, v in (await self.redis.hgetall(self.k_resolutions)).items()}

    async def save_contexts(self, snapshots: Sequence[tuple[str, str, int]]) -> None:
        """The last context snapshot per user, sealed (not fenced: a stale one is replaced by the owner's next)."""
        if snapshots:
            mapping = {user: json.dumps([self.seal.seal_text(snap, user), at]) for user, snap, at in snapshots}
            with self._errors("write of context snapshots"):
                await self.redis.hset(self.k_ctx, mapping=mapping)

    async def contexts(self) -> dict[str, tuple[str, int]]:
        """The last context snapshot per user: ``(json, at_ms)``."""
        with self._errors("read of the context snapshots"):
            raw = await self.redis.hgetall(self.k_ctx)
        out = {}
        for user, value in raw.items():
            text, at = json.loads(value)
            out[_s(user)] = (self.seal.open_text(text, _s(user)), int(at))
        return out

    # ------------------------------------------------------------------ health data and privacy

    async def prune_log(self, before_wall_ms: int | None, *, limit: int = LOG_PRUNE_CHUNK) -> int:
        """Nothing to do here: a bucket's log is trimmed with each snapshot to ``log_retention_s`` before it, and its
        dedup set to ``dedup_horizon_s`` (:meth:`save_core`)."""
        return 0

    async def prune_health(self, before_wall_ms: int, *, limit: int = 500, hourly_before_ms: int | None = None) -> int:
        """Retention, as in SQLite: the payloads of health events received before ``before_wall_ms`` are replaced by
        a redacted copy after their values were folded into the hourly aggregates, which are kept until
        ``hourly_before_ms``; at most ``limit`` events a call, in one fenced transaction. How many were pruned."""
        with self._errors("read for the health retention"):
            ids = [_s(i) for i in await self.redis.zrangebyscore(
                self.k_health_due, "-inf", f"({before_wall_ms}", start=0, num=limit)]  # fmt: skip
            bodies = await self.redis.hmget(self.k_health, ids) if ids else []
            old = (
                await self.redis.zrangebyscore(self.k_hourly_at, "-inf", f"({hourly_before_ms}")
                if hourly_before_ms is not None
                else []
            )
        hourly: Readings = {}
        redacted: dict[str, bytes] = {}
        for event_id, raw in zip(ids, bodies, strict=True):
            if raw is not None:
                user, topic, kind, at, stored = msgpack.unpackb(raw)
                payload = self.seal.redact(event_id, topic, user or None, bytes(stored), hourly)
                redacted[event_id] = msgpack.packb([user, topic, kind, at, payload])
        aggs: dict[tuple[str, str, int], str] = {}
        for (user, metric, hour), values in hourly.items():
            with self._errors("read of an hourly aggregate"):
                text = await self.redis.hget(self.k_hourly(user), json.dumps([metric, hour]))
            previous = None if text is None else self.seal.open_hour(_s(text), user, metric, hour)
            aggs[(user, metric, hour)] = self.seal.seal_hour(fold(previous, values), user, metric, hour)
        if not ids and not old:
            return 0

        def build(pipe: Any) -> None:
            if redacted:
                pipe.hset(self.k_health, mapping=redacted)
            if ids:
                pipe.zrem(self.k_health_due, *ids)
            for (user, metric, hour), text in aggs.items():
                pipe.hset(self.k_hourly(user), json.dumps([metric, hour]), text)
                pipe.zadd(self.k_hourly_at, {json.dumps([user, metric, hour]): hour})
            for member in old:
                user, metric, hour = json.loads(member)
                pipe.hdel(self.k_hourly(user), json.dumps([metric, hour]))
            if old:
                pipe.zrem(self.k_hourly_at, *old)

        await self._fenced(build)
        return len(ids)

    async def health_hourly(self, user: str) -> list[tuple[str, int, Hourly]]:
        """The hourly aggregates of a user: ``(metric, hour_ms, {n, sum, min, max})``, oldest first."""
        with self._errors("read of the hourly aggregates"):
            raw = await self.redis.hgetall(self.k_hourly(user))
        out = []
        for field, text in raw.items():
            metric, hour = json.loads(field)
            out.append((str(metric), int(hour), self.seal.open_hour(_s(text), user, metric, int(hour))))
        return sorted(out, key=lambda r: (r[1], r[0]))

    async def health_samples(self) -> dict[str, tuple[int, int]]:
        """Per health event type: how many stored payloads hold their values, and how many of those this store can
        read (sealed ones need the key; redacted ones are not counted)."""
        out: dict[str, tuple[int, int]] = {}
        with self._errors("read of health payloads"):
            async for event_id, raw in self.redis.hscan_iter(self.k_health, count=1000):
                _, topic, kind, _, payload = msgpack.unpackb(raw)
                if not is_redacted(bytes(payload)):
                    held, readable = out.get(kind, (0, 0))
                    out[kind] = (held + 1, readable + self.seal.readable(topic, bytes(payload), _s(event_id)))
        return out

    async def forget(self, user: str) -> dict[str, int]:
        """Erase ``user`` from the bucket (run it with the cluster stopped: a member would write back what it holds):
        their entries of the event log (rewritten with the same positions, the user taken out of the ticks' user
        lists) and of the alerts stream, their actions (with outbox, publish times and acks), tasks, context,
        per-user snapshot, LLM resolutions, dedup ids, health payloads and hourly aggregates."""
        name = user.encode()
        removed: dict[str, int] = {"log": 0, "ticks": 0}
        events: list[bytes] = []
        kept: list[tuple[bytes, dict[bytes, bytes]]] = []
        with self._errors("erase"):
            for entry_id, fields in await self.redis.xrange(self.k_log, min="-", max="+"):
                if fields.get(b"user") == name:
                    removed["log"] += 1
                    events.append(fields[b"id"])
                    continue
                if fields.get(b"k") == b"t" and fields.get(b"users"):
                    names = json.loads(fields[b"users"])
                    if user in names:
                        removed["ticks"] += 1
                        rest = [u for u in names if u != user]
                        if not rest:
                            continue
                        kept.append((entry_id, {**fields, b"users": json.dumps(rest).encode()}))
                        continue
                kept.append((entry_id, fields))
            if removed["log"] or removed["ticks"]:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(self.k_log)  # a stream entry cannot be rewritten: the log is, at the same ids
                    for entry_id, fields in kept:
                        pipe.xadd(self.k_log, fields, id=entry_id)
                    await pipe.execute()
            alerts = [i for i, f in await self.redis.xrange(self.k_alerts, min="-", max="+") if f.get(b"user") == name]
            removed["alerts"] = await self.redis.xdel(self.k_alerts, *alerts) if alerts else 0
            actions = [a for a, row in (await self.redis.hgetall(self.k_actions)).items()
                       if msgpack.unpackb(row)[2] == user]  # fmt: skip
            tasks = [t for t, row in (await self.redis.hgetall(self.k_tasks)).items() if json.loads(row)[0] == user]
            health = [i async for i, row in self.redis.hscan_iter(self.k_health, count=1000)
                      if msgpack.unpackb(row)[0] == user]  # fmt: skip
            hours = [json.dumps([user, *json.loads(f)]) for f in await self.redis.hkeys(self.k_hourly(user))]
            removed["actions"] = await self.redis.hdel(self.k_actions, *actions) if actions else 0
            if actions:
                await self.redis.zrem(self.k_outbox, *actions)
                await self.redis.hdel(self.k_acks, *actions)
                await self.redis.hdel(self.k_published, *actions)
            removed["tasks"] = await self.redis.hdel(self.k_tasks, *tasks) if tasks else 0
            removed["resolutions"] = await self.redis.hdel(self.k_resolutions, *events) if events else 0
            if events:
                await self.redis.zrem(self.k_seen, *events)
            removed["health"] = await self.redis.hdel(self.k_health, *health) if health else 0
            if health:
                await self.redis.zrem(self.k_health_due, *health)
                await self.redis.zrem(self.k_health_at, *health)
            removed["health_hourly"] = len(hours)
            await self.redis.delete(self.k_hourly(user))
            if hours:
                await self.redis.zrem(self.k_hourly_at, *hours)
            removed["ctx"] = await self.redis.hdel(self.k_ctx, user)
            removed["core_users"] = await self.redis.hdel(self.k_core_users, user)
        self._saved_users.pop(user, None)
        return removed

    # ------------------------------------------------------------------ reading (report, benches, tests)

    async def tasks(self) -> list[TaskRecord]:
        """The bucket's tasks, oldest first."""
        with self._errors("read of the tasks"):
            raw = await self.redis.hgetall(self.k_tasks)
        out = []
        for task_id, value in raw.items():
            r = json.loads(value)
            out.append(TaskRecord(_s(task_id), r[0], r[1], r[2], r[3], int(r[4]), tuple(r[5]), tuple(r[6]), r[7],
                               int(r[8]), int(r[9])))  # fmt: skip
        return sorted(out, key=lambda t: (t.created_ms, t.task_id))

    async def _events(self) -> AsyncIterator[dict[bytes, bytes]]:
        """The fields of every event entry still in the log."""
        async for entries in self._log():
            for _, f in entries:
                if f.get(b"k") == b"e":
                    yield f

    async def count_events(self, channel: str | None = None) -> int:
        """How many events the log holds (of one channel)."""
        want = None if channel is None else channel.encode()
        return sum([1 async for f in self._events() if want is None or f[b"channel"] == want])

    async def message_counts(self) -> dict[str, int]:
        """Events in the log per :func:`agent.storage.message_class`."""
        counts = Counter([message_class(_s(f[b"channel"]), _s(f[b"topic"])) async for f in self._events()])
        return dict(sorted(counts.items()))

    async def alert_counts(self) -> dict[str, int]:
        """Stored alerts per rule."""
        with self._errors("read of the alerts"):
            entries = await self.redis.xrange(self.k_alerts, min="-", max="+")
        return dict(sorted(Counter(_s(f[b"rule"]) for _, f in entries).items()))

    async def action_status_counts(self) -> dict[str, int]:
        """Stored actions per ack status (``pending`` until a device acked)."""
        with self._errors("read of the actions"):
            ids = await self.redis.hkeys(self.k_actions)
            acks = await self.redis.hgetall(self.k_acks)
        return dict(Counter(json.loads(acks[i])[0] if i in acks else "pending" for i in ids))

    async def first_action_latencies(self) -> list[tuple[str, float | None]]:
        """See :meth:`agent.storage.AgentStore.first_action_latencies` (events still in the log)."""
        events = {
            _s(f[b"id"]): (int(f[b"handled_ms"]), int(f[b"received_wall_ms"]))
            async for f in self._events()
            if f[b"channel"] == b"evt"
        }
        with self._errors("read of the actions"):
            actions = await self.redis.hgetall(self.k_actions)
            published = {_s(k): int(v) for k, v in (await self.redis.hgetall(self.k_published)).items()}
        first: dict[str, float | None] = {}
        for action_id, raw in actions.items():
            row = msgpack.unpackb(raw)
            corr, created_ms, at = str(row[6]), int(row[8]), published.get(_s(action_id))
            if at is None or corr not in events:
                continue
            handled_ms, received = events[corr]
            latency = float(at - received) if created_ms == handled_ms else None
            best = first.get(corr)
            first[corr] = latency if best is None else best if latency is None else min(best, latency)
        return sorted(first.items())

    async def stored_counts(self) -> dict[str, int]:
        """Records kept per kind: ``events`` (in the log), ``actions``, ``tasks``, ``alerts``, ``context``."""
        events = await self.count_events()
        with self._errors("read of the counts"):
            return {
                "events": events,
                "actions": int(await self.redis.hlen(self.k_actions)),
                "tasks": int(await self.redis.hlen(self.k_tasks)),
                "alerts": int(await self.redis.xlen(self.k_alerts)),
                "context": int(await self.redis.hlen(self.k_ctx)),
            }


def _log_item(f: dict[bytes, bytes]) -> tuple[str, Any]:
    if f.get(b"k") == b"t":
        users = f.get(b"users", b"")  # absent in entries written before ticks covered slices of users
        return "tick", TickRow(int(f[b"at"]), tuple(json.loads(users)) if users else None)
    src_ts = int(f[b"src_ts"])
    return "event", EventRow(
        id=_s(f[b"id"]), topic=_s(f[b"topic"]), user=_s(f[b"user"]) or None, kind=_s(f[b"kind"]) or None,
        device=_s(f[b"device"]) or None, channel=_s(f[b"channel"]), type=_s(f[b"type"]), ts=int(f[b"ts"]),
        src_ts=None if src_ts < 0 else src_ts, dev_seq=int(f[b"dev_seq"]), corr=_s(f[b"corr"]) or None,
        handled_ms=int(f[b"handled_ms"]), received_wall_ms=int(f[b"received_wall_ms"]), qos=int(f[b"qos"]),
        retain=f[b"retain"] == b"1", payload=bytes(f[b"payload"]),
    )  # fmt: skip


async def read_log(redis: aioredis.Redis, cluster: str, bucket: int) -> list[dict[str, str]]:
    """A bucket's whole event log as dicts (``k``, ``id``, ``device``, ``dev_seq``, ``by``, ...; payload left out)."""
    out: list[dict[str, str]] = []
    client: Any = redis
    for _, f in await client.xrange(bucket_prefix(cluster, bucket) + "log", min="-", max="+"):
        out.append({_s(k): _s(v) for k, v in f.items() if k != b"payload"})
    return out
