"""A small MQTT 3.1.1 / 5 client protocol on asyncio: the fast transport under :class:`broker.client.Bus`.

Why it exists (docs/benchmarks.md, "Where the time goes"): with paho-mqtt underneath, about half of the agent's CPU
went to paho's receive path (byte-by-byte ``recv`` calls for each fixed header, MQTT 5 ``Properties`` objects, a
topic matcher that has nothing registered, an ``MQTTMessage`` and debug logging per message) and every publish took
paho's lock and its queue. This protocol parses every packet of each chunk the socket gives in one pass, hands a
PUBLISH over as ``(topic, payload, qos, retain, mid, content_type)``, and writes what it sends (acknowledgements,
publishes) in one ``write`` per turn of the event loop.

It implements what the bus uses, for MQTT 3.1.1 and 5: CONNECT (Will, credentials, clean start / session expiry,
receive maximum), PUBLISH at QoS 0 and 1 both ways (MQTT 5 content type), PUBACK (manual or automatic), SUBSCRIBE,
UNSUBSCRIBE, keep-alive (PINGREQ / PINGRESP), DISCONNECT both ways, flow control towards the broker (its receive
maximum) and TCP backpressure towards the broker when the consumer falls behind (:meth:`Connection.pause`). It does
not resend in-flight messages on a new connection: like paho under aiomqtt, each connection is a new client, and
the futures of what was in flight fail (the bus's callers publish again from their stores or outboxes).
WebSocket URLs stay on paho (see :mod:`broker.client`).

Pure packet encoding and decoding (``encode_*``, :func:`read_properties`) are apart from the I/O and unit-tested
without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.logs import get_logger
from schemas.errors import BusConnectionError, PublishError

_log = get_logger("mqtt")

#: What a received PUBLISH is handed to: topic, payload, qos, retain, packet id, MQTT 5 content type.
OnPublish = Callable[[str, bytes, int, bool, int, "str | None"], None]

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0

# MQTT 5 property identifiers by wire type (MQTT 5.0 §2.2.2.2)
_BYTE = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
_U16 = frozenset({0x13, 0x21, 0x22, 0x23})
_U32 = frozenset({0x02, 0x11, 0x18, 0x27})
_VARINT = frozenset({0x0B})
_UTF8 = frozenset({0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F})
_BINARY = frozenset({0x09, 0x16})
_PAIR = 0x26
CONTENT_TYPE, SESSION_EXPIRY, RECEIVE_MAXIMUM, SERVER_KEEP_ALIVE, REASON_STRING = 0x03, 0x11, 0x21, 0x13, 0x1F

#: CONNACK return codes of MQTT 3.1.1 (§3.2.2.3), worded as paho words them (callers look for these words).
CONNACK_311 = {
    1: "Connection Refused: unacceptable protocol version",
    2: "Connection Refused: identifier rejected",
    3: "Connection Refused: broker unavailable",
    4: "Connection Refused: bad user name or password",
    5: "Connection Refused: not authorised",
}
#: MQTT 5 reason codes (§2.4) that a CONNACK, PUBACK, SUBACK or DISCONNECT may carry.
REASONS_5 = {
    0x04: "Disconnect with Will message",
    0x80: "Unspecified error",
    0x81: "Malformed Packet",
    0x82: "Protocol Error",
    0x83: "Implementation specific error",
    0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid",
    0x86: "Bad User Name or Password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep Alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic Filter invalid",
    0x90: "Topic Name invalid",
    0x93: "Receive Maximum exceeded",
    0x95: "Packet too large",
    0x97: "Quota exceeded",
    0x99: "Payload format invalid",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9F: "Connection rate exceeded",
}

ERR_SUCCESS, ERR_NO_CONN, ERR_QUEUE_SIZE = 0, 4, 15  # the values paho uses, so the bus speaks one vocabulary


class ProtocolError(BusConnectionError):
    """The broker sent something this client cannot accept (the connection is closed)."""


class NoAnswer(BusConnectionError):
    """No CONNACK came: the broker did not answer in time, or closed the connection first."""


class Refused(BusConnectionError):
    """The broker refused the CONNECT.

    Attributes:
        code: the CONNACK return code (3.1.1) or reason code (5).
        unsupported_version: the broker does not speak the protocol version asked for.
    """

    def __init__(self, message: str, code: int, *, unsupported_version: bool) -> None:
        super().__init__(message)
        self.code = code
        self.unsupported_version = unsupported_version


def reason_text(code: int) -> str:
    """An MQTT 5 reason code as words."""
    return REASONS_5.get(code, f"reason 0x{code:02X}")


# ---------------------------------------------------------------------------------------------- encoding


def varint(n: int) -> bytes:
    """The MQTT variable byte integer encoding of ``n`` (at most 268,435,455)."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def encode_properties(props: dict[int, Any]) -> bytes:
    """MQTT 5 properties (length-prefixed); only the identifiers this client sends are supported."""
    out = bytearray()
    for ident, value in props.items():
        out.append(ident)
        if ident in _U16:
            out += int(value).to_bytes(2, "big")
        elif ident in _U32:
            out += int(value).to_bytes(4, "big")
        elif ident in _BYTE:
            out.append(int(value))
        elif ident in _UTF8 or ident in _BINARY:
            out += _str(value)
        else:
            raise ValueError(f"property 0x{ident:02X} is not supported here")
    return varint(len(out)) + bytes(out)


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes if the connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class ConnectSpec:
    """Everything a CONNECT carries."""

    client_id: str
    v5: bool = True
    keepalive_s: int = 30
    clean_start: bool = True
    session_expiry_s: int = 0
    receive_maximum: int = 1000
    username: str | None = None
    password: str | None = None
    will: Will | None = None


def encode_connect(spec: ConnectSpec) -> bytes:
    """The CONNECT packet for ``spec``."""
    flags = 0x02 if spec.clean_start else 0
    if spec.will is not None:
        flags |= 0x04 | (spec.will.qos << 3) | (0x20 if spec.will.retain else 0)
    if spec.username is not None:
        flags |= 0x80
    if spec.password is not None:
        flags |= 0x40
    body = bytearray(_str("MQTT"))
    body += bytes((5 if spec.v5 else 4, flags)) + spec.keepalive_s.to_bytes(2, "big")
    if spec.v5:
        props: dict[int, Any] = {RECEIVE_MAXIMUM: max(1, min(65535, spec.receive_maximum))}
        if spec.session_expiry_s:
            props[SESSION_EXPIRY] = spec.session_expiry_s
        body += encode_properties(props)
    body += _str(spec.client_id)
    if spec.will is not None:
        if spec.v5:
            body += varint(0)
        body += _str(spec.will.topic) + _str(spec.will.payload)
    if spec.username is not None:
        body += _str(spec.username)
    if spec.password is not None:
        body += _str(spec.password)
    return _packet(CONNECT, bytes(body))


def content_type_properties(content_type: str | None) -> bytes:
    """The property block of an MQTT 5 PUBLISH carrying ``content_type`` (empty block when ``None``)."""
    if content_type is None:
        return b"\x00"
    prop = bytes((CONTENT_TYPE,)) + _str(content_type)
    return varint(len(prop)) + prop


def encode_publish(topic: bytes, payload: bytes, qos: int, retain: bool, mid: int, props: bytes) -> bytes:
    """A PUBLISH packet. ``props`` is the encoded MQTT 5 property block, or ``b""`` for MQTT 3.1.1."""
    head = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + props
    return bytes((PUBLISH | (qos << 1) | (1 if retain else 0),)) + varint(len(head) + len(payload)) + head + payload


def encode_subscribe(mid: int, filters: list[tuple[str, int]], v5: bool) -> bytes:
    """A SUBSCRIBE packet."""
    body = bytearray(mid.to_bytes(2, "big"))
    if v5:
        body += b"\x00"
    for topic_filter, qos in filters:
        body += _str(topic_filter) + bytes((qos,))
    return _packet(SUBSCRIBE, bytes(body))


def encode_unsubscribe(mid: int, filters: list[str], v5: bool) -> bytes:
    """An UNSUBSCRIBE packet."""
    body = bytearray(mid.to_bytes(2, "big"))
    if v5:
        body += b"\x00"
    for topic_filter in filters:
        body += _str(topic_filter)
    return _packet(UNSUBSCRIBE, bytes(body))


def encode_puback(mid: int) -> bytes:
    """A PUBACK for packet id ``mid`` (reason Success: the short form both versions accept)."""
    return bytes((PUBACK, 2, mid >> 8, mid & 0xFF))


def encode_pingreq() -> bytes:
    """A PINGREQ."""
    return bytes((PINGREQ, 0))


def encode_disconnect() -> bytes:
    """A DISCONNECT (normal disconnection: the broker drops the Will)."""
    return bytes((DISCONNECT, 0))


# ---------------------------------------------------------------------------------------------- decoding


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A variable byte integer at ``pos``: (value, position after it). Raises IndexError when incomplete."""
    value, after = read_varint_safe(buf, pos)
    if after < 0:
        raise IndexError("incomplete variable byte integer")
    return value, after


def read_properties(buf: bytes, pos: int) -> tuple[dict[int, Any], int]:
    """An MQTT 5 property block at ``pos``: (identifier -> value, position after it)."""
    length, pos = read_varint(buf, pos)
    end = pos + length
    props: dict[int, Any] = {}
    while pos < end:
        ident = buf[pos]
        pos += 1
        value: Any
        if ident in _BYTE:
            value, pos = buf[pos], pos + 1
        elif ident in _U16:
            value, pos = int.from_bytes(buf[pos : pos + 2], "big"), pos + 2
        elif ident in _U32:
            value, pos = int.from_bytes(buf[pos : pos + 4], "big"), pos + 4
        elif ident in _VARINT:
            value, pos = read_varint(buf, pos)
        elif ident in _UTF8 or ident in _BINARY:
            n = int.from_bytes(buf[pos : pos + 2], "big")
            raw = bytes(buf[pos + 2 : pos + 2 + n])
            value, pos = (raw.decode("utf-8", "replace") if ident in _UTF8 else raw), pos + 2 + n
        elif ident == _PAIR:
            n = int.from_bytes(buf[pos : pos + 2], "big")
            key = bytes(buf[pos + 2 : pos + 2 + n]).decode("utf-8", "replace")
            pos += 2 + n
            n = int.from_bytes(buf[pos : pos + 2], "big")
            value, pos = (key, bytes(buf[pos + 2 : pos + 2 + n]).decode("utf-8", "replace")), pos + 2 + n
        else:
            raise ProtocolError(f"unknown MQTT 5 property 0x{ident:02X} from the broker")
        props[ident] = value
    if pos != end:
        raise ProtocolError("malformed MQTT 5 properties from the broker")
    return props, end


# ---------------------------------------------------------------------------------------------- the connection


@dataclass(slots=True)
class _Outbound:
    topic: bytes
    payload: bytes
    retain: bool
    props: bytes
    future: asyncio.Future[None] | None


@dataclass(slots=True)
class ConnectionStats:
    """What a connection counted."""

    packets_in: int = 0
    bytes_in: int = 0
    pauses: int = 0
    callback_errors: int = 0
    queued_peak: int = 0
    in_flight_peak: int = 0
    server: dict[str, Any] = field(default_factory=dict)


class Connection(asyncio.Protocol):
    """One MQTT connection (one CONNECT .. the end of the socket). Open it with :meth:`open`.

    ``closed`` completes when the connection ends: with ``None`` after :meth:`disconnect`, with a
    :class:`~schemas.errors.BusConnectionError` otherwise. Everything runs on the event loop's thread.
    """

    def __init__(self, spec: ConnectSpec, on_publish: OnPublish, *, manual_ack: bool, max_queued: int) -> None:
        self.spec = spec
        self.v5 = spec.v5
        self.on_publish = on_publish
        self.manual_ack = manual_ack
        self.max_queued = max_queued
        self.stats = ConnectionStats()
        self.session_present = False
        self.on_connack: Callable[[bool], None] | None = None
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.closed: asyncio.Future[None] = loop.create_future()
        self._connack: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._rest = b""
        self._out = bytearray()
        self._flush_scheduled = False
        self._mid = 0
        self._in_flight: dict[int, asyncio.Future[None] | None] = {}
        self._queued: deque[_Outbound] = deque()
        self._send_quota = 65535
        self._waiting: dict[int, asyncio.Future[list[int]]] = {}
        self._keepalive = spec.keepalive_s
        self._last_in = time.monotonic()
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_sent = 0.0
        self._paused = False
        self._connected = False
        self._props_cache: dict[str | None, bytes] = {}

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        spec: ConnectSpec,
        on_publish: OnPublish,
        *,
        manual_ack: bool = False,
        max_queued: int = 20_000,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        on_connack: Callable[[bool], None] | None = None,
    ) -> Connection:
        """Connect, send CONNECT and wait for the CONNACK.

        ``on_connack(session_present)`` runs when the CONNACK is read, before any message behind it is handed over.

        Raises:
            Refused: the broker refused the CONNECT (its reason in the message).
            BusConnectionError: no TCP connection, or no CONNACK within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        proto = cls(spec, on_publish, manual_ack=manual_ack, max_queued=max_queued)
        proto.on_connack = on_connack
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: proto, host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
                await asyncio.shield(proto._connack)
        except TimeoutError:
            proto.abort()
            raise NoAnswer(f"no CONNACK from {host}:{port} within {timeout:g} s") from None
        except Refused:
            proto.abort()
            raise
        except BusConnectionError as exc:
            proto.abort()
            raise NoAnswer(f"{host}:{port} closed the connection before its CONNACK: {exc}") from exc
        except OSError as exc:
            proto.abort()
            raise BusConnectionError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
        except BaseException:
            proto.abort()
            raise
        return proto

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover  (create_connection gives one)
            raise TypeError("a stream transport is needed")
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # Nagle off (performance.md P1)
        transport.write(encode_connect(self.spec))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connected = False
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        error = BusConnectionError(f"the connection to the broker was lost: {exc or 'closed by the broker'}")
        if not self._connack.done():
            self._connack.set_exception(error)
            self._connack.exception()  # retrieved: open() reports it
        self._fail_all(error)
        if not self.closed.done():
            self.closed.set_exception(error)
            self.closed.exception()

    def data_received(self, data: bytes) -> None:
        buf = self._rest + data if self._rest else data
        self._last_in = time.monotonic()
        self.stats.bytes_in += len(data)
        pos, end = 0, len(buf)
        try:
            while pos < end:
                if pos + 2 > end:
                    break
                length, body = read_varint_safe(buf, pos + 1)
                if body < 0 or body + length > end:
                    break
                self._handle(buf[pos], buf, body, body + length)
                pos = body + length
                self.stats.packets_in += 1
        except BusConnectionError as exc:
            self._fatal(exc)
            return
        except (IndexError, ValueError, UnicodeDecodeError) as exc:  # a truncated or malformed packet
            self._fatal(ProtocolError(f"malformed packet from the broker: {exc}"))
            return
        self._rest = buf[pos:] if pos < end else b""
        if self._out:
            self._flush()  # the acknowledgements of this chunk leave now, in one write

    # ------------------------------------------------------------------ incoming packets

    def _handle(self, first: int, buf: bytes, pos: int, end: int) -> None:
        kind = first & 0xF0
        if kind == PUBLISH:
            qos = (first >> 1) & 0x03
            n = (buf[pos] << 8) | buf[pos + 1]
            topic = buf[pos + 2 : pos + 2 + n].decode("utf-8", "replace")
            pos += 2 + n
            mid = 0
            if qos:
                mid = (buf[pos] << 8) | buf[pos + 1]
                pos += 2
            content_type = None
            if self.v5:
                if buf[pos] == 0:
                    pos += 1
                else:
                    props, pos = read_properties(buf, pos)
                    content_type = props.get(CONTENT_TYPE)
            if qos == 2:
                raise ProtocolError("QoS 2 delivery from the broker: this client subscribes at QoS 0 and 1 only")
            try:
                self.on_publish(topic, buf[pos:end], qos, bool(first & 0x01), mid, content_type)
            except Exception:  # noqa: BLE001  (a consumer's failure must not end the connection, as with paho)
                self.stats.callback_errors += 1
                with contextlib.suppress(Exception):
                    _log.exception("message_callback_failed", topic=topic)
            if qos and not self.manual_ack:
                self.ack(mid)
        elif kind == PUBACK:
            mid = (buf[pos] << 8) | buf[pos + 1]
            reason = buf[pos + 2] if self.v5 and end - pos > 2 else 0
            self._acked(mid, reason)
        elif kind == CONNACK:
            self._on_connack(buf, pos, end)
        elif kind in (SUBACK, UNSUBACK):
            mid = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
            if self.v5:
                _, pos = read_properties(buf, pos)
            waiter = self._waiting.pop(mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(list(buf[pos:end]))
        elif kind == PINGRESP:
            self._ping_sent = 0.0
        elif kind == DISCONNECT:
            reason = buf[pos] if end > pos else 0
            text = reason_text(reason)
            if self.v5 and end - pos > 1:
                props, _ = read_properties(buf, pos + 1)
                if REASON_STRING in props:
                    text += f" ({props[REASON_STRING]})"
            raise BusConnectionError(f"the broker closed the connection: {text}")
        else:
            raise ProtocolError(f"unexpected packet 0x{first:02X} from the broker")

    def _on_connack(self, buf: bytes, pos: int, end: int) -> None:
        flags, code = buf[pos], buf[pos + 1]
        props: dict[int, Any] = {}
        if self.v5 and end > pos + 2:
            props, _ = read_properties(buf, pos + 2)
        if code:
            if self.v5:
                message = f"Connection Refused: {reason_text(code)}"
                # a 3.1.1-only broker answers an MQTT 5 CONNECT with its own code 1 (unacceptable protocol version)
                unsupported = code in (0x01, 0x84)
                if code == 0x01:
                    message = CONNACK_311[1]
            else:
                message = CONNACK_311.get(code, f"Connection Refused: code {code}")
                unsupported = code == 1
            raise Refused(message, code, unsupported_version=unsupported)
        self.session_present = bool(flags & 0x01)
        self._send_quota = int(props.get(RECEIVE_MAXIMUM, 65535))
        self._keepalive = int(props.get(SERVER_KEEP_ALIVE, self._keepalive))
        self.stats.server = {f"0x{k:02X}": v for k, v in props.items()}
        self._connected = True
        if self.on_connack is not None:
            self.on_connack(self.session_present)
        if not self._connack.done():
            self._connack.set_result(None)
        if self._keepalive > 0:
            self._ping_timer = self._loop.call_later(self._keepalive / 2, self._ping)

    def _acked(self, mid: int, reason: int) -> None:
        if mid not in self._in_flight:
            return
        future = self._in_flight.pop(mid)
        if future is not None and not future.done():
            if reason >= 0x80:
                future.set_exception(PublishError(f"the broker refused the publish: {reason_text(reason)}"))
            else:
                future.set_result(None)
        queued = self._queued
        while queued and len(self._in_flight) < self._send_quota:
            item = queued.popleft()
            self._send_qos1(item.topic, item.payload, item.retain, item.props, item.future)

    # ------------------------------------------------------------------ outgoing

    @property
    def connected(self) -> bool:
        """Whether the CONNACK came and the socket is still open."""
        return self._connected and self._transport is not None

    def _write(self, packet: bytes) -> None:
        self._out += packet
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def flush(self) -> None:
        """Write what is waiting now, instead of at the end of this turn of the event loop."""
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None:
            self._transport.write(bytes(self._out))
        self._out.clear()

    def _next_mid(self) -> int:
        for _ in range(65535):
            self._mid = self._mid % 65535 + 1
            if self._mid not in self._in_flight and self._mid not in self._waiting:
                return self._mid
        raise PublishError("65,535 packets in flight: no packet id is free")

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
        """Publish; returns (ERR_* code, a future completed by the PUBACK when ``track`` and QoS 1).

        Never blocks: beyond the broker's receive maximum, QoS 1 messages wait in a queue of ``max_queued``
        (ERR_QUEUE_SIZE when it is full).
        """
        if not self.connected:
            return ERR_NO_CONN, None
        props = b""
        if self.v5:
            props = self._props_cache.get(content_type, b"")
            if not props:
                props = self._props_cache[content_type] = content_type_properties(content_type)
        if not qos:
            self._write(encode_publish(topic.encode(), payload, 0, retain, 0, props))
            return ERR_SUCCESS, None
        if len(self._queued) >= self.max_queued:
            return ERR_QUEUE_SIZE, None
        future = self._loop.create_future() if track else None
        if len(self._in_flight) < self._send_quota and not self._queued:
            self._send_qos1(topic.encode(), payload, retain, props, future)
        else:
            self._queued.append(_Outbound(topic.encode(), payload, retain, props, future))
            self.stats.queued_peak = max(self.stats.queued_peak, len(self._queued))
        return ERR_SUCCESS, future

    def _send_qos1(
        self, topic: bytes, payload: bytes, retain: bool, props: bytes, future: asyncio.Future[None] | None
    ) -> None:
        mid = self._next_mid()  # taken when it leaves: a queued message holds no packet id
        self._in_flight[mid] = future
        self.stats.in_flight_peak = max(self.stats.in_flight_peak, len(self._in_flight))
        self._write(encode_publish(topic, payload, 1, retain, mid, props))

    def ack(self, mid: int) -> None:
        """Send the PUBACK of a QoS 1 message."""
        if self._transport is not None:
            self._write(bytes((PUBACK, 2, mid >> 8, mid & 0xFF)))

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> list[int]:
        """Subscribe; returns the granted QoS (or failure reason codes, >= 0x80) per filter."""
        return await self._request(lambda mid: encode_subscribe(mid, filters, self.v5), timeout, "SUBACK")

    async def unsubscribe(self, filters: list[str], timeout: float = 10.0) -> None:
        """Unsubscribe."""
        await self._request(lambda mid: encode_unsubscribe(mid, filters, self.v5), timeout, "UNSUBACK")

    async def _request(self, build: Callable[[int], bytes], timeout: float, what: str) -> list[int]:
        if not self.connected:
            raise BusConnectionError("not connected")
        mid = self._next_mid()
        waiter: asyncio.Future[list[int]] = self._loop.create_future()
        self._waiting[mid] = waiter
        self._write(build(mid))
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise BusConnectionError(f"no {what} from the broker within {timeout:g} s") from None
        finally:
            self._waiting.pop(mid, None)

    # ------------------------------------------------------------------ flow control and keep-alive

    def pause(self) -> None:
        """Stop reading from the socket (the broker then holds what it has not sent: TCP backpressure)."""
        if not self._paused and self._transport is not None:
            self._paused = True
            self.stats.pauses += 1
            self._transport.pause_reading()

    def resume(self) -> None:
        """Read again."""
        if self._paused:
            self._paused = False
            self._last_in = time.monotonic()  # paused time is not the broker's silence
            if self._transport is not None:
                self._transport.resume_reading()

    @property
    def paused(self) -> bool:
        """Whether reading is paused."""
        return self._paused

    def _ping(self) -> None:
        self._ping_timer = None
        if self._transport is None:
            return
        now = time.monotonic()
        if self._ping_sent and not self._paused and now - self._last_in > self._keepalive * 1.5:
            self._fatal(BusConnectionError(f"the broker did not answer for {now - self._last_in:.1f} s (keep-alive)"))
            return
        if not self._ping_sent or now - self._ping_sent > self._keepalive:
            self._ping_sent = now
            self._write(bytes((PINGREQ, 0)))
        self._ping_timer = self._loop.call_later(self._keepalive / 2, self._ping)

    # ------------------------------------------------------------------ ending

    def disconnect(self) -> None:
        """Send DISCONNECT (the broker then drops the Will) and close once what is written has gone."""
        if self._transport is not None:
            self._write(bytes((DISCONNECT, 0)))
            self._flush()
            self._transport.close()
        self._connected = False
        self._fail_all(BusConnectionError("disconnected before the broker acknowledged the publish"))
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self) -> None:
        """Drop the socket at once (no DISCONNECT: the broker publishes the Will)."""
        if self._transport is not None:
            self._transport.abort()

    def _fatal(self, exc: BusConnectionError) -> None:
        if not self.closed.done():
            self.closed.set_exception(exc)
            self.closed.exception()
        if not self._connack.done():
            self._connack.set_exception(exc)
            self._connack.exception()
        self.abort()

    def _fail_all(self, error: BusConnectionError) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        pending: list[asyncio.Future[Any]] = [f for f in self._in_flight.values() if f is not None]
        pending += [item.future for item in self._queued if item.future is not None]
        pending += self._waiting.values()
        self._in_flight.clear()
        self._queued.clear()
        self._waiting.clear()
        for future in pending:
            if not future.done():
                future.set_exception(error)
                future.exception()  # a publisher that did not track it must not log "never retrieved"


def read_varint_safe(buf: bytes, pos: int) -> tuple[int, int]:
    """As :func:`read_varint`, but (0, -1) when the bytes are not all there yet."""
    value, shift = 0, 0
    end = len(buf)
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ProtocolError("malformed remaining length from the broker")
    return 0, -1
