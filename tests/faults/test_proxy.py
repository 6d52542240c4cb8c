"""The test kit's TCP proxy: it forwards, a cut is silent (nothing closes, nothing passes), a heal delivers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from testkit.proxy import TcpProxy
from tests.faults.harness import wait_for

pytestmark = [pytest.mark.timeout(60)]
WAIT = 5.0


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A loopback echo server; yields its port."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), WAIT)


async def test_forwards_then_a_cut_holds_everything_and_a_heal_delivers_it() -> None:
    async with echo_server() as port, TcpProxy(port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader, writer, b"hello") == b"hello"
        proxy.cut()
        writer.write(b"during the cut")
        await writer.drain()
        # Silence, not an error: the read times out and the connection is still open.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(100), 0.5)
        assert not reader.at_eof()
        assert proxy.connections == 1
        proxy.heal()
        assert await asyncio.wait_for(reader.readexactly(14), WAIT) == b"during the cut"
        assert await roundtrip(reader, writer, b"after") == b"after"
        writer.close()
    assert proxy.stats.cuts == 1
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(b"helloduring the cutafter")


async def test_a_connection_made_during_a_cut_is_held_then_dropped_at_the_heal() -> None:
    async with echo_server() as port, TcpProxy(port) as proxy:
        proxy.cut()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"connect")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(100), 0.5)
        assert proxy.stats.held == 1
        proxy.heal()
        # Like a SYN lost in a partition: the client learns it must try again.
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(100), WAIT) == b""
        writer.close()
        again_reader, again_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(again_reader, again_writer, b"retry") == b"retry"
        again_writer.close()


async def test_an_end_during_the_cut_is_passed_on_after_the_heal() -> None:
    async with echo_server() as port, TcpProxy(port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader, writer, b"x") == b"x"
        proxy.cut()
        writer.close()
        await writer.wait_closed()
        assert proxy.connections == 1  # nobody noticed yet
        proxy.heal()
        await wait_for(lambda: proxy.connections == 0, "the proxy to close the other side", WAIT)
