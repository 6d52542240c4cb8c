"""The ``wearbus`` command line: broker, tap, pub, hz and schema export here; devices and the agent add theirs.

Sub-command groups of other packages are found through the ``wearbus.cli`` entry points (each a
``register(app)`` function), so this module never imports ``devices`` or ``agent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
import time
from collections import defaultdict, deque
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from broker.client import Bus, BusOptions, Outgoing, Rejected
from broker.logs import configure_logging
from broker.settings import Settings, mqtt_choice
from schemas import codec
from schemas.envelope import Message, dump, new_id, now_ms
from schemas.errors import WearbusError
from schemas.tasks import cancel_and_wait
from schemas.topics import validate_filter

app = typer.Typer(
    name="wearbus",
    help="wearbus: a cross-device MQTT event bus for AI wearables (glasses, ring, earphones, phone) and its agent.",
    no_args_is_help=True,
    add_completion=False,
    # help is plain text: Rich markup and emoji codes would eat "alice:ring:ring-1" (":ring:") and "[a-z0-9-]"
    rich_markup_mode=None,
)
broker_app = typer.Typer(
    help="Run the embedded broker (no sub-command), or write a Mosquitto config (`config`).",
    invoke_without_command=True,
)
schema_app = typer.Typer(help="The wire contract: export JSON Schemas and the AsyncAPI document.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(schema_app, name="schema")

out = Console()
err = Console(stderr=True)

BrokerOpt = Annotated[
    str | None, typer.Option("--broker", "-b", help="Broker URL (mqtt://, mqtts://, ws://); env WB_BROKER.")
]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]

KIND_COLOURS = {
    "glasses": "cyan",
    "ring": "magenta",
    "earphones": "green",
    "phone": "yellow",
    "agent": "blue",
}


def run(coro: Any) -> None:
    """Run a command's coroutine; a WearbusError becomes a clear message and exit code 1, Ctrl-C exit 130."""
    try:
        asyncio.run(coro)
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def broker_url(option: str | None) -> str:
    """The broker URL from the option, else the environment (WB_BROKER), else the local default."""
    return option or Settings().broker


def bus_options(url: str, **kw: Any) -> BusOptions:
    """Options for a command's bus: the URL, and the protocol and transport of ``WB_PROTOCOL`` / ``WB_TRANSPORT``."""
    protocol, transport = mqtt_choice(None, None)
    return BusOptions(url=url, protocol=protocol, transport=transport, **kw)


# ---------------------------------------------------------------------------------------------- broker


@broker_app.callback()
def broker_main(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MQTT port.")] = 1883,
    ws_port: Annotated[int | None, typer.Option(help="Also listen for MQTT over WebSockets here.")] = None,
    user: Annotated[
        list[str] | None,
        typer.Option(help="NAME:PASSWORD of a client that may keep a persistent session (the agent); repeatable."),
    ] = None,
    log_level: LogOpt = "info",
) -> None:
    """Run the embedded broker (amqtt, MQTT 3.1.1) in this process until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    configure_logging(log_level)
    from broker.embedded import serve_embedded  # noqa: PLC0415 (amqtt is heavy; only this command needs it)

    users = dict(u.split(":", 1) for u in (user or []) if ":" in u)
    err.print(
        f"[green]wearbus broker[/] listening on mqtt://{host}:{port}" + (f", ws://{host}:{ws_port}" if ws_port else "")
    )
    run(serve_embedded(host, port, users, True, ws_port))


@broker_app.command("config")
def broker_config(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the config into.")],
    user: Annotated[list[str], typer.Option(help="A user id; repeatable. Devices are given per user in order.")],
    device: Annotated[
        list[str],
        typer.Option(help="USER:KIND:ID of a device (e.g. alice:ring:ring-1), or KIND:ID with one --user; repeatable."),
    ],
    port: Annotated[int, typer.Option(help="Plain MQTT listener port.")] = 1883,
    host: Annotated[
        str | None, typer.Option(help="Listener address (default 127.0.0.1; '*' for every interface).")
    ] = None,
    tls_port: Annotated[int | None, typer.Option(help="Add a TLS listener on this port.")] = None,
    tls_host: Annotated[
        str | None,
        typer.Option(
            help="TLS listener address (default: --host if given, else 127.0.0.1; the systemd layout: every "
            "interface, its device-facing listener; '*' for every interface)."
        ),
    ] = None,
    cafile: Annotated[Path | None, typer.Option(help="CA certificate for the TLS listener.")] = None,
    certfile: Annotated[Path | None, typer.Option(help="Server certificate for the TLS listener.")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="Server key for the TLS listener.")] = None,
    agent_user: Annotated[str, typer.Option(help="The agent's user name.")] = "agent",
    tap_health: Annotated[
        bool,
        typer.Option("--tap-health", help="Let the operator's tap login read health topics (denied by default)."),
    ] = False,
    layout: Annotated[
        str,
        typer.Option(help="local (run from --out), systemd (/etc/wearbus paths) or compose (container paths)."),
    ] = "local",
) -> None:
    """Write mosquitto.conf, a password file and a per-device ACL (with persistence that survives kill -9).

    Health topics are read only by the agent and each user's own phone (its app role); the tap login reads the rest
    of the bus, and health too with --tap-health.
    """
    from broker import mosquitto  # noqa: PLC0415

    try:
        paths = mosquitto.config_from_cli(
            out_dir=out_dir,
            users=user,
            devices=device,
            host=host,
            port=port,
            tls_port=tls_port,
            tls_host=tls_host,
            cafile=cafile,
            certfile=certfile,
            keyfile=keyfile,
            agent_user=agent_user,
            layout=layout,
            operator_health=tap_health,
        )
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    for p in paths:
        out.print(f"wrote {p}")
    out.print(f"start it with: mosquitto -c {out_dir / 'mosquitto.conf'}")
    out.print(f"device credentials are in {out_dir / 'credentials.json'} (keep it secret)")


# ---------------------------------------------------------------------------------------------- tap


def render(message: Message, *, show_health: bool = False) -> dict[str, Any]:
    """A message as plain data for printing (health values redacted, by the contract's mark, unless asked for)."""
    envelope = dump(message.envelope)
    return {
        "topic": message.topic,
        "qos": message.qos,
        "retain": message.retain,
        "type": getattr(message.data, "type", ""),
        "envelope": envelope if show_health else codec.redact_payload(message.topic, envelope),
    }


def _fields(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != "type"}
    text = json.dumps(body, ensure_ascii=False, separators=(", ", "="), default=str)
    return text if len(text) <= 160 else text[:157] + "..."


@app.command()
def tap(
    topic_filter: Annotated[str, typer.Argument(help="MQTT topic filter, e.g. 'wb/#'.")] = "wb/#",
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line (for machines).")] = False,
    count: Annotated[int, typer.Option(help="Stop after this many messages (0: never).")] = 0,
    seconds: Annotated[float, typer.Option(help="Stop after this many seconds (0: never).")] = 0,
    show_health: Annotated[
        bool, typer.Option("--show-health", help="Show health values (redacted by default: '‹redacted›').")
    ] = False,
    broker: BrokerOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Print each message on the bus decoded: topic, type and fields; rejected ones in red with the reason.

    Health values (the fields the contract marks as health data) are shown as '‹redacted›' unless --show-health.
    """
    configure_logging(log_level)
    run(_tap(broker_url(broker), validate_filter(topic_filter), json_out, count, seconds, show_health))


async def _tap(
    url: str, topic_filter: str, json_out: bool, count: int, seconds: float, show_health: bool = False
) -> None:
    def show_reject(r: Rejected) -> None:
        if json_out:
            line = {
                "topic": r.topic,
                "rejected": r.error.reason,
                "error": str(r.error),
                "field": r.error.field,
            }
            print(json.dumps(line, ensure_ascii=False), flush=True)  # noqa: T201
        else:
            out.print(f"[red]REJECTED[/] {r.topic} [red]{r.error.reason}[/]: {r.error.detail} field={r.error.field}")

    options = bus_options(url, name="tap", on_reject=[show_reject])
    n = 0
    async with Bus(options) as bus:
        await bus.subscribe(topic_filter, 1)
        if not json_out:
            err.print(f"[dim]tapping {topic_filter} on {bus.url.redacted()} (Ctrl-C to stop)[/]")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds or None):
                async for message in bus.messages():
                    n += 1
                    if json_out:
                        line = render(message, show_health=show_health)
                        print(json.dumps(line, ensure_ascii=False, default=str), flush=True)  # noqa: T201
                    else:
                        _print_line(message, show_health=show_health)
                    if count and n >= count:
                        break


def _print_line(message: Message, *, show_health: bool = False) -> None:
    where = message.where
    colour = KIND_COLOURS.get(str(where.kind) if where.kind else "agent", "white")
    stamp = time.strftime("%H:%M:%S", time.localtime(message.envelope.ts / 1000))
    data = dump(message.envelope)["data"]
    if not show_health:
        data = codec.redact_payload(message.topic, data)
    flag = " [dim](retained)[/]" if message.retain else ""
    out.print(
        f"[dim]{stamp}[/] [{colour}]{message.topic}[/] [bold]{data.get('type', '')}[/] {_fields(data)}{flag}",
        markup=True,
        highlight=False,
    )


# ---------------------------------------------------------------------------------------------- pub


@app.command()
def pub(
    topic: Annotated[str, typer.Argument(help="A wb/v1 topic, e.g. wb/v1/alice/earphones/buds-1/evt/voice/utterance.")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="The body as JSON, or a whole envelope with id, ts and data.")
    ],
    qos: Annotated[int, typer.Option(help="QoS 0 or 1.")] = 1,
    retain: Annotated[bool, typer.Option(help="Retain the message.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="Wire format: msgpack or json.")] = "msgpack",
    corr: Annotated[str | None, typer.Option(help="Correlation id.")] = None,
    broker: BrokerOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Validate a message against its topic's schema, then publish it (nothing invalid is sent)."""
    configure_logging(log_level)
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as exc:
        err.print(f"[bold red]error:[/] --data is not valid JSON: {exc}")
        raise typer.Exit(2) from None
    if not isinstance(obj, dict):
        err.print("[bold red]error:[/] --data must be a JSON object")
        raise typer.Exit(2)
    envelope = obj if "data" in obj and "ts" in obj else {"id": new_id(), "ts": now_ms(), "data": obj}
    if corr:
        envelope["corr"] = corr
    raw = json.dumps(envelope, ensure_ascii=False).encode()
    try:
        message = codec.decode(topic, raw)
    except WearbusError as exc:
        err.print(f"[bold red]invalid:[/] {exc}")
        raise typer.Exit(1) from None
    if fmt not in {"msgpack", "json"}:
        err.print("[bold red]error:[/] --format is msgpack or json")
        raise typer.Exit(2)
    payload = codec.encode(message.envelope, "json" if fmt == "json" else "msgpack")
    run(_pub(broker_url(broker), Outgoing(topic, payload, qos, retain)))
    out.print(f"published {message.data.type if hasattr(message.data, 'type') else ''} to {topic}")


async def _pub(url: str, message: Outgoing) -> None:
    async with Bus(bus_options(url, name="pub")) as bus:
        await bus.publish_raw(message, wait=True)


# ---------------------------------------------------------------------------------------------- hz


@app.command()
def hz(
    topic_filter: Annotated[str, typer.Argument(help="MQTT topic filter.")] = "wb/#",
    window: Annotated[float, typer.Option(help="Averaging window in seconds.")] = 5.0,
    seconds: Annotated[float, typer.Option(help="Stop after this many seconds (0: never).")] = 0,
    broker: BrokerOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Show the message rate per topic, live (like `ros2 topic hz`)."""
    configure_logging(log_level)
    run(_hz(broker_url(broker), validate_filter(topic_filter), window, seconds))


async def _hz(url: str, topic_filter: str, window: float, seconds: float) -> None:
    stamps: dict[str, deque[float]] = defaultdict(deque)
    totals: dict[str, int] = defaultdict(int)
    rejected: dict[str, int] = defaultdict(int)

    def on_reject(r: Rejected) -> None:
        rejected[r.topic] += 1

    def table() -> Table:
        now = time.monotonic()
        t = Table(title=f"{topic_filter}: messages per second over {window:g} s")
        for col in ("topic", "hz", "total", "rejected"):
            t.add_column(col, justify="left" if col == "topic" else "right")
        for topic in sorted(set(stamps) | set(rejected)):
            q = stamps[topic]
            while q and now - q[0] > window:
                q.popleft()
            t.add_row(topic, f"{len(q) / window:.2f}", str(totals[topic]), str(rejected.get(topic, 0)))
        return t

    async with Bus(bus_options(url, name="hz", on_reject=[on_reject])) as bus:
        await bus.subscribe(topic_filter, 0)
        end = time.monotonic() + seconds if seconds else None

        async def consume() -> None:
            async for message in bus.messages():
                stamps[message.topic].append(time.monotonic())
                totals[message.topic] += 1

        consumer = asyncio.create_task(consume(), name="hz.consume")
        try:
            with Live(table(), console=out, refresh_per_second=2, transient=False) as live:
                while end is None or time.monotonic() < end:
                    await asyncio.sleep(0.5)
                    live.update(table())
        finally:
            await cancel_and_wait(consumer)


# ---------------------------------------------------------------------------------------------- schema


@schema_app.command("export")
def schema_export(out_dir: Annotated[Path, typer.Argument(help="Directory to write into.")]) -> None:
    """Write a JSON Schema per message (schemas/*.json) and the AsyncAPI 3.0 document (asyncapi.json)."""
    from schemas.export import export  # noqa: PLC0415

    paths = export(out_dir)
    out.print(f"wrote {len(paths) - 1} JSON Schemas to {out_dir / 'schemas'} and {out_dir / 'asyncapi.json'}")


# ---------------------------------------------------------------------------------------------- entry


#: The module that registers each command of wearbus's own. A command imports only its own module (the agent's
#: language tables, the console's web server and the benchmark cost a device ~2 s of CPU at start); ``--help`` and an
#: unknown command import them all. ``tests/unit/test_cli_commands.py`` checks this table against the modules.
COMMANDS: dict[str, str] = {
    "record": "testkit.record:register",
    "replay": "testkit.record:register",
    "console": "console.cli:register",
    "shadow": "cli.shadow:register",
    "device": "cli.devices:register",
    "bridge": "cli.bridges:register",
    **dict.fromkeys(
        ("agent", "report", "consent", "forget", "health-key", "up", "replay-agent", "diff", "eval"),
        "cli.agent:register",
    ),
    "bench": "bench.agent:register",  # not with the agent's: it imports the cluster (redis), 0.8 s of every start
}
#: Commands of this module itself: they need no extension of wearbus's own.
BUILT_IN = ("tap", "pub", "hz", "broker", "schema")


def extension_targets(argv: list[str]) -> list[str]:
    """The ``module:function`` registrars to load for a command line (its first word picks; foreign ones always)."""
    own = list(dict.fromkeys(COMMANDS.values()))
    foreign = [ep.value for ep in entry_points(group="wearbus.cli") if ep.value not in own]
    command = argv[0] if argv else None
    if command in COMMANDS:
        return [COMMANDS[command], *foreign]
    if command in BUILT_IN:
        return foreign
    return [*own, *foreign]


def register_extensions(argv: list[str] | None = None) -> None:
    for target in extension_targets(sys.argv[1:] if argv is None else argv):
        module, _, name = target.partition(":")
        try:
            register = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:  # a half-installed extension must not break the others
            err.print(f"[yellow]warning:[/] cannot load wearbus commands from {target}: {exc}")
            continue
        register(app)


def main() -> None:
    """Entry point of the ``wearbus`` console script."""
    register_extensions()
    app(prog_name="wearbus")


if __name__ == "__main__":  # pragma: no cover
    main()
