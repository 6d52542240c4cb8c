"""A user's devices as the agent sees them: worn, charged, online; and which one to use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.core.context.local_time import MAX_DEVICES

if TYPE_CHECKING:
    from agent.core.context.state import UserContext


@dataclass(slots=True)
class DeviceInfo:
    """One device of the user as the agent sees it.

    Attributes:
        kind: glasses, ring, earphones or phone.
        name: the device id of its topic.
        online: from its retained state (birth/Will) and from any event it sends.
        worn: glasses donned, ring on finger, an earbud in (None: never reported).
        battery: percent (glasses: overall level; earphones: the lower bud).
        charging: on the charger.
        in_case: glasses folded into their case.
        last_seen: when it last sent anything (agent time).
        cells: glasses only, the present swappable cells: slot -> percent.
        ears: earphones only, the buds in the ear.
        actions: the actions its birth listed (``None``: it listed none, so all of its kind's are assumed).
    """

    kind: str
    name: str
    online: bool = False
    worn: bool | None = None
    battery: float | None = None
    charging: bool = False
    in_case: bool = False
    last_seen: int = 0
    cells: dict[str, float] | None = None
    ears: tuple[str, ...] = ()
    actions: tuple[str, ...] | None = None

    def accepts(self, action: str) -> bool:
        """Whether the device can carry out ``action`` (a Colmi ring has no haptic motor)."""
        return self.actions is None or action in self.actions

    @property
    def usable(self) -> bool:
        """Online, worn (or not known to be off) and not flat or in its case."""
        charged = self.battery is None or self.battery > 2.0 or self.charging
        return self.online and self.worn is not False and charged and not self.in_case


def device(ctx: UserContext, kind: str, name: str) -> DeviceInfo:
    """The device record, created on first sight (the least recently seen is dropped past a small cap)."""
    key = f"{kind}/{name}"
    dev = ctx.devices.get(key)
    if dev is None:
        if len(ctx.devices) >= MAX_DEVICES:
            oldest = min(ctx.devices, key=lambda k: ctx.devices[k].last_seen)
            del ctx.devices[oldest]
        dev = DeviceInfo(kind=kind, name=name)
        ctx.devices[key] = dev
    return dev


def primary(ctx: UserContext, kind: str) -> DeviceInfo | None:
    """The device of ``kind`` to talk to: the one the user last spoke to while it is online, else an online one
    first, then the most recently seen."""
    spoke = ctx.talk.spoke_on.get(kind)
    if spoke is not None:
        heard = ctx.devices.get(f"{kind}/{spoke}")
        if heard is not None and heard.online:
            return heard
    best: DeviceInfo | None = None
    for dev in ctx.devices.values():
        if dev.kind != kind:
            continue
        if best is None or (dev.online, dev.last_seen) > (best.online, best.last_seen):
            best = dev
    return best


def usable(ctx: UserContext, kind: str) -> DeviceInfo | None:
    """The primary device of ``kind`` if it is usable now."""
    dev = primary(ctx, kind)
    return dev if dev is not None and dev.usable else None


def online(ctx: UserContext, kind: str) -> DeviceInfo | None:
    """The primary device of ``kind`` if it is online."""
    dev = primary(ctx, kind)
    return dev if dev is not None and dev.online else None


def set_cells(dev: DeviceInfo, cells: list[tuple[str, float, bool]]) -> None:
    """Record the glasses' swappable cells (only the present ones are kept)."""
    dev.cells = {slot: pct for slot, pct, present in cells if present} or None
