"""The ``wearbus console`` command: serve the live console page for a broker until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import webbrowser
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from broker.bus import MqttProtocol, TransportName
from broker.logs import configure_logging
from broker.settings import ProtocolOpt, Settings, TransportOpt, mqtt_choice
from console.server import serve_console
from schemas.errors import WearbusError
from schemas.tasks import cancellation_kept

_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the ``console`` command to the ``wearbus`` app."""
    app.command("console")(console)


def console(
    broker: Annotated[
        str | None, typer.Option("--broker", "-b", help="Broker URL (mqtt://, mqtts://, ws://); env WB_BROKER.")
    ] = None,
    port: Annotated[int, typer.Option(help="HTTP port of the page.")] = 8787,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default: the page shows health data).")
    ] = ("127.0.0.1"),
    allow_inject: Annotated[
        bool, typer.Option("--allow-inject", help="Let the page inject an utterance or a gesture for a device.")
    ] = False,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False,
    show_health: Annotated[
        bool,
        typer.Option("--show-health", help="Show health values (vitals, health alerts); redacted by default."),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "warning",
    protocol: ProtocolOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Serve a live page of the bus: devices, glasses display, vitals, tasks, alerts and the event timeline."""
    configure_logging(log_level)
    url = broker or Settings().broker
    try:
        mqtt = mqtt_choice(protocol, transport)
        asyncio.run(_console(url, host, port, allow_inject, open_page, mqtt, show_health))
    except WearbusError as exc:
        _err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _console(
    broker_url: str,
    host: str,
    port: int,
    allow_inject: bool,
    open_page: bool,
    mqtt: tuple[MqttProtocol, TransportName],
    show_health: bool = False,
) -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    serving = serve_console(
        broker_url, host, port, allow_inject, ready, protocol=mqtt[0], transport=mqtt[1], show_health=show_health
    )
    task = asyncio.create_task(serving, name="console")
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' event loop
        # SIGTERM (from `wearbus up` or a service manager) ends it as cleanly as Ctrl-C.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        page = await asyncio.shield(ready)
    except WearbusError:
        with contextlib.suppress(WearbusError):
            await task
        raise
    print(f"wearbus console: {page}", flush=True)  # noqa: T201  # the URL is the command's output
    _err.print(
        f"[dim]watching {broker_url}; "
        + ("[yellow]injection allowed[/]" if allow_inject else "read-only")
        + " (Ctrl-C to stop)[/]"
    )
    if open_page:
        webbrowser.open(page)
    # SIGTERM cancels the serving task: a clean stop. A cancellation of this task (Ctrl-C, or its caller) goes on.
    with cancellation_kept(), contextlib.suppress(asyncio.CancelledError):
        await task
