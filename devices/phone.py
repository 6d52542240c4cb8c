"""The phone emulator: location along the user's routes, notifications, the calendar, battery, and the apps that
run the agent's tasks (a ride, a food order) with real status sequences delivered the way webhooks arrive.

The agent sends ``task.start`` with its own ``task_id``; the phone answers ``system/task_status`` ``quoted`` with
that id, a price and an ETA (``corr`` = the start action). ``task.confirm`` plays out the whole status sequence
(``status_seq`` 1, 2, ...) through :class:`~devices.models.WebhookChaos`: some updates late, some twice, some out
of order; the statuses in the scenario's ``chaos.spare`` always arrive on time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from devices.emulator import Armed, Emulator, WakeStep, seeded
from devices.models import (
    LocationGate,
    Skill,
    SpeedProfile,
    StatusUpdate,
    TaskSim,
    WebhookChaos,
)
from devices.scenario_spec import CalendarSpec, PhoneSpec, Step
from devices.sdk import ActionRejected, on_action
from schemas.actions import MediaControl, Notify, Prompt, TaskCancel, TaskConfirm, TaskStart
from schemas.envelope import Envelope
from schemas.errors import ConfigError, DeviceError
from schemas.events import (
    CalendarNext,
    Location,
    Money,
    Notification,
    Person,
    PhoneBattery,
    PhoneTap,
    TaskStatus,
    Utterance,
)
from schemas.geo import Place
from schemas.topics import Kind

PLACE_SLOTS = ("pickup", "destination", "restaurant", "address")
MAX_TASKS = 32
DRAIN_PCT_PER_H = 2.5  # screen mostly off
NAV_DRAIN_PCT_PER_H = 8.0  # GPS and screen on


@dataclass(slots=True)
class PhoneTask:
    """A task the agent started on the phone.

    Attributes:
        task_id: the agent's id (every status carries it).
        sim: the app side.
        start_corr: the ``task.start`` action's id.
        confirm_corr: the ``task.confirm`` action's id, once confirmed.
    """

    task_id: str
    sim: TaskSim
    start_corr: str
    confirm_corr: str | None = None


def sim_slots(slots: Mapping[str, object], places: Mapping[str, Place], here: tuple[float, float]) -> dict[str, object]:
    """The agent's slots as :meth:`TaskSim.start` reads them: place slots become ``(lat, lon)`` when known.

    A place slot is known from its ``{slot}_lat``/``{slot}_lon`` companions, or by name from ``places``; a ride
    without a pickup starts where the phone is.
    """
    out: dict[str, object] = dict(slots)
    for key in PLACE_SLOTS:
        lat, lon = slots.get(f"{key}_lat"), slots.get(f"{key}_lon")
        value = slots.get(key)
        if isinstance(lat, int | float) and isinstance(lon, int | float) and not isinstance(lat, bool):
            out[key] = (float(lat), float(lon))
        elif isinstance(value, str):
            found = places.get(value.strip().lower())
            if found is not None:
                out[key] = (found.lat, found.lon)
            elif value in ("current location", "here"):
                out[key] = here
    if "pickup" not in out:
        out["pickup"] = here
    if "address" not in out:
        out["address"] = here
    return out


class PhoneEmulator(Emulator):
    """The user's phone and its apps."""

    kind = Kind.PHONE
    model_name = "android-qwen"
    base_tick_s: ClassVar[float] = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec = self.scenario.devices.phone if self.scenario is not None else PhoneSpec()
        self.spec = spec
        self.places = self.scenario.places() if self.scenario is not None else {}
        self.gate = LocationGate(nav_interval_ms=self.period_ms(1.0, 0.1))
        self.task_rng = seeded(self.seed, "tasks", self.ident.client_id)
        chaos = spec.chaos
        self.chaos = WebhookChaos(
            seeded(self.seed, "webhooks", self.ident.client_id),
            dup_p=chaos.dup_p,
            late_p=chaos.late_p,
            reorder_p=chaos.reorder_p,
        )
        self.spare = frozenset(chaos.spare)
        self.tasks: dict[str, PhoneTask] = {}
        self._by_sim: dict[str, PhoneTask] = {}
        self._task_counts: Counter[str] = Counter()
        self.prompts: list[Prompt] = []
        self.notices: list[Notify] = []
        self.silenced = 0  # notifications posted without sound in the quiet hours
        self.media: list[MediaControl] = []
        self.delivered: list[TaskStatus] = []
        self._level = spec.battery_pct
        self._level_t = self.t0
        self._last_battery = 0
        self._last_level = -1.0
        self._battery_period = self.period_ms(300.0, 0.5)
        self._calendar_period = self.period_ms(900.0, 1.0)
        self._last_calendar = 0
        self._calendar_key: tuple[str, int] | None = None
        self.calendar: list[tuple[int, CalendarSpec, Place | None]] = []
        if self.scenario is not None:
            for ev in self.scenario.calendar:
                place = self.scenario.resolve(ev.place) if ev.place is not None else None
                self.calendar.append((self.t0 + ev.at, ev, place))
            self.calendar.sort(key=lambda e: e[0])

    def battery_pct(self) -> float | None:
        """The phone's charge."""
        return round(self._battery_at(self.clock.now_ms()), 1)

    def _battery_at(self, now: int) -> float:
        if now > self._level_t:
            nav = self.plan.position_at(self.offset(now)).navigating
            rate = DRAIN_PCT_PER_H + (NAV_DRAIN_PCT_PER_H if nav else 0.0)
            self._level = max(0.0, self._level - rate * (now - self._level_t) / 3_600_000)
            self._level_t = now
        return self._level

    def here(self, now: int) -> tuple[float, float]:
        """Where the phone is."""
        fix = self.plan.position_at(self.offset(now))
        return (fix.lat, fix.lon)

    # ------------------------------------------------------------------ loop

    def start(self, t: int) -> None:
        """Report position, battery and the next calendar event."""
        self._location(t)
        self._battery(t)
        self._calendar(t, force=True)

    def tick(self, now: int) -> None:
        """Location, task statuses, battery and calendar."""
        self._location(now)
        self._pump(now)
        level = self._battery_at(now)
        if abs(level - self._last_level) >= 1.0 or now - self._last_battery >= self._battery_period:
            self._battery(now)
        self._calendar(now, force=now - self._last_calendar >= self._calendar_period)

    def _location(self, now: int) -> None:
        fix = self.plan.position_at(self.offset(now))
        if not self.gate.should_publish(fix.lat, fix.lon, now, navigating=fix.navigating):
            return
        moving = fix.speed_mps > 0
        self.emit(
            Location(
                lat=round(fix.lat, 6),
                lon=round(fix.lon, 6),
                accuracy_m=round(self.rng.uniform(3.0, 8.0) if moving else self.rng.uniform(8.0, 25.0), 1),
                speed_mps=round(fix.speed_mps, 2),
                bearing_deg=round(fix.bearing_deg, 1) % 360.0,
                provider="gps" if moving else "fused",
                place=fix.place,
            )
        )

    def _battery(self, now: int) -> None:
        level = self._battery_at(now)
        self._last_battery, self._last_level = now, level
        self.emit(PhoneBattery(level_pct=round(level, 1)))

    def next_event(self, now: int) -> tuple[int, CalendarSpec, Place | None] | None:
        """The next calendar event that has not started."""
        return next((e for e in self.calendar if e[0] > now), None)

    def _calendar(self, now: int, *, force: bool = False) -> None:
        nxt = self.next_event(now)
        if nxt is None:
            return
        start, ev, place = nxt
        key = (ev.title, start)
        if key == self._calendar_key and not force:
            return
        self._calendar_key = key
        self._last_calendar = now
        location = ev.location or (place.address or place.name if place is not None else None)
        self.emit(
            CalendarNext(
                title=ev.title,
                start_ts=start,
                location=location,
                lat=place.lat if place is not None else None,
                lon=place.lon if place is not None else None,
            )
        )

    # ------------------------------------------------------------------ tasks

    def _pump(self, now: int) -> None:
        spared: list[StatusUpdate] = []
        for task in list(self.tasks.values()):
            updates = task.sim.due(now)
            spared.extend(u for u in updates if u.status.value in self.spare)
            self.chaos.feed(u for u in updates if u.status.value not in self.spare)
        for update in [*spared, *self.chaos.due(now)]:
            self._deliver(update)

    def _deliver(self, u: StatusUpdate) -> None:
        task = self._by_sim.get(u.task_id)
        if task is None:
            return
        driver = u.driver
        status = TaskStatus.model_validate(
            {
                "task_id": task.task_id,
                "skill": u.skill.value,
                "status": u.status.value,
                "status_seq": u.seq,
                "eta_s": u.eta_s,
                "driver": Person(name=driver.name, plate=driver.plate, vehicle=driver.vehicle) if driver else None,
                "courier_lat": u.courier_lat,
                "courier_lon": u.courier_lon,
                "price": Money(amount=u.price.amount, currency=u.price.currency) if u.price else None,
                "summary": task.sim.quote.summary[:200],
                "detail": f"event {u.event_id}",
            }
        )
        self.delivered.append(status)
        del self.delivered[:-500]
        self.emit(status, src_ts=u.occurred_ms, corr=task.confirm_corr or task.start_corr)

    def _quote(self, task: PhoneTask) -> TaskStatus:
        q = task.sim.quote
        return TaskStatus(
            task_id=task.task_id,
            skill=q.skill.value,
            status="quoted",
            status_seq=0,
            eta_s=min(86_400, q.eta_s),
            price=Money(amount=q.price.amount, currency=q.price.currency),
            summary=q.summary[:200],
            detail=f"quote {q.quote_id}",
        )

    def _task(self, task_id: str) -> PhoneTask:
        task = self.tasks.get(task_id)
        if task is None:
            raise ActionRejected(f"no task {task_id!r} on this phone")
        return task

    @on_action(TaskStart)
    async def task_start(self, action: TaskStart, envelope: Envelope[TaskStart]) -> str:
        """Open a task in the ride or food app and quote it (``quoted``, corr = this action)."""
        old = self.tasks.get(action.task_id)
        if old is not None:  # the same start again (a redelivery): the same quote again
            self.emit(self._quote(old), corr=old.start_corr)
            return f"already quoted {old.sim.quote.price.amount:.2f} {old.sim.quote.price.currency}"
        now = self.clock.now_ms()
        self._task_counts[action.skill] += 1
        n = self._task_counts[action.skill]
        fail = next((f.fail for f in self.spec.failures if f.skill == action.skill and f.nth == n), None)
        try:
            sim = TaskSim.start(
                action.skill,
                sim_slots(action.slots, self.places, self.here(now)),
                now,
                self.task_rng,
                fail=fail,
                speed_profile=SpeedProfile(self.spec.task_speed),
            )
        except ConfigError as exc:
            raise ActionRejected(str(exc)) from exc
        task = PhoneTask(action.task_id, sim, envelope.id)
        self.tasks[action.task_id] = task
        self._by_sim[sim.task_id] = task
        while len(self.tasks) > MAX_TASKS:
            gone = self.tasks.pop(next(iter(self.tasks)))
            self._by_sim.pop(gone.sim.task_id, None)
        self.emit(self._quote(task), corr=envelope.id)
        q = sim.quote
        return f"quoted {q.price.amount:.2f} {q.price.currency}, eta {q.eta_s} s"

    @on_action(TaskConfirm)
    async def task_confirm(self, action: TaskConfirm, envelope: Envelope[TaskConfirm]) -> str:
        """Book it (the statuses follow) or decline the quote."""
        task = self._task(action.task_id)
        now = self.clock.now_ms()
        if not action.confirm:
            task.sim.cancel(now)
            return "declined"
        if task.sim.confirmed:
            return "already confirmed"
        try:
            task.sim.confirm(now)
        except DeviceError as exc:
            raise ActionRejected(str(exc)) from exc
        task.confirm_corr = envelope.id
        self._pump(now)
        return f"confirmed {Skill(task.sim.skill).value} ({action.modality or 'unspecified'})"

    @on_action(TaskCancel)
    async def task_cancel(self, action: TaskCancel, envelope: Envelope[TaskCancel]) -> str:
        """Cancel a task (too late once the trip started or the food was picked up)."""
        task = self._task(action.task_id)
        now = self.clock.now_ms()
        if not task.sim.cancel(now):
            status = task.sim.status.value if task.sim.status is not None else "not confirmed"
            raise ActionRejected(f"too late to cancel {action.task_id}: {status}")
        self._pump(now)
        return f"cancelling ({action.reason})"

    # ------------------------------------------------------------------ the rest of the phone

    @on_action(Prompt)
    async def prompt(self, action: Prompt, envelope: Envelope[Prompt]) -> str:
        """Show a confirmation; the user's tap comes back as ``gesture/tap``."""
        self.prompts.append(action)
        del self.prompts[:-50]
        self.trigger("prompt", [action.prompt_id, action.title], self.clock.now_ms())
        return "prompt shown"

    @on_action(Notify)
    async def notify(self, action: Notify, envelope: Envelope[Notify]) -> str:
        """Post a notification (silently in the quiet hours set through the shadow)."""
        self.notices.append(action)
        del self.notices[:-50]
        if self.quiet_now(self.clock.now_ms()):
            self.silenced += 1
            return f"posted silently (quiet hours {self.settings.quiet_hours})"
        return "posted"

    @on_action(MediaControl)
    async def media_control(self, action: MediaControl, envelope: Envelope[MediaControl]) -> str:
        """Control the phone's music player."""
        self.media.append(action)
        del self.media[:-50]
        return f"{action.command}" + (f": {action.query}" if action.query else "")

    def perform(self, step: Step, t: int) -> None:
        """Speech into the phone and incoming notifications."""
        if step.say is not None:
            self.user_says(step.say, step.spoken_lang(), t)
        elif step.notify is not None:
            n = step.notify
            self.emit(Notification(app=n.app, title=n.title, body=n.body, category=n.category))

    def user_says(self, text: str, lang: str, t: int, *, wake: WakeStep = "none") -> int:
        """The phone's assistant hears only the final text."""
        self._utterances += 1
        self.emit(Utterance(text=text, lang=lang, utterance_id=f"{self.ident.device}-u{self._utterances}"))
        return t

    def react(self, armed: Armed, subject: int, t: int) -> None:
        """Tap the prompt on screen."""
        if not self.prompts or armed.spec.do not in ("confirm", "deny"):
            return
        shown = self.prompts[-1]
        choice = "confirm" if armed.spec.do == "confirm" else "deny"
        self.emit(PhoneTap(prompt_id=shown.prompt_id, choice=choice))
