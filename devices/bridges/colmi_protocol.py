"""The Colmi R02 ring's BLE protocol, pure: 16-byte packets over the Nordic UART service.

Byte 0 is the command, bytes 1-14 the payload, byte 15 the checksum ``sum(bytes 0..14) & 0xFF``. The ring answers
on the TX characteristic's notifications with packets of the same command. Layouts follow the ``colmi-r02-client``
package (whose parsers the acceptance test runs on what our emulator sends) and Gadgetbridge's Colmi support:

* ``0x01`` set time: ``YY MM DD hh mm ss`` in BCD (UTC) and a language byte; the answer lists capabilities;
* ``0x03`` battery: answer ``level``, ``charging``;
* ``0x15`` heart-rate log of a day (request: the day's midnight, little-endian Unix seconds): answer packet 0
  ``00 size range``, packet 1 ``01`` + the day's timestamp + 9 rates, packets 2.. ``i`` + 13 rates; one rate per
  ``range`` (5) minutes, 0 = no sample; ``ff`` = no data;
* ``0x43`` steps of a day (request ``day-offset 0f 00 5f 01``): header ``f0 count 01`` (01: calories in tens), then
  one packet per quarter hour ``YY MM DD (BCD) quarter index count cal(le16) steps(le16) distance(le16)``;
  ``ff`` = no data;
* ``0x69`` real-time reading start (``01`` heart rate, ``03`` SpO2): answers ``kind error value`` about once a
  second (value 0 while the sensor locks); ``0x1E`` keeps it going; ``0x6A`` stops it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.errors import DeviceError

PACKET_LEN = 16
UART_SERVICE_UUID = "6E40FFF0-B5A3-F393-E0A9-E50E24DCCA9E"
UART_RX_CHAR_UUID = "6E400002-B5A3-F393-E0A9-E50E24DCCA9E"  # we write commands here
UART_TX_CHAR_UUID = "6E400003-B5A3-F393-E0A9-E50E24DCCA9E"  # the ring notifies answers here

CMD_SET_TIME = 0x01
CMD_BATTERY = 0x03
CMD_HR_LOG = 0x15
CMD_RT_CONTINUE = 0x1E
CMD_STEPS = 0x43
CMD_RT_START = 0x69
CMD_RT_STOP = 0x6A

RT_HR = 1
RT_SPO2 = 3
NO_DATA = 0xFF
STEPS_HEADER = 0xF0
HR_LOG_PACKETS = 24
HR_SLOTS = 288  # 5-minute slots of a day
QUARTER_S = 900
DAY_S = 86_400


class ColmiError(DeviceError):
    """A packet that is not a well-formed Colmi packet, or a ring that did not answer."""


def checksum(data: bytes | bytearray) -> int:
    """Sum of bytes 0..14, modulo 256."""
    return sum(data[:15]) & 0xFF


def make_packet(command: int, payload: bytes | bytearray = b"") -> bytes:
    """A 16-byte packet: command, payload padded with zeros, checksum."""
    if not 0 <= command <= 0xFF or len(payload) > 14:
        raise ColmiError(f"command {command} with {len(payload)} payload bytes does not fit a packet")
    body = bytes([command]) + bytes(payload) + bytes(14 - len(payload))
    return body + bytes([checksum(body)])


def check_packet(packet: bytes | bytearray) -> bytes:
    """The packet, if it has 16 bytes and a valid checksum.

    Raises:
        ColmiError: wrong length or checksum.
    """
    if len(packet) != PACKET_LEN:
        raise ColmiError(f"a Colmi packet has 16 bytes, got {len(packet)}: {bytes(packet).hex()}")
    if checksum(packet) != packet[15]:
        raise ColmiError(f"bad checksum {packet[15]:#04x} (expected {checksum(packet):#04x}): {bytes(packet).hex()}")
    return bytes(packet)


def to_bcd(n: int) -> int:
    """0..99 as binary-coded decimal."""
    if not 0 <= n <= 99:
        raise ColmiError(f"{n} does not fit one BCD byte")
    return ((n // 10) << 4) | (n % 10)


def from_bcd(b: int) -> int:
    """A binary-coded decimal byte as a number."""
    return ((b >> 4) & 0x0F) * 10 + (b & 0x0F)


def day_start_s(ts_s: float) -> int:
    """Midnight (UTC: the ring's clock is set in UTC) of the day of ``ts_s``."""
    return int(ts_s) - int(ts_s) % DAY_S


# --------------------------------------------------------------------------- requests


def set_time_packet(now_s: float, *, english: bool = True) -> bytes:
    """Set the ring's clock (UTC)."""
    t = datetime.fromtimestamp(int(now_s), UTC)
    fields = (t.year % 100, t.month, t.day, t.hour, t.minute, t.second)
    return make_packet(CMD_SET_TIME, bytes(to_bcd(v) for v in fields) + bytes([1 if english else 0]))


def battery_packet() -> bytes:
    """Ask for the battery level."""
    return make_packet(CMD_BATTERY)


def hr_log_packet(day_s: int) -> bytes:
    """Ask for the heart-rate log of the day starting at ``day_s`` (UTC midnight, Unix seconds)."""
    return make_packet(CMD_HR_LOG, struct.pack("<L", day_s))


def steps_packet(day_offset: int = 0) -> bytes:
    """Ask for the step quarters of today (0), yesterday (1), ..."""
    return make_packet(CMD_STEPS, bytes([day_offset, 0x0F, 0x00, 0x5F, 0x01]))


def realtime_start_packet(kind: int) -> bytes:
    """Start a real-time heart-rate (1) or SpO2 (3) reading."""
    return make_packet(CMD_RT_START, bytes([kind, 0x25 if kind == RT_SPO2 else 0x00]))


def realtime_continue_packet() -> bytes:
    """Keep a real-time reading going."""
    return make_packet(CMD_RT_CONTINUE, b"3")


def realtime_stop_packet(kind: int) -> bytes:
    """Stop a real-time reading."""
    return make_packet(CMD_RT_STOP, bytes([kind, 0, 0]))


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True, slots=True)
class Battery:
    """The ring's battery."""

    level_pct: int
    charging: bool


def parse_battery(packet: bytes) -> Battery:
    """A ``0x03`` answer."""
    if packet[0] != CMD_BATTERY:
        raise ColmiError(f"not a battery packet: {packet.hex()}")
    if packet[1] > 100:
        raise ColmiError(f"battery level {packet[1]} is over 100")
    return Battery(level_pct=packet[1], charging=bool(packet[2]))


@dataclass(frozen=True, slots=True)
class RealTime:
    """One real-time reading packet: ``value`` 0 while the sensor locks; ``error`` non-zero when it failed."""

    kind: int
    error: int
    value: int


def parse_realtime(packet: bytes) -> RealTime:
    """A ``0x69`` answer."""
    if packet[0] != CMD_RT_START:
        raise ColmiError(f"not a real-time packet: {packet.hex()}")
    return RealTime(kind=packet[1], error=packet[2], value=packet[3])


@dataclass(frozen=True, slots=True)
class HrLog:
    """A day's heart-rate log: ``rates[i]`` is the rate at ``day_s + i * range_min * 60`` (0: none)."""

    day_s: int
    range_min: int
    rates: list[int]

    def samples(self) -> list[tuple[int, int]]:
        """``(sample time in Unix seconds, bpm)`` of the slots that hold a rate."""
        step = self.range_min * 60
        return [(self.day_s + i * step, bpm) for i, bpm in enumerate(self.rates[:HR_SLOTS]) if bpm]


@dataclass(slots=True)
class HrLogAssembler:
    """Collects the packets of a ``0x15`` answer; :meth:`feed` returns the log at the end (no rates if the ring has
    none for that day), ``None`` while more packets are due."""

    size: int = 0
    range_min: int = 5
    day_s: int | None = None
    rates: list[int] = field(default_factory=list)

    def feed(self, packet: bytes) -> HrLog | None:
        """Take the next packet."""
        if packet[0] != CMD_HR_LOG:
            raise ColmiError(f"not a heart-rate log packet: {packet.hex()}")
        sub = packet[1]
        if sub == NO_DATA:
            return HrLog(day_s=0, range_min=5, rates=[])
        if sub == 0:
            self.size, self.range_min, self.day_s, self.rates = packet[2], packet[3] or 5, None, []
            return None
        if self.size == 0:
            raise ColmiError(f"heart-rate log packet {sub} before its header")
        if sub == 1:
            self.day_s = struct.unpack_from("<l", packet, 2)[0]
            self.rates.extend(packet[6:15])
        else:
            self.rates.extend(packet[2:15])
        if sub == self.size - 1:
            if self.day_s is None:
                raise ColmiError("heart-rate log ended without its timestamp packet")
            rates = (self.rates + [0] * HR_SLOTS)[:HR_SLOTS]
            return HrLog(day_s=self.day_s, range_min=self.range_min, rates=rates)
        return None


@dataclass(frozen=True, slots=True)
class StepQuarter:
    """Steps in one quarter hour (``quarter`` 0..95 of the UTC day)."""

    year: int
    month: int
    day: int
    quarter: int
    calories: int  # small calories (cal), as the ring counts them
    steps: int
    distance_m: int

    @property
    def start_s(self) -> int:
        """The quarter's start, Unix seconds."""
        return int(datetime(self.year, self.month, self.day, tzinfo=UTC).timestamp()) + self.quarter * QUARTER_S


@dataclass(slots=True)
class StepsAssembler:
    """Collects the packets of a ``0x43`` answer; :meth:`feed` returns the quarters at the end (empty if there are
    none), ``None`` while more packets are due."""

    tens: bool = False
    quarters: list[StepQuarter] = field(default_factory=list)

    def feed(self, packet: bytes) -> list[StepQuarter] | None:
        """Take the next packet."""
        if packet[0] != CMD_STEPS:
            raise ColmiError(f"not a steps packet: {packet.hex()}")
        if packet[1] == NO_DATA and not self.quarters:
            return []
        if packet[1] == STEPS_HEADER:
            self.tens, self.quarters = packet[3] == 1, []
            return None
        calories = packet[7] | (packet[8] << 8)
        try:
            quarter = StepQuarter(
                year=2000 + from_bcd(packet[1]),
                month=from_bcd(packet[2]),
                day=from_bcd(packet[3]),
                quarter=packet[4],
                calories=calories * 10 if self.tens else calories,
                steps=packet[9] | (packet[10] << 8),
                distance_m=packet[11] | (packet[12] << 8),
            )
            quarter.start_s  # noqa: B018  # a date that does not exist is refused here
        except ValueError as exc:
            raise ColmiError(f"steps packet with a bad date: {packet.hex()}") from exc
        self.quarters.append(quarter)
        if packet[5] >= packet[6] - 1:
            return list(self.quarters)
        return None
