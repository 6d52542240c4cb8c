"""Paid tasks on the phone: a quote, one explicit confirmation (T2), then status updates (never backwards)."""

from __future__ import annotations

from agent.core.context import Output, SlotValue, Task, UserContext
from agent.core.intents import PAID_SKILLS
from agent.core.routing import Turn
from agent.core.wording import clip_units, lang_of, minutes, money, say
from schemas.actions import TaskCancel, TaskConfirm
from schemas.events import TaskStatus

MAX_TASKS = 4
MAX_FINISHED = 1
FINISHED = frozenset(
    {
        "completed",
        "delivered",
        "cancelled",
        "expired",
        "failed",
        "rider_canceled",
        "no_drivers_available",
    }
)
PAID = frozenset(str(skill) for skill in PAID_SKILLS)
_RANK: dict[str, int] = {
    s: i
    for i, s in enumerate(
        (
            "quoted",
            "processing",
            "placed",
            "accepted",
            "accepted_by_merchant",
            "courier_assigned",
            "at_store",
            "picked_up",
            "arriving",
            "near_customer",
            "in_progress",
            "driver_canceled",
            "completed",
            "delivered",
            "no_drivers_available",
            "rider_canceled",
            "cancelled",
            "failed",
        )
    )
}
CANCELLABLE = frozenset(
    {
        "committed",
        "processing",
        "accepted",
        "arriving",
        "placed",
        "accepted_by_merchant",
        "courier_assigned",
        "at_store",
    }
)
MODALITIES = frozenset({"voice", "ring", "tap", "nod", "phone"})


def new_task(turn: Turn, skill: str, slots: dict[str, SlotValue], lang: str, origin: str = "user") -> Task:
    """Open a task with a deterministic id (``{user}-{n}``)."""
    ctx = turn.ctx
    ctx.talk.task_counter += 1
    task_id = f"{ctx.user[:48]}-{ctx.talk.task_counter}"
    task = Task(
        task_id=task_id,
        skill=skill,
        state="new",
        slots=slots,
        lang=lang_of(lang),
        created=turn.now,
        updated=turn.now,
        corr=turn.corr,
        origin=origin,
    )
    ctx.tasks[task_id] = task
    prune(ctx)
    return task


def prune(ctx: UserContext) -> None:
    """Keep a few tasks: at most one finished one, and never what the conversation waits for."""
    talk = ctx.talk
    keep = {talk.pending, talk.asking, talk.undo, talk.measure[4] if talk.measure else None}
    finished = [t.task_id for t in ctx.tasks.values() if t.state in FINISHED and t.task_id not in keep]
    for task_id in finished[:-MAX_FINISHED]:
        del ctx.tasks[task_id]
    while len(ctx.tasks) > MAX_TASKS:
        victims = [t for t in ctx.tasks.values() if t.task_id not in keep]
        if not victims:
            return
        oldest = min(victims, key=lambda t: t.updated)  # a task the phone went silent about
        del ctx.tasks[oldest.task_id]


def finish(turn: Turn, task: Task, state: str, notice: str | None = None, *, icon: str = "info") -> None:
    """End a task in ``state``, optionally telling the user ``notice`` (a wording key)."""
    task.state = state
    talk = turn.ctx.talk
    if talk.pending == task.task_id:
        talk.pending = None
    if talk.asking == task.task_id:
        talk.asking = None
    if talk.undo == task.task_id:
        talk.undo = None
    if notice is not None:
        text = say(notice, task.lang)
        turn.say(Output(title=text, speech=text, lang=task.lang, icon=icon, ttl_s=10, reason=f"skill:{task.skill}"))
    turn.record(task)


# --- confirmation


def summary(task: Task) -> Output:
    """The confirmation card of a quoted task: restaurant, items, total and ETA, or fare and pickup ETA."""
    lang, s = task.lang, task.slots
    price = money(task.price, task.currency)
    eta = minutes(task.eta_s) if task.eta_s is not None else "?"
    if task.skill == "order_food":
        dish = str(s.get("dish", "?"))
        restaurant = str(s.get("restaurant", ""))
        qty = s.get("qty", 1)
        address = place_label(str(s.get("address", "")), lang) or "-"
        title = say("food.title", lang, dish=dish)
        body = say(
            "food.body",
            lang,
            restaurant=f"{restaurant}: " if restaurant and lang == "en" else (f"{restaurant} · " if restaurant else ""),
            qty=qty,
            dish=dish,
            price=price,
            eta=eta,
            address=address,
        )
        from_r = (f" from {restaurant}" if lang == "en" else f"从{restaurant}") if restaurant else ""
        speech = say("food.speech", lang, qty=qty, dish=dish, from_restaurant=from_r, price=price, eta=eta)
        icon = "food"
    else:
        dest = place_label(str(s.get("destination", "?")), lang)
        title = say("ride.title", lang, dest=dest)
        body = say("ride.body", lang, price=price, eta=eta, product=str(s.get("product", "")))
        speech = say("ride.speech", lang, dest=dest, price=price, eta=eta)
        icon = "car"
    # One display line each (shop and dish, price and time, where to), so a long dish never pushes the price off.
    body = "\n".join(clip_units(line) for line in body.split("\n"))
    yes = "book_button" if task.origin == "leave_now" else "confirm_button"
    return Output(
        title=title,
        body=body,
        speech=speech,
        lang=lang,
        icon=icon,
        buttons=[
            (say(yes, lang), f"confirm:{task.task_id}"),
            (say("cancel_button", lang), f"deny:{task.task_id}"),
        ],
        prompt_id=task.task_id,
        ttl_s=60,
        reason=f"skill:{task.skill}",
    )


def place_label(value: str, lang: str) -> str:
    """How to show a place slot: "home" and "office" in the user's language, anything else as said."""
    if value == "home":
        return "家" if lang == "zh" else "home"
    if value == "office":
        return "公司" if lang == "zh" else "the office"
    if value == "current location":
        return "当前位置" if lang == "zh" else "here"
    return value


def ask_confirmation(turn: Turn, task: Task) -> None:
    """Show the summary card and wait for one explicit confirmation (a newer one replaces an older)."""
    talk = turn.ctx.talk
    old = turn.ctx.tasks.get(talk.pending) if talk.pending else None
    if old is not None and old.task_id != task.task_id:
        turn.send("phone", TaskConfirm(task_id=_phone_id(old), confirm=False), f"skill:{old.skill}")
        finish(turn, old, "cancelled")
    talk.pending = task.task_id
    talk.pending_until = turn.now + turn.cfg.confirm_expiry_s * 1000
    task.state = "awaiting_confirmation"
    out = summary(task)
    out.ttl_s = turn.cfg.confirm_expiry_s
    turn.say(out)
    turn.record(task)


def resolve(turn: Turn, yes: bool, modality: str, task_id: str | None = None) -> bool:
    """Answer the pending confirmation (``task_id``, if given, must be the one shown); False if none."""
    ctx = turn.ctx
    talk = ctx.talk
    if talk.pending is None or (task_id is not None and task_id != talk.pending):
        return False
    task = ctx.tasks.get(talk.pending)
    if task is None or turn.now >= talk.pending_until:
        return False
    task.rounds += 1
    talk.pending = None
    mod = modality if modality in MODALITIES else None
    turn.send(
        "phone",
        TaskConfirm(task_id=_phone_id(task), confirm=yes, modality=mod),
        f"skill:{task.skill}",
    )
    if not yes:
        finish(turn, task, "cancelled", "cancelled")
        return True
    task.modality = mod
    task.state = "committed"
    if task.skill == "order_food":
        # The last order is remembered as a pair: a dish never meets another order's shop.
        dish = str(task.slots.get("dish", ""))
        if dish:
            talk.last_dish, talk.last_restaurant = dish, str(task.slots.get("restaurant", "")) or None
        text = say("food.committed", task.lang, eta=minutes(task.eta_s) if task.eta_s else "?")
    else:
        text = say("ride.committed", task.lang)
    turn.say(Output(title=text, speech=text, lang=task.lang, icon="check", ttl_s=10, reason=f"skill:{task.skill}"))
    turn.record(task)
    return True


def _phone_id(task: Task) -> str:
    return task.phone_id or task.task_id


# --- status updates


def find(ctx: UserContext, status: TaskStatus, corr: str | None) -> Task | None:
    """The task a status update is about: by id, by the action it answers, or the one quote we wait for."""
    for task in ctx.tasks.values():
        if status.task_id in (task.task_id, task.phone_id):
            return task
    if corr:
        for task in ctx.tasks.values():
            if task.start_cmd == corr:
                task.phone_id = status.task_id
                return task
    if status.status == "quoted":
        waiting = [t for t in ctx.tasks.values() if t.state == "quoting" and t.skill == status.skill]
        if len(waiting) == 1:
            waiting[0].phone_id = status.task_id
            return waiting[0]
    return None


def newer(task: Task, status: TaskStatus) -> bool:
    """Whether an update moves the task forward (by ``status_seq``; by status order when neither counts)."""
    if task.state in FINISHED:
        return False
    if status.status_seq > task.status_seq:
        return True
    if status.status_seq == task.status_seq:
        return _RANK.get(status.status, -1) > _RANK.get(task.state, -1)
    return False


def on_status(turn: Turn, status: TaskStatus, corr: str | None) -> None:
    """Apply a status update: a quote opens the confirmation; later ones drive progress notices."""
    task = find(turn.ctx, status, corr)
    if task is None:
        return
    if status.status == "quoted":
        if task.state != "quoting":
            return  # a repeated quote, or one for a task already cancelled or expired
        task.status_seq = status.status_seq
        if status.price is not None:
            task.price, task.currency = status.price.amount, status.price.currency
        task.eta_s = status.eta_s
        ask_confirmation(turn, task)
        return
    if task.state in ("quoting", "awaiting_confirmation", "new", "asking") or not newer(task, status):
        return  # not committed yet, a duplicate, or out of order: never go backwards
    task.status_seq = max(task.status_seq, status.status_seq)
    task.state = status.status
    if status.eta_s is not None:
        task.eta_s = status.eta_s
    if status.price is not None:
        task.price, task.currency = status.price.amount, status.price.currency
    _progress(turn, task, status)
    turn.record(task)


def _progress(turn: Turn, task: Task, st: TaskStatus) -> None:
    lang = task.lang
    reason = f"skill:{task.skill}"
    if task.skill == "order_food":
        near = st.status in ("picked_up", "near_customer") and st.eta_s is not None
        if near and st.eta_s is not None and st.eta_s <= turn.cfg.courier_near_s and "near" not in task.notified:
            task.notified = (*task.notified, "near")
            title = say("food.courier_near", lang, m=minutes(st.eta_s))
            turn.alert("courier_near", title)
            turn.say(
                Output(
                    title=title,
                    body=str(task.slots.get("dish", "")),
                    speech=title,
                    lang=lang,
                    icon="food",
                    ttl_s=60,
                    reason="rule:courier_near",
                )
            )
        elif st.status == "delivered":
            text = say("food.delivered", lang)
            turn.say(Output(title=text, speech=text, lang=lang, icon="food", ttl_s=10, reason=reason))
        elif st.status in ("cancelled", "failed"):
            text = say("food.cancelled" if st.status == "cancelled" else "food.failed", lang)
            turn.say(Output(title=text, speech=text, lang=lang, icon="warning", speak_too=True, reason=reason))
        return
    driver = st.driver
    plate = driver.plate if driver else ""
    if st.status == "accepted" and driver is not None and f"accepted:{plate}" not in task.notified:
        task.notified = (*task.notified, f"accepted:{plate}")
        eta = minutes(st.eta_s) if st.eta_s is not None else "?"
        title = say("ride.accepted", lang, name=driver.name, plate=plate)
        body = say("ride.accepted_body", lang, vehicle=driver.vehicle, eta=eta)
        speech = say("ride.accepted_speech", lang, name=driver.name, plate=plate, eta=eta)
        turn.say(Output(title=title, body=body, speech=speech, lang=lang, icon="car", ttl_s=60, reason=reason))
    elif st.status == "arriving" and "arriving" not in task.notified:
        task.notified = (*task.notified, "arriving")
        title = say("ride.arriving", lang)
        speech = say("ride.arriving_speech", lang, plate=plate or "?")
        body = f"{plate} {driver.vehicle}" if driver else ""
        turn.alert("ride_arriving", speech)
        turn.say(
            Output(
                title=title,
                body=body,
                speech=speech,
                lang=lang,
                icon="car",
                urgency="high",
                speak_too=True,
                ttl_s=120,
                reason="rule:ride_arriving",
            )
        )
    elif st.status == "completed":
        text = say("ride.completed", lang, price=money(task.price, task.currency) if task.price else "")
        turn.say(Output(title=text.strip(), speech=text.strip(), lang=lang, icon="check", ttl_s=10, reason=reason))
    elif st.status in ("driver_canceled", "no_drivers_available", "rider_canceled"):
        key = {"driver_canceled": "ride.driver_canceled", "no_drivers_available": "ride.no_drivers"}.get(
            st.status, "ride.rider_canceled"
        )
        text = say(key, lang)
        turn.say(Output(title=text, speech=text, lang=lang, icon="warning", speak_too=True, reason=reason))


def cancel_latest(turn: Turn, lang: str) -> bool:
    """Ask the phone to cancel the latest paid task in progress (the phone decides if it is too late)."""
    active = [t for t in turn.ctx.tasks.values() if t.skill in PAID and t.state in CANCELLABLE]
    if not active:
        return False
    task = active[-1]
    turn.send("phone", TaskCancel(task_id=_phone_id(task), reason="user"), f"skill:{task.skill}")
    text = say("cancel.order" if task.skill == "order_food" else "cancel.ride", lang)
    turn.say(Output(title=text, speech=text, lang=lang, icon="info", ttl_s=10, reason=f"skill:{task.skill}"))
    return True


# --- timers


def tick(turn: Turn) -> None:
    """Expire an unanswered confirmation, and fail tasks the phone never quoted."""
    ctx = turn.ctx
    talk = ctx.talk
    if talk.pending is not None and turn.now >= talk.pending_until:
        task = ctx.tasks.get(talk.pending)
        talk.pending = None
        if task is not None:
            t = turn.because(task.corr)
            t.send("phone", TaskConfirm(task_id=_phone_id(task), confirm=False), f"skill:{task.skill}")
            finish(t, task, "expired", "food.expired" if task.skill == "order_food" else "ride.expired")
    timeout = turn.cfg.quote_timeout_s * 1000
    for task in [t for t in ctx.tasks.values() if t.state == "quoting" and turn.now - t.updated >= timeout]:
        finish(turn.because(task.corr), task, "failed", "no_quote")
