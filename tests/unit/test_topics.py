"""Topic builder, parser and filter matcher."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.errors import TopicError
from schemas.topics import (
    Channel,
    DeviceId,
    EventClass,
    Kind,
    ack_topic,
    agent_state_topic,
    command_topic,
    context_topic,
    dlq_topic,
    event_topic,
    matches,
    parse,
    state_topic,
    validate_filter,
)

names = st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True)
leaves = st.from_regex(r"[a-z0-9_.-]{1,64}", fullmatch=True)
kinds = st.sampled_from(list(Kind))


@given(user=names, device=names, kind=kinds, cls=st.sampled_from(list(EventClass)), name=leaves)
def test_event_topic_round_trips(user: str, device: str, kind: Kind, cls: EventClass, name: str) -> None:
    dev = DeviceId(user, kind, device)
    topic = event_topic(dev, cls, name)
    where = parse(topic)
    assert where.channel is Channel.EVENT
    assert (where.user, where.kind, where.device, where.event_class, where.name) == (
        user,
        kind,
        device,
        cls,
        name,
    )
    assert str(where) == topic
    assert where.device_id == dev


@given(user=names, device=names, kind=kinds, action=leaves)
def test_device_topics_round_trip(user: str, device: str, kind: Kind, action: str) -> None:
    dev = DeviceId(user, kind, device)
    for topic, channel in (
        (command_topic(dev, action), Channel.COMMAND),
        (ack_topic(dev), Channel.ACK),
        (state_topic(dev), Channel.STATE),
    ):
        where = parse(topic)
        assert where.channel is channel
        assert str(where) == topic


def test_other_topics() -> None:
    assert parse(context_topic("alice")).channel is Channel.CONTEXT
    assert parse(agent_state_topic("a1")).name == "a1"
    assert parse(dlq_topic("schema")).name == "schema"
    assert DeviceId("alice", Kind.RING, "ring-1").client_id == "alice/ring/ring-1"


@given(user=names, device=names, kind=kinds, name=leaves)
def test_every_topic_of_a_device_carries_its_key_and_no_other_topic_does(
    user: str, device: str, kind: Kind, name: str
) -> None:
    dev = DeviceId(user, kind, device)
    key = (user, kind.value, device)
    assert dev.key == key
    for topic in (event_topic(dev, EventClass.SENSOR, name), state_topic(dev), ack_topic(dev),
                  command_topic(dev, "display.card")):  # fmt: skip
        parsed = parse(topic)
        assert parsed.key == key
        assert all(type(part) is str for part in parsed.key)  # a str hashes in C, an enum member does not
        assert parse(topic).key is parsed.key  # built once per parsed topic, not per message
    for topic in (context_topic(user), agent_state_topic("a1"), dlq_topic("schema")):
        assert parse(topic).key is None
    # derived: not compared, and a changed copy derives its own
    parsed = parse(state_topic(dev))
    moved = "spare" if device != "spare" else "spare-2"
    assert dataclasses.replace(parsed, device=moved).key == (user, kind.value, moved)
    assert dataclasses.replace(parsed) == parsed


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("foo/bar", "not under wb/v1"),
        ("wb/v1/Alice/ring/r1/state", "user"),
        ("wb/v1/alice/watch/r1/state", "kind"),
        ("wb/v1/alice/ring/r_1/state", "device"),
        ("wb/v1/alice/ring/r1/evt/smell/x", "event class"),
        ("wb/v1/alice/ring/r1/evt/sensor", "expected"),
        ("wb/v1/alice/ring/r1/bogus", "expected"),
        ("wb/v1/_agent/a1/other", "expected"),
        ("wb/v1/_dlq/a/b", "expected"),
    ],
)
def test_parse_rejects_with_reason(topic: str, why: str) -> None:
    with pytest.raises(TopicError, match=why) as info:
        parse(topic)
    assert info.value.topic == topic


def test_names_are_checked() -> None:
    with pytest.raises(TopicError, match="user"):
        DeviceId("Bob", Kind.RING, "r1")


def _reference_match(topic_filter: str, topic: str) -> bool:
    pattern = (
        "^"
        + "/".join("[^/]*" if p == "+" else ".*" if p == "#" else re.escape(p) for p in topic_filter.split("/"))
        + "$"
    )
    if topic_filter.endswith("/#"):  # 'a/#' also matches 'a'
        base = topic_filter[:-2]
        if _reference_match(base, topic):
            return True
    if topic.startswith("$") and topic_filter[:1] in "+#":
        return False
    return re.match(pattern, topic) is not None


level = st.sampled_from(["a", "b", "wb", "v1", "x-1"])


@given(
    topic=st.lists(level, min_size=1, max_size=5).map("/".join),
    filt=st.lists(st.sampled_from(["a", "b", "wb", "+"]), min_size=1, max_size=5).map("/".join),
    hash_end=st.booleans(),
)
def test_matches_agrees_with_reference(topic: str, filt: str, hash_end: bool) -> None:
    f = f"{filt}/#" if hash_end else filt
    assert matches(f, topic) == _reference_match(f, topic)


def test_matches_examples() -> None:
    assert matches("wb/#", "wb/v1/alice/ring/r1/state")
    assert matches("wb/v1/+/ring/+/evt/#", "wb/v1/alice/ring/r1/evt/sensor/hr")
    assert not matches("wb/v1/+/glasses/+/evt/#", "wb/v1/alice/ring/r1/evt/sensor/hr")
    assert matches("#", "wb")
    assert not matches("#", "$SYS/broker/uptime")


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a/b+", "+x"])
def test_validate_filter(bad: str) -> None:
    with pytest.raises(TopicError):
        validate_filter(bad)
