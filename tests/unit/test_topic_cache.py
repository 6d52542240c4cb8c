"""The topic parser's cache: bounded, the same answer on a hit and a miss, the parts of a device's topics shared."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.errors import TopicError
from schemas.topics import _LEAF, _NAME, TOPIC_CACHE, Channel, EventClass, Kind, Topic, parse

names = st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True)
leaves = st.from_regex(r"[a-z0-9_.-]{1,64}", fullmatch=True)
odd = st.sampled_from(["", "A", "x\n", "a b", "a_b", "_agent", "_dlq", "agent", "evt", "cmd", "state"])


def mostly(good: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Good levels three times in four, odd ones otherwise."""
    return st.one_of(good, good, good, odd)


kinds = mostly(st.sampled_from([k.value for k in Kind]))
classes = mostly(st.sampled_from([c.value for c in EventClass]))
tails = st.one_of(
    st.tuples(st.just("evt"), classes, mostly(leaves)),
    st.tuples(st.just("evt"), classes, mostly(leaves)),
    st.tuples(st.just("cmd"), mostly(leaves)),
    st.sampled_from([("ack",), ("state",), ("evt", "sensor"), ("evt", "sensor", "hr", "x"), ("bogus",), ()]),
)
device_topics = st.tuples(mostly(names), kinds, mostly(names), tails).map(
    lambda p: "wb/v1/" + "/".join([*p[:3], *p[3]])
)
other_topics = st.tuples(st.sampled_from(["wb/v1", "wb/v2", "xx/v1", ""]), st.lists(mostly(leaves), max_size=4))
topics = st.one_of(device_topics, device_topics, other_topics.map(lambda p: "/".join([p[0], *p[1]])))


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    parse.cache_clear()
    yield
    parse.cache_clear()


def test_the_parse_cache_stays_bounded() -> None:
    info = parse.cache_info()
    assert info.maxsize == TOPIC_CACHE
    assert TOPIC_CACHE <= 8192  # a fixed ~1 MB, not ~9 KB for every user the agent has seen
    for u in range(TOPIC_CACHE + 500):
        parse(f"wb/v1/u{u}/ring/r1/evt/system/heartbeat")
    assert parse.cache_info().currsize == TOPIC_CACHE


def test_a_devices_topics_share_their_parts() -> None:
    event = parse("wb/v1" + "/alice/ring/ring-1/evt/sensor/hr")
    state = parse("wb/v1/alice" + "/ring/ring-1/state")
    other = parse("wb/v1/alice/ring/ring-1" + "/evt/system/heartbeat")
    assert event.user is state.user is other.user
    assert event.device is state.device is other.device
    assert parse("wb/v1/bob/ring/r2/evt" + "/sensor/hr").name is event.name


def _reference(topic: str) -> Topic:
    """The parser as it was before the fast path and the interning (the v1 layout, step by step)."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "wb" or parts[1] != "v1":
        raise TopicError("topic is not under wb/v1/", topic=topic)
    first = parts[2]
    if first == "_agent":
        if len(parts) == 5 and parts[4] == "state" and _NAME.match(parts[3]):
            return Topic(Channel.AGENT_STATE, name=parts[3])
        raise TopicError("expected wb/v1/_agent/{instance}/state", topic=topic)
    if first == "_dlq":
        if len(parts) == 4 and _LEAF.match(parts[3]):
            return Topic(Channel.DLQ, name=parts[3])
        raise TopicError("expected wb/v1/_dlq/{reason}", topic=topic)
    if not _NAME.match(first):
        raise TopicError(f"user {first!r} must match [a-z0-9-]{{1,64}}", topic=topic)
    if len(parts) == 5 and parts[3] == "agent" and parts[4] == "context":
        return Topic(Channel.CONTEXT, user=first)
    if len(parts) < 6:
        raise TopicError("expected wb/v1/{user}/{kind}/{device}/...", topic=topic)
    try:
        kind = Kind(parts[3])
    except ValueError:
        raise TopicError(f"kind {parts[3]!r} is not one of {', '.join(Kind)}", topic=topic) from None
    device = parts[4]
    if not _NAME.match(device):
        raise TopicError(f"device {device!r} must match [a-z0-9-]{{1,64}}", topic=topic)
    match parts[5:]:
        case ["evt", cls, name] if _LEAF.match(name):
            try:
                event_class = EventClass(cls)
            except ValueError:
                raise TopicError(f"event class {cls!r} is not one of {', '.join(EventClass)}", topic=topic) from None
            return Topic(Channel.EVENT, first, kind, device, event_class, name)
        case ["cmd", action] if _LEAF.match(action):
            return Topic(Channel.COMMAND, first, kind, device, name=action)
        case ["ack"]:
            return Topic(Channel.ACK, first, kind, device)
        case ["state"]:
            return Topic(Channel.STATE, first, kind, device)
        case ["shadow", "desired"]:
            return Topic(Channel.DESIRED, first, kind, device)
        case ["shadow", "reported"]:
            return Topic(Channel.REPORTED, first, kind, device)
    raise TopicError(
        "expected .../evt/{class}/{name}, .../cmd/{action}, .../ack, .../state or .../shadow/desired|reported",
        topic=topic,
    )


@settings(max_examples=300)
@given(topic=topics)
@example(topic="wb/v1/alice/agent/context")
@example(topic="wb/v1/alice/agent/contexts")
def test_parse_answers_as_the_reference_on_a_miss_and_on_a_hit(topic: str) -> None:
    want: Topic | TopicError
    try:
        want = _reference(topic)
    except TopicError as exc:
        want = exc
    for _ in range(2):  # a miss, then a hit
        if isinstance(want, TopicError):
            with pytest.raises(TopicError) as got:
                parse(topic)
            assert (got.value.detail, got.value.topic) == (want.detail, want.topic)
        else:
            assert parse(topic) == want
