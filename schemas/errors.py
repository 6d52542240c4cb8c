"""The one exception tree of wearbus.

Every error that wearbus raises on purpose derives from :class:`WearbusError`, so a caller can catch
everything of ours with one ``except``. Library errors (paho, aiomqtt, amqtt, sqlite) are translated at
the edge with ``raise ... from exc``.

::

    WearbusError
    ├── ContractError                 the wire contract was broken
    │   ├── TopicError                a topic outside the v1 layout (or a device on another's topic)
    │   ├── DecodeError               the bytes are not msgpack/JSON, or too large
    │   ├── ValidationFailed          the payload decoded but does not fit the schema
    │   └── ShadowError               a settings (shadow) write was refused
    │       ├── StaleVersion          it was based on an older version than the current one
    │       └── SettingNotSupported   the device's birth says it cannot apply that setting
    ├── BusError                      reaching the broker
    │   ├── BusConnectionError        cannot connect / the connection was lost
    │   │   └── ProtocolViolation     the broker broke MQTT (code: the MQTT 5 reason we closed with)
    │   │       ├── MalformedPacket   0x81: a packet that does not parse within its own length
    │   │       └── PacketTooLarge    0x95: a packet above the Maximum Packet Size we announced
    │   ├── BrokerPortInUse           the embedded broker cannot bind its port
    │   ├── SubscribeRefused          the broker refused a topic filter (SUBACK failure code)
    │   ├── QosNotSupported           QoS 2 asked for, or a QoS above the broker's Maximum QoS
    │   └── PublishError              a publish was refused or could not be queued
    │       └── MessageTooLarge       above the broker's Maximum Packet Size: never sent, never retry it
    ├── ConfigError                   a setting, a scenario file or a command-line value is wrong
    ├── DeviceError                   an emulator or a device bridge failed
    └── AgentError                    the agent failed
        ├── StoreError                the agent's store failed (SQLite or Redis)
        └── ResolverError             the optional LLM resolver got no usable answer (the sentence stays unknown)
"""

from __future__ import annotations


class WearbusError(Exception):
    """Root of every error wearbus raises on purpose."""


class ContractError(WearbusError):
    """The wire contract was broken: a topic, a payload or a schema.

    Attributes:
        topic: the MQTT topic the message came on (or was meant for), if known.
        reason: a short machine-readable reason, also used as the DLQ topic level.
        field: the dotted path of the offending field, if one is to blame.
    """

    reason = "contract"

    def __init__(self, message: str, *, topic: str | None = None, field: str | None = None) -> None:
        self.topic = topic
        self.field = field
        where = f" on {topic!r}" if topic else ""
        at = f" at {field!r}" if field else ""
        super().__init__(f"{message}{where}{at}")
        self.detail = message


class TopicError(ContractError):
    """A topic that is not part of the v1 layout, or that a sender may not use."""

    reason = "topic"


class DecodeError(ContractError):
    """The payload is not valid msgpack or JSON, or it is too large."""

    reason = "decode"


class ValidationFailed(ContractError):
    """The payload decoded but does not fit the schema of its topic."""

    reason = "schema"


class ShadowError(ContractError):
    """A write of a device's settings (its shadow) was refused."""

    reason = "shadow"


class StaleVersion(ShadowError):
    """A settings write based on an older version than the current one (writes are ordered by version)."""

    reason = "stale"


class SettingNotSupported(ShadowError):
    """A setting the device's birth does not list among those it can apply."""

    reason = "capability"


class BusError(WearbusError):
    """A problem reaching or using the MQTT broker."""


class BusConnectionError(BusError):
    """Cannot connect to the broker, or the connection was lost."""


class ProtocolViolation(BusConnectionError):
    """The broker sent something MQTT forbids; the connection was closed (MQTT 5: with a DISCONNECT of ``code``).

    Attributes:
        code: the MQTT 5 reason code the connection was closed with (0x82 Protocol Error by default).
    """

    code = 0x82

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class MalformedPacket(ProtocolViolation):
    """A packet from the broker does not parse within its own remaining length (MQTT 5 reason 0x81)."""

    code = 0x81


class PacketTooLarge(ProtocolViolation):
    """A packet from the broker is larger than the Maximum Packet Size we announced (MQTT 5 reason 0x95)."""

    code = 0x95


class SubscribeRefused(BusError):
    """The broker refused one or more topic filters of a SUBSCRIBE.

    Attributes:
        refused: topic filter -> the failure code of its SUBACK (0x80 in MQTT 3.1.1, a reason >= 0x80 in MQTT 5).
    """

    def __init__(self, message: str, refused: dict[str, int]) -> None:
        super().__init__(message)
        self.refused = refused


class QosNotSupported(BusError):
    """QoS 2 was asked for (wearbus's contract uses QoS 0 and 1), or a QoS above the broker's Maximum QoS."""


class BrokerPortInUse(BusError):
    """The embedded broker cannot listen: its port is taken."""


class PublishError(BusError):
    """A publish was refused by the broker or could not be queued."""


class MessageTooLarge(PublishError):
    """The message does not fit the broker's Maximum Packet Size: it was not sent, and sending it again cannot help.

    Attributes:
        size: the packet's size in bytes.
        limit: the broker's Maximum Packet Size.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class ConfigError(WearbusError):
    """A setting, a scenario file or a command-line value is wrong."""


class DeviceError(WearbusError):
    """An emulator or a device bridge failed."""


class AgentError(WearbusError):
    """The agent failed."""


class StoreError(AgentError):
    """The agent's store failed, whichever backs it (the library's error, if any, is the ``__cause__``)."""


class ResolverError(AgentError):
    """The optional LLM resolver (:mod:`agent.llm`) got no usable answer: no connection, a timeout, an HTTP error,
    a reply that is not JSON."""
