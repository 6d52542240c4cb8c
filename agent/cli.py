"""``wearbus agent``, ``wearbus report`` and ``wearbus up`` (registered through the ``wearbus.cli`` entry point)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agent.core.config import CoreConfig
from agent.profile import load_profiles
from agent.report import Summary, summarize
from agent.runtime import AgentRuntime, AgentSettings
from broker.logs import configure_logging
from broker.settings import Settings
from schemas.clock import SimClock
from schemas.errors import WearbusError

out = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the agent's commands to the ``wearbus`` CLI."""
    app.command("agent")(agent_command)
    app.command("report")(report_command)
    from agent.stack import up_command  # noqa: PLC0415 (keeps start-up of the other commands light)

    app.command("up")(up_command)


def agent_command(
    broker: Annotated[str | None, typer.Option("--broker", "-b", help="Broker URL; env WB_BROKER.")] = None,
    db: Annotated[Path, typer.Option(help="The agent's SQLite database.")] = Path(".wearbus/agent.db"),
    instance: Annotated[str, typer.Option(help="Instance id: client id and state topic.")] = "agent-1",
    username: Annotated[str | None, typer.Option(help="Login (needed for a persistent session on amqtt).")] = None,
    password: Annotated[str | None, typer.Option(help="Password.")] = None,
    profiles: Annotated[
        Path | None, typer.Option(help="User profiles: a scenario file (its profile:) or a users: file.")
    ] = None,
    users: Annotated[
        str | None, typer.Option(help="Comma-separated users this instance serves (default: all).")
    ] = None,
    speed: Annotated[float, typer.Option(help="Simulated seconds per wall second.")] = 1.0,
    sim_start: Annotated[int | None, typer.Option(help="Simulated start time, ms since the epoch.")] = None,
    sim_anchor: Annotated[int | None, typer.Option(help="Wall time (ms) at which the simulation started.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the agent: fuse every device's events, run skills and proactive rules, send actions, store everything."""
    configure_logging(log_level)
    config = CoreConfig()
    try:
        if profiles is not None:
            config = replace(config, profiles=load_profiles(profiles))
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    settings = AgentSettings(
        url=broker or Settings().broker,
        db=db,
        instance=instance,
        username=username,
        password=password,
        users=frozenset(u.strip() for u in users.split(",") if u.strip()) if users else None,
        core=config,
    )
    clock = SimClock(speed, sim_start, sim_anchor)
    try:
        asyncio.run(_run_agent(settings, clock))
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None


async def _run_agent(settings: AgentSettings, clock: SimClock) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: task.cancel() if task else None)
    with contextlib.suppress(asyncio.CancelledError):
        async with AgentRuntime(settings, clock) as agent:
            await agent.run()


def report_command(
    db: Annotated[Path, typer.Option(help="The agent's SQLite database.")] = Path(".wearbus/agent.db"),
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Summarise a run from the agent's database: tasks and interaction rounds, alerts, latency, traffic."""
    if not db.exists():
        err.print(f"[bold red]error:[/] no database at {db} (run `wearbus agent` or `wearbus up` first, or pass --db)")
        raise typer.Exit(1)
    summary = asyncio.run(summarize(db))
    if json_out:
        print(json.dumps(summary.as_dict(), ensure_ascii=False, indent=2))  # noqa: T201
    else:
        print_summary(summary, out)


def print_summary(summary: Summary, console: Console) -> None:
    """The human-readable summary."""
    tasks = Table(title="Tasks")
    for col in ("task", "skill", "state", "rounds", "confirmed by", "filled from context", "asked"):
        tasks.add_column(col)
    for t in summary.tasks:
        tasks.add_row(t.task_id, t.skill, t.state, str(t.rounds), t.confirm_modality or "-",
                      ", ".join(t.slots_autofilled) or "-", ", ".join(t.slots_asked) or "-")  # fmt: skip
    console.print(tasks)
    alerts = Table(title="Proactive rules that fired")
    alerts.add_column("rule")
    alerts.add_column("times", justify="right")
    for rule, n in summary.alerts.items():
        alerts.add_row(rule, str(n))
    console.print(alerts)
    lat = summary.latency_ms
    if lat:
        console.print(
            f"Latency from event to action (wall): p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
            f"max {lat['max']:.1f} ms over {summary.latency_samples} actions"
        )
    traffic = Table(title="Messages")
    traffic.add_column("topic class")
    traffic.add_column("count", justify="right")
    for name, n in summary.messages.items():
        traffic.add_row(name, str(n))
    console.print(traffic)
    acks = ", ".join(f"{k} {v}" for k, v in sorted(summary.acks.items()))
    console.print(f"Action results: {acks or 'none'}")
    stored = ", ".join(f"{k} {v}" for k, v in summary.stored.items())
    console.print(f"Stored in {summary.db}: {stored}")
    if summary.paid_rounds:
        console.print(f"Interaction rounds of paid tasks: {summary.paid_rounds} (goal: 2 each)")
