"""A real device joins `wearbus up --forever`: the README's `mosquitto_pub` line, with the current `ts` and without
one, gets its action in JSON on the device's `cmd/` topic, seen with `mosquitto_sub` (issue 21, items 1 and 2)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from cli.up import default_scenario
from tests.conftest import needs_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICE = "wb/v1/alice/glasses/my-glasses"


def short_scenario(tmp_path: Path) -> Path:
    """The bundled day's profile (alice's usual order, her places) with no steps, three simulated minutes long."""
    doc = yaml.safe_load(default_scenario().read_text(encoding="utf-8"))
    doc["duration"], doc["steps"] = "00:03:00", []
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def up_forever(tmp_path: Path) -> AsyncIterator[tuple[int, list[str]]]:
    """`wearbus up --forever` until its scenario is over; yields the broker's port and the timeline so far."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "up", "--forever", "--speed", "60", "--port", "0", "--no-console",
        "--scenario", str(short_scenario(tmp_path)), "--workdir", str(tmp_path / "run"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={"COLUMNS": "400", **_env()},
    )  # fmt: skip
    timeline: list[str] = []

    async def drain() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            timeline.append(line.decode(errors="replace"))

    drainer = asyncio.create_task(drain())
    try:
        port = 0
        assert proc.stderr is not None
        async with asyncio.timeout(180):
            async for raw in proc.stderr:
                line = raw.decode(errors="replace")
                found = re.search(r"mqtt://127\.0\.0\.1:(\d+)", line)
                if found:
                    port = int(found[1])
                if "scenario over" in line:
                    break
        assert port, "up printed no broker URL"
        yield port, timeline
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 60)
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer


def _env() -> dict[str, str]:
    import os  # noqa: PLC0415

    return dict(os.environ)


async def read_action(
    sub: asyncio.subprocess.Process, corr: str | None, timeout: float = 30
) -> tuple[str, dict[str, object]]:
    """The first action on the device's cmd/ topic (caused by event ``corr`` if given), its payload parsed as JSON."""
    assert sub.stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            line = (await sub.stdout.readline()).decode()
            assert line, "mosquitto_sub ended"
            topic, _, payload = line.rstrip("\n").partition(" ")
            if not topic.startswith(f"{DEVICE}/cmd/"):
                continue
            envelope = json.loads(payload)  # JSON, not msgpack: the device spoke JSON
            if corr is None or envelope.get("corr") == corr:
                return topic, envelope


READY = "test/mosquitto-sub-ready"  # outside wb/v1/: nothing of wearbus hears it


async def subscribed(sub: asyncio.subprocess.Process, port: int) -> None:
    """Wait until ``mosquitto_sub`` (which has no ready signal) hears: publish to its ``READY`` topic until it
    prints one (a publish before its subscription reaches nobody, and a busy machine may take seconds).

    A probe whose publish fails is sent again: once in ten suite runs a probe's ``mosquitto_pub`` ended with "The
    connection was lost" (exit 7) while everything started at once. The probe only finds out when the subscriber
    listens; the README's own publishes, after it, must each succeed the first time."""
    assert sub.stdout is not None
    failures: list[str] = []
    async with asyncio.timeout(60):
        while True:
            pub = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-q", "1", "-p", str(port), "-t", READY, "-m", "?", stderr=asyncio.subprocess.PIPE
            )
            _, stderr = await pub.communicate()
            if pub.returncode != 0:
                failures.append(f"exit {pub.returncode}: {stderr.decode(errors='replace').strip()}")
                assert len(failures) < 5, f"the probe's mosquitto_pub failed 5 times: {failures}"
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    while True:
                        line = (await sub.stdout.readline()).decode()
                        assert line, "mosquitto_sub ended"
                        if line.startswith(f"{READY} "):
                            return


@needs_binary("mosquitto_pub", "mosquitto-clients")
async def test_readme_mosquitto_pub_gets_a_json_action_with_and_without_ts(tmp_path: Path) -> None:
    async with up_forever(tmp_path) as (port, timeline):
        sub = await asyncio.create_subprocess_exec(
            "mosquitto_sub", "-p", str(port), "-R", "-v", "-t", f"{DEVICE}/cmd/#", "-t", READY,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await subscribed(sub, port)
            now = int(time.time() * 1000)
            line = f'{{"id":"u1","ts":{now},"data":{{"text":"order my usual noodles","lang":"en","final":true}}}}'
            pub = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-q", "1", "-p", str(port), "-t", f"{DEVICE}/evt/voice/utterance", "-m", line
            )
            assert await pub.wait() == 0
            # the card comes once the phone has taken the task (its corr is the phone's ack)
            topic, envelope = await read_action(sub, None)
            assert topic == f"{DEVICE}/cmd/display.card"
            data = envelope["data"]
            assert isinstance(data, dict)
            assert "noodles" in str(data["title"]).lower()
            assert abs(int(str(envelope["ts"])) - now) < 60_000  # the agent is on the wall clock

            # no ts: the bus fills it from the arrival time
            line = '{"id":"u2","data":{"text":"navigate to West Lake","lang":"en","final":true}}'
            pub = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-q", "1", "-p", str(port), "-t", f"{DEVICE}/evt/voice/utterance", "-m", line
            )
            assert await pub.wait() == 0
            topic, envelope = await read_action(sub, "u2")
            assert topic == f"{DEVICE}/cmd/display.nav", (topic, envelope)
        finally:
            sub.terminate()
            await sub.wait()
    assert any("my-glasses" in line and "display.card" in line for line in timeline), "".join(timeline[-20:])


async def refused_up(tmp_path: Path, steps: list[dict[str, object]]) -> list[str]:
    """`wearbus up` on the bundled profile with these steps: exit code 2 and the problems it printed."""
    doc = yaml.safe_load(default_scenario().read_text(encoding="utf-8"))
    doc["steps"] = steps
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "up", "--scenario", str(bad), "--port", "0", "--no-console",
        "--workdir", str(tmp_path / "run"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**_env(), "COLUMNS": "300"},
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, stderr.decode()
    assert not (tmp_path / "run").exists()  # nothing started: no run directory, no process logs
    assert b"Summary" not in stdout
    return [line for line in stderr.decode().splitlines() if line.startswith("error: ")]


async def test_up_refuses_a_bad_scenario_before_starting_anything(tmp_path: Path) -> None:
    problems = await refused_up(
        tmp_path, [{"at": "00:01:00", "device": "phone", "respond": "click"}, {"at": "soon", "say": "hello"}]
    )
    assert len(problems) == 2, problems  # every problem on its own line
    assert "step 1 (at +00:01:00): respond" in problems[0]
    assert "'soon' is not a time" in problems[1]
    problems = await refused_up(tmp_path, [{"at": "00:02:00", "go": {"to": "Atlantis"}}])
    assert any("Atlantis" in p and "[lat, lon]" in p for p in problems), problems  # rich markup did not eat it
