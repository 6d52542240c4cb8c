"""Issue 18, item 2, over the wire: every message ends somewhere.

JSON nested 10,000 levels once raised ``RecursionError`` in the codec: the message was logged with its frame
locals, never dead-lettered, never acknowledged, and re-sent on every reconnect; 1,050 of them (one device login's
worth) stopped the agent for every user, also after a restart. Messages rejected before the connection was up
(a persistent session's queue arrives right behind the CONNACK) were never acknowledged either.

Here the poison waits in the agent's session while it is away (so all of it is rejected while the connection comes
up), with another user's event behind it: the other user's event must be stored, every poison message must be on
the DLQ once, and after a restart none may come back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.client import Outgoing
from schemas import codec
from schemas.envelope import make
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
POISON = 1050
ALICE_HR = f"{device_id('alice', Kind.RING).prefix}/evt/sensor/hr"
BOB_HR = f"{device_id('bob', Kind.RING).prefix}/evt/sensor/hr"


def poison(i: int) -> bytes:
    """An envelope whose data is JSON nested 10,000 levels deep."""
    return b'{"id":"p%d","ts":1,"data":' % i + b"[" * 10_000 + b"]" * 10_000 + b"}"


async def test_poison_ends_on_the_dlq_acknowledged_and_never_comes_back(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    creds = fleet(["alice", "bob"])
    counts = Counts("poison")
    async with secure_broker(creds) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        db = AgentDb(agent.db)
        await agent.start()
        await observer.agent_online(agent)
        await agent.stop()  # away: its persistent session queues what follows

        ring = await stack.enter_async_context(device_bus(creds, "alice", Kind.RING, broker.url))
        other = await stack.enter_async_context(device_bus(creds, "bob", Kind.RING, broker.url))
        for i in range(POISON):
            await ring.publish_raw(Outgoing(ALICE_HR, poison(i), 1), wait=True)
        good = make(HeartRate(bpm=70))
        await other.publish_raw(Outgoing(BOB_HR, codec.encode(good), 1), wait=True)

        await agent.start()
        took = await wait_for_async(
            lambda: db.scalar("SELECT count(*) FROM events WHERE id = ?", good.id),
            "the other user's event behind the poison",
            120,
        )

        def mine() -> int:
            return sum(1 for d in observer.dlq if d.topic == ALICE_HR and d.reason == "decode")

        await wait_for(lambda: mine() >= POISON, f"{POISON} dead letters", 60)

        # A restart: nothing of it may come back (it was acknowledged), and the log stays small.
        await agent.stop()
        await agent.start()
        await observer.agent_online(agent)
        # A canary behind anything redelivered: its dead letter comes after theirs.
        await other.publish_raw(Outgoing(BOB_HR, b"\xc1canary", 1), wait=True)
        await wait_for(lambda: any(d.topic == BOB_HR for d in observer.dlq), "the canary's dead letter", 60)
        log = agent.log.read_text(encoding="utf-8", errors="replace")

    counts["sent"] = POISON
    counts["dead_lettered"] = mine()
    counts["other_user_s"] = round(took, 2)
    counts["log_bytes"] = len(log)
    counts.report(record_property)
    assert mine() == POISON, f"{mine()} dead letters for {POISON} poison messages (some came back)"
    assert "message_callback_failed" not in log
    assert "[[[[[[[[" not in log, "payload bytes in the log"
    assert len(log) < 256 * 1024, f"{len(log)} bytes of log"


async def test_rejected_before_the_connection_is_up_is_dead_lettered_and_acknowledged(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """A persistent session's queue arrives right behind the CONNACK, before the bus counts itself connected: what
    it rejected then was neither dead-lettered nor acknowledged, and came back at every start."""
    creds = fleet(["alice", "bob"])
    counts = Counts("rejected-early")
    garbage = 50
    async with secure_broker(creds) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        await agent.start()
        await observer.agent_online(agent)
        await agent.stop()
        ring = await stack.enter_async_context(device_bus(creds, "alice", Kind.RING, broker.url))
        other = await stack.enter_async_context(device_bus(creds, "bob", Kind.RING, broker.url))
        for i in range(garbage):
            await ring.publish_raw(Outgoing(ALICE_HR, b"\xc1 garbage %d" % i, 1), wait=True)

        def mine() -> int:
            return sum(1 for d in observer.dlq if d.topic == ALICE_HR)

        for start in range(2):
            await agent.start()
            await observer.agent_online(agent)
            await other.publish_raw(Outgoing(BOB_HR, b"\xc1canary", 1), wait=True)
            seen = start + 1
            await wait_for(
                lambda: sum(1 for d in observer.dlq if d.topic == BOB_HR) >= seen,  # noqa: B023
                "the canary's dead letter",
                60,
            )
            await agent.stop()

    counts["sent"] = garbage
    counts["dead_lettered"] = mine()
    counts.report(record_property)
    assert mine() == garbage, f"{mine()} dead letters for {garbage} rejected messages over two starts"
