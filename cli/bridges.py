"""The ``wearbus bridge`` commands: attach a real device (an OwnTracks phone, a Colmi R02 ring) as a wearbus device."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from broker.logs import configure_logging, get_logger
from broker.settings import ProtocolOpt, Settings, TransportOpt, mqtt_choice
from cli.signals import until_signalled
from devices.bridges.colmi import BleakLink, ColmiRing, RingLink
from devices.bridges.colmi_emulator import ColmiRingEmulator, Physiology
from devices.bridges.owntracks import OwnTracksBridge, PhoneMap
from devices.sdk import DeviceConfig
from schemas.errors import ConfigError, TopicError, WearbusError
from schemas.topics import check_name

err = Console(stderr=True)
log = get_logger("bridge")

BrokerOpt = Annotated[
    str | None, typer.Option("--broker", "-b", help="Broker URL (mqtt://, mqtts://, ws://); env WB_BROKER.")
]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password", envvar="WB_DEVICE_PASSWORD", help="The device's password (its username is its client id)."
    ),
]
HeartbeatOpt = Annotated[float, typer.Option("--heartbeat", min=0, help="Wall seconds between heartbeats (0: none).")]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code)


def owntracks(
    maps: Annotated[
        list[str],
        typer.Option(
            "--map",
            "-m",
            help="OWNTRACKS-USER/DEVICE=WEARBUS-USER or ...=WEARBUS-USER/PHONE-ID (repeatable); '+' matches any "
            "OwnTracks name, e.g. 'jane/pixel=alice' or 'jane/+=alice/phone-1'. The phone id defaults to 'owntracks'.",
        ),
    ],
    broker: BrokerOpt = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="The broker the OwnTracks app publishes to, if not --broker (mqtt://...)."),
    ] = None,
    password: PasswordOpt = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            "--client-id",
            help="The MQTT client id the bridge listens with; its session is kept, so the broker holds the app's "
            "messages while the bridge is down (default: derived from the maps).",
        ),
    ] = None,
    heartbeat: HeartbeatOpt = 10.0,
    protocol: ProtocolOpt = None,
    transport: TransportOpt = None,
    log_level: LogOpt = "info",
) -> None:
    """Bridge the OwnTracks app: its locations, regions and battery become a wearbus phone's events.

    Subscribes to owntracks/USER/DEVICE and owntracks/USER/DEVICE/event; every event keeps the app's tst as its
    sample time, so late (queued) locations keep the time they were taken. Ctrl-C stops it cleanly.
    """
    configure_logging(log_level)
    try:
        parsed = [PhoneMap.parse(m) for m in maps]
        mqtt = mqtt_choice(protocol, transport)
        config = DeviceConfig(
            url=broker or Settings().broker,
            password=password,
            firmware="owntracks",
            model="owntracks",
            heartbeat_s=heartbeat,
            protocol=mqtt[0],
            transport=mqtt[1],
        )
        asyncio.run(_run_owntracks(parsed, config, source, client_id))
    except WearbusError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _run_owntracks(maps: list[PhoneMap], config: DeviceConfig, source: str | None, cid: str | None) -> None:
    async with OwnTracksBridge(maps, config, source_url=source, client_id=cid) as bridge:
        for m in maps:
            log.info("owntracks_bridge", owntracks=f"{m.ot_user}/{m.ot_device}", phone=f"{m.user}/phone/{m.device}")
        await until_signalled(bridge.run_forever(), name="owntracks-bridge")


def colmi_ring(
    address: Annotated[
        str | None, typer.Option("--address", "-a", help="The ring's Bluetooth address (MAC; a UUID on macOS).")
    ] = None,
    user: Annotated[str, typer.Option("--user", "-u", help="The wearbus user who wears the ring.")] = "alice",
    device: Annotated[str, typer.Option("--id", help="The ring's wearbus device id (a-z, 0-9 and -).")] = "colmi-1",
    broker: BrokerOpt = None,
    password: PasswordOpt = None,
    emulate: Annotated[
        bool, typer.Option("--emulate", help="No radio: talk to the byte-exact emulator of the ring instead.")
    ] = False,
    sync_min: Annotated[float, typer.Option("--sync-min", min=0.05, help="Minutes between syncs of the ring.")] = 30.0,
    seed: Annotated[int, typer.Option("--seed", help="The emulated wearer's seed (with --emulate).")] = 0,
    heartbeat: HeartbeatOpt = 10.0,
    protocol: ProtocolOpt = None,
    transport: TransportOpt = None,
    log_level: LogOpt = "info",
) -> None:
    """Bridge a Colmi R02 ring (Bluetooth, or --emulate): heart rate, SpO2, steps and battery.

    Needs the 'ble' extra of wearbus (bleak) for a real ring. Events keep the ring's own sample times; answers
    ring.measure_now (hr, spo2) and ring.sync; announces no haptic. Ctrl-C stops it cleanly.
    """
    configure_logging(log_level)
    try:
        check_name(user, "--user")
        check_name(device, "--id")
        if emulate == (address is not None):
            raise ConfigError("give the ring's --address, or --emulate to run without a radio (not both)")
        mqtt = mqtt_choice(protocol, transport)
        link: RingLink = (
            ColmiRingEmulator(Physiology(seed=seed), interval_s=1.0) if emulate else BleakLink(address or "")
        )
        config = DeviceConfig(
            url=broker or Settings().broker,
            password=password,
            firmware="colmi-emulator" if emulate else "colmi",
            model="colmi-r02",
            heartbeat_s=heartbeat,
            protocol=mqtt[0],
            transport=mqtt[1],
        )
        asyncio.run(_run_ring(link, user, device, config, sync_min * 60))
    except TopicError as exc:
        raise _fail(str(exc)) from None
    except WearbusError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _run_ring(link: RingLink, user: str, device: str, config: DeviceConfig, sync_s: float) -> None:
    async with link, ColmiRing(user, device, link, config, sync_s=sync_s) as ring:
        log.info("colmi_bridge", ring=ring.ident.client_id)
        await until_signalled(ring.run_forever(), name="colmi-bridge")


def register(app: typer.Typer) -> None:
    """Add the ``bridge`` command group to the ``wearbus`` CLI (the ``wearbus.cli`` entry point)."""
    group = typer.Typer(
        help="Attach real devices: the OwnTracks phone app, a Colmi R02 ring (Bluetooth, or --emulate).",
        no_args_is_help=True,
    )
    group.command("owntracks")(owntracks)
    group.command("colmi-ring")(colmi_ring)
    app.add_typer(group, name="bridge")
