"""No silent loss, on a private Mosquitto: fire-and-forget QoS 1 publishes survive the connection dying mid-burst.

The issue: kill -9 of the broker during a burst, and 242 messages published without waiting had returned OK and
never arrived, with no error anywhere: the native connection dropped whatever was in flight without a future.
Here the connection is reset mid-burst (through a proxy, so the broker itself loses nothing and every loss would be
the client's): each publish either raised (not connected: the caller knows) or arrives, because what was in flight
is sent again on the next connection (with DUP on the resumed session, MQTT-4.4.0-1).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from broker.client import Bus, BusOptions
from schemas.envelope import Message, make
from schemas.errors import BusConnectionError
from schemas.events import HeartRate
from testkit.mosquitto import MosquittoProcess
from testkit.proxy import TcpProxy
from tests.conftest import require_mosquitto

pytestmark = [pytest.mark.broker]


@pytest.mark.parametrize("persistent", [True, False], ids=["resumed-session", "new-session"])
async def test_a_connection_reset_mid_burst_loses_nothing_published(persistent: bool) -> None:
    require_mosquitto()
    user = f"u{uuid.uuid4().hex[:8]}"
    topic = f"wb/v1/{user}/ring/r1/evt/sensor/hr"
    async with MosquittoProcess() as broker, TcpProxy(broker.port) as proxy:
        direct = f"mqtt://127.0.0.1:{broker.port}"
        sub_options = BusOptions(url=direct, client_id=f"sub-{user}", persistent=True, name="sub")
        pub_options = BusOptions(
            url=proxy.url, client_id=f"pub-{user}", persistent=persistent, protocol="5", backoff_max_s=0.2, name="pub"
        )
        got: set[str] = set()
        async with Bus(sub_options) as sub, Bus(pub_options) as pub:
            await sub.subscribe(f"wb/v1/{user}/#", 1)
            published: list[str] = []
            for i in range(3000):
                env = make(HeartRate(bpm=40 + i % 150), seq=i + 1)
                try:
                    await pub.publish(topic, env)  # without waiting for the PUBACK
                    published.append(env.id)
                except BusConnectionError:
                    pass  # not connected: the caller is told, it is not expected to arrive
                if i % 50 == 0:
                    await asyncio.sleep(0)  # let some leave and some be acknowledged
                if i == 1500:
                    proxy.drop()  # the connection dies with publishes in flight
            async with asyncio.timeout(60):
                while not set(published) <= got:
                    batch: list[Message] = await sub.next_batch(1000, timeout=1.0)
                    got.update(m.envelope.id for m in batch)
            assert pub.stats.resent > 0  # the reset did catch publishes in flight
            assert pub.stats.lost == 0
        assert set(published) <= got
