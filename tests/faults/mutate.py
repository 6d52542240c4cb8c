"""Seeded mutations of valid payloads (mqtt_fuzz style, without radamsa), for the decoder fuzz and the storm.

Byte-level mutations (bit flips, truncation, insertion, deletion, duplication, splicing, random bytes) find
decoder bugs; structure-level ones (a field replaced by a value of another type or range, a field dropped or
added) get past the decoder and exercise validation.
"""

from __future__ import annotations

import json
import random
from typing import Any

import msgpack

from schemas import codec
from schemas.envelope import Envelope, envelope_of
from schemas.events import Body
from schemas.topics import DeviceId, Kind, event_topic

_ODD_VALUES: tuple[Any, ...] = (
    None, True, 0, -1, 2**31, -(2**63), 2**64, 10**30, 1e308, -0.0, float("inf"), "", "x" * 5000, "\u0000",
    "é∑😀", [], [1, "a", None], {}, {"a": {"b": {"c": []}}}, b"\x00\xff",
)  # fmt: skip


def envelope(body: Body, rng: random.Random, ts: int, seq: int) -> Envelope[Any]:
    """A valid envelope with a random 32-hex id (mutating a counter-style id could collide with another id)."""
    env: Envelope[Any] = envelope_of(type(body))(id=f"{rng.getrandbits(128):032x}", ts=ts, seq=seq, data=body)
    return env


def mutate(payload: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """One mutation of ``payload``; ``pool`` supplies other payloads to splice with."""
    data = bytearray(payload)
    roll = rng.randrange(10)
    size = len(data)
    if roll == 0 and size:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(size)
            data[i] ^= 1 << rng.randrange(8)
    elif roll == 1 and size:
        data[rng.randrange(size)] = rng.randrange(256)
    elif roll == 2:
        del data[rng.randrange(size + 1) :]
    elif roll == 3:
        i = rng.randrange(size + 1)
        data[i:i] = rng.randbytes(rng.randint(1, 16))
    elif roll == 4 and size:
        i = rng.randrange(size)
        del data[i : i + rng.randint(1, 16)]
    elif roll == 5 and size:
        i = rng.randrange(size)
        chunk = data[i : i + rng.randint(1, 32)]
        data[i:i] = chunk * rng.randint(1, 4)
    elif roll == 6:
        other = rng.choice(pool)
        data = data[: rng.randrange(size + 1)] + bytearray(other[rng.randrange(len(other) + 1) :])
    elif roll == 7:
        data = bytearray(rng.randbytes(rng.randint(0, 64)))
    else:
        return _mutate_structure(payload, rng)
    return bytes(data)


def _mutate_structure(payload: bytes, rng: random.Random) -> bytes:
    is_json = payload[:1] == b"{"
    obj = json.loads(payload) if is_json else msgpack.unpackb(payload, raw=False)
    if not isinstance(obj, dict):
        return payload
    target: dict[str, Any] = obj
    while True:  # descend into a random nested map now and then
        nested = [k for k, v in target.items() if isinstance(v, dict)]
        if not nested or rng.random() < 0.5:
            break
        target = target[rng.choice(nested)]
    keys = list(target)
    roll = rng.randrange(3)
    if roll == 0 and keys:
        target[rng.choice(keys)] = rng.choice(_ODD_VALUES)
    elif roll == 1 and keys:
        del target[rng.choice(keys)]
    else:
        target[rng.choice(["extra", "id", "ts", "seq", "type", "data", "src_ts"])] = rng.choice(_ODD_VALUES)
    if is_json:
        return json.dumps(obj, default=lambda b: b.hex()).encode()
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=True)
    except OverflowError:  # an integer beyond 64 bits exists only in JSON
        return json.dumps(obj, default=lambda b: b.hex()).encode()
    return packed


def mutate_topic(topic: str, rng: random.Random) -> str:
    """A topic with one level changed, dropped or added."""
    levels = topic.split("/")
    i = rng.randrange(len(levels))
    roll = rng.randrange(3)
    if roll == 0:
        levels[i] = rng.choice(["", "+", "#", "X", "zz-unknown", "a" * 70, "ring", "evt", "cmd", "_dlq"])
    elif roll == 1 and len(levels) > 1:
        del levels[i]
    else:
        levels.insert(i, rng.choice(["evt", "extra", "v2"]))
    return "/".join(levels)


def encode(envelope: Envelope[Any], rng: random.Random) -> bytes:
    """msgpack most of the time, JSON otherwise (both are accepted on every topic)."""
    return codec.encode(envelope, "json" if rng.random() < 0.3 else "msgpack")


def topic_of(user: str, kind: Kind, device: str, event_class: str, name: str) -> str:
    """An event topic."""
    return event_topic(DeviceId(user, kind, device), event_class, name)
