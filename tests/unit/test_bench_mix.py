"""The benchmark's device mix: every payload it makes is a valid message of the wire contract."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import mix
from bench.fleet import next_due
from schemas import codec
from schemas.actions import Ack, DeviceState
from schemas.topics import Channel, Kind

T = 1_764_000_000_000


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), head_pose_hz=st.sampled_from([0.0, 1.0, 5.0]))
def test_every_stream_payload_validates(seed: int, head_pose_hz: float) -> None:
    rng = random.Random(seed)
    for n, stream in enumerate(mix.default_streams(head_pose_hz)):
        topic = mix.topic_of("u00001", stream)
        message = codec.decode(topic, mix.pack(f"id-{n}", T, n + 1, stream.build(rng, T)), qos=stream.qos)
        assert message.where.kind is stream.kind
        assert message.where.name == stream.name
        assert message.envelope.ts == T


def test_state_and_ack_payloads_validate() -> None:
    state = codec.decode("wb/v1/u1/ring/r1/state", mix.state_payload("s1", T, Kind.RING, False), qos=1)
    assert isinstance(state.data, DeviceState)
    assert state.data.online is False
    ack = codec.decode("wb/v1/u1/glasses/g1/ack", mix.ack_payload("a1", T, "act-1", "display.card"), qos=1)
    assert isinstance(ack.data, Ack)
    assert (ack.data.action_id, ack.data.action, ack.envelope.corr) == ("act-1", "display.card", "act-1")


def test_head_pose_rate_is_a_parameter() -> None:
    with_pose = mix.user_rate(mix.default_streams(5.0))
    without = mix.user_rate(mix.default_streams(0.0))
    assert with_pose == pytest.approx(without + 5.0)
    assert without > 0


@pytest.mark.parametrize(("users", "per_user"), [(1, 1), (3, 10), (20, 5)])
def test_backlog_has_births_then_unique_valid_events(users: int, per_user: int) -> None:
    one_shots = sum(1 for s in mix.default_streams() if s.period_s == 0)
    backlog = mix.backlog(users, per_user, random.Random(1), T)
    assert len(backlog) == users * (len(mix.DEVICE_IDS) + one_shots + per_user)
    ids = [msgpack.unpackb(payload)["id"] for _, payload in backlog]
    assert len(set(ids)) == len(ids)
    first = codec.decode(*backlog[0], qos=1)
    assert first.where.channel is Channel.STATE
    for topic, payload in backlog:
        codec.decode(topic, payload, qos=1)


@settings(max_examples=200, deadline=None)
@given(
    phase=st.floats(0.0, 1.0),
    period=st.sampled_from([0.2, 1.0, 10.0, 60.0]),
    behind=st.floats(0.0, 500.0),
)
def test_a_late_stream_keeps_its_phase(phase: float, period: float, behind: float) -> None:
    """A fleet that fell behind skips the sends it missed but does not line its streams up (no bursts)."""
    due = 1000.0 + phase * period
    now = due + behind
    nxt = next_due(due, now, period)
    assert nxt > now
    assert nxt - now <= period + 1e-9
    periods = (nxt - due) / period
    assert abs(periods - round(periods)) < 1e-6  # the same phase as before
    assert round(periods) >= 1


def test_streams_that_were_all_late_stay_spread_out() -> None:
    """Many streams due at random phases, all served late at once: their next sends stay as spread as before."""
    rng = random.Random(7)
    period = 0.2
    dues = [rng.uniform(0, period) for _ in range(1000)]
    now = 3.0  # the scheduler started three seconds late (connecting the fleet)
    nexts = sorted(next_due(d, now, period) for d in dues)
    assert nexts[0] > now
    assert nexts[-1] - nexts[0] > 0.9 * period  # not all within a few ms of now + period
