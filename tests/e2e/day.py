"""One whole `wearbus up` day per broker, run once and checked from several sides.

A day is the longest thing the suite runs (~60 s of processes at ``--speed 240``), so the tests that need one share
it: :func:`day_on_mosquitto` (the summary, the recording that replays, and every place health values could leak)
and :func:`day_on_embedded` (the summary and ``--show-health``). The fixtures in ``conftest.py`` run each once per
pytest worker and put the tests that use it in one ``xdist_group``, so a day runs once per run of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from broker.client import Bus, BusOptions, Outgoing
from testkit.mosquitto import MosquittoProcess

HR = "wb/v1/alice/ring/ring-1/evt/sensor/hr"
SPEED = "240"


@dataclass(frozen=True)
class Day:
    """What a `wearbus up` run left: its exit code, stdout and stderr, its JSON summary, its run directory."""

    code: int
    output: str
    summary: dict[str, object]
    workdir: Path
    started: int  #: processes up started (children, grandchildren)
    left_behind: list[int]  #: of those, the ones still alive after up ended
    recordings: dict[str, Path] = field(default_factory=dict)
    recorder_errors: str = ""


async def wearbus(*argv: str, timeout: float = 300) -> tuple[int, str]:
    """Run a wearbus command to its end: its exit code and its stdout and stderr together."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(errors="replace")


async def run_up(tmp: Path, *extra: str, timeout: float = 240) -> Day:
    """`wearbus up` on the bundled day at ``--speed 240`` to its end, watching which processes it starts."""
    summary = tmp / "summary.json"
    workdir = tmp / "run"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "up", "--speed", SPEED, "--workdir", str(workdir),
        "--json-summary", str(summary), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    children: set[int] = set()
    output = b""
    try:
        async with asyncio.timeout(timeout):
            while proc.returncode is None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    children |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
                try:
                    output += await asyncio.wait_for(proc.stdout.read(65536), 0.5)  # type: ignore[union-attr]
                except TimeoutError:
                    continue
                if proc.stdout.at_eof():  # type: ignore[union-attr]
                    await proc.wait()
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    alive = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return Day(proc.returncode or 0, output.decode(errors="replace"), data, workdir, len(children), alive)


@contextlib.asynccontextmanager
async def recording(url: str, path: Path, *extra: str) -> AsyncIterator[list[str]]:
    """``wearbus record wb/#`` into ``path`` from the moment it has subscribed (it says ``recording`` then) until
    the block ends; yields the lines it wrote to stderr after that (an empty list when all went well)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "record", "wb/#", "-o", str(path), "--broker", url, *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    said: list[str] = []

    async def drain() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            said.append(line.decode(errors="replace"))

    try:
        async with asyncio.timeout(60):
            while not (line := await proc.stderr.readline()).startswith(b"recording"):
                assert line, "the recorder ended before it subscribed"
        drainer = asyncio.create_task(drain())
        try:
            yield said
        finally:
            proc.terminate()
            await proc.wait()
            await drainer  # it ends with the recorder's stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def reject_one_reading(url: str) -> None:
    """Publish a heart rate out of range (251.5 bpm) once a second until the agent has dead-lettered one: the
    agent subscribes only once up has started it, and an event is not kept for nobody."""
    async with Bus(BusOptions(url=url, name="privacy-test")) as bus:
        await bus.subscribe("wb/v1/_dlq/#", 1)
        rejected = asyncio.Event()

        async def watch() -> None:
            async for message in bus.messages():
                if message.where.name == "schema":
                    rejected.set()

        watcher = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(120):
                for n in range(1000):
                    bad = {"id": f"bad-hr-{n}", "ts": 1_764_018_000_000, "data": {"type": "ring.hr", "bpm": 251.5}}
                    await bus.publish_raw(Outgoing(HR, json.dumps(bad).encode(), 1, False), wait=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(rejected.wait(), 1.0)
                        break
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def day_on_mosquitto(tmp: Path) -> Day:
    """The day on a Mosquitto of its own with the console on, recorded twice from before it starts (with health
    values, and by default without), while a reading out of range is sent until the agent dead-letters it."""
    full, default = tmp / "full.rec", tmp / "default.rec"
    async with (
        MosquittoProcess() as broker,
        recording(broker.url, full, "--include-health") as said_full,
        recording(broker.url, default) as said_default,
        asyncio.TaskGroup() as tasks,  # if the rejection fails, up is stopped
    ):
        up = tasks.create_task(run_up(tmp, "--broker", broker.url, "--console-port", "0"))
        await reject_one_reading(broker.url)
    errors = "".join(said_full + said_default)
    return replace(up.result(), recordings={"full": full, "default": default}, recorder_errors=errors)


async def day_on_embedded(tmp: Path) -> Day:
    """The day on the embedded broker, health values shown (``--show-health``)."""
    return await run_up(tmp, "--port", "0", "--no-console", "--show-health")
