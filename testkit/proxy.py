"""A loopback TCP proxy a test controls: forward, cut the network silently, heal it.

A silent cut is what a device walking out of Wi-Fi range looks like to the broker: no FIN, no RST, just no
more bytes. :meth:`TcpProxy.cut` stops reading from both sockets of every connection and keeps them open,
so whatever either side sends waits in the kernel's buffers (as unacknowledged segments would wait in a
real partition) and neither side learns anything until its own keep-alive gives up. A connection that
arrives during the cut is accepted and held unanswered, as a SYN lost in a partition would leave the
client waiting; :meth:`TcpProxy.heal` drops those (the client retries) and resumes the connections that
existed before the cut, delivering what waited, and closing the other side of any that ended meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from schemas.errors import BusError


@dataclass(slots=True)
class ProxyStats:
    """What a proxy counts.

    Attributes:
        accepted: connections accepted from clients.
        forwarded: connections joined to the target.
        held: connections that arrived during a cut (dropped when it heals).
        bytes_up: bytes forwarded from clients to the target.
        bytes_down: bytes forwarded from the target to clients.
        cuts: how many times the network was cut.
    """

    accepted: int = 0
    forwarded: int = 0
    held: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    cuts: int = 0


class _Side(asyncio.Protocol):
    """One socket of a proxied connection; hands what it reads to the pipe."""

    def __init__(self, pipe: _Pipe, upstream: bool) -> None:
        self.pipe = pipe
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 (TCP gives a Transport)
        self.transport = transport
        self.pipe.made(self)

    def data_received(self, data: bytes) -> None:
        self.pipe.forward(self, data)

    def eof_received(self) -> bool:
        self.pipe.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.close()


class _Pipe:
    """A client connection and its connection to the target."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, upstream=False)
        self.target: _Side | None = None
        self.held = False
        self.closed = False
        self.connecting: asyncio.Task[None] | None = None

    def sides(self) -> list[asyncio.Transport]:
        out = [] if self.client.transport is None else [self.client.transport]
        if self.target is not None and self.target.transport is not None:
            out.append(self.target.transport)
        return out

    def made(self, side: _Side) -> None:
        if side is self.client:
            # Read nothing until the target is joined (or the cut heals): bytes wait in the kernel.
            side.transport.pause_reading()  # type: ignore[union-attr]
            self.proxy._pipes.add(self)
            self.proxy.stats.accepted += 1
            if self.proxy.is_cut:
                self.held = True
                self.proxy.stats.held += 1
            else:
                self.connecting = asyncio.get_running_loop().create_task(self._join())
        elif self.closed:
            side.transport.close()  # type: ignore[union-attr]
        elif self.proxy.is_cut:
            side.transport.pause_reading()  # type: ignore[union-attr]
        else:
            self.proxy.stats.forwarded += 1
            self.client.transport.resume_reading()  # type: ignore[union-attr]

    async def _join(self) -> None:
        loop = asyncio.get_running_loop()
        self.target = _Side(self, upstream=True)
        target = self.target
        try:
            await loop.create_connection(lambda: target, self.proxy.target_host, self.proxy.target_port)
        except OSError:
            self.close()

    def forward(self, side: _Side, data: bytes) -> None:
        other = self.target if side is self.client else self.client
        if other is None or other.transport is None or other.transport.is_closing():
            return
        other.transport.write(data)
        if side is self.client:
            self.proxy.stats.bytes_up += len(data)
        else:
            self.proxy.stats.bytes_down += len(data)

    def pause(self) -> None:
        for transport in self.sides():
            if not transport.is_closing():
                transport.pause_reading()

    def resume(self) -> None:
        if self.held:
            self.abort()
            return
        if self.target is None or self.target.transport is None:
            return  # still joining: ``made`` resumes the client once the target answers
        for transport in self.sides():
            if not transport.is_closing():
                transport.resume_reading()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy._pipes.discard(self)
        for transport in self.sides():
            transport.close()

    def abort(self) -> None:
        self.closed = True
        self.proxy._pipes.discard(self)
        for transport in self.sides():
            transport.abort()
        if self.connecting is not None:
            self.connecting.cancel()


class TcpProxy:
    """Forward ``host:port`` to ``target_host:target_port``; :meth:`cut` and :meth:`heal` the link.

    ``async with TcpProxy(broker_port) as proxy:`` then point a client at ``proxy.port``.

    Args:
        target_port: the port to forward to.
        target_host: the host to forward to (loopback by default).
        host: the address to listen on.
        port: the port to listen on (0: a free one).
    """

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1", host: str = "127.0.0.1", port: int = 0):
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self._port = port
        self.stats = ProxyStats()
        self._pipes: set[_Pipe] = set()
        self._server: asyncio.Server | None = None
        self._cut = False

    @property
    def port(self) -> int:
        """The port clients connect to."""
        if self._server is None:
            raise BusError("the proxy is not started")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the proxy."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        """Whether the link is cut now."""
        return self._cut

    @property
    def connections(self) -> int:
        """Connections open through the proxy now (held ones included)."""
        return len(self._pipes)

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Pipe(self).client, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.abort()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._server.wait_closed()

    def cut(self) -> None:
        """Stop forwarding in both directions without closing anything."""
        if self._cut:
            return
        self._cut = True
        self.stats.cuts += 1
        for pipe in list(self._pipes):
            pipe.pause()

    def heal(self) -> None:
        """Forward again: connections from before the cut resume, those that arrived during it are dropped."""
        if not self._cut:
            return
        self._cut = False
        for pipe in list(self._pipes):
            pipe.resume()

    def drop(self) -> None:
        """Reset every connection at once (a loud failure, unlike :meth:`cut`)."""
        for pipe in list(self._pipes):
            pipe.abort()
