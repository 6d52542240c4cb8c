"""The OwnTracks bridge: a real phone running the OwnTracks app becomes a wearbus phone.

OwnTracks publishes JSON to ``owntracks/{user}/{device}`` (``_type`` ``location`` and ``lwt``) and
``owntracks/{user}/{device}/event`` (``_type`` ``transition``) — see https://owntracks.org/booklet/tech/json/. The
bridge subscribes to the mapped topics, translates each message (:func:`translate`, pure) and emits the phone's
wearbus events through one :class:`~devices.sdk.Device` per mapped phone (birth, Will, seq, outbox, heartbeats):

* ``location`` -> ``phone.location`` (``lat``, ``lon``, ``acc`` -> ``accuracy_m``, ``vel`` km/h -> ``speed_mps``,
  ``cog`` -> ``bearing_deg``, the first of ``inregions`` -> ``place``), and, when it carries ``batt``,
  ``phone.battery`` (``bs`` 2 = charging);
* ``transition`` -> ``phone.location`` at the transition point, ``place`` = ``desc`` on ``enter``, none on ``leave``;
* ``lwt`` -> a log line (the app lost its connection; the phone's wearbus state stays the bridge's);
* other types (``cmd``, ``waypoint``, ``card``, ``status``, ...) -> a debug line.

Every event keeps the app's ``tst`` (seconds) as its sample time ``src_ts`` (ms), so locations the app queued while
offline and sends late (or in a JSON array) keep the time they were taken. Anything that is not OwnTracks JSON is
refused with a log line saying what and where; the bridge keeps running. The bridge keeps its MQTT session on the
broker (a stable client id per set of maps), so what the app publishes while the bridge is down arrives when it is
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import ssl
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiomqtt
from pydantic import ValidationError

from broker.logs import get_logger
from broker.url import BrokerUrl
from devices.sdk import Device, DeviceConfig
from schemas.clock import Clock
from schemas.errors import ConfigError, DeviceError, TopicError
from schemas.events import Body, Location, PhoneBattery
from schemas.topics import Kind, check_name

log = get_logger("bridge.owntracks")

PREFIX = "owntracks"
IGNORED_TYPES = frozenset(
    {"beacon", "card", "cmd", "configuration", "encrypted", "request", "status", "steps", "waypoint", "waypoints"}
)
MAX_BATCH = 1000  # locations in one JSON array (HTTP-mode style batches)
KMH = 3.6


class OwnTracksError(DeviceError):
    """A message that is not usable OwnTracks JSON."""


@dataclass(frozen=True, slots=True)
class PhoneMap:
    """``owntracks-user/device=wearbus-user[/phone-id]``; ``+`` in the OwnTracks part matches any name."""

    ot_user: str
    ot_device: str
    user: str
    device: str = "owntracks"

    @classmethod
    def parse(cls, spec: str) -> PhoneMap:
        """Parse one ``--map`` value.

        Raises:
            ConfigError: not of the form ``user/device=wearbus-user[/phone-id]`` or a bad wearbus name.
        """
        left, eq, right = spec.partition("=")
        ot = left.strip().split("/")
        wb = right.strip().split("/")
        if not eq or len(ot) != 2 or not all(ot) or not 1 <= len(wb) <= 2 or not all(wb):
            raise ConfigError(
                f"--map {spec!r}: expected OWNTRACKS-USER/DEVICE=WEARBUS-USER or ...=WEARBUS-USER/PHONE-ID, "
                "e.g. 'jane/pixel=alice'"
            )
        if any(c in part for part in ot for c in "#/") or any(len(part) > 1 and "+" in part for part in ot):
            raise ConfigError(f"--map {spec!r}: an OwnTracks name is a plain name or '+' (any)")
        try:
            check_name(wb[0], "--map wearbus user")
            if len(wb) == 2:
                check_name(wb[1], "--map phone id")
        except TopicError as exc:
            raise ConfigError(f"--map {spec!r}: {exc}") from exc
        return cls(ot[0], ot[1], wb[0], wb[1] if len(wb) == 2 else "owntracks")

    def matches(self, ot_user: str, ot_device: str) -> bool:
        """Whether a message of ``owntracks/{ot_user}/{ot_device}`` belongs to this phone."""
        return self.ot_user in ("+", ot_user) and self.ot_device in ("+", ot_device)

    @property
    def filters(self) -> list[str]:
        """The topic filters OwnTracks publishes this phone's locations and transitions on."""
        base = f"{PREFIX}/{self.ot_user}/{self.ot_device}"
        return [base, f"{base}/event"]


@dataclass(frozen=True, slots=True)
class Translated:
    """What one OwnTracks message becomes: wearbus bodies with their sample time, and a note for the log."""

    events: list[tuple[Body, int]] = field(default_factory=list)
    note: str = ""
    kind: str = ""


def _number(obj: dict[str, Any], key: str, *, required: bool = False) -> float | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise OwnTracksError(f"{obj.get('_type', '?')} has no {key!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OwnTracksError(f"{key!r} is {str(value)[:40]!r}, not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise OwnTracksError(f"{key!r} is {str(value)[:40]}, not a finite number")
    return number


def _tst_ms(obj: dict[str, Any]) -> int:
    tst = _number(obj, "tst", required=True)
    assert tst is not None  # noqa: S101  # required=True raised otherwise
    if not 0 <= tst < 10**11:
        raise OwnTracksError(f"'tst' {tst!r} is not a Unix time in seconds")
    return round(tst * 1000)


def _location(obj: dict[str, Any], *, place: str | None) -> Location:
    acc = _number(obj, "acc")
    vel = _number(obj, "vel")
    cog = _number(obj, "cog")
    return Location(
        lat=_number(obj, "lat", required=True),
        lon=_number(obj, "lon", required=True),
        accuracy_m=min(10_000.0, max(0.0, acc)) if acc is not None else 10.0,
        speed_mps=round(min(100.0, max(0.0, vel) / KMH), 2) if vel is not None else 0.0,
        bearing_deg=(cog % 360.0) if cog is not None and cog >= 0 else 0.0,
        place=place[:64] if place else None,
    )


def translate_one(obj: Any) -> Translated:
    """One OwnTracks JSON object as wearbus events (pure).

    Raises:
        OwnTracksError: not an OwnTracks object, a missing or malformed field, or a value out of range.
    """
    if not isinstance(obj, dict):
        raise OwnTracksError(f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("_type")
    if not isinstance(kind, str):
        raise OwnTracksError("no '_type' (every OwnTracks message has one)")
    try:
        if kind == "location":
            ts = _tst_ms(obj)
            regions = obj.get("inregions")
            place = regions[0] if isinstance(regions, list) and regions and isinstance(regions[0], str) else None
            events: list[tuple[Body, int]] = [(_location(obj, place=place), ts)]
            batt = _number(obj, "batt")
            if batt is not None:
                bs = obj.get("bs")
                events.append((PhoneBattery(level_pct=batt, charging=bs == 2), ts))
            trigger = obj.get("t")
            return Translated(events, note=f"trigger {trigger}" if isinstance(trigger, str) else "", kind=kind)
        if kind == "transition":
            ts = _tst_ms(obj)
            event = obj.get("event")
            if event not in ("enter", "leave"):
                raise OwnTracksError(f"transition 'event' is {event!r}, not 'enter' or 'leave'")
            desc = obj.get("desc")
            if desc is not None and not isinstance(desc, str):
                raise OwnTracksError(f"transition 'desc' is {desc!r}, not a string")
            place = desc if event == "enter" else None
            return Translated([(_location(obj, place=place), ts)], note=f"{event} {desc or ''}", kind=kind)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise OwnTracksError(f"{kind}: {where}: {first['msg']}") from exc
    if kind == "lwt":
        return Translated(note="the app lost its connection to the broker (lwt)", kind=kind)
    if kind in IGNORED_TYPES:
        return Translated(note=f"_type {kind} carries nothing a wearbus phone publishes", kind=kind)
    raise OwnTracksError(f"unknown _type {kind!r}")


def translate(payload: bytes) -> list[Translated]:
    """An MQTT payload from OwnTracks (one object, or a JSON array of them as queued/HTTP batches) as wearbus events.

    Raises:
        OwnTracksError: not JSON, or not OwnTracks JSON (for an array: the first bad item, with its index).
    """
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OwnTracksError(f"not JSON: {exc}") from exc
    except (RecursionError, ValueError) as exc:  # nested too deep; an integer too long to read
        raise OwnTracksError(f"not usable JSON: {type(exc).__name__}") from exc
    if isinstance(data, list):
        if len(data) > MAX_BATCH:
            raise OwnTracksError(f"a batch of {len(data)} messages (at most {MAX_BATCH})")
        out = []
        for i, item in enumerate(data):
            try:
                out.append(translate_one(item))
            except OwnTracksError as exc:
                raise OwnTracksError(f"item [{i}]: {exc}") from exc
        return out
    return [translate_one(data)]


class OwnTracksPhone(Device):
    """A phone on the bus whose sensors are the OwnTracks app: it publishes, it accepts no action."""

    kind = Kind.PHONE

    def __init__(self, user: str, device: str, config: DeviceConfig | None = None, clock: Clock | None = None) -> None:
        super().__init__(user, device, config, clock)
        self.battery: PhoneBattery | None = None
        self.last_ts = 0

    @property
    def capabilities(self) -> list[str]:
        """OwnTracks takes no wearbus action (no prompt, notification or task): the agent routes around it."""
        return []

    def battery_pct(self) -> float | None:
        """The last ``batt`` the app reported."""
        return self.battery.level_pct if self.battery is not None else None

    def publish(self, translated: Translated) -> int:
        """Emit what one message became (a battery only when it changed); returns how many events."""
        n = 0
        for body, ts in translated.events:
            if isinstance(body, PhoneBattery):
                if body == self.battery:
                    continue
                self.battery = body
            self.emit(body, src_ts=ts)
            self.last_ts = max(self.last_ts, ts)
            n += 1
        return n


@dataclass(slots=True)
class BridgeStats:
    """What the bridge counted."""

    received: int = 0
    events: int = 0
    ignored: int = 0
    refused: int = 0
    unmapped: int = 0


class OwnTracksBridge:
    """Listens to OwnTracks on a broker and runs one wearbus phone per mapping; an async context manager."""

    def __init__(
        self,
        maps: list[PhoneMap],
        config: DeviceConfig,
        *,
        source_url: str | None = None,
        client_id: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not maps:
            raise ConfigError("give at least one --map OWNTRACKS-USER/DEVICE=WEARBUS-USER (or =WEARBUS-USER/PHONE-ID)")
        self.maps = maps
        self.config = config
        self.source = BrokerUrl.parse(source_url or config.url)
        # A stable id and a kept session: the broker holds what the app publishes (QoS 1) while the bridge is down.
        digest = hashlib.sha256("\n".join(sorted(f"{m.ot_user}/{m.ot_device}" for m in maps)).encode()).hexdigest()
        self.client_id = client_id or f"wearbus-owntracks-{digest[:12]}"
        self.stats = BridgeStats()
        self.phones: dict[PhoneMap, OwnTracksPhone] = {}
        for m in maps:
            self.phones[m] = OwnTracksPhone(m.user, m.device, config, clock)
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._warned: set[str] = set()

    async def __aenter__(self) -> Self:
        try:
            for phone in self.phones.values():
                await self._stack.enter_async_context(phone)
        except BaseException:
            await self._stack.aclose()
            raise
        self._task = asyncio.create_task(self._listen(), name="owntracks.listen")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stack.__aexit__(exc_type, exc, tb)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the phones are connected and the OwnTracks topics subscribed."""
        async with asyncio.timeout(timeout):
            for phone in self.phones.values():
                await phone.wait_connected(timeout)
            await self._subscribed.wait()

    async def run_forever(self) -> None:
        """Run until cancelled; a failed listener surfaces here."""
        assert self._task is not None  # noqa: S101  # inside `async with`
        await self._task

    def phone_for(self, topic: str) -> tuple[OwnTracksPhone | None, str]:
        """The phone a topic belongs to (first matching map) and its OwnTracks ``user/device``."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != PREFIX:
            return None, topic
        for m, phone in self.phones.items():
            if m.matches(parts[1], parts[2]):
                return phone, f"{parts[1]}/{parts[2]}"
        return None, f"{parts[1]}/{parts[2]}"

    def handle(self, topic: str, payload: bytes) -> int:
        """Translate and emit one OwnTracks message; refuses garbage with a log line. Returns events emitted."""
        self.stats.received += 1
        phone, who = self.phone_for(topic)
        if phone is None and not topic.startswith(f"{PREFIX}/"):
            log.debug("owntracks_not_subscribed", topic=topic)  # a broker that delivers what we did not ask for
            return 0
        if phone is None:
            self.stats.unmapped += 1
            if who not in self._warned:
                self._warned.add(who)
                log.warning("owntracks_unmapped", topic=topic, hint=f"add --map {who}=WEARBUS-USER")
            return 0
        if not payload:
            return 0  # an empty retained payload clears the topic
        try:
            parts = translate(payload)
        except OwnTracksError as exc:
            self.stats.refused += 1
            log.warning("owntracks_refused", topic=topic, error=str(exc), size=len(payload))
            return 0
        n = 0
        for part in parts:
            if not part.events:
                self.stats.ignored += 1
                level = log.info if part.kind == "lwt" else log.debug
                level("owntracks_ignored", topic=topic, type=part.kind, why=part.note)
                continue
            n += phone.publish(part)
            log.debug("owntracks_mapped", topic=topic, type=part.kind, note=part.note, events=len(part.events))
        self.stats.events += n
        return n

    def _tls(self) -> ssl.SSLContext | None:
        if not self.source.tls:
            return None
        context = ssl.create_default_context(cafile=self.source.ca)
        if self.source.insecure:
            context.check_hostname = False
        return context

    async def _listen(self) -> None:
        url = self.source
        filters = sorted({f for m in self.maps for f in m.filters})
        delay = 0.2
        while True:
            try:
                async with aiomqtt.Client(
                    url.host,
                    url.port,
                    username=url.username,
                    password=url.password,
                    transport="websockets" if url.websocket else "tcp",
                    websocket_path=url.path if url.websocket else None,
                    tls_context=self._tls(),
                    keepalive=30,
                    identifier=self.client_id,
                    clean_session=False,
                ) as client:
                    for f in filters:
                        await client.subscribe(f, qos=1)
                    log.info("owntracks_listening", broker=url.redacted(), filters=filters)
                    self._subscribed.set()
                    delay = 0.2
                    async for message in client.messages:
                        payload = message.payload
                        raw = payload if isinstance(payload, bytes) else str(payload).encode()
                        try:
                            self.handle(message.topic.value, raw)
                        except Exception:  # a bug on one message must not stop the phone's bridge
                            log.exception("owntracks_message_failed", topic=message.topic.value)
            except aiomqtt.MqttError as exc:
                self._subscribed.clear()
                log.warning("owntracks_source_lost", broker=url.redacted(), error=str(exc), retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(15.0, delay * 2)
