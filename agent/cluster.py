"""The agent as N instances: fixed buckets of users, rendezvous ownership, one persistent session per bucket.

How it fits together (docs/scale-out.md has the why and the measurements):

- A user belongs to bucket ``fnv1a32(user) % B`` (:func:`bucket_of`), the same hash NATS's ``partition(B, 1)`` subject
  mapping uses, so the broker and the agents agree on it without talking.
- Members announce themselves on the existing retained ``wb/v1/_agent/{cluster}-{member}/state`` (online, with a
  Will that sets it offline) and repeat it as a heartbeat. Each member computes the owner of every bucket by
  rendezvous hashing over the members it sees alive, so a join or a leave moves only the buckets that must move.
- An owned bucket runs one :class:`~agent.runtime.AgentRuntime` with MQTT client id ``{cluster}-bucket-{b}`` on a
  persistent session whose subscriptions select that bucket's users: on NATS the partition ``wbp/{b}/#`` that the
  subject mapping fills; on a plain broker one filter set per known user. Events for a dead owner wait in that
  session; the broker's client-id takeover disconnects a stale holder.
- The bucket's state (dedup set, event log, actions and their outbox, core snapshot, contexts) lives in Redis
  (:class:`RedisBucketStore`), written in one fenced transaction per batch. Taking a bucket increments its epoch;
  a holder whose epoch is no longer current cannot write, so a deposed owner can neither commit nor acknowledge.
  A move is therefore exactly the runtime's restart path (restore the snapshot, replay the log, publish what was
  stored but not published) on another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from agent.core.api import TaskRecord
from agent.runtime import AgentRuntime, AgentSettings, AgentStats
from agent.store import ActionRow, EventRow, Mark, Snapshot, Store, TickRow
from broker.client import Bus, BusOptions, Outgoing, Protocol
from broker.logs import get_logger
from broker.url import BrokerUrl
from schemas import codec, topics
from schemas.actions import AgentState
from schemas.clock import Clock, WallClock
from schemas.envelope import Message, make
from schemas.errors import BusConnectionError, ConfigError, PublishError, StoreError
from schemas.topics import AGENT_STATES, Channel, agent_state_topic

PARTITION_ROOT = "wbp"
DEFAULT_BUCKETS = 64
#: On NATS, how long a bucket's runtime waits for a device's event missing from its ``seq`` order: NATS 2.9 redelivers
#: what a lost connection had not acknowledged after newer messages, and after a leader loss under load that was seen
#: 10-28 s after the publish (docs/scale-out.md). A QoS 0 event lost for good holds its device back this long.
NATS_ORDER_WAIT_S = 45.0
Partitions = Literal["nats", "filters"]
_CLUSTER_NAME = re.compile(r"^[a-z0-9]{1,16}$")
_MEMBER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193


# ---------------------------------------------------------------------------------------------------- assignment


def bucket_of(user: str, buckets: int) -> int:
    """The bucket of a user: FNV-1a (32 bit) of the user id modulo ``buckets``.

    It is the hash of NATS's ``{{partition(buckets, 1)}}`` over the user token, so the broker-side mapping and the
    agents put a user in the same bucket.
    """
    h = _FNV_OFFSET
    for byte in user.encode():
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h % buckets


def _weight(bucket: int, member: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{bucket}:{member}".encode(), digest_size=8).digest(), "big")


def rendezvous_owner(bucket: int, members: Iterable[str]) -> str | None:
    """The member with the highest weight for ``bucket`` (highest-random-weight hashing), or None with no members.

    Adding a member moves only the buckets it now wins; removing one moves only the buckets it held.
    """
    best: tuple[int, str] | None = None
    for member in members:
        key = (_weight(bucket, member), member)
        if best is None or key > best:
            best = key
    return best[1] if best else None


def assignment(buckets: int, members: Collection[str]) -> dict[int, str]:
    """Owner of every bucket over these members (empty when there are none)."""
    out: dict[int, str] = {}
    for b in range(buckets):
        owner = rendezvous_owner(b, members)
        if owner is not None:
            out[b] = owner
    return out


def partition_filter(bucket: int) -> str:
    """The filter of bucket ``bucket`` on a NATS cluster with :func:`nats_mappings`: ``wbp/{b}/#``."""
    return f"{PARTITION_ROOT}/{bucket}/#"


def user_filters(users: Iterable[str]) -> tuple[str, ...]:
    """Per-user filters (events, acks, device states) for a broker without partition mapping."""
    out: list[str] = []
    for user in sorted(users):
        out += topics.user_filters(user)
    return tuple(out)


def nats_mappings(buckets: int) -> dict[str, str]:
    """The NATS account mappings that put device events, acks and states into ``wbp.{bucket}.wb.v1...``.

    Topics keep every level after the prefix, so stripping ``wbp/{b}/`` gives back the device's topic; commands,
    contexts and agent states are not mapped.
    """
    p = f"{{{{partition({buckets},1)}}}}"
    w = [f"{{{{wildcard({i})}}}}" for i in range(1, 6)]
    head = f"{PARTITION_ROOT}.{p}.wb.v1.{w[0]}.{w[1]}.{w[2]}"
    return {
        "wb.v1.*.*.*.evt.*.*": f"{head}.evt.{w[3]}.{w[4]}",
        "wb.v1.*.*.*.ack": f"{head}.ack",
        "wb.v1.*.*.*.state": f"{head}.state",
    }


def nats_mappings_block(buckets: int) -> str:
    """:func:`nats_mappings` as a ``mappings = {...}`` block for nats-server.conf."""
    lines = [f'  "{src}": "{dst}"' for src, dst in nats_mappings(buckets).items()]
    return "mappings = {\n" + "\n".join(lines) + "\n}\n"


def escape_dots(topic: str) -> str:
    """``cmd/display.card`` as ``cmd/display_card`` (see :class:`PartitionBus` ``escape_dots``)."""
    return topic.replace(".", "_")


def original_topic(topic: str) -> str:
    """``wbp/{b}/wb/v1/...`` back to ``wb/v1/...`` (other topics unchanged)."""
    if topic.startswith(PARTITION_ROOT + "/"):
        parts = topic.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic


# ---------------------------------------------------------------------------------------------------- the bus


class PartitionBus(Bus):
    """A :class:`Bus` for cluster members and bucket sessions.

    Args:
        options: as for :class:`Bus` (its ``url`` is the first node).
        urls: broker nodes tried in turn on every (re)connect, so losing one node moves the session to another.
        strip_partition: give the runtime ``wb/v1/...`` topics for messages that arrive as ``wbp/{b}/wb/v1/...``.
        hold_s: after a reconnect to an existing session, hold deliveries this long and then release them in
            per-device order. NATS 2.9 redelivers what the previous connection had not acknowledged only after its
            ``ack_wait``, *after* newer messages (measured: docs/scale-out.md); holding ``ack_wait`` + 1 s puts
            them back in order. 0 (mosquitto, which resends in-flight messages first) turns it off.
        guard: asked before every connect; false means this client must not connect (a bucket session whose
            member was deposed would otherwise take the session back from the new owner, and so on for ever).
        escape_dots: publish ``.`` in topics as ``_``. nats-server before 2.10 (Debian 12 ships 2.9.10) rejects
            ``.`` in MQTT topics and drops the publisher's connection, and every command topic has one
            (``cmd/display.card``). Escaped commands reach no device: this is for exercising the event path and
            failover on such a server (the cluster test does), not for production, which needs nats-server 2.10+
            (``.`` travels as ``//``) or EMQX.
    """

    def __init__(
        self,
        options: BusOptions,
        *,
        urls: Sequence[str] = (),
        strip_partition: bool = False,
        hold_s: float = 0.0,
        guard: Callable[[], Awaitable[bool]] | None = None,
        escape_dots: bool = False,
    ) -> None:
        super().__init__(options)
        self._guard = guard
        self._escape_dots = escape_dots
        self._urls = tuple(urls) or (options.url,)
        self._next_url = 0
        self._strip = strip_partition
        self._hold_s = hold_s
        self._hold_link = 0
        self._hold_until = 0.0
        self.holds = 0

    async def before_connect(self) -> None:
        if self._guard is not None and not await self._guard():
            raise BusConnectionError("not connecting: this session now belongs to another member")
        raw = self._urls[self._next_url % len(self._urls)]
        self._next_url += 1
        self.url = BrokerUrl.parse(raw).with_credentials(self.options.username, self.options.password)

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        if self._strip and topic.startswith(PARTITION_ROOT + "/"):
            topic = original_topic(topic)
        if self._hold_s > 0 and self.link != self._hold_link:
            # The first message of a new connection: anything the old one left unacknowledged may still come.
            self._hold_link = self.link
            if self.session_present:
                self._hold_until = time.monotonic() + self._hold_s
                self.holds += 1
        super().deliver(topic, payload, qos, retain, mid, content_type)

    def outgoing_topic(self, topic: str) -> str:
        # Every publish path of the Bus (publish, publish_raw, publish_future, the DLQ) goes through here.
        if self._escape_dots and "." in topic:
            topic = escape_dots(topic)
        return topic

    async def confirm_subscriptions(self) -> bool:
        """Subscribe every filter again and check what the broker granted (false if it refused any).

        The :class:`Bus` does not look at SUBACK codes. Under load nats-server answered a new session's subscription
        too late (the SUBACK timed out) and the session stayed deaf for the whole run; a broker may also answer
        0x80. Subscribing again is harmless on a persistent session: NATS keeps the pending messages (measured).
        """
        if not self.connected:
            return False
        try:
            granted = await self.subscribe_now(list(self.subscriptions.items()))
        except BusConnectionError as exc:
            self.log.warning("subscription_failed", error=str(exc))
            return False
        if any(code >= 0x80 for code in granted):
            self.log.warning("subscription_refused", filters=list(self.subscriptions), granted=granted)
            return False
        return True

    @property
    def holding(self) -> bool:
        """Whether deliveries are being held after a reconnect."""
        return self._hold_until > 0

    async def next_batch(
        self,
        max_n: int = 500,
        timeout: float | None = None,
        *,
        linger: float = 0.0,
        urgent: Callable[[Message], bool] | None = None,
        enough: int | None = None,
    ) -> list[Message]:
        """As :meth:`Bus.next_batch`, but nothing comes out while a reconnect hold lasts."""
        if self._hold_until:
            remaining = self._hold_until - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining if timeout is None else min(remaining, timeout))
                if time.monotonic() < self._hold_until:
                    return []
            self._hold_until = 0.0
            _per_device_order(self.inbox)
        return await super().next_batch(max_n, timeout, linger=linger, urgent=urgent, enough=enough)


def _per_device_order(inbox: Any) -> None:
    """Sort a deque of messages by device (first appearance) and, within a device, by publish time and seq."""
    first: dict[tuple[str | None, str | None, str | None], int] = {}
    keyed = []
    for i, m in enumerate(inbox):
        w = m.where
        dev = (w.user, w.kind.value if w.kind else None, w.device)
        first.setdefault(dev, i)
        keyed.append(((first[dev], m.envelope.ts, m.envelope.seq, i), m))
    keyed.sort(key=lambda x: x[0])
    inbox.clear()
    inbox.extend(m for _, m in keyed)


# ---------------------------------------------------------------------------------------------------- shared store


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


# ---------------------------------------------------------------------------------------------------- the member


@dataclass(slots=True)
class ClusterSettings:
    """How one member of an agent cluster runs.

    Attributes:
        name: cluster name (``[a-z0-9]{1,16}``): prefixes client ids, the state topics and the Redis keys.
        member: this member's id (``[a-z0-9-]``, unique in the cluster, stable across restarts).
        nodes: broker URLs, tried in turn (every node of a NATS cluster; one URL for a single broker).
        state_url: Redis URL of the shared bucket store.
        buckets: number of buckets (fixed for the cluster's life: changing it moves users between buckets).
        partitions: ``nats`` (the broker's partition mapping fills ``wbp/{b}/#``) or ``filters`` (per-user
            subscriptions of the known ``users``, for mosquitto or any broker).
        users: the known users (``filters`` only).
        hold_s: reconnect hold for per-device order (None: ``ack_wait`` 5 s + 1 on NATS, 0 otherwise).
        order_wait_s: how long a bucket's runtime holds a device's event whose predecessor (by ``seq``) has not come
            (``AgentSettings.order_wait_s``; None: :data:`NATS_ORDER_WAIT_S` on NATS, whose redeliveries after a
            leader loss were seen up to 28 s after their publish, the agent template's otherwise).
        protocol: MQTT protocol ("auto"; NATS speaks 3.1.1 only).
        escape_dots: for nats-server < 2.10 only; commands then reach no device (see :class:`PartitionBus`).
        heartbeat_s: how often the member repeats its retained online state.
        member_timeout_s: a member not heard for this long (relative to our own echo) is dead, Will or not. A killed
            member is seen at once (its Will); this only matters when the Will is lost with its broker node, and it
            must outlast a broker leader election under load (10-25 s measured), or members declare each other
            dead mid-election and move buckets back and forth.
        settle_s: wait this long after a membership change before moving buckets (coalesces changes).
        offline_grace_s: a member whose Will says offline still counts as alive this long. A Will means the
            broker lost the connection, not that the process died: during a broker stall live members' Wills
            fire and they reconnect seconds later; without the grace their buckets move away and back.
        handoff_timeout_s: how long to wait for a live holder to release a bucket before taking it anyway.
        agent: template for every bucket's runtime (login, core config, batch, snapshot interval, ...).
    """

    name: str
    member: str
    nodes: tuple[str, ...]
    state_url: str = "redis://127.0.0.1:6379/0"
    buckets: int = DEFAULT_BUCKETS
    partitions: Partitions = "nats"
    users: frozenset[str] | None = None
    hold_s: float | None = None
    order_wait_s: float | None = None
    protocol: Protocol = "auto"
    escape_dots: bool = False
    heartbeat_s: float = 2.0
    member_timeout_s: float = 30.0
    settle_s: float = 0.5
    offline_grace_s: float = 3.0
    handoff_timeout_s: float = 10.0
    agent: AgentSettings = field(default_factory=AgentSettings)

    def __post_init__(self) -> None:
        if not _CLUSTER_NAME.match(self.name):
            raise ConfigError(f"cluster name {self.name!r} must match [a-z0-9]{{1,16}}")
        if not _MEMBER_NAME.match(self.member) or self.member.startswith("bucket-"):
            raise ConfigError(f"member id {self.member!r} must match [a-z0-9][a-z0-9-]{{0,39}}, not bucket-*")
        if not self.nodes:
            raise ConfigError("a cluster member needs at least one broker node URL")
        if not 1 <= self.buckets <= 4096:
            raise ConfigError(f"buckets must be 1..4096, not {self.buckets}")
        if self.partitions == "filters" and not self.users:
            raise ConfigError("partitions=filters needs the list of users (--users): each bucket subscribes per user")

    @property
    def instance(self) -> str:
        """This member's agent instance id (its state topic and control client id)."""
        return f"{self.name}-{self.member}"

    def bucket_client_id(self, bucket: int) -> str:
        """The MQTT client id of a bucket's session."""
        return f"{self.name}-bucket-{bucket}"

    @property
    def hold(self) -> float:
        """The reconnect hold in seconds."""
        if self.hold_s is not None:
            return self.hold_s
        return 6.0 if self.partitions == "nats" else 0.0

    @property
    def order_wait(self) -> float:
        """How long a bucket's runtime waits for a device's missing event, in seconds."""
        if self.order_wait_s is not None:
            return self.order_wait_s
        return NATS_ORDER_WAIT_S if self.partitions == "nats" else self.agent.order_wait_s


@dataclass(slots=True)
class MemberStats:
    """What a member counts (the sums over its bucket runtimes, finished ones included)."""

    takeovers: int = 0
    released: int = 0
    fenced: int = 0
    failed: int = 0
    agent: AgentStats = field(default_factory=AgentStats)


class ClusterMember:
    """One agent instance of a cluster. ``async with ClusterMember(settings) as m: await m.run()``.

    Three loops: the heartbeat (retained online state, member stats to Redis), the control loop (reads member
    states, decides which buckets to serve, starts and stops bucket tasks without waiting for them) and one task
    per bucket (claim, run the runtime, watch the epoch, release). None of them waits on another, so a slow bucket
    stop never delays the heartbeat that tells the others this member is alive.
    """

    def __init__(self, settings: ClusterSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or WallClock()
        self.stats = MemberStats()
        self.log = get_logger("cluster", member=settings.instance)
        self.redis: aioredis.Redis = aioredis.Redis.from_url(settings.state_url)
        self._bus: PartitionBus | None = None
        self._heard: dict[str, float] = {}
        self._online: dict[str, bool] = {}
        self._offline_at: dict[str, float] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping: dict[int, asyncio.Task[None]] = {}
        self._stop_since: dict[int, float] = {}
        self._stop_reported: set[int] = set()
        self._runtimes: dict[int, AgentRuntime] = {}
        self._running: set[int] = set()
        self._dirty_at: float | None = 0.0
        self._started = time.monotonic()
        self._loops: list[asyncio.Task[None]] = []
        s = settings
        self._bucket_users: dict[int, frozenset[str]] = {}
        for user in s.users or ():
            b = bucket_of(user, s.buckets)
            self._bucket_users[b] = self._bucket_users.get(b, frozenset()) | {user}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ClusterMember:
        s = self.settings
        try:
            await self.redis.ping()
        except RedisError as exc:
            raise ConfigError(f"cannot reach the shared store at {s.state_url}: {exc}") from exc
        topic = agent_state_topic(s.instance)
        options = BusOptions(
            url=s.nodes[0],
            client_id=s.instance,
            username=s.agent.username,
            password=s.agent.password,
            protocol=s.protocol,
            will=Outgoing(topic, self._presence(False), 1, True),
            birth=Outgoing(topic, self._presence(True), 1, True),
            goodbye=Outgoing(topic, self._presence(False), 1, True),
            connect_timeout_s=0,
            keepalive_s=max(2, int(s.member_timeout_s / 3)),
            backoff_max_s=2.0,
            name=s.instance,
        )
        self._bus = PartitionBus(options, urls=s.nodes)
        await self._bus.__aenter__()
        await self._bus.subscribe(AGENT_STATES, 1)
        self._loops = [
            asyncio.create_task(self._control(), name=f"cluster[{s.instance}].control"),
            asyncio.create_task(self._heartbeat(), name=f"cluster[{s.instance}].heartbeat"),
        ]
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        for loop in self._loops:
            loop.cancel()
        tasks = [*self._loops, *self._tasks.values(), *self._stopping.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._bus is not None:
            await self._bus.__aexit__(exc_type, exc, tb)
        with contextlib.suppress(RedisError):
            await self._report()
        await self.redis.aclose()

    async def run(self) -> None:
        """Run until cancelled (or until a loop fails, which ends the process: the deployment restarts it)."""
        done, _ = await asyncio.wait(self._loops, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    @property
    def running(self) -> frozenset[int]:
        """Buckets whose runtime is connected and serving."""
        return frozenset(self._running)

    def _presence(self, online: bool) -> bytes:
        s = self.settings
        body = AgentState(online=online, instance=s.instance, version="cluster")
        return codec.encode(make(body, ts=self.clock.now_ms()))

    # ------------------------------------------------------------------ membership

    def live(self) -> set[str]:
        """Members this one considers alive (itself always; :meth:`target` handles being cut off)."""
        s = self.settings
        now = time.monotonic()
        reference = self._heard.get(s.instance, now)
        alive = {
            m
            for m, on in self._online.items()
            if (on or now - self._offline_at.get(m, -1e9) < s.offline_grace_s)
            and reference - self._heard.get(m, 0) < s.member_timeout_s
        }
        alive.add(s.instance)
        return alive

    def target(self) -> set[int]:
        """The buckets this member should serve now."""
        # A member cut off from the bus keeps its buckets: the others take them once its heartbeat has been missing
        # for member_timeout_s, and the epoch in Redis then fences it (no commit, no reconnect). Dropping them
        # itself would only add churn when a broker node dies and everybody reconnects at once.
        s = self.settings
        owned = {b for b, owner in assignment(s.buckets, self.live()).items() if owner == s.instance}
        if s.partitions == "filters":
            owned &= set(self._bucket_users)
        return owned

    def _on_state(self, message: Message) -> None:
        body = message.data
        if not isinstance(body, AgentState) or message.where.channel is not Channel.AGENT_STATE:
            return
        instance = message.where.name or body.instance
        if not instance.startswith(self.settings.name + "-") or "-bucket-" in instance:
            return
        # A retained state may be old: date it by its publish time rather than by when we read it.
        age_s = max(0.0, (self.clock.now_ms() - message.envelope.ts) / 1000) if message.retain else 0.0
        self._heard[instance] = max(self._heard.get(instance, 0.0), time.monotonic() - age_s)
        if self._online.get(instance) != body.online:
            self.log.info("member_seen", other=instance, online=body.online)
            if not body.online:
                self._offline_at[instance] = time.monotonic() - age_s
        self._online[instance] = body.online

    async def _heartbeat(self) -> None:
        bus = self._bus
        assert bus is not None  # noqa: S101
        s = self.settings
        topic = agent_state_topic(s.instance)
        while True:
            if bus.connected:
                with contextlib.suppress(BusConnectionError, PublishError):
                    await bus.publish_raw(Outgoing(topic, self._presence(True), 1, True))
            with contextlib.suppress(RedisError):
                await self._report()
            await asyncio.sleep(s.heartbeat_s)

    async def _control(self) -> None:
        bus = self._bus
        assert bus is not None  # noqa: S101
        s = self.settings
        last_live: set[str] = set()
        while True:
            for message in await bus.next_batch(200, timeout=0.25):
                self._on_state(message)
            now = time.monotonic()
            live = self.live()
            if live != last_live:
                last_live = live
                self._dirty_at = now  # membership changed: wait settle_s for more changes before moving buckets
            # Start only once we have heard ourselves: the retained states of the others have arrived by then.
            ready = s.instance in self._heard or now - self._started > s.member_timeout_s
            if ready and (self._dirty_at is None or now - self._dirty_at >= s.settle_s):
                self._dirty_at = None
                self._reconcile()

    def _reconcile(self) -> None:
        """Start the buckets we should serve and stop the others, waiting for nothing."""
        for tasks in (self._tasks, self._stopping):
            for b in [b for b, t in tasks.items() if t.done()]:
                del tasks[b]
        now = time.monotonic()
        for b, task in self._stopping.items():
            since = self._stop_since.setdefault(b, now)
            if now - since > 10 and b not in self._stop_reported:
                self._stop_reported.add(b)  # a stop should take a second or two: say where it hangs
                related = {
                    t.get_name(): _await_chain(t)
                    for t in asyncio.all_tasks()
                    if f"bucket-{b}]" in t.get_name() or f".b{b}]" in t.get_name()
                }
                self.log.warning("bucket_stop_slow", bucket=b, waited_s=round(now - since), awaiting=_await_chain(task),
                                 related=related)  # fmt: skip
        for b in [b for b in self._stop_since if b not in self._stopping]:
            del self._stop_since[b]
            self._stop_reported.discard(b)
        want = self.target()
        stop = [b for b in self._tasks if b not in want]
        for b in stop:
            task = self._tasks.pop(b)
            task.cancel()  # the task stops its runtime and releases the bucket
            self._stopping[b] = task
        start = [b for b in sorted(want) if b not in self._tasks and b not in self._stopping]
        for b in start:
            self._tasks[b] = asyncio.create_task(self._serve(b), name=f"cluster[{self.settings.instance}].b{b}")
        if stop or start:
            self.log.info("buckets_reconciled", owned=len(want), started=len(start), stopped=len(stop),
                          live=sorted(self.live()))  # fmt: skip

    # ------------------------------------------------------------------ one bucket

    async def _serve(self, bucket: int) -> None:
        s = self.settings
        store = RedisBucketStore(self.redis, s.name, bucket, s.instance)
        waited_from = time.monotonic()
        force = False
        while True:
            force = time.monotonic() - waited_from > s.handoff_timeout_s
            try:
                holder = await store.claim(self.live(), force=force, now_ms=self.clock.now_ms())
            except StoreError as exc:
                self.log.warning("bucket_claim_failed", bucket=bucket, error=str(exc))
                holder = "?"
            if holder is None:
                break
            await asyncio.sleep(0.1)  # the holder is alive and releases it once it sees the new membership
        if force:
            self.log.warning("bucket_forced", bucket=bucket, epoch=store.epoch)
        self.stats.takeovers += 1
        if s.partitions == "nats":
            filters: tuple[str, ...] = (partition_filter(bucket),)
            users = None
        else:
            users = self._bucket_users.get(bucket, frozenset())
            filters = user_filters(users)
        settings = replace(
            s.agent, instance=s.bucket_client_id(bucket), subscriptions=filters, presence=False, users=users,
            order_wait_s=s.order_wait,
        )  # fmt: skip

        async def still_ours() -> bool:
            try:
                return (await store.holder()) == (s.instance, store.epoch)
            except RedisError:
                return False  # cannot tell: do not connect (and so do not take the session from its owner)

        subscribed = asyncio.Event()

        async def on_connect(bus: Bus, _session_present: bool) -> None:
            # Called after the bus subscribed; serve only once the broker has granted every subscription. If it
            # has not, raising ends this connection and the bus reconnects (and subscribes) again.
            if isinstance(bus, PartitionBus) and not await bus.confirm_subscriptions():
                raise BusConnectionError("the broker did not grant the bucket's subscription; reconnecting")
            subscribed.set()

        def make_bus(options: BusOptions) -> Bus:
            options = replace(
                options,
                protocol=s.protocol,
                # The failover ordering on NATS 2.9 (the reconnect hold above) was measured with paho's timing of
                # acknowledgements; the native transport is not verified there yet (docs/benchmarks.md).
                transport="paho",
                name=f"{s.instance}.b{bucket}",
                backoff_max_s=2.0,
                on_connect=[*options.on_connect, on_connect],
            )
            return PartitionBus(
                options,
                urls=s.nodes,
                strip_partition=s.partitions == "nats",
                hold_s=s.hold,
                guard=still_ours,
                escape_dots=s.escape_dots,
            )

        runtime = AgentRuntime(settings, self.clock, store=store, bus_factory=make_bus)
        released = False
        self.log.info("bucket_starting", bucket=bucket, epoch=store.epoch)
        try:
            try:
                await runtime.__aenter__()
            except BaseException:
                # Cancelled (or failed) half-way in, e.g. while subscribing: `async with` would not call
                # __aexit__, and the bus, already started, would live on holding the bucket's session.
                await runtime.__aexit__(None, None, None)
                raise
            try:
                self._runtimes[bucket] = runtime
                # Serving only once subscribed: a new session captures nothing published before its SUBACK.
                await subscribed.wait()
                self._running.add(bucket)
                await _first_of(runtime.run(), self._watch(store))
            finally:
                await runtime.__aexit__(None, None, None)
        except asyncio.CancelledError:
            released = True
            raise
        except FencedError as exc:
            self.stats.fenced += 1
            self.log.warning("bucket_fenced", bucket=bucket, error=str(exc))
        except Exception:  # any failure of one bucket must not end the member; it is retried
            self.stats.failed += 1
            self.log.exception("bucket_failed", bucket=bucket)
            await asyncio.sleep(1.0)  # the control loop restarts it while we still own it
        finally:
            self._running.discard(bucket)
            self._runtimes.pop(bucket, None)
            _add_stats(self.stats.agent, runtime.stats)
            if released:
                self.stats.released += 1
                await store.release()
            self.log.info("bucket_stopped", bucket=bucket, released=released)

    async def _watch(self, store: RedisBucketStore) -> None:
        """Raise :class:`FencedError` once another member has taken the bucket (an idle bucket never writes)."""
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(RedisError):
                holder, epoch = await store.holder()
                if epoch != store.epoch:
                    raise FencedError(f"bucket {store.bucket} was taken by {holder or '?'} (epoch {epoch})")

    # ------------------------------------------------------------------ reporting

    def totals(self) -> AgentStats:
        """Counters over finished and running bucket runtimes."""
        total = AgentStats()
        _add_stats(total, self.stats.agent)
        for runtime in self._runtimes.values():
            _add_stats(total, runtime.stats)
        return total

    async def _report(self) -> None:
        t = self.totals()
        s = self.stats
        await self.redis.hset(f"wb:{self.settings.name}:member:{self.settings.member}", mapping={
            "running": ",".join(str(b) for b in sorted(self._running)), "processed": t.processed,
            "duplicates": t.duplicates, "actions": t.actions, "republished": t.republished, "replayed": t.replayed,
            "refused": t.refused, "takeovers": s.takeovers, "released": s.released, "fenced": s.fenced,
            "failed": s.failed, "live": ",".join(sorted(self.live())),
        })  # fmt: skip


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where a task is suspended: the chain of coroutines it awaits (for diagnosing a hang)."""
    out: list[str] = []
    obj: Any = task.get_coro()
    while obj is not None and len(out) < 30:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        if frame is not None:
            out.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {frame.f_code.co_name}")
        nxt = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        if nxt is None and isinstance(obj, asyncio.Task):
            nxt = obj.get_coro()
        if nxt is None and isinstance(obj, asyncio.Future):
            out.append(repr(obj)[:200])
        obj = nxt
    return out


async def _first_of(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run the jobs until the first one ends; cancel the rest; re-raise its exception."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in done:
        task.result()


def _add_stats(into: AgentStats, more: AgentStats) -> None:
    for name in AgentStats.__dataclass_fields__:
        setattr(into, name, getattr(into, name) + getattr(more, name))


async def run_member(settings: ClusterSettings, clock: Clock | None = None) -> None:
    """Run one member until cancelled (what ``wearbus agent --cluster`` does)."""
    async with ClusterMember(settings, clock) as member:
        await member.run()
