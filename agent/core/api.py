"""The boundary between the agent's pure core and its runtime.

The runtime decodes messages, deduplicates them, stores them and hands each to :meth:`Core.handle` together with
the current (simulated) time; it publishes the :class:`Command` objects that come back and stores them first. Timers
(confirmation expiry, undo windows, ack deadlines, rule checks) are driven by :meth:`Core.tick`. The core never does
I/O and never reads the wall clock, so the same events at the same times give the same commands (replay is
deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.actions import ContextSnapshot
from schemas.envelope import Message
from schemas.events import Body
from schemas.shadow import ShadowDesired
from schemas.topics import DeviceId


@dataclass(frozen=True, slots=True)
class Command:
    """An action the core wants sent to one device.

    Attributes:
        device: the target device.
        body: the action body (``schemas.actions``), e.g. ``ShowCard``.
        corr: the id of the event that caused it (every action carries one).
        id: a deterministic action id (from ``corr`` and the user's action counter, so a replay gives the same ids).
        deadline_ms: when the core will fall back to another device if no ack has come (None: no fallback).
        reason: a short tag for logs and the timeline (``skill:order_food``, ``rule:low_spo2``, ``route:fallback``).
    """

    device: DeviceId
    body: Body
    corr: str
    id: str
    deadline_ms: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task (skill run) as the store keeps it.

    Attributes:
        task_id: unique id.
        user: whose task.
        skill: order_food, hail_ride, navigate, ...
        state: the core's state of the task (``asking``, ``awaiting_confirmation``, ``committed``, the phone's
            status such as ``courier_assigned``, ``completed``, ``cancelled``, ``expired``, ``failed``).
        slots: filled slots.
        rounds: user turns from wake to commit (the interaction-rounds metric; the goal is 2 for a paid task).
        slots_autofilled: names of slots filled from context.
        slots_asked: names of slots the agent asked for.
        confirm_modality: voice, ring, tap, nod or phone (how the user confirmed), if confirmed.
        created_ms: start time.
        updated_ms: last change.
    """

    task_id: str
    user: str
    skill: str
    state: str
    slots: dict[str, Any]
    rounds: int
    slots_autofilled: tuple[str, ...] = ()
    slots_asked: tuple[str, ...] = ()
    confirm_modality: str | None = None
    created_ms: int = 0
    updated_ms: int = 0


@dataclass(slots=True)
class Outcome:
    """What handling one message (or one tick) produced.

    Attributes:
        commands: actions to publish, in order.
        tasks: tasks that changed (to upsert in the store).
        alerts: proactive rules that fired, as ``(rule, user, text)``.
        context_changed: users whose context snapshot changed (to republish retained).
        desired: settings documents to publish, retained, on each device's ``shadow/desired``.
    """

    commands: list[Command] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)
    alerts: list[tuple[str, str, str]] = field(default_factory=list)
    context_changed: set[str] = field(default_factory=set)
    desired: list[tuple[DeviceId, ShadowDesired]] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        """Append another outcome to this one."""
        self.commands += other.commands
        self.tasks += other.tasks
        self.alerts += other.alerts
        self.context_changed |= other.context_changed
        self.desired += other.desired


class Core(Protocol):
    """What the runtime asks of the pure core."""

    def handle(self, message: Message, now_ms: int) -> Outcome:
        """Fuse one decoded message (event, ack or device state) into the context and decide what to do."""
        ...

    def tick(self, now_ms: int, users: Iterable[str] | None = None) -> Outcome:
        """Let timers fire (of these users; None: every user): expiries, undo windows, ack deadlines and fallbacks,
        rule checks."""
        ...

    def snapshot(self, user: str) -> ContextSnapshot:
        """The fused context of one user, as published on ``wb/v1/{user}/agent/context``."""
        ...

    def export_state(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart (JSON-serialisable)."""
        ...

    def take_changed(self) -> list[str]:
        """The users whose state changed since the last call."""
        ...

    def export_users(self, users: Iterable[str]) -> dict[str, Any]:
        """As :meth:`export_state`, with only these users."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`export_state` returned."""
        ...
