"""The OwnTracks bridge (issue 21, item 5a): payloads written as the OwnTracks booklet documents them
(https://owntracks.org/booklet/tech/json/), published by `mosquitto_pub` to a real broker, reach the bus as the
mapped phone's events with the fix's own time; the bridge runs as its own process (`wearbus bridge owntracks`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from typing import Any

import pytest

from broker.client import Bus, BusOptions
from broker.testkit.mosquitto import MosquittoProcess
from devices.bridges.owntracks import Translator
from schemas.actions import DeviceState
from schemas.errors import DecodeError, ValidationFailed
from schemas.events import Location, PhoneBattery
from tests.conftest import require_mosquitto

NOW_S = int(time.time())
# _type=location as the booklet lists its elements (an hour-old fix: a phone that was offline sends it late)
LOCATION: dict[str, Any] = {
    "_type": "location", "acc": 12, "alt": 40, "batt": 81, "bs": 2, "cog": 450, "lat": 30.259, "lon": 120.1635,
    "t": "u", "tid": "jp", "tst": NOW_S - 3600, "vac": 3, "vel": 18, "conn": "w", "inregions": ["湖滨面馆"],
    "created_at": NOW_S - 3590,
}  # fmt: skip
# _type=transition exactly as the booklet's "Regions (Waypoints)" page shows it, with a recent tst
TRANSITION: dict[str, Any] = {
    "_type": "transition", "desc": "My favorite coffee shop (Delaville)", "event": "enter", "lat": 48.87069,
    "lon": 2.34916, "rid": "f7676c", "tid": "j1", "tst": NOW_S - 60, "wtst": 1610104395,
}  # fmt: skip
LWT = {"_type": "lwt", "tst": NOW_S - 7200}


def test_location_maps_every_documented_field() -> None:
    samples = Translator().payload(json.dumps(LOCATION).encode())
    location, battery = (s.body for s in samples)
    assert isinstance(location, Location)
    assert (location.lat, location.lon, location.accuracy_m) == (30.259, 120.1635, 12)
    assert location.speed_mps == pytest.approx(5.0)  # 18 km/h
    assert location.bearing_deg == 90  # 450 degrees
    assert location.place == "湖滨面馆"
    assert isinstance(battery, PhoneBattery)
    assert (battery.level_pct, battery.charging) == (81, True)
    assert {s.src_ts for s in samples} == {LOCATION["tst"] * 1000}


def test_transitions_batches_repeats_and_bad_payloads() -> None:
    translate = Translator()
    leave = {**TRANSITION, "event": "leave", "tst": NOW_S - 30}
    del leave["lat"], leave["lon"]  # optional in the booklet: the last known point is used
    batch = [leave, TRANSITION, LOCATION, LWT]  # out of order: sorted by tst
    samples = translate.payload(json.dumps(batch).encode())
    places = [(s.src_ts // 1000, getattr(s.body, "place", "-")) for s in samples]
    assert places == [
        (LOCATION["tst"], "湖滨面馆"), (LOCATION["tst"], "-"), (TRANSITION["tst"], TRANSITION["desc"]),
        (leave["tst"], None),
    ]  # fmt: skip
    assert translate.payload(json.dumps(LOCATION).encode()) == []  # the retained fix again: sent once
    for bad, error in [
        (b"not json", DecodeError),
        (b"[1, 2]", DecodeError),
        (json.dumps({"_type": "location", "lat": 1.0, "tst": NOW_S}).encode(), ValidationFailed),
        (json.dumps({**LOCATION, "lat": 123.0, "tst": NOW_S}).encode(), ValidationFailed),
        (json.dumps({**TRANSITION, "event": "dance"}).encode(), ValidationFailed),
        (json.dumps({**LOCATION, "tst": "yesterday"}).encode(), ValidationFailed),
    ]:
        with pytest.raises(error):
            translate.payload(bad)


@pytest.mark.broker
@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto clients not installed")
async def test_the_bridge_process_publishes_the_phones_events_with_the_fixes_times() -> None:
    require_mosquitto()
    async with MosquittoProcess() as broker:
        port = broker.url.rsplit(":", 1)[1]
        async with Bus(BusOptions(url=broker.url, name="watch")) as bus:
            await bus.subscribe("wb/v1/alice/phone/jane-phone/#", 1)
            bridge = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "broker.cli", "bridge", "owntracks", "--topic", "owntracks/jane/pixel",
                "--user", "alice", "--id", "jane-phone", "--broker", broker.url,
            )  # fmt: skip
            try:
                birth = await next_of(bus, DeviceState)
                assert birth.online
                assert birth.capabilities == []  # OwnTracks takes no actions: the agent routes around it
                await asyncio.sleep(1)  # the bridge subscribes right after its birth
                for topic, payload in [
                    ("owntracks/jane/pixel", b"{broken"),  # refused with a log line; the bridge carries on
                    ("owntracks/jane/pixel", json.dumps(LOCATION).encode()),
                    ("owntracks/jane/pixel/event", json.dumps(TRANSITION).encode()),
                ]:
                    pub = await asyncio.create_subprocess_exec(
                        "mosquitto_pub", "-p", port, "-q", "1", "-t", topic, "-m", payload.decode()
                    )
                    assert await pub.wait() == 0
                location = await next_message(bus, "evt/sensor/location")
                assert location.envelope.src_ts == LOCATION["tst"] * 1000
                assert location.envelope.ts >= NOW_S * 1000  # published now, sampled an hour ago
                assert location.data.place == "湖滨面馆"
                battery = await next_message(bus, "evt/system/battery")
                assert battery.data.level_pct == 81
                region = await next_message(bus, "evt/sensor/location")
                assert region.data.place == TRANSITION["desc"]
                assert region.envelope.src_ts == TRANSITION["tst"] * 1000
            finally:
                bridge.terminate()
                await bridge.wait()


async def next_message(bus: Bus, suffix: str, within: float = 30) -> Any:
    async with asyncio.timeout(within):
        async for message in bus.messages():
            if message.topic.endswith(suffix):
                return message
    raise AssertionError(f"no {suffix}")


async def next_of(bus: Bus, model: type[DeviceState], within: float = 30) -> DeviceState:
    async with asyncio.timeout(within):
        async for message in bus.messages():
            if isinstance(message.data, model):
                return message.data
    raise AssertionError("no birth")
