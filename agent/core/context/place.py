"""Where the user is: location cells, learned and named places, the activity label, the calendar."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.config import CoreConfig, Place, UserProfile
from agent.core.context.local_time import HOUR_MS, MAX_ACT, MAX_CELLS, hour_of, in_hours, local, weekday_of
from schemas.geo import haversine_m

if TYPE_CHECKING:
    from agent.core.context.state import UserContext


class Cells:
    """Dwell time per ~100 m cell, in the order the cells were first credited (at most a few).

    One flat array ``lat, lon, night seconds, weekday-daytime seconds`` per cell (32 bytes a cell instead of ~200 for
    a dict of ``"lat,lon"`` keys and lists); exported as that dict, ``{"30.265,120.131": [night, day]}``.
    """

    __slots__ = ("vals",)
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self) -> None:
        self.vals: array[float] = array("d")

    def __len__(self) -> int:
        return len(self.vals) // 4

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cells) and self.vals == other.vals

    def credit(self, key: str, night: float, day: float, keep: int) -> None:
        """Add dwell time to cell ``key`` (created last if new); past ``keep`` cells drop the one with the least."""
        lat, lon = cell_center(key)
        vals = self.vals
        for j in range(0, len(vals), 4):
            if vals[j] == lat and vals[j + 1] == lon:
                break
        else:
            j = len(vals)
            vals.extend((lat, lon, 0.0, 0.0))
        vals[j + 2] += night
        vals[j + 3] += day
        if len(vals) > 4 * keep:
            smallest = min(range(0, len(vals), 4), key=lambda i: vals[i + 2] + vals[i + 3])
            del vals[smallest : smallest + 4]

    def most(self, which: int, skip: int = -1) -> int:
        """The index of the cell with the most night (``which`` 0) or daytime (1) seconds, not ``skip``; -1 if none."""
        best, most = -1, 0.0
        for i in range(len(self)):
            value = self.vals[4 * i + 2 + which]
            if i != skip and (best < 0 or value > most):
                best, most = i, value
        return best

    def seconds(self, i: int, which: int) -> float:
        """Night (``which`` 0) or daytime (1) seconds of cell ``i``."""
        return self.vals[4 * i + 2 + which]

    def center(self, i: int) -> tuple[float, float]:
        """The position of cell ``i``."""
        return self.vals[4 * i], self.vals[4 * i + 1]

    def to_data(self) -> dict[str, tuple[float, float]]:
        """JSON-ready ``{"lat,lon": [night, day]}``, in order."""
        v = self.vals
        return {cell_key(v[j], v[j + 1]): (v[j + 2], v[j + 3]) for j in range(0, len(v), 4)}

    @classmethod
    def from_data(cls, data: dict[str, list[Any]]) -> Cells:
        """Rebuild from :meth:`to_data`."""
        c = cls()
        for key, (night, day) in data.items():
            c.vals.extend((*cell_center(key), float(night), float(day)))
        return c


@dataclass(slots=True)
class Where:
    """Where the user is and what they do, and the places learned from it.

    Attributes:
        lat: latest position (None: unknown).
        lon: latest position.
        loc_ts: when it was taken.
        speed: phone speed, m/s.
        place: the named place the user is at, if any.
        activity: the earphones' latest activity label, since ``activity_ts``.
        act_hist: recent activity changes ``(since, label)``, to know the activity at a sample time.
        cells: dwell time per ~100 m cell: key -> ``[night seconds, weekday-daytime seconds]``.
        cell: the cell of the latest position; ``cell_ts`` when the user got there.
    """

    lat: float | None = None
    lon: float | None = None
    loc_ts: int = 0
    speed: float = 0.0
    place: str | None = None
    activity: str | None = None
    activity_ts: int = 0
    act_hist: list[tuple[int, str]] = field(default_factory=list)
    cells: Cells = field(default_factory=Cells)
    cell: str | None = None
    cell_ts: int = 0


@dataclass(slots=True)
class CalendarEvent:
    """A calendar event the phone announced.

    Attributes:
        title: its title.
        start: its start time.
        location: where, as text.
        lat: where, if the phone knows the position.
        lon: where.
        corr: the event envelope that announced it.
    """

    title: str
    start: int
    location: str | None = None
    lat: float | None = None
    lon: float | None = None
    corr: str = ""


def cell_key(lat: float, lon: float) -> str:
    """A ~100 m cell."""
    return f"{lat:.3f},{lon:.3f}"


def cell_center(key: str) -> tuple[float, float]:
    """The position of a cell."""
    lat, lon = key.split(",")
    return float(lat), float(lon)


def learn_dwell(w: Where, key: str, t: int, cfg: CoreConfig, profile: UserProfile) -> None:
    """Credit the time since the last position to its cell: night hours (home), weekday daytime (office)."""
    if w.cell is not None and t > w.cell_ts:
        a, b = w.cell_ts, min(t, w.cell_ts + 12 * HOUR_MS)
        night = day = 0.0
        while a < b:
            nxt = min(b, (a // HOUR_MS + 1) * HOUR_MS)
            lt = local(a, profile)
            hour = hour_of(lt)
            if in_hours(hour, cfg.night_start_hour, cfg.night_end_hour):
                night += (nxt - a) / 1000
            elif weekday_of(lt) < 5 and 9 <= hour < 18:
                day += (nxt - a) / 1000
            a = nxt
        if night or day:
            w.cells.credit(w.cell, night, day, MAX_CELLS)
    if key != w.cell or t < w.cell_ts:
        w.cell, w.cell_ts = key, t
    else:
        w.cell_ts = t


def learned(w: Where, which: str, cfg: CoreConfig) -> tuple[float, float] | None:
    """The learned home (most night time) or office (most weekday daytime, not home), if trusted."""
    min_s, cells = cfg.learn_min_s, w.cells
    home = cells.most(0)
    if home >= 0 and cells.seconds(home, 0) < min_s:
        home = -1
    if which == "home":
        return cells.center(home) if home >= 0 else None
    office = cells.most(1, skip=home)
    if office < 0 or cells.seconds(office, 1) < min_s:
        return None
    return cells.center(office)


def known_place(ctx: UserContext, which: str, cfg: CoreConfig, profile: UserProfile) -> Place | None:
    """Home or office: learned from history when trusted, else the profile's default."""
    given = profile.home if which == "home" else profile.office
    pos = learned(ctx.where, which, cfg)
    if pos is not None:
        if given is not None and haversine_m(pos[0], pos[1], given.lat, given.lon) <= cfg.place_radius_m:
            return given
        return Place(name=which, lat=pos[0], lon=pos[1])
    return given


def name_place(ctx: UserContext, lat: float, lon: float, cfg: CoreConfig, profile: UserProfile) -> str | None:
    """The known place within reach of a position (home, office or a profile place), if any."""
    best: tuple[float, str] | None = None
    candidates: list[tuple[str, Place | None]] = [
        ("home", known_place(ctx, "home", cfg, profile)),
        ("office", known_place(ctx, "office", cfg, profile)),
        *((p.name, p) for p in profile.places),
    ]
    for name, place in candidates:
        if place is None:
            continue
        d = haversine_m(lat, lon, place.lat, place.lon)
        if d <= cfg.place_radius_m and (best is None or d < best[0]):
            best = (d, name)
    return best[1] if best else None


def find_place(name: str, profile: UserProfile) -> Place | None:
    """A profile place by name (case-insensitive)."""
    low = name.strip().lower()
    for p in profile.places:
        if p.name.lower() == low:
            return p
    return None


def set_activity(w: Where, label: str, t: int) -> None:
    """Record an activity change at sample time ``t``."""
    w.activity, w.activity_ts = label, t
    w.act_hist.append((t, label))
    w.act_hist.sort()
    del w.act_hist[:-MAX_ACT]
