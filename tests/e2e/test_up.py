"""`wearbus up` end to end: real processes, the bundled day in the life on a fast clock, the summary checked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import psutil
import pytest

from testkit.mosquitto import MosquittoProcess
from tests.conftest import require_mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PAID = {"order_food", "hail_ride"}


async def run_up(tmp_path: Path, *extra: str, timeout: float = 240) -> tuple[int, dict[str, object], str]:
    summary = tmp_path / "summary.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "up", "--speed", "240", "--quiet", "--no-console", "--workdir",
        str(tmp_path / "run"), "--json-summary", str(summary), *extra,
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
    assert alive == [], f"processes left behind: {alive}"
    assert children, "up started no processes"
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return proc.returncode or 0, data, output.decode(errors="replace")


def check_summary(code: int, data: dict[str, object], output: str) -> None:
    assert code == 0, output[-4000:]
    tasks = data["tasks"]
    assert isinstance(tasks, list)
    skills = {t["skill"] for t in tasks}
    assert skills >= PAID, output[-4000:]
    paid_rounds = data["paid_rounds"]
    assert isinstance(paid_rounds, list)
    assert paid_rounds, f"no paid task was committed: {tasks}"
    assert paid_rounds.count(2) >= 2, paid_rounds  # the food order and the ride: sentence + confirmation
    assert data["alerts"], "no proactive rule fired"
    assert data["failed_processes"] == []
    assert "Summary" in output


async def test_day_in_the_life_on_the_embedded_broker(tmp_path: Path) -> None:
    code, data, output = await run_up(tmp_path, "--port", "0")
    check_summary(code, data, output)


async def wearbus(*argv: str, timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, stdout.decode(errors="replace")


async def test_day_in_the_life_on_mosquitto_recorded_replayed_and_diffed(tmp_path: Path) -> None:
    """The same stack on Mosquitto; its recording replays into the agent identically twice, and an agent with a
    changed rule differs in exactly that rule's actions."""
    require_mosquitto()
    recording = tmp_path / "day.rec"
    async with MosquittoProcess() as broker:
        recorder = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "record", "wb/#", "-o", str(recording), "--broker", broker.url,
            "--include-health",  # the agent replays it: the rules need the values
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            # the recorder has subscribed (it says "recording ..." then) before the stack starts
            async with asyncio.timeout(60):
                while not (line := await recorder.stderr.readline()).startswith(b"recording"):  # type: ignore[union-attr]
                    assert line, "the recorder ended before it subscribed"
            code, data, output = await run_up(tmp_path, "--broker", broker.url)
        finally:
            recorder.terminate()
            await recorder.wait()
    check_summary(code, data, output)
    profiles = str(Path(__file__).parents[2] / "devices" / "scenarios" / "day_in_the_life.yaml")
    logs = {name: tmp_path / f"{name}.jsonl" for name in ("a", "b", "changed")}
    for name, extra in (("a", []), ("b", []), ("changed", ["--set", "hr_high_bpm=135"])):
        rc, text = await wearbus("replay-agent", str(recording), "-o", str(logs[name]), "--profiles", profiles, *extra)
        assert rc == 0, text
    rc, text = await wearbus("diff", str(logs["a"]), str(logs["b"]))
    assert rc == 0, text
    assert "no difference" in text
    rc, text = await wearbus("diff", str(logs["a"]), str(logs["changed"]))
    assert rc == 1, text
    changed = [line for line in text.splitlines() if line.startswith(("-+", "++")) and not line.startswith("+++")]
    assert changed, text
    assert all("rule:hr_high" in line or "hr_high" in line for line in changed), text
