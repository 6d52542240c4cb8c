"""``wearbus agent --workers 2`` (issue 25): every user is served by exactly one worker, every utterance answered
once, every event stored once across the workers' databases; a worker killed ends the command with an error."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.workers import WorkerShare
from broker.client import Bus, BusOptions
from broker.embedded import EmbeddedBroker, free_port
from schemas.actions import DeviceState
from schemas.envelope import make
from schemas.events import HeartRate, Utterance
from schemas.topics import Channel, Kind
from testkit.mosquitto import MosquittoProcess
from tests.conftest import require_mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]
USERS = [f"worker-user-{i}" for i in range(8)]
HR_PER_USER = 5


@pytest.fixture(params=["mosquitto", "embedded"])
async def broker_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A private broker: the workers use plain subscriptions and QoS 1 only, which both brokers have."""
    if request.param == "embedded":
        async with EmbeddedBroker(port=free_port()) as embedded:
            yield embedded.url
        return
    require_mosquitto()
    async with MosquittoProcess() as mosquitto:
        yield mosquitto.url


def rows(db: Path, sql: str) -> list[tuple[str, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return [tuple(r) for r in con.execute(sql).fetchall()]
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        con.close()


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait for ``check`` (polled), at most ``within`` seconds; ``what`` says what did not happen."""
    try:
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110  (databases and counters: nothing to wait on)
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(what)


async def test_two_workers_share_the_users_and_stop_together(broker_url: str, tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    argv = ["agent", "--workers", "2", "--broker", broker_url, "--db", str(db), "--instance", "wk", "--log-level",
            "warning"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        first = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        pids = {name: int(pid) for name, pid in re.findall(r"(wk-w\d) \(pid (\d+)", first)}
        assert set(pids) == {"wk-w0", "wk-w1"}, first
        shares = [WorkerShare(i, 2) for i in range(2)]
        dbs = [share.db(db) for share in shares]
        assert [p.name for p in dbs] == ["agent.w0.db", "agent.w1.db"]
        assert {s.owns(u) for u in USERS for s in shares if s.index == 0} == {True, False}, "both workers get users"

        answers: Counter[str] = Counter()
        sent: set[str] = set()
        async with Bus(BusOptions(url=broker_url, name="workers-test")) as bus:
            online: set[str] = set()
            await bus.subscribe("wb/v1/_agent/+/state", 1)
            await bus.subscribe("wb/v1/+/glasses/+/cmd/#", 1)

            async def watch() -> None:
                async for m in bus.messages():
                    if m.where.channel is Channel.AGENT_STATE and getattr(m.data, "online", False):
                        online.add(m.where.name or "")
                    elif m.envelope.corr:
                        answers[m.envelope.corr] += 1

            watcher = asyncio.create_task(watch())
            await until(lambda: {"wk-w0", "wk-w1"} <= online, 60, "both workers online")
            for user in USERS:
                for kind, dev in ((Kind.GLASSES, "g1"), (Kind.EARPHONES, "e1"), (Kind.RING, "r1")):
                    birth = make(DeviceState(online=True, kind=kind))
                    await bus.publish(f"wb/v1/{user}/{kind.value}/{dev}/state", birth, retain=True, wait=True)
            utterances: dict[str, str] = {}
            for user in USERS:
                said = make(Utterance(text="what time is it"), seq=1)
                utterances[said.id] = user
                await bus.publish(f"wb/v1/{user}/earphones/e1/evt/voice/utterance", said, wait=True)
                for n in range(HR_PER_USER):
                    hr = make(HeartRate(bpm=60 + n), seq=n + 1)
                    sent.add(hr.id)
                    await bus.publish(f"wb/v1/{user}/ring/r1/evt/sensor/hr", hr, wait=True)
            sent |= set(utterances)

            def stored() -> list[tuple[str, ...]]:
                return [r for d in dbs for r in rows(d, "SELECT id, user FROM events")]

            await until(lambda: set(utterances) <= set(answers), 60, "every utterance answered")
            await until(lambda: sent <= {r[0] for r in stored()}, 60, "every event stored")
            # each event in one database only, the database of the worker that owns its user
            ids = Counter(r[0] for r in stored() if r[0] in sent)
            assert all(n == 1 for n in ids.values()), ids.most_common(3)
            for share, path in zip(shares, dbs, strict=True):
                users = {r[1] for r in rows(path, "SELECT id, user FROM events") if r[0] in sent}
                assert users, path
                assert all(share.owns(u) for u in users), (path, users)
            actions = Counter(r[0] for d in dbs for r in rows(d, "SELECT event_seq, user FROM actions"))
            assert sum(actions.values()) >= len(USERS)
            # answered exactly once: a second answer would come from the other worker, which never reads the user
            assert all(answers[i] == 1 for i in utterances), answers
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

        # a worker killed: the command stops the other one and exits non-zero, naming it
        assert proc.returncode is None
        import os  # noqa: PLC0415

        os.kill(pids["wk-w1"], signal.SIGKILL)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        text = err.decode()
        assert proc.returncode != 0, text
        assert re.search(r"worker wk-w1 \(pid \d+\) was killed by signal 9; stopping the other workers", text), text
        with pytest.raises(ProcessLookupError):
            os.kill(pids["wk-w0"], 0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
