"""The ``wearbus device`` commands (and ``python -m cli.devices``): run one emulator, or a fleet of them.

Every process of a run is given the same ``--speed``, ``--sim-start`` and ``--sim-anchor``, so their simulated
clocks agree without talking to each other; each plays the steps of ``--scenario`` addressed to its kind and exits
0 when the scenario is over (unless ``--forever``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from broker.bus import MqttProtocol, TransportName
from broker.logs import configure_logging
from broker.settings import ProtocolOpt, Settings, TransportOpt, mqtt_choice
from devices.fleet import Spec, build_fleet, run
from devices.scenario import load
from devices.scenario_spec import BUILTIN, Scenario
from devices.sdk import DeviceConfig
from schemas.clock import SimClock
from schemas.errors import ConfigError, TopicError, WearbusError
from schemas.topics import Kind, check_name

err = Console(stderr=True)

UserOpt = Annotated[
    str, typer.Option("--user", "-u", help="The user id (a-z, 0-9 and -); a fleet of users adds -1, -2, ...")
]
IdOpt = Annotated[
    str | None,
    typer.Option("--id", help="The device id (a-z, 0-9 and -); default KIND-1; a fleet of ids adds -1, -2, ..."),
]
BrokerOpt = Annotated[
    str | None, typer.Option("--broker", "-b", help="Broker URL (mqtt://, mqtts://, ws://); env WB_BROKER.")
]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password", envvar="WB_DEVICE_PASSWORD", help="The device's password (its username is its client id)."
    ),
]
SpeedOpt = Annotated[float, typer.Option("--speed", help="Simulated seconds per wall second (e.g. 120: 2 h a minute).")]
StartOpt = Annotated[
    int | None,
    typer.Option(
        "--sim-start", help="Simulated ms since the epoch at the anchor (default: the scenario's start, else now)."
    ),
]
AnchorOpt = Annotated[
    int | None,
    typer.Option("--sim-anchor", help="Wall ms since the epoch at which the simulation starts (default: now)."),
]
ScenarioOpt = Annotated[
    str | None,
    typer.Option("--scenario", "-s", help=f"A scenario YAML file, or a built-in one: {', '.join(BUILTIN)}."),
]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed of every random draw (default: the scenario's, else 0).")
]
ForeverOpt = Annotated[bool, typer.Option("--forever", help="Keep running after the scenario is over.")]
FleetOpt = Annotated[
    int,
    typer.Option("--fleet", min=1, help="Run N devices of this kind in this process, each with its own connection."),
]
FleetByOpt = Annotated[
    str, typer.Option("--fleet-by", help="What a fleet varies: 'users' ({user}-{i}) or 'ids' ({id}-{i}).")
]
KeepaliveOpt = Annotated[
    int,
    typer.Option("--keepalive", min=1, help="MQTT keep-alive in seconds (the Will fires ~1.5x after a silent cut)."),
]
HeartbeatOpt = Annotated[float, typer.Option("--heartbeat", min=0, help="Wall seconds between heartbeats (0: none).")]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Keep the settings the device applied (its shadow) in this directory across restarts, as a real "
        "device's flash does (one device, not a fleet).",
    ),
]


def _command(kind: Kind) -> Callable[..., None]:
    def command(
        user: UserOpt = "alice",
        device: IdOpt = None,
        broker: BrokerOpt = None,
        password: PasswordOpt = None,
        speed: SpeedOpt = 1.0,
        sim_start: StartOpt = None,
        sim_anchor: AnchorOpt = None,
        scenario: ScenarioOpt = None,
        seed: SeedOpt = None,
        forever: ForeverOpt = False,
        fleet: FleetOpt = 1,
        fleet_by: FleetByOpt = "users",
        keepalive: KeepaliveOpt = 10,
        heartbeat: HeartbeatOpt = 10.0,
        state_dir: StateDirOpt = None,
        log_level: LogOpt = "info",
        protocol: ProtocolOpt = None,
        transport: TransportOpt = None,
    ) -> None:
        configure_logging(log_level)
        try:
            spec = make_spec(
                kind,
                user=user,
                device=device,
                broker=broker,
                password=password,
                speed=speed,
                sim_start=sim_start,
                sim_anchor=sim_anchor,
                scenario=scenario,
                seed=seed,
                forever=forever or scenario is None,
                keepalive=keepalive,
                heartbeat=heartbeat,
                mqtt=mqtt_choice(protocol, transport),
                state_dir=state_dir,
            )
            if state_dir is not None and fleet > 1:
                raise ConfigError("--state-dir keeps one device's settings: use it without --fleet")
            if fleet_by not in ("users", "ids"):
                raise ConfigError("--fleet-by is 'users' or 'ids'")
            by: Literal["users", "ids"] = "users" if fleet_by == "users" else "ids"
            devices = [spec.build()] if fleet == 1 else build_fleet(spec, fleet, by)
            asyncio.run(run(devices, forever=spec.forever))
        except WearbusError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    command.__doc__ = (
        f"Run the {kind.value} emulator (or --fleet N of them) until its scenario is over; Ctrl-C stops it cleanly."
    )
    command.__name__ = f"device_{kind.value}"
    return command


def make_spec(
    kind: Kind,
    *,
    user: str,
    device: str | None,
    broker: str | None,
    password: str | None,
    speed: float,
    sim_start: int | None,
    sim_anchor: int | None,
    scenario: str | Path | None,
    seed: int | None,
    forever: bool,
    keepalive: int = 10,
    heartbeat: float = 10.0,
    mqtt: tuple[MqttProtocol, TransportName] = ("auto", "auto"),
    state_dir: Path | None = None,
) -> Spec:
    """Everything a run needs, from the command-line values.

    Raises:
        ConfigError: a bad id, speed or scenario.
    """
    device = device or f"{kind.value}-1"
    try:
        check_name(user, "--user")
        check_name(device, "--id")
    except TopicError as exc:
        raise ConfigError(str(exc)) from exc
    if speed <= 0:
        raise ConfigError(f"--speed must be positive, got {speed}")
    loaded: Scenario | None = load(scenario) if scenario is not None else None
    wall = time.time_ns() // 1_000_000
    anchor = wall if sim_anchor is None else sim_anchor
    start = sim_start if sim_start is not None else (loaded.start_ms(anchor) if loaded is not None else anchor)
    clock = SimClock(speed, start, anchor)
    config = DeviceConfig(
        url=broker or Settings().broker,
        password=password,
        protocol=mqtt[0],
        transport=mqtt[1],
        model=_MODELS[kind],
        keepalive_s=keepalive,
        heartbeat_s=heartbeat,
    )
    if state_dir is not None:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--state-dir {state_dir}: {exc}") from exc
        config.shadow_file = state_dir / f"{user}.{kind.value}.{device}.shadow.json"
    return Spec(
        kind=kind,
        user=user,
        device=device,
        config=config,
        clock=clock,
        scenario=loaded,
        seed=seed if seed is not None else (loaded.seed if loaded is not None else 0),
        start_ms=start,
        forever=forever,
    )


_MODELS = {Kind.GLASSES: "quark-s1", Kind.RING: "qwen-ring", Kind.EARPHONES: "qwen-buds", Kind.PHONE: "android-qwen"}


def add_commands(app: typer.Typer) -> None:
    """Add ``ring``, ``glasses``, ``earphones`` and ``phone`` commands to ``app``."""
    for kind in (Kind.RING, Kind.GLASSES, Kind.EARPHONES, Kind.PHONE):
        app.command(kind.value)(_command(kind))


def check_command(
    scenario: Annotated[str, typer.Argument(help=f"A scenario YAML file, or a built-in one: {', '.join(BUILTIN)}.")],
    sim_anchor: AnchorOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="On success print what a stack needs (user, start, duration, zone) as JSON.")
    ] = False,
) -> None:
    """Validate a scenario: every problem on its own line and exit code 2, or 'ok' (``wearbus up`` runs this first)."""
    try:
        loaded = load(scenario)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)  # one problem, one line
        raise typer.Exit(2) from None
    anchor = time.time_ns() // 1_000_000 if sim_anchor is None else sim_anchor
    facts = {
        "user": loaded.user,
        "start_ms": loaded.start_ms(anchor),
        "duration_ms": loaded.duration_ms,
        "tz_offset_min": loaded.profile.tz_offset_min,
    }
    print(json.dumps(facts) if as_json else f"ok: {scenario}: {len(loaded.steps)} steps, user {loaded.user}")  # noqa: T201


def register(app: typer.Typer) -> None:
    """Add the ``device`` command group to the ``wearbus`` CLI (the ``wearbus.cli`` entry point)."""
    group = typer.Typer(
        help="Run device emulators (glasses, ring, earphones, phone) that play a scenario on a shared simulated clock.",
        no_args_is_help=True,
    )
    add_commands(group)
    group.command("check")(check_command)
    app.add_typer(group, name="device")


#: ``python -m cli.devices ring|glasses|earphones|phone ...``: the same commands as ``wearbus device ...``.
app = typer.Typer(
    name="devices",
    help="Run a wearbus device emulator (the same as `wearbus device ...`).",
    no_args_is_help=True,
    add_completion=False,
)
add_commands(app)

if __name__ == "__main__":
    app(prog_name="python -m cli.devices")
