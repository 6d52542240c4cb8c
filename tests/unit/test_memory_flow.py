"""An agent and devices in one process on the in-memory bus, no sockets: the agent and the device SDK open their
bus by URL (``memory://NAME``), so a sentence from the earphones comes back as an action a device carries out and
acknowledges, through the same code as on a broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.runtime import AgentRuntime, AgentSettings
from broker.bus import BusOptions
from broker.connect import open_bus
from broker.memory import MemoryBroker
from devices.sdk import Device, DeviceConfig, on_action
from schemas.actions import Ack, ShowCard, Speak
from schemas.envelope import Envelope
from schemas.events import GlassesWear, Utterance
from schemas.topics import Kind


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
