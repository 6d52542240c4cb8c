"""End to end with the project's own test kit: the agent and the four emulators as real processes, a food order
driven by topic-level expectations, on the embedded broker and on a private Mosquitto."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.client import Bus
from schemas.envelope import Message, make
from schemas.events import RingGesture, Utterance
from testkit.expect import Expect, UserTopics, has
from testkit.mosquitto import MosquittoProcess
from testkit.process import ProcessFactory
from tests.conftest import require_mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]
DEVICES = {"glasses": "glasses-1", "ring": "ring-1", "earphones": "buds-1", "phone": "phone-1"}
ASKS = {"display.card", "audio.speak", "phone.prompt"}


class TestFoodOrderThroughTheStack:
    @pytest.fixture(params=["embedded", "mosquitto"])
    def broker_kind(self, request: pytest.FixtureRequest) -> str:
        kind: str = request.param
        return kind

    @pytest.fixture
    async def wb_url(self, broker_kind: str, wb_broker_url: str) -> AsyncIterator[str]:
        """Every wearbus fixture of these tests uses this broker."""
        if broker_kind == "embedded":
            yield wb_broker_url
            return
        require_mosquitto()
        async with MosquittoProcess() as mosquitto:
            yield mosquitto.url

    async def test_order_confirmed_with_the_ring(
        self,
        wb_url: str,
        wb_process: ProcessFactory,
        wb_expect: Expect,
        wb_bus: Bus,
        wb_topics: UserTopics,
        tmp_path: Path,
    ) -> None:
        u = wb_topics.user
        clock = ["--speed", "20", "--sim-anchor", str(int(time.time() * 1000))]
        await wb_process("agent", "--broker", wb_url, "--db", str(tmp_path / "agent.db"), "--instance", f"agent-{u}",
                         *clock, name="agent")  # fmt: skip
        for kind, device in DEVICES.items():
            await wb_process("device", kind, "--user", u, "--id", device, "--broker", wb_url, *clock, name=kind)
        for kind, device in DEVICES.items():
            await wb_expect.message(wb_topics.state(kind, device), where=has(online=True), within=30)
        await wb_expect.message("wb/v1/_agent/+/state", where=has(online=True), within=30)

        said = make(Utterance(text="order my usual noodles"))
        await wb_bus.publish(wb_topics.event("earphones", "buds-1", "voice", "utterance"), said, wait=True)
        start, quoted = await wb_expect.sequence(
            [
                (wb_topics.command("phone", "phone-1", "task.start"), lambda m: m.envelope.corr == said.id),
                (wb_topics.event("phone", "phone-1", "system", "task_status"), has(status="quoted")),
            ],
            within=30,
        )
        task_id = start.data.task_id  # type: ignore[attr-defined]

        def asks(m: Message) -> bool:
            return m.where.name in ASKS and task_id in str(m.envelope.data)

        await wb_expect.message(f"{wb_topics.all[:-2]}/+/+/cmd/#", where=asks, within=30)

        await wb_bus.publish(wb_topics.event("ring", "ring-1", "gesture", "press"), make(RingGesture(gesture="press")))
        await wb_expect.message(wb_topics.command("phone", "phone-1", "task.confirm"), where=has(task_id=task_id),
                                within=30)  # fmt: skip
        await wb_expect.message(
            wb_topics.event("phone", "phone-1", "system", "task_status"), where=has(task_id=task_id, status="placed"),
            within=60,
        )  # fmt: skip
        acks = wb_expect.seen(f"{wb_topics.all[:-2]}/+/+/ack")
        assert acks, "no device acknowledged anything"
        assert all(m.data.status == "done" for m in acks), [m.data for m in acks]  # type: ignore[attr-defined]
        assert quoted.data.price is not None  # type: ignore[attr-defined]
