"""A :class:`~broker.client.Bus` that hands over each message's exact bytes, flags and content type.

The test kit needs what :class:`~broker.client.Bus` deliberately hides: the payload bytes (a recording must
replay them byte for byte), the QoS and retain flag of messages that do not decode (a contract check still
judges them), and the content type. ``Bus`` decodes each PUBLISH in :meth:`Bus.deliver` and keeps no bytes,
so :class:`RawBus` takes that hook over. With ``passthrough=False`` (the default) nothing is decoded or
queued by the ``Bus`` itself: the listeners are the only consumers, so an unread inbox cannot grow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from broker.client import Bus, BusOptions


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as the broker delivered it.

    Attributes:
        topic: the MQTT topic.
        payload: the exact bytes.
        qos: the QoS it was delivered with (see docs/testing.md on what that says about the publisher).
        retain: the delivered retain flag: set only when it came from the broker's retained store.
        content_type: the MQTT 5 content type, if the publisher set one.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    content_type: str | None = None


RawListener = Callable[[RawMessage], None]


class RawBus(Bus):
    """A bus whose listeners see every message raw, in arrival order, on the event loop.

    Args:
        options: as for :class:`~broker.client.Bus`.
        listeners: called once per message, in order.
        passthrough: also decode and queue messages for :meth:`Bus.messages` as a plain ``Bus`` does.
    """

    def __init__(
        self, options: BusOptions, listeners: list[RawListener] | None = None, *, passthrough: bool = False
    ) -> None:
        super().__init__(options)
        self.listeners: list[RawListener] = list(listeners or [])
        self.passthrough = passthrough

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        raw = RawMessage(topic, bytes(payload), qos, retain, content_type)
        for listener in self.listeners:
            listener(raw)
        if self.passthrough:
            super().deliver(topic, payload, qos, retain, mid, content_type)
