"""A cluster member: presence, bucket ownership, one agent runtime per owned bucket, hand-over on join and leave."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agent.cluster.assignment import (
    CLUSTER_NAME,
    DEFAULT_BUCKETS,
    MEMBER_NAME,
    NATS_ORDER_WAIT_S,
    Partitions,
    assignment,
    bucket_of,
    partition_filter,
    user_filters,
)
from agent.cluster.bus import PartitionBus
from agent.cluster.store import FencedError, RedisBucketStore
from agent.runtime import AgentRuntime, AgentSettings, AgentStats
from agent.sealing import HealthCipher
from broker.client import Bus, BusOptions, Outgoing, Protocol
from broker.logs import get_logger
from schemas import codec
from schemas.actions import AgentState
from schemas.clock import Clock, WallClock
from schemas.envelope import Message, make
from schemas.errors import BusConnectionError, ConfigError, PublishError, StoreError
from schemas.tasks import RECANCEL_S, TaskScope, first_of, raise_if_cancelling
from schemas.topics import AGENT_STATES, Channel, agent_state_topic


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
        if not CLUSTER_NAME.match(self.name):
            raise ConfigError(f"cluster name {self.name!r} must match [a-z0-9]{{1,16}}")
        if not MEMBER_NAME.match(self.member) or self.member.startswith("bucket-"):
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
        key = settings.agent.health_key  # the buckets seal health values as a single agent does
        self._cipher = HealthCipher.from_file(key) if key is not None else None
        self._bus: PartitionBus | None = None
        self._heard: dict[str, float] = {}
        self._online: dict[str, bool] = {}
        self._offline_at: dict[str, float] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping: dict[int, asyncio.Task[None]] = {}
        self._stop_since: dict[int, float] = {}
        self._recancel_at: dict[int, float] = {}  # when a stop that has not ended is cancelled again
        self._stop_reported: set[int] = set()
        self._runtimes: dict[int, AgentRuntime] = {}
        self._running: set[int] = set()
        self._dirty_at: float | None = 0.0
        self._started = time.monotonic()
        self._loops: list[asyncio.Task[None]] = []
        self._scope = TaskScope()  # the two loops and one task per bucket
        self._stack: contextlib.AsyncExitStack | None = None
        s = settings
        self._bucket_users: dict[int, frozenset[str]] = {}
        for user in s.users or ():
            b = bucket_of(user, s.buckets)
            self._bucket_users[b] = self._bucket_users.get(b, frozenset()) | {user}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ClusterMember:
        s = self.settings
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.redis.aclose)
            try:
                await self.redis.ping()
            except RedisError as exc:
                raise ConfigError(f"cannot reach the shared store at {s.state_url}: {exc}") from exc
            stack.push_async_callback(self._report_last)  # after the bus closes, before Redis does
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
            self._bus = await stack.enter_async_context(PartitionBus(options, urls=s.nodes))
            await self._bus.subscribe(AGENT_STATES, 1)
            # The loops and the buckets' tasks: all of them end (and are awaited) before the bus closes.
            await stack.enter_async_context(self._scope)
            self._loops = [
                self._scope.start(self._control(), name=f"cluster[{s.instance}].control"),
                self._scope.start(self._heartbeat(), name=f"cluster[{s.instance}].heartbeat"),
            ]
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def _report_last(self) -> None:
        with contextlib.suppress(RedisError):
            await self._report()

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
                # Not dated by its ts: a Will carries the time its member connected, not the time the broker
                # published it, and NATS delivers it with the retain flag set. Dated so, the Will of a member whose
                # node just died was minutes old, past the grace, and its buckets moved away and back (a member
                # long gone is still dead: its last heartbeat is older than member_timeout_s).
                self._offline_at[instance] = time.monotonic()
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
            if now >= self._recancel_at.setdefault(b, since + RECANCEL_S):
                # Again, every RECANCEL_S: on Python 3.11 a library's wait_for can swallow a cancellation
                # (bpo-42130), and a stop that hangs keeps the bucket from its new owner.
                self._recancel_at[b] = now + RECANCEL_S
                task.cancel()
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
            self._recancel_at.pop(b, None)
            self._stop_reported.discard(b)
        want = self.target()
        stop = [b for b in self._tasks if b not in want]
        for b in stop:
            task = self._tasks.pop(b)
            task.cancel()  # the task stops its runtime and releases the bucket
            self._stopping[b] = task
        start = [b for b in sorted(want) if b not in self._tasks and b not in self._stopping]
        for b in start:
            self._tasks[b] = self._scope.start(self._serve(b), name=f"cluster[{self.settings.instance}].b{b}")
        if stop or start:
            self.log.info("buckets_reconciled", owned=len(want), started=len(start), stopped=len(stop),
                          live=sorted(self.live()))  # fmt: skip

    # ------------------------------------------------------------------ one bucket

    async def _serve(self, bucket: int) -> None:
        s = self.settings
        store = RedisBucketStore(self.redis, s.name, bucket, s.instance, cipher=self._cipher)
        waited_from = time.monotonic()
        force = False
        try:
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
        except asyncio.CancelledError:
            # Stopped while claiming: Redis may have run the claim (with the membership we had when we sent it)
            # and its answer was lost. Left so, the bucket would stay held by a member that does not serve it,
            # and its owner would wait on it for ever. This member has no other task on this bucket.
            await store.abandon()
            raise
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
            # (cancelled or failed half-way in, e.g. while subscribing, the runtime closes what it had opened)
            async with runtime:
                self._runtimes[bucket] = runtime
                # Serving only once subscribed: a new session captures nothing published before its SUBACK. While
                # the bus waits to connect (its guard refuses while another member holds the bucket), the epoch is
                # watched too: a bucket taken over before it ever served ends here as fenced, not wait for ever.
                await first_of(subscribed.wait(), self._watch(store), name=f"cluster[{s.instance}].b{bucket}].start")
                # A stop asked for while the runtime started must not be lost in a library (schemas.tasks): a
                # bucket that runs on after its stop holds up its new owner until the next cancellation.
                raise_if_cancelling()
                self._running.add(bucket)
                await first_of(runtime.run(), self._watch(store), name=f"cluster[{s.instance}].b{bucket}].first_of")
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


def _add_stats(into: AgentStats, more: AgentStats) -> None:
    for name in AgentStats.__dataclass_fields__:
        setattr(into, name, getattr(into, name) + getattr(more, name))


async def run_member(settings: ClusterSettings, clock: Clock | None = None) -> None:
    """Run one member until cancelled (what ``wearbus agent --cluster`` does)."""
    async with ClusterMember(settings, clock) as member:
        await member.run()
