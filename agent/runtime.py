"""The agent's thin runtime: subscribe, decode, deduplicate, admit, fuse, store, publish, acknowledge.

One pump task does everything in order, so the core never runs concurrently with itself:

1. take what has arrived (up to a batch) from the bus, or wait at most one tick interval;
2. drop envelope ids already processed (the store's ``events`` table is the dedup set) and refuse what fails
   admission (timestamps, per-device rate) to the DLQ;
3. hand each new message to the core with the simulated time; let timers fire (``tick``);
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
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.admission import Admission, AdmissionConfig
from agent.core.api import Command, Outcome
from agent.core.config import CoreConfig
from agent.core.engine import AgentCore
from agent.store import ActionRow, EventRow, Store, TaskRow
from broker.client import Bus, BusOptions, Outgoing
from broker.logs import get_logger
from schemas import codec
from schemas.actions import Ack, AgentState, ContextSnapshot
from schemas.clock import Clock, WallClock
from schemas.envelope import Envelope, Message, envelope_of, make, now_ms
from schemas.errors import BusConnectionError, ContractError, PublishError, ValidationFailed
from schemas.topics import Channel, agent_state_topic, command_topic, context_topic, dlq_topic

VERSION = "0.1.0"


def wall_ms() -> int:
    """Wall-clock ms (for latency accounting only)."""
    return time.time_ns() // 1_000_000


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
        core: the core's thresholds and user profiles.
        admission: limits on timestamps and rates.
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
    core: CoreConfig = field(default_factory=CoreConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


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


class AgentRuntime:
    """The agent process's body. ``async with AgentRuntime(settings) as agent: await agent.run()``."""

    def __init__(self, settings: AgentSettings, clock: Clock | None = None, core: AgentCore | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or WallClock()
        self.core = core or AgentCore(settings.core)
        self.admission = Admission(settings.admission)
        self.stats = AgentStats()
        self.log = get_logger("agent", instance=settings.instance)
        self._store: Store | None = None
        self._bus: Bus | None = None
        self._dirty_users: set[str] = set()
        self._last_context: dict[str, float] = {}
        self._last_snapshot = 0.0
        self._last_tick = 0.0
        self._pump: asyncio.Task[None] | None = None
        self._replaying = False

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
        self._store = await Store(s.db).__aenter__()
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
            will=Outgoing(state, presence(False), 1, True),
            birth=Outgoing(state, presence(True), 1, True),
            goodbye=Outgoing(state, presence(False), 1, True),
            connect_timeout_s=0,
            name=s.instance,
            receive_maximum=max(100, s.batch * 2),
        )
        self._bus = Bus(options)
        await self._bus.__aenter__()
        for topic_filter in ("wb/v1/+/+/+/evt/#", "wb/v1/+/+/+/ack", "wb/v1/+/+/+/state"):
            await self._bus.subscribe(topic_filter, 1)
        self._pump = asyncio.create_task(self._run_pump(), name=f"agent[{s.instance}].pump")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self._save_core()
        if self._bus is not None:
            await self._bus.__aexit__(exc_type, exc, tb)
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
        if snap is not None:
            state, seq, _ = snap
            self.core.restore(state)
        self._replaying = True
        try:
            for kind, item in await store.since(seq):
                if kind == "tick":
                    self.core.tick(int(item))
                else:
                    row: EventRow = item
                    try:
                        message = codec.decode(row.topic, row.payload, qos=row.qos, retain=row.retain)
                    except ContractError:
                        continue
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
            if not republished:
                await self._republish_stored()
                republished = True
            batch = await bus.next_batch(s.batch, timeout=s.tick_s)
            mono = time.monotonic()
            ticks: list[int] = []
            outcome = Outcome()
            if mono - self._last_tick >= s.tick_s:
                self._last_tick = mono
                at = self.clock.now_ms()
                ticked = self.core.tick(at)
                if ticked.commands or ticked.tasks or ticked.alerts:
                    ticks.append(at)
                outcome.extend(ticked)
            if batch or ticks:
                try:
                    await self._process(batch, outcome, ticks)
                except (BusConnectionError, PublishError) as exc:
                    # Stored but not all published: they go out after the reconnect (unpublished rows).
                    self.log.warning("publish_interrupted", error=str(exc))
                    republished = False
            if mono - self._last_snapshot >= s.snapshot_s:
                self._last_snapshot = mono
                await self._save_core()
            await self._publish_contexts()

    async def _process(self, batch: list[Message], outcome: Outcome, ticks: list[int]) -> None:
        store = self.store
        bus = self.bus
        s = self.settings
        known = await store.known(m.envelope.id for m in batch) if batch else set()
        fresh: list[Message] = []
        seen: set[str] = set()
        for message in batch:
            eid = message.envelope.id
            if eid in known or eid in seen:
                self.stats.duplicates += 1
                continue
            if s.users is not None and message.where.user not in s.users:
                continue
            refusal = self.admission.check(message, self.clock.now_ms())
            if refusal is not None:
                self._refuse(message, *refusal)
                continue
            seen.add(eid)
            fresh.append(message)
        now = self.clock.now_ms()
        received = wall_ms()
        rows: list[EventRow] = []
        acks: list[tuple[str, str, str, int]] = []
        for message in fresh:
            outcome.extend(self.core.handle(message, now))
            rows.append(_event_row(message, now, received))
            if message.where.channel is Channel.ACK and isinstance(message.data, Ack):
                ack = message.data
                acks.append((ack.action_id, ack.status, ack.detail, now))
        created = wall_ms()
        actions = [self._action_row(cmd, now, created) for cmd in outcome.commands]
        tasks = [TaskRow(t.task_id, t.user, t.skill, t.state, dict(t.slots), t.rounds, tuple(t.slots_autofilled),
                         tuple(t.slots_asked), t.confirm_modality, t.created_ms, t.updated_ms)
                 for t in outcome.tasks]  # fmt: skip
        alerts = [(rule, user, text, now) for rule, user, text in outcome.alerts]
        await store.commit_batch(rows, actions, tasks, alerts, ticks)
        await store.mark_acks(acks)
        self.stats.processed += len(fresh)
        self.stats.batches += 1
        self.stats.alerts += len(alerts)
        for rule, user, text in outcome.alerts:
            self.log.info("proactive_alert", rule=rule, user=user, text=text)
        self._dirty_users |= outcome.context_changed
        if actions:
            # A broker acknowledges QoS 1 publishes in order (MQTT 4.6.0-2), so waiting for the last PUBACK
            # waits for them all.
            for i, action in enumerate(actions):
                await bus.publish_raw(Outgoing(action.topic, action.payload, 1), wait=i == len(actions) - 1)
            await store.mark_published([a.id for a in actions], wall_ms())
            self.stats.actions += len(actions)
            for cmd in outcome.commands:
                self.log.info(
                    "action_published", action=cmd.body.type, device=cmd.device.client_id,  # type: ignore[attr-defined]
                    corr=cmd.corr, reason=cmd.reason,
                )  # fmt: skip
        for message in batch:
            bus.ack(message)

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
        letter = codec.dead_letter(message.topic, codec.encode(message.envelope), error, seen_by=self.settings.instance)
        with contextlib.suppress(BusConnectionError, PublishError):
            self.bus._publish_nowait(dlq_topic(reason), codec.encode(make(letter, ts=now_ms())), 1, False)

    async def _save_core(self) -> None:
        await self.store.save_core(self.core.export_state(), self.clock.now_ms(), wall_ms())

    async def _publish_contexts(self) -> None:
        if not self._dirty_users or not self.bus.connected:
            return
        mono = time.monotonic()
        due = [u for u in self._dirty_users if mono - self._last_context.get(u, 0.0) >= self.settings.context_s]
        if not due:
            return
        now = self.clock.now_ms()
        saved: list[tuple[str, str, int]] = []
        for user in due:
            self._dirty_users.discard(user)
            self._last_context[user] = mono
            snapshot: ContextSnapshot = self.core.snapshot(user)
            envelope = make(snapshot, ts=now)
            with contextlib.suppress(BusConnectionError, PublishError):
                await self.bus.publish_raw(Outgoing(context_topic(user), codec.encode(envelope), 1, True))
            saved.append((user, json.dumps(snapshot.model_dump(mode="json"), ensure_ascii=False), now))
        await self.store.save_contexts(saved)


def _event_row(message: Message, handled_ms: int, received_wall: int) -> EventRow:
    env = message.envelope
    where = message.where
    return EventRow(
        id=env.id,
        topic=message.topic,
        user=where.user,
        kind=where.kind.value if where.kind else None,
        device=where.device,
        channel=where.channel.value,
        type=getattr(message.data, "type", ""),
        ts=env.ts,
        src_ts=env.src_ts,
        dev_seq=env.seq,
        corr=env.corr,
        handled_ms=handled_ms,
        received_wall_ms=received_wall,
        qos=message.qos,
        retain=message.retain,
        payload=codec.encode(env),
    )
