"""The smart-glasses emulator (Quark S1-like): heads-up display, temple touch, head pose, voice, camera and two
hot-swappable cells.

What the display shows is kept in :attr:`GlassesEmulator.hud` (a :class:`HudState`) and published as
``system/display`` whenever it changes. A card with buttons can be answered by the scenario's user with a click
(``gesture/ui`` carrying the button's action id), a temple tap or a nod, after a short reaction delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from devices.earphones import SpeechQueue
from devices.emulator import Armed, Emulator, WakeStep, WakeTrigger
from devices.models import GlassesCells, Slot
from devices.scenario_plan import Change
from devices.scenario_spec import GlassesSpec, Step
from devices.sdk import ActionRejected, on_action
from schemas.actions import (
    Capture,
    CardButton,
    ClearDisplay,
    Earcon,
    ShowCaption,
    ShowCard,
    ShowNav,
    ShowTeleprompter,
    ShowText,
    Speak,
)
from schemas.display import LINES_PER_SCREEN, wrap
from schemas.envelope import Envelope
from schemas.events import (
    BatterySwap,
    Body,
    Cell,
    DisplayState,
    GlassesBattery,
    GlassesButton,
    GlassesTouch,
    GlassesWear,
    HeadGesture,
    HeadPose,
    PhotoCaptured,
    UiEvent,
)
from schemas.topics import Kind

HudKind = Literal["none", "text", "card", "nav", "teleprompter", "caption"]
DisplayAction = ShowText | ShowCard | ShowNav | ShowTeleprompter | ShowCaption | ClearDisplay
_APP: dict[str, Literal["nav", "teleprompter", "translate", "card", "text", "none"]] = {
    "none": "none",
    "text": "text",
    "card": "card",
    "nav": "nav",
    "teleprompter": "teleprompter",
    "caption": "translate",
}
PHOTO_SIZE = (4032, 3024)  # Sony IMX681, 12 MP (reference/devices.md §1.1)
# Drain multipliers of GlassesCells (1.0 = continuous use, 3.5 h a cell): idle on the face, display lit, speaking,
# capturing, and folded away.
LOAD_IDLE, LOAD_DISPLAY, LOAD_SPEAKING, LOAD_CAMERA, LOAD_OFF = 0.45, 0.45, 0.2, 1.0, 0.05
DEFAULT_BRIGHTNESS = 0.8  # the display brightness before any setting


@dataclass(slots=True)
class HudState:
    """What the heads-up display shows (pure: time comes in as an argument).

    Attributes:
        kind: none, text, card, nav, teleprompter or caption.
        title: the card title, the destination, the script id, or the caption's languages.
        body: the text shown (all of it; ``lines`` is what fits the screen).
        lines: the wrapped lines on screen now (at most 5).
        page: the page shown (1-based; 0 when nothing is shown).
        max_page: the number of pages.
        buttons: a card's buttons.
        icon: a card's icon.
        until_ms: when a card times out (``None``: stays until replaced).
        transcript: a caption's final lines so far (the screen shows the last ones).
    """

    kind: HudKind = "none"
    title: str = ""
    body: str = ""
    lines: tuple[str, ...] = ()
    page: int = 0
    max_page: int = 0
    buttons: tuple[CardButton, ...] = ()
    icon: str = ""
    until_ms: int | None = None
    transcript: list[str] = field(default_factory=list)

    @property
    def on(self) -> bool:
        """Whether anything is shown."""
        return self.kind != "none"

    def display_state(self) -> DisplayState:
        """The ``system/display`` event for what is shown."""
        return DisplayState(app=_APP[self.kind], page=self.page, max_page=self.max_page, on=self.on)

    def show(self, action: DisplayAction, now_ms: int) -> None:
        """Apply a display action."""
        match action:
            case ClearDisplay():
                self._set("none", "", "")
            case ShowText():
                self._set("text", "", action.text, page=action.page, max_page=action.max_page)
            case ShowCard():
                self._set("card", action.title, action.body)
                self.buttons = tuple(action.buttons)
                self.icon = action.icon
                self.until_ms = now_ms + action.ttl_s * 1000
                # A title line and a button line frame the body's (at most) three lines.
                self.lines = (
                    (action.title, *wrap(action.body)[: LINES_PER_SCREEN - 2]) if action.body else (action.title,)
                )
                if action.buttons:
                    self.lines = (*self.lines, "  ".join(f"[{b.label}]" for b in action.buttons))
            case ShowNav():
                arrow = action.maneuver.replace("_", " ")
                eta = f" · {math.ceil(action.eta_s / 60)} min" if action.eta_s is not None else ""
                body = f"{arrow} in {action.distance_m:.0f} m" + (f"\n{action.street}" if action.street else "") + eta
                self._set("nav", action.destination, body)
            case ShowTeleprompter():
                self._set("teleprompter", action.script_id, action.text, page=action.page, max_page=action.max_page)
            case ShowCaption():
                self._caption(action)

    def _set(self, kind: HudKind, title: str, body: str, *, page: int = 1, max_page: int = 1) -> None:
        self.kind = kind
        self.title = title
        self.body = body
        self.lines = tuple(wrap(body)[:LINES_PER_SCREEN]) if kind != "none" else ()
        self.page, self.max_page = (page, max(page, max_page)) if kind != "none" else (0, 0)
        self.buttons = ()
        self.icon = ""
        self.until_ms = None
        if kind != "caption":
            self.transcript = []

    def _caption(self, action: ShowCaption) -> None:
        if self.kind != "caption":
            self._set("caption", f"{action.src_lang}→{action.tgt_lang}", "")
        self.title = f"{action.src_lang}→{action.tgt_lang}"
        speaker = f"{action.speaker}: " if action.speaker else ""
        # Live captions scroll: finals accumulate; a partial replaces the previous partial in place.
        shown = [*self.transcript, speaker + action.text]
        if action.is_final:
            self.transcript = shown[-20:]
        wrapped = [line for part in shown for line in wrap(part)]
        self.lines = tuple(wrapped[-LINES_PER_SCREEN:])
        self.body = "\n".join(self.lines)
        self.page = self.max_page = 1

    def expire(self, now_ms: int) -> bool:
        """Take down a card whose time is up; returns whether the display changed."""
        if self.kind == "card" and self.until_ms is not None and now_ms >= self.until_ms:
            self._set("none", "", "")
            return True
        return False

    def subjects(self) -> list[str]:
        """What a reaction can match: a card's button action ids, else the text shown."""
        if self.kind == "card":
            return [b.action_id for b in self.buttons]
        return [self.body]


@dataclass(slots=True)
class HeadPoseWalk:
    """A cheap head-orientation random walk: small while still, larger while moving (pure, seeded by its caller).

    Attributes:
        roll: degrees.
        pitch: degrees.
        heading: degrees, 0..360.
    """

    roll: float = 0.0
    pitch: float = -5.0
    heading: float = 90.0

    def step(self, rng: Any, moving: bool) -> HeadPose:
        """Move a little and return the pose event."""
        spread = 6.0 if moving else 2.0
        self.roll = max(-30.0, min(30.0, self.roll * 0.8 + rng.gauss(0.0, spread / 3)))
        self.pitch = max(-60.0, min(40.0, self.pitch * 0.85 - 1.0 + rng.gauss(0.0, spread / 2)))
        self.heading = (self.heading + rng.gauss(0.0, spread * 2)) % 360.0
        return HeadPose(
            roll_deg=round(self.roll, 1), pitch_deg=round(self.pitch, 1), heading_deg=round(self.heading, 1) % 360.0
        )


class GlassesEmulator(Emulator):
    """Smart glasses with a display (Quark S1-like), and their phone-side bridge."""

    kind = Kind.GLASSES
    model_name = "quark-s1"
    base_tick_s: ClassVar[float] = 0.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec = self.scenario.devices.glasses if self.scenario is not None else GlassesSpec()
        self.worn = spec.worn
        self.cells = GlassesCells(now_ms=self.t0, left_pct=spec.left_pct, right_pct=spec.right_pct)
        self.hud = HudState()
        self.speech = SpeechQueue()
        self.pose = HeadPoseWalk(heading=self.rng.uniform(0.0, 360.0))
        self.photos: list[PhotoCaptured] = []
        self.earcons: list[str] = []
        self._pose_period = self.period_ms(0.5, 0.5)
        self._battery_period = self.period_ms(60.0, 0.25)
        self._last_pose = 0
        self._last_battery = 0
        self._last_levels: tuple[float, float] = (-1.0, -1.0)
        self._camera_until = 0
        self._moving = False
        #: Settings (shadow): display brightness (0..1) and language.
        self.brightness = DEFAULT_BRIGHTNESS
        self.display_lang: str = self.profile.lang

    def battery_pct(self) -> float | None:
        """Both cells' combined charge."""
        return round(self.cells.combined_pct(self.clock.now_ms()), 1)

    # ------------------------------------------------------------------ loop

    def start(self, t: int) -> None:
        """Report wear, display and battery."""
        self._moving = self.plan.motion_at(self.offset(t)) != "stationary"
        self.emit(GlassesWear(state="donned" if self.worn else "doffed"))
        self.emit(self.hud.display_state())
        self._update_load(t)
        self._battery(t)

    def tick(self, now: int) -> None:
        """Card timeouts, speech, head pose and battery."""
        if self.hud.expire(now):
            self._display_changed(now)
        if self.speech.advance(now):
            self._update_load(now)
        if self.worn and now - self._last_pose >= self._pose_period:
            self._last_pose = now
            self.emit(self.pose.step(self.rng, self._moving))
        if self._camera_until and now >= self._camera_until:
            self._camera_until = 0
            self._update_load(now)
        levels = tuple(c.level_pct for c in self.cells.cells(now))
        moved = any(abs(a - b) >= 1.0 for a, b in zip(levels, self._last_levels, strict=True))
        if moved or now - self._last_battery >= self._battery_period:
            self._battery(now)

    def _battery(self, now: int) -> None:
        cells = self.cells.cells(now)
        self._last_battery = now
        self._last_levels = (cells[0].level_pct, cells[1].level_pct)
        self.emit(
            GlassesBattery(
                level_pct=round(self.cells.combined_pct(now), 1),
                charging=self.cells.charging,
                cells=[Cell(slot=c.slot.value, level_pct=round(c.level_pct, 1), present=c.present) for c in cells],
            )
        )

    def _update_load(self, now: int) -> None:
        if not self.worn:
            load = LOAD_OFF
        else:
            load = LOAD_IDLE + (LOAD_DISPLAY * self._display_power() if self.hud.on else 0.0)
            load += LOAD_SPEAKING if self.speech.state == "speaking" else 0.0
            load += LOAD_CAMERA if self._camera_until else 0.0
        self.cells.set_load(load, now)

    def _display_power(self) -> float:
        """The display's draw relative to the default brightness (0.8): a quarter fixed, the rest with brightness."""
        return (0.25 + 0.75 * self.brightness) / (0.25 + 0.75 * DEFAULT_BRIGHTNESS)

    def _display_changed(self, now: int) -> None:
        self.emit(self.hud.display_state())
        self._update_load(now)

    def on_change(self, change: Change, t: int) -> None:
        """Head movement follows the person's motion."""
        self._moving = change.motion != "stationary"

    # ------------------------------------------------------------------ the user (scenario steps)

    def perform(self, step: Step, t: int) -> None:
        """Wear, touch, head gestures, speech, capture and cell swaps."""
        if step.wear is not None:
            self.set_worn(step.wear == "on", t)
        elif step.touch is not None:
            self.touch(step.touch, step.side)
        elif step.head is not None:
            self.emit(HeadGesture(gesture=step.head, confidence=round(self.rng.uniform(0.8, 0.98), 2)))
        elif step.say is not None:
            self.user_says(step.say, step.spoken_lang(), t, wake=step.wake)
        elif step.capture is not None:
            self.emit(GlassesButton(button="capture", press="long" if step.capture == "video" else "short"))
            self.take(step.capture, 15 if step.capture == "video" else 0, t)
        elif step.swap_cell is not None:
            self.swap(Slot(step.swap_cell), t)

    def set_worn(self, worn: bool, t: int) -> None:
        """Put the glasses on or take them off (off: the display goes dark and speech stops)."""
        if worn == self.worn:
            return
        self.worn = worn
        self.emit(GlassesWear(state="donned" if worn else "doffed"))
        if not worn:
            self.speech.stop(t)
            if self.hud.on:
                self.hud.show(ClearDisplay(), t)
                self._display_changed(t)
        self._update_load(t)

    def touch(self, gesture: str, side: Literal["left", "right"]) -> None:
        """A temple touch (``long_press`` is reported as its start and its end)."""
        if gesture == "long_press":
            self.emit(GlassesTouch(side=side, gesture="long_press_start"))

            def release(_: int) -> None:
                self.emit(GlassesTouch(side=side, gesture="long_press_end"))

            self.later(1.0, release)
            return
        self.emit(GlassesTouch.model_validate({"side": side, "gesture": gesture}))

    def wake_bodies(self, trigger: WakeTrigger, lang: str) -> list[Body]:
        """A long-press wake starts with the temple held."""
        bodies = super().wake_bodies(trigger, lang)
        if trigger == "long_press":
            bodies.insert(0, GlassesTouch(side="right", gesture="long_press_start"))
        return bodies

    def apply_setting(self, key: str, value: Any) -> None:
        """Display brightness and language (quiet hours: the base)."""
        if key == "brightness":
            self.brightness = float(value)
            self._update_load(self.clock.now_ms())  # a dimmer display draws less
        elif key == "display_lang":
            self.display_lang = str(value)

    def after_speech(self, wake: WakeStep) -> None:
        """Release the temple held to talk."""
        if wake == "long_press":
            self.emit(GlassesTouch(side="right", gesture="long_press_end"))

    def swap(self, slot: Slot, t: int) -> None:
        """Hot-swap one cell for a full one (the other keeps the glasses on)."""
        for half in self.cells.swap(slot, t):
            self.emit(
                BatterySwap(
                    slot=half.slot.value,
                    action=half.action.value,
                    remaining_pct_other=round(half.remaining_pct_other, 1),
                )
            )
        self._battery(t)

    def take(self, kind: Literal["photo", "video"], duration_s: int, t: int) -> None:
        """Capture a photo (or a video of ``duration_s``); the reference is published when it is saved."""
        self._camera_until = t + max(2, duration_s) * 1000
        self._update_load(t)
        width, height = PHOTO_SIZE if kind == "photo" else (3840, 2160)
        size = self.rng.randint(2_200_000, 4_800_000) if kind == "photo" else duration_s * 6_000_000

        def saved(when: int) -> None:
            ext = "jpg" if kind == "photo" else "mp4"
            photo = PhotoCaptured(
                width=width,
                height=height,
                bytes_len=size,
                uri=f"file:///sdcard/DCIM/wearbus/{self.ident.device}-{when}.{ext}",
            )
            self.photos.append(photo)
            self.emit(photo, src_ts=t)

        self.later(0.4 + duration_s, saved, now=t)

    # ------------------------------------------------------------------ reactions

    def react(self, armed: Armed, subject: int, t: int) -> None:
        """Answer what is shown (or said): click the matched button, tap, nod, speak, or swap a cell."""
        spec = armed.spec
        if not self.worn and spec.do != "swap_cell":
            return  # glasses in a pocket: the card was not seen
        match spec.do:
            case "click":
                if self.hud.kind == "card" and subject < len(self.hud.buttons):
                    button = self.hud.buttons[subject]
                    self.emit(
                        UiEvent(event="click", container_id="card", action_id=button.action_id, item_index=subject)
                    )
            case "tap" | "double_tap" | "swipe_forward" | "swipe_back":
                self.touch(spec.do, spec.side)
            case "nod" | "shake":
                self.emit(HeadGesture(gesture=spec.do, confidence=0.95, context="agent_prompt"))
            case "say":
                text = spec.text or ""
                self.user_says(text, spec.lang or self.profile.lang, t)
            case "swap_cell":
                self.swap(Slot(spec.side), t)
            case _:
                pass

    # ------------------------------------------------------------------ actions

    def _need_worn(self, what: str) -> None:
        if not self.worn:
            raise ActionRejected(f"the glasses are not worn: nobody would see the {what}")

    async def _display(self, action: DisplayAction) -> str:
        now = self.clock.now_ms()
        if not isinstance(action, ClearDisplay):
            self._need_worn(action.type.removeprefix("display."))
        self.hud.show(action, now)
        self._display_changed(now)
        kind = self.hud.kind
        if kind != "none":
            self.trigger(kind, self.hud.subjects(), now)
        return f"showing {kind}" + (f" page {self.hud.page}/{self.hud.max_page}" if self.hud.max_page > 1 else "")

    @on_action(ShowText)
    async def show_text(self, action: ShowText, envelope: Envelope[ShowText]) -> str:
        """Plain text."""
        return await self._display(action)

    @on_action(ShowCard)
    async def show_card(self, action: ShowCard, envelope: Envelope[ShowCard]) -> str:
        """A card (stays ``ttl_s``)."""
        return await self._display(action)

    @on_action(ShowNav)
    async def show_nav(self, action: ShowNav, envelope: Envelope[ShowNav]) -> str:
        """Turn-by-turn navigation."""
        return await self._display(action)

    @on_action(ShowTeleprompter)
    async def show_teleprompter(self, action: ShowTeleprompter, envelope: Envelope[ShowTeleprompter]) -> str:
        """One teleprompter page."""
        return await self._display(action)

    @on_action(ShowCaption)
    async def show_caption(self, action: ShowCaption, envelope: Envelope[ShowCaption]) -> str:
        """A live caption line."""
        return await self._display(action)

    @on_action(ClearDisplay)
    async def clear(self, action: ClearDisplay, envelope: Envelope[ClearDisplay]) -> str:
        """Back to the dashboard."""
        return await self._display(action)

    @on_action(Speak)
    async def speak(self, action: Speak, envelope: Envelope[Speak]) -> str:
        """Say something through the temple speakers (queued; ``barge_in`` interrupts)."""
        self._need_worn("speech")
        now = self.clock.now_ms()
        said = self.speech.say(action, now)
        self._update_load(now)
        self.trigger("speak", [action.text], now, after_s=(said.end_ms - now) / 1000)
        return self.speech.describe(said, barge_in=action.barge_in)

    @on_action(Earcon)
    async def earcon(self, action: Earcon, envelope: Envelope[Earcon]) -> str:
        """A short sound (not in the quiet hours, but for errors)."""
        if action.name != "error":
            self.check_quiet(self.clock.now_ms(), "earcons")
        self.earcons.append(action.name)
        return f"played {action.name}"

    @on_action(Capture)
    async def capture(self, action: Capture, envelope: Envelope[Capture]) -> str:
        """Take a photo or a video; the ``system/photo`` event follows when it is saved."""
        self._need_worn("camera")
        duration = action.duration_s if action.kind == "video" else 0
        self.take(action.kind, duration, self.clock.now_ms())
        return f"capturing {action.kind}" + (f" for {duration} s" if duration else "")
