"""Topic-level expectations: record all of ``wb/#`` from the start of a test, then wait for what must come.

:class:`Expect` keeps every message its own connection receives, decoded (or with the reason it did not
decode), with the time since the recorder started. :meth:`Expect.message`, :meth:`Expect.none` and
:meth:`Expect.sequence` look at everything recorded so far and then wait, bounded, for more; a failure raises
:class:`AssertionError` whose text shows what *was* seen on nearby topics, so a wrong user id, kind or field
is visible at a glance.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

from broker.client import BusOptions, Outgoing, Protocol
from schemas import codec
from schemas.envelope import Message, dump
from schemas.errors import ContractError
from schemas.shadow import DeviceShadow, ShadowBook
from schemas.topics import (
    DeviceId,
    EventClass,
    Kind,
    ack_topic,
    check_name,
    command_topic,
    context_topic,
    desired_topic,
    event_topic,
    matches,
    reported_topic,
    state_topic,
    user_filter,
    validate_filter,
)
from testkit.raw import RawBus, RawMessage

Predicate = Callable[[Message], bool]
Step = str | tuple[str, Predicate | None]
T = TypeVar("T")

#: Lines of context an assertion message shows at most (the newest ones).
MAX_LINES = 40
_PROBE_ROOT = "wbkit"


@dataclass(frozen=True, slots=True)
class Seen:
    """One recorded message.

    Attributes:
        at: seconds since the recorder started.
        raw: the message as delivered (bytes, QoS, retain flag, content type).
        message: the decoded message, or ``None`` when it did not decode.
        error: why it did not decode, or ``None``.
    """

    at: float
    raw: RawMessage
    message: Message | None
    error: ContractError | None

    @property
    def topic(self) -> str:
        """The MQTT topic."""
        return self.raw.topic


def fresh_id(prefix: str) -> str:
    """``prefix-<10 hex digits>``: a user or client id that no other test will use."""
    return f"{prefix}-{os.urandom(5).hex()}"


@dataclass(frozen=True, slots=True)
class UserTopics:
    """The topics of one test's own user, so tests sharing a broker never see each other's messages.

    Attributes:
        user: the user id, e.g. ``t-3f9a0c21d4``.
    """

    user: str

    def __post_init__(self) -> None:
        check_name(self.user, "user")

    @classmethod
    def fresh(cls) -> UserTopics:
        """A user id no other test uses."""
        return cls(fresh_id("t"))

    @property
    def all(self) -> str:
        """The filter for everything of this user: ``wb/v1/{user}/#``."""
        return user_filter(self.user)

    def device(self, kind: Kind | str, device: str) -> DeviceId:
        """The identity of one of this user's devices."""
        return DeviceId(self.user, Kind(kind), device)

    def event(self, kind: Kind | str, device: str, event_class: EventClass | str, name: str) -> str:
        """``wb/v1/{user}/{kind}/{device}/evt/{class}/{name}``."""
        return event_topic(self.device(kind, device), event_class, name)

    def command(self, kind: Kind | str, device: str, action: str) -> str:
        """``wb/v1/{user}/{kind}/{device}/cmd/{action}``."""
        return command_topic(self.device(kind, device), action)

    def ack(self, kind: Kind | str, device: str) -> str:
        """``wb/v1/{user}/{kind}/{device}/ack``."""
        return ack_topic(self.device(kind, device))

    def state(self, kind: Kind | str, device: str) -> str:
        """``wb/v1/{user}/{kind}/{device}/state``."""
        return state_topic(self.device(kind, device))

    def context(self) -> str:
        """``wb/v1/{user}/agent/context``."""
        return context_topic(self.user)

    def desired(self, kind: Kind | str, device: str) -> str:
        """``wb/v1/{user}/{kind}/{device}/shadow/desired``."""
        return desired_topic(self.device(kind, device))

    def reported(self, kind: Kind | str, device: str) -> str:
        """``wb/v1/{user}/{kind}/{device}/shadow/reported``."""
        return reported_topic(self.device(kind, device))


# ------------------------------------------------------------------------------------------- rendering


def nearby(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` is worth showing when nothing matched ``topic_filter``.

    It is when it matches the filter, or when it agrees with the filter's first three levels
    (``wb/v1/{user}``, ``wb/v1/_dlq``), wildcards matching anything: the same user's other devices and
    channels are where a misnamed kind, device or event shows up.
    """
    if matches(topic_filter, topic):
        return True
    levels = topic.split("/")
    for i, level in enumerate(topic_filter.split("/")[:3]):
        if level == "#":
            return True
        if i >= len(levels) or level not in {"+", levels[i]}:
            return False
    return True


def describe_predicate(where: Callable[..., Any] | None) -> str:
    """A short text for a predicate: its name, or the source of a lambda (best effort)."""
    if where is None:
        return ""
    name = getattr(where, "__name__", "")
    if name and name != "<lambda>":
        return name
    try:
        source = inspect.getsource(where)
    except (OSError, TypeError):
        return repr(where)
    return _lambda_text(source) or repr(where)


def _lambda_text(source: str) -> str:
    """Cut ``lambda ...`` out of the source lines that define it, up to its end at bracket depth zero."""
    start = source.find("lambda")
    if start < 0:
        return ""
    depth = 0
    quote = ""
    out = []
    for ch in source[start:]:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            break
        out.append(ch)
    return " ".join("".join(out).split())


def _value(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(seen: Seen) -> str:
    """One line for a recorded message: time, topic, QoS, retained, and the decoded body or the rejection."""
    raw = seen.raw
    flags = f"q{raw.qos}" + (" retained" if raw.retain else "")
    head = f"+{seen.at:.3f}s {raw.topic} {flags}"
    if seen.message is not None:
        data = dump(seen.message.envelope)["data"]
        kind = data.pop("type", type(seen.message.data).__name__)
        fields = " ".join(f"{k}={_value(v)}" for k, v in data.items())
        corr = f" corr={seen.message.envelope.corr}" if seen.message.envelope.corr else ""
        body = f"{kind} {fields}{corr}"
        return f"{head}  {body if len(body) <= 200 else body[:197] + '...'}"
    if not raw.payload:
        return f"{head}  (empty payload: clears a retained message)"
    error = seen.error
    why = f"{error.reason}: {error.detail}" + (f" at {error.field}" if error.field else "") if error else "?"
    return f"{head}  REJECTED {why}; payload {raw.payload[:80]!r}"


def context_lines(
    records: Sequence[Seen],
    topic_filter: str,
    *,
    where: Predicate | None = None,
    limit: int = MAX_LINES,
    annotate: bool = True,
) -> list[str]:
    """What was seen near ``topic_filter``, newest ``limit`` lines, each marked when it matched the filter.

    When nothing was near, the last few messages seen anywhere, so a filter with a typo still shows what was
    there.
    """
    close = [s for s in records if nearby(topic_filter, s.topic)]
    if not close:
        if not records:
            return ["nothing at all was seen on the bus since the recorder started"]
        tail = records[-5:]
        return [
            f"nothing on topics near {topic_filter!r}; {len(records)} message(s) elsewhere, the last ones:",
            *(f"  {describe(s)}" for s in tail),
        ]
    lines = [f"seen near {topic_filter!r} ({len(close)} message(s), oldest first):"]
    if len(close) > limit:
        lines.append(f"  ... {len(close) - limit} earlier ones left out")
        close = close[-limit:]
    for s in close:
        note = ""
        if annotate and matches(topic_filter, s.topic):
            if s.message is None:
                note = "   <- matched the filter but did not decode"
            elif where is not None:
                ok, err = _check(where, s.message)
                note = "   <- matched the filter; where: " + ("true" if ok else (err or "false"))
            else:
                note = "   <- matched the filter"
        lines.append(f"  {describe(s)}{note}")
    return lines


def _check(where: Predicate | None, message: Message) -> tuple[bool, str]:
    """Apply a predicate; an exception counts as false, and its text is kept for the report."""
    if where is None:
        return True, ""
    try:
        return bool(where(message)), ""
    except Exception as exc:  # noqa: BLE001 (a predicate that raises simply does not match; the report says why)
        return False, f"raised {type(exc).__name__}: {exc}"


class Has:
    """A predicate on the decoded body's fields; see :func:`has`."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __call__(self, message: Message) -> bool:
        """Whether every named field of the body equals the value, or satisfies it when the value is callable."""
        missing = object()
        for name, want in self.fields.items():
            value = getattr(message.data, name, missing)
            if value is missing:
                return False
            if callable(want):
                if not want(value):
                    return False
            elif value != want:
                return False
        return True

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={describe_predicate(v) if callable(v) else repr(v)}" for k, v in self.fields.items())
        return f"has({args})"


def has(**fields: Any) -> Has:
    """A ``where`` predicate on body fields: ``has(bpm=72)``, ``has(bpm=lambda v: v > 100, source="spot")``.

    It reads well in reports and needs no cast where a lambda would (``m.data`` is typed as the base ``Body``).
    """
    return Has(fields)


def _what(topic_filter: str, where: Predicate | None) -> str:
    text = f"a message on {topic_filter!r}"
    return text + (f" where {describe_predicate(where)}" if where is not None else "")


# ------------------------------------------------------------------------------------------- recorder


class Expect:
    """Records every message on ``topic_filter`` from the moment it is entered, and waits for expectations.

    Example::

        async with Expect(url) as expect:
            ...  # make something happen
            hr = await expect.message("wb/v1/alice/ring/+/evt/sensor/hr", where=lambda m: m.data.bpm > 60)

    Args:
        url: the broker URL.
        topic_filter: what to record (everything under ``wb/`` by default).
        client_id: the MQTT client id (a fresh one by default).
        protocol: the MQTT version ("auto" tries 5, then 3.1.1; amqtt takes seconds to refuse 5).
        clock: monotonic seconds, for the times in reports.
    """

    def __init__(
        self,
        url: str,
        *,
        topic_filter: str = "wb/#",
        client_id: str | None = None,
        protocol: Protocol = "auto",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.topic_filter = validate_filter(topic_filter)
        self.client_id = client_id or fresh_id("wb-expect")
        self.records: list[Seen] = []
        self.listeners: list[Callable[[Seen], None]] = []
        self.qos_exact: bool | None = None
        self._clock = clock
        self._t0 = clock()
        self._waiters: list[asyncio.Future[None]] = []
        self._probe_topic = f"{_PROBE_ROOT}/{self.client_id}/qos"
        self._probe_seen: asyncio.Future[int] | None = None
        options = BusOptions(url=url, client_id=self.client_id, protocol=protocol, name="expect")
        self.bus = RawBus(options, [self._on_raw])
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        self._t0 = self._clock()
        self._probe_seen = asyncio.get_running_loop().create_future()
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.bus)
            await self.bus.subscribe(self.topic_filter, 1)
            await self._probe_qos()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        await stack.__aexit__(exc_type, exc, tb)
        self._wake()

    async def _probe_qos(self, within: float = 2.0) -> None:
        """Learn whether delivered QoS shows the publisher's QoS: send QoS 0 to a QoS 1 subscription of ours.

        A broker that follows MQTT delivers it at QoS 0 (min of publish and subscription QoS). amqtt 0.12
        delivers every live message at the subscription's QoS, so there the delivered QoS says nothing.
        """
        if self._probe_seen is None:
            return
        await self.bus.subscribe(self._probe_topic, 1)
        await self.bus.publish_raw(Outgoing(self._probe_topic, b"qos-probe", 0, False))
        try:
            async with asyncio.timeout(within):
                delivered = await asyncio.shield(self._probe_seen)
        except TimeoutError:
            self.qos_exact = None  # unknown: QoS checks on live messages are skipped
        else:
            self.qos_exact = delivered == 0
        await self.bus.unsubscribe(self._probe_topic)

    # ------------------------------------------------------------------ recording

    def _on_raw(self, raw: RawMessage) -> None:
        if raw.topic == self._probe_topic:
            if self._probe_seen is not None and not self._probe_seen.done():
                self._probe_seen.set_result(raw.qos)
            return
        message: Message | None = None
        error: ContractError | None = None
        try:
            message = codec.decode(
                raw.topic, raw.payload, content_type=raw.content_type, qos=raw.qos, retain=raw.retain
            )
        except ContractError as exc:
            error = exc
        seen = Seen(self._clock() - self._t0, raw, message, error)
        self.records.append(seen)
        for listener in self.listeners:
            listener(seen)
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _changed(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    def now(self) -> float:
        """Seconds since the recorder started (the time base of every report)."""
        return self._clock() - self._t0

    def mark(self) -> int:
        """A position in the record: pass it as ``since`` to ignore what came before."""
        return len(self.records)

    # ------------------------------------------------------------------ looking

    def seen(self, topic_filter: str = "#", where: Predicate | None = None, *, since: int = 0) -> list[Message]:
        """The decoded messages recorded so far on ``topic_filter`` (that satisfy ``where``), oldest first."""
        validate_filter(topic_filter)
        return [
            s.message
            for s in self.records[since:]
            if s.message is not None and matches(topic_filter, s.topic) and _check(where, s.message)[0]
        ]

    def rejected(self, topic_filter: str = "#", *, since: int = 0) -> list[Seen]:
        """The recorded messages on ``topic_filter`` that did not decode."""
        return [s for s in self.records[since:] if s.message is None and matches(topic_filter, s.topic)]

    def report(self, topic_filter: str = "#", where: Predicate | None = None) -> str:
        """What was seen near ``topic_filter``, as the assertion messages show it."""
        return "\n".join(context_lines(self.records, topic_filter, where=where))

    def _find(self, topic_filter: str, where: Predicate | None, start: int) -> int | None:
        for i in range(start, len(self.records)):
            s = self.records[i]
            if s.message is not None and matches(topic_filter, s.topic) and _check(where, s.message)[0]:
                return i
        return None

    async def until(self, probe: Callable[[], T | None], within: float) -> T | None:
        """Call ``probe`` now and after each new message until it answers (not ``None``), for ``within`` s.

        Returns:
            the answer, or ``None`` if there was none in time.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while True:
                    found = probe()
                    if found is not None:
                        return found
                    await self._changed()
        return probe()

    async def message(
        self, topic_filter: str, *, where: Predicate | None = None, within: float = 5.0, since: int = 0
    ) -> Message:
        """The first message on ``topic_filter`` satisfying ``where`` since the start (or ``since``).

        Waits up to ``within`` seconds for one to arrive if none has yet.

        Raises:
            AssertionError: none came; the text shows what was seen on nearby topics.
        """
        __tracebackhide__ = True  # pytest shows the caller's line, not this helper's
        validate_filter(topic_filter)
        begin = self.now()
        pos = since

        def probe() -> int | None:
            nonlocal pos
            found = self._find(topic_filter, where, pos)
            pos = len(self.records) if found is None else found
            return found

        index = await self.until(probe, within)
        message = self.records[index].message if index is not None else None
        if message is not None:
            return message
        raise AssertionError(
            f"expected {_what(topic_filter, where)} within {within:g} s "
            f"(waited from +{begin:.3f}s to +{self.now():.3f}s); none came.\n"
            + "\n".join(context_lines(self.records[since:], topic_filter, where=where))
        )

    async def none(
        self, topic_filter: str, *, where: Predicate | None = None, within: float = 1.0, since: int = 0
    ) -> None:
        """Assert that no message on ``topic_filter`` satisfying ``where`` came since the start (or ``since``)
        and none comes in the next ``within`` seconds.

        Raises:
            AssertionError: one came; the text shows it and its neighbours.
        """
        __tracebackhide__ = True
        validate_filter(topic_filter)
        pos = since

        def probe() -> int | None:
            nonlocal pos
            found = self._find(topic_filter, where, pos)
            pos = len(self.records) if found is None else found
            return found

        index = await self.until(probe, within)
        if index is None:
            return
        raise AssertionError(
            f"expected no {_what(topic_filter, where).removeprefix('a ')}, but one came:\n"
            f"  {describe(self.records[index])}\n"
            + "\n".join(context_lines(self.records[since:], topic_filter, where=where))
        )

    async def sequence(self, steps: Sequence[Step], *, within: float = 5.0, since: int = 0) -> list[Message]:
        """Messages matching ``steps`` in this order (others may come in between), within ``within`` seconds.

        Args:
            steps: each a filter, or a ``(filter, where)`` pair.
            within: the time for the whole sequence.
            since: where in the record to start looking (the start of the test by default).

        Raises:
            AssertionError: a step never came after the previous one; the text shows the steps that did and
                what was seen near the missing one.
        """
        __tracebackhide__ = True
        plan: list[tuple[str, Predicate | None]] = [
            (validate_filter(s), None) if isinstance(s, str) else (validate_filter(s[0]), s[1]) for s in steps
        ]
        found: list[int] = []
        pos = since

        def probe() -> list[int] | None:
            nonlocal pos
            while len(found) < len(plan):
                topic_filter, where = plan[len(found)]
                index = self._find(topic_filter, where, pos)
                if index is None:
                    pos = len(self.records)
                    return None
                found.append(index)
                pos = index + 1
            return found

        if await self.until(probe, within) is not None:
            return [m for m in (self.records[i].message for i in found) if m is not None]
        lines = [f"expected a sequence of {len(plan)} messages within {within:g} s; step {len(found) + 1} never came:"]
        for n, (topic_filter, where) in enumerate(plan):
            mark = "ok  " if n < len(found) else ("MISS" if n == len(found) else "    ")
            at = f" at +{self.records[found[n]].at:.3f}s" if n < len(found) else ""
            lines.append(f"  {n + 1}. {mark} {_what(topic_filter, where)}{at}")
        missing_filter, missing_where = plan[len(found)]
        after = found[-1] + 1 if found else since
        lines.append(f"after step {len(found)}:" if found else "from the start:")
        lines += context_lines(self.records[after:], missing_filter, where=missing_where)
        raise AssertionError("\n".join(lines))

    # ------------------------------------------------------------------ shadows

    def shadow_of(self, dev: DeviceId) -> DeviceShadow:
        """What the record shows of one device's shadow: the latest desired, reported and birth."""
        book = ShadowBook()
        for seen in self.records:
            if seen.message is not None and seen.message.where.device == dev.device:
                book.update(seen.message)
        return book.get(dev)

    async def shadow(
        self, dev: DeviceId, *, version: int | None = None, settled: bool = True, within: float = 5.0
    ) -> DeviceShadow:
        """Wait until ``dev`` reported ``version`` (default: the latest desired version) and, with ``settled``, has
        no pending delta; returns its shadow.

        Raises:
            AssertionError: it did not in time; the text shows desired vs reported and the delta.
        """
        __tracebackhide__ = True

        def probe() -> DeviceShadow | None:
            shadow = self.shadow_of(dev)
            want = version if version is not None else (shadow.desired.version if shadow.desired else None)
            reported = shadow.reported
            if want is None or reported is None or reported.version < want:
                return None
            return shadow if not settled or not shadow.describe()["pending"] else None

        found = await self.until(probe, within)
        if found is not None:
            return found
        state = json.dumps(self.shadow_of(dev).describe(), ensure_ascii=False, default=str)
        target = f"version {version}" if version is not None else "the desired version"
        raise AssertionError(
            f"expected {dev} to report {target}{' with no pending delta' if settled else ''} within {within:g} s; "
            f"its shadow: {state}"
        )
