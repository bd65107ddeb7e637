"""Tips and waste of one Opentrons robot, counted between runs.

Opentrons robots do not remember tips between runs, so :class:`Supplies` counts them: the
number of unused tips per rack role ("tips" for the main pipette, "small_tips" for the small
one), used positions first, so each run is told where to start. Likewise it adds up the
liquid sent to the waste reservoir. A job the racks cannot serve, or that would overfill the
reservoir, is refused with a DeviceNeedsOperator saying what to do, before anything is
uploaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from labctl.errors import DeviceNeedsOperator
from labctl.labware import get_labware

from .opentrons_protocol import DeckLayout, OutOfTips

__all__ = ["Supplies"]

# Share of the waste reservoir's capacity filled before the operator must empty it.
_WASTE_FILL = 0.9


class Supplies:
    """Unused tips per rack role and the liquid in the waste reservoir (µL) of ``layout``.

    ``tip_capacity``: unused tips now in the racks, an int for the main pipette's racks or a
    mapping per rack role; roles not given count as full racks (None: all full).
    ``store_tips`` is called with the per-role counts whenever they change, so the caller can
    persist them and pass them back as ``tip_capacity`` after a restart. ``waste_ul`` is the
    liquid already in the waste reservoir. Thread-safe: one lock guards the counts.
    """

    def __init__(
        self,
        name: str,
        layout: DeckLayout,
        *,
        tip_capacity: int | Mapping[str, int] | None = None,
        store_tips: Callable[[dict[str, int]], None] | None = None,
        waste_ul: float = 0.0,
    ) -> None:
        self.name = name
        self.layout = layout
        self._full = layout.tip_capacity()
        self._left = dict(self._full)
        given = {"tips": tip_capacity} if isinstance(tip_capacity, int) else (tip_capacity or {})
        for role, count in given.items():
            self._left[role] = self._valid_count(role, count)
        self._store = store_tips
        self._lock = threading.Lock()
        self._waste_ul = float(waste_ul)
        self._waste_max_ul = get_labware(layout.waste_labware).capacity_ul * _WASTE_FILL

    @property
    def tips_left(self) -> dict[str, int]:
        """Unused tips per rack role."""
        with self._lock:
            return dict(self._left)

    def first_tips(self) -> dict[str, int]:
        """Per rack role, the position of the first unused tip (0-based)."""
        with self._lock:
            return {role: self._full[role] - self._left[role] for role in self._full}

    def refilled(self, n: int | None = None, role: str = "tips") -> None:
        """``role``'s racks now hold ``n`` unused tips (None: full), in the last positions."""
        with self._lock:
            self._left[role] = self._full.get(role, 0) if n is None else self._valid_count(role, n)
            left = dict(self._left)
        if self._store is not None:
            self._store(left)

    @property
    def waste_ul(self) -> float:
        """Liquid sent to the waste reservoir since it was last emptied (µL)."""
        with self._lock:
            return self._waste_ul

    def emptied(self) -> None:
        """The operator emptied the waste reservoir."""
        with self._lock:
            self._waste_ul = 0.0

    def use(self, tips: Mapping[str, int], waste_ul: float) -> None:
        """Count ``tips`` (per role) as used and ``waste_ul`` (µL) as sent to the waste."""
        with self._lock:
            for role, used in tips.items():
                self._left[role] = max(0, self._left.get(role, 0) - used)
            self._waste_ul += waste_ul
            left = dict(self._left)
        if self._store is not None:
            self._store(left)

    def require_tips(self, command: str, tips: Mapping[str, int]) -> None:
        """Raise DeviceNeedsOperator ("refill tips") if the racks hold fewer than ``tips``."""
        left = self.tips_left
        short = {
            role: (used, left.get(role, 0))
            for role, used in tips.items()
            if used > left.get(role, 0)
        }
        if short:
            raise self.out_of_tips(command, OutOfTips(short))

    def require_waste_room(self, command: str, waste_ul: float) -> None:
        """Raise DeviceNeedsOperator ("empty the waste reservoir") if ``waste_ul`` more (µL)
        would fill the reservoir past its limit."""
        waste = self.waste_ul
        if waste + waste_ul > self._waste_max_ul:
            raise DeviceNeedsOperator(
                self.name,
                command,
                f"empty the waste reservoir in slot {self.layout.waste}: it holds about "
                f"{waste / 1000:g} mL and the job adds {waste_ul / 1000:g} mL; then confirm",
            )

    def out_of_tips(self, command: str, exc: OutOfTips) -> DeviceNeedsOperator:
        """The "refill tips" request for a shortfall: what is needed and where."""
        layout = self.layout
        parts = []
        for role, (need, left) in exc.short.items():
            slots = layout.tips if role == "tips" else layout.small_tips
            rack = layout.tip_rack if role == "tips" else layout.small_tip_rack
            parts.append(
                f"{need} {role.replace('_', ' ')} needed, {left} left in slot(s) "
                f"{', '.join(slots)} ({rack})"
            )
        message = "refill tips: " + "; ".join(parts) + ": put full racks in, then confirm"
        return DeviceNeedsOperator(self.name, command, message)

    def _valid_count(self, role: str, count: object) -> int:
        if role not in self._full:
            raise ValueError(f"{self.name}: no tip racks for {role!r} on this deck")
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"{self.name}: a tip count must be an integer, not {count!r}")
        if not 0 <= count <= self._full[role]:
            raise ValueError(
                f"{self.name}: {role} racks hold 0..{self._full[role]} tips, not {count}"
            )
        return count
