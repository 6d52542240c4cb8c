"""Proactive rules: wellness nudges judged in sample time, rate limited per metric, dropped when stale."""

from __future__ import annotations

from agent.core import skills
from agent.core.context import (
    BUCKET_MS,
    MAX_SPO2,
    MIN_MS,
    CalendarEvent,
    DeviceInfo,
    HrWindow,
    Output,
    asleep,
    in_sleep,
    moving_at,
    night_close_at,
    online,
    travel_s,
)
from agent.core.routing import Turn
from agent.core.wording import minutes, say
from schemas.actions import MeasureNow
from schemas.geo import haversine_m

MAX_LEAVE_DONE = 4


def fire(
    turn: Turn,
    rule: str,
    *,
    metric: str,
    t: int,
    ttl_s: int,
    text: str,
    icon: str = "heart",
    haptic: str | None = "heartbeat",
    health: bool = True,
) -> bool:
    """Nudge the user once: unless muted, stale (sample older than ``ttl_s``) or rate limited for ``metric``.

    Returns:
        Whether the nudge went out.
    """
    cfg, h = turn.cfg, turn.ctx.health
    if rule in turn.profile.muted_rules or turn.now - t > ttl_s * 1000:
        return False
    last = h.fired.get(metric)
    if last is not None and abs(t - last) < cfg.rate_limit_s * 1000:
        return False
    h.fired[metric] = t
    lang = turn.ctx.talk.lang
    turn.alert(rule, text)
    turn.say(
        Output(
            title=say(f"rule.{rule}.title", lang),
            body=text,
            speech=text,
            lang=lang,
            icon=icon,
            haptic=haptic,
            buttons=[(say("dismiss_button", lang), f"dismiss:{rule}")],
            ttl_s=60,
            reason=f"rule:{rule}",
            health=health,
        )
    )
    return True


# --- vitals


def on_hr(turn: Turn, t: int, bpm: float, source: str, quality: float) -> None:
    """Sustained high heart rate at rest, or sustained low heart rate while awake (10 min, in sample time)."""
    cfg, ctx = turn.cfg, turn.ctx
    if quality < cfg.min_quality:
        return
    keep_from = turn.now - (cfg.stale_ttl_s + cfg.hr_sustain_s) * 1000 - BUCKET_MS
    if t < keep_from:
        return  # too old to alert on, whatever it shows
    resting = source != "workout" and not moving_at(ctx, t, cfg)
    sleeping = source == "sleep" or in_sleep(ctx, t)
    flags = (HrWindow.RESTING if resting else 0) | (HrWindow.ASLEEP if sleeping else 0)
    window = ctx.health.hr_window
    i = window.add(t, bpm, flags, keep_from)
    gap = cfg.hr_max_gap_s * 1000
    lang = ctx.talk.lang
    if bpm > cfg.hr_high_bpm:
        span = window.run(i, cfg.hr_high_bpm, None, gap)
        if span is not None and span[1] - span[0] >= cfg.hr_sustain_s * 1000:
            text = say("rule.hr_high", lang, t=f"{cfg.hr_high_bpm:.0f}")
            fire(turn, "hr_high", metric="hr_high", t=span[1], ttl_s=cfg.stale_ttl_s, text=text)
    elif bpm < cfg.hr_low_bpm:
        span = window.run(i, None, cfg.hr_low_bpm, gap, asleep_ok=cfg.low_hr_while_asleep)
        if span is not None and span[1] - span[0] >= cfg.hr_sustain_s * 1000:
            text = say("rule.hr_low", lang, t=f"{cfg.hr_low_bpm:.0f}")
            fire(turn, "hr_low", metric="hr_low", t=span[1], ttl_s=cfg.stale_ttl_s, text=text)


def on_spo2(turn: Turn, t: int, pct: float, quality: float) -> None:
    """Low SpO2: two valid readings in a row (good signal, not in motion), in sample-time order."""
    cfg, ctx = turn.cfg, turn.ctx
    if quality < cfg.min_quality or moving_at(ctx, t, cfg):
        return
    recent = ctx.health.spo2_recent
    if any(ts == t for ts, _ in recent):
        return
    ordered = sorted([*recent, (t, pct)])[-MAX_SPO2:]
    ctx.health.spo2_recent = ordered
    try:
        i = ordered.index((t, pct))
    except ValueError:
        return  # older than everything kept
    low = cfg.spo2_low_pct
    if pct >= low:
        return
    a = b = i
    while a > 0 and ordered[a - 1][1] < low:
        a -= 1
    while b + 1 < len(ordered) and ordered[b + 1][1] < low:
        b += 1
    if b - a + 1 >= cfg.spo2_consecutive:
        fire(
            turn,
            "spo2_low",
            metric="spo2",
            t=ordered[b][0],
            ttl_s=cfg.stale_ttl_s,
            text=say("rule.spo2_low", ctx.talk.lang),
        )
        return
    h = ctx.health
    fresh = turn.now - t <= 5 * MIN_MS
    if cfg.spo2_recheck and fresh and turn.now - h.spo2_checked >= 10 * MIN_MS and not asleep(ctx, turn.now, cfg):
        ring = online(ctx, "ring")
        if ring is not None:
            h.spo2_checked = turn.now
            turn.send("ring", MeasureNow(kind="spo2", timeout_s=40), "rule:spo2_recheck", dev=ring)


def on_skin_deviation(turn: Turn, t: int, deviation: float) -> None:
    """A night's skin temperature deviation above the threshold."""
    cfg = turn.cfg
    if deviation > cfg.skin_temp_dev_c:
        text = say("rule.skin_temp", turn.ctx.talk.lang)
        fire(turn, "skin_temp", metric="skin_temp", t=t, ttl_s=cfg.stale_ttl_daily_s, text=text)


def night_due(turn: Turn, x: int, *, grace: int = 0) -> None:
    """Judge the collected night once time ``x`` (a sample's, or now minus a grace) passes its morning."""
    n = turn.ctx.health.night
    if n.key >= 0 and n.key > n.closed and x - grace >= night_close_at(n.key, turn.cfg, turn.profile):
        judge_night(turn)


def judge_night(turn: Turn) -> None:
    """Close the night: elevated resting heart rate, warm skin; then fold the night into the baselines."""
    cfg, h = turn.cfg, turn.ctx.health
    n = h.night
    by_night = turn.because(n.corr)
    lang = turn.ctx.talk.lang
    if n.hr_n >= cfg.min_night_samples and n.hr_min is not None:
        if h.rhr.days >= cfg.baseline_min_days and n.hr_min >= h.rhr.value + cfg.night_rhr_delta_bpm:
            fire(
                by_night,
                "night_rhr",
                metric="rhr",
                t=n.last_ts,
                ttl_s=cfg.stale_ttl_daily_s,
                text=say("rule.night_rhr", lang),
            )
        h.rhr.fold(n.hr_min, cfg.baseline_prior_days, cfg.baseline_min_alpha)
    if n.temp_n >= cfg.min_night_samples:
        mean = n.temp_sum / n.temp_n
        if h.temp_base.days >= cfg.baseline_min_days and mean - h.temp_base.value > cfg.skin_temp_dev_c:
            fire(
                by_night,
                "skin_temp",
                metric="skin_temp",
                t=n.last_ts,
                ttl_s=cfg.stale_ttl_daily_s,
                text=say("rule.skin_temp", lang),
            )
        h.temp_base.fold(mean, cfg.baseline_prior_days, cfg.baseline_min_alpha)
    if n.hrv_n:
        h.hrv_base.fold(n.hrv_sum / n.hrv_n, cfg.baseline_prior_days, cfg.baseline_min_alpha)
    n.closed = n.key
    n.hr_min, n.hr_n, n.hrv_sum, n.hrv_n, n.temp_sum, n.temp_n = None, 0, 0.0, 0, 0.0, 0


# --- context triggers


def on_glasses_battery(turn: Turn, dev: DeviceInfo) -> None:
    """A glasses cell below the threshold while the other cell is present: ask for a hot swap."""
    cfg, h = turn.cfg, turn.ctx.health
    if dev.cells is None or len(dev.cells) < 2:
        return
    lang = turn.ctx.talk.lang
    for slot, pct in dev.cells.items():
        metric = f"glasses_cell_{slot}"
        if pct < cfg.glasses_cell_low_pct:
            text = say("rule.glasses_battery", lang, side=say(f"side.{slot}", lang), pct=f"{pct:.0f}")
            fire(
                turn,
                "glasses_battery",
                metric=metric,
                t=turn.now,
                ttl_s=cfg.stale_ttl_s,
                text=text,
                icon="battery",
                haptic=None,
                health=False,
            )
        elif pct >= cfg.glasses_cell_low_pct + 5:
            h.fired.pop(metric, None)  # swapped or charged: a later low cell is news again


def rearm_cell(turn: Turn, slot: str) -> None:
    """A fresh cell went in: its next low level is news again."""
    turn.ctx.health.fired.pop(f"glasses_cell_{slot}", None)


def leave_now(turn: Turn) -> None:
    """Calendar start - travel ETA - buffer has come: say so, and quote a ride there (one tap books it)."""
    cfg, ctx = turn.cfg, turn.ctx
    for ev in list(ctx.events):
        if ev.start <= turn.now or ev.start in ctx.leave_done:
            continue
        if _already_there(turn, ev):
            continue
        eta = travel_s(ctx, ev, cfg)
        if ev.start - (eta + cfg.leave_buffer_s) * 1000 > turn.now:
            continue
        ctx.leave_done.append(ev.start)
        del ctx.leave_done[:-MAX_LEAVE_DONE]
        if "leave_now" in turn.profile.muted_rules:
            continue
        t = turn.because(ev.corr)
        lang = ctx.talk.lang
        text = say("rule.leave_now", lang, title=ev.title, m=minutes(eta))
        t.alert("leave_now", text)
        t.say(
            Output(
                title=say("rule.leave_now.title", lang),
                body=text,
                speech=text,
                lang=lang,
                icon="calendar",
                haptic="tap",
                ttl_s=60,
                reason="rule:leave_now",
            )
        )
        if ev.location or ev.lat is not None:
            skills.start_ride_to(t, ev)


def _already_there(turn: Turn, ev: CalendarEvent) -> bool:
    w = turn.ctx.where
    if ev.lat is None or ev.lon is None or w.lat is None or w.lon is None:
        return False
    return haversine_m(w.lat, w.lon, ev.lat, ev.lon) <= turn.cfg.place_radius_m


def tick(turn: Turn) -> None:
    """Time-driven rules: close a night no sample closed, and leave-now."""
    night_due(turn, turn.now, grace=turn.cfg.night_close_grace_s * 1000)
    if turn.ctx.events:
        leave_now(turn)
