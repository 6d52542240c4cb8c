"""The OwnTracks bridge: a phone running the open-source OwnTracks app becomes a wearbus phone.

OwnTracks publishes JSON to ``owntracks/{user}/{device}`` (``_type: location``, ``lwt``) and
``owntracks/{user}/{device}/event`` (``_type: transition``); the format is the OwnTracks booklet's
(https://owntracks.org/booklet/tech/json/). The bridge maps, for one mapped wearbus user and phone id:

==========================================  ===========================================================
OwnTracks                                   wearbus
==========================================  ===========================================================
location ``lat``, ``lon``                   ``phone.location`` ``lat``, ``lon`` (``evt/sensor/location``)
location ``acc`` (m)                        ``accuracy_m``
location ``vel`` (km/h)                     ``speed_mps`` (/ 3.6)
location ``cog`` (degrees)                  ``bearing_deg``
location ``inregions`` (first)              ``place``
location ``batt`` (%), ``bs`` (2 charging)  ``phone.battery`` ``level_pct``, ``charging`` (``evt/system/battery``)
transition ``event: enter``, ``desc``       ``phone.location`` with ``place`` = ``desc`` (at the transition's or the
                                            last known point)
transition ``event: leave``                 ``phone.location`` with no ``place``
``tst`` (s, the fix's time)                 ``src_ts`` (ms): the sample time; ``ts`` is when the bridge published it
``lwt``, ``waypoint``, ``card``, ...         nothing (the app lost its broker, or no context meaning)
==========================================  ===========================================================

A payload may also be a JSON list of such messages (a batch, as OwnTracks' HTTP mode and its recorder export them);
late fixes keep their own ``tst``. A repeated fix (the retained location on every reconnect) is sent once.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from broker.client import Bus, BusOptions
from devices.sdk import Device, DeviceConfig
from schemas.errors import DecodeError, ValidationFailed
from schemas.events import Body, Location, PhoneBattery
from schemas.topics import Kind

KMH_TO_MPS = 1 / 3.6
#: Battery status ``bs``: 0 unknown, 1 unplugged, 2 charging, 3 full.
CHARGING = 2
_SEEN = 256  # fixes remembered to send a repeated one once


@dataclass(frozen=True, slots=True)
class Sample:
    """One wearbus event from OwnTracks, with its sample time (ms)."""

    body: Body
    src_ts: int


def _number(msg: dict[str, Any], key: str, *, required: bool = False) -> float | None:
    value = msg.get(key)
    if value is None:
        if required:
            raise ValidationFailed(f"OwnTracks {msg.get('_type')} without {key!r}", field=key)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationFailed(f"OwnTracks {key!r} is not a number: {value!r}", field=key)
    try:
        return float(value)
    except ValueError as exc:
        raise ValidationFailed(f"OwnTracks {key!r} is not a number: {value!r}", field=key) from exc


def _required(msg: dict[str, Any], key: str) -> float:
    value = _number(msg, key, required=True)
    if value is None:  # _number raised already; for the type checker
        raise ValidationFailed(f"OwnTracks {msg.get('_type')} without {key!r}", field=key)
    return value


class Translator:
    """OwnTracks messages to wearbus events (pure; remembers the last point for transitions without one)."""

    def __init__(self) -> None:
        self.last_point: tuple[float, float, float] | None = None  # lat, lon, accuracy
        self._seen: deque[tuple[object, ...]] = deque(maxlen=_SEEN)

    def payload(self, raw: bytes) -> list[Sample]:
        """One MQTT payload (a message, or a list of them) to events, oldest fix first.

        Raises:
            DecodeError: not JSON, or not an object / list of objects.
            ValidationFailed: a message of a known type with a missing or bad field.
        """
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise DecodeError(f"OwnTracks payload is not JSON ({exc})") from exc
        messages = doc if isinstance(doc, list) else [doc]
        if not all(isinstance(m, dict) for m in messages):
            raise DecodeError("an OwnTracks payload is a JSON object or a list of them")
        ordered = sorted(messages, key=lambda m: m.get("tst") if isinstance(m.get("tst"), int | float) else 0)
        out: list[Sample] = []
        for message in ordered:
            out.extend(self.message(message))
        return out

    def message(self, msg: dict[str, Any]) -> list[Sample]:
        """One OwnTracks message to events (none for types without a wearbus meaning)."""
        kind = msg.get("_type")
        if kind == "location":
            return self._location(msg)
        if kind == "transition":
            return self._transition(msg)
        return []  # lwt, card, waypoint(s), status, cmd ...: nothing for the phone's context

    def _fresh(self, key: tuple[object, ...]) -> bool:
        if key in self._seen:
            return False
        self._seen.append(key)
        return True

    def _tst_ms(self, msg: dict[str, Any]) -> int:
        tst = _required(msg, "tst")
        if not 0 < tst < 1e11:
            raise ValidationFailed(f"OwnTracks tst {tst!r} is not UNIX seconds", field="tst")
        return int(tst * 1000)

    def _location(self, msg: dict[str, Any]) -> list[Sample]:
        lat, lon = _required(msg, "lat"), _required(msg, "lon")
        src = self._tst_ms(msg)
        if not self._fresh(("location", src, lat, lon)):
            return []
        acc = _number(msg, "acc")
        vel = _number(msg, "vel")
        cog = _number(msg, "cog")
        regions = msg.get("inregions")
        place = regions[0] if isinstance(regions, list) and regions and isinstance(regions[0], str) else None
        try:
            location = Location(
                lat=lat, lon=lon, accuracy_m=acc if acc is not None else 10.0,
                speed_mps=round(max(0.0, vel) * KMH_TO_MPS, 3) if vel is not None else 0.0,
                bearing_deg=cog % 360 if cog is not None else 0.0, place=place[:64] if place else None,
            )  # fmt: skip
        except ValueError as exc:
            raise ValidationFailed(f"OwnTracks location out of range: {exc}") from exc
        self.last_point = (lat, lon, location.accuracy_m)
        out = [Sample(location, src)]
        batt = _number(msg, "batt")
        if batt is not None and 0 <= batt <= 100:
            out.append(Sample(PhoneBattery(level_pct=batt, charging=msg.get("bs") == CHARGING), src))
        return out

    def _transition(self, msg: dict[str, Any]) -> list[Sample]:
        event = msg.get("event")
        if event not in {"enter", "leave"}:
            raise ValidationFailed(f"OwnTracks transition event {event!r} is not enter or leave", field="event")
        src = self._tst_ms(msg)
        lat, lon, acc = _number(msg, "lat"), _number(msg, "lon"), _number(msg, "acc")
        if lat is None or lon is None:
            if self.last_point is None:
                raise ValidationFailed("OwnTracks transition without lat/lon before any location", field="lat")
            lat, lon, last_acc = self.last_point
            acc = acc if acc is not None else last_acc
        desc = msg.get("desc")
        place = desc[:64] if event == "enter" and isinstance(desc, str) and desc else None
        if not self._fresh(("transition", src, event, place)):
            return []
        try:
            body = Location(lat=lat, lon=lon, accuracy_m=acc if acc is not None else 10.0, place=place)
        except ValueError as exc:
            raise ValidationFailed(f"OwnTracks transition out of range: {exc}") from exc
        return [Sample(body, src)]


class OwnTracksPhone(Device):
    """The wearbus side of an OwnTracks phone: location and battery events, no actions (OwnTracks takes none)."""

    kind: ClassVar[Kind] = Kind.PHONE

    @property
    def capabilities(self) -> list[str]:
        """Nothing: the OwnTracks app does not take wearbus actions (the agent uses the user's other devices)."""
        return []

    def publish(self, samples: Iterable[Sample]) -> int:
        """Emit the samples with their own sample times; how many."""
        n = 0
        for sample in samples:
            self.emit(sample.body, src_ts=sample.src_ts)
            n += 1
        return n


class _Foreign(Bus):
    """A bus connection to the OwnTracks topics: hands each payload over as bytes (they are not wearbus envelopes).

    Takes over :meth:`Bus._deliver`, the hook its docstring names for subclasses.
    """

    def __init__(self, options: BusOptions) -> None:
        super().__init__(options)
        self.received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=10_000)

    def _deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        if self.received.full():
            self.received.get_nowait()  # the oldest goes: a phone flushing months of fixes must not grow us
        self.received.put_nowait((topic, bytes(payload)))


async def run_bridge(
    phone: OwnTracksPhone, owntracks_url: str, topic: str, *, translator: Translator | None = None
) -> None:
    """Bridge ``topic`` (``owntracks/{user}/{device}``, and its ``/event``) to ``phone`` until cancelled.

    A payload that does not translate is logged with the reason and skipped; the bridge keeps running.
    """
    translate = translator or Translator()
    options = BusOptions(url=owntracks_url, name=f"owntracks[{topic}]", connect_timeout_s=30, persistent=False)
    async with _Foreign(options) as foreign:
        await foreign.subscribe(topic, 1)
        await foreign.subscribe(f"{topic}/event", 1)
        while True:
            source, payload = await foreign.received.get()
            try:
                sent = phone.publish(translate.payload(payload))
            except (DecodeError, ValidationFailed) as exc:
                phone.log.warning("owntracks_refused", topic=source, error=str(exc))
                continue
            if sent:
                phone.log.debug("owntracks_bridged", topic=source, events=sent)


async def serve(
    user: str, device: str, topic: str, *, wearbus_url: str, owntracks_url: str, password: str | None = None
) -> None:
    """The bridge process: the wearbus phone ``user/phone/device`` fed by the OwnTracks ``topic``."""
    config = DeviceConfig(url=wearbus_url, password=password, firmware="owntracks-bridge 0.1", model="owntracks")
    async with OwnTracksPhone(user, device, config) as phone:
        bridge = asyncio.create_task(run_bridge(phone, owntracks_url, topic), name="owntracks.bridge")
        device_task = asyncio.create_task(phone.run_forever(), name="owntracks.device")
        try:
            done, _ = await asyncio.wait({bridge, device_task}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (bridge, device_task):
                task.cancel()
            await asyncio.gather(bridge, device_task, return_exceptions=True)
