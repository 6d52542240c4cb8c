"""The agent's thin runtime: subscribe, decode, deduplicate, admit, fuse, store, publish, acknowledge.

One pump task does everything in order, so the core never runs concurrently with itself:

1. take what has arrived (up to a batch) from the bus, or wait at most one tick interval;
2. drop envelope ids already processed (the store's ``events`` table is the dedup set) and refuse what fails
   admission (timestamps, per-device rate) to the DLQ;
3. let the timers of the next slice of users fire (``tick``: the users with a timer of seconds running once per
   ``tick_s``, every user once per :data:`FULL_TICK_MS`; :data:`TICK_SLICE` users per turn); hand each new
   message to the core with the simulated time;
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
import os
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from agent.admission import Admission
from agent.core.api import Outcome
from agent.core.context import PROACTIVE_HEALTH
from agent.core.engine import AgentCore
from agent.core.fuzzy import warm as warm_parser
from agent.failfast import StoreFailed, blames_the_messages, unrecoverable
from agent.fairness import FairQueue
from agent.ordering import OrderGate
from agent.parking import Attempts, SeenFile
from agent.runtime.claim import claim_instance
from agent.runtime.contexts import Contexts
from agent.runtime.interactive import answer_first, interactive
from agent.runtime.languages import Languages
from agent.runtime.liveness import LIVENESS_SCAN_S, Liveness
from agent.runtime.llm_hold import LlmHold
from agent.runtime.pacing import GcClock, Turn, wall_ms
from agent.runtime.refusals import Refusals, clock_hint
from agent.runtime.rows import action_row, event_row, intent_json, intent_of
from agent.runtime.settings import VERSION, AgentSettings, AgentStats
from agent.runtime.snapshots import Snapshots
from agent.sealing import HealthCipher
from agent.storage import LOG_PRUNE_CHUNK, ActionRow, AgentStore, EventRow, Mark, TickRow
from agent.store import Store
from broker.bus import Bus, BusOptions, MqttProtocol, Outgoing
from broker.connect import open_bus
from broker.logs import get_logger
from broker.ratelog import Sampler
from schemas import codec
from schemas.actions import Ack, AgentState, DeviceState
from schemas.clock import Clock, SimClock, WallClock
from schemas.envelope import Message, make
from schemas.errors import BusConnectionError, ContractError, PublishError, StoreError
from schemas.health import holds_health
from schemas.tasks import TaskScope
from schemas.topics import Channel, DeviceKey, agent_state_topic, desired_topic

#: How often the agent looks for health events and events of the log past their retention times (wall seconds).
PRUNE_EVERY_S = 60.0
#: Users ticked in one pump turn at most. Every user is ticked once per ``tick_s``, in slices: a tick of thousands
#: of users at once held the event loop for tens of ms, five times a second, and every event waited behind it.
TICK_SLICE = 100
#: Agent ms between two rounds that tick every user. The rounds in between (every ``tick_s``) tick only the users
#: with a timer of seconds running (:meth:`AgentCore.timed_users`: an action waiting for its ack, a question, an
#: undo window...); the others' timers (the night's close, leave-now, reminders, the quiet/asleep/moving flags) are
#: minutes apart. At 2,500 users ticking everyone five times a second was ~10 % of a core. Agent time, so a
#: simulated clock that runs faster ticks everyone on every round.
FULL_TICK_MS = 1000
#: Behind a backlog (more than a batch waiting), a round that ticks every user waits this many times
#: :data:`FULL_TICK_MS`: those timers are minutes apart and the events are seconds late anyway, while a round of
#: 2,500 users takes 20-46 ms (8-18 us a user, in process), time the backlog needs. The users with a timer of seconds
#: are still ticked every ``tick_s``.
FULL_TICK_BEHIND = 5
#: Waiting messages that end a linger (``linger_s``): their turn's fixed cost (a dedup query, a transaction) is
#: already spread thin, and behind a backlog a linger for more would leave the pump idle while the broker sends.
LINGER_ENOUGH = 64


class AgentRuntime:
    """The agent process's body. ``async with AgentRuntime(settings) as agent: await agent.run()``.

    ``store`` replaces the SQLite store at ``settings.db`` and ``bus_factory`` the plain :class:`Bus` (both for
    :mod:`agent.cluster`, whose buckets keep their store in Redis and connect to a broker cluster). ``pump=False``
    starts no pump: the caller drives :meth:`process` itself (a benchmark).
    """

    def __init__(
        self,
        settings: AgentSettings,
        clock: Clock | None = None,
        core: AgentCore | None = None,
        *,
        store: AgentStore | None = None,
        bus_factory: Callable[[BusOptions], Bus] = open_bus,
        pump: bool = True,
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
        self._start_pump = pump
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks = TaskScope()  # the pump and the LLM resolver's calls
        self._pump: asyncio.Task[None] | None = None
        self.contexts = Contexts(settings.context_s)
        self.snapshots = Snapshots(settings.snapshot_s)
        self._next_prune = 0.0  # the health retention: first pass at start
        self._last_tick = 0.0
        self._tick_users: list[str] = []  # this round of ticks, ticked TICK_SLICE per pump turn
        self._full_tick_ms = 0  # agent time of the last round that ticked every user
        self._tick_pos = 0
        self._last_liveness = 0.0
        self._replaying = False
        self._deferred = False  # the last turn left its snapshot and context slices to this one (_answer_waits)
        self._acked: list[str] = []  # actions whose PUBACK came, to mark published
        self._republish = False
        self._liveness = Liveness(settings.heartbeat_misses, settings.users)
        self._languages = Languages()
        self._gc_clock = GcClock()
        # Utterances waiting for the LLM resolver, off the pump, and those whose answer came, to handle next turn.
        self._llm = LlmHold(settings.resolver, self._tasks)
        self._failed = ""  # the store's unrecoverable condition, once seen: no more writes at shutdown
        self._fair = FairQueue()  # delivered, not handled yet: a batch per turn, round-robin by user
        self._failure_log = Sampler(5)
        # Beside a SQLite store (a cluster's Redis-backed buckets have neither): retained garbage already
        # dead-lettered, and messages in batches the agent did not survive (agent.parking).
        own = store is None
        seen_retained = SeenFile(settings.db.with_name(settings.db.name + ".retained")) if own else None
        self._seen_retained = seen_retained
        self._refusals = Refusals(settings.instance, self.stats, self.log, seen_retained)
        self._attempts = (
            Attempts(settings.db.with_name(settings.db.name + ".attempts"), settings.max_attempts)
            if own and settings.max_attempts > 0
            else None
        )
        # Each device's events in seq order: (user, kind, device) -> held messages (agent/ordering.py).
        self._order: OrderGate[DeviceKey, Message] = OrderGate(round(settings.order_wait_s * 1000))

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
        async with contextlib.AsyncExitStack() as stack:
            cipher = HealthCipher.from_file(s.health_key) if s.health_key is not None else None
            store = self._given_store or Store(s.db, cipher=cipher, max_mb=s.db_max_mb)
            self._store = await stack.enter_async_context(store)
            await self._restore()
            bus = self._bus_factory(await self._bus_options())
            for topic_filter in s.subscriptions:  # made on connect, before the birth: "online" means listening
                await bus.subscribe(topic_filter, 1)
            self._bus = await stack.enter_async_context(bus)
            stack.push_async_callback(self._save_at_exit)  # after the tasks end, before the bus and store close
            gc.callbacks.append(self._gc_clock)
            stack.callback(gc.callbacks.remove, self._gc_clock)
            await stack.enter_async_context(self._tasks)
            if self._start_pump:
                self._pump = self._tasks.start(self._run_pump(), name=f"agent[{s.instance}].pump")
            self._stack = stack.pop_all()
        return self

    async def _bus_options(self) -> BusOptions:
        """The agent's session: persistent, acknowledged by hand, with its presence (after the instance claim)."""
        s = self.settings
        state = agent_state_topic(s.instance)
        protocol: MqttProtocol = s.protocol
        if s.presence:
            spoke = await claim_instance(s, self._bus_factory, self.log)  # the protocol: no second probe for it
            protocol = "5" if spoke == "5" else "3.1.1"

        def presence(online: bool) -> bytes:
            body = AgentState(
                online=online, instance=s.instance, version=VERSION, users=sorted(s.users) if s.users else None,
                host=socket.gethostname(), pid=os.getpid(),
            )  # fmt: skip
            return codec.encode(make(body, ts=self.clock.now_ms()))

        return BusOptions(
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

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The pump and the LLM calls end first (their utterances are not acked: the broker delivers them again),
        # then what is done is saved, then the bus closes, then the store (even when the bus fails to close: its
        # thread would keep the process alive).
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def _save_at_exit(self) -> None:
        if self._failed:  # the store failed for good: no more writes
            return
        with contextlib.suppress(Exception):
            await self.mark_acked()
            await self.snapshots.save_all(self.store, self.core, self.clock)

    async def run(self) -> None:
        """Run until cancelled; a failure of the pump ends the process (deployment restarts it).

        Raises:
            StoreFailed: the store failed for good (disk full, read-only, corrupt); the pump has stopped, so
                nothing more is acknowledged, and the process should end with ``agent.failfast.EXIT_STORE``.
        """
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
                        message = codec.decode(
                            row.topic, row.payload, qos=row.qos, retain=row.retain, arrived_ms=row.ts
                        )
                    except ContractError:
                        continue
                    self._languages.note(message)
                    if row.id in resolved:
                        self.core.hints[row.id] = intent_of(resolved[row.id])
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
        """The pump; a store that failed for good ends it with :class:`StoreFailed`."""
        try:
            await self._pump_turns()
        except StoreError as exc:
            condition = unrecoverable(exc)
            if condition is None:
                raise
            self._failed = condition
            self.log.error("store_failed", condition=condition, error=str(exc)[:300])  # noqa: TRY400 (one line)
            raise StoreFailed(condition, str(exc)[:300]) from exc

    async def _pump_turns(self) -> None:
        bus = self.bus
        s = self.settings
        republished = False
        while True:
            if not bus.connected:
                await bus.wait_connected(None)
            await self.mark_acked()
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
            backlog = ticking or self.snapshots.round is not None or self.contexts.due(time.monotonic())
            # Up to two batches in hand (the receive maximum), a fair batch of them handled: one user's backlog
            # does not fill the batch while others wait (agent.fairness). Only what fits beside those already in
            # hand is taken from the bus: QoS 0 samples are never acknowledged, so behind a flood of them nothing
            # else would stop the agent from holding all of it; the rest waits in the bus up to its high-water mark,
            # then on the connection up to its bound (then the socket is not read), then in the broker.
            fair = self._fair
            room = 2 * s.batch - len(fair)  # at least a batch: each turn hands one to the pump
            if backlog or fair:
                batch = await bus.next_batch(room, timeout=0.0)
            else:
                batch = await bus.next_batch(
                    room, timeout=s.tick_s, linger=s.linger_s, urgent=interactive, enough=LINGER_ENOUGH
                )
            self.stats.in_hand_peak = max(self.stats.in_hand_peak, len(fair) + len(batch))
            if fair or len(batch) > s.batch:
                fair.add(batch)
                batch = fair.take(s.batch)
            mono = time.monotonic()
            turn = Turn(len(batch), self._gc_clock)
            if not ticking and mono - self._last_tick >= s.tick_s:
                self._last_tick = mono
                self._tick_users, self._tick_pos = self._tick_round(behind=self._behind()), 0
                if mono - self._last_liveness >= LIVENESS_SCAN_S:  # one pass over every device: not every tick
                    self._last_liveness = mono
                    silent = self._liveness.silent_devices(bus, self.clock, self.log)
                    self.stats.silent += len(silent)
                    batch += silent
            batch = self._in_order(batch, mono)
            turn.lap("order")  # with the choice of the round's users and the liveness scan
            if batch or self._llm.answered or self._tick_pos < len(self._tick_users):
                try:
                    await self._process_guarded(batch, turn)
                except (BusConnectionError, PublishError) as exc:
                    # Stored but not all published: they go out after the reconnect (unpublished rows).
                    self.log.warning("publish_interrupted", error=str(exc))
                    republished = False
            waiting = await self._answer_waits()
            turn.lap("read")  # the loop's pass: what came during the turn was read and decoded (the bus decodes)
            if not waiting:  # else the slices wait a turn: a person waits on the next one
                self.snapshots.begin_when_due(self.core, mono)
                if self.snapshots.round is not None:
                    turn.snapshot_users = await self.snapshots.write_slice(self.store, self.core, self.clock)
                    turn.lap("snapshot")
                self._refusals.flush_rate_counts(bus, mono)
                turn.contexts = await self.publish_contexts(behind=self._behind())
                turn.lap("contexts")
            if mono >= self._next_prune:
                self._next_prune = mono + PRUNE_EVERY_S
                now_wall = wall_ms()
                pruned = await self.store.prune_health(
                    now_wall - int(s.health_retention_s * 1000),
                    hourly_before_ms=now_wall - int(s.health_hourly_retention_s * 1000),
                )
                logged = await self.store.prune_log(
                    now_wall - int(s.log_retention_s * 1000) if s.log_retention_s > 0 else None,
                    limit=max(LOG_PRUNE_CHUNK, 2 * len(batch)),  # past the horizon, faster than events come
                )
                turn.lap("prune")
                if pruned or logged:
                    self._next_prune = mono  # more may be due: the next turn goes on
                if pruned:
                    self.log.info("health_pruned", rows=pruned)
                if logged:
                    self.log.debug("log_pruned", events=logged)
            if s.slow_turn_ms and turn.total_ms() > s.slow_turn_ms:
                self.log.warning("pump_turn_slow", **turn.report())

    async def _answer_waits(self) -> bool:
        """Whether something a person waits on came while this turn ran (the transport reads the socket now): the
        next turn answers it before this one's snapshot and context slices, which are only caught up on. At most
        one turn in a row skips them, so a stream of taps cannot starve them."""
        if self._deferred:
            self._deferred = False
            return False
        await asyncio.sleep(0)  # one pass of the event loop: what arrived during the turn is read
        self._deferred = any(map(interactive, self.bus.inbox))
        return self._deferred

    def _behind(self) -> bool:
        """Whether more than a turn's batch is waiting: messages in hand, or a batch of them in the bus."""
        return bool(self._fair) or len(self.bus.inbox) >= self.settings.batch

    def _tick_round(self, *, behind: bool = False) -> list[str]:
        """The users of the next round of ticks: every user once per :data:`FULL_TICK_MS` of agent time (while the
        agent is ``behind``, :data:`FULL_TICK_BEHIND` times that), else those with a timer of seconds running."""
        now = self.clock.now_ms()
        every = FULL_TICK_MS * FULL_TICK_BEHIND if behind else FULL_TICK_MS
        if now - self._full_tick_ms >= every or now < self._full_tick_ms:
            self._full_tick_ms = now
            return self.core.users
        return self.core.timed_users()

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

    async def process(self, batch: list[Message], turn: Turn | None = None) -> None:
        """One pump turn's work: the batch and the next slice of timers, each published, then stored, then acked.

        Somebody waiting for an answer goes first: their messages are checked, stored and answered in a transaction
        of their own, before the timers' slice and the rest of the batch (which follow in a second one, the ticks
        stored after the first's events, as they ran).
        """
        if self._llm.answered:  # the LLM resolver answered: these go first, as the answers they are
            await self._settle_late()
            if turn is not None:
                turn.lap("late")
        first, rest = answer_first(batch)
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
        held = self._llm
        for message in batch:  # once all of it is stored (a crash before this: the broker delivers it again)
            if message.envelope.id not in held:  # one waiting for the LLM is acked once it is handled and stored
                ack(message)
        if turn is not None:
            turn.lap("ack")

    async def _process_guarded(self, batch: list[Message], turn: Turn) -> None:
        """:meth:`process`, counting an attempt for the messages in hand when it fails (and the process ends).

        Messages that were in such a batch before are handled one at a time first, so only the one that fails
        again gains attempts; past ``max_attempts`` :meth:`_admit` parks it. A store that failed for good, or was
        only busy, is not the messages' fault: it counts nothing.
        """
        attempts = self._attempts
        if attempts is None:
            await self.process(batch, turn)
            return
        current = batch
        try:
            if len(attempts):
                suspects = [m for m in batch if attempts.suspect(m.envelope.id)]
                if suspects:
                    rest = [m for m in batch if not attempts.suspect(m.envelope.id)]
                    for message in suspects:
                        current = [message]
                        await self.process(current)
                        attempts.settled([message.envelope.id])
                    current = batch = rest
            await self.process(batch, turn)
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
        # The contract deduplicates QoS 1 events; a QoS 0 message comes at most once and is not looked up (the
        # store keeps the ids of QoS 1 events only). A repeat within the batch is still dropped, whatever its QoS.
        wanted = [key for m, key in zip(batch, keys, strict=True) if m.qos]
        known = await self.store.known(wanted) if wanted else set()
        fresh: list[Message] = []
        seen: set[str] = set()
        check = self.admission.check
        arrived = self.clock.now_ms()
        clock = self.clock
        judge = clock.judge_ms if isinstance(clock, SimClock) and clock.wall_after_ms is not None else None
        mono = time.monotonic()
        bus = self.bus
        refusals = self._refusals
        for message, key in zip(batch, keys, strict=True):
            self._liveness.observe(message, mono)
            self._languages.note(message)
            if key in known or key in seen:
                stats.duplicates += 1
                continue
            if users is not None and message.where.user not in users:
                continue
            if message.retain and message.where.channel is Channel.EVENT and bus.protocol == "5":
                # (not on MQTT 3.1.1: amqtt sets the retain flag on a persistent session's queued messages)
                refusals.retained_event(bus, message)
                continue
            attempts = self._attempts
            if attempts is not None and attempts.exhausted(message.envelope.id):
                n = attempts.count(message.envelope.id)
                why = f"the agent failed {n} times while handling it; parked, not retried"
                refusals.refuse(bus, message, "parked", why)
                attempts.settled([message.envelope.id])
                continue
            refusal = check(message, arrived if judge is None else judge(message.envelope.ts))
            if refusal is not None:
                refusals.refuse(bus, message, refusal[0], refusal[1] + clock_hint(clock, refusal[0]))
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
        if hold and not self._replaying:
            fresh = self._llm.hold(fresh, self.core.hints)
        handle = self.core.handle
        for message in fresh:
            try:
                handled = handle(message, now)
                row = event_row(message, now, received)
                if holds_health(message.data) and not self.core.consents(row.user or "", PROACTIVE_HEALTH):
                    row = row._replace(payload=codec.redact_bytes(message.topic, row.payload))  # no raw sample kept
            except Exception as exc:  # noqa: BLE001  (a message that breaks the agent must not stop it: it would come back for ever)
                if self._failure_log.allow():  # one line, no traceback (its frames hold the payload), a few a second
                    self.log.warning(
                        "message_failed", topic=message.topic, id=message.envelope.id, error=type(exc).__name__,
                        suppressed=self._failure_log.take_suppressed(),
                    )  # fmt: skip
                why = f"the agent could not handle it: {type(exc).__name__}: {exc}"
                self._refusals.refuse(self.bus, message, "agent", why)
                continue
            outcome.extend(handled)
            rows.append(row)
            if message.where.channel is Channel.ACK:
                ack = message.data
                if isinstance(ack, Ack):
                    acks.append((ack.action_id, ack.status, ack.detail, now))
        created = wall_ms()
        speaks_json = self._languages.speaks_json
        actions = [
            action_row(cmd, now, created, json_payload=speaks_json(cmd.device.key))
            for cmd in outcome.commands
        ]  # fmt: skip
        tasks = outcome.tasks  # the core's records, copied when they were made
        alerts = [(rule, user, text, now) for rule, user, text in outcome.alerts]
        # Published before they are stored: the answer does not wait for the commit. Action ids are deterministic
        # (the causing event's id and the action's place in the outcome) and devices ignore an id they carried out,
        # and the events that caused them are acknowledged only after the commit (in process): a crash between the
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
        self.contexts.note(outcome.context_changed)
        if actions:
            stats.actions += len(actions)
            for cmd in outcome.commands:
                self.log.info(
                    "action_published", action=cmd.body.type, device=cmd.device.client_id,  # type: ignore[attr-defined]
                    corr=cmd.corr, reason=cmd.reason,
                )  # fmt: skip

    async def _settle_late(self) -> None:
        """Handle the utterances whose LLM answer came, with the intent as the core's hint; store the intent with
        them (a replay gives the core the same hint), then ack them."""
        late = self._llm.take_answered()
        messages: list[Message] = []
        resolutions: list[tuple[str, str]] = []
        for message, intent in late:
            key = message.envelope.id
            messages.append(message)
            if intent is None:
                continue
            self.core.hints[key] = intent
            resolutions.append((key, intent_json(intent)))
            self.log.info("llm_resolved", skill=intent.skill.value, slots=dict(intent.slots))
        try:
            await self._settle(messages, Outcome(), [], resolutions, hold=False)
        finally:
            self._llm.release(messages)
        for message in messages:  # stored: acked (a failure above leaves them to the broker's redelivery)
            self.bus.ack(message)
        self.stats.llm_late += len(messages)

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
            key = where.key
            if key is None:
                out.append(message)
                continue
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

    # ------------------------------------------------------------------ publishing

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

    def _on_puback(self, action_id: str, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._acked.append(action_id)
        else:
            self._republish = True  # not acknowledged: publish the stored row again once reconnected

    async def mark_acked(self) -> None:
        """Mark published the actions whose PUBACK came."""
        if self._acked:
            ids, self._acked = self._acked, []
            await self.store.mark_published(ids, wall_ms())

    async def publish_contexts(self, *, behind: bool = False, mono: float | None = None) -> int:
        """Republish the retained context of the users due (fewer while the agent is ``behind``) at the monotonic
        time ``mono`` (default: now); how many."""
        return await self.contexts.publish(self.bus, self.store, self.core, self.clock, behind=behind, mono=mono)
