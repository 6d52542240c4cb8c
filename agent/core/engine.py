"""The agent's pure core: fuse each message into the user's context and decide what to send (no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from agent.core import context as cx
from agent.core import routing, rules, settings, skills, tasks
from agent.core.api import Outcome
from agent.core.config import CoreConfig
from agent.core.context import CalendarEvent, DeviceInfo, UserContext
from agent.core.intents import Intent, Reply, ReplyKind, detect_lang, normalize_text, parse
from agent.core.routing import Turn
from agent.core.state import dump, load
from agent.core.wording import lang_of, say
from schemas.actions import (
    PURPOSES,
    Ack,
    ClearDisplay,
    ConsentRequest,
    ConsentState,
    ContextSnapshot,
    DeviceState,
    DeviceSummary,
)
from schemas.envelope import Envelope, Message
from schemas.errors import AgentError
from schemas.events import (
    Activity,
    BatterySwap,
    Body,
    CalendarNext,
    DisplayState,
    EarBattery,
    GlassesBattery,
    GlassesHinge,
    GlassesTouch,
    GlassesWear,
    HeadGesture,
    HeartRate,
    Hrv,
    InEar,
    Location,
    PhoneBattery,
    PhoneTap,
    PlaybackState,
    RespRate,
    RingBattery,
    RingGesture,
    RingWear,
    SkinTemp,
    SleepSegment,
    SpO2,
    Steps,
    Stress,
    SyncBatch,
    TaskStatus,
    UiEvent,
    Utterance,
    Wake,
)
from schemas.shadow import ShadowDesired, ShadowReported
from schemas.topics import Channel, Kind

STATE_VERSION = 2  # 2: each user counts their own action ids
_UNDO_WORDS = frozenset({"undo", "undo that", "undo it", "撤销", "撤回", "撤销吧", "撤回吧"})
_YES_RING = frozenset({"press", "pinch", "double_pinch"})
_CONTEXT_ITEMS = (Steps, SleepSegment)
#: Vital samples: fused and judged by the health rules only with the user's proactive-health consent.
_VITALS = (HeartRate, SpO2, Hrv, SkinTemp, RespRate, Stress)
#: For a measurement the user asked for: the metric, the Health attribute that answers it, the body field.
_VITAL_READING: dict[type, tuple[str, str, str]] = {
    HeartRate: ("hr", "hr", "bpm"),
    SpO2: ("spo2", "spo2", "pct"),
    Hrv: ("hrv", "hrv", "rmssd_ms"),
    Stress: ("stress", "stress", "level"),
}

Handler = Callable[[Turn, DeviceInfo, Envelope[Any], Any], None]


class AgentCore:
    """The pure core of the agent (implements :class:`agent.core.api.Core`).

    Args:
        config: thresholds, timers and user profiles (defaults: :class:`CoreConfig`).

    The runtime calls :meth:`handle` for every decoded, deduplicated message and :meth:`tick` about once a
    second; it publishes the commands that come back. Same inputs at the same times give the same commands.
    """

    def __init__(self, config: CoreConfig | None = None) -> None:
        self.config = config if config is not None else CoreConfig()
        self._users: dict[str, UserContext] = {}
        # Users whose state changed since the last take_changed(): a snapshot writes only those (at 2,500 users a
        # full export took ~260 ms of the event loop every snapshot; docs/benchmarks.md).
        self._dirty: set[str] = set()
        # Intents resolved outside the core (the optional LLM resolver) for utterances by envelope id; consumed
        # when that utterance is handled, so the core stays pure and a replay given the same hints is the same.
        self.hints: dict[str, Intent] = {}
        self._handlers: dict[type[Body], Handler] = {
            Utterance: self._utterance,
            Wake: self._wake,
            RingGesture: self._ring_gesture,
            GlassesTouch: self._touch,
            HeadGesture: self._head,
            UiEvent: self._ui,
            PhoneTap: self._phone_tap,
            HeartRate: self._vital,
            Hrv: self._vital,
            SpO2: self._vital,
            SkinTemp: self._vital,
            RespRate: self._vital,
            Stress: self._vital,
            Steps: self._vital,
            SleepSegment: self._vital,
            SyncBatch: self._batch,
            Location: self._location,
            Activity: self._activity,
            CalendarNext: self._calendar,
            TaskStatus: self._task_status,
            GlassesWear: self._glasses_wear,
            GlassesHinge: self._hinge,
            RingWear: self._ring_wear,
            InEar: self._in_ear,
            GlassesBattery: self._glasses_battery,
            BatterySwap: self._battery_swap,
            EarBattery: self._ear_battery,
            RingBattery: self._battery,
            PhoneBattery: self._battery,
            DisplayState: self._display,
            PlaybackState: self._playback,
        }

    # --- Core

    def handle(self, message: Message, now_ms: int) -> Outcome:
        """Fuse one decoded message (event, ack or device state) into the context and decide what to do."""
        out = Outcome()
        where = message.where
        if where.channel is Channel.CONSENT_SET and where.user is not None:
            self._consent(where.user, message.envelope.data, now_ms, out)
            return out
        if where.user is None or where.kind is None or where.device is None:
            return out
        ctx = self._context(where.user)
        self._dirty.add(where.user)
        ctx.now = max(ctx.now, now_ms)
        dev = cx.device(ctx, where.kind._value_, where.device)  # _value_: enum's .value is a slower property
        body = message.envelope.data
        if where.channel is Channel.EVENT:
            dev.last_seen = now_ms
            handler = self._handlers.get(type(body))
            if handler is None and dev.online:
                # A sample the context keeps only the time of (a head pose: most of what devices send): no turn is
                # made for it (~0.5 µs of the ~2.4 each such event cost).
                return out
            turn = self._turn(ctx, now_ms, message.envelope.id, out)
            if not dev.online:
                dev.online = True
                turn.changed()
            if handler is not None:
                handler(turn, dev, message.envelope, body)
            return out
        turn = self._turn(ctx, now_ms, message.envelope.id, out)
        if where.channel is Channel.ACK and isinstance(body, Ack):
            routing.on_ack(turn, body.action_id, body.action, body.status)
        elif where.channel is Channel.STATE and isinstance(body, DeviceState):
            self._state(turn, dev, body)
            settings.on_state(ctx, f"{dev.kind}/{dev.name}", body)
        elif isinstance(body, ShadowDesired | ShadowReported):
            settings.on_shadow(turn, f"{dev.kind}/{dev.name}", dev.kind, body)
        return out

    def _turn(self, ctx: UserContext, now_ms: int, corr: str, out: Outcome) -> Turn:
        """A turn of ``handle`` for the user of ``ctx``: what it sends is caused by ``corr``."""
        return Turn(self.config, self.config.profile(ctx.user), ctx, now=now_ms, corr=corr, outcome=out)

    def tick(self, now_ms: int, users: Iterable[str] | None = None) -> Outcome:
        """Let timers fire: expiries, undo windows, ack deadlines and fallbacks, time-driven rules.

        ``users``: only these (a runtime with thousands of users ticks them in slices); None: every user.
        """
        out = Outcome()
        cfg = self.config
        known = self._users
        chosen = known.items() if users is None else [(u, known[u]) for u in users if u in known]
        for user, ctx in chosen:
            ctx.now = max(ctx.now, now_ms)
            before = _sizes(out)
            turn = Turn(cfg, cfg.profile(user), ctx, now=now_ms, corr=f"tick-{user}", outcome=out)
            routing.expire(turn)
            tasks.tick(turn)
            skills.tick(turn)
            settings.tick(turn)
            rules.tick(turn)
            routing.release_held(turn)
            flags = self._flags(turn)
            if flags != ctx.flags:
                ctx.flags = flags
                turn.changed()
            if _sizes(out) != before:
                # A timer that produced something changed the user's state. One that changed it silently (a
                # cleared timer, a folded baseline) fires again on the restored state after a crash: same result.
                self._dirty.add(user)
        return out

    def snapshot(self, user: str) -> ContextSnapshot:
        """The fused context of one user, as published on ``wb/v1/{user}/agent/context``."""
        ctx = self._users.get(user)
        if ctx is None:
            return ContextSnapshot(user=user)
        cfg, profile, now = self.config, self.config.profile(user), ctx.now
        h, talk = ctx.health, ctx.talk
        devices = {
            dev.name: DeviceSummary(
                kind=Kind(dev.kind),
                online=dev.online,
                worn=dev.worn,
                battery_pct=dev.battery,
                last_seen=dev.last_seen or None,
            )
            for dev in ctx.devices.values()
        }
        health: dict[str, float | None] = {
            "hr": h.hr,
            "hr_mean_2h": h.hr_window.mean(),
            "hrv": h.hrv,
            "spo2": h.spo2,
            "skin_temp_c": h.skin_temp,
            "skin_temp_dev_c": h.skin_dev,
            "resp_brpm": h.resp,
            "stress": h.stress,
            "steps_today": float(h.steps_today),
            "sleep_min": float(h.sleep_ms // 60_000),
            "rhr_baseline": round(h.rhr.value, 1),
        }
        active = [
            {"task_id": t.task_id, "skill": t.skill, "state": t.state, "eta_s": t.eta_s, "rounds": t.rounds}
            for t in ctx.tasks.values()
            if t.state not in tasks.FINISHED
        ]
        pending = talk.pending or (f"ask:{talk.ask_slot}" if talk.asking else None)
        return ContextSnapshot(
            user=user,
            activity=cx.activity_label(ctx, now, cfg),
            place=ctx.where.place,
            quiet=cx.quiet(ctx, now, cfg, profile),
            asleep=cx.asleep(ctx, now, cfg),
            moving=cx.moving(ctx, now, cfg),
            devices=devices,
            health=health,
            tasks=active,
            pending=pending,
            display=ctx.display,
            speaking=ctx.speaking,
            settings=settings.summary(ctx),
        )

    def export_state(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart, as JSON-ready data."""
        return {"version": STATE_VERSION, "users": {user: dump(ctx) for user, ctx in self._users.items()}}

    def take_changed(self) -> list[str]:
        """The users whose state changed since the last call."""
        changed = [user for user in self._dirty if user in self._users]
        self._dirty.clear()
        return changed

    def export_users(self, users: Iterable[str]) -> dict[str, Any]:
        """As :meth:`export_state`, with only these users (a store keeps the others).

        ``users`` is a read-only mapping that dumps each user when it is read, so a store that encodes them one at a
        time never holds the data of thousands of users at once (a full export at 2,500 users built ~70 MB of
        temporary objects). Read it before handling anything else.
        """
        return {"version": STATE_VERSION, "users": _Dumped(self._users, [u for u in users if u in self._users])}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`export_state` returned (or a state of version 1, whose action counter was shared).

        Raises:
            AgentError: the state is of another version or does not fit.
        """
        version = state.get("version")
        if version not in (1, STATE_VERSION):
            raise AgentError(f"cannot restore core state version {version!r}")
        users = {user: load(UserContext, data) for user, data in state.get("users", {}).items()}
        if version == 1:  # one counter for every user's action ids: each user goes on past it, so no id comes again
            shared = int(state.get("ids", 0))
            for ctx in users.values():
                ctx.talk.action_counter = max(ctx.talk.action_counter, shared)
        self._users = users
        self._dirty.clear()

    # --- helpers

    @property
    def users(self) -> list[str]:
        """Users with a context."""
        return list(self._users)

    def timed_users(self) -> list[str]:
        """Users with a timer of seconds running: an output waiting for its ack (or held while asleep), a
        confirmation, a question, an undo window, a measurement, a guess asked back, a quote, a settings
        confirmation. Their ticks are due within seconds; every other timer is minutes apart."""
        return [user for user, ctx in self._users.items() if _timed(ctx)]

    def context(self, user: str) -> UserContext | None:
        """The live context of a user (for inspection and tests)."""
        return self._users.get(user)

    def _context(self, user: str) -> UserContext:
        ctx = self._users.get(user)
        if ctx is None:
            ctx = self._users[user] = cx.new_context(user, self.config)
        return ctx

    def _flags(self, turn: Turn) -> str:
        ctx, cfg, now = turn.ctx, turn.cfg, turn.now
        bits = (cx.quiet(ctx, now, cfg, turn.profile), cx.asleep(ctx, now, cfg), cx.moving(ctx, now, cfg))
        return "".join("1" if b else "0" for b in bits)

    @staticmethod
    def _awake(turn: Turn) -> None:
        h = turn.ctx.health
        h.awake_sign = max(h.awake_sign, turn.now)
        if turn.ctx.held:
            routing.release_held(turn)

    # --- devices

    def _state(self, turn: Turn, dev: DeviceInfo, body: DeviceState) -> None:
        was = dev.online
        dev.online = body.online
        if body.battery_pct is not None:
            _set_battery(turn, dev, body.battery_pct)
        if body.online:  # a birth that lists its actions is taken at its word; an empty list means "not said"
            dev.actions = tuple(body.capabilities) or None
        if was != body.online:
            turn.changed()
        if not body.online:
            routing.on_offline(turn, dev.kind)

    def _glasses_wear(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: GlassesWear) -> None:
        dev.worn = body.state == "donned"
        turn.changed()
        if dev.worn:
            self._awake(turn)
        else:
            routing.on_offline(turn, "glasses")  # a card on glasses nobody wears is not seen

    def _hinge(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: GlassesHinge) -> None:
        if body.state == "folded" and dev.worn is not False:
            dev.worn = False
            turn.changed()
            routing.on_offline(turn, "glasses")

    def _ring_wear(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: RingWear) -> None:
        dev.worn = body.state == "on_finger"
        turn.changed()

    def _in_ear(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: InEar) -> None:
        ears = [e for e in dev.ears if e != body.side]
        if body.state == "in":
            ears.append(body.side)
        dev.ears = tuple(sorted(ears))
        worn = bool(ears)
        if worn != dev.worn:
            dev.worn = worn
            turn.changed()

    def _glasses_battery(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: GlassesBattery) -> None:
        dev.charging, dev.in_case = body.charging, body.in_case
        _set_battery(turn, dev, body.level_pct)
        if body.cells:
            cx.set_cells(dev, [(c.slot, c.level_pct, c.present) for c in body.cells])
        rules.on_glasses_battery(turn, dev)

    def _battery_swap(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: BatterySwap) -> None:
        other = "right" if body.slot == "left" else "left"
        cells = dict(dev.cells or {})
        if body.action == "removed":
            cells.pop(body.slot, None)
        else:
            cells[body.slot] = 100.0
            rules.rearm_cell(turn, body.slot)
        cells[other] = body.remaining_pct_other
        dev.cells = cells

    def _ear_battery(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: EarBattery) -> None:
        dev.charging = body.charging
        _set_battery(turn, dev, min(body.left_pct, body.right_pct))

    def _battery(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: RingBattery | PhoneBattery) -> None:
        dev.charging = body.charging
        _set_battery(turn, dev, body.level_pct)

    def _display(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: DisplayState) -> None:
        turn.ctx.display = body.app if body.on and body.app != "none" else None
        if body.app in ("nav", "translate", "ai", "text"):
            turn.ctx.talk.prompter = None  # the wearer left the script: taps no longer turn its pages
        turn.changed()

    def _playback(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: PlaybackState) -> None:
        # the context is public (every app reads it): a flagged text quotes a health value, so only the state shows
        text = None if body.health else body.text
        turn.ctx.speaking = None if body.state == "idle" else (text or body.state)[:64]
        turn.changed()

    # --- conversation

    def _utterance(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: Utterance) -> None:
        if not body.final:
            return
        turn.ctx.talk.spoke_on[dev.kind] = dev.name  # its answers go back where the user spoke
        turn.heard_on = dev.kind
        self._awake(turn)
        tag = body.lang
        normal: str | None = None  # body.text normalised, once it is needed
        if lang_of(tag) == "en":
            normal = normalize_text(body.text)
            if detect_lang(normal[:500]) == "zh":
                tag = "zh"  # many ASR front ends leave the default tag on Chinese text
        hint = self.hints.pop(env.id, None)
        parsed = hint if hint is not None else parse(body.text, tag)
        lang = lang_of(parsed.lang)
        talk = turn.ctx.talk
        if talk.guess is not None and skills.answer_guess(turn, parsed):
            return
        if talk.asking is not None and skills.answer(turn, body.text, lang, parsed):
            return
        if settings.start(turn, body.text, lang):  # "turn the glasses brightness down", "把戒指心率测量改成每五分钟"
            return
        if isinstance(parsed, Reply):
            yes = parsed.kind is ReplyKind.CONFIRM
            if settings.resolve(turn, yes) or tasks.resolve(turn, yes, "voice") or yes or skills.undo(turn):
                return
            if parsed.kind is ReplyKind.CANCEL:
                tasks.cancel_latest(turn, lang)  # "cancel my ride": the task in progress
            return
        if normal is None:
            normal = normalize_text(body.text)
        if normal.strip(" .!?").lower() in _UNDO_WORDS and skills.undo(turn):
            return
        if isinstance(parsed, Intent):
            if parsed.sure:
                skills.start(turn, parsed)
            else:
                skills.guess(turn, parsed)  # a fuzzy reading: asked back, never acted on
            return
        talk.lang = lang
        text = say("not_understood", lang)
        turn.say(cx.Output(title=text, speech=text, lang=lang, ttl_s=5, reason="skill:unknown"))

    def _wake(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: Wake) -> None:
        turn.ctx.talk.wake_ts = turn.now
        self._awake(turn)

    def _yes(self, turn: Turn, modality: str, *, page: bool = True) -> None:
        self._awake(turn)
        if settings.resolve(turn, True):  # a pending settings change (a sensor stream off, a new wake word)
            return
        if not tasks.resolve(turn, True, modality) and page:
            skills.page(turn, +1)

    def _no(self, turn: Turn, modality: str) -> None:
        self._awake(turn)
        if settings.resolve(turn, False):
            return
        if not tasks.resolve(turn, False, modality):
            skills.undo(turn)

    def _ring_gesture(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: RingGesture) -> None:
        g = body.gesture
        if g in _YES_RING:
            self._yes(turn, "ring")
        elif g in ("scroll_down", "scroll_up"):
            self._awake(turn)
            skills.page(turn, +1 if g == "scroll_down" else -1)
        else:  # long press: the one-key wake
            turn.ctx.talk.wake_ts = turn.now
            self._awake(turn)

    def _touch(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: GlassesTouch) -> None:
        g = body.gesture
        if g == "tap":
            self._yes(turn, "tap")
        elif g == "double_tap":
            self._no(turn, "tap")
        elif g in ("swipe_forward", "swipe_back"):
            self._awake(turn)
            skills.page(turn, +1 if g == "swipe_forward" else -1)
        elif g == "long_press_start":
            turn.ctx.talk.wake_ts = turn.now
            self._awake(turn)

    def _head(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: HeadGesture) -> None:
        if body.confidence < 0.6:
            return
        if body.gesture == "nod":
            self._yes(turn, "nod", page=False)
        elif body.gesture == "shake":
            self._no(turn, "nod")

    def _ui(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: UiEvent) -> None:
        if body.event != "click" or not body.action_id:
            return
        self._awake(turn)
        verb, _, target = body.action_id.partition(":")
        if verb in ("confirm", "deny"):
            tasks.resolve(turn, verb == "confirm", "tap", target)
        elif verb == "dismiss":
            turn.send("glasses", ClearDisplay(), f"rule:{target}", dev=dev)

    def _phone_tap(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: PhoneTap) -> None:
        self._awake(turn)
        tasks.resolve(turn, body.choice == "confirm", "phone", body.prompt_id)

    # --- sensors

    def _vital(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: Any) -> None:
        t = body.src_ts if body.src_ts is not None else env.sample_ts
        self._sample(turn, body, t)

    def _batch(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: SyncBatch) -> None:
        # Activity items first (steps, sleep), so each vital is judged knowing whether the user was resting
        # or asleep then; then everything in sample-time order.
        items = sorted(body.items, key=lambda i: (not isinstance(i, _CONTEXT_ITEMS), i.src_ts or 0))
        for item in items:
            self._sample(turn, item, item.src_ts if item.src_ts is not None else env.sample_ts)

    def _consent(self, user: str, body: Any, now_ms: int, out: Outcome) -> None:
        if not isinstance(body, ConsentRequest):
            return
        ctx = self._context(user)
        self._dirty.add(user)
        ctx.now = max(ctx.now, now_ms)
        ctx.consent[body.purpose] = body.granted
        if body.purpose == cx.PROACTIVE_HEALTH and not body.granted:
            cx.drop_vitals(ctx.health)
        out.context_changed.add(user)

    def consents(self, user: str, purpose: str) -> bool:
        """Whether ``user`` consents to ``purpose`` now (the profile's consent for a user not seen yet)."""
        ctx = self._users.get(user)
        profile = self.config.profile(user)
        return cx.consented(ctx, profile, purpose) if ctx is not None else purpose in profile.consent

    def consent(self, user: str) -> ConsentState:
        """The consents of one user, as published on ``wb/v1/{user}/agent/consent``."""
        ctx = self._users.get(user)
        profile = self.config.profile(user)
        purposes = {p: cx.consented(ctx, profile, p) if ctx else p in profile.consent for p in PURPOSES}
        return ConsentState(user=user, purposes=purposes)

    def _sample(self, turn: Turn, item: Any, t: int) -> None:
        ctx, cfg, profile, corr = turn.ctx, turn.cfg, turn.profile, turn.corr
        if isinstance(item, _VITALS) and not cx.consented(ctx, profile, cx.PROACTIVE_HEALTH):
            # No consent: no health rule runs and no sample is kept; a reading the user asked for is answered
            # from this sample alone, then forgotten.
            metric, attr, value = _VITAL_READING.get(type(item), ("", "", None))
            if metric and ctx.talk.measure and ctx.talk.measure[0] == metric and value is not None:
                setattr(ctx.health, attr, getattr(item, value))
                skills.on_reading(turn, metric, getattr(item, value), t)
                setattr(ctx.health, attr, None)
            return
        if isinstance(item, HeartRate):
            rules.night_due(turn, t)
            cx.add_hr(
                ctx,
                t,
                item.bpm,
                source=item.source,
                quality=item.quality,
                corr=corr,
                cfg=cfg,
                profile=profile,
            )
            rules.on_hr(turn, t, item.bpm, item.source, item.quality)
            if ctx.talk.measure and item.quality >= cfg.min_quality:
                skills.on_reading(turn, "hr", item.bpm, t)
        elif isinstance(item, SpO2):
            rules.night_due(turn, t)
            cx.add_spo2(ctx, t, item.pct, item.source)
            rules.on_spo2(turn, t, item.pct, item.quality)
            if ctx.talk.measure and item.quality >= cfg.min_quality:
                skills.on_reading(turn, "spo2", item.pct, t)
        elif isinstance(item, Hrv):
            rules.night_due(turn, t)
            cx.add_hrv(ctx, t, item.rmssd_ms, corr=corr, cfg=cfg, profile=profile)
            if ctx.talk.measure:
                skills.on_reading(turn, "hrv", item.rmssd_ms, t)
        elif isinstance(item, SkinTemp):
            rules.night_due(turn, t)
            cx.add_skin_temp(
                ctx, t, celsius=item.celsius, deviation=item.deviation_c, corr=corr, cfg=cfg, profile=profile
            )
            if item.deviation_c is not None:
                rules.on_skin_deviation(turn, t, item.deviation_c)
        elif isinstance(item, Steps):
            cx.add_steps(ctx, item.bucket_start, item.bucket_s, item.steps, profile)
            if item.steps > cfg.rest_steps_per_bucket * max(1.0, item.bucket_s / 900):
                ctx.health.awake_sign = max(ctx.health.awake_sign, item.bucket_start + item.bucket_s * 1000)
        elif isinstance(item, SleepSegment):
            cx.add_sleep(ctx, item.stage, item.start_ts, item.end_ts)
        elif isinstance(item, RespRate):
            cx.add_resp(ctx, t, item.brpm, cfg)
        elif isinstance(item, Stress):
            cx.add_stress(ctx, t, item.level)
            if ctx.talk.measure:
                skills.on_reading(turn, "stress", item.level, t)
        turn.changed()

    def _location(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: Location) -> None:
        ctx, cfg, profile = turn.ctx, turn.cfg, turn.profile
        w = ctx.where
        t = env.sample_ts
        if t < w.loc_ts:
            return  # an older fix than the one we have
        cx.learn_dwell(w, cx.cell_key(body.lat, body.lon), t, cfg, profile)
        w.lat, w.lon, w.loc_ts, w.speed = body.lat, body.lon, t, body.speed_mps
        place = body.place or cx.name_place(ctx, body.lat, body.lon, cfg, profile)
        if place != w.place:
            w.place = place
            turn.changed()
        if ctx.events:
            rules.leave_now(turn)

    def _activity(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: Activity) -> None:
        w = turn.ctx.where
        if body.activity != w.activity:
            cx.set_activity(w, body.activity, env.sample_ts)
            turn.changed()
        if body.activity in cx.MOVING:
            self._awake(turn)

    def _calendar(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: CalendarNext) -> None:
        ev = CalendarEvent(body.title, body.start_ts, body.location, body.lat, body.lon, env.id)
        cx.add_event(turn.ctx, ev, turn.now, turn.cfg)
        turn.changed()
        rules.leave_now(turn)

    def _task_status(self, turn: Turn, dev: DeviceInfo, env: Envelope[Any], body: TaskStatus) -> None:
        tasks.on_status(turn, body, env.corr)


def _set_battery(turn: Turn, dev: DeviceInfo, level: float) -> None:
    """A device's battery level; the retained context shows it, so a new level republishes it."""
    if level != dev.battery:
        dev.battery = level
        turn.changed()


def _timed(ctx: UserContext) -> bool:
    """Whether a timer of seconds runs for this user (see :meth:`AgentCore.timed_users`)."""
    talk = ctx.talk
    return bool(
        ctx.outputs
        or ctx.held
        or talk.pending is not None
        or talk.asking is not None
        or talk.undo is not None
        or talk.measure
        or talk.guess
        or ctx.settings.pending is not None
        or any(task.state == "quoting" for task in ctx.tasks.values())
    )


def _sizes(out: Outcome) -> tuple[int, ...]:
    """How much an outcome holds (a tick that added anything changed the user's state)."""
    return len(out.commands), len(out.tasks), len(out.alerts), len(out.context_changed), len(out.desired)


class _Dumped(Mapping[str, Any]):
    """Users' state, dumped when read (see :meth:`AgentCore.export_users`)."""

    def __init__(self, users: dict[str, UserContext], names: list[str]) -> None:
        self._users = users
        self._names = dict.fromkeys(names)

    def __getitem__(self, user: str) -> Any:
        if user not in self._names:
            raise KeyError(user)
        return dump(self._users[user])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
