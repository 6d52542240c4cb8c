"""A minimal MQTT 3.1.1 client on an asyncio protocol, for load generation only (fleets and preloading).

Thousands of device connections in one Python process cost too much with a full client (a paho object, a task and
a timer each); load generation needs CONNECT with a Will, PUBLISH at QoS 0 and 1 with a bounded window, SUBSCRIBE,
PUBACK and PINGREQ, nothing else. asyncio sets TCP_NODELAY on its sockets, so Nagle never delays a packet (P1 of
shared/reference/performance.md). This is not the product's client (that is :class:`broker.client.Bus`).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass

from schemas.errors import BusConnectionError

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14

OnMessage = Callable[["WireClient", str, bytes, int], None]


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    if n < 0 or n > 268_435_455:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _blob(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def packet(kind: int, flags: int, body: bytes) -> bytes:
    """One packet: fixed header and body."""
    return bytes((kind << 4 | flags,)) + remaining_length(len(body)) + body


@dataclass(frozen=True, slots=True)
class Will:
    """The Will of a connection."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect_packet(
    client_id: str,
    *,
    clean: bool = True,
    keepalive: int = 60,
    will: Will | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """A CONNECT packet (MQTT 3.1.1)."""
    flags = 0x02 if clean else 0
    payload = _utf8(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _utf8(will.topic) + _blob(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
        if password is not None:
            flags |= 0x40
            payload += _blob(password.encode())
    head = _utf8("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive)
    return packet(CONNECT, 0, head + payload)


def publish_packet(topic: str, payload: bytes, qos: int = 0, retain: bool = False, pid: int = 0) -> bytes:
    """A PUBLISH packet."""
    body = _utf8(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(PUBLISH, (qos << 1) | (1 if retain else 0), body)


def subscribe_packet(pid: int, filters: list[tuple[str, int]]) -> bytes:
    """A SUBSCRIBE packet."""
    body = struct.pack("!H", pid) + b"".join(_utf8(f) + bytes((q,)) for f, q in filters)
    return packet(SUBSCRIBE, 0x02, body)


class Parser:
    """Splits a byte stream into ``(type, flags, body)`` packets."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Add bytes; return the packets now complete."""
        buf = self._buf
        buf += data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first = buf[pos]
            i, length, shift, complete = pos + 1, 0, 0, False
            while i < end:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    complete = True
                    break
                if shift >= 28:
                    raise ValueError("malformed remaining length")
            if not complete or i + length > end:
                break
            out.append((first >> 4, first & 0x0F, bytes(buf[i : i + length])))
            pos = i + length
        del buf[:pos]
        return out


def parse_publish(flags: int, body: bytes) -> tuple[str, bytes, int, int]:
    """``(topic, payload, qos, packet id)`` of a PUBLISH body."""
    (n,) = struct.unpack_from("!H", body)
    topic = body[2 : 2 + n].decode()
    qos = (flags >> 1) & 3
    pos = 2 + n
    pid = 0
    if qos:
        (pid,) = struct.unpack_from("!H", body, pos)
        pos += 2
    return topic, body[pos:], qos, pid


class WireClient(asyncio.Protocol):
    """One MQTT connection. Create with :meth:`open`.

    Attributes:
        client_id: the MQTT client id.
        published: publishes written.
        acked: QoS 1 publishes the broker acknowledged.
        received: PUBLISH packets received.
    """

    def __init__(self, client_id: str, on_message: OnMessage | None = None) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self.published = 0
        self.acked = 0
        self.received = 0
        self.inflight: set[int] = set()
        self.transport: asyncio.Transport | None = None
        self.last_write = 0.0
        self._parser = Parser()
        self._next_pid = 0
        self._connack: asyncio.Future[int] | None = None
        self._suback: dict[int, asyncio.Future[None]] = {}
        self._window: asyncio.Future[None] | None = None
        self._window_limit = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        client_id: str,
        *,
        clean: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        username: str | None = None,
        password: str | None = None,
        on_message: OnMessage | None = None,
        timeout: float = 10.0,
    ) -> WireClient:
        """Connect and wait for the CONNACK.

        Raises:
            BusConnectionError: the TCP connection failed, the broker refused, or no CONNACK within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: cls(client_id, on_message), host, port), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise BusConnectionError(f"{client_id}: cannot connect to {host}:{port}: {exc}") from exc
        proto._connack = loop.create_future()
        proto._write(connect_packet(client_id, clean=clean, keepalive=keepalive, will=will, username=username,
                                    password=password))  # fmt: skip
        try:
            rc = await asyncio.wait_for(proto._connack, timeout)
        except TimeoutError as exc:
            proto.abort()
            raise BusConnectionError(f"{client_id}: no CONNACK from {host}:{port} within {timeout} s") from exc
        if rc != 0:
            proto.abort()
            raise BusConnectionError(f"{client_id}: the broker refused the connection (return code {rc})")
        return proto

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for fut in (self._connack, self._window, *self._suback.values()):
            if fut is not None and not fut.done():
                fut.set_exception(BusConnectionError(f"{self.client_id}: connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        for kind, flags, body in self._parser.feed(data):
            if kind == PUBLISH:
                topic, payload, qos, pid = parse_publish(flags, body)
                self.received += 1
                if qos == 1:
                    self._write(packet(PUBACK, 0, struct.pack("!H", pid)))
                if self.on_message is not None:
                    self.on_message(self, topic, payload, qos)
            elif kind == PUBACK:
                (pid,) = struct.unpack("!H", body[:2])
                if pid in self.inflight:
                    self.inflight.discard(pid)
                    self.acked += 1
                    window = self._window
                    if window is not None and not window.done() and len(self.inflight) < self._window_limit:
                        window.set_result(None)
            elif kind == CONNACK:
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(body[1])
            elif kind == SUBACK:
                (pid,) = struct.unpack("!H", body[:2])
                fut = self._suback.pop(pid, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    # ------------------------------------------------------------------ operations

    @property
    def connected(self) -> bool:
        """Whether the TCP connection is open."""
        return self.transport is not None and not self.transport.is_closing()

    def _write(self, data: bytes) -> None:
        if self.transport is None:
            raise BusConnectionError(f"{self.client_id}: not connected")
        self.transport.write(data)
        self.last_write = asyncio.get_running_loop().time()

    def _pid(self) -> int:
        for _ in range(65_535):
            self._next_pid = self._next_pid % 65_535 + 1
            if self._next_pid not in self.inflight:
                return self._next_pid
        raise BusConnectionError(f"{self.client_id}: 65,535 publishes unacknowledged")

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Write a PUBLISH now (QoS 1 is tracked until its PUBACK; see :meth:`window`)."""
        pid = 0
        if qos:
            pid = self._pid()
            self.inflight.add(pid)
        self._write(publish_packet(topic, payload, qos, retain, pid))
        self.published += 1

    async def window(self, limit: int, timeout: float = 30.0) -> None:
        """Wait until fewer than ``limit`` QoS 1 publishes are unacknowledged."""
        if len(self.inflight) < limit:
            return
        self._window_limit = limit
        self._window = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._window, timeout)
        finally:
            self._window = None

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until every QoS 1 publish is acknowledged."""
        await self.window(1, timeout)

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK."""
        pid = self._pid()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._suback[pid] = fut
        self._write(subscribe_packet(pid, filters))
        await asyncio.wait_for(fut, timeout)

    def ping(self) -> None:
        """Send a PINGREQ (keeps an idle connection alive)."""
        self._write(packet(PINGREQ, 0, b""))

    def disconnect(self) -> None:
        """A clean DISCONNECT (the Will is not published), then close."""
        if self.transport is not None:
            self.transport.write(packet(DISCONNECT, 0, b""))
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the Will)."""
        if self.transport is not None:
            self.transport.abort()
