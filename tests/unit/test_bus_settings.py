"""Settings come in at the edge: the library reads no environment variable, the command line maps WB_PROTOCOL and
WB_TRANSPORT into options, and a bad value is a clear error."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from broker.bus import BusOptions
from broker.client import Bus
from broker.connect import open_bus
from broker.memory import MemoryBus
from broker.settings import mqtt_choice
from cli.agent import agent_command
from cli.devices import add_commands
from console.cli import console
from schemas.errors import ConfigError


def test_the_library_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WB_TRANSPORT", "paho")
    monkeypatch.setenv("WB_PROTOCOL", "3.1.1")
    bus = Bus(BusOptions(url="mqtt://127.0.0.1:1"))
    assert (bus.transport, bus.protocol) == ("native", "auto")
    chosen = Bus(BusOptions(url="mqtt://127.0.0.1:1", transport="paho", protocol="3.1.1"))
    assert (chosen.transport, chosen.protocol) == ("paho", "3.1.1")
    assert Bus(BusOptions(url="ws://127.0.0.1:1/mqtt", transport="native")).transport == "paho"  # WebSocket: paho


def test_the_edge_reads_the_environment_and_options_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WB_TRANSPORT", "paho")
    monkeypatch.setenv("WB_PROTOCOL", "3.1.1")
    assert mqtt_choice(None, None) == ("3.1.1", "paho")
    assert mqtt_choice("5", "native") == ("5", "native")
    with pytest.raises(ConfigError, match="--transport is auto, native or paho"):
        mqtt_choice(None, "zmq")
    monkeypatch.setenv("WB_PROTOCOL", "4")
    with pytest.raises(ConfigError, match="WB_PROTOCOL"):
        mqtt_choice(None, None)


def test_open_bus_picks_the_implementation_by_url() -> None:
    assert isinstance(open_bus(BusOptions(url="memory://x")), MemoryBus)
    assert isinstance(open_bus(BusOptions(url="mqtt://127.0.0.1:1")), Bus)


def test_commands_offer_protocol_and_transport() -> None:
    app = typer.Typer()
    app.command("agent")(agent_command)
    app.command("console")(console)
    add_commands(app)
    runner = CliRunner()
    for command in (["agent", "--help"], ["ring", "--help"], ["console", "--help"]):
        result = runner.invoke(app, command, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "--protocol" in result.output
        assert "--transport" in result.output
