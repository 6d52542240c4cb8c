"""The agent runtime over a real broker (and over the in-memory bus, no sockets): a paid task in two rounds, and a
restart in the middle of it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agent import store as agent_store
from agent.runtime import AgentRuntime, AgentSettings, pump
from agent.store import Store
from broker.bus import Bus, BusOptions
from broker.connect import open_bus
from schemas.actions import DeviceState
from schemas.envelope import Message, make
from schemas.events import GlassesWear, HeartRate, Money, RingGesture, TaskStatus, Utterance
from schemas.topics import Channel, Kind
from tests.conftest import AGENT_PASSWORD, AGENT_USER, BrokerUnderTest, broker_under_test

pytestmark = [pytest.mark.broker]
DEVICES = {"glasses": "g1", "ring": "r1", "earphones": "b1", "phone": "p1"}


@pytest.fixture(params=["memory", "embedded", "mosquitto"])
async def any_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerUnderTest]:
    """The agent's flows on the in-memory bus (the agent opens its bus by URL: memory://), the embedded broker and
    a private Mosquitto."""
    async with broker_under_test(request.param) as under:
        yield under


@asynccontextmanager
async def agent(url: str, db: Path, instance: str) -> AsyncIterator[AgentRuntime]:
    settings = AgentSettings(url=url, db=db, instance=instance, username=AGENT_USER, password=AGENT_PASSWORD)
    async with AgentRuntime(settings) as runtime:
        await runtime.wait_connected(15)
        yield runtime


async def next_command(dev: Bus, name: str, within: float = 10) -> Message:
    async with asyncio.timeout(within):
        async for m in dev.messages():
            if m.where.channel is Channel.COMMAND and m.where.name == name:
                return m
    raise AssertionError(name)  # pragma: no cover


async def born(dev: Bus, user: str) -> None:
    for kind, did in DEVICES.items():
        await dev.publish(f"wb/v1/{user}/{kind}/{did}/state", make(DeviceState(online=True, kind=Kind(kind))),
                          retain=True, wait=True)  # fmt: skip
    await dev.publish(f"wb/v1/{user}/glasses/g1/evt/system/wear", make(GlassesWear(state="donned")), wait=True)


async def quote(dev: Bus, user: str, start: Message) -> None:
    status = TaskStatus(task_id=start.data.task_id, skill="order_food", status="quoted", eta_s=1800,  # type: ignore[attr-defined]
                        price=Money(amount=32))  # fmt: skip
    await dev.publish(f"wb/v1/{user}/phone/p1/evt/system/task_status", make(status, corr=start.envelope.id), wait=True)


async def test_food_order_in_two_rounds(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    user = f"t-{uuid.uuid4().hex[:8]}"
    dev_bus = open_bus(BusOptions(url=any_broker.url))
    async with agent(any_broker.url, tmp_path / "a.db", f"agent-{user}"), dev_bus as dev:
        await dev.subscribe(f"wb/v1/{user}/+/+/cmd/#", 1)
        await born(dev, user)
        await dev.publish(f"wb/v1/{user}/earphones/b1/evt/voice/utterance",
                          make(Utterance(text="order my usual noodles")), wait=True)  # fmt: skip
        start = await next_command(dev, "task.start")
        await quote(dev, user, start)
        card = await next_command(dev, "display.card")
        assert card.envelope.corr is not None
        await dev.publish(f"wb/v1/{user}/ring/r1/evt/gesture/press", make(RingGesture(gesture="press")), wait=True)
        confirm = await next_command(dev, "task.confirm")
        assert confirm.data.task_id == start.data.task_id  # type: ignore[attr-defined]
    async with Store(tmp_path / "a.db") as store:
        [task] = await store.tasks()
    assert task.rounds == 2
    assert task.confirm_modality == "ring"


async def test_restart_mid_task_carries_on_and_repeats_nothing(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    user = f"t-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "a.db"
    instance = f"agent-{user}"
    async with open_bus(BusOptions(url=any_broker.url)) as dev:
        await dev.subscribe(f"wb/v1/{user}/+/+/cmd/#", 1)
        async with agent(any_broker.url, db, instance):
            await born(dev, user)
            await dev.publish(f"wb/v1/{user}/earphones/b1/evt/voice/utterance",
                              make(Utterance(text="order my usual noodles")), wait=True)  # fmt: skip
            start = await next_command(dev, "task.start")
            await quote(dev, user, start)
            await next_command(dev, "display.card")
        # the agent is gone; the confirmation is queued for its persistent session
        await dev.publish(f"wb/v1/{user}/ring/r1/evt/gesture/press", make(RingGesture(gesture="press")), wait=True)
        async with agent(any_broker.url, db, instance) as runtime:
            confirm = await next_command(dev, "task.confirm", within=15)
            assert confirm.data.task_id == start.data.task_id  # type: ignore[attr-defined]
            assert runtime.stats.replayed >= 0
            # nothing else is sent again within a quiet second: no second task.start or confirm
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            again: list[Message] = []
            while (left := deadline - loop.time()) > 0:
                again += await dev.next_batch(100, timeout=left)
            repeated = [m.topic for m in again if m.where.name in {"task.start", "task.confirm"}]
            assert repeated == []
    async with Store(db) as store:
        counts = dict(await store.rows("SELECT type, COUNT(*) FROM actions GROUP BY type"))
    assert counts["task.start"] == 1
    assert counts["task.confirm"] == 1


async def test_a_retry_with_a_fresh_ts_is_acted_on_once(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    """The dedup key is the id alone (the contract): a device that retries an event keeps its id, and may stamp a
    fresh ts. Under the (ts, id) key of store v7 the retry was taken for a new event and acted on twice."""
    user = f"t-{uuid.uuid4().hex[:8]}"
    topic = f"wb/v1/{user}/glasses/g1/evt/voice/utterance"
    async with (
        agent(any_broker.url, tmp_path / "a.db", f"agent-{user}"),
        open_bus(BusOptions(url=any_broker.url)) as dev,
    ):
        await dev.subscribe(f"wb/v1/{user}/+/+/cmd/#", 1)
        await born(dev, user)
        first = make(Utterance(text="Take a photo"))
        await dev.publish(topic, first, wait=True)
        await dev.publish(topic, first.model_copy(update={"ts": first.ts + 5_000}), wait=True)  # the retry
        await dev.publish(topic, make(Utterance(text="Take a video")), wait=True)  # a new event, after the retry
        kinds: list[str] = []
        async with asyncio.timeout(15):
            async for m in dev.messages():
                if m.where.channel is Channel.COMMAND and m.where.name == "camera.capture":
                    kinds.append(m.data.kind)  # type: ignore[attr-defined]
                    if kinds[-1] == "video":
                        break
        assert kinds == ["photo", "video"]
    async with Store(tmp_path / "a.db") as store:
        assert await store.scalar("SELECT COUNT(*) FROM events WHERE id = ?", first.id) == 1


async def test_the_agent_deletes_events_past_the_log_retention_as_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pump's retention pass deletes what is older than ``log_retention_s`` once a snapshot covers it, and the
    event's id with it: the dedup's horizon is the log's, and what is younger stays."""
    monkeypatch.setattr(pump, "PRUNE_EVERY_S", 0.05)
    monkeypatch.setattr(agent_store, "MERGE_AT", 4)  # the dedup table's mark moves every few events, not 8,192
    monkeypatch.setattr(agent_store, "MERGE_CHUNK", 4)
    user = f"u-{uuid.uuid4().hex[:8]}"
    topic = f"wb/v1/{user}/ring/r1/evt/sensor/hr"
    async with broker_under_test("memory") as under:
        settings = AgentSettings(url=under.url, db=tmp_path / "a.db", instance=f"agent-{user}",
                                 log_retention_s=0.5, snapshot_s=0.05)  # fmt: skip
        async with AgentRuntime(settings) as runtime, open_bus(BusOptions(url=under.url)) as dev:
            await runtime.wait_connected(15)
            store = runtime.store
            assert isinstance(store, Store)
            first = make(HeartRate(bpm=61))
            await dev.publish(topic, first, wait=True)
            async with asyncio.timeout(30):
                while not await store.scalar("SELECT COUNT(*) FROM events WHERE id = ?", first.id):  # noqa: ASYNC110 (a database: nothing to wait on)
                    await asyncio.sleep(0.02)
                while await store.scalar("SELECT COUNT(*) FROM events WHERE id = ?", first.id):
                    await dev.publish(topic, make(HeartRate(bpm=62)), wait=True)  # batches move the merge on
                    await asyncio.sleep(0.1)
            assert await store.known([first.id]) == set()
            newest = await store.scalar("SELECT MAX(received_wall_ms) FROM events")
            young = await store.rows("SELECT id FROM events WHERE received_wall_ms > ?", newest - 250)
            assert young, "what is younger than the retention stays"
            assert await store.known([row[0] for row in young]) == {row[0] for row in young}
