"""The agent's fair share of its inbox, and the sampler of repeated failures (issue 18, items 2 and 5)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.fairness import FairQueue
from broker.ratelog import Sampler
from schemas.envelope import Message, envelope_of
from schemas.events import HeartRate
from schemas.topics import parse

T0 = 1_760_000_000_000


def _msg(user: str, n: int) -> Message:
    topic = f"wb/v1/{user}/ring/r1/evt/sensor/hr"
    env = envelope_of(HeartRate)(id=f"{user}-{n}", ts=T0, data=HeartRate(bpm=60))
    return Message(topic, parse(topic), env)


def test_a_backlog_does_not_fill_the_batch_while_others_wait() -> None:
    queue = FairQueue()
    queue.add([_msg("flood", i) for i in range(900)] + [_msg("bob", 0), _msg("carol", 0)])
    batch = queue.take(500)
    ids = [m.envelope.id for m in batch]
    assert "bob-0" in ids
    assert "carol-0" in ids
    assert ids.index("bob-0") < 3
    assert len(batch) == 500
    assert len(queue) == 402


@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=200), st.integers(1, 50))
def test_every_message_once_and_each_user_in_order(users: list[str], limit: int) -> None:
    queue = FairQueue()
    sent = [_msg(u, i) for i, u in enumerate(users)]
    queue.add(sent)
    out: list[Message] = []
    while len(queue):
        batch = queue.take(limit)
        assert 0 < len(batch) <= limit
        out += batch
    assert sorted(m.envelope.id for m in out) == sorted(m.envelope.id for m in sent)
    for user in set(users):
        mine = [m.envelope.id for m in out if m.where.user == user]
        assert mine == [m.envelope.id for m in sent if m.where.user == user]


def test_a_turn_serves_every_waiting_user_before_anyone_twice() -> None:
    queue = FairQueue()
    queue.add([_msg("a", i) for i in range(10)] + [_msg("b", i) for i in range(10)] + [_msg("c", 0)])
    users = [m.where.user for m in queue.take(5)]
    assert users[:3] == ["a", "b", "c"]


def test_sampler_lets_the_first_of_each_second_through_per_key() -> None:
    now = [100.0]
    sampler = Sampler(1, clock=lambda: now[0])
    assert sampler.allow("ring")
    assert not sampler.allow("ring")
    assert not sampler.allow("ring")
    assert sampler.allow("glasses")
    assert sampler.take_suppressed() == 2
    now[0] = 101.2
    assert sampler.allow("ring")
    assert sampler.total_suppressed == 2


def test_sampler_memory_is_bounded() -> None:
    sampler = Sampler(1, clock=lambda: 0.0, max_keys=10)
    allowed = sum(sampler.allow(i) for i in range(10_000))
    assert allowed == 11  # ten keys, then one shared by every other key


def test_logged_tracebacks_carry_no_frame_locals() -> None:
    """A traceback's frame locals held whole payloads (a poison message once logged 6.5 MB of them)."""
    import io  # noqa: PLC0415

    from broker.logs import configure_logging, get_logger  # noqa: PLC0415

    out = io.StringIO()
    configure_logging(json=True, stream=out)

    def fail(payload: bytes) -> None:
        raise ValueError(len(payload))

    try:
        fail(b"SECRET-PAYLOAD")
    except ValueError:
        get_logger("test").exception("failed")
    configure_logging()
    assert "failed" in out.getvalue()
    assert "SECRET-PAYLOAD" not in out.getvalue()
