"""The situation fused from every domain: current events, quiet, moving, the activity label, travel time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.core.config import CoreConfig, UserProfile
from agent.core.context.health import asleep, steps_at
from agent.core.context.local_time import MAX_EVENTS, MIN_MS, MOVING, hour_of, in_hours, local
from schemas.geo import haversine_m

if TYPE_CHECKING:
    from agent.core.context.place import CalendarEvent
    from agent.core.context.state import UserContext


def current_events(ctx: UserContext, now: int, cfg: CoreConfig) -> list[CalendarEvent]:
    """Calendar events going on now."""
    return [e for e in ctx.events if e.start <= now < e.start + cfg.event_default_s * 1000]


def add_event(ctx: UserContext, ev: CalendarEvent, now: int, cfg: CoreConfig) -> None:
    """Remember a calendar event (replacing one with the same title and start); forget finished ones."""
    keep = [
        e
        for e in ctx.events
        if e.start + cfg.event_default_s * 1000 > now and (e.title, e.start) != (ev.title, ev.start)
    ]
    keep.append(ev)
    keep.sort(key=lambda e: e.start)
    ctx.events = keep[-MAX_EVENTS:]


def quiet(ctx: UserContext, now: int, cfg: CoreConfig, profile: UserProfile) -> bool:
    """A quiet setting: a meeting, library or cinema, late night, or the user asleep."""
    if in_hours(hour_of(local(now, profile)), cfg.quiet_start_hour, cfg.quiet_end_hour):
        return True
    if asleep(ctx, now, cfg):
        return True
    words = cfg.quiet_keywords
    for e in current_events(ctx, now, cfg):
        text = f"{e.title} {e.location or ''}".lower()
        if any(k in text for k in words):
            return True
    place = (ctx.where.place or "").lower()
    return any(map(place.__contains__, words))


def moving(ctx: UserContext, now: int, cfg: CoreConfig) -> bool:
    """Whether the user is moving now (earphones activity, or phone speed in the last two minutes)."""
    w = ctx.where
    if w.activity in MOVING:
        return True
    return now - w.loc_ts <= 2 * MIN_MS and w.speed >= cfg.moving_speed_mps


def activity_label(ctx: UserContext, now: int, cfg: CoreConfig) -> str:
    """One word for what the user does now."""
    if asleep(ctx, now, cfg):
        return "sleeping"
    w = ctx.where
    recent_speed = now - w.loc_ts <= 2 * MIN_MS
    if w.activity == "automotive" or (recent_speed and w.speed >= 7.0):
        return "driving"
    if w.activity in MOVING:
        return str(w.activity)
    if recent_speed and w.speed >= cfg.moving_speed_mps:
        return "walking"
    steps, secs = steps_at(ctx.health, now, 15 * MIN_MS)
    if secs and steps > cfg.rest_steps_per_bucket * max(1.0, secs / 900):
        return "walking"  # the ring counted steps in the last quarter hour
    if w.activity == "stationary":
        return "stationary"
    return "unknown"


def travel_s(ctx: UserContext, ev: CalendarEvent, cfg: CoreConfig) -> int:
    """Estimated travel time to an event (a default when either end has no position)."""
    w = ctx.where
    if ev.lat is None or ev.lon is None or w.lat is None or w.lon is None:
        return cfg.default_travel_s
    return int(haversine_m(w.lat, w.lon, ev.lat, ev.lon) / cfg.travel_speed_mps) + 120
