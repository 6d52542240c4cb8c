"""Protocol "auto" tries MQTT 5 and falls back to 3.1.1 on a broker that speaks only 3.1.1 (the embedded amqtt).

The other contract tests skip that probe on the embedded broker (``WB_PROTOCOL=3.1.1``, tests/conftest.py): it
waits 3 s per connection for an answer amqtt never gives. This is the one place it still runs.
"""

from __future__ import annotations

import pytest

from broker.client import Bus, BusOptions
from broker.embedded import EmbeddedBroker, free_port

pytestmark = [pytest.mark.broker]


@pytest.mark.parametrize("transport", ["native", "paho"])
async def test_auto_falls_back_to_3_1_1_on_the_embedded_broker(transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WB_PROTOCOL", raising=False)
    monkeypatch.setenv("WB_TRANSPORT", transport)
    async with EmbeddedBroker(port=free_port()) as broker, Bus(BusOptions(url=broker.url, name="probe")) as bus:
        await bus.wait_connected(30)
        assert bus.protocol == "3.1.1"
        assert bus.stats.connects == 1
