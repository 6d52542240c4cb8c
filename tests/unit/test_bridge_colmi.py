"""The Colmi R02 protocol (pure) and the ring's emulator, byte for byte, without a broker."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.bridges.colmi_emulator import ColmiRingEmulator, Physiology
from devices.bridges.colmi_protocol import (
    CMD_HR_LOG,
    CMD_RT_START,
    CMD_STEPS,
    DAY_S,
    RT_HR,
    ColmiError,
    HrLogAssembler,
    StepsAssembler,
    battery_packet,
    check_packet,
    checksum,
    from_bcd,
    hr_log_packet,
    make_packet,
    parse_battery,
    parse_realtime,
    realtime_start_packet,
    realtime_stop_packet,
    set_time_packet,
    steps_packet,
    to_bcd,
)
from schemas.clock import ManualClock

NOON = int(datetime(2026, 3, 14, 12, 0, tzinfo=UTC).timestamp())


def test_packets_match_the_documented_bytes() -> None:
    # colmi-r02-client's documented packets: battery request, start HR, stop HR, today's steps
    assert battery_packet() == bytes([3] + [0] * 14 + [3])
    assert realtime_start_packet(RT_HR) == make_packet(0x69, b"\x01\x00")
    assert realtime_stop_packet(RT_HR) == make_packet(0x6A, b"\x01\x00\x00")
    assert steps_packet() == make_packet(0x43, b"\x00\x0f\x00\x5f\x01")
    # the battery answer example from its docstring: 64 %, not charging
    example = b"\x03@\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00C"
    assert parse_battery(check_packet(example)).level_pct == 64
    assert set_time_packet(NOON)[:8] == bytes([0x01, 0x26, 0x03, 0x14, 0x12, 0x00, 0x00, 0x01])


@given(st.integers(0, 255), st.binary(max_size=14))
def test_every_packet_is_16_bytes_with_its_checksum(command: int, payload: bytes) -> None:
    packet = make_packet(command, payload)
    assert len(packet) == 16
    assert packet[15] == sum(packet[:15]) & 0xFF == checksum(packet)
    assert check_packet(packet) == packet


@given(st.binary(min_size=16, max_size=16))
def test_a_bad_checksum_or_length_is_refused(raw: bytes) -> None:
    if sum(raw[:15]) & 0xFF != raw[15]:
        with pytest.raises(ColmiError, match="checksum"):
            check_packet(raw)
    with pytest.raises(ColmiError, match="16 bytes"):
        check_packet(raw[:15])


@given(st.integers(0, 99))
def test_bcd_round_trips(n: int) -> None:
    assert from_bcd(to_bcd(n)) == n


def test_steps_example_packets_decode() -> None:
    # the example answer from colmi-r02-client's SportDetailParser docstring
    example = [
        b"C\xf0\x05\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x009",
        b"C#\x08\x13\x10\x00\x05\xc8\x000\x00\x1b\x00\x00\x00\xa9",
        b"C#\x08\x13\x14\x01\x05\xb6\x18\xaa\x04i\x03\x00\x00\x83",
        b"C#\x08\x13\x18\x02\x058\x04\xe1\x00\x95\x00\x00\x00R",
        b"C#\x08\x13\x1c\x03\x05\x05\x02l\x00H\x00\x00\x00`",
        b"C#\x08\x13L\x04\x05\xef\x01c\x00D\x00\x00\x00m",
    ]
    assembler = StepsAssembler()
    results = [assembler.feed(check_packet(p)) for p in example]
    assert results[:-1] == [None] * 5
    quarters = results[-1]
    assert quarters is not None
    assert [(q.quarter, q.steps, q.calories, q.distance_m) for q in quarters][:2] == [
        (16, 48, 2000, 27),
        (20, 1194, 63260, 873),
    ]
    assert quarters[0].start_s == int(datetime(2023, 8, 13, 4, 0, tzinfo=UTC).timestamp())


async def talk(ring: ColmiRingEmulator, packet: bytes, n: int) -> list[bytes]:
    await ring.write(packet)
    return [await asyncio.wait_for(ring.receive(), 2) for _ in range(n)]


async def test_emulator_answers_like_the_ring() -> None:
    clock = ManualClock(NOON * 1000)
    async with ColmiRingEmulator(Physiology(seed=3), clock=clock, battery_pct=80) as ring:
        (battery,) = await talk(ring, battery_packet(), 1)
        assert parse_battery(battery).level_pct == ring.battery_level()

        day = NOON - NOON % DAY_S
        packets = await talk(ring, hr_log_packet(day), 24)
        assembler = HrLogAssembler()
        logs = [assembler.feed(p) for p in packets]
        log = logs[-1]
        assert logs[:-1] == [None] * 23
        assert log is not None
        assert log.day_s == day
        assert log.range_min == 5
        assert log.rates == ring.hr_rates(day)
        assert len(log.samples()) == 12 * 12  # the slots that ended before noon
        assert struct.unpack_from("<l", packets[1], 2)[0] == day

        (none,) = await talk(ring, hr_log_packet(day + DAY_S), 1)
        assert none[:2] == bytes([CMD_HR_LOG, 0xFF])  # tomorrow has no log

        expected = ring.step_quarters(day)
        packets = await talk(ring, steps_packet(), 1 + len(expected))
        assembler_s = StepsAssembler()
        quarters = [assembler_s.feed(p) for p in packets][-1]
        assert quarters is not None
        assert [(q.quarter, q.steps) for q in quarters] == expected
        assert all(p[0] == CMD_STEPS for p in packets)

        await ring.write(realtime_start_packet(RT_HR))
        readings = [parse_realtime(await asyncio.wait_for(ring.receive(), 2)) for _ in range(5)]
        assert [r.value for r in readings[:3]] == [0, 0, 0]
        assert readings[3].value == ring.body.hr(NOON)
        await ring.write(realtime_stop_packet(RT_HR))


async def test_emulator_sets_its_clock_and_ignores_a_bad_checksum() -> None:
    clock = ManualClock(NOON * 1000)
    async with ColmiRingEmulator(clock=clock) as ring:
        (caps,) = await talk(ring, set_time_packet(NOON + 3600), 1)
        assert caps[0] == 0x01
        assert ring.now_s() == NOON + 3600
        bad = bytearray(battery_packet())
        bad[15] ^= 0xFF
        await ring.write(bytes(bad))
        assert ring.sent == [caps]  # no answer to a corrupt packet
        (err,) = await talk(ring, realtime_start_packet(7), 1)
        reading = parse_realtime(err)
        assert reading.kind == 7
        assert reading.error != 0
        assert err[0] == CMD_RT_START
