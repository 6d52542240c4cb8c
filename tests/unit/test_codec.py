"""Every model round-trips through msgpack and JSON; bad payloads raise typed errors naming topic, field, reason."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import codec
from schemas.actions import ACCEPTS, ACTIONS, CardButton, ShowCard, ShowText
from schemas.display import fits, paginate
from schemas.envelope import envelope_of, make
from schemas.errors import DecodeError, TopicError, ValidationFailed
from schemas.events import EVENTS, Body, HeartRate, SyncBatch
from schemas.topics import DeviceId, Kind, command_topic, event_topic
from tests.strategies import from_schema

DEV = {kind: DeviceId("alice", kind, f"{kind.value}-1") for kind in Kind}


def _event_cases() -> list[tuple[str, type[Body]]]:
    return [(event_topic(DEV[k], c, n), m) for (k, c, n), m in EVENTS.items()]


def _action_cases() -> list[tuple[str, type[Body]]]:
    return [(command_topic(DEV[k], a), ACTIONS[a]) for k in Kind for a in sorted(ACCEPTS[k])]


CASES = _event_cases() + _action_cases()


def _strategy(model: type[Body]) -> st.SearchStrategy[dict[str, Any]]:
    schema = envelope_of(model).model_json_schema()
    return from_schema(schema)


@pytest.mark.parametrize(("topic", "model"), CASES, ids=[t.split("/", 5)[-1] for t, _ in CASES])
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_round_trip(topic: str, model: type[Body], data: st.DataObject) -> None:
    raw = data.draw(_strategy(model))
    if model.__name__ == "RingGesture":
        raw["data"]["gesture"] = topic.rsplit("/", 1)[1]
    try:
        envelope = envelope_of(model).model_validate(raw)
    except ValidationError:
        assume(False)  # the JSON Schema cannot express every rule (display fit, src_ts in batches)
        raise
    for fmt in ("msgpack", "json"):
        decoded = codec.decode(topic, codec.encode(envelope, fmt))
        assert decoded.envelope == envelope
        assert type(decoded.data) is model


def test_json_sender_needs_no_seq_or_src_ts() -> None:
    topic = "wb/v1/alice/earphones/buds-1/evt/voice/utterance"
    payload = b'{"id":"u1","ts":1764100000000,"data":{"text":"order my usual noodles","lang":"en","final":true}}'
    message = codec.decode(topic, payload)
    assert message.envelope.seq == 0
    assert message.envelope.src_ts == 1764100000000
    assert message.where.device == "buds-1"
    assert message.data.type == "voice.utterance"  # type: ignore[attr-defined]


def test_a_message_is_a_slotted_record_and_replace_copies_it() -> None:
    # Read-only to mypy (schemas.envelope.record), without a frozen dataclass's cost on every received message.
    topic = "wb/v1/alice/earphones/buds-1/evt/voice/utterance"
    message = codec.decode(topic, b'{"id":"u1","ts":1764100000000,"data":{"text":"hi","lang":"en"}}', qos=1, mid=7)
    assert not hasattr(message, "__dict__")
    copy = dataclasses.replace(message, mid=8)
    assert (copy.mid, message.mid) == (8, 7)
    assert copy.envelope is message.envelope
    assert copy == dataclasses.replace(copy)
    assert hash(copy) == hash(dataclasses.replace(copy))  # hashable by its fields, as the frozen dataclass was


def test_content_type_wins_over_first_byte() -> None:
    env = make(HeartRate(bpm=60), ts=1)
    raw = codec.encode(env, "json")
    assert codec.decode("wb/v1/a/ring/r/evt/sensor/hr", raw, content_type=codec.JSON).envelope == env
    with pytest.raises(DecodeError, match="msgpack"):
        codec.decode("wb/v1/a/ring/r/evt/sensor/hr", raw, content_type=codec.MSGPACK)


@pytest.mark.parametrize(
    ("topic", "payload", "error", "field", "text"),
    [
        ("wb/v1/a/ring/r/evt/sensor/hr", b"", DecodeError, None, "empty"),
        ("wb/v1/a/ring/r/evt/sensor/hr", b"\xc1\xc1", DecodeError, None, "msgpack"),
        ("wb/v1/a/ring/r/evt/sensor/hr", b'{"id": ', DecodeError, None, "JSON"),
        ("wb/v1/a/ring/r/evt/sensor/hr", msgpack.packb([1, 2]), DecodeError, None, "map"),
        (
            "wb/v1/a/ring/r/evt/sensor/hr",
            b'{"id":"x","ts":1,"data":{"bpm":"fast"}}',
            ValidationFailed,
            "data.bpm",
            "number",
        ),
        (
            "wb/v1/a/ring/r/evt/sensor/hr",
            b'{"id":"x","ts":1,"data":{"bpm":400}}',
            ValidationFailed,
            "data.bpm",
            "220",
        ),
        ("wb/v1/a/ring/r/evt/sensor/hr", b'{"ts":1,"data":{"bpm":60}}', ValidationFailed, "id", "required"),
        (
            "wb/v1/a/ring/r/evt/sensor/hr",
            b'{"id":"x","ts":1,"data":{"bpm":60,"x":1}}',
            ValidationFailed,
            "data.x",
            "Extra",
        ),
        ("wb/v1/a/ring/r/evt/sensor/smell", b'{"id":"x","ts":1,"data":{}}', TopicError, None, "no event"),
        (
            "wb/v1/a/ring/r/cmd/display.card",
            b'{"id":"x","ts":1,"data":{}}',
            TopicError,
            None,
            "accepts no action",
        ),
        (
            "wb/v1/a/ring/r/evt/gesture/pinch",
            b'{"id":"x","ts":1,"data":{"gesture":"press"}}',
            ValidationFailed,
            "data.gesture",
            "topic",
        ),
        ("not/ours", b"{}", TopicError, None, "wb/v1"),
    ],
)
def test_errors_name_topic_field_and_reason(
    topic: str, payload: bytes, error: type[Exception], field: str | None, text: str
) -> None:
    with pytest.raises(error, match=text) as info:
        codec.decode(topic, payload)
    assert info.value.topic == topic  # type: ignore[attr-defined]
    assert info.value.field == field  # type: ignore[attr-defined]


def test_oversized_payload() -> None:
    with pytest.raises(DecodeError, match="larger than the limit"):
        codec.decode("wb/v1/a/ring/r/evt/sensor/hr", b"{" + b" " * 300_000 + b"}")


def test_display_limits_are_enforced() -> None:
    with pytest.raises(ValidationError, match="one screen"):
        ShowText(text="\n".join(["line"] * 6))
    with pytest.raises(ValidationError, match="one display line"):
        ShowCard(title="x" * 41)
    with pytest.raises(ValidationError, match="one display line"):
        ShowCard(title="中" * 25)
    ShowCard(title="中" * 24, body="ok")
    with pytest.raises(ValidationError):
        ShowCard(title="t", buttons=[CardButton(label="a", action_id="a")] * 3)


@given(st.text(max_size=2000))
def test_paginate_fits_every_page(text: str) -> None:
    pages = paginate(text)
    assert pages
    for page in pages:
        assert len(page.split("\n")) <= 5
        assert fits(page)


def test_batch_items_need_sample_time() -> None:
    with pytest.raises(ValidationError, match="src_ts"):
        SyncBatch(from_ts=0, to_ts=1, items=[HeartRate(bpm=60)])
    batch = SyncBatch(from_ts=0, to_ts=10, items=[HeartRate(bpm=60, src_ts=5)])
    raw = codec.encode(make(batch, ts=20))
    decoded = codec.decode("wb/v1/a/ring/r/evt/sensor/batch", raw)
    assert decoded.data == batch


def test_dead_letter_keeps_text_or_base64() -> None:
    try:
        codec.decode("wb/v1/a/ring/r/evt/system/battery", b"\xc1\xff")
    except DecodeError as exc:
        letter = codec.dead_letter("wb/v1/a/ring/r/evt/system/battery", b"\xc1\xff", exc)
    assert letter.payload_encoding == "base64"
    assert letter.reason == "decode"
    text_letter = codec.dead_letter("t", b'{"x":1}', DecodeError("bad"))
    assert text_letter.payload == '{"x":1}'
    assert json.loads(text_letter.payload) == {"x": 1}


def test_warm_builds_every_envelope_validator_once() -> None:
    from schemas.envelope import validator_of  # noqa: PLC0415

    n = codec.warm()
    assert n >= len(EVENTS)
    hits = validator_of.cache_info().hits
    codec.warm()
    assert validator_of.cache_info().hits == hits + n  # the second time builds nothing


def test_the_route_of_a_topic_is_cached_and_an_unknown_topic_raises_every_time() -> None:
    topic = event_topic(DeviceId("u1", Kind.RING, "r1"), "sensor", "hr")
    first = codec.decode(topic, codec.encode(make(HeartRate(bpm=60))))
    again = codec.decode(topic, codec.encode(make(HeartRate(bpm=61))))
    assert first.where is again.where
    for _ in range(2):
        with pytest.raises(TopicError):
            codec.decode("wb/v1/u1/ring/r1/evt/sensor/nope", codec.encode(make(HeartRate(bpm=60))))
