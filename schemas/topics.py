"""The v1 topic layout: builder, parser and MQTT filter matcher.

::

    wb/v1/{user}/{kind}/{device}/evt/{class}/{name}   device -> bus, events
    wb/v1/{user}/{kind}/{device}/cmd/{action}         agent -> device, actions
    wb/v1/{user}/{kind}/{device}/ack                  device -> agent, action results
    wb/v1/{user}/{kind}/{device}/state                device -> all, retained birth / Will
    wb/v1/{user}/{kind}/{device}/shadow/desired       agent / apps -> device, retained desired settings
    wb/v1/{user}/{kind}/{device}/shadow/reported      device -> all, retained applied settings
    wb/v1/{user}/agent/context                        agent -> apps, retained fused context (no health values)
    wb/v1/{user}/agent/health                         agent -> the user's own app, retained health part
    wb/v1/{user}/agent/consent                        agent -> the user's app, retained consent per purpose
    wb/v1/{user}/agent/consent/set                    the user's app / operator -> agent, a consent change
    wb/v1/_agent/{instance}/state                     agent -> all, retained online / Will
    wb/v1/_dlq/{reason}                               bus -> operators, rejected messages
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from schemas.errors import TopicError

ROOT = "wb/v1"
_NAME = re.compile(r"^[a-z0-9-]{1,64}$")
_LEAF = re.compile(r"^[a-z0-9_.-]{1,64}$")


class Kind(StrEnum):
    """The four kinds of device."""

    GLASSES = "glasses"
    RING = "ring"
    EARPHONES = "earphones"
    PHONE = "phone"


class EventClass(StrEnum):
    """The class level of an event topic."""

    SENSOR = "sensor"
    GESTURE = "gesture"
    VOICE = "voice"
    SYSTEM = "system"


class Channel(StrEnum):
    """Which part of the layout a topic belongs to."""

    EVENT = "evt"
    COMMAND = "cmd"
    ACK = "ack"
    STATE = "state"
    DESIRED = "shadow/desired"
    REPORTED = "shadow/reported"
    CONTEXT = "context"
    HEALTH = "health"
    CONSENT = "consent"
    CONSENT_SET = "consent_set"
    AGENT_STATE = "agent_state"
    DLQ = "dlq"


#: The leaf of each channel under ``wb/v1/{user}/agent/``.
_AGENT_CHANNELS = {
    Channel.CONTEXT: "context",
    Channel.HEALTH: "health",
    Channel.CONSENT: "consent",
    Channel.CONSENT_SET: "consent/set",
}


#: ``(user, kind, device)``, the kind as its string: what the agent keeps each device's state under (rate limits,
#: liveness, the per-device order, the language it speaks). Strings hash in C and an enum member does not, and a
#: parsed topic carries its device's key already built (:attr:`Topic.key`), so a message's device costs no tuple.
DeviceKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class DeviceId:
    """Who a device is: the identity that the topic (and the broker's ACL) gives it."""

    user: str
    kind: Kind
    device: str

    def __post_init__(self) -> None:
        check_name(self.user, "user")
        check_name(self.device, "device")

    @property
    def prefix(self) -> str:
        """The topic prefix this device owns: ``wb/v1/{user}/{kind}/{device}``."""
        return device_prefix(self.user, self.kind.value, self.device)

    @property
    def client_id(self) -> str:
        """The MQTT client id (and username) a device connects with: ``{user}/{kind}/{device}``."""
        return f"{self.user}/{self.kind.value}/{self.device}"

    @property
    def key(self) -> DeviceKey:
        """This device's :data:`DeviceKey`."""
        return (self.user, self.kind._value_, self.device)  # _value_: a plain attribute, not enum's property

    def __str__(self) -> str:
        return self.client_id


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed v1 topic.

    Attributes:
        channel: which part of the layout.
        user: the user (absent for agent state and DLQ topics).
        kind: the device kind (device topics only).
        device: the device id (device topics only).
        name: the event class/name (``sensor/hr``), the action (``display.card``), the agent instance or the DLQ reason.
        key: the device's :data:`DeviceKey` (device topics only; derived, not compared). Built once per parsed
            topic, so every module that keeps state per device looks it up without building a tuple per message, and
            their dictionaries share the one tuple instead of each keeping its own.
    """

    channel: Channel
    user: str | None = None
    kind: Kind | None = None
    device: str | None = None
    event_class: EventClass | None = None
    name: str | None = None
    key: DeviceKey | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.user is not None and self.kind is not None and self.device is not None:
            object.__setattr__(self, "key", (self.user, self.kind._value_, self.device))

    @property
    def device_id(self) -> DeviceId:
        """The device identity of a device topic."""
        if self.user is None or self.kind is None or self.device is None:
            raise TopicError("not a device topic", topic=str(self))
        return DeviceId(self.user, self.kind, self.device)

    def __str__(self) -> str:
        match self.channel:
            case Channel.EVENT:
                return f"{ROOT}/{self.user}/{self.kind}/{self.device}/evt/{self.event_class}/{self.name}"
            case Channel.COMMAND:
                return f"{ROOT}/{self.user}/{self.kind}/{self.device}/cmd/{self.name}"
            case Channel.ACK:
                return f"{ROOT}/{self.user}/{self.kind}/{self.device}/ack"
            case Channel.STATE:
                return f"{ROOT}/{self.user}/{self.kind}/{self.device}/state"
            case Channel.DESIRED | Channel.REPORTED:
                return f"{ROOT}/{self.user}/{self.kind}/{self.device}/{self.channel.value}"
            case Channel.CONTEXT:
                return f"{ROOT}/{self.user}/agent/context"
            case Channel.HEALTH:
                return f"{ROOT}/{self.user}/agent/health"
            case Channel.CONSENT:
                return f"{ROOT}/{self.user}/agent/consent"
            case Channel.CONSENT_SET:
                return f"{ROOT}/{self.user}/agent/consent/set"
            case Channel.AGENT_STATE:
                return f"{ROOT}/_agent/{self.name}/state"
            case Channel.DLQ:
                return f"{ROOT}/_dlq/{self.name}"
        raise AssertionError(self.channel)  # pragma: no cover


def check_name(value: str, what: str) -> str:
    """Check a user or device id against ``[a-z0-9-]{1,64}``.

    Raises:
        TopicError: naming what is wrong.
    """
    if not _NAME.match(value):
        raise TopicError(f"{what} {value!r} must match [a-z0-9-]{{1,64}}")
    return value


# ---------------------------------------------------------------------------------------------- filters and patterns
# The levels below may be names, ``+`` (a filter) or an ACL placeholder: the topic builders further down check the
# names; these are for subscriptions and the broker's ACL, which need wildcards.


def device_prefix(user: str = "+", kind: str = "+", device: str = "+") -> str:
    """``wb/v1/{user}/{kind}/{device}``: the prefix of the devices matched (``+`` for any user, kind or device)."""
    return f"{ROOT}/{user}/{kind}/{device}"


def login_prefix(login: str) -> str:
    """``wb/v1/{login}``: the prefix a device login ``{user}/{kind}/{device}`` owns (Mosquitto's ACL pattern
    ``%u``, the authenticated username, stands for one)."""
    return f"{ROOT}/{login}"


def device_channel(prefix: str, channel: Channel, leaf: str = "#") -> str:
    """A device channel under ``prefix`` (see :func:`device_prefix`): ``evt/{leaf}``, ``cmd/{leaf}`` (``leaf`` an
    event's ``{class}/{name}``, an action, or a wildcard), ``ack``, ``state``, ``shadow/desired`` or
    ``shadow/reported``."""
    match channel:
        case Channel.EVENT:
            return f"{prefix}/evt/{leaf}"
        case Channel.COMMAND:
            return f"{prefix}/cmd/{leaf}"
        case Channel.ACK | Channel.STATE | Channel.DESIRED | Channel.REPORTED:
            return f"{prefix}/{channel.value}"
    raise TopicError(f"{channel.value} is not a device channel")


def agent_channel(user: str, channel: Channel) -> str:
    """``wb/v1/{user}/agent/{context|health|consent|consent/set}`` (``user`` a name or ``+``)."""
    leaf = _AGENT_CHANNELS.get(channel)
    if leaf is None:
        raise TopicError(f"{channel.value} is not a user's agent channel")
    return f"{ROOT}/{user}/agent/{leaf}"


def user_filter(user: str = "+") -> str:
    """``wb/v1/{user}/#``: everything of a user (``+``: of every user)."""
    return f"{ROOT}/{user}/#"


# ---------------------------------------------------------------------------------------------- topics


def event_topic(dev: DeviceId, event_class: EventClass | str, name: str) -> str:
    """``wb/v1/{user}/{kind}/{device}/evt/{class}/{name}``."""
    return device_channel(dev.prefix, Channel.EVENT, f"{EventClass(event_class).value}/{name}")


def command_topic(dev: DeviceId, action: str) -> str:
    """``wb/v1/{user}/{kind}/{device}/cmd/{action}``."""
    return device_channel(dev.prefix, Channel.COMMAND, action)


def ack_topic(dev: DeviceId) -> str:
    """``wb/v1/{user}/{kind}/{device}/ack``."""
    return device_channel(dev.prefix, Channel.ACK)


def state_topic(dev: DeviceId) -> str:
    """``wb/v1/{user}/{kind}/{device}/state`` (retained; the Will sets it offline)."""
    return device_channel(dev.prefix, Channel.STATE)


def desired_topic(dev: DeviceId) -> str:
    """``wb/v1/{user}/{kind}/{device}/shadow/desired`` (retained desired settings)."""
    return device_channel(dev.prefix, Channel.DESIRED)


def reported_topic(dev: DeviceId) -> str:
    """``wb/v1/{user}/{kind}/{device}/shadow/reported`` (retained settings the device applied)."""
    return device_channel(dev.prefix, Channel.REPORTED)


def shadow_filter(user: str = "+", kind: str = "+", device: str = "+") -> str:
    """Both shadow documents of the devices matched (``+`` for any user, kind or device)."""
    return f"{device_prefix(user, kind, device)}/shadow/+"


def context_topic(user: str) -> str:
    """``wb/v1/{user}/agent/context`` (retained fused context)."""
    return agent_channel(check_name(user, "user"), Channel.CONTEXT)


def health_topic(user: str) -> str:
    """``wb/v1/{user}/agent/health`` (retained health part of the fused context; agent and the user's app only)."""
    return agent_channel(check_name(user, "user"), Channel.HEALTH)


def consent_topic(user: str) -> str:
    """``wb/v1/{user}/agent/consent`` (retained: the consent the agent holds, per purpose)."""
    return agent_channel(check_name(user, "user"), Channel.CONSENT)


def consent_set_topic(user: str) -> str:
    """``wb/v1/{user}/agent/consent/set`` (a request to change a consent; the agent stores it)."""
    return agent_channel(check_name(user, "user"), Channel.CONSENT_SET)


def agent_state_topic(instance: str) -> str:
    """``wb/v1/_agent/{instance}/state`` (retained; the agent's Will sets it offline)."""
    return f"{ROOT}/_agent/{check_name(instance, 'agent instance')}/state"


def dlq_topic(reason: str) -> str:
    """``wb/v1/_dlq/{reason}``."""
    return f"{DLQ_PREFIX}{reason}"


def user_filters(user: str = "+") -> tuple[str, ...]:
    """What the agent reads of a user (``+``: of every user): their devices' events, acks, states and settings
    reports, and the consent changes asked for them."""
    who = user if user == "+" else check_name(user, "user")
    base = device_prefix(who)
    # The shadow's two documents by name, not ``shadow/+``: Mosquitto refuses a subscription broader than the ACL,
    # which lets the agent read each of them (and nothing else that a later level could add).
    channels = (Channel.EVENT, Channel.ACK, Channel.STATE, Channel.DESIRED, Channel.REPORTED)
    return (*(device_channel(base, channel) for channel in channels), agent_channel(who, Channel.CONSENT_SET))


#: What one agent instance reads: every user's events, acks and device states.
AGENT_FILTERS = user_filters()
#: Every agent instance's retained state (devices hold their events while no agent is online).
AGENT_STATES = f"{ROOT}/_agent/+/state"
#: Everything under the agents' own root (their states).
AGENTS_FILTER = f"{ROOT}/_agent/#"
#: The dead-letter topics: the prefix of each, and the filter that reads them all.
DLQ_PREFIX = f"{ROOT}/_dlq/"
DLQ_FILTER = f"{DLQ_PREFIX}#"


#: Topics whose parse is cached. A user's devices publish on ~23 topics, but at real rates ~98 % of messages are on
#: five of them (91 % on the glasses' 5 Hz head pose, the rest on the four heartbeats): an LRU of this size keeps
#: the hot topics of ~800 users and the head pose of ~3,700 (91 % hits at 2,500 users) for ~1.2 MB in all,
#: instead of every topic of every user (~9 KB a user). ``python -m bench.memory`` measures both.
TOPIC_CACHE = 4096
_KINDS: dict[str, Kind] = {k.value: k for k in Kind}
_CLASSES: dict[str, EventClass] = {c.value: c for c in EventClass}
_intern = sys.intern


@lru_cache(maxsize=TOPIC_CACHE)
def parse(topic: str) -> Topic:
    """Parse a v1 topic.

    Cached (bounded, :data:`TOPIC_CACHE` topics): a hit costs one lookup (~0.1 µs), a miss ~1.3-2 µs. The user,
    device and name strings are interned, so every topic of a device (and what the agent keeps of them) shares them.

    Raises:
        TopicError: the topic is not part of the v1 layout, saying what is wrong.
    """
    parts = topic.split("/")
    if len(parts) == 8 and parts[0] == "wb" and parts[1] == "v1" and parts[5] == "evt":  # events: the fast path
        user, device, name = parts[2], parts[4], parts[7]
        kind, cls = _KINDS.get(parts[3]), _CLASSES.get(parts[6])
        if kind is not None and cls is not None and _NAME.match(user) and _NAME.match(device) and _LEAF.match(name):
            return Topic(Channel.EVENT, _intern(user), kind, _intern(device), cls, _intern(name))
    return _parse(topic, parts)


_AGENT_LEAVES = {"context": Channel.CONTEXT, "health": Channel.HEALTH, "consent": Channel.CONSENT}


def _parse(topic: str, parts: list[str]) -> Topic:
    """Every topic of the layout, step by step (``parts``: the topic split on ``/``)."""
    if len(parts) < 4 or parts[0] != "wb" or parts[1] != "v1":
        raise TopicError("topic is not under wb/v1/", topic=topic)
    first = parts[2]
    if first == "_agent":
        if len(parts) == 5 and parts[4] == "state" and _NAME.match(parts[3]):
            return Topic(Channel.AGENT_STATE, name=_intern(parts[3]))
        raise TopicError("expected wb/v1/_agent/{instance}/state", topic=topic)
    if first == "_dlq":
        if len(parts) == 4 and _LEAF.match(parts[3]):
            return Topic(Channel.DLQ, name=_intern(parts[3]))
        raise TopicError("expected wb/v1/_dlq/{reason}", topic=topic)
    if not _NAME.match(first):
        raise TopicError(f"user {first!r} must match [a-z0-9-]{{1,64}}", topic=topic)
    user = _intern(first)
    if len(parts) == 5 and parts[3] == "agent" and parts[4] in _AGENT_LEAVES:
        return Topic(_AGENT_LEAVES[parts[4]], user=user)
    if len(parts) == 6 and parts[3] == "agent" and parts[4] == "consent" and parts[5] == "set":
        return Topic(Channel.CONSENT_SET, user=user)
    if len(parts) < 6:
        raise TopicError("expected wb/v1/{user}/{kind}/{device}/...", topic=topic)
    kind = _KINDS.get(parts[3])
    if kind is None:
        raise TopicError(f"kind {parts[3]!r} is not one of {', '.join(Kind)}", topic=topic)
    device = parts[4]
    if not _NAME.match(device):
        raise TopicError(f"device {device!r} must match [a-z0-9-]{{1,64}}", topic=topic)
    device = _intern(device)
    match parts[5:]:
        case ["evt", cls, name] if _LEAF.match(name):
            event_class = _CLASSES.get(cls)
            if event_class is None:
                raise TopicError(f"event class {cls!r} is not one of {', '.join(EventClass)}", topic=topic)
            return Topic(Channel.EVENT, user, kind, device, event_class, _intern(name))
        case ["cmd", action] if _LEAF.match(action):
            return Topic(Channel.COMMAND, user, kind, device, name=_intern(action))
        case ["ack"]:
            return Topic(Channel.ACK, user, kind, device)
        case ["state"]:
            return Topic(Channel.STATE, user, kind, device)
        case ["shadow", "desired"]:
            return Topic(Channel.DESIRED, user, kind, device)
        case ["shadow", "reported"]:
            return Topic(Channel.REPORTED, user, kind, device)
    raise TopicError(
        "expected .../evt/{class}/{name}, .../cmd/{action}, .../ack, .../state or .../shadow/desired|reported",
        topic=topic,
    )


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT filter ``topic_filter`` (``+`` and ``#`` wildcards).

    Topics beginning with ``$`` are not matched by a filter that begins with a wildcard (MQTT 3.1.1 §4.7.2).
    """
    if topic.startswith("$") and topic_filter[:1] in {"+", "#"}:
        return False
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, f in enumerate(f_parts):
        if f == "#":
            return i == len(f_parts) - 1
        if i >= len(t_parts):
            return False
        if f not in {"+", t_parts[i]}:
            return False
    return len(f_parts) == len(t_parts)


def validate_filter(topic_filter: str) -> str:
    """Check that a subscription filter is well formed (``#`` only last, wildcards alone in their level).

    Raises:
        TopicError: saying what is wrong.
    """
    if not topic_filter:
        raise TopicError("empty topic filter")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise TopicError("'#' must be alone and last in a filter", topic=topic_filter)
        if "+" in level and level != "+":
            raise TopicError("'+' must be alone in its level", topic=topic_filter)
    return topic_filter
