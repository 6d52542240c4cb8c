"""``wearbus agent --workers N``: N agent processes on this host, each owning a fixed share of the user buckets.

The command forks the workers (each runs the unchanged agent on a :class:`~agent.workers.WorkerBus`), forwards
SIGINT and SIGTERM to them and waits. A worker that ends while nobody asked it to is not restarted: the command
stops the other workers and exits with a non-zero status, so the supervisor that restarts a single agent (systemd,
compose, Kubernetes) restarts the whole set, and a crash loop shows as one. The dead worker's users lose nothing
meanwhile: their events wait in its persistent session until it is back.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from rich.console import Console

from agent.runtime import AgentSettings
from agent.workers import WorkerBus, WorkerShare
from broker.bus import Bus, BusOptions
from schemas.clock import SimClock
from schemas.errors import ConfigError

err = Console(stderr=True)
Serve = Callable[[AgentSettings, SimClock, Callable[[BusOptions], Bus]], None]
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_workers(settings: AgentSettings, clock: SimClock, count: int, buckets: int, serve: Serve) -> int:
    """Run ``count`` workers until signalled or until one ends; the command's exit status."""
    if settings.url.startswith("memory://"):
        err.print("[bold red]error:[/] --workers needs an MQTT broker: a memory:// bus does not reach other processes")
        return 2
    try:
        shares = [WorkerShare(i, count, buckets) for i in range(count)]
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        return 2
    context = multiprocessing.get_context("fork")  # before any event loop or thread: the agent starts afresh
    procs: list[multiprocessing.process.BaseProcess] = []
    signalled: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        signalled.append(signum)
        _kill(procs, signum)

    previous = {sig: signal.signal(sig, forward) for sig in _SIGNALS}
    try:
        for share in shares:
            worker = replace(settings, instance=share.instance(settings.instance), db=share.db(settings.db))
            proc: multiprocessing.process.BaseProcess = context.Process(
                target=_worker, args=(worker, clock, share, serve), name=worker.instance
            )
            proc.start()
            procs.append(proc)
        err.print(
            f"{count} workers: "
            + ", ".join(
                f"{p.name} (pid {p.pid}, {share.db(settings.db)})" for p, share in zip(procs, shares, strict=True)
            ),
            soft_wrap=True,
        )
        return _supervise(procs, signalled)
    finally:
        _kill(procs, signal.SIGTERM)
        for proc in procs:
            proc.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(procs: list[multiprocessing.process.BaseProcess], signalled: list[int]) -> int:
    status = 0
    running = list(procs)
    while running:
        multiprocessing.connection.wait([p.sentinel for p in running])
        for proc in [p for p in running if p.exitcode is not None]:
            running.remove(proc)
            code = proc.exitcode or 0
            if signalled or status:
                status = status or max(code, 0)  # stopping: a worker that failed on the way out still counts
                continue
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            err.print(
                f"[bold red]error:[/] worker {proc.name} (pid {proc.pid}) {how}; stopping the other workers",
                soft_wrap=True,
            )
            status = code if code > 0 else 1
            _kill(running, signal.SIGTERM)
    return status


def _kill(procs: list[multiprocessing.process.BaseProcess], signum: int) -> None:
    for proc in procs:
        if proc.pid is not None and proc.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)


def _worker(settings: AgentSettings, clock: SimClock, share: WorkerShare, serve: Serve) -> None:
    for sig in _SIGNALS:  # the parent's forwarding handler came with the fork; the agent sets its own
        signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)

    def bus(options: BusOptions) -> Bus:
        return WorkerBus(options, share)

    serve(settings, clock, bus)
