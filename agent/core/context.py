"""Per-user context: small bounded dataclasses and the pure functions that fuse each event into them."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.core.config import CoreConfig, Place, UserProfile
from agent.core.shadow_state import SettingsState
from schemas.actions import ContextSnapshot, HealthSnapshot
from schemas.geo import haversine_m

MIN_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
BUCKET_MS = 300_000  # heart-rate rule buckets: the ring's periodic cadence
SESSION_GAP_MS = 3 * HOUR_MS  # hypnogram segments further apart belong to different sleeps
MOVING = frozenset({"walking", "running", "cycling", "automotive"})
MAX_DEVICES = 6
MAX_CELLS = 8
MAX_EVENTS = 2
MAX_ACT = 4
MAX_STEP_BUCKETS = 4
MAX_SPO2 = 3
SlotValue = str | int | float | bool


# --- the published context, split


def split_health(snapshot: ContextSnapshot) -> tuple[ContextSnapshot, HealthSnapshot]:
    """The context every app may read (``wb/v1/{user}/agent/context``, no health values) and its health part
    (``wb/v1/{user}/agent/health``, which the broker's ACL lets only the agent and the user's own app read)."""
    return snapshot.model_copy(update={"health": {}}), HealthSnapshot(user=snapshot.user, values=dict(snapshot.health))


# --- time


def local(t: int, profile: UserProfile) -> int:
    """``t`` shifted to the user's wall time (still ms; only hours, days and weekdays are read from it)."""
    return t + profile.tz_offset_min * MIN_MS


def hour_of(t_local: int) -> int:
    """The hour (0-23) of a local time."""
    return (t_local // HOUR_MS) % 24


def weekday_of(t_local: int) -> int:
    """Monday 0 .. Sunday 6 (1970-01-01 was a Thursday)."""
    return (t_local // DAY_MS + 3) % 7


def in_hours(hour: int, start: int, end: int) -> bool:
    """Whether ``hour`` falls in ``[start, end)``, a window that may wrap midnight."""
    return start <= hour < end if start <= end else (hour >= start or hour < end)


# --- devices


@dataclass(slots=True)
class DeviceInfo:
    """One device of the user as the agent sees it.

    Attributes:
        kind: glasses, ring, earphones or phone.
        name: the device id of its topic.
        online: from its retained state (birth/Will) and from any event it sends.
        worn: glasses donned, ring on finger, an earbud in (None: never reported).
        battery: percent (glasses: overall level; earphones: the lower bud).
        charging: on the charger.
        in_case: glasses folded into their case.
        last_seen: when it last sent anything (agent time).
        cells: glasses only, the present swappable cells: slot -> percent.
        ears: earphones only, the buds in the ear.
        actions: the actions its birth listed (``None``: it listed none, so all of its kind's are assumed).
    """

    kind: str
    name: str
    online: bool = False
    worn: bool | None = None
    battery: float | None = None
    charging: bool = False
    in_case: bool = False
    last_seen: int = 0
    cells: dict[str, float] | None = None
    ears: tuple[str, ...] = ()
    actions: tuple[str, ...] | None = None

    def accepts(self, action: str) -> bool:
        """Whether the device can carry out ``action`` (a Colmi ring has no haptic motor)."""
        return self.actions is None or action in self.actions

    @property
    def usable(self) -> bool:
        """Online, worn (or not known to be off) and not flat or in its case."""
        charged = self.battery is None or self.battery > 2.0 or self.charging
        return self.online and self.worn is not False and charged and not self.in_case


# --- health


@dataclass(slots=True)
class Baseline:
    """A personal baseline: a running mean of one value per day that starts from a prior.

    Attributes:
        value: the current baseline.
        days: days of data folded in (a profile-given baseline starts as learned).
    """

    value: float
    days: float = 0.0

    def fold(self, x: float, prior_days: float, min_alpha: float) -> None:
        """Fold one day's value in; the prior weighs like ``prior_days`` days, old baselines move slowly."""
        self.days += 1
        alpha = max(min_alpha, 1.0 / (self.days + prior_days))
        self.value += alpha * (x - self.value)


class HrWindow:
    """Heart-rate samples of the last ~2 h summarised in 5-min buckets, in sample-time order.

    A bucket keeps its first and last sample time, its lowest and highest bpm and two flags (every sample at
    rest; any sample asleep); that is all the sustained-HR rules need, whatever order the samples arrive in.
    Two flat arrays keep it to 32 bytes a bucket: ``key, first, last, flags`` as 32-bit ints (the bucket number,
    and the sample times as ms after the bucket's start) and ``lo, hi`` as floats.
    """

    __slots__ = ("ints", "vals")
    RESTING = 1
    ASLEEP = 2

    def __init__(self) -> None:
        self.ints: array[int] = array("i")
        self.vals: array[float] = array("d")

    def __len__(self) -> int:
        return len(self.ints) // 4

    def key(self, j: int) -> int:
        """The bucket number of bucket ``j``."""
        return self.ints[4 * j]

    def first(self, j: int) -> int:
        """The first sample time in bucket ``j``."""
        return self.ints[4 * j] * BUCKET_MS + self.ints[4 * j + 1]

    def last(self, j: int) -> int:
        """The last sample time in bucket ``j``."""
        return self.ints[4 * j] * BUCKET_MS + self.ints[4 * j + 2]

    def add(self, t: int, bpm: float, flags: int, keep_from: int) -> int:
        """Add one sample; drop buckets that end before ``keep_from``. Returns the sample's bucket index."""
        ints, vals = self.ints, self.vals
        while ints and (ints[0] + 1) * BUCKET_MS <= keep_from:
            del ints[:4]
            del vals[:2]
        key, off = divmod(t, BUCKET_MS)
        n = len(ints) // 4
        last = ints[4 * n - 4] if n else -1
        if key > last:
            i = n
        elif key == last:
            i = n - 1
        else:  # an older bucket: search
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi) // 2
                if ints[4 * mid] < key:
                    lo = mid + 1
                else:
                    hi = mid
            i = lo
        if i < n and ints[4 * i] == key:
            ints[4 * i + 1] = min(ints[4 * i + 1], off)
            ints[4 * i + 2] = max(ints[4 * i + 2], off)
            old = ints[4 * i + 3]
            ints[4 * i + 3] = (old & flags & self.RESTING) | ((old | flags) & self.ASLEEP)
            vals[2 * i] = min(vals[2 * i], bpm)
            vals[2 * i + 1] = max(vals[2 * i + 1], bpm)
            return i
        ints[4 * i : 4 * i] = array("i", (key, off, off, flags))
        vals[2 * i : 2 * i] = array("d", (bpm, bpm))
        return i

    def run(
        self, i: int, high: float | None, low: float | None, max_gap: int, *, asleep_ok: bool = True
    ) -> tuple[int, int] | None:
        """The span ``(first, last)`` of the run of buckets around ``i`` that stayed above ``high`` (or
        below ``low``) at rest, no gap between samples longer than ``max_gap``; None if ``i`` is not in one.
        """

        def ok(j: int) -> bool:
            f = self.ints[4 * j + 3]
            if not f & self.RESTING or (not asleep_ok and f & self.ASLEEP):
                return False
            if high is not None:
                return self.vals[2 * j] > high
            return low is not None and self.vals[2 * j + 1] < low

        if not ok(i):
            return None
        a = b = i
        while a > 0 and ok(a - 1) and self.first(a) - self.last(a - 1) <= max_gap:
            a -= 1
        while b + 1 < len(self) and ok(b + 1) and self.first(b + 1) - self.last(b) <= max_gap:
            b += 1
        return (self.first(a), self.last(b))

    def mean(self) -> float | None:
        """The mid-range heart rate over the window."""
        n = len(self)
        if not n:
            return None
        return sum(self.vals) / (2 * n)

    def to_data(self) -> list[tuple[int, int, int, int, float, float]]:
        """JSON-ready rows ``[key, first, last, flags, lo, hi]`` (sample times in ms since the epoch).

        Rows are tuples, and a bucket of one sample repeats its time and bpm objects: the core's snapshot holds
        every user's rows at once, so they are kept small (the JSON is the same).
        """
        ints, vals, rows = self.ints, self.vals, []
        for j in range(len(ints) // 4):
            key, a, b, flags = ints[4 * j : 4 * j + 4]
            base = key * BUCKET_MS
            first = base + a
            lo, hi = vals[2 * j], vals[2 * j + 1]
            rows.append((key, first, first if b == a else base + b, flags, lo, lo if hi == lo else hi))
        return rows

    @classmethod
    def from_data(cls, rows: list[list[Any]]) -> HrWindow:
        """Rebuild from :meth:`to_data`."""
        w = cls()
        for key, first, last, flags, lo, hi in rows:
            base = int(key) * BUCKET_MS
            w.ints.extend((int(key), int(first) - base, int(last) - base, int(flags)))
            w.vals.extend((float(lo), float(hi)))
        return w


class StepBuckets:
    """The last few step buckets ``(start, seconds, steps)`` in start order, one start at most once.

    One flat array (24 bytes a bucket instead of ~170 for a list of tuples of ints); iterates as the tuples.
    """

    __slots__ = ("ints",)
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self) -> None:
        self.ints: array[int] = array("q")

    def __len__(self) -> int:
        return len(self.ints) // 3

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        ints = self.ints
        for j in range(0, len(ints), 3):
            yield ints[j], ints[j + 1], ints[j + 2]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepBuckets) and self.ints == other.ints

    def pop(self, start: int) -> int | None:
        """Remove the bucket that starts at ``start``; its steps, or None if there is none."""
        ints = self.ints
        for j in range(0, len(ints), 3):
            if ints[j] == start:
                steps = ints[j + 2]
                del ints[j : j + 3]
                return steps
        return None

    def put(self, start: int, seconds: int, steps: int, keep: int) -> None:
        """Insert a bucket in start order (none with this start may be present); keep the last ``keep``."""
        ints = self.ints
        j = len(ints)
        while j and ints[j - 3] > start:
            j -= 3
        ints[j:j] = array("q", (start, seconds, steps))
        if len(ints) > 3 * keep:
            del ints[: len(ints) - 3 * keep]

    def to_data(self) -> list[tuple[int, int, int]]:
        """JSON-ready rows ``[start, seconds, steps]``."""
        return list(self)

    @classmethod
    def from_data(cls, rows: list[list[Any]]) -> StepBuckets:
        """Rebuild from :meth:`to_data`."""
        b = cls()
        for start, seconds, steps in rows:
            b.ints.extend((int(start), int(seconds), int(steps)))
        return b


@dataclass(slots=True)
class Night:
    """What one night contributes to baselines and the night rules.

    Attributes:
        key: the night being collected: the local day of its evening (-1: none).
        closed: the last night already judged; later samples of it are ignored.
        hr_min: the lowest valid heart rate of the night.
        hr_n: how many heart-rate samples it has.
        hrv_sum: sum of HRV samples.
        hrv_n: their count.
        temp_sum: sum of skin temperature samples (°C).
        temp_n: their count.
        last_ts: the latest sample time in the night.
        corr: the event that brought that sample (commands caused by judging the night carry it).
    """

    key: int = -1
    closed: int = -1
    hr_min: float | None = None
    hr_n: int = 0
    hrv_sum: float = 0.0
    hrv_n: int = 0
    temp_sum: float = 0.0
    temp_n: int = 0
    last_ts: int = 0
    corr: str = ""


@dataclass(slots=True)
class Health:
    """Latest readings, short windows and baselines.

    Attributes:
        hr: latest heart rate, with its sample time ``hr_ts`` (same pattern for the others).
        hr_window: 5-min buckets of the last ~2 h for the sustained rules.
        spo2_recent: the last few valid SpO2 readings, in sample-time order (a bounded window).
        steps: the last few 15-min step buckets ``(start, seconds, steps)``, in start order (bounded).
        steps_day: the local day ``steps_today`` counts.
        sleep_seen: the end of the latest hypnogram segment; ``sleep_ms``/``deep_ms`` the session's totals.
        sleep_start: the first asleep segment start of that session; ``sleep_end`` the last end.
        sleep_sign: latest sample time that says the user was asleep.
        awake_sign: latest time that says the user was awake.
        night: the night accumulator.
        rhr: the resting heart-rate baseline (the others: hrv, skin temperature, breathing rate).
        fired: per metric, the sample time of the last nudge (rate limit).
        spo2_checked: when a recheck of a low SpO2 was last asked.
    """

    hr: float | None = None
    hr_ts: int = 0
    hrv: float | None = None
    hrv_ts: int = 0
    spo2: float | None = None
    spo2_ts: int = 0
    skin_temp: float | None = None
    skin_temp_ts: int = 0
    skin_dev: float | None = None
    skin_dev_ts: int = 0
    resp: float | None = None
    resp_ts: int = 0
    stress: float | None = None
    stress_ts: int = 0
    hr_window: HrWindow = field(default_factory=HrWindow)
    spo2_recent: list[tuple[int, float]] = field(default_factory=list)
    steps: StepBuckets = field(default_factory=StepBuckets)
    steps_day: int = -1
    steps_today: int = 0
    sleep_seen: int = 0
    sleep_ms: int = 0
    deep_ms: int = 0
    sleep_start: int = 0
    sleep_end: int = 0
    sleep_sign: int = 0
    awake_sign: int = 0
    night: Night = field(default_factory=Night)
    rhr: Baseline = field(default_factory=lambda: Baseline(60.0))
    hrv_base: Baseline = field(default_factory=lambda: Baseline(45.0))
    temp_base: Baseline = field(default_factory=lambda: Baseline(33.0))
    resp_base: Baseline = field(default_factory=lambda: Baseline(14.0))
    fired: dict[str, int] = field(default_factory=dict)
    spo2_checked: int = 0


# --- place


class Cells:
    """Dwell time per ~100 m cell, in the order the cells were first credited (at most a few).

    One flat array ``lat, lon, night seconds, weekday-daytime seconds`` per cell (32 bytes a cell instead of ~200 for
    a dict of ``"lat,lon"`` keys and lists); exported as that dict, ``{"30.265,120.131": [night, day]}``.
    """

    __slots__ = ("vals",)
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self) -> None:
        self.vals: array[float] = array("d")

    def __len__(self) -> int:
        return len(self.vals) // 4

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cells) and self.vals == other.vals

    def credit(self, key: str, night: float, day: float, keep: int) -> None:
        """Add dwell time to cell ``key`` (created last if new); past ``keep`` cells drop the one with the least."""
        lat, lon = cell_center(key)
        vals = self.vals
        for j in range(0, len(vals), 4):
            if vals[j] == lat and vals[j + 1] == lon:
                break
        else:
            j = len(vals)
            vals.extend((lat, lon, 0.0, 0.0))
        vals[j + 2] += night
        vals[j + 3] += day
        if len(vals) > 4 * keep:
            smallest = min(range(0, len(vals), 4), key=lambda i: vals[i + 2] + vals[i + 3])
            del vals[smallest : smallest + 4]

    def most(self, which: int, skip: int = -1) -> int:
        """The index of the cell with the most night (``which`` 0) or daytime (1) seconds, not ``skip``; -1 if none."""
        best, most = -1, 0.0
        for i in range(len(self)):
            value = self.vals[4 * i + 2 + which]
            if i != skip and (best < 0 or value > most):
                best, most = i, value
        return best

    def seconds(self, i: int, which: int) -> float:
        """Night (``which`` 0) or daytime (1) seconds of cell ``i``."""
        return self.vals[4 * i + 2 + which]

    def center(self, i: int) -> tuple[float, float]:
        """The position of cell ``i``."""
        return self.vals[4 * i], self.vals[4 * i + 1]

    def to_data(self) -> dict[str, tuple[float, float]]:
        """JSON-ready ``{"lat,lon": [night, day]}``, in order."""
        v = self.vals
        return {cell_key(v[j], v[j + 1]): (v[j + 2], v[j + 3]) for j in range(0, len(v), 4)}

    @classmethod
    def from_data(cls, data: dict[str, list[Any]]) -> Cells:
        """Rebuild from :meth:`to_data`."""
        c = cls()
        for key, (night, day) in data.items():
            c.vals.extend((*cell_center(key), float(night), float(day)))
        return c


@dataclass(slots=True)
class Where:
    """Where the user is and what they do, and the places learned from it.

    Attributes:
        lat: latest position (None: unknown).
        lon: latest position.
        loc_ts: when it was taken.
        speed: phone speed, m/s.
        place: the named place the user is at, if any.
        activity: the earphones' latest activity label, since ``activity_ts``.
        act_hist: recent activity changes ``(since, label)``, to know the activity at a sample time.
        cells: dwell time per ~100 m cell: key -> ``[night seconds, weekday-daytime seconds]``.
        cell: the cell of the latest position; ``cell_ts`` when the user got there.
    """

    lat: float | None = None
    lon: float | None = None
    loc_ts: int = 0
    speed: float = 0.0
    place: str | None = None
    activity: str | None = None
    activity_ts: int = 0
    act_hist: list[tuple[int, str]] = field(default_factory=list)
    cells: Cells = field(default_factory=Cells)
    cell: str | None = None
    cell_ts: int = 0


@dataclass(slots=True)
class CalendarEvent:
    """A calendar event the phone announced.

    Attributes:
        title: its title.
        start: its start time.
        location: where, as text.
        lat: where, if the phone knows the position.
        lon: where.
        corr: the event envelope that announced it.
    """

    title: str
    start: int
    location: str | None = None
    lat: float | None = None
    lon: float | None = None
    corr: str = ""


# --- tasks and talk


@dataclass(slots=True)
class Task:
    """A skill run: slots, progress, the interaction-rounds metric.

    Attributes:
        task_id: our id (also the phone's task id and the confirmation prompt id).
        skill: the skill.
        state: asking, quoting, awaiting_confirmation, committed, the phone's status, cancelled, expired, ...
        slots: the filled slots.
        lang: the language of the conversation (en or zh).
        rounds: user turns so far.
        autofilled: slots filled from context.
        asked: slots the agent asked for.
        modality: how the user confirmed.
        created: start time.
        updated: last change.
        corr: the event that started it (tick-time outputs about the task carry it).
        origin: ``user`` or the proactive rule that started it.
        status_seq: the phone's latest status position (-1: none yet).
        price: quoted or latest price.
        currency: its currency.
        eta_s: latest ETA.
        notified: progress notices already given (``near``, ``arriving``, ...).
        phone_id: the phone's task id, if it answers with its own.
        start_cmd: the id of the ``task.start`` action.
    """

    task_id: str
    skill: str
    state: str
    slots: dict[str, SlotValue]
    lang: str
    rounds: int = 0
    autofilled: tuple[str, ...] = ()
    asked: tuple[str, ...] = ()
    modality: str | None = None
    created: int = 0
    updated: int = 0
    corr: str = ""
    origin: str = "user"
    status_seq: int = -1
    price: float | None = None
    currency: str = "CNY"
    eta_s: int | None = None
    notified: tuple[str, ...] = ()
    phone_id: str | None = None
    start_cmd: str | None = None


@dataclass(slots=True)
class Reminder:
    """A reminder set by the ``remind`` skill.

    Attributes:
        due: when to remind.
        text: what about.
        lang: in which language.
        every_s: repeat interval (0: once).
        task_id: the task that set it.
        corr: the utterance that set it.
    """

    due: int
    text: str
    lang: str
    every_s: int = 0
    task_id: str = ""
    corr: str = ""


@dataclass(slots=True)
class Talk:
    """The conversation: what the agent waits for.

    Attributes:
        lang: the user's language (from their last utterance; the profile's before that).
        pending: the task whose confirmation is shown; ``pending_until`` its expiry.
        asking: the task waiting for an answer to a slot question; ``ask_slot``/``ask_until``.
        undo: the T1 task that can still be undone, until ``undo_until``.
        measure: a spot measurement the user asked for: metric, since, until, lang, task id, corr.
        prompter: the teleprompter script on the glasses: ``[name, page, pages]``.
        wake_ts: the last wake.
        last_dish: the last food order (for "my usual").
        last_restaurant: its restaurant.
        task_counter: for task ids.
        action_counter: for action ids (:func:`agent.core.routing.action_id`).
        guess: a reading too unsure to act on, asked back ("Did you mean ...?"): skill, slots, lang, until.
    """

    lang: str = "en"
    pending: str | None = None
    pending_until: int = 0
    asking: str | None = None
    ask_slot: str = ""
    ask_until: int = 0
    undo: str | None = None
    undo_until: int = 0
    measure: list[Any] | None = None
    prompter: list[Any] | None = None
    wake_ts: int = 0
    last_dish: str | None = None
    last_restaurant: str | None = None
    task_counter: int = 0
    action_counter: int = 0
    guess: list[Any] | None = None


# --- routing memory


@dataclass(slots=True)
class Output:
    """Something to tell the user, before a device is chosen.

    Attributes:
        title: a short title (a card's first line).
        body: card body text (wrapped to three lines, one when moving).
        speech: what to say when spoken (defaults to title and body).
        lang: en or zh.
        icon: the card icon.
        urgency: low, normal or high (only high is delivered while the user sleeps).
        buttons: card buttons ``(label, action_id)``.
        prompt_id: set for a confirmation: the phone gets a prompt with this id as its fallback.
        speak_too: say it as well when a card is shown (a car arriving).
        haptic: a ring pattern to draw attention discreetly.
        ttl_s: how long a card stays.
        reason: the reason tag of the commands.
        health: the text quotes a health value (the actions carry the contract's ``health`` flag, so every tool
            redacts it where people read).
    """

    title: str
    body: str = ""
    speech: str = ""
    lang: str = "en"
    icon: str = "info"
    urgency: str = "normal"
    buttons: list[tuple[str, str]] = field(default_factory=list)
    prompt_id: str | None = None
    speak_too: bool = False
    haptic: str | None = None
    ttl_s: int = 30
    reason: str = ""
    health: bool = False


@dataclass(slots=True)
class Pending:
    """An output sent to a device that has not acknowledged it yet.

    Attributes:
        channel: how it was sent (card, speak_ear, speak_glasses, notify, prompt).
        action: the action type.
        rest: the channels still to try, in preference order.
        out: what was said.
        corr: the causing event.
        deadline: when to fall back if no ack has come.
    """

    channel: str
    action: str
    rest: list[str]
    out: Output
    corr: str
    deadline: int


@dataclass(slots=True)
class Held:
    """An output held while the user sleeps."""

    out: Output
    corr: str


# --- the context


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


# --- devices: fusion


def device(ctx: UserContext, kind: str, name: str) -> DeviceInfo:
    """The device record, created on first sight (the least recently seen is dropped past a small cap)."""
    key = f"{kind}/{name}"
    dev = ctx.devices.get(key)
    if dev is None:
        if len(ctx.devices) >= MAX_DEVICES:
            oldest = min(ctx.devices, key=lambda k: ctx.devices[k].last_seen)
            del ctx.devices[oldest]
        dev = DeviceInfo(kind=kind, name=name)
        ctx.devices[key] = dev
    return dev


def primary(ctx: UserContext, kind: str) -> DeviceInfo | None:
    """The device of ``kind`` to talk to: an online one first, then the most recently seen."""
    best: DeviceInfo | None = None
    for dev in ctx.devices.values():
        if dev.kind != kind:
            continue
        if best is None or (dev.online, dev.last_seen) > (best.online, best.last_seen):
            best = dev
    return best


def usable(ctx: UserContext, kind: str) -> DeviceInfo | None:
    """The primary device of ``kind`` if it is usable now."""
    dev = primary(ctx, kind)
    return dev if dev is not None and dev.usable else None


def online(ctx: UserContext, kind: str) -> DeviceInfo | None:
    """The primary device of ``kind`` if it is online."""
    dev = primary(ctx, kind)
    return dev if dev is not None and dev.online else None


def set_cells(dev: DeviceInfo, cells: list[tuple[str, float, bool]]) -> None:
    """Record the glasses' swappable cells (only the present ones are kept)."""
    dev.cells = {slot: pct for slot, pct, present in cells if present} or None


# --- health: fusion


def night_key(t: int, profile: UserProfile) -> int:
    """The night a sample belongs to: the local day of its evening (nights run noon to noon)."""
    return (local(t, profile) - 12 * HOUR_MS) // DAY_MS


def night_close_at(key: int, cfg: CoreConfig, profile: UserProfile) -> int:
    """When night ``key`` ends (its morning's ``night_end_hour``), in agent time."""
    return (key + 1) * DAY_MS + cfg.night_end_hour * HOUR_MS - profile.tz_offset_min * MIN_MS


def in_night(t: int, cfg: CoreConfig, profile: UserProfile) -> bool:
    """Whether ``t`` falls in the local night window."""
    return in_hours(hour_of(local(t, profile)), cfg.night_start_hour, cfg.night_end_hour)


def night_add(ctx: UserContext, t: int, corr: str, profile: UserProfile) -> Night | None:
    """The night accumulator to add a sample of time ``t`` to (None: that night was already judged)."""
    n = ctx.health.night
    key = night_key(t, profile)
    if key <= n.closed or key < n.key:
        return None
    if key > n.key:
        ctx.health.night = n = Night(key=key, closed=n.closed)
    n.last_ts = max(n.last_ts, t)
    n.corr = corr
    return n


def steps_at(h: Health, t: int, window_ms: int) -> tuple[int, int]:
    """``(steps, seconds)`` of the buckets overlapping ``[t - window_ms, t]``."""
    steps = secs = 0
    for start, seconds, n in h.steps:
        end = start + seconds * 1000
        if end > t - window_ms and start <= t:
            steps += n
            secs += seconds
    return steps, secs


def activity_at(w: Where, t: int) -> str | None:
    """The earphones' activity label at sample time ``t`` (None: unknown)."""
    label: str | None = None
    for since, act in w.act_hist:
        if since <= t:
            label = act
    return label


def moving_at(ctx: UserContext, t: int, cfg: CoreConfig) -> bool:
    """Whether the user was moving at sample time ``t`` (steps, earphones activity, phone speed)."""
    steps, secs = steps_at(ctx.health, t, 15 * MIN_MS)
    if secs and steps > cfg.rest_steps_per_bucket * max(1.0, secs / 900):
        return True
    if activity_at(ctx.where, t) in MOVING:
        return True
    w = ctx.where
    return abs(t - w.loc_ts) <= 2 * MIN_MS and w.speed >= cfg.moving_speed_mps


def add_steps(ctx: UserContext, start: int, seconds: int, steps: int, profile: UserProfile) -> None:
    """Record a step bucket (a bucket seen again replaces itself) and today's total."""
    h = ctx.health
    day = local(start, profile) // DAY_MS
    old = h.steps.pop(start)
    if old is not None and day == h.steps_day:
        h.steps_today -= old
    if day > h.steps_day:
        h.steps_day, h.steps_today = day, 0
    if day == h.steps_day:
        h.steps_today += steps
    h.steps.put(start, seconds, steps, MAX_STEP_BUCKETS)


def add_sleep(ctx: UserContext, stage: str, start: int, end: int) -> None:
    """Fold a hypnogram segment into the latest sleep session (a gap of hours starts a new one)."""
    h = ctx.health
    if h.sleep_seen and start < h.sleep_seen:
        return  # already counted, or older than the session we summarise
    if not h.sleep_seen or start > h.sleep_seen + SESSION_GAP_MS:
        h.sleep_ms = h.deep_ms = h.sleep_start = h.sleep_end = 0
    h.sleep_seen = end
    if stage == "awake":
        h.awake_sign = max(h.awake_sign, end)
        return
    h.sleep_ms += end - start
    if stage == "deep":
        h.deep_ms += end - start
    h.sleep_start = start if not h.sleep_start else min(h.sleep_start, start)
    h.sleep_end = max(h.sleep_end, end)
    h.sleep_sign = max(h.sleep_sign, end)


def asleep(ctx: UserContext, now: int, cfg: CoreConfig) -> bool:
    """Asleep: a recent sign of sleep, and nothing since that says awake."""
    h = ctx.health
    return h.sleep_sign > h.awake_sign and now - h.sleep_sign <= cfg.asleep_window_s * 1000


def in_sleep(ctx: UserContext, t: int) -> bool:
    """Whether sample time ``t`` falls in the last known sleep span."""
    h = ctx.health
    return bool(h.sleep_start) and h.sleep_start <= t <= h.sleep_end


# --- place: fusion


def cell_key(lat: float, lon: float) -> str:
    """A ~100 m cell."""
    return f"{lat:.3f},{lon:.3f}"


def cell_center(key: str) -> tuple[float, float]:
    """The position of a cell."""
    lat, lon = key.split(",")
    return float(lat), float(lon)


def learn_dwell(w: Where, key: str, t: int, cfg: CoreConfig, profile: UserProfile) -> None:
    """Credit the time since the last position to its cell: night hours (home), weekday daytime (office)."""
    if w.cell is not None and t > w.cell_ts:
        a, b = w.cell_ts, min(t, w.cell_ts + 12 * HOUR_MS)
        night = day = 0.0
        while a < b:
            nxt = min(b, (a // HOUR_MS + 1) * HOUR_MS)
            lt = local(a, profile)
            hour = hour_of(lt)
            if in_hours(hour, cfg.night_start_hour, cfg.night_end_hour):
                night += (nxt - a) / 1000
            elif weekday_of(lt) < 5 and 9 <= hour < 18:
                day += (nxt - a) / 1000
            a = nxt
        if night or day:
            w.cells.credit(w.cell, night, day, MAX_CELLS)
    if key != w.cell or t < w.cell_ts:
        w.cell, w.cell_ts = key, t
    else:
        w.cell_ts = t


def learned(w: Where, which: str, cfg: CoreConfig) -> tuple[float, float] | None:
    """The learned home (most night time) or office (most weekday daytime, not home), if trusted."""
    min_s, cells = cfg.learn_min_s, w.cells
    home = cells.most(0)
    if home >= 0 and cells.seconds(home, 0) < min_s:
        home = -1
    if which == "home":
        return cells.center(home) if home >= 0 else None
    office = cells.most(1, skip=home)
    if office < 0 or cells.seconds(office, 1) < min_s:
        return None
    return cells.center(office)


def known_place(ctx: UserContext, which: str, cfg: CoreConfig, profile: UserProfile) -> Place | None:
    """Home or office: learned from history when trusted, else the profile's default."""
    given = profile.home if which == "home" else profile.office
    pos = learned(ctx.where, which, cfg)
    if pos is not None:
        if given is not None and haversine_m(pos[0], pos[1], given.lat, given.lon) <= cfg.place_radius_m:
            return given
        return Place(name=which, lat=pos[0], lon=pos[1])
    return given


def name_place(ctx: UserContext, lat: float, lon: float, cfg: CoreConfig, profile: UserProfile) -> str | None:
    """The known place within reach of a position (home, office or a profile place), if any."""
    best: tuple[float, str] | None = None
    candidates: list[tuple[str, Place | None]] = [
        ("home", known_place(ctx, "home", cfg, profile)),
        ("office", known_place(ctx, "office", cfg, profile)),
        *((p.name, p) for p in profile.places),
    ]
    for name, place in candidates:
        if place is None:
            continue
        d = haversine_m(lat, lon, place.lat, place.lon)
        if d <= cfg.place_radius_m and (best is None or d < best[0]):
            best = (d, name)
    return best[1] if best else None


def find_place(name: str, profile: UserProfile) -> Place | None:
    """A profile place by name (case-insensitive)."""
    low = name.strip().lower()
    for p in profile.places:
        if p.name.lower() == low:
            return p
    return None


def set_activity(w: Where, label: str, t: int) -> None:
    """Record an activity change at sample time ``t``."""
    w.activity, w.activity_ts = label, t
    w.act_hist.append((t, label))
    w.act_hist.sort()
    del w.act_hist[:-MAX_ACT]


# --- situation


def current_events(ctx: UserContext, now: int, cfg: CoreConfig) -> list[CalendarEvent]:
    """Calendar events going on now."""
    return [e for e in ctx.events if e.start <= now < e.start + cfg.event_default_s * 1000]


def add_event(ctx: UserContext, ev: CalendarEvent, now: int, cfg: CoreConfig) -> None:
    """Remember a calendar event (replacing one with the same title and start); forget finished ones."""
    keep = [
        e
        for e in ctx.events
        if e.start + cfg.event_default_s * 1000 > now and (e.title, e.start) != (ev.title, ev.start)
    ]
    keep.append(ev)
    keep.sort(key=lambda e: e.start)
    ctx.events = keep[-MAX_EVENTS:]


def quiet(ctx: UserContext, now: int, cfg: CoreConfig, profile: UserProfile) -> bool:
    """A quiet setting: a meeting, library or cinema, late night, or the user asleep."""
    if in_hours(hour_of(local(now, profile)), cfg.quiet_start_hour, cfg.quiet_end_hour):
        return True
    if asleep(ctx, now, cfg):
        return True
    words = cfg.quiet_keywords
    for e in current_events(ctx, now, cfg):
        text = f"{e.title} {e.location or ''}".lower()
        if any(k in text for k in words):
            return True
    place = (ctx.where.place or "").lower()
    return any(map(place.__contains__, words))


def moving(ctx: UserContext, now: int, cfg: CoreConfig) -> bool:
    """Whether the user is moving now (earphones activity, or phone speed in the last two minutes)."""
    w = ctx.where
    if w.activity in MOVING:
        return True
    return now - w.loc_ts <= 2 * MIN_MS and w.speed >= cfg.moving_speed_mps


def activity_label(ctx: UserContext, now: int, cfg: CoreConfig) -> str:
    """One word for what the user does now."""
    if asleep(ctx, now, cfg):
        return "sleeping"
    w = ctx.where
    recent_speed = now - w.loc_ts <= 2 * MIN_MS
    if w.activity == "automotive" or (recent_speed and w.speed >= 7.0):
        return "driving"
    if w.activity in MOVING:
        return str(w.activity)
    if recent_speed and w.speed >= cfg.moving_speed_mps:
        return "walking"
    steps, secs = steps_at(ctx.health, now, 15 * MIN_MS)
    if secs and steps > cfg.rest_steps_per_bucket * max(1.0, secs / 900):
        return "walking"  # the ring counted steps in the last quarter hour
    if w.activity == "stationary":
        return "stationary"
    return "unknown"


def travel_s(ctx: UserContext, ev: CalendarEvent, cfg: CoreConfig) -> int:
    """Estimated travel time to an event (a default when either end has no position)."""
    w = ctx.where
    if ev.lat is None or ev.lon is None or w.lat is None or w.lon is None:
        return cfg.default_travel_s
    return int(haversine_m(w.lat, w.lon, ev.lat, ev.lon) / cfg.travel_speed_mps) + 120


# --- vitals: fusion


def add_hr(
    ctx: UserContext,
    t: int,
    bpm: float,
    *,
    source: str,
    quality: float,
    corr: str,
    cfg: CoreConfig,
    profile: UserProfile,
) -> None:
    """Fuse a heart-rate sample: latest value, sleep/awake signs, the night's lowest."""
    h = ctx.health
    if t >= h.hr_ts:
        h.hr, h.hr_ts = bpm, t
    if source == "sleep":
        h.sleep_sign = max(h.sleep_sign, t)
    elif source in ("periodic", "workout", "realtime", "spot"):
        h.awake_sign = max(h.awake_sign, t)
    if quality < cfg.min_quality or source == "workout":
        return
    if source == "sleep" or in_night(t, cfg, profile):
        night = night_add(ctx, t, corr, profile)
        if night is not None:
            night.hr_min = bpm if night.hr_min is None else min(night.hr_min, bpm)
            night.hr_n += 1


def add_hrv(ctx: UserContext, t: int, rmssd: float, *, corr: str, cfg: CoreConfig, profile: UserProfile) -> None:
    """Fuse an HRV sample (night samples feed the baseline)."""
    h = ctx.health
    if t >= h.hrv_ts:
        h.hrv, h.hrv_ts = rmssd, t
    if in_night(t, cfg, profile) or in_sleep(ctx, t):
        night = night_add(ctx, t, corr, profile)
        if night is not None:
            night.hrv_sum += rmssd
            night.hrv_n += 1


def add_spo2(ctx: UserContext, t: int, pct: float, source: str) -> None:
    """Fuse an SpO2 reading's latest value."""
    h = ctx.health
    if t >= h.spo2_ts:
        h.spo2, h.spo2_ts = pct, t
    if source == "night":
        h.sleep_sign = max(h.sleep_sign, t)


def add_skin_temp(
    ctx: UserContext,
    t: int,
    *,
    celsius: float | None,
    deviation: float | None,
    corr: str,
    cfg: CoreConfig,
    profile: UserProfile,
) -> None:
    """Fuse skin temperature: absolute samples feed the night mean, deviations are kept as they are."""
    h = ctx.health
    if deviation is not None and t >= h.skin_dev_ts:
        h.skin_dev, h.skin_dev_ts = deviation, t
    if celsius is None:
        return
    if t >= h.skin_temp_ts:
        h.skin_temp, h.skin_temp_ts = celsius, t
    if in_night(t, cfg, profile) or in_sleep(ctx, t):
        night = night_add(ctx, t, corr, profile)
        if night is not None:
            night.temp_sum += celsius
            night.temp_n += 1


def add_resp(ctx: UserContext, t: int, brpm: float, cfg: CoreConfig) -> None:
    """Fuse a nightly breathing rate (it is already a night's average: fold it into the baseline)."""
    h = ctx.health
    if t > h.resp_ts:
        h.resp, h.resp_ts = brpm, t
        h.resp_base.fold(brpm, cfg.baseline_prior_days, cfg.baseline_min_alpha)


def add_stress(ctx: UserContext, t: int, level: float) -> None:
    """Fuse a stress level."""
    h = ctx.health
    if t >= h.stress_ts:
        h.stress, h.stress_ts = level, t
