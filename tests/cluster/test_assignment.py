"""Buckets, rendezvous ownership, the NATS mapping and reconnect ordering (pure; no processes)."""

from __future__ import annotations

import random
from collections import Counter, deque
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("redis", reason="agent.cluster needs the redis package (pip install redis)")

from agent.cluster import (
    DEFAULT_BUCKETS,
    ClusterMember,
    ClusterSettings,
    assignment,
    bucket_of,
    escape_dots,
    nats_mappings_block,
    original_topic,
    partition_filter,
    per_device_order,
    rendezvous_owner,
    user_filters,
)
from schemas import codec
from schemas.clock import ManualClock
from schemas.envelope import Message, make
from schemas.errors import ConfigError
from schemas.events import HeartRate
from schemas.topics import matches

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "cluster"
members_st = st.sets(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), min_size=1, max_size=8)


def test_bucket_of_is_the_nats_partition_hash() -> None:
    # nats-server 2.9.10 with "{{partition(16,1)}}" put these users in these partitions (measured on this machine:
    # the MQTT subscriber of wbp/# received wbp/7/wb/v1/alice/..., wbp/4/wb/v1/bob/..., ...).
    assert {u: bucket_of(u, 16) for u in ("alice", "bob", "u-17", "user-42")} == {
        "alice": 7, "bob": 4, "u-17": 15, "user-42": 11,
    }  # fmt: skip


@given(st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True), st.integers(1, 4096))
def test_bucket_of_is_in_range(user: str, buckets: int) -> None:
    assert 0 <= bucket_of(user, buckets) < buckets


@given(members_st, st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True))
def test_a_join_moves_only_what_the_newcomer_wins(members: set[str], newcomer: str) -> None:
    before = assignment(64, members)
    after = assignment(64, members | {newcomer})
    moved = {b for b in before if before[b] != after[b]}
    assert all(after[b] == newcomer for b in moved)


@given(members_st.filter(lambda m: len(m) > 1), st.data())
def test_a_leave_moves_only_what_the_leaver_had(members: set[str], data: st.DataObject) -> None:
    leaver = data.draw(st.sampled_from(sorted(members)))
    before = assignment(64, members)
    after = assignment(64, members - {leaver})
    assert {b for b in before if before[b] != after[b]} == {b for b, m in before.items() if m == leaver}


@given(members_st)
def test_ownership_does_not_depend_on_the_order_members_are_seen(members: set[str]) -> None:
    order = sorted(members)
    random.Random(len(order)).shuffle(order)
    assert assignment(64, order) == assignment(64, sorted(members))


def test_no_members_own_nothing() -> None:
    assert rendezvous_owner(3, []) is None
    assert assignment(8, []) == {}


def test_64_buckets_over_three_members_are_roughly_even() -> None:
    counts = Counter(assignment(DEFAULT_BUCKETS, ["c-a1", "c-a2", "c-a3"]).values())
    assert sum(counts.values()) == DEFAULT_BUCKETS
    assert min(counts.values()) >= DEFAULT_BUCKETS // 3 - 8


def test_partition_topics_strip_back_to_the_device_topic() -> None:
    topic = "wb/v1/alice/ring/r1/evt/sensor/hr"
    b = bucket_of("alice", 64)
    mapped = f"wbp/{b}/{topic}"
    assert matches(partition_filter(b), mapped)
    assert original_topic(mapped) == topic
    assert original_topic(topic) == topic


def test_mapping_block_maps_events_acks_and_states_but_not_commands() -> None:
    block = nats_mappings_block(64)
    assert '"wb.v1.*.*.*.evt.*.*": "wbp.{{partition(64,1)}}.wb.v1.{{wildcard(1)}}' in block
    assert '"wb.v1.*.*.*.ack"' in block
    assert '"wb.v1.*.*.*.state"' in block
    assert "cmd" not in block


def test_deploy_configs_carry_the_mapping_of_the_default_bucket_count() -> None:
    confs = sorted((DEPLOY / "nats").glob("n*.conf"))
    assert len(confs) == 3
    for conf in confs:
        assert nats_mappings_block(DEFAULT_BUCKETS) in conf.read_text(encoding="utf-8")


def test_user_filters_select_only_those_users() -> None:
    filters = user_filters({"bob", "alice"})
    assert filters[:3] == ("wb/v1/alice/+/+/evt/#", "wb/v1/alice/+/+/ack", "wb/v1/alice/+/+/state")
    assert any(matches(f, "wb/v1/bob/ring/r1/evt/sensor/hr") for f in filters)
    assert not any(matches(f, "wb/v1/carol/ring/r1/evt/sensor/hr") for f in filters)
    assert not any(matches(f, "wb/v1/alice/glasses/g1/cmd/display.card") for f in filters)


def test_escape_dots() -> None:
    assert escape_dots("wb/v1/alice/glasses/g1/cmd/display.card") == "wb/v1/alice/glasses/g1/cmd/display_card"


def test_settings_refuse_what_would_clash() -> None:
    with pytest.raises(ConfigError):
        ClusterSettings(name="Bad-Name", member="a1", nodes=("mqtt://127.0.0.1:1883",))
    with pytest.raises(ConfigError):
        ClusterSettings(name="c", member="bucket-1", nodes=("mqtt://127.0.0.1:1883",))
    with pytest.raises(ConfigError):
        ClusterSettings(name="c", member="a1", nodes=())
    with pytest.raises(ConfigError):
        ClusterSettings(name="c", member="a1", nodes=("mqtt://x:1",), partitions="filters")
    s = ClusterSettings(name="c", member="a1", nodes=("mqtt://x:1",))
    assert (s.instance, s.bucket_client_id(7), s.hold) == ("c-a1", "c-bucket-7", 6.0)


def _hr(user: str, device: str, seq: int, ts: int) -> Message:
    topic = f"wb/v1/{user}/ring/{device}/evt/sensor/hr"
    return codec.decode(topic, codec.encode(make(HeartRate(bpm=60), ts=ts, seq=seq)), qos=1)


@given(st.lists(st.tuples(st.sampled_from(["u1", "u2"]), st.sampled_from(["r1", "r2"])), max_size=30), st.randoms())
def test_reconnect_hold_releases_each_device_in_order(devices: list[tuple[str, str]], rnd: random.Random) -> None:
    counters: Counter[tuple[str, str]] = Counter()
    messages = []
    for i, dev in enumerate(devices):
        counters[dev] += 1
        messages.append(_hr(*dev, seq=counters[dev], ts=1_700_000_000_000 + i))
    rnd.shuffle(messages)  # what a reconnect can do: redeliveries after newer messages
    inbox = deque(messages)
    per_device_order(inbox)
    assert len(inbox) == len(messages)
    last: dict[tuple[str | None, str | None], int] = {}
    for m in inbox:
        key = (m.where.user, m.where.device)
        assert m.envelope.seq > last.get(key, 0)
        last[key] = m.envelope.seq


def _state(instance: str, online: bool, *, ts: int, retain: bool = False) -> Message:
    from schemas.actions import AgentState  # noqa: PLC0415

    env = make(AgentState(online=online, instance=instance), ts=ts)
    return codec.decode(f"wb/v1/_agent/{instance}/state", codec.encode(env), qos=1, retain=retain)


def _member(**changes: float) -> ClusterMember:
    settings = ClusterSettings(name="c", member="a1", nodes=("mqtt://127.0.0.1:1",), **changes)  # type: ignore[arg-type]
    return ClusterMember(settings, clock=ManualClock(1_700_000_000_000))


def test_membership_from_states_wills_and_stale_retained_ones() -> None:
    member = _member(offline_grace_s=0.0)
    now = member.clock.now_ms()
    member._on_state(_state("c-a1", True, ts=now))
    member._on_state(_state("c-a2", True, ts=now))
    member._on_state(_state("c-a3", True, ts=now - 3_600_000, retain=True))  # left behind an hour ago
    member._on_state(_state("other-a9", True, ts=now))  # another cluster
    member._on_state(_state("c-bucket-3", True, ts=now))  # never a member
    assert member.live() == {"c-a1", "c-a2"}
    member._on_state(_state("c-a2", False, ts=now))  # its Will
    assert member.live() == {"c-a1"}
    assert member.target() == set(range(DEFAULT_BUCKETS))


def test_a_will_counts_only_after_the_grace() -> None:
    member = _member(offline_grace_s=60.0)
    now = member.clock.now_ms()
    member._on_state(_state("c-a1", True, ts=now))
    member._on_state(_state("c-a2", True, ts=now))
    member._on_state(_state("c-a2", False, ts=now))  # the broker lost its connection; it may be back at once
    assert member.live() == {"c-a1", "c-a2"}
    assert member.target() == {b for b, m in assignment(DEFAULT_BUCKETS, ["c-a1", "c-a2"]).items() if m == "c-a1"}


def test_a_will_dated_by_its_connect_time_counts_only_after_the_grace() -> None:
    """A Will carries the ts of its member's connect, and NATS delivers it with the retain flag set: dated by it,
    the Will of a member connected a minute ago was past the grace at once (seen in the failover test: 34 buckets
    moved away and back within a second)."""
    member = _member(offline_grace_s=3.0)
    now = member.clock.now_ms()
    member._on_state(_state("c-a1", True, ts=now))
    member._on_state(_state("c-a2", True, ts=now))
    member._on_state(_state("c-a2", False, ts=now - 60_000, retain=True))
    assert member.live() == {"c-a1", "c-a2"}
    member._on_state(_state("c-a3", False, ts=now - 3_600_000, retain=True))  # gone an hour ago: not alive
    assert member.live() == {"c-a1", "c-a2"}
