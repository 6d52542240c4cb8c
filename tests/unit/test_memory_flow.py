"""An agent and devices in one process on the in-memory bus, no sockets: the agent and the device SDK open their
bus by URL (``memory://NAME``), so a sentence from the earphones comes back as an action a device carries out and
acknowledges, through the same code as on a broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

import msgpack
import structlog.testing

from agent.runtime import AgentRuntime, AgentSettings
from bench import mix
from broker.bus import BusOptions, Outgoing
from broker.connect import open_bus
from broker.memory import MemoryBroker, MemoryBus
from devices.sdk import Device, DeviceConfig, on_action
from schemas import codec
from schemas.actions import Ack, ShowCard, Speak
from schemas.envelope import Envelope, now_ms
from schemas.events import GlassesWear, Utterance
from schemas.topics import Kind

HEAD_POSE = {"type": "glasses.head_pose", "roll_deg": 1.0, "pitch_deg": -2.0, "heading_deg": 90.0}


class Buds(Device):
    kind = Kind.EARPHONES
    said: list[str]

    @on_action(Speak)
    async def speak(self, action: Speak, envelope: Envelope[Speak]) -> str:
        self.said.append(action.text)
        return "said"


class Specs(Device):
    kind = Kind.GLASSES
    shown: list[str]

    @on_action(ShowCard)
    async def card(self, action: ShowCard, envelope: Envelope[ShowCard]) -> str:
        self.shown.append(action.title)
        return "shown"


async def test_a_sentence_becomes_an_action_a_device_acknowledges(tmp_path: Path) -> None:
    broker = MemoryBroker.named("flow")
    try:
        config = DeviceConfig(url=broker.url, heartbeat_s=0)
        buds, specs = Buds("alice", "b1", config), Specs("alice", "g1", config)
        buds.said, specs.shown = [], []
        settings = AgentSettings(url=broker.url, db=tmp_path / "a.db", instance="agent-mem")
        watch = open_bus(BusOptions(url=broker.url, name="watch"))
        async with AgentRuntime(settings) as agent, watch, specs, buds:
            await watch.subscribe("wb/v1/alice/+/+/ack", 1)
            await agent.wait_connected(5)
            specs.emit(GlassesWear(state="donned"))
            buds.emit(Utterance(text="what time is it"))
            async with asyncio.timeout(10):
                while not (buds.said or specs.shown) or not watch.inbox:  # noqa: ASYNC110 (bounded)
                    await asyncio.sleep(0.01)
        ack = watch.inbox[0].data
        assert isinstance(ack, Ack)
        assert ack.status == "done"
        assert ack.detail in {"said", "shown"}
    finally:
        MemoryBroker.forget("flow")


async def test_behind_a_flood_of_qos0_samples_the_agent_holds_at_most_two_batches(tmp_path: Path) -> None:
    """QoS 0 samples are never acknowledged, so the receive maximum does not bound them: the agent takes from the
    bus only what fits beside the two batches it may hold; the rest waits in the bus (whose reading pauses at its
    high-water mark on a socket) and then in the broker, not in the agent's memory."""
    broker = MemoryBroker.named("flood")
    batch, users, per_device = 50, 30, 20
    try:
        settings = AgentSettings(url=broker.url, db=tmp_path / "a.db", instance="agent-flood", batch=batch)
        sender = open_bus(BusOptions(url=broker.url, name="glasses"))
        async with AgentRuntime(settings) as agent, sender:
            await agent.wait_connected(5)
            now = now_ms()
            # All of it is in the agent's bus before its pump turns: the memory bus delivers at once.
            for i in range(per_device):
                for u in range(users):
                    topic = f"wb/v1/u{u}/glasses/g1/evt/sensor/head_pose"
                    sender.publish_unconfirmed(Outgoing(topic, mix.pack(f"hp-{u}-{i}", now, 0, HEAD_POSE), 0))
            async with asyncio.timeout(20):
                while agent.stats.processed < users * per_device:  # noqa: ASYNC110 (bounded)
                    await asyncio.sleep(0.01)
        assert agent.stats.in_hand_peak <= 2 * batch
        assert agent.stats.refused == 0
    finally:
        MemoryBroker.forget("flood")


class Recorder(MemoryBus):
    """The agent's bus: records what the agent publishes, and when its first answer goes out, the user says a
    second sentence (it reaches the agent's inbox during that pump turn: the memory broker delivers at once)."""

    sent: ClassVar[list[str]] = []

    def publish_future(self, out: Outgoing, *, fmt: codec.Format | None = None) -> asyncio.Future[None]:
        corr = msgpack.unpackb(out.payload).get("corr") or ""
        Recorder.sent.append(f"answer:{corr}")
        if corr == "q-1":
            topic = "wb/v1/alice/earphones/e1/evt/voice/utterance"
            payload = mix.pack("q-2", now_ms(), 2, mix.utterance("what time is it"))
            self.broker.publish(topic, payload, 1, False, codec.content_type("msgpack"))
        return super().publish_future(out, fmt=fmt)

    async def publish_raw(self, out: Outgoing, *, wait: bool = False, fmt: codec.Format | None = None) -> None:
        if out.topic.endswith("/agent/context"):
            Recorder.sent.append("context")
        await super().publish_raw(out, wait=wait, fmt=fmt)


async def test_a_sentence_that_came_during_a_turn_is_answered_before_that_turns_context_slice(tmp_path: Path) -> None:
    broker = MemoryBroker.named("answer-first")
    Recorder.sent = []
    try:
        settings = AgentSettings(url=broker.url, db=tmp_path / "a.db", instance="agent-first", heartbeat_misses=0)
        earphones = open_bus(BusOptions(url=broker.url, name="earphones"))
        async with AgentRuntime(settings, bus_factory=lambda o: Recorder(o, broker=broker)) as agent, earphones:
            await agent.wait_connected(5)
            topic = "wb/v1/alice/earphones/e1/evt/voice/utterance"
            earphones.publish_unconfirmed(
                Outgoing(topic, mix.pack("q-1", now_ms(), 1, mix.utterance("how are you")), 1)
            )
            async with asyncio.timeout(10):
                while "context" not in Recorder.sent or "answer:q-2" not in Recorder.sent:  # noqa: ASYNC110 (bounded)
                    await asyncio.sleep(0.01)
        sent = Recorder.sent
        assert sent.index("answer:q-1") < sent.index("answer:q-2") < sent.index("context")
    finally:
        MemoryBroker.forget("answer-first")


async def test_a_slow_turns_report_times_the_loops_pass_apart_from_the_slices_after_it(tmp_path: Path) -> None:
    """The pass of the event loop at the end of a turn reads (and the bus decodes) what came during the turn: it is
    its own part of the report (``read_ms``), not part of the snapshot or context slices that follow it."""
    broker = MemoryBroker.named("turn-report")
    try:
        settings = AgentSettings(url=broker.url, db=tmp_path / "a.db", instance="agent-turns", slow_turn_ms=1e-6)
        sender = open_bus(BusOptions(url=broker.url, name="glasses"))
        with structlog.testing.capture_logs() as logs:
            async with AgentRuntime(settings) as agent, sender:
                await agent.wait_connected(5)
                now = now_ms()
                for i in range(20):
                    topic = "wb/v1/u1/glasses/g1/evt/sensor/head_pose"
                    sender.publish_unconfirmed(Outgoing(topic, mix.pack(f"hp-{i}", now, i + 1, HEAD_POSE), 0))
                async with asyncio.timeout(20):  # every event handled, and a turn that handled some reported
                    # (its report comes at the turn's end: leaving once the count is reached raced with it)
                    while agent.stats.processed < 20 or not any(  # noqa: ASYNC110 (bounded)
                        entry["event"] == "pump_turn_slow" and "process_ms" in entry for entry in logs
                    ):
                        await asyncio.sleep(0.01)
        turns = [entry for entry in logs if entry["event"] == "pump_turn_slow"]
        handled = [entry for entry in turns if "process_ms" in entry]
        assert handled
        assert all({"order_ms", "read_ms"} <= set(entry) for entry in turns)
        assert all("ack_ms" in entry for entry in handled)
        assert any("prune_ms" in entry for entry in turns)  # the health retention: its first pass is at start
        for entry in turns:
            laps = [value for key, value in entry.items() if key.endswith("_ms") and key not in {"total_ms", "gc_ms"}]
            parts = sum(laps)
            assert parts <= entry["total_ms"] + 0.1 * len(laps)  # laps of the turn (each rounded to 0.1 ms)
    finally:
        MemoryBroker.forget("turn-report")
