"""Fixtures shared by every test layer: brokers to test against (the embedded one and a private Mosquitto)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import pytest

from broker import client
from broker.bus import BusOptions
from broker.embedded import EmbeddedBroker, free_port
from broker.memory import MemoryBroker
from testkit.mosquitto import MosquittoProcess, mosquitto_available

AGENT_USER, AGENT_PASSWORD = "agent", "agent-secret"


def needs_binary(name: str, package: str) -> pytest.MarkDecorator:
    """Skip a test without ``name`` on a laptop; under CI=true never: the test runs and fails on the missing binary."""
    missing = shutil.which(name) is None and os.environ.get("CI") != "true"
    return pytest.mark.skipif(missing, reason=f"{name} is not installed (apt-get install {package})")


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


@dataclass
class MemoryUnderTest:
    """The in-memory broker of :mod:`broker.memory` (``memory://NAME``): no sockets."""

    broker: MemoryBroker
    name: str = "memory"

    @property
    def url(self) -> str:
        return self.broker.url

    async def restart(self) -> None:
        await self.broker.restart()


@asynccontextmanager
async def broker_under_test(kind: str) -> AsyncIterator[BrokerUnderTest]:
    """A fresh broker of that kind (memory, embedded or mosquitto) for one test."""
    if kind == "memory":
        broker = MemoryBroker.named(f"test-{uuid.uuid4().hex[:12]}")
        try:
            yield MemoryUnderTest(broker)
        finally:
            MemoryBroker.forget(broker.name)
    elif kind == "embedded":
        under = EmbeddedUnderTest(EmbeddedBroker(port=free_port(), users={AGENT_USER: AGENT_PASSWORD}))
        with pytest.MonkeyPatch.context() as monkeypatch:
            speak_311(monkeypatch)  # every test on it, whatever fixture brought it
            await under.broker.__aenter__()
            try:
                yield under
            finally:
                await under.broker.__aexit__(None, None, None)
    else:
        require_mosquitto()
        async with MosquittoProcess() as process:
            yield MosquittoUnderTest(process)


@pytest.fixture(params=["embedded", "mosquitto"])
async def any_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerUnderTest]:
    """Each contract test runs once against the embedded broker and once against a private Mosquitto.

    amqtt speaks only MQTT 3.1.1, so with the embedded broker every process the test starts skips the MQTT 5 probe
    of protocol "auto" (``WB_PROTOCOL``, read by the commands, as ``wearbus up`` passes it): the probe waits 3 s for
    an answer amqtt never gives, per connection. ``test_auto_falls_back_to_3_1_1_on_the_embedded_broker`` covers it.
    """
    async with broker_under_test(request.param) as under:  # the embedded broker: speak_311
        yield under


def speak_311(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test on the embedded broker (amqtt speaks only MQTT 3.1.1): every bus skips the MQTT 5 probe of
    protocol "auto", which waits 3 s per connection for an answer amqtt never gives. Processes the test starts read
    ``WB_PROTOCOL`` at their edge, as ``wearbus up`` passes it; the test's own buses (the library reads no
    environment) get it here, as a command would set it from its options."""
    monkeypatch.setenv("WB_PROTOCOL", "3.1.1")
    original = client.Bus.__init__

    def init(self: client.Bus, options: BusOptions) -> None:
        original(self, options)
        if options.protocol == "auto":
            self.protocol = "3.1.1"

    monkeypatch.setattr(client.Bus, "__init__", init)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` first (otherwise in their usual order): pytest-xdist hands tests out in this order,
    so the long ones start at once on every worker instead of ending the run on one of them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a grouped test when pytest-xdist's ``--dist loadgroup`` lost its group: the tests of one
    ``xdist_group`` share something a worker holds (a day of `wearbus up`, the cluster's ports), and split they run
    it twice at once. pytest 9.2 made xdist 3.8's grouping silently do nothing (pytest-dev/pytest-xdist#1386), hence
    the pin in pyproject.toml; this check says so if an upgrade brings it back."""
    if not getattr(item.config.option, "loadgroup", False):  # set on the workers of --dist loadgroup only
        return
    if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
        pytest.fail(
            "--dist loadgroup did not group this test: pytest-xdist cannot rewrite node ids on this pytest "
            "(pytest-dev/pytest-xdist#1386); install the versions pyproject.toml names (make clean setup)",
            pytrace=False,
        )
