"""#18 item 1, on a private Mosquitto: a crash mid-backlog does not stall the next start.

The held-out sequence of the issue: queue 1,000 events for a persistent agent session while it is away, start the
consumer, kill -9 it 1.5 s later without acknowledging anything, publish 1,000 more, start it again: all 2,000
arrive. Before the fix the consumer stopped reading the socket once its inbox held the receive maximum, so the
SUBACK behind the backlog was never read and the consumer (which subscribes before it consumes) waited for ever.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from broker.client import Bus, BusOptions
from schemas.envelope import make
from schemas.events import HeartRate
from testkit.mosquitto import MosquittoProcess
from tests.conftest import require_mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


async def publish_events(url: str, user: str, n: int) -> list[str]:
    ids: list[str] = []
    async with Bus(BusOptions(url=url, name="publisher")) as pub:
        futures = []
        for i in range(n):
            env = make(HeartRate(bpm=40 + i % 150), seq=i + 1)
            ids.append(env.id)
            futures.append(pub.publish(f"wb/v1/{user}/ring/r1/evt/sensor/hr", env, wait=True))
            if len(futures) >= 100:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    return ids


async def start_consumer(url: str, user: str, out: Path, mode: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.conformance.backlog_consumer", url, user, str(out), mode, cwd=ROOT
    )


def taken(out: Path) -> set[str]:
    return set(out.read_text(encoding="utf-8").split()) if out.exists() else set()


async def test_a_backlog_drains_after_a_crash_mid_backlog(tmp_path: Path) -> None:
    require_mosquitto()
    user = f"u{uuid.uuid4().hex[:8]}"
    # The agent's window: 1,000 in flight (its receive maximum), so the backlog fills the inbox before the SUBACK
    extra = ["max_inflight_messages 1000", "max_queued_messages 100000"]
    async with MosquittoProcess(extra_lines=extra) as broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        options = BusOptions(url=url, client_id=f"agent-{user}", persistent=True, manual_ack=True)
        async with Bus(options) as agent:  # the session exists; the agent goes away
            await agent.subscribe(f"wb/v1/{user}/+/+/evt/#", 1)
        ids = await publish_events(url, user, 1000)

        first = await start_consumer(url, user, tmp_path / "first.txt", "hold")
        await asyncio.sleep(1.5)  # the scenario's timing: killed 1.5 s after its start
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()

        ids += await publish_events(url, user, 1000)
        out = tmp_path / "second.txt"
        second = await start_consumer(url, user, out, "ack")
        try:
            async with asyncio.timeout(120):  # a generous ceiling; it drains in seconds
                while not set(ids) <= taken(out):
                    assert second.returncode is None, "the consumer ended"
                    await asyncio.sleep(0.2)
        finally:
            if second.returncode is None:
                second.kill()
            await second.wait()
    assert set(ids) <= taken(out)
    assert len(set(ids)) == 2000
