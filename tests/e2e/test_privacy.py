"""Health data after a whole `wearbus up`: nothing a person reads by default holds a health value.

The ground truth is a recording made with ``--include-health``: every health value that crossed the bus, found by
the contract's mark (what :func:`schemas.codec.redact_payload` changes). Then the timeline on stdout, the agent's and
devices' logs, every dead letter and a default recording must hold none of them; with ``--show-health`` the timeline
shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.client import Bus, BusOptions, Outgoing
from schemas import codec
from schemas.errors import DecodeError
from schemas.health import FLAG, REDACTED
from testkit.mosquitto import MosquittoProcess
from testkit.record import load_recording
from tests.conftest import require_mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

HR = "wb/v1/alice/ring/ring-1/evt/sensor/hr"
NAMES = sorted(codec.HEALTH_NAMES - {FLAG})


async def wearbus(*argv: str, timeout: float = 300) -> tuple[int, str]:
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


def _diff(original: Any, redacted: Any, found: list[Any]) -> None:
    """The leaves of ``original`` that redaction hid."""
    if isinstance(original, dict) and isinstance(redacted, dict):
        for k, v in original.items():
            _diff(v, redacted.get(k), found)
    elif isinstance(original, list) and isinstance(redacted, list):
        for a, b in zip(original, redacted, strict=False):
            _diff(a, b, found)
    elif redacted == REDACTED and original != REDACTED:
        found.append(original)


def health_values(path: Path) -> tuple[list[Any], list[str]]:
    """Every health value in a recording (numbers and sleep stages), and the texts that quote one."""
    values: list[Any] = []
    for rec in load_recording(path):
        try:
            obj = codec.loads(rec.topic, rec.payload)
        except DecodeError:
            continue
        _diff(obj, codec.redact_payload(rec.topic, obj), values)
    texts = [v for v in values if isinstance(v, str) and len(v) > 8]
    return values, texts


def leaks(text: str, texts: list[str], *, style: str) -> list[str]:
    """Health values shown in ``text``: a marked field with a value other than the redaction mark, or a quoted
    alert text. ``style`` is ``timeline`` (``"bpm"=72``) or ``json`` (``"bpm": 72``)."""
    sep = "=" if style == "timeline" else ": "
    hidden = json.dumps(REDACTED, ensure_ascii=style == "json")
    names = [n for n in NAMES if not (style == "json" and n == "level")]  # structlog's level key
    pattern = re.compile(rf'"({"|".join(names)})"{re.escape(sep)}(?!{re.escape(hidden)}|null|\{{\}})')
    flat = re.sub(r"\s*\n\s*", "", text)  # rich wraps long timeline lines
    found = [flat[m.start() : m.end() + 40] for m in pattern.finditer(flat)]
    for quote in texts:
        squashed = re.sub(r"\s+", "", text)
        if re.sub(r"\s+", "", quote) in squashed or re.sub(r"\s+", "", json.dumps(quote)[1:-1]) in squashed:
            found.append(quote)
    return found


async def test_after_up_nothing_people_read_holds_a_health_value(tmp_path: Path) -> None:
    require_mosquitto()
    full, default = tmp_path / "full.rec", tmp_path / "default.rec"
    async with MosquittoProcess() as broker:
        recorders = []
        for path, extra in ((full, ["--include-health"]), (default, [])):
            argv = ["record", "wb/#", "-o", str(path), "--broker", broker.url, *extra]
            recorders.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "cli.main",
                    *argv,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        try:
            await asyncio.sleep(1.0)  # the recorders subscribe before the stack starts
            up = asyncio.create_task(
                wearbus("up", "--speed", "240", "--console-port", "0", "--workdir", str(tmp_path / "run"), "--broker",
                        broker.url)
            )  # fmt: skip
            # A reading out of range: the agent sends it to the DLQ, which must not carry the value.
            async with Bus(BusOptions(url=broker.url, name="privacy-test")) as bus:
                await bus.subscribe("wb/v1/_dlq/#", 1)
                rejected = asyncio.Event()

                async def watch() -> None:
                    async for message in bus.messages():
                        if message.where.name == "schema":
                            rejected.set()

                watcher = asyncio.create_task(watch())
                async with asyncio.timeout(60):  # until the agent (subscribed once it is up) rejected one
                    for n in range(1000):
                        bad = {"id": f"bad-hr-{n}", "ts": 1_764_018_000_000, "data": {"type": "ring.hr", "bpm": 251.5}}
                        await bus.publish_raw(Outgoing(HR, json.dumps(bad).encode(), 1, False), wait=True)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(rejected.wait(), 1.0)
                            break
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                code, stdout = await up
        finally:
            for proc in recorders:
                proc.terminate()
                await proc.wait()
    assert code == 0, stdout[-4000:]
    values, texts = health_values(full)
    assert len(values) > 20, "the scenario published health values"
    assert texts, "a health alert or answer quoted a value"

    # The timeline on stdout.
    assert "sensor/spo2" in stdout
    assert leaks(stdout, texts, style="timeline") == []
    assert REDACTED in stdout
    # The agent's and the devices' logs.
    logs = sorted((tmp_path / "run").glob("run-*/*.log"))
    processes = {"agent", "console", "ring-alice", "glasses-alice", "phone-alice", "earphones-alice"}
    assert {p.stem for p in logs} >= processes
    for log in logs:
        assert leaks(log.read_text(), texts, style="json") == [], log
        assert log.stat().st_mode & 0o777 == 0o600
    # Every dead letter: the out-of-range reading is there, redacted.
    letters = [rec for rec in load_recording(full) if rec.topic.startswith("wb/v1/_dlq/")]
    bodies = [json.loads(codec.loads(r.topic, r.payload)["data"]["payload"]) for r in letters]
    assert any(b["data"]["bpm"] == REDACTED for b in bodies), bodies
    for rec in letters:
        assert b"251.5" not in rec.payload
        letter = codec.loads(rec.topic, rec.payload)["data"]
        assert codec.redact_wire(letter["topic"], letter["payload"].encode()) is None
    # A recording made with the default options.
    assert default.stat().st_mode & 0o777 == 0o600
    kept = load_recording(default)
    assert len(kept) > 100
    for rec in kept:
        assert codec.redact_wire(rec.topic, rec.payload) is None, rec.topic
    assert not any(t.encode() in rec.payload for rec in kept for t in texts)


async def test_show_health_shows_them(tmp_path: Path) -> None:
    code, stdout = await wearbus(
        "up", "--speed", "480", "--port", "0", "--no-console", "--workdir", str(tmp_path / "run"), "--show-health"
    )
    assert code == 0, stdout[-4000:]
    assert re.search(r'"pct"=\d', stdout), stdout[-4000:]  # SpO2 spot readings
    assert re.search(r"health/alice\s+♥ health", stdout)
