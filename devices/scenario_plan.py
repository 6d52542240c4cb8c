"""The plan of a scenario: what the person does and where they are at any offset (from its person-wide steps)."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from devices.models import PLACES, Activity, Route, TravelMode, haversine_m
from devices.scenario_spec import PLACE_RADIUS_M, Scenario
from schemas.geo import Place

# --------------------------------------------------------------------------- the plan: activity and position over time


MOTION: Mapping[Activity, str] = {
    Activity.RESTING: "stationary",
    Activity.SITTING: "stationary",
    Activity.SLEEPING: "stationary",
    Activity.WALKING: "walking",
    Activity.RUNNING: "running",
}
# mode -> (travel mode, speed override, activity on the way, earphones' motion label)
_MODES: Mapping[str, tuple[TravelMode, float | None, Activity, str]] = {
    "walk": (TravelMode.WALK, None, Activity.WALKING, "walking"),
    "run": (TravelMode.WALK, 2.8, Activity.RUNNING, "running"),
    "bike": (TravelMode.BIKE, None, Activity.WALKING, "cycling"),
    "drive": (TravelMode.DRIVE, None, Activity.SITTING, "automotive"),
}


@dataclass(frozen=True, slots=True)
class Change:
    """The person starts doing something at an offset.

    Attributes:
        at_ms: offset from the start.
        activity: what the physiology model does.
        motion: the earphones' activity label (stationary, walking, running, cycling, automotive).
    """

    at_ms: int
    activity: Activity
    motion: str


@dataclass(frozen=True, slots=True)
class Leg:
    """One trip of the person (times are offsets from the start).

    Attributes:
        step: the ``go`` step's number.
        route: the path, starting at the step's offset.
        until_ms: when the trip ends: arrival, or the start of the next trip that cut it short.
        navigate: whether the phone navigates (1 Hz fixes).
        destination: where to, as named in the step.
    """

    step: int
    route: Route
    until_ms: int
    navigate: bool
    destination: str


@dataclass(frozen=True, slots=True)
class Fix:
    """Where the person is at an offset.

    Attributes:
        lat: latitude.
        lon: longitude.
        speed_mps: ground speed.
        bearing_deg: direction of travel.
        navigating: on a trip with navigation on.
        place: the known place the person is at (standing still within 150 m), if any.
    """

    lat: float
    lon: float
    speed_mps: float
    bearing_deg: float
    navigating: bool
    place: str | None


class Plan:
    """The person over time, derived from the scenario's ``activity`` and ``go`` steps (pure, offsets in ms)."""

    def __init__(self, start: Place, changes: Sequence[Change], legs: Sequence[Leg], known: Sequence[Place]) -> None:
        self.start = start
        self.changes = tuple(changes)
        self.legs = tuple(legs)
        self.known = tuple(known)
        self._times = [c.at_ms for c in self.changes]
        self._leg_times = [leg.route.start_ms for leg in self.legs]

    @classmethod
    def idle(cls, activity: Activity = Activity.RESTING, place: Place | None = None) -> Plan:
        """A person who stays put doing ``activity`` (for a device run without a scenario)."""
        home = PLACES["home"]
        start = place or Place(name="home", lat=home.lat, lon=home.lon)
        return cls(start, [Change(0, activity, MOTION[activity])], [], [start])

    @classmethod
    def of(cls, scenario: Scenario) -> Plan:
        """Build the plan of a (validated) scenario.

        Raises:
            ConfigError: a place cannot be resolved.
        """
        start = scenario.resolve(scenario.person.place)
        changes = [Change(0, scenario.person.activity, MOTION[scenario.person.activity])]
        legs: list[Leg] = []
        arrival: Change | None = None
        here = (start.lat, start.lon)
        for number, step in enumerate(scenario.steps, 1):
            if step.activity is not None:
                changes.append(Change(step.at, step.activity, MOTION[step.activity]))
            if step.go is None:
                continue
            if legs and legs[-1].until_ms > step.at:  # a new trip cuts the current one short, where it is now
                cut = legs[-1]
                legs[-1] = Leg(cut.step, cut.route, step.at, cut.navigate, cut.destination)
                changes = [c for c in changes if c is not arrival]
            if legs:
                pos = legs[-1].route.position(min(step.at, legs[-1].until_ms))
                here = (pos.lat, pos.lon)
            go = step.go
            dest = scenario.resolve(go.to)
            points = [here, *((p.lat, p.lon) for p in map(scenario.resolve, go.via)), (dest.lat, dest.lon)]
            travel, speed, activity, motion = _MODES[go.mode]
            if haversine_m(*points[0], *points[-1]) < 1.0 and len(points) == 2:
                points[-1] = (points[-1][0] + 1e-5, points[-1][1])  # already there: a token step keeps Route valid
            route = Route(points, travel, start_ms=step.at, speed_mps=speed)
            legs.append(Leg(number, route, route.end_ms, go.navigate, dest.name))
            changes.append(Change(step.at, activity, motion))
            arrival = Change(route.end_ms, go.then, MOTION[go.then])
            changes.append(arrival)
            here = (dest.lat, dest.lon)
        changes.sort(key=lambda c: c.at_ms)  # stable: same-time changes keep their order
        known = list({id(p): p for p in scenario.places().values()}.values())
        return cls(start, changes, legs, known)

    def change_at(self, offset_ms: int) -> Change:
        """The latest change at or before ``offset_ms``."""
        i = bisect.bisect_right(self._times, offset_ms) - 1
        return self.changes[max(0, i)]

    def activity_at(self, offset_ms: int) -> Activity:
        """What the physiology model does at ``offset_ms``."""
        return self.change_at(offset_ms).activity

    def motion_at(self, offset_ms: int) -> str:
        """The earphones' activity label at ``offset_ms``."""
        return self.change_at(offset_ms).motion

    def leg_at(self, offset_ms: int) -> Leg | None:
        """The latest trip started at or before ``offset_ms`` (it may be over)."""
        i = bisect.bisect_right(self._leg_times, offset_ms) - 1
        return self.legs[i] if i >= 0 else None

    def position_at(self, offset_ms: int) -> Fix:
        """Where the person is at ``offset_ms``."""
        leg = self.leg_at(offset_ms)
        if leg is None:
            lat, lon, speed, bearing, nav = self.start.lat, self.start.lon, 0.0, 0.0, False
        else:
            t = min(offset_ms, leg.until_ms)
            pos = leg.route.position(t)
            moving = offset_ms < leg.until_ms
            lat, lon, bearing = pos.lat, pos.lon, pos.bearing_deg
            speed = pos.speed_mps if moving else 0.0
            nav = leg.navigate and moving
        place = None
        if speed == 0.0:
            near = [(haversine_m(lat, lon, p.lat, p.lon), p.name) for p in self.known]
            best = min(near, default=None)
            if best is not None and best[0] <= PLACE_RADIUS_M:
                place = best[1]
        return Fix(lat, lon, speed, bearing % 360.0, nav, place)
