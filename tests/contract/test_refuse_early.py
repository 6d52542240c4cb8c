"""Issue 21, item 3: what cannot work is refused at once, saying why (two agents with one id, a wrong password)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from agent.runtime import AgentRuntime, AgentSettings, InstanceTaken
from broker.client import Bus, BusOptions, Outgoing
from broker.embedded import EmbeddedBroker
from broker.net import free_port
from schemas import codec
from schemas.actions import AgentState
from schemas.envelope import make
from schemas.errors import BusConnectionError
from schemas.topics import agent_state_topic
from tests.conftest import AGENT_PASSWORD, AGENT_USER, BrokerUnderTest

pytestmark = [pytest.mark.broker]


def settings(url: str, db: Path, instance: str = "dup-1") -> AgentSettings:
    return AgentSettings(url=url, db=db, instance=instance, username=AGENT_USER, password=AGENT_PASSWORD)


async def test_a_second_agent_with_the_same_id_refuses_and_names_the_holder(
    any_broker: BrokerUnderTest, tmp_path: Path
) -> None:
    async with AgentRuntime(settings(any_broker.url, tmp_path / "a.db")) as first:
        await first.wait_connected(15)
        second = AgentRuntime(settings(any_broker.url, tmp_path / "b.db"))
        with pytest.raises(InstanceTaken) as refused:
            await second.__aenter__()
        message = str(refused.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
        assert "wb/v1/_agent/dup-1/state" in message
        assert "--instance" in message
        assert first.bus.connected  # the holder was not disturbed
    # once the first stopped cleanly (its goodbye says offline), the id is free
    async with AgentRuntime(settings(any_broker.url, tmp_path / "b.db")) as again:
        await again.wait_connected(15)


async def test_a_crashed_holder_on_this_host_does_not_block_a_restart(
    any_broker: BrokerUnderTest, tmp_path: Path
) -> None:
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")  # a process id that no longer runs
    await dead.wait()
    stale = AgentState(online=True, instance="dup-2", host=socket.gethostname(), pid=dead.pid)
    topic = agent_state_topic("dup-2")
    async with Bus(BusOptions(url=any_broker.url, username=AGENT_USER, password=AGENT_PASSWORD)) as bus:
        await bus.publish_raw(Outgoing(topic, codec.encode(make(stale)), 1, True), wait=True)
    started = time.monotonic()
    async with AgentRuntime(settings(any_broker.url, tmp_path / "c.db", "dup-2")) as agent:
        await agent.wait_connected(15)
    assert time.monotonic() - started < 30  # not the 47 s (1.5 x keep-alive + 2) a holder elsewhere gets for its Will


async def test_a_wrong_password_fails_at_once_with_the_brokers_reason() -> None:
    async with EmbeddedBroker(port=free_port(), users={AGENT_USER: AGENT_PASSWORD}) as broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        with pytest.raises(BusConnectionError) as refused:
            # a minute to connect: a bus that retried would end with "could not connect ... within 60 s"
            async with Bus(BusOptions(url=url, username=AGENT_USER, password="wrong", connect_timeout_s=60)):
                pass
        message = str(refused.value)
        assert "refused the login" in message, message
        assert "within" not in message
        assert "Connection Refused" in message  # the broker's own reason
