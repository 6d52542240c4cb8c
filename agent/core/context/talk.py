"""Tasks, reminders and the dialogue in progress, and what was last shown or said where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.core.context.local_time import SlotValue


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
        spoke_on: the device of each kind the user last spoke to (kind -> its name): answers of that kind go there
            while it is online (a real pair of glasses beside an emulated one).
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
    spoke_on: dict[str, str] = field(default_factory=dict)


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
