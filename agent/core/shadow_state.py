"""What the agent keeps of each device's settings shadow (plain dataclasses in the user's context, so they are
saved and restored with it). The logic is in :mod:`agent.core.settings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class DeviceSettings:
    """What the agent knows of one device's shadow (kept in the user's context, restored after a restart).

    Attributes:
        kind: the device kind.
        desired_version: the latest desired version seen or written.
        desired: its settings (key -> plain value).
        reported_version: the desired version the device last reported.
        reported: the settings it applied.
        rejected: keys it could not apply, with its reason.
        refused: why it refused a desired document as a whole (a stale version), if it did.
        supported: the keys its birth lists (``None``: unknown).
        told: the reported version whose rejections the user was told about.
        seen: the highest desired version that came back from the bus (the agent hears its own writes).
        written_at: when the agent last published a desired version it has not heard back yet.
        resends: how many times it published that version again.
    """

    kind: str
    desired_version: int = 0
    desired: dict[str, Any] = field(default_factory=dict)
    reported_version: int = 0
    reported: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    refused: str | None = None
    supported: list[str] | None = None
    told: int = 0
    seen: int = 0
    written_at: int = 0
    resends: int = 0

    def status(self) -> dict[str, str]:
        """Each desired key: ``applied``, ``pending`` (the device has not reported it yet) or ``rejected: why``."""
        out: dict[str, str] = {}
        for key, value in self.desired.items():
            if self.reported.get(key) == value:
                out[key] = "applied"
            elif key in self.rejected and self.reported_version >= self.desired_version:
                out[key] = f"rejected: {self.rejected[key]}"
            else:
                out[key] = "pending"
        return out


@dataclass(slots=True)
class PendingChange:
    """A change waiting for the user's yes: the documents to write, by device key (``kind/name``)."""

    docs: dict[str, dict[str, Any]]
    until: int
    lang: str


@dataclass(slots=True)
class SettingsState:
    """The settings part of a user's context."""

    devices: dict[str, DeviceSettings] = field(default_factory=dict)
    pending: PendingChange | None = None
