"""OwnTracks JSON -> wearbus phone events (pure): payloads written as https://owntracks.org/booklet/tech/json/
documents them, queued batches, and garbage refused with a reason."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.bridges.owntracks import OwnTracksError, PhoneMap, translate
from schemas.errors import ConfigError
from schemas.events import Location, PhoneBattery

# The booklet's location example (Android), as the app publishes it to owntracks/jane/pixel.
LOCATION = {
    "_type": "location",
    "acc": 13,
    "alt": 158,
    "batt": 74,
    "bs": 2,
    "conn": "w",
    "created_at": 1700000130,
    "cog": 270,
    "lat": 30.2741,
    "lon": 120.1551,
    "m": 1,
    "SSID": "home-wifi",
    "BSSID": "b0:be:76:aa:bb:cc",
    "t": "u",
    "tid": "jp",
    "tst": 1700000100,
    "vac": 4,
    "vel": 18,
    "inregions": ["Office"],
    "inrids": ["a1b2c3"],
}
TRANSITION = {
    "_type": "transition",
    "wtst": 1699990000,
    "lat": 30.2590,
    "lon": 120.1300,
    "tst": 1700000200,
    "acc": 30,
    "tid": "jp",
    "event": "enter",
    "desc": "West Lake",
    "t": "c",
    "rid": "f00d",
}


def one(payload: object) -> list[tuple[object, int]]:
    (part,) = translate(json.dumps(payload).encode())
    return list(part.events)


def test_location_maps_every_field_it_can_and_keeps_tst() -> None:
    events = one(LOCATION)
    (loc, loc_ts), (batt, batt_ts) = events
    assert loc == Location(
        lat=30.2741, lon=120.1551, accuracy_m=13, speed_mps=5.0, bearing_deg=270, provider="fused", place="Office"
    )
    assert batt == PhoneBattery(level_pct=74, charging=True)
    assert loc_ts == batt_ts == 1_700_000_100_000


def test_minimal_location_and_battery_states() -> None:
    ((loc, ts),) = one({"_type": "location", "lat": -33.9, "lon": 18.4, "tst": 1})
    assert isinstance(loc, Location)
    assert (loc.accuracy_m, loc.speed_mps, loc.place, ts) == (10.0, 0.0, None, 1000)
    for bs, charging in ((0, False), (1, False), (2, True), (3, False)):
        events = one({"_type": "location", "lat": 0, "lon": 0, "tst": 5, "batt": 50, "bs": bs})
        assert events[1][0] == PhoneBattery(level_pct=50, charging=charging)


def test_transition_enter_names_the_place_and_leave_clears_it() -> None:
    ((loc, ts),) = one(TRANSITION)
    assert loc == Location(lat=30.259, lon=120.13, accuracy_m=30, place="West Lake")
    assert ts == 1_700_000_200_000
    ((left, _),) = one({**TRANSITION, "event": "leave"})
    assert isinstance(left, Location)
    assert left.place is None


def test_a_queued_batch_keeps_each_sample_time() -> None:
    late = [{**LOCATION, "tst": 1700000000 + 60 * i, "t": "p"} for i in range(3)]
    parts = translate(json.dumps(late).encode())
    assert [p.events[0][1] for p in parts] == [1_700_000_000_000, 1_700_000_060_000, 1_700_000_120_000]


@pytest.mark.parametrize(
    "payload",
    [
        {"_type": "lwt", "tst": 1700000000},
        {"_type": "cmd", "action": "reportLocation"},
        {"_type": "waypoint", "desc": "Home", "lat": 1, "lon": 2, "rad": 50, "tst": 1},
        {"_type": "card", "name": "Jane"},
        {"_type": "status", "android": {}},
    ],
)
def test_other_types_are_ignored_not_refused(payload: dict[str, object]) -> None:
    (part,) = translate(json.dumps(payload).encode())
    assert part.events == []
    assert part.kind == payload["_type"]
    assert part.note


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\x00\xff garbage", "not JSON"),
        (b"[1, 2]", "item [0]"),
        (b'"location"', "JSON object"),
        (b'{"lat": 1, "lon": 2, "tst": 3}', "_type"),
        (b'{"_type": "location", "lat": 1, "lon": 2}', "'tst'"),
        (b'{"_type": "location", "lat": "north", "lon": 2, "tst": 3}', "'lat'"),
        (b'{"_type": "location", "lat": 91, "lon": 2, "tst": 3}', "lat"),
        (b'{"_type": "location", "lat": 1, "lon": 2, "tst": 3, "batt": 140}', "level_pct"),
        (b'{"_type": "location", "lat": 1, "lon": 2, "tst": 1e15}', "Unix time"),
        (b'{"_type": "location", "lat": NaN, "lon": 2, "tst": 3}', "'lat'"),
        (b'{"_type": "transition", "lat": 1, "lon": 2, "tst": 3, "event": "dance"}', "'enter' or 'leave'"),
        (b'{"_type": "teleport"}', "unknown _type"),
        (b"[" * 100_000 + b"]" * 100_000, "not usable JSON"),
        (b'{"_type": "location", "lat": 1' + b"0" * 400 + b', "lon": 2, "tst": 3}', "'lat'"),
        (b'{"_type": "location", "lat": 1, "lon": 2, "tst": 3, "acc": 1e999}', "'acc'"),
    ],
)
def test_garbage_is_refused_with_the_reason(raw: bytes, words: str) -> None:
    with pytest.raises(OwnTracksError, match=None) as info:
        translate(raw)
    assert words in str(info.value)


@given(st.binary(max_size=200))
def test_any_bytes_give_events_or_an_owntracks_error(raw: bytes) -> None:
    with contextlib.suppress(OwnTracksError):
        translate(raw)


def test_maps() -> None:
    m = PhoneMap.parse("jane/pixel=alice")
    assert (m.ot_user, m.ot_device, m.user, m.device) == ("jane", "pixel", "alice", "owntracks")
    assert m.filters == ["owntracks/jane/pixel", "owntracks/jane/pixel/event"]
    w = PhoneMap.parse("jane/+=alice/phone-2")
    assert w.matches("jane", "ipad")
    assert not w.matches("joe", "ipad")
    assert w.device == "phone-2"
    for bad in ("jane=alice", "jane/pixel", "jane/pixel=Alice!", "ja#ne/pixel=alice", "jane/px+=alice", "a/b=c/d/e"):
        with pytest.raises(ConfigError, match="--map"):
            PhoneMap.parse(bad)
