"""Running emulators in a process: one device until its scenario ends, or a fleet of N for load tests.

Each device of a fleet has its own MQTT connection and runs at its real rates. Devices connect in small batches
(a thousand simultaneous CONNECTs is a storm no real fleet produces). SIGTERM or Ctrl-C shuts everything down
cleanly: each device publishes its offline state on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from broker.logs import get_logger
from devices.earphones import EarphonesEmulator
from devices.emulator import Emulator
from devices.glasses import GlassesEmulator
from devices.phone import PhoneEmulator
from devices.ring import RingEmulator
from devices.scenario_spec import Scenario
from devices.sdk import DeviceConfig
from schemas.clock import Clock
from schemas.errors import BusConnectionError, ConfigError, DeviceError
from schemas.topics import Kind

EMULATORS: dict[Kind, type[Emulator]] = {
    Kind.GLASSES: GlassesEmulator,
    Kind.RING: RingEmulator,
    Kind.EARPHONES: EarphonesEmulator,
    Kind.PHONE: PhoneEmulator,
}
CONNECT_BATCH = 50
CONNECT_PAUSE_S = 0.05
SETTLE_S = 10.0  # wall seconds a finished device waits to connect and send what it holds
log = get_logger("devices")


@dataclass(frozen=True, slots=True)
class Spec:
    """How to build the emulators of one run.

    Attributes:
        kind: which emulator.
        user: the user id (the fleet's base user).
        device: the device id (the fleet's base id).
        config: connection settings shared by every device.
        clock: the shared simulated clock.
        scenario: what the user does (None: the device just runs).
        seed: the base seed.
        start_ms: the simulated time the scenario starts.
        forever: keep running after the scenario's end.
    """

    kind: Kind
    user: str
    device: str
    config: DeviceConfig
    clock: Clock
    scenario: Scenario | None
    seed: int
    start_ms: int
    forever: bool

    def build(self, user: str | None = None, device: str | None = None, seed: int | None = None) -> Emulator:
        """One emulator (another user, id or seed for a fleet member)."""
        cls = EMULATORS[self.kind]
        return cls(
            user or self.user,
            device or self.device,
            self.config,
            self.clock,
            scenario=self.scenario,
            seed=self.seed if seed is None else seed,
            start_ms=self.start_ms,
            forever=self.forever,
        )


def fleet_ids(user: str, device: str, n: int, by: Literal["users", "ids"]) -> list[tuple[str, str]]:
    """``(user, device)`` of each fleet member: users ``{user}-{i}`` with the same id, or ids ``{id}-{i}``.

    Raises:
        ConfigError: ``n`` is not positive.
    """
    if n < 1:
        raise ConfigError(f"--fleet must be at least 1, got {n}")
    if by == "users":
        return [(f"{user}-{i}", device) for i in range(1, n + 1)]
    return [(user, f"{device}-{i}") for i in range(1, n + 1)]


def _install_signals(task: asyncio.Task[Any]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform / not the main thread
            loop.add_signal_handler(sig, task.cancel)


async def run(devices: Sequence[Emulator], *, forever: bool, settle_s: float = SETTLE_S) -> None:
    """Connect ``devices``, run them until every scenario is over (or for ever), then disconnect them cleanly.

    SIGTERM and SIGINT end the run the same clean way. A device whose scenario is over first waits (up to
    ``settle_s`` wall seconds) to connect and send what it still holds.

    Raises:
        DeviceError: a device's task failed.
    """
    task = asyncio.current_task()
    if task is not None:
        _install_signals(task)
    entered: list[Emulator] = []
    stopped: list[BaseException | None] = []
    try:
        for i, device in enumerate(devices):
            await device.__aenter__()
            entered.append(device)
            if (i + 1) % CONNECT_BATCH == 0:
                await asyncio.sleep(CONNECT_PAUSE_S)
        log.info("devices_started", n=len(entered), kind=devices[0].kind.value if devices else None)
        await _until_done(entered, forever=forever)
        # The scenario is over: what it produced still goes out (a device may not even have connected yet).
        await asyncio.gather(*(_settle(d, settle_s) for d in entered))
    except asyncio.CancelledError:  # a signal, or a device's task failed (its exit below says which)
        log.info("devices_stopping", n=len(entered), why="cancelled")
    finally:
        stopped = await asyncio.gather(*(d.__aexit__(None, None, None) for d in entered), return_exceptions=True)
        log.info("devices_stopped", n=len(entered))
    failed = next((e for e in stopped if isinstance(e, Exception)), None)
    if failed is not None:  # a device's task failed: it cancelled the run, and comes out of the device's exit
        raise DeviceError("an emulator failed") from failed


async def _settle(device: Emulator, within_s: float) -> None:
    with contextlib.suppress(BusConnectionError):
        await device.wait_connected(within_s)
        await device.drain(within_s)


async def _until_done(devices: Sequence[Emulator], *, forever: bool) -> None:
    runners = [asyncio.create_task(d.run_forever(), name=f"run[{d.ident.client_id}]") for d in devices]
    watch: list[asyncio.Future[Any]] = list(runners)
    if not forever:
        watch.append(asyncio.ensure_future(asyncio.gather(*(d.finished.wait() for d in devices))))
    try:
        # A runner only ever returns by failing; the gather completes when every scenario is over.
        done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
        for fut in done:
            if fut in runners and not fut.cancelled() and fut.exception() is not None:
                raise DeviceError("an emulator failed") from fut.exception()
    finally:
        for fut in watch:
            fut.cancel()
        for fut in watch:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fut


def build_fleet(spec: Spec, n: int, by: Literal["users", "ids"]) -> list[Emulator]:
    """``n`` emulators of one kind, each its own user (or device id), each seeded differently."""
    return [
        spec.build(user, device, spec.seed + i)
        for i, (user, device) in enumerate(fleet_ids(spec.user, spec.device, n, by))
    ]
