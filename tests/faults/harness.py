"""Machinery shared by the fault-injection tests: a secure broker, the agent as a real process, devices, an observer.

Everything runs on loopback. Every process is started here and stopped here by its PID; every wait has a deadline
and fails the test with what it was waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil
import pytest

from broker.bus import MqttProtocol
from broker.client import Bus, BusOptions, Outgoing, Rejected
from broker.mosquitto import AgentCredential, Credentials, DeviceCredential, Limits, OperatorCredential, TlsListener
from devices.sdk import Device, DeviceConfig, on_action
from schemas import codec
from schemas.actions import ACCEPTS, ACTIONS, AgentState, ContextSnapshot, DeadLetter, DeviceState
from schemas.clock import Clock
from schemas.envelope import Envelope, Message, make
from schemas.events import (
    Activity,
    AncState,
    Body,
    EarBattery,
    GlassesBattery,
    GlassesWear,
    HeadGesture,
    HeadPose,
    HeartRate,
    InEar,
    Location,
    PhoneBattery,
    RingBattery,
    RingWear,
    SpO2,
    Steps,
    Stress,
    Utterance,
    Vad,
    event_key,
)
from schemas.topics import Channel, DeviceId, Kind, event_topic
from testkit.mosquitto import MosquittoProcess

ROOT = Path(__file__).resolve().parents[2]
KINDS = (Kind.GLASSES, Kind.RING, Kind.EARPHONES, Kind.PHONE)
DEVICE_NAMES = {Kind.GLASSES: "g1", Kind.RING: "r1", Kind.EARPHONES: "e1", Kind.PHONE: "p1"}
AGENT = AgentCredential("agent", "agent-fault-secret")
TAP = OperatorCredential("tap", "tap-fault-secret", health=True)  # the observer counts every action, alerts too
HOME = (30.2745, 120.1390)


# ------------------------------------------------------------------------------------------------ reporting


@dataclass(slots=True)
class Counts:
    """The counts a fault test reports: one line on stdout (``-s``) and one ``record_property`` each.

    Every line starts with sent, acknowledged (by the broker, or accepted as input in process), processed (stored
    or handled by the agent), duplicates (copies sent or delivered on purpose or by a retry) and lost.
    """

    name: str
    values: dict[str, int | float | str] = field(
        default_factory=lambda: dict.fromkeys(("sent", "acknowledged", "processed", "duplicates", "lost"), 0)
    )

    def __setitem__(self, key: str, value: int | float | str) -> None:
        self.values[key] = value

    def __getitem__(self, key: str) -> int | float | str:
        return self.values[key]

    def report(self, record_property: Callable[[str, object], None]) -> None:
        """Print the line and attach every count to the test's report."""
        line = " ".join(f"{k}={v}" for k, v in self.values.items())
        print(f"\nfaults[{self.name}]: {line}")
        for key, value in self.values.items():
            record_property(key, value)


async def wait_for(condition: Callable[[], bool], what: str, within: float, *, every: float = 0.05) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, or fail the test after ``within`` seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            pytest.fail(f"waited {within:g} s for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - start


async def wait_for_async(condition: Callable[[], Any], what: str, within: float, *, every: float = 0.2) -> float:
    """As :func:`wait_for`, for a coroutine function (a database query)."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > within:
            pytest.fail(f"waited {within:g} s for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - start


# ------------------------------------------------------------------------------------------------- the broker


def fleet(users: Sequence[str], *, operators: Sequence[str] = ("tap",)) -> Credentials:
    """Logins for every user's four devices (``g1``, ``r1``, ``e1``, ``p1``), the agent and the observers."""
    devices = tuple(
        DeviceCredential(user, kind.value, DEVICE_NAMES[kind], f"{user}-{kind.value}-secret")
        for user in users
        for kind in KINDS
    )
    ops = tuple(TAP if name == TAP.username else OperatorCredential(name, f"{name}-secret") for name in operators)
    return Credentials(devices=devices, agents=(AGENT,), operators=ops)


@contextlib.asynccontextmanager
async def secure_broker(
    credentials: Credentials,
    *,
    limits: Limits | None = None,
    tls: TlsListener | None = None,
    autosave_on_changes: bool = False,
) -> AsyncIterator[MosquittoProcess]:
    """A private mosquitto with the config ``wearbus broker config`` writes (passwords, ACL, persistence).

    It saves once a second unless ``autosave_on_changes`` (the deployed setting, for a test that kills the broker
    with SIGKILL and counts on what it acknowledged): a save per change rewrites the whole persistence file, so a
    backlog queued for an offline agent costs a quadratic amount of disk writes (1,050 queued 20 KB messages: 22 ms
    a publish instead of 0.6; 24 GB written in one run of the suite), which slowed every test beside it."""
    async with MosquittoProcess(
        credentials=credentials, limits=limits, tls=tls, autosave_on_changes=autosave_on_changes
    ) as broker:
        yield broker


def broker_db(broker: MosquittoProcess) -> Path:
    """The broker's persistence file."""
    return broker.data_dir / "mosquitto.db"


# ---------------------------------------------------------------------------------------------- the agent


class AgentProcess:
    """``wearbus agent`` as a real process (``python -m cli.main agent``), stopped by its PID.

    Args:
        url: the broker URL.
        db: the agent's SQLite file.
        log: where its output goes (appended across restarts).
        instance: its instance id.
        extra: more command-line options.
    """

    def __init__(self, url: str, db: Path, log: Path, instance: str = "fault-agent", extra: Sequence[str] = ()) -> None:
        self.url = url
        self.extra = tuple(extra)
        self.db = db
        self.log = log
        self.instance = instance
        self.starts = 0
        self.started_at = 0.0
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The PID of the running agent."""
        if self._proc is None or self._proc.returncode is not None:
            raise AssertionError(f"the agent is not running; its log:\n{self.log_tail()}")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether it runs now."""
        return self._proc is not None and self._proc.returncode is None

    def log_tail(self, chars: int = 4000) -> str:
        """The end of its log (for failure messages)."""
        with contextlib.suppress(FileNotFoundError):
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        return ""

    def rss(self) -> int:
        """Its resident memory in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    async def start(self) -> None:
        """Start it (it connects in the background; wait for its birth with :meth:`Observer.agent_online`)."""
        if self.running:
            raise AssertionError("the agent is already running")
        argv = [
            sys.executable, "-m", "cli.main", "agent", "--broker", self.url, "--db", str(self.db),
            "--instance", self.instance, "--username", AGENT.username, "--password", AGENT.password,
            "--log-level", "info", "--default-consent", "proactive-health",  # the health rules are under test too
            *self.extra,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self.starts += 1
        self.started_at = time.monotonic()

    async def kill9(self) -> None:
        """SIGKILL it and reap it: no goodbye, no final snapshot; its Will fires."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)

    async def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM (it saves a snapshot and says goodbye), SIGKILL after ``grace`` seconds; returns its exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await asyncio.wait_for(proc.wait(), 10)
        return proc.returncode


class AgentDb:
    """Reads the agent's SQLite file while it runs (WAL: readers never block the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        con = sqlite3.connect(self.path, timeout=10)
        try:
            return [tuple(r) for r in con.execute(sql, tuple(args)).fetchall()]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # the agent has not migrated its new database yet
            raise
        finally:
            con.close()

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """All rows of a query (in a worker thread)."""
        return await asyncio.to_thread(self._query, sql, args)

    async def ids(self, sql: str = "SELECT id FROM events", *args: Any) -> set[str]:
        """The first column of a query as a set."""
        return {r[0] for r in await self.rows(sql, *args)}

    async def scalar(self, sql: str, *args: Any) -> Any:
        """The first value of a query (None when there is no row)."""
        found = await self.rows(sql, *args)
        return found[0][0] if found else None


# ------------------------------------------------------------------------------------------------ devices


class FaultDevice(Device):
    """A device that carries out every action its kind accepts and counts how often it carried out each id."""

    def __init__(self, user: str, device: str, config: DeviceConfig | None = None, clock: Clock | None = None) -> None:
        super().__init__(user, device, config, clock)
        self.carried: Counter[str] = Counter()
        self.sent_seq = 0

    async def carry_out(self, action: Body, envelope: Envelope[Any]) -> str:
        """Every handler ends here: count it."""
        self.carried[envelope.id] += 1
        return "ok"


def _handler(model: type[Body]) -> Any:
    async def handle(self: FaultDevice, action: Body, envelope: Envelope[Any]) -> str:
        return await self.carry_out(action, envelope)

    return on_action(model)(handle)


DEVICE_CLASSES: dict[Kind, type[FaultDevice]] = {
    kind: type(
        f"Fault{kind.value.title()}",
        (FaultDevice,),
        {"kind": kind, **{f"do_{name.replace('.', '_')}": _handler(ACTIONS[name]) for name in sorted(ACCEPTS[kind])}},
    )
    for kind in KINDS
}


def make_device(
    credentials: Credentials,
    user: str,
    kind: Kind,
    url: str,
    *,
    heartbeat_s: float = 0,
    keepalive_s: int = 10,
    hold: bool = False,
    clock: Clock | None = None,
    protocol: MqttProtocol = "auto",
) -> FaultDevice:
    """A :class:`FaultDevice` of ``kind`` for ``user`` logging in with its credential.

    Args:
        hold: hold events in the outbox while the agent is away (the SDK's default; off here, so that events
            queue in the broker for the agent's session, which is what most tests are about).
        clock: the device's clock (its events' publish times).
        protocol: the MQTT version it asks for.
    """
    cred = credentials.device(user, kind.value, DEVICE_NAMES[kind])
    config = DeviceConfig(
        url=url, password=cred.password, heartbeat_s=heartbeat_s, keepalive_s=keepalive_s, hold_while_agent_away=hold,
        protocol=protocol,
    )  # fmt: skip
    return DEVICE_CLASSES[kind](user, DEVICE_NAMES[kind], config, clock)


def envelope_for(dev: Device, body: Body, *, seq: int, ts: int | None = None) -> tuple[str, Envelope[Any]]:
    """The topic and a fresh envelope for an event ``dev`` publishes."""
    _, cls, name = event_key(dev.kind, body)
    return event_topic(dev.ident, cls, name), make(body, ts=ts, seq=seq)


async def publish_acked(dev: Device, topic: str, payload: bytes) -> bool:
    """Publish at QoS 1 on the device's own connection; whether the broker acknowledged it."""
    try:
        await dev.bus.publish_raw(Outgoing(topic, payload, 1), wait=True)
    except Exception:  # noqa: BLE001 (not acknowledged, whatever the reason: the caller counts it as such)
        return False
    return True


def setup_events(kind: Kind) -> list[Body]:
    """What a device says first so the agent has somewhere to route to: worn, in the ear, at home."""
    match kind:
        case Kind.GLASSES:
            return [GlassesWear(state="donned")]
        case Kind.RING:
            return [RingWear(state="on_finger")]
        case Kind.EARPHONES:
            return [InEar(side="left", state="in"), InEar(side="right", state="in")]
        case Kind.PHONE:
            return [Location(lat=HOME[0], lon=HOME[1])]
    raise AssertionError(kind)  # pragma: no cover


def mixed_event(kind: Kind, rng: random.Random, n: int, now: int) -> Body:
    """One event of a realistic mix for a device of ``kind``; about one in ten of the earphones' is an utterance
    nobody understands, which the agent answers with a card (an action the test can count)."""
    roll = rng.random()
    match kind:
        case Kind.EARPHONES:
            if roll < 0.1:
                return Utterance(text=f"zorp {n} quux blib")
            if roll < 0.35:
                return Activity(activity=rng.choice(["stationary", "walking"]))
            if roll < 0.5:
                return AncState(mode=rng.choice(["anc", "transparency"]))
            if roll < 0.7:
                return EarBattery(left_pct=rng.uniform(40, 100), right_pct=rng.uniform(40, 100))
            return Vad(state=rng.choice(["speech_start", "speech_end"]))
        case Kind.RING:
            if roll < 0.55:
                return HeartRate(bpm=rng.uniform(60, 80))
            if roll < 0.7:
                return SpO2(pct=rng.uniform(95, 99))
            if roll < 0.8:
                return Stress(level=rng.uniform(10, 40))
            if roll < 0.9:
                return Steps(steps=rng.randint(0, 300), bucket_start=now - 900_000)
            return RingBattery(level_pct=rng.uniform(30, 100))
        case Kind.GLASSES:
            if roll < 0.6:
                return HeadPose(roll_deg=rng.uniform(-5, 5), pitch_deg=rng.uniform(-10, 10),
                                heading_deg=rng.uniform(0, 359))  # fmt: skip
            if roll < 0.8:
                return HeadGesture(gesture="nod", confidence=rng.uniform(0.7, 1.0))
            return GlassesBattery(level_pct=rng.uniform(50, 100))
        case Kind.PHONE:
            if roll < 0.7:
                return Location(lat=HOME[0] + rng.uniform(-1e-4, 1e-4), lon=HOME[1] + rng.uniform(-1e-4, 1e-4))
            return PhoneBattery(level_pct=rng.uniform(30, 100))
    raise AssertionError(kind)  # pragma: no cover


# ----------------------------------------------------------------------------------------------- observer


class Observer:
    """An operator login subscribed to ``wb/#``: what went over the wire, independent of the agent's own account.

    Attributes:
        commands: times each action id was delivered on a ``cmd/`` topic.
        command_topics: the topic of each action id.
        corrs: the correlation ids (the causing events) of the commands seen.
        command_corr: the correlation id of each action id seen.
        dlq: dead letters, in arrival order.
        agent_states: ``(monotonic time, online)`` of every agent presence message.
        device_states: ``(monotonic time, online, retained)`` of every device state, by topic.
        contexts: the last fused context per user, with the time it arrived.
        rejected: messages the observer itself could not decode, by topic.
        events: event ids seen, with the times each was delivered.
        seen: every envelope id seen on any topic.
    """

    def __init__(self, url: str, username: str, password: str) -> None:
        self.options = BusOptions(
            url=url, client_id=username, username=username, password=password, name=f"observer-{username}",
            on_reject=[self._rejected], max_inbox=10**6,
        )  # fmt: skip
        self.commands: Counter[str] = Counter()
        self.command_topics: dict[str, str] = {}
        self.corrs: set[str] = set()
        self.command_corr: dict[str, str] = {}
        self.dlq: list[DeadLetter] = []
        self.agent_states: list[tuple[float, bool]] = []
        self.device_states: dict[str, list[tuple[float, bool, bool]]] = {}
        self.contexts: dict[str, tuple[float, ContextSnapshot]] = {}
        self.rejected: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.seen: set[str] = set()
        self._bus: Bus | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._bus = await Bus(self.options).__aenter__()
        await self._bus.subscribe("wb/#", 1)
        self._task = asyncio.create_task(self._consume(), name="observer")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._bus is not None:
            await self._bus.__aexit__(exc_type, exc, tb)

    def _rejected(self, rejected: Rejected) -> None:
        self.rejected[rejected.topic] += 1

    async def _consume(self) -> None:
        assert self._bus is not None
        async for message in self._bus.messages():
            self._note(message)

    def _note(self, message: Message) -> None:
        where, data, now = message.where, message.data, time.monotonic()
        self.seen.add(message.envelope.id)
        match where.channel:
            case Channel.COMMAND:
                self.commands[message.envelope.id] += 1
                self.command_topics[message.envelope.id] = message.topic
                if message.envelope.corr is not None:
                    self.command_corr[message.envelope.id] = message.envelope.corr
                    self.corrs.add(message.envelope.corr)
            case Channel.DLQ if isinstance(data, DeadLetter):
                self.dlq.append(data)
            case Channel.AGENT_STATE if isinstance(data, AgentState):
                self.agent_states.append((now, data.online))
            case Channel.STATE if isinstance(data, DeviceState):
                self.device_states.setdefault(message.topic, []).append((now, data.online, message.retain))
            case Channel.CONTEXT if isinstance(data, ContextSnapshot) and where.user is not None:
                self.contexts[where.user] = (now, data)
            case Channel.EVENT:
                self.events[message.envelope.id] += 1
            case _:
                pass

    def agent_online_since(self, since: float) -> bool:
        """Whether the agent announced itself online after ``since`` (monotonic)."""
        return any(online and at >= since for at, online in self.agent_states)

    async def agent_online(self, agent: AgentProcess, within: float = 30.0) -> float:
        """Wait for the birth of the agent's current process (it subscribes before it announces itself)."""

        def born() -> bool:
            if not agent.running:
                pytest.fail(f"the agent exited; its log:\n{agent.log_tail()}")
            return self.agent_online_since(agent.started_at)

        return await wait_for(born, "the agent's birth", within)

    def device_online(self, user: str, device: str) -> bool | None:
        """Whether the agent's last published context shows the device online (None: not in it)."""
        found = self.contexts.get(user)
        if found is None or device not in found[1].devices:
            return None
        return found[1].devices[device].online

    def dead_letters(self, topic_prefix: str = "", reason: str | None = None) -> list[DeadLetter]:
        """Dead letters for topics under ``topic_prefix`` (and of one reason)."""
        return [d for d in self.dlq if d.topic.startswith(topic_prefix) and (reason is None or d.reason == reason)]


def state_payload(kind: Kind, *, online: bool, heartbeat_s: float | None = None) -> bytes:
    """A device state envelope (birth or Will) as bytes."""
    return codec.encode(make(DeviceState(online=online, kind=kind, heartbeat_s=heartbeat_s)))


def device_id(user: str, kind: Kind) -> DeviceId:
    """The identity of ``user``'s device of ``kind``."""
    return DeviceId(user, kind, DEVICE_NAMES[kind])


@contextlib.asynccontextmanager
async def device_bus(credentials: Credentials, user: str, kind: Kind, url: str) -> AsyncIterator[Bus]:
    """A bare :class:`Bus` logged in as ``user``'s device of ``kind`` (no birth, no heartbeats: raw publishing)."""
    cred = credentials.device(user, kind.value, DEVICE_NAMES[kind])
    options = BusOptions(
        url=url, client_id=cred.username, username=cred.username, password=cred.password, name=cred.username,
        connect_timeout_s=15,
    )  # fmt: skip
    async with Bus(options) as bus:
        yield bus
