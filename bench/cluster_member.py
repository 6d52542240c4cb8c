"""Throughput of one agent cluster member against a single SQLite agent (figures for deploy/cluster/README.md).

Publishes a backlog of QoS 1 heart-rate events (``--users`` rings, ``--per-device`` each, within the agent's
admission burst) to a broker, then starts the agent and times how long it takes to process them all, with the
agent process's CPU time. Run it once with ``--mode single`` (``wearbus agent``, SQLite) and once with
``--mode member`` (``wearbus agent --cluster``, Redis, ``--partitions filters``). The broker and Redis must be
running; the agent is started and stopped here.

    python -m bench.cluster_member --broker mqtt://127.0.0.1:1883 --redis redis://127.0.0.1:6379/15 \
        --mode member --users 200 --per-device 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis.asyncio as aioredis

from agent.store import Store
from broker.client import Bus, BusOptions, Outgoing
from schemas import codec
from schemas.envelope import make, now_ms
from schemas.events import HeartRate
from schemas.topics import DeviceId, Kind, dlq_topic, event_topic


async def backlog(broker: str, users: list[str], per_device: int) -> int:
    """Publish the events (the agent's persistent session queues them); how many."""
    n = 0
    async with Bus(BusOptions(url=broker, protocol="3.1.1", name="measure-pub", max_outgoing=60_000)) as bus:
        for seq in range(1, per_device + 1):
            for user in users:
                env = make(HeartRate(bpm=60 + seq % 30), ts=now_ms(), seq=seq)
                await bus.publish_raw(
                    Outgoing(event_topic(DeviceId(user, Kind.RING, "r1"), "sensor", "hr"), codec.encode(env), 1)
                )
                n += 1
        await bus.publish_raw(Outgoing(dlq_topic("measure-flush"), b"{}", 1), wait=True)
    return n


async def processed_member(redis_url: str, cluster: str) -> int:
    """Events processed so far by the member (its reported counter)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        raw = await client.hget(f"wb:{cluster}:member:m1", "processed")
        return int(raw or 0)
    finally:
        await client.aclose()


async def processed_single(db: Path) -> int:
    """Events in the single agent's SQLite store."""
    if not await asyncio.to_thread(db.exists):
        return 0
    async with Store(db) as store:
        return await store.count_events(channel="evt")


async def main() -> None:
    """Parse arguments, run, print one line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--mode", choices=["single", "member"], required=True)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--per-device", type=int, default=50)
    parser.add_argument("--buckets", type=int, default=64)
    args = parser.parse_args()
    users = [f"m{i}" for i in range(args.users)]
    tag = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="wearbus-measure-"))
    base = [sys.executable, "-m", "cli.main", "agent", "--broker", args.broker, "--log-level", "warning"]
    if args.mode == "single":
        db = work / "agent.db"
        cmd = [*base, "--db", str(db), "--instance", f"measure-{tag}"]
    else:
        cluster = "m" + tag
        cmd = [*base, "--cluster", cluster, "--member", "m1", "--state", args.redis, "--buckets",
               str(args.buckets), "--partitions", "filters", "--users", ",".join(users)]  # fmt: skip
    # Start once so the persistent sessions exist, stop, queue the backlog, then time the catch-up.
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(8)  # sessions subscribe (a fixed wait is fine in a measurement script)
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    total = await backlog(args.broker, users, args.per_device)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    start = time.monotonic()
    done = 0
    while done < total and time.monotonic() - start < 600:
        await asyncio.sleep(0.5)
        done = await (processed_single(db) if args.mode == "single" else processed_member(args.redis, cluster))
    elapsed = time.monotonic() - start
    cpu = ps.cpu_times()
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    print(
        f"{args.mode}: {done}/{total} events in {elapsed:.1f} s = {done / elapsed:.0f}/s, agent CPU "
        f"{cpu.user + cpu.system:.1f} s ({(cpu.user + cpu.system) / max(done, 1) * 1e6:.0f} us/event); "
        f"{args.users} devices, pid {os.getpid()}"
    )


if __name__ == "__main__":
    asyncio.run(main())
