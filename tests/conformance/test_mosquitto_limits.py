"""The broker's Maximum Packet Size, on a private Mosquitto that advertises one (MQTT 5 [MQTT-3.2.2-15]).

The issue: a 2 MB publish was sent to a broker that advertised 1 MiB, the broker cut the connection, and a device's
outbox retried that message for ever (the Will fired at every try). Now the publish fails before it is sent with
MessageTooLarge, the connection stays up, and the outbox drops that one message with a reason and sends the rest.
"""

from __future__ import annotations

import pytest

from broker.client import Bus, BusOptions, Outgoing
from devices.sdk import Device, DeviceConfig
from schemas.errors import MessageTooLarge
from schemas.events import Utterance
from schemas.topics import Kind
from testkit.mosquitto import MosquittoProcess
from tests.conftest import require_mosquitto

pytestmark = [pytest.mark.broker]

MIB = 1024 * 1024


async def test_a_publish_above_the_brokers_maximum_packet_size_fails_before_sending() -> None:
    require_mosquitto()
    async with MosquittoProcess(extra_lines=[f"max_packet_size {MIB}"]) as broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        async with Bus(BusOptions(url=url, protocol="5")) as bus:
            with pytest.raises(MessageTooLarge) as info:
                await bus.publish_raw(Outgoing("big/one", b"x" * (2 * MIB), 1), wait=True)
            assert info.value.limit == MIB
            await bus.publish_raw(Outgoing("small/one", b"x", 1), wait=True)  # the connection is still up
            assert bus.stats.disconnects == 0


class Buds(Device):
    """A bare earphones device: it publishes utterances."""

    kind = Kind.EARPHONES


async def test_the_device_outbox_drops_what_can_never_be_sent_and_goes_on() -> None:
    require_mosquitto()
    async with MosquittoProcess(extra_lines=["max_packet_size 1024"]) as broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        config = DeviceConfig(url=url, heartbeat_s=0, hold_while_agent_away=False)
        async with Bus(BusOptions(url=url, name="watcher")) as watcher, Buds("alice", "e1", config) as buds:
            await watcher.subscribe("wb/v1/alice/earphones/e1/evt/#", 1)
            buds.emit(Utterance(text="x" * 1500))  # about 1.6 KB encoded: never fits 1 KiB
            small = buds.emit(Utterance(text="hi"))
            await buds.bus.wait_connected(10)
            assert await buds.drain(10)
            assert buds.stats.dead_lettered == 1
            assert [reason for _, reason, _ in buds.dead_letters] in (["too_large"], ["too_big"])
            message = await watcher.next_batch(1, timeout=10)
            assert [m.envelope.id for m in message] == [small.id]
            assert buds.bus.stats.disconnects == 0  # the broker never had to cut the device off
