"""An in-memory bus and broker: the :class:`broker.bus.Bus` contract without sockets (in the spirit of FastStream's
``TestMQTTBroker``).

A :class:`MemoryBroker` keeps what an MQTT broker keeps: retained messages, sessions with their subscriptions, what a
persistent session queues while its client is away and what was delivered but not acknowledged (redelivered, with
the DUP meaning, when the client comes back). A :class:`MemoryBus` is a client of it and honours the same promises
as the MQTT :class:`broker.client.Bus`: ``+``/``#`` wildcards, retained messages, the Will on an abnormal end
(:meth:`MemoryBroker.kill`), QoS 0 and 1, persistent sessions, manual acknowledgement, reconnects after
:meth:`MemoryBroker.restart` with subscriptions renewed, dead letters. The same contract suite runs on it
(``tests/contract/test_bus.py``), so agent and device flows can be tested in one process.

Payloads travel as bytes through :mod:`schemas.codec`, exactly as on the wire, so what the in-memory bus accepts or
dead-letters is what a real broker's subscriber would. Delivery happens on the event loop, in publish order.

Use ``memory://NAME`` URLs with :func:`broker.connect.open_bus` (brokers are found by name, created on first use), or
pass a broker: ``MemoryBus(options, broker=MemoryBroker())``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar

from broker.bus import ERR_NO_CONN, ERR_SUCCESS, BusCore, BusOptions, Outgoing
from schemas import codec
from schemas.errors import BusConnectionError, BusError, PublishError, QosNotSupported
from schemas.topics import matches, validate_filter


@dataclass(slots=True)
class _Held:
    """A message as the broker holds it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    content_type: str | None


@dataclass(slots=True)
class _Session:
    client_id: str
    persistent: bool
    subs: dict[str, int] = field(default_factory=dict)
    queued: deque[_Held] = field(default_factory=deque)  # QoS 1 messages while the client was away
    unacked: dict[int, _Held] = field(default_factory=dict)  # delivered, not yet acknowledged (by packet id)
    mids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    client: MemoryBus | None = None


class MemoryBroker:
    """An MQTT broker's state in this process (one per ``memory://NAME``).

    Attributes:
        name: its name in ``memory://NAME``.
        running: false between the two halves of :meth:`restart` (connects are refused).
        max_queued: QoS 1 messages kept per offline session; beyond it the oldest are dropped and counted.
        dropped: messages dropped because an offline queue was full.
    """

    _named: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self, name: str = "", *, max_queued: int = 100_000) -> None:
        self.name = name
        self.running = True
        self.max_queued = max_queued
        self.dropped = 0
        self.retained: dict[str, _Held] = {}
        self._sessions: dict[str, _Session] = {}

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The broker called ``name`` in this process (created on first use)."""
        broker = cls._named.get(name)
        if broker is None:
            broker = cls._named[name] = cls(name)
        return broker

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop the broker called ``name`` (its state is lost)."""
        cls._named.pop(name, None)

    @property
    def url(self) -> str:
        """``memory://NAME``."""
        return f"memory://{self.name}"

    # ------------------------------------------------------------------ what clients do

    def connect(self, client: MemoryBus, client_id: str, *, persistent: bool) -> bool:
        """A CONNECT; whether an existing session was resumed (a present client with that id is taken over)."""
        if not self.running:
            raise BusConnectionError(f"{self.url} is not running (connection refused)")
        old = self._sessions.get(client_id)
        if old is not None and old.client is not None and old.client is not client:
            old.client.lost("session taken over by a new connection")
        present = old is not None and persistent and old.persistent
        if not present:
            old = self._sessions[client_id] = _Session(client_id, persistent)
        assert old is not None  # noqa: S101  (narrowing for mypy)
        old.persistent = persistent
        old.client = client
        return present

    def resume(self, client_id: str) -> None:
        """After the CONNACK: deliver again what was not acknowledged (first, in order), then what was queued."""
        session = self._sessions[client_id]
        client = session.client
        if client is None:
            return
        unacked = list(session.unacked.values())
        session.unacked.clear()
        queued = list(session.queued)
        session.queued.clear()
        for held in unacked + queued:
            self._hand(session, client, held, held.qos)

    def disconnect(self, client: MemoryBus, client_id: str, *, will: Outgoing | None) -> None:
        """The end of a connection: publish ``will`` (an abnormal end), keep or drop the session."""
        session = self._sessions.get(client_id)
        if session is None or session.client is not client:
            return
        session.client = None
        if not session.persistent:
            del self._sessions[client_id]
        if will is not None and self.running:
            self.publish(will.topic, will.payload, will.qos, will.retain, None)

    def subscribe(self, client_id: str, topic_filter: str, qos: int) -> int:
        """A SUBSCRIBE; the granted QoS. The retained messages under the filter are delivered at once."""
        session = self._sessions.get(client_id)
        if session is None or session.client is None:
            raise BusConnectionError("not connected")
        granted = min(qos, 1)
        session.subs[topic_filter] = granted
        for topic, held in list(self.retained.items()):
            if matches(topic_filter, topic):
                self._hand(session, session.client, held, min(held.qos, granted))
        return granted

    def unsubscribe(self, client_id: str, topic_filter: str) -> None:
        """An UNSUBSCRIBE."""
        session = self._sessions.get(client_id)
        if session is not None:
            session.subs.pop(topic_filter, None)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool, content_type: str | None) -> None:
        """A PUBLISH: keep it if retained, hand it to every matching session (queue it for offline ones)."""
        held = _Held(topic, payload, qos, False, content_type)
        if retain:
            if payload:
                self.retained[topic] = _Held(topic, payload, qos, True, content_type)
            else:
                self.retained.pop(topic, None)  # an empty retained payload clears the topic
        for session in list(self._sessions.values()):
            granted = max((q for f, q in session.subs.items() if matches(f, topic)), default=-1)
            if granted < 0:
                continue
            effective = min(qos, granted)
            if session.client is not None:
                self._hand(session, session.client, held, effective)
            elif effective == 1 and session.persistent:
                if len(session.queued) >= self.max_queued:
                    session.queued.popleft()
                    self.dropped += 1
                session.queued.append(held)

    def ack(self, client_id: str, mid: int) -> None:
        """A PUBACK from the client."""
        session = self._sessions.get(client_id)
        if session is not None:
            session.unacked.pop(mid, None)

    def _hand(self, session: _Session, client: MemoryBus, held: _Held, qos: int) -> None:
        mid = 0
        if qos:
            mid = next(session.mids) % 65535 + 1
            session.unacked[mid] = _Held(held.topic, held.payload, 1, False, held.content_type)
        client.receive(held.topic, held.payload, qos, held.retain, mid, held.content_type)

    # ------------------------------------------------------------------ faults

    def kill(self, client_id: str) -> None:
        """End that client's connection abnormally, as a kill -9 would: its Will is published, it does not return."""
        session = self._sessions.get(client_id)
        if session is not None and session.client is not None:
            session.client.lost("killed", final=True)

    async def restart(self) -> None:
        """Stop (every connection is cut; sessions and retained messages are kept, as a persisting broker keeps
        them) and start again; clients reconnect by themselves."""
        self.running = False
        for session in list(self._sessions.values()):
            if session.client is not None:
                session.client.lost("the broker stopped", will=False)
        await asyncio.sleep(0)
        self.running = True

    def session_ids(self) -> list[str]:
        """The client ids of the sessions it keeps."""
        return list(self._sessions)


class MemoryBus(BusCore):
    """A :class:`broker.bus.Bus` on a :class:`MemoryBroker`. Use ``async with MemoryBus(options) as bus:``.

    Args:
        options: as for the MQTT bus; ``url`` is ``memory://NAME`` unless ``broker`` is given; ``protocol``,
            ``transport``, ``keepalive_s`` and the credentials mean nothing here.
        broker: the broker to use (else the one ``options.url`` names).
    """

    _ids = itertools.count(1)

    def __init__(self, options: BusOptions, *, broker: MemoryBroker | None = None) -> None:
        if broker is None:
            if not options.url.startswith("memory://"):
                raise BusError(f"a MemoryBus needs a memory://NAME URL, not {options.url!r}")
            broker = MemoryBroker.named(options.url.removeprefix("memory://"))
        super().__init__(options, log_fields={"broker": broker.url})
        self.broker = broker
        self.url = broker.url
        self.protocol = "5"
        self.transport = "memory"
        self.client_id = options.client_id or f"wb-mem-{next(self._ids)}"
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._dead = False
        self._last_error = ""

    # ------------------------------------------------------------------ lifecycle (BusCore's, and this step)

    async def _drain(self) -> None:
        if self.connected:
            self._connected.clear()
            self.stats.disconnects += 1
            # a clean DISCONNECT: no Will, unless the goodbye did not get through
            self.broker.disconnect(self, self.client_id, will=self.options.will if self._leave_with_will else None)

    @property
    def connected(self) -> bool:
        """Whether the bus is connected now."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected.

        Raises:
            BusConnectionError: not connected within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise BusConnectionError(
                f"could not connect to {self.url} within {timeout:g} s: {self._last_error or 'no answer'}"
            ) from None

    async def _run(self) -> None:
        attempt = 0
        while not self._closing and not self._dead:
            try:
                await self.before_connect()
                await self._session()
                attempt = 0
                delay = self.options.backoff_min_s
            except BusConnectionError as exc:
                self._last_error = str(exc)
                attempt += 1
                delay = min(self.options.backoff_max_s, self.options.backoff_min_s * 2 ** min(attempt, 10))
            if not self._closing and not self._dead:
                await asyncio.sleep(delay)

    async def _session(self) -> None:
        self._lost.clear()
        self.session_present = self.broker.connect(self, self.client_id, persistent=self.options.persistent)
        self._link += 1
        self.stats.connects += 1
        self._last_error = ""
        self._connected.set()
        self._release_held()
        self.broker.resume(self.client_id)
        for topic_filter, qos in list(self._subs.items()):
            self.broker.subscribe(self.client_id, topic_filter, qos)
        if self.options.birth is not None:
            await self.publish_raw(self.options.birth)
        for hook in self.options.on_connect:
            await hook(self, self.session_present)
        await self._lost.wait()

    def lost(self, why: str, *, will: bool = True, final: bool = False) -> None:
        """The broker ended this connection (not a clean DISCONNECT): the Will fires unless ``will`` is false;
        the bus reconnects unless ``final`` (a killed process does not come back)."""
        if not self.connected:
            return
        self._connected.clear()
        self.stats.disconnects += 1
        self._last_error = why
        self._log.warning("bus_disconnected", error=why)
        self.broker.disconnect(self, self.client_id, will=self.options.will if will else None)
        if final:
            self._dead = True
            self._closing = True
            self._wake()
        self._lost.set()

    # ------------------------------------------------------------------ what BusCore needs

    def receive(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        """The broker hands a PUBLISH over (then :meth:`deliver`; acknowledged at once without ``manual_ack``)."""
        self.deliver(topic, payload, qos, retain, mid, content_type)
        if qos and not self.options.manual_ack:
            self.broker.ack(self.client_id, mid)

    def _send_ack(self, mid: int, qos: int) -> bool:
        if not self.connected:
            return False
        self.broker.ack(self.client_id, mid)
        return True

    def _publish_nowait(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        fmt: codec.Format | None = None,
        *,
        track: bool = False,
    ) -> tuple[int, asyncio.Future[None] | None]:
        if not self.connected:
            return ERR_NO_CONN, None
        if qos not in (0, 1):
            raise QosNotSupported(f"QoS {qos} is not supported (wearbus uses 0 and 1); not published to {topic!r}")
        topic = self.outgoing_topic(topic)
        if not topic or "+" in topic or "#" in topic:
            raise PublishError(f"{topic!r} is not a topic name (no wildcards, not empty)")
        if fmt is None:
            fmt = "json" if payload[:1] == b"{" else "msgpack"
        self.broker.publish(topic, bytes(payload), qos, retain, codec.content_type(fmt))
        self.stats.published += 1
        fut: asyncio.Future[None] | None = None
        if track and qos:
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)  # the broker has it: that is what a PUBACK says
        return ERR_SUCCESS, fut

    # ------------------------------------------------------------------ the rest of the protocol

    async def publish_raw(self, out: Outgoing, *, wait: bool = False, fmt: codec.Format | None = None) -> None:
        """Publish bytes as they are (see :meth:`publish`); the broker has it when this returns."""
        rc, _ = self._publish_nowait(out.topic, out.payload, out.qos, out.retain, fmt)
        self._raise_for(rc, out.topic)
        await asyncio.sleep(0)  # a publish is a suspension point on every bus

    def publish_future(self, out: Outgoing, *, fmt: codec.Format | None = None) -> asyncio.Future[None]:
        """Publish now; the future is already complete (the broker has it)."""
        rc, fut = self._publish_nowait(out.topic, out.payload, out.qos, out.retain, fmt, track=True)
        self._raise_for(rc, out.topic)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
        return fut

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe now (if connected) and on every reconnect; the granted QoS (0 or 1).

        Raises:
            QosNotSupported: ``qos`` is not 0 or 1 (wearbus's contract uses those two).
        """
        if qos not in (0, 1):
            raise QosNotSupported(f"subscribe to {topic_filter!r} at QoS {qos}: wearbus uses QoS 0 and 1")
        self._subs[validate_filter(topic_filter)] = qos
        if not self.connected:
            return qos
        return self.broker.subscribe(self.client_id, topic_filter, qos)

    async def unsubscribe(self, topic_filter: str) -> None:
        """Stop a subscription."""
        self._subs.pop(topic_filter, None)
        if self.connected:
            self.broker.unsubscribe(self.client_id, topic_filter)
