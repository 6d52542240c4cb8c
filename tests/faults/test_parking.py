"""Issue 18, item 2: a message that keeps failing inside the agent is parked on the DLQ, not retried for ever.

A message the agent cannot get past (here: a real SQLite trigger that aborts the insert of one event id, as a
constraint the data breaks would) ends the agent's process; unacknowledged, the broker delivers it again at the next
start, and before, the agent failed on it at every start for ever, and every message of its batch with it. Now the
messages of a failed batch are counted (a file next to the database), handled one at a time at the next start, and
the one that failed ``max_attempts`` (3) times is dead-lettered as ``parked``; the rest are stored.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.client import Outgoing
from schemas import codec
from schemas.envelope import envelope_of, make, now_ms
from schemas.events import HeartRate
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
HR = f"{device_id('alice', Kind.RING).prefix}/evt/sensor/hr"
STARTS = 6


def _trap(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.id = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'this event cannot be stored'); END"
    )
    con.commit()
    con.close()


async def test_a_message_that_keeps_failing_is_parked(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    creds = fleet(["alice"])
    counts = Counts("parking")
    db_path = tmp_path / "agent.db"
    async with secure_broker(creds) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(broker.url, db_path, tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        await agent.start()
        await observer.agent_online(agent)
        await agent.stop()
        _trap(db_path)  # the schema exists now

        ring = await stack.enter_async_context(device_bus(creds, "alice", Kind.RING, broker.url))
        poison = envelope_of(HeartRate)(id="poison", ts=now_ms(), data=HeartRate(bpm=70))
        others = [make(HeartRate(bpm=71 + i)) for i in range(20)]
        for env in [poison, *others]:
            await ring.publish_raw(Outgoing(HR, codec.encode(env), 1), wait=True)

        db = AgentDb(db_path)
        wanted = {env.id for env in others}
        starts = crashes = 0
        for _ in range(STARTS):  # a supervisor restarting it
            await agent.start()
            starts += 1

            def done() -> bool:
                return not agent.running or any(d.reason == "parked" for d in observer.dlq)

            await wait_for(done, "the agent to fail or to park the poison", 60)
            if not agent.running:
                crashes += 1
                await agent.stop()
                continue
            break

        async def others_stored() -> bool:
            return wanted <= await db.ids()

        if agent.running:
            await wait_for_async(others_stored, "the other events stored", 60)
        stored = len(wanted & await db.ids())
        parked = [d for d in observer.dlq if d.reason == "parked"]

    counts["sent"] = len(others) + 1
    counts["processed"] = stored
    counts["dead_lettered"] = len(parked)
    counts["starts"] = starts
    counts["crashes"] = crashes
    counts.report(record_property)
    assert len(parked) == 1, f"parked: {parked}"
    assert parked[0].topic == HR
    assert stored == len(others)
    assert crashes == 3, f"{crashes} crashes before the poison was parked"
