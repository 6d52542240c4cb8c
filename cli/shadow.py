"""``wearbus shadow get|set``: a device's settings, desired vs reported, and changing them (even while it sleeps)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from broker.client import Bus
from broker.logs import configure_logging
from broker.settings import Settings, client_options
from broker.shadow import read, wait_applied, write
from schemas.errors import ConfigError, ContractError, ShadowError, TopicError, WearbusError
from schemas.shadow import DeviceShadow, ShadowBook, parse_assignments
from schemas.topics import DeviceId, Kind, check_name

shadow_app = typer.Typer(
    help="Device settings as a shadow: what is desired, what the device reported, and the pending delta.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

UserOpt = Annotated[str, typer.Option("--user", "-u", help="The user id.")]
BrokerOpt = Annotated[
    str | None, typer.Option("--broker", "-b", help="Broker URL (mqtt://, mqtts://, ws://); env WB_BROKER.")
]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


def register(app: typer.Typer) -> None:
    """Add ``shadow get`` and ``shadow set`` to the ``wearbus`` command line."""
    app.add_typer(shadow_app, name="shadow")


def device_id(user: str, text: str) -> DeviceId:
    """``KIND/ID`` (``ring/ring-1``) of a user's device.

    Raises:
        ConfigError: naming what is wrong.
    """
    kind, sep, device = text.partition("/")
    if not sep or kind not in {k.value for k in Kind}:
        raise ConfigError(
            f"--device must be KIND/ID with KIND one of {', '.join(Kind)}, e.g. ring/ring-1; got {text!r}"
        )
    try:
        return DeviceId(check_name(user, "user"), Kind(kind), device)
    except TopicError as exc:
        raise ConfigError(f"--device {text!r}: {exc.detail}") from exc


def _fail(exc: WearbusError, code: int = 1) -> typer.Exit:
    if isinstance(exc, ShadowError):  # the contract's refusals, with their reason: stale, capability
        label = f"refused ({exc.reason})"
    else:
        label = "invalid" if isinstance(exc, ContractError) else "error"
    err.print(f"[bold red]{label}:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and set(value) == {"start", "end"}:
        return f"{value['start']}-{value['end']}"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def table(book: ShadowBook, user: str) -> Table:
    """Desired vs reported, key by key, with the status of each."""
    t = Table(title=f"shadows of {user}")
    for col in ("device", "online", "versions (desired/reported)", "setting", "desired", "reported", "status"):
        t.add_column(col)
    for dev, shadow in book.of_user(user).items():
        d = shadow.describe()
        desired = d["desired"]["settings"] if d["desired"] else {}
        reported = d["reported"]["settings"] if d["reported"] else {}
        versions = (
            f"v{d['desired']['version'] if d['desired'] else 0}/v{d['reported']['version'] if d['reported'] else 0}"
        )
        online = {True: "yes", False: "no", None: "?"}[d["online"]]
        keys = sorted(set(desired) | set(reported)) or ["(none)"]
        for i, key in enumerate(keys):
            if key in d["rejected"] and key in d["delta"]:
                status = f"[red]rejected: {escape(d['rejected'][key])}[/]"
            elif key in d["pending"]:
                status = "[yellow]pending[/]"
            elif key in desired:
                status = "[green]applied[/]"
            else:
                status = "[dim]device default[/]" if key != "(none)" else ""
            first = i == 0
            name = f"{dev.kind.value}/{dev.device}" if first else ""
            want, have = escape(_fmt(desired.get(key))), escape(_fmt(reported.get(key)))
            t.add_row(name, online if first else "", versions if first else "", key, want, have, status)
        if d["refused"] is not None:
            refused = d["refused"]
            t.add_row("", "", "", "", "", "", f"[red]refused v{refused['version']}: {escape(refused['reason'])}[/]")
    return t


def as_json(book: ShadowBook, user: str) -> dict[str, Any]:
    """Every device's shadow as plain data."""
    return {str(dev): shadow.describe() for dev, shadow in book.of_user(user).items()}


@shadow_app.command("get")
def get_command(
    user: UserOpt,
    device: Annotated[
        str | None, typer.Option("--device", "-d", help="KIND/ID, e.g. ring/ring-1 (default: all).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (for machines).")] = False,
    broker: BrokerOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Show desired vs reported settings and the pending delta of a user's devices (or one)."""
    configure_logging(log_level)
    try:
        dev = device_id(user, device) if device else None
    except WearbusError as exc:
        raise _fail(exc, 2) from None
    book = _run(_get(broker or Settings().broker, user, dev))
    if json_out:
        print(json.dumps(as_json(book, user), ensure_ascii=False))  # noqa: T201
        return
    if not book.of_user(user):
        err.print(f"[yellow]no shadow or birth retained for {device or user}[/]")
        return
    out.print(table(book, user))


async def _get(url: str, user: str, dev: DeviceId | None) -> ShadowBook:
    async with Bus(client_options(url, "shadow-get")) as bus:
        return await read(bus, user, dev)


@shadow_app.command("set")
def set_command(
    user: UserOpt,
    device: Annotated[str, typer.Option("--device", "-d", help="KIND/ID, e.g. glasses/glasses-1.")],
    assignments: Annotated[
        list[str], typer.Argument(help="KEY=VALUE..., e.g. brightness=0.3 quiet_hours=22:00-07:00 (null clears).")
    ],
    version: Annotated[
        int | None,
        typer.Option("--version", help="Refuse unless desired is at this version (a write based on what you read)."),
    ] = None,
    wait: Annotated[float, typer.Option(help="Wait this many seconds for the device to report it (0: do not).")] = 0,
    by: Annotated[str, typer.Option(help="Who writes it (kept in the document).")] = "cli",
    broker: BrokerOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Validate and write desired settings; a sleeping device applies them when it next connects."""
    configure_logging(log_level)
    try:
        dev = device_id(user, device)
        patch = parse_assignments(dev.kind, assignments)
    except WearbusError as exc:
        raise _fail(exc, 2) from None
    shadow = _run(_set(broker or Settings().broker, dev, patch, by, version, wait))
    d = shadow.describe()
    desired_v = d["desired"]["version"] if d["desired"] else 0
    if wait and d["reported"] is not None and d["reported"]["version"] >= desired_v:
        rejected = {k: v for k, v in d["rejected"].items() if k in patch}
        if rejected:
            err.print(f"[red]{dev} rejected:[/] " + "; ".join(f"{k}: {escape(v)}" for k, v in rejected.items()))
            raise typer.Exit(3)
        out.print(f"{dev} applied desired v{desired_v}")
        return
    out.print(f"desired v{desired_v} written for {dev}; pending until the device applies it (wearbus shadow get)")


async def _set(
    url: str, dev: DeviceId, patch: dict[str, Any], by: str, version: int | None, wait: float
) -> DeviceShadow:
    async with Bus(client_options(url, "shadow-set")) as bus:
        desired = await write(bus, dev, patch, by=by, expected_version=version)
        if wait:
            try:
                return await wait_applied(bus, dev, desired.version, timeout_s=wait)
            except TimeoutError:
                err.print(f"[yellow]{dev} did not report v{desired.version} within {wait:g} s (asleep?)[/]")
        return DeviceShadow(desired=desired)


def _run(coro: Any) -> Any:
    import asyncio  # noqa: PLC0415

    try:
        return asyncio.run(coro)
    except WearbusError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
