"""Fixtures of the conformance suite: a fake broker, and a native connection opened against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from broker import mqtt
from tests.conformance.fake_broker import FakeBroker, Peer, connack


class Received(list[tuple[str, bytes, int, bool, int, str | None]]):
    """What the connection handed over, with a way to wait for more."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    def __call__(self, *item: Any) -> None:
        self.append(item)
        self.arrived.set()

    async def wait(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self) < n:
                self.arrived.clear()
                await self.arrived.wait()


@dataclass
class Opened:
    """A native connection to the fake broker, the broker's end of it, and what was delivered."""

    conn: mqtt.Connection
    peer: Peer
    received: Received
    connect: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    async def closed_with(self, error: type[BaseException], timeout: float = 5.0) -> BaseException:
        """Wait for the connection to end; its error must be of type ``error``."""
        with pytest.raises(error) as info:
            await asyncio.wait_for(asyncio.shield(self.conn.closed), timeout)
        return info.value


async def open_connection(
    broker: FakeBroker,
    *,
    v5: bool,
    props: dict[int, Any] | None = None,
    present: bool = False,
    manual_ack: bool = False,
    **spec: Any,
) -> Opened:
    """Open a native :class:`mqtt.Connection` to ``broker`` and answer its CONNECT."""
    received = Received()
    task = asyncio.create_task(
        mqtt.Connection.open(
            "127.0.0.1",
            broker.port,
            mqtt.ConnectSpec(client_id="conformance", v5=v5, **spec),
            received,
            manual_ack=manual_ack,
            max_queued=100,
            timeout=5,
        )
    )
    peer = await broker.accept()
    first, body = await peer.read_packet()
    assert first == mqtt.CONNECT
    await peer.send(connack(v5, present=present, props=props))
    conn = await task
    return Opened(conn, peer, received, body)


@pytest.fixture
async def broker() -> AsyncIterator[FakeBroker]:
    async with FakeBroker() as fake:
        yield fake


@pytest.fixture(params=[False, True], ids=["3.1.1", "5"])
def v5(request: pytest.FixtureRequest) -> bool:
    """Each test that applies to both versions runs on MQTT 3.1.1 and MQTT 5."""
    value: bool = request.param
    return value
