"""The agent routes around what a bridged device cannot do, as its birth lists it: no haptic to a Colmi ring; a
birth without a list still gets everything of its kind."""

from __future__ import annotations

from agent.core.engine import AgentCore
from agent.core.testing import Rig, config, of, to
from schemas.actions import Haptic
from schemas.events import CalendarNext
from schemas.topics import Kind

MIN = 60_000


def meeting(r: Rig) -> None:
    r.ready()
    r.send(Kind.PHONE, CalendarNext(title="Team meeting", start_ts=r.now - 5 * MIN))


def test_a_ring_without_a_motor_gets_no_haptic() -> None:
    r = Rig(AgentCore(config()))
    meeting(r)
    assert of(to(r.say("blah blah"), Kind.RING), Haptic)  # a ring that announced nothing: all of its kind
    r.state(Kind.RING, True, capabilities=["ring.measure_now", "ring.sync"])  # the Colmi bridge's birth
    out = r.say("blah blah")
    assert of(to(out, Kind.RING), Haptic) == []
    r.state(Kind.RING, True, capabilities=["ring.haptic", "ring.measure_now", "ring.sync"])
    assert of(to(r.say("blah blah"), Kind.RING), Haptic)
