"""A user's whole context: every domain's part, bounded, and how a new one starts."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.core.config import CoreConfig, UserProfile
from agent.core.context.devices import DeviceInfo
from agent.core.context.health import Health, HrWindow, Night
from agent.core.context.place import CalendarEvent, Where
from agent.core.context.talk import Held, Pending, Reminder, Talk, Task
from agent.core.shadow_state import SettingsState
from schemas.actions import ContextSnapshot, HealthSnapshot


@dataclass(slots=True)
class UserContext:
    """Everything the agent knows about one user; bounded, so it does not grow with the number of events.

    Attributes:
        user: the user id.
        now: the latest agent time seen for this user.
        devices: by ``kind/name``.
        health: vitals, windows, baselines.
        where: position, activity, learned places.
        events: upcoming or current calendar events.
        leave_done: start times of calendar events already given a leave-now notice.
        tasks: tasks by id, oldest first (finished ones are pruned).
        talk: the conversation.
        reminders: reminders set.
        outputs: outputs waiting for an ack, by action id.
        held: outputs held while asleep.
        display: what the glasses show (app name).
        speaking: what is being said or played.
        flags: the last published quiet/asleep/moving flags (to notice a change on tick).
        settings: each device's settings shadow, desired vs applied (:mod:`agent.core.settings`).
        consent: the consents the user gave or withdrew, by purpose (the profile's ``consent`` until then).
    """

    user: str
    now: int = 0
    devices: dict[str, DeviceInfo] = field(default_factory=dict)
    health: Health = field(default_factory=Health)
    where: Where = field(default_factory=Where)
    events: list[CalendarEvent] = field(default_factory=list)
    leave_done: list[int] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    talk: Talk = field(default_factory=Talk)
    reminders: list[Reminder] = field(default_factory=list)
    outputs: dict[str, Pending] = field(default_factory=dict)
    held: list[Held] = field(default_factory=list)
    display: str | None = None
    speaking: str | None = None
    flags: str = ""
    settings: SettingsState = field(default_factory=SettingsState)
    consent: dict[str, bool] = field(default_factory=dict)


PROACTIVE_HEALTH = "proactive-health"


def consented(ctx: UserContext, profile: UserProfile, purpose: str) -> bool:
    """Whether the user consents to ``purpose``: what they last said, else what their profile records (a new user
    without a profile has not consented: health rules are opt-in)."""
    given = ctx.consent.get(purpose)
    return purpose in profile.consent if given is None else given


def drop_vitals(h: Health) -> None:
    """Forget every vital sample and window (consent withdrawn); steps and sleep totals stay (they route output)."""
    h.hr = h.hrv = h.spo2 = h.skin_temp = h.skin_dev = h.resp = h.stress = None
    h.hr_window = HrWindow()
    h.spo2_recent = []
    h.night = Night()


def new_context(user: str, cfg: CoreConfig) -> UserContext:
    """A fresh context with the profile's language and baselines."""
    profile = cfg.profile(user)
    ctx = UserContext(user=user)
    ctx.talk.lang = "zh" if profile.lang.startswith("zh") else "en"
    h = ctx.health
    known = profile.baselines
    for name, base, prior in (
        ("rhr_bpm", h.rhr, cfg.prior_rhr_bpm),
        ("hrv_ms", h.hrv_base, cfg.prior_hrv_ms),
        ("skin_temp_c", h.temp_base, cfg.prior_skin_temp_c),
        ("resp_brpm", h.resp_base, cfg.prior_resp_brpm),
    ):
        if name in known:
            base.value, base.days = float(known[name]), float(cfg.baseline_min_days)
        else:
            base.value = prior
    return ctx


def split_health(snapshot: ContextSnapshot) -> tuple[ContextSnapshot, HealthSnapshot]:
    """The context every app may read (``wb/v1/{user}/agent/context``, no health values) and its health part
    (``wb/v1/{user}/agent/health``, which the broker's ACL lets only the agent and the user's own app read)."""
    return snapshot.model_copy(update={"health": {}}), HealthSnapshot(user=snapshot.user, values=dict(snapshot.health))
