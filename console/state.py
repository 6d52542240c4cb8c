"""The console's pure state: fed decoded messages, it keeps bounded per-user views and yields JSON snapshots and deltas.

Nothing here does I/O or reads a clock: every call that needs the time takes ``now`` (ms since the epoch). The
server feeds each decoded :class:`~schemas.envelope.Message` to :meth:`ConsoleState.feed` and, a few times a second,
sends what :meth:`ConsoleState.delta` returns to every page; a page that connects (or falls behind) gets
:meth:`ConsoleState.snapshot`. Every collection is bounded by :class:`Limits`, so a flood of messages costs CPU but
never memory, and a delta is never larger than a snapshot.

A snapshot and a delta have the same shape, so a page applies both with the same code::

    {"kind": "snapshot" | "delta", "t": ms, "link": {...}, "agents": {...}, "stats": {...}, "rejected": [...],
     "inject": {...}, "users": {user: {section: value, "timeline": [entries]}}, "removed_users": [...]}

In a delta, only the sections that changed are present, and ``timeline`` holds only the new entries; a user with
``"reset": true`` is new (or came back after being evicted), so a page forgets what it had under that name.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from schemas import actions as act
from schemas import codec
from schemas import events as ev
from schemas.display import LINE_UNITS, LINES_PER_SCREEN, clip_line, wrap
from schemas.envelope import Message
from schemas.errors import ContractError, TopicError, ValidationFailed
from schemas.health import holds_health, redact_body
from schemas.shadow import ShadowBook
from schemas.topics import Channel, EventClass, Kind

#: The vital signs plotted, in the order the page shows them (``temp_dev`` stands in when no °C is known).
VITALS = ("hr", "hrv", "spo2", "temp", "temp_dev")

#: Keys of the agent's ``ContextSnapshot.health`` that hold a personal baseline, per plotted vital (first found wins).
BASELINE_KEYS: dict[str, tuple[str, ...]] = {
    "hr": ("rhr_baseline", "hr_baseline", "rhr_bpm"),
    "hrv": ("hrv_baseline", "hrv_ms_baseline"),
    "spo2": ("spo2_baseline",),
    "temp": ("skin_temp_baseline", "skin_temp_c_baseline"),
}

#: Phone task statuses after which a task is over.
TERMINAL = frozenset(
    {
        "completed",
        "driver_canceled",
        "rider_canceled",
        "no_drivers_available",
        "delivered",
        "cancelled",
        "failed",
        "expired",
    }
)

#: Ack statuses that mean the device did not carry the action out.
_NOT_DONE = frozenset({"rejected", "expired"})

_SUMMARY_CHARS = 160
_TEXT_CHARS = 500
_TASK_HISTORY = 12
_NAV_ARROWS = {
    "straight": "↑",
    "turn_left": "←",
    "turn_right": "→",
    "slight_left": "↖",
    "slight_right": "↗",
    "u_turn": "↶",
    "arrive": "◎",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the console keeps (on the server; the page keeps no more than it is sent).

    Attributes:
        users: users kept; the one heard from least recently goes first.
        devices: devices per user; the one seen least recently goes first.
        timeline: timeline entries per user other than sensor readings.
        sensor_timeline: sensor readings per user in the timeline (kept apart so a flood cannot push out actions).
        points: points per vital sign plot.
        tasks: tasks per user; finished ones go first.
        alerts: proactive alerts per user.
        rejected: rejected messages (whatever the user).
        agents: agent instances.
        health_keys: entries of the agent's health dict shown.
        context_tasks: tasks read from one context snapshot.
    """

    users: int = 32
    devices: int = 16
    timeline: int = 300
    sensor_timeline: int = 100
    points: int = 240
    tasks: int = 30
    alerts: int = 30
    rejected: int = 20
    agents: int = 16
    health_keys: int = 32
    context_tasks: int = 30


# --------------------------------------------------------------------------------------------- display mirror


def screen_lines(text: str, max_lines: int = LINES_PER_SCREEN) -> tuple[list[str], bool]:
    """Wrap text as the glasses do and keep what fits on ``max_lines`` lines.

    Returns:
        the lines (each within the line's units) and whether anything was cut.
    """
    lines = wrap(text[:_TEXT_CHARS])
    while lines and not lines[-1]:
        lines.pop()
    cut = len(lines) > max_lines or len(text) > _TEXT_CHARS
    kept = [clip_line(line) for line in lines[:max_lines]]
    if cut and kept:
        kept[-1] = clip_line(kept[-1] + "…") if not kept[-1].endswith("…") else kept[-1]
    return kept, cut


def mirror(body: ev.Body, now: int) -> dict[str, Any] | None:
    """What the glasses show for a display action, within the real limits (None: not a display action).

    The result has ``app`` (card, text, caption, teleprompter, nav, none), ``lines`` (at most 5, each at most one
    display line), and what else the app shows (card ``buttons`` and ``icon``, teleprompter ``page``/``max_page``,
    caption ``speaker`` and ``final``, card ``until``).
    """
    view: dict[str, Any]
    match body:
        case act.ShowCard():
            # A card: the title line, up to three body lines and one line of buttons (5 lines in all).
            body_lines, cut = screen_lines(body.body, LINES_PER_SCREEN - 2) if body.body else ([], False)
            view = {
                "app": "card",
                "lines": [clip_line(body.title), *body_lines],
                "icon": body.icon,
                "buttons": [clip_line(b.label, LINE_UNITS // 2) for b in body.buttons[:2]],
                "until": now + body.ttl_s * 1000,
                "cut": cut,
            }
        case act.ShowText():
            lines, cut = screen_lines(body.text)
            view = {"app": "text", "lines": lines, "page": body.page, "max_page": body.max_page, "cut": cut}
        case act.ShowCaption():
            lines, cut = screen_lines(body.text)
            view = {
                "app": "caption",
                "lines": lines,
                "speaker": body.speaker,
                "final": body.is_final,
                "langs": f"{body.src_lang}→{body.tgt_lang}",
                "cut": cut,
            }
        case act.ShowTeleprompter():
            lines, cut = screen_lines(body.text)
            view = {"app": "teleprompter", "lines": lines, "page": body.page, "max_page": body.max_page, "cut": cut}
        case act.ShowNav():
            distance = f"{body.distance_m / 1000:.1f} km" if body.distance_m >= 1000 else f"{body.distance_m:.0f} m"
            lines = [f"{_NAV_ARROWS[body.maneuver]} {distance}"]
            lines += [body.street] if body.street else []
            lines += [f"to {body.destination}"] if body.destination else []
            lines += [f"ETA {round(body.eta_s / 60)} min"] if body.eta_s is not None else []
            view = {"app": "nav", "lines": [clip_line(x) for x in lines][:LINES_PER_SCREEN], "cut": False}
        case act.ClearDisplay():
            view = {"app": "none", "lines": [], "cut": False}
        case _:
            return None
    view["t"] = now
    return view


# --------------------------------------------------------------------------------------------- summaries


def summarize(body: ev.Body) -> str:
    """One line for the timeline (a redacted body is shown as its fields, health values hidden)."""
    try:
        return _summarize(body)
    except (TypeError, ValueError):  # a redacted value where a number is formatted
        fields = {k: getattr(body, k, None) for k in type(body).model_fields if k != "type"}
        fields = {k: v for k, v in fields.items() if v is not None}
        text = json.dumps(fields, ensure_ascii=False, separators=(", ", "="), default=str)
        return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 1] + "…"


def _summarize(body: ev.Body) -> str:
    """A short human line for the timeline."""
    text: str
    match body:
        case ev.Utterance():
            text = f'"{body.text}"' + ("" if body.final else " (partial)")
        case ev.HeartRate():
            text = f"{body.bpm:.0f} bpm ({body.source})"
        case ev.Hrv():
            text = f"HRV {body.rmssd_ms:.0f} ms"
        case ev.SpO2():
            text = f"SpO2 {body.pct:.0f} %"
        case ev.SkinTemp():
            text = f"{body.celsius:.1f} °C" if body.celsius is not None else f"{body.deviation_c:+.2f} °C vs baseline"
        case ev.SyncBatch():
            text = f"{len(body.items)} items synced"
        case ev.RingGesture():
            text = body.gesture
        case ev.GlassesBattery():
            cells = " · ".join(f"{c.slot[0].upper()} {c.level_pct:.0f} %" for c in body.cells if c.present)
            text = f"{body.level_pct:.0f} %" + (f" ({cells})" if cells else "") + (" charging" if body.charging else "")
        case ev.RingBattery() | ev.PhoneBattery():
            text = f"{body.level_pct:.0f} %" + (" charging" if body.charging else "")
        case ev.EarBattery():
            case_pct = f" · case {body.case_pct:.0f} %" if body.case_pct is not None else ""
            text = f"L {body.left_pct:.0f} % · R {body.right_pct:.0f} %{case_pct}"
        case ev.GlassesWear() | ev.RingWear():
            text = body.state
        case ev.InEar():
            text = f"{body.side} {body.state}"
        case act.Haptic():
            text = f"haptic {body.pattern}"
        case ev.UiEvent():
            text = f"{body.event} {body.action_id or body.container_id}"
        case ev.TaskStatus():
            text = f"{body.skill} {body.task_id}: {body.status}" + (f" (ETA {body.eta_s} s)" if body.eta_s else "")
        case act.ShowCard():
            buttons = " ".join(f"[{b.label}]" for b in body.buttons)
            text = f"card: {body.title}" + (f" — {body.body}" if body.body else "") + (f" {buttons}" if buttons else "")
        case act.ShowText() | act.ShowCaption() | act.ShowTeleprompter():
            text = body.text.replace("\n", " ")
        case act.ShowNav():
            text = f"{body.maneuver} {body.distance_m:.0f} m {body.street}".rstrip()
        case act.Speak():
            text = f'say "{body.text}"'
        case act.Ack():
            text = f"{body.status} {body.action}" + (f": {body.detail}" if body.detail else "")
        case act.DeviceState():
            text = "online" if body.online else "offline"
        case act.DeadLetter():
            text = f"{body.reason}: {body.topic}: {body.error}"
        case _:
            fields = {k: v for k, v in body.model_dump(mode="json", exclude_none=True).items() if k != "type"}
            text = json.dumps(fields, ensure_ascii=False, separators=(", ", "="), default=str)
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 1] + "…"


def body_type(body: ev.Body) -> str:
    """The ``type`` literal of a body (``ring.hr``, ``display.card``, ...)."""
    return str(getattr(body, "type", type(body).__name__))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _short(value: Any, n: int = 64) -> str | None:
    if value is None:
        return None
    s = str(value)
    return s if len(s) <= n else s[: n - 1] + "…"


# --------------------------------------------------------------------------------------------- injection


_INJECT_TEMPLATES: dict[str, dict[str, Any]] = {
    "voice.utterance": {"text": "order my usual lunch", "lang": "en"},
    "ring.gesture": {},
    "glasses.touch": {"side": "right", "gesture": "tap"},
    "glasses.button": {"button": "action", "press": "short"},
    "gesture.head": {"gesture": "nod"},
    "glasses.ui_event": {"event": "click", "action_id": "confirm"},
    "earphones.touch": {"side": "right", "gesture": "double_tap"},
    "phone.tap": {"prompt_id": "p-1", "choice": "confirm"},
}


def injectable(kind: Kind, event_class: EventClass, name: str) -> bool:
    """Whether the console may inject this event: an utterance or a gesture, nothing else."""
    return (event_class is EventClass.VOICE and name == "utterance") or event_class is EventClass.GESTURE


def inject_catalogue() -> dict[str, list[dict[str, Any]]]:
    """Per device kind, the events the page may inject (``voice/utterance``, ``gesture/...``) with a body template."""
    out: dict[str, list[dict[str, Any]]] = {}
    for (kind, event_class, name), model in ev.EVENTS.items():
        if not injectable(kind, event_class, name):
            continue
        type_name = str(model.model_fields["type"].default)
        template = dict(_INJECT_TEMPLATES.get(type_name, {}))
        if model is ev.RingGesture:
            template = {"gesture": name}
        out.setdefault(kind.value, []).append({"event": f"{event_class.value}/{name}", "template": template})
    return out


def build_injection(topic: str, data: Any, *, ts: int, msg_id: str) -> tuple[Message, int]:
    """Validate an injected event like ``wearbus pub`` does: a body (or a whole envelope) checked against the topic.

    Args:
        topic: a device event topic, ``wb/v1/{user}/{kind}/{device}/evt/{class}/{name}``.
        data: the body as a JSON object, or a whole envelope with ``id``, ``ts`` and ``data``.
        ts: the envelope time when ``data`` is a body.
        msg_id: the envelope id when ``data`` is a body.

    Returns:
        the validated message and the QoS its topic is published with.

    Raises:
        ContractError: the topic or the body does not fit the schema, or the event is not an utterance or gesture.
    """
    if not isinstance(topic, str) or not topic:
        raise TopicError("give the topic to inject on")
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object", topic=topic)
    envelope = data if "data" in data and "ts" in data else {"id": msg_id, "ts": ts, "data": data}
    raw = json.dumps(envelope, ensure_ascii=False).encode()
    message = codec.decode(topic, raw)
    where = message.where
    if (
        where.channel is not Channel.EVENT
        or where.kind is None
        or where.event_class is None
        or where.name is None
        or not injectable(where.kind, where.event_class, where.name)
    ):
        raise TopicError("the console injects only utterances (evt/voice/utterance) and gestures (evt/gesture/...)")
    qos = ev.EVENT_QOS.get((where.kind, where.event_class, where.name), 1)
    return message, qos


# --------------------------------------------------------------------------------------------- per-user view


class _User:
    """What the console keeps about one user (bounded by :class:`Limits`)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.devices: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.displays: dict[str, dict[str, Any]] = {}
        self.audio: dict[str, dict[str, Any]] = {}
        self.vitals: dict[str, list[tuple[int, float]]] = {m: [] for m in VITALS}
        self.context: dict[str, Any] = {}
        self.health: dict[str, float | None] = {}
        self.tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.alerts: deque[dict[str, Any]] = deque(maxlen=limits.alerts)
        self.timeline: deque[dict[str, Any]] = deque(maxlen=limits.timeline)
        self.sensor_timeline: deque[dict[str, Any]] = deque(maxlen=limits.sensor_timeline)
        self.new_timeline: deque[dict[str, Any]] = deque(maxlen=limits.timeline)
        self.new_sensor: deque[dict[str, Any]] = deque(maxlen=limits.sensor_timeline)
        self.dirty: set[str] = set()
        self.fresh = True  # new since the last delta: a page drops what it had under this name
        self.last: int = 0
        self.shadows = ShadowBook()  # each device's settings: desired vs reported

    # -- sections as plain data

    def section(self, name: str) -> Any:
        match name:
            case "devices":
                return dict(self.devices)
            case "displays":
                return dict(self.displays)
            case "audio":
                return dict(self.audio)
            case "vitals":
                return {m: [[t, v] for t, v in pts] for m, pts in self.vitals.items()}
            case "baselines":
                return self.baselines()
            case "context":
                return {**self.context, "health": dict(self.health)}
            case "tasks":
                return list(self.tasks.values())
            case "alerts":
                return list(self.alerts)
        raise KeyError(name)  # pragma: no cover

    def baselines(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for metric, keys in BASELINE_KEYS.items():
            out[metric] = next((self.health[k] for k in keys if self.health.get(k) is not None), None)
        out["temp_dev"] = 0.0  # a deviation is measured from the personal baseline, by definition
        return out

    def full_timeline(self) -> list[dict[str, Any]]:
        return sorted([*self.timeline, *self.sensor_timeline], key=lambda e: int(e["n"]))

    # -- devices

    def device(self, kind: Kind, name: str, now: int) -> dict[str, Any]:
        key = f"{kind.value}/{name}"
        dev = self.devices.get(key)
        if dev is None:
            while len(self.devices) >= self.limits.devices:
                old, _ = self.devices.popitem(last=False)
                self.displays.pop(old, None)
                self.audio.pop(old, None)
                self.dirty.update(("displays", "audio"))
            dev = {
                "key": key,
                "kind": kind.value,
                "device": name,
                "online": None,
                "worn": None,
                "battery": None,
                "charging": False,
                "cells": None,
                "buds": None,
                "last_seen": None,
                "firmware": "",
                "model": "",
                "heartbeat_s": None,
                "shadow": None,
            }
            self.devices[key] = dev
        else:
            self.devices.move_to_end(key)
        self.dirty.add("devices")
        return dev

    # -- vitals

    def add_point(self, metric: str, t: int, value: float) -> None:
        series = self.vitals[metric]
        if len(series) >= self.limits.points and t < series[0][0]:
            return  # older than everything the plot keeps
        bisect.insort(series, (t, round(value, 2)))
        if len(series) > self.limits.points:
            del series[: len(series) - self.limits.points]
        self.dirty.add("vitals")

    # -- tasks

    def task(self, task_id: str, now: int) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None:
            if len(self.tasks) >= self.limits.tasks:
                done = next((k for k, t in self.tasks.items() if not t["active"]), None)
                self.tasks.pop(done if done is not None else next(iter(self.tasks)))
            task = {
                "task_id": task_id,
                "skill": None,
                "state": None,
                "status": None,
                "status_seq": -1,
                "rounds": None,
                "eta_s": None,
                "summary": None,
                "driver": None,
                "price": None,
                "confirm": None,
                "history": [],
                "active": True,
                "in_context": False,
                "started": now,
                "updated": now,
            }
            self.tasks[task_id] = task
        task["updated"] = now
        self.dirty.add("tasks")
        return task


# --------------------------------------------------------------------------------------------- the state


class ConsoleState:
    """Bounded, JSON-ready state of everything the console shows. Pure: time comes in as ``now`` (ms).

    Example::

        state = ConsoleState()
        state.feed(message, now)          # for each decoded message
        delta = state.delta(now)          # a few times a second: what changed, or None
        page = state.snapshot(now)        # for a page that connects

    Args:
        limits: how much to keep.
        allow_inject: whether the page offers to inject events (the snapshot tells the page).
    """

    def __init__(self, limits: Limits | None = None, *, allow_inject: bool = False, show_health: bool = False) -> None:
        self.limits = limits or Limits()
        self.allow_inject = allow_inject
        self.show_health = show_health  # health values (by the contract's mark) are redacted unless asked for
        self._users: OrderedDict[str, _User] = OrderedDict()
        self._agents: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._rejected: deque[dict[str, Any]] = deque(maxlen=self.limits.rejected)
        self._removed: set[str] = set()
        self._dirty: set[str] = set()
        self._n = 0
        self._link: dict[str, Any] = {"connected": False, "url": "", "since": None}
        self._received = 0
        self._rejected_total = 0
        self._dropped = 0
        self._evicted_users = 0
        self._rate_mark: tuple[int, int] | None = None
        self._stats_sent: dict[str, Any] = {}
        self._catalogue = inject_catalogue() if allow_inject else {}

    # ------------------------------------------------------------------------------------------ inputs

    def feed(self, message: Message, now: int) -> None:
        """Take one decoded message into the state (never raises for a message that decoded)."""
        self._received += 1
        if not self.show_health and holds_health(message.data):
            message = dataclasses.replace(
                message, envelope=message.envelope.model_copy(update={"data": redact_body(message.data)})
            )
        where = message.where
        body = message.data
        match where.channel:
            case Channel.AGENT_STATE:
                if isinstance(body, act.AgentState):
                    self._agent(where.name or body.instance, body, message, now)
                return
            case Channel.DLQ:
                if isinstance(body, act.DeadLetter):
                    self._reject(body.topic, body.reason, body.error, body.field, now, seen_by=body.seen_by)
                return
            case _:
                pass
        if where.user is None:
            return
        user = self._user(where.user, now)
        if where.channel is Channel.CONTEXT:
            if isinstance(body, act.ContextSnapshot):
                self._context(user, body, now)
            return
        if where.channel is Channel.HEALTH:
            if isinstance(body, act.HealthSnapshot) and self.show_health:
                user.health = {
                    _short(k, 40) or "": _finite(v) for k, v in list(body.values.items())[: self.limits.health_keys]
                }
                user.dirty.update(("context", "baselines"))
            return
        if where.kind is None or where.device is None:
            return
        dev = user.device(where.kind, where.device, now)
        if where.channel is not Channel.COMMAND:
            dev["last_seen"] = message.envelope.ts if message.retain else now
        match where.channel:
            case Channel.STATE:
                if isinstance(body, act.DeviceState):
                    self._device_state(user, dev, body, message, now)
            case Channel.EVENT:
                self._event(user, dev, message, now)
            case Channel.COMMAND:
                self._command(user, dev, message, now)
            case Channel.ACK:
                if isinstance(body, act.Ack):
                    self._ack(user, dev, body, message, now)
            case Channel.DESIRED | Channel.REPORTED:
                self._log(user, message, "state", "state", now)
        if where.channel in {Channel.STATE, Channel.DESIRED, Channel.REPORTED}:
            # desired vs reported, the pending delta and rejections (the birth says what the device can apply)
            ident = user.shadows.update(message)
            if ident is not None and (where.channel is not Channel.STATE or dev["shadow"] is not None):
                dev["shadow"] = user.shadows.get(ident).describe()

    def reject(self, topic: str, reason: str, error: str, field: str | None, now: int) -> None:
        """Record a message that did not decode (the console's own bus saw it)."""
        self._reject(topic, reason, error, field, now, seen_by="console")

    def reject_error(self, topic: str, error: ContractError, now: int) -> None:
        """Record a message that did not decode, from the decoder's error."""
        self.reject(topic, error.reason, error.detail, error.field, now)

    def set_link(self, connected: bool, url: str, now: int) -> None:
        """Whether the console's bus is connected to the broker now."""
        if connected != self._link["connected"] or url != self._link["url"]:
            self._link = {"connected": connected, "url": url, "since": now}
            self._dirty.add("link")

    def set_dropped(self, dropped: int) -> None:
        """Messages the bus had to drop because the console fell behind (shown in the stats)."""
        self._dropped = dropped

    # ------------------------------------------------------------------------------------------ outputs

    @property
    def users(self) -> list[str]:
        """Users the console knows, least recently heard from first."""
        return list(self._users)

    def user_view(self, user: str) -> dict[str, Any] | None:
        """Everything kept about one user (as in a snapshot), or None."""
        u = self._users.get(user)
        if u is None:
            return None
        view = {name: u.section(name) for name in _SECTIONS}
        view["timeline"] = u.full_timeline()
        return view

    def snapshot(self, now: int) -> dict[str, Any]:
        """Everything, for a page that connects or has fallen behind."""
        out = self._frame("snapshot", now)
        out["users"] = {name: self.user_view(name) for name in self._users}
        out["stats"] = self._stats(now, mark=False)
        out["removed_users"] = []
        return out

    def delta(self, now: int) -> dict[str, Any] | None:
        """What changed since the last delta (None when nothing did); clears the change marks."""
        stats = self._stats(now, mark=True)
        users: dict[str, Any] = {}
        for name, u in self._users.items():
            if not u.dirty and not u.new_timeline and not u.new_sensor:
                continue
            part: dict[str, Any] = {section: u.section(section) for section in sorted(u.dirty)}
            if u.fresh:
                part["reset"] = True
                u.fresh = False
            new = sorted([*u.new_timeline, *u.new_sensor], key=lambda e: int(e["n"]))
            if new:
                part["timeline"] = new
            users[name] = part
            u.dirty.clear()
            u.new_timeline.clear()
            u.new_sensor.clear()
        stats_changed = stats != self._stats_sent
        if not users and not self._dirty and not self._removed and not stats_changed:
            return None
        out: dict[str, Any] = {"kind": "delta", "t": now}
        if "link" in self._dirty:
            out["link"] = dict(self._link)
        if "agents" in self._dirty:
            out["agents"] = dict(self._agents)
        if "rejected" in self._dirty:
            out["rejected"] = list(self._rejected)
        if stats_changed:
            out["stats"] = stats
            self._stats_sent = stats
        out["users"] = users
        out["removed_users"] = sorted(self._removed)
        self._dirty.clear()
        self._removed.clear()
        return out

    # ------------------------------------------------------------------------------------------ internals

    def _frame(self, kind: str, now: int) -> dict[str, Any]:
        return {
            "kind": kind,
            "t": now,
            "link": dict(self._link),
            "agents": dict(self._agents),
            "rejected": list(self._rejected),
            "inject": {"enabled": self.allow_inject, "catalogue": self._catalogue},
            "limits": {
                "timeline": self.limits.timeline,
                "sensor_timeline": self.limits.sensor_timeline,
                "points": self.limits.points,
                "lines": LINES_PER_SCREEN,
                "line_units": LINE_UNITS,
            },
        }

    def _stats(self, now: int, *, mark: bool) -> dict[str, Any]:
        rate = self._stats_sent.get("rate", 0.0)
        if mark:
            # Measured over a second or more, so the figure does not jitter with the 5 Hz delta ticks.
            if self._rate_mark is None:
                self._rate_mark = (now, self._received)
            elif now - self._rate_mark[0] >= 1000:
                t0, n0 = self._rate_mark
                rate = round((self._received - n0) * 1000 / (now - t0), 1)
                self._rate_mark = (now, self._received)
        return {
            "received": self._received,
            "rejected": self._rejected_total,
            "dropped": self._dropped,
            "evicted_users": self._evicted_users,
            "rate": rate,
        }

    def _user(self, name: str, now: int) -> _User:
        u = self._users.get(name)
        if u is None:
            while len(self._users) >= self.limits.users:
                old, _ = self._users.popitem(last=False)
                self._removed.add(old)
                self._evicted_users += 1
            u = _User(self.limits)
            u.dirty.update(_SECTIONS)  # a page learns the whole of a new user from the next delta
            self._users[name] = u
            self._removed.discard(name)
        else:
            self._users.move_to_end(name)
        u.last = now
        return u

    def _agent(self, instance: str, body: act.AgentState, message: Message, now: int) -> None:
        self._agents.pop(instance, None)
        while len(self._agents) >= self.limits.agents:
            self._agents.popitem(last=False)
        self._agents[instance] = {
            "online": body.online,
            "version": body.version,
            "since": message.envelope.ts if message.retain else now,
        }
        self._dirty.add("agents")

    def _reject(self, topic: str, reason: str, error: str, field: str | None, now: int, *, seen_by: str) -> None:
        self._rejected_total += 1
        self._rejected.append(
            {
                "t": now,
                "topic": _short(topic, 200),
                "reason": _short(reason, 32),
                "error": _short(error, 300),
                "field": _short(field),
                "seen_by": _short(seen_by),
            }
        )
        self._dirty.add("rejected")

    def _log(self, user: _User, message: Message, direction: str, cls: str, now: int, **extra: Any) -> None:
        self._n += 1
        where, env, body = message.where, message.envelope, message.data
        entry: dict[str, Any] = {
            "n": self._n,
            "t": now,
            "ts": env.ts,
            "dir": direction,
            "cls": cls,
            "kind": where.kind.value if where.kind else None,
            "device": where.device,
            "name": where.name,
            "type": body_type(body),
            "id": env.id,
            "corr": env.corr,
            "retain": message.retain,
            "text": summarize(body),
            **extra,
        }
        if cls == EventClass.SENSOR.value:
            user.sensor_timeline.append(entry)
            user.new_sensor.append(entry)
        else:
            user.timeline.append(entry)
            user.new_timeline.append(entry)

    def _device_state(
        self, user: _User, dev: dict[str, Any], body: act.DeviceState, message: Message, now: int
    ) -> None:
        was = dev["online"]
        dev["online"] = body.online
        if body.battery_pct is not None:
            dev["battery"] = body.battery_pct
        dev["firmware"] = body.firmware
        dev["model"] = body.model
        dev["heartbeat_s"] = body.heartbeat_s
        if was != body.online:
            self._log(user, message, "state", "state", now)

    def _event(self, user: _User, dev: dict[str, Any], message: Message, now: int) -> None:
        body = message.data
        t = message.envelope.sample_ts
        where = message.where
        cls = where.event_class.value if where.event_class else "system"
        match body:
            case ev.GlassesWear():
                dev["worn"] = body.state == "donned"
            case ev.RingWear():
                dev["worn"] = body.state == "on_finger"
            case ev.InEar():
                buds = dict(dev["buds"] or {})
                buds[f"in_{body.side}"] = body.state == "in"
                dev["buds"] = buds
                dev["worn"] = bool(buds.get("in_left") or buds.get("in_right"))
            case ev.GlassesBattery():
                dev["battery"] = body.level_pct
                dev["charging"] = body.charging
                dev["cells"] = [{"slot": c.slot, "level": c.level_pct, "present": c.present} for c in body.cells]
            case ev.BatterySwap():
                cells = {c["slot"]: dict(c) for c in (dev["cells"] or [])}
                cell = cells.setdefault(body.slot, {"slot": body.slot, "level": None, "present": True})
                cell["present"] = body.action == "inserted"
                other = "right" if body.slot == "left" else "left"
                cells.setdefault(other, {"slot": other, "level": None, "present": True})["level"] = (
                    body.remaining_pct_other
                )
                dev["cells"] = [cells[s] for s in ("left", "right") if s in cells]
            case ev.RingBattery() | ev.PhoneBattery():
                dev["battery"] = body.level_pct
                dev["charging"] = body.charging
            case ev.EarBattery():
                dev["battery"] = min(body.left_pct, body.right_pct)
                dev["charging"] = body.charging
                buds = dict(dev["buds"] or {})
                buds.update(left=body.left_pct, right=body.right_pct, case=body.case_pct)
                dev["buds"] = buds
            case ev.HeartRate() if self.show_health:
                user.add_point("hr", body.src_ts or t, body.bpm)
            case ev.Hrv() if self.show_health:
                user.add_point("hrv", body.src_ts or t, body.rmssd_ms)
            case ev.SpO2() if self.show_health:
                user.add_point("spo2", body.src_ts or t, body.pct)
            case ev.SkinTemp() if self.show_health:
                self._skin(user, body, body.src_ts or t)
            case ev.SyncBatch() if self.show_health:
                self._batch(user, body)
            case ev.PlaybackState():
                user.audio[dev["key"]] = {
                    "state": body.state,
                    "text": body.text if body.state == "speaking" else None,
                    "t": now,
                    "source": "device",
                }
                user.dirty.add("audio")
            case ev.DisplayState():
                shown = user.displays.setdefault(dev["key"], {"app": "none", "lines": [], "t": now, "cut": False})
                shown["reported"] = {"app": body.app, "page": body.page, "max_page": body.max_page, "on": body.on}
                user.dirty.add("displays")
            case ev.TaskStatus():
                self._task_status(user, body, now)
            case ev.UiEvent():
                if body.action_id and body.action_id.startswith("dismiss:"):
                    rule = body.action_id.split(":", 1)[1]
                    for alert in reversed(user.alerts):
                        if alert["rule"] == rule and not alert["dismissed"]:
                            alert["dismissed"] = True
                            user.dirty.add("alerts")
                            break
            case _:
                pass
        self._log(user, message, "in", cls, now)

    def _skin(self, user: _User, body: ev.SkinTemp, t: int) -> None:
        if body.celsius is not None:
            user.add_point("temp", t, body.celsius)
        if body.deviation_c is not None:
            user.add_point("temp_dev", t, body.deviation_c)

    def _batch(self, user: _User, body: ev.SyncBatch) -> None:
        for item in body.items:
            t = item.src_ts or body.to_ts
            match item:
                case ev.HeartRate():
                    user.add_point("hr", t, item.bpm)
                case ev.Hrv():
                    user.add_point("hrv", t, item.rmssd_ms)
                case ev.SpO2():
                    user.add_point("spo2", t, item.pct)
                case ev.SkinTemp():
                    self._skin(user, item, t)
                case _:
                    pass

    def _task_status(self, user: _User, body: ev.TaskStatus, now: int) -> None:
        task = user.task(body.task_id, now)
        task["skill"] = body.skill
        history: list[str] = task["history"]
        if body.status not in history[-1:]:
            history.append(body.status)
            del history[: max(0, len(history) - _TASK_HISTORY)]
        # Webhooks arrive late, twice or out of order: an older status does not overwrite a newer one.
        if body.status_seq >= task["status_seq"]:
            task["status"] = body.status
            task["status_seq"] = body.status_seq
            if body.eta_s is not None:
                task["eta_s"] = body.eta_s
            if body.summary:
                task["summary"] = body.summary
            if body.driver is not None:
                task["driver"] = f"{body.driver.name} · {body.driver.plate} {body.driver.vehicle}".strip()
            if body.price is not None:
                task["price"] = f"{body.price.amount:g} {body.price.currency}"
        if body.status in TERMINAL:
            task["active"] = False

    def _command(self, user: _User, dev: dict[str, Any], message: Message, now: int) -> None:
        body = message.data
        env = message.envelope
        shown = mirror(body, now)
        if shown is not None:
            shown["action_id"] = env.id
            shown["corr"] = env.corr
            if dev["key"] in user.displays and "reported" in user.displays[dev["key"]]:
                shown["reported"] = user.displays[dev["key"]]["reported"]
            user.displays[dev["key"]] = shown
            user.dirty.add("displays")
        match body:
            case act.Speak():
                user.audio[dev["key"]] = {"state": "speaking", "text": body.text, "t": now, "source": "action"}
                user.dirty.add("audio")
            case act.TaskStart():
                task = user.task(body.task_id, now)
                task["skill"] = body.skill
                task["state"] = task["state"] or "starting"
            case act.TaskConfirm():
                task = user.task(body.task_id, now)
                task["confirm"] = ("confirmed" if body.confirm else "declined") + (
                    f" by {body.modality}" if body.modality else ""
                )
            case act.TaskCancel():
                user.task(body.task_id, now)["confirm"] = f"cancel sent ({body.reason})"
            case _:
                pass
        self._alert(user, dev, message, now)
        self._log(user, message, "out", "cmd", now)

    def _alert(self, user: _User, dev: dict[str, Any], message: Message, now: int) -> None:
        """A proactive alert: a card with a ``dismiss:<rule>`` button, or an action whose corr names a rule."""
        body, env = message.data, message.envelope
        rule: str | None = None
        if isinstance(body, act.ShowCard):
            rule = next(
                (b.action_id.split(":", 1)[1] for b in body.buttons if b.action_id.startswith("dismiss:")), None
            )
        if rule is None and env.corr and env.corr.startswith("rule:"):
            rule = env.corr.split(":", 1)[1]
        via = f"{dev['kind']}:{body_type(body)}"
        if rule is None:
            # Another action caused by the same event as an alert (the ring's haptic beside the card) joins it.
            for alert in reversed(user.alerts):
                if env.corr and alert["corr"] == env.corr:
                    if via not in alert["via"] and len(alert["via"]) < 8:
                        alert["via"].append(via)
                        user.dirty.add("alerts")
                    return
            return
        for alert in reversed(user.alerts):
            if alert["rule"] == rule and alert["corr"] == env.corr and env.corr:
                if isinstance(body, act.ShowCard):
                    alert["title"], alert["body"] = body.title, body.body
                if via not in alert["via"] and len(alert["via"]) < 8:
                    alert["via"].append(via)
                user.dirty.add("alerts")
                return
        title = body.title if isinstance(body, act.ShowCard) else rule
        text = body.body if isinstance(body, act.ShowCard) else summarize(body)
        user.alerts.append(
            {
                "rule": _short(rule),
                "title": title,
                "body": text,
                "t": now,
                "id": env.id,
                "corr": env.corr,
                "via": [via],
                "dismissed": False,
            }
        )
        user.dirty.add("alerts")

    def _ack(self, user: _User, dev: dict[str, Any], body: act.Ack, message: Message, now: int) -> None:
        shown = user.displays.get(dev["key"])
        if shown is not None and shown.get("action_id") == body.action_id:
            shown["ack"] = body.status
            if body.status in _NOT_DONE:
                shown["ack_detail"] = _short(body.detail, 200)
            user.dirty.add("displays")
        self._log(user, message, "ack", "ack", now, action_id=body.action_id, status=body.status)

    def _health_values(self, values: dict[str, Any]) -> dict[str, float | None]:
        return {_short(k, 40) or "": _finite(v) for k, v in list(values.items())[: self.limits.health_keys]}

    def _context(self, user: _User, body: act.ContextSnapshot, now: int) -> None:
        user.context = {
            "activity": _short(body.activity),
            "place": _short(body.place),
            "quiet": body.quiet,
            "asleep": body.asleep,
            "moving": body.moving,
            "pending": _short(body.pending, 120),
            "display": _short(body.display, 200),
            "speaking": _short(body.speaking, 200),
            "t": now,
        }
        if body.health:  # an agent from before the split; today's publishes its health part on agent/health
            user.health = {
                _short(k, 40) or "": _finite(v) for k, v in list(body.health.items())[: self.limits.health_keys]
            }
        user.dirty.update(("context", "baselines"))
        for name, summary in list(body.devices.items())[: self.limits.devices]:
            if not name or len(name) > 64:
                continue
            known = f"{summary.kind.value}/{name}" in user.devices
            dev = user.device(summary.kind, name, now)
            if not known:
                dev["online"] = summary.online
            for key, value in (("worn", summary.worn), ("battery", summary.battery_pct)):
                if dev[key] is None and value is not None:
                    dev[key] = value
            if summary.last_seen is not None and dev["last_seen"] is None:
                dev["last_seen"] = summary.last_seen
        listed: set[str] = set()
        for raw in body.tasks[: self.limits.context_tasks]:
            task_id = _short(raw.get("task_id"))
            if not task_id:
                continue
            listed.add(task_id)
            task = user.task(task_id, now)
            task["in_context"] = True
            task["skill"] = _short(raw.get("skill")) or task["skill"]
            task["state"] = _short(raw.get("state")) or task["state"]
            rounds = _finite(raw.get("rounds"))
            task["rounds"] = int(rounds) if rounds is not None else task["rounds"]
            eta = _finite(raw.get("eta_s"))
            task["eta_s"] = int(eta) if eta is not None else task["eta_s"]
            task["active"] = task["status"] not in TERMINAL
        for task_id, task in user.tasks.items():
            if task["in_context"] and task_id not in listed and task["active"]:
                # The agent lists only tasks in progress: one it no longer lists is over.
                task["active"] = False
                user.dirty.add("tasks")


_SECTIONS = ("devices", "displays", "audio", "vitals", "baselines", "context", "tasks", "alerts")
