"""The scenario file's schema: a user's profile, their devices' starting state, and a timeline of steps.

Validated by pydantic here; :mod:`devices.scenario` loads a file into it (errors with file, line and step), and
:mod:`devices.scenario_plan` turns the person-wide steps into what the user does and where they are over time.
See docs/scenarios.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from devices.models import PLACES, Activity, OverrideKind, PersonalBaseline
from devices.models.physiology import OVERRIDE_RANGES
from schemas.errors import ConfigError, TopicError
from schemas.geo import Place
from schemas.profile import UserProfile
from schemas.topics import Kind, check_name

#: Scenarios shipped with the package, by name (``--scenario day_in_the_life``).
BUILTIN = ("day_in_the_life",)
_CLOCK = re.compile(r"^\+?(\d{1,3}):([0-5]\d):([0-5]\d)$")
_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")
PLACE_RADIUS_M = 150.0  # a position this close to a known place is "at" it (the agent uses the same radius)


# --------------------------------------------------------------------------- times


def parse_offset(value: object) -> int:
    """A time offset or duration in ms: ``"+01:30:00"`` / ``"01:30:00"`` (hours:minutes:seconds) or seconds.

    YAML reads an unquoted ``1:30:00`` as the base-60 integer 5400, i.e. seconds, which agrees.

    Raises:
        ValueError: anything else, or a negative number.
    """
    if isinstance(value, bool):
        raise ValueError("a time must be hours:minutes:seconds like +01:30:00, or seconds")  # noqa: TRY004
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a time cannot be negative, got {value}")
        return round(value * 1000)
    if isinstance(value, str):
        m = _CLOCK.match(value.strip())
        if m is None:
            raise ValueError(f"{value!r} is not a time like +01:30:00 (hours:minutes:seconds)")
        h, mi, s = (int(g) for g in m.groups())
        return ((h * 60 + mi) * 60 + s) * 1000
    raise ValueError("a time must be hours:minutes:seconds like +01:30:00, or seconds")


def format_offset(ms: int) -> str:
    """``+H:MM:SS`` for an offset in ms."""
    s = ms // 1000
    return f"+{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


Offset = Annotated[int, BeforeValidator(parse_offset)]


def guess_lang(text: str) -> str:
    """``zh`` when the text has CJK characters, else ``en``."""
    return "zh" if _CJK.search(text) else "en"


# --------------------------------------------------------------------------- profile (read by the agent)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- the person and the devices


class PersonSpec(_Model):
    """The emulated person: their physiology (unset values: model defaults), first activity and place.

    ``history`` is how long the person has already been doing ``activity`` when the scenario starts (a night's
    sleep, say): the ring's store holds that stretch, and a ``force`` at ``+00:00:00`` covers it too.
    """

    resting_hr_bpm: float | None = Field(default=None, ge=40, le=100)
    hrv_rmssd_ms: float | None = Field(default=None, ge=10, le=150)
    spo2_pct: float | None = Field(default=None, ge=90, le=100)
    skin_temp_c: float | None = Field(default=None, ge=28, le=36)
    resp_brpm: float | None = Field(default=None, ge=8, le=25)
    max_hr_bpm: float | None = Field(default=None, ge=140, le=220)
    activity: Activity = Activity.RESTING
    place: str | tuple[float, float] = "home"
    history: Offset = Field(default=0, le=12 * 3_600_000)

    def baseline(self) -> PersonalBaseline:
        """The physiology model's baseline."""
        given = {
            k: v
            for k, v in self.model_dump(exclude={"activity", "place", "history"}).items()
            if v is not None and k in PersonalBaseline.__dataclass_fields__
        }
        return PersonalBaseline(**given)


class GlassesSpec(_Model):
    """The glasses at the start: worn, and the two cells' charge."""

    worn: bool = True
    left_pct: float = Field(default=100.0, ge=0, le=100)
    right_pct: float = Field(default=100.0, ge=0, le=100)


class RingSpec(_Model):
    """The ring at the start, and how it syncs."""

    worn: bool = True
    battery_pct: float = Field(default=100.0, ge=0, le=100)
    sync_interval_min: float = Field(default=30.0, ge=1, le=480)
    sync_jitter_min: float = Field(default=5.0, ge=0, le=60)
    sync_during_sleep: bool = True
    spo2_mode: Literal["off", "night", "continuous"] = "night"


class EarphonesSpec(_Model):
    """The earphones at the start."""

    in_ear: bool = True
    left_pct: float = Field(default=100.0, ge=0, le=100)
    right_pct: float = Field(default=100.0, ge=0, le=100)
    case_pct: float = Field(default=100.0, ge=0, le=100)
    anc: Literal["off", "transparency", "adaptive", "anc"] = "off"


class ChaosSpec(_Model):
    """How task status webhooks misbehave; statuses in ``spare`` are always delivered on time, once."""

    dup_p: float = Field(default=0.1, ge=0, le=1)
    late_p: float = Field(default=0.1, ge=0, le=1)
    reorder_p: float = Field(default=0.1, ge=0, le=1)
    spare: list[str] = Field(default_factory=lambda: ["arriving", "near_customer"])


class FailureSpec(_Model):
    """Make the ``nth`` task of a skill fail the given way."""

    skill: Literal["order_food", "hail_ride"]
    nth: int = Field(default=1, ge=1)
    fail: Literal["driver_canceled", "no_drivers_available", "rider_canceled", "cancelled"]

    @model_validator(mode="after")
    def _fits_skill(self) -> FailureSpec:
        food = self.fail == "cancelled"
        if food != (self.skill == "order_food"):
            raise ValueError(f"{self.skill} cannot fail with {self.fail!r}")
        return self


class PhoneSpec(_Model):
    """The phone at the start, and how its apps' tasks behave."""

    battery_pct: float = Field(default=100.0, ge=0, le=100)
    task_speed: Literal["realistic", "fast", "demo"] = "realistic"
    chaos: ChaosSpec = Field(default_factory=ChaosSpec)
    failures: list[FailureSpec] = Field(default_factory=list)


class DevicesSpec(_Model):
    """Every device's starting state."""

    glasses: GlassesSpec = Field(default_factory=GlassesSpec)
    ring: RingSpec = Field(default_factory=RingSpec)
    earphones: EarphonesSpec = Field(default_factory=EarphonesSpec)
    phone: PhoneSpec = Field(default_factory=PhoneSpec)


class CalendarSpec(_Model):
    """An event in the user's calendar (the phone announces the next one)."""

    title: str = Field(min_length=1, max_length=200)
    at: Offset
    place: str | tuple[float, float] | None = None
    location: str | None = Field(default=None, max_length=200)


# --------------------------------------------------------------------------- steps

PlaceRef = str | tuple[float, float]
Side = Literal["left", "right"]
TOUCHES = {
    Kind.GLASSES: frozenset(
        {"tap", "double_tap", "triple_tap", "long_press", "swipe_forward", "swipe_back", "swipe_up", "swipe_down"}
    ),
    Kind.EARPHONES: frozenset({"tap", "double_tap", "triple_tap", "press", "long_press", "swipe_up", "swipe_down"}),
}


class Go(_Model):
    """The user goes somewhere (the phone moves along the route; the activity follows the mode)."""

    to: PlaceRef
    mode: Literal["walk", "run", "bike", "drive"] = "walk"
    via: list[PlaceRef] = Field(default_factory=list, max_length=20)
    navigate: bool = False
    then: Activity = Activity.RESTING


class Force(_Model):
    """Force a vital for a while, so a proactive rule has something to catch (one kind per step)."""

    hr: float | None = None
    hr_offset: float | None = None
    hrv: float | None = None
    spo2: float | None = None
    resp: float | None = None
    skin_temp_offset: float | None = None
    for_: Offset = Field(alias="for", gt=0)

    @model_validator(mode="after")
    def _one(self) -> Force:
        given = [k for k in OverrideKind if getattr(self, k.value) is not None]
        if len(given) != 1:
            raise ValueError(f"force exactly one of {', '.join(k.value for k in OverrideKind)} (got {len(given)})")
        kind, value = given[0], getattr(self, given[0].value)
        lo, hi = OVERRIDE_RANGES[kind]
        if not lo <= value <= hi:
            raise ValueError(f"{kind.value} must be within {lo}..{hi}, got {value}")
        return self

    @property
    def kind(self) -> OverrideKind:
        """Which vital is forced."""
        return next(k for k in OverrideKind if getattr(self, k.value) is not None)

    @property
    def value(self) -> float:
        """The forced value (or offset)."""
        value: float = getattr(self, self.kind.value)
        return value


class NotifySpec(_Model):
    """A notification that arrives on the phone."""

    app: str = Field(max_length=64)
    title: str = Field(max_length=200)
    body: str = Field(default="", max_length=1000)
    category: Literal["message", "call", "social", "promo", "system", "task"] = "message"


RespondOn = Literal["card", "text", "nav", "teleprompter", "caption", "speak", "prompt", "haptic"]
RespondDo = Literal[
    "click",
    "tap",
    "double_tap",
    "swipe_forward",
    "swipe_back",
    "nod",
    "shake",
    "say",
    "swap_cell",
    "confirm",
    "deny",
    "press",
    "pinch",
    "double_pinch",
    "long_press",
]
_RESPOND_KIND: Mapping[str, frozenset[Kind]] = {
    "card": frozenset({Kind.GLASSES}),
    "text": frozenset({Kind.GLASSES}),
    "nav": frozenset({Kind.GLASSES}),
    "teleprompter": frozenset({Kind.GLASSES}),
    "caption": frozenset({Kind.GLASSES}),
    "speak": frozenset({Kind.GLASSES, Kind.EARPHONES}),
    "prompt": frozenset({Kind.PHONE}),
    "haptic": frozenset({Kind.RING}),
}
_RESPOND_DO: Mapping[Kind, frozenset[str]] = {
    Kind.GLASSES: frozenset(
        {"click", "tap", "double_tap", "swipe_forward", "swipe_back", "nod", "shake", "say", "swap_cell"}
    ),
    Kind.EARPHONES: frozenset({"say", "nod", "shake", "tap", "double_tap"}),
    Kind.PHONE: frozenset({"confirm", "deny"}),
    Kind.RING: frozenset({"press", "pinch", "double_pinch", "long_press"}),
}
#: What a reaction matches when ``match`` is not given: a card's confirm button, a question, anything.
DEFAULT_MATCH: Mapping[str, str] = {"card": r"^confirm:", "speak": r"[?？吗]"}


class Respond(_Model):
    """Arm a reaction: the next time ``on`` arrives and matches, the user does ``do`` after ``delay``.

    Matching is a regular expression search: on a card's button action ids (``confirm:<task>``), on a
    prompt's id and title, on spoken text, on a haptic pattern, or on the text shown.
    """

    on: RespondOn
    do: RespondDo
    match: str | None = None
    text: str | None = Field(default=None, min_length=1, max_length=2000)
    lang: str | None = None
    side: Side = "left"
    delay: Offset = 2_000
    within: Offset = 600_000
    times: int = Field(default=1, ge=1, le=1000)

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"match is not a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Respond:
        if self.do == "say" and not self.text:
            raise ValueError("do: say needs the text to say")
        if self.do == "click" and self.on != "card":
            raise ValueError("do: click answers a card (on: card)")
        return self

    @property
    def pattern(self) -> re.Pattern[str]:
        """The compiled ``match`` (or the default for ``on``)."""
        return re.compile(self.match if self.match is not None else DEFAULT_MATCH.get(self.on, ""))


ACTIONS: tuple[str, ...] = (
    "activity",
    "go",
    "force",
    "say",
    "ring",
    "head",
    "touch",
    "wear",
    "swap_cell",
    "offline",
    "capture",
    "measure",
    "sync",
    "notify",
    "respond",
)
#: Steps about the person, seen by every device (they take no ``device``).
PERSON: frozenset[str] = frozenset({"activity", "go", "force"})
_ALL = frozenset(Kind)
_STEP_KINDS: Mapping[str, frozenset[Kind]] = {
    "say": frozenset({Kind.GLASSES, Kind.EARPHONES, Kind.PHONE}),
    "ring": frozenset({Kind.RING}),
    "head": frozenset({Kind.GLASSES, Kind.EARPHONES}),
    "touch": frozenset({Kind.GLASSES, Kind.EARPHONES}),
    "wear": frozenset({Kind.GLASSES, Kind.RING, Kind.EARPHONES}),
    "swap_cell": frozenset({Kind.GLASSES}),
    "offline": _ALL,
    "capture": frozenset({Kind.GLASSES}),
    "measure": frozenset({Kind.RING}),
    "sync": frozenset({Kind.RING}),
    "notify": frozenset({Kind.PHONE}),
    "respond": _ALL,
}
_DEFAULT_DEVICE: Mapping[str, Kind] = {
    "ring": Kind.RING,
    "measure": Kind.RING,
    "sync": Kind.RING,
    "swap_cell": Kind.GLASSES,
    "capture": Kind.GLASSES,
    "notify": Kind.PHONE,
}


class Step(_Model):
    """One thing the user does at an offset from the start: exactly one action key per step."""

    at: Offset
    device: Kind | None = None
    note: str = ""
    activity: Activity | None = None
    go: Go | None = None
    force: Force | None = None
    say: str | None = Field(default=None, min_length=1, max_length=2000)
    ring: Literal["press", "long_press", "pinch", "double_pinch", "scroll_up", "scroll_down"] | None = None
    head: Literal["nod", "shake", "tilt_left", "tilt_right"] | None = None
    touch: str | None = None
    wear: Literal["on", "off"] | None = None
    swap_cell: Side | None = None
    offline: Offset | None = None
    capture: Literal["photo", "video"] | None = None
    measure: Literal["hr", "spo2", "hrv", "stress"] | None = None
    sync: Literal[True] | None = None
    notify: NotifySpec | None = None
    respond: Respond | None = None
    lang: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Za-z]{2,4})?$")
    wake: Literal["wake_word", "long_press", "ring_press", "button", "none"] = "wake_word"
    side: Side = "right"

    @model_validator(mode="before")
    @classmethod
    def _default_device(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("device") is None:
            given = [a for a in ACTIONS if data.get(a) is not None]
            if len(given) == 1 and given[0] in _DEFAULT_DEVICE:
                return {**data, "device": _DEFAULT_DEVICE[given[0]].value}
        return data

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [a for a in ACTIONS if getattr(self, a) is not None]
        if len(given) != 1:
            listed = ", ".join(given) if given else "none"
            raise ValueError(f"a step needs exactly one action of {', '.join(ACTIONS)} (got {listed})")
        action = given[0]
        if action in PERSON:
            if self.device is not None:
                raise ValueError(f"{action} is about the person: it takes no device")
            return self
        if self.device is None:
            kinds = ", ".join(sorted(k.value for k in _STEP_KINDS[action]))
            raise ValueError(f"{action} needs a device ({kinds})")
        allowed = _STEP_KINDS[action]
        if action == "respond" and self.respond is not None:
            allowed = _RESPOND_KIND[self.respond.on]
            if self.device in allowed and self.respond.do not in _RESPOND_DO[self.device]:
                dos = ", ".join(sorted(_RESPOND_DO[self.device]))
                raise ValueError(f"a {self.device} cannot respond with {self.respond.do!r} (choose from {dos})")
        if self.device not in allowed:
            kinds = ", ".join(sorted(k.value for k in allowed))
            raise ValueError(f"{action} is for {kinds}, not {self.device}")
        if action == "touch" and self.touch not in TOUCHES[self.device]:
            choices = ", ".join(sorted(TOUCHES[self.device]))
            raise ValueError(f"{self.device} touch must be one of {choices}, got {self.touch!r}")
        return self

    @property
    def action(self) -> str:
        """The step's action key."""
        return next(a for a in ACTIONS if getattr(self, a) is not None)

    def addressed_to(self, kind: Kind) -> bool:
        """Whether a device of ``kind`` plays this step (person-wide steps are for every kind)."""
        return self.device is None or self.device is kind

    def spoken_lang(self) -> str:
        """The language of ``say``: given, else guessed from the text."""
        return self.lang or guess_lang(self.say or "")


# --------------------------------------------------------------------------- the scenario


class Scenario(_Model):
    """A validated scenario (load it with :func:`load`)."""

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    user: str = "alice"
    start: str | None = None
    duration: Offset = Field(gt=0)
    seed: int = 0
    profile: UserProfile = Field(default_factory=UserProfile)
    person: PersonSpec = Field(default_factory=PersonSpec)
    devices: DevicesSpec = Field(default_factory=DevicesSpec)
    calendar: list[CalendarSpec] = Field(default_factory=list, max_length=50)
    steps: list[Step] = Field(default_factory=list, max_length=10_000)

    @field_validator("steps", "calendar", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return [] if value is None else value  # "steps:" with nothing under it

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        try:
            return check_name(value, "user")
        except TopicError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("start")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_start(value, 0, 0)
        return value

    @property
    def duration_ms(self) -> int:
        """How long the scenario lasts, ms of simulated time."""
        return self.duration

    def start_ms(self, now_ms: int) -> int:
        """The simulated start: ``start`` (an ISO date-time, or ``HH:MM`` today in the profile's zone), else now."""
        if self.start is None:
            return now_ms
        return _parse_start(self.start, self.profile.tz_offset_min, now_ms)

    def profile_dict(self) -> dict[str, Any]:
        """The profile as plain data, shaped like ``agent.core.config.UserProfile`` (for the agent to read)."""
        return self.profile.model_dump(mode="json")

    def places(self) -> dict[str, Place]:
        """Every place a step may name, by lower-case name: profile places, home, office, then the built-in ones."""
        out: dict[str, Place] = {}
        for key, builtin in PLACES.items():
            out[key] = Place(name=key, lat=builtin.lat, lon=builtin.lon, address=builtin.label)
            if builtin.label:
                out[builtin.label.lower()] = out[key]
        if self.profile.home is not None:
            out["home"] = self.profile.home
        if self.profile.office is not None:
            out["office"] = self.profile.office
        for p in self.profile.places:
            out[p.name.lower()] = p
        return out

    def resolve(self, ref: PlaceRef) -> Place:
        """A place reference (a name or ``[lat, lon]``) as a place.

        Raises:
            ConfigError: an unknown name or a point off the globe.
        """
        if isinstance(ref, tuple):
            lat, lon = ref
            try:
                return Place(name=f"{lat:.5f},{lon:.5f}", lat=lat, lon=lon)
            except ValidationError as exc:
                raise ConfigError(f"not a WGS-84 point: {list(ref)}") from exc
        found = self.places().get(ref.strip().lower())
        if found is None:
            known = ", ".join(sorted(self.places()))
            raise ConfigError(f"unknown place {ref!r}; name one of: {known}; or give [lat, lon]")
        return found

    def steps_for(self, kind: Kind) -> list[tuple[int, Step]]:
        """``(step number, step)`` of the steps a device of ``kind`` plays, in order (numbers from 1)."""
        return [(i, s) for i, s in enumerate(self.steps, 1) if s.addressed_to(kind)]


def _parse_start(value: str, tz_offset_min: int, now_ms: int) -> int:
    tz = timezone(timedelta(minutes=tz_offset_min))
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if m is not None:
        hour, minute = int(m.group(1)), int(m.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"start {value!r} is not a time of day")
        today = datetime.fromtimestamp(now_ms / 1000, tz)
        when = today.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return int(when.timestamp() * 1000)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError(f"start {value!r} is neither an ISO date-time nor HH:MM") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return int(when.astimezone(UTC).timestamp() * 1000)
