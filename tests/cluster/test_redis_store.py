"""The shared bucket store against a private redis-server: fencing, dedup, the log, snapshots, the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.core.api import TaskRecord
from agent.store import ActionRow, EventRow, TickRow
from tests.cluster.harness import RedisServer, require_redis_client, require_redis_server


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    binary = require_redis_server()
    require_redis_client()
    import redis.asyncio as aioredis  # noqa: PLC0415

    async with RedisServer(binary) as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            yield client
        finally:
            await client.aclose()


def store(redis: Any, member: str, cluster: str = "c", bucket: int = 3) -> Any:
    from agent.cluster import RedisBucketStore  # noqa: PLC0415

    return RedisBucketStore(redis, cluster, bucket, member)


def event(eid: str, seq: int) -> EventRow:
    return EventRow(
        id=eid, topic="wb/v1/alice/ring/r1/evt/sensor/hr", user="alice", kind="ring", device="r1", channel="evt",
        type="ring.hr", ts=1000 + seq, src_ts=None, dev_seq=seq, corr=None, handled_ms=2000 + seq,
        received_wall_ms=3000 + seq, qos=1, retain=False, payload=b"\x81\xa2id",
    )  # fmt: skip


def action(aid: str, corr: str) -> ActionRow:
    return ActionRow(aid, "wb/v1/alice/glasses/g1/cmd/display.card", "alice", "glasses", "g1", "display.card", corr,
                     "skill:time", 5, 6, b"payload-" + aid.encode())  # fmt: skip


async def test_a_new_holder_fences_the_old_one(redis: Any) -> None:
    from agent.cluster import FencedError  # noqa: PLC0415

    a, b = store(redis, "c-a1"), store(redis, "c-a2")
    assert await a.claim({"c-a1", "c-a2"}) is None
    assert await b.claim({"c-a1", "c-a2"}) == "c-a1"  # a live holder is waited for
    assert await b.claim({"c-a2"}) is None  # a dead one is not
    assert b.epoch == a.epoch + 1
    with pytest.raises(FencedError):
        await a.commit_batch([event("e1", 1)], [], [], [])
    with pytest.raises(FencedError):
        await a.save_core({"version": 1, "ids": 0, "users": {}}, 0, 0)
    assert not await a.release()  # no longer the holder: cannot free it for anyone
    assert await b.holder() == ("c-a2", b.epoch)
    assert await b.release()
    assert (await b.holder())[0] == ""
    c = store(redis, "c-a3")
    assert await c.claim({"c-a1", "c-a2", "c-a3"}) is None  # released: free for anyone
    d = store(redis, "c-a4")
    assert await d.claim({"c-a3", "c-a4"}, force=True) is None  # a forced claim takes it from a live holder
    assert await b.known(["e1"]) == set()


async def test_the_log_dedup_and_snapshot_carry_a_bucket_to_the_next_member(redis: Any) -> None:
    a = store(redis, "c-a1")
    await a.claim(set())
    await a.commit_batch(
        [event("e1", 1), event("e2", 2)], [action("x1", "e2")], [], [], ticks=[TickRow(2500, ("alice",))]
    )
    await a.save_core({"version": 1, "ids": 4, "users": {"alice": {"n": 1}}}, 2600, 0)
    await a.commit_batch([event("e3", 3)], [], [], [("rule", "alice", "text", 7)])
    b = store(redis, "c-a2")
    await b.claim(set())
    assert await b.known(["e1", "e3", "e9"]) == {"e1", "e3"}
    snap = await b.load_core()
    assert snap is not None
    assert snap.state == {"version": 1, "ids": 4, "users": {"alice": {"n": 1}}}
    assert (snap.tick_ms, snap.marks) == (2600, {})
    after = await b.since(snap.replay_from)
    assert [(kind, item.id) for kind, item, _ in after] == [("event", "e3")]
    everything = await b.since(0)
    assert [k for k, _, _ in everything] == ["event", "event", "tick", "event"]
    assert [pos for _, _, pos in everything] == sorted(pos for _, _, pos in everything)
    assert everything[0][1] == event("e1", 1)
    assert everything[2][1] == TickRow(2500, ("alice",))
    assert await b.unpublished() == [("x1", "wb/v1/alice/glasses/g1/cmd/display.card", b"payload-x1")]
    await b.mark_published(["x1"], 9)
    assert await b.unpublished() == []


async def test_a_snapshot_writes_only_the_users_that_changed(redis: Any) -> None:
    a = store(redis, "c-a1")
    await a.claim(set())
    await a.save_core({"version": 1, "ids": 0, "users": {"alice": {"n": 1}, "bob": {"n": 1}}}, 1, 0)
    await redis.hset(a.k_core_users, "bob", '{"n":"untouched"}')
    await a.save_core({"version": 1, "ids": 1, "users": {"alice": {"n": 2}, "bob": {"n": 1}}}, 2, 0)
    snap = await a.load_core()
    assert snap is not None
    assert snap.state["users"] == {"alice": {"n": 2}, "bob": {"n": "untouched"}}


async def test_outbox_keeps_creation_order_and_tasks_round_trip(redis: Any) -> None:
    a = store(redis, "c-a1", cluster="o" + secrets.token_hex(2))
    await a.claim(set())
    ids = [f"x{i}" for i in range(12)]
    task = TaskRecord("t1", "alice", "order_food", "asking", {"dish": "noodles"}, 1, ("place",), ("dish",), None, 5, 6)
    await a.commit_batch([], [action(i, "e1") for i in ids], [task], [])
    assert [row[0] for row in await a.unpublished()] == ids
    assert await a.tasks() == [task]


async def test_resolver_intents_travel_with_the_bucket(redis: Any) -> None:
    a = store(redis, "c-a1")
    await a.claim(set())
    await a.commit_batch([event("e1", 1)], [], [], [], resolutions=[("e1", '{"skill": "time"}')])
    b = store(redis, "c-a2")
    await b.claim(set())
    assert await b.resolutions() == {"e1": '{"skill": "time"}'}


async def test_forget_erases_one_user_from_the_bucket_store(redis: Any) -> None:
    from agent.cluster import RedisBucketStore, bucket_of  # noqa: PLC0415
    from agent.privacy import forget_in_redis  # noqa: PLC0415

    buckets = 4
    alice, bob = (
        "alice",
        next(u for u in (f"bob-{i}" for i in range(100)) if bucket_of(u, buckets) == bucket_of("alice", 4)),
    )
    s = RedisBucketStore(redis, "fg", bucket_of(alice, buckets), "fg-a1")
    assert await s.claim({"fg-a1"}) is None
    rows = [event("a1", 1), event("b1", 2)._replace(user=bob, topic=f"wb/v1/{bob}/ring/r1/evt/sensor/hr")]
    bob_card = f"wb/v1/{bob}/glasses/g1/cmd/display.card"
    acts = [action("x1", "a1"), dataclasses.replace(action("x2", "b1"), user=bob, topic=bob_card)]
    tasks = [TaskRecord("t-a", alice, "order_food", "done", {}, 2, (), (), None, 1, 2),
             TaskRecord("t-b", bob, "order_food", "done", {}, 2, (), (), None, 1, 2)]  # fmt: skip
    alerts = [("hr_high", alice, "Your heart rate", 5), ("hr_high", bob, "Your heart rate", 6)]
    await s.commit_batch(rows, acts, tasks, alerts, [], [("a1", "{}"), ("b1", "{}")])
    await s.save_contexts([(alice, "{}", 1), (bob, "{}", 1)])
    await s.save_core({"version": 2, "users": {alice: {"user": alice}, bob: {"user": bob}}}, 0, 0)

    removed = await forget_in_redis(redis, "fg", buckets, alice)
    assert removed["log"] == 1
    assert removed["alerts"] == 1
    assert removed["actions"] == 1
    keys = [k for k in await redis.keys("wb:{fg-*") if not k.endswith(b"meta") and not k.endswith(b"seen")]
    for key in keys:
        kind = (await redis.type(key)).decode()
        dump = (
            await redis.xrange(key) if kind == "stream" else await redis.hgetall(key) if kind == "hash"
            else await redis.zrange(key, 0, -1)
        )  # fmt: skip
        assert b"alice" not in repr(dump).encode(), (key, dump)
    assert bob.encode() in repr(await redis.hgetall(s.k_ctx)).encode()
    assert len(await redis.xrange(s.k_log)) == 1


async def test_the_next_holder_learns_where_each_device_was(redis: Any) -> None:
    """The last ``seq`` handled per device, newest in the log first: where the next owner's order gate takes up."""
    a = store(redis, "c-a1")
    assert await a.claim({"c-a1"}) is None
    await a.commit_batch([event("e1", 1), event("e2", 2)], [], [], [])
    await a.commit_batch([event("e4", 4), event("e3", 3)], [], [], [])  # handled last: 3
    assert await a.last_seqs() == {("alice", "ring", "r1"): 3}
    assert await store(redis, "c-a2", bucket=4).last_seqs() == {}


async def test_a_task_cancelled_while_it_talks_to_redis_stops(redis: Any) -> None:
    """redis-py sends each command through ``asyncio.wait_for``, which on Python 3.11 swallows a cancellation that
    arrives as the send completes: a bucket stopped while it restored then ran on, unseen, for 10 s (until cancelled
    again) and held up its hand-over. The store raises such a cancellation; here 64 tasks read the store in a loop
    and are cancelled together, 20 times: every one of them must end cancelled (without the store's check, one task
    went on in each of the 20 rounds, in each of three runs)."""
    s = store(redis, "c-a1")
    assert await s.claim({"c-a1"}) is None
    went_on = 0
    for round_ in range(20):

        async def reader() -> None:
            for _ in range(200):  # bounded: a task whose cancellation was lost ends here, and is counted
                await s.holder()
                await s.resolutions()

        tasks = [asyncio.create_task(reader()) for _ in range(64)]
        await asyncio.sleep(0.001 * (round_ % 5))
        asked = [task.cancel() for task in tasks]  # false for a task already done
        results = await asyncio.gather(*tasks, return_exceptions=True)
        went_on += sum(a and not isinstance(r, asyncio.CancelledError) for a, r in zip(asked, results, strict=True))
    assert went_on == 0


async def test_abandon_gives_up_only_what_this_member_holds_whatever_the_epoch(redis: Any) -> None:
    a, b = store(redis, "c-a1"), store(redis, "c-a2")
    assert await a.claim({"c-a1"}) is None
    a.epoch = 0  # the claim's answer was lost: the member does not know the epoch it took
    assert await b.abandon() is False  # not b's
    assert await b.holder() == ("c-a1", 1)
    assert await a.release() is False  # release needs the epoch
    assert await a.abandon() is True
    assert await b.holder() == ("", 1)
    assert await b.claim({"c-a1", "c-a2"}) is None  # free: taken at once
