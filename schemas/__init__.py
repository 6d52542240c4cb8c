"""wearbus wire contract: topics, envelope, typed event and action bodies, codec and the exception tree."""

from schemas.errors import (
    BusConnectionError,
    BusError,
    ConfigError,
    ContractError,
    DecodeError,
    PublishError,
    TopicError,
    ValidationFailed,
    WearbusError,
)
from schemas.topics import Channel, DeviceId, EventClass, Kind

__all__ = [
    "BusConnectionError",
    "BusError",
    "Channel",
    "ConfigError",
    "ContractError",
    "DecodeError",
    "DeviceId",
    "EventClass",
    "Kind",
    "PublishError",
    "TopicError",
    "ValidationFailed",
    "WearbusError",
]
