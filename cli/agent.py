"""``wearbus agent``, ``wearbus report`` and ``wearbus up`` (registered through the ``wearbus.cli`` entry point)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from agent.core.config import CoreConfig, at_speed
from agent.core.fuzzy import warm as warm_parser
from agent.failfast import EXIT_STORE, StoreFailed, unrecoverable
from agent.llm import ChatResolver, ResolverConfig
from agent.profile import load_profiles
from agent.runtime import AgentRuntime, AgentSettings
from agent.sealing import HealthCipher
from broker.bus import Bus, BusOptions
from broker.connect import open_bus
from broker.logs import configure_logging
from broker.settings import ProtocolOpt, Settings, TransportOpt, mqtt_choice
from cli.report import print_summary, summarize
from schemas import codec
from schemas.clock import SimClock
from schemas.errors import WearbusError
from schemas.profile import profile_from
from schemas.tasks import SignalStop

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the agent's commands to the ``wearbus`` CLI."""
    app.command("agent")(agent_command)
    app.command("report")(report_command)
    from cli.privacy import register as register_privacy  # noqa: PLC0415

    register_privacy(app)
    from cli.up import up_command  # noqa: PLC0415 (keeps start-up of the other commands light)

    app.command("up")(up_command)
    app.command("replay-agent")(replay_agent_command)
    app.command("diff")(diff_command)
    from cli.eval import eval_command  # noqa: PLC0415

    app.command("eval")(eval_command)


def tune_gc() -> None:
    """Collect garbage less often in the agent process, and never walk what it keeps for its whole life.

    The agent keeps many long-lived objects (the contexts of thousands of users), and CPython's default thresholds
    (700, 10, 10) walk all of them in a full collection every ~70,000 allocations: at 2,500 users that was a tenth of
    the agent's CPU (py-spy, docs/benchmarks.md). Its own garbage is short-lived and reference counting frees it.

    What the process keeps from its start to its end (the modules, the parser's word and pinyin tables, every
    envelope validator, ~78,000 objects) is loaded here and then frozen (``gc.freeze``): a full collection no longer
    walks it. It was most of what a full collection walked: 46-50 ms with the event loop stopped, against 7-10 ms
    frozen, with the contexts of 1,000 users (docs/benchmarks.md, section 11). Before the fork of ``--workers``, as
    the ``gc`` documentation advises: the collector no longer writes to those objects, so fewer of their pages are
    copied into each worker.
    """
    warm_parser()  # the runtime warms both too (cached): a library user of AgentRuntime gets them at start as well
    codec.warm()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


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
    speed: Annotated[
        float,
        typer.Option(
            help="Simulated seconds per wall second. Above 1 (without --wall-after, which ends on the wall clock), "
            "each timer that waits for a reply across the bus (an ack, a quote, a measurement, an answer to a card, "
            "an undo) gets 2 s of wall time more."
        ),
    ] = 1.0,
    sim_start: Annotated[int | None, typer.Option(help="Simulated start time, ms since the epoch.")] = None,
    sim_anchor: Annotated[int | None, typer.Option(help="Wall time (ms) at which the simulation started.")] = None,
    wall_after: Annotated[
        int | None,
        typer.Option(
            help="Simulated time (ms) after which the agent's clock is the wall clock (the scenario's end; "
            "wearbus up --forever sets it), so real devices on the wall clock are accepted from then on."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    slow_turn_ms: Annotated[
        float, typer.Option(help="Log pump_turn_slow when one pass of the pump holds the loop longer (0: never).")
    ] = 100.0,
    linger_ms: Annotated[
        float,
        typer.Option(
            help="Wait up to this long for a fuller batch when a few non-interactive events are waiting "
            "(a sentence or a gesture never waits; 0: never)."
        ),
    ] = 5.0,
    log_retention_days: Annotated[
        float,
        typer.Option(
            help="Keep each event in the log this long (by arrival), and recognise a repeat of it this long; "
            "0: for ever. The log grows ~150 MB a day per user whose glasses send head poses at 5 Hz."
        ),
    ] = 7.0,
    health_retention_days: Annotated[
        float,
        typer.Option(help="Keep the raw payload of health events this long, then store a redacted copy."),
    ] = 7.0,
    default_consent: Annotated[
        list[str] | None,
        typer.Option(
            help="A purpose every user without a profile has consented to (collected at sign-up); repeatable. "
            "By default nobody has: health rules are opt-in."
        ),
    ] = None,
    health_hourly_days: Annotated[
        float, typer.Option(help="Keep the hourly aggregates of pruned health values this long.")
    ] = 365.0,
    health_key: Annotated[
        Path | None,
        typer.Option(help="Seal health values at rest with this AES-256-GCM key (make one: wearbus health-key)."),
    ] = None,
    llm_url: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible API for sentences the built-in parser misses (off by default); "
            "e.g. http://127.0.0.1:8000/v1 for vLLM. Key from WB_LLM_API_KEY."
        ),
    ] = None,
    llm_model: Annotated[str, typer.Option(help="The model name for --llm-url.")] = "qwen",
    cluster: Annotated[
        str | None, typer.Option(help="Run as a member of this agent cluster (docs/scale-out.md); --db is unused.")
    ] = None,
    member: Annotated[str | None, typer.Option(help="Cluster member id (default: --instance).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Run N worker processes on this host, each owning the users of a fixed share of the --buckets "
            "(bucket b: worker b % N), with its own session ({instance}-w{i}) and database (agent.db: agent.w{i}.db). "
            "A worker that dies stops the others and the command exits non-zero (docs/scale-out.md)."
        ),
    ] = 1,
    buckets: Annotated[
        int, typer.Option(help="Cluster and --workers: number of user buckets (same on every member).")
    ] = 64,
    nodes: Annotated[
        str | None, typer.Option(help="Cluster: comma-separated broker node URLs (default: --broker).")
    ] = None,
    state: Annotated[str, typer.Option(help="Cluster: Redis URL of the shared bucket store.")] = (
        "redis://127.0.0.1:6379/0"
    ),
    partitions: Annotated[
        str, typer.Option(help="Cluster: nats (broker partition mapping) or filters (per-user, needs --users).")
    ] = "nats",
    max_attempts: Annotated[
        int,
        typer.Option(
            help="Park a message on wb/v1/_dlq/parked once the agent failed this many times while handling it "
            "(0: never)."
        ),
    ] = 3,
    db_max_mb: Annotated[
        float,
        typer.Option(
            help="Cap the database at this many MiB (0: no cap). Past 80 % of it the oldest events a restart no "
            "longer needs are deleted, whatever --log-retention-days says; if that cannot make room, the agent "
            "stops acknowledging and exits with status 74, as on a full disk."
        ),
    ] = 0.0,
    escape_dots: Annotated[
        bool, typer.Option(help="Cluster: send '.' in topics as '_' (nats-server < 2.10; tests only).")
    ] = False,
    protocol: ProtocolOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Run the agent: fuse every device's events, run skills and proactive rules, send actions, store everything."""
    configure_logging(log_level)
    config = CoreConfig()
    try:
        if profiles is not None:
            config = replace(config, profiles=load_profiles(profiles))
        mqtt = mqtt_choice(protocol, transport)
        if default_consent:
            given = profile_from({"consent": default_consent}, "--default-consent").consent
            config = replace(config, default_profile=config.default_profile.model_copy(update={"consent": given}))
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    settings = AgentSettings(
        url=broker or Settings().broker,
        protocol=mqtt[0],
        transport=mqtt[1],
        db=db,
        instance=instance,
        username=username,
        password=password,
        users=frozenset(u.strip() for u in users.split(",") if u.strip()) if users else None,
        core=at_speed(config, speed) if wall_after is None else config,
        slow_turn_ms=slow_turn_ms,
        linger_s=linger_ms / 1000,
        db_max_mb=db_max_mb,
        max_attempts=max_attempts,
        log_retention_s=log_retention_days * 86_400,
        health_retention_s=health_retention_days * 86_400,
        health_hourly_retention_s=health_hourly_days * 86_400,
        health_key=health_key,
        resolver=ChatResolver(ResolverConfig(llm_url, llm_model, os.environ.get("WB_LLM_API_KEY")))
        if llm_url
        else None,
    )
    clock = SimClock(speed, sim_start, sim_anchor, wall_after)
    if cluster is not None and workers != 1:
        err.print("[bold red]error:[/] --workers is for one host; a cluster scales with more members (--cluster)")
        raise typer.Exit(2)
    tune_gc()
    if cluster is not None:
        _run_cluster_member(
            settings, clock, cluster, member or instance, buckets, nodes, state, partitions, escape_dots=escape_dots
        )
        return
    if workers != 1:
        from cli.workers import run_workers  # noqa: PLC0415 (imports the cluster's bucket hash)

        raise typer.Exit(run_workers(settings, clock, workers, buckets, serve))
    serve(settings, clock)


def serve(settings: AgentSettings, clock: SimClock, bus_factory: Callable[[BusOptions], Bus] = open_bus) -> None:
    """Run one agent process until signalled; on a failure, say why and end the process with its exit status."""
    try:
        asyncio.run(_run_agent(settings, clock, bus_factory))
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        _exit_now(EXIT_STORE if isinstance(exc, StoreFailed) or unrecoverable(exc) is not None else 1)
    except Exception:  # noqa: BLE001  (a bug: its traceback without frame locals, which hold payloads; then out)
        err.print_exception(show_locals=False)
        _exit_now(1)


def _run_cluster_member(
    settings: AgentSettings,
    clock: SimClock,
    cluster: str,
    member: str,
    buckets: int,
    nodes: str | None,
    state: str,
    partitions: str,
    *,
    escape_dots: bool,
) -> None:
    from agent.cluster import ClusterSettings, run_member  # noqa: PLC0415 (needs redis; only cluster members do)

    if partitions not in {"nats", "filters"}:
        err.print(f"[bold red]error:[/] --partitions must be nats or filters, not {partitions!r}")
        raise typer.Exit(2)
    urls = tuple(u.strip() for u in (nodes or settings.url).split(",") if u.strip())
    try:
        member_settings = ClusterSettings(
            name=cluster,
            member=member,
            nodes=urls,
            state_url=state,
            buckets=buckets,
            partitions="nats" if partitions == "nats" else "filters",
            users=settings.users,
            protocol="3.1.1" if partitions == "nats" else "auto",
            escape_dots=escape_dots,
            agent=settings,
        )
        asyncio.run(_until_signalled(run_member(member_settings, clock)))
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _exit_now(status: int) -> None:
    """End the process at once with ``status``: after a failed store transaction a non-daemon thread kept the agent
    alive with nothing running ("database or disk is full" printed, no connection, no answers), so its supervisor
    never restarted it. Everything to say is said and nothing more can be stored: no cleanup is lost."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


async def _until_signalled(job: Coroutine[Any, Any, None]) -> None:
    """Run ``job`` until it ends or SIGINT or SIGTERM stops it: the signal cancels this task, and that cancellation
    (ours) is a clean end. Any other cancellation goes on."""
    stop = SignalStop()
    try:
        await job
    except asyncio.CancelledError:
        if not stop.taken():
            raise


async def _run_agent(settings: AgentSettings, clock: SimClock, bus_factory: Callable[[BusOptions], Bus]) -> None:
    async def run() -> None:
        async with AgentRuntime(settings, clock, bus_factory=bus_factory) as agent:
            await agent.run()

    await _until_signalled(run())


def report_command(
    db: Annotated[Path, typer.Option(help="The agent's SQLite database.")] = Path(".wearbus/agent.db"),
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    health_key: Annotated[
        Path | None, typer.Option(help="The key the agent sealed health values with (to read them).")
    ] = None,
) -> None:
    """Summarise a run from the agent's database: tasks and interaction rounds, alerts, latency, traffic."""
    if not db.exists():
        err.print(f"[bold red]error:[/] no database at {db} (run `wearbus agent` or `wearbus up` first, or pass --db)")
        raise typer.Exit(1)
    try:
        cipher = HealthCipher.from_file(health_key) if health_key is not None else None
        summary = asyncio.run(summarize(db, cipher))
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if json_out:
        print(json.dumps(summary.as_dict(), ensure_ascii=False, indent=2))  # noqa: T201
    else:
        print_summary(summary, out)


def replay_agent_command(
    recording: Annotated[Path, typer.Argument(help="A recording made with `wearbus record`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the action log (JSON lines).")] = Path(
        "actions.jsonl"
    ),
    profiles: Annotated[Path | None, typer.Option(help="User profiles (a scenario or a users: file).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a core setting, e.g. --set hr_high_bpm=110; repeatable.")
    ] = None,
) -> None:
    """Replay a recording into the agent's core on the simulation clock (deterministic) and log its actions."""
    from cli.replay import describe, override, replay_into_core, write_actions  # noqa: PLC0415

    try:
        config = CoreConfig()
        if profiles is not None:
            config = replace(config, profiles=load_profiles(profiles))
        config = override(config, set_ or [])
        actions = replay_into_core(recording, config)
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    write_actions(output, actions)
    out.print(f"{describe(actions)} written to {output}")


def diff_command(
    a: Annotated[Path, typer.Argument(help="Action log of the first agent version (`wearbus replay-agent`).")],
    b: Annotated[Path, typer.Argument(help="Action log of the second agent version.")],
) -> None:
    """Show how the actions of two agent versions differ on the same recording (exit 1 when they differ)."""
    from cli.replay import diff_actions, read_actions  # noqa: PLC0415

    try:
        lines = diff_actions(read_actions(a), read_actions(b), names=(str(a), str(b)))
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if not lines:
        out.print("no difference in actions")
        return
    for line in lines:
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        else:
            style = "dim" if line.startswith("@@") else "default"
        out.print(f"[{style}]{escape(line)}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)
