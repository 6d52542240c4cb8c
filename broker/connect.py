"""Opening the bus an URL names: the one place that knows both implementations of :class:`broker.bus.Bus`."""

from __future__ import annotations

from broker.bus import Bus, BusOptions
from broker.client import Bus as MqttBus
from broker.memory import MemoryBus


def open_bus(options: BusOptions) -> Bus:
    """The bus an URL names: a :class:`broker.memory.MemoryBus` for ``memory://NAME``, else an MQTT
    :class:`broker.client.Bus`. Enter it with ``async with``."""
    if options.url.startswith("memory://"):
        return MemoryBus(options)
    return MqttBus(options)
