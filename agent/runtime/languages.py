"""The language each device is answered in: JSON or msgpack, as it speaks or as its birth asked."""

from __future__ import annotations

from schemas.actions import DeviceState
from schemas.envelope import Message
from schemas.topics import Channel, DeviceKey


class Languages:
    """Devices answered in JSON: they spoke JSON last, or their birth asked for it."""

    __slots__ = ("_json", "_msgpack_pinned")

    def __init__(self) -> None:
        self._json: dict[DeviceKey, bool] = {}  # device -> pinned by its birth
        self._msgpack_pinned: set[DeviceKey] = set()  # births that asked for msgpack whatever they speak

    def speaks_json(self, device: DeviceKey) -> bool:
        """Whether ``(user, kind, device)`` is answered in JSON."""
        return device in self._json

    def note(self, message: Message) -> None:
        """Answer a device in the language it speaks: JSON once its birth, an event or an ack came as JSON (or its
        birth's ``encoding`` says so); msgpack again when it speaks msgpack, unless its birth asked for JSON."""
        where = message.where
        key = where.key
        if key is None:
            return
        body = message.data
        if where.channel is Channel.STATE and isinstance(body, DeviceState):
            if not body.online:
                return  # a Will says nothing of the device's language (the broker sends what it was given)
            self._msgpack_pinned.discard(key)
            self._json.pop(key, None)
            if body.encoding == "msgpack":
                self._msgpack_pinned.add(key)
            elif body.encoding == "json":
                self._json[key] = True
            elif message.json:
                self._json[key] = False
            return
        if key in self._msgpack_pinned or self._json.get(key):
            return
        if message.json:
            self._json[key] = False
        else:
            self._json.pop(key, None)
