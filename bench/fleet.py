"""A light device fleet: N users x 4 device connections publishing their real mix at real rates, one process.

Each device is one MQTT connection (client id ``{user}/{kind}/{device}``, a Will that sets it offline, a retained
birth), subscribes to its own ``cmd/#`` and answers every action with a ``done`` ack, as a device does. After its
births and one-shot events (glasses donned, ring on, an earbud in), each periodic stream of
:func:`bench.mix.default_streams` starts at a random phase and repeats at its period; one scheduler (a
heap) drives every connection, so ten thousand connections cost no task or timer each.

Run as ``python -m bench.fleet --port P --users N [...]``. It prints one JSON object per line: ``connected``
once every connection is up, ``progress`` every ``--progress`` seconds and ``done`` at the end (after
``--duration`` seconds or on SIGTERM). It is bounded in time and in connections, and talks to the given loopback
broker only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import math
import os
import random
import resource
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from bench import mix
from bench.loadgen import Will, WireClient
from schemas.errors import BusConnectionError
from schemas.topics import Kind

MAX_INFLIGHT = 500  # per connection; a device whose broker stops acknowledging stops sending (and counts it)


@dataclass(frozen=True, slots=True)
class Lane:
    """One periodic stream of one device, with what every send of it needs worked out once (the topic's bytes, its
    QoS, the counter's name; they were formatted, looked up and encoded on every send): the fleet sends ~14,000
    events a second at 2,500 users, on the same two cores as the broker and the agent it measures, so what it spends
    per event is taken from them."""

    stream: mix.Stream
    topic: bytes
    qos: int
    key: str  # the ``by_stream`` counter's name


@dataclass(slots=True)
class Device:
    """One emulated device."""

    user: str
    kind: Kind
    prefix: str
    lanes: list[Lane]
    id_tag: str  # its own id prefix, as every real device has (schemas.envelope.new_id)
    client: WireClient | None = None
    seq: int = 0
    commands: int = 0
    ids: int = 0

    def new_id(self) -> str:
        """An event id as a device makes it: its own random prefix, then its counter. Ids from one counter for the
        whole fleet would all append to one end of the agent's dedup index, which real devices never do."""
        self.ids += 1
        return f"{self.id_tag}-{self.ids:x}"


@dataclass(slots=True)
class FleetStats:
    """What the fleet counts."""

    connected: int = 0
    connect_failed: int = 0
    published: int = 0
    commands: int = 0
    acks_sent: int = 0
    skipped: int = 0
    late: int = 0
    lost_connections: int = 0
    by_stream: dict[str, int] = field(default_factory=dict)


class Fleet:
    """The fleet of one process.

    Args:
        host: broker host (loopback).
        port: broker port.
        users: how many users.
        first: index of the first user (fleets in several processes take disjoint ranges).
        prefix: user id prefix.
        head_pose_hz: the glasses' head-pose rate.
        seed: for phases and values.
        connect_rate: connections opened per second at most.
        username: login for every device (None: anonymous).
        password: its password.
    """

    def __init__(
        self,
        host: str,
        port: int,
        users: int,
        *,
        first: int = 0,
        prefix: str = "f",
        head_pose_hz: float = 5.0,
        seed: int = 1,
        connect_rate: float = 2000.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.rng = random.Random(seed)
        self.connect_rate = connect_rate
        self.username, self.password = username, password
        self.stats = FleetStats()
        streams = mix.default_streams(head_pose_hz)
        self.devices: list[Device] = []
        for u in range(first, first + users):
            user = mix.user_name(u, prefix)
            for kind in mix.DEVICE_IDS:
                lanes = [Lane(s, mix.topic_of(user, s).encode(), s.qos, f"{kind.value}/{s.name}")
                         for s in streams if s.kind is kind]  # fmt: skip
                tag = os.urandom(6).hex()  # unique across the fleet's processes, as new_id's per process
                self.devices.append(Device(user, kind, mix.device_prefix(user, kind), lanes, tag))
        self._heap: list[tuple[float, int, int, int]] = []
        self._tie = 0

    @staticmethod
    def _now_ms() -> int:
        return time.time_ns() // 1_000_000

    # ------------------------------------------------------------------ connecting

    async def connect_all(self, deadline: float) -> None:
        """Open every connection (at most ``connect_rate`` per second), then births and one-shot events."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.connect_rate
        next_at = loop.time()
        pending: set[asyncio.Task[None]] = set()
        for index in range(len(self.devices)):
            if loop.time() > deadline:
                break
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            task = asyncio.create_task(self._connect(index, loop.time()))
            pending.add(task)
            task.add_done_callback(pending.discard)
            if len(pending) >= 256:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending, timeout=max(1.0, deadline - loop.time()))

    async def _connect(self, index: int, now: float) -> None:
        dev = self.devices[index]
        gone = mix.state_payload(dev.new_id(), self._now_ms(), dev.kind, False)
        will = Will(f"{dev.prefix}/state", gone, retain=True)
        try:
            client = await WireClient.open(
                self.host, self.port, f"{dev.user}/{dev.kind.value}/{mix.DEVICE_IDS[dev.kind]}",
                keepalive=60, will=will, username=self.username, password=self.password,
                on_message=lambda c, t, p, q: self._on_command(dev, c, t, p),
            )  # fmt: skip
            dev.client = client
            client.closed.add_done_callback(lambda _: self._lost(dev))
            await client.subscribe([(f"{dev.prefix}/cmd/#", 1)])
        except (BusConnectionError, TimeoutError):
            self.stats.connect_failed += 1
            return
        self.stats.connected += 1
        t = self._now_ms()
        client.publish(f"{dev.prefix}/state", mix.state_payload(dev.new_id(), t, dev.kind, True), 1, retain=True)
        self.stats.published += 1
        for li, lane in enumerate(dev.lanes):
            if lane.stream.period_s == 0:
                self._send(dev, lane)
            else:
                self._push(now + self.rng.uniform(0, lane.stream.period_s), index, li)

    def _lost(self, dev: Device) -> None:
        if dev.client is not None:
            self.stats.lost_connections += 1
            dev.client = None

    # ------------------------------------------------------------------ traffic

    def _push(self, due: float, index: int, lane_index: int) -> None:
        self._tie += 1
        heapq.heappush(self._heap, (due, self._tie, index, lane_index))

    def _send(self, dev: Device, lane: Lane) -> None:
        client = dev.client
        if client is None or not client.connected:
            self.stats.skipped += 1
            return
        if lane.qos and len(client.inflight) >= MAX_INFLIGHT:
            self.stats.skipped += 1
            return
        dev.seq += 1
        t = self._now_ms()
        payload = mix.pack(dev.new_id(), t, dev.seq, lane.stream.build(self.rng, t))
        client.publish(lane.topic, payload, lane.qos)
        self.stats.published += 1
        by_stream = self.stats.by_stream
        by_stream[lane.key] = by_stream.get(lane.key, 0) + 1

    def _on_command(self, dev: Device, client: WireClient, topic: str, payload: bytes) -> None:
        if "/cmd/" not in topic:
            return
        self.stats.commands += 1
        dev.commands += 1
        try:
            env = msgpack.unpackb(payload)
            action_id = str(env["id"])
        except (ValueError, KeyError, TypeError, msgpack.ExtraData):
            return
        ack = mix.ack_payload(dev.new_id(), self._now_ms(), action_id, topic.rsplit("/", 1)[-1])
        with contextlib.suppress(BusConnectionError):
            client.publish(f"{dev.prefix}/ack", ack, 1)
            self.stats.acks_sent += 1

    async def run(self, until: float, progress_s: float, stop: asyncio.Event) -> None:
        """Publish on schedule until the loop time ``until`` or ``stop``; report progress every ``progress_s``."""
        loop = asyncio.get_running_loop()
        heap = self._heap
        next_report = loop.time() + progress_s
        next_ping = loop.time() + 15.0
        while not stop.is_set():
            now = loop.time()
            if now >= until:
                break
            n = 0
            while heap and heap[0][0] <= now and n < 20_000:
                due, _, index, li = heap[0]
                dev = self.devices[index]
                lane = dev.lanes[li]
                self._send(dev, lane)
                n += 1
                period = lane.stream.period_s
                nxt = due + period
                if nxt <= now:
                    nxt = next_due(due, now, period)
                    self.stats.late += nxt > due + period
                self._tie += 1
                heapq.heapreplace(heap, (nxt, self._tie, index, li))  # pop this lane and push its next send at once
            if now >= next_report:
                next_report += progress_s
                self.report("progress")
            if now >= next_ping:
                next_ping += 15.0
                self._keepalive(now)
            wake = min(heap[0][0] if heap else until, next_report, until)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(wake - loop.time(), 0.05))):
                    await stop.wait()

    def _keepalive(self, now: float) -> None:
        for dev in self.devices:
            client = dev.client
            if client is not None and client.connected and now - client.last_write > 25.0:
                with contextlib.suppress(BusConnectionError):
                    client.ping()

    def close(self) -> None:
        """Disconnect every device cleanly."""
        for dev in self.devices:
            if dev.client is not None:
                client, dev.client = dev.client, None
                client.disconnect()

    def totals(self) -> dict[str, Any]:
        """The counters as plain data (acked QoS 1 publishes included)."""
        s = self.stats
        acked = sum(d.client.acked for d in self.devices if d.client is not None)
        return {"connected": s.connected, "connect_failed": s.connect_failed, "published": s.published,
                "acked": acked, "commands": s.commands, "acks_sent": s.acks_sent, "skipped": s.skipped,
                "late": s.late, "lost_connections": s.lost_connections,
                "connections": len(self.devices)}  # fmt: skip

    def report(self, event: str, **extra: Any) -> None:
        """One JSON line on stdout."""
        line = {"event": event, "t": time.monotonic(), **self.totals(), **extra}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def next_due(due: float, now: float, period_s: float) -> float:
    """When a periodic stream sends next, after the send that was due at ``due`` happened at ``now``.

    Behind schedule (after connecting thousands, or a stall) it skips what was missed but keeps its phase.
    Restarting every late stream at ``now + period`` would line them all up, and the fleet would send in bursts
    that no set of independent devices sends (and the agent's latency would be measured behind them).
    """
    nxt = due + period_s
    if nxt <= now:
        nxt = due + (math.floor((now - due) / period_s) + 1) * period_s
        if nxt <= now:  # rounding, when ``now`` falls on the phase
            nxt += period_s
    return nxt


def raise_nofile(wanted: int) -> int:
    """Raise the soft open-files limit towards ``wanted`` (capped by the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


async def amain(args: argparse.Namespace) -> None:
    """Connect, run for ``--duration`` seconds (or until SIGTERM), disconnect."""
    raise_nofile(args.users * 4 + 256)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    fleet = Fleet(args.host, args.port, args.users, first=args.first, prefix=args.prefix,
                  head_pose_hz=args.head_pose_hz, seed=args.seed, connect_rate=args.connect_rate,
                  username=args.username, password=args.password)  # fmt: skip
    started = loop.time()
    until = started + args.duration
    await fleet.connect_all(deadline=until)
    fleet.report("connected", connect_s=loop.time() - started)
    try:
        await fleet.run(until, args.progress, stop)
    finally:
        fleet.report("done")
        fleet.close()
        await asyncio.sleep(0.2)  # let the DISCONNECTs leave


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.fleet``."""
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--prefix", default="f")
    p.add_argument("--head-pose-hz", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--connect-rate", type=float, default=2000.0)
    p.add_argument("--duration", type=float, default=60.0, help="seconds, then exit (bounded by design)")
    p.add_argument("--progress", type=float, default=1.0)
    p.add_argument("--username")
    p.add_argument("--password")
    args = p.parse_args(argv)
    if not 0 < args.users <= 5000:
        p.error("--users must be between 1 and 5000 per process")
    if not 0 < args.duration <= 3600:
        p.error("--duration must be between 0 and 3600 s")
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
