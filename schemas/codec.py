"""The codec: msgpack by default, JSON accepted on every topic; one conversion point between bytes and models.

The decoder tells the two apart by the MQTT 5 content type where present, else by the first byte: a JSON envelope
starts with ``{`` (after white space), which in msgpack would be a bare integer, never an envelope.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any, Literal

import msgpack
from pydantic import BaseModel, ValidationError

from schemas.actions import (
    ACCEPTS,
    ACTIONS,
    Ack,
    AgentState,
    ContextSnapshot,
    DeadLetter,
    DeviceState,
)
from schemas.envelope import Envelope, Message, dump, envelope_of, now_ms
from schemas.errors import ContractError, DecodeError, TopicError, ValidationFailed
from schemas.events import EVENTS, Body, RingGesture
from schemas.topics import Channel, Kind, Topic, parse

MSGPACK = "application/msgpack"
JSON = "application/json"
Format = Literal["msgpack", "json"]
MAX_PAYLOAD = 256 * 1024  # matches the generated broker's max_packet_size; a ring batch of a day fits
_JSON_START = frozenset(b"{ \t\r\n")

_FIXED: dict[Channel, type[Body]] = {
    Channel.ACK: Ack,
    Channel.STATE: DeviceState,
    Channel.CONTEXT: ContextSnapshot,
    Channel.AGENT_STATE: AgentState,
    Channel.DLQ: DeadLetter,
}


def body_model(where: Topic, topic: str) -> type[Body]:
    """The body model a topic carries.

    Raises:
        TopicError: the topic names no known event or action, or an action the device kind does not accept.
    """
    match where.channel:
        case Channel.EVENT:
            model = EVENTS.get((where.kind, where.event_class, where.name))  # type: ignore[arg-type]
            if model is None:
                known = sorted(f"{c}/{n}" for k, c, n in EVENTS if k is where.kind)
                raise TopicError(
                    f"a {where.kind} has no event {where.event_class}/{where.name}; known: {', '.join(known)}",
                    topic=topic,
                )
            return model
        case Channel.COMMAND:
            action = ACTIONS.get(where.name or "")
            if action is None or where.kind is None or where.name not in ACCEPTS[where.kind]:
                raise TopicError(
                    f"a {where.kind} accepts no action {where.name!r}; it accepts: "
                    f"{', '.join(sorted(ACCEPTS[where.kind or Kind.PHONE]))}",
                    topic=topic,
                )
            return action
        case _:
            return _FIXED[where.channel]


def encode(envelope: BaseModel, fmt: Format = "msgpack") -> bytes:
    """Encode an envelope (msgpack by default, or compact JSON)."""
    data = dump(envelope)
    if fmt == "json":
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def content_type(fmt: Format) -> str:
    """The MQTT 5 content type for a format."""
    return JSON if fmt == "json" else MSGPACK


def decode(
    topic: str,
    payload: bytes,
    *,
    content_type: str | None = None,
    qos: int = 0,
    retain: bool = False,
    mid: int = 0,
    link: int = 0,
    max_size: int = MAX_PAYLOAD,
    arrived_ms: int | None = None,
) -> Message:
    """Decode and validate one payload received on ``topic``.

    A JSON envelope without ``ts`` (a shell's ``mosquitto_pub``) gets its arrival time: ``arrived_ms``, else the
    wall clock now (decoding happens on arrival). msgpack senders are devices with a clock and must give it.

    Raises:
        TopicError: the topic is not part of the v1 layout or names nothing known.
        DecodeError: the bytes are not msgpack/JSON, not a map, empty, or larger than ``max_size``.
        ValidationFailed: the envelope or body does not fit the schema; ``field`` names the first culprit.
    """
    where = parse(topic)
    model = body_model(where, topic)
    obj = loads(topic, payload, content_type=content_type, max_size=max_size)
    is_json = speaks_json(payload, content_type)
    if is_json and "ts" not in obj:
        obj["ts"] = now_ms() if arrived_ms is None else arrived_ms
    data = obj.get("data")
    if isinstance(data, dict) and model is RingGesture and where.name is not None:
        data.setdefault("gesture", where.name)
        if data["gesture"] != where.name:
            raise ValidationFailed(
                f"gesture {data['gesture']!r} does not match the topic's {where.name!r}",
                topic=topic,
                field="data.gesture",
            )
    try:
        envelope: Envelope[Any] = envelope_of(model).model_validate(obj)
    except ValidationError as exc:
        raise validation_failed(exc, topic) from exc
    raw = payload if type(payload) is bytes else bytes(payload)  # a bytearray or memoryview is copied once
    return Message(topic, where, envelope, qos, retain, mid, len(payload), link, raw, is_json)


def speaks_json(payload: bytes, content_type: str | None = None) -> bool:
    """Whether a payload is JSON: by its MQTT 5 content type where given, else by its first byte."""
    if content_type in {JSON, MSGPACK}:
        return content_type == JSON
    return bool(payload) and payload[0] in _JSON_START


def loads(
    topic: str, payload: bytes, *, content_type: str | None = None, max_size: int = MAX_PAYLOAD
) -> dict[str, Any]:
    """Bytes to a plain map (msgpack or JSON), without schema validation.

    Raises:
        DecodeError: as :func:`decode`.
    """
    size = len(payload)
    if size == 0:
        raise DecodeError("empty payload", topic=topic)
    if size > max_size:
        raise DecodeError(f"payload of {size} bytes is larger than the limit of {max_size}", topic=topic)
    is_json = speaks_json(payload, content_type)
    try:
        obj = json.loads(payload) if is_json else msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        fmt = "JSON" if is_json else "msgpack"
        why = str(exc) or type(exc).__name__
        raise DecodeError(f"not valid {fmt} ({why})", topic=topic) from exc
    if not isinstance(obj, dict):
        raise DecodeError(f"the envelope must be a map, not {type(obj).__name__}", topic=topic)
    return obj


def validation_failed(exc: ValidationError, topic: str) -> ValidationFailed:
    """Translate pydantic's error into ours, naming the first field and the reason."""
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ValidationFailed(f"{first['msg']}{more}", topic=topic, field=field)


def dead_letter(topic: str, payload: bytes, error: ContractError, *, seen_by: str = "") -> DeadLetter:
    """The DLQ record of a rejected payload: the reason, where it came from, and its first bytes."""
    head = payload[:1024]
    text = base64.b64encode(head).decode()
    encoding: Literal["utf-8", "base64"] = "base64"
    with contextlib.suppress(UnicodeDecodeError):
        decoded = head.decode("utf-8")
        if all(c.isprintable() or c in "\r\n\t" for c in decoded):
            text, encoding = decoded, "utf-8"
    return DeadLetter(
        reason=error.reason,
        topic=topic,
        error=error.detail,
        field=error.field,
        size=len(payload),
        payload=text,
        payload_encoding=encoding,
        seen_by=seen_by,
    )
