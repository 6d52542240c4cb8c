"""The :class:`~agent.storage.AgentStore` contract, run against both stores: SQLite in a temporary directory and a
cluster's Redis bucket store on a private redis-server (skipped without one, a failure under ``CI=true``).

Every protocol method is exercised here, with a health key: sealing at rest, retention (redaction and hourly
aggregates), the erase of a user, and errors translated into :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agent.core.api import TaskRecord
from agent.sealing import HealthCipher
from agent.storage import ActionRow, AgentStore, EventRow, TickRow
from agent.store import Store
from broker.net import free_port
from schemas import codec
from schemas.envelope import make
from schemas.errors import StoreError
from schemas.events import HeartRate, Steps
from tests.cluster.harness import RedisServer, require_redis_client, require_redis_server

if TYPE_CHECKING:
    from agent.cluster.store import RedisBucketStore

    def _both_honour_the_protocol(sqlite: Store, redis: RedisBucketStore) -> list[AgentStore]:
        return [sqlite, redis]  # mypy proves that both classes satisfy AgentStore


HR_TOPIC = "wb/v1/{user}/ring/r1/evt/sensor/hr"
STEPS_TOPIC = "wb/v1/{user}/ring/r1/evt/sensor/steps"
CARD = "wb/v1/{user}/glasses/g1/cmd/display.card"
BPM = 141.25
HR_BODY = codec.encode(make(HeartRate(bpm=BPM), ts=1000))
STEPS_BODY = codec.encode(make(Steps(steps=12, bucket_start=0), ts=1000))


@dataclass
class Backend:
    """Opens stores on one backing (a SQLite file, or a Redis bucket) and dumps it raw."""

    name: str
    open: Callable[[HealthCipher | None], contextlib.AbstractAsyncContextManager[AgentStore]]
    dump: Callable[[], Awaitable[bytes]]


def _sqlite(tmp_path: Path) -> Backend:
    path = tmp_path / "agent.db"

    @contextlib.asynccontextmanager
    async def open_(cipher: HealthCipher | None) -> AsyncIterator[AgentStore]:
        async with Store(path, cipher=cipher) as store:
            yield store

    async def dump() -> bytes:
        con = sqlite3.connect(path)
        try:
            tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            rows = [row for t in tables for row in con.execute(f"SELECT * FROM {t}")]  # noqa: S608 (sqlite_master)
        finally:
            con.close()
        return b" ".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)

    return Backend("sqlite", open_, dump)


def _redis(client: Any, cluster: str) -> Backend:
    from agent.cluster.store import RedisBucketStore  # noqa: PLC0415 (redis is optional)

    @contextlib.asynccontextmanager
    async def open_(cipher: HealthCipher | None) -> AsyncIterator[AgentStore]:
        store = RedisBucketStore(client, cluster, 0, "m1", cipher=cipher)
        assert await store.claim(set(), force=True) is None
        async with store:
            yield store

    async def dump() -> bytes:
        out = []
        for key in await client.keys(f"wb:{{{cluster}-0}}:*"):
            kind = (await client.type(key)).decode()
            if kind == "stream":
                out.append(repr(await client.xrange(key)))
            elif kind == "hash":
                out.append(repr(await client.hgetall(key)))
            elif kind == "zset":
                out.append(repr(await client.zrange(key, 0, -1)))
            out.append(repr(key))
        return " ".join(out).encode()

    return Backend("redis", open_, dump)


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield _sqlite(tmp_path)
        return
    binary = require_redis_server()
    require_redis_client()
    import redis.asyncio as aioredis  # noqa: PLC0415

    async with RedisServer(binary) as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            yield _redis(client, uuid.uuid4().hex[:12])
        finally:
            await client.aclose()


@pytest.fixture
def cipher() -> HealthCipher:
    return HealthCipher(os.urandom(32))


def hr(eid: str, user: str, received: int, dev_seq: int, *, handled: int = 2000) -> EventRow:
    return EventRow(eid, HR_TOPIC.format(user=user), user, "ring", "r1", "evt", "ring.hr", 1000, None, dev_seq, None,
                    handled, received, 1, False, HR_BODY)  # fmt: skip


def steps(eid: str, user: str, received: int, dev_seq: int) -> EventRow:
    return EventRow(eid, STEPS_TOPIC.format(user=user), user, "ring", "r1", "evt", "ring.steps", 1000, None, dev_seq,
                    None, 2000, received, 1, False, STEPS_BODY)  # fmt: skip


def action(aid: str, user: str, corr: str, created_ms: int = 2000) -> ActionRow:
    return ActionRow(aid, CARD.format(user=user), user, "glasses", "g1", "display.card", corr, "skill:time",
                     created_ms, 5, b"card-" + aid.encode())  # fmt: skip


def task(task_id: str, user: str, created: int) -> TaskRecord:
    return TaskRecord(task_id, user, "order_food", "done", {"dish": "pho"}, 2, ("dish",), (), None, created, created)


async def test_a_batch_reads_back_through_every_query(backend: Backend, cipher: HealthCipher) -> None:
    async with backend.open(cipher) as store:
        assert await store.schema_version() >= 0
        events = [hr("e1", "alice", 10, 1), steps("e2", "alice", 11, 2), hr("e3", "bob", 12, 1)]
        await store.commit_batch(
            events, [action("x1", "alice", "e1")], [task("t2", "bob", 9), task("t1", "alice", 8)],
            [("hr_high", "alice", "Your heart rate", 5), ("hr_high", "bob", "Your heart rate", 6),
             ("idle", "bob", "Move", 7)],
            [TickRow(3000), TickRow(3001, ("alice",))], [("e1", '{"skill": "time"}')],
        )  # fmt: skip
        assert await store.known(["e1", "e3", "nope"]) == {"e1", "e3"}
        assert await store.known([]) == set()
        everything = await store.since(0)  # where a batch's ticks go among its events is the store's own
        assert [item for kind, item, _ in everything if kind == "event"] == events  # health payloads opened
        assert [item for kind, item, _ in everything if kind == "tick"] == [TickRow(3000), TickRow(3001, ("alice",))]
        for kind in ("event", "tick"):
            positions = [p for k, _, p in everything if k == kind]
            assert positions == sorted(set(positions))
        assert await store.last_seqs() == {("alice", "ring", "r1"): 2, ("bob", "ring", "r1"): 1}
        assert await store.resolutions() == {"e1": '{"skill": "time"}'}
        assert [t.task_id for t in await store.tasks()] == ["t1", "t2"]
        assert (await store.tasks())[0] == task("t1", "alice", 8)
        assert await store.count_events() == 3
        assert await store.count_events(channel="evt") == 3
        assert await store.count_events(channel="ack") == 0
        assert await store.message_counts() == {"evt/sensor": 3}
        assert await store.alert_counts() == {"hr_high": 2, "idle": 1}
        assert await store.stored_counts() == {"events": 3, "actions": 1, "tasks": 2, "alerts": 3, "context": 0}


async def test_the_dedup_keeps_the_ids_of_qos_1_events_only(backend: Backend, cipher: HealthCipher) -> None:
    """The contract deduplicates QoS 1 events; a QoS 0 sample is stored (and replayed) but its id is not kept."""
    async with backend.open(cipher) as store:
        sample = steps("s1", "alice", 13, 3)._replace(qos=0)
        await store.commit_batch([hr("e1", "alice", 10, 1), sample], [], [], [])
        assert await store.known(["s1", "e1"]) == {"e1"}
        assert [item for kind, item, _ in await store.since(0) if kind == "event"] == [hr("e1", "alice", 10, 1), sample]


async def test_the_outbox_publish_times_and_acks(backend: Backend) -> None:
    async with backend.open(None) as store:
        await store.commit_batch(
            [hr("e1", "alice", 100, 1, handled=2000), hr("e2", "alice", 200, 2, handled=3000)],
            [action("x1", "alice", "e1"), action("x2", "alice", "e1"), action("x3", "alice", "e2", created_ms=9000)],
            [], [],
        )  # fmt: skip
        assert [a for a, _, _ in await store.unpublished()] == ["x1", "x2", "x3"]
        assert (await store.unpublished())[0] == ("x1", CARD.format(user="alice"), b"card-x1")
        assert await store.first_action_latencies() == []
        await store.mark_published(["x1"], 150)
        await store.mark_published(["x2", "x3"], 170)
        assert await store.unpublished() == []
        # e1: its first action of the turn was published 50 ms after the event came; e2's only came later (timed)
        assert sorted(await store.first_action_latencies()) == [("e1", 50.0), ("e2", None)]
        await store.mark_acks([("x1", "ok", "", 160), ("x2", "failed", "no display", 161)])
        assert await store.action_status_counts() == {"ok": 1, "failed": 1, "pending": 1}


async def test_snapshots_and_contexts_are_sealed_at_rest(backend: Backend, cipher: HealthCipher) -> None:
    state = {"version": 2, "users": {"alice": {"secret_bpm": 173.5}, "bob": {"n": 1}}}
    async with backend.open(cipher) as store:
        await store.commit_batch([hr("e1", "alice", 10, 1)], [], [], [])
        mark = await store.save_core(state, 4000, 5000)
        await store.save_contexts([("alice", '{"bpm": 173.5}', 7), ("bob", "{}", 8)])
        snap = await store.load_core()
        assert snap is not None
        assert snap.state == state
        assert snap.tick_ms == 4000
        assert snap.replay_from == mark.event_seq
        assert await store.since(snap.replay_from) == []
        await store.commit_batch([hr("e2", "alice", 11, 2)], [], [], [])
        assert [item.id for _, item, _ in await store.since(snap.replay_from)] == ["e2"]
        assert await store.contexts() == {"alice": ('{"bpm": 173.5}', 7), "bob": ("{}", 8)}
        assert await store.health_samples() == {"ring.hr": (2, 2)}
    raw = await backend.dump()
    assert b"173.5" not in raw
    assert str(BPM).encode() not in raw
    async with backend.open(None) as keyless:  # the data is there, but it does not open without the key
        assert await keyless.health_samples() == {"ring.hr": (2, 0)}
        with pytest.raises(StoreError, match="--health-key"):
            await keyless.load_core()
        with pytest.raises(StoreError, match="--health-key"):
            await keyless.contexts()
        with pytest.raises(StoreError, match="--health-key"):
            await keyless.since(0)


async def test_retention_redacts_old_health_payloads_and_keeps_hourly_aggregates(
    backend: Backend, cipher: HealthCipher
) -> None:
    async with backend.open(cipher) as store:
        await store.commit_batch([hr("e1", "alice", 10, 1), steps("e2", "alice", 10, 2), hr("e3", "alice", 99, 3),
                                  hr("e4", "alice", 20, 4)], [], [], [])  # fmt: skip
        assert await store.prune_health(50, limit=1) == 1  # at most `limit` a call
        assert await store.prune_health(50) == 1
        assert await store.prune_health(50) == 0  # done once
        assert await store.health_hourly("alice") == [("ring.hr.bpm", 0, {"n": 2, "sum": 2 * BPM, "min": BPM,
                                                                          "max": BPM})]  # fmt: skip
        assert await store.health_hourly("bob") == []
        payloads = {item.id: item.payload for kind, item, _ in await store.since(0) if kind == "event"}
        assert str(BPM).encode() not in payloads["e1"] + payloads["e4"]
        assert "‹redacted›".encode() in payloads["e1"]
        assert codec.decode(HR_TOPIC.format(user="alice"), payloads["e3"]).data == HeartRate(bpm=BPM)  # recent: kept
        assert payloads["e2"] == steps("e2", "alice", 10, 2).payload  # not health data: kept
        assert await store.health_samples() == {"ring.hr": (1, 1)}
        assert await store.known(["e1"]) == {"e1"}  # a redacted event still counts for the dedup check
        assert await store.prune_health(50, hourly_before_ms=1) == 0  # aggregates of hours before 1 ms: dropped
        assert await store.health_hourly("alice") == []
    assert str(BPM).encode() not in await backend.dump()  # e3 is sealed, the rest redacted


async def test_forget_erases_one_user_and_keeps_the_others(backend: Backend, cipher: HealthCipher) -> None:
    async with backend.open(cipher) as store:
        await store.save_core({"version": 2, "users": {"alice": {"n": 1}, "bob": {"n": 2}}}, 0, 0)
        await store.commit_batch(
            [hr("a1", "alice", 10, 1), hr("b1", "bob", 10, 1), steps("a2", "alice", 11, 2)],
            [action("xa", "alice", "a1"), action("xb", "bob", "b1")],
            [task("ta", "alice", 1), task("tb", "bob", 2)],
            [("hr_high", "alice", "Your heart rate", 5), ("hr_high", "bob", "Your heart rate", 6)],
            [TickRow(3000, ("alice",)), TickRow(3001, ("alice", "bob")), TickRow(3002)],
            [("a1", "{}"), ("b1", "{}")],
        )  # fmt: skip
        await store.mark_published(["xa", "xb"], 20)
        await store.mark_acks([("xa", "ok", "", 21)])
        await store.save_contexts([("alice", "{}", 1), ("bob", "{}", 1)])
        await store.prune_health(50)
        assert await store.health_hourly("alice") != []

        removed = await store.forget("alice")
        assert removed["tasks"] == 1
        assert removed["actions"] == 1
        assert removed["alerts"] == 1
        assert removed["ticks"] == 2
        assert await store.known(["a1", "b1"]) == {"b1"}
        left = await store.since(0)
        assert [item.id for kind, item, _ in left if kind == "event"] == ["b1"]
        assert [item for kind, item, _ in left if kind == "tick"] == [TickRow(3001, ("bob",)), TickRow(3002)]
        assert await store.health_hourly("alice") == []
        assert [t.user for t in await store.tasks()] == ["bob"]
        assert await store.contexts() == {"bob": ("{}", 1)}
        assert await store.resolutions() == {"b1": "{}"}
        assert await store.alert_counts() == {"hr_high": 1}
        snap = await store.load_core()
        assert snap is not None
        assert snap.state["users"] == {"bob": {"n": 2}}
        assert await store.stored_counts() == {"events": 1, "actions": 1, "tasks": 1, "alerts": 1, "context": 1}
    raw = await backend.dump()
    assert b"alice" not in raw
    assert b"bob" in raw


async def test_library_errors_become_store_errors(backend: Backend, tmp_path: Path) -> None:
    if backend.name == "sqlite":
        bad = tmp_path / "not-a-db"
        bad.write_bytes(b"this is not a database file, not even close" * 100)
        with pytest.raises(StoreError) as caught:
            async with Store(bad):
                pass
        assert isinstance(caught.value.__cause__, sqlite3.Error)
        return
    import redis.asyncio as aioredis  # noqa: PLC0415
    from redis.exceptions import RedisError  # noqa: PLC0415

    from agent.cluster.store import RedisBucketStore  # noqa: PLC0415

    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        store = RedisBucketStore(client, "dead", 0, "m1")
        with pytest.raises(StoreError) as caught:
            await store.known(["e1"])
        assert isinstance(caught.value.__cause__, RedisError)
        with pytest.raises(StoreError):
            await store.count_events()
    finally:
        await client.aclose()


def test_both_stores_have_every_protocol_member() -> None:
    """At run time too (mypy proves the signatures): a method added to the protocol and missing in a store fails."""
    from agent.cluster.store import RedisBucketStore  # noqa: PLC0415

    members = {n for n in vars(AgentStore) if not n.startswith("_") or n in {"__aenter__", "__aexit__"}}
    members -= {"_is_protocol", "_is_runtime_protocol"}
    for cls in (Store, RedisBucketStore):
        assert {n for n in members if not hasattr(cls, n)} == set(), cls
