"""What the runtime stores for a message (:func:`event_row`) and for an action (:func:`action_row`), and the LLM
resolver's stored intent read back (:func:`intent_of`)."""

from __future__ import annotations

import json
from typing import Any

from agent.core.api import Command
from agent.core.intents import Intent, Skill
from agent.storage import ActionRow, EventRow
from schemas import codec
from schemas.envelope import Envelope, Message, envelope_of
from schemas.topics import command_topic

# The first bytes of an envelope that ``codec.decode`` without a content type reads back as what it was: JSON (an
# object, maybe after white space) or a msgpack map (fixmap, map16, map32). Anything else (JSON with a byte order
# mark or in UTF-16, accepted because its MQTT 5 content type said JSON) is stored re-encoded, so that a replay
# after a restart can always decode what was stored.
_SELF_DESCRIBING = frozenset(b"{ \t\r\n") | frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


def stored_payload(message: Message) -> bytes:
    """The bytes to store for a message: as they came off the wire, else the envelope encoded again."""
    raw = message.raw
    if raw and raw[0] in _SELF_DESCRIBING:
        return raw
    return codec.encode(message.envelope)  # made in process (silent devices), or not self-describing


def event_row(message: Message, handled_ms: int, received_wall: int) -> EventRow:
    """The stored row of a handled message."""
    env = message.envelope
    where = message.where
    kind = where.kind
    return EventRow(
        env.id,
        message.topic,
        where.user,
        kind._value_ if kind else None,  # _value_ (a plain attribute) rather than enum's slower property
        where.device,
        where.channel._value_,
        getattr(env.data, "type", ""),
        env.ts,
        env.src_ts,
        env.seq,
        env.corr,
        handled_ms,
        received_wall,
        message.qos,
        message.retain,
        stored_payload(message),
    )


def action_row(cmd: Command, now: int, created_wall: int, *, json_payload: bool) -> ActionRow:
    """The stored row of an action, its payload encoded as the device speaks (JSON or msgpack)."""
    body = cmd.body
    action_type: str = body.type  # type: ignore[attr-defined]
    envelope: Envelope[Any] = envelope_of(type(body))(id=cmd.id, ts=now, corr=cmd.corr, data=body)
    dev = cmd.device
    return ActionRow(
        id=cmd.id,
        topic=command_topic(dev, action_type),
        user=dev.user,
        kind=dev.kind.value,
        device=dev.device,
        type=action_type,
        corr=cmd.corr,
        reason=cmd.reason,
        created_ms=now,
        created_wall_ms=created_wall,
        payload=codec.encode(envelope, "json" if json_payload else "msgpack"),
    )


def intent_json(intent: Intent) -> str:
    """An intent as stored beside its utterance (read back by :func:`intent_of`)."""
    data = {"skill": intent.skill.value, "slots": dict(intent.slots), "lang": intent.lang, "text": intent.text}
    return json.dumps(data, ensure_ascii=False)


def intent_of(raw: str) -> Intent:
    """An intent stored by :func:`intent_json`."""
    data = json.loads(raw)
    return Intent(skill=Skill(data["skill"]), slots=data["slots"], lang=data["lang"], text=data["text"])
