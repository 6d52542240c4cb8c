"""One failover scenario, shared by the NATS-cluster and the Mosquitto cluster tests.

Members start two then one (a join), devices stream QoS 1 events (utterances that each cause a display card, and
heart-rate samples that cause nothing), the busiest member is killed with SIGKILL mid-stream and, optionally,
a broker node too; then everything is counted from what is durable (the buckets' logs and actions in Redis, the
broker's PUBACKs, a monitor's deliveries).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from tests.cluster.harness import Member

UTTER_EVERY_S = 1.0  # earphones: "what time is it" -> one display card on the glasses
HR_EVERY_S = 0.5  # ring: heart rate, QoS 1, no action


@dataclass
class Traffic:
    """What the devices sent, what the broker acknowledged and which actions the monitor received."""

    sent: dict[str, tuple[str, int]] = field(default_factory=dict)  # event id -> (device key, seq)
    acked: set[str] = field(default_factory=set)
    retries: int = 0
    received_actions: Counter[str] = field(default_factory=Counter)


@dataclass
class Plan:
    """What to run.

    Attributes:
        urls: broker node URLs.
        redis_url: the shared store.
        buckets: bucket count.
        users: number of users (each with glasses, earphones and a ring).
        stream_s: how long devices publish.
        kill_agent_at: fraction of the stream at which the busiest member is killed.
        kill_node: called at ``kill_node_at`` to kill a broker node; returns a line for the report.
        kill_node_at: fraction of the stream.
        member_args: extra ``wearbus agent`` options for every member.
        user_list: pass ``--users`` (per-user filters need it).
        escaped_commands: commands arrive as ``cmd/display_card`` (nats-server < 2.10).
        logs: directory for the members' logs.
    """

    urls: list[str]
    redis_url: str
    buckets: int
    users: int
    stream_s: float
    kill_agent_at: float
    logs: Path
    kill_node: Callable[[], Awaitable[str]] | None = None
    kill_node_at: float = 0.55
    member_args: tuple[str, ...] = ()
    user_list: bool = False
    escaped_commands: bool = False


@dataclass
class Counts:
    """The outcome."""

    report: list[str]
    lost: int
    processed_twice: int
    out_of_order: int
    repeated: int
    unpublished: int
    undelivered: int
    members_processing: int
    settled: bool


def rotate(urls: list[str], i: int) -> list[str]:
    """The node list starting at node ``i % len(urls)`` (spreads connections over the nodes)."""
    k = i % len(urls)
    return urls[k:] + urls[:k]


async def member_view(redis: Any, cluster: str, members: list[Member]) -> dict[str, set[int]]:
    """Buckets each member reports as running."""
    out: dict[str, set[int]] = {}
    for m in members:
        raw = await redis.hget(f"wb:{cluster}:member:{m.name}", "running")
        out[m.instance] = {int(b) for b in raw.decode().split(",") if b} if raw else set()
    return out


async def wait_stable(
    redis: Any, cluster: str, members: list[Member], want: dict[int, str], within: float
) -> dict[str, set[int]]:
    """Wait until every bucket in ``want`` runs on its owner and nowhere else."""
    deadline = time.monotonic() + within
    while True:
        view = await member_view(redis, cluster, members)
        running = {b: inst for inst, bs in view.items() for b in bs}
        if running == want and sum(len(v) for v in view.values()) == len(want):
            return view
        if time.monotonic() > deadline:
            why = await diagnose(redis, cluster, members)
            raise AssertionError(f"buckets not settled after {within:g} s: {view}\n{why}")
        await asyncio.sleep(0.25)


async def diagnose(redis: Any, cluster: str, members: list[Member], lines: int = 12) -> str:
    """What each member reports in Redis, whether its process lives, and the last warnings of its log."""
    out = []
    for m in members:
        fields = await redis.hgetall(f"wb:{cluster}:member:{m.name}")
        shown = {k.decode(): v.decode() for k, v in fields.items() if k != b"running"}
        state = "not started" if m.process is None else m.process.returncode
        out.append(f"--- {m.name} (pid {m.process.pid if m.process else '-'}, exit {state}): {shown}")
        try:
            text = m.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            out.append(f"    (no log: {exc})")
            continue
        noisy = ('"info"', '"debug"', '"pump_turn_slow"')
        out += ["    " + line[:400] for line in [x for x in text if not any(n in x for n in noisy)][-lines:]]
        out += ["    (last info) " + line[:400] for line in text[-3:]]
    return "\n".join(out)


async def device_loop(bus: Any, user: str, kind: str, device: str, stop_at: float, traffic: Traffic) -> None:
    """Publish QoS 1 events in order, each until the broker acknowledges it (same id on a retry)."""
    from broker.client import Outgoing  # noqa: PLC0415
    from schemas import codec  # noqa: PLC0415
    from schemas.envelope import make, now_ms  # noqa: PLC0415
    from schemas.errors import BusConnectionError, PublishError  # noqa: PLC0415
    from schemas.events import HeartRate, Utterance  # noqa: PLC0415

    if kind == "earphones":
        topic, every = f"wb/v1/{user}/earphones/{device}/evt/voice/utterance", UTTER_EVERY_S
    else:
        topic, every = f"wb/v1/{user}/ring/{device}/evt/sensor/hr", HR_EVERY_S
    key = f"{user}/{kind}/{device}"
    seq = 0
    while time.monotonic() < stop_at:
        seq += 1
        body: Any = Utterance(text="what time is it") if kind == "earphones" else HeartRate(bpm=60 + seq % 30)
        envelope = make(body, ts=now_ms(), seq=seq)
        payload = codec.encode(envelope)
        traffic.sent[envelope.id] = (key, seq)
        while True:
            try:
                await bus.wait_connected(120)
                await asyncio.wait_for(bus.publish_raw(Outgoing(topic, payload, 1), wait=True), 20)
                break
            except (BusConnectionError, PublishError, TimeoutError):
                traffic.retries += 1
                await asyncio.sleep(0.1)
        traffic.acked.add(envelope.id)
        await asyncio.sleep(every)  # pacing


async def run(plan: Plan) -> Counts:
    """Run the scenario and count."""
    import redis.asyncio as aioredis  # noqa: PLC0415

    from agent.cluster import PartitionBus, assignment, bucket_prefix, read_log  # noqa: PLC0415
    from broker.client import BusOptions, Rejected  # noqa: PLC0415
    from schemas import codec  # noqa: PLC0415
    from schemas.actions import DeviceState  # noqa: PLC0415
    from schemas.envelope import make  # noqa: PLC0415
    from schemas.errors import ContractError  # noqa: PLC0415
    from schemas.topics import Kind  # noqa: PLC0415

    cluster = "t" + secrets.token_hex(3)
    urls, buckets = plan.urls, plan.buckets
    users = [f"user-{i:02d}" for i in range(plan.users)]
    extra = list(plan.member_args)
    if plan.user_list:
        extra += ["--users", ",".join(users)]
    members = [
        Member(cluster, f"a{i + 1}", rotate(urls, i), plan.redis_url, buckets, plan.logs / f"a{i + 1}.log", *extra)
        for i in range(3)
    ]
    redis = aioredis.Redis.from_url(plan.redis_url)
    traffic = Traffic()
    buses: list[Any] = []
    report: list[str] = []
    if plan.escaped_commands:
        report.append("nats-server < 2.10: commands sent with '.' escaped as '_' (agent.cluster.PartitionBus)")
    served = {b for b in range(buckets) if not plan.user_list or any(bucket_for(u, buckets) == b for u in users)}

    def owners(ms: list[Member]) -> dict[int, str]:
        return {b: o for b, o in assignment(buckets, [m.instance for m in ms]).items() if b in served}

    try:
        # -- two members, then a third joins: only the buckets the newcomer wins may move
        for m in members[:2]:
            await m.start()
        await wait_stable(redis, cluster, members[:2], owners(members[:2]), 90)
        epoch_key = [bucket_prefix(cluster, b) + "meta" for b in range(buckets)]
        before = [await redis.hget(k, "epoch") for k in epoch_key]
        await members[2].start()
        final = owners(members)
        await wait_stable(redis, cluster, members, final, 90)
        after = [await redis.hget(k, "epoch") for k in epoch_key]
        moved = {b for b in range(buckets) if after[b] != before[b]}
        newcomer = {b for b, inst in final.items() if inst == members[2].instance}
        report.append(f"join: {len(moved)} of {len(served)} served buckets moved, the newcomer owns {len(newcomer)}")

        # -- devices and a monitor that records every action delivered
        def options(client_id: str, persistent: bool) -> BusOptions:
            return BusOptions(url=urls[0], client_id=client_id, persistent=persistent, protocol="3.1.1",
                              connect_timeout_s=0, name=client_id, backoff_max_s=1.0)  # fmt: skip

        def escaped_command(rejected: Rejected) -> None:
            # cmd/display_card (escaped for nats-server < 2.10) is no known action: read it as cmd/display.card.
            head, _, action = rejected.topic.rpartition("/cmd/")
            for name in {action.replace("_", "."), action.replace("_", ".", 1)}:
                with contextlib.suppress(ContractError):
                    m = codec.decode(f"{head}/cmd/{name}", rejected.payload)
                    traffic.received_actions[m.envelope.id] += 1
                    return

        monitor_options = options(f"{cluster}-monitor", True)
        monitor_options.on_reject.append(escaped_command)
        monitor = PartitionBus(monitor_options, urls=urls)
        await monitor.__aenter__()
        buses.append(monitor)
        await monitor.subscribe("wb/v1/+/+/+/cmd/#", 1)

        async def watch() -> None:
            async for m in monitor.messages():
                traffic.received_actions[m.envelope.id] += 1

        watcher = asyncio.create_task(watch())
        user_bus: dict[str, Any] = {}
        for i, user in enumerate(users):
            bus = PartitionBus(options(f"{cluster}-dev-{user}", False), urls=rotate(urls, i))
            await bus.__aenter__()
            buses.append(bus)
            user_bus[user] = bus
        for user, bus in user_bus.items():
            await bus.wait_connected(30)
            for kind, device in (("glasses", "g1"), ("earphones", "e1"), ("ring", "r1")):
                birth = make(DeviceState(online=True, kind=Kind(kind)))
                await bus.publish(f"wb/v1/{user}/{kind}/{device}/state", birth, retain=True, wait=True)

        # -- the stream, with the kills in the middle of it
        start = time.monotonic()
        stop_at = start + plan.stream_s
        loops = [
            asyncio.create_task(device_loop(user_bus[u], u, kind, dev, stop_at, traffic))
            for u in users
            for kind, dev in (("earphones", "e1"), ("ring", "r1"))
        ]
        await asyncio.sleep(plan.stream_s * plan.kill_agent_at)
        view = await member_view(redis, cluster, members)
        victim = max(members, key=lambda m: len(view[m.instance]))
        victim_buckets = view[victim.instance]
        await victim.kill9()
        report.append(f"kill -9 agent {victim.name} (pid {victim.pid}) owning {len(victim_buckets)} buckets "
                      f"at t={time.monotonic() - start:.1f} s")  # fmt: skip
        survivors = [m for m in members if m is not victim]
        moved_to = Counter(owners(survivors)[b] for b in victim_buckets)
        report.append(f"the victim's buckets go to {dict(sorted(moved_to.items()))}")
        if plan.kill_node is not None:
            await asyncio.sleep(max(0.0, start + plan.stream_s * plan.kill_node_at - time.monotonic()))
            report.append(f"{await plan.kill_node()} at t={time.monotonic() - start:.1f} s")
        await asyncio.wait_for(asyncio.gather(*loops), plan.stream_s + 180)
        stream_end = time.monotonic()

        # -- drain: wait until every acknowledged event is processed and every action delivered
        deadline = time.monotonic() + 120
        while True:
            logs = {b: await read_log(redis, cluster, b) for b in range(buckets)}
            processed = {e["id"] for log in logs.values() for e in log if e.get("k") == "e"}
            outbox = sum([await redis.zcard(bucket_prefix(cluster, b) + "outbox") for b in range(buckets)])
            stored: dict[str, list[Any]] = {}
            for b in range(buckets):
                for aid, raw in (await redis.hgetall(bucket_prefix(cluster, b) + "actions")).items():
                    stored[aid.decode() if isinstance(aid, bytes) else aid] = msgpack.unpackb(raw)
            if traffic.acked <= processed and outbox == 0 and set(stored) <= set(traffic.received_actions):
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        drained_s = time.monotonic() - stream_end
        try:
            await wait_stable(redis, cluster, survivors, owners(survivors), 180)  # a condition: a ceiling only
            settled = True
        except AssertionError:
            settled = False
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    finally:
        for bus in buses:
            with contextlib.suppress(Exception):
                await bus.__aexit__(None, None, None)
        for m in members:
            with contextlib.suppress(Exception):
                await m.stop()
        await redis.aclose()
    return tally(traffic, logs, stored, outbox, report, moved != newcomer, drained_s, settled)


def bucket_for(user: str, buckets: int) -> int:
    """:func:`agent.cluster.bucket_of` (imported late: agent.cluster needs redis)."""
    from agent.cluster import bucket_of  # noqa: PLC0415

    return bucket_of(user, buckets)


def tally(
    traffic: Traffic,
    logs: dict[int, list[dict[str, str]]],
    stored: dict[str, list[Any]],
    outbox: int,
    report: list[str],
    join_moved_too_much: bool,
    drained_s: float,
    settled: bool,
) -> Counts:
    """Count from the logs, the stored actions and the monitor."""
    ours = traffic.sent
    by_member: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    out_of_order = 0
    examples: list[str] = []
    lag_ms: list[int] = []
    for log in logs.values():
        last: dict[str, int] = {}
        last_entry: dict[str, dict[str, str]] = {}
        for e in log:
            if e.get("k") != "e" or e["id"] not in ours:
                continue
            seen[e["id"]] += 1
            by_member[e["by"]] += 1
            key, seq = ours[e["id"]]
            if seq <= last.get(key, 0):
                out_of_order += 1  # late or not: each device's events are handled in seq order (agent/ordering.py)
                if len(examples) < 5:
                    prev = last_entry[key]
                    examples.append(f"{key} seq {seq} by {e['by']} received at {e['received_wall_ms']} (published "
                                    f"{e['ts']}) after seq {prev['dev_seq']} by {prev['by']} received at "
                                    f"{prev['received_wall_ms']} (published {prev['ts']})")  # fmt: skip
            if seq > last.get(key, 0):
                last_entry[key] = e
            last[key] = max(seq, last.get(key, 0))
            lag_ms.append(int(e["received_wall_ms"]) - int(e["ts"]))
    lost = traffic.acked - set(seen)
    for eid in sorted(lost, key=lambda i: ours[i])[:5]:
        key, seq = ours[eid]
        examples.append(f"LOST {key} seq {seq} (bucket {bucket_for(key.split('/')[0], len(logs))}, id {eid})")
    processed_twice = sum(n - 1 for n in seen.values() if n > 1)
    causes: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for aid, row in stored.items():
        topic, action_type, corr = row[0], row[5], row[6]
        if corr in ours:
            causes[(corr, action_type, topic)].add(aid)
    repeated = sum(len(ids) - 1 for ids in causes.values() if len(ids) > 1)
    undelivered = set(stored) - set(traffic.received_actions)
    twice = sum(n - 1 for n in traffic.received_actions.values() if n > 1)
    lag_ms.sort()
    p50 = lag_ms[len(lag_ms) // 2] if lag_ms else 0
    p99 = lag_ms[int(len(lag_ms) * 0.99)] if lag_ms else 0
    report += [
        f"events sent {len(ours)}, acknowledged by the broker {len(traffic.acked)} (publish retries {traffic.retries})",
        f"processed {sum(seen.values())}, by member: {dict(sorted(by_member.items()))}",
        f"lost {len(lost)}, processed twice {processed_twice}, out of order per device {out_of_order}",
        f"actions stored {len(stored)}, repeated {repeated}, left unpublished {outbox}, "
        f"not delivered {len(undelivered)}, delivered twice (same id; devices ignore it) {twice}",
        f"event lag (device publish -> agent receive): p50 {p50} ms, p99 {p99} ms, max {lag_ms[-1] if lag_ms else 0}"
        " ms",
        f"drained {drained_s:.1f} s after the stream ended; buckets settled on the survivors: {settled}",
    ]
    report += [f"detail: {x}" for x in examples]
    if join_moved_too_much:
        report.append("JOIN MOVED BUCKETS THE NEWCOMER DID NOT WIN")
    return Counts(report, len(lost), processed_twice, out_of_order, repeated, outbox,
                  len(undelivered), len(by_member), settled and not join_moved_too_much)  # fmt: skip
