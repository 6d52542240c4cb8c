"""The Colmi R02 protocol (pure) and the ring's emulator, byte for byte, without a broker."""

from __future__ import annotations

import asyncio
import struct
import sys
import types
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.bridges.colmi import BleakLink
from devices.bridges.colmi_emulator import ColmiRingEmulator, Physiology
from devices.bridges.colmi_protocol import (
    CMD_BATTERY,
    CMD_HR_LOG,
    CMD_RT_START,
    CMD_STEPS,
    DAY_S,
    RT_HR,
    UART_RX_CHAR_UUID,
    UART_TX_CHAR_UUID,
    Battery,
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
from schemas.errors import ConfigError

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


class FakeBleakError(Exception):
    pass


class FakeBleakClient:
    """Stands in for bleak.BleakClient: records what the link does, as a ring would see it."""

    instances: ClassVar[list[FakeBleakClient]] = []

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.is_connected = False
        self.fail_connect = address == "00:00:00:00:00:00"
        self.callback: Callable[[object, bytearray], None] | None = None
        self.writes: list[tuple[str, bytes, bool]] = []
        self.connects = 0
        FakeBleakClient.instances.append(self)

    async def connect(self) -> None:
        if self.fail_connect:
            raise FakeBleakError("Device with address 00:00:00:00:00:00 was not found")
        self.connects += 1
        self.is_connected = True

    async def start_notify(self, uuid: str, callback: Callable[[object, bytearray], None]) -> None:
        assert uuid == UART_TX_CHAR_UUID
        self.callback = callback

    async def write_gatt_char(self, uuid: str, data: bytes, response: bool) -> None:
        self.writes.append((uuid, data, response))
        assert self.callback is not None
        self.callback(object(), bytearray(make_packet(CMD_BATTERY, bytes([55, 1]))))

    async def disconnect(self) -> None:
        self.is_connected = False


@pytest.fixture
def fake_bleak(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("bleak")
    module.BleakClient = FakeBleakClient  # type: ignore[attr-defined]
    module.exc = types.SimpleNamespace(BleakError=FakeBleakError)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bleak", module)


@pytest.mark.usefixtures("fake_bleak")
async def test_bleak_link_writes_rx_listens_tx_and_reconnects() -> None:
    async with BleakLink("AA:BB:CC:DD:EE:FF") as link:
        client = FakeBleakClient.instances[-1]
        await link.write(battery_packet())
        assert client.writes == [(UART_RX_CHAR_UUID, battery_packet(), False)]
        assert parse_battery(check_packet(await link.receive())) == Battery(level_pct=55, charging=True)
        client.is_connected = False  # the ring went out of range
        await link.write(battery_packet())
        assert client.connects == 2
    assert not client.is_connected


@pytest.mark.usefixtures("fake_bleak")
async def test_bleak_link_says_why_it_cannot_connect() -> None:
    with pytest.raises(ColmiError, match="cannot connect to the ring 00:00:00:00:00:00: Device with address"):
        async with BleakLink("00:00:00:00:00:00"):
            pass


async def test_without_bleak_the_error_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bleak", None)  # import bleak raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'wearbus\[ble\]'"):
        async with BleakLink("AA:BB:CC:DD:EE:FF"):
            pass


@given(st.lists(st.binary(min_size=15, max_size=15), min_size=1, max_size=30), st.sampled_from([0x15, 0x43, 0x03]))
def test_any_well_formed_packets_decode_or_raise_colmi_error(bodies: list[bytes], command: int) -> None:
    """What a broken or hostile ring sends is a ColmiError at worst, never another exception."""
    hr, steps = HrLogAssembler(), StepsAssembler()
    for body in bodies:
        packet = make_packet(command, body[1:])
        try:
            if command == 0x15:
                hr.feed(packet)
            elif command == 0x43:
                steps.feed(packet)
            else:
                parse_battery(packet)
        except ColmiError:
            pass
