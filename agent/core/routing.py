"""Output routing: which device shows or says something, and the fallback when a device fails to."""

from __future__ import annotations

import functools
import hashlib

from pydantic import ValidationError

from agent.core.api import Command, Outcome, TaskRecord
from agent.core.config import CoreConfig, UserProfile
from agent.core.context import (
    DeviceInfo,
    Held,
    Output,
    Pending,
    Task,
    UserContext,
    asleep,
    moving,
    online,
    primary,
    quiet,
    usable,
)
from agent.core.wording import clip, clip_units, fit_lines, lang_of
from schemas.actions import CardButton, Haptic, Notify, Prompt, ShowCard, Speak
from schemas.events import Body
from schemas.topics import DeviceId, Kind

MAX_PENDING = 6
MAX_HELD = 3
CHANNEL_KIND: dict[str, str] = {
    "card": "glasses",
    "speak_glasses": "glasses",
    "speak_ear": "earphones",
    "notify": "phone",
    "prompt": "phone",
}
_DISPLAY_APP: dict[str, str | None] = {
    "display.card": "card",
    "display.text": "text",
    "display.nav": "nav",
    "display.teleprompter": "teleprompter",
    "display.caption": "translate",
    "display.clear": None,
}


def action_id(corr: str, n: int) -> str:
    """The id of a user's ``n``-th action, caused by event ``corr`` (deterministic: a replay gives the same ids).

    The counter is the user's own, so a replay into one user (whose stored state is older than the others') gives
    that user's ids again. Event ids are unique across users; one too long to be kept whole is shortened with a hash
    of the whole, so two users never share an id.
    """
    if len(corr) > 100:
        corr = f"{corr[:83]}~{hashlib.blake2b(corr.encode(), digest_size=8).hexdigest()}"
    return f"{corr}:{n}"


class Turn:
    """One call of ``handle`` or ``tick`` for one user: where commands, tasks and alerts collect.

    Attributes:
        cfg: the core's configuration.
        profile: the user's profile.
        ctx: the user's context.
        now: agent time.
        corr: the id of the event that causes what is sent.
        outcome: what the call produces.
        heard_on: the kind of device the user just spoke to, when this turn answers what they said there (in a
            quiet setting with nothing to show an answer on, it goes back into the earphones they asked through).
    """

    __slots__ = ("cfg", "corr", "ctx", "heard_on", "now", "outcome", "profile")

    def __init__(
        self,
        cfg: CoreConfig,
        profile: UserProfile,
        ctx: UserContext,
        *,
        now: int,
        corr: str,
        outcome: Outcome,
    ) -> None:
        self.cfg = cfg
        self.profile = profile
        self.ctx = ctx
        self.now = now
        self.corr = corr
        self.outcome = outcome
        self.heard_on: str | None = None

    def because(self, corr: str) -> Turn:
        """The same turn, with commands caused by another event."""
        return Turn(
            self.cfg,
            self.profile,
            self.ctx,
            now=self.now,
            corr=corr or self.corr,
            outcome=self.outcome,
        )

    def send(
        self,
        kind: str,
        body: Body,
        reason: str,
        *,
        deadline: bool = False,
        dev: DeviceInfo | None = None,
    ) -> str | None:
        """Send an action to the user's device of ``kind`` (or ``dev``). Returns its id (None: no device)."""
        target = dev if dev is not None else primary(self.ctx, kind)
        if target is None:
            return None
        talk = self.ctx.talk
        talk.action_counter += 1
        cmd_id = action_id(self.corr, talk.action_counter)
        due = self.now + self.cfg.ack_deadline_s * 1000 if deadline else None
        where = _device_id(self.ctx.user, kind, target.name)
        self.outcome.commands.append(Command(where, body, self.corr, cmd_id, due, reason))
        return cmd_id

    def say(self, out: Output) -> None:
        """Tell the user something on the best device."""
        deliver(self, out)

    def record(self, task: Task) -> None:
        """Report a changed task to the store."""
        task.updated = self.now
        self.outcome.tasks.append(
            TaskRecord(
                task_id=task.task_id,
                user=self.ctx.user,
                skill=task.skill,
                state=task.state,
                slots=dict(task.slots),
                rounds=task.rounds,
                slots_autofilled=task.autofilled,
                slots_asked=task.asked,
                confirm_modality=task.modality,
                created_ms=task.created,
                updated_ms=task.updated,
            )
        )
        self.changed()

    def alert(self, rule: str, text: str) -> None:
        """Report a proactive rule that fired."""
        self.outcome.alerts.append((rule, self.ctx.user, text))

    def changed(self) -> None:
        """The context snapshot changed."""
        self.outcome.context_changed.add(self.ctx.user)


# --- choosing


def chain(turn: Turn, out: Output) -> list[str]:
    """The channels to try, best first: a card on worn glasses, speech in the ear, then the phone.

    In a quiet setting nothing is spoken aloud, and a confirmation's phone fallback is a prompt the user can tap;
    an answer to what the user just said into the earphones goes back into them when nothing can show it (an
    answer nobody receives is worse than a whisper in the ear).
    """
    return _chain(turn, out, hush=quiet(turn.ctx, turn.now, turn.cfg, turn.profile))


def _chain(turn: Turn, out: Output, *, hush: bool) -> list[str]:
    ctx = turn.ctx
    glasses = usable(ctx, "glasses") is not None
    channels: list[str] = []
    if glasses:
        channels.append("card")
    if not hush and usable(ctx, "earphones") is not None:
        channels.append("speak_ear")
    if not hush and glasses:
        channels.append("speak_glasses")
    if online(ctx, "phone") is not None:
        channels.append("prompt" if out.prompt_id else "notify")
    if not channels and turn.heard_on == "earphones" and usable(ctx, "earphones") is not None:
        channels.append("speak_ear")  # quiet, and nothing to show it on: the ear they asked through, not silence
    return channels


def channel_ok(turn: Turn, channel: str) -> bool:
    """Whether a channel's device can take an action now."""
    kind = CHANNEL_KIND[channel]
    if kind == "phone":
        return online(turn.ctx, kind) is not None
    return usable(turn.ctx, kind) is not None


def deliver(turn: Turn, out: Output) -> None:
    """Route one output: hold it while asleep (unless urgent), else send it down its channel chain."""
    ctx = turn.ctx
    if out.urgency != "high" and asleep(ctx, turn.now, turn.cfg):
        hold(turn, out)
        return
    hush = quiet(ctx, turn.now, turn.cfg, turn.profile)
    channels = _chain(turn, out, hush=hush)
    on_the_move = moving(ctx, turn.now, turn.cfg)
    if channels:
        first, rest = channels[0], channels[1:]
        _send_channel(turn, first, out, rest, short=on_the_move, reason=out.reason)
        if first == "card" and not hush and (on_the_move or out.speak_too):
            ear = usable(ctx, "earphones")
            kind = "earphones" if ear is not None else "glasses"
            turn.send(kind, speech(out), out.reason)
    ring = usable(ctx, "ring")
    if ring is not None and ring.accepts("ring.haptic") and (hush or out.haptic or not channels):
        turn.send("ring", Haptic(pattern=out.haptic or "tap"), out.reason, dev=ring)


def hold(turn: Turn, out: Output) -> None:
    """Keep an output until the user wakes (only the last few)."""
    held = turn.ctx.held
    held.append(Held(out, turn.corr))
    del held[:-MAX_HELD]


def _send_channel(turn: Turn, channel: str, out: Output, rest: list[str], *, short: bool, reason: str) -> None:
    kind = CHANNEL_KIND[channel]
    body = build(channel, out, short=short)
    dev = primary(turn.ctx, kind)
    cmd_id = turn.send(kind, body, reason, deadline=bool(rest), dev=dev)
    if cmd_id is None or not rest or dev is None:
        return
    action = _action(type(body))
    outputs = turn.ctx.outputs
    outputs[cmd_id] = Pending(channel, action, list(rest), out, turn.corr, turn.now + turn.cfg.ack_deadline_s * 1000)
    while len(outputs) > MAX_PENDING:
        del outputs[next(iter(outputs))]


def fall_back(turn: Turn, pending: Pending) -> None:
    """Send the output of a failed action down the next usable channel of its chain."""
    t = turn.because(pending.corr)
    if pending.out.urgency != "high" and asleep(turn.ctx, turn.now, turn.cfg):
        hold(t, pending.out)  # the user fell asleep meanwhile: no device chase in the night
        return
    rest = list(pending.rest)
    while rest:
        channel = rest.pop(0)
        if channel_ok(t, channel):
            _send_channel(t, channel, pending.out, rest, short=False, reason="route:fallback")
            return


@functools.cache
def _action(body: type[Body]) -> str:
    """The action name of a body class (its ``type`` literal, e.g. ``display.card``)."""
    return str(body.model_fields["type"].default)


@functools.lru_cache(maxsize=1024)
def _device_id(user: str, kind: str, name: str) -> DeviceId:
    """A device's (immutable, checked) id: the same few devices are addressed again and again."""
    return DeviceId(user, Kind(kind), name)


# --- acks and timers


def on_ack(turn: Turn, action_id: str, action: str, status: str) -> None:
    """A device acknowledged an action: note what it shows or says, or fall back if it refused."""
    ctx = turn.ctx
    pending = ctx.outputs.pop(action_id, None)
    kind = pending.action if pending is not None else action
    if status == "done":
        if kind in _DISPLAY_APP:
            ctx.display = _DISPLAY_APP[kind]
            turn.changed()
        elif kind == "audio.speak":
            # the context is public (every app reads it): a sentence that quotes a health value is not repeated there
            out = pending.out if pending is not None else None
            ctx.speaking = clip(out.speech or out.title, 64) if out is not None and not out.health else "speech"
            turn.changed()
        return
    if pending is not None:
        fall_back(turn, pending)


def on_offline(turn: Turn, kind: str) -> None:
    """A device went offline: what waits for its ack goes elsewhere now."""
    ctx = turn.ctx
    for action_id in [a for a, p in ctx.outputs.items() if CHANNEL_KIND[p.channel] == kind]:
        fall_back(turn, ctx.outputs.pop(action_id))


def expire(turn: Turn) -> None:
    """Fall back for every action whose ack deadline passed."""
    ctx = turn.ctx
    for action_id in [a for a, p in ctx.outputs.items() if p.deadline <= turn.now]:
        fall_back(turn, ctx.outputs.pop(action_id))


def release_held(turn: Turn) -> None:
    """Deliver what was held while the user slept, once they are awake."""
    ctx = turn.ctx
    if not ctx.held or asleep(ctx, turn.now, turn.cfg):
        return
    held, ctx.held = ctx.held, []
    for h in held:
        deliver(turn.because(h.corr), h.out)


# --- bodies


def build(channel: str, out: Output, *, short: bool = False) -> Body:
    """The action body of ``out`` for a channel, shortened to fit the device (never invalid)."""
    if channel == "card":
        return card(out, short=short)
    if channel in ("speak_ear", "speak_glasses"):
        return speech(out)
    title = clip(" ".join(out.title.split()), 100)
    text = clip(out.speech or out.body, 500)
    if channel == "prompt" and out.prompt_id:
        return Prompt(prompt_id=out.prompt_id[:64], title=title, body=text)
    return Notify(title=title, body=text, health=out.health)


def card(out: Output, *, short: bool = False) -> ShowCard:
    """A card: a one-line title, a body of three lines (one when the user is on the move), two buttons."""
    title = clip(clip_units(out.title), 64)
    body = clip(fit_lines(out.body, 1 if short else 3), 300)
    buttons = [
        CardButton(label=clip(" ".join(label.split()), 16) or "OK", action_id=action[:64] or "ok")
        for label, action in out.buttons[:2]
    ]
    icon = out.icon if out.icon in _ICONS else "info"
    try:
        return ShowCard(
            title=title, body=body, icon=icon, buttons=buttons, ttl_s=max(1, min(3600, out.ttl_s)), health=out.health
        )
    except ValidationError:
        # Defensive: the fitting above should always be enough, but a card must never fail to be built.
        return ShowCard(title=clip(title, 20), body="", icon="info", buttons=buttons, health=out.health)


def speech(out: Output) -> Speak:
    """What to say for ``out``."""
    text = out.speech or ". ".join(p for p in (out.title, out.body.replace("\n", ", ")) if p)
    priority = "high" if out.urgency == "high" else "normal"
    return Speak(text=clip(text, 500) or "…", lang=lang_of(out.lang), priority=priority, health=out.health)


_ICONS = frozenset({"food", "car", "nav", "heart", "battery", "calendar", "info", "warning", "music", "check"})
