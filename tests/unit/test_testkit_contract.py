"""The AsyncAPI channel matcher and the per-message contract check, without a broker."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import codec
from schemas.actions import DeviceState
from schemas.envelope import make
from schemas.errors import ContractError
from schemas.events import EVENT_QOS, EVENTS, HeartRate, Steps
from schemas.export import asyncapi
from schemas.topics import EventClass, Kind
from testkit.contract import ChannelSpec, answers_for, channel_specs, check, match_channel, user_of
from testkit.expect import Seen
from testkit.raw import RawMessage

SPECS = channel_specs()
NAMES = st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True)


def test_every_channel_of_the_document_is_read_with_its_binding() -> None:
    doc = asyncapi()
    assert len(SPECS) == len(doc["channels"]) == len(doc["operations"])
    by_key = {s.key: s for s in SPECS}
    assert by_key["ring.evt.sensor.hr"] == ChannelSpec(
        "ring.evt.sensor.hr", "wb/v1/{user}/ring/{device}/evt/sensor/hr", 1, False, "HeartRate"
    )
    assert by_key["ring.state"].retain
    assert by_key["agent.context"].retain
    assert not by_key["dlq"].retain


@given(data=st.data())
def test_a_topic_built_from_an_address_matches_that_channel(data: st.DataObject) -> None:
    spec = data.draw(st.sampled_from(SPECS))
    topic = re.sub(r"\{[a-z]+\}", lambda _: data.draw(NAMES), spec.address)
    assert spec.matches(topic)
    assert match_channel(topic, SPECS) == spec


@pytest.mark.parametrize(
    "topic",
    [
        "wb/v1/alice/ring/r1/evt/sensor/nope",
        "wb/v1/alice/watch/r1/state",
        "wb/v1/alice/ring/r1/evt/sensor/hr/extra",
        "wb/v1/alice/ring//evt/sensor/hr",
        "wb/v1/_dlq",
        "other/v1/alice/ring/r1/state",
    ],
)
def test_topics_outside_the_document_match_nothing(topic: str) -> None:
    assert match_channel(topic, SPECS) is None


def test_the_most_specific_address_wins() -> None:
    general = ChannelSpec("general", "wb/v1/{user}/{kind}/{device}/state", 1, True, "DeviceState")
    ring = ChannelSpec("ring", "wb/v1/{user}/ring/{device}/state", 1, True, "DeviceState")
    assert match_channel("wb/v1/a/ring/r/state", [general, ring]) is ring
    assert match_channel("wb/v1/a/ring/r/state", [ring, general]) is ring
    assert match_channel("wb/v1/a/phone/p/state", [ring, general]) is general


def test_qos_bindings_follow_the_design() -> None:
    by_key = {s.key: s for s in SPECS}
    for (kind, cls, name), qos in EVENT_QOS.items():
        assert by_key[f"{kind}.evt.{cls}.{name}"].qos == qos
    assert by_key[f"{Kind.RING}.evt.{EventClass.SENSOR}.steps"].qos == 0
    assert len(EVENTS) == len(EVENT_QOS)


@pytest.mark.parametrize(
    "broken",
    [
        {"operations": {"op": {"channel": {"$ref": "#/channels/missing"}, "bindings": {"mqtt": {}}}}},
        {"channels": {"c": {"address": "a"}}, "operations": {"op": {"channel": {"$ref": "#/channels/c"}}}},
        {"operations": {"op": {"channel": {"$ref": "elsewhere"}, "bindings": {"mqtt": {}}}}},
        {
            "channels": {"c": {"address": "a", "messages": {"m": {"$ref": "#/components/messages/m"}}}},
            "operations": {"op": {"channel": {"$ref": "#/channels/c"}, "bindings": {"mqtt": {}}}},
        },
    ],
)
def test_a_broken_document_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(ContractError):
        channel_specs(broken)


# --------------------------------------------------------------------------------------- check


def _seen(topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Seen:
    raw = RawMessage(topic, payload, qos, retain)
    try:
        return Seen(1.5, raw, codec.decode(topic, payload, qos=qos, retain=retain), None)
    except ContractError as exc:
        return Seen(1.5, raw, None, exc)


HR = "wb/v1/alice/ring/r1/evt/sensor/hr"
STEPS = "wb/v1/alice/ring/r1/evt/sensor/steps"
STATE = "wb/v1/alice/ring/r1/state"


def _hr(bpm: float) -> bytes:
    return codec.encode(make(HeartRate.model_construct(bpm=bpm)))


def _rules(seen: Seen, qos_exact: bool | None = True) -> list[str]:
    return [v.rule for v in check(seen, SPECS, qos_exact=qos_exact)]


def test_a_good_message_passes() -> None:
    assert _rules(_seen(HR, _hr(70))) == []
    assert _rules(_seen(STATE, codec.encode(make(DeviceState(online=True))), retain=True)) == []


def test_schema_and_topic_failures_carry_the_codec_reason() -> None:
    [violation] = check(_seen(HR, _hr(900)), SPECS, qos_exact=True)
    assert violation.rule == "codec/schema"
    assert violation.topic == HR
    assert str(violation).startswith(f"+1.500s {HR} [codec/schema] ")
    assert _rules(_seen("wb/v1/alice/ring/r1/evt/sensor/nope", _hr(70))) == ["codec/topic"]
    assert _rules(_seen(HR, b"\xc1")) == ["codec/decode"]


def test_an_empty_payload_clears_a_retained_channel_but_breaks_others() -> None:
    assert _rules(_seen(STATE, b"")) == []
    assert _rules(_seen(HR, b"")) == ["codec/decode"]


def test_qos_is_judged_only_when_the_broker_shows_it() -> None:
    wrong = _seen(HR, _hr(70), qos=0)  # hr is a QoS 1 channel
    assert _rules(wrong, qos_exact=True) == ["qos"]
    assert _rules(wrong, qos_exact=False) == []
    assert _rules(wrong, qos_exact=None) == []
    steps = codec.encode(make(Steps(steps=1, bucket_start=0)))
    assert _rules(_seen(STEPS, steps, qos=1), qos_exact=True) == ["qos"]  # steps is a QoS 0 channel
    assert _rules(_seen(STEPS, steps, qos=0), qos_exact=True) == []


def test_a_retained_delivery_on_a_channel_that_is_not_retained_is_flagged() -> None:
    [violation] = check(_seen(HR, _hr(70), retain=True), SPECS, qos_exact=False)
    assert violation.rule == "retain"
    assert "ring.evt.sensor.hr is not a retained channel" in violation.detail


def test_a_channel_carrying_another_body_is_flagged() -> None:
    other = [ChannelSpec("odd", "wb/v1/{user}/ring/{device}/evt/sensor/hr", 1, False, "Steps")]
    [violation] = check(_seen(HR, _hr(70)), other, qos_exact=True)
    assert violation.rule == "message"
    assert violation.detail == "channel odd carries Steps, the codec decoded HeartRate"
    assert [v.rule for v in check(_seen(HR, _hr(70)), [], qos_exact=True)] == ["channel"]


def test_a_test_answers_for_its_own_topics_and_the_shared_ones_not_another_users() -> None:
    """On a shared broker (pytest-xdist, --wb-broker) or after a late delivery (amqtt under load delivered the last
    test's bad reading to the next test's recorder: a suite run failed on it), another user's bad message is not this
    test's violation; its own and the shared topics' are."""
    owned = ["wb/v1/alice/#"]
    bad = _hr(900)
    assert answers_for(_seen(HR, bad), owned)
    assert not answers_for(_seen(HR.replace("alice", "bob"), bad), owned)
    assert answers_for(_seen("wb/v1/_agent/a1/state", bad), owned)  # shared: an agent's state
    assert answers_for(_seen("wb/v1/_dlq/schema", bad), owned)
    assert not answers_for(_seen("wb/v1/bob/ring/r1/state", bad, retain=True), owned)  # retained: from before
    assert answers_for(_seen(STATE, bad, retain=True), owned)  # retained, but on its own topics
    assert not answers_for(_seen("wb/v1/_agent/a1/state", bad, retain=True), owned)
    assert answers_for(_seen(HR.replace("alice", "bob"), bad), [])  # owning nothing: every live message


@given(user=NAMES, rest=st.sampled_from(["ring/r1/evt/sensor/hr", "agent/context", "glasses/g1/cmd/display.card"]))
def test_user_of_reads_the_user_of_every_user_topic_and_none_of_the_shared(user: str, rest: str) -> None:
    assert user_of(f"wb/v1/{user}/{rest}") == user
    assert user_of(f"wb/v1/_agent/{user}/state") is None
    assert user_of(f"wb/v1/_dlq/{user}") is None
    assert user_of(f"other/v1/{user}/{rest}") is None
