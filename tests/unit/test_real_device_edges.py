"""Issue 21: the stack's clock switch, JSON devices' missing ts, and the timeline's rough edges (pure)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from rich.console import Console

from broker.mosquitto import config_from_cli
from cli.up import Proc, Supervisor, Timeline, wait_for_agent
from schemas import codec
from schemas.actions import AgentState, DeadLetter, DeviceState
from schemas.clock import SimClock
from schemas.envelope import make
from schemas.errors import ValidationFailed, WearbusError
from schemas.events import Utterance

NOV_2025 = 1_764_018_000_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def test_clock_is_simulated_until_the_scenario_ends_then_the_wall_clock() -> None:
    anchor = wall_ms()
    running = SimClock(120, NOV_2025, anchor, wall_after_ms=NOV_2025 + 3_600_000)  # 30 s of wall time
    assert not running.on_wall
    assert abs(running.now_ms() - NOV_2025) < 120 * 5_000
    assert running.speed == 120
    over = SimClock(120, NOV_2025, anchor - 60_000, wall_after_ms=NOV_2025 + 3_600_000)  # ended 30 s ago
    assert over.on_wall
    assert over.speed == 1.0
    assert abs(over.now_ms() - wall_ms()) < 5_000
    # a device on the wall clock is judged against the wall clock; a straggler of the scenario against its time
    assert abs(over.judge_ms(wall_ms()) - wall_ms()) < 5_000
    assert abs(over.judge_ms(NOV_2025 + 3_600_000) - NOV_2025) < 120 * 65_000


def test_clock_without_a_switch_stays_simulated() -> None:
    clock = SimClock(120, NOV_2025, wall_ms() - 3_600_000)
    assert not clock.on_wall
    assert clock.now_ms() < wall_ms() - 86_400_000
    assert abs(clock.judge_ms(wall_ms()) - clock.now_ms()) < 1000


def test_json_without_ts_gets_its_arrival_time_and_is_marked_json() -> None:
    topic = "wb/v1/alice/glasses/my-glasses/evt/voice/utterance"
    payload = b'{"id":"u2","data":{"text":"hi","lang":"en","final":true}}'
    message = codec.decode(topic, payload, arrived_ms=1_796_000_000_000)
    assert message.envelope.ts == 1_796_000_000_000
    assert message.envelope.src_ts == 1_796_000_000_000
    assert message.json
    before = wall_ms()
    assert codec.decode(topic, payload).envelope.ts >= before
    packed = codec.encode(make(Utterance(text="hi", lang="en", final=True), ts=5))
    assert not codec.decode(topic, packed).json


def test_msgpack_without_ts_is_still_refused() -> None:
    import msgpack  # noqa: PLC0415

    payload = msgpack.packb({"id": "x", "data": {"text": "hi", "lang": "en", "final": True}})
    with pytest.raises(ValidationFailed) as caught:
        codec.decode("wb/v1/alice/glasses/g/evt/voice/utterance", payload)
    assert caught.value.field == "ts"


def test_birth_may_ask_for_an_encoding() -> None:
    body = {"type": "device.state", "online": True, "encoding": "json", "capabilities": ["display.card"]}
    payload = json.dumps({"id": "b1", "data": body}).encode()
    message = codec.decode("wb/v1/alice/glasses/my-glasses/state", payload, retain=True)
    assert isinstance(message.data, DeviceState)
    assert message.data.encoding == "json"


def timeline(tz_minutes: int = 0) -> tuple[Timeline, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=300, color_system=None, highlight=False)
    return Timeline(console, show=True, tz=timezone(timedelta(minutes=tz_minutes))), buffer


def test_timeline_shows_why_a_device_event_was_dead_lettered_with_brackets_intact() -> None:
    line, buffer = timeline()
    letter = DeadLetter(
        reason="future",
        topic="wb/v1/alice/glasses/my-glasses/evt/voice/utterance",
        error="publish time 1796000000000 is 32559521 s ahead of the agent's clock; user is [a-z0-9-]{1,64}",
        field="ts",
        size=10,
        payload="{}",
        payload_encoding="utf-8",
    )
    topic = "wb/v1/_dlq/future"
    line.feed(codec.decode(topic, codec.encode(make(letter, ts=NOV_2025))))
    text = buffer.getvalue()
    assert "refused future" in text
    assert "my-glasses/evt/voice/utterance" in text
    assert "32559521 s ahead of the agent's clock" in text
    assert "[a-z0-9-]{1,64}" in text
    assert "(ts)" in text


def test_timeline_times_are_in_the_users_zone_not_the_machines() -> None:
    line, buffer = timeline(480)  # Hangzhou
    five_am_hangzhou = 1_764_018_000_000  # 2025-11-24T21:00:00Z
    topic = "wb/v1/alice/glasses/glasses-1/evt/voice/utterance"
    line.feed(codec.decode(topic, codec.encode(make(Utterance(text="[lat, lon]", lang="en"), ts=five_am_hangzhou))))
    text = buffer.getvalue()
    assert text.startswith("05:00:00"), text
    assert "[lat, lon]" in text


def test_help_and_errors_keep_their_brackets_and_colons() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    shown = subprocess.run(
        [sys.executable, "-m", "cli.main", "broker", "config", "--help"], capture_output=True, text=True, env=env,
        check=True, timeout=60,
    )  # fmt: skip
    assert "alice:ring:ring-1" in shown.stdout, shown.stdout  # not "alice💍ring-1"
    refused = subprocess.run(
        [sys.executable, "-m", "cli.main", "device", "ring", "--id", "Ring_1"], capture_output=True, text=True,
        env=env, check=False, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "[a-z0-9-]" in refused.stderr, refused.stderr


def test_the_tls_listener_binds_the_given_host(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    config_from_cli(out_dir=tmp_path / "t", users=["alice"], devices=[], host="192.0.2.7", cafile=ca, certfile=ca,
                    keyfile=ca)  # fmt: skip
    lines = (tmp_path / "t" / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    assert "listener 1883 192.0.2.7" in lines
    assert "listener 8883 192.0.2.7" in lines  # not every interface
    config_from_cli(out_dir=tmp_path / "u", users=["alice"], devices=[], cafile=ca, certfile=ca, keyfile=ca,
                    tls_host="*")  # fmt: skip
    lines = (tmp_path / "u" / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    assert "listener 1883 127.0.0.1" in lines
    assert "listener 8883" in lines  # asked for: every interface
    config_from_cli(out_dir=tmp_path / "v", users=["alice"], devices=[], cafile=ca, certfile=ca, keyfile=ca)
    lines = (tmp_path / "v" / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    assert "listener 8883 127.0.0.1" in lines  # nothing said: loopback like the plain listener, not everything


def test_the_two_latencies_say_what_they_measure() -> None:
    from cli.report import (  # noqa: PLC0415
        LATENCY_BUS,
        LATENCY_STORED,
        Summary,
        print_summary,
    )

    buffer = io.StringIO()
    summary = Summary(db="x.db", latency_ms={"p50": 44.0, "p99": 90.0, "max": 91.0}, latency_samples=3)
    print_summary(summary, Console(file=buffer, width=400, color_system=None))
    assert LATENCY_STORED in buffer.getvalue()
    assert "agent's record" in LATENCY_STORED
    assert "on the bus" in LATENCY_BUS
    assert LATENCY_BUS != LATENCY_STORED


def test_a_ring_without_a_haptic_motor_is_not_asked_to_buzz() -> None:
    from agent.core.engine import AgentCore  # noqa: PLC0415
    from agent.core.testing import Rig, config, of, to  # noqa: PLC0415
    from schemas.actions import Haptic, ShowCard  # noqa: PLC0415
    from schemas.events import CalendarNext  # noqa: PLC0415
    from schemas.topics import Kind  # noqa: PLC0415

    for capabilities, buzzes in [(["ring.haptic", "ring.measure_now", "ring.sync"], True),
                                 (["ring.measure_now", "ring.sync"], False)]:  # fmt: skip
        rig = Rig(AgentCore(config()))
        rig.ready()
        rig.state(Kind.RING, capabilities=capabilities)  # a Colmi R02's birth has no ring.haptic
        rig.send(Kind.PHONE, CalendarNext(title="Team meeting", start_ts=rig.now - 300_000))
        out = rig.say("blah blah")
        assert of(to(out, Kind.GLASSES), ShowCard)  # the card still comes
        assert bool(of(to(out, Kind.RING), Haptic)) is buzzes


async def test_up_starts_the_devices_only_once_its_own_agent_listens(tmp_path: Path) -> None:
    """`wearbus up` waits for the retained presence of the agent process it started (the agent subscribes before
    that birth): an utterance sent before would reach nobody. Another agent's presence does not count."""
    line, _ = timeline()
    sup = Supervisor()
    agent = Proc("agent", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "agent.log")
    await sup.start(agent)
    try:
        assert agent.process is not None
        waiting = asyncio.create_task(wait_for_agent(line, sup, agent, 30))

        def presence(pid: int, online: bool = True) -> None:
            body = AgentState(online=online, instance="agent-1", pid=pid)
            line.feed(codec.decode("wb/v1/_agent/agent-1/state", codec.encode(make(body, ts=NOV_2025)), retain=True))

        presence(agent.process.pid + 1)  # someone else's agent
        await asyncio.sleep(0)
        assert not waiting.done()
        presence(agent.process.pid)
        assert await asyncio.wait_for(waiting, 30) is True
        presence(agent.process.pid, online=False)
        assert not line.agents_online
        assert await wait_for_agent(line, sup, agent, 0.1) is False  # a presence the broker hides: up goes on
    finally:
        await sup.stop()


async def test_up_says_where_to_look_when_its_agent_exits_before_it_listens(tmp_path: Path) -> None:
    line, _ = timeline()
    sup = Supervisor()
    agent = Proc("agent", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "agent.log", restart=False)
    await sup.start(agent)
    try:
        with pytest.raises(WearbusError, match=r"exited before it came online; see .*agent\.log"):
            await wait_for_agent(line, sup, agent, 60)
    finally:
        await sup.stop()
