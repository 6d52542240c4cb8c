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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.admission import Admission, AdmissionConfig
from agent.core.api import Command, Outcome
from agent.core.config import CoreConfig
from agent.core.engine import AgentCore
from agent.core.intents import Intent, Skill, Unknown
from agent.core.intents import parse as parse_text
from agent.llm import ChatResolver
from agent.store import ActionRow, EventRow, Mark, Store, TickRow
from broker.client import Bus, BusOptions, Outgoing
from broker.logs import get_logger
from schemas import codec
from schemas.actions import Ack, AgentState, ContextSnapshot, DeviceState
from schemas.clock import Clock, WallClock
from schemas.envelope import Envelope, Message, envelope_of, make, new_id, now_ms
from schemas.errors import BusConnectionError, ContractError, PublishError, ValidationFailed
from schemas.events import Utterance
from schemas.topics import (
    AGENT_FILTERS,
    Channel,
    DeviceId,
    Kind,
    agent_state_topic,
    command_topic,
    context_topic,
    dlq_topic,
    parse,
    state_topic,
)

VERSION = "0.1.0"


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
    """

    url: str = "mqtt://127.0.0.1:1883"
    db: Path = Path(".wearbus/agent.db")
    instance: str = "agent-1"
    username: str | None = None
    password: str | None = None
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
        store: Store | None = None,
        bus_factory: Callable[[BusOptions], Bus] = Bus,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or WallClock()
        self.core = core or AgentCore(settings.core)
        self.admission = Admission(settings.admission)
        self.stats = AgentStats()
        self.log = get_logger("agent", instance=settings.instance)
        self._store: Store | None = None
        self._bus: Bus | None = None
        self._given_store = store
        self._bus_factory = bus_factory
        self._dirty_users: set[str] = set()  # context changed, not republished yet
        self._context_due: list[tuple[float, str]] = []  # heap: (monotonic time due, user), one per dirty user
        self._last_context: dict[str, float] = {}
        self._last_snapshot = 0.0
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

    @property
    def store(self) -> Store:
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
        self._store = await (self._given_store or Store(s.db)).__aenter__()
        await self._restore()
        state = agent_state_topic(s.instance)

        def presence(online: bool) -> bytes:
            body = AgentState(
                online=online, instance=s.instance, version=VERSION, users=sorted(s.users) if s.users else None
            )
            return codec.encode(make(body, ts=self.clock.now_ms()))

        options = BusOptions(
            url=s.url,
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
        )
        self._bus = self._bus_factory(options)
        await self._bus.__aenter__()
        for topic_filter in s.subscriptions:
            await self._bus.subscribe(topic_filter, 1)
        gc.callbacks.append(self._gc_clock)
        self._pump = asyncio.create_task(self._run_pump(), name=f"agent[{s.instance}].pump")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        with contextlib.suppress(ValueError):  # not registered: __aenter__ failed before
            gc.callbacks.remove(self._gc_clock)
        if self._store is not None:
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
        """Run until cancelled; a failure of the pump ends the process (deployment restarts it)."""
        assert self._pump is not None  # noqa: S101
        await self._pump

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
                        message = codec.decode(row.topic, row.payload, qos=row.qos, retain=row.retain)
                    except ContractError:
                        continue
                    if row.id in resolved:
                        self.core.hints[row.id] = _intent(resolved[row.id])
                    self.core.handle(message, row.handled_ms)
                self.stats.replayed += 1
        finally:
            self._replaying = False
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
            if backlog:
                batch = await bus.next_batch(s.batch, timeout=0.0)
            else:
                batch = await bus.next_batch(
                    s.batch, timeout=s.tick_s, linger=s.linger_s, urgent=_interactive, enough=LINGER_ENOUGH
                )
            mono = time.monotonic()
            turn = _Turn(len(batch), self._gc_clock)
            if not ticking and mono - self._last_tick >= s.tick_s:
                self._last_tick = mono
                self._tick_users, self._tick_pos = self.core.users, 0
                if mono - self._last_liveness >= LIVENESS_SCAN_S:  # one pass over every device: not every tick
                    self._last_liveness = mono
                    batch += self._silent_devices()
            if batch or self._tick_pos < len(self._tick_users):
                try:
                    await self._process(batch, turn)
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
            turn.contexts = await self._publish_contexts()
            turn.lap("contexts")
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
        changed.update(user for _, user, _ in ticked.alerts)
        return [TickRow(at, tuple(sorted(changed)))] if changed else []

    async def _process(self, batch: list[Message], turn: _Turn | None = None) -> None:
        """One pump turn's work: the batch and the next slice of timers, each published, then stored, then acked.

        Somebody waiting for an answer goes first: their messages are checked, stored and answered in a transaction
        of their own, before the timers' slice and the rest of the batch (which follow in a second one, the ticks
        stored after the first's events, as they ran).
        """
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
        for message in batch:  # once all of it is stored (a crash before this: the broker delivers it again)
            ack(message)

    async def _admit(self, batch: list[Message]) -> list[Message]:
        """The messages of ``batch`` to handle: not seen before (by id and publish time), for our users, within the
        limits."""
        users = self.settings.users
        stats = self.stats
        keys = [(m.envelope.id, m.envelope.ts) for m in batch]
        known = await self.store.known(keys) if batch else set()
        fresh: list[Message] = []
        seen: set[tuple[str, int]] = set()
        check = self.admission.check
        arrived = self.clock.now_ms()
        mono = time.monotonic()
        for message, key in zip(batch, keys, strict=True):
            self._observe(message, mono)
            if key in known or key in seen:
                stats.duplicates += 1
                continue
            if users is not None and message.where.user not in users:
                continue
            refusal = check(message, arrived)
            if refusal is not None:
                self._refuse(message, *refusal)
                continue
            seen.add(key)
            fresh.append(message)
        return fresh

    async def _settle(self, fresh: list[Message], outcome: Outcome, ticks: list[TickRow]) -> None:
        """Handle new messages, publish the actions they caused, then store both in one transaction."""
        store = self.store
        stats = self.stats
        now = self.clock.now_ms()
        received = wall_ms()
        rows: list[EventRow] = []
        acks: list[tuple[str, str, str, int]] = []
        resolutions = await self._resolve(fresh)
        handle = self.core.handle
        for message in fresh:
            try:
                handled = handle(message, now)
                row = _event_row(message, now, received)
            except Exception as exc:  # a message that breaks the agent must not stop it: it would come back for ever
                self.log.exception("message_failed", topic=message.topic, id=message.envelope.id)
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
            await self._publish_actions(actions)
        except (BusConnectionError, PublishError) as exc:
            unsent = exc  # stored below all the same: unpublished rows go out after the reconnect
        try:
            await store.commit_batch(rows, actions, tasks, alerts, ticks, resolutions)
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
            self.log.info("proactive_alert", rule=rule, user=user, text=text)
        self._note_contexts(outcome.context_changed)
        if actions:
            stats.actions += len(actions)
            for cmd in outcome.commands:
                self.log.info(
                    "action_published", action=cmd.body.type, device=cmd.device.client_id,  # type: ignore[attr-defined]
                    corr=cmd.corr, reason=cmd.reason,
                )  # fmt: skip

    async def _publish_actions(self, actions: list[ActionRow]) -> None:
        """Hand the actions to the bus without waiting for their PUBACKs (a PUBACK marks its row published).

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
        if actions:
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

    async def _resolve(self, fresh: list[Message]) -> list[tuple[str, str]]:
        """Ask the optional LLM resolver about final utterances the built-in parser does not understand."""
        resolver = self.settings.resolver
        if resolver is None:
            return []
        out: list[tuple[str, str]] = []
        for message in fresh:
            body = message.data
            if (
                not isinstance(body, Utterance)
                or not body.final
                or not isinstance(parse_text(body.text, body.lang), Unknown)
            ):
                continue
            intent = await resolver.resolve(body.text, body.lang)
            if intent is None:
                continue
            self.core.hints[message.envelope.id] = intent
            data = {"skill": intent.skill.value, "slots": dict(intent.slots), "lang": intent.lang, "text": intent.text}
            out.append((message.envelope.id, json.dumps(data, ensure_ascii=False)))
            self.log.info("llm_resolved", skill=intent.skill.value, slots=dict(intent.slots))
        return out

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
            payload=codec.encode(envelope),
        )

    def _refuse(self, message: Message, reason: str, why: str) -> None:
        self.stats.refused += 1
        if self.stats.refused in {1, 10, 100} or self.stats.refused % 1000 == 0:
            self.log.warning("message_refused", topic=message.topic, reason=reason, why=why, total=self.stats.refused)
        error = ValidationFailed(why, topic=message.topic)
        error.reason = reason
        try:
            raw = codec.encode(message.envelope)
        except (OverflowError, TypeError, ValueError):  # what cannot be re-encoded is shown as text
            raw = repr(message.envelope).encode()
        letter = codec.dead_letter(message.topic, raw, error, seen_by=self.settings.instance)
        with contextlib.suppress(BusConnectionError, PublishError):
            self.bus._publish_nowait(dlq_topic(reason), codec.encode(make(letter, ts=now_ms())), 1, False)

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
            envelope = make(snapshot, ts=now)
            with contextlib.suppress(BusConnectionError, PublishError):
                await self.bus.publish_raw(Outgoing(context_topic(user), codec.encode(envelope), 1, True))
            saved.append((user, snapshot.model_dump_json(), now))  # pydantic's own JSON: a third of json.dumps
        await self.store.save_contexts(saved)
        return len(saved)


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
