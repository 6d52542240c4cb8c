"""The Colmi R02 ring bridge: the ring's BLE protocol to a wearbus ring, and a byte-exact emulator of the ring.

The ring speaks 16-byte packets over a Nordic-UART-like GATT service (write to RX, notifications on TX): byte 0 is
the command, bytes 1-14 its data, byte 15 the checksum (the sum of bytes 0-14, & 0xFF). Layouts as the
``colmi-r02-client`` package and Gadgetbridge's Colmi support read them:

=======  =====================================  =========================================================
command  request data                           ring's answer (and the wearbus event the bridge makes)
=======  =====================================  =========================================================
0x01     set time: BCD yy mm dd hh mm ss, lang  capabilities (ignored)
0x03     -                                      level %, charging (``ring.battery``)
0x69     start real time: kind 1 HR / 3 SpO2    kind, error, value (0 while locking) (``ring.hr`` /
                                                ``ring.spo2``, source ``spot``: ``ring.measure_now``)
0x6A     stop real time: kind                   -
0x15     heart-rate log of the day: LE u32 s    0: count, range (min); 1: LE u32 day start + 9 values;
                                                2..: 13 values each; 288 five-minute slots, 0 = none
                                                (``ring.hr`` source ``periodic``, at the slot's time)
0x43     steps of a day: offset 0 = today       0xF0 header (byte 3 = 1: calories x10), then per quarter
                                                hour: BCD yy mm dd, index, n, of, calories, steps,
                                                distance (LE u16) (``ring.steps``, 15-min buckets)
=======  =====================================  =========================================================

:class:`ColmiRing` is the wearbus ring (its birth announces ``ring.measure_now`` and ``ring.sync``: no haptic);
it talks through a :class:`RingLink`: :class:`BleakLink` for a real ring (``pip install 'wearbus[ble]'``) or
:class:`RingEmulator`, the ring's GATT side byte for byte, so the bridge runs in CI without a radio.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from devices.sdk import ActionRejected, Device, DeviceConfig, on_action
from schemas.actions import MeasureNow, RingSync
from schemas.envelope import Envelope
from schemas.errors import DeviceError
from schemas.events import HeartRate, RingBattery, SpO2, Steps
from schemas.topics import Kind

UART_SERVICE_UUID = "6E40FFF0-B5A3-F393-E0A9-E50E24DCCA9E"
UART_RX_CHAR_UUID = "6E400002-B5A3-F393-E0A9-E50E24DCCA9E"  # we write here
UART_TX_CHAR_UUID = "6E400003-B5A3-F393-E0A9-E50E24DCCA9E"  # the ring notifies here

CMD_SET_TIME = 0x01
CMD_BATTERY = 0x03
CMD_HR_LOG = 0x15
CMD_STEPS = 0x43
CMD_REAL_TIME = 0x69
CMD_REAL_TIME_STOP = 0x6A
KIND_HR, KIND_SPO2 = 1, 3
HR_SLOTS = 288  # five-minute slots of a day
SLOT_S = 300
QUARTER_S = 900


class RingProtocolError(DeviceError):
    """A packet that is not the ring's (length, checksum, command, layout)."""


def checksum(packet: bytes) -> int:
    """The ring's checksum: the sum of the first 15 bytes, & 0xFF."""
    return sum(packet[:15]) & 0xFF


def packet(command: int, data: bytes = b"") -> bytes:
    """A 16-byte packet: command, data (at most 14 bytes, zero padded), checksum."""
    if not 0 <= command <= 0xFF or len(data) > 14:
        raise RingProtocolError(f"command {command} with {len(data)} bytes of data does not fit a packet")
    body = bytes([command]) + data + bytes(14 - len(data))
    return body + bytes([checksum(body)])


def check(raw: bytes) -> bytes:
    """``raw`` if it is a well-formed packet."""
    if len(raw) != 16:
        raise RingProtocolError(f"a packet is 16 bytes, not {len(raw)}: {raw.hex()}")
    if checksum(raw) != raw[15]:
        raise RingProtocolError(f"bad checksum {raw[15]:#04x} (expected {checksum(raw):#04x}): {raw.hex()}")
    return raw


def bcd(n: int) -> int:
    """A number 0-99 as binary-coded decimal."""
    return (n // 10) << 4 | n % 10


def from_bcd(b: int) -> int:
    """Binary-coded decimal to a number."""
    return (b >> 4) * 10 + (b & 0x0F)


def set_time_packet(at: datetime) -> bytes:
    """Set the ring's clock (UTC, as the bridge keeps it), English."""
    utc = at.astimezone(UTC)
    fields = (utc.year % 2000, utc.month, utc.day, utc.hour, utc.minute, utc.second)
    return packet(CMD_SET_TIME, bytes(bcd(f) for f in fields) + b"\x01")


def hr_log_packet(day_start_s: int) -> bytes:
    """Ask for the heart-rate log of the day starting at ``day_start_s`` (UTC midnight)."""
    return packet(CMD_HR_LOG, struct.pack("<L", day_start_s))


def steps_packet(day_offset: int = 0) -> bytes:
    """Ask for the steps of today (0) or ``day_offset`` days ago."""
    return packet(CMD_STEPS, bytes([day_offset, 0x0F, 0x00, 0x5F, 0x01]))


def real_time_packet(kind: int) -> bytes:
    """Start a real-time reading (1 heart rate, 3 SpO2)."""
    return packet(CMD_REAL_TIME, bytes([kind, 0x00]) if kind == KIND_HR else bytes([kind, 0x25]))


def stop_packet(kind: int) -> bytes:
    """Stop a real-time reading."""
    return packet(CMD_REAL_TIME_STOP, bytes([kind, 0x00, 0x00]))


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class Battery:
    """The ring's battery."""

    level_pct: int
    charging: bool


def parse_battery(raw: bytes) -> Battery:
    """0x03: level, charging."""
    return Battery(raw[1], bool(raw[2]))


@dataclass(frozen=True, slots=True)
class Reading:
    """One real-time packet: kind (1 HR, 3 SpO2), error code (0: fine) and value (0 while it locks)."""

    kind: int
    error: int
    value: int


def parse_reading(raw: bytes) -> Reading:
    """0x69: kind, error, value."""
    return Reading(raw[1], raw[2], raw[3])


@dataclass(slots=True)
class HrLog:
    """A day's heart-rate log being received (0x15, several packets)."""

    size: int = 0
    range_min: int = 5
    day_start_s: int | None = None
    values: list[int] = field(default_factory=list)
    done: bool = False
    empty: bool = False

    def feed(self, raw: bytes) -> None:
        """Take the next packet of the log."""
        sub = raw[1]
        if sub == 0xFF:
            self.done = self.empty = True
        elif sub == 0:
            self.size, self.range_min = raw[2], raw[3] or 5
            if self.size < 2:
                self.done = self.empty = True
        elif sub == 1:
            self.day_start_s = struct.unpack_from("<L", raw, 2)[0]
            self.values = list(raw[6:15])
        else:
            self.values.extend(raw[2:15])
            self.done = sub >= self.size - 1

    def samples(self) -> list[tuple[int, int]]:
        """(bpm, sample time in ms) of every slot with a reading."""
        if self.day_start_s is None:
            return []
        step = (self.range_min or 5) * 60
        return [(bpm, (self.day_start_s + i * step) * 1000) for i, bpm in enumerate(self.values[:HR_SLOTS]) if bpm]


@dataclass(frozen=True, slots=True)
class Quarter:
    """Steps of one quarter hour (0x43)."""

    year: int
    month: int
    day: int
    index: int  # quarter hour of the day, 0-95
    calories: int
    steps: int
    distance_m: int

    @property
    def start_ms(self) -> int:
        """The bucket's start, ms (the ring's clock is kept in UTC)."""
        return int(datetime(self.year, self.month, self.day, tzinfo=UTC).timestamp() * 1000) + self.index * 900_000


@dataclass(slots=True)
class StepsLog:
    """A day's steps being received (0x43, several packets)."""

    calories_x10: bool = False
    quarters: list[Quarter] = field(default_factory=list)
    header: bool = False
    done: bool = False

    def feed(self, raw: bytes) -> None:
        """Take the next packet."""
        if not self.header and raw[1] == 0xFF:
            self.done = True
        elif not self.header and raw[1] == 0xF0:
            self.header, self.calories_x10 = True, raw[3] == 1
        else:
            calories = raw[7] | raw[8] << 8
            self.quarters.append(
                Quarter(from_bcd(raw[1]) + 2000, from_bcd(raw[2]), from_bcd(raw[3]), raw[4],
                        calories * 10 if self.calories_x10 else calories, raw[9] | raw[10] << 8,
                        raw[11] | raw[12] << 8)
            )  # fmt: skip
            self.done = raw[5] >= raw[6] - 1


# ---------------------------------------------------------------------------------------------- links


class RingLink(Protocol):
    """What the bridge asks of the BLE link: connect, write a packet, and the packets the ring notifies."""

    received: asyncio.Queue[bytes]

    async def connect(self) -> None:
        """Connect and subscribe to the ring's notifications."""
        ...

    async def write(self, data: bytes) -> None:
        """Write one packet to the ring."""
        ...

    async def disconnect(self) -> None:
        """Disconnect."""
        ...


class BleakLink:
    """A real ring over Bluetooth LE (bleak; ``pip install 'wearbus[ble]'``)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.received: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
        self._client: Any = None

    async def connect(self) -> None:
        """Connect to the ring and start its notifications."""
        try:
            from bleak import BleakClient  # noqa: PLC0415 (an optional extra)
            from bleak.exc import BleakError  # noqa: PLC0415
        except ImportError as exc:
            raise DeviceError("the Colmi bridge needs bleak: pip install 'wearbus[ble]'") from exc
        self._client = BleakClient(self.address)
        try:
            await self._client.connect()
            await self._client.start_notify(UART_TX_CHAR_UUID, self._notified)
        except (BleakError, OSError, TimeoutError) as exc:
            raise DeviceError(f"cannot reach the ring at {self.address}: {exc}") from exc

    def _notified(self, _char: object, data: bytearray) -> None:
        if self.received.full():
            self.received.get_nowait()
        self.received.put_nowait(bytes(data))

    async def write(self, data: bytes) -> None:
        """Write a packet (without response, as the ring's app does)."""
        await self._client.write_gatt_char(UART_RX_CHAR_UUID, data, response=False)

    async def disconnect(self) -> None:
        """Disconnect."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.disconnect()


@dataclass(slots=True)
class RingEmulator:
    """The ring's GATT side, byte for byte: answers every packet the bridge writes as a Colmi R02 would.

    Attributes:
        battery: level and charging.
        hr_days: heart-rate logs by UTC day start (s): 288 five-minute values, 0 where the ring has none.
        quarters: the step buckets it stored (``(year, month, day, index, calories, steps, distance)``).
        live_hr: what a real-time heart-rate reading locks on.
        live_spo2: what a real-time SpO2 reading locks on.
        locking: packets with value 0 before a real-time reading locks.
    """

    battery: Battery = Battery(64, False)
    hr_days: dict[int, list[int]] = field(default_factory=dict)
    quarters: list[tuple[int, int, int, int, int, int, int]] = field(default_factory=list)
    live_hr: int = 72
    live_spo2: int = 97
    locking: int = 2
    received: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    written: list[bytes] = field(default_factory=list)
    clock_set: datetime | None = None
    connected: bool = False

    async def connect(self) -> None:
        """Nothing to do: the emulated ring is always in range."""
        self.connected = True

    async def disconnect(self) -> None:
        """Forget the connection."""
        self.connected = False

    async def write(self, data: bytes) -> None:
        """Take a packet from the bridge and notify the ring's answers."""
        raw = check(bytes(data))
        self.written.append(raw)
        for answer in self.answer(raw):
            self.received.put_nowait(answer)

    def answer(self, raw: bytes) -> list[bytes]:
        """The ring's notifications in answer to one packet."""
        command = raw[0]
        if command == CMD_SET_TIME:
            y, mo, d, h, mi, s = (from_bcd(b) for b in raw[1:7])
            self.clock_set = datetime(2000 + y, mo, d, h, mi, s, tzinfo=UTC)
            return [packet(CMD_SET_TIME, bytes([0, 0, 0, 0b0001_0010]))]  # temperature no; SpO2, one-key check
        if command == CMD_BATTERY:
            return [packet(CMD_BATTERY, bytes([self.battery.level_pct, int(self.battery.charging)]))]
        if command == CMD_REAL_TIME:
            kind = raw[1]
            value = self.live_hr if kind == KIND_HR else self.live_spo2 if kind == KIND_SPO2 else 0
            error = 0 if value else 1
            return [packet(CMD_REAL_TIME, bytes([kind, error, 0])) for _ in range(self.locking)] + [
                packet(CMD_REAL_TIME, bytes([kind, error, value]))
            ]
        if command == CMD_REAL_TIME_STOP:
            return [packet(CMD_REAL_TIME_STOP, bytes([raw[1]]))]
        if command == CMD_HR_LOG:
            return self._hr_log(struct.unpack_from("<L", raw, 1)[0])
        if command == CMD_STEPS:
            return self._steps(raw[1])
        return []  # the ring ignores what it does not know

    def _hr_log(self, day_start_s: int) -> list[bytes]:
        values = self.hr_days.get(day_start_s)
        if values is None:
            return [packet(CMD_HR_LOG, b"\xff")]
        values = (values + [0] * HR_SLOTS)[:HR_SLOTS]
        size = 2 + -(-(HR_SLOTS - 9) // 13)  # header, first (9 values), then 13 a packet: 24
        out = [packet(CMD_HR_LOG, bytes([0, size, 5])), packet(CMD_HR_LOG, b"\x01" + struct.pack("<L", day_start_s)
                                                                + bytes(values[:9]))]  # fmt: skip
        rest = values[9:] + [0] * (13 * (size - 2) - (HR_SLOTS - 9))
        for n in range(2, size):
            chunk = rest[(n - 2) * 13 : (n - 1) * 13]
            out.append(packet(CMD_HR_LOG, bytes([n, *chunk])))
        return out

    def _steps(self, day_offset: int) -> list[bytes]:
        day = datetime.fromtimestamp(time.time() - day_offset * 86_400, UTC)
        wanted = [q for q in self.quarters if (q[0], q[1], q[2]) == (day.year, day.month, day.day)]
        if not wanted:
            return [packet(CMD_STEPS, b"\xff")]
        out = [packet(CMD_STEPS, bytes([0xF0, len(wanted), 1]))]  # calories in tens
        for i, (y, mo, d, index, calories, steps, distance) in enumerate(wanted):
            data = bytes([bcd(y % 2000), bcd(mo), bcd(d), index, i, len(wanted)])
            data += struct.pack("<HHH", calories // 10, steps, distance)
            out.append(packet(CMD_STEPS, data))
        return out


# ---------------------------------------------------------------------------------------------- the wearbus ring


class ColmiRing(Device):
    """A Colmi R02 on the bus: its logs and readings as ring events with the ring's own sample times."""

    kind: ClassVar[Kind] = Kind.RING

    def __init__(
        self, user: str, device: str, link: RingLink, config: DeviceConfig | None = None, *, sync_s: float = 1800.0
    ) -> None:
        super().__init__(user, device, config)
        self.link = link
        self.sync_s = sync_s
        self.level: int | None = None
        self.synced = asyncio.Event()
        self._lock = asyncio.Lock()
        self._sent_hr: set[int] = set()  # sample times already published (a log is read again at every sync)
        self._sent_steps: set[int] = set()

    @property
    def capabilities(self) -> list[str]:
        """What a Colmi R02 can do for the agent: spot readings and syncs. No haptic motor."""
        return ["ring.measure_now", "ring.sync"]

    def battery_pct(self) -> float | None:
        """The last level the ring reported."""
        return float(self.level) if self.level is not None else None

    async def behave(self) -> None:
        """Connect, set the ring's clock, then sync its logs now and every ``sync_s``."""
        await self.link.connect()
        try:
            await self._exchange(set_time_packet(datetime.now(UTC)), CMD_SET_TIME, lambda _r: True)
            while True:
                await self.sync()
                await asyncio.sleep(self.sync_s)
        finally:
            await self.link.disconnect()

    async def _exchange(self, request: bytes, command: int, done: Callable[[bytes], bool], timeout: float = 10.0
                        ) -> list[bytes]:  # fmt: skip
        """Write ``request`` and collect the ring's packets of ``command`` until ``done`` says the answer is whole."""
        async with self._lock:
            while not self.link.received.empty():  # nothing stale from an earlier, abandoned exchange
                self.link.received.get_nowait()
            await self.link.write(request)
            out: list[bytes] = []
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.link.received.get()
                    try:
                        check(raw)
                    except RingProtocolError as exc:
                        self.log.warning("ring_packet_refused", error=str(exc))
                        continue
                    if raw[0] != command:
                        continue
                    out.append(raw)
                    if done(raw):
                        return out

    async def sync(self) -> int:
        """Read the battery, today's heart-rate log and steps; publish what is new. How many events."""
        n = 0
        (raw,) = await self._exchange(packet(CMD_BATTERY), CMD_BATTERY, lambda _r: True)
        battery = parse_battery(raw)
        self.level = battery.level_pct
        self.emit(RingBattery(level_pct=min(100, battery.level_pct), charging=battery.charging))
        await self.publish_state()
        now = datetime.now(UTC)
        day_start = int(datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp())
        log = HrLog()

        def hr_done(raw: bytes) -> bool:
            log.feed(raw)
            return log.done

        await self._exchange(hr_log_packet(day_start), CMD_HR_LOG, hr_done)
        for bpm, at in log.samples():
            if at not in self._sent_hr and 30 <= bpm <= 220:
                self._sent_hr.add(at)
                self.emit(HeartRate(bpm=bpm, source="periodic", src_ts=at), src_ts=at)
                n += 1
        steps = StepsLog()

        def steps_done(raw: bytes) -> bool:
            steps.feed(raw)
            return steps.done

        await self._exchange(steps_packet(0), CMD_STEPS, steps_done)
        for q in steps.quarters:
            at = q.start_ms
            if at in self._sent_steps or q.steps > 10_000:
                continue
            self._sent_steps.add(at)
            kcal = min(2000.0, q.calories / 1000)  # the ring counts small calories
            body = Steps(steps=q.steps, calories_kcal=kcal, distance_m=min(20_000, q.distance_m), bucket_start=at,
                         bucket_s=QUARTER_S, src_ts=at)  # fmt: skip
            self.emit(body, src_ts=at)
            n += 1
        self.synced.set()
        return n + 1

    async def read_now(self, kind: int, timeout_s: float) -> int:
        """A real-time reading: start it, wait for the value to lock, stop it."""

        def locked(raw: bytes) -> bool:
            reading = parse_reading(raw)
            return reading.error != 0 or reading.value > 0

        try:
            answers = await self._exchange(real_time_packet(kind), CMD_REAL_TIME, locked, timeout=timeout_s)
        finally:
            with contextlib.suppress(TimeoutError):
                await self._exchange(stop_packet(kind), CMD_REAL_TIME_STOP, lambda _r: True, timeout=5)
        reading = parse_reading(answers[-1])
        if reading.error:
            raise ActionRejected(f"the ring could not read (error {reading.error}): is it worn?")
        return reading.value

    @on_action(MeasureNow)
    async def measure_now(self, action: MeasureNow, _envelope: Envelope[MeasureNow]) -> str:
        """``ring.measure_now``: a real-time heart-rate or SpO2 reading, published as a spot event."""
        if action.kind not in {"hr", "spo2"}:
            raise ActionRejected(f"a Colmi R02 measures hr and spo2, not {action.kind}")
        kind = KIND_HR if action.kind == "hr" else KIND_SPO2
        try:
            value = await self.read_now(kind, action.timeout_s)
        except TimeoutError:
            raise ActionRejected(f"no {action.kind} reading locked within {action.timeout_s} s") from None
        at = time.time_ns() // 1_000_000
        if kind == KIND_HR:
            self.emit(HeartRate(bpm=value, source="spot", src_ts=at), src_ts=at)
            return f"hr {value} bpm"
        self.emit(SpO2(pct=value, source="spot", src_ts=at), src_ts=at)
        return f"spo2 {value} %"

    @on_action(RingSync)
    async def sync_now(self, _action: RingSync, _envelope: Envelope[RingSync]) -> str:
        """``ring.sync``: read the ring's logs now."""
        return f"synced {await self.sync()} events"


async def serve(user: str, device: str, link: RingLink, *, wearbus_url: str, password: str | None = None) -> None:
    """The bridge process: the ring behind ``link`` as ``user/ring/device``."""
    config = DeviceConfig(url=wearbus_url, password=password, firmware="colmi-bridge 0.1", model="colmi-r02")
    async with ColmiRing(user, device, link, config) as ring:
        await ring.run_forever()
