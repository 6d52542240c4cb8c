"""The phone's app side of a ride or a food order: quotes, real status sequences, and webhook chaos."""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeAlias

from devices.models.route import PLACES, Place, haversine_m
from schemas.errors import ConfigError, DeviceError


class Skill(StrEnum):
    """The task-running skills the phone emulates."""

    HAIL_RIDE = "hail_ride"
    ORDER_FOOD = "order_food"


class RideStatus(StrEnum):
    """Ride statuses as Uber's ride and guest-ride APIs name them."""

    PROCESSING = "processing"
    ACCEPTED = "accepted"
    ARRIVING = "arriving"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    DRIVER_CANCELED = "driver_canceled"
    NO_DRIVERS_AVAILABLE = "no_drivers_available"
    RIDER_CANCELED = "rider_canceled"


class FoodStatus(StrEnum):
    """Food order statuses: merchant side, then the courier side (DoorDash/Grubhub-like)."""

    PLACED = "placed"
    ACCEPTED_BY_MERCHANT = "accepted_by_merchant"
    COURIER_ASSIGNED = "courier_assigned"
    AT_STORE = "at_store"
    PICKED_UP = "picked_up"
    NEAR_CUSTOMER = "near_customer"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


TaskStatus: TypeAlias = RideStatus | FoodStatus

RIDE_HAPPY_PATH: tuple[RideStatus, ...] = (
    RideStatus.PROCESSING,
    RideStatus.ACCEPTED,
    RideStatus.ARRIVING,
    RideStatus.IN_PROGRESS,
    RideStatus.COMPLETED,
)
FOOD_HAPPY_PATH: tuple[FoodStatus, ...] = (
    FoodStatus.PLACED,
    FoodStatus.ACCEPTED_BY_MERCHANT,
    FoodStatus.COURIER_ASSIGNED,
    FoodStatus.AT_STORE,
    FoodStatus.PICKED_UP,
    FoodStatus.NEAR_CUSTOMER,
    FoodStatus.DELIVERED,
)
# driver_canceled is not terminal here: the platform re-dispatches (back to processing), as Uber documents.
TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {
        RideStatus.COMPLETED,
        RideStatus.NO_DRIVERS_AVAILABLE,
        RideStatus.RIDER_CANCELED,
        FoodStatus.DELIVERED,
        FoodStatus.CANCELLED,
    }
)

# Which status may follow which (``None``: the first one). Every sequence TaskSim produces walks this graph;
# terminal statuses have no successors.
TRANSITIONS: Mapping[Skill, Mapping[TaskStatus | None, frozenset[TaskStatus]]] = MappingProxyType(
    {
        Skill.HAIL_RIDE: MappingProxyType(
            {
                None: frozenset({RideStatus.PROCESSING}),
                RideStatus.PROCESSING: frozenset(
                    {RideStatus.ACCEPTED, RideStatus.NO_DRIVERS_AVAILABLE, RideStatus.RIDER_CANCELED}
                ),
                RideStatus.ACCEPTED: frozenset(
                    {RideStatus.ARRIVING, RideStatus.DRIVER_CANCELED, RideStatus.RIDER_CANCELED}
                ),
                RideStatus.DRIVER_CANCELED: frozenset({RideStatus.PROCESSING}),
                RideStatus.ARRIVING: frozenset(
                    {RideStatus.IN_PROGRESS, RideStatus.DRIVER_CANCELED, RideStatus.RIDER_CANCELED}
                ),
                RideStatus.IN_PROGRESS: frozenset({RideStatus.COMPLETED}),
            }
        ),
        Skill.ORDER_FOOD: MappingProxyType(
            {
                None: frozenset({FoodStatus.PLACED}),
                FoodStatus.PLACED: frozenset({FoodStatus.ACCEPTED_BY_MERCHANT, FoodStatus.CANCELLED}),
                FoodStatus.ACCEPTED_BY_MERCHANT: frozenset({FoodStatus.COURIER_ASSIGNED, FoodStatus.CANCELLED}),
                FoodStatus.COURIER_ASSIGNED: frozenset({FoodStatus.AT_STORE, FoodStatus.CANCELLED}),
                FoodStatus.AT_STORE: frozenset({FoodStatus.PICKED_UP, FoodStatus.CANCELLED}),
                FoodStatus.PICKED_UP: frozenset({FoodStatus.NEAR_CUSTOMER}),
                FoodStatus.NEAR_CUSTOMER: frozenset({FoodStatus.DELIVERED}),
            }
        ),
    }
)

# The failure a TaskSim can be told to play out, per skill.
FAILURES: Mapping[Skill, frozenset[str]] = MappingProxyType(
    {
        Skill.HAIL_RIDE: frozenset(
            {RideStatus.DRIVER_CANCELED, RideStatus.NO_DRIVERS_AVAILABLE, RideStatus.RIDER_CANCELED}
        ),
        Skill.ORDER_FOOD: frozenset({FoodStatus.CANCELLED}),
    }
)


def is_valid_sequence(skill: Skill, statuses: Sequence[str]) -> bool:
    """Whether ``statuses`` (in ``seq`` order) walk the graph of ``skill``; nothing follows a terminal."""
    graph = TRANSITIONS[skill]
    parse = RideStatus if skill is Skill.HAIL_RIDE else FoodStatus
    prev: TaskStatus | None = None
    for s in statuses:
        if s not in graph.get(prev, frozenset()):
            return False
        prev = parse(s)
    return True


class SpeedProfile(StrEnum):
    """How fast a task plays out: real durations, or compressed for demos (ETAs shrink to match)."""

    REALISTIC = "realistic"
    FAST = "fast"
    DEMO = "demo"

    @property
    def factor(self) -> float:
        """The multiplier applied to every duration."""
        return {"realistic": 1.0, "fast": 0.25, "demo": 0.05}[self.value]


@dataclass(frozen=True, slots=True)
class Price:
    """An amount of money.

    Attributes:
        amount: in major units, two decimals.
        currency: ISO 4217 code.
    """

    amount: float
    currency: str = "CNY"


@dataclass(frozen=True, slots=True)
class Driver:
    """The assigned driver, as the ride app shows them.

    Attributes:
        name: how the app addresses the driver.
        plate: licence plate.
        vehicle: colour and model.
    """

    name: str
    plate: str
    vehicle: str


@dataclass(frozen=True, slots=True)
class Quote:
    """What the user confirms: the upfront fare or order total, and the ETA.

    Attributes:
        task_id: the task this quote belongs to.
        skill: ride or food.
        quote_id: the fare/quote id a real API returns (``fare_id`` for Uber).
        price: upfront fare (ride) or order total (food).
        eta_s: pickup ETA (ride) or delivery ETA (food), seconds from confirmation.
        summary: one line for the confirmation card.
        distance_m: straight-line trip (ride) or store-to-door (food) distance.
    """

    task_id: str
    skill: Skill
    quote_id: str
    price: Price
    eta_s: int
    summary: str
    distance_m: float


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One webhook-style status change, shaped like ``phone.task_status``.

    Attributes:
        task_id: the task.
        skill: ride or food.
        status: the new status.
        seq: 1, 2, ... in the order the platform produced them (order by this, not by arrival).
        event_id: unique per status change; a redelivery repeats it (dedupe on it).
        eta_s: seconds to pickup/arrival/delivery, when the platform gives one.
        driver: the driver (rides, from ``accepted`` on).
        courier_lat: courier position (food, from ``courier_assigned`` on).
        courier_lon: courier position.
        price: fare estimate, final fare on ``completed``, or the order total.
        occurred_ms: when the status changed.
    """

    task_id: str
    skill: Skill
    status: TaskStatus
    seq: int
    event_id: str
    eta_s: int | None
    driver: Driver | None
    courier_lat: float | None
    courier_lon: float | None
    price: Price | None
    occurred_ms: int


_DRIVER_NAMES = ("王师傅", "李师傅", "张师傅", "刘师傅", "陈师傅", "杨师傅", "赵师傅", "周师傅")
_VEHICLES = ("白色 比亚迪秦PLUS", "黑色 大众帕萨特", "银色 丰田凯美瑞", "白色 吉利帝豪", "蓝色 特斯拉Model 3")
_DRIVE_MPS = 8.0  # urban average including lights
_COURIER_MPS = 5.0  # e-bike courier
_M_PER_DEG = 111_320.0


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _offset(lat: float, lon: float, dist_m: float, bearing_rad: float) -> tuple[float, float]:
    dlat = dist_m * math.cos(bearing_rad) / _M_PER_DEG
    dlon = dist_m * math.sin(bearing_rad) / (_M_PER_DEG * math.cos(math.radians(lat)))
    return (lat + dlat, lon + dlon)


def _place(
    slots: Mapping[str, object], key: str, default: str, rng: random.Random, near: tuple[float, float]
) -> tuple[float, float]:
    value = slots.get(key, default)
    if isinstance(value, Place):
        return (value.lat, value.lon)
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return (float(value[0]), float(value[1]))
    if isinstance(value, str) and value in PLACES:
        p = PLACES[value]
        return (p.lat, p.lon)
    # A place the emulator does not know (free text from the agent): somewhere 2-12 km away, seeded.
    return _offset(*near, rng.uniform(2_000.0, 12_000.0), rng.uniform(0.0, 2 * math.pi))


@dataclass(frozen=True, slots=True)
class _Step:
    after_ms: int
    status: TaskStatus
    eta_s: int | None = None
    driver: Driver | None = None
    courier: tuple[float, float] | None = None
    price: Price | None = None


class TaskSim:
    """One task on the phone, from quote to a terminal status. Create it with :meth:`start`.

    After :meth:`confirm`, the whole status schedule is drawn at once (seeded); :meth:`due` hands out the
    updates whose time has come. :meth:`cancel` replaces the rest of the schedule with a cancellation.
    """

    def __init__(
        self,
        *,
        skill: Skill,
        quote: Quote,
        rng: random.Random,
        fail: str | None,
        factor: float,
        points: tuple[tuple[float, float], tuple[float, float]],
    ) -> None:
        self.skill = skill
        self.task_id = quote.task_id
        self.quote = quote
        self._rng = rng
        self._fail = fail
        self._factor = factor
        self._points = points
        self._schedule: list[StatusUpdate] = []
        self._history: list[StatusUpdate] = []
        self._seq = 0
        self._confirmed = False
        self._closed = False  # cancelled before confirmation, or a terminal status scheduled

    @classmethod
    def start(
        cls,
        skill: Skill | str,
        slots: Mapping[str, object],
        now_ms: int,
        rng: random.Random,
        *,
        fail: str | None = None,
        speed_profile: SpeedProfile = SpeedProfile.REALISTIC,
    ) -> TaskSim:
        """Open a task and quote it.

        Args:
            skill: ``hail_ride`` or ``order_food``.
            slots: ride: ``pickup``, ``destination``; food: ``dish``, ``qty``, ``restaurant``, ``address``.
                A place is a :class:`Place`, a key of ``PLACES``, or ``(lat, lon)``; unknown text gets a
                seeded point 2-12 km away.
            now_ms: the time of the quote.
            rng: the source of every random draw (ids included).
            fail: play out a failure: ride ``driver_canceled`` (then re-dispatched), ``no_drivers_available``
                or ``rider_canceled``; food ``cancelled`` (the merchant rejects).
            speed_profile: scales every duration (and so every ETA).

        Returns:
            The task; its :attr:`quote` carries the price and ETA to confirm.

        Raises:
            ConfigError: an unknown skill or failure.
        """
        try:
            sk = Skill(skill)
        except ValueError as exc:
            raise ConfigError(f"unknown task skill {skill!r}") from exc
        if fail is not None and fail not in FAILURES[sk]:
            raise ConfigError(f"{sk} cannot fail with {fail!r}; choose from {sorted(FAILURES[sk])}")
        factor = SpeedProfile(speed_profile).factor
        home = (PLACES["home"].lat, PLACES["home"].lon)
        if sk is Skill.HAIL_RIDE:
            a = _place(slots, "pickup", "home", rng, home)
            b = _place(slots, "destination", "station", rng, a)
            km = haversine_m(*a, *b) / 1000
            trip_min = haversine_m(*a, *b) / _DRIVE_MPS / 60
            # Hangzhou-taxi-like: 13 yuan for the first 3 km, 2.5/km after, 0.5/min of driving.
            fare = round(13.0 + 2.5 * max(0.0, km - 3.0) + 0.5 * trip_min, 2)
            eta = round(rng.uniform(180.0, 480.0) * factor)
            summary = f"快车 {km:.1f} km, 约 {trip_min:.0f} 分钟"
        else:
            a = _place(slots, "restaurant", "restaurant", rng, home)
            b = _place(slots, "address", "home", rng, a)
            dish = str(slots.get("dish", "牛肉面"))
            raw_qty = slots.get("qty", 1)
            qty = raw_qty if isinstance(raw_qty, int) and raw_qty > 0 else 1
            item = float(rng.randint(18, 42))
            fees = rng.choice((3.0, 3.5, 4.0, 5.0, 6.0)) + rng.choice((1.0, 1.5, 2.0))
            fare = round(item * qty + fees, 2)
            eta = round((rng.uniform(15 * 60, 25 * 60) + haversine_m(*a, *b) / _COURIER_MPS) * factor)
            summary = f"{dish} x{qty}"
        task_id = f"{'ride' if sk is Skill.HAIL_RIDE else 'food'}-{rng.getrandbits(32):08x}"
        quote = Quote(task_id, sk, _uuid(rng), Price(fare), int(eta), summary, haversine_m(*a, *b))
        return cls(skill=sk, quote=quote, rng=rng, fail=fail, factor=factor, points=(a, b))

    # ----- state ------------------------------------------------------------------------------------------

    @property
    def status(self) -> TaskStatus | None:
        """The last status handed out by :meth:`due` (``None`` before the first)."""
        return self._history[-1].status if self._history else None

    @property
    def confirmed(self) -> bool:
        """Whether the user confirmed the quote."""
        return self._confirmed

    @property
    def done(self) -> bool:
        """Nothing more will happen: a terminal status was handed out, or it was dropped unconfirmed."""
        if not self._confirmed:
            return self._closed
        return not self._schedule and self.status in TERMINAL_STATUSES

    @property
    def history(self) -> tuple[StatusUpdate, ...]:
        """Every update handed out so far, in order."""
        return tuple(self._history)

    def next_due_ms(self) -> int | None:
        """When the next update is due, if any is scheduled."""
        return self._schedule[0].occurred_ms if self._schedule else None

    def due(self, now_ms: int) -> list[StatusUpdate]:
        """Hand out (once) every update whose time is ``<= now_ms``, in ``seq`` order."""
        out: list[StatusUpdate] = []
        while self._schedule and self._schedule[0].occurred_ms <= now_ms:
            out.append(self._schedule.pop(0))
        self._history.extend(out)
        return out

    # ----- commands ---------------------------------------------------------------------------------------

    def confirm(self, now_ms: int) -> None:
        """The user confirmed the quote at ``now_ms``: draw and schedule every status.

        Raises:
            DeviceError: confirmed twice, or after a cancel.
        """
        if self._confirmed or self._closed:
            raise DeviceError(f"task {self.task_id} cannot be confirmed again")
        self._confirmed = True
        steps = self._ride_steps() if self.skill is Skill.HAIL_RIDE else self._food_steps()
        t = now_ms
        for st in steps:
            t += st.after_ms
            self._append(st, t)
        self._closed = True

    def cancel(self, now_ms: int) -> bool:
        """The user cancels at ``now_ms``.

        Unconfirmed tasks are simply dropped. A ride can be cancelled until the trip starts, an order until
        it is picked up; the cancellation is scheduled at ``now_ms`` and replaces what would have followed.

        Returns:
            Whether the cancel took effect (``False`` when it is too late or the task is already over).
        """
        if not self._confirmed:
            if self._closed:
                return False
            self._closed = True
            return True
        happened = [*self._history, *(u for u in self._schedule if u.occurred_ms <= now_ms)]
        last = happened[-1].status if happened else None
        too_late = {
            RideStatus.IN_PROGRESS,
            FoodStatus.PICKED_UP,
            FoodStatus.NEAR_CUSTOMER,
            *TERMINAL_STATUSES,
        }
        if last in too_late or not self._schedule:
            return False
        kept = [u for u in self._schedule if u.occurred_ms <= now_ms]
        self._seq -= len(self._schedule) - len(kept)
        self._schedule = kept
        status: TaskStatus = RideStatus.RIDER_CANCELED if self.skill is Skill.HAIL_RIDE else FoodStatus.CANCELLED
        self._append(_Step(0, status, price=self.quote.price), now_ms)
        return True

    # ----- schedules --------------------------------------------------------------------------------------

    def _append(self, st: _Step, at_ms: int) -> None:
        self._seq += 1
        lat, lon = st.courier if st.courier is not None else (None, None)
        self._schedule.append(
            StatusUpdate(
                task_id=self.task_id,
                skill=self.skill,
                status=st.status,
                seq=self._seq,
                event_id=_uuid(self._rng),
                eta_s=st.eta_s,
                driver=st.driver,
                courier_lat=lat,
                courier_lon=lon,
                price=st.price,
                occurred_ms=at_ms,
            )
        )

    def _s(self, lo: float, hi: float) -> int:
        """A scaled duration in ms, drawn uniformly from [lo, hi] seconds."""
        return max(1, round(self._rng.uniform(lo, hi) * 1000 * self._factor))

    def _driver(self) -> Driver:
        rng = self._rng
        plate = f"浙A·{rng.choice('BCDFGKLMNQ')}{rng.randint(1000, 9999)}"
        return Driver(rng.choice(_DRIVER_NAMES), plate, rng.choice(_VEHICLES))

    def _dispatch(self, steps: list[_Step]) -> tuple[Driver, int]:
        """Processing -> accepted; returns the driver and the pickup time in ms."""
        driver = self._driver()
        pickup_ms = max(1, round(self.quote.eta_s * 1000 * self._rng.uniform(0.8, 1.25)))
        steps.append(
            _Step(
                self._s(5, 40),
                RideStatus.ACCEPTED,
                math.ceil(pickup_ms / 1000),
                driver,
                price=self.quote.price,
            )
        )
        return driver, pickup_ms

    def _ride_steps(self) -> list[_Step]:
        est = self.quote.price
        steps = [_Step(0, RideStatus.PROCESSING, price=est)]
        if self._fail == RideStatus.NO_DRIVERS_AVAILABLE:
            steps.append(_Step(self._s(30, 90), RideStatus.NO_DRIVERS_AVAILABLE))
            return steps
        driver, pickup_ms = self._dispatch(steps)
        if self._fail in (RideStatus.DRIVER_CANCELED, RideStatus.RIDER_CANCELED):
            cut = round(pickup_ms * self._rng.uniform(0.2, 0.6))
            if self._fail == RideStatus.RIDER_CANCELED:
                steps.append(_Step(cut, RideStatus.RIDER_CANCELED, driver=driver, price=est))
                return steps
            steps.append(_Step(cut, RideStatus.DRIVER_CANCELED, driver=driver, price=est))
            steps.append(_Step(self._s(1, 5), RideStatus.PROCESSING, price=est))  # re-dispatch
            driver, pickup_ms = self._dispatch(steps)
        # "arriving" = arrived or within 0.2 mi; announced 20-60 s before pickup.
        arriving_ms = min(pickup_ms, self._s(20, 60))
        steps.append(
            _Step(pickup_ms - arriving_ms, RideStatus.ARRIVING, math.ceil(arriving_ms / 1000), driver, price=est)
        )
        trip_ms = max(1, round(self.quote.distance_m / _DRIVE_MPS * 1000 * self._factor))
        steps.append(
            _Step(
                arriving_ms + self._s(30, 120),
                RideStatus.IN_PROGRESS,
                math.ceil(trip_ms / 1000),
                driver,
                price=est,
            )
        )
        final = Price(round(est.amount * self._rng.uniform(0.95, 1.10), 2), est.currency)
        steps.append(_Step(trip_ms, RideStatus.COMPLETED, 0, driver, price=final))
        return steps

    def _food_steps(self) -> list[_Step]:
        total = self.quote.price
        store, door = self._points
        steps = [_Step(0, FoodStatus.PLACED, self.quote.eta_s, price=total)]
        if self._fail == FoodStatus.CANCELLED:
            steps.append(_Step(self._s(30, 180), FoodStatus.CANCELLED, price=total))
            return steps
        accept = self._s(20, 90)
        assign = self._s(60, 300)
        to_store = self._s(180, 480)
        wait = self._s(60, 300)
        dist = haversine_m(*store, *door)
        ride = max(round(240_000 * self._factor), round(dist / _COURIER_MPS * 1000 * self._factor))
        near = min(ride - 1, self._s(90, 170))  # always <= 3 min out, so "courier near" can fire
        start = _offset(*store, self._rng.uniform(500.0, 1500.0), self._rng.uniform(0.0, 2 * math.pi))
        f = 1.0 - near / ride
        near_pos = (store[0] + (door[0] - store[0]) * f, store[1] + (door[1] - store[1]) * f)

        def eta(remaining_ms: int) -> int:
            return math.ceil(remaining_ms / 1000)

        steps.append(_Step(accept, FoodStatus.ACCEPTED_BY_MERCHANT, eta(assign + to_store + wait + ride), price=total))
        steps.append(
            _Step(assign, FoodStatus.COURIER_ASSIGNED, eta(to_store + wait + ride), courier=start, price=total)
        )
        steps.append(_Step(to_store, FoodStatus.AT_STORE, eta(wait + ride), courier=store, price=total))
        steps.append(_Step(wait, FoodStatus.PICKED_UP, eta(ride), courier=store, price=total))
        steps.append(_Step(ride - near, FoodStatus.NEAR_CUSTOMER, eta(near), courier=near_pos, price=total))
        steps.append(_Step(near, FoodStatus.DELIVERED, 0, courier=door, price=total))
        return steps


@dataclass(order=True, frozen=True, slots=True)
class _Queued:
    deliver_ms: int
    n: int  # unique, so ties on time keep feed order
    update: StatusUpdate = field(compare=False)


class WebhookChaos:
    """Delivers status updates the way real webhooks arrive: sometimes twice, late, or out of order.

    Deterministic for a seed and a feed sequence. A duplicate repeats the very same update (same
    ``event_id``) after a retry gap. A late update is delayed. A reordered update is held back until the next
    update of the same task has been delivered (or ``max_hold_ms`` passes), so a later status arrives
    first. Terminal statuses are never held back (nothing would release them).

    Args:
        rng: the source of every random draw.
        dup_p: probability an update is delivered twice.
        late_p: probability an update is delayed by ``late_ms``.
        reorder_p: probability an update is held behind the next one of its task.
        late_ms: range of the delay for a late update.
        dup_gap_ms: range of the gap before a redelivery (Uber retries with back-off).
        max_hold_ms: the longest a held update waits for its successor.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        dup_p: float = 0.1,
        late_p: float = 0.1,
        reorder_p: float = 0.1,
        late_ms: tuple[int, int] = (5_000, 120_000),
        dup_gap_ms: tuple[int, int] = (1_000, 60_000),
        max_hold_ms: int = 600_000,
    ) -> None:
        for name, p in (("dup_p", dup_p), ("late_p", late_p), ("reorder_p", reorder_p)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must be a probability, got {p}")
        self._rng = rng
        self.dup_p, self.late_p, self.reorder_p = dup_p, late_p, reorder_p
        self.late_ms, self.dup_gap_ms, self.max_hold_ms = late_ms, dup_gap_ms, max_hold_ms
        self._queue: list[_Queued] = []
        self._held: dict[str, tuple[StatusUpdate, int]] = {}
        self._n = 0

    @property
    def pending(self) -> int:
        """Deliveries not yet handed out (held updates included)."""
        return len(self._queue) + len(self._held)

    def _push(self, update: StatusUpdate, at_ms: int) -> None:
        self._n += 1
        heapq.heappush(self._queue, _Queued(at_ms, self._n, update))
        if self._rng.random() < self.dup_p:
            self._n += 1
            heapq.heappush(self._queue, _Queued(at_ms + self._rng.randint(*self.dup_gap_ms), self._n, update))

    def feed(self, updates: Iterable[StatusUpdate]) -> None:
        """Accept updates as the platform emits them (e.g. the output of :meth:`TaskSim.due`)."""
        rng = self._rng
        for u in updates:
            at = u.occurred_ms
            if rng.random() < self.late_p:
                at += rng.randint(*self.late_ms)
            held = self._held.pop(u.task_id, None)
            if held is None and u.status not in TERMINAL_STATUSES and rng.random() < self.reorder_p:
                self._held[u.task_id] = (u, at)
                continue
            self._push(u, at)
            if held is not None:
                self._push(held[0], max(held[1], at) + 1)  # lands just after its successor

    def _release_expired(self, now_ms: int) -> None:
        for task_id, (u, at) in list(self._held.items()):
            if at + self.max_hold_ms <= now_ms:
                del self._held[task_id]
                self._push(u, at + self.max_hold_ms)

    def due(self, now_ms: int) -> list[StatusUpdate]:
        """Every delivery due by ``now_ms``, in delivery order."""
        self._release_expired(now_ms)
        out: list[StatusUpdate] = []
        while self._queue and self._queue[0].deliver_ms <= now_ms:
            out.append(heapq.heappop(self._queue).update)
        return out

    def next_due_ms(self) -> int | None:
        """When the next delivery is due (held updates count at their hold deadline)."""
        times = [q.deliver_ms for q in self._queue[:1]]
        times += [at + self.max_hold_ms for _, at in self._held.values()]
        return min(times) if times else None

    def flush(self) -> list[StatusUpdate]:
        """Everything still pending, held updates included, in delivery order."""
        self._release_expired(2**62)
        out = [q.update for q in sorted(self._queue)]
        self._queue.clear()
        return out
