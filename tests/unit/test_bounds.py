"""Bounds of the contract (issue 18): decoding is bounded, sample times are bounded, a batch always fits a packet."""

from __future__ import annotations

import contextlib
import json
from typing import Any, get_args

import msgpack
import pytest

from agent.core.engine import AgentCore
from agent.core.testing import Rig, config
from schemas import codec
from schemas.envelope import MAX_SRC_AHEAD_MS, MAX_SRC_BEHIND_MS, envelope_of, make
from schemas.errors import DecodeError, ValidationFailed
from schemas.events import MAX_BATCH_ITEMS, BatchItem, HeartRate, SyncBatch
from schemas.topics import DeviceId, EventClass, Kind, event_topic

RING = DeviceId("alice", Kind.RING, "ring-1")
HR = event_topic(RING, EventClass.SENSOR, "hr")
BATCH = event_topic(RING, EventClass.SENSOR, "batch")
T0 = 1_760_000_000_000


def _nested(depth: int) -> bytes:
    return b'{"id":"x","ts":1,"data":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [codec.MAX_DEPTH + 1, 10_000, 100_000])
def test_deep_json_is_a_decode_error_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(DecodeError, match="nested deeper"):
        codec.decode(HR, _nested(depth))


def test_deep_json_inside_strings_is_not_counted() -> None:
    text = "[" * 5000
    payload = json.dumps({"id": "x", "ts": T0, "data": {"bpm": 70, "source": text}}).encode()
    with pytest.raises(ValidationFailed):  # decodes (the brackets are text), then fails the schema
        codec.decode(HR, payload)


def test_deep_msgpack_is_refused() -> None:
    inner: Any = []
    for _ in range(codec.MAX_DEPTH + 1):
        inner = [inner]
    payload = msgpack.packb({"id": "x", "ts": 1, "data": inner})
    with pytest.raises(ValidationFailed):  # decodes (msgpack's C unpacker does not recurse), fails the schema
        codec.decode(HR, payload)
    very_deep = b"\x91" * 5000 + b"\xc0"  # 5,000 nested one-item arrays: over msgpack's own limit of 1024
    with pytest.raises(DecodeError):
        codec.decode(HR, b"\x83\xa2id\xa1x\xa2ts\x01\xa4data" + very_deep)


def test_too_many_elements_is_a_decode_error() -> None:
    big = msgpack.packb({"id": "x", "ts": 1, "data": [0] * (codec.MAX_ELEMENTS + 1)})
    with pytest.raises(DecodeError):
        codec.decode(HR, big, max_size=len(big))
    text = json.dumps({"id": "x", "ts": 1, "data": [0] * (codec.MAX_ELEMENTS + 1)}).encode()
    with pytest.raises(DecodeError, match="elements"):
        codec.decode(HR, text, max_size=len(text))


def test_any_parser_failure_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        codec.decode(HR, b"\xc7\x01\x05x")  # msgpack ext type: not part of the contract


def _hr(**env: Any) -> dict[str, Any]:
    return {"id": "m1", "ts": T0, "data": {"bpm": 199}, **env}


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"src_ts": 10**14}, "src_ts"),
        ({"src_ts": T0 + MAX_SRC_AHEAD_MS + 1}, "src_ts"),
        ({"src_ts": T0 - MAX_SRC_BEHIND_MS - 1}, "src_ts"),
        ({"data": {"bpm": 199, "src_ts": 10**14}}, "data.src_ts"),
    ],
)
def test_sample_time_outside_its_window_is_refused(env: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed, match=field):
        codec.decode(HR, json.dumps(_hr(**env)).encode())


def test_sample_times_within_the_window_pass() -> None:
    late = codec.decode(HR, json.dumps(_hr(src_ts=T0 - 6 * 3600_000)).encode())  # a ring batch hours late
    assert late.envelope.sample_ts == T0 - 6 * 3600_000
    skew = codec.decode(HR, json.dumps(_hr(src_ts=T0 + 1000)).encode())
    assert skew.envelope.sample_ts == T0 + 1000


def test_batch_item_in_the_future_is_refused() -> None:
    item = {"type": "ring.hr", "bpm": 199, "src_ts": 10**14}
    body = {"from_ts": T0, "to_ts": T0, "items": [item]}
    with pytest.raises(ValidationFailed, match=r"items\.0\.src_ts"):
        codec.decode(BATCH, json.dumps({"id": "b", "ts": T0, "data": body}).encode())


def test_a_future_sample_no_longer_freezes_the_heart_rate() -> None:
    """src_ts = 10^14 once made every later "what's my heart rate" answer 199 bpm: now it never gets in."""
    rig = Rig(AgentCore(config()))  # a user who consents to health (vitals are fused only then)
    rig.ready()
    evil = envelope_of(HeartRate).model_construct(  # what a device can put on the wire; decode validates it
        id="evil", ts=rig.now, seq=0, src_ts=10**14, corr=None, data=HeartRate(bpm=199)
    )
    with contextlib.suppress(ValidationFailed):
        rig.feed(codec.decode(HR, codec.encode(evil), qos=1))
    rig.at(60)
    rig.send(Kind.RING, HeartRate(bpm=64, source="spot"))
    rig.at(5)
    out = rig.say("what's my heart rate")
    texts = " ".join(str(c.body) for c in out.commands)
    assert "64" in texts, texts
    assert "199" not in texts, texts


def _worst_item(kind: str) -> dict[str, Any]:
    f, big = -1.2345678901234567e-100, 10**14  # the longest float repr and the largest time
    fields: dict[str, dict[str, Any]] = {
        "ring.hr": {"bpm": f, "source": "workout", "quality": f},
        "ring.hrv": {"rmssd_ms": f, "window_s": 3600, "quality": f},
        "ring.spo2": {"pct": f, "source": "night", "quality": f},
        "ring.skin_temp": {"celsius": f, "deviation_c": f},
        "ring.resp_rate": {"brpm": f},
        "ring.steps": {"steps": 10_000, "calories_kcal": f, "distance_m": f, "bucket_start": big, "bucket_s": 3600},
        "ring.sleep_segment": {"stage": "awake", "start_ts": big, "end_ts": big},
        "ring.stress": {"level": f},
    }
    return {**fields[kind], "type": kind, "src_ts": big}


def test_a_full_batch_of_the_largest_items_fits_the_packet_limit() -> None:
    """max items x max item size (+ the envelope) < the broker's packet limit, in both encodings."""
    kinds = [m.model_fields["type"].default for m in get_args(get_args(BatchItem)[0])]
    assert len(kinds) == 8
    worst_mp = max(len(msgpack.packb(_worst_item(k))) for k in kinds)
    worst_json = max(len(json.dumps(_worst_item(k), separators=(",", ":"))) + 1 for k in kinds)
    items = [_worst_item("ring.steps")] * MAX_BATCH_ITEMS
    env = {"id": "x" * 128, "ts": 10**14, "seq": 2**63 - 1, "src_ts": 10**14, "corr": "y" * 128}
    env["data"] = {"type": "ring.batch", "from_ts": 10**14, "to_ts": 10**14, "items": items}
    overhead = 1024
    assert MAX_BATCH_ITEMS * worst_mp + overhead < codec.MAX_PAYLOAD
    assert MAX_BATCH_ITEMS * worst_json + overhead < codec.MAX_PAYLOAD
    assert len(msgpack.packb(env)) < codec.MAX_PAYLOAD
    assert len(json.dumps(env, separators=(",", ":")).encode()) < codec.MAX_PAYLOAD
    with pytest.raises(ValueError, match="at most"):
        SyncBatch(from_ts=T0, to_ts=T0, items=[HeartRate(bpm=60, src_ts=T0)] * (MAX_BATCH_ITEMS + 1))


def test_make_refuses_a_future_sample() -> None:
    with pytest.raises(ValueError, match="src_ts"):
        make(HeartRate(bpm=60), ts=T0, src_ts=10**14)
