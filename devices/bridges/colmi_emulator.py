"""A byte-exact emulator of the Colmi R02 ring's GATT side, so the bridge runs (in CI, in a demo) without a radio.

It takes the packets the bridge writes to the ring's RX characteristic and notifies the packets a real ring answers
with (layouts in :mod:`devices.bridges.colmi_protocol`), from a small deterministic physiological model: a resting
heart rate that rises in the day and with walking, step quarters in the waking hours, SpO2 around 97 %, a battery
that drains. It has its own clock, set by ``0x01`` like the ring's; it only logs what lies in its past.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from broker.logs import get_logger
from devices.bridges.colmi_protocol import (
    CMD_BATTERY,
    CMD_HR_LOG,
    CMD_RT_START,
    CMD_RT_STOP,
    CMD_SET_TIME,
    CMD_STEPS,
    DAY_S,
    HR_LOG_PACKETS,
    NO_DATA,
    QUARTER_S,
    RT_HR,
    RT_SPO2,
    STEPS_HEADER,
    ColmiError,
    check_packet,
    day_start_s,
    from_bcd,
    make_packet,
    to_bcd,
)
from schemas.clock import Clock, WallClock
from schemas.tasks import TaskScope

log = get_logger("bridge.colmi.emulator")

HR_RANGE_MIN = 5


@dataclass(slots=True)
class Physiology:
    """What the emulated wearer's body does; every value is a pure function of the seed and the time."""

    seed: int = 0
    resting_bpm: float = 62.0
    spo2_pct: float = 97.0

    def _rng(self, *key: object) -> random.Random:
        return random.Random(f"{self.seed}:" + ":".join(map(str, key)))  # a model, not a secret

    def awake(self, ts_s: int) -> bool:
        """07:00-23:00 UTC."""
        return 7 <= (ts_s % DAY_S) // 3600 < 23

    def steps(self, quarter_start_s: int) -> int:
        """Steps taken in the quarter hour starting then (a walk in some waking quarters)."""
        if not self.awake(quarter_start_s):
            return 0
        r = self._rng("steps", quarter_start_s)
        return r.choice((0, 0, 40, 120, 300, 900, 1400))

    def hr(self, ts_s: int) -> int:
        """Heart rate at that time (bpm)."""
        r = self._rng("hr", ts_s // 60)
        day = 8.0 * math.sin(math.pi * ((ts_s % DAY_S) / DAY_S)) if self.awake(ts_s) else -4.0
        walking = self.steps(ts_s - ts_s % QUARTER_S) / 30.0
        return max(40, min(180, round(self.resting_bpm + day + walking + r.uniform(-3, 3))))

    def spo2(self, ts_s: int) -> int:
        """Blood oxygen (percent)."""
        return max(90, min(100, round(self.spo2_pct + self._rng("spo2", ts_s).uniform(-1.5, 1.5))))


class ColmiRingEmulator:
    """The ring, seen from the bridge: an async context manager implementing :class:`~devices.bridges.colmi.RingLink`.

    Args:
        body: the wearer.
        battery_pct: charge at start (drains ~1 % an hour of emulated time).
        clock: the ring's time base until the bridge sets its clock.
        lock_packets: real-time packets with value 0 before the sensor locks.
        interval_s: seconds between real-time packets (a real ring: about 1).
    """

    def __init__(
        self,
        body: Physiology | None = None,
        *,
        battery_pct: int = 76,
        clock: Clock | None = None,
        lock_packets: int = 3,
        interval_s: float = 0.05,
    ) -> None:
        self.body = body or Physiology()
        self.clock: Clock = clock or WallClock()
        self.battery_pct = battery_pct
        self.lock_packets = lock_packets
        self.interval_s = interval_s
        self.offset_s = 0.0
        self.received: list[bytes] = []
        self.sent: list[bytes] = []
        self.connected = False
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._streams: dict[int, asyncio.Task[None]] = {}  # the live stream of each kind (all in the scope)
        self._scope = TaskScope()

    # ------------------------------------------------------------------ RingLink

    async def __aenter__(self) -> Self:
        await self._scope.__aenter__()
        self.connected = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.connected = False
        self._streams.clear()
        await self._scope.__aexit__(exc_type, exc, tb)  # cancels and awaits every stream, stopped ones included

    async def write(self, packet: bytes) -> None:
        """The bridge wrote to the RX characteristic."""
        if not self.connected:
            raise ColmiError("the emulated ring is not connected")
        self.received.append(bytes(packet))
        try:
            check_packet(packet)
        except ColmiError as exc:
            log.info("ring_ignored_packet", error=str(exc))  # a real ring ignores a packet with a bad checksum
            return
        self.answer(packet)

    async def receive(self) -> bytes:
        """The next notification of the TX characteristic."""
        return await self._inbox.get()

    # ------------------------------------------------------------------ the ring

    def now_s(self) -> int:
        """The ring's clock, Unix seconds."""
        return int(self.clock.now_ms() / 1000 + self.offset_s)

    def _notify(self, command: int, payload: bytes = b"") -> None:
        packet = make_packet(command, payload)
        self.sent.append(packet)
        self._inbox.put_nowait(packet)

    def answer(self, packet: bytes) -> None:
        """Answer one well-formed command as the ring does."""
        match packet[0]:
            case 0x01:  # CMD_SET_TIME
                self._set_time(packet)
            case 0x03:  # CMD_BATTERY
                self._notify(CMD_BATTERY, bytes([self.battery_level(), 0]))
            case 0x15:  # CMD_HR_LOG
                self._hr_log(struct.unpack_from("<L", packet, 1)[0])
            case 0x43:  # CMD_STEPS
                self._steps(packet[1])
            case 0x69:  # CMD_RT_START
                self._start(packet[1])
            case 0x1E:  # CMD_RT_CONTINUE
                pass  # keeps a running reading going; ours runs until stopped
            case 0x6A:  # CMD_RT_STOP
                self._stop(packet[1])
            case other:
                log.debug("ring_unknown_command", command=f"{other:#04x}")

    def battery_level(self) -> int:
        """Charge, percent."""
        return max(1, self.battery_pct - int((self.now_s() % DAY_S) // 3600 // 4))

    def _set_time(self, packet: bytes) -> None:
        try:
            wanted = datetime(
                2000 + from_bcd(packet[1]),
                from_bcd(packet[2]),
                from_bcd(packet[3]),
                from_bcd(packet[4]),
                from_bcd(packet[5]),
                from_bcd(packet[6]),
                tzinfo=UTC,
            )
        except ValueError:
            log.info("ring_ignored_packet", error=f"set time with a bad date: {packet.hex()}")
            return
        self.offset_s = wanted.timestamp() - self.clock.now_ms() / 1000
        # Capabilities (colmi-r02-client's parse_set_time_packet): SpO2 and one-key check; manual heart rate.
        caps = bytearray(14)
        caps[3] = 0x02 | 0x10
        caps[11] = 0x01
        self._notify(CMD_SET_TIME, bytes(caps))

    def hr_rates(self, day_s: int) -> list[int]:
        """The 5-minute log of a day: the slots that ended before the ring's now hold a rate."""
        now = self.now_s()
        step = HR_RANGE_MIN * 60
        return [self.body.hr(day_s + i * step) if day_s + (i + 1) * step <= now else 0 for i in range(DAY_S // step)]

    def _hr_log(self, day_s: int) -> None:
        if day_s % DAY_S or day_s > self.now_s():
            self._notify(CMD_HR_LOG, bytes([NO_DATA]))
            return
        rates = self.hr_rates(day_s) + [0] * (9 + 13 * (HR_LOG_PACKETS - 2))
        self._notify(CMD_HR_LOG, bytes([0, HR_LOG_PACKETS, HR_RANGE_MIN]))
        self._notify(CMD_HR_LOG, bytes([1]) + struct.pack("<l", day_s) + bytes(rates[:9]))
        for i in range(2, HR_LOG_PACKETS):
            at = 9 + (i - 2) * 13
            self._notify(CMD_HR_LOG, bytes([i]) + bytes(rates[at : at + 13]))

    def step_quarters(self, day_s: int) -> list[tuple[int, int]]:
        """``(quarter, steps)`` of a day's quarters that ended before the ring's now and hold steps."""
        now = self.now_s()
        out = []
        for q in range(DAY_S // QUARTER_S):
            start = day_s + q * QUARTER_S
            steps = self.body.steps(start)
            if start + QUARTER_S <= now and steps:
                out.append((q, steps))
        return out

    def _steps(self, day_offset: int) -> None:
        day_s = day_start_s(self.now_s()) - day_offset * DAY_S
        quarters = self.step_quarters(day_s)
        if not quarters:
            self._notify(CMD_STEPS, bytes([NO_DATA]))
            return
        self._notify(CMD_STEPS, bytes([STEPS_HEADER, len(quarters), 1]))
        d = datetime.fromtimestamp(day_s, UTC)
        date = bytes([to_bcd(d.year % 100), to_bcd(d.month), to_bcd(d.day)])
        for i, (q, steps) in enumerate(quarters):
            calories_tens = round(steps * 40 / 10)  # ~40 cal a step, counted in tens
            distance = round(steps * 0.7)
            payload = date + bytes([q, i, len(quarters)]) + struct.pack("<HHH", calories_tens, steps, distance)
            self._notify(CMD_STEPS, payload)

    def _start(self, kind: int) -> None:
        if kind not in (RT_HR, RT_SPO2):
            self._notify(CMD_RT_START, bytes([kind, 1, 0]))  # an error code: the ring cannot measure that
            return
        old = self._streams.pop(kind, None)
        if old is not None:
            old.cancel()  # the scope awaits it
        self._streams[kind] = self._scope.start(self._stream(kind), name=f"colmi-emulator.stream[{kind}]")

    async def _stream(self, kind: int) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.interval_s)
            now = self.now_s()
            value = 0 if n < self.lock_packets else (self.body.hr(now) if kind == RT_HR else self.body.spo2(now))
            self._notify(CMD_RT_START, bytes([kind, 0, value]))
            n += 1

    def _stop(self, kind: int) -> None:
        task = self._streams.pop(kind, None)
        if task is not None:
            task.cancel()  # the scope awaits it
        self._notify(CMD_RT_STOP, bytes([kind]))
