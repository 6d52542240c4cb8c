"""A bucket's state in Redis, one fenced transaction per batch: a deposed owner can neither commit nor ack."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, ClassVar

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from agent.core.api import TaskRecord
from agent.store import ActionRow, EventRow, Mark, Snapshot, Store, TickRow
from schemas.errors import StoreError


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


class RedisBucketStore(Store):
    """The :class:`~agent.store.Store` of one bucket, kept in Redis so that any member can carry it on.

    Keys under :func:`bucket_prefix`: ``meta`` (holder, epoch), ``log`` (a stream of processed events and ticks, in
    processing order, each with the member that handled it), ``seen`` (event ids, scored by time: the dedup set),
    ``actions`` and ``outbox`` (stored actions and the ids not yet published), ``acks``, ``tasks``, ``alerts``,
    ``core`` and ``core_users`` (the snapshot, per user, with the log position it includes) and ``ctx``.

    Every write that matters is one ``WATCH meta`` / ``MULTI`` / ``EXEC`` transaction that checks the epoch, so a
    member that lost the bucket gets :class:`FencedError` instead of writing.

    Args:
        redis: a connected client (shared by a member's buckets).
        cluster: cluster name.
        bucket: bucket number.
        member: this member's id (recorded with every event it handles).
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
        dedup_horizon_s: float = 86_400.0,
        log_retention_s: float = 3_600.0,
    ) -> None:
        super().__init__(f"redis:{cluster}/{bucket}")
        self.redis: Any = redis  # redis-py's annotations do not narrow async results; the calls below are checked
        self.bucket = bucket
        self.member = member
        self.epoch = 0
        self.dedup_horizon_s = dedup_horizon_s
        self.log_retention_s = log_retention_s
        p = bucket_prefix(cluster, bucket)
        self.k_meta, self.k_log, self.k_seen = p + "meta", p + "log", p + "seen"
        self.k_actions, self.k_outbox, self.k_acks = p + "actions", p + "outbox", p + "acks"
        self.k_tasks, self.k_alerts, self.k_ctx = p + "tasks", p + "alerts", p + "ctx"
        self.k_core, self.k_core_users = p + "core", p + "core_users"
        self.k_resolutions = p + "resolutions"
        self._saved_users: dict[str, str] = {}
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    # ------------------------------------------------------------------ ownership

    async def claim(self, live: Collection[str], *, force: bool = False, now_ms: int = 0) -> str | None:
        """Take the bucket unless a member in ``live`` (other than this one) holds it; then the epoch goes up.

        Returns:
            None when taken (``self.epoch`` is the new epoch), else the live holder to wait for.
        """
        try:
            epoch, holder = await self._claim(
                keys=[self.k_meta], args=[self.member, "1" if force else "0", *live, str(now_ms)]
            )
        except RedisError as exc:
            raise StoreError(f"could not claim bucket {self.bucket} in Redis: {exc}") from exc
        if int(epoch) == 0:
            return _s(holder)
        self.epoch = int(epoch)
        self._saved_users.clear()
        return None

    async def release(self) -> bool:
        """Give the bucket up (so the next owner need not wait); false when it was already taken."""
        with contextlib.suppress(RedisError):
            return bool(await self._release(keys=[self.k_meta], args=[str(self.epoch), self.member]))
        return False

    async def holder(self) -> tuple[str, int]:
        """The current holder (empty when released) and epoch."""
        meta = await self.redis.hgetall(self.k_meta)
        return _s(meta.get(b"holder", b"")), int(meta.get(b"epoch", 0))

    async def _fenced(self, build: Callable[[Any], None]) -> None:
        """Run ``build(pipeline)`` as one transaction, only while this member's epoch is current."""
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(self.k_meta)
                current = await pipe.hget(self.k_meta, "epoch")
                if current is None or int(current) != self.epoch:
                    raise FencedError(f"bucket {self.bucket} was taken over (epoch {_s(current)}, ours {self.epoch})")
                pipe.multi()
                build(pipe)
                await pipe.execute()
        except WatchError as exc:
            raise FencedError(f"bucket {self.bucket} was taken over during a write") from exc
        except RedisError as exc:
            raise StoreError(f"Redis write for bucket {self.bucket} failed: {exc}") from exc

    # ------------------------------------------------------------------ Store API

    async def __aenter__(self) -> RedisBucketStore:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None

    async def schema_version(self) -> int:
        """The shared store has no SQL schema."""
        return 0

    async def known(self, ids: Iterable[str]) -> set[str]:
        """Which ids were processed (by any member, within the dedup horizon)."""
        wanted = list(ids)
        if not wanted:
            return set()
        try:
            scores = await self.redis.zmscore(self.k_seen, wanted)
        except RedisError as exc:
            raise StoreError(f"Redis dedup check for bucket {self.bucket} failed: {exc}") from exc
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
        """One batch, atomically and fenced: log entries, dedup ids, actions with their outbox, tasks, alerts and
        the optional LLM resolver's intents (kept so that a replay on the next owner sees them too)."""
        now = time.time()
        by = self.member

        def build(pipe: Any) -> None:
            for e in events:
                pipe.xadd(self.k_log, {
                    "k": "e", "id": e.id, "topic": e.topic, "user": e.user or "", "kind": e.kind or "",
                    "device": e.device or "", "channel": e.channel, "type": e.type, "ts": e.ts,
                    "src_ts": -1 if e.src_ts is None else e.src_ts, "dev_seq": e.dev_seq, "corr": e.corr or "",
                    "handled_ms": e.handled_ms, "received_wall_ms": e.received_wall_ms, "qos": e.qos,
                    "retain": int(e.retain), "payload": e.payload, "by": by,
                })  # fmt: skip
            if events:
                pipe.zadd(self.k_seen, {e.id: now for e in events})
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
        """Take published actions off the outbox (not fenced: it only records a fact)."""
        if ids:
            try:
                await self.redis.zrem(self.k_outbox, *ids)
            except RedisError as exc:
                raise StoreError(f"Redis update for bucket {self.bucket} failed: {exc}") from exc

    async def mark_acks(self, acks: Sequence[tuple[str, str, str, int]]) -> None:
        """Record device acks: ``(action_id, status, detail, at_ms)``."""
        if acks:
            mapping = {a: json.dumps([status, detail, at]) for a, status, detail, at in acks}
            try:
                await self.redis.hset(self.k_acks, mapping=mapping)
            except RedisError as exc:
                raise StoreError(f"Redis update for bucket {self.bucket} failed: {exc}") from exc

    async def unpublished(self) -> list[tuple[str, str, bytes]]:
        """Actions stored but not known to be published, in creation order."""
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
        """Snapshot the core (only the users whose state changed), with the log position it includes; trim.

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
        last = await self.redis.xrevrange(self.k_log, count=1)
        watermark = _stream_id_to_int(_s(last[0][0])) if last else 0
        horizon = time.time() - self.dedup_horizon_s
        keep_from = max(0, (watermark >> 20) - int(self.log_retention_s * 1000))

        def build(pipe: Any) -> None:
            if changed:
                pipe.hset(self.k_core_users, mapping=changed)
            pipe.hset(self.k_core, mapping={
                "head": json.dumps(head), "watermark": watermark, "tick_ms": tick_ms, "saved_wall_ms": wall_ms,
            })  # fmt: skip
            pipe.zremrangebyscore(self.k_seen, "-inf", horizon)
            if keep_from:
                pipe.xtrim(self.k_log, minid=f"{keep_from}-0", approximate=True)

        await self._fenced(build)
        self._saved_users.update(changed)
        return Mark(watermark, watermark)

    async def load_core(self) -> Snapshot | None:
        """The bucket's last snapshot (every user as of its watermark, so no user has a mark of their own), or None."""
        core = await self.redis.hgetall(self.k_core)
        if not core:
            return None
        users_raw = await self.redis.hgetall(self.k_core_users)
        state: dict[str, Any] = json.loads(core[b"head"])
        state["users"] = {_s(u): json.loads(v) for u, v in users_raw.items()}
        self._saved_users = {_s(u): _s(v) for u, v in users_raw.items()}
        return Snapshot(state, int(core[b"watermark"]), int(core[b"tick_ms"]), {})

    async def since(self, event_seq: int) -> list[tuple[str, Any, int]]:
        """Log entries after a snapshot's watermark, in order: ``("event", EventRow, position)`` and ``("tick",
        TickRow, position)`` (the position: the entry's stream id as a number)."""
        start = f"({_int_to_stream_id(event_seq)}" if event_seq else "-"
        out: list[tuple[str, Any, int]] = []
        while True:
            entries = await self.redis.xrange(self.k_log, min=start, max="+", count=1000)
            for sid, f in entries:
                out.append((*_log_item(f), _stream_id_to_int(_s(sid))))
            if len(entries) < 1000:
                return out
            start = f"({_s(entries[-1][0])}"

    async def last_seqs(self, recent: int = 20_000) -> dict[tuple[str, str, str], int]:
        """The ``seq`` of each device's last handled event among the ``recent`` last log entries (see
        :meth:`Store.last_seqs`)."""
        out: dict[tuple[str, str, str], int] = {}
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
        return {_s(k): _s(v) for k, v in (await self.redis.hgetall(self.k_resolutions)).items()}

    async def save_contexts(self, snapshots: Sequence[tuple[str, str, int]]) -> None:
        """The last context snapshot per user (not fenced: a stale one is replaced by the owner's next)."""
        if snapshots:
            mapping = {user: json.dumps([snap, at]) for user, snap, at in snapshots}
            with contextlib.suppress(RedisError):
                await self.redis.hset(self.k_ctx, mapping=mapping)

    def prune_health(self, before_wall_ms: int, *, limit: int = 500, hourly_before_ms: int | None = None) -> int:
        """Health retention is not applied to a bucket's Redis log yet (docs/privacy.md says so): nothing pruned.

        Without this the SQLite store's version ran, on no SQLite database, and ended the bucket's pump.
        """
        return 0

    async def tasks(self) -> list[TaskRecord]:
        """The bucket's tasks, oldest first."""
        out = []
        for task_id, raw in (await self.redis.hgetall(self.k_tasks)).items():
            r = json.loads(raw)
            out.append(TaskRecord(_s(task_id), r[0], r[1], r[2], r[3], int(r[4]), tuple(r[5]), tuple(r[6]), r[7],
                               int(r[8]), int(r[9])))  # fmt: skip
        return sorted(out, key=lambda t: (t.created_ms, t.task_id))

    async def scalar(self, sql: str, *args: Any) -> Any:
        """Not available: the shared store has no SQL."""
        raise StoreError("the shared bucket store answers no SQL; read its Redis keys (docs/scale-out.md)")

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Not available: the shared store has no SQL."""
        raise StoreError("the shared bucket store answers no SQL; read its Redis keys (docs/scale-out.md)")


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
