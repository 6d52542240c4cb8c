"""``python -m bench.memory``: the agent's memory per active user, measured in one process.

N users' devices (the benchmark's mix, ``bench/mix.py``) are fed through the real codec
(``codec.decode``), ``Admission.check`` and ``AgentCore.handle`` (every action answered with a ``done`` ack, as
the bench fleet does; ``tick`` after every step), interleaved across users in time order as the agent receives
them. Each periodic stream sends the last ``--per-stream`` events of a ``--span-min`` minute stretch at its real
period: the ring's 30-min batches over 2.5 h fill the heart-rate window, while the 5 Hz head pose and the
heartbeats only refresh a device's last-seen time, so a few of them are enough.

Every measurement runs in a child process of its own (a fresh heap, no tracemalloc overhead in the RSS runs):

- ``parse``, ``core``, ``full``, ``snapshot``: RSS growth (psutil) per user with decode only (what stays is the
  topic-parse cache), with the core, with admission as well, and with the runtime's periodic core snapshot too
  (``export_state`` then ``json.dumps``, as ``agent/store.py`` does every ``snapshot_s``, with the next step's
  traffic handled in between, as while the store is awaited); the differences attribute the growth;
- ``trace``: the full pipeline under tracemalloc: bytes still allocated per user, then what clearing the parse
  cache, dropping the admission and dropping the core free; the lines that retain the most; the transient peak
  of one core snapshot;
- ``timing``: the parse cost on a hit and on a miss, and its hit ratio and mean cost at real rates for each N.

Run: ``python -m bench.memory --users 250 2500 [--json FILE]``.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from agent.admission import Admission
from agent.core.engine import AgentCore
from bench import mix
from schemas import codec
from schemas.envelope import Message
from schemas.topics import Kind, ack_topic, parse

#: The end of the simulated stretch: a Thursday, 15:00 UTC (weekday daytime for the place learning).
END_MS = 1_795_100_400_000
STAGES = ("parse", "core", "full", "snapshot")
SNAPSHOTS = 10  # core snapshots taken over the last steps (stage ``snapshot``)
WARMUP_USERS = 20


@dataclass(frozen=True, slots=True)
class Step:
    """One event of every user: the stream, and its time relative to the end of the stretch."""

    offset_ms: int
    stream: mix.Stream


def schedule(streams: Sequence[mix.Stream], span_s: float, per_stream: int) -> list[Step]:
    """Each user's events in time order: one-shot streams first, then the last ``per_stream`` of each stream."""
    span_ms = int(span_s * 1000)
    steps = [Step(-span_ms, s) for s in streams if s.period_s <= 0]
    for s in streams:
        if s.period_s <= 0:
            continue
        period_ms = int(s.period_s * 1000)
        count = min(per_stream, max(1, span_ms // period_ms))
        steps += [Step(-k * period_ms, s) for k in range(count)]
    steps.sort(key=lambda st: st.offset_ms)
    return steps


@dataclass(slots=True)
class Pipeline:
    """What the agent keeps per user: the core and the admission (either may be left out)."""

    core: AgentCore | None
    admission: Admission | None
    messages: int = 0
    refused: int = 0

    def take(self, message: Message, now_ms: int) -> None:
        """Admit and handle one message; answer every action with a ``done`` ack (as the fleet does)."""
        self.messages += 1
        if self.admission is not None and self.admission.check(message, now_ms) is not None:
            self.refused += 1
            return
        if self.core is None:
            return
        for cmd in self.core.handle(message, now_ms).commands:
            action = str(getattr(cmd.body, "type", ""))
            payload = mix.ack_payload(f"a-{cmd.id}", now_ms + 50, cmd.id, action)
            self.take(codec.decode(ack_topic(cmd.device), payload, qos=1), now_ms + 50)


def events(users: range, prefix: str, steps: Sequence[Step], seed: int) -> Iterator[tuple[int, str, bytes, int]]:
    """``(time, topic, payload, qos)`` of every user's births, then of each step for every user in turn."""
    rng = random.Random(seed)
    start = END_MS + steps[0].offset_ms if steps else END_MS
    names = [mix.user_name(u, prefix) for u in users]
    n = 0
    for user in names:
        for kind in Kind:
            n += 1
            topic = f"{mix.device_prefix(user, kind)}/state"
            yield start, topic, mix.state_payload(f"{prefix}-{n}", start, kind, True), 1
    for seq, step in enumerate(steps, 1):
        t = END_MS + step.offset_ms
        for user in names:
            n += 1
            payload = mix.pack(f"{prefix}-{n}", t, seq, step.stream.build(rng, t))
            yield t, mix.topic_of(user, step.stream), payload, step.stream.qos


def snapshot_text(state: dict[str, Any]) -> str:
    """The core snapshot as the store writes it."""
    return json.dumps(state, ensure_ascii=False, separators=(",", ":"))


def feed(pipe: Pipeline, users: range, prefix: str, steps: Sequence[Step], seed: int, snapshots: int = 0) -> None:
    """Decode every message and pass it on; tick the core whenever the time moves on.

    With ``snapshots``, the core's state is exported before each of the last ``snapshots`` steps and encoded after
    that step's traffic (the runtime awaits the store between the two).
    """
    last, pending, step = None, None, 0
    core = pipe.core
    for t, topic, payload, qos in events(users, prefix, steps, seed):
        if last is not None and t != last and core is not None:
            core.tick(last + 100)
            step += 1
            if pending is not None:
                snapshot_text(pending)
                pending = None
            if snapshots and step >= len(steps) - snapshots:
                pending = core.export_state()
        last = t
        pipe.take(codec.decode(topic, payload, qos=qos), t)
    if last is not None and core is not None:
        core.tick(last + 100)
    if pending is not None:
        snapshot_text(pending)


def rss() -> int:
    """This process's resident set size, in bytes."""
    return int(psutil.Process().memory_info().rss)


def make_pipeline(stage: str) -> Pipeline:
    """The parts a stage keeps: ``parse`` none (only the parse cache), ``core`` the core, then both."""
    return Pipeline(AgentCore() if stage != "parse" else None, Admission() if stage not in ("parse", "core") else None)


def warm_up(steps: Sequence[Step]) -> None:
    """Run the whole pipeline once on other users: imports, validators, interned strings, compiled patterns."""
    feed(make_pipeline("full"), range(WARMUP_USERS), "w", steps, seed=1)
    parse.cache_clear()
    gc.collect()


def run_rss(stage: str, users: int, steps: Sequence[Step]) -> dict[str, Any]:
    """RSS growth of one stage, and the CPU per message."""
    warm_up(steps)
    before = rss()
    pipe = make_pipeline(stage)
    cpu0 = time.process_time()
    feed(pipe, range(users), "u", steps, seed=7, snapshots=SNAPSHOTS if stage == "snapshot" else 0)
    cpu = time.process_time() - cpu0
    gc.collect()
    grown = rss() - before
    return {
        "stage": stage,
        "users": users,
        "messages": pipe.messages,
        "refused": pipe.refused,
        "rss_bytes": grown,
        "rss_per_user": grown / users,
        "cpu_us_per_message": cpu / max(1, pipe.messages) * 1e6,
        "topics_cached": parse.cache_info().currsize,
    }


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _freed(drop: Callable[[], object]) -> int:
    before = _traced()
    drop()
    return before - _traced()


def run_trace(users: int, steps: Sequence[Step], top: int) -> dict[str, Any]:
    """The full pipeline under tracemalloc: retained bytes, broken down, and the top retaining lines."""
    warm_up(steps)
    tracemalloc.start()
    base = _traced()
    snap0 = tracemalloc.take_snapshot()
    pipe = make_pipeline("full")
    feed(pipe, range(users), "u", steps, seed=7)
    total = _traced() - base
    snap1 = tracemalloc.take_snapshot()
    topics = parse.cache_info().currsize
    assert pipe.core is not None  # noqa: S101 (the full stage has one)
    tracemalloc.reset_peak()
    at = _traced()
    state = pipe.core.export_state()
    tree = _traced() - at
    text = snapshot_text(state)
    snapshot = {"tree": tree, "json": len(text.encode()), "peak": tracemalloc.get_traced_memory()[1] - at}
    del state, text
    parts = {"parse_cache": _freed(parse.cache_clear)}
    held: dict[str, object] = {"admission": pipe.admission, "core": pipe.core}
    pipe.admission = pipe.core = None
    parts["admission"] = _freed(lambda: held.pop("admission"))
    parts["core"] = _freed(lambda: held.pop("core"))
    parts["other"] = total - sum(parts.values())
    lines = []
    for stat in snap1.compare_to(snap0, "lineno")[:top]:
        frame = stat.traceback[0]
        lines.append({"where": f"{frame.filename}:{frame.lineno}", "bytes": stat.size_diff, "count": stat.count_diff})
    tracemalloc.stop()
    return {
        "stage": "trace",
        "users": users,
        "messages": pipe.messages,
        "topics_cached": topics,
        "traced_bytes": total,
        "traced_per_user": total / users,
        "parts_per_user": {k: v / users for k, v in parts.items()},
        "snapshot_per_user": {k: v / users for k, v in snapshot.items()},
        "top": lines,
    }


def real_rate_topics(users: int, seconds: float, streams: Sequence[mix.Stream], seed: int = 5) -> list[str]:
    """The topics of ``users`` users' periodic streams at their real rates, each stream at a random phase."""
    rng = random.Random(seed)
    periodic = [s for s in streams if s.period_s > 0]
    heap = [(rng.uniform(0, s.period_s), u, i) for u in range(users) for i, s in enumerate(periodic)]
    heapq.heapify(heap)
    names = [[mix.topic_of(mix.user_name(u, "r"), s) for s in periodic] for u in range(users)]
    out: list[str] = []
    while heap and heap[0][0] < seconds:
        t, u, i = heapq.heappop(heap)
        out.append(names[u][i])
        heapq.heappush(heap, (t + periodic[i].period_s, u, i))
    return out


def run_timing(users: Sequence[int], streams: Sequence[mix.Stream]) -> dict[str, Any]:
    """The parse cost on a miss and on a hit, and its mean cost and hit ratio at real rates for each N."""
    size = parse.cache_info().maxsize or 4096
    names = [mix.topic_of(mix.user_name(u, "t"), s) for u in range(size // len(streams) + 1) for s in streams]
    names = names[:size]
    parse.cache_clear()
    t0 = time.perf_counter()
    for name in names:
        parse(name)
    miss = (time.perf_counter() - t0) / len(names)
    t0 = time.perf_counter()
    for _ in range(5):
        for name in names:
            parse(name)
    hit = (time.perf_counter() - t0) / len(names) / 5
    result: dict[str, Any] = {"stage": "timing", "parse_miss_us": miss * 1e6, "parse_hit_us": hit * 1e6}
    for n in users:
        seq = real_rate_topics(n, 30.0, streams)
        parse.cache_clear()
        for name in seq[: len(seq) // 3]:  # warm up: the first 10 s
            parse(name)
        info0 = parse.cache_info()
        measured = seq[len(seq) // 3 :]
        t0 = time.perf_counter()
        for name in measured:
            parse(name)
        spent = time.perf_counter() - t0
        info1 = parse.cache_info()
        hits = info1.hits - info0.hits
        result[f"real_rate_{n}"] = {"hit_ratio": hits / len(measured), "us_per_call": spent / len(measured) * 1e6}
    parse.cache_clear()
    return result


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process."""
    steps = schedule(mix.default_streams(args.head_pose_hz), args.span_min * 60, args.per_stream)
    users = args.users[0]
    if args.stage == "trace":
        return run_trace(users, steps, args.top)
    if args.stage == "timing":
        return run_timing(args.users, mix.default_streams(args.head_pose_hz))
    return run_rss(args.stage, users, steps)


def spawn(stage: str, users: int | Sequence[int], args: argparse.Namespace) -> dict[str, Any]:
    """Run one measurement in a fresh child process and return its JSON result."""
    counts = [users] if isinstance(users, int) else list(users)
    cmd = [sys.executable, "-m", "bench.memory", "--stage", stage, "--users", *map(str, counts)]
    cmd += ["--span-min", str(args.span_min), "--per-stream", str(args.per_stream)]
    cmd += ["--head-pose-hz", str(args.head_pose_hz), "--top", str(args.top)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(users: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage for ``users`` users, each in its own process."""
    rss_runs = {stage: spawn(stage, users, args) for stage in STAGES}
    per_user = {stage: r["rss_per_user"] for stage, r in rss_runs.items()}
    return {
        "users": users,
        "messages": rss_runs["full"]["messages"],
        "refused": rss_runs["full"]["refused"],
        "topics_cached": rss_runs["full"]["topics_cached"],
        "cpu_us_per_message": rss_runs["full"]["cpu_us_per_message"],
        "rss_per_user": {
            "total": per_user["snapshot"],
            "parse_cache": per_user["parse"],
            "core": per_user["core"] - per_user["parse"],
            "admission": per_user["full"] - per_user["core"],
            "snapshots": per_user["snapshot"] - per_user["full"],
        },
        "trace": spawn("trace", users, args),
    }


def report(results: list[dict[str, Any]], timing: dict[str, Any]) -> list[str]:
    """The human-readable summary."""
    kib = 1024.0
    lines = [f"parse: miss {timing['parse_miss_us']:.2f} µs, hit {timing['parse_hit_us']:.2f} µs per call"]
    for r in results:
        real = timing.get(f"real_rate_{r['users']}")
        if real:
            lines.append(
                f"parse at real rates, {r['users']:,} users: {real['hit_ratio']:.1%} hits, "
                f"{real['us_per_call']:.2f} µs per call"
            )
    for r in results:
        rs, tr = r["rss_per_user"], r["trace"]
        lines.append(
            f"{r['users']:,} users, {r['messages']:,} messages ({r['refused']} refused), "
            f"{r['topics_cached']:,} topics cached, {r['cpu_us_per_message']:.0f} µs CPU per message"
        )
        lines.append("  RSS growth per user:   " + ", ".join(f"{k} {v / kib:.2f} KiB" for k, v in rs.items()))
        lines.append(
            f"  traced per user:       total {tr['traced_per_user'] / kib:.2f} KiB, "
            + ", ".join(f"{k} {v / kib:.2f} KiB" for k, v in tr["parts_per_user"].items())
        )
        sn = tr["snapshot_per_user"]
        lines.append(
            f"  one core snapshot:     tree {sn['tree'] / kib:.2f} KiB, JSON {sn['json'] / kib:.2f} KiB, "
            f"peak {sn['peak'] / kib:.2f} KiB per user (transient)"
        )
        lines.append("  top retainers (tracemalloc, by line, per user):")
        users = r["users"]
        lines += [f"    {t['bytes'] / users:8.0f} B  {t['count'] / users:6.1f} blocks  {t['where']}" for t in tr["top"]]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m bench.memory --users 250 2500``."""
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, nargs="+", default=[250, 2500], help="users to measure (each N apart)")
    p.add_argument("--span-min", type=float, default=150.0, help="simulated minutes the streams cover")
    p.add_argument("--per-stream", type=int, default=8, help="events each periodic stream sends at most")
    p.add_argument("--head-pose-hz", type=float, default=5.0)
    p.add_argument("--top", type=int, default=12, help="top retaining lines to show")
    p.add_argument("--json", dest="json_out", default=None, help="also write the results to this file")
    p.add_argument("--stage", choices=(*STAGES, "trace", "timing"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stage is not None:
        sys.stdout.write(json.dumps(child(args)) + "\n")
        return 0
    timing = spawn("timing", args.users, args)
    results = [measure(n, args) for n in args.users]
    sys.stdout.write("".join(line + "\n" for line in report(results, timing)))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"timing": timing, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
