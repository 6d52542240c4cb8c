"""The Colmi R02 bridge: a real ring (over BLE with bleak) or its emulator becomes a wearbus ring.

:class:`ColmiRing` is a :class:`~devices.sdk.Device` that talks to the ring through a :class:`RingLink` (write a
16-byte packet, receive notifications): :class:`BleakLink` for the hardware (``pip install 'wearbus[ble]'``),
:class:`~devices.bridges.colmi_emulator.ColmiRingEmulator` without a radio. On start it sets the ring's clock (UTC),
then syncs every ``sync_s``: battery (``ring.battery``), the day's heart-rate log (5-minute slots) and step quarters
(15 minutes) as one ``ring.batch`` whose items keep the ring's own sample times. ``ring.measure_now`` (``hr`` or
``spo2``) runs a real-time reading (``0x69`` start, read until a non-zero value, ``0x6A`` stop) and publishes it.
Its birth announces what the ring has: ``ring.measure_now`` and ``ring.sync``, no haptic motor.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from types import TracebackType
from typing import Any, Protocol, Self

from pydantic import ValidationError

from devices.bridges.colmi_protocol import (
    CMD_BATTERY,
    CMD_HR_LOG,
    CMD_RT_START,
    CMD_RT_STOP,
    CMD_SET_TIME,
    CMD_STEPS,
    DAY_S,
    QUARTER_S,
    RT_HR,
    RT_SPO2,
    UART_RX_CHAR_UUID,
    UART_TX_CHAR_UUID,
    Battery,
    ColmiError,
    HrLog,
    HrLogAssembler,
    StepQuarter,
    StepsAssembler,
    battery_packet,
    check_packet,
    day_start_s,
    hr_log_packet,
    parse_battery,
    parse_realtime,
    realtime_continue_packet,
    realtime_start_packet,
    realtime_stop_packet,
    set_time_packet,
    steps_packet,
)
from devices.sdk import ActionRejected, Device, DeviceConfig, on_action
from schemas.actions import MeasureNow, RingSync
from schemas.clock import Clock
from schemas.envelope import Envelope
from schemas.errors import ConfigError
from schemas.events import BatchItem, HeartRate, SpO2, Steps, SyncBatch
from schemas.events import RingBattery as RingBatteryEvent
from schemas.topics import Kind

ANSWER_S = 5.0  # a ring answers a command within a few hundred ms
MAX_STEPS = 10_000  # Steps.steps limit
RETRY_S = 60.0  # after a failed sync


class RingLink(Protocol):
    """A connection to the ring's Nordic UART service: write packets, receive its notifications."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def write(self, packet: bytes) -> None:
        """Write one 16-byte packet to the RX characteristic."""

    async def receive(self) -> bytes:
        """The next notification of the TX characteristic."""


class BleakLink:
    """The ring over Bluetooth LE, with bleak (imported when used; ``pip install 'wearbus[ble]'``)."""

    def __init__(self, address: str, *, timeout_s: float = 20.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._client: Any = None
        self._bleak: Any = None
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def __aenter__(self) -> Self:
        try:
            self._bleak = importlib.import_module("bleak")
        except ImportError as exc:
            raise ConfigError(
                "the colmi-ring bridge needs bleak for Bluetooth: pip install 'wearbus[ble]' (or use --emulate)"
            ) from exc
        self._client = self._bleak.BleakClient(self.address, timeout=self.timeout_s)
        await self._connect()
        return self

    async def _connect(self) -> None:
        try:
            await self._client.connect()
            await self._client.start_notify(UART_TX_CHAR_UUID, self._on_notify)
        except (self._bleak.exc.BleakError, TimeoutError, OSError) as exc:
            with contextlib.suppress(Exception):  # a half-open connection; nothing more to learn from it
                await self._client.disconnect()
            raise ColmiError(
                f"cannot connect to the ring {self.address}: {exc} (is it charged, near, and not paired to its app?)"
            ) from exc

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # the ring may already be gone; nothing else to release
                await self._client.disconnect()
            self._client = None

    def _on_notify(self, _char: Any, data: bytearray) -> None:
        self._inbox.put_nowait(bytes(data))

    async def write(self, packet: bytes) -> None:
        """Write without response, as the ring's app does."""
        if self._client is None:
            raise ColmiError(f"the ring {self.address} is not connected")
        if not self._client.is_connected:  # out of range for a while: connect again before the next command
            await self._connect()
        try:
            await self._client.write_gatt_char(UART_RX_CHAR_UUID, packet, response=False)
        except (self._bleak.exc.BleakError, OSError) as exc:
            raise ColmiError(f"cannot write to the ring {self.address}: {exc}") from exc

    async def receive(self) -> bytes:
        """The next notification."""
        return await self._inbox.get()


class ColmiRing(Device):
    """A Colmi R02 ring on the bus."""

    kind = Kind.RING

    def __init__(
        self,
        user: str,
        device: str,
        link: RingLink,
        config: DeviceConfig | None = None,
        clock: Clock | None = None,
        *,
        sync_s: float = 1800.0,
        answer_s: float = ANSWER_S,
    ) -> None:
        super().__init__(user, device, config, clock)
        self.link = link
        self.sync_s = sync_s
        self.answer_s = answer_s
        self.battery: Battery | None = None
        self.last_hr_s = 0
        self.last_quarter_s = 0
        self.syncs = 0
        self._queues: dict[int, asyncio.Queue[bytes]] = {
            c: asyncio.Queue() for c in (CMD_SET_TIME, CMD_BATTERY, CMD_HR_LOG, CMD_STEPS, CMD_RT_START, CMD_RT_STOP)
        }
        self._lock = asyncio.Lock()
        self._synced = asyncio.Event()

    @property
    def capabilities(self) -> list[str]:
        """What a Colmi R02 can do for the agent: spot measurements and a sync; it has no haptic motor."""
        return ["ring.measure_now", "ring.sync"]

    def battery_pct(self) -> float | None:
        """The last battery level the ring reported."""
        return float(self.battery.level_pct) if self.battery is not None else None

    # ------------------------------------------------------------------ link

    async def _read(self) -> None:
        while True:
            raw = await self.link.receive()
            try:
                packet = check_packet(raw)
            except ColmiError as exc:
                self.log.warning("ring_packet_refused", error=str(exc))
                continue
            queue = self._queues.get(packet[0])
            if queue is None:
                self.log.debug("ring_packet_unexpected", command=f"{packet[0]:#04x}")
                continue
            queue.put_nowait(packet)

    async def _next(self, command: int, timeout: float | None = None) -> bytes:
        timeout = self.answer_s if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._queues[command].get()
        except TimeoutError:
            raise ColmiError(f"the ring did not answer command {command:#04x} within {timeout:.0f} s") from None

    async def _request(self, packet: bytes) -> None:
        queue = self._queues[packet[0]]
        while not queue.empty():  # a late answer to an earlier request must not answer this one
            queue.get_nowait()
        await self.link.write(packet)

    async def set_time(self) -> None:
        """Set the ring's clock to now (UTC), as its app does on every connection."""
        async with self._lock:
            await self._request(set_time_packet(self.clock.now_ms() / 1000))
            await self._next(CMD_SET_TIME)

    async def read_battery(self) -> Battery:
        """Ask the ring for its battery."""
        async with self._lock:
            await self._request(battery_packet())
            return parse_battery(await self._next(CMD_BATTERY))

    async def read_hr_log(self, day_s: int) -> HrLog:
        """The heart-rate log of one (UTC) day."""
        async with self._lock:
            await self._request(hr_log_packet(day_s))
            assembler = HrLogAssembler()
            while True:
                log = assembler.feed(await self._next(CMD_HR_LOG))
                if log is not None:
                    return log

    async def read_steps(self, day_offset: int = 0) -> list[StepQuarter]:
        """The step quarters of today (0), yesterday (1), ..."""
        async with self._lock:
            await self._request(steps_packet(day_offset))
            assembler = StepsAssembler()
            while True:
                quarters = assembler.feed(await self._next(CMD_STEPS))
                if quarters is not None:
                    return quarters

    async def read_realtime(self, kind: int, timeout: float) -> int | None:
        """A real-time reading: start, read until a non-zero value (``None`` on an error or timeout), stop."""
        async with self._lock:
            await self._request(realtime_start_packet(kind))
            value: int | None = None
            deadline = time.monotonic() + timeout
            try:
                while value is None and time.monotonic() < deadline:
                    try:
                        reading = parse_realtime(await self._next(CMD_RT_START, min(2.0, timeout)))
                    except ColmiError:
                        await self.link.write(realtime_continue_packet())  # as the ring's app: nudge it on
                        continue
                    if reading.error:
                        self.log.info("ring_reading_failed", kind=kind, code=reading.error)
                        break
                    if reading.value:
                        value = reading.value
            finally:
                await self._request(realtime_stop_packet(kind))
                with contextlib.suppress(ColmiError):
                    await self._next(CMD_RT_STOP, 2.0)
            return value

    # ------------------------------------------------------------------ behaviour

    async def behave(self) -> None:
        """Read the ring, set its clock, then sync periodically; a ring that stops answering is retried."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read(), name=f"colmi[{self.ident}].read")
            while True:
                wait = self.sync_s
                try:
                    if self.syncs == 0:
                        await self.set_time()
                    await self.sync()
                except (ColmiError, ValidationError) as exc:  # a ring that answered nonsense is retried too
                    wait = min(self.sync_s, RETRY_S)  # out of range or busy: try again soon, not in half an hour
                    self.log.warning("ring_sync_failed", error=str(exc), retry_s=wait)
                await asyncio.sleep(wait)

    async def wait_synced(self, timeout: float = 10.0) -> None:
        """Wait until the first sync is published."""
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    async def sync(self) -> int:
        """Read battery, the day's HR log and step quarters; publish what is new. Returns the items sent."""
        battery = await self.read_battery()
        if battery != self.battery:
            self.battery = battery
            await self.publish_state()
        now_ms = self.clock.now_ms()
        items: list[BatchItem] = []
        today = day_start_s(now_ms / 1000)
        days = [today - DAY_S, today] if self.syncs == 0 else [today]  # the first sync also takes yesterday
        for day in days:
            for ts_s, bpm in (await self.read_hr_log(day)).samples():
                if ts_s > max(self.last_hr_s, 0) and 30 <= bpm <= 220:
                    items.append(HeartRate(bpm=bpm, source="periodic", src_ts=ts_s * 1000))
        for offset in (1, 0) if self.syncs == 0 else (0,):
            for q in await self.read_steps(offset):
                if q.start_s > self.last_quarter_s:
                    items.append(
                        Steps(
                            steps=min(MAX_STEPS, q.steps),
                            calories_kcal=round(min(2000.0, q.calories / 1000), 3),
                            distance_m=min(20_000, q.distance_m),
                            bucket_start=q.start_s * 1000,
                            bucket_s=QUARTER_S,
                            src_ts=q.start_s * 1000,
                        )
                    )
        if items:
            items.sort(key=lambda it: it.src_ts or 0)
            first = min(it.src_ts or now_ms for it in items)
            self.emit(SyncBatch(from_ts=first, to_ts=max(now_ms, first), items=items), src_ts=first)
        self.emit(RingBatteryEvent(level_pct=battery.level_pct, charging=battery.charging))  # after, as the ring's app
        self.last_hr_s = max([self.last_hr_s] + [(it.src_ts or 0) // 1000 for it in items if isinstance(it, HeartRate)])
        self.last_quarter_s = max(
            [self.last_quarter_s] + [(it.src_ts or 0) // 1000 for it in items if isinstance(it, Steps)]
        )
        self.syncs += 1
        self._synced.set()
        self.log.info("ring_synced", items=len(items))
        return len(items)

    # ------------------------------------------------------------------ actions

    @on_action(MeasureNow)
    async def measure_now(self, action: MeasureNow, envelope: Envelope[MeasureNow]) -> str:
        """A real-time heart-rate or SpO2 reading, published as a ``spot`` event; done when it is out."""
        if action.kind not in ("hr", "spo2"):
            raise ActionRejected(f"a Colmi R02 measures hr and spo2, not {action.kind}")
        kind = RT_HR if action.kind == "hr" else RT_SPO2
        try:
            value = await self.read_realtime(kind, float(action.timeout_s))
        except ColmiError as exc:
            raise ActionRejected(f"the ring did not measure: {exc}") from exc
        if value is None:
            raise ActionRejected(f"no {action.kind} reading within {action.timeout_s} s (is the ring on a finger?)")
        at = self.clock.now_ms()
        if kind == RT_HR:
            if not 30 <= value <= 220:
                raise ActionRejected(f"the ring read an implausible heart rate ({value})")
            self.emit(HeartRate(bpm=value, source="spot"), src_ts=at, corr=envelope.id)
        else:
            if not 70 <= value <= 100:
                raise ActionRejected(f"the ring read an implausible SpO2 ({value})")
            self.emit(SpO2(pct=value, source="spot"), src_ts=at, corr=envelope.id)
        return f"measured {action.kind}"

    @on_action(RingSync)
    async def sync_now(self, action: RingSync, envelope: Envelope[RingSync]) -> str:
        """Sync now rather than at the next period."""
        try:
            n = await self.sync()
        except ColmiError as exc:
            raise ActionRejected(f"the ring did not sync: {exc}") from exc
        return f"synced {n} samples"
