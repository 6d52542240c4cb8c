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
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from agent.failfast import EXIT_STORE
from broker.client import Bus, BusOptions
from broker.files import open_private, private_dir
from broker.logs import configure_logging
from broker.net import free_port, port_free, wait_port
from broker.settings import mqtt_choice
from cli.report import percentile, print_summary, summarize, timed_note
from schemas import codec
from schemas.envelope import Message, dump
from schemas.errors import ConfigError, WearbusError
from schemas.tasks import SignalStop, cancel_and_wait, first_of
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


#: What a child's exit status means, shown when it is restarted.
_EXIT_MEANING = {EXIT_STORE: " (its store failed: disk full, read-only or corrupt; see the store_failed line)"}


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
        private_dir(proc.log.parent)
        handle = open_private(proc.log, "ab")
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
            why = f"{rc}{_EXIT_MEANING.get(rc, '')}"
            if proc.restarts >= self.max_restarts:
                err.print(f"[red]{proc.name} exited with {why} {proc.restarts} times; giving up (log: {proc.log})[/]")
                proc.done = True
                self.changed.set()
                return
            proc.restarts += 1
            delay = min(10.0, 0.5 * 2**proc.restarts)
            err.print(f"[yellow]{proc.name} exited with {why}; restarting in {delay:.1f} s (log: {proc.log})[/]")
            await asyncio.sleep(delay)
            await self._spawn(proc)

    async def wait_finite(self) -> None:
        """Wait until every finite process (the emulators playing a scenario) has ended."""
        while not all(p.done for p in self.procs if p.finite):
            self.changed.clear()
            await self.changed.wait()

    async def stop(self, *, keep: Collection[str] = (), timeout: float = 10.0) -> None:
        """SIGTERM the processes (last started first) but those named in ``keep`` (left for a later call), then
        SIGKILL what is left. From the first call on, nothing is restarted."""
        self._stopping = True
        targets = [p for p in reversed(self.procs) if p.name not in keep]
        for p in targets:
            if p.process is not None and p.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.process.send_signal(signal.SIGTERM)
        for p in targets:
            if p.process is None:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await p.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.process.kill()
                await p.process.wait()
        if not keep:
            await cancel_and_wait(*self._watchers)


#: The bounds of the time ``up`` gives the agent to start before the scenario does (3 times the scenario check's).
AGENT_LEAD_MIN_S = 1.5
AGENT_LEAD_MAX_S = 60.0
#: How long ``up`` waits for the agent's presence before it starts the devices anyway.
AGENT_START_S = 120.0


async def wait_for_agent(timeline: Timeline, sup: Supervisor, agent: Proc, ceiling_s: float) -> bool:
    """Wait until the agent process's retained presence says online (it subscribes before that birth, so it hears
    the devices from then on). False after ``ceiling_s`` (a broker whose ACL hides presence from this login).

    Raises:
        WearbusError: the agent exited for good before it came online.
    """
    try:
        async with asyncio.timeout(ceiling_s):
            while True:
                pid = agent.process.pid if agent.process is not None else None
                if pid is not None and pid in timeline.agents_online.values():
                    return True
                if agent.done:
                    raise WearbusError(f"the agent exited before it came online; see {agent.log}")
                timeline.births.clear()
                sup.changed.clear()
                await first_of(timeline.births.wait(), sup.changed.wait(), name="up.wait_for_agent")
    except TimeoutError:
        return False


def default_scenario() -> Path:
    """The bundled "day in the life"."""
    return Path(str(resources.files("devices") / "scenarios" / "day_in_the_life.yaml"))


@dataclass(frozen=True)
class ScenarioFacts:
    """What ``up`` needs of a scenario (its emulators load it themselves)."""

    user: str
    start_ms: int
    duration_ms: int
    tz_offset_min: int


async def check_scenario(path: Path, anchor_ms: int) -> ScenarioFacts:
    """Validate the scenario before anything starts, with ``wearbus device check`` (``up`` is a tool above the
    product; the scenario format belongs to the devices, whose own loader judges it).

    Raises:
        ScenarioRefused: every problem of the file, one a line.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "device", "check", str(path), "--json", "--sim-anchor", str(anchor_ms),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "1000"},
    )  # fmt: skip
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0:
        problems = [line.removeprefix("error: ") for line in stderr.decode(errors="replace").splitlines() if line]
        raise ScenarioRefused(problems or [f"{path}: the scenario check failed with exit code {proc.returncode}"])
    facts = json.loads(stdout)
    return ScenarioFacts(str(facts["user"]), int(facts["start_ms"]), int(facts["duration_ms"]),
                         int(facts["tz_offset_min"]))  # fmt: skip


class ScenarioRefused(ConfigError):
    """A scenario that does not validate; ``problems`` one a line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Timeline:
    """Prints the bus as it happens: events in, context changes, actions out and their acks."""

    def __init__(self, console: Console, *, show: bool, show_health: bool = False, tz: tzinfo = UTC) -> None:
        self.console = console
        self.show = show
        self.show_health = show_health  # health values are redacted (by the contract's mark) unless asked for
        self.tz = tz  # the user's time zone (the scenario profile's), not the machine's
        self.counts: Counter[str] = Counter()
        self.first_action: dict[str, float] = {}
        self.event_seen: dict[str, float] = {}
        self.latencies: dict[str, float] = {}  # ms from an event to the first action it caused, by event id
        self.last_context: dict[str, str] = {}
        self.online_at: dict[str, int] = {}  # "user/kind/device" -> publish time of its last online birth
        self.births = asyncio.Event()  # set at every online birth (a device's or an agent's)
        self.agents_online: dict[str, int | None] = {}  # agent instance -> its pid, while its presence says online

    def feed(self, message: Message) -> None:
        where = message.where
        data = dump(message.envelope)["data"]
        if not self.show_health:
            data = codec.redact_payload(message.topic, data)
        env = message.envelope
        now = time.monotonic()
        ch = where.channel
        key = ch.value if ch is not Channel.EVENT else f"evt/{where.event_class}"
        self.counts[key] += 1
        stamp = datetime.fromtimestamp(env.ts / 1000, self.tz).strftime("%H:%M:%S")
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
                       escape(f"{data.get('action', '')} {data.get('detail', '')}".strip()))  # fmt: skip
        elif ch is Channel.STATE:
            if data.get("online"):
                self.online_at[f"{where.user}/{where.kind}/{where.device}"] = env.ts
                self.births.set()
            self._line(stamp, colour, who, "●", "online" if data.get("online") else "[red]offline[/]",
                       f"battery {data.get('battery_pct')}" if data.get("battery_pct") is not None else "")  # fmt: skip
        elif ch is Channel.CONTEXT:
            brief = f"activity={data.get('activity')} place={data.get('place')} quiet={data.get('quiet')} " \
                    f"asleep={data.get('asleep')} pending={data.get('pending')}"  # fmt: skip
            if self.last_context.get(where.user or "") != brief:
                self.last_context[where.user or ""] = brief
                self._line(stamp, "blue", f"context/{where.user}", "◆", "fused", brief)
        elif ch is Channel.HEALTH and self.show_health:
            self._line(stamp, "blue", f"health/{where.user}", "♥", "health", _brief(data.get("values") or {}))
        elif ch is Channel.AGENT_STATE:
            name = str(where.name)
            if data.get("online"):
                pid = data.get("pid")
                self.agents_online[name] = pid if isinstance(pid, int) else None
                self.births.set()
            else:
                self.agents_online.pop(name, None)
        elif ch is Channel.DLQ:
            # what a device sent and the bus or the agent refused: the reason, where the user looks
            field_note = f" ({data['field']})" if data.get("field") else ""
            self._line(stamp, "red", "dlq", "!", f"[red]refused {escape(str(where.name))}[/]",
                       escape(f"{data.get('topic')}: {data.get('error')}{field_note}"), detail_style="red")  # fmt: skip

    def _line(
        self, stamp: str, colour: str, who: str, arrow: str, what: str, detail: str, detail_style: str = "dim"
    ) -> None:
        """One timeline line; ``detail`` is markup-escaped text (``[lat, lon]`` and ``[a-z0-9-]`` stay visible)."""
        if self.show:
            self.console.print(f"[dim]{stamp}[/] [{colour}]{escape(who):<18}[/] {arrow} {what} "
                               f"[{detail_style}]{detail}[/]")  # fmt: skip


def _brief(data: dict[str, Any]) -> str:
    shown = {k: v for k, v in data.items() if k not in {"type", "src_ts"}}
    if "items" in shown:
        shown = {"items": len(shown["items"]), "from_ts": shown.get("from_ts"), "to_ts": shown.get("to_ts")}
    text = json.dumps(shown, ensure_ascii=False, default=str, separators=(", ", "="))
    return escape(text if len(text) < 140 else text[:137] + "...")


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
    show_health: Annotated[
        bool,
        typer.Option("--show-health", help="Show health values in the timeline and the console (redacted by default)."),
    ] = False,
) -> None:
    """Run the local stack: embedded broker, agent, four emulators per user and a scenario, with a live timeline."""
    configure_logging("warning")
    try:
        code = asyncio.run(
            _up(broker, scenario or default_scenario(), speed, users, forever, console, console_port, workdir, seed,
                quiet, json_summary, port, show_health)
        )  # fmt: skip
    except ConfigError as exc:  # a bad scenario or option: refused before anything ran
        for line in str(exc).splitlines():
            err.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)  # one problem, one line
        raise typer.Exit(2) from None
    except WearbusError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
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
    show_health: bool = False,
) -> int:
    if speed <= 0:
        raise ConfigError("--speed must be positive")
    if n_users < 1:
        raise ConfigError("--users must be at least 1")
    anchor = int(time.time() * 1000) + 3000
    probe_start = time.monotonic()
    loaded = await check_scenario(scenario, anchor)  # every problem of the file, before anything starts
    # how long a wearbus process takes to start on this machine now (the check is one): the agent takes ~3 times as
    # long (its parser's tables, its instance claim), and the scenario starts once it listens
    agent_lead_s = min(AGENT_LEAD_MAX_S, max(AGENT_LEAD_MIN_S, 3 * (time.monotonic() - probe_start)))
    user, duration_s = loaded.user, loaded.duration_ms / 1000
    tz = timezone(timedelta(minutes=loaded.tz_offset_min))
    run_dir = workdir / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    private_dir(workdir)
    private_dir(run_dir)
    db = run_dir / "agent.db"
    wearbus = [sys.executable, "-m", "cli.main"]
    sup = Supervisor()
    agent_pw = secrets.token_urlsafe(12)
    stop = SignalStop()  # Ctrl-C and SIGTERM stop the stack cleanly
    timeline = Timeline(out, show=not quiet, show_health=show_health, tz=tz)
    # The timeline's tap, then its bus: on the way out the bus closes first, which ends the tap's loop.
    stack = contextlib.AsyncExitStack()
    given_protocol: str | None = None  # else WB_PROTOCOL's, read here at the edge
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
            given_protocol = "3.1.1"  # amqtt speaks only 3.1.1: spare every process the MQTT 5 probe
        users = [user] + [f"{user}-{i}" for i in range(2, n_users + 1)]
        anchor = max(anchor, int(time.time() * 1000) + int(agent_lead_s * 1000))
        start_ms = loaded.start_ms
        sim = ["--speed", str(speed), "--sim-anchor", str(anchor), "--sim-start", str(start_ms)]
        # --forever: the agent on the scenario's simulated time, then on the wall clock from the scenario's end
        wall_after = ["--wall-after", str(start_ms + loaded.duration_ms)] if forever else []
        protocol, transport = mqtt_choice(given_protocol, None)
        mqtt = ["--protocol", protocol, "--transport", transport]  # every child process gets them as options
        taps = await stack.enter_async_context(asyncio.TaskGroup())
        bus = await stack.enter_async_context(Bus(BusOptions(url=broker_url, name="up-timeline", connect_timeout_s=20,
                                                             protocol=protocol, transport=transport)))  # fmt: skip
        await bus.subscribe("wb/#", 1)

        async def tap() -> None:
            async for message in bus.messages():
                timeline.feed(message)

        taps.create_task(tap(), name="up.timeline")
        agent = Proc("agent", [*wearbus, "agent", "--broker", broker_url, "--db", str(db), "--username", "agent",
                               "--password", agent_pw, "--profiles", str(scenario), *sim, *mqtt, *wall_after],
                     run_dir / "agent.log")  # fmt: skip
        await sup.start(agent)
        if with_console:
            cport = console_port if port_free(console_port) else free_port()
            health = ["--show-health"] if show_health else []
            await sup.start(Proc("console", [*wearbus, "console", "--broker", broker_url, "--port", str(cport),
                                             *health, *mqtt], run_dir / "console.log", restart=True))  # fmt: skip
            err.print(f"[green]web console:[/] http://127.0.0.1:{cport}/")
        # The devices start once the agent listens: what they say before would reach nobody (it is not retained).
        if not await wait_for_agent(timeline, sup, agent, AGENT_START_S):
            err.print(f"[yellow]the agent's presence did not say online within {AGENT_START_S:.0f} s (see "
                      f"{agent.log}); starting the devices anyway[/]")  # fmt: skip
        late_s = time.time() - anchor / 1000
        if late_s > 0:
            err.print(f"[yellow]the agent took {late_s + agent_lead_s:.1f} s to start (a busy machine?): the "
                      f"scenario's first {late_s * speed / 60:.0f} simulated minutes play at once[/]")  # fmt: skip
        for i, u in enumerate(users):
            for kind in KINDS:
                argv = [*wearbus, "device", kind, "--user", u, "--id", DEVICE_IDS[kind], "--broker", broker_url,
                        "--scenario", str(scenario), "--seed", str(seed + i), *sim, *mqtt]  # fmt: skip
                await sup.start(Proc(f"{kind}[{u}]", argv, run_dir / f"{kind}-{u}.log", finite=True))
        wall = duration_s / speed
        err.print(f"[green]wearbus up[/]: broker {broker_url}, {len(users)} user(s) x 4 devices, scenario "
                  f"{scenario.name} ({duration_s / 3600:.1f} h simulated in ~{wall:.0f} s at x{speed:g}); "
                  f"logs in {run_dir}")  # fmt: skip
        await sup.wait_finite()
        if forever:
            # The scenario is over: the agent's clock is the wall clock from its end (--wall-after), and the same
            # devices carry on as idle emulators on the wall clock (a fresh birth each), beside any real device.
            await asyncio.sleep(max(0.0, anchor / 1000 + wall - time.time()))
            for u in users:
                for kind in KINDS:
                    argv = [*wearbus, "device", kind, "--user", u, "--id", DEVICE_IDS[kind], "--broker", broker_url,
                            *mqtt]  # fmt: skip
                    await sup.start(Proc(f"{kind}[{u}]+", argv, run_dir / f"{kind}-{u}-wall.log"))
            switched = int(time.time() * 1000) - 1000
            idle = [f"{u}/{kind}/{DEVICE_IDS[kind]}" for u in users for kind in KINDS]
            with contextlib.suppress(TimeoutError):  # said once they are up (a slow machine: after 60 s anyway)
                async with asyncio.timeout(60):
                    while any(timeline.online_at.get(who, 0) < switched for who in idle):
                        timeline.births.clear()
                        await timeline.births.wait()
            err.print("[green]scenario over: the stack is on the wall clock now, the emulators idle on; attach real "
                      "devices (README: Attach a real device). Ctrl-C stops the stack.[/]")  # fmt: skip
            await asyncio.Event().wait()
        await asyncio.sleep(min(3.0, max(1.0, 60 / speed)))  # let the last actions and acks land
    except asyncio.CancelledError:
        if not stop.taken():
            raise
        err.print("[yellow]stopping...[/]")
    finally:
        # all but the broker; then the timeline's bus, which saw their last words and now leaves before its broker
        # goes (no "connection lost" at the end of every run); then the broker
        await sup.stop(keep={"broker"})
        try:
            await stack.aclose()
        finally:
            await sup.stop()
    failed = [p for p in sup.procs if p.finite and (not p.exit_codes or p.exit_codes[-1] != 0)]
    if not db.exists():
        err.print(f"[red]the agent wrote no database at {db}; see {run_dir}/agent.log[/]")
        return 1
    summary = await summarize(db)
    from cli.report import LATENCY_BUS  # noqa: PLC0415

    out.rule("Summary")
    print_summary(summary, out)
    # answers only: an action the agent made later, at its time (a "leave now" card), is no measure of its speed
    lat = sorted(ms for corr, ms in timeline.latencies.items() if corr in summary.answered)
    timed = sorted(ms for corr, ms in timeline.latencies.items() if corr not in summary.answered)
    if lat:
        out.print(f"{LATENCY_BUS}: p50 {percentile(lat, 50):.1f} ms, "
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
    if stop.signals:
        return 130
    if failed:
        err.print(f"[red]these emulators did not finish cleanly: {', '.join(p.name for p in failed)}[/]")
        return 1
    return 0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2))
