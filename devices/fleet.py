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
from typing import Literal

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
from schemas.tasks import TaskScope, first_of
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


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform / not the main thread
            loop.add_signal_handler(sig, stop.set)


async def run(devices: Sequence[Emulator], *, forever: bool, settle_s: float = SETTLE_S) -> None:
    """Connect ``devices``, run them until every scenario is over (or for ever), then disconnect them cleanly.

    SIGTERM and SIGINT end the run the same clean way. A device whose scenario is over first waits (up to
    ``settle_s`` wall seconds) to connect and send what it still holds.

    Raises:
        DeviceError: a device's task failed.
    """
    stop = asyncio.Event()
    _install_signals(stop)
    entered: list[Emulator] = []
    failure: Exception | None = None
    try:
        # A signal ends the run wherever it is (connecting, running, settling): first_of cancels the rest.
        await first_of(_serve(devices, entered, forever=forever, settle_s=settle_s), _signalled(stop, entered),
                       name="fleet")  # fmt: skip
    except Exception as exc:  # noqa: BLE001 (a device task failed, with whatever it raised; it is wrapped below)
        failure = exc
    finally:
        # Together, not one after another: a fleet of thousands says goodbye in parallel.
        stopped = await asyncio.gather(*(d.__aexit__(None, None, None) for d in entered), return_exceptions=True)
        log.info("devices_stopped", n=len(entered))
    failure = failure or next((e for e in stopped if isinstance(e, Exception)), None)
    if failure is not None:
        raise DeviceError("an emulator failed") from failure


async def _serve(devices: Sequence[Emulator], entered: list[Emulator], *, forever: bool, settle_s: float) -> None:
    for i, device in enumerate(devices):
        await device.__aenter__()  # entered one by one (paced), closed together by run()
        entered.append(device)
        if (i + 1) % CONNECT_BATCH == 0:
            await asyncio.sleep(CONNECT_PAUSE_S)
    log.info("devices_started", n=len(entered), kind=devices[0].kind.value if devices else None)
    await _until_done(entered, forever=forever)
    # The scenario is over: what it produced still goes out (a device may not even have connected yet).
    await asyncio.gather(*(_settle(d, settle_s) for d in entered))


async def _signalled(stop: asyncio.Event, entered: list[Emulator]) -> None:
    await stop.wait()
    log.info("devices_stopping", n=len(entered), why="signal")


async def _settle(device: Emulator, within_s: float) -> None:
    with contextlib.suppress(BusConnectionError):
        await device.wait_connected(within_s)
        await device.drain(within_s)


async def _until_done(devices: Sequence[Emulator], *, forever: bool) -> None:
    """Run the devices until every scenario is over (never, if ``forever``); a device's failure comes out as itself."""
    async with TaskScope() as scope:  # leaving it cancels the runners (a runner only ever returns by failing)
        for d in devices:
            scope.start(d.run_forever(), name=f"run[{d.ident.client_id}]")
        if forever:
            await asyncio.Event().wait()  # until cancelled (a signal), or a runner's failure cancels this
        for d in devices:
            await d.finished.wait()


def build_fleet(spec: Spec, n: int, by: Literal["users", "ids"]) -> list[Emulator]:
    """``n`` emulators of one kind, each its own user (or device id), each seeded differently."""
    return [
        spec.build(user, device, spec.seed + i)
        for i, (user, device) in enumerate(fleet_ids(spec.user, spec.device, n, by))
    ]
