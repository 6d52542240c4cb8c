"""A small MQTT 3.1.1 / 5 client protocol on asyncio: the fast transport under :class:`broker.client.Bus`.

Why it exists (docs/benchmarks.md, "Where the time goes"): with paho-mqtt underneath, about half of the agent's CPU
went to paho's receive path (byte-by-byte ``recv`` calls for each fixed header, MQTT 5 ``Properties`` objects, a
topic matcher that has nothing registered, an ``MQTTMessage`` and debug logging per message) and every publish took
paho's lock and its queue. This protocol parses every packet of each chunk the socket gives in one pass, hands a
PUBLISH over as ``(topic, payload, qos, retain, mid, content_type)``, and writes what it sends (acknowledgements,
publishes) in one ``write`` per turn of the event loop.

It implements what the bus uses, for MQTT 3.1.1 and 5: CONNECT (Will, credentials, clean start / session expiry,
receive maximum, our Maximum Packet Size), PUBLISH at QoS 0 and 1 outgoing and QoS 0, 1 and 2 incoming (a broker
may send QoS 2: PUBREC / PUBREL / PUBCOMP, delivered once), PUBACK (manual or automatic), SUBSCRIBE, UNSUBSCRIBE,
keep-alive (PINGREQ / PINGRESP), DISCONNECT both ways, and what the broker's CONNACK asks (Receive Maximum, Maximum
QoS, Retain Available, Maximum Packet Size, Server Keep Alive).

Strict receiving: each packet is parsed within its own remaining length. A packet that does not fit it, reserved
flag bits, QoS 3, a second CONNACK, invalid UTF-8, a packet type a broker may not send, or a packet above our
Maximum Packet Size (checked on its length header, before any of it is buffered) closes the connection with a
:class:`~schemas.errors.ProtocolViolation` (MQTT 5: after a DISCONNECT with 0x81, 0x82 or 0x95) and delivers nothing.

Flow control: :meth:`Connection.pause` holds application messages (PUBLISH) back from the consumer, but the socket
keeps being read, so CONNACK, SUBACK, PUBACK and PINGRESP are never stuck behind a backlog (a consumer that
subscribes before it consumes cannot deadlock). Only past ``max_held_bytes`` of held messages does the socket stop
being read. Writing honours ``pause_writing`` / ``resume_writing``: QoS 1 publishes wait in the bounded queue,
QoS 0 publishes beyond ``max_qos0_buffer`` bytes of unsent data are dropped and counted (QoS 0 promises at most once).

In-flight QoS 1 publishes: a tracked one (with a future) fails its future when the connection ends, so its caller
learns it and decides; an untracked one (fire-and-forget) is handed back by :meth:`Connection.unacknowledged` and
sent again on the next connection: with DUP and its packet id when the broker resumed the session (MQTT-4.4.0-1),
as a new publish otherwise. WebSocket URLs stay on paho (see :mod:`broker.client`).

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

from broker.bus import ERR_NO_CONN, ERR_QUEUE_SIZE, ERR_SUCCESS
from broker.logs import get_logger
from schemas.errors import (
    BusConnectionError,
    MalformedPacket,
    MessageTooLarge,
    PacketTooLarge,
    ProtocolViolation,
    PublishError,
    QosNotSupported,
)

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
MAXIMUM_QOS, RETAIN_AVAILABLE, MAXIMUM_PACKET_SIZE, TOPIC_ALIAS, SUBSCRIPTION_ID = 0x24, 0x25, 0x27, 0x23, 0x0B
#: properties that may appear more than once in a packet (MQTT 5.0 §2.2.2.2): user properties, subscription ids
_REPEATABLE = frozenset({_PAIR, SUBSCRIPTION_ID})

#: The Maximum Packet Size this client announces (MQTT 5 CONNECT property 0x27) and enforces on what it receives,
#: both versions. Above the decoder's payload limit (256 KiB) on purpose: an oversize payload still reaches the bus
#: and is dead-lettered with a reason, instead of being discarded unseen by the broker.
MAX_PACKET_SIZE = 4 * 1024 * 1024

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


#: The broker sent something this client cannot accept (the connection is closed); kept as this module's name.
ProtocolError = ProtocolViolation


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
    max_packet_size: int = MAX_PACKET_SIZE


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
        props: dict[int, Any] = {
            RECEIVE_MAXIMUM: max(1, min(65535, spec.receive_maximum)),
            MAXIMUM_PACKET_SIZE: spec.max_packet_size,
        }
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


def _utf8(raw: bytes, what: str) -> str:
    """A UTF-8 string of MQTT: well-formed [MQTT-1.5.3-1] (no surrogates) and without U+0000 [MQTT-1.5.3-2]."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"invalid UTF-8 in the {what} from the broker [MQTT-1.5.3-1]") from exc
    if "\x00" in text:
        raise MalformedPacket(f"U+0000 in the {what} from the broker [MQTT-1.5.3-2]")
    return text


def read_properties(buf: bytes, pos: int, limit: int | None = None) -> tuple[dict[int, Any], int]:
    """An MQTT 5 property block at ``pos``: (identifier -> value, position after it).

    Every value must lie inside the block, and the block inside ``limit`` (the end of its packet; default: the end
    of ``buf``). User properties (0x26) and subscription identifiers (0x0B) may repeat (the last one is kept);
    any other repeated property is a protocol error.

    Raises:
        MalformedPacket: a value runs past its block or the block past the packet, invalid UTF-8, an unknown id.
        ProtocolViolation: a property that may appear once appears twice.
    """
    stop = len(buf) if limit is None else limit
    length, pos = read_varint_safe(buf, pos)
    end = pos + length
    if pos < 0 or end > stop:
        raise MalformedPacket("MQTT 5 properties run past the end of their packet")
    props: dict[int, Any] = {}
    while pos < end:
        ident = buf[pos]
        pos += 1
        value: Any
        if ident in _BYTE:
            after = pos + 1
            value = buf[pos] if after <= end else 0
        elif ident in _U16:
            after = pos + 2
            value = int.from_bytes(buf[pos:after], "big")
        elif ident in _U32:
            after = pos + 4
            value = int.from_bytes(buf[pos:after], "big")
        elif ident in _VARINT:
            value, after = read_varint_safe(buf, pos)
            if after < 0:
                after = end + 1
        elif ident in _UTF8 or ident in _BINARY or ident == _PAIR:
            n = int.from_bytes(buf[pos : pos + 2], "big")
            after = pos + 2 + n
            raw = bytes(buf[pos + 2 : after])
            if ident == _PAIR and after <= end:
                n = int.from_bytes(buf[after : after + 2], "big")
                second = bytes(buf[after + 2 : after + 2 + n])
                after += 2 + n
                value = (_utf8(raw, "user property"), _utf8(second, "user property")) if after <= end else None
            elif ident in _UTF8 and after <= end:
                value = _utf8(raw, f"property 0x{ident:02X}")
            else:
                value = raw
        else:
            raise MalformedPacket(f"unknown MQTT 5 property 0x{ident:02X} from the broker")
        if after > end:
            raise MalformedPacket(f"MQTT 5 property 0x{ident:02X} runs past the end of its block")
        if ident in props and ident not in _REPEATABLE:
            raise ProtocolViolation(f"MQTT 5 property 0x{ident:02X} appears twice in one packet")
        props[ident] = value
        pos = after
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
class Unacknowledged:
    """Untracked QoS 1 publishes a connection ended without: sent (packet id, packet) and not yet sent."""

    sent: list[tuple[int, bytes]] = field(default_factory=list)
    queued: list[_Outbound] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sent) + len(self.queued)


@dataclass(slots=True)
class ConnectionStats:
    """What a connection counted."""

    packets_in: int = 0
    bytes_in: int = 0
    pauses: int = 0
    read_pauses: int = 0
    write_pauses: int = 0
    callback_errors: int = 0
    queued_peak: int = 0
    in_flight_peak: int = 0
    qos0_dropped: int = 0
    held_dropped: int = 0
    resent: int = 0
    lost: int = 0
    server: dict[str, Any] = field(default_factory=dict)


#: Packet types whose fixed-header flags must be 0 (MQTT 3.1.1 §2.2.2, MQTT 5.0 §2.1.3) [MQTT-2.2.2-1/-2].
_ZERO_FLAGS = frozenset({CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, PINGRESP, DISCONNECT})
_SUBACK_311 = frozenset({0x00, 0x01, 0x02, 0x80})
#: Bytes a held message costs beyond its payload and topic (the tuple, the bytes and str headers, the deque slot:
#: measured 88 + 33 + 49 + 8), so the bound counts what the process holds (64 without the topic counted less than
#: half of it, and the agent's RSS grew ~100 MiB behind a backlog under a 32 MiB bound).
_HELD_ITEM_COST = 192


def _held_cost(item: tuple[str, bytes, int, bool, int, str | None]) -> int:
    """What one held message costs the process, for :attr:`Connection.max_held_bytes`."""
    return len(item[0]) + len(item[1]) + _HELD_ITEM_COST


class Connection(asyncio.Protocol):
    """One MQTT connection (one CONNECT .. the end of the socket). Open it with :meth:`open`.

    ``closed`` completes when the connection ends: with ``None`` after :meth:`disconnect`, with a
    :class:`~schemas.errors.BusConnectionError` otherwise (a :class:`~schemas.errors.ProtocolViolation` when the
    broker broke the protocol). Everything runs on the event loop's thread.

    Args:
        max_queued: QoS 1 publishes waiting beyond the broker's receive maximum (or while writing is paused).
        max_qos0_buffer: bytes of unsent data above which a QoS 0 publish is dropped (counted in ``qos0_dropped``)
            while the transport asks us to stop writing.
        max_held_bytes: bytes of held application messages (see :meth:`pause`) above which the socket stops
            being read.
    """

    def __init__(
        self,
        spec: ConnectSpec,
        on_publish: OnPublish,
        *,
        manual_ack: bool,
        max_queued: int,
        max_qos0_buffer: int = 1024 * 1024,
        max_held_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.spec = spec
        self.v5 = spec.v5
        self.on_publish = on_publish
        self.manual_ack = manual_ack
        self.max_queued = max_queued
        self.max_qos0_buffer = max_qos0_buffer
        self.max_held_bytes = max_held_bytes
        self.stats = ConnectionStats()
        self.session_present = False
        self.on_connack: Callable[[bool], None] | None = None
        self.resend: Unacknowledged | None = None
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.closed: asyncio.Future[None] = loop.create_future()
        self._connack: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._rest = b""
        self._out = bytearray()
        self._flush_scheduled = False
        self._mid = 0
        self._in_flight: dict[int, tuple[bytes, asyncio.Future[None] | None]] = {}
        self._queued: deque[_Outbound] = deque()
        self._orphans = Unacknowledged()
        self._send_quota = 65535
        self._max_qos = 1
        self._retain_ok = True
        self._server_max_packet = 268_435_460
        self._waiting: dict[int, tuple[asyncio.Future[list[int]], int, int]] = {}
        self._qos2_in: dict[int, bool] = {}  # packet id of a QoS 2 message from the broker -> PUBREC sent
        self._keepalive = spec.keepalive_s
        self._last_in = time.monotonic()
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_sent = 0.0
        self._holding = False
        self._held: deque[tuple[str, bytes, int, bool, int, str | None]] = deque()
        self._held_bytes = 0
        self._reading_paused = False
        self._write_paused = False
        self._connected = False
        self._got_connack = False
        self._dead = False
        self._props_cache: dict[str | None, bytes] = {}
        self._idle: asyncio.Future[None] | None = None  # see wait_acknowledged

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
        resend: Unacknowledged | None = None,
    ) -> Connection:
        """Connect, send CONNECT and wait for the CONNACK.

        ``on_connack(session_present)`` runs when the CONNACK is read, before any message behind it is handed over.
        ``resend`` (what an earlier connection ended without, :meth:`unacknowledged`) is sent right after the
        CONNACK, before anything else: with DUP and the same packet ids when the session was resumed.

        Raises:
            Refused: the broker refused the CONNECT (its reason in the message).
            ProtocolViolation: the broker's answer broke the protocol.
            BusConnectionError: no TCP connection, or no CONNACK within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        proto = cls(spec, on_publish, manual_ack=manual_ack, max_queued=max_queued)
        proto.on_connack = on_connack
        proto.resend = resend
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: proto, host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
                await asyncio.shield(proto._connack)
        except TimeoutError:
            proto.abort()
            raise NoAnswer(f"no CONNACK from {host}:{port} within {timeout:g} s") from None
        except (Refused, ProtocolViolation):
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

    def pause_writing(self) -> None:
        """The transport's write buffer is above its high-water mark: QoS 1 publishes wait, QoS 0 are bounded."""
        self._write_paused = True
        self.stats.write_pauses += 1

    def resume_writing(self) -> None:
        """The write buffer drained: send what waited."""
        self._write_paused = False
        self._drain()

    def data_received(self, data: bytes) -> None:
        if self._dead:
            return
        buf = self._rest + data if self._rest else data
        self._last_in = time.monotonic()
        self.stats.bytes_in += len(data)
        pos, end = 0, len(buf)
        limit = self.spec.max_packet_size
        try:
            while pos < end:
                if pos + 2 > end:
                    break
                length, body = read_varint_safe(buf, pos + 1)
                if body < 0:
                    break
                if body - pos + length > limit:  # judged on the length header: nothing of it is buffered
                    raise PacketTooLarge(
                        f"a packet of {body - pos + length} bytes from the broker, above the Maximum Packet Size "
                        f"of {limit} this client announced"
                    )
                if body + length > end:
                    break
                self._handle(buf[pos], buf, body, body + length)
                pos = body + length
                self.stats.packets_in += 1
        except BusConnectionError as exc:
            self._fatal(exc)
            return
        except (IndexError, ValueError) as exc:  # a field runs past the end of its packet
            self._fatal(MalformedPacket(f"malformed packet from the broker: {exc}"))
            return
        self._rest = buf[pos:] if pos < end else b""
        if self._out:
            self._flush()  # the acknowledgements of this chunk leave now, in one write

    # ------------------------------------------------------------------ incoming packets

    def _handle(self, first: int, buf: bytes, pos: int, end: int) -> None:
        kind = first & 0xF0
        if kind == PUBLISH and self._got_connack:
            qos = (first >> 1) & 0x03
            if qos == 3:
                raise MalformedPacket("a PUBLISH with both QoS bits set (QoS 3) [MQTT-3.3.1-4]")
            if pos + 2 > end:
                raise MalformedPacket("a PUBLISH too short for its topic length")
            start = pos + 2
            pos = start + ((buf[pos] << 8) | buf[pos + 1])
            if pos > end or pos == start:
                raise MalformedPacket(
                    "a PUBLISH whose topic runs past the end of the packet"
                    if pos > end
                    else "a PUBLISH with an empty topic name (and no topic alias) [MQTT-4.7.3-1]"
                )
            raw = buf[start:pos]
            topic = raw.decode() if raw.isascii() and b"\x00" not in raw else _utf8(raw, "topic name")
            if b"+" in raw or b"#" in raw:
                raise ProtocolViolation(f"a wildcard in the topic name {topic!r} of a PUBLISH [MQTT-3.3.2-2]", 0x90)
            mid = 0
            if qos:
                if pos + 2 > end:
                    raise MalformedPacket("a PUBLISH too short for its packet identifier")
                mid = (buf[pos] << 8) | buf[pos + 1]
                pos += 2
                if not mid:
                    raise MalformedPacket("a QoS > 0 PUBLISH with packet identifier 0 [MQTT-2.3.1-1]")
            elif first & 0x08:
                raise MalformedPacket("DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")
            content_type = None
            if self.v5:
                if pos >= end:
                    raise MalformedPacket("an MQTT 5 PUBLISH without its property length")
                if buf[pos] == 0:
                    pos += 1
                else:
                    props, pos = read_properties(buf, pos, end)
                    if TOPIC_ALIAS in props:
                        raise ProtocolViolation("a topic alias, though this client allows none [MQTT-3.3.2-9]", 0x94)
                    content_type = props.get(CONTENT_TYPE)
            payload = buf[pos:end]
            if self._holding:
                self._hold((topic, payload, qos, bool(first & 0x01), mid, content_type))
            else:
                self._dispatch(topic, payload, qos, bool(first & 0x01), mid, content_type)
            return
        if kind in _ZERO_FLAGS and first & 0x0F:
            raise MalformedPacket(f"reserved flag bits set in packet 0x{first:02X} [MQTT-2.2.2-2]")
        if not self._got_connack and kind not in (CONNACK, DISCONNECT):
            raise ProtocolViolation(f"packet 0x{first:02X} before the CONNACK [MQTT-3.2.0-1]")
        size = end - pos
        if kind == PUBACK:
            if size < 2 or (not self.v5 and size != 2):
                raise MalformedPacket(f"a PUBACK of {size} bytes")
            mid = (buf[pos] << 8) | buf[pos + 1]
            reason = buf[pos + 2] if size > 2 else 0
            if size > 3:
                _, after = read_properties(buf, pos + 3, end)
                if after != end:
                    raise MalformedPacket("bytes after the properties of a PUBACK")
            self._acked(mid, reason)
        elif kind == PUBREL:
            if first != PUBREL | 0x02:
                raise MalformedPacket(f"a PUBREL with flags 0x{first & 0x0F:X}, not 0x2 [MQTT-3.6.1-1]")
            if size < 2 or (not self.v5 and size != 2):
                raise MalformedPacket(f"a PUBREL of {size} bytes")
            mid = (buf[pos] << 8) | buf[pos + 1]
            known = self._qos2_in.pop(mid, None) is not None
            if self.v5 and not known:
                self._write(bytes((PUBCOMP, 3, mid >> 8, mid & 0xFF, 0x92)))  # Packet Identifier not found
            else:
                self._write(bytes((PUBCOMP, 2, mid >> 8, mid & 0xFF)))  # [MQTT-4.3.3-11]
        elif kind == CONNACK:
            self._on_connack(buf, pos, end)
        elif kind in (SUBACK, UNSUBACK):
            self._on_suback(kind, buf, pos, end)
        elif kind == PINGRESP:
            if size:
                raise MalformedPacket("a PINGRESP with a body")
            self._ping_sent = 0.0
        elif kind == DISCONNECT and self.v5:
            reason = buf[pos] if size else 0
            text = reason_text(reason)
            if size > 1:
                props, _ = read_properties(buf, pos + 1, end)
                if REASON_STRING in props:
                    text += f" ({props[REASON_STRING]})"
            raise BusConnectionError(f"the broker closed the connection: {text}")
        elif kind in (PUBREC, PUBCOMP):
            raise ProtocolViolation(f"packet 0x{first:02X} for a QoS 2 publish this client never sends")
        else:
            raise ProtocolViolation(f"unexpected packet 0x{first:02X} from the broker")

    def _dispatch(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        if qos == 2:
            state = self._qos2_in.get(mid)
            if state is not None:  # the same QoS 2 message again: delivered once [MQTT-4.3.3-9]
                if state:
                    self._write(bytes((PUBREC, 2, mid >> 8, mid & 0xFF)))
                return
            self._qos2_in[mid] = False
        try:
            self.on_publish(topic, payload, qos, retain, mid, content_type)
        except Exception:  # noqa: BLE001  (a consumer's failure must not end the connection, as with paho)
            self.stats.callback_errors += 1
            with contextlib.suppress(Exception):
                _log.exception("message_callback_failed", topic=topic)
        if qos and not self.manual_ack:
            self.ack(mid)

    def _hold(self, item: tuple[str, bytes, int, bool, int, str | None]) -> None:
        self._held.append(item)
        self._held_bytes += _held_cost(item)
        if self._held_bytes > self.max_held_bytes and not self._reading_paused and self._transport is not None:
            self._reading_paused = True  # the last resort: far more than any receive maximum lets through
            self.stats.read_pauses += 1
            self._transport.pause_reading()

    def _on_connack(self, buf: bytes, pos: int, end: int) -> None:
        if self._got_connack:
            raise ProtocolViolation("a second CONNACK on one connection [MQTT-3.2.0-2]")
        size = end - pos
        if size < 2:
            raise MalformedPacket(f"a CONNACK of {size} bytes")
        flags, code = buf[pos], buf[pos + 1]
        props: dict[int, Any] = {}
        if self.v5 and not (size == 2 and code):  # a 3.1.1 broker refuses an MQTT 5 CONNECT with a 3.1.1 CONNACK
            if size < 3:
                raise MalformedPacket("an MQTT 5 CONNACK without its properties")
            props, after = read_properties(buf, pos + 2, end)
            if after != end:
                raise MalformedPacket("bytes after the properties of a CONNACK")
        elif not self.v5 and size != 2:
            raise MalformedPacket(f"a CONNACK of {size} bytes (MQTT 3.1.1 has 2)")
        if flags & 0xFE:
            raise MalformedPacket("reserved CONNACK flag bits set [MQTT-3.2.2-1]")
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
        if self.session_present and self.spec.clean_start:
            raise ProtocolViolation("session present on a clean start: this client has no such session [MQTT-3.2.2-4]")
        if props.get(RECEIVE_MAXIMUM) == 0 or props.get(MAXIMUM_PACKET_SIZE) == 0:
            raise ProtocolViolation("a Receive Maximum or Maximum Packet Size of 0 in the CONNACK")
        if props.get(MAXIMUM_QOS, 0) > 1 or props.get(RETAIN_AVAILABLE, 0) > 1:
            raise ProtocolViolation("a Maximum QoS or Retain Available other than 0 or 1 in the CONNACK")
        self._send_quota = int(props.get(RECEIVE_MAXIMUM, 65535))
        self._keepalive = int(props.get(SERVER_KEEP_ALIVE, self._keepalive))  # [MQTT-3.2.2-21]
        self._max_qos = min(1, int(props.get(MAXIMUM_QOS, 1)))
        self._retain_ok = bool(props.get(RETAIN_AVAILABLE, 1))
        self._server_max_packet = int(props.get(MAXIMUM_PACKET_SIZE, self._server_max_packet))
        self.stats.server = {f"0x{k:02X}": v for k, v in props.items()}
        self._got_connack = True
        self._connected = True
        if self.on_connack is not None:
            self.on_connack(self.session_present)
        if self.resend is not None:
            self._resend(self.resend)
            self.resend = None
        if not self._connack.done():
            self._connack.set_result(None)
        if self._keepalive > 0:
            self._ping_timer = self._loop.call_later(self._keepalive / 2, self._ping)

    def _on_suback(self, kind: int, buf: bytes, pos: int, end: int) -> None:
        size = end - pos
        if size < 2 or (kind == UNSUBACK and not self.v5 and size != 2):
            raise MalformedPacket(f"a {'SUBACK' if kind == SUBACK else 'UNSUBACK'} of {size} bytes")
        mid = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if self.v5:
            _, pos = read_properties(buf, pos, end)
        codes = list(buf[pos:end])
        entry = self._waiting.get(mid)  # left there when invalid: _fatal fails it with the reason
        if entry is None:
            return  # the answer to a request that timed out
        waiter, expected_kind, n = entry
        if expected_kind != kind:
            raise ProtocolViolation(f"packet 0x{kind:02X} answers packet id {mid} of another request")
        if (kind == SUBACK or self.v5) and len(codes) != n:
            raise ProtocolViolation(f"{len(codes)} return codes for {n} topic filters [MQTT-3.9.3-1]")
        if kind == SUBACK and not self.v5 and not _SUBACK_311.issuperset(codes):
            raise ProtocolViolation(f"reserved SUBACK return codes {codes} [MQTT-3.9.3-2]")
        del self._waiting[mid]
        if not waiter.done():
            waiter.set_result(codes)

    def _acked(self, mid: int, reason: int) -> None:
        entry = self._in_flight.pop(mid, None)
        if entry is None:
            return
        future = entry[1]
        if future is not None and not future.done():
            if reason >= 0x80:
                future.set_exception(PublishError(f"the broker refused the publish: {reason_text(reason)}"))
            else:
                future.set_result(None)
        elif reason >= 0x80:
            self.stats.lost += 1
            _log.warning("publish_refused", reason=reason_text(reason))
        if self._queued:
            self._drain()
        elif not self._in_flight and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def wait_acknowledged(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until every QoS 1 publish has its PUBACK; whether none is left."""
        if self._in_flight or self._queued:
            self._idle = idle = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await idle
            except (TimeoutError, BusConnectionError):  # the time ran out, or the connection ended first
                pass
            finally:
                self._idle = None
        return not self._in_flight and not self._queued

    def _drain(self) -> None:
        queued = self._queued
        while queued and len(self._in_flight) < self._send_quota and not self._write_paused:
            item = queued.popleft()
            self._send_qos1(item.topic, item.payload, item.retain, item.props, item.future)

    def _resend(self, carried: Unacknowledged) -> None:
        """What an earlier connection ended without, before anything new (see :meth:`open`)."""
        for mid, packet in carried.sent:
            if self.session_present:  # the same packet id, DUP set [MQTT-4.4.0-1] [MQTT-3.3.1-1]
                self._in_flight[mid] = (packet, None)
                self._write(bytes((packet[0] | 0x08,)) + packet[1:])
            else:  # a new session: a new publish with a new packet id
                new_mid = self._next_mid()
                at = _mid_offset(packet)
                renumbered = packet[:at] + new_mid.to_bytes(2, "big") + packet[at + 2 :]
                self._in_flight[new_mid] = (renumbered, None)
                self._write(renumbered)
            self.stats.resent += 1
        self._queued.extend(carried.queued)
        self.stats.resent += len(carried.queued)
        self._drain()

    # ------------------------------------------------------------------ outgoing

    @property
    def connected(self) -> bool:
        """Whether the CONNACK came and the socket is still open."""
        return self._connected and self._transport is not None

    @property
    def server_max_packet(self) -> int:
        """The broker's Maximum Packet Size (MQTT 5 CONNACK; the protocol's limit when it gave none)."""
        return self._server_max_packet

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

        Never blocks: beyond the broker's receive maximum or while the transport's write buffer is full, QoS 1
        messages wait in a queue of ``max_queued`` (ERR_QUEUE_SIZE when it is full). A QoS 0 message is dropped
        (and counted in ``stats.qos0_dropped``) while writing is paused and ``max_qos0_buffer`` bytes wait unsent.

        Raises:
            QosNotSupported: QoS 2, or a QoS above the broker's Maximum QoS.
            MessageTooLarge: the packet is larger than the broker's Maximum Packet Size.
            PublishError: retained, but the broker has no retained messages (Retain Available 0).
        """
        if qos > self._max_qos:
            raise QosNotSupported(
                f"QoS {qos} is not supported here (wearbus publishes at QoS 0 and 1; the broker allows up to "
                f"{self._max_qos}); not published to {topic!r}"
            )
        if not self.connected:
            return ERR_NO_CONN, None
        if retain and not self._retain_ok:
            raise PublishError(f"the broker does not keep retained messages; not published to {topic!r}")
        props = b""
        if self.v5:
            props = self._props_cache.get(content_type, b"")
            if not props:
                props = self._props_cache[content_type] = content_type_properties(content_type)
        topic_b = topic.encode()
        size = 4 + len(topic_b) + len(props) + len(payload)  # without the fixed header: checked exactly below
        if size + 5 > self._server_max_packet:
            size += 1 + len(varint(size))
            if size > self._server_max_packet:
                raise MessageTooLarge(
                    f"a {size}-byte packet is larger than the broker's Maximum Packet Size of "
                    f"{self._server_max_packet} bytes; not published to {topic!r} (sending it again cannot help)",
                    size=size,
                    limit=self._server_max_packet,
                )
        if not qos:
            if self._write_paused and self.unsent > self.max_qos0_buffer:
                dropped = self.stats.qos0_dropped = self.stats.qos0_dropped + 1
                if dropped in {1, 10, 100} or dropped % 1000 == 0:
                    _log.warning("qos0_dropped_while_the_socket_is_full", dropped=dropped, unsent=self.unsent)
                return ERR_SUCCESS, None
            self._write(encode_publish(topic_b, payload, 0, retain, 0, props))
            return ERR_SUCCESS, None
        if len(self._queued) >= self.max_queued:
            return ERR_QUEUE_SIZE, None
        future = self._loop.create_future() if track else None
        if len(self._in_flight) < self._send_quota and not self._queued and not self._write_paused:
            self._send_qos1(topic_b, payload, retain, props, future)
        else:
            self._queued.append(_Outbound(topic_b, payload, retain, props, future))
            self.stats.queued_peak = max(self.stats.queued_peak, len(self._queued))
        return ERR_SUCCESS, future

    @property
    def unsent(self) -> int:
        """Bytes written but not yet sent (ours and the transport's buffer)."""
        transport = self._transport
        return len(self._out) + (transport.get_write_buffer_size() if transport is not None else 0)

    def _send_qos1(
        self, topic: bytes, payload: bytes, retain: bool, props: bytes, future: asyncio.Future[None] | None
    ) -> None:
        mid = self._next_mid()  # taken when it leaves: a queued message holds no packet id
        packet = encode_publish(topic, payload, 1, retain, mid, props)
        self._in_flight[mid] = (packet, future)
        self.stats.in_flight_peak = max(self.stats.in_flight_peak, len(self._in_flight))
        self._write(packet)

    def ack(self, mid: int) -> None:
        """Send the PUBACK of a QoS 1 message (the PUBREC of a QoS 2 one)."""
        if self._transport is not None:
            if self._qos2_in and mid in self._qos2_in:
                self._qos2_in[mid] = True
                self._write(bytes((PUBREC, 2, mid >> 8, mid & 0xFF)))
            else:
                self._write(bytes((PUBACK, 2, mid >> 8, mid & 0xFF)))

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> list[int]:
        """Subscribe; returns the granted QoS (or failure reason codes, >= 0x80) per filter.

        Raises:
            QosNotSupported: a filter asked for QoS 2 (wearbus's contract uses 0 and 1).
        """
        for topic_filter, qos in filters:
            if qos not in (0, 1):
                raise QosNotSupported(f"subscribe to {topic_filter!r} at QoS {qos}: wearbus uses QoS 0 and 1")
        return await self._request(lambda mid: encode_subscribe(mid, filters, self.v5), timeout, SUBACK, len(filters))

    async def unsubscribe(self, filters: list[str], timeout: float = 10.0) -> None:
        """Unsubscribe."""
        await self._request(lambda mid: encode_unsubscribe(mid, filters, self.v5), timeout, UNSUBACK, len(filters))

    async def _request(self, build: Callable[[int], bytes], timeout: float, kind: int, n: int) -> list[int]:
        if not self.connected:
            raise BusConnectionError("not connected")
        mid = self._next_mid()
        waiter: asyncio.Future[list[int]] = self._loop.create_future()
        self._waiting[mid] = (waiter, kind, n)
        self._write(build(mid))
        what = "SUBACK" if kind == SUBACK else "UNSUBACK"
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise BusConnectionError(f"no {what} from the broker within {timeout:g} s") from None
        finally:
            self._waiting.pop(mid, None)

    # ------------------------------------------------------------------ flow control and keep-alive

    def pause(self) -> None:
        """Hold application messages back from ``on_publish`` until :meth:`resume`.

        The socket keeps being read, so control packets (CONNACK, SUBACK, PUBACK, PINGRESP) are never stuck
        behind a backlog; only past ``max_held_bytes`` of held messages does it stop (TCP backpressure).
        """
        if not self._holding:
            self._holding = True
            self.stats.pauses += 1

    def resume(self) -> None:
        """Hand over what was held, in order (until :meth:`pause` is called again), and read again."""
        if not self._holding:
            return
        self._holding = False
        held = self._held
        while held and not self._holding:
            item = held.popleft()
            self._held_bytes -= _held_cost(item)
            self._dispatch(*item)
        if self._reading_paused and self._held_bytes <= self.max_held_bytes // 2:
            self._reading_paused = False
            self._last_in = time.monotonic()  # paused time is not the broker's silence
            if self._transport is not None:
                self._transport.resume_reading()

    @property
    def paused(self) -> bool:
        """Whether application messages are held back."""
        return self._holding

    def _ping(self) -> None:
        self._ping_timer = None
        if self._transport is None:
            return
        now = time.monotonic()
        if self._ping_sent and not self._reading_paused and now - self._last_in > self._keepalive * 1.5:
            self._fatal(BusConnectionError(f"the broker did not answer for {now - self._last_in:.1f} s (keep-alive)"))
            return
        if not self._ping_sent or now - self._ping_sent > self._keepalive:
            self._ping_sent = now
            self._write(bytes((PINGREQ, 0)))
        self._ping_timer = self._loop.call_later(self._keepalive / 2, self._ping)

    # ------------------------------------------------------------------ ending

    def disconnect(self, *, will: bool = False) -> None:
        """Send DISCONNECT (the broker then drops the Will) and close once what is written has gone; with ``will``,
        drop the socket without DISCONNECT instead, so that the broker publishes the Will."""
        if self._transport is not None:
            if will:
                self._transport.abort()
            else:
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

    def unacknowledged(self) -> Unacknowledged:
        """The untracked QoS 1 publishes this connection ended without (for the next one: :meth:`open`)."""
        orphans, self._orphans = self._orphans, Unacknowledged()
        return orphans

    def _fatal(self, exc: BusConnectionError) -> None:
        if self._dead:
            return
        self._dead = True
        self._connected = False
        if isinstance(exc, ProtocolViolation):
            with contextlib.suppress(Exception):
                _log.warning("mqtt_protocol_violation", error=str(exc), reason=f"0x{exc.code:02X}")
        if not self.closed.done():
            self.closed.set_exception(exc)
            self.closed.exception()
        if not self._connack.done():
            self._connack.set_exception(exc)
            self._connack.exception()
        for waiter, _, _ in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(exc)
        self._waiting.clear()
        transport = self._transport
        if isinstance(exc, ProtocolViolation) and self.v5 and transport is not None:
            # MQTT 5: say why before closing [MQTT-4.13.2-1]; close() sends what is written first
            self._write(bytes((DISCONNECT, 1, exc.code)))
            self._flush()
            transport.close()
        else:
            self.abort()  # MQTT 3.1.1: close the network connection [MQTT-4.8.0-1]

    def _fail_all(self, error: BusConnectionError) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        pending: list[asyncio.Future[Any]] = []
        orphans = self._orphans
        for mid, (packet, future) in self._in_flight.items():
            if future is not None:
                pending.append(future)
            elif len(orphans) < self.max_queued:
                orphans.sent.append((mid, packet))
            else:
                self.stats.lost += 1
        for item in self._queued:
            if item.future is not None:
                pending.append(item.future)
            elif len(orphans) < self.max_queued:
                orphans.queued.append(item)
            else:
                self.stats.lost += 1
        pending += [waiter for waiter, _, _ in self._waiting.values()]
        if self._idle is not None:
            pending.append(self._idle)
        self._in_flight.clear()
        self._queued.clear()
        self._waiting.clear()
        self.stats.held_dropped += len(self._held)  # not acknowledged: the broker sends QoS 1 ones again
        self._held.clear()
        self._held_bytes = 0
        for future in pending:
            if not future.done():
                future.set_exception(error)
                future.exception()  # a publisher that did not track it must not log "never retrieved"


def _mid_offset(packet: bytes) -> int:
    """Where the packet id of an encoded QoS > 0 PUBLISH is."""
    _, pos = read_varint(packet, 1)
    return pos + 2 + ((packet[pos] << 8) | packet[pos + 1])


def read_varint_safe(buf: bytes, pos: int) -> tuple[int, int]:
    """As :func:`read_varint`, but (0, -1) when the bytes are not all there yet.

    Raises:
        MalformedPacket: more than four bytes (MQTT's limit, 268,435,455) [MQTT-1.5.5-1].
    """
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
            raise MalformedPacket("malformed remaining length from the broker (more than 4 bytes)")
    return 0, -1
