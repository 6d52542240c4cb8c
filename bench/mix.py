"""The traffic of one user's four devices at their real rates, as payload bytes ready to publish (pure).

The rates are the design defaults of shared/reference/devices.md (§1.3, §2.3, §6, §7) for a waking user with
every device worn: the glasses' head-pose summary (5 Hz on the bus), a heartbeat per device every 10 s (the
device SDK's default), batteries every minute, the phone's location on significant change, the earphones'
activity, the ring's sync batch every 30 min, and a voice question every two minutes. Payloads are built as
plain maps and packed with msgpack (as a device without pydantic would), and every one of them validates
against the wire contract (tests/unit/test_bench_mix.py).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from schemas.events import EVENT_QOS
from schemas.topics import DeviceId, EventClass, Kind

DEVICE_IDS: dict[Kind, str] = {Kind.GLASSES: "g1", Kind.RING: "r1", Kind.EARPHONES: "e1", Kind.PHONE: "p1"}

#: Questions that the agent answers at once with a card on the glasses (no task left waiting for a reply).
QUESTIONS = ("how many steps today", "what time is it", "how did I sleep", "what is the time")

Builder = Callable[[random.Random, int], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Stream:
    """One periodic event of one device.

    Attributes:
        kind: the device kind.
        event_class: the topic's class level.
        name: the topic's name level.
        period_s: seconds between two events (0: only once, at connect).
        build: makes the body map from a seeded random source and the time (ms).
    """

    kind: Kind
    event_class: EventClass
    name: str
    period_s: float
    build: Builder

    @property
    def qos(self) -> int:
        """The QoS devices publish this event with (schemas.events.EVENT_QOS)."""
        return EVENT_QOS[(self.kind, self.event_class, self.name)]

    def rate(self) -> float:
        """Events per second (0 for a one-shot event)."""
        return 1.0 / self.period_s if self.period_s > 0 else 0.0


def _heartbeat(rng: random.Random, t: int) -> dict[str, Any]:
    return {"type": "system.heartbeat", "uptime_s": float(t % 86_400_000) / 1000, "outbox": 0, "dropped": 0}


def _head_pose(rng: random.Random, t: int) -> dict[str, Any]:
    # rng.uniform(a, b) is a + (b - a) * rng.random(): written out, the same values without a Python call each, for
    # the fleet's most frequent event
    r = rng.random
    return {
        "type": "glasses.head_pose",
        "roll_deg": round(-10 + 20 * r(), 2),
        "pitch_deg": round(-20 + 30 * r(), 2),
        "heading_deg": round(359.9 * r(), 1),
    }


def _glasses_battery(rng: random.Random, t: int) -> dict[str, Any]:
    left, right = round(rng.uniform(30, 100), 1), round(rng.uniform(30, 100), 1)
    return {
        "type": "glasses.battery",
        "level_pct": round((left + right) / 2, 1),
        "charging": False,
        "in_case": False,
        "cells": [
            {"slot": "left", "level_pct": left, "present": True},
            {"slot": "right", "level_pct": right, "present": True},
        ],
    }


def _donned(rng: random.Random, t: int) -> dict[str, Any]:
    return {"type": "glasses.wear", "state": "donned", "confidence": 1.0}


def _ring_on(rng: random.Random, t: int) -> dict[str, Any]:
    return {"type": "ring.wear", "state": "on_finger"}


def _ring_batch(rng: random.Random, t: int) -> dict[str, Any]:
    # 30 minutes of what the ring stored: heart rate and HRV every 5 min, skin temperature, two step buckets.
    start = t - 1_800_000
    items: list[dict[str, Any]] = []
    for i in range(6):
        at = start + i * 300_000
        items.append({"type": "ring.hr", "bpm": round(rng.uniform(58, 82), 1), "source": "periodic", "src_ts": at})
        items.append({"type": "ring.hrv", "rmssd_ms": round(rng.uniform(25, 70), 1), "src_ts": at})
        items.append({"type": "ring.skin_temp", "celsius": round(rng.gauss(32.5, 0.5), 2), "src_ts": at})
    for i in range(2):
        at = start + i * 900_000
        items.append({"type": "ring.steps", "steps": rng.randint(0, 900), "bucket_start": at, "src_ts": at})
    return {"type": "ring.batch", "from_ts": start, "to_ts": t, "items": items}


def _ring_battery(rng: random.Random, t: int) -> dict[str, Any]:
    return {"type": "ring.battery", "level_pct": round(rng.uniform(20, 100), 1), "charging": False}


def _in_ear(rng: random.Random, t: int) -> dict[str, Any]:
    return {"type": "earphones.in_ear", "side": rng.choice(("left", "right")), "state": "in"}


def _activity(rng: random.Random, t: int) -> dict[str, Any]:
    return {"type": "earphones.activity", "activity": rng.choice(("stationary", "stationary", "walking"))}


def _ear_battery(rng: random.Random, t: int) -> dict[str, Any]:
    return {
        "type": "earphones.battery",
        "left_pct": round(rng.uniform(20, 100), 1),
        "right_pct": round(rng.uniform(20, 100), 1),
        "case_pct": round(rng.uniform(20, 100), 1),
        "charging": False,
    }


def utterance(text: str) -> dict[str, Any]:
    """A final utterance body."""
    return {"type": "voice.utterance", "text": text, "lang": "en", "final": True}


def _question(rng: random.Random, t: int) -> dict[str, Any]:
    return utterance(rng.choice(QUESTIONS))


def _location(rng: random.Random, t: int) -> dict[str, Any]:
    return {
        "type": "phone.location",
        "lat": round(30.27 + rng.uniform(-0.02, 0.02), 6),
        "lon": round(120.13 + rng.uniform(-0.02, 0.02), 6),
        "accuracy_m": round(rng.uniform(5, 30), 1),
        "speed_mps": round(rng.uniform(0, 1.6), 2),
        "provider": "fused",
    }


def _phone_battery(rng: random.Random, t: int) -> dict[str, Any]:
    return {"type": "phone.battery", "level_pct": round(rng.uniform(20, 100), 1), "charging": False}


def _notification(rng: random.Random, t: int) -> dict[str, Any]:
    return {"type": "phone.notification", "app": "chat", "title": "New message", "body": "see you at 7"}


_G, _R, _E, _P = Kind.GLASSES, Kind.RING, Kind.EARPHONES, Kind.PHONE
_S, _V, _Y = EventClass.SENSOR, EventClass.VOICE, EventClass.SYSTEM


def default_streams(head_pose_hz: float = 5.0) -> tuple[Stream, ...]:
    """The streams of one user's four devices (devices.md design defaults; ``head_pose_hz`` 0 leaves it out)."""
    streams = [
        Stream(_G, _Y, "wear", 0, _donned),
        Stream(_G, _Y, "heartbeat", 10, _heartbeat),
        Stream(_G, _Y, "battery", 60, _glasses_battery),
        Stream(_R, _Y, "wear", 0, _ring_on),
        Stream(_R, _Y, "heartbeat", 10, _heartbeat),
        Stream(_R, _S, "batch", 1800, _ring_batch),
        Stream(_R, _Y, "battery", 1800, _ring_battery),
        Stream(_E, _Y, "in_ear", 0, _in_ear),
        Stream(_E, _Y, "heartbeat", 10, _heartbeat),
        Stream(_E, _S, "activity", 60, _activity),
        Stream(_E, _Y, "battery", 60, _ear_battery),
        Stream(_E, _V, "utterance", 120, _question),
        Stream(_P, _Y, "heartbeat", 10, _heartbeat),
        Stream(_P, _S, "location", 60, _location),
        Stream(_P, _Y, "battery", 300, _phone_battery),
        Stream(_P, _Y, "notification", 300, _notification),
    ]
    if head_pose_hz > 0:
        streams.append(Stream(_G, _S, "head_pose", 1.0 / head_pose_hz, _head_pose))
    return tuple(streams)


def user_rate(streams: tuple[Stream, ...]) -> float:
    """Events per second one user sends at steady state."""
    return sum(s.rate() for s in streams)


def user_name(index: int, prefix: str = "u") -> str:
    """The id of the ``index``-th simulated user (``[a-z0-9-]``)."""
    return f"{prefix}{index:05d}"


def device_prefix(user: str, kind: Kind) -> str:
    """``wb/v1/{user}/{kind}/{device}`` of a user's device."""
    return DeviceId(user, kind, DEVICE_IDS[kind]).prefix


def topic_of(user: str, stream: Stream) -> str:
    """The event topic of one stream of one user."""
    return f"{device_prefix(user, stream.kind)}/evt/{stream.event_class.value}/{stream.name}"


#: One packer for every envelope (``msgpack.packb`` builds a new one per call; a bench fleet packs ~14,000 a second).
_PACKER = msgpack.Packer(use_bin_type=True)


def pack(event_id: str, ts: int, seq: int, body: dict[str, Any], corr: str | None = None) -> bytes:
    """An envelope as msgpack bytes."""
    env: dict[str, Any] = {"id": event_id, "ts": ts, "seq": seq, "src_ts": ts, "data": body}
    if corr is not None:
        env["corr"] = corr
    packed: bytes = _PACKER.pack(env)
    return packed


def state_payload(event_id: str, ts: int, kind: Kind, online: bool) -> bytes:
    """A device's retained birth (``online``) or Will."""
    body = {"type": "device.state", "online": online, "kind": kind.value, "heartbeat_s": 10.0}
    return pack(event_id, ts, 0, body)


def ack_payload(event_id: str, ts: int, action_id: str, action: str) -> bytes:
    """A device's ``done`` answer to an action."""
    body = {"type": "ack", "action_id": action_id, "action": action, "status": "done"}
    return pack(event_id, ts, 0, body, corr=action_id)


def backlog(
    users: int, per_user: int, rng: random.Random, now_ms: int, *, prefix: str = "b", id_prefix: str = "bk"
) -> list[tuple[str, bytes]]:
    """A realistic backlog: each user's births, then ``per_user`` events of each, in the steady-state proportions.

    Events are drawn by weight (rate) from the periodic streams, interleaved across users as they would arrive.
    Every id is unique and made as a device makes it: ``{id_prefix}-{the device's own prefix}-{its counter}``
    (ids from one counter would only ever append to the agent's dedup index; devices' ids do not).

    Returns:
        ``(topic, payload)`` pairs, in publishing order.
    """
    every = default_streams()
    streams = [s for s in every if s.period_s > 0]
    weights = [s.rate() for s in streams]
    seqs: dict[tuple[int, Kind], int] = {}
    made: dict[tuple[int, Kind], tuple[str, int]] = {}  # each device's own id prefix and how many ids it made
    out: list[tuple[str, bytes]] = []

    def new_id(u: int, kind: Kind) -> str:
        tag, n = made.get((u, kind)) or (hashlib.blake2b(f"{u}/{kind.value}".encode(), digest_size=6).hexdigest(), 0)
        made[u, kind] = (tag, n + 1)
        return f"{id_prefix}-{tag}-{n + 1:x}"

    for u in range(users):
        # what a user's devices say when they connect: births, then wear and in-ear
        user = user_name(u, prefix)
        for kind in DEVICE_IDS:
            out.append((f"{device_prefix(user, kind)}/state", state_payload(new_id(u, kind), now_ms, kind, True)))
        for stream in (s for s in every if s.period_s == 0):
            body = stream.build(rng, now_ms)
            out.append((topic_of(user, stream), pack(new_id(u, stream.kind), now_ms, 0, body)))
    for _ in range(per_user):
        for u in range(users):
            stream = rng.choices(streams, weights)[0]
            user = user_name(u, prefix)
            key = (u, stream.kind)
            seqs[key] = seq = seqs.get(key, 0) + 1
            body = stream.build(rng, now_ms)
            out.append((topic_of(user, stream), pack(new_id(u, stream.kind), now_ms, seq, body)))
    return out
