"""Typed action bodies (``wb/v1/{user}/{kind}/{device}/cmd/{action}``), acks, device and agent state.

Actions carry the real limits of the devices (shared/reference/devices.md): the display's 5 lines of ~40 Latin or
~24 CJK characters, at most two card buttons, ``measure_now`` within 40 s, and so on. A body that does not fit is
refused by validation, so an agent cannot send what the glasses could not show.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator

from schemas.display import LINE_UNITS, LINES_PER_SCREEN, text_units, wrap
from schemas.events import MAX_COUNT, Body, Lang, Ms, Unit
from schemas.health import HEALTH, HEALTH_IF_FLAGGED
from schemas.topics import Kind


def _screen(text: str) -> str:
    if len(wrap(text)) > LINES_PER_SCREEN:
        raise ValueError(
            f"does not fit one screen ({LINES_PER_SCREEN} lines of {LINE_UNITS // 3} Latin / "
            f"{LINE_UNITS // 5} CJK characters); page it with schemas.display.paginate"
        )
    return text


def _line(text: str) -> str:
    if "\n" in text or text_units(text) > LINE_UNITS:
        raise ValueError("must fit one display line (40 Latin / 24 CJK characters)")
    return text


ScreenText = Annotated[str, Field(max_length=400), AfterValidator(_screen)]
LineText = Annotated[str, Field(max_length=64), AfterValidator(_line)]
SlotValue = str | int | float | bool


# --------------------------------------------------------------------------- glasses display


class ShowText(Body):
    """Show plain text on the heads-up display (one screen; page longer text)."""

    type: Literal["display.text"] = "display.text"
    text: ScreenText = Field(json_schema_extra=HEALTH_IF_FLAGGED)
    page: int = Field(default=1, ge=1, le=999)
    max_page: int = Field(default=1, ge=1, le=999)
    mode: Literal["auto", "manual"] = "auto"
    priority: Literal["low", "normal", "high"] = "normal"
    health: bool = Field(default=False, description="the text quotes a health value (redacted where people read)")


class CardButton(Body):
    """A button on a card; a click comes back as a ``glasses`` ``gesture/ui`` event with its action id."""

    label: Annotated[str, Field(min_length=1, max_length=16)]
    action_id: Annotated[str, Field(min_length=1, max_length=64)]


class ShowCard(Body):
    """A card: a title line, up to three lines of body and up to two buttons (one screen)."""

    type: Literal["display.card"] = "display.card"
    title: LineText = Field(json_schema_extra=HEALTH_IF_FLAGGED)
    body: str = Field(default="", max_length=300, json_schema_extra=HEALTH_IF_FLAGGED)
    icon: Literal["food", "car", "nav", "heart", "battery", "calendar", "info", "warning", "music", "check"] = "info"
    buttons: list[CardButton] = Field(default_factory=list, max_length=2)
    ttl_s: int = Field(default=30, ge=1, le=3600, description="how long the card stays up")
    health: bool = Field(default=False, description="the text quotes a health value (redacted where people read)")

    @field_validator("body")
    @classmethod
    def _body_lines(cls, body: str) -> str:
        if len(wrap(body)) > LINES_PER_SCREEN - 2:
            raise ValueError("card body must fit 3 display lines (title and buttons take the other two)")
        return body


class ShowNav(Body):
    """Turn-by-turn navigation."""

    type: Literal["display.nav"] = "display.nav"
    maneuver: Literal["straight", "turn_left", "turn_right", "slight_left", "slight_right", "u_turn", "arrive"]
    distance_m: float = Field(ge=0, le=1_000_000)
    street: LineText = ""
    eta_s: int | None = Field(default=None, ge=0, le=86_400)
    destination: LineText = ""


class ShowTeleprompter(Body):
    """One page of a script; the wearer pages with a temple tap or the ring."""

    type: Literal["display.teleprompter"] = "display.teleprompter"
    script_id: str = Field(max_length=64)
    text: ScreenText
    page: int = Field(ge=1, le=999)
    max_page: int = Field(ge=1, le=999)
    advance: Literal["auto", "manual"] = "manual"
    wpm: int | None = Field(default=None, ge=40, le=300)


class ShowCaption(Body):
    """A live caption (translation); partials replace each other in place."""

    type: Literal["display.caption"] = "display.caption"
    text: ScreenText
    src_lang: Lang = "en"
    tgt_lang: Lang = "zh"
    is_final: bool = True
    speaker: str | None = Field(default=None, max_length=32)


class ClearDisplay(Body):
    """Back to the dashboard."""

    type: Literal["display.clear"] = "display.clear"


class Capture(Body):
    """Take a photo or record a video (the capture LED lights as a privacy signal)."""

    type: Literal["camera.capture"] = "camera.capture"
    kind: Literal["photo", "video"] = "photo"
    duration_s: int = Field(default=0, ge=0, le=60)


# --------------------------------------------------------------------------- audio (glasses and earphones)


class Speak(Body):
    """Say something (TTS). ``barge_in`` interrupts what is being said; otherwise it is queued."""

    type: Literal["audio.speak"] = "audio.speak"
    text: str = Field(min_length=1, max_length=500, json_schema_extra=HEALTH_IF_FLAGGED)
    lang: Lang = "en"
    voice: str = Field(default="default", max_length=32)
    priority: Literal["low", "normal", "high"] = "normal"
    barge_in: bool = False
    health: bool = Field(default=False, description="the text quotes a health value (redacted where people read)")


class Earcon(Body):
    """A short sound."""

    type: Literal["audio.earcon"] = "audio.earcon"
    name: Literal["wake", "confirm", "error", "notify", "listening"]


class SetAnc(Body):
    """Set the noise-cancelling mode."""

    type: Literal["audio.anc"] = "audio.anc"
    mode: Literal["off", "transparency", "adaptive", "anc"]


class MediaControl(Body):
    """Control music playback."""

    type: Literal["media.control"] = "media.control"
    command: Literal["play", "pause", "next", "prev", "stop"]
    query: str | None = Field(default=None, max_length=200)
    volume: Unit | None = None


# --------------------------------------------------------------------------- ring


class Haptic(Body):
    """A vibration on the ring."""

    type: Literal["ring.haptic"] = "ring.haptic"
    pattern: Literal["tap", "double", "long", "heartbeat", "alert"] = "tap"
    intensity: Unit = 0.6


class MeasureNow(Body):
    """A spot measurement; the result comes as an event (HR and SpO2 lock within 40 s)."""

    type: Literal["ring.measure_now"] = "ring.measure_now"
    kind: Literal["hr", "spo2", "hrv", "stress"]
    timeout_s: int = Field(default=30, ge=5, le=40)


class RingSync(Body):
    """Ask the ring to sync what it stored now, rather than at its next ~30 min sync."""

    type: Literal["ring.sync"] = "ring.sync"
    since_ts: Ms | None = None


# --------------------------------------------------------------------------- phone: tasks


class TaskStart(Body):
    """Start a task in the phone's app (a quote comes back as ``task_status`` ``quoted``)."""

    type: Literal["task.start"] = "task.start"
    task_id: str = Field(min_length=1, max_length=64)
    skill: Literal["order_food", "hail_ride"]
    slots: dict[str, SlotValue] = Field(default_factory=dict, max_length=32)


class TaskConfirm(Body):
    """Commit (or decline) a quoted task: this is where money is spent."""

    type: Literal["task.confirm"] = "task.confirm"
    task_id: str = Field(min_length=1, max_length=64)
    confirm: bool = True
    auth: Literal["none", "voiceprint", "phone_unlock"] = "none"
    modality: Literal["voice", "ring", "tap", "nod", "phone"] | None = None


class TaskCancel(Body):
    """Cancel a task."""

    type: Literal["task.cancel"] = "task.cancel"
    task_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="user", max_length=64)


class Prompt(Body):
    """Show a confirmation on the phone; the answer comes back as ``gesture/tap``."""

    type: Literal["phone.prompt"] = "phone.prompt"
    prompt_id: str = Field(min_length=1, max_length=64)
    title: str = Field(max_length=100)
    body: str = Field(default="", max_length=500)


class Notify(Body):
    """Post a notification on the phone."""

    type: Literal["phone.notify"] = "phone.notify"
    title: str = Field(max_length=100, json_schema_extra=HEALTH_IF_FLAGGED)
    body: str = Field(default="", max_length=500, json_schema_extra=HEALTH_IF_FLAGGED)
    health: bool = Field(default=False, description="the text quotes a health value (redacted where people read)")


ACTIONS: dict[str, type[Body]] = {
    m.model_fields["type"].default: m
    for m in (
        ShowText,
        ShowCard,
        ShowNav,
        ShowTeleprompter,
        ShowCaption,
        ClearDisplay,
        Capture,
        Speak,
        Earcon,
        SetAnc,
        MediaControl,
        Haptic,
        MeasureNow,
        RingSync,
        TaskStart,
        TaskConfirm,
        TaskCancel,
        Prompt,
        Notify,
    )
}

ACCEPTS: dict[Kind, frozenset[str]] = {
    Kind.GLASSES: frozenset(
        {
            "display.text",
            "display.card",
            "display.nav",
            "display.teleprompter",
            "display.caption",
            "display.clear",
            "camera.capture",
            "audio.speak",
            "audio.earcon",
        }
    ),
    Kind.RING: frozenset({"ring.haptic", "ring.measure_now", "ring.sync"}),
    Kind.EARPHONES: frozenset({"audio.speak", "audio.earcon", "audio.anc", "media.control"}),
    Kind.PHONE: frozenset(
        {"task.start", "task.confirm", "task.cancel", "phone.prompt", "phone.notify", "media.control"}
    ),
}


# --------------------------------------------------------------------------- acks and state


class Ack(Body):
    """What a device did with an action."""

    type: Literal["ack"] = "ack"
    action_id: str = Field(min_length=1, max_length=128)
    action: str = Field(default="", max_length=64)
    status: Literal["done", "rejected", "expired"]
    detail: str = Field(default="", max_length=500)


class DeviceState(Body):
    """A device's retained birth (``online``) and Will (``offline``)."""

    type: Literal["device.state"] = "device.state"
    online: bool
    kind: Kind | None = None
    capabilities: list[str] = Field(default_factory=list, max_length=64)
    firmware: str = Field(default="", max_length=64)
    epoch: int = Field(default=0, ge=0, le=MAX_COUNT, description="session epoch: seq restarts from 1 in each")
    battery_pct: float | None = Field(default=None, ge=0, le=100)
    model: str = Field(default="", max_length=64)
    heartbeat_s: float | None = Field(default=None, gt=0, le=3600)
    settings: list[str] | None = Field(
        default=None, max_length=64, description="the setting keys (shadow) it can apply; absent: unknown"
    )
    encoding: Literal["msgpack", "json"] | None = Field(
        default=None,
        description="the encoding the device wants its actions in; default: the one it speaks (its birth's, "
        "else its last event's)",
    )


class AgentState(Body):
    """The agent's retained presence; its Will sets ``online`` false and devices buffer while it is away."""

    type: Literal["agent.state"] = "agent.state"
    online: bool
    instance: str = Field(max_length=64)
    version: str = Field(default="", max_length=32)
    users: list[str] | None = Field(default=None, max_length=100_000)
    host: str = Field(default="", max_length=255, description="the host the instance runs on")
    pid: int | None = Field(default=None, ge=0, description="its process id on that host")


class DeviceSummary(Body):
    """One device in the fused context."""

    kind: Kind
    online: bool = False
    worn: bool | None = None
    battery_pct: float | None = None
    last_seen: Ms | None = None


class ContextSnapshot(Body):
    """The agent's fused context for one user (retained on ``wb/v1/{user}/agent/context``)."""

    type: Literal["agent.context"] = "agent.context"
    user: str
    activity: str = "unknown"
    place: str | None = None
    quiet: bool = False
    asleep: bool = False
    moving: bool = False
    devices: dict[str, DeviceSummary] = Field(default_factory=dict)
    health: dict[str, float | None] = Field(
        default_factory=dict,
        json_schema_extra=HEALTH,
        description="kept for old readers; empty on the wire: health values go to wb/v1/{user}/agent/health",
    )
    tasks: list[dict[str, Any]] = Field(default_factory=list)
    pending: str | None = None
    settings: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="per device (kind/name), each desired setting: applied, pending or 'rejected: why'",
    )
    display: str | None = None
    speaking: str | None = None


class HealthSnapshot(Body):
    """The health part of a user's fused context (retained on ``wb/v1/{user}/agent/health``; the ACL lets only the
    agent and that user's own app read it)."""

    type: Literal["agent.health"] = "agent.health"
    user: str
    values: dict[str, float | None] = Field(default_factory=dict, json_schema_extra=HEALTH)


#: What a user consents to, one purpose at a time. ``proactive-health``: the agent runs its health rules on the
#: user's vitals and keeps their raw health samples (for the retention time).
Purpose = Literal["proactive-health"]
PURPOSES: tuple[str, ...] = ("proactive-health",)


class ConsentRequest(Body):
    """Change a consent (``wb/v1/{user}/agent/consent/set``, from the user's app or ``wearbus consent``)."""

    type: Literal["consent.set"] = "consent.set"
    purpose: Purpose
    granted: bool


class ConsentState(Body):
    """The consents the agent holds for a user (retained on ``wb/v1/{user}/agent/consent``)."""

    type: Literal["agent.consent"] = "agent.consent"
    user: str
    purposes: dict[str, bool] = Field(default_factory=dict)


class DeadLetter(Body):
    """What was rejected, from which topic, and why (published on ``wb/v1/_dlq/{reason}``)."""

    type: Literal["dlq"] = "dlq"
    reason: str
    topic: str
    error: str
    field: str | None = None
    size: int = Field(ge=0, le=MAX_COUNT)
    payload: str = Field(default="", description="the first bytes, as text if printable, else base64")
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    seen_by: str = ""
    count: int = Field(
        default=1, ge=1, le=MAX_COUNT, description="messages this letter stands for (a flood's refusals are summed)"
    )
