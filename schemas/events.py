"""Typed event bodies for the four devices, with units and validated ranges.

Each body has a ``type`` literal (``ring.hr``, ``voice.utterance``, ...), so bodies are a discriminated union
wherever they travel without a topic (the items of a ring batch). On the wire, the topic names the body:
:data:`EVENTS` maps ``(kind, class, name)`` of ``wb/v1/{user}/{kind}/{device}/evt/{class}/{name}`` to its model.
Ranges and rates follow shared/reference/devices.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.health import HEALTH_IF_FLAGGED, health_field
from schemas.topics import EventClass, Kind

Ms = Annotated[int, Field(ge=0, le=10**14, description="ms since the Unix epoch")]
# Counters are bounded by what msgpack (64-bit) and SQLite (signed 64-bit) can hold: an envelope that validates but
# cannot be stored or re-encoded would stop the agent, not reach the DLQ.
MAX_COUNT = 2**63 - 1
#: Items of one ring batch at most. The largest item (ring.steps with every field at its longest) encodes to 119
#: bytes of msgpack and 187 of compact JSON, so a full batch (~187 KB as JSON) fits the broker's packet limit
#: (``schemas.codec.MAX_PAYLOAD``, 256 KiB; tests/unit/test_bounds.py computes it). 5,000 items (300-380 KB) once
#: passed the schema but not the broker, which disconnected the ring on every try.
MAX_BATCH_ITEMS = 1000
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Pct = Annotated[float, Field(ge=0.0, le=100.0, description="percent")]
Side = Literal["left", "right"]
#: Why a heart-rate sample was taken (``ring.hr``'s ``source``).
HrSource = Literal["periodic", "realtime", "sleep", "workout", "spot"]
#: Why an SpO2 sample was taken (``ring.spo2``'s ``source``): on demand or in the day, or while asleep.
Spo2Source = Literal["spot", "night"]
#: A hypnogram stage, as rings report them (``ring.sleep_segment``'s ``stage``).
SleepStage = Literal["awake", "light", "deep", "rem"]
Lang = Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Za-z]{2,4})?$", description="BCP 47 language, e.g. en, zh")]


class Body(BaseModel):
    """Base of every event and action body: immutable, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- shared by several kinds


class Utterance(Body):
    """The final (or partial) text of what the user said, after on-device or phone ASR."""

    type: Literal["voice.utterance"] = "voice.utterance"
    text: str = Field(min_length=1, max_length=2000)
    lang: Lang = "en"
    final: bool = True
    utterance_id: str | None = Field(default=None, max_length=64)


class Wake(Body):
    """The assistant was woken: wake word, long press, ring press or button."""

    type: Literal["voice.wake"] = "voice.wake"
    trigger: Literal["wake_word", "long_press", "ring_press", "button"] = "wake_word"
    keyword: str | None = Field(default=None, max_length=64)
    score: Unit = 1.0


class Vad(Body):
    """Voice activity: speech started or ended."""

    type: Literal["voice.vad"] = "voice.vad"
    state: Literal["speech_start", "speech_end"]
    duration_ms: int | None = Field(default=None, ge=0, le=600_000)


class HeadGesture(Body):
    """A head gesture from the glasses' or earphones' IMU."""

    type: Literal["gesture.head"] = "gesture.head"
    gesture: Literal["nod", "shake", "tilt_left", "tilt_right"]
    confidence: Unit = 1.0
    context: Literal["incoming_call", "announcement", "agent_prompt"] | None = None


class Heartbeat(Body):
    """Sent by every device every few seconds, so the agent notices a silent cut before the Will arrives."""

    type: Literal["system.heartbeat"] = "system.heartbeat"
    uptime_s: float = Field(ge=0)
    outbox: int = Field(default=0, ge=0, le=MAX_COUNT, description="events waiting in the device's outbox")
    dropped: int = Field(default=0, ge=0, le=MAX_COUNT, description="events the outbox had to drop since start")
    dead_lettered: int = Field(
        default=0, ge=0, le=MAX_COUNT, description="events the outbox gave up on since start (never sendable)"
    )


# --------------------------------------------------------------------------- glasses


class GlassesWear(Body):
    """The glasses were put on or taken off."""

    type: Literal["glasses.wear"] = "glasses.wear"
    state: Literal["donned", "doffed"]
    confidence: Unit = 1.0


class GlassesHinge(Body):
    """The glasses' temples were opened or folded."""

    type: Literal["glasses.hinge"] = "glasses.hinge"
    state: Literal["open", "folded"]


class GlassesTouch(Body):
    """A touch on a temple (debounced ~300 ms)."""

    type: Literal["glasses.touch"] = "glasses.touch"
    side: Side
    gesture: Literal[
        "tap",
        "double_tap",
        "triple_tap",
        "long_press_start",
        "long_press_end",
        "swipe_forward",
        "swipe_back",
        "swipe_up",
        "swipe_down",
    ]


class GlassesButton(Body):
    """A physical button press."""

    type: Literal["glasses.button"] = "glasses.button"
    button: Literal["capture", "action", "power"]
    press: Literal["short", "long"] = "short"


class HeadPose(Body):
    """Head orientation summary, 1-10 Hz."""

    type: Literal["glasses.head_pose"] = "glasses.head_pose"
    roll_deg: float = Field(ge=-180, le=180)
    pitch_deg: float = Field(ge=-90, le=90)
    heading_deg: float = Field(ge=0, lt=360)


class PhotoCaptured(Body):
    """A photo was taken; the bytes stay on the device, the bus carries a reference."""

    type: Literal["glasses.photo"] = "glasses.photo"
    width: int = Field(ge=1, le=8192)
    height: int = Field(ge=1, le=8192)
    format: Literal["jpeg", "heic"] = "jpeg"
    bytes_len: int = Field(ge=0, le=MAX_COUNT)
    uri: str = Field(max_length=512)


class Cell(Body):
    """One hot-swappable battery cell in a temple."""

    slot: Side
    level_pct: Pct
    present: bool = True


class GlassesBattery(Body):
    """Battery of the glasses, with both swappable cells."""

    type: Literal["glasses.battery"] = "glasses.battery"
    level_pct: Pct
    charging: bool = False
    in_case: bool = False
    cells: list[Cell] = Field(default_factory=list, max_length=2)


class BatterySwap(Body):
    """A cell was removed or inserted (the other keeps the glasses running)."""

    type: Literal["glasses.battery_swap"] = "glasses.battery_swap"
    slot: Side
    action: Literal["removed", "inserted"]
    remaining_pct_other: Pct


class DisplayState(Body):
    """What the heads-up display shows now."""

    type: Literal["glasses.display_state"] = "glasses.display_state"
    app: Literal["nav", "teleprompter", "translate", "card", "text", "ai", "none"]
    page: int = Field(default=0, ge=0, le=999)
    max_page: int = Field(default=0, ge=0, le=999)
    on: bool = True


class UiEvent(Body):
    """A click on something shown (a card's button)."""

    type: Literal["glasses.ui_event"] = "glasses.ui_event"
    event: Literal["click", "double_click", "scroll_top", "scroll_bottom", "foreground_enter", "foreground_exit"] = (
        "click"
    )
    container_id: str = Field(default="card", max_length=64)
    action_id: str | None = Field(default=None, max_length=64, description="the card button's action id")
    item_index: int | None = Field(default=None, ge=0, le=19)


# --------------------------------------------------------------------------- ring


class RingGesture(Body):
    """A ring gesture; the topic name is the gesture (``evt/gesture/pinch``)."""

    type: Literal["ring.gesture"] = "ring.gesture"
    gesture: Literal["press", "long_press", "pinch", "double_pinch", "scroll_up", "scroll_down"]
    duration_ms: int = Field(default=0, ge=0, le=10_000)


class RingWear(Body):
    """The ring was put on or taken off."""

    type: Literal["ring.wear"] = "ring.wear"
    state: Literal["on_finger", "off_finger"]


class HeartRate(Body):
    """Heart rate, bpm. Periodic every 5 min, ~1 Hz during a spot measurement."""

    type: Literal["ring.hr"] = "ring.hr"
    bpm: float = health_field(ge=30, le=220)
    source: HrSource = "periodic"
    quality: Unit = 1.0
    src_ts: Ms | None = Field(default=None, description="sample time inside a batch")


class Hrv(Body):
    """Heart-rate variability, RMSSD in ms over a window."""

    type: Literal["ring.hrv"] = "ring.hrv"
    rmssd_ms: float = health_field(ge=5, le=200)
    window_s: int = Field(default=300, ge=10, le=3600)
    quality: Unit = 1.0
    src_ts: Ms | None = None


class SpO2(Body):
    """Blood oxygen saturation, percent."""

    type: Literal["ring.spo2"] = "ring.spo2"
    pct: float = health_field(ge=70, le=100)
    source: Spo2Source = "spot"
    quality: Unit = 1.0
    src_ts: Ms | None = None


class SkinTemp(Body):
    """Skin temperature (absolute, °C) and/or its deviation from the personal baseline."""

    type: Literal["ring.skin_temp"] = "ring.skin_temp"
    celsius: float | None = health_field(default=None, ge=25, le=38)
    deviation_c: float | None = health_field(default=None, ge=-3, le=3)
    src_ts: Ms | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SkinTemp:
        if self.celsius is None and self.deviation_c is None:
            raise ValueError("give celsius or deviation_c")
        return self


class RespRate(Body):
    """Respiration rate, breaths per minute (nightly average)."""

    type: Literal["ring.resp_rate"] = "ring.resp_rate"
    brpm: float = health_field(ge=8, le=30)
    src_ts: Ms | None = None


class Steps(Body):
    """Steps in a 15-minute bucket."""

    type: Literal["ring.steps"] = "ring.steps"
    steps: int = Field(ge=0, le=10_000)
    calories_kcal: float = Field(default=0, ge=0, le=2_000)
    distance_m: float = Field(default=0, ge=0, le=20_000)
    bucket_start: Ms
    bucket_s: int = Field(default=900, ge=60, le=3600)
    src_ts: Ms | None = None


class SleepSegment(Body):
    """A stretch of one sleep stage."""

    type: Literal["ring.sleep_segment"] = "ring.sleep_segment"
    stage: SleepStage = health_field()
    start_ts: Ms
    end_ts: Ms
    src_ts: Ms | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SleepSegment:
        if self.end_ts < self.start_ts:
            raise ValueError("end_ts is before start_ts")
        return self


class Stress(Body):
    """Stress level, 0-100 (~90 s after a manual start)."""

    type: Literal["ring.stress"] = "ring.stress"
    level: float = health_field(ge=0, le=100)
    src_ts: Ms | None = None


class RingBattery(Body):
    """Ring battery, sent with every sync."""

    type: Literal["ring.battery"] = "ring.battery"
    level_pct: Pct
    charging: bool = False


BatchItem = Annotated[
    HeartRate | Hrv | SpO2 | SkinTemp | RespRate | Steps | SleepSegment | Stress,
    Field(discriminator="type"),
]


class SyncBatch(Body):
    """What the ring stored since its last sync (~every 30 min); every item keeps its sample time."""

    type: Literal["ring.batch"] = "ring.batch"
    from_ts: Ms
    to_ts: Ms
    items: list[BatchItem] = Field(max_length=MAX_BATCH_ITEMS)

    @model_validator(mode="after")
    def _items_timed(self) -> SyncBatch:
        if self.to_ts < self.from_ts:
            raise ValueError("to_ts is before from_ts")
        for i, item in enumerate(self.items):
            if item.src_ts is None:
                raise ValueError(f"items[{i}] has no src_ts")
        return self


# --------------------------------------------------------------------------- earphones


class InEar(Body):
    """An earbud went in or out."""

    type: Literal["earphones.in_ear"] = "earphones.in_ear"
    side: Side
    state: Literal["in", "out"]


class EarTouch(Body):
    """A touch or press on an earbud stem."""

    type: Literal["earphones.touch"] = "earphones.touch"
    side: Side
    gesture: Literal["tap", "double_tap", "triple_tap", "press", "long_press", "swipe_up", "swipe_down"]


class Activity(Body):
    """Motion activity from the earphones' IMU."""

    type: Literal["earphones.activity"] = "earphones.activity"
    activity: Literal["stationary", "walking", "running", "cycling", "automotive"]


class AncState(Body):
    """Noise-cancelling mode changed."""

    type: Literal["earphones.anc"] = "earphones.anc"
    mode: Literal["off", "transparency", "adaptive", "anc"]


class EarBattery(Body):
    """Earbuds and case battery."""

    type: Literal["earphones.battery"] = "earphones.battery"
    left_pct: Pct
    right_pct: Pct
    case_pct: Pct | None = None
    charging: bool = False


class PlaybackState(Body):
    """What the earphones are saying or playing now."""

    type: Literal["earphones.playback"] = "earphones.playback"
    state: Literal["speaking", "idle", "music"]
    text: str | None = Field(default=None, max_length=2000, json_schema_extra=HEALTH_IF_FLAGGED)
    queue: int = Field(default=0, ge=0, le=MAX_COUNT)
    health: bool = Field(default=False, description="the text quotes a health value (a flagged audio.speak)")


# --------------------------------------------------------------------------- phone


class Location(Body):
    """Where the phone is (WGS-84)."""

    type: Literal["phone.location"] = "phone.location"
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy_m: float = Field(default=10, ge=0, le=10_000)
    speed_mps: float = Field(default=0, ge=0, le=100)
    bearing_deg: float = Field(default=0, ge=0, lt=360)
    provider: Literal["gps", "network", "fused"] = "fused"
    place: str | None = Field(default=None, max_length=64, description="a named place, if the phone knows it")


class Person(Body):
    """A driver."""

    name: str = Field(max_length=64)
    plate: str = Field(max_length=16)
    vehicle: str = Field(default="", max_length=64)


class Money(Body):
    """An amount of money."""

    amount: float = Field(ge=0, le=100_000)
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")


class TaskStatus(Body):
    """A status update of a task the phone runs (webhook-driven: may arrive late, twice or out of order)."""

    type: Literal["phone.task_status"] = "phone.task_status"
    task_id: str = Field(min_length=1, max_length=64)
    skill: Literal["order_food", "hail_ride"]
    status: Literal[
        "quoted",
        "processing",
        "accepted",
        "arriving",
        "in_progress",
        "completed",
        "driver_canceled",
        "rider_canceled",
        "no_drivers_available",
        "placed",
        "accepted_by_merchant",
        "courier_assigned",
        "at_store",
        "picked_up",
        "near_customer",
        "delivered",
        "cancelled",
        "failed",
    ]
    status_seq: int = Field(default=0, ge=0, le=MAX_COUNT, description="position in the task's own status sequence")
    eta_s: int | None = Field(default=None, ge=0, le=86_400)
    driver: Person | None = None
    courier_lat: float | None = Field(default=None, ge=-90, le=90)
    courier_lon: float | None = Field(default=None, ge=-180, le=180)
    price: Money | None = None
    summary: str | None = Field(default=None, max_length=200, description="what was ordered or where to")
    detail: str | None = Field(default=None, max_length=200)


class Notification(Body):
    """A notification on the phone."""

    type: Literal["phone.notification"] = "phone.notification"
    app: str = Field(max_length=64)
    title: str = Field(max_length=200)
    body: str = Field(default="", max_length=1000)
    category: Literal["message", "call", "social", "promo", "system", "task"] = "message"


class CalendarNext(Body):
    """The next event in the user's calendar."""

    type: Literal["phone.calendar_next"] = "phone.calendar_next"
    title: str = Field(max_length=200)
    start_ts: Ms
    location: str | None = Field(default=None, max_length=200)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class PhoneTap(Body):
    """The user answered a confirmation shown on the phone."""

    type: Literal["phone.tap"] = "phone.tap"
    prompt_id: str = Field(max_length=64)
    choice: Literal["confirm", "deny"]


class PhoneBattery(Body):
    """Phone battery."""

    type: Literal["phone.battery"] = "phone.battery"
    level_pct: Pct
    charging: bool = False


# --------------------------------------------------------------------------- the registry

_S, _G, _V, _Y = EventClass.SENSOR, EventClass.GESTURE, EventClass.VOICE, EventClass.SYSTEM
_VOICE: dict[str, type[Body]] = {"utterance": Utterance, "wake": Wake, "vad": Vad}

EVENTS: dict[tuple[Kind, EventClass, str], type[Body]] = {
    **{(Kind.GLASSES, _V, name): model for name, model in _VOICE.items()},
    (Kind.GLASSES, _S, "head_pose"): HeadPose,
    (Kind.GLASSES, _G, "touch"): GlassesTouch,
    (Kind.GLASSES, _G, "button"): GlassesButton,
    (Kind.GLASSES, _G, "head"): HeadGesture,
    (Kind.GLASSES, _G, "ui"): UiEvent,
    (Kind.GLASSES, _Y, "wear"): GlassesWear,
    (Kind.GLASSES, _Y, "hinge"): GlassesHinge,
    (Kind.GLASSES, _Y, "photo"): PhotoCaptured,
    (Kind.GLASSES, _Y, "battery"): GlassesBattery,
    (Kind.GLASSES, _Y, "battery_swap"): BatterySwap,
    (Kind.GLASSES, _Y, "display"): DisplayState,
    (Kind.GLASSES, _Y, "heartbeat"): Heartbeat,
    **{
        (Kind.RING, _G, g): RingGesture
        for g in ("press", "long_press", "pinch", "double_pinch", "scroll_up", "scroll_down")
    },
    (Kind.RING, _S, "hr"): HeartRate,
    (Kind.RING, _S, "hrv"): Hrv,
    (Kind.RING, _S, "spo2"): SpO2,
    (Kind.RING, _S, "skin_temp"): SkinTemp,
    (Kind.RING, _S, "resp_rate"): RespRate,
    (Kind.RING, _S, "steps"): Steps,
    (Kind.RING, _S, "sleep"): SleepSegment,
    (Kind.RING, _S, "stress"): Stress,
    (Kind.RING, _S, "batch"): SyncBatch,
    (Kind.RING, _Y, "wear"): RingWear,
    (Kind.RING, _Y, "battery"): RingBattery,
    (Kind.RING, _Y, "heartbeat"): Heartbeat,
    **{(Kind.EARPHONES, _V, name): model for name, model in _VOICE.items()},
    (Kind.EARPHONES, _G, "touch"): EarTouch,
    (Kind.EARPHONES, _G, "head"): HeadGesture,
    (Kind.EARPHONES, _S, "activity"): Activity,
    (Kind.EARPHONES, _Y, "in_ear"): InEar,
    (Kind.EARPHONES, _Y, "anc"): AncState,
    (Kind.EARPHONES, _Y, "battery"): EarBattery,
    (Kind.EARPHONES, _Y, "playback"): PlaybackState,
    (Kind.EARPHONES, _Y, "heartbeat"): Heartbeat,
    (Kind.PHONE, _V, "utterance"): Utterance,
    (Kind.PHONE, _S, "location"): Location,
    (Kind.PHONE, _G, "tap"): PhoneTap,
    (Kind.PHONE, _Y, "task_status"): TaskStatus,
    (Kind.PHONE, _Y, "notification"): Notification,
    (Kind.PHONE, _Y, "calendar"): CalendarNext,
    (Kind.PHONE, _Y, "battery"): PhoneBattery,
    (Kind.PHONE, _Y, "heartbeat"): Heartbeat,
}

# The QoS each event is published with: sensor 0 (1 for batches), gesture 1, voice 1, system 1.
EVENT_QOS: dict[tuple[Kind, EventClass, str], int] = {
    key: (1 if (key[1] is not EventClass.SENSOR or key[2] == "batch") else 0) for key in EVENTS
}
for _key in [k for k in EVENTS if k[2] in {"location"}]:
    EVENT_QOS[_key] = 1  # the phone's location feeds slot filling; a lost fix costs a question
EVENT_QOS[(Kind.RING, _S, "hr")] = 1  # spot and periodic HR are rare and feed health rules
EVENT_QOS[(Kind.RING, _S, "spo2")] = 1

_BY_TYPE: dict[str, list[tuple[Kind, EventClass, str]]] = {}
for _k, _m in EVENTS.items():
    _BY_TYPE.setdefault(_m.model_fields["type"].default, []).append(_k)


def event_key(kind: Kind, body: Body) -> tuple[Kind, EventClass, str]:
    """The ``(kind, class, name)`` a body is published under by a device of ``kind``.

    Raises:
        KeyError: a device of that kind does not publish this body.
    """
    type_name = type(body).model_fields["type"].default
    if isinstance(body, RingGesture):
        key: tuple[Kind, EventClass, str] = (Kind.RING, EventClass.GESTURE, body.gesture)
        if kind is Kind.RING:
            return key
    for key in _BY_TYPE.get(type_name, []):
        if key[0] is kind:
            return key
    raise KeyError(f"a {kind} does not publish {type_name}")
