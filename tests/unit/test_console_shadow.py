"""The console shows each device's settings: desired vs reported, the pending delta and rejections."""

from __future__ import annotations

import json
from typing import Any

from console.state import ConsoleState
from schemas import codec
from schemas.actions import DeviceState
from schemas.envelope import make
from schemas.events import Body
from schemas.shadow import GlassesSettings, ShadowDesired, ShadowReported
from schemas.topics import DeviceId, Kind, desired_topic, reported_topic, state_topic

NOW = 1_700_000_000_000
GLASSES = DeviceId("alice", Kind.GLASSES, "s1")


def feed(state: ConsoleState, topic: str, body: Body) -> None:
    state.feed(codec.decode(topic, codec.encode(make(body, ts=NOW)), retain=True), NOW)


def shadow(state: ConsoleState) -> Any:
    view = state.user_view("alice")
    assert view is not None
    devices = view["devices"]
    entry = devices["glasses/s1"] if isinstance(devices, dict) else next(d for d in devices if d["key"] == "glasses/s1")
    return entry["shadow"]


def test_desired_vs_reported_with_the_pending_delta() -> None:
    state = ConsoleState()
    feed(state, state_topic(GLASSES), DeviceState(online=False, kind=Kind.GLASSES, settings=["brightness"]))
    feed(state, desired_topic(GLASSES), ShadowDesired(version=2, settings=GlassesSettings(brightness=0.3)))
    feed(state, reported_topic(GLASSES), ShadowReported(version=1, settings=GlassesSettings(brightness=0.8)))
    sh = shadow(state)
    assert sh["desired"]["version"] == 2
    assert sh["reported"]["version"] == 1
    assert sh["pending"] == {"brightness": 0.3}
    assert sh["online"] is False
    rejected = ShadowReported(
        version=2, settings=GlassesSettings(brightness=0.8), rejected={"brightness": "the display is broken"}
    )
    feed(state, reported_topic(GLASSES), rejected)
    sh = shadow(state)
    assert sh["pending"] == {}
    assert sh["delta"] == {"brightness": 0.3}
    assert sh["rejected"] == {"brightness": "the display is broken"}
    json.dumps(state.snapshot(NOW))  # what the page gets is plain JSON
