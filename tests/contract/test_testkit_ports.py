"""The test kit's private brokers survive a free port being taken before they bind it (parallel test workers)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import testkit.mosquitto as kit
from broker.embedded import free_port
from tests.conftest import require_mosquitto

pytestmark = [pytest.mark.broker]


async def test_mosquitto_tries_another_port_when_its_free_port_was_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    require_mosquitto()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports: Iterator[int] = iter([taken.getsockname()[1], free_port()])
        monkeypatch.setattr(kit, "free_port", lambda: next(ports))
        async with kit.MosquittoProcess() as broker:
            assert broker.port != taken.getsockname()[1]
            assert "Address already in use" in broker.log_text()
