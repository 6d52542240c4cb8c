"""What the four emulators share: seeded randomness, a scheduler on the simulated clock, scenario playback,
armed reactions (the user answering a card, a prompt or a question), the user speaking, and simulated network loss.

An emulator's behaviour is one loop: run the jobs that are due (scenario steps, person changes, reactions, the
rest of an utterance), then :meth:`Emulator.tick` (periodic sensors), then sleep until the next job or tick. One
loop means one sleeper, so a test driving a :class:`~schemas.clock.ManualClock` gets the same events every time.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Literal, TypeVar

from devices.scenario_plan import Change, Plan
from devices.scenario_spec import PERSON, Respond, Scenario, Step, format_offset
from devices.sdk import ActionRejected, Device, DeviceConfig
from schemas.clock import Clock
from schemas.envelope import Envelope
from schemas.events import Body, Utterance, Vad, Wake
from schemas.profile import UserProfile
from schemas.tasks import first_of

#: The shortest wall-clock pause of the loop: at speed 120 a tick is then >= 6 s of simulated time, so an
#: accelerated run does not spin; jobs (reactions, steps) still run at their exact simulated time.
MIN_WALL_TICK_S = 0.05
#: Keywords of the wake word, by language.
WAKE_WORDS = {"zh": "千问", "en": "Hey Qwen"}

Job = Callable[[int], None]
B = TypeVar("B", bound=Body)
WakeTrigger = Literal["wake_word", "long_press", "ring_press", "button"]
WakeStep = Literal["wake_word", "long_press", "ring_press", "button", "none"]


def seeded(seed: int, *parts: str) -> random.Random:
    """A random source for one purpose of one device: the same seed and parts give the same draws on any run."""
    return random.Random(":".join([str(seed), *parts]))  # str seeds hash with SHA-512: stable across processes


def speaking_ms(text: str) -> int:
    """How long saying ``text`` takes: ~4.5 CJK characters or ~2.8 words a second, plus a breath."""
    cjk = sum(1 for ch in text if "\u3000" <= ch <= "\u9fff" or "\uf900" <= ch <= "\uffef")
    words = len(re.findall(r"[A-Za-z0-9']+", text))
    return max(600, 400 + cjk * 220 + words * 350)


@dataclass(slots=True)
class Armed:
    """A reaction waiting for its trigger.

    Attributes:
        spec: what to react to and how.
        step: the scenario step that armed it.
        until_ms: it lapses after this (simulated) time.
        left: how many more times it fires.
        pattern: the compiled ``match``.
    """

    spec: Respond
    step: int
    until_ms: int
    left: int
    pattern: re.Pattern[str] = field(repr=False)


class Emulator(Device):
    """A device emulator that plays a scenario on the simulated clock.

    Args:
        user: the user id.
        device: the device id.
        config: how to connect.
        clock: the simulated clock (shared by every process of a run).
        scenario: what the user does; ``None`` for a device that just runs (fleet, contract tests).
        seed: the seed of every random draw of this device.
        start_ms: the simulated time the scenario's offsets count from (default: the clock's now).
        forever: keep running after the scenario's end.
    """

    base_tick_s: ClassVar[float] = 1.0
    model_name: ClassVar[str] = ""

    def __init__(
        self,
        user: str,
        device: str,
        config: DeviceConfig | None = None,
        clock: Clock | None = None,
        *,
        scenario: Scenario | None = None,
        seed: int = 0,
        start_ms: int | None = None,
        forever: bool = False,
    ) -> None:
        super().__init__(user, device, config or DeviceConfig(model=self.model_name), clock)
        self.scenario = scenario
        self.profile = scenario.profile if scenario is not None else UserProfile()
        self.t0 = self.clock.now_ms() if start_ms is None else start_ms
        self.seed = seed
        self.forever = forever
        self.rng = seeded(seed, "emulator", self.ident.client_id)
        self.plan = Plan.of(scenario) if scenario is not None else Plan.idle()
        self.end_ms = self.t0 + scenario.duration_ms if scenario is not None else None
        self.finished = asyncio.Event()
        #: The latest bodies emitted, oldest first (for tests and the status line).
        self.recent: deque[Body] = deque(maxlen=2000)
        self.reactions: list[Armed] = []
        self._jobs: list[tuple[int, int, Job]] = []
        self._job_n = 0
        self._wake = asyncio.Event()
        self._begun = False
        self._utterances = 0

    # ------------------------------------------------------------------ timing

    @property
    def tick_s(self) -> float:
        """Simulated seconds between ticks: the device's own period, at least ``MIN_WALL_TICK_S`` of wall time."""
        return max(self.base_tick_s, MIN_WALL_TICK_S * self.clock.speed)

    def period_ms(self, sim_s: float, wall_floor_s: float) -> int:
        """A periodic stream's period: ``sim_s`` of simulated time, but no more often than every ``wall_floor_s``
        wall seconds (head pose at 2 Hz would be 240 messages a second at speed 120)."""
        return round(max(sim_s, wall_floor_s * self.clock.speed) * 1000)

    def offset(self, t: int) -> int:
        """Simulated ms since the scenario's start."""
        return t - self.t0

    # ------------------------------------------------------------------ scheduling

    def at(self, when_ms: int, job: Job) -> None:
        """Run ``job(when_ms)`` at simulated time ``when_ms`` (jobs at the same time run in the order given)."""
        self._job_n += 1
        heapq.heappush(self._jobs, (when_ms, self._job_n, job))
        self._wake.set()

    def later(self, delay_s: float, job: Job, *, now: int | None = None) -> None:
        """Run ``job`` ``delay_s`` simulated seconds after ``now`` (default: the clock)."""
        base = self.clock.now_ms() if now is None else now
        self.at(base + round(delay_s * 1000), job)

    def next_job_ms(self) -> int | None:
        """When the next job is due."""
        return self._jobs[0][0] if self._jobs else None

    def run_due(self, now: int) -> int:
        """Run every job due by ``now``, in time order; returns how many ran."""
        n = 0
        while self._jobs and self._jobs[0][0] <= now:
            when, _, job = heapq.heappop(self._jobs)
            job(when)
            n += 1
        return n

    # ------------------------------------------------------------------ the loop

    def begin(self) -> None:
        """Schedule the scenario and emit the starting state (idempotent)."""
        if self._begun:
            return
        self._begun = True
        now = self.clock.now_ms()
        self.start(max(now, self.t0))
        if self.scenario is not None:
            for number, step in self.scenario.steps_for(self.kind):
                if self.plays(step):
                    self.at(self.t0 + step.at, partial(self._play, number, step))
            for change in self.plan.changes[1:]:
                self.at(self.t0 + change.at_ms, partial(self.on_change, change))
        if self.end_ms is not None:
            self.at(self.end_ms, self._end)

    async def behave(self) -> None:
        """Play the scenario and run the device's sensors until cancelled."""
        self.begin()
        while True:
            await self.pump()

    async def pump(self) -> None:
        """One turn of the loop: due jobs, a tick, then sleep until the next job or tick."""
        now = self.clock.now_ms()
        self.run_due(now)
        self.tick(now)
        delay = self.tick_s
        nxt = self.next_job_ms()
        if nxt is not None:
            delay = min(delay, (nxt - now) / 1000)
        await self._nap(delay)

    async def run_until(self, t: int) -> None:
        """Drive the loop until the clock reaches ``t`` (for tests with a manual clock)."""
        self.begin()
        while self.clock.now_ms() < t:
            await self.pump()
        self.run_due(self.clock.now_ms())

    async def _nap(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        self._wake.clear()
        await first_of(self.clock.sleep(seconds), self._wake_up())

    async def _wake_up(self) -> None:
        await self._wake.wait()

    def _end(self, t: int) -> None:
        self.log.info("scenario_over", at=format_offset(self.offset(t)))
        self.finish(t)
        self.finished.set()

    def _play(self, number: int, step: Step, t: int) -> None:
        self.log.info("step", n=number, at=format_offset(step.at), action=step.action, note=step.note or None)
        if step.offline is not None:
            self.go_offline(step.offline, t)
        elif step.respond is not None:
            self.arm(step.respond, number, t)
        else:
            self.perform(step, t)

    # ------------------------------------------------------------------ hooks for the emulators

    def plays(self, step: Step) -> bool:
        """Whether this device acts on a step addressed to it (person changes come from the plan instead)."""
        return step.action not in PERSON

    def start(self, t: int) -> None:
        """Emit the starting state (wear, battery, ...)."""

    def tick(self, now: int) -> None:
        """Periodic work: sensors, batteries, what is due."""

    def perform(self, step: Step, t: int) -> None:
        """Carry out a scenario step addressed to this device."""

    def on_change(self, change: Change, t: int) -> None:
        """The person starts doing something else."""

    def react(self, armed: Armed, subject: int, t: int) -> None:
        """Carry out a reaction (``subject`` indexes what matched, e.g. the card button)."""

    def finish(self, t: int) -> None:
        """The scenario is over (a last sync, say)."""

    # ------------------------------------------------------------------ events

    def emit(self, body: Body, *, src_ts: int | None = None, corr: str | None = None) -> Envelope[Any]:
        """Queue an event (see :meth:`Device.emit`) and remember it in :attr:`recent`."""
        envelope = super().emit(body, src_ts=src_ts, corr=corr)
        self.recent.append(body)
        return envelope

    def emitted(self, model: type[B]) -> list[B]:
        """The recent events of one model (for tests)."""
        return [b for b in self.recent if isinstance(b, model)]

    # ------------------------------------------------------------------ reactions

    def arm(self, spec: Respond, step: int, t: int) -> None:
        """Arm a reaction from ``t`` for ``spec.within``."""
        self.reactions.append(Armed(spec, step, t + spec.within, spec.times, spec.pattern))

    def trigger(self, on: str, subjects: Sequence[str], t: int, *, after_s: float = 0.0) -> bool:
        """Something the user can react to arrived: if an armed reaction matches one of ``subjects``, schedule it.

        Args:
            on: what arrived (card, prompt, speak, haptic, teleprompter, ...).
            subjects: what the reaction's pattern is searched in (button ids, text, ...).
            t: when it arrived.
            after_s: extra simulated seconds before the reaction's delay starts (e.g. the speech still playing).

        Returns:
            Whether a reaction was scheduled.
        """
        self.reactions = [r for r in self.reactions if r.left > 0 and r.until_ms >= t]
        for armed in self.reactions:
            if armed.spec.on != on:
                continue
            for i, subject in enumerate(subjects):
                if armed.pattern.search(subject):
                    armed.left -= 1
                    delay = after_s + armed.spec.delay / 1000
                    self.log.info("reaction", on=on, do=armed.spec.do, to=subject[:64], step=armed.step)
                    self.later(delay, partial(self.react, armed, i), now=t)
                    return True
        return False

    # ------------------------------------------------------------------ shared behaviour

    def go_offline(self, duration_ms: int, t: int) -> None:
        """Lose the network for ``duration_ms``: events wait in the outbox, actions are not heard."""
        self.log.info("network_lost", for_s=duration_ms / 1000)
        self.set_link(False)
        self.at(t + duration_ms, self._back_online)

    def _back_online(self, t: int) -> None:
        self.log.info("network_back", outbox=self.outbox_depth)
        self.set_link(True)

    def wake_bodies(self, trigger: WakeTrigger, lang: str) -> list[Body]:
        """What a wake emits before the user speaks (the glasses add a temple long press, say)."""
        keyword = WAKE_WORDS.get(lang, WAKE_WORDS["en"]) if trigger == "wake_word" else None
        return [Wake(trigger=trigger, keyword=keyword, score=round(self.rng.uniform(0.82, 0.99), 2))]

    def user_says(self, text: str, lang: str, t: int, *, wake: WakeStep = "none") -> int:
        """The user speaks ``text``: wake (unless ``none``), speech start, and the final utterance once it is said.

        Returns:
            The simulated time the utterance is complete.
        """
        self._utterances += 1
        uid = f"{self.ident.device}-u{self._utterances}"
        if wake != "none":
            for body in self.wake_bodies(wake, lang):
                self.emit(body)
        start = t + 300 if wake != "none" else t
        duration = speaking_ms(text)
        done = start + duration

        def begin(_: int) -> None:
            self.emit(Vad(state="speech_start"))

        def end(_: int) -> None:
            self.emit(Vad(state="speech_end", duration_ms=duration))
            self.emit(Utterance(text=text, lang=lang, final=True, utterance_id=uid))
            self.after_speech(wake)

        self.at(start, begin)
        self.at(done, end)
        return done

    def after_speech(self, wake: WakeStep) -> None:
        """The utterance is out (the glasses release a long press here)."""

    # ------------------------------------------------------------------ settings

    def quiet_now(self, t: int) -> bool:
        """Whether ``t`` falls in the quiet hours applied from the shadow (in the user's local time)."""
        quiet = self.settings.quiet_hours
        if quiet is None:
            return False
        minute = ((t // 60_000) + self.profile.tz_offset_min) % (24 * 60)
        return quiet.contains(minute)

    def check_quiet(self, t: int, what: str) -> None:
        """Refuse ``what`` during the quiet hours.

        Raises:
            ActionRejected: saying so.
        """
        if self.quiet_now(t):
            raise ActionRejected(f"quiet hours ({self.settings.quiet_hours}): no {what}")
