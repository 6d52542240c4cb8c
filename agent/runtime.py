"""The agent's thin runtime: subscribe, decode, deduplicate, admit, fuse, store, publish, acknowledge.

One pump task does everything in order, so the core never runs concurrently with itself:

1. take what has arrived (up to a batch) from the bus, or wait at most one tick interval;
2. drop envelope ids already processed (the store's ``events`` table is the dedup set) and refuse what fails
   admission (timestamps, per-device rate) to the DLQ;
3. let the timers of the next slice of users fire (``tick``: every user once per ``tick_s``, :data:`TICK_SLICE`
   users per turn); hand each new message to the core with the simulated time;
4. commit events, the actions they caused, tasks and alerts in one SQLite transaction;
5. publish the actions (QoS 1, waiting for the broker), mark them published;
6. only then acknowledge the MQTT messages (manual ack on a persistent session).

A crash anywhere repeats at most steps that have no effect twice: unacknowledged messages come again and are
deduplicated; committed but unpublished actions are published at start; an action published but not marked is
published again with the same id, and devices ignore an action id they have already carried out.
After a restart the core is restored from its last snapshot and the events and ticks stored since are replayed into
it, so the context, the open tasks and the pending confirmations carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import heapq
import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.admission import Admission, AdmissionConfig
from agent.core.api import Command, Outcome
from agent.core.config import CoreConfig
from agent.core.context import PROACTIVE_HEALTH, split_health
from agent.core.engine import AgentCore
from agent.core.fuzzy import warm as warm_parser
from agent.core.intents import Intent, Skill, Unknown
from agent.core.intents import parse as parse_text
from agent.failfast import StoreFailed, blames_the_messages, unrecoverable
from agent.fairness import FairQueue
from agent.llm import ChatResolver
from agent.ordering import OrderGate
from agent.parking import Attempts, SeenFile
from agent.sealing import HealthCipher
from agent.storage import ActionRow, AgentStore, EventRow, Mark, TickRow
from agent.store import Store
from broker.bus import Bus, BusOptions, MqttProtocol, Outgoing, TransportName, retained_digest
from broker.connect import open_bus
from broker.logs import get_logger
from broker.ratelog import Sampler
from schemas import codec
from schemas.actions import Ack, AgentState, ContextSnapshot, DeadLetter, DeviceState
from schemas.clock import Clock, SimClock, WallClock
from schemas.envelope import Envelope, Message, envelope_of, make, new_id, now_ms
from schemas.errors import BusConnectionError, ConfigError, ContractError, PublishError, StoreError, ValidationFailed
from schemas.events import Utterance
from schemas.health import holds_health
from schemas.topics import (
    AGENT_FILTERS,
    Channel,
    DeviceId,
    Kind,
    agent_state_topic,
    command_topic,
    consent_topic,
    context_topic,
    desired_topic,
    dlq_topic,
    health_topic,
    parse,
    state_topic,
)

VERSION = "0.1.0"
#: How often the agent looks for health events past their retention time (wall seconds).
PRUNE_EVERY_S = 60.0


def wall_ms() -> int:
    """Wall-clock ms (for latency accounting only)."""
    return time.time_ns() // 1_000_000


#: Seconds between two passes over every device's last sign of life (heartbeats come every 10 s or more).
LIVENESS_SCAN_S = 1.0
#: Users ticked in one pump turn at most. Every user is ticked once per ``tick_s``, in slices: a tick of thousands
#: of users at once held the event loop for tens of ms, five times a second, and every event waited behind it.
TICK_SLICE = 100
#: Users written in one slice of a snapshot round (one pump turn) at most; fewer when they take long to write.
SNAPSHOT_SLICE = 50
#: Wall seconds a slice of a snapshot round aims to take.
SNAPSHOT_BUDGET_S = 0.0015
#: Waiting messages that end a linger (``linger_s``): their turn's fixed cost (a dedup query, a transaction) is
#: already spread thin, and behind a backlog a linger for more would leave the pump idle while the broker sends.
LINGER_ENOUGH = 64
#: Retained contexts republished in one pump turn at most (~0.1-0.3 ms each); the others due go in the next turns.
CONTEXT_SLICE = 20


@dataclass(slots=True)
class AgentSettings:
    """How the agent runs.

    Attributes:
        url: broker URL.
        db: SQLite file.
        instance: the agent instance id (its client id and its state topic).
        username: login (the embedded broker needs one for the persistent session to queue while away).
        password: password.
        protocol: the MQTT version to ask for (``auto``: 5, else 3.1.1).
        transport: the MQTT client under the bus (``auto``, ``native``, ``paho``).
        users: only these users (None: all), for partitioned deployments.
        batch: messages per store transaction at most.
        tick_s: wall seconds between timer ticks.
        snapshot_s: wall seconds between core snapshots (the log since the last one is replayed on restart).
        context_s: wall seconds between retained context republishes per user.
        heartbeat_misses: a device whose birth announced heartbeats (``heartbeat_s``) and that has sent nothing for
            this many heartbeat intervals is marked offline, before its Will (which a silent network cut delays to
            ~1.5x keep-alive + 5 s); 0: wait for the Will.
        resolver: the optional LLM resolver for sentences the built-in parser does not understand (off: None).
        core: the core's thresholds and user profiles.
        admission: limits on timestamps and rates.
        subscriptions: the filters the agent subscribes (a cluster's bucket session selects its users with them).
        presence: publish the retained ``wb/v1/_agent/{instance}/state`` with a Will (a cluster's bucket sessions
            leave that to their member).
        slow_turn_ms: a pump turn that holds the event loop longer than this logs ``pump_turn_slow`` with the time
            of each of its parts and of the garbage collections in it (every event behind it waited that long); 0:
            never.
        linger_s: when a few messages are waiting and none is :data:`INTERACTIVE`, wait up to this long for more
            before a turn (each turn costs a transaction and a dedup query whatever its size: fewer, fuller turns
            leave the loop free more often for the next sentence or gesture, which never lingers); 0: never.
        max_attempts: a message in a batch the agent did not survive this many times is parked on the DLQ
            (``wb/v1/_dlq/parked``) instead of being handled again (agent.parking); 0: never.
        db_max_mb: a cap on the database's size (SQLite's ``max_page_count``): past it every write fails with
            "database or disk is full", as on a full disk, and the agent ends (:mod:`agent.failfast`); 0: none.
        health_retention_s: how long the raw payload of a health event (heart rate, SpO2, ...) is kept; then the
            agent, while it runs, replaces it by a redacted copy (the fused baselines and the context stay).
        health_hourly_retention_s: how long the hourly aggregates (count, sum, min, max) of pruned health values
            are kept, by their sample time.
        health_key: an AES-256-GCM key file: health event payloads, the per-user state and the context snapshots
            are sealed with it in the database (:mod:`agent.sealing`).
        order_wait_s: how long a device's event waits for a missing predecessor (by ``seq``) before the agent gives
            up on it, handles the device's events in order from there and records the gap (``order_gap``); a QoS 0
            event may be lost for good, so this bounds how long one loss holds that device back (agent/ordering.py).
    """

    url: str = "mqtt://127.0.0.1:1883"
    db: Path = Path(".wearbus/agent.db")
    instance: str = "agent-1"
    username: str | None = None
    password: str | None = None
    protocol: MqttProtocol = "auto"
    transport: TransportName = "auto"
    users: frozenset[str] | None = None
    batch: int = 500
    tick_s: float = 0.2
    snapshot_s: float = 2.0
    context_s: float = 1.0
    heartbeat_misses: int = 3
    resolver: ChatResolver | None = None
    core: CoreConfig = field(default_factory=CoreConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    subscriptions: tuple[str, ...] = AGENT_FILTERS
    presence: bool = True
    slow_turn_ms: float = 100.0
    linger_s: float = 0.005
    db_max_mb: float = 0.0
    max_attempts: int = 3
    health_retention_s: float = 7 * 86_400.0
    health_key: Path | None = None
    health_hourly_retention_s: float = 365 * 86_400.0
    order_wait_s: float = 1.0


@dataclass(slots=True)
class AgentStats:
    """What the runtime counts."""

    processed: int = 0
    duplicates: int = 0
    refused: int = 0
    actions: int = 0
    republished: int = 0
    replayed: int = 0
    alerts: int = 0
    batches: int = 0
    silent: int = 0
    llm_late: int = 0  # utterances handled after the LLM resolver answered (off the pump)
    sampled_out: int = 0  # refused for rate and counted, without a dead letter of their own
    order_gaps: int = 0


class AgentRuntime:
    """The agent process's body. ``async with AgentRuntime(settings) as agent: await agent.run()``.

    ``store`` replaces the SQLite store at ``settings.db`` and ``bus_factory`` the plain :class:`Bus` (both for
    :mod:`agent.cluster`, whose buckets keep their store in Redis and connect to a broker cluster).
    """

    def __init__(
        self,
        settings: AgentSettings,
        clock: Clock | None = None,
        core: AgentCore | None = None,
        *,
        store: AgentStore | None = None,
        bus_factory: Callable[[BusOptions], Bus] = open_bus,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or WallClock()
        self.core = core or AgentCore(settings.core)
        self.admission = Admission(settings.admission)
        self.stats = AgentStats()
        self.log = get_logger("agent", instance=settings.instance)
        self._store: AgentStore | None = None
        self._bus: Bus | None = None
        self._given_store = store
        self._bus_factory = bus_factory
        self._dirty_users: set[str] = set()  # context changed, not republished yet
        self._context_due: list[tuple[float, str]] = []  # heap: (monotonic time due, user), one per dirty user
        self._last_context: dict[str, float] = {}
        self._last_snapshot = 0.0
        self._next_prune = 0.0  # the health retention: first pass at start
        self._snapshot_every = settings.snapshot_s
        self._round: _Round | None = None  # the snapshot being written, a slice of users per pump turn
        self._snapshot_pace = _Pace(SNAPSHOT_BUDGET_S, 1, SNAPSHOT_SLICE, guess_s=300e-6)
        self._last_tick = 0.0
        self._tick_users: list[str] = []  # this round of ticks: every user, ticked TICK_SLICE per pump turn
        self._tick_pos = 0
        self._last_liveness = 0.0
        self._pump: asyncio.Task[None] | None = None
        self._replaying = False
        self._acked: list[str] = []  # actions whose PUBACK came, to mark published
        self._republish = False
        # (user, kind, device) -> [heartbeat_s, monotonic time of its last message]
        self._liveness: dict[tuple[str, str, str], list[float]] = {}
        self._connects_seen = 0
        self._gc_clock = _GcClock()
        # Utterances waiting for the LLM resolver, off the pump (by envelope id; not stored, not acked yet: after a
        # crash the broker delivers them again), and those whose answer came, to handle in the next pump turn.
        self._held: dict[str, Message] = {}
        self._late: list[tuple[Message, Intent | None]] = []
        self._llm_calls: set[asyncio.Task[None]] = set()
        self._failed = ""  # the store's unrecoverable condition, once seen: no more writes at shutdown
        self._fair = FairQueue()  # delivered, not handled yet: a batch per turn, round-robin by user
        # A flooding device's refusals: the first of each second per device goes to the DLQ, the rest are counted.
        self._rate_letters = Sampler(1)
        self._rate_unlettered: dict[str, int] = {}  # topic -> refused without a dead letter of their own
        self._rate_flushed = 0.0
        self._failure_log = Sampler(5)
        # Beside a SQLite store (a cluster's Redis-backed buckets have neither): retained garbage already
        # dead-lettered, and messages in batches the agent did not survive (agent.parking).
        own = store is None
        self._seen_retained = SeenFile(settings.db.with_name(settings.db.name + ".retained")) if own else None
        self._attempts = (
            Attempts(settings.db.with_name(settings.db.name + ".attempts"), settings.max_attempts)
            if own and settings.max_attempts > 0
            else None
        )
        # Each device's events in seq order: (user, kind, device) -> held messages (agent/ordering.py).
        self._order: OrderGate[tuple[str, str, str], Message] = OrderGate(round(settings.order_wait_s * 1000))
        # devices answered in JSON: they spoke JSON last, or their birth asked for it (device -> pinned by the birth)
        self._json_devices: dict[tuple[str, str, str], bool] = {}
        self._msgpack_pinned: set[tuple[str, str, str]] = set()  # births that asked for msgpack whatever they speak

    @property
    def store(self) -> AgentStore:
        """The open store."""
        assert self._store is not None, "not started"  # noqa: S101 (programming error, not input)
        return self._store

    @property
    def bus(self) -> Bus:
        """The bus connection."""
        assert self._bus is not None, "not started"  # noqa: S101
        return self._bus

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        s = self.settings
        await asyncio.to_thread(warm_parser)  # the parser's ASR tolerance tables, off the loop, before any turn
        codec.warm()  # every envelope validator, before the first message of each kind (not inside a turn)
        cipher = HealthCipher.from_file(s.health_key) if s.health_key is not None else None
        store = self._given_store or Store(s.db, cipher=cipher, max_mb=s.db_max_mb)
        self._store = await store.__aenter__()
        await self._restore()
        state = agent_state_topic(s.instance)

        protocol: MqttProtocol = s.protocol
        if s.presence:
            spoke = await self._claim_instance()  # the protocol the broker spoke: no second probe for it
            protocol = "5" if spoke == "5" else "3.1.1"

        def presence(online: bool) -> bytes:
            body = AgentState(
                online=online, instance=s.instance, version=VERSION, users=sorted(s.users) if s.users else None,
                host=socket.gethostname(), pid=os.getpid(),
            )  # fmt: skip
            return codec.encode(make(body, ts=self.clock.now_ms()))

        options = BusOptions(
            url=s.url,
            protocol=protocol,
            transport=s.transport,
            client_id=s.instance,
            username=s.username,
            password=s.password,
            persistent=True,
            manual_ack=True,
            dlq=True,
            will=Outgoing(state, presence(False), 1, True) if s.presence else None,
            birth=Outgoing(state, presence(True), 1, True) if s.presence else None,
            goodbye=Outgoing(state, presence(False), 1, True) if s.presence else None,
            connect_timeout_s=0,
            name=s.instance,
            receive_maximum=max(100, s.batch * 2),
            seen_retained=self._seen_retained,
        )
        self._bus = self._bus_factory(options)
        await self._bus.__aenter__()
        for topic_filter in s.subscriptions:
            await self._bus.subscribe(topic_filter, 1)
        gc.callbacks.append(self._gc_clock)
        self._pump = asyncio.create_task(self._run_pump(), name=f"agent[{s.instance}].pump")
        return self

    async def _claim_instance(self) -> str:
        """Refuse to start when another running agent holds this instance id (its retained state says online).

        Two agents with one id would take the session from each other in a loop. A holder on this host is judged by
        its process id (a crashed one is no holder, a running one refuses us at once); one elsewhere gets
        ``1.5 x keep-alive`` for its Will to say offline.

        Raises:
            InstanceTaken: a live agent holds the id.
        """
        s = self.settings
        topic = agent_state_topic(s.instance)
        # A broker that makes the username the client id (Mosquitto's use_username_as_clientid, as generated) gives
        # this probe the agent's own session: it must resume it, not wipe it (no clean start), and leave what is
        # queued there unacknowledged (redelivered to the agent), and its subscription must go again.
        options = BusOptions(
            url=s.url, client_id=f"{s.instance}.claim", username=s.username, password=s.password,
            protocol=s.protocol, transport=s.transport, persistent=True, session_expiry_s=CLAIM_SESSION_S,
            manual_ack=True, observe_only=True, name=f"{s.instance}.claim",
            connect_timeout_s=CLAIM_CONNECT_S,
        )  # fmt: skip
        probe = self._bus_factory(options)
        async with probe:
            await probe.subscribe(topic, 1)
            try:
                return await self._judge_holder(probe, topic)
            finally:
                await probe.unsubscribe(topic)

    async def _judge_holder(self, probe: Bus, topic: str) -> str:
        """The protocol the broker speaks, once nobody running holds the id (else raises InstanceTaken)."""
        s = self.settings
        seen: list[Message] = []
        deadline = time.monotonic() + CLAIM_RETAINED_S
        while not any(m.topic == topic for m in seen) and (left := deadline - time.monotonic()) > 0:
            seen += await probe.next_batch(100, timeout=left)  # (the agent's queued events, too: left unacked)
        holder = _holder(seen, topic)
        here = _running_here(holder) if holder is not None else None
        if holder is None or here is False:
            return probe.protocol
        wait_s = 1.5 * probe.options.keepalive_s + 2
        if here is None:
            self.log.warning("instance_held", instance=s.instance, host=holder.host, pid=holder.pid, wait_s=wait_s)
        deadline = time.monotonic() + wait_s
        while here is None and (left := deadline - time.monotonic()) > 0:  # elsewhere: its Will may come
            batch = await probe.next_batch(100, timeout=left)
            if any(m.topic == topic for m in batch) and _holder(batch, topic) is None:
                return probe.protocol  # its Will (or a clean stop) came: free
        where = f"pid {holder.pid} on host {holder.host}" if holder.host else "an agent of an older version"
        raise InstanceTaken(
            f"agent instance id {s.instance!r} is held by a running agent ({where}; its retained state on {topic} "
            f"says online). Stop that agent, or start this one with another --instance."
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        for call in self._llm_calls:  # their utterances are not acked: the broker delivers them again
            call.cancel()
        if self._llm_calls:
            await asyncio.gather(*self._llm_calls, return_exceptions=True)
        with contextlib.suppress(ValueError):  # not registered: __aenter__ failed before
            gc.callbacks.remove(self._gc_clock)
        if self._store is not None and not self._failed:
            with contextlib.suppress(Exception):
                await self._mark_acked()
                await self._save_core()
        try:
            if self._bus is not None:
                await self._bus.__aexit__(exc_type, exc, tb)
        finally:  # close the store even when the bus fails to close (its thread would keep the process alive)
            if self._store is not None:
                await self._store.__aexit__(exc_type, exc, tb)

    async def run(self) -> None:
        """Run until cancelled; a failure of the pump ends the process (deployment restarts it).

        Raises:
            StoreFailed: the store failed for good (disk full, read-only, corrupt); the pump has stopped, so
                nothing more is acknowledged, and the process should end with ``agent.failfast.EXIT_STORE``.
        """
        assert self._pump is not None  # noqa: S101
        try:
            await self._pump
        except StoreError as exc:
            condition = unrecoverable(exc)
            if condition is None:
                raise
            self._failed = condition
            self.log.error("store_failed", condition=condition, error=str(exc)[:300])  # noqa: TRY400 (one line)
            raise StoreFailed(condition, str(exc)[:300]) from exc

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the agent's bus is connected."""
        await self.bus.wait_connected(timeout)

    # ------------------------------------------------------------------ restart

    async def _restore(self) -> None:
        store = self.store
        snap = await store.load_core()
        seq = 0
        marks: dict[str, Mark] = {}
        if snap is not None:
            self.core.restore(snap.state)
            seq, marks = snap.replay_from, snap.marks
        self._replaying = True
        resolved = await store.resolutions() if self.settings.resolver is not None else {}
        try:
            for kind, item, position in await store.since(seq):
                if kind == "tick":  # each user's timers, unless their stored state was written after this tick
                    tick: TickRow = item
                    users = self.core.users if tick.users is None else tick.users
                    due = [u for u in users if u not in marks or not marks[u].covers(kind, position)]
                    self.core.tick(tick.at_ms, due)
                else:
                    row: EventRow = item
                    mark = marks.get(row.user or "")
                    if mark is not None and mark.covers(kind, position):
                        continue  # the user's state was written after this event: it is in there already
                    try:
                        message = codec.decode(
                            row.topic, row.payload, qos=row.qos, retain=row.retain, arrived_ms=row.ts
                        )
                    except ContractError:
                        continue
                    self._note_language(message)
                    if row.id in resolved:
                        self.core.hints[row.id] = _intent(resolved[row.id])
                    self.core.handle(message, row.handled_ms)
                self.stats.replayed += 1
        finally:
            self._replaying = False
        for device, seq in (await store.last_seqs()).items():  # each device's events go on from its last one
            self._order.note(device, seq)
        if snap is not None or self.stats.replayed:
            self.log.info("agent_restored", snapshot=snap is not None, replayed=self.stats.replayed)

    async def _republish_stored(self) -> None:
        pending = await self.store.unpublished()
        if not pending:
            return
        for _, topic, payload in pending:
            await self.bus.publish_raw(Outgoing(topic, payload, 1), wait=True)
        await self.store.mark_published([p[0] for p in pending], wall_ms())
        self.stats.republished += len(pending)
        self.log.info("actions_republished", count=len(pending))

    # ------------------------------------------------------------------ the pump

    async def _run_pump(self) -> None:
        bus = self.bus
        s = self.settings
        republished = False
        while True:
            if not bus.connected:
                await bus.wait_connected(None)
            await self._mark_acked()
            if self._republish:
                self._republish, republished = False, False
            if not republished:
                try:
                    await self._republish_stored()
                    republished = True
                except (BusConnectionError, PublishError) as exc:
                    # The link dropped again: still unpublished, so they go out after the next connect.
                    self.log.warning("republish_interrupted", error=str(exc))
                    await asyncio.sleep(s.tick_s)
                    continue
            ticking = self._tick_pos < len(self._tick_users)
            backlog = ticking or self._round is not None
            backlog = backlog or bool(self._context_due and self._context_due[0][0] <= time.monotonic())
            # Up to two batches from the bus (the receive maximum), a fair batch of them handled: one user's
            # backlog does not fill the batch while others wait (agent.fairness).
            fair = self._fair
            if backlog or fair:
                batch = await bus.next_batch(2 * s.batch, timeout=0.0)
            else:
                batch = await bus.next_batch(
                    2 * s.batch, timeout=s.tick_s, linger=s.linger_s, urgent=_interactive, enough=LINGER_ENOUGH
                )
            if fair or len(batch) > s.batch:
                fair.add(batch)
                batch = fair.take(s.batch)
            mono = time.monotonic()
            turn = _Turn(len(batch), self._gc_clock)
            if not ticking and mono - self._last_tick >= s.tick_s:
                self._last_tick = mono
                self._tick_users, self._tick_pos = self.core.users, 0
                if mono - self._last_liveness >= LIVENESS_SCAN_S:  # one pass over every device: not every tick
                    self._last_liveness = mono
                    batch += self._silent_devices()
            batch = self._in_order(batch, mono)
            if batch or self._late or self._tick_pos < len(self._tick_users):
                try:
                    await self._process_guarded(batch, turn)
                except (BusConnectionError, PublishError) as exc:
                    # Stored but not all published: they go out after the reconnect (unpublished rows).
                    self.log.warning("publish_interrupted", error=str(exc))
                    republished = False
            if self._round is None and mono - self._last_snapshot >= self._snapshot_every:
                self._last_snapshot = mono
                self._round = _Round(self.core.take_changed())
            if self._round is not None:
                turn.snapshot_users = await self._snapshot_slice(self._round)
                turn.lap("snapshot")
            self._flush_rate_counts(mono)
            turn.contexts = await self._publish_contexts()
            turn.lap("contexts")
            if mono >= self._next_prune:
                self._next_prune = mono + PRUNE_EVERY_S
                now_wall = wall_ms()
                pruned = await self.store.prune_health(
                    now_wall - int(s.health_retention_s * 1000),
                    hourly_before_ms=now_wall - int(s.health_hourly_retention_s * 1000),
                )
                if pruned:
                    self._next_prune = mono  # more may be due: the next turn goes on
                    self.log.info("health_pruned", rows=pruned)
            if s.slow_turn_ms and turn.total_ms() > s.slow_turn_ms:
                self.log.warning("pump_turn_slow", **turn.report())

    def _tick_slice(self, outcome: Outcome) -> list[TickRow]:
        """Tick the next :data:`TICK_SLICE` users of this round; the tick to store if it changed anything."""
        users = self._tick_users[self._tick_pos : self._tick_pos + TICK_SLICE]
        self._tick_pos += len(users)
        at = self.clock.now_ms()
        ticked = self.core.tick(at, users)
        outcome.extend(ticked)
        # Stored with the users whose timers did something, so a replay fires the same ones at the same time (a
        # tick that only cleared a timer or refreshed a flag fires again on the restored state: the same result).
        changed = {c.device.user for c in ticked.commands} | {t.user for t in ticked.tasks}
        changed.update(dev.user for dev, _ in ticked.desired)  # settings published again
        changed.update(user for _, user, _ in ticked.alerts)
        return [TickRow(at, tuple(sorted(changed)))] if changed else []

    async def _process(self, batch: list[Message], turn: _Turn | None = None) -> None:
        """One pump turn's work: the batch and the next slice of timers, each published, then stored, then acked.

        Somebody waiting for an answer goes first: their messages are checked, stored and answered in a transaction
        of their own, before the timers' slice and the rest of the batch (which follow in a second one, the ticks
        stored after the first's events, as they ran).
        """
        if self._late:  # the LLM resolver answered: these go first, as the answers they are
            await self._settle_late()
            if turn is not None:
                turn.lap("late")
        first, rest = _answer_first(batch)
        if first:
            await self._settle(await self._admit(first), Outcome(), [])
            if turn is not None:
                turn.lap("answer")
        outcome = Outcome()
        ticks = self._tick_slice(outcome) if self._tick_pos < len(self._tick_users) else []
        if turn is not None:
            turn.lap("tick")
        if rest or ticks or outcome.context_changed:  # not for timers that did nothing
            await self._settle(await self._admit(rest), outcome, ticks)
            if turn is not None:
                turn.lap("process")
        ack = self.bus.ack
        held = self._held
        for message in batch:  # once all of it is stored (a crash before this: the broker delivers it again)
            if message.envelope.id not in held:  # one waiting for the LLM is acked once it is handled and stored
                ack(message)

    async def _process_guarded(self, batch: list[Message], turn: _Turn) -> None:
        """:meth:`_process`, counting an attempt for the messages in hand when it fails (and the process ends).

        Messages that were in such a batch before are handled one at a time first, so only the one that fails
        again gains attempts; past ``max_attempts`` :meth:`_admit` parks it. A store that failed for good, or was
        only busy, is not the messages' fault: it counts nothing.
        """
        attempts = self._attempts
        if attempts is None:
            await self._process(batch, turn)
            return
        current = batch
        try:
            if len(attempts):
                suspects = [m for m in batch if attempts.suspect(m.envelope.id)]
                if suspects:
                    rest = [m for m in batch if not attempts.suspect(m.envelope.id)]
                    for message in suspects:
                        current = [message]
                        await self._process(current)
                        attempts.settled([message.envelope.id])
                    current = batch = rest
            await self._process(batch, turn)
        except (BusConnectionError, PublishError):
            raise
        except Exception as exc:
            if blames_the_messages(exc):
                attempts.failed(m.envelope.id for m in current)
            raise
        if len(attempts):
            attempts.settled(m.envelope.id for m in batch)

    async def _admit(self, batch: list[Message]) -> list[Message]:
        """The messages of ``batch`` to handle: not seen before (by envelope id, the contract's dedup key), for our
        users, within the limits."""
        users = self.settings.users
        stats = self.stats
        keys = [m.envelope.id for m in batch]
        known = await self.store.known(keys) if batch else set()
        fresh: list[Message] = []
        seen: set[str] = set()
        check = self.admission.check
        arrived = self.clock.now_ms()
        clock = self.clock
        judge = clock.judge_ms if isinstance(clock, SimClock) and clock.wall_after_ms is not None else None
        mono = time.monotonic()
        for message, key in zip(batch, keys, strict=True):
            self._observe(message, mono)
            self._note_language(message)
            if key in known or key in seen:
                stats.duplicates += 1
                continue
            if users is not None and message.where.user not in users:
                continue
            if message.retain and message.where.channel is Channel.EVENT and self.bus.protocol == "5":
                # (not on MQTT 3.1.1: amqtt sets the retain flag on a persistent session's queued messages)
                self._retained_event(message)
                continue
            attempts = self._attempts
            if attempts is not None and attempts.exhausted(message.envelope.id):
                n = attempts.count(message.envelope.id)
                self._refuse(message, "parked", f"the agent failed {n} times while handling it; parked, not retried")
                attempts.settled([message.envelope.id])
                continue
            refusal = check(message, arrived if judge is None else judge(message.envelope.ts))
            if refusal is not None:
                self._refuse(message, refusal[0], refusal[1] + self._clock_hint(refusal[0]))
                continue
            seen.add(key)
            fresh.append(message)
        return fresh

    async def _settle(
        self,
        fresh: list[Message],
        outcome: Outcome,
        ticks: list[TickRow],
        resolutions: list[tuple[str, str]] | None = None,
        *,
        hold: bool = True,
    ) -> None:
        """Handle new messages, publish the actions they caused, then store both in one transaction."""
        store = self.store
        stats = self.stats
        now = self.clock.now_ms()
        received = wall_ms()
        rows: list[EventRow] = []
        acks: list[tuple[str, str, str, int]] = []
        if hold:
            fresh = self._hold_for_llm(fresh)
        handle = self.core.handle
        for message in fresh:
            try:
                handled = handle(message, now)
                row = _event_row(message, now, received)
                if holds_health(message.data) and not self.core.consents(row.user or "", PROACTIVE_HEALTH):
                    row = row._replace(payload=codec.redact_bytes(message.topic, row.payload))  # no raw sample kept
            except Exception as exc:  # noqa: BLE001  (a message that breaks the agent must not stop it: it would come back for ever)
                if self._failure_log.allow():  # one line, no traceback (its frames hold the payload), a few a second
                    self.log.warning(
                        "message_failed", topic=message.topic, id=message.envelope.id, error=type(exc).__name__,
                        suppressed=self._failure_log.take_suppressed(),
                    )  # fmt: skip
                self._refuse(message, "agent", f"the agent could not handle it: {type(exc).__name__}: {exc}")
                continue
            outcome.extend(handled)
            rows.append(row)
            if message.where.channel is Channel.ACK:
                ack = message.data
                if isinstance(ack, Ack):
                    acks.append((ack.action_id, ack.status, ack.detail, now))
        created = wall_ms()
        actions = [self._action_row(cmd, now, created) for cmd in outcome.commands]
        tasks = outcome.tasks  # the core's records, copied when they were made
        alerts = [(rule, user, text, now) for rule, user, text in outcome.alerts]
        # Published before they are stored: the answer does not wait for the commit. Action ids are deterministic
        # (the causing event's id and the action's place in the outcome) and devices ignore an id they carried out,
        # and the events that caused them are acknowledged only after the commit (in _process): a crash between the
        # publish and the commit redelivers the events, the core makes the same actions with the same ids, and a
        # device absorbs the repeat. Nothing acknowledged is lost; nothing is carried out twice.
        unsent: BusConnectionError | PublishError | None = None
        try:
            await self._publish_actions(actions, outcome, now)
        except (BusConnectionError, PublishError) as exc:
            unsent = exc  # stored below all the same: unpublished rows go out after the reconnect
        try:
            await store.commit_batch(rows, actions, tasks, alerts, ticks, resolutions or [])
        finally:
            # The devices' acks of earlier actions: recorded after the publishes (they do not delay the actions),
            # even when publishing failed (the ack messages are stored, so a redelivery would be a duplicate).
            await store.mark_acks(acks)
        if unsent is not None:
            self._republish = True
            raise unsent
        stats.processed += len(fresh)
        stats.batches += 1
        stats.alerts += len(alerts)
        for rule, user, text in outcome.alerts:
            self.log.info("proactive_alert", rule=rule, user=user, chars=len(text))  # the text may quote a vital
        self._note_contexts(outcome.context_changed)
        if actions:
            stats.actions += len(actions)
            for cmd in outcome.commands:
                self.log.info(
                    "action_published", action=cmd.body.type, device=cmd.device.client_id,  # type: ignore[attr-defined]
                    corr=cmd.corr, reason=cmd.reason,
                )  # fmt: skip

    # ------------------------------------------------------------------ per-device order

    def _in_order(self, batch: list[Message], mono: float) -> list[Message]:
        """The messages to handle now: each device's events in ``seq`` order (one whose predecessor is missing waits
        for it at most ``order_wait_s``, unacknowledged, then the gap is logged); anything else as it came."""
        gate = self._order
        gaps = gate.stats.gaps
        now = round(mono * 1000)
        out: list[Message] = []
        for message in batch:
            where = message.where
            if where.user is None or where.kind is None or where.device is None:
                out.append(message)
                continue
            key = (where.user, where.kind._value_, where.device)
            seq = message.envelope.seq
            if where.channel is Channel.EVENT and seq > 0:
                out += gate.offer(key, seq, message, now)
                continue
            body = message.data
            if where.channel is Channel.STATE and isinstance(body, DeviceState):
                out += gate.epoch(key, body.epoch)  # a restarted device: what it held goes first, seq restarts
            out.append(message)
        out += gate.due(now)
        if gate.stats.gaps != gaps:
            for gap in list(gate.recent_gaps)[gaps - gate.stats.gaps :]:
                self.log.warning("order_gap", device="/".join(gap.key), after=gap.after, resumed=gap.resumed,
                                 missing=gap.missing, waited_ms=gap.waited_ms)  # fmt: skip
            self.stats.order_gaps = gate.stats.gaps
        return out

    async def _publish_actions(self, actions: list[ActionRow], outcome: Outcome, now: int) -> None:
        """Hand the actions (and the settings the user asked for) to the bus without waiting for their PUBACKs (a
        PUBACK marks its row published).

        Behind a deep backlog the PUBACK queues behind everything the broker has already sent us, and a pump waiting
        for it would stall; one that never comes is published again from its stored row after a reconnect or a
        restart.
        """
        bus = self.bus
        for action in actions:
            out = Outgoing(action.topic, action.payload, 1)
            try:
                fut = bus.publish_future(out)
            except PublishError:
                await bus.publish_raw(out, wait=True)  # the transport's queue is full: wait for room
                self._acked.append(action.id)
                continue
            fut.add_done_callback(functools.partial(self._on_puback, action.id))
        for dev, desired in outcome.desired:  # settings the user asked for: retained, the device applies them
            raw = codec.encode(make(desired, ts=now))
            bus.publish_future(Outgoing(desired_topic(dev), raw, 1, True))
            self.log.info("settings_desired", device=dev.client_id, version=desired.version)
        if actions or outcome.desired:
            bus.flush()  # on the wire now, not after the rest of this pump turn

    # ------------------------------------------------------------------ liveness (heartbeats)

    def _observe(self, message: Message, mono: float) -> None:
        """Note that a device spoke at ``mono`` (any message proves it is alive, even a duplicate or a refused one)."""
        where = message.where
        s = self.settings
        if where.user is None or where.kind is None or where.device is None or s.heartbeat_misses <= 0:
            return
        if s.users is not None and where.user not in s.users:
            return
        key = (where.user, where.kind._value_, where.device)  # _value_: a plain attribute, not enum's property
        body = message.data
        if where.channel is Channel.STATE and isinstance(body, DeviceState):
            if body.online and body.heartbeat_s:
                self._liveness[key] = [body.heartbeat_s, mono]
            else:
                self._liveness.pop(key, None)
        elif key in self._liveness:
            self._liveness[key][1] = mono

    def _note_language(self, message: Message) -> None:
        """Answer a device in the language it speaks: JSON once its birth, an event or an ack came as JSON (or its
        birth's ``encoding`` says so); msgpack again when it speaks msgpack, unless its birth asked for JSON."""
        where = message.where
        if where.user is None or where.kind is None or where.device is None:
            return
        key = (where.user, where.kind._value_, where.device)
        body = message.data
        if where.channel is Channel.STATE and isinstance(body, DeviceState):
            if not body.online:
                return  # a Will says nothing of the device's language (the broker sends what it was given)
            self._msgpack_pinned.discard(key)
            self._json_devices.pop(key, None)
            if body.encoding == "msgpack":
                self._msgpack_pinned.add(key)
            elif body.encoding == "json":
                self._json_devices[key] = True
            elif message.json:
                self._json_devices[key] = False
            return
        if key in self._msgpack_pinned or self._json_devices.get(key):
            return
        if message.json:
            self._json_devices[key] = False
        else:
            self._json_devices.pop(key, None)

    def _silent_devices(self) -> list[Message]:
        """Offline states for devices that missed ``heartbeat_misses`` heartbeats, as if their Will had come.

        They go through the pump like any message (stored, so a restart replays them). While the agent itself was
        disconnected it heard nobody, so every clock restarts at a reconnect.
        """
        bus = self.bus
        mono = time.monotonic()
        if bus.stats.connects != self._connects_seen:
            self._connects_seen = bus.stats.connects
            for alive in self._liveness.values():
                alive[1] = mono
        if not self._liveness or not bus.connected:
            return []
        misses = self.settings.heartbeat_misses
        out: list[Message] = []
        for key, (every_s, last) in list(self._liveness.items()):
            if mono - last <= misses * every_s:
                continue
            del self._liveness[key]
            user, kind, device = key
            topic = state_topic(DeviceId(user, Kind(kind), device))
            body = DeviceState(online=False, kind=Kind(kind))
            envelope = envelope_of(DeviceState)(id=f"silent-{new_id()}", ts=self.clock.now_ms(), data=body)
            out.append(Message(topic, parse(topic), envelope, qos=1))
            self.stats.silent += 1
            self.log.warning("device_silent", device=f"{user}/{kind}/{device}", silent_s=round(mono - last, 1))
        return out

    def _hold_for_llm(self, fresh: list[Message]) -> list[Message]:
        """Take out the final utterances the built-in parser does not understand, and ask the optional LLM resolver
        about them off the pump: other users' turns and alerts go on while it thinks (up to its timeout). Each is
        handled, stored and acked when the answer (or its absence) comes, in a later pump turn (_settle_late)."""
        resolver = self.settings.resolver
        if resolver is None or self._replaying:
            return fresh
        out: list[Message] = []
        for message in fresh:
            body = message.data
            key = message.envelope.id
            if (
                not isinstance(body, Utterance)
                or not body.final
                or key in self.core.hints
                or not isinstance(parse_text(body.text, body.lang), Unknown)
            ):
                out.append(message)
                continue
            if key in self._held:
                continue  # delivered again while its first copy waits for the resolver
            self._held[key] = message
            call = asyncio.create_task(self._ask_llm(resolver, message), name=f"llm[{key}]")
            self._llm_calls.add(call)
            call.add_done_callback(self._llm_calls.discard)
        return out

    async def _ask_llm(self, resolver: ChatResolver, message: Message) -> None:
        body = message.data
        assert isinstance(body, Utterance)  # noqa: S101 (only utterances are held)
        intent = await resolver.resolve(body.text, body.lang)  # None on any failure; never raises but cancel
        self._late.append((message, intent))

    async def _settle_late(self) -> None:
        """Handle the utterances whose LLM answer came, with the intent as the core's hint; store the intent with
        them (a replay gives the core the same hint), then ack them."""
        late, self._late = self._late, []
        messages: list[Message] = []
        resolutions: list[tuple[str, str]] = []
        for message, intent in late:
            key = message.envelope.id
            messages.append(message)
            if intent is None:
                continue
            self.core.hints[key] = intent
            data = {"skill": intent.skill.value, "slots": dict(intent.slots), "lang": intent.lang, "text": intent.text}
            resolutions.append((key, json.dumps(data, ensure_ascii=False)))
            self.log.info("llm_resolved", skill=intent.skill.value, slots=dict(intent.slots))
        try:
            await self._settle(messages, Outcome(), [], resolutions, hold=False)
        finally:
            for message in messages:
                self._held.pop(message.envelope.id, None)
        for message in messages:  # stored: acked (a failure above leaves them to the broker's redelivery)
            self.bus.ack(message)
        self.stats.llm_late += len(messages)

    def _on_puback(self, action_id: str, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._acked.append(action_id)
        else:
            self._republish = True  # not acknowledged: publish the stored row again once reconnected

    async def _mark_acked(self) -> None:
        if self._acked:
            ids, self._acked = self._acked, []
            await self.store.mark_published(ids, wall_ms())

    def _action_row(self, cmd: Command, now: int, created_wall: int) -> ActionRow:
        body = cmd.body
        action_type: str = body.type  # type: ignore[attr-defined]
        envelope: Envelope[Any] = envelope_of(type(body))(id=cmd.id, ts=now, corr=cmd.corr, data=body)
        dev = cmd.device
        return ActionRow(
            id=cmd.id,
            topic=command_topic(dev, action_type),
            user=dev.user,
            kind=dev.kind.value,
            device=dev.device,
            type=action_type,
            corr=cmd.corr,
            reason=cmd.reason,
            created_ms=now,
            created_wall_ms=created_wall,
            payload=codec.encode(envelope, "json" if (dev.user, dev.kind._value_, dev.device) in self._json_devices
                                 else "msgpack"),
        )  # fmt: skip

    def _clock_hint(self, reason: str) -> str:
        """Why a timestamp may be off: the agent plays a scenario on simulated time (said in the refusal)."""
        clock = self.clock
        if reason not in {"future", "stale"} or not isinstance(clock, SimClock) or clock.speed == 1.0:
            return ""
        now = datetime.fromtimestamp(clock.now_ms() / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        hint = f"; the agent is on a scenario's simulated clock (now {now}, x{clock.speed:g})"
        if clock.switch_wall_ms is not None:
            switch = datetime.fromtimestamp(clock.switch_wall_ms / 1000, UTC).strftime("%H:%M:%S UTC")
            return hint + f" until the scenario ends at {switch} wall time, then on the wall clock: send again then"
        return hint + " (wearbus up --forever switches to the wall clock when the scenario ends)"

    def _retained_event(self, message: Message) -> None:
        """A retained event (Mosquitto's ACL cannot refuse the retain flag): dead-lettered the first time only;
        it comes again at every subscribe and is acknowledged silently then, also after a restart."""
        seen = self._seen_retained
        key = retained_digest(message.topic, message.raw or codec.encode(message.envelope))
        if seen is not None and key in seen:
            return
        if seen is not None:
            seen.add(key)
        self._refuse(message, "retained", "events are never retained: it would be handled again at every start")

    def _refuse(self, message: Message, reason: str, why: str) -> None:
        self.stats.refused += 1
        if self.stats.refused in {1, 10, 100} or self.stats.refused % 1000 == 0:
            self.log.warning("message_refused", topic=message.topic, reason=reason, why=why, total=self.stats.refused)
        if reason == "rate":  # a flood: sampled, not mirrored one to one (the DLQ would flood the agent's link)
            where = message.where
            if not self._rate_letters.allow((where.user, where.kind, where.device)):
                self.stats.sampled_out += 1
                waiting = self._rate_unlettered
                waiting[message.topic] = waiting.get(message.topic, 0) + 1  # summed by _flush_rate_counts
                return
        error = ValidationFailed(why, topic=message.topic)
        error.reason = reason
        try:
            raw = codec.encode(message.envelope)
        except (OverflowError, TypeError, ValueError):  # what cannot be re-encoded is shown as text
            raw = repr(message.envelope).encode()
        with contextlib.suppress(BusConnectionError, PublishError):
            self.bus.dead_letter(message.topic, raw, error, seen_by=self.settings.instance)

    def _flush_rate_counts(self, mono: float) -> None:
        """Once a second: one dead letter per topic standing for the refusals for rate not dead-lettered one by one
        (``count``), so the DLQ still accounts for every message."""
        if not self._rate_unlettered or mono - self._rate_flushed < 1.0 or not self.bus.connected:
            return
        self._rate_flushed = mono
        waiting, self._rate_unlettered = self._rate_unlettered, {}
        for topic, count in waiting.items():
            letter = DeadLetter(
                reason="rate", topic=topic, size=0, count=count, seen_by=self.settings.instance,
                error=f"{count} more messages refused for rate: sampled, not dead-lettered one by one",
            )  # fmt: skip
            with contextlib.suppress(BusConnectionError, PublishError):
                self.bus.publish_unconfirmed(Outgoing(dlq_topic("rate"), codec.encode(make(letter, ts=now_ms())), 1))

    async def _snapshot_slice(self, snap: _Round) -> int:
        """Write the next slice of the snapshot round; at its end, plan the next round. How many users it wrote.

        A user's state takes ~0.1-0.4 ms to write and thousands may have changed: a round written at once held the
        event loop for hundreds of ms. The store keeps how far each user's row goes, so a restart replays into each
        user only what their row does not include.
        """
        started = time.perf_counter()
        store = self.store
        size = self._snapshot_pace.size() if store.sliced_snapshots else len(snap.users)
        users = snap.users[snap.pos : snap.pos + size]
        snap.pos += len(users)
        done = snap.pos >= len(snap.users)
        mark = await store.save_core(
            self.core.export_users(users), self.clock.now_ms(), wall_ms(), round_start=snap.start, complete=done
        )
        snap.start = snap.start or mark
        took = time.perf_counter() - started
        snap.spent += took
        self._snapshot_pace.record(len(users), took)
        if done:
            self._round = None
            # keep snapshots under ~4 % of the time: thousands of busy users snapshot less often
            self._snapshot_every = max(self.settings.snapshot_s, 25 * snap.spent)
        return len(users)

    async def _save_core(self) -> int:
        """Write the snapshot round in progress and every other changed user at once (at shutdown); how many."""
        snap = self._round or _Round([])
        self._round = None
        users = [*snap.users[snap.pos :], *self.core.take_changed()]
        await self.store.save_core(
            self.core.export_users(users), self.clock.now_ms(), wall_ms(), round_start=snap.start, complete=True
        )
        return len(users)

    def _note_contexts(self, changed: set[str]) -> None:
        """Users whose context changed: due for a republish ``context_s`` after their last one."""
        dirty = self._dirty_users
        every = self.settings.context_s
        for user in changed:
            if user not in dirty:
                dirty.add(user)
                last = self._last_context.get(user)  # never published: due at once
                heapq.heappush(self._context_due, (-math.inf if last is None else last + every, user))

    async def _publish_contexts(self) -> int:
        """Republish the retained context of the users due (changed, and not republished for ``context_s``)."""
        due_heap = self._context_due
        if not due_heap or not self.bus.connected:
            return 0
        mono = time.monotonic()
        if due_heap[0][0] > mono:  # nobody is due yet: no scan of every changed user on each pump turn
            return 0
        due: list[str] = []
        while due_heap and due_heap[0][0] <= mono and len(due) < CONTEXT_SLICE:  # the others in the next turns
            due.append(heapq.heappop(due_heap)[1])
        now = self.clock.now_ms()
        saved: list[tuple[str, str, int]] = []
        for user in due:
            self._dirty_users.discard(user)
            self._last_context[user] = mono
            snapshot: ContextSnapshot = self.core.snapshot(user)
            public, health = split_health(snapshot)  # health values only where the ACL lets the user's app read
            with contextlib.suppress(BusConnectionError, PublishError):
                await self.bus.publish_raw(Outgoing(context_topic(user), codec.encode(make(public, ts=now)), 1, True))
                await self.bus.publish_raw(Outgoing(health_topic(user), codec.encode(make(health, ts=now)), 1, True))
                consent = codec.encode(make(self.core.consent(user), ts=now))
                await self.bus.publish_raw(Outgoing(consent_topic(user), consent, 1, True))
            saved.append((user, snapshot.model_dump_json(), now))  # pydantic's own JSON: a third of json.dumps
        await self.store.save_contexts(saved)
        return len(saved)


#: Seconds to reach the broker for the instance-id check, and to wait for the retained agent state after it.
CLAIM_CONNECT_S = 10.0
CLAIM_RETAINED_S = 1.0
#: Seconds the broker keeps the probe's session (MQTT 5): a leftover one goes soon.
CLAIM_SESSION_S = 60


class InstanceTaken(ConfigError):
    """Another running agent holds this instance id."""


def _holder(batch: list[Message], topic: str) -> AgentState | None:
    """The agent that holds the id, per the last state on ``topic`` in ``batch`` (None: nobody, or offline)."""
    states = [m.data for m in batch if m.topic == topic and isinstance(m.data, AgentState)]
    return states[-1] if states and states[-1].online else None


def _running_here(holder: AgentState) -> bool | None:
    """Whether the holder is a running process of this host (None: it runs elsewhere, or we cannot tell)."""
    if holder.host != socket.gethostname() or holder.pid is None:
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False  # an agent that crashed: no holder
    except PermissionError:
        return True  # another user's process
    return True


#: What a user waits on an answer to (a sentence, a tap, a press, a nod, a ring gesture).
INTERACTIVE = frozenset({
    "voice.utterance", "gesture.head", "glasses.touch", "glasses.button", "glasses.ui_event", "ring.gesture",
    "earphones.touch", "phone.tap",
})  # fmt: skip


def _interactive(message: Message) -> bool:
    """Whether a person is waiting for the answer to this message."""
    return getattr(message.envelope.data, "type", "") in INTERACTIVE


def _answer_first(batch: list[Message]) -> tuple[list[Message], list[Message]]:
    """Split a batch: every message of the users who sent something :data:`INTERACTIVE`, then the others.

    Each user's messages keep their order (the core's decisions for one user depend on it; users are independent).
    Behind a batch of hundreds of sensor samples, the answer to a sentence waits for its own user's messages only.
    """
    waiting = {m.where.user for m in batch if _interactive(m)}
    if not waiting:
        return [], batch
    first: list[Message] = []
    rest: list[Message] = []
    for message in batch:
        (first if message.where.user in waiting else rest).append(message)
    return first, rest


class _Pace:
    """How many items of some work fit a time budget, from the time an item took lately (a moving average)."""

    __slots__ = ("budget_s", "hi", "lo", "per_item_s")

    def __init__(self, budget_s: float, lo: int, hi: int, *, guess_s: float) -> None:
        self.budget_s = budget_s
        self.lo = lo
        self.hi = hi
        self.per_item_s = guess_s

    def size(self) -> int:
        """Items for the next turn: as many as fit the budget, within ``lo`` and ``hi``."""
        return max(self.lo, min(self.hi, int(self.budget_s / self.per_item_s)))

    def record(self, items: int, seconds: float) -> None:
        """``items`` took ``seconds``."""
        if items > 0:
            self.per_item_s += 0.2 * (seconds / items - self.per_item_s)


@dataclass(slots=True)
class _Round:
    """One snapshot round: the users changed when it began, written a slice at a time."""

    users: list[str]
    pos: int = 0
    start: Mark | None = None  # the store's mark when the round began (its first slice)
    spent: float = 0.0  # seconds the round's slices took


class _GcClock:
    """Wall time the process spent in garbage collection, and its full collections (a ``gc.callbacks`` entry)."""

    __slots__ = ("full", "spent_s", "started")

    def __init__(self) -> None:
        self.spent_s = 0.0
        self.full = 0
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        self.spent_s += time.perf_counter() - self.started
        self.full += info.get("generation") == 2


class _Turn:
    """The wall time of the parts of one pump turn, and of the garbage collections in it (for ``pump_turn_slow``)."""

    __slots__ = ("batch", "contexts", "gc", "gc_full", "gc_spent_s", "laps", "mark", "snapshot_users", "start")

    def __init__(self, batch: int, gc_clock: _GcClock) -> None:
        self.batch = batch
        self.start = self.mark = time.perf_counter()
        self.laps: dict[str, float] = {}
        self.snapshot_users = 0
        self.contexts = 0
        self.gc = gc_clock
        self.gc_spent_s, self.gc_full = gc_clock.spent_s, gc_clock.full

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.laps[part] = (now - self.mark) * 1000
        self.mark = now

    def total_ms(self) -> float:
        return (self.mark - self.start) * 1000

    def report(self) -> dict[str, Any]:
        parts = {f"{part}_ms": round(ms, 1) for part, ms in self.laps.items()}
        gc_ms = round((self.gc.spent_s - self.gc_spent_s) * 1000, 1)
        return {"total_ms": round(self.total_ms(), 1), "batch": self.batch, "snapshot_users": self.snapshot_users,
                "contexts": self.contexts, **parts, "gc_ms": gc_ms, "gc_full": self.gc.full - self.gc_full}  # fmt: skip


def _intent(raw: str) -> Intent:
    data = json.loads(raw)
    return Intent(skill=Skill(data["skill"]), slots=data["slots"], lang=data["lang"], text=data["text"])


# The first bytes of an envelope that ``codec.decode`` without a content type reads back as what it was: JSON (an
# object, maybe after white space) or a msgpack map (fixmap, map16, map32). Anything else (JSON with a byte order
# mark or in UTF-16, accepted because its MQTT 5 content type said JSON) is stored re-encoded, so that a replay
# after a restart can always decode what was stored.
_SELF_DESCRIBING = frozenset(b"{ \t\r\n") | frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


def _stored_payload(message: Message) -> bytes:
    """The bytes to store for a message: as they came off the wire, else the envelope encoded again."""
    raw = message.raw
    if raw and raw[0] in _SELF_DESCRIBING:
        return raw
    return codec.encode(message.envelope)  # made in process (silent devices), or not self-describing


def _event_row(message: Message, handled_ms: int, received_wall: int) -> EventRow:
    env = message.envelope
    where = message.where
    kind = where.kind
    return EventRow(
        env.id,
        message.topic,
        where.user,
        kind._value_ if kind else None,  # _value_ (a plain attribute) rather than enum's slower property
        where.device,
        where.channel._value_,
        getattr(env.data, "type", ""),
        env.ts,
        env.src_ts,
        env.seq,
        env.corr,
        handled_ms,
        received_wall,
        message.qos,
        message.retain,
        _stored_payload(message),
    )
