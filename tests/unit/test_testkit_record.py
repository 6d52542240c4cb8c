"""The recording format and the replay schedule, without a broker."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.bus import BusOptions, Outgoing
from broker.memory import MemoryBroker, MemoryBus
from schemas import codec
from schemas.errors import ConfigError
from testkit.record import (
    FORMAT,
    Header,
    Recorded,
    header_line,
    load_recording,
    parse_record,
    play_offsets,
    read_recording,
    record_line,
    replay,
    write_recording,
)

topics = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=80)
recorded = st.builds(
    Recorded,
    t=st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False),
    topic=topics,
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1, 2]),
    retain=st.booleans(),
    content_type=st.sampled_from([None, codec.JSON, codec.MSGPACK]),
)
headers = st.builds(
    Header,
    filters=st.lists(topics, min_size=1, max_size=3).map(tuple),
    started_ms=st.integers(min_value=0, max_value=10**14),
    broker=st.text(max_size=40),
)


@given(header=headers, records=st.lists(recorded, max_size=20))
def test_a_recording_reads_back_exactly_as_written(
    tmp_path_factory: pytest.TempPathFactory, header: Header, records: list[Recorded]
) -> None:
    path = tmp_path_factory.mktemp("rec") / "r.jsonl"
    assert write_recording(path, header, records) == len(records)
    assert read_recording(path) == (header, records)
    assert load_recording(path) == records


@given(rec=recorded)
def test_each_line_is_one_json_object_with_base64_payload(rec: Recorded) -> None:
    line = record_line(rec)
    assert "\n" not in line
    obj = json.loads(line)
    assert set(obj) <= {"t", "topic", "qos", "retain", "payload", "ct"}
    assert parse_record(line) == rec


def test_the_header_names_the_format_and_version() -> None:
    obj = json.loads(header_line(Header(("wb/#",), 1_767_225_600_000, "mqtt://127.0.0.1:1883")))
    assert obj == {
        "format": FORMAT,
        "version": 1,
        "filters": ["wb/#"],
        "started_ms": 1_767_225_600_000,
        "broker": "mqtt://127.0.0.1:1883",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ("[1]", "expected a JSON object"),
        ('{"t": -1, "topic": "a", "qos": 0, "retain": false, "payload": ""}', "'t' must be"),
        ('{"t": 0, "topic": "", "qos": 0, "retain": false, "payload": ""}', "'topic' must be"),
        ('{"t": 0, "topic": "a", "qos": 3, "retain": false, "payload": ""}', "'qos' must be"),
        ('{"t": 0, "topic": "a", "qos": true, "retain": false, "payload": ""}', "'qos' must be"),
        ('{"t": 0, "topic": "a", "qos": 0, "retain": 1, "payload": ""}', "'retain' must be"),
        ('{"t": 0, "topic": "a", "qos": 0, "retain": false, "payload": "@@"}', "not valid base64"),
        ('{"t": 0, "topic": "a", "qos": 0, "retain": false, "payload": "", "ct": 5}', "'ct' must be"),
    ],
)
def test_a_bad_line_is_named(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_record(line, "f.jsonl:7")


def test_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(header_line(Header(("wb/#",), 0)) + "\n" + record_line(Recorded(0, "a", b"x")) + "\n{}\n")
    with pytest.raises(ConfigError, match=r"r\.jsonl:3: 't' must be"):
        load_recording(path)
    path.write_text('{"format": "something-else"}\n')
    with pytest.raises(ConfigError, match=r"r\.jsonl:1: not a wearbus recording"):
        load_recording(path)
    path.write_text(json.dumps({"format": FORMAT, "version": 99}) + "\n")
    with pytest.raises(ConfigError, match="version 99 is not supported"):
        load_recording(path)
    path.write_text("")
    with pytest.raises(ConfigError, match="empty file"):
        load_recording(path)
    with pytest.raises(ConfigError, match="cannot read recording"):
        load_recording(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------------------- schedule


def _at(*ts: float) -> list[Recorded]:
    return [Recorded(t, f"wb/v1/u/ring/r/evt/sensor/hr{i}", b"{}", 1) for i, t in enumerate(ts)]


def test_offsets_keep_the_gaps_divided_by_speed() -> None:
    records = _at(10.0, 10.5, 12.0)
    assert play_offsets(records, 1) == [0.0, 0.5, 2.0]
    assert play_offsets(records, 2) == [0.0, 0.25, 1.0]
    assert play_offsets(records, 0.5) == [0.0, 1.0, 4.0]
    assert play_offsets(records, 0) == [0.0, 0.0, 0.0]
    assert play_offsets([], 1) == []


def test_offsets_never_go_back() -> None:
    assert play_offsets(_at(0, 2, 1, 3), 1) == [0, 2, 2, 3]


@pytest.mark.parametrize("speed", [-1, float("inf"), float("nan")])
def test_a_bad_speed_is_refused(speed: float) -> None:
    with pytest.raises(ConfigError, match="--speed"):
        play_offsets(_at(0), speed)


@given(
    ts=st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=30),
    speed=st.floats(min_value=0.01, max_value=100),
)
def test_offsets_are_monotonic_and_scaled(ts: list[float], speed: float) -> None:
    offsets = play_offsets(_at(*ts), speed)
    assert offsets[0] == 0
    assert all(a <= b for a, b in itertools.pairwise(offsets))
    assert offsets[-1] == pytest.approx(max(0.0, max(ts) - ts[0]) / speed)


class Clock:
    """A fake clock that only sleeping advances."""

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class RecordingBus(MemoryBus):
    """The in-memory bus, noting when (on the fake clock) and how replay published each message."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(BusOptions(url="memory://replay"), broker=MemoryBroker())
        self.at = clock
        self.sent: list[tuple[float, Outgoing, bool, str | None]] = []

    async def publish_raw(self, out: Outgoing, *, wait: bool = False, fmt: codec.Format | None = None) -> None:
        self.sent.append((self.at.now, out, wait, fmt))
        await super().publish_raw(out, wait=wait, fmt=fmt)


class Watch(MemoryBus):
    """A subscriber that keeps every delivery as it came (topic, bytes, QoS, content type), valid or not."""

    arrived: list[tuple[str, bytes, int, str | None]]

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        self.arrived.append((topic, payload, qos, content_type))


@asynccontextmanager
async def replaying() -> AsyncIterator[tuple[RecordingBus, Watch, Clock]]:
    """A publishing bus for replay and a subscriber on the same in-memory broker that receives what it sent."""
    clock = Clock()
    bus = RecordingBus(clock)
    watch = Watch(BusOptions(url="memory://watch"), broker=bus.broker)
    watch.arrived = []
    async with bus, watch:
        await watch.subscribe("wb/#")
        yield bus, watch, clock


async def test_replay_keeps_timing_flags_and_content_type() -> None:
    records = [
        Recorded(5.0, "wb/v1/u/ring/r/state", b"\x81", 1, True, codec.MSGPACK),
        Recorded(5.5, "wb/v1/u/ring/r/evt/sensor/steps", b"{}", 0, False, None),
        Recorded(7.0, "wb/v1/u/ring/r/evt/sensor/hr", b'{"a":1}', 1, False, codec.JSON),
    ]
    async with replaying() as (bus, watch, clock):
        n = await replay(bus, records, speed=2, loop=2, clock=clock.clock, sleep=clock.sleep)
    assert n == 6
    # what crossed the broker: the recorded bytes and QoS, the content type as recorded (guessed when none was)
    assert watch.arrived[:3] == [(r.topic, r.payload, r.qos, r.content_type or codec.JSON) for r in records]
    assert len(watch.arrived) == 6
    times = [t - 100.0 for t, *_ in bus.sent]
    assert times == pytest.approx([0, 0.25, 1.0, 1.0, 1.25, 2.0])
    outs = [out for _, out, _, _ in bus.sent]
    assert outs[:3] == [Outgoing(r.topic, r.payload, r.qos, r.retain) for r in records]
    assert [fmt for *_, fmt in bus.sent[:3]] == ["msgpack", None, "json"]
    assert [wait for _, _, wait, _ in bus.sent[:3]] == [False, False, True]  # the round's last QoS 1 is acked


async def test_replay_filters_topics_and_bounds_loops(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, Header(("wb/#",), 0), _at(0, 1, 2))
    async with replaying() as (bus, _, clock):
        n = await replay(bus, path, 0, ["wb/v1/u/ring/r/evt/sensor/hr1"], clock=clock.clock, sleep=clock.sleep)
        assert n == 1
        assert [out.topic for _, out, _, _ in bus.sent] == ["wb/v1/u/ring/r/evt/sensor/hr1"]
        with pytest.raises(ConfigError, match="--loop"):
            await replay(bus, path, 1, loop=0)
