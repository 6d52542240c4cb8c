"""A scripted fake MQTT broker: an asyncio server on 127.0.0.1 whose test sends exactly the bytes it needs.

Mosquitto and amqtt never send a malformed packet, a second CONNACK, a QoS 2 delivery to a QoS 1 client, a refused
SUBACK with reason 0x87 on demand or a DISCONNECT with a reason code; the conformance suite needs all of them. Each
accepted connection becomes a :class:`Peer` the test drives by hand (read what the client sent, send raw bytes,
wait for the client to close).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from broker import mqtt


def packet(first: int, body: bytes) -> bytes:
    """A packet with a correct remaining length."""
    return bytes((first,)) + mqtt.varint(len(body)) + body


def connack(v5: bool, *, present: bool = False, code: int = 0, props: dict[int, Any] | None = None) -> bytes:
    """A CONNACK."""
    body = bytes((1 if present else 0, code))
    if v5:
        body += mqtt.encode_properties(props or {})
    return packet(mqtt.CONNACK, body)


def suback(mid: int, codes: list[int], v5: bool) -> bytes:
    """A SUBACK with these return / reason codes."""
    return packet(mqtt.SUBACK, mid.to_bytes(2, "big") + (b"\x00" if v5 else b"") + bytes(codes))


def publish(topic: str | bytes, payload: bytes, *, qos: int = 0, mid: int = 0, v5: bool, retain: bool = False) -> bytes:
    """A well-formed PUBLISH (MQTT 5: with an empty property block)."""
    raw = topic.encode() if isinstance(topic, str) else topic
    return mqtt.encode_publish(raw, payload, qos, retain, mid, b"\x00" if v5 else b"")


class Peer:
    """The broker's end of one client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""

    async def read_packet(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next packet the client sent: (first byte, body). Raises ConnectionError at the end of the stream."""
        async with asyncio.timeout(timeout):
            while True:
                if len(self.buf) >= 2:
                    length, pos = mqtt.read_varint_safe(self.buf, 1)
                    if pos > 0 and pos + length <= len(self.buf):
                        first, body = self.buf[0], self.buf[pos : pos + length]
                        self.buf = self.buf[pos + length :]
                        return first, body
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise ConnectionError("the client closed the connection")
                self.buf += chunk

    async def expect(self, kind: int, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next packet, skipping PINGREQs; it must be of ``kind`` (the high nibble)."""
        while True:
            first, body = await self.read_packet(timeout)
            if first != mqtt.PINGREQ:
                assert first & 0xF0 == kind & 0xF0, f"expected packet 0x{kind:02X}, got 0x{first:02X} {body!r}"
                return first, body

    async def silent(self, seconds: float) -> bool:
        """Whether the client sent nothing (but PINGREQs) for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            while True:
                first, _ = await self.read_packet(seconds)
                if first != mqtt.PINGREQ:
                    return False
        return True

    async def send(self, data: bytes) -> None:
        """Send raw bytes."""
        self.writer.write(data)
        await self.writer.drain()

    async def closed_by_client(self, timeout: float = 5.0) -> list[tuple[int, bytes]]:
        """Wait until the client closes; the packets it sent before (e.g. a DISCONNECT with its reason)."""
        packets: list[tuple[int, bytes]] = []
        with contextlib.suppress(ConnectionError):
            while True:
                packets.append(await self.read_packet(timeout))
        return packets

    def close(self) -> None:
        """Drop the connection (as a crashed broker would)."""
        self.writer.transport.abort()


class FakeBroker:
    """``async with FakeBroker() as broker:`` then ``peer = await broker.accept()`` per client connection.

    Args:
        auto: when given, every connection is handed to this coroutine function instead of :meth:`accept`.
    """

    def __init__(self, auto: Callable[[Peer], Any] | None = None) -> None:
        self._server: asyncio.Server | None = None
        self._peers: asyncio.Queue[Peer] = asyncio.Queue()
        self._auto = auto
        self._tasks: set[asyncio.Task[Any]] = set()
        self.all: list[Peer] = []

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for peer in self.all:
            peer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """Its mqtt:// URL."""
        return f"mqtt://127.0.0.1:{self.port}"

    async def accept(self, timeout: float = 10.0) -> Peer:
        """The next client connection."""
        async with asyncio.timeout(timeout):
            return await self._peers.get()

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        self.all.append(peer)
        if self._auto is None:
            self._peers.put_nowait(peer)
            return
        task = asyncio.ensure_future(self._auto(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
