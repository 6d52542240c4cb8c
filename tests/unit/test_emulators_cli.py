"""The emulators' command line and fleet runner: options, the shared clock, fleet identities, a clean end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import typer
from typer.core import TyperGroup, TyperOption
from typer.main import get_command
from typer.testing import CliRunner

from cli.devices import app as main_app
from cli.devices import make_spec, register
from devices.fleet import build_fleet, fleet_ids, run
from devices.ring import RingEmulator
from devices.scenario import load
from schemas.errors import ConfigError
from schemas.topics import Kind


@pytest.fixture(autouse=True)
def _logging_back_to_defaults() -> Iterator[None]:
    """The commands configure logging to the CliRunner's stream, which is closed afterwards."""
    yield
    structlog.reset_defaults()


def spec_of(kind: Kind = Kind.RING, **kw: Any) -> Any:
    values: dict[str, Any] = {
        "user": "alice",
        "device": None,
        "broker": "mqtt://127.0.0.1:1",
        "password": None,
        "speed": 120.0,
        "sim_start": None,
        "sim_anchor": 1_000_000,
        "scenario": None,
        "seed": None,
        "forever": False,
    }
    values.update(kw)
    return make_spec(kind, **values)


def test_the_device_group_has_the_four_emulators_and_every_option_has_help() -> None:
    app = typer.Typer()
    register(app)
    group = get_command(app)
    assert isinstance(group, TyperGroup)
    device = group.commands["device"]
    assert isinstance(device, TyperGroup)
    assert set(device.commands) == {"ring", "glasses", "earphones", "phone", "check"}
    for name, command in device.commands.items():
        if name == "check":  # validates a scenario: no emulator options
            continue
        options = [p for p in command.params if isinstance(p, TyperOption)]
        assert {o.name for o in options} >= {
            "user",
            "device",
            "broker",
            "password",
            "speed",
            "sim_start",
            "sim_anchor",
            "scenario",
            "seed",
            "forever",
            "fleet",
            "log_level",
        }
        assert all(o.help for o in options), [o.name for o in options if not o.help]


def test_python_m_devices_has_the_same_commands() -> None:
    result = CliRunner().invoke(main_app, ["--help"])
    assert result.exit_code == 0
    for kind in ("ring", "glasses", "earphones", "phone"):
        assert kind in result.output


def test_bad_values_are_clear_errors_with_exit_1() -> None:
    result = CliRunner().invoke(main_app, ["ring", "--user", "Alice!", "--broker", "mqtt://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "--user 'Alice!' must match" in result.output
    result = CliRunner().invoke(main_app, ["glasses", "--scenario", "/nonexistent.yaml"])
    assert result.exit_code == 1
    assert "cannot read scenario" in result.output


def test_the_clock_starts_at_the_scenarios_start_unless_told_otherwise() -> None:
    day = load("day_in_the_life")
    spec = spec_of(scenario="day_in_the_life")
    assert spec.start_ms == day.start_ms(0)
    assert spec.seed == day.seed
    assert spec.device == "ring-1"
    assert spec.clock.speed == 120.0
    told = spec_of(scenario="day_in_the_life", sim_start=42_000, seed=5, device="r-9")
    assert (told.start_ms, told.seed, told.device) == (42_000, 5, "r-9")
    assert spec_of().start_ms == 1_000_000  # no scenario: the anchor


@pytest.mark.parametrize("kw", [{"speed": 0.0}, {"device": "Ring_1"}, {"scenario": "nope-not-a-file"}])
def test_bad_settings_are_config_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        spec_of(**kw)


def test_a_fleet_varies_users_or_ids_and_seeds() -> None:
    assert fleet_ids("alice", "ring-1", 3, "users") == [
        ("alice-1", "ring-1"),
        ("alice-2", "ring-1"),
        ("alice-3", "ring-1"),
    ]
    assert fleet_ids("alice", "ring-1", 2, "ids") == [("alice", "ring-1-1"), ("alice", "ring-1-2")]
    with pytest.raises(ConfigError):
        fleet_ids("alice", "ring-1", 0, "users")
    fleet = build_fleet(spec_of(), 3, "users")
    assert [d.ident.client_id for d in fleet] == ["alice-1/ring/ring-1", "alice-2/ring/ring-1", "alice-3/ring/ring-1"]
    assert len({d.seed for d in fleet}) == 3
    assert all(isinstance(d, RingEmulator) for d in fleet)


async def test_a_fleet_ends_with_its_scenario_even_without_a_broker(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text("name: s\nduration: '00:10:00'\nsteps:\n  - {at: '00:01:00', ring: press}\n")
    now = time.time_ns() // 1_000_000
    spec = spec_of(scenario=str(path), speed=6000.0, sim_anchor=now, sim_start=now)
    fleet = build_fleet(spec, 2, "ids")
    await asyncio.wait_for(run(fleet, forever=False, settle_s=0.2), 30)  # 10 min at speed 6000: 0.1 s
    assert all(d.finished.is_set() for d in fleet)
    assert all(d.stats.emitted >= 3 for d in fleet)  # wear, battery, the press (held: there is no broker)
