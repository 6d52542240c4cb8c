"""Devices' heartbeats: a device that announced heartbeats and went silent is marked offline before its Will."""

from __future__ import annotations

import time
from typing import Any

from broker.bus import Bus
from schemas.actions import DeviceState
from schemas.clock import Clock
from schemas.envelope import Message, envelope_of, new_id
from schemas.topics import Channel, DeviceId, DeviceKey, Kind, parse, state_topic

#: Seconds between two passes over every device's last sign of life (heartbeats come every 10 s or more).
LIVENESS_SCAN_S = 1.0


class Liveness:
    """Each device's last sign of life, for the devices whose birth announced heartbeats (``heartbeat_s``).

    ``misses``: a device that has sent nothing for this many heartbeat intervals is marked offline; 0: never.
    """

    __slots__ = ("_alive", "_connects_seen", "_misses", "_users")

    def __init__(self, misses: int, users: frozenset[str] | None) -> None:
        self._misses = misses
        self._users = users
        # (user, kind, device) -> [heartbeat_s, monotonic time of its last message]
        self._alive: dict[DeviceKey, list[float]] = {}
        self._connects_seen = 0

    def observe(self, message: Message, mono: float) -> None:
        """Note that a device spoke at ``mono`` (any message proves it is alive, even a duplicate or a refused one)."""
        where = message.where
        key = where.key
        if key is None or self._misses <= 0:
            return
        if self._users is not None and where.user not in self._users:
            return
        body = message.data
        if where.channel is Channel.STATE and isinstance(body, DeviceState):
            if body.online and body.heartbeat_s:
                self._alive[key] = [body.heartbeat_s, mono]
            else:
                self._alive.pop(key, None)
        elif key in self._alive:
            self._alive[key][1] = mono

    def silent_devices(self, bus: Bus, clock: Clock, log: Any) -> list[Message]:
        """Offline states for devices that missed ``misses`` heartbeats, as if their Will had come.

        They go through the pump like any message (stored, so a restart replays them). While the agent itself was
        disconnected it heard nobody, so every clock restarts at a reconnect.
        """
        mono = time.monotonic()
        if bus.stats.connects != self._connects_seen:
            self._connects_seen = bus.stats.connects
            for alive in self._alive.values():
                alive[1] = mono
        if not self._alive or not bus.connected:
            return []
        out: list[Message] = []
        for key, (every_s, last) in list(self._alive.items()):
            if mono - last <= self._misses * every_s:
                continue
            del self._alive[key]
            user, kind, device = key
            topic = state_topic(DeviceId(user, Kind(kind), device))
            body = DeviceState(online=False, kind=Kind(kind))
            envelope = envelope_of(DeviceState)(id=f"silent-{new_id()}", ts=clock.now_ms(), data=body)
            out.append(Message(topic, parse(topic), envelope, qos=1))
            log.warning("device_silent", device=f"{user}/{kind}/{device}", silent_s=round(mono - last, 1))
        return out
