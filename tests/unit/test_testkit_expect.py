"""Expectations and their reports, fed by hand instead of by a broker."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import codec
from schemas.actions import Ack
from schemas.envelope import Message, make
from schemas.errors import TopicError
from schemas.events import HeartRate, Steps
from schemas.topics import DeviceId, Kind
from testkit.expect import (
    MAX_LINES,
    Expect,
    UserTopics,
    context_lines,
    describe,
    describe_predicate,
    has,
    nearby,
)
from testkit.raw import RawMessage

U = UserTopics("t-unit")
HR = U.event("ring", "r1", "sensor", "hr")
STEPS = U.event("ring", "r1", "sensor", "steps")
ACK = U.ack("ring", "r1")


class Clock:
    """A clock that advances a millisecond per reading, so report times are predictable."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return next(self._ticks) / 1000


def _expect() -> Expect:
    return Expect("mqtt://127.0.0.1:1", client_id="wb-expect-unit", clock=Clock())


def _hr(expect: Expect, bpm: float, topic: str = HR) -> None:
    expect._on_raw(RawMessage(topic, codec.encode(make(HeartRate(bpm=bpm)), "json"), 1, False))


def _raw(expect: Expect, topic: str, payload: bytes, *, retain: bool = False) -> None:
    expect._on_raw(RawMessage(topic, payload, 1, retain))


# --------------------------------------------------------------------------------------- pure parts


def test_user_topics_build_the_v1_layout() -> None:
    assert U.all == "wb/v1/t-unit/#"
    assert HR == "wb/v1/t-unit/ring/r1/evt/sensor/hr"
    assert U.command("glasses", "g1", "display.card") == "wb/v1/t-unit/glasses/g1/cmd/display.card"
    assert U.state(Kind.PHONE, "p1") == "wb/v1/t-unit/phone/p1/state"
    assert ACK == "wb/v1/t-unit/ring/r1/ack"
    assert U.context() == "wb/v1/t-unit/agent/context"
    assert U.device("ring", "r1") == DeviceId("t-unit", Kind.RING, "r1")
    with pytest.raises(TopicError):
        UserTopics("Not_Valid")


def test_fresh_users_differ() -> None:
    users = {UserTopics.fresh().user for _ in range(50)}
    assert len(users) == 50
    assert all(u.startswith("t-") for u in users)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "near"),
    [
        (HR, HR, True),
        (HR, STEPS, True),  # the same user
        (HR, "wb/v1/t-unit/phone/p1/state", True),
        (HR, "wb/v1/t-other/ring/r1/evt/sensor/hr", False),
        ("wb/v1/+/ring/r1/evt/sensor/hr", "wb/v1/t-other/ring/r9/state", True),
        ("wb/#", "wb/v1/anyone/agent/context", True),
        ("wb/v1/_dlq/+", "wb/v1/_dlq/schema", True),
        ("wb/v1/_dlq/schema", "wb/v1/t-unit/ring/r1/ack", False),
        ("wb/v1/t-unit/agent/context", "wb/v1", False),
    ],
)
def test_nearby(topic_filter: str, topic: str, near: bool) -> None:
    assert nearby(topic_filter, topic) is near


def _named(message: Message) -> bool:
    return message.qos == 1


def test_predicates_are_described_by_name_or_lambda_source() -> None:
    assert describe_predicate(None) == ""
    assert describe_predicate(_named) == "_named"
    assert describe_predicate(lambda m: m.qos > 0 and f(m, (1, 2))) == "lambda m: m.qos > 0 and f(m, (1, 2))"  # type: ignore[name-defined]  # noqa: F821
    assert repr(has(bpm=72, source="spot")) == "has(bpm=72, source='spot')"
    assert repr(has(bpm=lambda v: v > 100)) == "has(bpm=lambda v: v > 100)"


def test_has_matches_fields_values_and_tests() -> None:
    message = codec.decode(HR, codec.encode(make(HeartRate(bpm=72, source="spot"))))
    assert has(bpm=72)(message)
    assert has(bpm=lambda v: v > 70, source="spot")(message)
    assert not has(bpm=73)(message)
    assert not has(steps=1)(message)  # no such field: no match, no exception
    assert not has(bpm=lambda v: v > 100)(message)


@given(bpm=st.floats(min_value=30, max_value=220))
def test_describe_shows_topic_flags_and_fields(bpm: float) -> None:
    expect = _expect()
    _hr(expect, bpm)
    line = describe(expect.records[0])
    assert line.startswith(f"+0.001s {HR} q1  ring.hr bpm={bpm!r}")


def test_describe_shows_rejections_and_clears() -> None:
    expect = _expect()
    _raw(expect, HR, b'{"id": "x", "ts": 1, "data": {"type": "ring.hr", "bpm": 900}}')
    _raw(expect, U.state("ring", "r1"), b"", retain=True)
    bad, clear = (describe(s) for s in expect.records)
    assert 'REJECTED schema: Input should be less than or equal to 220 at data.bpm; payload b\'{"id"' in bad
    assert clear.endswith("q1 retained  (empty payload: clears a retained message)")


def test_context_keeps_the_newest_lines() -> None:
    expect = _expect()
    for bpm in range(60, 60 + MAX_LINES + 5):
        _hr(expect, bpm)
    lines = context_lines(expect.records, HR)
    assert lines[1] == "  ... 5 earlier ones left out"
    assert len(lines) == MAX_LINES + 2
    assert "bpm=104.0" in lines[-1]
    assert context_lines([], HR) == ["nothing at all was seen on the bus since the recorder started"]


# --------------------------------------------------------------------------------------- waiting


async def test_message_finds_what_came_before_the_call() -> None:
    expect = _expect()
    _hr(expect, 61)
    _hr(expect, 72)
    message = await expect.message(HR, where=has(bpm=72), within=0)
    assert isinstance(message.data, HeartRate)
    assert message.data.bpm == 72
    assert expect.seen(HR) == [m for m in expect.seen() if m.topic == HR]
    assert len(expect.seen(HR, since=1)) == 1


async def test_message_waits_for_one_that_comes_later() -> None:
    expect = _expect()
    loop = asyncio.get_running_loop()
    loop.call_soon(_hr, expect, 65, STEPS.replace("steps", "hrv"))  # not it
    loop.call_soon(_hr, expect, 72)
    message = await expect.message(HR, within=5)
    assert message.topic == HR


async def test_a_failure_names_the_predicate_and_shows_neighbours() -> None:
    expect = _expect()
    _hr(expect, 61)
    _raw(expect, STEPS, b"garbage")
    with pytest.raises(AssertionError) as info:
        await expect.message(HR, where=has(bpm=lambda v: v > 100), within=0)
    text = str(info.value)
    assert text.startswith(f"expected a message on {HR!r} where has(bpm=lambda v: v > 100) within 0 s")
    assert "ring.hr bpm=61.0 source='periodic' quality=1.0   <- matched the filter; where: false" in text
    assert f"{STEPS} q1  REJECTED decode" in text


async def test_a_predicate_that_raises_does_not_match_and_says_why() -> None:
    expect = _expect()
    _hr(expect, 61)

    def steps_over_ten(m: Message) -> bool:
        assert isinstance(m.data, Steps), f"not steps but {type(m.data).__name__}"
        return m.data.steps > 10

    with pytest.raises(AssertionError, match=r"where: raised AssertionError: not steps but HeartRate"):
        await expect.message(HR, where=steps_over_ten, within=0)


async def test_none_passes_quietly_and_fails_on_the_first_match() -> None:
    expect = _expect()
    _hr(expect, 61)
    await expect.none(ACK, within=0)
    await expect.none(HR, where=has(bpm=99), within=0)
    asyncio.get_running_loop().call_soon(_hr, expect, 99)
    with pytest.raises(AssertionError, match=r"expected no message on .* where has\(bpm=99\), but one came:"):
        await expect.none(HR, where=has(bpm=99), within=5)


async def test_sequence_allows_interleaving_but_keeps_order() -> None:
    expect = _expect()
    _hr(expect, 60)
    _raw(expect, ACK, codec.encode(make(Ack(action_id="a", status="done"))))
    _hr(expect, 70)
    got = await expect.sequence([(HR, has(bpm=60)), ACK, (HR, None)], within=0)
    assert [m.topic for m in got] == [HR, ACK, HR]
    with pytest.raises(AssertionError) as info:
        await expect.sequence([ACK, (HR, has(bpm=60))], within=0)
    text = str(info.value)
    assert "step 2 never came" in text
    assert "  1. ok   a message on" in text
    assert "  2. MISS a message on" in text
    assert "after step 1:" in text


async def test_until_answers_or_gives_up() -> None:
    expect = _expect()
    never: list[int] = []
    assert await expect.until(lambda: never or None, 0) is None
    asyncio.get_running_loop().call_soon(_hr, expect, 61)
    assert await expect.until(lambda: len(expect.records) or None, 5) == 1
