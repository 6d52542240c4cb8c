"""Measure the two ways a bucket's state can follow it to a new owner (figures for deploy/cluster/README.md).

1. Shared store: the per-batch fenced Redis transaction of :class:`agent.cluster.RedisBucketStore` (events, dedup
   ids, actions, outbox) plus its snapshot (only the users that changed), and the takeover read (snapshot + log).
2. Handover through the broker: the bucket's whole state as one retained QoS 1 message per batch (a retained topic
   keeps only the last message, so each write carries every user of the bucket), and the takeover read (subscribe,
   receive the retained message).

Usage (servers must be running; nothing is started or stopped here)::

    python -m bench.cluster_state --redis redis://127.0.0.1:6379/15 --mqtt mqtt://127.0.0.1:1883 \
        --users-per-bucket 1 16 156 --n 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from typing import Any

import redis.asyncio as aioredis

from agent.cluster import RedisBucketStore
from agent.core.engine import AgentCore
from agent.core.testing import T0
from agent.store import ActionRow, EventRow
from broker.client import Bus, BusOptions, Outgoing
from schemas import codec
from schemas.actions import DeviceState
from schemas.envelope import make
from schemas.events import HeartRate, Utterance
from schemas.topics import DeviceId, Kind, agent_state_topic, command_topic, event_topic, state_topic


def user_state(n_users: int) -> dict[str, Any]:
    """A core state with ``n_users`` users that have seen some traffic (~6 KB of JSON each)."""
    core = AgentCore()
    t = T0
    for u in range(n_users):
        user = f"user-{u}"
        for kind, dev in (("glasses", "g1"), ("ring", "r1"), ("earphones", "e1")):
            env = make(DeviceState(online=True, kind=Kind(kind)), ts=t)
            topic = state_topic(DeviceId(user, Kind(kind), dev))
            core.handle(codec.decode(topic, codec.encode(env), qos=1), t)
        for i in range(20):
            t += 500
            hr = make(HeartRate(bpm=60 + i), ts=t)
            core.handle(
                codec.decode(event_topic(DeviceId(user, Kind.RING, "r1"), "sensor", "hr"), codec.encode(hr), qos=1), t
            )
        said = make(Utterance(text="what time is it"), ts=t)
        core.handle(
            codec.decode(
                event_topic(DeviceId(user, Kind.EARPHONES, "e1"), "voice", "utterance"), codec.encode(said), qos=1
            ),
            t,
        )
    return core.export_state()


def pct(values: list[float]) -> str:
    """p50 / p99 in ms."""
    values = sorted(values)
    return f"p50 {statistics.median(values) * 1000:.2f} ms, p99 {values[int(len(values) * 0.99)] * 1000:.2f} ms"


async def measure_redis(url: str, users: int, n: int) -> list[str]:
    """Fenced batch commits, snapshots and a takeover read on one bucket."""
    client = aioredis.Redis.from_url(url)
    cluster = "m" + secrets.token_hex(3)
    store = RedisBucketStore(client, cluster, 0, "m-a1")
    await store.claim(set())
    state = user_state(users)
    payload = b"x" * 120
    commit: list[float] = []
    snapshot: list[float] = []
    hr_topic = event_topic(DeviceId("user-0", Kind.RING, "r1"), "sensor", "hr")
    card_topic = command_topic(DeviceId("user-0", Kind.GLASSES, "g1"), "display.card")
    for i in range(n):
        event = EventRow(f"e{i}", hr_topic, "user-0", "ring", "r1", "evt", "ring.hr",
                         i, None, i, None, i, i, 1, False, payload)  # fmt: skip
        action = ActionRow(f"a{i}", card_topic, "user-0", "glasses", "g1",
                           "display.card", f"e{i}", "skill", i, i, payload)  # fmt: skip
        t = time.perf_counter()
        await store.known([event.id])
        await store.commit_batch([event], [action], [], [])
        await store.mark_published([action.id], i)
        commit.append(time.perf_counter() - t)
        if i % 10 == 0:
            # one user changed since the last snapshot (the user the events belong to)
            state["users"]["user-0"]["now"] = i
            t = time.perf_counter()
            await store.save_core(state, i, i)
            snapshot.append(time.perf_counter() - t)
    reader = RedisBucketStore(client, cluster, 0, "m-a2")
    t = time.perf_counter()
    await reader.claim(set())
    snap = await reader.load_core()
    assert snap is not None  # noqa: S101
    await reader.since(snap.replay_from)
    takeover = time.perf_counter() - t
    size = sum(len(json.dumps(u)) for u in state["users"].values())
    keys = await client.keys(f"wb:{{{cluster}-0}}:*")
    await client.delete(*keys)
    await client.aclose()
    return [
        f"redis {url} users/bucket {users} (state {size / 1024:.0f} KiB): batch commit (dedup check + fenced "
        f"MULTI + outbox) {pct(commit)}; snapshot of 1 changed user {pct(snapshot)}; takeover read "
        f"{takeover * 1000:.1f} ms",
    ]


async def measure_broker(url: str, users: int, n: int) -> list[str]:
    """The whole bucket state as one retained QoS 1 message per batch, and reading it back."""
    state = json.dumps(user_state(users)).encode()
    topic = agent_state_topic(f"m{secrets.token_hex(3)}")  # a dot-free topic every broker accepts
    writes: list[float] = []
    async with Bus(BusOptions(url=url, protocol="3.1.1", name="measure")) as bus:
        for _ in range(n):
            t = time.perf_counter()
            await bus.publish_raw(Outgoing(topic, state, 1, True), wait=True)
            writes.append(time.perf_counter() - t)
    arrived = asyncio.Event()
    # The payload is not an envelope: the bus hands it to on_reject, which is all we need (it arrived).
    read_options = BusOptions(url=url, protocol="3.1.1", name="measure-read", on_reject=[lambda _: arrived.set()])
    async with Bus(read_options) as reader:
        t = time.perf_counter()
        await reader.subscribe(topic, 1)
        async with asyncio.timeout(30):
            await arrived.wait()
        takeover = time.perf_counter() - t
        await reader.publish_raw(Outgoing(topic, b"", 1, True), wait=True)  # clear the retained message
    return [
        f"retained snapshot on {url} users/bucket {users} ({len(state) / 1024:.0f} KiB per write): "
        f"write {pct(writes)}; takeover read {takeover * 1000:.1f} ms",
    ]


async def main() -> None:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", nargs="*", default=[], help="Redis URLs (one per persistence setting)")
    parser.add_argument("--mqtt", nargs="*", default=[], help="broker URLs")
    parser.add_argument("--users-per-bucket", nargs="+", type=int, default=[1, 16, 156])
    parser.add_argument("--n", type=int, default=300, help="writes per measurement")
    args = parser.parse_args()
    for users in args.users_per_bucket:
        for url in args.redis:
            print("\n".join(await measure_redis(url, users, args.n)))
        for url in args.mqtt:
            print("\n".join(await measure_broker(url, users, max(20, args.n // 10))))


if __name__ == "__main__":
    asyncio.run(main())
