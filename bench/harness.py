"""The benchmark harness: the broker under test, child processes, CPU and memory sampling, the raw baselines.

Everything measured runs in its own process (broker, receivers, echo, fleets, the agent), started here by argv,
and is stopped here by its PID (each child leads its own process group). Every wait is bounded in time, every
loop in count. The broker-side sections (raw receive rates, raw round trips) live here; the agent-side sections
are in ``bench/agent.py``, which imports this module (never the other way round).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import psutil
from rich.console import Console
from rich.table import Table

from bench import mix
from bench.fleet import raise_nofile
from bench.loadgen import WireClient
from broker.embedded import free_port
from broker.url import BrokerUrl
from schemas.errors import BusConnectionError, BusError, ConfigError
from schemas.tasks import cancel_and_wait
from schemas.topics import AGENT_FILTERS
from testkit.mosquitto import MosquittoProcess, mosquitto_available

PY = sys.executable

#: The no-drop benchmark broker (performance.md §1.6): Nagle off, no queue or in-flight limits, QoS 0 queued for
#: offline persistent sessions (the preloaded QoS 0 baselines need it), no disk persistence (the test kit's
#: default saves on every change, which would measure the disk), any number of connections, $SYS every second.
BENCH_MOSQUITTO_LINES = (
    "set_tcp_nodelay true",
    "max_queued_messages 0",
    "max_inflight_messages 0",
    "queue_qos0_messages true",
    "persistence false",
    "max_connections -1",
    "sys_interval 1",
)

#: Filters every receiver subscribes to: what the agent subscribes to.

#: ``wearbus broker`` itself (its typer group), started without the CLI's other extensions.
EMBEDDED_COMMAND = (PY, "-c", "from cli.main import broker_app; broker_app(prog_name='wearbus broker')")

BENCH_USER, BENCH_PASSWORD = "bench", "bench-secret"
AGENT_USER, AGENT_PASSWORD = "agent", "agent-secret"


# ---------------------------------------------------------------------------------------------- the broker


@dataclass(slots=True)
class BrokerHandle:
    """The broker a run measures.

    Attributes:
        kind: ``mosquitto`` (a private one), ``embedded`` (amqtt in its own process) or ``external``.
        host: its address.
        port: its port.
        pid: its process id (None for an external broker).
        note: how it was chosen, for the report.
        username: the login of bench clients with persistent sessions (amqtt queues only for logins).
        password: its password.
        agent_username: the agent's login.
        agent_password: its password.
    """

    kind: str
    host: str
    port: int
    pid: int | None
    note: str
    username: str | None = None
    password: str | None = None
    agent_username: str | None = None
    agent_password: str | None = None

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        return f"mqtt://{self.host}:{self.port}"

    def creds(self) -> dict[str, str]:
        """Login fields for a raw client's spec."""
        return {"username": self.username, "password": self.password or ""} if self.username else {}


@asynccontextmanager
async def bench_broker(choice: str | None, workdir: Path) -> AsyncIterator[BrokerHandle]:
    """Start (or name) the broker under test.

    Args:
        choice: None (a private Mosquitto if the binary exists, else the embedded broker), ``mosquitto``,
            ``embedded``, or a broker URL (used as it is, never reconfigured).
        workdir: where logs go.

    Raises:
        ConfigError: ``mosquitto`` asked for but not installed, or a URL that is not loopback.
    """
    if choice not in {None, "mosquitto", "embedded"}:
        url = BrokerUrl.parse(str(choice))
        if url.host not in {"127.0.0.1", "localhost", "::1"} and not url.host.startswith("127."):
            raise ConfigError(f"benchmarks send load to loopback brokers only, not {url.host}")
        yield BrokerHandle("external", url.host, url.port, None, f"external broker {choice} (as configured there)",
                           url.username, url.password, url.username, url.password)  # fmt: skip
        return
    if choice == "mosquitto" or (choice is None and mosquitto_available()):
        if not mosquitto_available():
            raise ConfigError("--broker mosquitto: the mosquitto binary is not installed (apt-get install mosquitto)")
        async with MosquittoProcess(extra_lines=BENCH_MOSQUITTO_LINES) as m:
            why = "asked for" if choice == "mosquitto" else "the mosquitto binary exists"
            yield BrokerHandle("mosquitto", "127.0.0.1", m.port, m.pid, f"private Mosquitto ({why}), no-drop config")
        return
    port = free_port()
    log = workdir / "embedded-broker.log"
    argv = [*EMBEDDED_COMMAND, "--port", str(port), "--log-level", "warning",
            "--user", f"{AGENT_USER}:{AGENT_PASSWORD}", "--user", f"{BENCH_USER}:{BENCH_PASSWORD}"]  # fmt: skip
    proc = await spawn(argv, log)
    try:
        await wait_port("127.0.0.1", port, 20.0, proc)
        why = "asked for" if choice == "embedded" else "no mosquitto binary"
        yield BrokerHandle("embedded", "127.0.0.1", port, proc.pid, f"embedded amqtt broker in its own process ({why})",
                           BENCH_USER, BENCH_PASSWORD, AGENT_USER, AGENT_PASSWORD)  # fmt: skip
    finally:
        await stop(proc)


async def wait_port(host: str, port: int, timeout: float, proc: asyncio.subprocess.Process | None = None) -> None:
    """Wait until ``host:port`` accepts TCP connections.

    Raises:
        BusError: not within ``timeout`` seconds, or the process died.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.returncode is not None:
            raise BusError(f"the broker process exited with {proc.returncode} before listening on {port}")
        try:
            async with asyncio.timeout(1.0):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise BusError(f"nothing listens on {host}:{port} after {timeout:g} s")


# ---------------------------------------------------------------------------------------------- processes


async def spawn(argv: Sequence[str], log: Path, *, stdout_pipe: bool = False) -> asyncio.subprocess.Process:
    """Start a child in its own process group; its stderr (and stdout unless piped) goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as fh:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else fh,
            stderr=fh,
            env=env,
            start_new_session=True,
        )


async def stop(proc: asyncio.subprocess.Process, grace: float = 10.0) -> int | None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds; returns the exit code."""
    if proc.returncode is not None:
        return proc.returncode
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # its own group (start_new_session): it and its children only
        try:
            async with asyncio.timeout(wait):
                return await proc.wait()
        except TimeoutError:
            continue
    return proc.returncode


async def run_json(argv: Sequence[str], log: Path, timeout: float) -> dict[str, Any]:
    """Run a child to its end and return the JSON object on the last line of its stdout.

    Raises:
        BusError: it timed out, failed or printed no JSON (with the tail of its log).
    """
    proc = await spawn(argv, log, stdout_pipe=True)
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        await stop(proc)
        raise BusError(f"{' '.join(argv[:4])} did not finish within {timeout:g} s; see {log}") from None
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = _tail(log)
        raise BusError(f"{' '.join(argv[:4])} failed (exit {proc.returncode}); log {log}:\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _tail(log: Path, n: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------- sampling


@dataclass(slots=True)
class Usage:
    """CPU and memory of one process over a window."""

    cpu_pct: float = 0.0
    cpu_s: float = 0.0
    rss_mb: float = 0.0
    rss_max_mb: float = 0.0


class Sampler:
    """CPU (as % of one core) and RSS of named processes over a window; sample RSS with :meth:`sample`.

    Args:
        pids: name -> pid (a name may stand for several processes, summed).

    Attributes:
        host_idle_pct: after :meth:`stop`, the host's idle CPU over the window (idle and I/O wait, summed over its
            cores), as % of one core.
    """

    def __init__(self, pids: Mapping[str, Sequence[int]]) -> None:
        self.procs: dict[str, list[psutil.Process]] = {}
        for name, group in pids.items():
            procs = []
            for pid in group:
                with contextlib.suppress(psutil.Error):
                    procs.append(psutil.Process(pid))
            self.procs[name] = procs
        self._cpu0: dict[str, float] = {}
        self._t0 = 0.0
        self._rss_max: dict[str, float] = {}
        self._idle0 = 0.0
        self.host_idle_pct = 0.0

    def _cpu(self, name: str) -> float:
        total = 0.0
        for p in self.procs[name]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def _rss(self, name: str) -> float:
        total = 0.0
        for p in self.procs[name]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    def start(self) -> None:
        """Begin the window."""
        self._t0 = time.monotonic()
        self._idle0 = _host_idle_s()
        self._cpu0 = {name: self._cpu(name) for name in self.procs}
        self._rss_max = {name: self._rss(name) for name in self.procs}

    def sample(self) -> None:
        """Record the current RSS (for the maximum)."""
        for name in self.procs:
            self._rss_max[name] = max(self._rss_max.get(name, 0.0), self._rss(name))

    def stop(self) -> dict[str, Usage]:
        """End the window: CPU over it, RSS now and at most."""
        wall = max(1e-9, time.monotonic() - self._t0)
        self.host_idle_pct = 100.0 * (_host_idle_s() - self._idle0) / wall
        self.sample()
        out = {}
        for name in self.procs:
            cpu_s = self._cpu(name) - self._cpu0.get(name, 0.0)
            out[name] = Usage(100.0 * cpu_s / wall, cpu_s, self._rss(name), self._rss_max.get(name, 0.0))
        return out


def _host_idle_s() -> float:
    """Seconds the host's cores have been idle or waiting for I/O since boot (summed over the cores)."""
    t = psutil.cpu_times()
    return float(t.idle + getattr(t, "iowait", 0.0))


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (0 if it is gone)."""
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


class SysWatch:
    """Follows Mosquitto's ``$SYS/broker/publish/messages/dropped`` (the broker's own count of dropped messages)."""

    TOPIC = "$SYS/broker/publish/messages/dropped"

    def __init__(self) -> None:
        self.value: int | None = None
        self._client: WireClient | None = None

    async def __aenter__(self) -> SysWatch:
        return self

    async def open(self, broker: BrokerHandle) -> None:
        """Subscribe (Mosquitto only; other brokers leave :attr:`value` None)."""
        if broker.kind == "embedded":
            return

        def on_message(c: WireClient, topic: str, payload: bytes, qos: int) -> None:
            with contextlib.suppress(ValueError):
                self.value = int(payload.decode().strip())

        self._client = await WireClient.open(broker.host, broker.port, f"bench-sys-{os.getpid()}",
                                             on_message=on_message, **_login(broker))  # fmt: skip
        await self._client.subscribe([(self.TOPIC, 0)])

    async def current(self, wait_s: float = 2.5) -> int | None:
        """The latest value, waiting up to ``wait_s`` for a fresh one (Mosquitto publishes it every second)."""
        if self._client is None:
            return None
        before = self._client.received
        deadline = time.monotonic() + wait_s
        # polls a counter the protocol callback bumps; an Event per message would cost more than this loop
        while self._client.received == before and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return self.value

    def close(self) -> None:
        """Disconnect."""
        if self._client is not None:
            self._client.disconnect()
            self._client = None


def _login(broker: BrokerHandle) -> dict[str, Any]:
    return {"username": broker.username, "password": broker.password} if broker.username else {}


# ---------------------------------------------------------------------------------------------- preloading


async def publish_all(
    broker: BrokerHandle, messages: Sequence[tuple[str, bytes]], *, qos: int = 1, window: int = 1000
) -> float:
    """Publish messages in order at ``qos`` from one connection, at most ``window`` unacknowledged; returns seconds.

    Raises:
        BusConnectionError: the broker went away or stopped acknowledging for 60 s.
    """
    client = await WireClient.open(broker.host, broker.port, f"bench-pub-{os.getpid()}-{time.monotonic_ns() % 10**6}",
                                   **_login(broker))  # fmt: skip
    t0 = time.perf_counter()
    try:
        for i, (topic, payload) in enumerate(messages):
            if qos:
                await client.window(window, 60.0)
            client.publish(topic, payload, qos)
            if i % 256 == 255:
                await asyncio.sleep(0)
        if qos:
            await client.drain(60.0)
        else:
            await asyncio.sleep(0.2)
    except TimeoutError as exc:
        raise BusConnectionError(f"the broker stopped acknowledging after {client.acked} publishes") from exc
    finally:
        client.disconnect()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- raw receivers


@dataclass(slots=True)
class Receiver:
    """One raw receiver case."""

    name: str
    client: str  # paho | c | bus | native | gmqtt
    qos: int
    client_id: str
    protocol: int = 4  # 4: MQTT 3.1.1, 5: MQTT 5 (paho only)
    transport: str = "auto"  # Bus only: its transport (native, or paho underneath as before)


async def mosquitto_sub(
    broker: BrokerHandle, recv: Receiver, action: str, expected: int, workdir: Path, max_s: float
) -> dict[str, Any]:
    """Prepare, drain or clear a persistent session with the C client ``mosquitto_sub``."""
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        raise ConfigError("mosquitto_sub is not installed (apt-get install mosquitto-clients)")
    argv = [binary, "-h", broker.host, "-p", str(broker.port), "-i", recv.client_id, "-q", str(recv.qos)]
    if broker.username:
        argv += ["-u", broker.username, "-P", broker.password or ""]
    for f in AGENT_FILTERS:
        argv += ["-t", f]
    log = workdir / f"raw-{recv.name}.log"
    if action in {"prepare", "clear"}:
        argv += ["-E"] + (["-c"] if action == "prepare" else [])
        proc = await spawn(argv, log)
        try:
            async with asyncio.timeout(15):
                code = await proc.wait()
        except TimeoutError:
            await stop(proc)
            code = -1
        return {"ok": code == 0}
    argv += ["-c", "-C", str(expected), "-W", str(int(max_s)), "-F", "%U"]
    proc = await spawn(argv, log, stdout_pipe=True)
    try:
        async with asyncio.timeout(max_s + 10):
            out, _ = await proc.communicate()
    except TimeoutError:
        await stop(proc)
        out = b""
    stamps = [float(x) for x in out.split() if x]
    n = len(stamps)
    span = stamps[-1] - stamps[0] if n > 1 else 0.0
    rate = (n - 1) / span if span > 0 else 0.0
    return {"received": n, "expected": expected, "lost": max(0, expected - n), "rate": rate, "span_s": span,
            "cpu_s": None, "cpu_us_per_msg": None}  # fmt: skip


async def raw_receiver(
    broker: BrokerHandle, recv: Receiver, action: str, expected: int, workdir: Path, *, idle_s: float, max_s: float
) -> dict[str, Any]:
    """Run one receiver process for ``action`` (prepare | drain | clear)."""
    if recv.client == "c":
        return await mosquitto_sub(broker, recv, action, expected, workdir, max_s)
    spec = {"host": broker.host, "port": broker.port, "client_id": recv.client_id, "qos": recv.qos,
            "filters": list(AGENT_FILTERS), "action": action, "expected": expected, "idle_s": idle_s,
            "max_s": max_s, "protocol": recv.protocol, "transport": recv.transport, **broker.creds()}  # fmt: skip
    argv = [PY, "-m", "bench.raw", recv.client, "--spec", json.dumps(spec)]
    return await run_json(argv, workdir / f"raw-{recv.name}.log", max_s + 30)


def receivers(broker: BrokerHandle, tag: str) -> list[Receiver]:
    """The raw receiver cases this broker supports (amqtt queues nothing at QoS 0 for an offline session)."""
    cases = [
        Receiver("paho_q0", "paho", 0, f"bench-paho0-{tag}"),
        Receiver("paho_q1", "paho", 1, f"bench-paho1-{tag}"),
        Receiver("paho5_q1", "paho", 1, f"bench-paho51-{tag}", protocol=5),
        Receiver("c_q0", "c", 0, f"bench-c0-{tag}"),
        Receiver("c_q1", "c", 1, f"bench-c1-{tag}"),
        Receiver("bus_q1", "bus", 1, f"bench-bus1-{tag}", transport="native"),
        Receiver("bus_paho_q1", "bus", 1, f"bench-busp1-{tag}", transport="paho"),
        Receiver("native_q1", "native", 1, f"bench-native1-{tag}"),
        Receiver("gmqtt_q1", "gmqtt", 1, f"bench-gmqtt1-{tag}"),
    ]
    if broker.kind == "embedded":  # amqtt: no QoS 0 queueing for offline sessions, no MQTT 5
        cases = [c for c in cases if c.qos == 1 and c.protocol == 4]
    if shutil.which("mosquitto_sub") is None:
        cases = [c for c in cases if c.client != "c"]
    if importlib.util.find_spec("gmqtt") is None:  # the dev extra installs it
        cases = [c for c in cases if c.client != "gmqtt"]
    return cases


# ---------------------------------------------------------------------------------------------- round trips


@asynccontextmanager
async def echo_agent(broker: BrokerHandle, workdir: Path, max_s: float) -> AsyncIterator[int]:
    """A raw echo "agent" process for the duration of the block (yields its pid)."""
    spec = {"host": broker.host, "port": broker.port, "qos": 1, "max_s": max_s, **broker.creds()}
    proc = await spawn([PY, "-m", "bench.raw", "echo", "--spec", json.dumps(spec)], workdir / "echo.log",
                       stdout_pipe=True)  # fmt: skip
    try:
        assert proc.stdout is not None  # noqa: S101
        async with asyncio.timeout(20):
            line = await proc.stdout.readline()
        if b"ready" not in line:
            raise BusError(f"the echo agent did not start; see {workdir / 'echo.log'}")
        yield proc.pid
    finally:
        await stop(proc)


async def round_trips(
    broker: BrokerHandle, mode: str, workdir: Path, *, samples: int, warmup: int, users: int, prefix: str, name: str
) -> dict[str, Any]:
    """Sequential round trips from the earphones to the glasses (``mode`` echo or agent) in a paho process."""
    max_s = 20 + samples * 0.05
    spec = {"host": broker.host, "port": broker.port, "mode": mode, "samples": samples, "warmup": warmup,
            "users": users, "prefix": prefix, "timeout_s": 5, "max_s": max_s,
            **broker.creds()}  # fmt: skip
    argv = [PY, "-m", "bench.raw", "rtt", "--spec", json.dumps(spec)]
    return await run_json(argv, workdir / f"rtt-{name}.log", max_s + 30)


# ---------------------------------------------------------------------------------------------- fleets


@dataclass(slots=True)
class FleetProcess:
    """One fleet process and what it reported."""

    proc: asyncio.subprocess.Process
    users: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def last(self) -> dict[str, Any]:
        """Its latest report."""
        return self.lines[-1] if self.lines else {}

    @property
    def connected_event(self) -> bool:
        """Whether it has reported all its connections up."""
        return any(ln.get("event") == "connected" for ln in self.lines)


class FleetGroup:
    """Fleets of ``users`` users over processes of at most ``per_process`` users each.

    Args:
        broker: where they connect.
        users: how many users in all.
        prefix: user id prefix (distinct per group, so groups never share a device id).
        duration_s: each fleet process exits by itself after this long.
        head_pose_hz: the glasses' head-pose rate.
        workdir: logs.
        per_process: users per process.
    """

    def __init__(
        self,
        broker: BrokerHandle,
        users: int,
        prefix: str,
        duration_s: float,
        head_pose_hz: float,
        workdir: Path,
        per_process: int = 1250,
    ) -> None:
        self.broker = broker
        self.users = users
        self.prefix = prefix
        self.duration_s = duration_s
        self.head_pose_hz = head_pose_hz
        self.workdir = workdir
        self.per_process = per_process
        self.fleets: list[FleetProcess] = []

    async def __aenter__(self) -> FleetGroup:
        raise_nofile(self.users * 4 + 1024)
        first = 0
        while first < self.users:
            n = min(self.per_process, self.users - first)
            argv = [PY, "-m", "bench.fleet", "--host", self.broker.host, "--port", str(self.broker.port),
                    "--users", str(n), "--first", str(first), "--prefix", self.prefix,
                    "--head-pose-hz", str(self.head_pose_hz), "--duration", str(self.duration_s),
                    "--seed", str(first + 1), "--connect-rate", "1500"]  # fmt: skip
            proc = await spawn(argv, self.workdir / f"fleet-{self.prefix}-{first}.log", stdout_pipe=True)
            fleet = FleetProcess(proc, n)
            fleet.reader = asyncio.create_task(self._read(fleet))
            self.fleets.append(fleet)
            first += n
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(stop(f.proc) for f in self.fleets))
        for f in self.fleets:
            if f.reader is not None:
                # the final "done" report is the last line: read to the end of the pipe, then give up
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await asyncio.shield(f.reader)
                await cancel_and_wait(f.reader)

    @staticmethod
    async def _read(fleet: FleetProcess) -> None:
        stream = fleet.proc.stdout
        assert stream is not None  # noqa: S101
        while line := await stream.readline():
            with contextlib.suppress(ValueError):
                fleet.lines.append(json.loads(line))

    @property
    def pids(self) -> list[int]:
        """The fleet processes' pids."""
        return [f.proc.pid for f in self.fleets]

    async def wait_connected(self, timeout: float) -> float:
        """Wait until every fleet has connected all its devices; returns the seconds it took.

        Raises:
            BusError: not within ``timeout`` seconds, or a fleet process died.
        """
        t0 = time.monotonic()
        while not all(f.connected_event for f in self.fleets):
            if time.monotonic() - t0 > timeout:
                raise BusError(f"the fleet did not connect within {timeout:g} s; see {self.workdir}/fleet-*.log")
            dead = [f for f in self.fleets if f.proc.returncode is not None]
            if dead:
                raise BusError(f"a fleet process exited early; see {self.workdir}/fleet-{self.prefix}-*.log")
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    def marks(self) -> list[tuple[float, int]]:
        """Per fleet process: the time of its latest report and what it had sent by then (events and acks)."""
        return [(float(f.last().get("t", 0.0)), int(f.last().get("published", 0)) + int(f.last().get("acks_sent", 0)))
                for f in self.fleets]  # fmt: skip

    @staticmethod
    def rate(before: list[tuple[float, int]], after: list[tuple[float, int]]) -> float:
        """Messages per second sent between two :meth:`marks`, each process on its own report times."""
        total = 0.0
        for (t0, n0), (t1, n1) in zip(before, after, strict=True):
            if t1 > t0:
                total += (n1 - n0) / (t1 - t0)
        return total

    def totals(self) -> dict[str, int]:
        """Counters summed over the fleet processes (their latest reports)."""
        keys = ("connected", "connect_failed", "published", "acked", "commands", "acks_sent", "skipped", "late",
                "lost_connections", "connections")  # fmt: skip
        return {k: sum(int(f.last().get(k, 0)) for f in self.fleets) for k in keys}


# ---------------------------------------------------------------------------------------------- helpers


async def wait_retained(broker: BrokerHandle, topic: str, want: dict[str, Any], timeout: float) -> bool:
    """Wait until the retained message on ``topic`` has a ``data`` containing ``want`` (e.g. an agent online)."""
    found = asyncio.Event()

    def on_message(c: WireClient, t: str, payload: bytes, qos: int) -> None:
        with contextlib.suppress(ValueError, msgpack.ExtraData, TypeError, AttributeError):
            data = msgpack.unpackb(payload).get("data", {})
            if all(data.get(k) == v for k, v in want.items()):
                found.set()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = await WireClient.open(broker.host, broker.port, f"bench-w-{time.monotonic_ns() % 10**9}",
                                       on_message=on_message, **_login(broker))  # fmt: skip
        try:
            await client.subscribe([(topic, 1)])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, max(0.05, deadline - time.monotonic()))):
                    await found.wait()
        finally:
            client.disconnect()
        if found.is_set():
            return True
    return False


def machine() -> dict[str, Any]:
    """What the run ran on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def workdir(keep: Path | None = None) -> Path:
    """A fresh directory for a run's logs and databases."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return keep
    return Path(tempfile.mkdtemp(prefix="wearbus-bench-"))


#: The SQLite files a run leaves: the agents' databases, their logs and side files (``agent.parking``).
DATABASE_GLOBS = ("*.db", "*.db-wal", "*.db-shm", "*.db-journal", "*.db.retained", "*.db.attempts")


def drop_databases(wd: Path) -> int:
    """Remove the SQLite files a run left in ``wd`` (a full run's are ~0.5-0.7 GB); the bytes freed. Logs stay."""
    freed = 0
    for pattern in DATABASE_GLOBS:
        for path in wd.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                freed += path.stat().st_size
                path.unlink()
    return freed


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, None when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


# ---------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the report.

    Attributes:
        section: which part of the benchmark.
        metric: what was measured.
        value: the figure (None: not measured).
        unit: its unit.
        ratio: the figure over its baseline, if it has one.
        baseline: which baseline.
        target: the goal, in words.
        met: whether the goal is met (None: no goal, or not measurable).
    """

    section: str
    metric: str
    value: float | None
    unit: str
    ratio: float | None = None
    baseline: str = ""
    target: str = ""
    met: bool | None = None


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in {"msg/s", "µs", "users", "conns"} or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


def render(rows: Sequence[Row], title: str, console: Console | None = None) -> Table:
    """The report as a rich table (printed when a console is given)."""
    table = Table(title=title, show_lines=False)
    for col, justify in (("section", "left"), ("metric", "left"), ("value", "right"), ("unit", "left"),
                         ("ratio", "right"), ("to baseline", "left"), ("target", "left"), ("", "center")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    last = ""
    for r in rows:
        verdict = "" if r.met is None else ("[green]met[/]" if r.met else "[red]missed[/]")
        table.add_row(r.section if r.section != last else "", r.metric, _fmt(r.value, r.unit), r.unit,
                      "-" if r.ratio is None else f"{r.ratio:.2f}x", r.baseline, r.target, verdict)  # fmt: skip
        last = r.section
    if console is not None:
        console.print(table)
    return table


def rows_to_markdown(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (for docs/benchmarks.md)."""
    lines = [
        "| section | metric | value | unit | ratio | to baseline | target | |",
        "|---|---|---:|---|---:|---|---|---|",
    ]
    for r in rows:
        verdict = "" if r.met is None else ("met" if r.met else "**missed**")
        ratio_text = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        cells = (r.section, r.metric, _fmt(r.value, r.unit), r.unit, ratio_text, r.baseline, r.target, verdict)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_to_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The rows as plain data."""
    return [
        {"section": r.section, "metric": r.metric, "value": r.value, "unit": r.unit, "ratio": r.ratio,
         "baseline": r.baseline, "target": r.target, "met": r.met}
        for r in rows
    ]  # fmt: skip


def mix_summary(head_pose_hz: float) -> dict[str, Any]:
    """The traffic mix of one user, for the report."""
    streams = mix.default_streams(head_pose_hz)
    return {
        "head_pose_hz": head_pose_hz,
        "user_rate_per_s": round(mix.user_rate(streams), 3),
        "streams": [
            {"topic": f"{s.kind.value}/{s.event_class.value}/{s.name}", "period_s": s.period_s, "qos": s.qos}
            for s in streams
        ],
    }
