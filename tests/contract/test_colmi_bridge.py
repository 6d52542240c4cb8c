"""The Colmi R02 bridge (issue 21, item 5b): the emulator answers as the ring does, judged by the `colmi-r02-client`
package's own parsers (PyPI), and the bridge publishes the same values, with the ring's sample times, on the bus."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

colmi = pytest.importorskip("colmi_r02_client")
from colmi_r02_client import battery, hr, real_time_hr, set_time, steps  # noqa: E402

from broker.client import Bus, BusOptions  # noqa: E402
from broker.embedded import EmbeddedBroker  # noqa: E402
from broker.net import free_port  # noqa: E402
from devices.bridges.colmi import (  # noqa: E402
    KIND_HR,
    KIND_SPO2,
    Battery,
    ColmiRing,
    HrLog,
    RingEmulator,
    StepsLog,
    hr_log_packet,
    packet,
    parse_battery,
    parse_reading,
    real_time_packet,
    set_time_packet,
    steps_packet,
    stop_packet,
)
from devices.sdk import DeviceConfig  # noqa: E402
from schemas.actions import Ack, DeviceState, MeasureNow  # noqa: E402
from schemas.envelope import make  # noqa: E402
from schemas.events import HeartRate, RingBattery, Steps  # noqa: E402
from schemas.topics import DeviceId, Kind, command_topic  # noqa: E402


def midnight(days_ago: int = 0) -> datetime:
    now = datetime.now(UTC) - timedelta(days=days_ago)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def day_of_hr(seed: int) -> list[int]:
    """A day's log: readings every 5 minutes through the night, gaps (0) in the afternoon."""
    return [0 if 150 <= i < 200 else 55 + (i * seed) % 40 for i in range(288)]


def test_requests_are_the_packets_the_colmi_client_writes() -> None:
    at = datetime(2026, 12, 6, 19, 30, 5, tzinfo=UTC)
    assert set_time_packet(at) == bytes(set_time.set_time_packet(at))
    assert hr_log_packet(int(midnight().timestamp())) == bytes(hr.read_heart_rate_packet(midnight()))
    assert steps_packet(0) == bytes(steps.GET_TODAY_STEPS_PACKET)
    assert real_time_packet(KIND_HR) == bytes(real_time_hr.START_HEART_RATE_PACKET)
    assert real_time_packet(KIND_SPO2) == bytes(real_time_hr.START_SPO2_PACKET)
    assert stop_packet(KIND_HR) == bytes(real_time_hr.STOP_HEART_RATE_PACKET)
    assert stop_packet(KIND_SPO2) == bytes(real_time_hr.STOP_SPO2_PACKET)
    assert packet(3) == bytes(battery.BATTERY_PACKET)
    assert len(packet(3)) == 16
    assert packet(3)[15] == 3  # checksum: the sum of the bytes & 0xFF


def test_the_colmi_clients_parsers_read_the_emulator_as_the_bridge_does() -> None:
    yesterday = midnight(1)
    day = int(yesterday.timestamp())
    quarters = [(yesterday.year, yesterday.month, yesterday.day, 28 + i, 1230 + 10 * i, 400 + i, 310 + i) for i in
                range(3)]  # fmt: skip
    ring = RingEmulator(battery=Battery(81, True), hr_days={day: day_of_hr(7)}, quarters=quarters)

    (raw,) = ring.answer(packet(3))
    theirs = battery.parse_battery(bytearray(raw))
    ours = parse_battery(raw)
    assert (theirs.battery_level, theirs.charging) == (ours.level_pct, ours.charging) == (81, True)

    for kind, value in [(KIND_HR, 72), (KIND_SPO2, 97)]:
        answers = ring.answer(bytes(real_time_hr.START_HEART_RATE_PACKET if kind == KIND_HR
                                    else real_time_hr.START_SPO2_PACKET))  # fmt: skip
        reading = real_time_hr.parse_heart_rate(bytearray(answers[-1]))
        assert isinstance(reading, real_time_hr.Reading)
        assert (reading.kind, reading.value) == (kind, value) == (parse_reading(answers[-1]).kind,
                                                                 parse_reading(answers[-1]).value)  # fmt: skip
        assert [parse_reading(a).value for a in answers[:-1]] == [0, 0]  # locking

    parser = hr.HeartRateLogParser()
    ours_log = HrLog()
    result: Any = None
    for raw in ring.answer(bytes(hr.read_heart_rate_packet(yesterday))):
        result = parser.parse(bytearray(raw)) or result
        ours_log.feed(raw)
    assert isinstance(result, hr.HeartRateLog)
    theirs_samples = [(bpm, int(at.replace(tzinfo=UTC).timestamp() * 1000)) for bpm, at in
                      result.heart_rates_with_times() if bpm]  # fmt: skip
    assert ours_log.done
    assert ours_log.samples() == theirs_samples
    assert len(theirs_samples) == 288 - 50

    sport = steps.SportDetailParser()
    details: list[Any] = []
    ours_steps = StepsLog()
    for raw in ring.answer(steps_packet(1)):
        current = sport.details  # the parser starts a new list after the last packet: keep the one it filled
        sport.parse(bytearray(raw))
        details = current or details
        ours_steps.feed(raw)
    assert ours_steps.done
    assert (
        [(d.year, d.month, d.day, d.time_index, d.calories, d.steps, d.distance) for d in details]
        == [(q.year, q.month, q.day, q.index, q.calories, q.steps, q.distance_m) for q in ours_steps.quarters]
        == [(y, mo, d, i, c, s, m) for y, mo, d, i, c, s, m in quarters]
    )


async def test_the_bridge_publishes_the_rings_values_and_answers_measure_now() -> None:
    today = midnight()
    slots = min(3, int((time.time() - today.timestamp()) // 300))  # only slots already past
    values = [64, 66, 71][:slots] + [0] * (288 - slots)
    now = datetime.now(UTC)
    quarter = now.hour * 4 + now.minute // 15
    ring_side = RingEmulator(hr_days={int(today.timestamp()): values},
                             quarters=[(today.year, today.month, today.day, quarter, 12_340, 321, 250)])  # fmt: skip
    async with EmbeddedBroker(port=free_port()) as broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        async with Bus(BusOptions(url=url, name="watch")) as bus:
            await bus.subscribe("wb/v1/alice/ring/colmi-1/#", 1)
            async with ColmiRing("alice", "colmi-1", ring_side, DeviceConfig(url=url, model="colmi-r02")) as ring:
                seen: list[Any] = []

                async def until(pred: Any) -> Any:
                    async with asyncio.timeout(30):
                        for message in seen:
                            if pred(message):
                                return message
                        async for message in bus.messages():
                            seen.append(message)
                            if pred(message):
                                return message
                    raise AssertionError("not seen")

                birth = await until(lambda m: isinstance(m.data, DeviceState) and m.data.online)
                assert birth.data.capabilities == ["ring.measure_now", "ring.sync"]  # no haptic
                await until(lambda m: isinstance(m.data, RingBattery))
                await until(lambda m: isinstance(m.data, Steps))
                await asyncio.wait_for(ring.synced.wait(), 30)
                hrs = [m for m in seen if isinstance(m.data, HeartRate)]
                assert [(m.data.bpm, m.envelope.src_ts) for m in hrs] == [
                    (bpm, (int(today.timestamp()) + i * 300) * 1000) for i, bpm in enumerate(values[:slots])
                ]
                step = next(m for m in seen if isinstance(m.data, Steps))
                assert (step.data.steps, step.data.distance_m, step.data.calories_kcal) == (321, 250, 12.34)
                assert step.envelope.src_ts == int(today.timestamp() * 1000) + quarter * 900_000

                target = DeviceId("alice", Kind.RING, "colmi-1")
                await bus.publish(command_topic(target, "ring.measure_now"), make(MeasureNow(kind="hr")))
                spot = await until(lambda m: isinstance(m.data, HeartRate) and m.data.source == "spot")
                assert spot.data.bpm == 72
                ack = await until(lambda m: isinstance(m.data, Ack) and m.data.action == "ring.measure_now")
                assert (ack.data.status, ack.data.detail) == ("done", "hr 72 bpm")
                await bus.publish(command_topic(target, "ring.measure_now"), make(MeasureNow(kind="stress")))
                refused = await until(lambda m: isinstance(m.data, Ack) and m.data.status == "rejected")
                assert "hr and spo2" in refused.data.detail
    written = [p[0] for p in ring_side.written]
    assert written[:2] == [0x01, 0x03]  # the clock is set first, then the battery read
    assert 0x6A in written  # every real-time reading is stopped
