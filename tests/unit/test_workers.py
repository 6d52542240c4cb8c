"""The static bucket share of ``wearbus agent --workers N`` (agent/workers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.cluster import bucket_of
from agent.workers import WorkerBus, WorkerShare, user_level
from broker.client import BusOptions
from schemas import codec
from schemas.envelope import make
from schemas.errors import ConfigError
from schemas.events import HeartRate

users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@given(user=users, count=st.integers(1, 8))
def test_every_user_has_exactly_one_worker_the_owner_of_its_bucket(user: str, count: int) -> None:
    owners = [i for i in range(count) if WorkerShare(i, count).owns(user)]
    assert owners == [bucket_of(user, 64) % count]


def test_names_of_a_worker() -> None:
    share = WorkerShare(1, 2)
    assert share.instance("agent-1") == "agent-1-w1"
    assert share.db(Path("runs/agent.db")) == Path("runs/agent.w1.db")
    assert share.db(Path("runs/agent")) == Path("runs/agent.w1.db")


@pytest.mark.parametrize(("index", "count", "buckets"), [(2, 2, 64), (0, 0, 64), (0, 65, 64), (-1, 2, 64)])
def test_impossible_shares_are_refused(index: int, count: int, buckets: int) -> None:
    with pytest.raises(ConfigError):
        WorkerShare(index, count, buckets)


def test_user_level() -> None:
    assert user_level("wb/v1/alice/ring/r1/evt/sensor/hr") == "alice"
    assert user_level("wb/v1/alice") is None
    assert user_level("other/alice/x/y") is None


def test_a_worker_bus_reads_its_users_and_passes_over_the_others() -> None:
    mine = next(u for u in (f"u{i}" for i in range(100)) if WorkerShare(0, 2).owns(u))
    theirs = next(u for u in (f"u{i}" for i in range(100)) if WorkerShare(1, 2).owns(u))
    bus = WorkerBus(BusOptions(manual_ack=True, name="w0"), WorkerShare(0, 2))
    payload = codec.encode(make(HeartRate(bpm=60)))
    for mid, user in enumerate((mine, theirs, theirs), start=1):
        bus.deliver(f"wb/v1/{user}/ring/r1/evt/sensor/hr", payload, 1, False, mid, None)
    assert [m.where.user for m in bus.inbox] == [mine]
    assert bus.passed == 2
