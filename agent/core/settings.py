"""The settings skill, pure: a one-sentence request ("turn the glasses brightness down", "把戒指心率测量改成每五分钟")
to desired settings per device, a confirmation tier by impact, and what the agent knows of each device's shadow
(desired vs applied, rejections), for the context and for answers.

The agent writes a device's ``shadow/desired`` (the runtime publishes the documents collected in
``Outcome.desired``); the device applies it when it is next connected and reports back. Low-impact changes are made
at once; turning a sensor stream off or changing the wake word asks first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent.core.context import Output, UserContext
from agent.core.routing import Turn
from agent.core.shadow_state import DeviceSettings, PendingChange
from schemas.actions import DeviceState
from schemas.errors import ShadowError, ValidationFailed
from schemas.shadow import (
    SETTINGS,
    QuietHours,
    ShadowDesired,
    ShadowReported,
    merge,
    values,
)
from schemas.topics import DeviceId, Kind

CONFIRM_S = 30
#: A desired document the agent wrote but has not heard back within this (a crash between storing the request and
#: the publish, a lost connection) is published again, at most ``MAX_RESENDS`` times.
RESEND_S = 10
MAX_RESENDS = 3
STEP = 0.2
#: What a device uses when nothing was set (for "a bit brighter" before any report came).
DEFAULTS: dict[str, float] = {"brightness": 0.8, "volume": 0.6, "haptic_strength": 1.0}
_MIN = {"brightness": 0.05, "volume": 0.0, "haptic_strength": 0.1}


@dataclass(frozen=True, slots=True)
class SettingRequest:
    """A settings request understood from one sentence.

    Attributes:
        key: the setting.
        kind: the device kind (``None``: every device that has the setting, e.g. quiet hours).
        value: an absolute value (``None`` with ``step`` 0: clear it).
        step: a relative change (+1 up, -1 down) for brightness, volume and haptic strength.
        stream_on: for ``streams``: turn ``value`` on (True) or off (False).
    """

    key: str
    kind: Kind | None
    value: Any = None
    step: int = 0
    stream_on: bool | None = None


# --------------------------------------------------------------------------------------------- understanding

_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_KINDS = (
    (Kind.GLASSES, r"glasses|眼镜"),
    (Kind.RING, r"ring|戒指"),
    (Kind.EARPHONES, r"earphones?|earbuds?|buds|headphones?|耳机"),
    (Kind.PHONE, r"phone|手机"),
)
_STREAMS = (
    ("spo2", r"spo2|blood oxygen|oxygen|血氧"),
    ("hrv", r"hrv|heart rate variability|心率变异"),
    ("hr", r"heart[- ]?rate|心率|心跳"),
    ("skin_temp", r"temperature|skin temp|体温|皮温|温度"),
    ("steps", r"steps?|step count|步数|计步"),
    ("sleep", r"sleep|睡眠"),
)
_OFF = r"turn off|switch off|stop|disable|pause|关闭|关掉|关了|停止|停掉|不要"
_ON = r"turn on|switch on|enable|start|resume|开启|打开|开始|恢复"
_DOWN = (
    r"down|lower|dim|dimmer|darker|quieter|softer|weaker|less"
    r"|调低|调暗|调小|降低|暗一点|暗点|低一点|小一点|小点|弱一点|轻一点|弱"
)
_QUIET_LEAD = re.compile(r"^.*?(?:hours?|disturb|dnd|免打扰|勿扰)\s*(?:时间|时段)?\s*(?:from|为|设为|是|从|:)?\s*")
_UP = r"up|higher|brighter|louder|stronger|more|调高|调亮|调大|提高|亮一点|亮点|高一点|大一点|大点|强一点|重一点|强"
_QUIET = r"quiet hours?|do not disturb|dnd|免打扰|勿扰"
_WAKE = r"wake ?word|唤醒词"
_HR = r"heart[- ]?rate|心率"
_LEVELS = (
    ("brightness", r"brightness|bright|dim|darker|亮度|屏幕|亮|暗", Kind.GLASSES),
    ("volume", r"volume|louder|quieter|音量|声音", Kind.EARPHONES),
    ("haptic_strength", r"vibration|haptics?|buzz|震动|振动", Kind.RING),
)
_DISPLAY = r"display|language|显示|语言"
#: What every settings request holds one of (each branch of :func:`parse` needs one to match): most sentences
#: are not settings requests, and this one search turns them away instead of a dozen.
TRIGGER = re.compile("|".join((_QUIET, _WAKE, _OFF, _ON, _HR, *(p for _, p, _ in _LEVELS), _DISPLAY)))


def _num(text: str) -> int | None:
    """An integer in digits or Chinese numerals up to 99 (五, 十, 十五, 二十, 两)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if not text or any(c not in _ZH_DIGITS and c != "十" for c in text):
        return None
    if "十" in text:
        tens, _, ones = text.partition("十")
        return (_ZH_DIGITS[tens] if tens else 1) * 10 + (_ZH_DIGITS[ones] if ones else 0)
    return _ZH_DIGITS[text] if len(text) == 1 else None


_N = r"(\d{1,3}|[零一二两三四五六七八九十]{1,3})"


def _kind(text: str) -> Kind | None:
    for kind, pattern in _KINDS:
        if re.search(pattern, text):
            return kind
    return None


def _clock(text: str) -> str | None:
    """``10pm``, ``22:00``, ``7 am``, ``晚上十点``, ``早上7点半`` to ``HH:MM``."""
    m = re.fullmatch(r"\s*(\d{1,2})(?::(\d{2}))?\s*(am|pm)?\s*", text)
    zh = re.fullmatch(r"\s*(凌晨|早上|上午|中午|下午|晚上)?" + _N + r"[点点:：](半|\d{2}分?)?\s*", text)
    if m:
        hour, minute, half = int(m.group(1)), int(m.group(2) or 0), m.group(3)
        if half == "pm" and hour < 12:
            hour += 12
        elif half == "am" and hour == 12:
            hour = 0
    elif zh:
        number = _num(zh.group(2))
        if number is None:
            return None
        hour = number
        minute = 30 if zh.group(3) == "半" else int((zh.group(3) or "0").rstrip("分"))
        if zh.group(1) in {"下午", "晚上"} and hour < 12:
            hour += 12
    else:
        return None
    return f"{hour:02d}:{minute:02d}" if hour < 24 and minute < 60 else None


def parse(text: str) -> SettingRequest | None:
    """A settings request in one English or Chinese sentence, or ``None`` when it is not one."""
    t = text.strip().lower()
    if len(t) > 200 or not TRIGGER.search(t):
        return None
    kind = _kind(t)
    if re.search(_QUIET, t):
        if re.search(_OFF, t) and not re.search(r"from|到|至|-", t):
            return SettingRequest("quiet_hours", kind, None)
        m = re.search(r"(?:from\s+)?(.+?)\s*(?:to|until|till|-|到|至)\s*(.+?)(?:[.!?。！]|$)", t)
        if m:
            start = _clock(_QUIET_LEAD.sub("", m.group(1)))
            end = _clock(m.group(2))
            if start and end and start != end:
                return SettingRequest("quiet_hours", kind, QuietHours(start=start, end=end).model_dump())
        return None
    m = re.search(
        r"(?:" + _WAKE + r")\s*(?:to|为|改成|改为|换成|设为|设成|=)\s*[\"'“「]?([^\"'”」]+?)[\"'”」]?\s*[.!?。！]?$",
        t,
    )
    if m:
        original = text.strip()[m.start(1) : m.end(1)]  # keep the user's case
        return SettingRequest("wake_word", Kind.EARPHONES, original.strip())
    off = re.search(_OFF, t)
    if (off or re.search(_ON, t)) and not re.search(r"every|每|间隔|interval", t):
        for stream, pattern in _STREAMS:
            if re.search(pattern, t):
                return SettingRequest("streams", Kind.RING, stream, stream_on=off is None)
    if re.search(_HR, t) and (
        m := re.search(r"(?:every|每隔|每|间隔)\s*" + _N + r"?\s*(min|minutes?|mins?|分钟|hours?|hrs?|小时)", t)
    ):
        n = _num(m.group(1)) if m.group(1) else 1
        if n:
            seconds = n * (3600 if m.group(2)[0] in "h小" else 60)
            return SettingRequest("hr_interval_s", Kind.RING, seconds)
    for key, pattern, default_kind in _LEVELS:
        if not re.search(pattern, t):
            continue
        if (m := re.search(r"(\d{1,3})\s*(%|percent|％)", t)) or (m := re.search(r"百分之" + _N, t)):
            n = _num(m.group(1))
            if n is not None:
                return SettingRequest(key, kind or default_kind, min(100, n) / 100)
        if re.search(_DOWN, t):
            return SettingRequest(key, kind or default_kind, step=-1)
        if re.search(_UP, t):
            return SettingRequest(key, kind or default_kind, step=+1)
    if re.search(_DISPLAY, t) and (kind in {None, Kind.GLASSES}):
        if re.search(r"chinese|中文|汉语", t):
            return SettingRequest("display_lang", Kind.GLASSES, "zh")
        if re.search(r"english|英文|英语", t):
            return SettingRequest("display_lang", Kind.GLASSES, "en")
    return None


def tier(request: SettingRequest) -> int:
    """1: ask first (a sensor stream off, a new wake word); 0: just do it."""
    if request.key == "streams" and request.stream_on is False:
        return 1
    return 1 if request.key == "wake_word" else 0


# --------------------------------------------------------------------------------------------- the shadows


def on_state(ctx: UserContext, key: str, body: DeviceState) -> None:
    """A birth: which settings the device says it can apply."""
    if body.settings is not None and body.kind is not None:
        entry = ctx.settings.devices.setdefault(key, DeviceSettings(kind=body.kind.value))
        entry.supported = list(body.settings)


def on_shadow(turn: Turn, key: str, kind: str, body: ShadowDesired | ShadowReported) -> None:
    """A desired or reported document: keep what it says; tell the user about a rejection once."""
    entry = turn.ctx.settings.devices.setdefault(key, DeviceSettings(kind=kind))
    if isinstance(body, ShadowDesired):
        entry.seen = max(entry.seen, body.version)
        if body.version >= entry.desired_version:
            entry.desired_version, entry.desired = body.version, values(body.settings)
            entry.resends = 0
        turn.changed()
        return
    entry.refused = body.refused.reason if body.refused is not None else None
    if body.version >= entry.reported_version:
        entry.reported_version, entry.reported = body.version, values(body.settings)
        entry.rejected = dict(body.rejected)
    turn.changed()
    problems = {k: v for k, v in entry.rejected.items() if k in entry.desired}
    if (problems or entry.refused) and entry.told < body.version:
        entry.told = body.version
        lang = turn.ctx.talk.lang
        what = "; ".join(f"{_label(k, lang)}: {why}" for k, why in problems.items()) or (entry.refused or "")
        title = f"{_device(kind, lang)}没有应用设置" if lang == "zh" else f"The {_device(kind, lang)} did not apply it"
        turn.say(Output(title=title, body=what[:200], lang=lang, ttl_s=10, reason="skill:settings_rejected"))


def where_applied(ctx: UserContext, key: str) -> tuple[list[str], list[str]]:
    """Of the devices whose desired settings hold ``key``: those that applied it and those that have not yet."""
    done: list[str] = []
    waiting: list[str] = []
    for name, entry in sorted(ctx.settings.devices.items()):
        if key in entry.desired:
            (done if entry.status().get(key) == "applied" else waiting).append(name)
    return done, waiting


def summary(ctx: UserContext) -> dict[str, dict[str, str]]:
    """Per device, each desired setting's status (for the context snapshot)."""
    return {name: entry.status() for name, entry in sorted(ctx.settings.devices.items()) if entry.desired}


# --------------------------------------------------------------------------------------------- acting


def start(turn: Turn, text: str, lang: str) -> bool:
    """Handle an utterance if it is a settings request; whether it was."""
    request = parse(text)
    if request is None:
        return False
    ctx = turn.ctx
    targets = [
        (name, entry)
        for name, entry in _known(ctx).items()
        if (request.kind is None or entry.kind == request.kind.value) and request.key in _keys(entry)
    ]
    if not targets:
        which = _device(request.kind.value, lang) if request.kind else ("设备" if lang == "zh" else "devices")
        title = (
            f"没有找到可以设置的{which}" if lang == "zh" else f"I don't know {which} of yours that have that setting"
        )
        turn.say(Output(title=title, lang=lang, ttl_s=6, reason="skill:settings"))
        return True
    docs: dict[str, dict[str, Any]] = {}
    for name, entry in targets:
        patch = {request.key: _value(request, entry)}
        try:
            doc = _next(name, entry, patch)
        except ShadowError as exc:
            turn.say(Output(title=_refusal(lang), body=exc.detail[:200], lang=lang, ttl_s=8, reason="skill:settings"))
            return True
        except ValidationFailed as exc:
            turn.say(Output(title=_refusal(lang), body=exc.detail[:200], lang=lang, ttl_s=8, reason="skill:settings"))
            return True
        docs[name] = doc.model_dump(mode="json")
    if tier(request):
        ctx.settings.pending = PendingChange(docs, turn.now + CONFIRM_S * 1000, lang)
        speech = _confirm_text(request, targets[0][1].kind, lang)
        title = "确认更改设置？" if lang == "zh" else "Change this setting?"
        out = Output(
            title=title, body=speech, speech=speech, lang=lang, ttl_s=CONFIRM_S, reason="skill:settings_confirm"
        )
        turn.say(out)
        turn.changed()
        return True
    _write(turn, docs)
    _done(turn, request, [n for n, _ in targets], lang)
    return True


def resolve(turn: Turn, yes: bool) -> bool:
    """A yes or no to a pending settings change; whether there was one."""
    pending = turn.ctx.settings.pending
    if pending is None or pending.until < turn.now:
        turn.ctx.settings.pending = None
        return False
    turn.ctx.settings.pending = None
    lang = pending.lang
    if yes:
        _write(turn, pending.docs)
        title = "好的，已更改设置" if lang == "zh" else "Done: setting changed"
    else:
        title = "好的，不改了" if lang == "zh" else "OK, left as it is"
    turn.say(Output(title=title, lang=lang, ttl_s=5, reason="skill:settings"))
    turn.changed()
    return True


def _write(turn: Turn, docs: dict[str, dict[str, Any]]) -> None:
    for name, raw in docs.items():
        doc = ShadowDesired.model_validate(raw)
        entry = turn.ctx.settings.devices[name]
        kind, device = name.split("/", 1)
        turn.outcome.desired.append((DeviceId(turn.ctx.user, Kind(kind), device), doc))
        entry.desired_version, entry.desired = doc.version, values(doc.settings)
        entry.written_at, entry.resends = turn.now, 0
    turn.changed()


def tick(turn: Turn) -> None:
    """Publish again a desired document the agent wrote but never heard back (it is retained and versioned, so a
    copy changes nothing); drop a confirmation nobody answered."""
    ctx = turn.ctx
    if ctx.settings.pending is not None and ctx.settings.pending.until < turn.now:
        ctx.settings.pending = None
    for name, entry in ctx.settings.devices.items():
        if entry.desired_version <= entry.seen or entry.resends >= MAX_RESENDS:
            continue
        if turn.now - entry.written_at < RESEND_S * 1000:
            continue
        kind, device = name.split("/", 1)
        doc = ShadowDesired(
            version=entry.desired_version, settings=SETTINGS[Kind(kind)].model_validate(entry.desired), by="agent"
        )
        turn.outcome.desired.append((DeviceId(ctx.user, Kind(kind), device), doc))
        entry.written_at = turn.now
        entry.resends += 1


def _known(ctx: UserContext) -> dict[str, DeviceSettings]:
    """Every device of the user (seen as a device or through its shadow)."""
    for name, dev in ctx.devices.items():
        if name not in ctx.settings.devices:
            ctx.settings.devices[name] = DeviceSettings(kind=dev.kind)
    return ctx.settings.devices


def _keys(entry: DeviceSettings) -> set[str]:
    kind = Kind(entry.kind)
    return set(SETTINGS[kind].model_fields) - {"kind"}


def _value(request: SettingRequest, entry: DeviceSettings) -> Any:
    key = request.key
    if key == "streams":
        current = entry.desired.get("streams") or entry.reported.get("streams")
        streams = set(current) if current is not None else {"hr", "hrv", "spo2", "skin_temp", "steps", "sleep"}
        (streams.add if request.stream_on else streams.discard)(request.value)
        return sorted(streams)
    if request.step:
        base = entry.desired.get(key, entry.reported.get(key, DEFAULTS.get(key, 0.5)))
        return round(min(1.0, max(_MIN.get(key, 0.0), float(base) + request.step * STEP)), 2)
    return request.value


def _next(name: str, entry: DeviceSettings, patch: dict[str, Any]) -> ShadowDesired:
    kind = Kind(entry.kind)
    current = (
        ShadowDesired(version=entry.desired_version, settings=SETTINGS[kind].model_validate(entry.desired))
        if entry.desired_version
        else None
    )
    return merge(kind, current, patch, by="agent", supported=entry.supported, device=name)


_LABELS = {
    "brightness": ("brightness", "亮度"),
    "display_lang": ("display language", "显示语言"),
    "volume": ("volume", "音量"),
    "wake_word": ("wake word", "唤醒词"),
    "hr_interval_s": ("heart-rate interval", "心率测量间隔"),
    "haptic_strength": ("vibration strength", "震动强度"),
    "streams": ("sensors", "传感器"),
    "quiet_hours": ("quiet hours", "免打扰时段"),
}
_DEVICES = {
    "glasses": ("glasses", "眼镜"),
    "ring": ("ring", "戒指"),
    "earphones": ("earphones", "耳机"),
    "phone": ("phone", "手机"),
}
_STREAM_NAMES = {
    "hr": ("heart-rate", "心率"),
    "hrv": ("HRV", "心率变异"),
    "spo2": ("blood-oxygen", "血氧"),
    "skin_temp": ("temperature", "体温"),
    "steps": ("step", "步数"),
    "sleep": ("sleep", "睡眠"),
}


def _pick(pair: tuple[str, str], lang: str) -> str:
    return pair[1] if lang == "zh" else pair[0]


def _label(key: str, lang: str) -> str:
    return _pick(_LABELS.get(key, (key, key)), lang)


def _device(kind: str, lang: str) -> str:
    return _pick(_DEVICES.get(kind, (kind, kind)), lang)


def _refusal(lang: str) -> str:
    return "这个设置改不了" if lang == "zh" else "I can't change that setting"


def _confirm_text(request: SettingRequest, kind: str, lang: str) -> str:
    if request.key == "streams":
        stream = _pick(_STREAM_NAMES.get(str(request.value), (str(request.value),) * 2), lang)
        if lang == "zh":
            return f"要关闭{_device(kind, lang)}的{stream}监测吗？"
        return f"Turn off {stream} tracking on the {_device(kind, lang)}?"
    if lang == "zh":
        return f"把唤醒词改成「{request.value}」吗？"
    return f"Change the wake word to “{request.value}”?"


def _shown(request: SettingRequest, value: Any) -> str:
    if request.key in {"brightness", "volume", "haptic_strength"}:
        return f"{float(value):.0%}"
    if request.key == "hr_interval_s":
        return f"{int(value) // 60} min"
    if request.key == "quiet_hours":
        return "off" if value is None else f"{value['start']}-{value['end']}"
    return str(value)


def _done(turn: Turn, request: SettingRequest, names: list[str], lang: str) -> None:
    entry = turn.ctx.settings.devices[names[0]]
    value = entry.desired.get(request.key)
    offline = [n for n in names if not (turn.ctx.devices.get(n) and turn.ctx.devices[n].online)]
    label = _label(request.key, lang)
    if lang == "zh":
        title = f"{label}已设为{_shown(request, value)}"
        body = "设备下次连接时生效" if offline else ""
    else:
        title = f"{label[:1].upper()}{label[1:]} set to {_shown(request, value)}"
        body = f"{', '.join(offline)} will apply it when next connected" if offline else ""
    turn.say(Output(title=title, body=body, lang=lang, ttl_s=6, reason="skill:settings"))
