"""Device settings as a shadow: the desired and reported documents, their delta, and the rules of a write.

::

    wb/v1/{user}/{kind}/{device}/shadow/desired    agent / apps / `wearbus shadow set` -> device, retained
    wb/v1/{user}/{kind}/{device}/shadow/reported   device -> all, retained

``desired`` holds what the user (or an app) wants, ``reported`` what the device applied, each with a version: every
write of ``desired`` carries the next version, and the device reports the version it last processed. The *delta* is
what desired holds that reported does not. A write based on an older version than the current one is stale and is
refused (:class:`~schemas.errors.StaleVersion`); a key the device's birth does not list in ``settings`` is refused at
``set`` time (:class:`~schemas.errors.SettingNotSupported`). A device that cannot apply a value reports why in
``rejected``; a desired document older than what it applied is refused in ``refused``.

This module is pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.actions import DeviceState
from schemas.envelope import Message
from schemas.errors import SettingNotSupported, StaleVersion, ValidationFailed
from schemas.events import Body, Unit
from schemas.topics import Channel, DeviceId, Kind

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
MAX_VERSION = 2**53  # exact in JSON numbers as well as msgpack
Version = Annotated[int, Field(ge=0, le=MAX_VERSION, description="the document's version; every write adds one")]
RingStream = Literal["hr", "hrv", "spo2", "skin_temp", "steps", "sleep"]
RING_STREAMS: tuple[str, ...] = ("hr", "hrv", "spo2", "skin_temp", "steps", "sleep")
DisplayLang = Literal["en", "zh"]


class QuietHours(BaseModel):
    """A daily quiet period in the user's local time; ``end`` before ``start`` spans midnight (22:00-07:00)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(pattern=_HHMM.pattern, description="HH:MM, local time")
    end: str = Field(pattern=_HHMM.pattern, description="HH:MM, local time")

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours must not start and end at the same time")
        return self

    @staticmethod
    def _minute(hhmm: str) -> int:
        h, m = hhmm.split(":")
        return int(h) * 60 + int(m)

    def contains(self, minute_of_day: int) -> bool:
        """Whether a local minute of the day (0..1439) is inside the quiet period."""
        start, end = self._minute(self.start), self._minute(self.end)
        if start < end:
            return start <= minute_of_day < end
        return minute_of_day >= start or minute_of_day < end

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


class _Settings(Body):
    """Settings every device has. ``None`` means "no preference" (desired) or "not applied" (reported)."""

    quiet_hours: QuietHours | None = Field(default=None, description="no haptics, earcons or cards meanwhile")


class RingSettings(_Settings):
    """A ring's settings."""

    kind: Literal["ring"] = "ring"
    hr_interval_s: int | None = Field(
        default=None, ge=60, le=15300, description="periodic heart-rate sampling interval, s (1-255 min)"
    )
    haptic_strength: Unit | None = Field(default=None, description="haptic motor strength, 0..1")
    streams: list[RingStream] | None = Field(
        default=None, max_length=len(RING_STREAMS), description="which sensor streams the ring samples and syncs"
    )

    @model_validator(mode="after")
    def _unique_sorted(self) -> RingSettings:
        if self.streams is not None:
            object.__setattr__(self, "streams", sorted(set(self.streams)))
        return self


class GlassesSettings(_Settings):
    """A pair of glasses' settings."""

    kind: Literal["glasses"] = "glasses"
    brightness: Unit | None = Field(default=None, description="display brightness, 0..1")
    display_lang: DisplayLang | None = Field(default=None, description="the display's language (en, zh)")


class EarphonesSettings(_Settings):
    """A pair of earphones' settings."""

    kind: Literal["earphones"] = "earphones"
    wake_word: str | None = Field(default=None, min_length=1, max_length=32, description="the wake word")
    volume: Unit | None = Field(default=None, description="output volume, 0..1")


class PhoneSettings(_Settings):
    """A phone's settings."""

    kind: Literal["phone"] = "phone"


Settings = Annotated[RingSettings | GlassesSettings | EarphonesSettings | PhoneSettings, Field(discriminator="kind")]
SETTINGS: dict[Kind, type[RingSettings | GlassesSettings | EarphonesSettings | PhoneSettings]] = {
    Kind.RING: RingSettings,
    Kind.GLASSES: GlassesSettings,
    Kind.EARPHONES: EarphonesSettings,
    Kind.PHONE: PhoneSettings,
}


def setting_keys(kind: Kind) -> list[str]:
    """The setting keys of a device kind."""
    return sorted(k for k in SETTINGS[kind].model_fields if k not in {"kind"})


class ShadowDesired(Body):
    """The settings wanted for one device (retained on ``.../shadow/desired``)."""

    type: Literal["shadow.desired"] = "shadow.desired"
    version: Version
    settings: Settings
    by: str = Field(default="", max_length=64, description="who wrote it: agent, cli, an app")


class Refusal(BaseModel):
    """A desired document the device refused as a whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Version
    reason: str = Field(max_length=500)


class ShadowReported(Body):
    """What a device applied (retained on ``.../shadow/reported``).

    Attributes:
        version: the desired version the device last processed (0: none yet).
        settings: every setting as applied now.
        rejected: keys of that version the device could not apply, with the reason (the desired value stays).
        refused: the last desired document refused as a whole (a stale version).
    """

    type: Literal["shadow.reported"] = "shadow.reported"
    version: Version
    settings: Settings
    rejected: dict[str, str] = Field(default_factory=dict, max_length=32)
    refused: Refusal | None = None


def values(settings: BaseModel) -> dict[str, Any]:
    """The settings that are set (not ``None``), as plain data, without the kind."""
    return {k: v for k, v in settings.model_dump(mode="json").items() if v is not None and k != "kind"}


def delta(desired: ShadowDesired | None, reported: ShadowReported | None) -> dict[str, Any]:
    """What desired holds that reported does not (key -> desired value)."""
    if desired is None:
        return {}
    want = values(desired.settings)
    have = values(reported.settings) if reported is not None else {}
    return {k: v for k, v in want.items() if have.get(k) != v}


def pending(desired: ShadowDesired | None, reported: ShadowReported | None) -> dict[str, Any]:
    """The delta the device has not yet answered: keys it neither applied nor rejected at the desired version."""
    d = delta(desired, reported)
    if desired is None or reported is None or reported.version < desired.version:
        return d
    return {k: v for k, v in d.items() if k not in reported.rejected}


def parse_value(key: str, text: str) -> Any:
    """A command-line value: ``null``, JSON (numbers, lists, objects), ``HH:MM-HH:MM`` for quiet hours, else text;
    a comma list for ``streams``."""
    text = text.strip()
    if key == "quiet_hours" and re.fullmatch(r"\d{1,2}:\d{2}-\d{1,2}:\d{2}", text):
        start, end = text.split("-")
        return {"start": start.zfill(5), "end": end.zfill(5)}
    if key == "streams" and not text.startswith("["):
        return [s.strip() for s in text.split(",") if s.strip()] if text not in {"", "null"} else None
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(kind: Kind, pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs to a patch for a device kind, checked key by key.

    Raises:
        ValidationFailed: a pair without ``=``, an unknown key (naming the known ones), or a value out of range.
    """
    known = setting_keys(kind)
    patch: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValidationFailed(f"expected KEY=VALUE, got {pair!r}")
        if key not in known:
            raise ValidationFailed(f"a {kind} has no setting {key!r}; its settings: {', '.join(known)}", field=key)
        patch[key] = parse_value(key, text)
    check_patch(kind, patch)
    return patch


def check_patch(kind: Kind, patch: dict[str, Any]) -> None:
    """Validate a patch against the kind's model.

    Raises:
        ValidationFailed: naming the field and the reason.
    """
    try:
        SETTINGS[kind].model_validate({k: v for k, v in patch.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise ValidationFailed(f"{first['msg']} (got {first.get('input')!r})", field=field) from exc


def merge(
    kind: Kind,
    current: ShadowDesired | None,
    patch: dict[str, Any],
    *,
    by: str = "",
    expected_version: int | None = None,
    supported: list[str] | None = None,
    device: str = "",
) -> ShadowDesired:
    """The next desired document: ``current`` with ``patch`` applied (a ``None`` value clears a key) and the version
    one higher.

    Args:
        kind: the device kind (the settings model).
        current: the retained desired document, if any.
        patch: key -> value.
        by: who writes it.
        expected_version: the version the writer based its change on (optimistic concurrency); ``None``: the current.
        supported: the setting keys the device's birth says it can apply; ``None``: unknown (no birth yet).
        device: for messages.

    Raises:
        StaleVersion: ``expected_version`` is older than the current version.
        SettingNotSupported: a key the device cannot apply.
        ValidationFailed: a value out of range or an unknown key.
    """
    have = current.version if current is not None else 0
    if expected_version is not None and expected_version != have:
        raise StaleVersion(
            f"stale write to {device or kind}: based on version {expected_version}, but desired is at {have}; "
            "read it again (wearbus shadow get) and retry",
            field="version",
        )
    if supported is not None:
        unsupported = sorted(k for k, v in patch.items() if k not in supported and v is not None)
        if unsupported:
            raise SettingNotSupported(
                f"{device or kind} cannot apply {', '.join(unsupported)}: its birth lists only "
                f"{', '.join(sorted(supported)) or 'no settings'}",
                field=unsupported[0],
            )
    known = set(setting_keys(kind))
    for key in patch:
        if key not in known:
            raise ValidationFailed(f"a {kind} has no setting {key!r}; its settings: {', '.join(sorted(known))}")
    base = values(current.settings) if current is not None else {}
    base.update(patch)
    check_patch(kind, base)
    settings = SETTINGS[kind].model_validate({k: v for k, v in base.items() if v is not None})
    return ShadowDesired(version=have + 1, settings=settings, by=by)


def check_desired(desired: ShadowDesired, applied_version: int) -> str | None:
    """Why a device refuses a desired document as a whole (``None``: it does not): an older version than it applied."""
    if desired.version < applied_version:
        return f"stale: desired version {desired.version} is older than the applied version {applied_version}"
    return None


def describe(desired: ShadowDesired | None, reported: ShadowReported | None) -> dict[str, Any]:
    """Desired vs reported for people and tools: both versions and settings, the delta, rejections, refusal."""
    return {
        "desired": {"version": desired.version, "by": desired.by, "settings": values(desired.settings)}
        if desired is not None
        else None,
        "reported": {"version": reported.version, "settings": values(reported.settings)}
        if reported is not None
        else None,
        "delta": delta(desired, reported),
        "pending": pending(desired, reported),
        "rejected": dict(reported.rejected) if reported is not None else {},
        "refused": reported.refused.model_dump() if reported is not None and reported.refused is not None else None,
    }


@dataclass(slots=True)
class DeviceShadow:
    """What is known of one device's settings: both documents and its birth."""

    desired: ShadowDesired | None = None
    reported: ShadowReported | None = None
    state: DeviceState | None = None

    @property
    def supported(self) -> list[str] | None:
        """The setting keys its birth lists (``None``: no birth seen, or a device that does not say)."""
        return self.state.settings if self.state is not None else None

    def describe(self) -> dict[str, Any]:
        """See :func:`describe`, plus whether the device is online."""
        out = describe(self.desired, self.reported)
        out["online"] = self.state.online if self.state is not None else None
        return out


@dataclass(slots=True)
class ShadowBook:
    """The shadows of many devices, fed with decoded messages (state, desired, reported); pure, no I/O."""

    devices: dict[DeviceId, DeviceShadow] = field(default_factory=dict)

    def update(self, message: Message) -> DeviceId | None:
        """Take one message; returns the device it was about (``None``: not a shadow or state message)."""
        where = message.where
        body = message.data
        if where.channel not in {Channel.STATE, Channel.DESIRED, Channel.REPORTED} or where.kind is None:
            return None
        dev = where.device_id
        entry = self.devices.setdefault(dev, DeviceShadow())
        if isinstance(body, DeviceState):
            entry.state = body
        elif isinstance(body, ShadowDesired):
            entry.desired = body
        elif isinstance(body, ShadowReported):
            entry.reported = body
        return dev

    def get(self, dev: DeviceId) -> DeviceShadow:
        """One device's shadow (empty when nothing was seen)."""
        return self.devices.get(dev, DeviceShadow())

    def of_user(self, user: str) -> dict[DeviceId, DeviceShadow]:
        """Every device of one user, sorted by kind and id."""
        mine = [(d, s) for d, s in self.devices.items() if d.user == user]
        return dict(sorted(mine, key=lambda p: (p[0].kind.value, p[0].device)))
