"""Checks of a protocol that need a plan: stocks, solvents and a trial resolution.

The trial resolution (default parameters, one plate) tracks each well and reports volumes
and ``dose: well`` targets; the media it would mix are checked for solvent fractions and
stock volumes too small to pipette.
"""

from __future__ import annotations

from collections import defaultdict

import pint

from labctl.errors import LabctlError
from labctl.plan import conc as cc
from labctl.plan.resolve import AdditionSpec, FeedSpec, WashoutSpec, compound_units, resolve
from labctl.protocol.diagnostics import Ctx
from labctl.protocol.model import Loc, ParamRef, Protocol, Value
from labctl.units import format_quantity

DMSO_WARN = 0.001  # above 0.1% DMSO is a warning (PROTOCOL_FORMAT.md)
_LIMITED_SOLVENTS = {"dmso": 0.005, "ethanol": 0.005, "etoh": 0.005}
MIN_PIPETTE_UL = 1.0
PREP_DEAD_VOLUME_UL = 5000.0  # reservoir dead volume assumed by the validate-time prep check

_UNITS_OF: list[tuple[Protocol, dict[str, cc.CompoundUnits]]] = []


def solvent_key(name: str) -> str:
    return name.strip().lower()


def solvent_limit(p: Protocol, solvent: str) -> float | None:
    """The largest final fraction of ``solvent``: the smallest max_solvent given, else default."""
    key = solvent_key(solvent)
    given = [
        c.max_solvent
        for c in p.compounds.values()
        if solvent_key(c.solvent) == key and c.max_solvent is not None
    ]
    if given:
        return min(given)
    return _LIMITED_SOLVENTS.get(key)


def _worst(p: Protocol, v: Value) -> pint.Quantity:
    """The largest value a concentration can take in a run (a parameter's max, else default)."""
    if isinstance(v, ParamRef):
        prm = p.parameters[v.name]
        return prm.max if prm.max is not None else prm.default
    return v


def stocks(ctx: Ctx, p: Protocol) -> None:
    """Each final concentration can be made from its compound's stock (units through mw)."""
    units = compound_units(p)
    rules = [("schedule.factors", i, r) for i, r in enumerate(p.schedule.factors)] + [
        ("schedule.additions", i, r) for i, r in enumerate(p.schedule.additions)
    ]
    for sect, i, r in rules:
        comp = p.compounds[r.compound]
        q = _worst(p, r.conc)
        try:
            final = units[r.compound].to_canonical(q)
        except cc.ConcError as exc:
            if "mw" in str(exc):
                ctx.error(
                    r.loc,
                    f"{sect} #{i + 1}: {r.compound} is given as {format_quantity(q)} but its stock is {format_quantity(comp.stock)}; add the compound's 'mw' to convert between molar and mass units",
                )
            else:
                ctx.error(
                    r.loc,
                    f"{sect} #{i + 1}: {r.compound} at {format_quantity(q)} cannot be made from its stock {format_quantity(comp.stock)} ({exc})",
                )
            continue
        stock = units[r.compound].to_canonical(comp.stock)
        if final >= stock * (1 - 1e-12) and (
            sect == "schedule.additions" or final > stock * (1 + 1e-12)
        ):
            via = f" (the largest value of ${r.conc.name})" if isinstance(r.conc, ParamRef) else ""
            ctx.error(
                r.loc,
                f"{sect} #{i + 1}: final concentration of {r.compound} {format_quantity(q)}{via} is above its stock {format_quantity(comp.stock)}"
                if final > stock * (1 + 1e-12)
                else f"{sect} #{i + 1}: final concentration of {r.compound} {format_quantity(q)}{via} equals its stock; adding stock to a well can only approach it",
            )
        elif final <= 0:
            ctx.error(
                r.loc, f"{sect} #{i + 1}: the concentration of {r.compound} must be above zero"
            )


def solvents_and_trial(ctx: Ctx, p: Protocol) -> None:
    """Resolve with the defaults: its issues, solvent fractions, stock volumes too small."""
    try:
        plan = resolve(p, None, plates=1, strict=False)
    except LabctlError as exc:
        ctx.error(p.culture.loc, str(exc))
        return
    for issue in plan.issues:
        (ctx.error if issue.severity == "error" else ctx.warning)(issue.loc, issue.message)
    wells = len(plan.tasks[0].wells) if plan.tasks and plan.tasks[0].wells else 1
    seen: set[tuple] = set()
    for t in plan.tasks:
        spec = t.spec
        recipe = spec.recipe if isinstance(spec, (FeedSpec, WashoutSpec)) else None
        if recipe is not None:
            key = (t.loc, recipe.key())
            if key in seen:
                continue
            seen.add(key)
            _solvent_check(ctx, p, recipe.factors, t.loc, t.day)
            add = spec.add_ul if isinstance(spec, (FeedSpec, WashoutSpec)) else 0.0
            total = add * max(1, len(t.wells) or wells) + PREP_DEAD_VOLUME_UL
            for name, q in recipe.factors:
                comp = p.compounds[name]
                v = cc.stock_volume(_canon(p, name, q), _canon(p, name, comp.stock), total)
                if 0 < v < MIN_PIPETTE_UL:
                    k = _dilution_factor(v)
                    how = (
                        f"prep will use a 1:{k} intermediate dilution (or use a more dilute stock)"
                        if k is not None
                        else "use a far more dilute stock"
                    )
                    ctx.warning(
                        t.loc,
                        f"day {t.day}: {name} needs {v:.3g} uL of stock for one plate's medium ({total / 1000:g} mL), below the {MIN_PIPETTE_UL:g} uL that can be pipetted accurately; {how}",
                    )
        elif isinstance(spec, AdditionSpec) and 0 < spec.stock_ul < MIN_PIPETTE_UL:
            ctx.warning(
                t.loc,
                f"day {t.day}: adding {spec.compound} takes {spec.stock_ul:.3g} uL of stock per well, below {MIN_PIPETTE_UL:g} uL; prep will plan an intermediate dilution",
            )


def _canon(p: Protocol, name: str, q: pint.Quantity) -> float:
    # compound_units walks every rule; cache it for the protocol at hand (one entry, by
    # identity) or the solvent checks turn quadratic in the number of factors.
    entry = _UNITS_OF[0] if _UNITS_OF else None
    if entry is None or entry[0] is not p:
        entry = (p, compound_units(p))
        _UNITS_OF[:] = [entry]
    return entry[1][name].to_canonical(q)


def _dilution_factor(volume_ul: float) -> int | None:
    """The power of ten that brings ``volume_ul`` of stock to a pipettable volume; None
    beyond 1:10^9 (no lab dilutes that far in one intermediate)."""
    k = 10
    while volume_ul * k < MIN_PIPETTE_UL:
        if k >= 10**9:
            return None
        k *= 10
    return k


def solvent_fractions(
    p: Protocol, factors: tuple[tuple[str, pint.Quantity], ...]
) -> dict[str, float]:
    """Summed volume fraction of each solvent (by lower-cased name) in a fresh medium."""
    out: dict[str, float] = defaultdict(float)
    for name, q in factors:
        comp = p.compounds[name]
        out[solvent_key(comp.solvent)] += _canon(p, name, q) / _canon(p, name, comp.stock)
    return dict(out)


def _solvent_check(
    ctx: Ctx, p: Protocol, factors: tuple[tuple[str, pint.Quantity], ...], loc: Loc, day: int
) -> None:
    names = {solvent_key(c.solvent): c.solvent for c in p.compounds.values()}
    for key, frac in solvent_fractions(p, factors).items():
        limit = solvent_limit(p, key)
        users = ", ".join(n for n, _ in factors if solvent_key(p.compounds[n].solvent) == key)
        if limit is not None and frac > limit * (1 + 1e-9):
            ctx.error(
                loc,
                f"day {day}: the fresh medium holds {frac * 100:.3g}% {names[key]} ({users}), above the {limit * 100:g}% limit",
            )
        elif key == "dmso" and frac > DMSO_WARN * (1 + 1e-9):
            ctx.warning(
                loc,
                f"day {day}: the fresh medium holds {frac * 100:.3g}% DMSO ({users}), above 0.1%",
            )
