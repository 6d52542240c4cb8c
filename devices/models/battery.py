"""Battery models for the ring, the glasses' two hot-swappable cells, and the earphones with their case.

All three integrate piecewise-linearly: a level changes at a constant rate between calls, and any call that
changes the rate (load, charging, a swap) first brings the level up to that moment. A time earlier than the
last update changes nothing, so a caller that reads the same instant twice gets the same answer.
``load`` is a dimensionless drain multiplier: 1.0 is "in use" as the runtime figures below define it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.errors import ConfigError, DeviceError

_MS_PER_H = 3_600_000


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _check_level(level_pct: float) -> float:
    if not 0.0 <= level_pct <= 100.0:
        raise ConfigError(f"battery level must be within 0..100 %, got {level_pct}")
    return float(level_pct)


def _check_load(load: float) -> float:
    if not load >= 0.0:
        raise ConfigError(f"load must be >= 0, got {load}")
    return float(load)


class RingBattery:
    """A smart ring's battery: ~6 days on default sampling, less with continuous SpO2.

    ``load`` 1.0 is the default sampling plan (drains 100 % in ``battery_days``). Continuous SpO2 multiplies
    it by ``spo2_factor`` (1.6 turns 6 days into 3.75, inside the 3-5 days reviewers report).

    Args:
        now_ms: the time of the initial level.
        level_pct: initial charge.
        battery_days: days from full to empty at load 1.0.
        charge_h: hours from empty to full on the charger.
        spo2_factor: drain multiplier while continuous SpO2 is on.
    """

    def __init__(
        self,
        *,
        now_ms: int,
        level_pct: float = 100.0,
        battery_days: float = 6.0,
        charge_h: float = 1.5,
        spo2_factor: float = 1.6,
    ) -> None:
        if battery_days <= 0 or charge_h <= 0 or spo2_factor < 1.0:
            raise ConfigError("battery_days and charge_h must be positive, spo2_factor >= 1")
        self._level = _check_level(level_pct)
        self._t = now_ms
        self._drain_per_ms = 100.0 / (battery_days * 24 * _MS_PER_H)
        self._charge_per_ms = 100.0 / (charge_h * _MS_PER_H)
        self._spo2_factor = spo2_factor
        self._load = 1.0
        self._continuous_spo2 = False
        self._charging = False

    def _advance(self, now_ms: int) -> None:
        dt = now_ms - self._t
        if dt <= 0:
            return
        if self._charging:
            self._level = _clamp(self._level + dt * self._charge_per_ms, 0.0, 100.0)
        else:
            factor = self._spo2_factor if self._continuous_spo2 else 1.0
            self._level = _clamp(self._level - dt * self._drain_per_ms * self._load * factor, 0.0, 100.0)
        self._t = now_ms

    @property
    def charging(self) -> bool:
        """Whether the ring sits on its charger."""
        return self._charging

    @property
    def continuous_spo2(self) -> bool:
        """Whether continuous SpO2 sampling is on."""
        return self._continuous_spo2

    def level_pct(self, now_ms: int) -> float:
        """Charge at ``now_ms``, 0..100."""
        self._advance(now_ms)
        return self._level

    def set_load(self, load: float, now_ms: int) -> None:
        """Change the drain multiplier from ``now_ms`` on (e.g. 3.0 during a real-time measurement)."""
        self._advance(now_ms)
        self._load = _check_load(load)

    def set_continuous_spo2(self, on: bool, now_ms: int) -> None:
        """Turn continuous SpO2 on or off from ``now_ms``."""
        self._advance(now_ms)
        self._continuous_spo2 = on

    def set_charging(self, charging: bool, now_ms: int) -> None:
        """Put the ring on or take it off the charger at ``now_ms``."""
        self._advance(now_ms)
        self._charging = charging


class Slot(StrEnum):
    """A temple of the glasses, each holding one cell; also an earbud side."""

    LEFT = "left"
    RIGHT = "right"


class SwapAction(StrEnum):
    """What happened to a glasses cell."""

    REMOVED = "removed"
    INSERTED = "inserted"


@dataclass(frozen=True, slots=True)
class CellSwap:
    """One half of a hot swap, shaped like the ``glasses.battery_swap`` event.

    Attributes:
        slot: which temple.
        action: removed or inserted.
        remaining_pct_other: the level of the other cell at that moment (0 if it is absent).
        occurred_ms: when it happened.
    """

    slot: Slot
    action: SwapAction
    remaining_pct_other: float
    occurred_ms: int


@dataclass(frozen=True, slots=True)
class CellState:
    """One glasses cell as the ``glasses.battery`` event reports it.

    Attributes:
        slot: which temple.
        level_pct: 0..100 (0 when absent).
        present: whether a cell is in the slot.
    """

    slot: Slot
    level_pct: float
    present: bool


class GlassesCells:
    """Two hot-swappable 280 mAh cells, one in each temple.

    Load policy (a design choice): **one cell drains at a time**, the emptier present cell first, down to
    zero, then the other. This keeps the fuller cell as a reserve, so the "one cell is low while the other is
    present: swap it" hint is reachable, and the glasses stay powered while the low cell is out. A cell alone
    at load 1.0 lasts ``runtime_h_per_cell`` (3.5 h; two cells give the reported ~7 h of continuous use).
    Charging (glasses in the case) fills every present cell at once.

    Args:
        now_ms: time of the initial levels.
        left_pct: initial charge of the left cell.
        right_pct: initial charge of the right cell.
        cell_mah: nominal capacity, for reference (the drain is set by the runtime).
        runtime_h_per_cell: hours one full cell lasts at load 1.0.
        charge_h: hours to fill an empty cell in the case.
    """

    def __init__(
        self,
        *,
        now_ms: int,
        left_pct: float = 100.0,
        right_pct: float = 100.0,
        cell_mah: int = 280,
        runtime_h_per_cell: float = 3.5,
        charge_h: float = 1.0,
    ) -> None:
        if runtime_h_per_cell <= 0 or charge_h <= 0:
            raise ConfigError("runtime_h_per_cell and charge_h must be positive")
        self.cell_mah = cell_mah
        self._levels = {Slot.LEFT: _check_level(left_pct), Slot.RIGHT: _check_level(right_pct)}
        self._present = {Slot.LEFT: True, Slot.RIGHT: True}
        self._t = now_ms
        self._drain_per_ms = 100.0 / (runtime_h_per_cell * _MS_PER_H)
        self._charge_per_ms = 100.0 / (charge_h * _MS_PER_H)
        self._load = 1.0
        self._charging = False

    def _draining_slot(self) -> Slot | None:
        live = [s for s in Slot if self._present[s] and self._levels[s] > 0.0]
        # min() keeps LEFT on a tie, so equal cells drain left first: a deterministic, documentable order.
        return min(live, key=lambda s: self._levels[s]) if live else None

    def _advance(self, now_ms: int) -> None:
        dt = now_ms - self._t
        if dt <= 0:
            return
        self._t = now_ms
        if self._charging:
            for s in Slot:
                if self._present[s]:
                    self._levels[s] = min(100.0, self._levels[s] + dt * self._charge_per_ms)
            return
        need = dt * self._drain_per_ms * self._load  # percentage points of one cell
        while need > 0:
            slot = self._draining_slot()
            if slot is None:
                return
            take = min(need, self._levels[slot])
            self._levels[slot] -= take
            need -= take

    @property
    def charging(self) -> bool:
        """Whether the glasses are charging (in the case)."""
        return self._charging

    def level(self, slot: Slot, now_ms: int) -> float:
        """Charge of the cell in ``slot`` at ``now_ms`` (0 if the slot is empty)."""
        self._advance(now_ms)
        return self._levels[slot] if self._present[slot] else 0.0

    def present(self, slot: Slot) -> bool:
        """Whether a cell sits in ``slot``."""
        return self._present[slot]

    def combined_pct(self, now_ms: int) -> float:
        """Total remaining energy as a share of two full cells, 0..100."""
        return (self.level(Slot.LEFT, now_ms) + self.level(Slot.RIGHT, now_ms)) / 2

    def powered(self, now_ms: int) -> bool:
        """Whether any present cell still has charge."""
        self._advance(now_ms)
        return self._draining_slot() is not None

    def cells(self, now_ms: int) -> tuple[CellState, CellState]:
        """Both cells (left, right) at ``now_ms``."""
        left, right = (CellState(s, self.level(s, now_ms), self._present[s]) for s in Slot)
        return (left, right)

    def runtime_left_s(self, now_ms: int) -> float:
        """Seconds of use left at the current load (infinite at load 0 or while charging)."""
        total = self.level(Slot.LEFT, now_ms) + self.level(Slot.RIGHT, now_ms)
        if self._charging or self._load == 0.0:
            return float("inf")
        return total / (self._drain_per_ms * self._load) / 1000

    def set_load(self, load: float, now_ms: int) -> None:
        """Change the drain multiplier from ``now_ms`` on (display on, speaking: higher; idle: ~0.3)."""
        self._advance(now_ms)
        self._load = _check_load(load)

    def set_charging(self, charging: bool, now_ms: int) -> None:
        """Start or stop charging at ``now_ms``."""
        self._advance(now_ms)
        self._charging = charging

    def remove(self, slot: Slot, now_ms: int) -> CellSwap:
        """Take the cell out of ``slot``.

        Raises:
            DeviceError: the slot is already empty.
        """
        self._advance(now_ms)
        if not self._present[slot]:
            raise DeviceError(f"no cell in the {slot} slot")
        self._present[slot] = False
        self._levels[slot] = 0.0
        return CellSwap(slot, SwapAction.REMOVED, self._other_level(slot), now_ms)

    def insert(self, slot: Slot, now_ms: int, *, level_pct: float = 100.0) -> CellSwap:
        """Put a cell charged to ``level_pct`` into ``slot``.

        Raises:
            DeviceError: the slot is occupied.
        """
        self._advance(now_ms)
        if self._present[slot]:
            raise DeviceError(f"the {slot} slot is occupied")
        self._present[slot] = True
        self._levels[slot] = _check_level(level_pct)
        return CellSwap(slot, SwapAction.INSERTED, self._other_level(slot), now_ms)

    def swap(self, slot: Slot, now_ms: int) -> tuple[CellSwap, CellSwap]:
        """Replace the cell in ``slot`` by a full one (an empty slot just gets the full cell).

        Returns:
            The removal and the insertion, both at ``now_ms``; for an empty slot the removal is synthesised
            with the same timestamp so the caller can always publish the pair.
        """
        removed = (
            self.remove(slot, now_ms)
            if self._present[slot]
            else CellSwap(slot, SwapAction.REMOVED, self._other_level(slot), now_ms)
        )
        return removed, self.insert(slot, now_ms)

    def _other_level(self, slot: Slot) -> float:
        other = Slot.RIGHT if slot is Slot.LEFT else Slot.LEFT
        return self._levels[other] if self._present[other] else 0.0


@dataclass(frozen=True, slots=True)
class EarphonesLevels:
    """Levels as the ``earphones.battery`` event reports them.

    Attributes:
        left_pct: left bud, 0..100.
        right_pct: right bud, 0..100.
        case_pct: case, 0..100.
        charging: whether the case is on a cable (or either bud is charging in the case).
    """

    left_pct: float
    right_pct: float
    case_pct: float
    charging: bool


class EarphonesBattery:
    """Two earbuds and a charging case.

    A bud out of the case drains at ``load`` (1.0 = listening, 6 h to empty). A bud in the case charges from
    the case (full in ``bud_charge_h``) while the case has charge; the case holds ``case_recharges`` full
    charges of both buds. A case on a cable charges itself (full in ``case_charge_h``) and tops the buds up
    without spending its own charge.

    Args:
        now_ms: time of the initial levels.
        left_pct: initial charge of the left bud.
        right_pct: initial charge of the right bud.
        case_pct: initial charge of the case.
        bud_runtime_h: hours one bud lasts at load 1.0.
        bud_charge_h: hours to fill an empty bud in the case.
        case_recharges: full charges of both buds the case holds.
        case_charge_h: hours to fill the empty case on a cable.
    """

    def __init__(
        self,
        *,
        now_ms: int,
        left_pct: float = 100.0,
        right_pct: float = 100.0,
        case_pct: float = 100.0,
        bud_runtime_h: float = 6.0,
        bud_charge_h: float = 1.0,
        case_recharges: float = 4.0,
        case_charge_h: float = 2.0,
    ) -> None:
        if min(bud_runtime_h, bud_charge_h, case_recharges, case_charge_h) <= 0:
            raise ConfigError("battery durations and case_recharges must be positive")
        self._buds = {Slot.LEFT: _check_level(left_pct), Slot.RIGHT: _check_level(right_pct)}
        self._in_case = {Slot.LEFT: False, Slot.RIGHT: False}
        self._case = _check_level(case_pct)
        self._t = now_ms
        self._drain_per_ms = 100.0 / (bud_runtime_h * _MS_PER_H)
        self._bud_charge_per_ms = 100.0 / (bud_charge_h * _MS_PER_H)
        # One bud percentage point costs the case 1 / (2 * recharges) points: both buds, `recharges` times.
        self._case_cost = 1.0 / (2.0 * case_recharges)
        self._case_charge_per_ms = 100.0 / (case_charge_h * _MS_PER_H)
        self._load = 1.0
        self._case_on_cable = False

    def _advance(self, now_ms: int) -> None:
        dt = now_ms - self._t
        if dt <= 0:
            return
        self._t = now_ms
        if self._case_on_cable:
            self._case = min(100.0, self._case + dt * self._case_charge_per_ms)
        for s in Slot:
            if not self._in_case[s]:
                self._buds[s] = max(0.0, self._buds[s] - dt * self._drain_per_ms * self._load)
                continue
            gain = min(100.0 - self._buds[s], dt * self._bud_charge_per_ms)
            if not self._case_on_cable:
                gain = min(gain, self._case / self._case_cost)
                self._case = max(0.0, self._case - gain * self._case_cost)
            self._buds[s] += gain

    def levels(self, now_ms: int) -> EarphonesLevels:
        """All three levels at ``now_ms``."""
        self._advance(now_ms)
        charging = self._case_on_cable or any(
            self._in_case[s] and self._buds[s] < 100.0 and self._case > 0.0 for s in Slot
        )
        return EarphonesLevels(self._buds[Slot.LEFT], self._buds[Slot.RIGHT], self._case, charging)

    def level(self, slot: Slot, now_ms: int) -> float:
        """Charge of one bud at ``now_ms``."""
        self._advance(now_ms)
        return self._buds[slot]

    def case_pct(self, now_ms: int) -> float:
        """Charge of the case at ``now_ms``."""
        self._advance(now_ms)
        return self._case

    def in_case(self, slot: Slot) -> bool:
        """Whether the bud on ``slot`` sits in the case."""
        return self._in_case[slot]

    def set_in_case(self, slot: Slot, in_case: bool, now_ms: int) -> None:
        """Put a bud into the case or take it out at ``now_ms``."""
        self._advance(now_ms)
        self._in_case[slot] = in_case

    def set_case_charging(self, on_cable: bool, now_ms: int) -> None:
        """Connect or disconnect the case's cable at ``now_ms``."""
        self._advance(now_ms)
        self._case_on_cable = on_cable

    def set_load(self, load: float, now_ms: int) -> None:
        """Change the buds' drain multiplier from ``now_ms`` on (speaking/ANC higher, idle lower)."""
        self._advance(now_ms)
        self._load = _check_load(load)
