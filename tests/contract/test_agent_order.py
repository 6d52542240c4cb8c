"""The agent handles each device's events in ``seq`` order whatever order the broker delivers them in; a missing one
is waited for (bounded), then skipped and recorded as a gap."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from agent.runtime import AgentRuntime, AgentSettings
from agent.store import Store
from broker.client import Bus, BusOptions
from schemas.actions import DeviceState
from schemas.envelope import make
from schemas.events import HeartRate
from schemas.topics import Kind
from tests.conftest import AGENT_PASSWORD, AGENT_USER, BrokerUnderTest

pytestmark = [pytest.mark.broker]


async def stored_order(db: Path, user: str) -> list[tuple[str, int]]:
    async with Store(db) as store:
        rows = await store.rows(
            "SELECT device, dev_seq FROM events WHERE user = ? AND channel = 'evt' ORDER BY seq", user
        )
    return [(str(device), int(seq)) for device, seq in rows]


async def stored(db: Path, user: str, count: int, within: float = 30) -> list[tuple[str, int]]:
    """The devices' events the agent stored, in the order it handled them, once there are ``count`` (a condition
    with a generous ceiling, not a timed wait)."""
    async with asyncio.timeout(within):
        while True:
            order = await stored_order(db, user)
            if len(order) >= count:
                return order
            await asyncio.sleep(0.05)


async def send(dev: Bus, user: str, device: str, *seqs: int) -> None:
    for seq in seqs:
        await dev.publish(
            f"wb/v1/{user}/ring/{device}/evt/sensor/hr", make(HeartRate(bpm=60 + seq), seq=seq), wait=True
        )


async def test_events_delivered_out_of_order_are_handled_in_seq_order(
    any_broker: BrokerUnderTest, tmp_path: Path
) -> None:
    user = f"t-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "a.db"
    settings = AgentSettings(url=any_broker.url, db=db, instance=f"agent-{user}", username=AGENT_USER,
                             password=AGENT_PASSWORD, order_wait_s=60)  # fmt: skip
    async with AgentRuntime(settings) as runtime, Bus(BusOptions(url=any_broker.url)) as dev:
        await runtime.wait_connected(15)
        born = make(DeviceState(online=True, kind=Kind.RING, epoch=1))
        await dev.publish(f"wb/v1/{user}/ring/r1/state", born, retain=True, wait=True)
        await send(dev, user, "r1", 1, 3, 5, 4)
        await send(dev, user, "r2", 7)  # another device is not held back by r1's missing 2
        assert await stored(db, user, 2) == [("r1", 1), ("r2", 7)]
        await send(dev, user, "r1", 2)
        await stored(db, user, 6)
        assert runtime.stats.order_gaps == 0
        # the device restarts: a new epoch, its seq starts at 1 again
        reborn = make(DeviceState(online=True, kind=Kind.RING, epoch=2))
        await dev.publish(f"wb/v1/{user}/ring/r1/state", reborn, retain=True, wait=True)
        await send(dev, user, "r1", 2, 1)
        order = await stored(db, user, 8)
    assert order == [("r1", 1), ("r2", 7), ("r1", 2), ("r1", 3), ("r1", 4), ("r1", 5), ("r1", 1), ("r1", 2)]


async def test_a_lost_event_holds_its_device_back_for_the_wait_only(
    any_broker: BrokerUnderTest, tmp_path: Path
) -> None:
    user = f"t-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "a.db"
    settings = AgentSettings(url=any_broker.url, db=db, instance=f"agent-{user}", username=AGENT_USER,
                             password=AGENT_PASSWORD, order_wait_s=0.5)  # fmt: skip
    async with AgentRuntime(settings) as runtime, Bus(BusOptions(url=any_broker.url)) as dev:
        await runtime.wait_connected(15)
        await send(dev, user, "r1", 1, 3, 4)  # 2 never comes (a QoS 0 event lost on the way)
        assert await stored(db, user, 3) == [("r1", 1), ("r1", 3), ("r1", 4)]
        assert runtime.stats.order_gaps == 1
        await send(dev, user, "r1", 2)  # after its place was given up: handled, not held
        order = await stored(db, user, 4)
    assert order == [("r1", 1), ("r1", 3), ("r1", 4), ("r1", 2)]


async def test_a_restarted_agent_knows_where_each_device_was(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    """A redelivery after a restart can bring a device's newer event before an older one: the agent remembers the
    last seq it handled, so it waits for the older one instead of taking the newer one as where the device is."""
    user = f"t-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "a.db"
    settings = AgentSettings(url=any_broker.url, db=db, instance=f"agent-{user}", username=AGENT_USER,
                             password=AGENT_PASSWORD, order_wait_s=60)  # fmt: skip
    async with Bus(BusOptions(url=any_broker.url)) as dev:
        async with AgentRuntime(settings) as runtime:
            await runtime.wait_connected(15)
            await send(dev, user, "r1", 1, 2)
            await stored(db, user, 2)
        async with AgentRuntime(settings) as runtime:
            await runtime.wait_connected(15)
            await send(dev, user, "r1", 4, 3)
            order = await stored(db, user, 4)
    assert order == [("r1", 1), ("r1", 2), ("r1", 3), ("r1", 4)]
