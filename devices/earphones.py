"""The AI-earphones emulator: in-ear detection, stem touches, head gestures, voice, motion activity, noise
cancelling, music, and the agent's speech with a queue that an urgent message can barge into.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from devices.emulator import Armed, Emulator, WakeTrigger, speaking_ms
from devices.models import EarphonesBattery, Slot
from devices.scenario_plan import Change
from devices.scenario_spec import EarphonesSpec, Step
from devices.sdk import ActionRejected, SettingRejected, on_action
from schemas.actions import Earcon, MediaControl, SetAnc, Speak
from schemas.envelope import Envelope
from schemas.events import Activity, AncState, Body, EarBattery, EarTouch, HeadGesture, InEar, PlaybackState, Wake
from schemas.topics import Kind

PlaybackKind = Literal["speaking", "idle", "music"]
MAX_QUEUE = 16
# Drain multipliers of EarphonesBattery (1.0 = listening, 6 h a bud).
LOAD_IDLE, LOAD_MUSIC, LOAD_SPEAKING, LOAD_ANC = 0.35, 1.0, 1.1, 0.25


@dataclass(slots=True, eq=False)  # identity: two equal sentences are two messages
class Said:
    """One piece of speech: its text and when it plays (projected while it waits in the queue).

    Attributes:
        text: what is said.
        lang: its language.
        priority: low, normal or high.
        duration_ms: how long it takes to say.
        start_ms: when it starts (or will).
        end_ms: when it ends (or will).
    """

    text: str
    lang: str
    priority: str
    duration_ms: int
    start_ms: int = 0
    end_ms: int = 0


class SpeechQueue:
    """Text-to-speech playback (pure: time comes in as an argument).

    One utterance plays at a time; the next starts when it ends. ``barge_in`` stops what is playing and drops the
    queue; a ``high`` priority message goes to the front of the queue; past ``max_queue`` the oldest low-priority
    message is dropped. Music plays underneath and comes back when the speech is over.

    Args:
        max_queue: how many messages may wait.
    """

    def __init__(self, max_queue: int = MAX_QUEUE) -> None:
        self.max_queue = max_queue
        self.current: Said | None = None
        self.queue: deque[Said] = deque()
        self.music: str | None = None
        self.spoken: deque[Said] = deque(maxlen=100)
        self.interrupted: deque[Said] = deque(maxlen=100)
        self.dropped = 0

    @property
    def state(self) -> PlaybackKind:
        """speaking, music or idle."""
        if self.current is not None:
            return "speaking"
        return "music" if self.music is not None else "idle"

    def snapshot(self) -> tuple[PlaybackKind, str | None, int]:
        """``(state, text, queue length)`` as the ``system/playback`` event reports it."""
        text = self.current.text if self.current is not None else self.music
        return (self.state, text, len(self.queue))

    def _retime(self, now_ms: int) -> None:
        t = self.current.end_ms if self.current is not None else now_ms
        for said in self.queue:
            said.start_ms, said.end_ms = t, t + said.duration_ms
            t = said.end_ms

    def say(self, action: Speak, now_ms: int) -> Said:
        """Queue (or, with ``barge_in``, play at once) a message; returns it with its projected times."""
        self.advance(now_ms)
        said = Said(action.text, action.lang, action.priority, speaking_ms(action.text))
        if action.barge_in and self.current is not None:
            self.interrupted.append(self.current)
            self.interrupted.extend(self.queue)
            self.current = None
            self.queue.clear()
        if self.current is None:
            said.start_ms, said.end_ms = now_ms, now_ms + said.duration_ms
            self.current = said
            return said
        if action.priority == "high":
            self.queue.appendleft(said)
        else:
            self.queue.append(said)
        if len(self.queue) > self.max_queue:
            victim = next((s for s in self.queue if s.priority == "low"), self.queue[0])
            self.queue.remove(victim)
            self.dropped += 1
        self._retime(now_ms)
        return said

    def describe(self, said: Said, *, barge_in: bool = False) -> str:
        """An ack detail for a message just given to :meth:`say`."""
        if self.current is said:
            return "speaking" + (" (barged in)" if barge_in else "")
        if said in self.queue:
            return f"queued behind {list(self.queue).index(said) + 1} message(s)"
        return "dropped: the queue is full"

    def advance(self, now_ms: int) -> bool:
        """Finish what has been said by ``now_ms`` and start the next; returns whether anything changed."""
        changed = False
        while self.current is not None and self.current.end_ms <= now_ms:
            done = self.current
            self.spoken.append(done)
            self.current = self.queue.popleft() if self.queue else None
            if self.current is not None:
                self.current.start_ms = done.end_ms
                self.current.end_ms = done.end_ms + self.current.duration_ms
            changed = True
        return changed

    def stop(self, now_ms: int) -> bool:
        """Stop speaking and drop the queue (music too); returns whether anything was playing."""
        was = self.state != "idle" or bool(self.queue)
        if self.current is not None:
            self.current.end_ms = now_ms
            self.interrupted.append(self.current)
        self.current = None
        self.queue.clear()
        self.music = None
        return was


class EarphonesEmulator(Emulator):
    """A pair of AI earbuds and their case."""

    kind = Kind.EARPHONES
    model_name = "qwen-buds"
    base_tick_s: ClassVar[float] = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec = self.scenario.devices.earphones if self.scenario is not None else EarphonesSpec()
        self.in_ear = {Slot.LEFT: spec.in_ear, Slot.RIGHT: spec.in_ear}
        self.battery = EarphonesBattery(
            now_ms=self.t0, left_pct=spec.left_pct, right_pct=spec.right_pct, case_pct=spec.case_pct
        )
        for slot in Slot:
            self.battery.set_in_case(slot, not spec.in_ear, self.t0)
        self.anc: Literal["off", "transparency", "adaptive", "anc"] = spec.anc
        self.speech = SpeechQueue()
        self.earcons: list[str] = []
        self.motion = self.plan.motion_at(0)
        self._battery_period = self.period_ms(60.0, 0.25)
        self._last_battery = 0
        self._last_levels: tuple[float, float] = (-1.0, -1.0)
        self._last_playback: tuple[PlaybackKind, str | None, int] | None = None
        #: Settings (shadow): the wake word (``None``: the language's default) and the volume (0..1).
        self.wake_word: str | None = None
        self.volume = 0.6
        self._health_texts: dict[str, None] = {}  # texts of flagged Speak actions (they quote a health value)

    @property
    def worn(self) -> bool:
        """Whether at least one bud is in an ear."""
        return any(self.in_ear.values())

    def battery_pct(self) -> float | None:
        """The emptier bud."""
        levels = self.battery.levels(self.clock.now_ms())
        return round(min(levels.left_pct, levels.right_pct), 1)

    # ------------------------------------------------------------------ loop

    def start(self, t: int) -> None:
        """Report the buds, noise cancelling, motion, playback and battery."""
        self.motion = self.plan.motion_at(self.offset(t))
        for slot in Slot:
            self.emit(InEar(side=slot.value, state="in" if self.in_ear[slot] else "out"))
        self.emit(AncState(mode=self.anc))
        if self.worn:
            self.emit(Activity.model_validate({"activity": self.motion}))
        self._playback(t, force=True)
        self._battery(t)

    def tick(self, now: int) -> None:
        """Speech progress and battery."""
        if self.speech.advance(now):
            self._playback(now)
        levels = self.battery.levels(now)
        moved = abs(levels.left_pct - self._last_levels[0]) >= 1 or abs(levels.right_pct - self._last_levels[1]) >= 1
        if moved or now - self._last_battery >= self._battery_period:
            self._battery(now)

    def _battery(self, now: int) -> None:
        lv = self.battery.levels(now)
        self._last_battery = now
        self._last_levels = (lv.left_pct, lv.right_pct)
        self.emit(
            EarBattery(
                left_pct=round(lv.left_pct, 1),
                right_pct=round(lv.right_pct, 1),
                case_pct=round(lv.case_pct, 1),
                charging=lv.charging,
            )
        )

    def _playback(self, now: int, *, force: bool = False) -> None:
        snap = self.speech.snapshot()
        if force or snap != self._last_playback:
            self._last_playback = snap
            state, text, queued = snap
            health = text is not None and text in self._health_texts
            self.emit(PlaybackState(state=state, text=text[:2000] if text else None, queue=queued, health=health))
            if state == "idle" and not queued:
                self._health_texts.clear()
        state = snap[0]
        load = {"speaking": LOAD_SPEAKING, "music": LOAD_MUSIC, "idle": LOAD_IDLE}[state]
        self.battery.set_load(load + (LOAD_ANC if self.anc in ("anc", "adaptive") else 0.0), now)

    def on_change(self, change: Change, t: int) -> None:
        """The IMU notices the person's new motion (only in an ear)."""
        if change.motion == self.motion:
            return
        self.motion = change.motion
        if self.worn:
            self.emit(Activity.model_validate({"activity": change.motion}))

    # ------------------------------------------------------------------ the user (scenario steps)

    def perform(self, step: Step, t: int) -> None:
        """Buds in or out, touches, head gestures and speech."""
        if step.wear is not None:
            self.set_in_ear(step.wear == "on", t)
        elif step.touch is not None:
            self.emit(EarTouch.model_validate({"side": step.side, "gesture": step.touch}))
        elif step.head is not None:
            self.emit(HeadGesture(gesture=step.head, confidence=round(self.rng.uniform(0.8, 0.98), 2)))
        elif step.say is not None:
            self.user_says(step.say, step.spoken_lang(), t, wake=step.wake)

    def set_in_ear(self, worn: bool, t: int) -> None:
        """Both buds in the ears (from the case) or back into the case."""
        for slot in Slot:
            if self.in_ear[slot] == worn:
                continue
            self.in_ear[slot] = worn
            self.battery.set_in_case(slot, not worn, t)
            self.emit(InEar(side=slot.value, state="in" if worn else "out"))
        if worn:
            self.emit(Activity.model_validate({"activity": self.motion}))
        elif self.speech.stop(t):
            self._playback(t)  # out of the ear: automatic ear detection pauses playback

    def wake_bodies(self, trigger: WakeTrigger, lang: str) -> list[Body]:
        """A press-and-hold wake starts with the stem held."""
        bodies = super().wake_bodies(trigger, lang)
        if trigger == "wake_word" and self.wake_word is not None:  # the wake word set through the shadow
            bodies = [b.model_copy(update={"keyword": self.wake_word}) if isinstance(b, Wake) else b for b in bodies]
        if trigger == "long_press":
            bodies.insert(0, EarTouch(side="right", gesture="long_press"))
        return bodies

    def apply_setting(self, key: str, value: Any) -> None:
        """The wake word the buds listen for, and their volume (quiet hours: the base)."""
        if key == "wake_word":
            if not str(value).strip():
                raise SettingRejected("an empty wake word cannot be detected")
            self.wake_word = str(value).strip()
        elif key == "volume":
            self.volume = float(value)

    def react(self, armed: Armed, subject: int, t: int) -> None:
        """Answer what was said: a spoken reply, a nod or shake, or a tap."""
        if not self.worn:
            return
        spec = armed.spec
        match spec.do:
            case "say":
                text = spec.text or ""
                self.user_says(text, spec.lang or self.profile.lang, t)
            case "nod" | "shake":
                self.emit(HeadGesture(gesture=spec.do, confidence=0.95, context="agent_prompt"))
            case "tap" | "double_tap":
                self.emit(EarTouch(side=spec.side, gesture=spec.do))
            case _:
                pass

    # ------------------------------------------------------------------ actions

    @on_action(Speak)
    async def speak(self, action: Speak, envelope: Envelope[Speak]) -> str:
        """Say something: queued, or at once with ``barge_in``."""
        if not self.worn:
            raise ActionRejected("the earbuds are in their case: nobody would hear it")
        now = self.clock.now_ms()
        if action.health:
            self._health_texts[action.text] = None
        said = self.speech.say(action, now)
        self._playback(now)
        self.trigger("speak", [action.text], now, after_s=(said.end_ms - now) / 1000)
        return self.speech.describe(said, barge_in=action.barge_in)

    @on_action(Earcon)
    async def earcon(self, action: Earcon, envelope: Envelope[Earcon]) -> str:
        """A short sound (not in the quiet hours, but for errors)."""
        if not self.worn:
            raise ActionRejected("the earbuds are in their case")
        if action.name != "error":
            self.check_quiet(self.clock.now_ms(), "earcons")
        self.earcons.append(action.name)
        return f"played {action.name}"

    @on_action(SetAnc)
    async def set_anc(self, action: SetAnc, envelope: Envelope[SetAnc]) -> str:
        """Change the noise-cancelling mode."""
        now = self.clock.now_ms()
        self.anc = action.mode
        self.emit(AncState(mode=action.mode))
        self._playback(now)
        return f"anc {action.mode}"

    @on_action(MediaControl)
    async def media(self, action: MediaControl, envelope: Envelope[MediaControl]) -> str:
        """Play, pause, skip or stop music."""
        if not self.worn:
            raise ActionRejected("the earbuds are in their case")
        now = self.clock.now_ms()
        match action.command:
            case "play":
                self.speech.music = action.query or self.speech.music or "music"
            case "pause" | "stop":
                self.speech.music = None
            case "next" | "prev":
                if self.speech.music is None:
                    self.speech.music = "music"
        self._playback(now)
        volume = f" at volume {action.volume:.0%}" if action.volume is not None else ""
        return f"{action.command}{': ' + action.query if action.query else ''}{volume}"
