"""Concentration arithmetic for wells and media (plain functions of floats, tested alone).

Conventions: volumes in microlitres (µL); a concentration is a float in the compound's
canonical unit (see :class:`CompoundUnits`), so sums and C1V1 need no unit handling in the
inner loops. Aspiration is taken as complete (no residual film): a full change or a wash
leaves nothing of the old medium behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pint

from labctl.units import (
    Q_,
    MolarMassNeeded,
    UnitConversionError,
    concentration_kind,
    convert,
)

_CANON = {"molar": "mol/L", "mass": "g/L", "fraction": "dimensionless"}


class ConcError(ValueError):
    """A concentration cannot be converted, or a target cannot be reached."""


@dataclass(frozen=True)
class CompoundUnits:
    """How one compound's concentrations are converted: the stock's kind and the molar mass."""

    kind: str  # 'molar', 'mass' or 'fraction' (of the stock)
    mw_g_per_mol: float | None
    display: str  # unit for people, e.g. "nM" or "ng/mL"

    @property
    def canonical(self) -> str:
        return _CANON[self.kind]

    @property
    def mw(self) -> pint.Quantity | None:
        return Q_(self.mw_g_per_mol, "g/mol") if self.mw_g_per_mol else None

    def to_canonical(self, q: pint.Quantity) -> float:
        """``q`` as a float in this compound's canonical unit (molar and mass through mw).

        Raises ConcError (MolarMassNeeded's text when only the mw is missing)."""
        k = concentration_kind(q)
        if k is None:
            raise ConcError(f"{q} is not a concentration")
        if k == self.kind:
            return float(q.to(self.canonical).magnitude)
        try:
            return float(convert(q, self.canonical, self.mw).magnitude)
        except MolarMassNeeded as exc:
            raise ConcError(str(exc)) from None
        except UnitConversionError:
            raise ConcError(f"cannot convert a {k} concentration to a {self.kind} one") from None

    def to_display(self, value: float) -> pint.Quantity:
        """A canonical float as a quantity in the display unit (through mw if of the other
        kind: a molar stock shown in ng/mL as the protocol writes its doses)."""
        q = Q_(value, self.canonical)
        try:
            return convert(q, self.display, self.mw)
        except UnitConversionError as exc:
            raise ConcError(str(exc)) from None


@dataclass(frozen=True)
class Well:
    """A well's medium: volume in µL and each compound's canonical concentration."""

    volume: float
    conc: Mapping[str, float]


def exchange(well: Well, remove: float, add: float, fresh: Mapping[str, float]) -> Well:
    """Remove ``remove`` µL of well medium, then add ``add`` µL of fresh medium (mixed)."""
    if remove < 0 or add < 0:
        raise ConcError("volumes cannot be negative")
    keep = max(0.0, well.volume - remove)
    total = keep + add
    if total <= 0:
        return Well(0.0, {})
    names = set(well.conc) | set(fresh)
    conc = {n: (well.conc.get(n, 0.0) * keep + fresh.get(n, 0.0) * add) / total for n in names}
    return Well(total, {n: c for n, c in conc.items() if c > 0})


def fresh_for_target(
    well: Well, remove: float, add: float, target: Mapping[str, float]
) -> dict[str, float]:
    """Fresh-medium concentrations that leave ``target`` in the well after the change.

    Raises ConcError naming the compound when a target is below what the kept medium
    already holds (it cannot be reached by adding).
    """
    keep = max(0.0, well.volume - remove)
    total = keep + add
    out: dict[str, float] = {}
    for n, t in target.items():
        if add <= 0:
            raise ConcError("nothing is added, so the well cannot be dosed")
        c = (t * total - well.conc.get(n, 0.0) * keep) / add
        if c < -1e-12 * max(1.0, t):
            raise ConcError(n)
        out[n] = max(0.0, c)
    return out


def spike_volume(well_volume: float, current: float, target: float, stock: float) -> float:
    """µL of stock (concentration ``stock``) that brings ``current`` up to ``target`` in a well.

    C1V1 with the added volume counted: v = V (t - c) / (s - t).
    """
    if target >= stock:
        raise ConcError("target is not below the stock concentration")
    if target <= current:
        return 0.0
    return well_volume * (target - current) / (stock - target)


def spike(well: Well, compound: str, volume: float, stock: float) -> Well:
    """Add ``volume`` µL of a stock to the well (everything else is diluted)."""
    total = well.volume + volume
    conc = {n: c * well.volume / total for n, c in well.conc.items()}
    conc[compound] = (well.conc.get(compound, 0.0) * well.volume + stock * volume) / total
    return Well(total, conc)


def stock_volume(final: float, stock: float, total: float) -> float:
    """C1V1: µL of a stock at ``stock`` giving ``final`` in ``total`` µL of medium."""
    if stock <= 0:
        raise ConcError("stock must be above zero")
    return total * final / stock
