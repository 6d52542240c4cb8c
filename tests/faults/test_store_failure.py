"""Issue 18, item 3: a store that fails for good ends the agent, visibly, and loses nothing acknowledged.

"database or disk is full" once left the agent alive with no connection and no answers, so ``Restart=on-failure``
never fired. A real agent process runs with its database capped (``--db-max-mb``: SQLite's ``max_page_count``,
which makes SQLite itself fail with SQLITE_FULL, as a full disk does); a phone publishes notifications until the
agent ends. It must end with exit status 74 and say why; restarted without the cap, it must store every event the
broker acknowledged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.failfast import EXIT_STORE
from broker.client import Outgoing
from schemas import codec
from schemas.envelope import make, now_ms
from schemas.events import Notification
from schemas.topics import Kind
from tests.faults.harness import (
    TAP,
    AgentDb,
    AgentProcess,
    Counts,
    Observer,
    device_bus,
    device_id,
    fleet,
    secure_broker,
    wait_for,
    wait_for_async,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]
NOTE = f"{device_id('alice', Kind.PHONE).prefix}/evt/system/notification"
MAX_EVENTS = 4000


async def test_a_full_store_ends_the_agent_with_74_and_loses_nothing(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    creds = fleet(["alice"])
    counts = Counts("store-full")
    db_path = tmp_path / "agent.db"
    async with secure_broker(creds) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        capped = AgentProcess(broker.url, db_path, tmp_path / "agent.log", extra=("--db-max-mb", "2"))
        stack.push_async_callback(capped.stop)
        await capped.start()
        await observer.agent_online(capped)
        phone = await stack.enter_async_context(device_bus(creds, "alice", Kind.PHONE, broker.url))
        sent: list[str] = []
        start = now_ms() - MAX_EVENTS * 100  # published 10 a second (below the rate limit), delivered now
        for i in range(MAX_EVENTS):
            if not capped.running:
                break
            body = Notification(app="chat", title=f"message {i}", body="x" * 1000)
            env = make(body, ts=start + i * 100)
            await phone.publish_raw(Outgoing(NOTE, codec.encode(env), 1), wait=True)  # the broker has it
            sent.append(env.id)
        await wait_for(lambda: not capped.running, "the capped agent to end", 60)
        status = await capped.stop()
        log = capped.log_tail(20_000)

        db = AgentDb(db_path)
        stored_when_full = await db.scalar("SELECT count(*) FROM events WHERE type = 'phone.notification'")
        agent = AgentProcess(broker.url, db_path, tmp_path / "agent2.log")
        stack.push_async_callback(agent.stop)
        await agent.start()

        async def all_stored() -> bool:
            got = await db.scalar("SELECT count(*) FROM events WHERE type = 'phone.notification'")
            return int(got or 0) >= len(sent)

        await wait_for_async(all_stored, f"all {len(sent)} acknowledged events stored after the restart", 120)
        ids = await db.ids("SELECT id FROM events WHERE type = 'phone.notification'")

    counts["sent"] = len(sent)
    counts["acknowledged"] = len(sent)
    counts["processed"] = len(ids & set(sent))
    counts["lost"] = len(set(sent) - ids)
    counts["stored_when_full"] = int(stored_when_full or 0)
    counts["exit_status"] = status if status is not None else -1
    counts.report(record_property)
    assert status == EXIT_STORE, f"exit status {status}; log:\n{log[-3000:]}"
    assert "store_failed" in log, log[-3000:]
    assert "SQLITE_FULL" in log, log[-3000:]
    # (how many were sent before the agent ended is the machine's speed: a slow agent ends after the last publish)
    assert not set(sent) - ids, f"{len(set(sent) - ids)} acknowledged events lost"
