"""The in-memory bus's own promises beyond the shared contract suite (tests/contract/test_bus.py runs that on it):
what an offline session keeps, what an empty retained payload does, a session taken over, the hooks."""

from __future__ import annotations

import asyncio

import pytest

from broker.bus import Bus, BusOptions, Outgoing
from broker.memory import MemoryBroker, MemoryBus
from schemas.envelope import make
from schemas.errors import BusConnectionError, PublishError
from schemas.events import HeartRate, Utterance

HR = "wb/v1/u/ring/r1/evt/sensor/hr"
SAY = "wb/v1/u/earphones/b1/evt/voice/utterance"


def bus(broker: MemoryBroker, **kw: object) -> MemoryBus:
    return MemoryBus(BusOptions(url=broker.url, **kw), broker=broker)  # type: ignore[arg-type]


async def test_it_satisfies_the_bus_protocol() -> None:
    assert isinstance(bus(MemoryBroker()), Bus)


async def test_an_offline_persistent_session_queues_qos1_not_qos0() -> None:
    broker = MemoryBroker()
    async with bus(broker, client_id="agent", persistent=True) as agent:
        await agent.subscribe("wb/v1/u/#", 1)
    async with bus(broker) as dev:
        await dev.publish(HR, make(HeartRate(bpm=60)), qos=0)
        await dev.publish(SAY, make(Utterance(text="hi")), qos=1)
    async with bus(broker, client_id="agent", persistent=True) as agent:
        assert agent.session_present
        got = await agent.next_batch(10, timeout=1.0)
    assert [m.data for m in got] == [Utterance(text="hi")]


async def test_a_clean_session_forgets_and_an_empty_retained_payload_clears() -> None:
    broker = MemoryBroker()
    async with bus(broker, client_id="c") as c:
        await c.subscribe("wb/v1/u/#", 1)
        await c.publish_raw(Outgoing("wb/v1/u/ring/r1/state", b"", 1, True))
    assert broker.session_ids() == []
    assert broker.retained == {}


async def test_unacknowledged_messages_come_back_first_on_the_next_link() -> None:
    broker = MemoryBroker()
    options = {"client_id": "agent", "persistent": True, "manual_ack": True}
    async with bus(broker, **options) as agent, bus(broker) as dev:
        await agent.subscribe("wb/v1/u/#", 1)
        for text in ("a", "b", "c"):
            await dev.publish(SAY, make(Utterance(text=text)))
        first, second, third = await agent.next_batch(3, timeout=1.0)
        assert agent.ack(second)
    async with bus(broker, **options) as agent:
        again = await agent.next_batch(10, timeout=1.0)
        assert [m.envelope.id for m in again] == [first.envelope.id, third.envelope.id]
        assert all(agent.ack(m) for m in again)
    async with bus(broker, **options) as agent:
        assert await agent.next_batch(10, timeout=0.1) == []  # all acknowledged now: nothing comes back


async def test_a_new_connection_takes_the_session_over_and_the_old_ones_will_fires() -> None:
    """MQTT 3.1.1 §3.1.4 (MQTT-3.1.4-2): the server disconnects the existing client; that connection did not end
    with a DISCONNECT, so its Will is published (as Mosquitto does)."""
    broker = MemoryBroker()
    will = Outgoing("wb/v1/u/ring/r1/state", b"x", 1, True)
    async with bus(broker, client_id="ring", will=will, backoff_min_s=10) as old:
        async with bus(broker, client_id="ring") as new:
            assert not old.connected
            assert new.connected
        assert broker.retained["wb/v1/u/ring/r1/state"].payload == b"x"


async def test_not_connected_is_an_error_never_a_silent_loss() -> None:
    broker = MemoryBroker()
    b = bus(broker, client_id="d")
    async with b:
        broker.kill("d")
        assert not b.connected
        with pytest.raises(BusConnectionError):
            await b.publish(HR, make(HeartRate(bpm=60)))
        with pytest.raises(BusConnectionError):
            b.publish_unconfirmed(Outgoing(HR, b"{}", 0))


async def test_hooks_rewrite_topics_both_ways() -> None:
    class Prefixed(MemoryBus):
        def outgoing_topic(self, topic: str) -> str:
            return "p/" + topic

        def deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, ct: str | None) -> None:
            super().deliver(topic.removeprefix("p/"), payload, qos, retain, mid, ct)

    broker = MemoryBroker()
    async with Prefixed(BusOptions(url=broker.url), broker=broker) as b:
        await b.subscribe("p/wb/v1/u/#", 1)
        await b.publish(HR, make(HeartRate(bpm=61)))
        [message] = await b.next_batch(1, timeout=1.0)
    assert message.topic == HR
    assert "p/" + HR not in broker.retained


async def test_a_wildcard_topic_name_is_refused() -> None:
    broker = MemoryBroker()
    async with bus(broker) as b:
        with pytest.raises(PublishError):
            await b.publish_raw(Outgoing("wb/v1/+/x", b"{}", 0))


async def test_reconnects_after_a_restart_and_renews_subscriptions() -> None:
    broker = MemoryBroker()
    async with bus(broker, backoff_min_s=0.01) as sub, bus(broker, backoff_min_s=0.01) as pub:
        await sub.subscribe("wb/v1/u/#", 1)
        await broker.restart()
        async with asyncio.timeout(5):
            await sub.wait_connected()
            await pub.wait_connected()
        await pub.publish(HR, make(HeartRate(bpm=62)))
        [message] = await sub.next_batch(1, timeout=1.0)
    assert message.data == HeartRate(bpm=62)
    assert sub.stats.connects == 2
