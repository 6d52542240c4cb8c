"""Record what crosses the bus byte for byte, and play it back with its original timing (``wearbus record``).

The file is JSON lines. The first line is a header; every other line is one message::

    {"format": "wearbus-recording", "version": 1, "filters": ["wb/#"], "started_ms": 1767225600000,
     "broker": "mqtt://127.0.0.1:1883"}
    {"t": 0.000412, "topic": "wb/v1/alice/ring/ring-1/state", "qos": 1, "retain": true,
     "payload": "gqJpZK..."}
    {"t": 1.250031, "topic": "wb/v1/alice/ring/ring-1/evt/sensor/hr", "qos": 1, "retain": false,
     "payload": "eyJpZCI6...", "ct": "application/json"}

``t`` is seconds since ``started_ms`` (the receive time is ``started_ms + 1000 * t``), ``payload`` the exact
bytes in base64, ``qos`` and ``retain`` as delivered to the recorder, ``ct`` the MQTT 5 content type when
there was one. Unknown keys are ignored, so later versions can add some.

The recorder subscribes at QoS 1 (the contract's highest), so a broker that follows MQTT delivers each message
at its publisher's QoS; amqtt 0.12 delivers everything at the subscription's QoS, so there every ``qos`` is 1.
``retain`` is set only for messages that came from the retained store when recording began.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, Protocol

import typer

from broker.client import Bus, Outgoing
from broker.files import open_private
from broker.logs import configure_logging
from broker.settings import Settings, client_options
from schemas import codec
from schemas.envelope import now_ms
from schemas.errors import ConfigError, WearbusError
from schemas.topics import matches, validate_filter
from testkit.raw import RawBus, RawMessage

FORMAT = "wearbus-recording"
VERSION = 1
#: The most times ``replay`` plays a recording (loops are bounded on purpose).
MAX_LOOPS = 1_000_000


@dataclass(frozen=True, slots=True)
class Header:
    """The first line of a recording.

    Attributes:
        filters: what was recorded.
        started_ms: wall-clock ms since the epoch when recording began.
        broker: the broker URL (without password).
        version: the file format version.
    """

    filters: tuple[str, ...]
    started_ms: int
    broker: str = ""
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded message.

    Attributes:
        t: seconds since the recording started.
        topic: the MQTT topic.
        payload: the exact bytes.
        qos: the QoS it was delivered with.
        retain: whether it came from the retained store.
        content_type: the MQTT 5 content type, if any.
    """

    t: float
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    content_type: str | None = None


# ------------------------------------------------------------------------------------------- the format


def header_line(header: Header) -> str:
    """The header as one JSON line (without the newline)."""
    return json.dumps(
        {
            "format": FORMAT,
            "version": header.version,
            "filters": list(header.filters),
            "started_ms": header.started_ms,
            "broker": header.broker,
        },
        ensure_ascii=True,
    )


def record_line(rec: Recorded) -> str:
    """A message as one JSON line (without the newline)."""
    obj: dict[str, Any] = {
        "t": rec.t,
        "topic": rec.topic,
        "qos": rec.qos,
        "retain": rec.retain,
        "payload": base64.b64encode(rec.payload).decode("ascii"),
    }
    if rec.content_type is not None:
        obj["ct"] = rec.content_type
    return json.dumps(obj, ensure_ascii=True)


def parse_header(line: str, where: str = "header") -> Header:
    """Read a header line.

    Raises:
        ConfigError: not a wearbus recording, or a newer version.
    """
    obj = _json_object(line, where)
    if obj.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a wearbus recording (the first line must have format {FORMAT!r})")
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ConfigError(f"{where}: recording version {version!r} is not supported (this wearbus reads {VERSION})")
    filters = obj.get("filters", [])
    started = obj.get("started_ms", 0)
    if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters) or not isinstance(started, int):
        raise ConfigError(f"{where}: filters must be a list of strings and started_ms an integer")
    return Header(tuple(filters), started, str(obj.get("broker", "")), version)


def parse_record(line: str, where: str = "record") -> Recorded:
    """Read a message line.

    Raises:
        ConfigError: a field is missing or of the wrong type, naming it.
    """
    obj = _json_object(line, where)
    t, topic, qos, retain, payload = (obj.get(k) for k in ("t", "topic", "qos", "retain", "payload"))
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise ConfigError(f"{where}: 't' must be a non-negative number of seconds")
    if not isinstance(topic, str) or not topic:
        raise ConfigError(f"{where}: 'topic' must be a non-empty string")
    if isinstance(qos, bool) or qos not in {0, 1, 2}:
        raise ConfigError(f"{where}: 'qos' must be 0, 1 or 2")
    if not isinstance(retain, bool):
        raise ConfigError(f"{where}: 'retain' must be true or false")
    if not isinstance(payload, str):
        raise ConfigError(f"{where}: 'payload' must be a base64 string")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"{where}: 'payload' is not valid base64: {exc}") from exc
    ct = obj.get("ct")
    if ct is not None and not isinstance(ct, str):
        raise ConfigError(f"{where}: 'ct' must be a string")
    return Recorded(float(t), topic, data, int(qos), retain, ct)


def _json_object(line: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    return obj


def read_recording(path: Path | str) -> tuple[Header, list[Recorded]]:
    """The header and messages of a recording file.

    Raises:
        ConfigError: the file is missing, empty or malformed (naming the line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read recording {p}: {exc}") from exc
    # JSON lines are split at "\n" only: str.splitlines() would also split at U+0085 or U+2028 in a string.
    lines = text.split("\n")
    if not lines or not lines[0].strip():
        raise ConfigError(f"{p}: empty file, not a wearbus recording")
    header = parse_header(lines[0], f"{p}:1")
    records = [parse_record(line, f"{p}:{n}") for n, line in enumerate(lines[1:], start=2) if line.strip()]
    return header, records


def load_recording(path: Path | str) -> list[Recorded]:
    """The messages of a recording file, in the order they were received.

    Raises:
        ConfigError: as :func:`read_recording`.
    """
    return read_recording(path)[1]


class RecordingWriter:
    """Writes a recording line by line, flushed, so an interrupted recording is still a valid file."""

    def __init__(self, path: Path | str, header: Header) -> None:
        self.path = Path(path)
        self.count = 0
        try:
            self._file: IO[str] = open_private(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write recording {self.path}: {exc}") from exc
        self._file.write(header_line(header) + "\n")
        self._file.flush()

    def write(self, rec: Recorded) -> None:
        """Append one message (ASCII only, so no tool splits a line at a Unicode line separator)."""
        self._file.write(record_line(rec) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def write_recording(path: Path | str, header: Header, records: Iterable[Recorded]) -> int:
    """Write a whole recording; returns the number of messages."""
    writer = RecordingWriter(path, header)
    try:
        for rec in records:
            writer.write(rec)
    finally:
        writer.close()
    return writer.count


# ------------------------------------------------------------------------------------------- record


async def record(
    bus: RawBus,
    topic_filter: str | Sequence[str],
    path: Path | str,
    *,
    seconds: float | None = None,
    count: int | None = None,
    qos: int = 1,
    clock: Callable[[], float] = time.monotonic,
    wall_ms: Callable[[], int] = now_ms,
    started: asyncio.Event | None = None,
    include_health: bool = False,
) -> int:
    """Record what arrives on ``topic_filter`` into ``path`` until ``seconds`` pass or ``count`` came.

    A message that holds health values (by the contract's mark) is recorded with them redacted, re-encoded as JSON
    (``ct`` ``application/json``), unless ``include_health``; every other message byte for byte.

    With neither, it records until cancelled (the file stays valid: each line is flushed).

    Args:
        bus: an entered :class:`~testkit.raw.RawBus` (a plain ``Bus`` keeps no payload bytes).
        topic_filter: one filter or several.
        path: the file to write (replaced).
        seconds: stop after this long.
        count: stop after this many messages.
        qos: the subscription QoS (2 also keeps QoS 2 publishes apart, on brokers that follow MQTT).
        clock: monotonic seconds, for ``t``.
        wall_ms: wall-clock ms, for the header's ``started_ms``.
        started: set once the subscriptions are in place (so a caller knows when to start publishing).
        include_health: keep health values (the file is 0600 either way).

    Returns:
        the number of messages written.

    Raises:
        ConfigError: a bad filter, limit or path.
    """
    filters = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter)
    if not filters:
        raise ConfigError("record needs at least one topic filter")
    for f in filters:
        validate_filter(f)
    if seconds is not None and not seconds > 0:
        raise ConfigError("--seconds must be positive")
    if count is not None and count < 1:
        raise ConfigError("--count must be at least 1")
    inbox: deque[Recorded] = deque()
    arrived = asyncio.Event()
    t0 = clock()
    writer = RecordingWriter(path, Header(tuple(filters), wall_ms(), bus.url.redacted()))

    def on_raw(raw: RawMessage) -> None:
        if any(matches(f, raw.topic) for f in filters):
            t = round(clock() - t0, 6)
            payload, ct = raw.payload, raw.content_type
            redacted = None if include_health else codec.redact_wire(raw.topic, payload)
            if redacted is not None:
                payload, ct = redacted, codec.JSON
            inbox.append(Recorded(t, raw.topic, payload, raw.qos, raw.retain, ct))
            arrived.set()

    bus.listeners.append(on_raw)
    try:
        for f in filters:
            await bus.subscribe(f, qos)
        if started is not None:
            started.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while count is None or writer.count < count:
                    while inbox and (count is None or writer.count < count):
                        writer.write(inbox.popleft())
                    if count is not None and writer.count >= count:
                        break
                    arrived.clear()
                    await arrived.wait()
        while inbox and (count is None or writer.count < count):
            writer.write(inbox.popleft())  # what came in the last instant
    finally:
        bus.listeners.remove(on_raw)
        writer.close()
    return writer.count


# ------------------------------------------------------------------------------------------- replay


def play_offsets(records: Sequence[Recorded], speed: float) -> list[float]:
    """When each message is due, in seconds after the first: the recorded gaps divided by ``speed``.

    ``speed`` 0 means as fast as possible (every offset 0). Messages recorded out of time order are not sent
    before an earlier one: offsets never decrease.

    Raises:
        ConfigError: ``speed`` is negative or not finite.
    """
    if not math.isfinite(speed) or speed < 0:
        raise ConfigError("--speed must be a finite number >= 0 (0: as fast as possible)")
    if not records:
        return []
    if speed == 0:
        return [0.0] * len(records)
    t0 = records[0].t
    out: list[float] = []
    last = 0.0
    for rec in records:
        last = max(last, (rec.t - t0) / speed)
        out.append(last)
    return out


class Publisher(Protocol):
    """What :func:`replay` needs of a bus (a :class:`~broker.client.Bus` is one)."""

    async def publish_raw(self, out: Outgoing, *, wait: bool = False, fmt: codec.Format | None = None) -> None:
        """Publish bytes as they are."""


def _fmt(content_type: str | None) -> codec.Format | None:
    if content_type == codec.JSON:
        return "json"
    if content_type == codec.MSGPACK:
        return "msgpack"
    return None


async def replay(
    bus: Publisher,
    recording: Path | str | Sequence[Recorded],
    speed: float = 1.0,
    topics: Sequence[str] | None = None,
    loop: int = 1,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> int:
    """Publish a recording again with its original timing divided by ``speed``.

    Each message goes out with its recorded topic, bytes, QoS, retain flag and content type. Every 100th QoS
    1+ message and the last of each round wait for the broker's acknowledgement, so the outgoing queue stays
    bounded and everything acknowledged is on the broker when this returns.

    Args:
        bus: an entered bus.
        recording: a file, or messages from :func:`load_recording`.
        speed: 2 plays twice as fast, 0.5 half as fast, 0 as fast as possible.
        topics: play only messages matching one of these filters (all by default).
        loop: how many times to play it (bounded: 1 to :data:`MAX_LOOPS`).
        clock: monotonic seconds.
        sleep: how to wait (``asyncio.sleep``; tests pass a fake).

    Returns:
        the number of messages published.

    Raises:
        ConfigError: a bad file, filter, speed or loop count.
        BusConnectionError: the connection was lost (the count so far is lost with it).
    """
    records = load_recording(recording) if isinstance(recording, str | Path) else list(recording)
    if topics:
        filters = [validate_filter(f) for f in topics]
        records = [r for r in records if any(matches(f, r.topic) for f in filters)]
    if not 1 <= loop <= MAX_LOOPS:
        raise ConfigError(f"--loop must be between 1 and {MAX_LOOPS}")
    offsets = play_offsets(records, speed)
    sent = 0
    last_acked = max((i for i, r in enumerate(records) if r.qos > 0), default=-1)
    for _ in range(loop):
        start = clock()
        for i, (rec, offset) in enumerate(zip(records, offsets, strict=True)):
            delay = start + offset - clock()
            if delay > 0:
                await sleep(delay)
            wait = rec.qos > 0 and (i == last_acked or sent % 100 == 99)
            await bus.publish_raw(
                Outgoing(rec.topic, rec.payload, rec.qos, rec.retain), wait=wait, fmt=_fmt(rec.content_type)
            )
            sent += 1
    return sent


# ------------------------------------------------------------------------------------------- CLI


def register(app: typer.Typer) -> None:
    """Add ``record`` and ``replay`` to the ``wearbus`` command line."""
    app.command("record")(record_command)
    app.command("replay")(replay_command)


BrokerOpt = Annotated[
    str | None, typer.Option("--broker", "-b", help="Broker URL (mqtt://, mqtts://, ws://); env WB_BROKER.")
]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


def record_command(
    *,
    topic_filter: Annotated[list[str], typer.Argument(help="One or more MQTT topic filters, e.g. 'wb/v1/alice/#'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The recording file to write (JSON lines).")],
    seconds: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    include_health: Annotated[
        bool, typer.Option("--include-health", help="Keep health values (redacted by default).")
    ] = False,
    broker: BrokerOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Record messages byte for byte, with QoS, retained flag and receive time, for `wearbus replay`.

    Messages holding health values are recorded with them redacted (as JSON) unless --include-health; the file
    is created 0600.
    """
    configure_logging(log_level)
    _run(_record(broker or Settings().broker, topic_filter, out, seconds, count, include_health))


async def _record(
    url: str, filters: list[str], out: Path, seconds: float | None, count: int | None, include_health: bool = False
) -> None:
    started = asyncio.Event()

    async def announce() -> None:
        await started.wait()
        typer.echo(f"recording {' '.join(filters)} to {out} (Ctrl-C to stop)", err=True)

    try:
        async with RawBus(client_options(url, "record")) as bus, asyncio.TaskGroup() as tasks:
            tasks.create_task(announce())
            await record(
                bus, filters, out, seconds=seconds, count=count, started=started, include_health=include_health
            )
            started.set()  # record() set it unless it failed first; either way announce() ends
    finally:
        _say_recorded(out)  # also after Ctrl-C: every line written so far is complete


def _say_recorded(out: Path) -> None:
    with contextlib.suppress(ConfigError):
        typer.echo(f"recorded {len(load_recording(out))} message(s) to {out}", err=True)


def replay_command(
    *,
    file: Annotated[Path, typer.Argument(help="A recording made by `wearbus record`.")],
    speed: Annotated[float, typer.Option(help="Playback speed: 2 is twice as fast, 0 as fast as possible.")] = 1.0,
    loop: Annotated[int, typer.Option(help=f"Play it this many times (1 to {MAX_LOOPS}).")] = 1,
    topics: Annotated[
        list[str] | None,
        typer.Option("--topics", help="Play only messages matching this filter; repeatable."),
    ] = None,
    broker: BrokerOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Publish a recording again with its original timing divided by --speed."""
    configure_logging(log_level)
    _run(_replay(broker or Settings().broker, file, speed, topics, loop))


async def _replay(url: str, file: Path, speed: float, topics: list[str] | None, loop: int) -> None:
    records = load_recording(file)  # fail on a bad file before connecting
    async with Bus(client_options(url, "replay")) as bus:
        n = await replay(bus, records, speed, topics, loop)
    typer.echo(f"replayed {n} message(s) from {file}", err=True)


def _run(coro: Any) -> None:
    """Run a command; our errors become a message and exit code 1, Ctrl-C exit 130 (as the other commands)."""
    try:
        asyncio.run(coro)
    except WearbusError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
