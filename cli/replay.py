"""Deterministic replay of a recording into the agent's core, and a readable diff of two runs' actions.

``wearbus replay-agent REC -o actions.jsonl`` feeds every event, ack and device state of a recording (``wearbus
record``) into a fresh :class:`~agent.core.engine.AgentCore` on the simulation clock the messages carry: each message
is handled at its publish time (``ts``), and timers tick every simulated second in between. No wall clock, no
broker, no randomness: the same recording and the same agent give the same actions, byte for byte.

``wearbus diff A B`` compares two such action logs (say, before and after a change to a rule) and prints what was
added, removed or changed, one action per line, in simulated time.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.core.api import Command, Outcome
from agent.core.config import CoreConfig
from agent.core.engine import AgentCore
from schemas import codec
from schemas.actions import Ack
from schemas.envelope import Message, make
from schemas.errors import ConfigError, ContractError
from schemas.topics import Channel, ack_topic, parse
from testkit.record import load_recording

AGENT_CHANNELS = frozenset({Channel.EVENT, Channel.ACK, Channel.STATE, Channel.DESIRED, Channel.REPORTED})


@dataclass(frozen=True, slots=True)
class ActionLine:
    """One action the core decided during a replay."""

    at_ms: int
    device: str
    action: str
    body: dict[str, Any]
    corr: str
    reason: str
    id: str

    def canonical(self, origin_ms: int) -> str:
        """One stable, readable line: simulated time since the start, device, action, body."""
        offset = (self.at_ms - origin_ms) / 1000
        h, rem = divmod(int(offset), 3600)
        m, s = divmod(rem, 60)
        body = json.dumps(self.body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return f"+{h:02d}:{m:02d}:{s:02d} {self.device} {self.action} {body} ({self.reason})"


def override(config: CoreConfig, settings: Sequence[str]) -> CoreConfig:
    """Apply ``KEY=VALUE`` overrides to the core's settings (numbers and booleans converted).

    Raises:
        ConfigError: an unknown key or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            known = ", ".join(sorted(k for k, f in fields.items() if f.type in {"int", "float", "bool"}))
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY one of: {known}")
        current = getattr(config, key)
        try:
            if isinstance(current, bool):
                value: Any = raw.lower() in {"1", "true", "yes", "on"}
            elif isinstance(current, int):
                value = int(raw)
            elif isinstance(current, float):
                value = float(raw)
            else:
                raise ConfigError(f"--set {key}: only numbers and booleans can be set here")
        except ValueError as exc:
            raise ConfigError(f"--set {item!r}: {exc}") from exc
        changes[key] = value
    return dataclasses.replace(config, **changes)


def replay_into_core(path: Path, config: CoreConfig | None = None, *, tick_s: float = 1.0) -> list[ActionLine]:
    """Replay a recording into a fresh core and return the actions it decided, in order."""
    core = AgentCore(config)
    seen: set[str] = set()
    actions: list[ActionLine] = []
    now: int | None = None
    step = int(tick_s * 1000)

    def take(outcome: Outcome, at: int) -> None:
        # Every action is carried out at once by simulated devices: the recorded acks name the live run's action
        # ids, so they are not replayed; without acks the core would fall back to other devices.
        pending = list(outcome.commands)
        while pending:
            cmd = pending.pop(0)
            actions.append(_line(cmd, at))
            pending += core.handle(_ack_for(cmd, at), at).commands

    for rec in load_recording(path):
        try:
            message = codec.decode(rec.topic, rec.payload, content_type=rec.content_type, qos=rec.qos,
                                   retain=rec.retain)  # fmt: skip
        except ContractError:
            continue  # it went to the DLQ when it was recorded, too
        if message.where.channel not in AGENT_CHANNELS or message.envelope.id in seen:
            continue
        if message.where.channel is Channel.ACK:
            continue
        seen.add(message.envelope.id)
        at = message.envelope.ts if now is None else max(now, message.envelope.ts)
        if now is not None:
            t = now + step
            while t < at:
                take(core.tick(t), t)
                t += step
        now = at
        take(core.handle(message, at), at)
        take(core.tick(at), at)
    if now is not None:
        for k in range(1, 121):  # let the timers of the last two minutes run out
            t = now + k * step
            take(core.tick(t), t)
    return actions


def _ack_for(cmd: Command, at: int) -> Message:
    action = getattr(cmd.body, "type", "")
    envelope = make(Ack(action_id=cmd.id, action=action, status="done", detail="replay"), ts=at, corr=cmd.id)
    return Message(ack_topic(cmd.device), parse(ack_topic(cmd.device)), envelope, qos=1)


def _line(cmd: Command, at: int) -> ActionLine:
    body = cmd.body.model_dump(mode="json", exclude_none=True)
    action = str(body.pop("type", ""))
    return ActionLine(at, cmd.device.client_id, action, body, cmd.corr, cmd.reason, cmd.id)


def write_actions(path: Path, actions: Sequence[ActionLine]) -> None:
    """Write an action log (JSON lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for a in actions:
            fh.write(json.dumps(dataclasses.asdict(a), ensure_ascii=False, sort_keys=True) + "\n")


def read_actions(path: Path) -> list[ActionLine]:
    """Read an action log.

    Raises:
        ConfigError: the file is missing or not an action log.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [ActionLine(**json.loads(line)) for line in lines if line.strip()]
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an action log written by `wearbus replay-agent`: {exc}") from exc


def diff_actions(a: Sequence[ActionLine], b: Sequence[ActionLine], *, names: tuple[str, str] = ("A", "B")) -> list[str]:
    """A unified diff of two action logs, one action per line (empty when they are the same)."""
    starts = [x.at_ms for x in (*a[:1], *b[:1])]
    origin = min(starts) if starts else 0
    left = [x.canonical(origin) for x in a]
    right = [x.canonical(origin) for x in b]
    return list(difflib.unified_diff(left, right, fromfile=names[0], tofile=names[1], lineterm="", n=1))


def describe(actions: Sequence[ActionLine]) -> str:
    """One line about an action log."""
    if not actions:
        return "no actions"
    start = datetime.fromtimestamp(actions[0].at_ms / 1000, tz=UTC).isoformat(timespec="seconds")
    return f"{len(actions)} actions from {start}"
