"""In-process micro-benchmark of the agent's ingest path, without the MQTT receive path.

``python -m bench.pipeline`` builds messages exactly as the bus does (``codec.decode`` of the payloads of
``wearbus bench``'s device mix, :mod:`bench.mix`, with the QoS they are delivered with), then feeds them in
batches of 1, 50 and 500 through a real :class:`~agent.runtime.AgentRuntime` (a real SQLite file in a temporary
directory, a real :class:`~broker.client.Bus` connected to a private Mosquitto of the test kit, or the embedded
broker where the binary is missing). The pump task is stopped; the benchmark runs one pump step per batch itself:
mark published actions, ``process`` (dedup, admission, core, store, publish, ack) and the context republish.

It prints CPU and wall µs per event for each batch size, and the latency of a single utterance batch: from the
start of ``process`` to the call that publishes the card on the glasses.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent.runtime import AgentRuntime, AgentSettings
from bench import mix
from broker.client import Outgoing
from broker.logs import configure_logging
from schemas import codec
from schemas.envelope import Message, now_ms
from schemas.topics import Kind

Wire = tuple[str, bytes, int]  # topic, payload, delivered QoS
WARM_UP = 2000
MAX_SPAN_MS = 500_000  # the run's publish times stay within AdmissionConfig.backlog_s (600 s) of now


@asynccontextmanager
async def broker_url() -> AsyncIterator[str]:
    """A private broker for the run: the test kit's Mosquitto, else the embedded broker (both stopped after)."""
    from testkit.mosquitto import MosquittoProcess, mosquitto_available  # noqa: PLC0415

    if mosquitto_available():
        async with MosquittoProcess(extra_lines=("persistence false", "max_queued_messages 0")) as broker:
            yield broker.url
        return
    from broker.embedded import EmbeddedBroker, free_port  # noqa: PLC0415

    async with EmbeddedBroker(port=free_port()) as embedded:  # never the default 1883 (a system broker may be there)
        yield embedded.url


class Traffic:
    """The device mix of ``users`` users as wire payloads, with publish times at the users' real rates."""

    def __init__(self, users: int, planned: int, seed: int = 7) -> None:
        self.users = users
        self.rng = random.Random(seed)
        self.streams = [s for s in mix.default_streams() if s.period_s > 0]
        self.weights = [s.rate() for s in self.streams]
        self.step_ms = 1000.0 / (users * mix.user_rate(mix.default_streams()))
        # one timeline for the whole run, ending now: the agent charges each device's events at their publish
        # times (within its backlog allowance), so they must never go back in time from one section to the next
        self.t = now_ms() - planned * self.step_ms
        if planned * self.step_ms > MAX_SPAN_MS:
            raise SystemExit(f"{planned} events of {users} users span more than the agent's backlog allowance: "
                             "fewer --events or more --users")  # fmt: skip
        self.n = 0
        self.seqs: dict[tuple[int, Kind], int] = {}
        self.run = uuid.uuid4().hex[:8]

    def births(self, now: int) -> list[Wire]:
        """Every user's births and one-shot events (what devices say when they connect)."""
        out = []
        for topic, payload in mix.backlog(self.users, 0, self.rng, now, prefix="u", id_prefix=f"pb{self.run}-birth"):
            out.append((topic, payload, 1))
        return out

    def events(self, count: int) -> list[Wire]:
        """The next ``count`` events of the steady-state mix, interleaved across users."""
        out: list[Wire] = []
        for _ in range(count):
            u = self.n % self.users
            stream = self.rng.choices(self.streams, self.weights)[0]
            key = (u, stream.kind)
            self.seqs[key] = seq = self.seqs.get(key, 0) + 1
            self.n += 1
            self.t += self.step_ms
            ts = int(self.t)
            body = stream.build(self.rng, ts)
            payload = mix.pack(f"pb{self.run}-{self.n}", ts, seq, body)
            out.append((mix.topic_of(mix.user_name(u), stream), payload, min(stream.qos, 1)))
        return out

    def utterance(self, user: int, ts: int) -> Wire:
        """A question answered with a card on the glasses."""
        self.n += 1
        stream = next(s for s in self.streams if s.name == "utterance")
        body = mix.utterance(self.rng.choice(mix.QUESTIONS))
        return mix.topic_of(mix.user_name(user), stream), mix.pack(f"pb{self.run}-u{self.n}", ts, 0, body), 1


def decoded(wire: list[Wire], link: int) -> list[Message]:
    """Messages exactly as the bus hands them to the agent."""
    return [
        codec.decode(topic, payload, qos=qos, mid=1 + i % 65_535, link=link)
        for i, (topic, payload, qos) in enumerate(wire)
    ]


async def step(agent: AgentRuntime, batch: list[Message]) -> None:
    """One pump step without the bus: mark published actions, process the batch, republish changed contexts."""
    await agent.mark_acked()
    await agent.process(batch)
    await agent.publish_contexts()


async def per_event(agent: AgentRuntime, messages: list[Message], size: int) -> tuple[float, float]:
    """CPU and wall µs per event for ``messages`` processed in batches of ``size``."""
    batches = [messages[i : i + size] for i in range(0, len(messages), size)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for batch in batches:
        await step(agent, batch)
        await asyncio.sleep(0)  # PUBACKs of the published actions, as the pump's next wait would allow
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / len(messages) * 1e6, wall / len(messages) * 1e6


async def utterance_latency(agent: AgentRuntime, traffic: Traffic, rounds: int) -> list[float]:
    """Milliseconds from the start of ``process`` of a one-utterance batch to the card's publish call."""
    bus = agent.bus
    original = bus.publish_future
    published: list[float] = []

    def spy(out: Outgoing, *, fmt: codec.Format | None = None) -> asyncio.Future[None]:
        if out.topic.endswith("/cmd/display.card"):
            published.append(time.perf_counter())
        return original(out, fmt=fmt)

    setattr(bus, "publish_future", spy)  # noqa: B010 (an instance attribute shadows the method)
    out: list[float] = []
    try:
        for r in range(rounds):
            [message] = decoded([traffic.utterance(r % traffic.users, now_ms())], bus.link)
            published.clear()
            start = time.perf_counter()
            await agent.process([message])
            if published:
                out.append((published[0] - start) * 1000)
            await agent.mark_acked()
            await asyncio.sleep(0.002)  # an idle pump between two utterances
    finally:
        delattr(bus, "publish_future")
    return out


async def bench(users: int, events: int, rounds: int, keep: Path | None, sizes: tuple[int, ...]) -> None:
    """Run every section and print the table."""
    with tempfile.TemporaryDirectory(prefix="wb-pipeline-") as tmp:
        where = keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        with (where / "agent.log").open("w") as log:
            configure_logging("info", json=True, stream=log)
            async with broker_url() as url:
                instance = f"pbench-{uuid.uuid4().hex[:8]}"
                settings = AgentSettings(url=url, db=where / "agent.db", instance=instance, heartbeat_misses=0)
                async with AgentRuntime(settings, pump=False) as agent:  # the benchmark drives the processing
                    await agent.wait_connected(15)
                    await run_sections(agent, users, events, rounds, sizes)


async def run_sections(agent: AgentRuntime, users: int, events: int, rounds: int, sizes: tuple[int, ...]) -> None:
    """Warm up, then time each batch size and the utterance latency."""
    counts = {size: events if size > 1 else max(1, events // 5) for size in sizes}
    traffic = Traffic(users, planned=WARM_UP + sum(counts.values()))
    link = agent.bus.link
    await step(agent, decoded(traffic.births(int(traffic.t)), link))
    await per_event(agent, decoded(traffic.events(WARM_UP), link), 500)
    rows: list[tuple[str, float, float]] = []
    for size, count in counts.items():
        messages = decoded(traffic.events(count), link)
        cpu, wall = await per_event(agent, messages, size)
        rows.append((f"batch {size:>3} ({count} events)", cpu, wall))
    lat = await utterance_latency(agent, traffic, rounds)
    stored = await agent.store.count_events()
    show(f"agent ingest path (no MQTT receive), {users} users, {stored} events stored, {agent.stats.actions} actions")
    show(f"{'':32} {'CPU µs/event':>13} {'wall µs/event':>14}")
    for name, cpu, wall in rows:
        show(f"{name:32} {cpu:13.1f} {wall:14.1f}")
    if lat:
        q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
        show(f"utterance -> card publish call: p50 {statistics.median(lat):.3f} ms, p99 {q[98]:.3f} ms "
             f"({len(lat)} rounds)")  # fmt: skip
    else:
        show("utterance -> card publish call: no card was published")
    refused = agent.stats.refused
    if refused:
        show(f"warning: {refused} messages refused by admission")


def show(line: str) -> None:
    """One line of the report."""
    print(line)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.pipeline [--users N] [--events N] [--rounds N] [--sizes 1,50,500] [--keep DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100, help="simulated users (four devices each)")
    parser.add_argument("--events", type=int, default=10_000, help="events per batch size (a fifth for size 1)")
    parser.add_argument("--rounds", type=int, default=300, help="single-utterance batches for the latency")
    parser.add_argument("--sizes", default="1,50,500", help="batch sizes, comma-separated")
    parser.add_argument("--keep", type=Path, default=None, help="keep the database and the log in this directory")
    args: Any = parser.parse_args(argv)
    sizes = tuple(int(x) for x in args.sizes.split(",") if x.strip())
    asyncio.run(bench(args.users, args.events, args.rounds, args.keep, sizes))


if __name__ == "__main__":
    main()
