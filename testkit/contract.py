"""Live contract validation: each message seen during a test is checked against the codec and AsyncAPI.

What can be checked soundly from a subscriber's seat (docs/testing.md has the long form):

- **Schema** (always): the payload must decode and validate (:func:`schemas.codec.decode`). An empty payload
  on a retained channel is the deliberate clearing of a retained message, not a violation.
- **Channel** (always): the topic must match exactly one channel address of the AsyncAPI document, and the
  body the codec decoded must be the message that channel carries.
- **QoS** (only on a broker that passes a probe): a subscriber receives ``min(publish QoS, subscription
  QoS)``. The recorder subscribes at QoS 1, which every binding fits, so the delivered QoS equals the
  publisher's QoS when the broker follows MQTT; a QoS 2 publish shows as 1 and goes unnoticed. amqtt 0.12
  delivers every message at the subscription's QoS, which the recorder's probe detects
  (:attr:`Expect.qos_exact`); then QoS is not checked.
- **Retain**: a delivered retain flag is set only for a message from the broker's retained store, so it says
  the publisher retained it: on a channel whose binding says ``retain: false`` that is a violation. A live
  delivery carries retain 0 whatever the publisher did, so at the end a fresh subscription on the test's own
  topics asks the store: a retained channel published during the test must have a retained copy, and it must
  be the last message seen on that topic.

A test answers for the messages on the topics it owns (its ``wb_topics`` user, or filters given to
:meth:`Contract.own`) and for live messages on the shared topics (``_agent``, ``_dlq``); not for another user's
messages (another test's, on a shared broker) nor for retained messages published before it (:func:`answers_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.client import BusOptions, Outgoing
from schemas import codec
from schemas.actions import DeadLetter
from schemas.errors import BusError, ContractError
from schemas.export import asyncapi
from schemas.topics import DLQ_PREFIX, ROOT, dlq_topic, matches, validate_filter
from testkit.expect import Expect, Seen, fresh_id
from testkit.raw import RawBus, RawMessage

#: The QoS the recorder subscribes with; every binding's QoS is at most this.
SUBSCRIPTION_QOS = 1


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One channel of the AsyncAPI document with its operation's MQTT binding.

    Attributes:
        key: the channel id, e.g. ``ring.evt.sensor.hr``.
        address: the address template, e.g. ``wb/v1/{user}/ring/{device}/evt/sensor/hr``.
        qos: the binding's QoS.
        retain: the binding's retain flag.
        title: the title of the message the channel carries (the body model's name).
    """

    key: str
    address: str
    qos: int
    retain: bool
    title: str

    @property
    def literals(self) -> int:
        """How many levels of the address are fixed (the more, the more specific)."""
        return sum(1 for level in self.address.split("/") if not _is_param(level))

    def matches(self, topic: str) -> bool:
        """Whether ``topic`` fits the address: each ``{param}`` is one non-empty level, the rest literal."""
        levels = topic.split("/")
        template = self.address.split("/")
        if len(levels) != len(template):
            return False
        return all((_is_param(t) and lv != "") or t == lv for t, lv in zip(template, levels, strict=True))


def _is_param(level: str) -> bool:
    return level.startswith("{") and level.endswith("}")


def channel_specs(doc: dict[str, Any] | None = None) -> list[ChannelSpec]:
    """The channels of an AsyncAPI 3 document (``schemas.export.asyncapi()`` by default) with their bindings.

    Raises:
        ContractError: an operation refers to a channel or message the document does not have, or has no MQTT
            binding.
    """
    doc = asyncapi() if doc is None else doc
    channels: dict[str, Any] = doc.get("channels", {})
    messages: dict[str, Any] = doc.get("components", {}).get("messages", {})
    specs: list[ChannelSpec] = []
    for name, op in doc.get("operations", {}).items():
        key = _ref_key(op.get("channel", {}), "#/channels/", name)
        channel = channels.get(key)
        binding = op.get("bindings", {}).get("mqtt")
        if channel is None or binding is None:
            raise ContractError(f"AsyncAPI operation {name!r} has no channel {key!r} or no mqtt binding")
        titles = []
        for ref in channel.get("messages", {}).values():
            msg_key = _ref_key(ref, "#/components/messages/", name)
            if msg_key not in messages:
                raise ContractError(f"AsyncAPI channel {key!r} refers to an unknown message {msg_key!r}")
            titles.append(str(messages[msg_key].get("title", msg_key)))
        specs.append(
            ChannelSpec(
                key=key,
                address=str(channel["address"]),
                qos=int(binding.get("qos", 0)),
                retain=bool(binding.get("retain", False)),
                title=titles[0] if len(titles) == 1 else "|".join(sorted(titles)),
            )
        )
    return specs


def _ref_key(ref: Any, prefix: str, where: str) -> str:
    target = ref.get("$ref", "") if isinstance(ref, dict) else ""
    if not target.startswith(prefix):
        raise ContractError(f"AsyncAPI {where!r}: expected a $ref under {prefix}, got {target!r}")
    return str(target.removeprefix(prefix))


def match_channel(topic: str, specs: Sequence[ChannelSpec]) -> ChannelSpec | None:
    """The channel whose address ``topic`` fits (the most specific one if several do), or ``None``."""
    best: ChannelSpec | None = None
    for spec in specs:
        if spec.matches(topic) and (best is None or spec.literals > best.literals):
            best = spec
    return best


@dataclass(frozen=True, slots=True)
class Violation:
    """A message that broke the contract.

    Attributes:
        at: seconds since the recorder started.
        topic: where.
        rule: which check: ``codec/<reason>``, ``channel``, ``message``, ``qos``, ``retain`` or ``dlq``.
        detail: what was wrong, in words.
    """

    at: float
    topic: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"+{self.at:.3f}s {self.topic} [{self.rule}] {self.detail}"


def check(seen: Seen, specs: Sequence[ChannelSpec], *, qos_exact: bool | None) -> list[Violation]:
    """The contract violations of one recorded message.

    Args:
        seen: the message as recorded.
        specs: the channels (see :func:`channel_specs`).
        qos_exact: whether the broker delivers the publisher's QoS (see :attr:`Expect.qos_exact`); QoS is
            checked only when true.
    """
    topic, raw = seen.topic, seen.raw
    spec = match_channel(topic, specs)
    out: list[Violation] = []
    if seen.message is None:
        if not raw.payload and spec is not None and spec.retain:
            return []  # clearing a retained message is a deliberate act
        reason = seen.error.reason if seen.error is not None else "decode"
        detail = seen.error.detail if seen.error is not None else "did not decode"
        return [Violation(seen.at, topic, f"codec/{reason}", detail)]
    if spec is None:
        return [Violation(seen.at, topic, "channel", "no channel address of the AsyncAPI document matches")]
    body = type(seen.message.data).__name__
    if body not in spec.title.split("|"):
        out.append(
            Violation(
                seen.at,
                topic,
                "message",
                f"channel {spec.key} carries {spec.title}, the codec decoded {body}",
            )
        )
    want = min(spec.qos, SUBSCRIPTION_QOS)
    if qos_exact and raw.qos != want:
        out.append(
            Violation(
                seen.at,
                topic,
                "qos",
                f"published at QoS {raw.qos}; the binding of {spec.key} says QoS {spec.qos}",
            )
        )
    if raw.retain and not spec.retain:
        out.append(
            Violation(
                seen.at,
                topic,
                "retain",
                f"published retained, but {spec.key} is not a retained channel: every new subscriber gets it again",
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class _Allowance:
    topic_filter: str
    dlq: bool


def user_of(topic: str) -> str | None:
    """The user whose topics ``topic`` is one of (``wb/v1/{user}/...``), or ``None`` for the shared ones
    (``wb/v1/_agent/...``, ``wb/v1/_dlq/...``: no user name starts with ``_``) and for topics outside ``wb/v1``."""
    parts = topic.split("/", 3)
    if len(parts) < 3 or f"{parts[0]}/{parts[1]}" != ROOT or parts[2].startswith("_"):
        return None
    return parts[2]


def answers_for(seen: Seen, owned: Sequence[str]) -> bool:
    """Whether a test that owns the filters ``owned`` answers for a message it saw.

    Always for its own topics. Never for a retained message on somebody else's: it was published before the test.
    Not for a live message on another user's topics either: a test beside it on a shared broker sent it (pytest-xdist
    workers, ``--wb-broker``), or a test before it whose message the broker delivered late (amqtt broadcasts from a
    queue: under load a message published in one test reached the recorder of the next). A live message on the
    shared topics (the agents' states, the DLQ) is judged. A contract that owns nothing judges every live message.
    """
    if any(matches(f, seen.topic) for f in owned):
        return True
    if seen.raw.retain:
        return False
    return not owned or user_of(seen.topic) is None


class Contract:
    """Checks each message an :class:`~testkit.expect.Expect` records; :meth:`finish` raises on any.

    Args:
        expect: the recorder (entered).
        owned: filters of the topics this test owns (its retained messages are this test's to answer for).
        specs: the channels (from ``schemas.export.asyncapi()`` by default).
        dlq_within: how long an allowed bad message may take to reach the DLQ.
        probe_within: how long the end-of-test look at the retained store may take.
    """

    def __init__(
        self,
        expect: Expect,
        *,
        owned: Sequence[str] = (),
        specs: Sequence[ChannelSpec] | None = None,
        dlq_within: float = 5.0,
        probe_within: float = 5.0,
    ) -> None:
        self.expect = expect
        self.specs = list(channel_specs() if specs is None else specs)
        self.owned: list[str] = [validate_filter(f) for f in owned]
        self.dlq_within = dlq_within
        self.probe_within = probe_within
        self._allowed: list[_Allowance] = []

    def allow(self, topic_filter: str, *, dlq: bool = True) -> None:
        """Accept violations on ``topic_filter`` (a test that sends bad input on purpose).

        Args:
            topic_filter: where bad input is expected.
            dlq: a message that did not decode is accepted only if a dead letter naming its topic and reason
                shows up on ``wb/v1/_dlq/{reason}`` (someone, usually the agent, routed it there). QoS and
                retain violations have no dead letter and are simply accepted.
        """
        self._allowed.append(_Allowance(validate_filter(topic_filter), dlq))

    def own(self, topic_filter: str) -> None:
        """Make this test answer for the retained messages under ``topic_filter`` (see the module docs)."""
        self.owned.append(validate_filter(topic_filter))

    def _owns(self, topic: str) -> bool:
        return any(matches(f, topic) for f in self.owned)

    def violations(self) -> list[Violation]:
        """The message-level violations recorded so far that this test answers for (:func:`answers_for`), allowed
        ones included."""
        out: list[Violation] = []
        for seen in self.expect.records:
            if answers_for(seen, self.owned):
                out += check(seen, self.specs, qos_exact=self.expect.qos_exact)
        return out

    async def verify(self) -> list[Violation]:
        """All violations not allowed: message-level ones, the retained-store look, and DLQ routing."""
        found = self.violations()
        found += await self._retained_store()
        unique: dict[tuple[str, str, float], Violation] = {}
        for v in found:
            # The store and a retained delivery can both tell of the same retained message: say it once.
            unique.setdefault((v.topic, v.rule, -1.0 if v.rule == "retain" else v.at), v)
        remaining: list[Violation] = []
        need_dlq: list[Violation] = []
        for v in unique.values():
            allowance = next((a for a in self._allowed if matches(a.topic_filter, v.topic)), None)
            if allowance is None:
                remaining.append(v)
            elif allowance.dlq and v.rule.startswith("codec/"):
                need_dlq.append(v)
        remaining += await self._dead_letters(need_dlq)
        return sorted(remaining, key=lambda v: v.at)

    async def finish(self) -> None:
        """Verify, and raise if anything broke the contract.

        Raises:
            AssertionError: listing each violation with its time, topic, rule and reason.
        """
        __tracebackhide__ = True
        remaining = await self.verify()
        if not remaining:
            return
        lines = [f"wearbus contract: {len(remaining)} violation(s) during this test"]
        lines += [f"  {v}" for v in remaining]
        lines.append(
            "Expected bad input? Allow it with wb_contract.allow(FILTER) (it must reach the DLQ) "
            "or wb_contract.allow(FILTER, dlq=False)."
        )
        raise AssertionError("\n".join(lines))

    async def _dead_letters(self, pending: list[Violation]) -> list[Violation]:
        """Wait (bounded) for a dead letter per allowed bad message; those without one stay violations."""
        if not pending:
            return []

        def routed(v: Violation) -> bool:
            reason = v.rule.removeprefix("codec/")
            return any(
                isinstance(m.data, DeadLetter) and m.data.topic == v.topic and m.data.reason == reason
                for m in self.expect.seen(DLQ_PREFIX + "+")
            )

        def all_routed() -> bool | None:
            return True if all(routed(v) for v in pending) else None

        await self.expect.until(all_routed, self.dlq_within)
        return [
            Violation(
                v.at,
                v.topic,
                "dlq",
                f"allowed bad input ({v.rule}: {v.detail}) never reached "
                f"{dlq_topic(v.rule.removeprefix('codec/'))} within {self.dlq_within:g} s",
            )
            for v in pending
            if not routed(v)
        ]

    async def _retained_store(self) -> list[Violation]:
        """Ask the broker's retained store about the owned topics published during the test."""
        last: dict[str, Seen] = {}
        ids: dict[str, set[str]] = {}
        for seen in self.expect.records:
            if seen.raw.retain or not self._owns(seen.topic) or match_channel(seen.topic, self.specs) is None:
                continue
            last[seen.topic] = seen
            if seen.message is not None:
                ids.setdefault(seen.topic, set()).add(seen.message.envelope.id)
        if not last or not self.owned:
            return []
        want = {
            t
            for t, s in last.items()
            if s.raw.payload and (spec := match_channel(t, self.specs)) is not None and spec.retain
        }
        got = await self._ask_store(want)
        if got is None:
            return []  # the broker did not answer in time: nothing proven either way
        now = self.expect.now()
        out: list[Violation] = []
        for topic in sorted(want):
            spec = match_channel(topic, self.specs)
            stored = got.get(topic)
            if spec is None:
                continue  # cannot happen: `want` holds only topics with a retained channel
            if stored is None:
                out.append(
                    Violation(
                        last[topic].at,
                        topic,
                        "retain",
                        f"published without the retain flag: {spec.key} is a retained channel, but a fresh "
                        "subscription found no retained message",
                    )
                )
                continue
            stored_id = _envelope_id(stored)
            latest = last[topic].message
            if stored_id and latest is not None and stored_id != latest.envelope.id and stored_id in ids[topic]:
                out.append(
                    Violation(
                        last[topic].at,
                        topic,
                        "retain",
                        f"the last message on this {spec.key} topic was not retained (the store holds an earlier one)",
                    )
                )
        for topic in sorted(got):
            spec = match_channel(topic, self.specs)
            if spec is not None and not spec.retain and topic in last:
                out.append(
                    Violation(
                        now,
                        topic,
                        "retain",
                        f"the broker holds a retained message on {spec.key}, not a retained channel",
                    )
                )
        return out

    async def _ask_store(self, want: set[str]) -> dict[str, RawMessage] | None:
        """Subscribe afresh to the owned filters and collect the retained copies, up to a barrier of ours.

        Returns ``None`` when the barrier did not come back within ``probe_within`` seconds.
        """
        got: dict[str, RawMessage] = {}
        client_id = fresh_id("wb-contract")
        barrier = f"wbkit/{client_id}/barrier"
        changed = asyncio.Event()
        barrier_seen = False

        def on_raw(raw: RawMessage) -> None:
            nonlocal barrier_seen
            if raw.topic == barrier:
                barrier_seen = True
            elif raw.retain and self._owns(raw.topic):
                got[raw.topic] = raw
            changed.set()

        options = BusOptions(
            url=self.expect.url,
            client_id=client_id,
            protocol=self.expect.bus.protocol,
            connect_timeout_s=self.probe_within,
            name="contract-probe",
        )
        try:
            async with RawBus(options, [on_raw]) as bus:
                await bus.subscribe(barrier, 1)
                for topic_filter in self.owned:
                    await bus.subscribe(topic_filter, SUBSCRIPTION_QOS)
                # The store's copies for a subscription are sent before the broker handles our next packet, so
                # our own marker coming back means they are in; the wait for `want` covers brokers that send
                # them later.
                await bus.publish_raw(Outgoing(barrier, b"barrier", 1, False))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.probe_within):
                        while not (barrier_seen and want <= got.keys()):
                            changed.clear()
                            await changed.wait()
        except BusError:
            return None  # the broker is gone (a fault test stopped it): nothing proven either way
        return got if barrier_seen else None


def _envelope_id(raw: RawMessage) -> str | None:
    try:
        obj = codec.loads(raw.topic, raw.payload, content_type=raw.content_type)
    except ContractError:
        return None
    value = obj.get("id")
    return value if isinstance(value, str) else None


__all__ = [
    "ChannelSpec",
    "Contract",
    "Violation",
    "channel_specs",
    "check",
    "match_channel",
]
