"""The test kit's fixtures against a real broker: the embedded one, and a private Mosquitto when installed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest

from broker.client import Bus, BusOptions, Outgoing
from broker.embedded import free_port
from schemas import codec
from schemas.actions import Ack, DeviceState, Haptic
from schemas.envelope import make
from schemas.errors import ConfigError
from schemas.events import HeartRate, Steps
from testkit.contract import Contract
from testkit.expect import Expect, UserTopics, has
from testkit.mosquitto import MosquittoProcess
from testkit.process import ProcessFactory
from testkit.raw import RawBus
from testkit.record import Recorded, load_recording, record, replay
from tests.conftest import require_mosquitto

pytestmark = pytest.mark.broker


def hr_json(bpm: float, msg_id: str = "hr-1") -> bytes:
    """An HR event as a shell script would send it with mosquitto_pub: JSON, no seq, no src_ts."""
    return json.dumps({"id": msg_id, "ts": 1_767_225_600_000, "data": {"type": "ring.hr", "bpm": bpm}}).encode()


def dlq_router(url: str, expect: Expect) -> Bus:
    """A client that routes what does not decode to the DLQ, as the agent will (same protocol as the recorder:
    amqtt takes seconds to refuse MQTT 5)."""
    return Bus(BusOptions(url=url, protocol=expect.bus.protocol, dlq=True, name="router"))


class TestOnBothBrokers:
    """The fixtures and library functions on the embedded broker and on Mosquitto."""

    @pytest.fixture(params=["embedded", "mosquitto"])
    def broker_kind(self, request: pytest.FixtureRequest) -> str:
        kind: str = request.param
        return kind

    @pytest.fixture
    async def wb_url(self, broker_kind: str, wb_broker_url: str) -> AsyncIterator[str]:
        """Overrides the plugin's wb_url: every wearbus fixture of these tests uses this broker.

        The embedded case is the plugin's session broker (the plugin knows it speaks 3.1.1, so no connection
        spends seconds on an MQTT 5 attempt), the other a private Mosquitto per test.
        """
        if broker_kind == "embedded":
            yield wb_broker_url
            return
        require_mosquitto()
        async with MosquittoProcess() as mosquitto:
            yield mosquitto.url

    async def test_json_from_a_device_is_seen_decoded(
        self, wb_bus: Bus, wb_expect: Expect, wb_topics: UserTopics
    ) -> None:
        topic = wb_topics.event("ring", "ring-1", "sensor", "hr")
        await wb_bus.publish_raw(Outgoing(topic, hr_json(72), 1, False), wait=True)
        message = await wb_expect.message(topic, where=has(bpm=72))
        assert isinstance(message.data, HeartRate)
        assert message.where.device == "ring-1"
        assert message.envelope.seq == 0
        assert wb_expect.seen(wb_topics.all) == [message]

    async def test_recorder_learns_whether_qos_can_be_checked(self, broker_kind: str, wb_expect: Expect) -> None:
        # amqtt 0.12 delivers at the subscription's QoS; Mosquitto at min(publish, subscription).
        assert wb_expect.qos_exact is (broker_kind == "mosquitto")

    async def test_a_failed_expectation_shows_what_was_seen_nearby(
        self, wb_bus: Bus, wb_expect: Expect, wb_topics: UserTopics
    ) -> None:
        hr = wb_topics.event("ring", "ring-1", "sensor", "hr")
        wrong_kind = wb_topics.event("phone", "ring-1", "sensor", "bogus")
        await wb_bus.publish_raw(Outgoing(hr, hr_json(72), 1, False), wait=True)
        await wb_bus.publish_raw(Outgoing(wrong_kind, b'{"id": "b", "ts": 1, "data": {}}', 1, False), wait=True)
        await wb_expect.message(hr)
        await wb_expect.until(lambda: True if wb_expect.rejected(wrong_kind) else None, 5.0)

        with pytest.raises(AssertionError) as info:
            await wb_expect.message(hr, where=lambda m: isinstance(m.data, HeartRate) and m.data.bpm > 100, within=0.2)
        text = str(info.value)
        where = "lambda m: isinstance(m.data, HeartRate) and m.data.bpm > 100"
        assert f"expected a message on {hr!r} where {where} within 0.2 s" in text
        assert "ring.hr bpm=72.0" in text
        assert "<- matched the filter; where: false" in text
        assert f"{wrong_kind} q1  REJECTED topic:" in text  # the same user's other topics are shown too

        other_user = UserTopics.fresh().event("ring", "ring-1", "sensor", "hr")
        with pytest.raises(AssertionError) as info:
            await wb_expect.message(other_user, within=0.1)
        assert f"nothing on topics near {other_user!r}" in str(info.value)
        assert hr in str(info.value)  # the last messages seen anywhere

    async def test_none_and_sequence(self, wb_bus: Bus, wb_expect: Expect, wb_topics: UserTopics) -> None:
        cmd = wb_topics.command("ring", "r1", "ring.haptic")
        ack = wb_topics.ack("ring", "r1")
        steps = wb_topics.event("ring", "r1", "sensor", "steps")
        start = wb_expect.mark()
        await wb_bus.publish(steps, make(_steps(10)), qos=0)
        await wb_bus.publish(cmd, make(Haptic(pattern="double")), wait=True)
        await wb_bus.publish(steps, make(_steps(20)), qos=0)
        await wb_bus.publish(ack, make(Ack(action_id="a-1", status="done")), wait=True)

        got = await wb_expect.sequence([cmd, (steps, has(steps=20)), ack], since=start)
        assert [m.topic for m in got] == [cmd, steps, ack]
        await wb_expect.none(wb_topics.state("ring", "r1"), within=0.1)
        await wb_expect.none(steps, where=has(steps=lambda n: n > 100), within=0.1)

        with pytest.raises(AssertionError, match=r"step 2 never came"):
            await wb_expect.sequence([ack, cmd], within=0.1)
        with pytest.raises(AssertionError, match=r"expected no message on .*steps.*, but one came"):
            await wb_expect.none(steps, within=0.1)
        assert len(wb_expect.seen(steps, since=wb_expect.mark())) == 0

    async def test_contract_checks_schema_topic_and_qos(
        self, wb_bus: Bus, wb_expect: Expect, wb_topics: UserTopics
    ) -> None:
        contract = Contract(wb_expect, owned=[wb_topics.all], dlq_within=0.3, probe_within=5.0)
        good = wb_topics.event("ring", "r1", "sensor", "hr")
        await wb_bus.publish_raw(Outgoing(good, hr_json(70, "a"), 1, False), wait=True)
        await wb_bus.publish_raw(Outgoing(good, hr_json(500, "b"), 1, False), wait=True)
        await wb_bus.publish_raw(Outgoing(good, hr_json(71, "c"), 0, False))
        unknown = wb_topics.event("ring", "r1", "sensor", "nope")
        await wb_bus.publish_raw(Outgoing(unknown, hr_json(70, "d"), 1, False), wait=True)
        await wb_expect.until(lambda: True if len(wb_expect.seen(good)) == 2 else None, 5.0)
        await wb_expect.until(lambda: True if len(wb_expect.rejected(wb_topics.all)) == 2 else None, 5.0)

        rules = sorted((v.topic, v.rule) for v in await contract.verify())
        expected = [(good, "codec/schema"), (unknown, "codec/topic")]
        if wb_expect.qos_exact:
            expected.append((good, "qos"))  # hr is a QoS 1 channel; "c" went at QoS 0
        assert rules == sorted(expected)

        contract.allow(unknown, dlq=False)
        contract.allow(good)  # accepts the QoS slip; the bad HR needs a dead letter, and none came
        assert [(v.topic, v.rule) for v in await contract.verify()] == [(good, "dlq")]

    async def test_contract_accepts_bad_input_routed_to_the_dlq(
        self, wb_url: str, wb_bus: Bus, wb_expect: Expect, wb_topics: UserTopics
    ) -> None:
        contract = Contract(wb_expect, owned=[wb_topics.all])
        topic = wb_topics.event("ring", "r1", "sensor", "hr")
        async with dlq_router(wb_url, wb_expect) as router:
            await router.subscribe(wb_topics.all, 1)
            await wb_bus.publish_raw(Outgoing(topic, hr_json(500), 1, False), wait=True)
            await wb_expect.message("wb/v1/_dlq/schema", where=has(topic=topic))
        contract.allow(topic)
        assert await contract.verify() == []

    async def test_contract_asks_the_retained_store(
        self, wb_bus: Bus, wb_expect: Expect, wb_topics: UserTopics
    ) -> None:
        # The state published without retain is a verdict only after the probe's bound: keep it short here.
        contract = Contract(wb_expect, owned=[wb_topics.all], probe_within=1.0)
        state = wb_topics.state("ring", "r1")
        retained_state = wb_topics.state("ring", "r2")
        event = wb_topics.event("ring", "r1", "sensor", "steps")
        await wb_bus.publish(state, make(_online()), retain=False, wait=True)  # should have been retained
        await wb_bus.publish(retained_state, make(_online()), retain=True, wait=True)
        await wb_bus.publish(event, make(_steps(5)), qos=0, retain=True)  # must not be retained
        for topic in (state, retained_state, event):
            await wb_expect.message(topic)
        try:
            found = {(v.topic, v.rule, v.detail.split(":")[0]) for v in await contract.verify()}
            assert found == {
                (state, "retain", "published without the retain flag"),
                (
                    event,
                    "retain",
                    "the broker holds a retained message on ring.evt.sensor.steps, not a retained channel",
                ),
            }
        finally:
            for topic in (retained_state, event):  # leave the session's broker clean
                await wb_bus.publish_raw(Outgoing(topic, b"", 1, True), wait=True)

    async def test_record_then_replay_gives_the_same_messages(
        self, tmp_path: Path, wb_url: str, wb_bus: Bus, wb_expect: Expect, wb_topics: UserTopics
    ) -> None:
        state = wb_topics.state("ring", "r1")
        hr = wb_topics.event("ring", "r1", "sensor", "hr")
        steps = wb_topics.event("ring", "r1", "sensor", "steps")
        events = wb_topics.device("ring", "r1").prefix + "/evt/#"
        sent = [
            Outgoing(hr, hr_json(60 + i, f"hr-{i}"), 1, False)
            if i % 2
            else Outgoing(steps, codec.encode(make(_steps(i))), 0, False)
            for i in range(10)
        ]
        # Each recording has its own filter and count: amqtt may deliver a stored message twice to a new
        # subscriber, which a count spanning both kinds would trip over.
        await wb_bus.publish(state, make(_online()), retain=True, wait=True)
        try:
            async with _raw_bus(wb_url, wb_expect) as rec_bus:
                stored = await _recording(rec_bus, state, tmp_path / "state.jsonl", 1, [])
                recorded = await _recording(
                    rec_bus,
                    events,
                    tmp_path / "events.jsonl",
                    10,
                    [wb_bus.publish_raw(m) for m in sent],
                    include_health=True,  # byte for byte: health values kept
                )
            assert [(r.topic, r.retain) for r in stored] == [(state, True)]
            assert sorted((r.topic, r.payload) for r in recorded) == sorted((m.topic, m.payload) for m in sent)
            if wb_expect.qos_exact:
                assert _key(recorded) == sorted((m.topic, m.payload, m.qos) for m in sent)

            await wb_bus.publish_raw(Outgoing(state, b"", 1, True), wait=True)  # empty the store
            assert await replay(wb_bus, tmp_path / "state.jsonl", speed=0) == 1  # retained again
            async with _raw_bus(wb_url, wb_expect) as rec_bus:
                restored = await _recording(rec_bus, state, tmp_path / "restored.jsonl", 1, [])
                replayed = await _recording(
                    rec_bus,
                    events,
                    tmp_path / "replayed.jsonl",
                    10,
                    [replay(wb_bus, tmp_path / "events.jsonl", 0)],
                    include_health=True,
                )
            assert [(r.payload, r.retain) for r in restored] == [(stored[0].payload, True)]
            assert _key(replayed) == _key(recorded)
        finally:
            await wb_bus.publish_raw(Outgoing(state, b"", 1, True), wait=True)

    async def test_a_default_recording_holds_no_health_value(
        self, tmp_path: Path, wb_url: str, wb_bus: Bus, wb_expect: Expect, wb_topics: UserTopics
    ) -> None:
        hr = wb_topics.event("ring", "r1", "sensor", "hr")
        steps = wb_topics.event("ring", "r1", "sensor", "steps")
        events = wb_topics.device("ring", "r1").prefix + "/evt/#"
        steps_raw = codec.encode(make(_steps(4321)))
        sent = [Outgoing(hr, hr_json(187.25, "hr-x"), 1, False), Outgoing(steps, steps_raw, 0, False)]
        path = tmp_path / "default.jsonl"
        async with _raw_bus(wb_url, wb_expect) as rec_bus:
            recorded = await _recording(rec_bus, events, path, 2, [wb_bus.publish_raw(m) for m in sent])
        assert path.stat().st_mode & 0o777 == 0o600
        assert "187.25" not in path.read_text()
        by_topic = {r.topic: r for r in recorded}
        assert by_topic[steps].payload == steps_raw  # nothing to redact: byte for byte
        redacted = json.loads(by_topic[hr].payload)
        assert redacted["data"] == {"type": "ring.hr", "bpm": "‹redacted›"}  # the shape stays
        assert by_topic[hr].content_type == codec.JSON


def _key(records: list[Recorded]) -> list[tuple[str, bytes, int]]:
    return sorted((r.topic, r.payload, r.qos) for r in records)


def _raw_bus(url: str, expect: Expect) -> RawBus:
    return RawBus(BusOptions(url=url, protocol=expect.bus.protocol, name="recorder"))


async def _recording(
    bus: RawBus,
    topic_filter: str,
    path: Path,
    count: int,
    actions: list[Awaitable[object]],
    *,
    include_health: bool = False,
) -> list[Recorded]:
    """Record ``count`` messages while running ``actions`` (coroutines) once the recorder is subscribed."""
    started = asyncio.Event()
    task = asyncio.create_task(
        record(bus, topic_filter, path, count=count, seconds=20, started=started, include_health=include_health)
    )
    await asyncio.wait_for(started.wait(), 10)
    for action in actions:
        await action
    assert await asyncio.wait_for(task, 25) == count
    return load_recording(path)


def _steps(n: int) -> Steps:
    return Steps(steps=n, bucket_start=1_767_225_600_000)


def _online() -> DeviceState:
    return DeviceState(online=True)


# --------------------------------------------------------------------------------------- processes


async def test_wb_process_runs_a_broker_and_a_tap(wb_process: ProcessFactory, tmp_path: Path) -> None:
    port = free_port()
    broker = await wb_process("broker", "--port", str(port), "--log-level", "warning")
    await broker.wait_output(r"listening on mqtt://127\.0\.0\.1:\d+")
    url = f"mqtt://127.0.0.1:{port}"
    topics = UserTopics.fresh()
    hr = topics.event("ring", "ring-1", "sensor", "hr")
    async with Bus(BusOptions(url=url, protocol="3.1.1", name="test")) as bus:
        tap = await wb_process("tap", topics.all, "--broker", url)
        await tap.wait_output("tapping", within=20)
        await bus.publish_raw(Outgoing(hr, hr_json(72), 1, False), wait=True)
        await tap.wait_output(rf"{hr} ring\.hr")
    assert await broker.kill9() == -9
    assert broker.returncode == -9
    assert tap.returncode is None  # still running: the teardown stops it
    assert "listening on" in broker.output()


async def test_wb_process_needs_a_command(wb_process: ProcessFactory) -> None:
    with pytest.raises(ConfigError):
        await wb_process()


# --------------------------------------------------------------------------------------- CLI


async def test_record_and_replay_commands(tmp_path: Path, wb_broker_url: str) -> None:
    # The commands as cli.py will register them, each in a process of its own.
    script = "import typer; from testkit.record import register; app = typer.Typer(); register(app); app()"
    cli = ProcessFactory(tmp_path / "cli", {"WB_BROKER": wb_broker_url}, command=[sys.executable, "-c", script])
    topics = UserTopics.fresh()
    hr = topics.event("ring", "ring-1", "sensor", "hr")
    path = tmp_path / "rec.jsonl"
    try:
        recorder = await cli(
            "record", topics.all, "-o", str(path), "--count", "2", "--seconds", "30", "--include-health"
        )
        await recorder.wait_output("recording wb/v1/", within=20)
        async with Bus(BusOptions(url=wb_broker_url, protocol="3.1.1", name="cli-test")) as bus:
            for i in range(2):
                await bus.publish_raw(Outgoing(hr, hr_json(70 + i, f"cli-{i}"), 1, False), wait=True)
            assert await recorder.wait(30) == 0, recorder.output()
            assert "recorded 2 message(s)" in recorder.output()
            assert [r.payload for r in load_recording(path)] == [hr_json(70, "cli-0"), hr_json(71, "cli-1")]

            bad = await cli("replay", str(tmp_path / "missing.jsonl"))
            assert await bad.wait(30) == 1
            assert "cannot read recording" in bad.output()

            async def replay_twice() -> None:
                ok = await cli("replay", str(path), "--speed", "0", "--loop", "2")
                assert await ok.wait(30) == 0, ok.output()
                assert "replayed 4 message(s)" in ok.output()

            async with RawBus(BusOptions(url=wb_broker_url, protocol="3.1.1", name="rec")) as rec_bus:
                again = await _recording(
                    rec_bus, topics.all, tmp_path / "again.jsonl", 4, [replay_twice()], include_health=True
                )
            assert sorted(r.payload for r in again) == sorted([hr_json(70, "cli-0"), hr_json(71, "cli-1")] * 2)
    finally:
        await cli.stop_all()


# --------------------------------------------------------------------------------------- the plugin itself

INNER = """
import json
import pytest
from broker.client import Outgoing

pytestmark = pytest.mark.broker

def hr(bpm):
    return json.dumps({"id": "x", "ts": 1767225600000, "data": {"type": "ring.hr", "bpm": bpm}}).encode()

@pytest.mark.wb_contract
async def test_bad_payload_fails_at_teardown(wb_bus, wb_topics, wb_expect):
    topic = wb_topics.event("ring", "r1", "sensor", "hr")
    await wb_bus.publish_raw(Outgoing(topic, hr(900), 1, False), wait=True)
    await wb_expect.until(lambda: wb_expect.rejected(topic) or None, 30)

@pytest.mark.wb_contract
async def test_allowed_without_dlq_passes(wb_bus, wb_topics, wb_expect, wb_contract):
    topic = wb_topics.event("ring", "r1", "sensor", "hr")
    wb_contract.allow(topic, dlq=False)
    await wb_bus.publish_raw(Outgoing(topic, hr(900), 1, False), wait=True)
    await wb_expect.until(lambda: wb_expect.rejected(topic) or None, 30)

async def test_unmarked_bad_payload(wb_bus, wb_topics, wb_expect):
    topic = wb_topics.event("ring", "r1", "sensor", "hr")
    await wb_bus.publish_raw(Outgoing(topic, hr(900), 1, False), wait=True)
    await wb_expect.until(lambda: wb_expect.rejected(topic) or None, 30)

async def test_failure_report_has_process_output(wb_process, wb_expect):
    proc = await wb_process("tap", "wb/v1/nobody/#")
    await proc.wait_output("tapping", within=30)
    assert False, "deliberate"
"""


def _inner_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\nmarkers =\n    broker: b\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )


def test_plugin_reports_contract_violations_and_process_output(tmp_path: Path, wb_broker_url: str) -> None:
    result = _inner_pytest(tmp_path, "--wb-broker", wb_broker_url)
    out = result.stdout
    assert result.returncode == 1, out
    assert "1 failed, 3 passed, 1 error" in out  # test_unmarked_bad_payload passes: no marker, no option
    assert "ERROR at teardown of test_bad_payload_fails_at_teardown" in out
    assert "wearbus contract: 1 violation(s) during this test" in out
    assert "/ring/r1/evt/sensor/hr [codec/schema]" in out
    assert "wearbus tap (pid" in out  # the process section of the failed test
    assert "tapping wb/v1/nobody/#" in out
    assert "wearbus bus (last messages on wb/#)" in out


def test_option_turns_the_contract_on_for_tests_using_wearbus_fixtures(tmp_path: Path, wb_broker_url: str) -> None:
    result = _inner_pytest(tmp_path, "--wb-broker", wb_broker_url, "--wb-contract", "-k", "unmarked")
    assert result.returncode == 1, result.stdout
    assert "ERROR at teardown of test_unmarked_bad_payload" in result.stdout
