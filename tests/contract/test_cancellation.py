"""A task cancelled while the bus waits for the broker stops, on both transports and both brokers.

aiomqtt (the paho transport) waits for every SUBACK, UNSUBACK and CONNACK with ``asyncio.wait_for``, which on Python
3.11 returns the result instead of raising when the task is cancelled as the result arrives (gh-86296). Before the
transport raised such a cancellation again (``schemas.tasks.cancellation_kept``), 294 of the 1,280 tasks below went
on against Mosquitto.
"""

from __future__ import annotations

import asyncio

import pytest

from broker.bus import BusOptions, TransportName
from broker.client import Bus
from tests.conftest import BrokerUnderTest

pytestmark = [pytest.mark.broker]


@pytest.mark.parametrize("transport", ["native", "paho"])
async def test_a_task_cancelled_while_it_subscribes_stops(
    any_broker: BrokerUnderTest, transport: TransportName
) -> None:
    buses = [
        Bus(BusOptions(url=any_broker.url, protocol="3.1.1", transport=transport, name=f"c{i}")) for i in range(16)
    ]
    for bus in buses:
        await bus.__aenter__()
    try:
        for bus in buses:
            await bus.wait_connected(30)
        went_on = 0
        for round_ in range(20):

            async def subscriber(bus: Bus) -> None:
                for _ in range(200):  # bounded: a task whose cancellation was lost ends here, and is counted
                    await bus.subscribe_now([("cancel/#", 1)])

            tasks = [asyncio.create_task(subscriber(bus)) for bus in buses for _ in range(4)]
            await asyncio.sleep(0.002 * (round_ % 5))
            asked = [task.cancel() for task in tasks]  # false for a task already done
            results = await asyncio.gather(*tasks, return_exceptions=True)
            went_on += sum(a and not isinstance(r, asyncio.CancelledError) for a, r in zip(asked, results, strict=True))
        assert went_on == 0
    finally:
        for bus in buses:
            await bus.__aexit__(None, None, None)
