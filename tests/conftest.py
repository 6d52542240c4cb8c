"""Fixtures shared by every test layer: brokers to test against (the embedded one and a private Mosquitto)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import pytest

from broker.embedded import EmbeddedBroker, free_port
from testkit.mosquitto import MosquittoProcess, mosquitto_available

AGENT_USER, AGENT_PASSWORD = "agent", "agent-secret"


def require_mosquitto() -> None:
    """Skip when the mosquitto binary is absent (a laptop); under CI=true its absence is a failure."""
    if mosquitto_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but the mosquitto binary is missing: .ci/run must install it (apt-get install mosquitto)")
    pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto); Mosquitto cases skipped")


class BrokerUnderTest(Protocol):
    """A broker a contract test runs against."""

    name: str

    @property
    def url(self) -> str:
        """The broker URL."""

    async def restart(self) -> None:
        """Stop the broker and start it again on the same port (state kept where it persists)."""


@dataclass
class EmbeddedUnderTest:
    """The embedded amqtt broker, in this process."""

    broker: EmbeddedBroker
    name: str = "embedded"

    @property
    def url(self) -> str:
        return self.broker.url

    async def restart(self) -> None:
        await self.broker.__aexit__(None, None, None)
        self.broker = EmbeddedBroker(port=self.broker.port, users={AGENT_USER: AGENT_PASSWORD})
        await self.broker.__aenter__()


@dataclass
class MosquittoUnderTest:
    """A private mosquitto process started for the test."""

    process: MosquittoProcess
    name: str = "mosquitto"

    @property
    def url(self) -> str:
        return self.process.url

    async def restart(self) -> None:
        await self.process.restart()


@pytest.fixture(params=["embedded", "mosquitto"])
async def any_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerUnderTest]:
    """Each contract test runs once against the embedded broker and once against a private Mosquitto."""
    if request.param == "embedded":
        under = EmbeddedUnderTest(EmbeddedBroker(port=free_port(), users={AGENT_USER: AGENT_PASSWORD}))
        await under.broker.__aenter__()
        try:
            yield under
        finally:
            await under.broker.__aexit__(None, None, None)
    else:
        require_mosquitto()
        async with MosquittoProcess() as process:
            yield MosquittoUnderTest(process)
