"""The seam: what the agent, the devices, the console, the test kit and the benchmark may call on a bus.

:class:`Bus` is the public protocol. Two implementations honour it and run the same contract suite
(``tests/contract/test_bus.py``):

- :class:`broker.client.Bus`: MQTT to a real broker, on a :class:`Transport` (the native protocol of
  :mod:`broker.mqtt`, or paho through aiomqtt);
- :class:`broker.memory.MemoryBus` on a :class:`broker.memory.MemoryBroker`: the same promises in one process, without
  sockets, for tests of agent and device flows (``memory://NAME`` URLs, see :func:`broker.connect.open_bus`).

The bus modules are this one, :mod:`broker.client`, :mod:`broker.memory` and :mod:`broker.mqtt`; nothing outside
them touches an attribute of a bus or a transport that starts with ``_``. What a subclass or a wrapper may change
is a documented hook of the protocol: :meth:`Bus.before_connect` (choose the node, refuse to connect),
:meth:`Bus.outgoing_topic` and :meth:`Bus.deliver` (rewrite topics both ways) and :attr:`Bus.inbox` (hold or
reorder what arrived before the consumer takes it).

:class:`BusCore` is what both implementations share: the lifecycle (``async with``: the connection loop as the
bus's one task, in a task group the bus owns; a clean close with the goodbye) and the receive side (decode and
validate each delivery, dead-letter what does not, queue the rest in a deque, no task per message, and hand it out
with manual acknowledgement).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableSet
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

from pydantic import BaseModel

from broker.logs import get_logger
from broker.ratelog import Sampler
from schemas import codec
from schemas.envelope import Message, make, now_ms
from schemas.errors import BusConnectionError, ContractError, DecodeError, PublishError
from schemas.tasks import cancel_until_done
from schemas.topics import DLQ_PREFIX, Channel, dlq_topic, parse

#: The return codes of :meth:`Transport.publish` and ``_publish_nowait``: paho's values (``MQTTErrorCode``), so the
#: native transport, paho and the in-memory bus speak one vocabulary.
ERR_SUCCESS, ERR_NO_CONN, ERR_QUEUE_SIZE = 0, 4, 15

_GOODBYE_S = 2.0  # how long a clean close waits for the broker to take the goodbye

MqttProtocol = Literal["auto", "5", "3.1.1"]
TransportName = Literal["auto", "native", "paho"]
#: A hook run on every connect with the bus (its concrete class) and whether the session was resumed.
OnConnect = Callable[[Any, bool], Awaitable[None]]
OnReject = Callable[["Rejected"], None]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish as-is (a Will, a birth, a goodbye)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that did not decode or validate."""

    topic: str
    payload: bytes
    error: ContractError


@dataclass(slots=True)
class BusOptions:
    """How a bus connects and behaves. Built once at the edge (the command line, pydantic-settings): the library
    reads no environment variable.

    Attributes:
        url: the broker URL (mqtt://, mqtts://, ws://, wss://; memory://NAME for the in-memory bus), with user and
            password if any.
        client_id: the MQTT client id (a random one when ``None``; persistent sessions need a stable one).
        username: overrides the URL's user.
        password: overrides the URL's password.
        protocol: "auto" tries MQTT 5 first and falls back to 3.1.1 (amqtt speaks only 3.1.1).
        transport: "auto" is the native protocol (:mod:`broker.mqtt`) for mqtt:// and mqtts:// and paho for
            WebSocket URLs (which always use paho); "native" or "paho" choose one.
        persistent: keep the session (subscriptions and queued QoS 1 messages) across disconnects.
        session_expiry_s: how long the broker keeps a persistent session (MQTT 5).
        keepalive_s: MQTT keep-alive.
        manual_ack: acknowledge QoS 1 messages only through :meth:`Bus.ack`.
        receive_maximum: QoS 1 messages in flight towards us (MQTT 5), i.e. the ack window.
        will: published by the broker if we vanish.
        birth: published (retained, usually) on every connect.
        goodbye: published before a clean disconnect (a clean disconnect does not fire the Will).
        dlq: publish what does not decode to ``wb/v1/_dlq/{reason}``.
        max_inbox: QoS 0 messages buffered for a slow consumer before the oldest are dropped (and counted).
        max_outgoing: the outgoing queue cap (below the 16-bit packet-id limit).
        connect_timeout_s: how long ``__aenter__`` waits for the first connection (0: do not wait).
        backoff_min_s: first reconnect delay.
        backoff_max_s: reconnect delay cap.
        name: for logs.
        seen_retained: digests of retained messages already dead-lettered (the agent passes one it keeps on disk):
            retained garbage comes again at every subscribe, and is then acknowledged without another dead letter.
        observe_only: a bus that only looks (the agent's instance-id probe, which a broker that makes the username
            the client id hands the agent's own session): it acknowledges nothing, not even what it rejects, so
            everything it was given is delivered again to the session's real consumer.
    """

    url: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    protocol: MqttProtocol = "auto"
    transport: TransportName = "auto"
    persistent: bool = False
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    manual_ack: bool = False
    receive_maximum: int = 1000
    will: Outgoing | None = None
    birth: Outgoing | None = None
    goodbye: Outgoing | None = None
    dlq: bool = False
    max_inbox: int = 100_000
    max_outgoing: int = 20_000
    connect_timeout_s: float = 10.0
    backoff_min_s: float = 0.2
    backoff_max_s: float = 15.0
    name: str = "bus"
    on_connect: list[OnConnect] = field(default_factory=list)
    on_reject: list[OnReject] = field(default_factory=list)
    seen_retained: MutableSet[str] | None = None
    observe_only: bool = False


@dataclass(slots=True)
class BusStats:
    """Counters a bus keeps (exposed for status lines, benchmarks and tests)."""

    received: int = 0
    rejected: int = 0
    dropped: int = 0
    published: int = 0
    connects: int = 0
    disconnects: int = 0
    resent: int = 0  # untracked QoS 1 publishes sent again on a new connection (DUP when the session was resumed)
    lost: int = 0  # untracked QoS 1 publishes that could not be sent again (the bus closed first); logged
    subscriptions_refused: int = 0  # re-subscriptions the broker refused on a reconnect (each logged)
    cleared: int = 0  # empty payloads: a retained topic cleared, not an error
    qos0_dropped: int = 0  # QoS 0 publishes dropped while the socket could take no more (native; see broker.mqtt)


# ---------------------------------------------------------------------------------------------- the protocols


@runtime_checkable
class Bus(Protocol):
    """What every part of wearbus may call on a bus. Use it as ``async with bus:``; it owns its tasks.

    Attributes:
        options: how it was built.
        stats: its counters.
        session_present: whether the broker resumed a session on the last connect.
    """

    options: BusOptions
    stats: BusStats
    session_present: bool

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    @property
    def connected(self) -> bool:
        """Whether the bus is connected now."""

    @property
    def link(self) -> int:
        """Which connection this is (1, 2, ...): an acknowledgement is valid only on the link that delivered."""

    @property
    def subscriptions(self) -> dict[str, int]:
        """The topic filters subscribed (renewed on every reconnect) and their QoS."""

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected; :class:`~schemas.errors.BusConnectionError` with what to do if not in time."""

    @property
    def protocol(self) -> str:
        """The MQTT version spoken now: ``"5"`` or ``"3.1.1"`` (the in-memory bus behaves as MQTT 5)."""

    @property
    def max_packet_size(self) -> int | None:
        """The broker's Maximum Packet Size, if it announced one (an MQTT 5 CONNACK)."""

    # publishing
    async def publish(
        self,
        topic: str,
        envelope: BaseModel,
        *,
        qos: int = 1,
        retain: bool = False,
        fmt: codec.Format = "msgpack",
        wait: bool = False,
    ) -> None:
        """Encode and publish an envelope; with ``wait`` (QoS 1) return only once the broker has it."""

    async def publish_raw(self, out: Outgoing, *, wait: bool = False, fmt: codec.Format | None = None) -> None:
        """Publish bytes as they are (see :meth:`publish`)."""

    def publish_future(self, out: Outgoing, *, fmt: codec.Format | None = None) -> asyncio.Future[None]:
        """Publish now; the future completes when the broker acknowledged it, or fails when it cannot."""

    def publish_unconfirmed(self, out: Outgoing, *, fmt: codec.Format | None = None) -> None:
        """Fire and forget: hand the message to the connection now and return.

        It does NOT promise delivery: nobody learns whether the broker acknowledged it or when (the native transport
        sends an unacknowledged QoS 1 message again on the next connection and counts what the bus closed without
        in ``stats.lost``; paho may lose it). For what may be lost (a dead letter, a status line). Raises
        :class:`~schemas.errors.BusConnectionError` when not connected and
        :class:`~schemas.errors.PublishError` when the outgoing queue is full, so nothing is dropped silently.
        """

    def dead_letter(self, topic: str, payload: bytes, error: ContractError, *, seen_by: str | None = None) -> None:
        """Send what was rejected to ``wb/v1/_dlq/{reason}`` (unconfirmed: see :meth:`publish_unconfirmed`)."""

    # subscribing
    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe now (if connected) and on every reconnect; the QoS the broker granted (``qos`` while
        offline). Raises :class:`~schemas.errors.SubscribeRefused` when the broker refuses the filter and
        :class:`~schemas.errors.QosNotSupported` for a QoS other than 0 and 1."""

    async def unsubscribe(self, topic_filter: str) -> None:
        """Stop a subscription."""

    # receiving
    def messages(self) -> AsyncIterator[Message]:
        """Decoded messages as they arrive."""

    def batches(self, max_n: int = 500) -> AsyncIterator[list[Message]]:
        """What has arrived, in lists of up to ``max_n``."""

    async def next_batch(
        self,
        max_n: int = 500,
        timeout: float | None = None,
        *,
        linger: float = 0.0,
        urgent: Callable[[Message], bool] | None = None,
        enough: int | None = None,
    ) -> list[Message]:
        """What has arrived (up to ``max_n``), waiting at most ``timeout`` s for the first; may be empty."""

    def ack(self, message: Message) -> bool:
        """Acknowledge a QoS 1 message received with ``manual_ack``; whether the acknowledgement was sent."""

    def flush(self) -> None:
        """Send what was published or acknowledged so far now, not at the end of this turn of the event loop."""

    # hooks for a subclass or wrapper (the cluster member's PartitionBus, the test kit's RawBus)
    @property
    def inbox(self) -> deque[Message]:
        """What arrived and was not taken yet, oldest first; a hook may hold or reorder it in place."""

    async def before_connect(self) -> None:
        """Runs before every (re)connect: may set ``url`` (the node to try) or raise
        :class:`~schemas.errors.BusConnectionError` to skip this attempt."""

    def outgoing_topic(self, topic: str) -> str:
        """The topic a publish to ``topic`` goes to (every publish path calls it); the same by default."""

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        """Every PUBLISH received: decode, validate, queue or dead-letter. An override may rewrite the topic or
        look at the bytes, then call the original."""


class Transport(Protocol):
    """One connection to a broker, as :class:`broker.client.Bus` drives it (the native :class:`broker.mqtt.Connection`
    and :class:`broker.client.PahoTransport`). Return codes are paho's (:data:`ERR_SUCCESS` and the others), one
    vocabulary for both.

    ``closed`` completes when the connection ends (with ``None`` after :meth:`disconnect`, with a
    :class:`~schemas.errors.BusConnectionError` otherwise).
    """

    closed: asyncio.Future[None]

    @property
    def connected(self) -> bool:
        """Whether the CONNACK came and the connection is open."""

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        content_type: str | None = None,
        *,
        track: bool = False,
    ) -> tuple[int, asyncio.Future[None] | None]:
        """Send a PUBLISH: (return code, a future for the PUBACK when ``track`` and QoS 1)."""

    def ack(self, mid: int) -> None:
        """Send the PUBACK of a QoS 1 message received with manual acknowledgement."""

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> list[int]:
        """SUBSCRIBE; the SUBACK codes (granted QoS, or failure codes >= 0x80) per filter."""

    async def unsubscribe(self, filters: list[str], timeout: float = 10.0) -> None:
        """UNSUBSCRIBE."""

    def flush(self) -> None:
        """Write what waits now."""

    async def wait_acknowledged(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until what was published at QoS 1 is acknowledged (a clean close);
        whether nothing is left unacknowledged."""

    def pause(self) -> None:
        """Stop reading (TCP backpressure towards the broker)."""

    def resume(self) -> None:
        """Read again."""

    @property
    def paused(self) -> bool:
        """Whether reading is paused."""

    def disconnect(self, *, will: bool = False) -> None:
        """DISCONNECT (no Will) and close; with ``will``, close without DISCONNECT (the broker publishes the Will)."""


# ---------------------------------------------------------------------------------------------- the shared receive side


def _settle(waiter: asyncio.Future[bool]) -> None:
    """A wait's timer: it ended without a wake."""
    if not waiter.done():
        waiter.set_result(False)


_RETAINED = frozenset({Channel.STATE, Channel.CONTEXT, Channel.AGENT_STATE})


def retained_digest(topic: str, payload: bytes) -> str:
    """What identifies a retained message (for :attr:`BusOptions.seen_retained`): its topic and bytes."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


def _retained_topic(topic: str) -> bool:
    """Whether the contract makes ``topic`` a retained one (a device's or agent's state, a user's context)."""
    try:
        return parse(topic).channel in _RETAINED
    except ContractError:
        return False


class BusCore:
    """The receive side, the lifecycle and the hooks both bus implementations share (see the module's docstring).

    A subclass provides the connection: ``connected``, :meth:`wait_connected`, :meth:`_run` (the connection loop,
    run as the bus's one task), :meth:`_send_ack`, :meth:`_publish_nowait` (and may pause and resume reading through
    :meth:`_pause_reading` / :meth:`_resume_reading`, and add to a clean close through :meth:`_drain` and
    :meth:`_stopped`).

    Lifecycle: ``async with bus:`` starts :meth:`_run` in a :class:`asyncio.TaskGroup` the bus owns and waits up to
    ``connect_timeout_s`` for the first connection; on exit it publishes the goodbye, drains, stops the task and
    leaves the group, which awaits it: an exception of the connection loop is raised from ``async with`` (and
    cancels the task that entered it at once, as a task group does), never lost.
    """

    def __init__(self, options: BusOptions, *, log_fields: dict[str, str] | None = None) -> None:
        self.options = options
        self.stats = BusStats()
        self.session_present = False
        self._log = get_logger("bus", bus=options.name, **(log_fields or {}))
        self._subs: dict[str, int] = {}
        self._inbox: deque[Message] = deque()
        self._waiter: asyncio.Future[bool] | None = None
        # While next_batch lingers: the inbox size that ends it, and what ends it at once (see next_batch).
        self._fill = 0
        self._urgent: Callable[[Message], bool] | None = None
        # How many messages the broker may send before it waits for our acks, as far as we know: what a linger that
        # ran out of time had gathered. Lingering for more than that could only wait. Reset when more arrive.
        self._window = 0
        self._high_water = max(100, options.receive_maximum)
        self._link = 0
        self._closing = False
        #: the goodbye was not acknowledged at close: the connection ends without DISCONNECT, so that the broker
        #: publishes the Will (which says the same) instead of dropping it
        self._leave_with_will = False
        # Rejected before the connection was up (a persistent session's queue arrives right behind the CONNACK):
        # (link, mid, qos, DLQ topic, dead letter), published and acknowledged once it is (:meth:`_release_held`).
        self._held: list[tuple[int, int, int, str, bytes]] = []
        self._reject_log = Sampler(5)
        self._stack: contextlib.AsyncExitStack | None = None
        self._runner: asyncio.Task[None] | None = None

    @property
    def max_packet_size(self) -> int | None:
        """The broker's Maximum Packet Size, if it announced one (an MQTT 5 CONNACK); ``None`` here."""
        return None

    # ------------------------------------------------------------------ lifecycle (shared)

    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        stack.push_async_callback(self._stop)  # before the group's exit, which awaits the stopped task
        self._runner = tasks.create_task(self._run(), name=f"bus[{self.options.name}].connection")
        self._stack = stack
        if self.options.connect_timeout_s > 0:
            try:
                await self.wait_connected(self.options.connect_timeout_s)
            except BaseException:
                await self.__aexit__(None, None, None)  # the task's own exception, if it failed, else this one
                raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop and leave the task group; it raises what the connection task raised (an ExceptionGroup). The
        group is left as after a clean exit: an exception of the ``async with`` body stays the caller's, not the
        group's."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _stop(self) -> None:
        """A clean close: the goodbye, :meth:`_drain`, the connection task stopped, :meth:`_stopped`."""
        self._closing = True
        goodbye = self.options.goodbye
        if self.connected and goodbye is not None:
            try:
                async with asyncio.timeout(_GOODBYE_S):
                    await self.publish_raw(goodbye, wait=True)
            except (BusConnectionError, PublishError, TimeoutError):
                # A clean DISCONNECT would drop the Will too, and leave the retained birth saying "online".
                self._leave_with_will = self.options.will is not None
        await self._drain()
        runner = self._runner
        # cancelled again every second: its clean-up (the DISCONNECT) is quick; the task group awaits it
        cancelled = await cancel_until_done([runner], every_s=1.0) if runner is not None else None
        self._stopped()
        self._wake()
        if cancelled is not None:  # our own cancellation, which came while the connection task stopped
            raise cancelled

    # ------------------------------------------------------------------ what a subclass provides

    @property
    def connected(self) -> bool:
        """Whether the bus is connected now."""
        raise NotImplementedError

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected; :class:`~schemas.errors.BusConnectionError` if not in time."""
        raise NotImplementedError

    async def _run(self) -> None:
        """The connection loop (connect, serve, reconnect) until the bus closes: the bus's one task."""
        raise NotImplementedError

    async def _drain(self) -> None:
        """On a clean close, after the goodbye and before the connection task is stopped."""

    def _stopped(self) -> None:
        """On a clean close, once the connection task is done."""

    def _send_ack(self, mid: int, qos: int) -> bool:
        raise NotImplementedError

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
        raise NotImplementedError

    def _pause_reading(self) -> None:
        """The inbox holds the receive maximum (manual ack): stop reading if the transport can."""

    def _resume_reading(self) -> None:
        """The inbox is half empty again."""

    # ------------------------------------------------------------------ public state and hooks

    @property
    def link(self) -> int:
        """Which connection this is (1, 2, ...): an acknowledgement is valid only on the link that delivered."""
        return self._link

    @property
    def subscriptions(self) -> dict[str, int]:
        """The topic filters subscribed (renewed on every reconnect) and their QoS (a copy)."""
        return dict(self._subs)

    @property
    def inbox(self) -> deque[Message]:
        """What arrived and was not taken yet, oldest first; a hook may hold or reorder it in place."""
        return self._inbox

    @property
    def log(self) -> Any:
        """This bus's structlog logger (bound to its name), for a subclass's own events."""
        return self._log

    async def before_connect(self) -> None:
        """Runs before every (re)connect; may set the URL to try or raise BusConnectionError to skip it."""

    def outgoing_topic(self, topic: str) -> str:
        """The topic a publish to ``topic`` goes to (every publish path calls it); the same by default."""
        return topic

    # ------------------------------------------------------------------ publishing (shared)

    async def publish(
        self,
        topic: str,
        envelope: BaseModel,
        *,
        qos: int = 1,
        retain: bool = False,
        fmt: codec.Format = "msgpack",
        wait: bool = False,
    ) -> None:
        """Encode and publish an envelope.

        Args:
            topic: where to.
            envelope: an :class:`~schemas.envelope.Envelope` (see :func:`schemas.envelope.make`).
            qos: 0 or 1.
            retain: keep it as the topic's retained message.
            fmt: msgpack (default) or json.
            wait: for QoS 1, return only once the broker has acknowledged it. Without it the publish is
                fire-and-forget for the caller: a refusal by the broker is only logged, and a message the connection
                ends without is sent again on the next connection (native transport; with DUP when the session is
                resumed), or counted in ``stats.lost`` and logged if the bus closes first. The paho transport loses
                it with the connection.

        Raises:
            BusConnectionError: not connected (callers with an outbox keep the message and retry).
            PublishError: the broker refused it, or the outgoing queue stayed full.
            MessageTooLarge: larger than the broker's Maximum Packet Size (never sent; do not retry it).
            QosNotSupported: ``qos`` is not 0 or 1, or above the broker's Maximum QoS.
        """
        await self.publish_raw(Outgoing(topic, codec.encode(envelope, fmt), qos, retain), wait=wait, fmt=fmt)

    async def publish_raw(self, out: Outgoing, *, wait: bool = False, fmt: codec.Format | None = None) -> None:
        """Publish bytes as they are (see :meth:`publish`)."""
        raise NotImplementedError

    def publish_unconfirmed(self, out: Outgoing, *, fmt: codec.Format | None = None) -> None:
        """Fire and forget: hand the message to the connection now and return.

        It does NOT promise delivery: nobody learns whether the broker acknowledged it or when (the native transport
        sends an unacknowledged QoS 1 message again on the next connection and counts what the bus closed without
        in ``stats.lost``; paho may lose it). For what may be lost (a dead letter, a status line).

        Raises:
            BusConnectionError: not connected.
            PublishError: the outgoing queue is full or the connection refused it.
        """
        rc, _ = self._publish_nowait(out.topic, out.payload, out.qos, out.retain, fmt)
        self._raise_for(rc, out.topic)

    def _raise_for(self, rc: int, topic: str) -> None:
        if rc == ERR_NO_CONN:
            raise BusConnectionError(f"not connected to the broker; not published to {topic!r}")
        if rc == ERR_QUEUE_SIZE:
            raise PublishError(f"the outgoing queue is full; not published to {topic!r}")
        if rc != ERR_SUCCESS:
            raise PublishError(f"publish to {topic!r} failed (code {rc})")

    def dead_letter(self, topic: str, payload: bytes, error: ContractError, *, seen_by: str | None = None) -> None:
        """Send what was rejected to ``wb/v1/_dlq/{reason}`` (unconfirmed: see :meth:`publish_unconfirmed`)."""
        letter = codec.dead_letter(topic, payload, error, seen_by=self.options.name if seen_by is None else seen_by)
        self.publish_unconfirmed(Outgoing(dlq_topic(error.reason), codec.encode(make(letter, ts=now_ms())), 1))

    # ------------------------------------------------------------------ receiving

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        """Every received PUBLISH: decode, validate, queue (an override may rewrite the topic, then call this)."""
        try:
            message = codec.decode(
                topic, payload, content_type=content_type, qos=qos, retain=retain, mid=mid, link=self._link
            )
        except ContractError as exc:
            self._reject(topic, payload, exc, qos, retain, mid)
            return
        except Exception as exc:  # noqa: BLE001  (whatever decoding raises, the message ends on the DLQ, acknowledged)
            error = DecodeError(f"decoding failed: {type(exc).__name__}: {str(exc)[:200]}", topic=topic)
            self._reject(topic, payload, error, qos, retain, mid)
            return
        self.stats.received += 1
        inbox = self._inbox
        if qos == 0 and len(inbox) >= self.options.max_inbox:
            inbox.popleft()
            self.stats.dropped += 1
        inbox.append(message)
        if len(inbox) >= self._high_water and self.options.manual_ack:
            self._pause_reading()  # TCP backpressure: the broker keeps the rest until the consumer catches up
        self._wake(message)

    def _take(self, n: int) -> list[Message]:
        inbox = self._inbox
        taken = [inbox.popleft() for _ in range(min(n, len(inbox)))]
        if len(inbox) <= self._high_water // 2:
            self._resume_reading()
        return taken

    def _reject(self, topic: str, payload: bytes, exc: ContractError, qos: int, retain: bool, mid: int) -> None:
        """A message that will never be accepted: a dead letter (once), one sampled log line, an acknowledgement.

        Whatever the connection's state: rejected before it is up, both wait for it (:meth:`_release_held`).
        """
        opts = self.options
        ack = opts.manual_ack and qos > 0 and not opts.observe_only
        if not payload and (retain or _retained_topic(topic)):
            # An empty payload clears a retained topic: a deliberate act, not an error (the copy forwarded to a
            # live subscriber has its retain flag cleared, so the topic tells).
            self.stats.cleared += 1
            if ack and not self._send_ack(mid, qos):
                self._held.append((self._link, mid, qos, "", b""))
            return
        seen = opts.seen_retained
        if retain and seen is not None:
            digest = retained_digest(topic, payload)
            if digest in seen:  # dead-lettered at an earlier start: acknowledged, not dead-lettered again
                if ack and not self._send_ack(mid, qos):
                    self._held.append((self._link, mid, qos, "", b""))
                return
            seen.add(digest)
        self.stats.rejected += 1
        sampler = self._reject_log
        if sampler.allow(exc.reason):  # one line each, a few a second, never the payload
            self._log.warning(
                "message_rejected", topic=topic, reason=exc.reason, error=exc.detail, field=exc.field,
                size=len(payload), retain=retain, suppressed=sampler.take_suppressed(),
            )  # fmt: skip
        rejected = Rejected(topic, payload, exc)
        for handler in opts.on_reject:
            handler(rejected)
        dlq, raw = "", b""
        if opts.dlq and not topic.startswith(DLQ_PREFIX):
            letter = codec.dead_letter(topic, payload, exc, seen_by=opts.name)
            dlq, raw = dlq_topic(exc.reason), codec.encode(make(letter, ts=now_ms()))
        if not self.connected:
            self._held.append((self._link, mid if ack else 0, qos if ack else 0, dlq, raw))
            return
        if dlq:
            self._send_dead_letter(topic, dlq, raw)
        if ack:
            self._send_ack(mid, qos)  # handled: it went to the DLQ

    def _send_dead_letter(self, topic: str, dlq: str, raw: bytes) -> None:
        try:
            self.publish_unconfirmed(Outgoing(dlq, raw, 1))
        except (BusConnectionError, PublishError) as error:
            self._log.warning("dead_letter_not_sent", topic=topic, error=str(error))

    def _release_held(self) -> None:
        """Once connected: the dead letters and acknowledgements of what was rejected while the bus was not."""
        held, self._held = self._held, []
        for link, mid, qos, dlq, letter in held:
            if dlq:
                self._send_dead_letter("", dlq, letter)
            if qos and link == self._link:  # an ack is valid on its own connection only; else the broker sends it again
                self._send_ack(mid, qos)

    def _wake(self, message: Message | None = None) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if message is not None and self._fill and len(self._inbox) < self._fill:
            urgent = self._urgent
            if urgent is None or not urgent(message):
                return  # lingering: neither full nor urgent yet
        waiter.set_result(True)

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for :meth:`_wake` or ``timeout`` seconds; whether it was woken (a plain future and a timer: cheaper
        than ``asyncio.wait``, and this runs once per pump turn)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        timer = None if timeout is None else loop.call_later(timeout, _settle, waiter)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def messages(self) -> AsyncIterator[Message]:
        """Yield decoded messages as they arrive (for ever; stop by breaking out or cancelling)."""
        inbox = self._inbox
        while not self._closing or inbox:
            while inbox:
                yield self._take(1)[0]
            await self._wait_inbox()

    async def batches(self, max_n: int = 500) -> AsyncIterator[list[Message]]:
        """Yield what has arrived in lists of up to ``max_n`` (one store commit per list, one wake-up per burst)."""
        inbox = self._inbox
        while not self._closing or inbox:
            if inbox:
                yield self._take(max_n)
                continue
            await self._wait_inbox()

    async def next_batch(
        self,
        max_n: int = 500,
        timeout: float | None = None,
        *,
        linger: float = 0.0,
        urgent: Callable[[Message], bool] | None = None,
        enough: int | None = None,
    ) -> list[Message]:
        """What has arrived (up to ``max_n``), waiting at most ``timeout`` seconds for the first; may be empty.

        Unlike cancelling an ``async for``, a timeout here loses nothing: the next call gets what came meanwhile.

        Args:
            max_n: messages at most.
            timeout: seconds to wait for the first message (None: for ever; 0: just let the event loop run once).
            linger: once something is here, wait up to this many seconds more for a fuller batch, unless ``max_n``
                are here or a message for which ``urgent`` is true arrives (it ends the wait at once). A consumer
                with a fixed cost per batch (a transaction) pays it less often; what is urgent does not wait. The
                wait is also cut short at the number of messages a linger that ran out of time had gathered: a
                broker that sends only so many before it waits for our acks (Mosquitto's ``max_inflight_messages``)
                costs one linger, not one per batch. When more than that are waiting, they are taken at once (it
                was not the broker's window, or the broker sent a burst, as Mosquitto does now and then to a session
                that comes back) and the next linger that runs out learns again.
            urgent: see ``linger``.
            enough: no linger once this many are waiting (default ``max_n``): a batch that size already spreads
                the consumer's fixed cost, and waiting for more would only leave the consumer idle.
        """
        inbox = self._inbox
        if not inbox and not self._closing:
            await self._wait(timeout)
        if linger > 0 and inbox and not self._closing:
            if self._window and len(inbox) > self._window:
                self._window = 0  # more than we thought the broker would send: already a fuller batch than that
                return self._take(max_n)
            fill = min(max_n, enough or max_n, self._window or max_n)
            if len(inbox) < fill and (urgent is None or not any(map(urgent, inbox))):
                self._fill, self._urgent = fill, urgent
                try:
                    woken = await self._wait(linger)
                finally:
                    self._fill, self._urgent = 0, None
                if not woken:
                    self._window = len(inbox)  # no more came: perhaps all the broker sends before our acks
        return self._take(max_n)

    async def _wait_inbox(self) -> None:
        if not self._closing:
            await self._wait(None)

    def ack(self, message: Message) -> bool:
        """Acknowledge a QoS 1 message received with ``manual_ack`` (call it once it is safely processed).

        Returns:
            whether a PUBACK was sent; false when the connection that delivered it is gone (the broker will deliver
            it again on the persistent session, and deduplication by id makes that harmless).
        """
        if not self.options.manual_ack or message.qos == 0 or message.link != self._link:
            return False
        return self._send_ack(message.mid, message.qos)

    def pass_over(self, qos: int, mid: int) -> None:
        """A received PUBLISH this client leaves to another one, unread: acknowledge it (under ``manual_ack``) as a
        message handled elsewhere. For a :meth:`deliver` override that selects what it reads (a worker of
        ``wearbus agent --workers`` reads its own users only); held like a rejection while the connection is not up."""
        opts = self.options
        if opts.manual_ack and qos > 0 and not opts.observe_only and not self._send_ack(mid, qos):
            self._held.append((self._link, mid, qos, "", b""))

    def flush(self) -> None:
        """Send what was published or acknowledged so far now (the default: nothing waits)."""
