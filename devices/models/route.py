"""Where the person is: named places in Hangzhou, movement along a route, and when to publish a fix."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from schemas.errors import ConfigError
from schemas.geo import Place, haversine_m

__all__ = [
    "PLACES",
    "SPEED_MPS",
    "LocationGate",
    "Place",
    "Position",
    "Route",
    "TravelMode",
    "bearing_deg",
    "haversine_m",
]


# Approximate WGS-84 positions (not GCJ-02: a China map SDK would show these ~500 m off). Good enough for a
# plausible day: home near Huanglong, office at Xixi, the East railway station, a restaurant by the lake.
PLACES: Mapping[str, Place] = MappingProxyType(
    {
        "home": Place(name="home", lat=30.2745, lon=120.1390, label="黄龙 家"),
        "office": Place(name="office", lat=30.2790, lon=120.0265, label="西溪园区"),
        "station": Place(name="station", lat=30.2905, lon=120.2125, label="杭州东站"),
        "restaurant": Place(name="restaurant", lat=30.2590, lon=120.1635, label="湖滨 面馆"),
        "subway": Place(name="subway", lat=30.2575, lon=120.1655, label="龙翔桥站"),
        "gym": Place(name="gym", lat=30.2800, lon=120.1460, label="健身房"),
    }
)


class TravelMode(StrEnum):
    """How the person moves along a route."""

    WALK = "walk"
    BIKE = "bike"
    DRIVE = "drive"


SPEED_MPS: Mapping[TravelMode, float] = MappingProxyType(
    {TravelMode.WALK: 1.4, TravelMode.BIKE: 4.0, TravelMode.DRIVE: 10.0}
)


@dataclass(frozen=True, slots=True)
class Position:
    """One location fix.

    Attributes:
        lat: latitude, degrees WGS-84.
        lon: longitude, degrees WGS-84.
        speed_mps: ground speed, m/s (0 before the start and after arrival).
        bearing_deg: direction of travel, degrees clockwise from north, in [0, 360).
    """

    lat: float
    lon: float
    speed_mps: float
    bearing_deg: float


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from the first point to the second, degrees clockwise from north in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def _as_point(p: Place | tuple[float, float]) -> tuple[float, float]:
    if isinstance(p, Place):
        return (p.lat, p.lon)
    lat, lon = p
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ConfigError(f"not a WGS-84 point: {p!r}")
    return (float(lat), float(lon))


class Route:
    """Constant-speed movement along a polyline, started at a given time.

    Within a segment the position is interpolated linearly in latitude/longitude; over city-scale
    segments (a few km) that stays within centimetres of the great circle.

    Args:
        points: two or more places or ``(lat, lon)`` pairs.
        mode: travel mode; sets the speed unless ``speed_mps`` is given.
        start_ms: when the person leaves the first point, ms since the epoch.
        speed_mps: override the mode's speed.
    """

    def __init__(
        self,
        points: Sequence[Place | tuple[float, float]],
        mode: TravelMode = TravelMode.WALK,
        *,
        start_ms: int = 0,
        speed_mps: float | None = None,
    ) -> None:
        if len(points) < 2:
            raise ConfigError("a route needs at least two points")
        speed = SPEED_MPS[mode] if speed_mps is None else speed_mps
        if not speed > 0:
            raise ConfigError(f"speed must be positive, got {speed}")
        self.points: tuple[tuple[float, float], ...] = tuple(_as_point(p) for p in points)
        self.mode = mode
        self.speed_mps = float(speed)
        self.start_ms = start_ms
        self._seg_m = tuple(haversine_m(*a, *b) for a, b in zip(self.points, self.points[1:], strict=False))
        self.distance_m: float = sum(self._seg_m)

    @property
    def duration_ms(self) -> int:
        """Time from the first point to the last, ms."""
        return math.ceil(self.distance_m / self.speed_mps * 1000)

    @property
    def end_ms(self) -> int:
        """Arrival time, ms since the epoch."""
        return self.start_ms + self.duration_ms

    def travelled_m(self, now_ms: int) -> float:
        """Distance covered by ``now_ms``, clamped to [0, distance_m]."""
        elapsed_s = max(0, now_ms - self.start_ms) / 1000
        return min(self.distance_m, elapsed_s * self.speed_mps)

    def remaining_m(self, now_ms: int) -> float:
        """Distance still to go at ``now_ms``."""
        return self.distance_m - self.travelled_m(now_ms)

    def eta_s(self, now_ms: int) -> int:
        """Seconds until arrival (0 once arrived)."""
        return math.ceil(self.remaining_m(now_ms) / self.speed_mps)

    def arrived(self, now_ms: int) -> bool:
        """Whether the last point has been reached."""
        return now_ms >= self.end_ms

    def position(self, now_ms: int) -> Position:
        """Where the person is at ``now_ms``; stationary at the ends before the start and after arrival."""
        moving = self.start_ms <= now_ms < self.end_ms
        left = self.travelled_m(now_ms)
        for (a, b), seg in zip(zip(self.points, self.points[1:], strict=False), self._seg_m, strict=True):
            if left <= seg and seg > 0:
                f = left / seg
                lat = a[0] + (b[0] - a[0]) * f
                lon = a[1] + (b[1] - a[1]) * f
                return Position(lat, lon, self.speed_mps if moving else 0.0, bearing_deg(*a, *b))
            left -= seg
        # Past the end (or all segments zero-length): stand at the last point, facing along the last leg.
        a, b = self.points[-2], self.points[-1]
        return Position(b[0], b[1], 0.0, bearing_deg(*a, *b))


class LocationGate:
    """Decides when a phone publishes a location fix.

    While navigating, at most one fix per ``nav_interval_ms`` (1 Hz by default). Otherwise only on a
    significant change: the first fix, a move of at least ``min_distance_m`` from the last published
    fix, or ``max_interval_ms`` since it.

    Args:
        min_distance_m: distance that counts as a significant change.
        max_interval_ms: publish at least this often even when standing still.
        nav_interval_ms: the publish period while navigating.
    """

    def __init__(
        self,
        *,
        min_distance_m: float = 50.0,
        max_interval_ms: int = 300_000,
        nav_interval_ms: int = 1_000,
    ) -> None:
        self.min_distance_m = min_distance_m
        self.max_interval_ms = max_interval_ms
        self.nav_interval_ms = nav_interval_ms
        self._last: tuple[float, float, int] | None = None

    def should_publish(self, lat: float, lon: float, now_ms: int, *, navigating: bool) -> bool:
        """Return whether to publish this fix; a ``True`` answer records it as the last published one."""
        last = self._last
        if last is None:
            ok = True
        elif navigating:
            ok = now_ms - last[2] >= self.nav_interval_ms
        else:
            ok = (
                now_ms - last[2] >= self.max_interval_ms
                or haversine_m(last[0], last[1], lat, lon) >= self.min_distance_m
            )
        if ok:
            self._last = (lat, lon, now_ms)
        return ok
