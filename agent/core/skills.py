"""One-sentence skills: fill slots from context, ask at most one question, then act by confirmation tier."""

from __future__ import annotations

import re
from collections.abc import Callable

from agent.core import lexicon, tasks
from agent.core.config import Place, UserProfile
from agent.core.context import (
    DAY_MS,
    HOUR_MS,
    MIN_MS,
    CalendarEvent,
    Output,
    Reminder,
    SlotValue,
    Task,
    current_events,
    find_place,
    known_place,
    local,
    name_place,
    online,
    quiet,
    usable,
    weekday_of,
)
from agent.core.intents import Intent, Parsed, Reply, ReplyKind, Skill, parse_slot_answer
from agent.core.routing import Turn
from agent.core.routing import speech as speak
from agent.core.wording import clip, clip_units, fit_lines, lang_of, line_with_head, say, to_listener
from schemas.actions import (
    Capture,
    MeasureNow,
    MediaControl,
    ShowCaption,
    ShowNav,
    ShowTeleprompter,
    TaskStart,
)
from schemas.display import paginate
from schemas.geo import haversine_m

# Confirmation tiers: T2 explicit confirmation (spends money), T1 act with an undo window, T0 (default) none.
TIER: dict[str, int] = {"order_food": 2, "hail_ride": 2, "remind": 1, "music": 1}
MAX_REMINDERS = 5
MAX_SLOT_CHARS = 120  # a slot is a dish, a place, a short text: not a speech
WHEN_SLOTS = ("delay_min", "at", "every_min", "day", "daypart", "recurrence")
_DAYPART_HOUR = {"morning": 8, "noon": 12, "afternoon": 15, "evening": 19, "night": 21}
_DAY_OFFSET = {"today": 0, "tomorrow": 1, "day_after_tomorrow": 2}
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_EVERY_S = {
    "daily": 86_400,
    "weekly": 7 * 86_400,
    "weekdays": 86_400,
    "weekends": 86_400,
    "monthly": 30 * 86_400,
}
_MEASURABLE = ("hr", "spo2", "hrv", "stress")
_LANG_NAMES = {
    "zh": ("Chinese", "中文"),
    "en": ("English", "英文"),
    "ja": ("Japanese", "日文"),
    "ko": ("Korean", "韩文"),
    "fr": ("French", "法文"),
    "de": ("German", "德文"),
    "es": ("Spanish", "西班牙文"),
}
_MEDIA = {"pause": "pause", "resume": "play", "next": "next", "previous": "prev"}


# --- entry points


def start(turn: Turn, intent: Intent) -> None:
    """A new request: open a task for it and take it as far as the context allows."""
    lang = lang_of(intent.lang)
    turn.ctx.talk.lang = lang
    slots: dict[str, SlotValue] = {
        k: clip(v, MAX_SLOT_CHARS) if isinstance(v, str) else v
        for k, v in intent.slots.items()
        if not k.startswith("_") and isinstance(v, str | int | float)
    }
    task = tasks.new_task(turn, str(intent.skill), slots, lang)
    task.rounds = 1
    proceed(turn, task)


def guess(turn: Turn, intent: Intent) -> None:
    """A reading too unsure to act on: ask "Did you mean ...?" and keep it for a yes."""
    lang = lang_of(intent.lang)
    talk = turn.ctx.talk
    talk.lang = lang
    slots = {k: v for k, v in intent.slots.items() if not k.startswith("_") and isinstance(v, str | int | float)}
    talk.guess = [str(intent.skill), slots, lang, turn.now + turn.cfg.confirm_expiry_s * 1000]
    question = say("guess", lang, what=say(f"guess.{intent.skill}", lang))
    turn.say(Output(title=question, speech=question, lang=lang, ttl_s=turn.cfg.confirm_expiry_s, reason="skill:guess"))


def answer_guess(turn: Turn, parsed: Parsed) -> bool:
    """The reply to "Did you mean ...?": a yes starts the guessed request (a paid one still asks to confirm).

    Returns False when the utterance is no yes or no (it is handled as a new request); the guess is dropped.
    """
    talk = turn.ctx.talk
    held, talk.guess = talk.guess, None
    if held is None or turn.now >= int(held[3]) or not isinstance(parsed, Reply):
        return False
    skill, slots, lang = str(held[0]), dict(held[1]), str(held[2])
    if parsed.kind is not ReplyKind.CONFIRM:
        text = say("cancelled", lang)
        turn.say(Output(title=text, speech=text, lang=lang, ttl_s=5, reason="skill:guess"))
        return True
    start(turn, Intent(skill=Skill(skill), slots=slots, lang=lang, text=parsed.text))
    return True


def answer(turn: Turn, text: str, lang: str, parsed: Parsed) -> bool:
    """The user's reply while a slot question is open. Returns False when it is a new request instead."""
    ctx = turn.ctx
    talk = ctx.talk
    task = ctx.tasks.get(talk.asking) if talk.asking else None
    slot = talk.ask_slot
    talk.asking = None
    if task is None:
        return False
    if isinstance(parsed, Intent) and parsed.skill != task.skill:
        tasks.finish(turn, task, "cancelled")
        return False
    task.rounds += 1
    if isinstance(parsed, Reply) and parsed.kind in (ReplyKind.DENY, ReplyKind.CANCEL):
        tasks.finish(turn, task, "cancelled", "cancelled")
        return True
    found = _answer_value(task, slot, text, lang, parsed)
    if not found:
        tasks.finish(turn, task, "failed", "gave_up")
        return True
    task.slots.update({k: clip(v, MAX_SLOT_CHARS) if isinstance(v, str) else v for k, v in found.items()})
    proceed(turn, task)
    return True


def _answer_value(task: Task, slot: str, text: str, lang: str, parsed: Parsed) -> dict[str, SlotValue]:
    if isinstance(parsed, Intent) and parsed.skill == task.skill:
        said = {k: v for k, v in parsed.slots.items() if not k.startswith("_")}
        names = WHEN_SLOTS if slot == "when" else (slot,)
        if any(n in said for n in names):
            return {k: v for k, v in said.items() if k in names}
    if slot == "when":
        # The skill's own time rules read "in ten minutes", "at 3pm", "明天早上".
        found: dict[str, SlotValue] = {}
        for name in ("delay_min", "at", "daypart", "day"):
            value = parse_slot_answer(task.skill, name, text, lang)
            if value is not None:
                found[name] = value
        return {"delay_min": found["delay_min"]} if "delay_min" in found else found
    value = parse_slot_answer(task.skill, slot, text, lang)
    return {} if value is None else {slot: value}


def proceed(turn: Turn, task: Task) -> None:
    """Fill what context can; ask for a missing required slot (only once); else act."""
    missing = fill(turn, task)
    if missing is not None:
        if task.asked:
            tasks.finish(turn, task, "failed", "gave_up")
        elif task.skill == "teleprompter" and not turn.profile.scripts:
            tasks.finish(turn, task, "failed", "prompter.missing")
        else:
            _ask(turn, task, missing)
        return
    _run(turn, task)


def _ask(turn: Turn, task: Task, slot: str) -> None:
    talk = turn.ctx.talk
    talk.asking, talk.ask_slot = task.task_id, slot
    talk.ask_until = turn.now + turn.cfg.confirm_expiry_s * 1000
    task.state = "asking"
    task.asked = (*task.asked, slot)
    heard = task.slots.get(HEARD)
    if slot == "destination" and isinstance(heard, str):
        question = say("ask.place", task.lang, place=heard)
    else:
        question = say(f"ask.{task.skill}.{slot}", task.lang)
    turn.say(
        Output(
            title=question,
            speech=question,
            lang=task.lang,
            ttl_s=turn.cfg.confirm_expiry_s,
            reason=f"skill:{task.skill}",
        )
    )
    turn.record(task)


# --- slot filling


def fill(turn: Turn, task: Task) -> str | None:
    """Fill slots from context (home/office, where the user is, the usual order, ...).

    Returns:
        The first required slot that is still missing, or None.
    """
    s, ctx, profile = task.slots, turn.ctx, turn.profile

    def put(name: str, value: SlotValue) -> None:
        if name not in s:
            s[name] = value
            if name not in task.autofilled:
                task.autofilled = (*task.autofilled, name)

    skill = task.skill
    if skill == "order_food":
        # Only what this request asks for: "my usual" / 老样子 / "same as last time" brings the last order (or the
        # profile's usual) as a pair of dish and shop; a plain "order food" asks what, it never re-orders.
        usual = profile.usual_order
        asked_usual = bool(s.get("usual"))
        last_dish: str | None
        last_restaurant: str | None
        if ctx.talk.last_dish:
            last_dish, last_restaurant = ctx.talk.last_dish, ctx.talk.last_restaurant
        else:
            last_dish, last_restaurant = (usual.dish, usual.restaurant) if usual else (None, None)
        if asked_usual and "dish" not in s and last_dish:
            put("dish", last_dish)
            if last_restaurant:
                put("restaurant", last_restaurant)
            if usual is not None and usual.dish == last_dish and usual.notes:
                put("notes", usual.notes)
        elif asked_usual and "restaurant" not in s and last_restaurant:
            put("restaurant", last_restaurant)  # "my usual noodles" / 上次那家的牛肉面: the usual shop
        s.setdefault("qty", usual.qty if usual and asked_usual and s.get("dish") == usual.dish else 1)
        if "address" not in s:
            _fill_here(turn, put, "address", prefer_known=True)
        _coords(turn, s, "address")
        return None if "dish" in s else "dish"
    if skill == "hail_ride":
        if "pickup" not in s:
            _fill_here(turn, put, "pickup", prefer_known=False)
        _coords(turn, s, "pickup")
        put("product", profile.ride_product)
        if "destination" not in s:
            return "destination"
        _coords(turn, s, "destination")
        # A kind of place with no known place of that kind ("the station") asks which one, once; a name the
        # agent does not know goes to the ride app, which finds places by name.
        return _where(turn, task, generic_only=True)
    if skill == "navigate":
        if "mode" not in s:
            put("mode", _travel_mode(turn))
        if "destination" not in s:
            return "destination"
        _coords(turn, s, "destination")
        return _where(turn, task, generic_only=False)
    if skill == "translate":
        put("target_lang", task.lang)
        return None
    if skill == "teleprompter":
        scripts = profile.scripts
        if "script" not in s and len(scripts) == 1:
            put("script", next(iter(scripts)))
        return None if "script" in s else "script"
    if skill == "remind":
        if "text" not in s:
            return "text"
        return None if any(n in s for n in WHEN_SLOTS) else "when"
    if skill == "meeting_notes" and "title" not in s:
        now_events = current_events(ctx, turn.now, turn.cfg)
        if now_events:
            put("title", now_events[0].title)
    return None


HEARD = "_heard"  # a task slot: the place said that the agent could not find (asked about once)


def _where(turn: Turn, task: Task, *, generic_only: bool) -> str | None:
    """Find the destination said: a kind of place ("the subway", 地铁站) is the nearest known place of that kind.

    Returns "destination" (and keeps what was said in ``_heard``) when it is still unknown and not asked yet.
    """
    s = task.slots
    value = s.get("destination")
    if not isinstance(value, str) or "destination_lat" in s:
        return None
    kind = place_kind(value)
    place = nearest_of_kind(turn, kind) if kind else None
    if place is not None:
        s["destination"] = place.address if place.address and place_kind(place.name) else place.name
        s["destination_lat"], s["destination_lon"] = round(place.lat, 6), round(place.lon, 6)
        return None
    if (generic_only and kind is None) or "destination" in task.asked:
        return None
    s[HEARD] = value
    del s["destination"]
    return "destination"


def place_kind(value: str) -> str | None:
    """The kind of place a value names without naming one ("the nearest subway" -> "subway"), if it does."""
    bare = re.sub(lexicon.PLACE_KIND_LEAD, "", value.strip().lower()).strip()
    return lexicon.PLACE_KINDS.get(bare)


def nearest_of_kind(turn: Turn, kind: str) -> Place | None:
    """The profile place of that kind nearest to where the user is (the first one when that is unknown)."""
    words = lexicon.KIND_WORDS.get(kind, ())
    others = [w for k, ws in lexicon.KIND_WORDS.items() if k != kind for w in ws]

    def of_kind(p: Place) -> bool:
        text = f"{p.name} {p.address}".lower()
        # "subway station" is a subway, not a railway station: the more specific kind wins.
        return any(w in text for w in words) and not (kind == "station" and any(w in text for w in others))

    found = [p for p in turn.profile.places if of_kind(p)]
    w = turn.ctx.where
    if not found or w.lat is None or w.lon is None:
        return found[0] if found else None
    lat, lon = w.lat, w.lon
    return min(found, key=lambda p: haversine_m(lat, lon, p.lat, p.lon))


def _travel_mode(turn: Turn) -> str:
    """How the user gets around right now: driving, cycling, else walking."""
    w = turn.ctx.where
    if w.activity == "automotive" or (turn.now - w.loc_ts <= 2 * MIN_MS and w.speed >= 7.0):
        return "drive"
    if w.activity == "cycling":
        return "bike"
    return "walk"


def _fill_here(turn: Turn, put: Callable[[str, SlotValue], None], slot: str, *, prefer_known: bool) -> None:
    """Fill a place slot with where the user is (a known place by name), or home when nothing is known."""
    ctx, w = turn.ctx, turn.ctx.where
    if w.lat is not None and w.lon is not None:
        named = w.place if w.place in ("home", "office") else name_place(ctx, w.lat, w.lon, turn.cfg, turn.profile)
        if named in ("home", "office"):
            put(slot, named)
        else:
            put(slot, "current location")
            put(f"{slot}_lat", round(w.lat, 6))
            put(f"{slot}_lon", round(w.lon, 6))
        return
    if prefer_known and known_place(ctx, "home", turn.cfg, turn.profile) is not None:
        put(slot, "home")


def _coords(turn: Turn, s: dict[str, SlotValue], slot: str) -> None:
    """Add ``{slot}_lat``/``_lon`` for a place the agent knows (home, office or a profile place)."""
    value = s.get(slot)
    if not isinstance(value, str) or f"{slot}_lat" in s:
        return
    place = (
        known_place(turn.ctx, value, turn.cfg, turn.profile)
        if value in ("home", "office")
        else find_place(value, turn.profile)
    )
    if place is not None:
        s[f"{slot}_lat"], s[f"{slot}_lon"] = round(place.lat, 6), round(place.lon, 6)


# --- running


def _run(turn: Turn, task: Task) -> None:
    skill = task.skill
    if TIER.get(skill) == 2:
        _quote(turn, task)
    elif skill == "navigate":
        _navigate(turn, task)
    elif skill == "translate":
        _translate(turn, task)
    elif skill == "teleprompter":
        _teleprompter(turn, task)
    elif skill == "capture":
        _capture(turn, task)
    elif skill == "remind":
        _remind(turn, task)
    elif skill == "health_query":
        _health(turn, task)
    elif skill == "music":
        _music(turn, task)
    elif skill == "meeting_notes":
        title = str(task.slots.get("title") or say("notes.default", task.lang))
        _tell(turn, task, say("notes.start", task.lang, title=title), icon="calendar")
        tasks.finish(turn, task, "completed")
    else:  # price_lookup: look at the item with the camera, the phone app does the search
        item = str(task.slots.get("item", "")) or ("这个" if task.lang == "zh" else "this")
        glasses = usable(turn.ctx, "glasses")
        if glasses is not None:
            turn.send("glasses", Capture(kind="photo"), f"skill:{skill}", dev=glasses)
        _tell(turn, task, say("price.start", task.lang, item=item))
        tasks.finish(turn, task, "completed")


def _tell(turn: Turn, task: Task, text: str, *, icon: str = "info", body: str = "", health: bool = False) -> None:
    turn.say(
        Output(
            title=text,
            body=body,
            speech=text,
            lang=task.lang,
            icon=icon,
            ttl_s=15,
            reason=f"skill:{task.skill}",
            health=health,
        )
    )


def _quote(turn: Turn, task: Task) -> None:
    if online(turn.ctx, "phone") is None:
        tasks.finish(turn, task, "failed", "phone_offline")
        return
    slots = dict([(k, v) for k, v in task.slots.items() if not k.startswith("_")][:32])
    cmd = turn.send("phone", TaskStart(task_id=task.task_id, skill=task.skill, slots=slots), f"skill:{task.skill}")
    task.start_cmd = cmd
    task.state = "quoting"
    turn.record(task)


def start_ride_to(turn: Turn, event: CalendarEvent) -> None:
    """Leave-now: quote a ride to a calendar event so one tap books it (rounds: the confirmation only)."""
    if online(turn.ctx, "phone") is None:
        return
    slots: dict[str, SlotValue] = {"destination": event.location or event.title}
    if event.lat is not None and event.lon is not None:
        slots["destination_lat"], slots["destination_lon"] = event.lat, event.lon
    task = tasks.new_task(turn, "hail_ride", slots, turn.ctx.talk.lang, origin="leave_now")
    task.autofilled = ("destination",)
    proceed(turn, task)


def _navigate(turn: Turn, task: Task) -> None:
    s, ctx, lang = task.slots, turn.ctx, task.lang
    ctx.talk.prompter = None  # the display now belongs to navigation
    dest = tasks.place_label(str(s["destination"]), lang)
    mode = str(s.get("mode", "walk"))
    w = ctx.where
    lat, lon = s.get("destination_lat"), s.get("destination_lon")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        # Nowhere the agent knows (asked once already): say so rather than draw a route of 0 m.
        text = say("nav.unknown_place", lang, dest=dest)
        _tell(turn, task, text, icon="nav")
        tasks.finish(turn, task, "failed")
        return
    distance: float | None = None
    if w.lat is not None and w.lon is not None:
        distance = haversine_m(w.lat, w.lon, float(lat), float(lon))
    speed = {"walk": 1.4, "bike": 4.0, "drive": 8.0, "transit": 6.0}.get(mode, 1.4)
    eta = int(distance / speed) if distance is not None else None
    mode_word = say(f"mode.{mode}", lang) if mode in ("walk", "bike", "drive", "transit") else mode
    speech = say("nav.speech", lang, mode=mode_word, dest=dest)
    glasses = usable(ctx, "glasses")
    if glasses is not None and distance is not None:
        turn.send(
            "glasses",
            ShowNav(
                maneuver="straight",
                distance_m=min(distance, 1_000_000),
                destination=clip_units(clip(dest, 64)),
                eta_s=min(eta, 86_400) if eta is not None else None,
            ),
            f"skill:{task.skill}",
            dev=glasses,
        )
        if not quiet(ctx, turn.now, turn.cfg, turn.profile):
            ear = usable(ctx, "earphones")
            turn.send(
                "earphones" if ear else "glasses",
                speak(Output(title=speech, speech=speech, lang=lang)),
                f"skill:{task.skill}",
            )
    else:
        _tell(turn, task, speech, icon="nav")
    tasks.finish(turn, task, "completed")


def _translate(turn: Turn, task: Task) -> None:
    s, lang = task.slots, task.lang
    turn.ctx.talk.prompter = None  # the display now belongs to captions
    tgt = str(s.get("target_lang", lang))
    src = str(s.get("source_lang") or ("en" if tgt == "zh" else "zh"))
    mode = str(s.get("mode", "conversation"))
    glasses = usable(turn.ctx, "glasses")
    name = _LANG_NAMES.get(tgt, (tgt, tgt))[1 if lang == "zh" else 0]
    if mode == "photo":
        if glasses is None:
            tasks.finish(turn, task, "failed", "glasses_offline")
            return
        turn.send("glasses", Capture(kind="photo"), f"skill:{task.skill}", dev=glasses)
        _tell(turn, task, say("translate.photo", lang))
    elif glasses is not None and _code(src) and _code(tgt):
        caption = ShowCaption(text=say("translate.listening", lang), src_lang=src, tgt_lang=tgt, is_final=False)
        turn.send("glasses", caption, f"skill:{task.skill}", dev=glasses)
    else:
        _tell(turn, task, say("translate.start", lang, language=name))
    tasks.finish(turn, task, "completed")


def _code(lang: str) -> bool:
    return 2 <= len(lang) <= 3 and lang.isalpha() and lang.islower()


def _teleprompter(turn: Turn, task: Task) -> None:
    scripts = turn.profile.scripts
    wanted = str(task.slots.get("script", "")).strip().lower()
    name = next((n for n in scripts if n.lower() == wanted), None) or next(
        (n for n in scripts if wanted and (wanted in n.lower() or n.lower() in wanted)), None
    )
    if name is None:
        tasks.finish(turn, task, "failed", "prompter.missing")
        return
    glasses = usable(turn.ctx, "glasses")
    if glasses is None:
        tasks.finish(turn, task, "failed", "glasses_offline")
        return
    task.slots["script"] = name
    pages = paginate(scripts[name])[:999]
    advance = "auto" if task.slots.get("advance") == "auto" else "manual"
    turn.ctx.talk.prompter = [name, 1, len(pages), advance]
    _show_page(turn, name, 1, pages, advance)
    tasks.finish(turn, task, "completed")


def _show_page(turn: Turn, name: str, page: int, pages: list[str], advance: str) -> None:
    body = ShowTeleprompter(
        script_id=name[:64],
        text=pages[page - 1],
        page=page,
        max_page=len(pages),
        advance=advance,
    )
    turn.send("glasses", body, "skill:teleprompter")


def page(turn: Turn, delta: int) -> bool:
    """Turn the teleprompter page (a temple tap or swipe, a ring press or scroll). Returns whether it did."""
    prompter = turn.ctx.talk.prompter
    if not prompter:
        return False
    name, current, _, advance = prompter
    text = turn.profile.scripts.get(name)
    if text is None:
        turn.ctx.talk.prompter = None
        return False
    pages = paginate(text)[:999]
    new = max(1, min(len(pages), int(current) + delta))
    if new != current:
        prompter[1] = new
        _show_page(turn, name, new, pages, advance)
    return True


def _capture(turn: Turn, task: Task) -> None:
    glasses = usable(turn.ctx, "glasses")
    if glasses is None:
        tasks.finish(turn, task, "failed", "glasses_offline")
        return
    kind = "video" if task.slots.get("kind") in ("video", "audio") else "photo"
    raw = task.slots.get("duration_s", 15 if kind == "video" else 0)
    seconds = max(0, min(60, int(raw))) if isinstance(raw, int | float) else 0
    turn.send("glasses", Capture(kind=kind, duration_s=seconds), f"skill:{task.skill}", dev=glasses)
    tasks.finish(turn, task, "completed")


# --- T1: reminders, music


def _undoable(turn: Turn, task: Task) -> None:
    talk = turn.ctx.talk
    talk.undo, talk.undo_until = task.task_id, turn.now + turn.cfg.undo_window_s * 1000
    task.state = "committed"
    turn.record(task)


def _remind(turn: Turn, task: Task) -> None:
    s, lang = task.slots, task.lang
    due = due_time(s, turn.now, turn.profile.tz_offset_min)
    every = _every_s(s)
    if due is None:
        due = turn.now + every * 1000 if every else turn.now + HOUR_MS
    text = str(s["text"])
    reminders = turn.ctx.reminders
    reminders.append(Reminder(due, text, lang, every, task.task_id, turn.corr))
    reminders.sort(key=lambda r: r.due)
    del reminders[MAX_REMINDERS:]
    when = reminder_when(due, turn.now, turn.profile, lang)
    said = to_listener(text, lang)
    title, cut = reminder_title(when, said, lang)
    body = "\n".join(p for p in (fit_lines(said, 2) if cut else "", say("remind.undo", lang)) if p)
    speech = say("remind.set", lang, text=said, at=when)
    turn.say(Output(title=title, body=body, speech=speech, lang=lang, icon="calendar", ttl_s=15, reason="skill:remind"))
    _undoable(turn, task)


def reminder_when(due: int, now: int, profile: UserProfile, lang: str) -> str:
    """When a reminder is due, as the user reads it: "18:00", "tomorrow 07:30", "Tue 09:00" (local time)."""
    at, today = local(due, profile), local(now, profile)
    clock = f"{(at // HOUR_MS) % 24:02d}:{(at // MIN_MS) % 60:02d}"
    days = at // DAY_MS - today // DAY_MS
    if days == 0:
        return clock
    day = say("day.tomorrow", lang) if days == 1 else say(f"day.{_WEEKDAYS[weekday_of(at)]}", lang)
    return f"{day} {clock}"


def reminder_title(when: str, text: str, lang: str) -> tuple[str, bool]:
    """A reminder's card title, time first: "⏰ 18:00 · take your pills" (one display line; the time is never cut).

    Returns the title and whether the text had to be cut (then the card's body shows it whole).
    """
    head = say("remind.card", lang, at=when, text="")
    return line_with_head(head, text)


def due_time(s: dict[str, SlotValue], now: int, tz_offset_min: int) -> int | None:
    """When a reminder is due, from the time slots the parser read (None: no time said)."""
    delay = s.get("delay_min")
    if isinstance(delay, int | float):
        return now + int(delay * MIN_MS)
    at, daypart, day = s.get("at"), s.get("daypart"), s.get("day")
    if at is None and daypart is None and day is None:
        every = s.get("every_min")
        return now + int(every * MIN_MS) if isinstance(every, int | float) else None
    hour, minute = 9, 0
    if isinstance(at, str) and ":" in at:
        hh, mm = at.split(":", 1)
        hour, minute = int(hh), int(mm)
    elif isinstance(daypart, str):
        hour = _DAYPART_HOUR.get(daypart, 9)
    offset = tz_offset_min * MIN_MS
    lt = now + offset
    midnight = lt - lt % DAY_MS
    days = 0
    explicit = False
    if isinstance(day, str):
        explicit = True
        if day in _DAY_OFFSET:
            days = _DAY_OFFSET[day]
        elif day in _WEEKDAYS:
            days = (_WEEKDAYS.index(day) - weekday_of(lt)) % 7
    cand = midnight + days * DAY_MS + hour * HOUR_MS + minute * MIN_MS
    while cand <= lt:
        cand += (7 if explicit and day in _WEEKDAYS else 1) * DAY_MS
    return cand - offset


def _every_s(s: dict[str, SlotValue]) -> int:
    every = s.get("every_min")
    if isinstance(every, int | float) and every > 0:
        return int(every * 60)
    rec = s.get("recurrence")
    return _EVERY_S.get(rec, 0) if isinstance(rec, str) else 0


def reminders_due(turn: Turn) -> None:
    """Say the reminders that are due (repeating ones come back)."""
    ctx = turn.ctx
    for r in [r for r in ctx.reminders if r.due <= turn.now]:
        said = to_listener(r.text, r.lang)
        text = say("remind.due", r.lang, text=said)
        title, cut = reminder_title(reminder_when(r.due, r.due, turn.profile, r.lang), said, r.lang)
        turn.because(r.corr).say(
            Output(
                title=title,
                body=fit_lines(said, 3) if cut else "",
                speech=text,
                lang=r.lang,
                icon="calendar",
                ttl_s=30,
                reason="skill:remind",
            )
        )
        if r.every_s > 0:
            while r.due <= turn.now:
                r.due += r.every_s * 1000
        else:
            ctx.reminders.remove(r)
    ctx.reminders.sort(key=lambda r: r.due)


def _music(turn: Turn, task: Task) -> None:
    s, ctx, lang = task.slots, turn.ctx, task.lang
    ear = usable(ctx, "earphones")
    kind = "earphones" if ear is not None else "phone"
    if ear is None and online(ctx, "phone") is None:
        tasks.finish(turn, task, "failed", "phone_offline")
        return
    action = str(s.get("action", "play"))
    if action in _MEDIA and action != "play":
        turn.send(kind, MediaControl(command=_MEDIA[action]), f"skill:{task.skill}")
        tasks.finish(turn, task, "completed")
        return
    query = str(s.get("query", ""))
    app = str(s.get("app") or turn.profile.music_app)
    full = " ".join(p for p in (query, f"@{app}" if app else "") if p) or None
    turn.send(kind, MediaControl(command="play", query=clip(full, 200) if full else None), f"skill:{task.skill}")
    task.slots["output"] = kind
    _tell(turn, task, say("music.play", lang, query=query or say("music.any", lang)), icon="music")
    _undoable(turn, task)


def undo(turn: Turn) -> bool:
    """Undo the last T1 action within its window. Returns whether there was one."""
    ctx = turn.ctx
    talk = ctx.talk
    task = ctx.tasks.get(talk.undo) if talk.undo else None
    if task is None or turn.now >= talk.undo_until:
        return False
    task.rounds += 1
    if task.skill == "remind":
        ctx.reminders = [r for r in ctx.reminders if r.task_id != task.task_id]
    else:
        turn.send(str(task.slots.get("output", "earphones")), MediaControl(command="stop"), "skill:music")
    tasks.finish(turn, task, "cancelled", "undone")
    return True


# --- health questions


def _health(turn: Turn, task: Task) -> None:
    s, ctx = task.slots, turn.ctx
    metric = str(s.get("metric", "summary"))
    value, ts = latest(turn, metric)
    fresh = value is not None and turn.now - ts <= turn.cfg.fresh_sample_s * 1000
    # "What's my heart rate now": a reading minutes old is no answer; measure, and answer when the reading comes.
    if metric in _MEASURABLE and (s.get("measure") or s.get("period") == "now" or not fresh):
        ring = online(ctx, "ring")
        if ring is not None:
            turn.send("ring", MeasureNow(kind=metric, timeout_s=40), f"skill:{task.skill}", dev=ring)
            until = turn.now + turn.cfg.measure_timeout_s * 1000
            ctx.talk.measure = [metric, turn.now, until, task.lang, task.task_id, turn.corr]
            task.state = "measuring"
            _tell(turn, task, say("health.measuring", task.lang), icon="heart")
            turn.record(task)
            return
        if value is None:
            tasks.finish(turn, task, "failed", "health.ring_offline")
            return
    _tell(turn, task, health_text(turn, metric, task.lang), icon="heart", health=True)
    tasks.finish(turn, task, "completed")


def latest(turn: Turn, metric: str) -> tuple[float | None, int]:
    """The latest value of a metric and its sample time."""
    h = turn.ctx.health
    table: dict[str, tuple[float | None, int]] = {
        "hr": (h.hr, h.hr_ts),
        "spo2": (h.spo2, h.spo2_ts),
        "hrv": (h.hrv, h.hrv_ts),
        "stress": (h.stress, h.stress_ts),
        "temp": (h.skin_temp, h.skin_temp_ts),
        "resp": (h.resp, h.resp_ts),
    }
    return table.get(metric, (None, 0))


def health_text(turn: Turn, metric: str, lang: str) -> str:
    """The answer to a health question from what the context holds."""
    h = turn.ctx.health
    if metric == "sleep":
        if not h.sleep_ms:
            return say("health.none", lang)
        total = h.sleep_ms // MIN_MS
        return say("health.sleep", lang, h=total // 60, m=total % 60, d=h.deep_ms // MIN_MS)
    if metric == "steps":
        return say("health.steps", lang, v=h.steps_today)
    if metric == "temp" and h.skin_temp is None and h.skin_dev is not None:
        return say("health.temp_dev", lang, v=f"{h.skin_dev:+.1f}")
    if metric in ("hr", "spo2", "hrv", "stress", "temp", "resp"):
        value, _ = latest(turn, metric)
        if value is None:
            return say("health.none", lang)
        shown = f"{value:.1f}" if metric in ("temp", "resp") else f"{value:.0f}"
        return say(f"health.{metric}", lang, v=shown)
    parts = [say("health.hr", lang, v=f"{h.hr:.0f}")] if h.hr is not None else []
    if h.spo2 is not None:
        parts.append(say("health.spo2", lang, v=f"{h.spo2:.0f}"))
    parts.append(say("health.steps", lang, v=h.steps_today))
    return " ".join(parts) if lang == "en" else "".join(parts)


def on_reading(turn: Turn, metric: str, value: float, t: int) -> None:
    """A reading arrived: answer the measurement the user asked for, if it is this one."""
    m = turn.ctx.talk.measure
    if not m or m[0] != metric or t < int(m[1]) - 5_000:
        return
    turn.ctx.talk.measure = None
    _, _, _, lang, task_id, corr = m
    t2 = turn.because(str(corr))
    text = health_text(t2, metric, str(lang))
    t2.say(
        Output(
            title=text, speech=text, lang=str(lang), icon="heart", ttl_s=15, reason="skill:health_query", health=True
        )
    )
    task = turn.ctx.tasks.get(str(task_id))
    if task is not None:
        tasks.finish(t2, task, "completed")


def _measure_timed_out(turn: Turn, task: Task, metric: str, lang: str) -> None:
    """The ring gave no reading in time: answer with the last reading and how old it is, if there is one."""
    value, ts = latest(turn, metric)
    if value is None:
        tasks.finish(turn, task, "failed", "health.no_reading")
        return
    text = health_text(turn, metric, lang)
    gap = " " if lang == "en" else ""
    note = f"{say('health.no_new', lang)}{gap}{say('health.age', lang, age=age_text(turn.now - ts, lang))}"
    turn.say(
        Output(
            title=text, body=note, speech=f"{note}{gap}{text}", lang=lang, icon="heart", ttl_s=15, reason="skill:health"
        )
    )
    tasks.finish(turn, task, "completed")


def age_text(ms: int, lang: str) -> str:
    """How old something is, roughly: "40 s", "5 min", "2 h", "3 d" (秒, 分钟, 小时, 天)."""
    seconds = max(0, ms // 1000)
    for size, en, zh in ((86_400, "d", "天"), (3600, "h", "小时"), (60, "min", "分钟")):
        if seconds >= size:
            n = seconds // size
            return f"{n}{zh}" if lang == "zh" else f"{n} {en}"
    return f"{seconds}秒" if lang == "zh" else f"{seconds} s"


def tick(turn: Turn) -> None:
    """Timers of the conversation: an unanswered question, the undo window, a measurement, reminders."""
    ctx = turn.ctx
    talk = ctx.talk
    if talk.asking is not None and turn.now >= talk.ask_until:
        task = ctx.tasks.get(talk.asking)
        talk.asking = None
        if task is not None:
            tasks.finish(turn.because(task.corr), task, "expired", "asked_expired")
    if talk.undo is not None and turn.now >= talk.undo_until:
        task = ctx.tasks.get(talk.undo)
        talk.undo = None
        if task is not None and task.state == "committed":
            task.state = "completed"  # the undo window closed: the action stands
            turn.record(task)
    m = talk.measure
    if m and turn.now >= int(m[2]):
        talk.measure = None
        task = ctx.tasks.get(str(m[4]))
        if task is not None:
            _measure_timed_out(turn.because(str(m[5])), task, str(m[0]), str(m[3]))
    if ctx.reminders and ctx.reminders[0].due <= turn.now:
        reminders_due(turn)
