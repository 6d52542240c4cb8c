"""Consent and erasure with the real agent runtime on a real broker (issue 22)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest

from agent.privacy import forget_user
from broker.client import Bus, BusOptions
from cli.privacy import clear_retained, set_consent
from cli.report import summarize
from schemas.actions import HealthSnapshot
from schemas.envelope import make
from schemas.events import HeartRate, Utterance
from schemas.topics import Channel, consent_topic, health_topic, matches
from testkit.raw import RawBus, RawMessage
from tests.conftest import BrokerUnderTest
from tests.contract.test_agent_runtime import agent, born

pytestmark = [pytest.mark.broker]


async def retained(url: str, topic_filter: str, quiet_s: float = 1.0) -> dict[str, bytes]:
    """The retained messages under a filter (whatever the broker sends within ``quiet_s`` of subscribing)."""
    got: dict[str, bytes] = {}

    def on_raw(raw: RawMessage) -> None:
        if raw.retain and raw.payload and matches(topic_filter, raw.topic):  # amqtt sends others' too
            got[raw.topic] = raw.payload

    async with RawBus(BusOptions(url=url, name=f"peek-{uuid.uuid4().hex[:6]}"), [on_raw]) as bus:
        await bus.subscribe(topic_filter, 1)
        await asyncio.sleep(quiet_s)
    return got


async def test_consent_is_stored_and_published_by_the_agent(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    user = f"c-{uuid.uuid4().hex[:8]}"
    url = any_broker.url
    async with agent(url, tmp_path / "a.db", f"agent-{user}"), Bus(BusOptions(url=url)) as dev:
        await dev.subscribe(health_topic(user), 1)
        await born(dev, user)
        assert await set_consent(url, user, "proactive-health", False, wait=15)
        await dev.publish(f"wb/v1/{user}/ring/r1/evt/sensor/hr", make(HeartRate(bpm=77.5)), wait=True)
        # The context is republished with the sample seen: without consent its health part holds no heart rate.
        async with asyncio.timeout(15):
            async for m in dev.messages():
                if isinstance(m.data, HealthSnapshot) and "hr" in m.data.values:
                    assert m.data.values["hr"] is None
                    break
        assert await set_consent(url, user, "proactive-health", True, wait=15)
    state = await retained(url, consent_topic(user))
    assert state, "the consent is retained"
    con = sqlite3.connect(tmp_path / "a.db")
    try:
        (payload,) = con.execute("SELECT payload FROM events WHERE type = 'ring.hr'").fetchone()
    finally:
        con.close()
    assert b"77.5" not in payload  # without consent no raw sample is kept: the stored copy is redacted
    assert "‹redacted›".encode() in payload


async def test_forget_erases_one_user_from_the_store_and_the_broker(
    any_broker: BrokerUnderTest, tmp_path: Path
) -> None:
    alice, bob = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("alice", "bob"))
    url, db = any_broker.url, tmp_path / "a.db"
    async with agent(url, db, f"agent-{alice}"), Bus(BusOptions(url=url)) as dev:
        await dev.subscribe("wb/v1/+/agent/context", 1)
        for user in (alice, bob):
            await born(dev, user)
            await dev.publish(f"wb/v1/{user}/earphones/b1/evt/voice/utterance", make(Utterance(text="what time is it")))
        seen: set[str] = set()
        async with asyncio.timeout(20):
            async for m in dev.messages():
                if m.where.channel is Channel.CONTEXT and m.where.user in {alice, bob}:
                    seen.add(m.where.user)
                    if seen == {alice, bob}:
                        break
    assert set(await retained(url, f"wb/v1/{alice}/#")) >= {f"wb/v1/{alice}/agent/context"}
    bob_retained = await retained(url, f"wb/v1/{bob}/#")

    removed = forget_user(db, alice)
    assert removed["events"] > 0
    cleared = await clear_retained(url, alice)
    assert f"wb/v1/{alice}/agent/context" in cleared

    con = sqlite3.connect(db)
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in con.execute(f"SELECT * FROM {table}"):  # noqa: S608 (names from sqlite_master)
                text = b" ".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
                assert alice.encode() not in text, (table, row)
        assert con.execute("SELECT COUNT(*) FROM events WHERE user = ?", (bob,)).fetchone()[0] > 0
    finally:
        con.close()
    assert await retained(url, f"wb/v1/{alice}/#") == {}
    assert await retained(url, f"wb/v1/{bob}/#") == bob_retained
    summary = await summarize(db)  # the report still works for the others
    assert summary.stored["events"] > 0
    assert summary.stored["context"] == 1  # bob's
