"""The one module that touches the MQTT client libraries (aiomqtt 2.x over paho-mqtt 2.x, and :mod:`broker.mqtt`).

:class:`Bus` is an async context manager that owns its connection task. It connects by URL, speaks MQTT 5 where the
broker does and 3.1.1 otherwise, reconnects with capped, jittered backoff and re-subscribes on every connect, sets
the Will and a birth message, keeps a persistent session when asked, publishes envelopes and yields decoded
:class:`~schemas.envelope.Message` objects with the topic's identity. With ``manual_ack`` a QoS 1 message is
acknowledged only when the caller says so (:meth:`Bus.ack`), so nothing is acknowledged before it is stored.
What does not decode goes to ``wb/v1/_dlq/{reason}`` (when ``dlq`` is on) and is logged; it never raises into the
consumer's loop.

Two transports, one behaviour (the contract tests run on both):

- ``native`` (the default for ``mqtt://`` and ``mqtts://``): :class:`broker.mqtt.Connection`, our own MQTT 3.1.1 / 5
  protocol on asyncio. paho's receive path was the ceiling of the agent's ingest (docs/benchmarks.md: about half
  of the agent's CPU, and paho over MQTT 5 receives at half its MQTT 3.1.1 rate); this one parses every packet of a
  socket read in one pass and writes once per turn of the event loop. With ``manual_ack`` it stops reading from
  the socket while the consumer is a receive maximum behind (TCP backpressure: the broker keeps the rest queued).
- ``paho`` (WebSocket URLs, or ``transport="paho"`` / ``WB_TRANSPORT=paho``): aiomqtt manages the connection; its
  receive path costs a task per message, so this module takes paho's ``on_message`` callback itself and reads
  every packet already received per wake-up. Publishing goes straight to paho, checking its return code.

Either way each message is decoded on the event loop and appended to a deque (no task per message), and a full
outgoing queue is waited out, never silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel

from broker import mqtt
from broker.logs import get_logger
from broker.url import BrokerUrl
from schemas import codec
from schemas.envelope import Message, make, now_ms
from schemas.errors import BusConnectionError, ContractError, PublishError
from schemas.topics import DLQ_PREFIX, dlq_topic, validate_filter

Protocol = Literal["auto", "5", "3.1.1"]
Transport = Literal["auto", "native", "paho"]
OnConnect = Callable[["Bus", bool], Awaitable[None]]
OnReject = Callable[["Rejected"], None]

_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_READS_PER_WAKE = 256
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


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
    """How a :class:`Bus` connects and behaves.

    Attributes:
        url: the broker URL (mqtt://, mqtts://, ws://, wss://), with user and password if any.
        client_id: the MQTT client id (a random one when ``None``; persistent sessions need a stable one).
        username: overrides the URL's user.
        password: overrides the URL's password.
        protocol: "auto" tries MQTT 5 first and falls back to 3.1.1 (amqtt speaks only 3.1.1).
        transport: "auto" is the native protocol (:mod:`broker.mqtt`) for mqtt:// and mqtts:// and paho for
            WebSocket URLs; ``WB_TRANSPORT=paho`` or ``native`` overrides "auto".
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
        max_outgoing: paho's outgoing queue cap (below its 16-bit packet-id limit).
        connect_timeout_s: how long ``__aenter__`` waits for the first connection (0: do not wait).
        backoff_min_s: first reconnect delay.
        backoff_max_s: reconnect delay cap.
        name: for logs.
    """

    url: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    protocol: Protocol = "auto"
    transport: Transport = "auto"
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


@dataclass(slots=True)
class BusStats:
    """Counters a bus keeps (exposed for status lines, benchmarks and tests)."""

    received: int = 0
    rejected: int = 0
    dropped: int = 0
    published: int = 0
    connects: int = 0
    disconnects: int = 0


def _settle(waiter: asyncio.Future[bool]) -> None:
    """A wait's timer: it ended without a wake."""
    if not waiter.done():
        waiter.set_result(False)


class Bus:
    """An MQTT connection that survives the broker going away. Use ``async with Bus(options) as bus:``."""

    def __init__(self, options: BusOptions) -> None:
        self.options = options
        self.url = BrokerUrl.parse(options.url).with_credentials(options.username, options.password)
        self.stats = BusStats()
        self.session_present = False
        # WB_PROTOCOL=3.1.1 skips the MQTT 5 probe of "auto" (``wearbus up`` sets it for the embedded broker)
        env_protocol = os.environ.get("WB_PROTOCOL", "")
        self.protocol: Protocol = (
            env_protocol if options.protocol == "auto" and env_protocol in {"5", "3.1.1"} else options.protocol  # type: ignore[assignment]
        )
        env_transport = os.environ.get("WB_TRANSPORT", "")
        transport = options.transport
        if transport == "auto":
            transport = env_transport if env_transport in {"native", "paho"} else "native"  # type: ignore[assignment]
        self.transport: Transport = "paho" if self.url.websocket else transport
        self._log = get_logger("bus", bus=options.name, broker=self.url.redacted())
        self._subs: dict[str, int] = {}
        self._inbox: deque[Message] = deque()
        self._waiter: asyncio.Future[bool] | None = None
        # While next_batch lingers: the inbox size that ends it, and what ends it at once (see next_batch).
        self._fill = 0
        self._urgent: Callable[[Message], bool] | None = None
        # How many messages the broker may send before it waits for our acks, as far as we know: what a linger that
        # ran out of time had gathered. Lingering for more than that could only wait. Reset when more arrive.
        self._window = 0
        self._client: aiomqtt.Client | None = None
        self._paho: paho.Client | None = None
        self._conn: mqtt.Connection | None = None
        self._high_water = max(100, options.receive_maximum)
        self._link = 0
        self._connected = asyncio.Event()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_error: str = ""
        # paho sends an empty client id when given none, which the generated Mosquitto config refuses
        # (allow_zero_length_clientid false) with a bare "protocol error": make one up, as documented.
        self._random_id = f"wb-{random.getrandbits(48):012x}"

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"bus[{self.options.name}].connection")
        if self.options.connect_timeout_s > 0:
            try:
                await self.wait_connected(self.options.connect_timeout_s)
            except BusConnectionError:
                await self.__aexit__(None, None, None)
                raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        if self.connected and self.options.goodbye is not None:
            with contextlib.suppress(BusConnectionError, PublishError, TimeoutError):
                await asyncio.wait_for(self.publish_raw(self.options.goodbye, wait=True), 2.0)
        task = self._task
        if task is not None:
            # Cancel until it is done: on Python 3.11 aiomqtt's wait_for can swallow a cancellation that arrives
            # together with the broker's reply (bpo-42130), which would leave this waiting for ever.
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wake()

    @property
    def connected(self) -> bool:
        """Whether the bus is connected now."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected.

        Raises:
            BusConnectionError: not connected within ``timeout`` seconds, with the last error and what to do.
        """
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            error = self._last_error.lower()
            hint = (
                "The broker refused the login: check the username and password (mqtt://user:password@host:port)."
                if "not authori" in error or "bad user name" in error
                else "Is a broker running there? Start one with `wearbus broker`, or name another with --broker URL."
            )
            raise BusConnectionError(
                f"could not connect to {self.url.redacted()} within {timeout:g} s"
                f"{': ' + self._last_error if self._last_error else ''}. {hint}"
            ) from None

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            protocol = "5" if self.protocol in {"auto", "5"} else "3.1.1"
            try:
                await self._session(protocol)
                attempt = 0
            except (aiomqtt.MqttError, BusConnectionError) as exc:
                self._last_error = str(exc)
                if isinstance(exc, BusConnectionError):  # the native transport says what happened
                    refused = not isinstance(exc, mqtt.NoAnswer) and not (
                        isinstance(exc, mqtt.Refused) and exc.unsupported_version
                    )
                else:
                    refused = "refused" in str(exc).lower() and "not authori" not in str(exc).lower()
                if self.protocol == "auto" and protocol == "5" and not self.stats.connects and not refused:
                    # amqtt (and other 3.1.1-only brokers) refuse an MQTT 5 CONNECT: try 3.1.1 at once.
                    self._log.info("mqtt5_refused_trying_311", error=str(exc))
                    self.protocol = "3.1.1"
                    continue
                attempt += 1
                delay = random.uniform(0, min(self.options.backoff_max_s, self.options.backoff_min_s * 2**attempt))
                self._log.warning("bus_disconnected", error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def _session(self, protocol: str) -> None:
        if self.transport == "native":
            await self._session_native(protocol)
        else:
            await self._session_paho(protocol)

    async def _session_native(self, protocol: str) -> None:
        opts = self.options
        v5 = protocol == "5"
        will = None
        if opts.will is not None:
            will = mqtt.Will(opts.will.topic, opts.will.payload, opts.will.qos, opts.will.retain)
        spec = mqtt.ConnectSpec(
            client_id=opts.client_id or self._random_id,
            v5=v5,
            keepalive_s=opts.keepalive_s,
            clean_start=not opts.persistent,
            session_expiry_s=opts.session_expiry_s if opts.persistent else 0,
            receive_maximum=opts.receive_maximum,
            username=self.url.username,
            password=self.url.password,
            will=will,
        )

        def on_connack(session_present: bool) -> None:
            # A new link before any message of this connection is handed over: queued messages of a persistent
            # session arrive right behind the CONNACK, and their acks belong to this link.
            self.session_present = session_present
            self._link += 1

        conn = await mqtt.Connection.open(
            self.url.host,
            self.url.port,
            spec,
            self._deliver,
            manual_ack=opts.manual_ack,
            max_queued=opts.max_outgoing,
            tls=self._tls_context(),
            # A 3.1.1-only broker may not answer an MQTT 5 CONNECT at all (amqtt waits for more bytes), so the
            # MQTT 5 probe of "auto" gives up quickly; loopback and LAN brokers answer in milliseconds.
            timeout=3.0 if (v5 and self.protocol == "auto") else (opts.connect_timeout_s or 10.0),
            on_connack=on_connack,
        )
        self._conn = conn
        try:
            self._on_connected(protocol)
            try:
                if self._subs:
                    await conn.subscribe(list(self._subs.items()))
                if opts.birth is not None:
                    await self.publish_raw(opts.birth)
                for hook in opts.on_connect:
                    await hook(self, self.session_present)
                await asyncio.shield(conn.closed)
            finally:
                self._on_disconnected()
        finally:
            conn.disconnect()  # no-op when the connection is already gone; otherwise no Will for a deliberate end
            if self._conn is conn:
                self._conn = None

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.url.tls:
            return None
        context = ssl.create_default_context(cafile=self.url.ca)
        if self.url.insecure:
            context.check_hostname = False
        return context

    async def _session_paho(self, protocol: str) -> None:
        opts = self.options
        client = self._make_client(protocol)
        try:
            async with client:
                self._client = client
                self._on_connected(protocol)
                try:
                    for topic_filter, qos in self._subs.items():
                        await client.subscribe(topic_filter, qos)
                    if opts.birth is not None:
                        await self.publish_raw(opts.birth)
                    for hook in opts.on_connect:
                        await hook(self, self.session_present)
                    # shield: cancelling a task cancels the future it awaits, and aiomqtt would then skip DISCONNECT
                    await asyncio.shield(client._disconnected)
                finally:
                    self._on_disconnected()
        finally:
            if self._paho is not None and self._paho is client._client:
                self._paho = None

    def _make_client(self, protocol: str) -> aiomqtt.Client:
        opts = self.options
        v5 = protocol == "5"
        props: Properties | None = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = opts.session_expiry_s if opts.persistent else 0
            props.ReceiveMaximum = opts.receive_maximum
        will = None
        if opts.will is not None:
            will = aiomqtt.Will(opts.will.topic, opts.will.payload, opts.will.qos, opts.will.retain)
        tls_context = self._tls_context()
        client = aiomqtt.Client(
            self.url.host,
            self.url.port,
            username=self.url.username,
            password=self.url.password,
            identifier=opts.client_id or self._random_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            clean_session=None if v5 else not opts.persistent,
            clean_start=(not opts.persistent) if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            transport="websockets" if self.url.websocket else "tcp",
            websocket_path=self.url.path if self.url.websocket else None,
            keepalive=opts.keepalive_s,
            properties=props,
            tls_context=tls_context,
            max_queued_outgoing_messages=opts.max_outgoing,
            socket_options=[_NODELAY],
            # A 3.1.1-only broker may not answer an MQTT 5 CONNECT at all (amqtt waits for more bytes), so the
            # MQTT 5 probe of "auto" gives up quickly; loopback and LAN brokers answer in milliseconds.
            timeout=3.0 if (v5 and self.protocol == "auto") else (opts.connect_timeout_s or 10.0),
        )
        client.pending_calls_threshold = 10**9
        raw = client._client
        raw.manual_ack_set(opts.manual_ack)
        raw.on_message = self._on_message
        aiomqtt_on_publish: Any = raw.on_publish
        aiomqtt_on_connect: Any = raw.on_connect

        def on_publish(c: paho.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
            aiomqtt_on_publish(c, userdata, mid, rc, props)
            fut = self._pending.pop(mid, None)
            if fut is not None and not fut.done():
                if getattr(rc, "is_failure", False):
                    fut.set_exception(PublishError(f"the broker refused the publish: {rc}"))
                else:
                    fut.set_result(None)

        def on_connect(c: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            self.session_present = bool(getattr(flags, "session_present", False))
            if not getattr(rc, "is_failure", False):
                # A new link before any message of this connection is read: queued messages of a persistent
                # session arrive right behind the CONNACK, and their acks belong to this link.
                self._link += 1
                self._paho = c
            aiomqtt_on_connect(c, userdata, flags, rc, props)

        raw.on_publish = on_publish
        raw.on_connect = on_connect
        aiomqtt_on_socket_open: Any = raw.on_socket_open
        loop = asyncio.get_running_loop()

        def on_socket_open(c: paho.Client, userdata: Any, sock: Any) -> None:
            aiomqtt_on_socket_open(c, userdata, sock)
            if type(sock) is socket.socket:  # plain TCP; TLS and WebSocket keep aiomqtt's reader
                # Queued after aiomqtt's add_reader, so this one replaces it for the same descriptor.
                loop.call_soon_threadsafe(loop.add_reader, sock.fileno(), self._reader(client, c, sock))

        raw.on_socket_open = on_socket_open
        return client

    def _on_connected(self, protocol: str) -> None:
        self.protocol = "5" if protocol == "5" else "3.1.1"
        self.stats.connects += 1
        self._last_error = ""
        self._connected.set()
        self._log.info(
            "bus_connected",
            protocol=self.protocol,
            transport=self.transport,
            session_present=self.session_present,
            link=self._link,
        )

    def _on_disconnected(self) -> None:
        self._connected.clear()
        self.stats.disconnects += 1
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BusConnectionError("disconnected before the broker acknowledged the publish"))
        self._pending.clear()

    def _reader(self, client: aiomqtt.Client, raw: paho.Client, sock: socket.socket) -> Callable[[], None]:
        """A socket reader that handles the packets already received in one wake-up, not one per wake-up.

        paho's ``loop_read`` handles one packet per call while nothing of ours is in flight, and aiomqtt calls it
        once per readable event, so each message cost a full turn of the event loop (docs/benchmarks.md); a
        one-byte peek tells whether more is waiting. Once the inbox holds the receive maximum it reads one packet
        per wake-up again, as before, so the consumer keeps its turns when a broker sends beyond the receive
        maximum (Mosquitto 2.0.11 does, draining a queued session). Errors end the connection, as aiomqtt's own
        reader does.
        """
        inbox = self._inbox
        high_water = max(100, self.options.receive_maximum)

        def reader() -> None:
            try:
                for _ in range(_READS_PER_WAKE):
                    if raw.loop_read() != paho.MQTT_ERR_SUCCESS or raw.socket() is not sock or len(inbox) >= high_water:
                        return
                    try:
                        if not sock.recv(1, _PEEK):
                            return  # end of stream: the next loop_read reports it
                    except (BlockingIOError, InterruptedError):
                        return
            except Exception as exc:  # noqa: BLE001  (as aiomqtt: any failure here means the connection is broken)
                if not client._disconnected.done():
                    client._disconnected.set_exception(exc)

        return reader

    # ------------------------------------------------------------------ receiving

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        content_type = getattr(props, "ContentType", None) if props is not None else None
        payload: bytes = msg.payload  # type: ignore[assignment]  # paho hands bytes to on_message
        self._deliver(msg.topic, payload, msg.qos, bool(msg.retain), msg.mid, content_type)

    def _deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        """Every received PUBLISH, from either transport: decode, validate, queue (subclasses hook in here)."""
        try:
            message = codec.decode(
                topic, payload, content_type=content_type, qos=qos, retain=retain, mid=mid, link=self._link
            )
        except ContractError as exc:
            self._reject(topic, payload, exc, qos, retain, mid)
            return
        self.stats.received += 1
        inbox = self._inbox
        if qos == 0 and len(inbox) >= self.options.max_inbox:
            inbox.popleft()
            self.stats.dropped += 1
        inbox.append(message)
        if len(inbox) >= self._high_water and self.options.manual_ack and self._conn is not None:
            self._conn.pause()  # TCP backpressure: the broker keeps the rest until the consumer catches up
        self._wake(message)

    def _take(self, n: int) -> list[Message]:
        inbox = self._inbox
        taken = [inbox.popleft() for _ in range(min(n, len(inbox)))]
        conn = self._conn
        if conn is not None and conn.paused and len(inbox) <= self._high_water // 2:
            conn.resume()
        return taken

    def _reject(self, topic: str, payload: bytes, exc: ContractError, qos: int, retain: bool, mid: int) -> None:
        if not payload and retain:
            return  # an empty retained payload clears a retained topic: a deliberate act, not an error
        self.stats.rejected += 1
        self._log.warning("message_rejected", topic=topic, reason=exc.reason, error=exc.detail, field=exc.field)
        rejected = Rejected(topic, payload, exc)
        for handler in self.options.on_reject:
            handler(rejected)
        if self.options.dlq and not topic.startswith(DLQ_PREFIX):
            letter = codec.dead_letter(topic, payload, exc, seen_by=self.options.name)
            raw = codec.encode(make(letter, ts=now_ms()))
            self._publish_nowait(dlq_topic(exc.reason), raw, 1, False)
        if self.options.manual_ack and qos > 0:
            self._send_ack(mid, qos)  # handled: it went to the DLQ

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

    def flush(self) -> None:
        """Send what was published or acknowledged so far now, not at the end of this turn of the event loop.

        The native transport gathers the writes of one turn into one; a caller with more work before its next
        ``await`` (the agent's pump after publishing a batch's actions) calls this so the actions do not wait for it.
        """
        if self._conn is not None:
            self._conn.flush()

    def _send_ack(self, mid: int, qos: int) -> bool:
        if self._conn is not None:
            self._conn.ack(mid)
            return True
        if self._paho is not None:
            self._paho.ack(mid, qos)
            return True
        return False

    # ------------------------------------------------------------------ subscribing

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now (if connected) and again on every reconnect."""
        self._subs[validate_filter(topic_filter)] = qos
        if self.connected:
            await self._subscribe_now([(topic_filter, qos)])

    async def _subscribe_now(self, filters: list[tuple[str, int]]) -> list[int]:
        """Subscribe on the current connection; the granted QoS (or a failure code >= 0x80) per filter.

        Raises:
            BusConnectionError: not connected, or no SUBACK.
        """
        if self._conn is not None:
            return await self._conn.subscribe(filters)
        client = self._client
        if client is None or not self.connected:
            raise BusConnectionError("not connected")
        granted: list[int] = []
        for topic_filter, qos in filters:
            try:
                codes = await client.subscribe(topic_filter, qos)
            except aiomqtt.MqttError as exc:
                raise BusConnectionError(f"subscribe to {topic_filter!r} failed: {exc}") from exc
            granted += [code if isinstance(code, int) else code.value for code in codes]
        return granted

    async def unsubscribe(self, topic_filter: str) -> None:
        """Stop a subscription."""
        self._subs.pop(topic_filter, None)
        if self._conn is not None:
            with contextlib.suppress(BusConnectionError):
                await self._conn.unsubscribe([topic_filter])
        elif self._client is not None and self.connected:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.unsubscribe(topic_filter)

    # ------------------------------------------------------------------ publishing

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
            wait: for QoS 1, return only once the broker has acknowledged it.

        Raises:
            BusConnectionError: not connected (callers with an outbox keep the message and retry).
            PublishError: the broker refused it, or the outgoing queue stayed full.
        """
        await self.publish_raw(Outgoing(topic, codec.encode(envelope, fmt), qos, retain), wait=wait, fmt=fmt)

    async def publish_raw(self, out: Outgoing, *, wait: bool = False, fmt: codec.Format | None = None) -> None:
        """Publish bytes as they are (see :meth:`publish`)."""
        for _ in range(2000):
            rc, fut = self._publish_nowait(out.topic, out.payload, out.qos, out.retain, fmt, track=wait)
            if rc != paho.MQTT_ERR_QUEUE_SIZE:
                break
            await asyncio.sleep(0.005)  # the outgoing queue is full: let the network loop drain it
        else:
            raise PublishError(f"outgoing queue stayed full for 10 s; not published to {out.topic!r}")
        if rc == paho.MQTT_ERR_NO_CONN:
            raise BusConnectionError(f"not connected to {self.url.redacted()}; not published to {out.topic!r}")
        if rc != paho.MQTT_ERR_SUCCESS:
            raise PublishError(f"publish to {out.topic!r} failed: {paho.error_string(rc)}")
        if wait and fut is not None:
            await fut

    def publish_future(self, out: Outgoing, *, fmt: codec.Format | None = None) -> asyncio.Future[None]:
        """Publish without waiting; the future completes when the broker has acknowledged it (QoS 1).

        For a caller that must not stall behind the broker's answer (the agent's pump records what was
        acknowledged later). The future fails with :class:`BusConnectionError` when the connection ends first.

        Raises:
            BusConnectionError: not connected.
            PublishError: refused, or paho's outgoing queue is full (wait with :meth:`publish_raw` instead).
        """
        rc, fut = self._publish_nowait(out.topic, out.payload, out.qos, out.retain, fmt, track=True)
        if rc == paho.MQTT_ERR_NO_CONN:
            raise BusConnectionError(f"not connected to {self.url.redacted()}; not published to {out.topic!r}")
        if rc != paho.MQTT_ERR_SUCCESS:
            raise PublishError(f"publish to {out.topic!r} failed: {paho.error_string(rc)}")
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
        return fut

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
        """Publish now; (paho's return code, a future for the PUBACK when ``track`` and QoS 1)."""
        if not self.connected:
            return paho.MQTT_ERR_NO_CONN, None
        content_type = None
        if self.protocol == "5":
            if fmt is None:
                fmt = "json" if payload[:1] == b"{" else "msgpack"
            content_type = codec.content_type(fmt)
        conn = self._conn
        if conn is not None:
            rc, fut = conn.publish(topic, payload, qos, retain, content_type, track=track)
            if rc == mqtt.ERR_SUCCESS:
                self.stats.published += 1
            return rc, fut
        client = self._paho
        if client is None:
            return paho.MQTT_ERR_NO_CONN, None
        props = None
        if content_type is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = content_type
        info = client.publish(topic, payload, qos, retain, props)
        fut = None
        if info.rc == paho.MQTT_ERR_SUCCESS:
            self.stats.published += 1
            if track and qos > 0 and not info.is_published():
                fut = self._pending[info.mid] = asyncio.get_running_loop().create_future()
        return info.rc, fut
