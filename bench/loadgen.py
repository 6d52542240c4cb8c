"""A minimal MQTT 3.1.1 client on an asyncio protocol, for load generation only (fleets and preloading).

Thousands of device connections in one Python process cost too much with a full client (a paho object, a task and
a timer each); load generation needs CONNECT with a Will, PUBLISH at QoS 0 and 1 with a bounded window, SUBSCRIBE,
PUBACK and PINGREQ, nothing else. Every packet it sends is encoded by :mod:`broker.mqtt` (the one MQTT codec of the
repository); it reads only the few packets a broker answers a load generator with. asyncio sets TCP_NODELAY on its
sockets, so Nagle never delays a packet (P1 of shared/reference/performance.md). This is not the product's client
(that is :class:`broker.client.Bus`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from broker import mqtt
from broker.mqtt import Will
from schemas.errors import BusConnectionError

__all__ = ["OnMessage", "Will", "WireClient"]

OnMessage = Callable[["WireClient", str, bytes, int], None]


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
        self._rest = b""
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
            async with asyncio.timeout(timeout):
                _, proto = await loop.create_connection(lambda: cls(client_id, on_message), host, port)
        except (OSError, TimeoutError) as exc:
            raise BusConnectionError(f"{client_id}: cannot connect to {host}:{port}: {exc}") from exc
        proto._connack = loop.create_future()
        spec = mqtt.ConnectSpec(client_id, v5=False, keepalive_s=keepalive, clean_start=clean, username=username,
                                password=password, will=will)  # fmt: skip
        proto._write(mqtt.encode_connect(spec))
        try:
            async with asyncio.timeout(timeout):
                rc = await proto._connack
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
        buf = self._rest + data if self._rest else data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            length, body = mqtt.read_varint_safe(buf, pos + 1)
            if body < 0 or body + length > end:
                break
            self._handle(buf[pos], buf[body : body + length])
            pos = body + length
        self._rest = buf[pos:]

    def _handle(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == mqtt.PUBLISH:
            n = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + n].decode()
            qos = (first >> 1) & 3
            pos = 2 + n
            if qos:
                pid = int.from_bytes(body[pos : pos + 2], "big")
                pos += 2
                self._write(mqtt.encode_puback(pid))
            self.received += 1
            if self.on_message is not None:
                self.on_message(self, topic, body[pos:], qos)
        elif kind == mqtt.PUBACK:
            pid = int.from_bytes(body[:2], "big")
            if pid in self.inflight:
                self.inflight.discard(pid)
                self.acked += 1
                window = self._window
                if window is not None and not window.done() and len(self.inflight) < self._window_limit:
                    window.set_result(None)
        elif kind == mqtt.CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(body[1])
        elif kind == mqtt.SUBACK:
            fut = self._suback.pop(int.from_bytes(body[:2], "big"), None)
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
        self.last_write = time.monotonic()  # the event loop's clock (``loop.time()``), without its method call

    def _pid(self) -> int:
        for _ in range(65_535):
            self._next_pid = self._next_pid % 65_535 + 1
            if self._next_pid not in self.inflight:
                return self._next_pid
        raise BusConnectionError(f"{self.client_id}: 65,535 publishes unacknowledged")

    def publish(self, topic: str | bytes, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Write a PUBLISH now (QoS 1 is tracked until its PUBACK; see :meth:`window`). ``topic`` may be given
        already encoded (UTF-8), as a fleet that sends the same topics over and over does."""
        pid = 0
        if qos:
            pid = self._pid()
            self.inflight.add(pid)
        name = topic if isinstance(topic, bytes) else topic.encode()
        self._write(mqtt.encode_publish(name, payload, qos, retain, pid, b""))
        self.published += 1

    async def window(self, limit: int, timeout: float = 30.0) -> None:
        """Wait until fewer than ``limit`` QoS 1 publishes are unacknowledged."""
        if len(self.inflight) < limit:
            return
        self._window_limit = limit
        self._window = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._window
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
        self._write(mqtt.encode_subscribe(pid, filters, v5=False))
        async with asyncio.timeout(timeout):
            await fut

    def ping(self) -> None:
        """Send a PINGREQ (keeps an idle connection alive)."""
        self._write(mqtt.encode_pingreq())

    def disconnect(self) -> None:
        """A clean DISCONNECT (the Will is not published), then close."""
        if self.transport is not None:
            self.transport.write(mqtt.encode_disconnect())
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the Will)."""
        if self.transport is not None:
            self.transport.abort()
