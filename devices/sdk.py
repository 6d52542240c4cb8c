"""The device SDK: what an emulator or a real device bridge (an ESP32 ring, a phone app, a glasses bridge) needs.

A :class:`Device` connects with its credentials (username and client id ``{user}/{kind}/{device}``), publishes a
retained birth on ``state`` and leaves a Will that sets it offline, numbers its events (``seq``) within a session
epoch, emits typed events through a bounded outbox that holds them while the broker or the agent is away and sends
them in order when they return (what had to be dropped is counted and reported), dispatches typed actions to
handlers and acknowledges every one (``done``, ``rejected`` with the reason, or ``expired``), and sends heartbeats.

Settings travel as a shadow (:mod:`schemas.shadow`): the device subscribes to its retained ``shadow/desired``, so on
every connect (a sleeping device waking up included) it receives the latest desired document, applies the delta
through :meth:`Device.apply_setting` (raise :class:`SettingRejected` to refuse a value) and publishes the retained
``shadow/reported``. With ``DeviceConfig.shadow_file`` what it applied and reported is kept across restarts (a real
device's flash), so an update interrupted by a restart is applied once and reported once.

Subclasses declare handlers with :func:`on_action` and put their behaviour in :meth:`Device.behave`::

    class MyRing(Device):
        kind = Kind.RING

        @on_action(Haptic)
        async def haptic(self, action: Haptic, envelope: Envelope[Haptic]) -> str:
            motor.buzz(action.pattern)
            return "buzzed"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from broker.bus import Bus, BusOptions, MqttProtocol, Outgoing, TransportName
from broker.connect import open_bus
from broker.logs import get_logger
from schemas import codec
from schemas.actions import ACCEPTS, Ack, AgentState, DeviceState
from schemas.clock import Clock, WallClock
from schemas.envelope import Envelope, Message, make
from schemas.errors import BusConnectionError, DeviceError, MessageTooLarge, PublishError
from schemas.events import EVENT_QOS, Body, Heartbeat, event_key
from schemas.shadow import SETTINGS, Refusal, ShadowDesired, ShadowReported, check_desired, setting_keys, values
from schemas.tasks import TaskScope
from schemas.topics import (
    AGENT_STATES,
    Channel,
    DeviceId,
    Kind,
    ack_topic,
    desired_topic,
    event_topic,
    reported_topic,
    state_topic,
)

A = TypeVar("A", bound=Body)
Handler = Callable[[Any, Any, Envelope[Any]], Awaitable[str | None]]


class ActionRejected(DeviceError):
    """Raise from an action handler to answer ``rejected`` with this reason."""


class SettingRejected(DeviceError):
    """Raise from :meth:`Device.apply_setting` to report the value as rejected with this reason."""


def on_action(model: type[A]) -> Callable[[Callable[[Any, A, Envelope[A]], Awaitable[str | None]]], Handler]:
    """Mark a coroutine method as the handler of one action type; its return value is the ack's detail."""
    action_type = model.model_fields["type"].default

    def mark(fn: Callable[[Any, A, Envelope[A]], Awaitable[str | None]]) -> Handler:
        fn.__wearbus_action__ = action_type  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(slots=True)
class DeviceConfig:
    """How a device connects and behaves on the bus.

    Attributes:
        url: broker URL.
        password: the device's password (its username is its client id); ``None`` for an open broker.
        firmware: reported in the birth.
        model: the hardware model reported in the birth.
        outbox_size: events held while the broker or the agent is away; beyond it the oldest are dropped and counted.
        heartbeat_s: wall seconds between heartbeats (0: none).
        action_ttl_s: an action older than this (in simulated time) when it arrives is answered ``expired``.
        keepalive_s: MQTT keep-alive; the broker fires the Will after ~1.5x this on a silent cut.
        hold_while_agent_away: hold events while the agent's retained state says it is offline.
        protocol: the MQTT version to ask for (``auto``: 5, else 3.1.1).
        transport: the MQTT client under the bus (``auto``, ``native``, ``paho``).
        resend_on_reconnect: after a reconnect, send the last this many events the broker acknowledged again.
            Mosquitto acknowledges a publish before its next save, so a broker killed right after a PUBACK forgets
            that event (measured: always the last one); the agent drops the copies by id. 0: never.
        shadow_file: where the device keeps the settings it applied and the version it reported (JSON, written
            atomically), as a real device keeps them in flash; ``None``: in memory only.
        max_send_tries: an event whose publish ends the connection this many times in a row is dead-lettered
            (a broker that refuses it by closing the connection, without saying why, would get it for ever).
    """

    url: str = "mqtt://127.0.0.1:1883"
    password: str | None = None
    protocol: MqttProtocol = "auto"
    transport: TransportName = "auto"
    firmware: str = "wearbus-emu 0.1"
    model: str = ""
    outbox_size: int = 10_000
    heartbeat_s: float = 10.0
    action_ttl_s: float = 120.0
    keepalive_s: int = 10
    hold_while_agent_away: bool = True
    resend_on_reconnect: int = 8
    shadow_file: Path | None = None
    max_send_tries: int = 5


@dataclass(slots=True)
class DeviceStats:
    """What a device counts."""

    emitted: int = 0
    sent: int = 0
    dropped: int = 0
    actions: int = 0
    rejected: int = 0
    expired: int = 0
    resent: int = 0
    dead_lettered: int = 0
    settings_applied: int = 0
    settings_rejected: int = 0
    reported: int = 0


@dataclass(slots=True)
class ShadowMemory:
    """What a device keeps of its settings: the desired version it applied, the last one it reported, the applied
    values, and the rejections of that version."""

    version: int = 0
    reported: int = -1
    settings: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    desired: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> ShadowMemory:
        """Read it back (a missing file: nothing applied yet).

        Raises:
            DeviceError: the file is unreadable or not what a device wrote.
        """
        if path is None or not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls(
                int(raw["version"]),
                int(raw["reported"]),
                dict(raw["settings"]),
                dict(raw["rejected"]),
                dict(raw.get("desired", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DeviceError(f"cannot read the shadow file {path}: {exc}; delete it to start afresh") from exc

    def save(self, path: Path | None) -> None:
        """Write it atomically (a restart mid-write keeps the old or the new, never half)."""
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        data = {"version": self.version, "reported": self.reported, "settings": self.settings}
        tmp.write_text(json.dumps({**data, "rejected": self.rejected, "desired": self.desired}, ensure_ascii=False))
        os.replace(tmp, path)

    dead_lettered: int = 0


class Device:
    """Base class of every device on the bus; an async context manager that owns its tasks."""

    kind: ClassVar[Kind]
    _handlers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers = dict(getattr(cls, "_handlers", {}))
        for name, value in vars(cls).items():
            action = getattr(value, "__wearbus_action__", None)
            if action is not None:
                handlers[action] = name
        cls._handlers = handlers

    def __init__(self, user: str, device: str, config: DeviceConfig | None = None, clock: Clock | None = None) -> None:
        self.ident = DeviceId(user, self.kind, device)
        self.config = config or DeviceConfig()
        self.clock: Clock = clock or WallClock()
        self.stats = DeviceStats()
        self.epoch = time.time_ns() // 1_000_000
        self.log = get_logger("device", device=self.ident.client_id)
        self._seq = 0
        self._outbox: deque[Outgoing] = deque()
        self._recent: deque[Outgoing] = deque(maxlen=max(0, self.config.resend_on_reconnect))
        self._connects = 0
        self._outbox_wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._agents: dict[str, bool] = {}
        self._started = time.monotonic()
        self._scope = TaskScope()  # receive, outbox, behave, heartbeat
        self._tasks: list[asyncio.Task[None]] = []  # (to watch in run_forever; the scope ends them)
        self._stack: contextlib.AsyncExitStack | None = None
        self._bus: Bus | None = None
        self.link_up = True
        self._done: dict[str, tuple[str, str]] = {}
        self._shadow = ShadowMemory.load(self.config.shadow_file)
        self._refused: Refusal | None = None
        #: The settings applied now (typed; ``None`` fields were never set).
        self.settings = SETTINGS[self.kind].model_validate(self._shadow.settings)
        #: what the outbox gave up on, newest last: ``(topic, reason, payload size)``
        self.dead_letters: deque[tuple[str, str, int]] = deque(maxlen=100)
        self._head_tries = 0  # publishes of the outbox's first event that ended the connection

    # ------------------------------------------------------------------ lifecycle

    @property
    def capabilities(self) -> list[str]:
        """The actions this device accepts."""
        return sorted(ACCEPTS[self.kind])

    @property
    def setting_keys(self) -> list[str]:
        """The settings this device can apply (in its birth; ``set`` refuses others). Override to narrow."""
        return setting_keys(self.kind)

    def battery_pct(self) -> float | None:
        """The battery level reported in the birth (override in a subclass)."""
        return None

    def state(self, *, online: bool) -> DeviceState:
        """The retained state body."""
        return DeviceState(
            online=online,
            kind=self.kind,
            capabilities=self.capabilities,
            firmware=self.config.firmware,
            epoch=self.epoch,
            battery_pct=self.battery_pct() if online else None,
            model=self.config.model,
            heartbeat_s=self.config.heartbeat_s or None,
            settings=self.setting_keys,
        )

    def _state_bytes(self, *, online: bool) -> bytes:
        return codec.encode(make(self.state(online=online), ts=self.clock.now_ms()))

    @property
    def bus(self) -> Bus:
        """The device's bus connection (inside ``async with``)."""
        if self._bus is None:
            raise DeviceError(f"{self.ident} is not started")
        return self._bus

    async def __aenter__(self) -> Self:
        cid = self.ident.client_id
        topic = state_topic(self.ident)
        options = BusOptions(
            url=self.config.url,
            protocol=self.config.protocol,
            transport=self.config.transport,
            client_id=cid,
            username=cid if self.config.password is not None else None,
            password=self.config.password,
            keepalive_s=self.config.keepalive_s,
            will=Outgoing(topic, self._state_bytes(online=False), 1, True),
            goodbye=Outgoing(topic, self._state_bytes(online=False), 1, True),
            connect_timeout_s=0,
            name=cid,
            on_connect=[self._on_connect],
        )
        self._restore_settings()
        async with contextlib.AsyncExitStack() as stack:
            self._bus = bus = await stack.enter_async_context(open_bus(options))
            await bus.subscribe(f"{self.ident.prefix}/cmd/#", 1)
            await bus.subscribe(desired_topic(self.ident), 1)
            await bus.subscribe(AGENT_STATES, 1)
            await stack.enter_async_context(self._scope)  # its tasks end (awaited) before the bus closes
            jobs = {"receive": self._receive(), "outbox": self._flush(), "behave": self.behave()}
            if self.config.heartbeat_s > 0:
                jobs["heartbeat"] = self._heartbeat()
            self._tasks = [self._scope.start(job, name=f"device[{cid}].{part}") for part, job in jobs.items()]
            stack.push_async_callback(self.drain, 2.0)  # first at exit: what the outbox holds goes out
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        self._tasks = []
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the device is connected to the broker."""
        await self.bus.wait_connected(timeout)

    async def run_forever(self) -> None:
        """Wait until cancelled, surfacing the first task that failed."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise DeviceError(f"{self.ident}: {task.get_name()} failed") from task.exception()
        await asyncio.Event().wait()

    async def behave(self) -> None:
        """The device's own behaviour (periodic sensors and such). The default does nothing."""
        await asyncio.Event().wait()

    async def _on_connect(self, bus: Bus, _session_present: bool) -> None:
        await bus.publish_raw(Outgoing(state_topic(self.ident), self._state_bytes(online=True), 1, True))
        self._connects += 1
        if self._connects > 1 and self._recent:
            # The broker may have died between its PUBACK and its save: send them again, ahead of (and older
            # than) what waited in the outbox, so seq order holds; the agent deduplicates by id.
            self._outbox.extendleft(reversed(self._recent))
            self.stats.resent += len(self._recent)
            self._recent.clear()
        self._outbox_wake.set()

    def set_link(self, up: bool) -> None:
        """Simulate losing (``False``) or regaining the network: while it is down, events stay in the outbox (sent
        in order once it is back), no heartbeat goes out and actions are not received."""
        self.link_up = up
        self._outbox_wake.set()

    async def publish_state(self) -> None:
        """Republish the retained birth (after the battery or capabilities changed)."""
        with contextlib.suppress(BusConnectionError):
            await self.bus.publish_raw(Outgoing(state_topic(self.ident), self._state_bytes(online=True), 1, True))

    # ------------------------------------------------------------------ events

    def emit(self, body: Body, *, src_ts: int | None = None, corr: str | None = None) -> Envelope[Any]:
        """Queue an event for publishing on its topic; returns its envelope (with id and seq).

        Raises:
            DeviceError: this kind of device does not publish that event.
        """
        try:
            kind, event_class, name = event_key(self.kind, body)
        except KeyError as exc:
            raise DeviceError(str(exc)) from exc
        self._seq += 1
        envelope = make(body, ts=self.clock.now_ms(), seq=self._seq, src_ts=src_ts, corr=corr)
        out = Outgoing(
            event_topic(self.ident, event_class, name),
            codec.encode(envelope),
            EVENT_QOS[(kind, event_class, name)],
            False,
        )
        if len(self._outbox) >= self.config.outbox_size:
            self._outbox.popleft()
            self.stats.dropped += 1
            if self.stats.dropped in {1, 10, 100} or self.stats.dropped % 1000 == 0:
                self.log.warning("outbox_full_dropping_oldest", dropped=self.stats.dropped)
        self._outbox.append(out)
        self.stats.emitted += 1
        self._outbox_wake.set()
        return envelope

    @property
    def outbox_depth(self) -> int:
        """Events waiting to be sent."""
        return len(self._outbox)

    @property
    def agent_away(self) -> bool:
        """Whether an agent was seen and none is online now."""
        return bool(self._agents) and not any(self._agents.values())

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait (bounded) until the outbox is empty; returns whether it is."""
        if not self._outbox or self._bus is None or not self._bus.connected or not self.link_up:
            return not self._outbox
        self._drained.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._drained.wait()
        return not self._outbox

    async def _flush(self) -> None:
        bus = self.bus
        while True:
            await self._outbox_wake.wait()
            self._outbox_wake.clear()
            while (
                self._outbox
                and self.link_up
                and bus.connected
                and not (self.config.hold_while_agent_away and self.agent_away)
            ):
                out = self._outbox[0]
                too_big = self._too_big(out, bus)
                if too_big:
                    self._dead_letter(out, "too_large", too_big)
                    continue
                try:
                    # QoS 1 waits for PUBACK before the event leaves the outbox: a broker that dies now loses nothing.
                    await bus.publish_raw(out, wait=out.qos > 0)
                except MessageTooLarge as exc:  # sending it again cannot help: dead-letter it, say why, go on
                    self._dead_letter(out, "too_large", str(exc))
                    continue
                except (BusConnectionError, PublishError) as exc:
                    if isinstance(exc, BusConnectionError) and self._outbox and self._outbox[0] is out:
                        self._head_tries += 1  # it was on the wire when the connection ended
                        if self._head_tries >= self.config.max_send_tries:
                            why = f"the connection ended {self._head_tries} times while it was sent: {exc}"
                            self._dead_letter(out, "connection_lost", why)
                            continue
                    self.log.info("outbox_holding", depth=len(self._outbox), why=str(exc))
                    break
                self._head_tries = 0
                if self._outbox and self._outbox[0] is out:
                    self._outbox.popleft()
                if out.qos > 0:
                    self._recent.append(out)
                self.stats.sent += 1
            if not self._outbox:
                self._drained.set()

    @staticmethod
    def _too_big(out: Outgoing, bus: Bus) -> str:
        """Why ``out`` can never be sent (its size against the contract's and the broker's limit), or ''."""
        size = len(out.payload)
        if size > codec.MAX_PAYLOAD:
            return f"{size} bytes is over the contract's limit of {codec.MAX_PAYLOAD}"
        limit = bus.max_packet_size
        packet = size + len(out.topic.encode()) + 64  # fixed header, topic length, packet id, properties
        if limit is not None and packet > limit:
            return f"a packet of ~{packet} bytes is over the broker's Maximum Packet Size of {limit}"
        return ""

    def _dead_letter(self, out: Outgoing, reason: str, why: str) -> None:
        """Give up on the outbox's first event (it can never be sent) and go on with the next one."""
        if self._outbox and self._outbox[0] is out:
            self._outbox.popleft()
        self._head_tries = 0
        self.stats.dead_lettered += 1
        self.dead_letters.append((out.topic, reason, len(out.payload)))
        self.log.warning(
            "outbox_dead_letter", topic=out.topic, reason=reason, why=why, size=len(out.payload),
            total=self.stats.dead_lettered,
        )  # fmt: skip

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            if not self.bus.connected or not self.link_up:
                continue
            body = Heartbeat(
                uptime_s=round(time.monotonic() - self._started, 3),
                outbox=len(self._outbox),
                dropped=self.stats.dropped,
                dead_lettered=self.stats.dead_lettered,
            )
            _, cls, name = event_key(self.kind, body)
            envelope = make(body, ts=self.clock.now_ms())
            with contextlib.suppress(BusConnectionError, PublishError):
                await self.bus.publish_raw(Outgoing(event_topic(self.ident, cls, name), codec.encode(envelope), 0))

    # ------------------------------------------------------------------ actions

    async def _receive(self) -> None:
        async for message in self.bus.messages():
            where = message.where
            if where.channel is Channel.AGENT_STATE and isinstance(message.data, AgentState):
                self._agents[where.name or ""] = message.data.online
                self._outbox_wake.set()
                continue
            mine = where.device == self.ident.device and where.user == self.ident.user
            # A device whose network is down (set_link) never hears the action.
            if where.channel is Channel.COMMAND and mine and self.link_up:
                await self._dispatch(message)
            elif where.channel is Channel.DESIRED and mine and isinstance(message.data, ShadowDesired):
                await self._on_desired(message.data)

    # ------------------------------------------------------------------ settings (shadow)

    def apply_setting(self, key: str, value: Any) -> None:
        """Carry out one setting (``value`` typed as in the kind's settings model). The default only keeps it
        (in :attr:`settings`); a subclass changes its behaviour, or raises :class:`SettingRejected`."""

    def _restore_settings(self) -> None:
        """At boot, apply again what the shadow file says was applied (a device's settings survive a restart)."""
        for key in values(self.settings):
            with contextlib.suppress(SettingRejected):
                self.apply_setting(key, getattr(self.settings, key))

    @property
    def shadow_version(self) -> int:
        """The desired version this device last applied (0: none)."""
        return self._shadow.version

    async def _on_desired(self, desired: ShadowDesired) -> None:
        """Apply what ``desired`` holds that this device has not applied, then report (each version once)."""
        before = self._refused
        applied = self.apply_desired(desired)
        if applied or self._refused != before or self._shadow.reported < self._shadow.version:
            await self.report_shadow()

    def apply_desired(self, desired: ShadowDesired) -> bool:
        """Apply the delta of ``desired`` (no I/O): each changed key through :meth:`apply_setting`, then keep what
        was applied (in ``shadow_file``, before any report). A version already applied does nothing; an older one
        is refused (see :attr:`refused`).

        Returns:
            Whether this was a new version (applied, perhaps with rejections in :attr:`rejected`).
        """
        memory = self._shadow
        refusal = check_desired(desired, memory.version)
        if refusal is not None:
            self.log.warning("shadow_refused", version=desired.version, why=refusal)
            self._refused = Refusal(version=desired.version, reason=refusal)
            return False
        if desired.version == memory.version:
            if memory.version and values(desired.settings) != memory.desired:
                # Two writers raced to the same version: the second one's settings would silently never apply.
                reason = f"conflict: version {desired.version} was applied with other settings; write it again"
                self._refused = Refusal(version=desired.version, reason=reason)
            return False  # applied already (perhaps before a restart, its report still owed)
        current = values(self.settings)
        rejected: dict[str, str] = {}
        for key, value in values(desired.settings).items():
            if current.get(key) == value:
                continue
            try:
                self.apply_setting(key, getattr(desired.settings, key))
            except SettingRejected as exc:
                rejected[key] = str(exc)[:500]
                continue
            except Exception as exc:  # a bug in one setting must not stop the device nor the other settings
                self.log.exception("apply_setting_failed", key=key)
                rejected[key] = f"failed: {type(exc).__name__}: {exc}"[:500]
                continue
            current[key] = value
            self.stats.settings_applied += 1
        self.stats.settings_rejected += len(rejected)
        self.settings = SETTINGS[self.kind].model_validate(current)
        memory.version, memory.settings, memory.rejected = desired.version, current, rejected
        memory.desired = values(desired.settings)
        memory.save(self.config.shadow_file)  # applied: kept before the report, so a restart does not apply again
        self._refused = None
        self.log.info("shadow_applied", version=desired.version, applied=sorted(current), rejected=rejected or None)
        return True

    @property
    def rejected(self) -> dict[str, str]:
        """The keys of the applied version this device could not apply, with why."""
        return dict(self._shadow.rejected)

    @property
    def refused(self) -> Refusal | None:
        """The last desired document refused as a whole (reported until a newer version is applied)."""
        return self._refused

    async def report_shadow(self) -> None:
        """Publish the retained ``shadow/reported`` and remember that it was (kept across restarts)."""
        memory = self._shadow
        body = ShadowReported(
            version=memory.version, settings=self.settings, rejected=memory.rejected, refused=self._refused
        )
        out = Outgoing(reported_topic(self.ident), codec.encode(make(body, ts=self.clock.now_ms())), 1, True)
        try:
            await self.bus.publish_raw(out, wait=True)
        except (BusConnectionError, PublishError) as exc:
            self.log.info("shadow_report_deferred", why=str(exc))  # the retained desired comes again on reconnect
            return
        self.stats.reported += 1
        if memory.reported != memory.version:
            memory.reported = memory.version
            memory.save(self.config.shadow_file)

    async def _dispatch(self, message: Message) -> None:
        envelope = message.envelope
        action = message.data
        action_type: str = getattr(action, "type", "")
        self.stats.actions += 1
        age_s = (self.clock.now_ms() - envelope.ts) / 1000
        if age_s > self.config.action_ttl_s:
            self.stats.expired += 1
            await self._ack(envelope, action_type, "expired", f"arrived {age_s:.0f} s after it was sent")
            return
        done = self._done.get(envelope.id)
        if done is not None:
            # The agent may publish an action twice across a crash (same id): carry it out once, ack again.
            await self._ack(envelope, action_type, done[0], done[1])
            return
        name = self._handlers.get(action_type)
        if name is None:
            self.stats.rejected += 1
            await self._ack(envelope, action_type, "rejected", f"{self.ident.kind} has no handler for {action_type}")
            return
        try:
            detail = await getattr(self, name)(action, envelope)
        except ActionRejected as exc:
            self.stats.rejected += 1
            await self._ack(envelope, action_type, "rejected", str(exc))
            return
        except Exception as exc:  # a handler bug must not kill the device: the agent learns it was rejected
            self.stats.rejected += 1
            self.log.exception("action_handler_failed", action=action_type)
            await self._ack(envelope, action_type, "rejected", f"handler failed: {type(exc).__name__}: {exc}")
            return
        await self._ack(envelope, action_type, "done", detail or "")

    async def _ack(self, envelope: Envelope[Any], action: str, status: str, detail: str) -> None:
        self._done[envelope.id] = (status, detail)
        while len(self._done) > 1024:
            self._done.pop(next(iter(self._done)))
        ack = Ack(action_id=envelope.id, action=action, status=status, detail=detail[:500])
        out = Outgoing(ack_topic(self.ident), codec.encode(make(ack, ts=self.clock.now_ms(), corr=envelope.id)), 1)
        with contextlib.suppress(BusConnectionError, PublishError):
            await self.bus.publish_raw(out)
