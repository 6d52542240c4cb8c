"""The codec: msgpack by default, JSON accepted on every topic; one conversion point between bytes and models.

The decoder tells the two apart by the MQTT 5 content type where present, else by the first byte: a JSON envelope
starts with ``{`` (after white space), which in msgpack would be a bare integer, never an envelope.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

import msgpack
from pydantic import BaseModel, ValidationError

from schemas.actions import (
    ACCEPTS,
    ACTIONS,
    Ack,
    AgentState,
    ConsentRequest,
    ConsentState,
    ContextSnapshot,
    DeadLetter,
    DeviceState,
    HealthSnapshot,
)
from schemas.envelope import Envelope, Message, dump, now_ms, validator_of
from schemas.errors import ContractError, DecodeError, TopicError, ValidationFailed
from schemas.events import EVENTS, Body, RingGesture
from schemas.health import REDACTED, carries_health, health_names, redact_by_name, redact_data, register_flagged
from schemas.shadow import ShadowDesired, ShadowReported
from schemas.topics import TOPIC_CACHE, Channel, Kind, Topic, parse

MSGPACK = "application/msgpack"
JSON = "application/json"
Format = Literal["msgpack", "json"]
MAX_PAYLOAD = 256 * 1024  # a full ring batch fits (tests/unit/test_bounds.py)
#: Room in a packet beside its payload: the fixed header, the topic and MQTT 5 properties. The generated broker's
#: max_packet_size is ``MAX_PAYLOAD + PACKET_OVERHEAD``, so every valid payload fits a packet.
PACKET_OVERHEAD = 1024
_JSON_START = frozenset(b"{ \t\r\n")
_FORMATS = frozenset({JSON, MSGPACK})
#: How deep maps and lists may nest in a JSON payload (the deepest envelope nests 4 levels: envelope, data, a
#: batch's items, an item): JSON nested 10,000 levels deep made ``json.loads`` (which recurses) raise
#: ``RecursionError``. msgpack's C unpacker bounds nesting itself (1024 levels, no Python recursion), and a validated
#: envelope is never deeper than its schema; walking every decoded batch to check 32 would cost ~0.3 ms a batch.
MAX_DEPTH = 32
#: Elements a payload may hold (msgpack: in one list or map; JSON: all levels together): the longest list of the
#: contract (an agent state's ``users``) fits.
MAX_ELEMENTS = 100_000
# A JSON string (skipped whole, escapes included) or one structural character.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]')

_FIXED: dict[Channel, type[Body]] = {
    Channel.ACK: Ack,
    Channel.STATE: DeviceState,
    Channel.CONTEXT: ContextSnapshot,
    Channel.HEALTH: HealthSnapshot,
    Channel.CONSENT: ConsentState,
    Channel.CONSENT_SET: ConsentRequest,
    Channel.AGENT_STATE: AgentState,
    Channel.DLQ: DeadLetter,
    Channel.DESIRED: ShadowDesired,
    Channel.REPORTED: ShadowReported,
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

    The hot path of every receiver: what a topic decides (its parsed identity, its body model, the envelope's
    validator) is looked up once per topic (:func:`route`), and the envelope and its body are validated in one call.

    Raises:
        TopicError: the topic is not part of the v1 layout or names nothing known.
        DecodeError: the bytes are not msgpack/JSON, not a map, empty, or larger than ``max_size``.
        ValidationFailed: the envelope or body does not fit the schema; ``field`` names the first culprit.
    """
    where, model, validate, from_topic = route(topic)
    is_json = speaks_json(payload, content_type)
    obj = _loads(topic, payload, is_json, max_size)
    if is_json and "ts" not in obj:
        obj["ts"] = now_ms() if arrived_ms is None else arrived_ms
    if from_topic:
        _fill_from_topic(obj, where, model, topic)
    try:
        envelope: Envelope[Any] = validate(obj)
    except ValidationError as exc:
        raise validation_failed(exc, topic) from exc
    raw = payload if type(payload) is bytes else bytes(payload)  # a bytearray or memoryview is copied once
    return Message(topic, where, envelope, qos, retain, mid, len(payload), link, raw, is_json)


#: What :func:`route` answers for a topic: the parsed topic, the body model, the envelope validator, and whether the
#: topic fills a body field.
Route = tuple[Topic, type[Body], Callable[[Any], Envelope[Any]], bool]


@lru_cache(maxsize=TOPIC_CACHE)
def route(topic: str) -> Route:
    """What a topic decides for :func:`decode`: its parsed identity, its body model, the envelope's validator, and
    whether the topic also fills a field of the body (:func:`_fill_from_topic`). Cached per topic, like
    :func:`~schemas.topics.parse` (an unknown topic raises every time: nothing is cached for it).

    Raises:
        TopicError: as :func:`decode`.
    """
    where = parse(topic)
    model = body_model(where, topic)
    from_topic = (model is RingGesture and where.name is not None) or (
        where.kind is not None and model in _KIND_FROM_TOPIC
    )
    return where, model, validator_of(model), from_topic


_KIND_FROM_TOPIC: frozenset[type[Body]] = frozenset({ShadowDesired, ShadowReported})


def _fill_from_topic(obj: dict[str, Any], where: Topic, model: type[Body], topic: str) -> None:
    """What the topic says and a JSON sender may leave out of the body: a ring gesture's name, a shadow's kind.

    Raises:
        ValidationFailed: the body says otherwise than the topic.
    """
    data = obj.get("data")
    if not isinstance(data, dict):
        return  # the schema names what is wrong
    if model is RingGesture:
        data.setdefault("gesture", where.name)
        if data["gesture"] != where.name:
            raise ValidationFailed(
                f"gesture {data['gesture']!r} does not match the topic's {where.name!r}",
                topic=topic,
                field="data.gesture",
            )
        return
    kind = where.kind.value if where.kind is not None else None
    settings = data.get("settings")
    if isinstance(settings, dict):  # the topic names the kind; a JSON sender may leave it out
        settings.setdefault("kind", kind)
        if settings["kind"] != kind:
            raise ValidationFailed(
                f"settings of a {settings['kind']!r} on a {kind} topic",
                topic=topic,
                field="data.settings.kind",
            )


def warm() -> int:
    """Build the envelope validator of every body model the contract has, now (pydantic builds a generic envelope's
    class on first use, ~1.4 ms each: a receiver that calls this at start does not pay it on its first message of
    each kind, inside a pump turn). Returns how many models."""
    models = {*EVENTS.values(), *ACTIONS.values(), *_FIXED.values()}
    for model in models:
        validator_of(model)
    return len(models)


def speaks_json(payload: bytes, content_type: str | None = None) -> bool:
    """Whether a payload is JSON: by its MQTT 5 content type where given, else by its first byte."""
    if content_type is not None and content_type in _FORMATS:  # (a set display of names is built on every call)
        return content_type == JSON
    return bool(payload) and payload[0] in _JSON_START


def loads(
    topic: str, payload: bytes, *, content_type: str | None = None, max_size: int = MAX_PAYLOAD
) -> dict[str, Any]:
    """Bytes to a plain map (msgpack or JSON), without schema validation.

    Raises:
        DecodeError: as :func:`decode`.
    """
    return _loads(topic, payload, speaks_json(payload, content_type), max_size)


def _loads(topic: str, payload: bytes, is_json: bool, max_size: int) -> dict[str, Any]:
    """:func:`loads`, told the format."""
    size = len(payload)
    if size == 0:
        raise DecodeError("empty payload", topic=topic)
    if size > max_size:
        raise DecodeError(f"payload of {size} bytes is larger than the limit of {max_size}", topic=topic)
    fmt = "JSON" if is_json else "msgpack"
    try:
        if is_json:
            check_json_bounds(payload)
            obj = json.loads(payload)
        else:
            obj = msgpack.unpackb(
                payload,
                raw=False,
                strict_map_key=True,
                max_str_len=max_size,
                max_bin_len=max_size,
                max_array_len=MAX_ELEMENTS,
                max_map_len=MAX_ELEMENTS,
                max_ext_len=0,
            )  # nesting: msgpack's C unpacker stops at 1024 levels (StackError), without recursing in Python
    except DecodeError as exc:
        raise DecodeError(f"not accepted as {fmt} ({exc.detail})", topic=topic) from exc
    except Exception as exc:
        why = str(exc)[:200] or type(exc).__name__
        raise DecodeError(f"not valid {fmt} ({why})", topic=topic) from exc
    if not isinstance(obj, dict):
        raise DecodeError(f"the envelope must be a map, not {type(obj).__name__}", topic=topic)
    return obj


def check_json_bounds(payload: bytes) -> None:
    """Refuse JSON nested deeper than :data:`MAX_DEPTH` or with more than :data:`MAX_ELEMENTS` elements, before
    ``json.loads`` (which recurses) sees it; a loop over the structural characters, no recursion.

    Raises:
        DecodeError: too deep or too many elements.
    """
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH and payload.count(b",") < MAX_ELEMENTS:
        return  # cannot be too deep nor too long: the common case costs two byte counts
    depth = elements = 0
    for match in _JSON_TOKEN.finditer(payload):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise DecodeError(f"nested deeper than {MAX_DEPTH} levels")
        elif token in (b"]", b"}"):
            depth -= 1
        elif token == b",":
            elements += 1
            if elements >= MAX_ELEMENTS:
                raise DecodeError(f"more than {MAX_ELEMENTS} elements")


def validation_failed(exc: ValidationError, topic: str) -> ValidationFailed:
    """Translate pydantic's error into ours, naming the first field and the reason."""
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ValidationFailed(f"{first['msg']}{more}", topic=topic, field=field)


#: Every name of a health-marked field in the contract, for maps whose model is unknown (an unknown topic, a log).
HEALTH_NAMES = health_names([*EVENTS.values(), *ACTIONS.values(), *_FIXED.values()])
register_flagged(ACTIONS.values())


def topic_model(topic: str) -> type[Body] | None:
    """The body model of a topic, or ``None`` when the topic names nothing known."""
    try:
        return body_model(parse(topic), topic)
    except TopicError:
        return None


def redact_payload(topic: str, obj: Any) -> Any:
    """A decoded envelope (or body) of ``topic`` with its health values redacted, keeping its shape.

    The topic's model decides what is health data; on an unknown topic every key that is a health field's name
    anywhere in the contract is redacted.
    """
    if not isinstance(obj, dict):
        return obj
    model = topic_model(topic)
    if model is None:
        return redact_by_name(obj, HEALTH_NAMES)
    if "data" in obj and isinstance(obj["data"], dict):
        return {**obj, "data": redact_data(model, obj["data"], names=HEALTH_NAMES)}
    return redact_data(model, obj, names=HEALTH_NAMES)


def redact_wire(topic: str, payload: bytes) -> bytes | None:
    """A payload of ``topic`` with its health values redacted (re-encoded as JSON), or ``None`` if it holds none.

    A payload that does not decode is replaced by :data:`REDACTED` when its topic can carry health data (its bytes
    may hold a value), and kept otherwise.
    """
    try:
        obj = loads(topic, payload)
    except DecodeError:
        model = topic_model(topic)
        return REDACTED.encode() if model is not None and carries_health(model) else None
    redacted = redact_payload(topic, obj)
    if redacted == obj:
        return None
    return json.dumps(redacted, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def redact_bytes(topic: str, payload: bytes) -> bytes:
    """A payload of ``topic`` with its health values redacted (see :func:`redact_wire`)."""
    redacted = redact_wire(topic, payload)
    return payload if redacted is None else redacted


def dead_letter(topic: str, payload: bytes, error: ContractError, *, seen_by: str = "") -> DeadLetter:
    """The DLQ record of a rejected payload: the reason, where it came from, and its first bytes with the health
    values redacted (a DLQ is read by operators, who may not read health data)."""
    head = redact_bytes(topic, payload[:MAX_PAYLOAD])[:1024]
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
