"""Micro-benchmark of the receive path's decoding: where each microsecond of :func:`schemas.codec.decode` goes.

``python -m bench.decode`` decodes the quick bench's ingest backlog (``--users`` users, ``--per-user`` events each,
the steady-state mix of :mod:`bench.mix`) in process, and prints the process CPU time per event of each stage and of
the whole call (best of ``--rounds``). "Rest" is the total less the stages, each its own best: under load it can
come out below zero. The figures move with the machine's load: compare versions in alternating runs.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable

from bench import mix
from schemas import codec
from schemas.envelope import Message
from schemas.topics import parse


def per_event(fn: Callable[[], object], n: int, rounds: int) -> float:
    """The best of ``rounds`` runs of ``fn`` (which handles ``n`` events), in CPU µs per event."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def stages(users: int, per_user: int, rounds: int) -> dict[str, float]:
    """CPU µs per event of each stage of :func:`schemas.codec.decode` and of the whole call."""
    events = mix.backlog(users, per_user, random.Random(7), time.time_ns() // 1_000_000)
    n = len(events)
    routes = [(codec.route(t)[2], codec.loads(t, p)) for t, p in events]
    where = parse(events[0][0])

    def topics() -> None:
        for t, _ in events:
            codec.route(t)

    def unpack() -> None:
        for t, p in events:
            codec.loads(t, p)

    def validate() -> None:
        for check, obj in routes:
            check(obj)

    def messages() -> None:
        for t, p in events:
            Message(t, where, None, 1, False, 1, len(p), 1, p, False)  # type: ignore[arg-type]

    def decode() -> None:
        for t, p in events:
            codec.decode(t, p, qos=1, mid=1, link=1)

    decode()  # warm: every route and validator built
    out = {
        "topic -> body model (cached)": per_event(topics, n, rounds),
        "msgpack unpack + bounds": per_event(unpack, n, rounds),
        "validation, envelope and body": per_event(validate, n, rounds),
        "Message": per_event(messages, n, rounds),
    }
    total = per_event(decode, n, rounds)
    out["rest (format, topic fixes, glue)"] = total - sum(out.values())
    out["codec.decode, total"] = total
    return out


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--per-user", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    for name, us in stages(args.users, args.per_user, args.rounds).items():
        print(f"{name:36s} {us:6.2f} µs")


if __name__ == "__main__":
    main()
