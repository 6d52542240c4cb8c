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
- ``paho`` (WebSocket URLs, or ``transport="paho"``; the CLI maps ``WB_TRANSPORT``): aiomqtt manages the connection; its
  receive path costs a task per message, so this module takes paho's ``on_message`` callback itself and reads
  every packet already received per wake-up. Publishing goes straight to paho, checking its return code.

Either way each message is decoded on the event loop and appended to a deque (no task per message), and a full
outgoing queue is waited out, never silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker import mqtt
from broker.bus import (
    BusCore,
    BusOptions,
    BusStats,
    MqttProtocol,
    OnConnect,
    OnReject,
    Outgoing,
    Rejected,
    Transport,
    TransportName,
)
from broker.url import BrokerUrl
from schemas import codec
from schemas.errors import BusConnectionError, PublishError, QosNotSupported, SubscribeRefused
from schemas.tasks import cancellation_kept
from schemas.topics import validate_filter

#: The MQTT protocol version a bus asks for (the name callers import).
Protocol = MqttProtocol

__all__ = [
    "Bus",
    "BusOptions",
    "BusStats",
    "OnConnect",
    "OnReject",
    "Outgoing",
    "PahoTransport",
    "Protocol",
    "Rejected",
    "TransportName",
]

_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_READS_PER_WAKE = 256
#: A filter the broker refuses on this many reconnects in a row is dropped (a refusal may be transient: nats-server
#: answered 0x80 under load, and the cluster reconnects to try again), so it is not re-subscribed for ever.
MAX_REFUSALS = 3
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def _login_refused(exc: Exception) -> bool:
    """Whether the broker refused the CONNECT for the credentials (3.1.1 codes 4, 5; MQTT 5 0x86, 0x87, 0x8C), by
    the CONNACK's code (both transports raise :class:`~broker.mqtt.Refused`: see :func:`_connect_error`)."""
    return isinstance(exc, mqtt.Refused) and exc.code in _LOGIN_REFUSED


def _answered(exc: Exception) -> bool:
    """Whether the broker answered the CONNECT (an MQTT 5 probe not answered, or answered with "unsupported
    protocol version", means a 3.1.1-only broker: try 3.1.1)."""
    if isinstance(exc, mqtt.Refused):
        return not exc.unsupported_version
    return isinstance(exc, BusConnectionError) and not isinstance(exc, mqtt.NoAnswer)


def _connect_error(exc: aiomqtt.MqttError) -> BusConnectionError:
    """aiomqtt's failure to connect, in the native transport's terms: :class:`~broker.mqtt.Refused` with the
    CONNACK's code (paho's :class:`ReasonCode`, or the 3.1.1 return code), :class:`~broker.mqtt.NoAnswer` when no
    CONNACK came in time (aiomqtt raises its timeout from a :class:`TimeoutError`), else a
    :class:`~schemas.errors.BusConnectionError` (the socket's error)."""
    if isinstance(exc, MqttConnectError):
        rc = exc.rc
        code = rc.value if isinstance(rc, ReasonCode) else int(rc or 0)
        # a 3.1.1-only broker answers an MQTT 5 CONNECT with its code 1 (unacceptable protocol version)
        return mqtt.Refused(str(exc), code, unsupported_version=code in (0x01, 0x84))
    if isinstance(exc.__context__, TimeoutError):
        return mqtt.NoAnswer(str(exc))
    return BusConnectionError(str(exc))


_LOGIN_REFUSED = frozenset({4, 5, 0x86, 0x87, 0x8C})


class Bus(BusCore):
    """An MQTT connection that survives the broker going away. Use ``async with Bus(options) as bus:``.

    It implements :class:`broker.bus.Bus` on a :class:`broker.bus.Transport`: :class:`broker.mqtt.Connection` (native)
    or :class:`PahoTransport`; everything above the transport (reconnects, subscriptions, the receive loop) is the
    same for both.
    """

    def __init__(self, options: BusOptions) -> None:
        url = BrokerUrl.parse(options.url).with_credentials(options.username, options.password)
        super().__init__(options, log_fields={"broker": url.redacted()})
        self.url = url
        self.protocol: Protocol = options.protocol
        transport = "native" if options.transport == "auto" else options.transport
        self.transport: TransportName = "paho" if self.url.websocket else transport
        self._client: aiomqtt.Client | None = None
        self._wire: Transport | None = None
        self._carried: mqtt.Unacknowledged | None = None  # untracked QoS 1 publishes for the next connection
        self._refusals: dict[str, int] = {}  # filter -> reconnects in a row on which the broker refused it
        self._connected = asyncio.Event()
        self._last_error: str = ""
        self._login_refused = asyncio.Event()  # the first login was refused: no retry, wait_connected says why
        self._last_refused_login = False  # the last attempt's CONNACK refused the credentials (wait_connected's hint)
        # paho sends an empty client id when given none, which the generated Mosquitto config refuses
        # (allow_zero_length_clientid false) with a bare "protocol error": make one up, as documented.
        self._random_id = f"wb-{random.getrandbits(48):012x}"

    # ------------------------------------------------------------------ lifecycle (BusCore's, and these two steps)

    async def _drain(self) -> None:
        wire = self._wire
        if wire is not None and self.connected:
            await wire.wait_acknowledged(2.0)  # what was published without waiting gets its PUBACK before we go

    def _stopped(self) -> None:
        carried, self._carried = self._carried, None
        if carried:
            self.stats.lost += len(carried)
            self._log.warning("unacknowledged_publishes_lost", count=len(carried))

    @property
    def connected(self) -> bool:
        """Whether the bus is connected now."""
        return self._connected.is_set()

    @property
    def max_packet_size(self) -> int | None:
        """The broker's Maximum Packet Size from its CONNACK (MQTT 5, native transport), if it gave one."""
        wire = self._wire
        if isinstance(wire, mqtt.Connection) and wire.stats.server.get("0x27"):
            return wire.server_max_packet
        return None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected.

        Raises:
            BusConnectionError: not connected within ``timeout`` seconds, with the last error and what to do.
        """
        try:
            async with asyncio.timeout(timeout):
                # A connection may end again before we look (its subscription failed): then wait for the next one.
                while not self.connected and not self._login_refused.is_set():
                    waits = [asyncio.ensure_future(event.wait()) for event in (self._login_refused, self._connected)]
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiting in waits:
                            waiting.cancel()
                        await asyncio.gather(*waits, return_exceptions=True)
            if not self.connected:
                raise BusConnectionError(
                    f"{self.url.redacted()} refused the login: {self._last_error}. Check the username and "
                    "password (mqtt://user:password@host:port, or --username/--password)."
                )
        except TimeoutError:
            hint = (
                "The broker refused the login: check the username and password (mqtt://user:password@host:port)."
                if self._last_refused_login
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
                self._last_refused_login = _login_refused(exc)
                if self.protocol == "auto" and protocol == "5" and not self.stats.connects and not _answered(exc):
                    # amqtt (and other 3.1.1-only brokers) refuse an MQTT 5 CONNECT: try 3.1.1 at once.
                    self._log.info("mqtt5_refused_trying_311", error=str(exc))
                    self.protocol = "3.1.1"
                    continue
                if not self.stats.connects and self._last_refused_login:  # never logged in: retrying will not help
                    self._log.error("bus_login_refused", error=str(exc))
                    self._login_refused.set()
                    return
                attempt += 1
                delay = random.uniform(0, min(self.options.backoff_max_s, self.options.backoff_min_s * 2**attempt))
                self._log.warning("bus_disconnected", error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def _session(self, protocol: str) -> None:
        url = self.url
        await self.before_connect()
        if self.url != url:  # a subclass moved to another node: the log names the broker we talk to now
            self._log = self._log.bind(broker=self.url.redacted())
        if self.transport == "native":
            await self._session_native(protocol)
        else:
            await self._session_paho(protocol)

    async def _serve(self, wire: Transport, protocol: str, closed: asyncio.Future[None]) -> None:
        """One connection's life above the transport: renew subscriptions, the birth, the hooks; wait for its end."""
        self._wire = wire
        try:
            self._on_connected(protocol)
            try:
                if self._subs:
                    await self._renew_subscriptions(wire)
                if self.options.birth is not None:
                    await self.publish_raw(self.options.birth)
                for hook in self.options.on_connect:
                    await hook(self, self.session_present)
                # shield: cancelling a task cancels the future it awaits (aiomqtt would then skip DISCONNECT)
                await asyncio.shield(closed)
            finally:
                self._on_disconnected()
        finally:
            if self._wire is wire:
                self._wire = None

    async def _renew_subscriptions(self, wire: Transport) -> None:
        """Subscribe every filter again. A filter the broker refuses is logged and counted; refused on
        ``MAX_REFUSALS`` reconnects in a row, it is dropped (not re-subscribed for ever)."""
        filters = list(self._subs.items())
        codes = await wire.subscribe(filters)
        for (topic_filter, _), code in zip(filters, codes, strict=False):
            if code < 0x80:
                self._refusals.pop(topic_filter, None)
                continue
            self.stats.subscriptions_refused += 1
            times = self._refusals[topic_filter] = self._refusals.get(topic_filter, 0) + 1
            dropped = times >= MAX_REFUSALS
            if dropped:
                self._subs.pop(topic_filter, None)
                self._refusals.pop(topic_filter, None)
            self._log.error(
                "subscription_refused", filter=topic_filter, reason=mqtt.reason_text(code), times=times, dropped=dropped
            )

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
            self.deliver,
            manual_ack=opts.manual_ack,
            max_queued=opts.max_outgoing,
            tls=self._tls_context(),
            # A 3.1.1-only broker may not answer an MQTT 5 CONNECT at all (amqtt waits for more bytes), so the
            # MQTT 5 probe of "auto" gives up quickly; loopback and LAN brokers answer in milliseconds.
            timeout=3.0 if (v5 and self.protocol == "auto") else (opts.connect_timeout_s or 10.0),
            on_connack=on_connack,
            resend=self._carried,
        )
        self._carried = None  # the connection owns them now (see mqtt.Connection.open)
        self.stats.resent += conn.stats.resent
        try:
            await self._serve(conn, protocol, conn.closed)
        finally:
            # no-op when the connection is already gone; otherwise no Will for a deliberate end, unless the goodbye
            # did not reach the broker (then the Will must say it)
            conn.disconnect(will=self._leave_with_will)
            carried = conn.unacknowledged()
            self.stats.lost += conn.stats.lost
            self.stats.qos0_dropped += conn.stats.qos0_dropped
            if carried:
                self._carried = carried

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.url.tls:
            return None
        context = ssl.create_default_context(cafile=self.url.ca)
        if self.url.insecure:
            context.check_hostname = False
        return context

    async def _session_paho(self, protocol: str) -> None:
        client, wire = self._make_client(protocol)
        async with contextlib.AsyncExitStack() as stack:
            try:
                with cancellation_kept():  # connected, but stopped meanwhile: the stack disconnects
                    await stack.enter_async_context(client)
            except aiomqtt.MqttError as exc:
                raise _connect_error(exc) from exc
            self._client = client
            try:
                await self._serve(wire, protocol, client._disconnected)
            finally:
                wire.fail_all(BusConnectionError("disconnected before the broker acknowledged the publish"))
                self._client = None

    def _make_client(self, protocol: str) -> tuple[aiomqtt.Client, PahoTransport]:
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
        wire = PahoTransport(client, v5=v5)
        aiomqtt_on_publish: Any = raw.on_publish
        aiomqtt_on_connect: Any = raw.on_connect

        def on_publish(c: paho.Client, userdata: Any, mid: int, rc: ReasonCode, props: Properties) -> None:
            aiomqtt_on_publish(c, userdata, mid, rc, props)
            wire.acked(mid, rc)

        def on_connect(
            c: paho.Client, userdata: Any, flags: paho.ConnectFlags, rc: ReasonCode, props: Properties | None
        ) -> None:
            self.session_present = flags.session_present
            if not rc.is_failure:
                # A new link before any message of this connection is read: queued messages of a persistent
                # session arrive right behind the CONNACK, and their acks belong to this link.
                self._link += 1
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
        return client, wire

    def _on_connected(self, protocol: str) -> None:
        self.protocol = "5" if protocol == "5" else "3.1.1"
        self.stats.connects += 1
        self._last_error = ""
        self._connected.set()
        limit = self.max_packet_size
        if limit is not None and limit < codec.MAX_PAYLOAD + codec.PACKET_OVERHEAD:
            self._log.warning(
                "broker_packet_limit_below_contract", broker_limit=limit, contract_limit=codec.MAX_PAYLOAD,
                hint="events up to the contract's limit are valid but this broker refuses them: raise its "
                f"max_packet_size to {codec.MAX_PAYLOAD + codec.PACKET_OVERHEAD} (the generated config's)",
            )  # fmt: skip
        self._release_held()
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
        self.deliver(msg.topic, payload, msg.qos, bool(msg.retain), msg.mid, content_type)

    def flush(self) -> None:
        """Send what was published or acknowledged so far now, not at the end of this turn of the event loop.

        The native transport gathers the writes of one turn into one; a caller with more work before its next
        ``await`` (the agent's pump after publishing a batch's actions) calls this so the actions do not wait for it.
        """
        if self._wire is not None:
            self._wire.flush()

    def _send_ack(self, mid: int, qos: int) -> bool:
        if self._wire is None:
            return False
        self._wire.ack(mid)
        return True

    def _pause_reading(self) -> None:
        if self._wire is not None:
            self._wire.pause()

    def _resume_reading(self) -> None:
        wire = self._wire
        if wire is not None and wire.paused:
            wire.resume()

    # ------------------------------------------------------------------ subscribing

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe now (if connected) and again on every reconnect.

        Returns:
            the QoS the broker granted (``qos`` itself while not connected: the subscription is made on connect).

        Raises:
            QosNotSupported: ``qos`` is not 0 or 1 (wearbus's contract uses those two).
            SubscribeRefused: the broker refused the filter (the subscription is then forgotten, not retried).
            BusConnectionError: connected, but no SUBACK came.
        """
        if qos not in (0, 1):
            raise QosNotSupported(f"subscribe to {topic_filter!r} at QoS {qos}: wearbus uses QoS 0 and 1")
        self._subs[validate_filter(topic_filter)] = qos
        if not self.connected:
            return qos
        [code] = await self.subscribe_now([(topic_filter, qos)])
        if code >= 0x80:
            self._subs.pop(topic_filter, None)
            raise SubscribeRefused(
                f"the broker refused the subscription to {topic_filter!r}: {mqtt.reason_text(code)}"
                " (check the broker's ACL for this login)",
                {topic_filter: code},
            )
        return code

    async def subscribe_now(self, filters: list[tuple[str, int]]) -> list[int]:
        """Subscribe on the current connection only (not renewed on reconnect); the SUBACK code per filter:
        the granted QoS, or a failure code >= 0x80.

        Raises:
            BusConnectionError: not connected, or no SUBACK.
        """
        wire = self._wire
        if wire is None or not self.connected:
            raise BusConnectionError("not connected")
        return await wire.subscribe(filters)

    async def unsubscribe(self, topic_filter: str) -> None:
        """Stop a subscription."""
        self._subs.pop(topic_filter, None)
        if self._wire is not None and self.connected:
            with contextlib.suppress(BusConnectionError):
                await self._wire.unsubscribe([topic_filter])

    # ------------------------------------------------------------------ publishing

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
        """Publish now; (paho's return code, a future for the PUBACK when ``track`` and QoS 1).

        Every publish path (publish, publish_raw, publish_future, publish_unconfirmed, the DLQ) comes through here,
        and through :meth:`outgoing_topic`.

        Without ``track`` a QoS 1 publish is fire-and-forget for the caller: on the native transport, one that
        the connection ends without is sent again on the next (with DUP if the session was resumed), and counted in
        ``stats.lost`` and logged if the bus closes first; paho gives no such promise.

        Raises:
            QosNotSupported: ``qos`` is not 0 or 1.
        """
        if qos not in (0, 1):
            raise QosNotSupported(f"QoS {qos} is not supported (wearbus uses 0 and 1); not published to {topic!r}")
        wire = self._wire
        if wire is None or not self.connected:
            return paho.MQTT_ERR_NO_CONN, None
        content_type = None
        if self.protocol == "5":
            if fmt is None:
                fmt = "json" if payload[:1] == b"{" else "msgpack"
            content_type = codec.content_type(fmt)
        rc, fut = wire.publish(self.outgoing_topic(topic), payload, qos, retain, content_type, track=track)
        if rc == paho.MQTT_ERR_SUCCESS:
            self.stats.published += 1
        return rc, fut


class PahoTransport:
    """paho-mqtt (under aiomqtt) as a :class:`broker.bus.Transport`: publishing goes straight to paho, checking its
    return code; PUBACKs complete the futures of tracked publishes."""

    def __init__(self, client: aiomqtt.Client, *, v5: bool) -> None:
        self._client = client
        self._raw = client._client
        self._v5 = v5
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._props: dict[str, Properties] = {}
        self.closed: asyncio.Future[None] = client._disconnected

    @property
    def connected(self) -> bool:
        """Whether paho is connected."""
        return bool(self._raw.is_connected())

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
        """Hand the PUBLISH to paho: (its return code, a future for the PUBACK when ``track`` and QoS 1)."""
        props = None
        if content_type is not None:
            props = self._props.get(content_type)
            if props is None:
                props = self._props[content_type] = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.ContentType = content_type
        info = self._raw.publish(topic, payload, qos, retain, props)
        fut = None
        if info.rc == paho.MQTT_ERR_SUCCESS and track and qos > 0 and not info.is_published():
            fut = self._pending[info.mid] = asyncio.get_running_loop().create_future()
        return info.rc, fut

    def acked(self, mid: int, rc: ReasonCode) -> None:
        """paho's on_publish: the broker acknowledged ``mid`` (or refused it, MQTT 5)."""
        fut = self._pending.pop(mid, None)
        if fut is not None and not fut.done():
            if rc.is_failure:
                fut.set_exception(PublishError(f"the broker refused the publish: {rc}"))
            else:
                fut.set_result(None)

    def ack(self, mid: int) -> None:
        """Send the PUBACK of a QoS 1 message."""
        self._raw.ack(mid, 1)

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> list[int]:
        """One SUBSCRIBE per filter (aiomqtt's API); the SUBACK codes."""
        granted: list[int] = []
        for topic_filter, qos in filters:
            try:
                with cancellation_kept():  # aiomqtt waits with asyncio.wait_for (schemas.tasks)
                    codes = await self._client.subscribe(topic_filter, qos, timeout=timeout)
            except aiomqtt.MqttError as exc:
                raise BusConnectionError(f"subscribe to {topic_filter!r} failed: {exc}") from exc
            granted += [code if isinstance(code, int) else code.value for code in codes]
        return granted

    async def unsubscribe(self, filters: list[str], timeout: float = 10.0) -> None:
        """UNSUBSCRIBE, one filter at a time."""
        for topic_filter in filters:
            try:
                with cancellation_kept():
                    await self._client.unsubscribe(topic_filter, timeout=timeout)
            except aiomqtt.MqttError as exc:
                raise BusConnectionError(f"unsubscribe from {topic_filter!r} failed: {exc}") from exc

    def flush(self) -> None:
        """paho writes as it goes: nothing waits."""

    async def wait_acknowledged(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) for the PUBACKs of the tracked publishes (paho keeps the others itself)."""
        pending = [f for f in self._pending.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return all(f.done() for f in pending)

    def pause(self) -> None:
        """paho's reader stops by itself at the receive maximum (see ``Bus._reader``)."""

    def resume(self) -> None:
        """See :meth:`pause`."""

    @property
    def paused(self) -> bool:
        """Never: see :meth:`pause`."""
        return False

    def disconnect(self, *, will: bool = False) -> None:
        """aiomqtt's context manager sends the DISCONNECT, whatever ``will`` asks (paho has no public way to end
        a connection without one): on the paho transport an unacknowledged goodbye leaves the Will unsent."""

    def fail_all(self, error: BusConnectionError) -> None:
        """The connection ended: what waits for a PUBACK fails."""
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()
