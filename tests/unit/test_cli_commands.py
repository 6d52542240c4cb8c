"""The ``wearbus`` command loads only the module of the command it runs, and its table of commands is complete."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import typer

from cli import main

OWN = sorted(set(main.COMMANDS.values()))


def _commands_of(target: str) -> set[str]:
    app = typer.Typer()
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(app)
    return {c.name for c in app.registered_commands if c.name} | {g.name for g in app.registered_groups if g.name}


@pytest.mark.parametrize("target", OWN)
def test_the_table_names_every_command_a_module_registers(target: str) -> None:
    assert _commands_of(target) == {cmd for cmd, t in main.COMMANDS.items() if t == target}


def test_built_in_commands_are_the_main_modules_own() -> None:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in main.app.registered_commands}
    names |= {g.name for g in main.app.registered_groups if g.name}
    assert names == set(main.BUILT_IN)
    assert not names & set(main.COMMANDS)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["device", "ring"], ["cli.devices:register"]),
        (["agent", "--broker", "mqtt://127.0.0.1:1"], ["cli.agent:register"]),
        (["bench", "--full"], ["bench.agent:register"]),
        (["tap", "wb/v1/#"], []),
        (["--help"], OWN),
        ([], OWN),
        (["no-such-command"], OWN),
    ],
)
def test_a_command_line_loads_only_what_it_runs(argv: list[str], expected: list[str]) -> None:
    assert sorted(main.extension_targets(argv)) == sorted(expected)


def imported(command: list[str], then: str, packages: set[str]) -> str:
    """Which of ``packages`` a fresh process has imported once the command line's commands are registered (and
    ``then`` ran): a sorted list, as printed."""
    probe = (
        f"import sys; from cli import main; main.register_extensions({command!r}); {then}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {packages!r}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip() + done.stderr


def test_a_device_process_does_not_import_the_agent_or_the_console() -> None:
    assert imported(["device", "ring"], "pass", {"agent", "console", "bench", "aiohttp", "pypinyin"}) == "[]"


def test_the_agent_process_does_not_import_the_tools_or_the_cluster() -> None:
    """The agent's start-up is on every `wearbus up`'s critical path: no benchmark, console or Redis client in it."""
    assert imported(["agent"], "import cli.agent", {"bench", "console", "aiohttp", "redis"}) == "[]"


def test_help_lists_every_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True, timeout=120, check=True
    )
    for command in [*main.COMMANDS, *main.BUILT_IN]:
        assert command in done.stdout, command
