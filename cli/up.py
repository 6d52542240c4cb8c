"""``wearbus up``: the local stack as separate processes, supervised, with a live timeline and a summary.

It starts, each as its own OS process, the embedded broker (unless ``--broker`` names one), the agent, the four
emulators per user and (optionally) the web console; plays the scenario on one simulation clock shared by every
process (same start and anchor); restarts a process that crashes, with backoff; stops everything it started on
Ctrl-C, SIGTERM or when the scenario is over, by PID; and prints what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from broker.client import Bus, BusOptions
from broker.logs import configure_logging
from broker.net import free_port, port_free, wait_port
from cli.report import percentile, print_summary, summarize, timed_note
from schemas.envelope import Message, dump
from schemas.errors import ConfigError, WearbusError
from schemas.topics import Channel

out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

KINDS = ("glasses", "ring", "earphones", "phone")
DEVICE_IDS = {"glasses": "glasses-1", "ring": "ring-1", "earphones": "buds-1", "phone": "phone-1"}
COLOURS = {"glasses": "cyan", "ring": "magenta", "earphones": "green", "phone": "yellow", "agent": "blue"}
QUIET_EVENTS = frozenset(
    {"sensor/head_pose", "system/heartbeat", "sensor/location", "system/battery", "system/display"}
)


@dataclass
class Proc:
    """A supervised child process."""

    name: str
    argv: list[str]
    log: Path
    restart: bool = True
    finite: bool = False
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    done: bool = False


class Supervisor:
    """Starts processes, restarts crashed ones with backoff, and stops them all (by PID) at the end."""

    def __init__(self, max_restarts: int = 5) -> None:
        self.procs: list[Proc] = []
        self.max_restarts = max_restarts
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        self.changed = asyncio.Event()

    async def start(self, proc: Proc) -> None:
        """Start a process and watch it."""
        self.procs.append(proc)
        await self._spawn(proc)
        self._watchers.append(asyncio.create_task(self._watch(proc), name=f"up.watch[{proc.name}]"))

    async def _spawn(self, proc: Proc) -> None:
        proc.log.parent.mkdir(parents=True, exist_ok=True)
        handle = proc.log.open("ab")
        try:
            proc.process = await asyncio.create_subprocess_exec(
                *proc.argv, stdout=handle, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "WB_LOG_JSON": "1"},
            )  # fmt: skip
        finally:
            handle.close()

    async def _watch(self, proc: Proc) -> None:
        while True:
            assert proc.process is not None  # noqa: S101
            rc = await proc.process.wait()
            proc.exit_codes.append(rc)
            if self._stopping or (proc.finite and rc == 0) or not proc.restart:
                proc.done = True
                self.changed.set()
                return
            if proc.restarts >= self.max_restarts:
                err.print(f"[red]{proc.name} exited with {rc} {proc.restarts} times; giving up (log: {proc.log})[/]")
                proc.done = True
                self.changed.set()
                return
            proc.restarts += 1
            delay = min(10.0, 0.5 * 2**proc.restarts)
            err.print(f"[yellow]{proc.name} exited with {rc}; restarting in {delay:.1f} s (log: {proc.log})[/]")
            await asyncio.sleep(delay)
            await self._spawn(proc)

    async def wait_finite(self) -> None:
        """Wait until every finite process (the emulators playing a scenario) has ended."""
        while not all(p.done for p in self.procs if p.finite):
            self.changed.clear()
            await self.changed.wait()

    async def stop(self, names: list[str] | None = None, timeout: float = 10.0) -> None:
        """SIGTERM the processes (all, or the named ones, last started first), then SIGKILL what is left."""
        self._stopping = names is None or self._stopping
        targets = [p for p in reversed(self.procs) if names is None or p.name in names]
        for p in targets:
            if p.process is not None and p.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.process.send_signal(signal.SIGTERM)
        for p in targets:
            if p.process is None:
                continue
            try:
                await asyncio.wait_for(p.process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.process.kill()
                await p.process.wait()
        if names is None:
            for w in self._watchers:
                w.cancel()
            for w in self._watchers:
                with contextlib.suppress(asyncio.CancelledError):
                    await w


def default_scenario() -> Path:
    """The bundled "day in the life"."""
    return Path(str(resources.files("devices") / "scenarios" / "day_in_the_life.yaml"))


def scenario_info(path: Path) -> tuple[str, int | None, float]:
    """The scenario's user, start time (ms) and duration (s), as far as ``up`` needs them."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a scenario is a mapping")
    start = doc.get("start")
    start_ms = None
    if isinstance(start, datetime):
        start_ms = int(start.timestamp() * 1000)
    elif isinstance(start, str):
        try:
            start_ms = int(datetime.fromisoformat(start).timestamp() * 1000)
        except ValueError as exc:
            raise ConfigError(f"{path}: start {start!r} is not an ISO date-time") from exc
    duration = doc.get("duration", 0)
    return str(doc.get("user", "alice")), start_ms, float(_seconds(duration))


def _seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lstrip("+")
    parts = [float(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


class Timeline:
    """Prints the bus as it happens: events in, context changes, actions out and their acks."""

    def __init__(self, console: Console, *, show: bool) -> None:
        self.console = console
        self.show = show
        self.counts: Counter[str] = Counter()
        self.first_action: dict[str, float] = {}
        self.event_seen: dict[str, float] = {}
        self.latencies: dict[str, float] = {}  # ms from an event to the first action it caused, by event id
        self.last_context: dict[str, str] = {}

    def feed(self, message: Message) -> None:
        where = message.where
        data = dump(message.envelope)["data"]
        env = message.envelope
        now = time.monotonic()
        ch = where.channel
        key = ch.value if ch is not Channel.EVENT else f"evt/{where.event_class}"
        self.counts[key] += 1
        stamp = datetime.fromtimestamp(env.ts / 1000).strftime("%H:%M:%S")
        who = f"{where.kind}/{where.device}" if where.device else "agent"
        colour = COLOURS.get(str(where.kind) if where.kind else "agent", "white")
        if ch is Channel.EVENT:
            self.event_seen[env.id] = now
            if len(self.event_seen) > 10_000:
                self.event_seen.pop(next(iter(self.event_seen)))
            name = f"{where.event_class}/{where.name}"
            if name in QUIET_EVENTS:
                return
            self._line(stamp, colour, who, "→", name, _brief(data))
        elif ch is Channel.COMMAND:
            if env.corr and env.corr in self.event_seen and env.corr not in self.first_action:
                self.first_action[env.corr] = now
                self.latencies[env.corr] = (now - self.event_seen[env.corr]) * 1000
            self._line(stamp, colour, who, "←", f"[bold]{where.name}[/]", _brief(data))
        elif ch is Channel.ACK:
            status = data.get("status", "")
            style = "green" if status == "done" else "red"
            self._line(stamp, colour, who, "✓" if status == "done" else "✗", f"[{style}]ack {status}[/]",
                       f"{data.get('action', '')} {data.get('detail', '')}".strip())  # fmt: skip
        elif ch is Channel.STATE:
            self._line(stamp, colour, who, "●", "online" if data.get("online") else "[red]offline[/]",
                       f"battery {data.get('battery_pct')}" if data.get("battery_pct") is not None else "")  # fmt: skip
        elif ch is Channel.CONTEXT:
            brief = f"activity={data.get('activity')} place={data.get('place')} quiet={data.get('quiet')} " \
                    f"asleep={data.get('asleep')} pending={data.get('pending')}"  # fmt: skip
            if self.last_context.get(where.user or "") != brief:
                self.last_context[where.user or ""] = brief
                self._line(stamp, "blue", f"context/{where.user}", "◆", "fused", brief)
        elif ch is Channel.DLQ:
            self._line(stamp, "red", "dlq", "!", f"[red]{where.name}[/]", f"{data.get('topic')}: {data.get('error')}")

    def _line(self, stamp: str, colour: str, who: str, arrow: str, what: str, detail: str) -> None:
        if self.show:
            self.console.print(f"[dim]{stamp}[/] [{colour}]{who:<18}[/] {arrow} {what} [dim]{detail}[/]")


def _brief(data: dict[str, Any]) -> str:
    shown = {k: v for k, v in data.items() if k not in {"type", "src_ts"}}
    if "items" in shown:
        shown = {"items": len(shown["items"]), "from_ts": shown.get("from_ts"), "to_ts": shown.get("to_ts")}
    text = json.dumps(shown, ensure_ascii=False, default=str, separators=(", ", "="))
    return text if len(text) < 140 else text[:137] + "..."


def up_command(
    broker: Annotated[
        str | None, typer.Option("--broker", "-b", help="Use this broker instead of the embedded one.")
    ] = None,
    scenario: Annotated[Path | None, typer.Option(help="Scenario YAML (default: the bundled day in the life).")] = None,
    speed: Annotated[float, typer.Option(help="Simulated seconds per wall second.")] = 120.0,
    users: Annotated[int, typer.Option(help="How many users (each with four devices) play the scenario.")] = 1,
    forever: Annotated[bool, typer.Option(help="Keep the stack running after the scenario, for real devices.")] = False,
    console: Annotated[bool, typer.Option(help="Serve the web console on 127.0.0.1.")] = True,
    console_port: Annotated[int, typer.Option(help="Web console port.")] = 8787,
    workdir: Annotated[Path, typer.Option(help="Where the database and the process logs go.")] = Path(".wearbus"),
    seed: Annotated[int, typer.Option(help="Seed of the emulators' randomness.")] = 7,
    quiet: Annotated[bool, typer.Option(help="No live timeline (summary only).")] = False,
    json_summary: Annotated[Path | None, typer.Option(help="Also write the summary as JSON here.")] = None,
    port: Annotated[
        int, typer.Option(help="Port of the embedded broker (a free one is chosen if it is taken).")
    ] = 1883,
) -> None:
    """Run the local stack: embedded broker, agent, four emulators per user and a scenario, with a live timeline."""
    configure_logging("warning")
    try:
        code = asyncio.run(
            _up(broker, scenario or default_scenario(), speed, users, forever, console, console_port, workdir, seed,
                quiet, json_summary, port)
        )  # fmt: skip
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


async def _up(
    broker_url: str | None,
    scenario: Path,
    speed: float,
    n_users: int,
    forever: bool,
    with_console: bool,
    console_port: int,
    workdir: Path,
    seed: int,
    quiet: bool,
    json_summary: Path | None,
    port: int,
) -> int:
    if speed <= 0:
        raise ConfigError("--speed must be positive")
    if n_users < 1:
        raise ConfigError("--users must be at least 1")
    user, start_ms, duration_s = scenario_info(scenario)
    run_dir = workdir / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    db = run_dir / "agent.db"
    wearbus = [sys.executable, "-m", "cli.main"]
    sup = Supervisor()
    agent_pw = secrets.token_urlsafe(12)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        if task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    timeline = Timeline(out, show=not quiet)
    tap_task: asyncio.Task[None] | None = None
    try:
        if broker_url is None:
            if port == 0:
                port = free_port()
            elif not port_free(port):
                new = free_port()
                err.print(
                    f"[yellow]port {port} is taken (a broker already running?); the embedded broker uses {new}. "
                    f"To use the broker on {port} instead: wearbus up --broker mqtt://127.0.0.1:{port}[/]"
                )
                port = new
            await sup.start(Proc("broker", [*wearbus, "broker", "--port", str(port), "--user", f"agent:{agent_pw}"],
                                 run_dir / "broker.log"))  # fmt: skip
            try:
                await wait_port(port, 20)
            except TimeoutError as exc:
                raise WearbusError(f"the embedded broker did not open port {port}: {exc}") from exc
            broker_url = f"mqtt://127.0.0.1:{port}"
            os.environ["WB_PROTOCOL"] = "3.1.1"  # amqtt speaks only 3.1.1: spare every process the MQTT 5 probe
        users = [user] + [f"{user}-{i}" for i in range(2, n_users + 1)]
        anchor = int(time.time() * 1000) + 1500
        sim = ["--speed", str(speed), "--sim-anchor", str(anchor)]
        if start_ms is not None:
            sim += ["--sim-start", str(start_ms)]
        bus = Bus(BusOptions(url=broker_url, name="up-timeline", connect_timeout_s=20))
        await bus.__aenter__()
        await bus.subscribe("wb/#", 1)

        async def tap() -> None:
            async for message in bus.messages():
                timeline.feed(message)

        tap_task = asyncio.create_task(tap(), name="up.timeline")
        await sup.start(Proc("agent", [*wearbus, "agent", "--broker", broker_url, "--db", str(db), "--username",
                                       "agent", "--password", agent_pw, "--profiles", str(scenario), *sim],
                             run_dir / "agent.log"))  # fmt: skip
        if with_console:
            cport = console_port if port_free(console_port) else free_port()
            await sup.start(Proc("console", [*wearbus, "console", "--broker", broker_url, "--port", str(cport)],
                                 run_dir / "console.log", restart=True))  # fmt: skip
            err.print(f"[green]web console:[/] http://127.0.0.1:{cport}/")
        for i, u in enumerate(users):
            for kind in KINDS:
                argv = [*wearbus, "device", kind, "--user", u, "--id", DEVICE_IDS[kind], "--broker", broker_url,
                        "--scenario", str(scenario), "--seed", str(seed + i), *sim]  # fmt: skip
                if forever:
                    argv.append("--forever")
                await sup.start(Proc(f"{kind}[{u}]", argv, run_dir / f"{kind}-{u}.log", finite=not forever))
        wall = duration_s / speed
        err.print(f"[green]wearbus up[/]: broker {broker_url}, {len(users)} user(s) x 4 devices, scenario "
                  f"{scenario.name} ({duration_s / 3600:.1f} h simulated in ~{wall:.0f} s at x{speed:g}); "
                  f"logs in {run_dir}")  # fmt: skip
        if forever:
            await asyncio.Event().wait()
        await sup.wait_finite()
        await asyncio.sleep(min(3.0, max(1.0, 60 / speed)))  # let the last actions and acks land
    except asyncio.CancelledError:
        if not interrupted:
            raise
        err.print("[yellow]stopping...[/]")
    finally:
        await sup.stop()
        if tap_task is not None:
            tap_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tap_task
            await bus.__aexit__(None, None, None)
    failed = [p for p in sup.procs if p.finite and (not p.exit_codes or p.exit_codes[-1] != 0)]
    if not db.exists():
        err.print(f"[red]the agent wrote no database at {db}; see {run_dir}/agent.log[/]")
        return 1
    summary = await summarize(db)

    out.rule("Summary")
    print_summary(summary, out)
    # answers only: an action the agent made later, at its time (a "leave now" card), is no measure of its speed
    lat = sorted(ms for corr, ms in timeline.latencies.items() if corr in summary.answered)
    timed = sorted(ms for corr, ms in timeline.latencies.items() if corr not in summary.answered)
    if lat:
        out.print(f"Event to action as seen on the bus: p50 {percentile(lat, 50):.1f} ms, "
                  f"p99 {percentile(lat, 99):.1f} ms ({len(lat)} actions)" + timed_note(len(timed)))  # fmt: skip
    out.print("Bus traffic by class: " + ", ".join(f"{k} {v}" for k, v in sorted(timeline.counts.items())))
    out.print(f"Processes: {len(sup.procs)} started, all stopped; restarts: "
              f"{sum(p.restarts for p in sup.procs)}; logs in {run_dir}")  # fmt: skip
    if json_summary is not None:
        data = summary.as_dict()
        data["bus_counts"] = dict(timeline.counts)
        data["bus_latency_ms"] = lat
        data["bus_timed_ms"] = timed
        data["failed_processes"] = [p.name for p in failed]
        data["restarts"] = {p.name: p.restarts for p in sup.procs if p.restarts}
        _write_json(json_summary, data)
    if interrupted:
        return 130
    if failed:
        err.print(f"[red]these emulators did not finish cleanly: {', '.join(p.name for p in failed)}[/]")
        return 1
    return 0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2))
