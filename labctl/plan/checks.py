"""Checks of a protocol that need a plan: stocks, solvents and a trial resolution.

The trial resolution (default parameters, one plate) tracks each well and reports volumes
and ``dose: well`` targets; the media it would mix are checked for solvent fractions and
stock volumes too small to pipette.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pint

from labctl.errors import LabctlError
from labctl.plan import conc as cc
from labctl.plan.resolve import (
    AdditionSpec,
    FeedSpec,
    Task,
    WashoutSpec,
    compound_units,
    in_default_unit,
    resolve,
)
from labctl.protocol.diagnostics import Ctx
from labctl.protocol.model import Addition, Change, FactorRule, Loc, ParamRef, Protocol, Value
from labctl.units import Q_, UnitConversionError, concentration_kind, format_quantity

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


def parameter_bounds(ctx: Ctx, p: Protocol) -> set[str]:
    """Bounds given in the other of molar and mass units than a parameter's default, compared
    through the mw of the compound using it. Returns the parameters whose bounds failed."""
    bad: set[str] = set()
    for name, prm in p.parameters.items():
        conv: dict[str, pint.Quantity] = {}
        for key, q in (("min", prm.min), ("max", prm.max)):
            if q is None or q.dimensionality == prm.default.dimensionality:
                if q is not None:
                    conv[key] = q
                continue
            try:
                conv[key] = in_default_unit(p, name, q)
            except UnitConversionError as exc:
                ctx.error(ctx.at(prm.loc, key), f"'{key}' of parameter '{name}': {exc}")
                bad.add(name)
        if len(conv) == 2 - (prm.min is None) - (prm.max is None) and (
            (prm.min is not None and prm.min.dimensionality != prm.default.dimensionality)
            or (prm.max is not None and prm.max.dimensionality != prm.default.dimensionality)
        ):
            lo, hi = conv.get("min"), conv.get("max")
            what = f"parameter '{name}'"
            if lo is not None and hi is not None and lo > hi:
                ctx.error(ctx.at(prm.loc, "min"), f"{what}: min is above max")
            elif lo is not None and prm.default < lo * (1 - 1e-12):
                ctx.error(
                    ctx.at(prm.loc, "default"),
                    f"default of {what} ({format_quantity(prm.default)}) is below its min ({format_quantity(prm.min)} = {format_quantity(lo)})",  # type: ignore[arg-type]
                )
            elif hi is not None and prm.default > hi * (1 + 1e-12):
                ctx.error(
                    ctx.at(prm.loc, "default"),
                    f"default of {what} ({format_quantity(prm.default)}) is above its max ({format_quantity(prm.max)} = {format_quantity(hi)})",  # type: ignore[arg-type]
                )
    return bad


def _usable(p: Protocol, v: Value) -> bool:
    """A concentration that can be evaluated: a quantity, or a parameter that exists and
    holds a concentration (an unknown or mistyped one is reported by protocol.checks)."""
    if not isinstance(v, ParamRef):
        return True
    prm = p.parameters.get(v.name)
    if prm is None or concentration_kind(prm.default) is None:
        return False
    # A default outside its own bounds is in error: the trial would dose a value no run has.
    for bound, below in ((prm.min, True), (prm.max, False)):
        if bound is not None and bound.dimensionality == prm.default.dimensionality:
            if (prm.default < bound) if below else (prm.default > bound):
                return False
    return True


def stocks(ctx: Ctx, p: Protocol) -> set[Loc]:
    """Each final concentration can be made from its compound's stock (units through mw).

    Rules naming an unknown compound or parameter are skipped (reported by the name checks).
    Returns the locations of the rules that failed, so that the trial leaves them out."""
    bad: set[Loc] = set()
    units = compound_units(p)
    rules = [("schedule.factors", i, r) for i, r in enumerate(p.schedule.factors)] + [
        ("schedule.additions", i, r) for i, r in enumerate(p.schedule.additions)
    ]
    for sect, i, r in rules:
        comp = p.compounds.get(r.compound)
        if comp is None or not _usable(p, r.conc):
            bad.add(r.loc)
            continue
        at = ctx.at(r.loc, "conc")
        q = _worst(p, r.conc)
        try:
            final = units[r.compound].to_canonical(q)
        except cc.ConcError as exc:
            bad.add(r.loc)
            if "mw" in str(exc):
                ctx.error(
                    at,
                    f"{sect} #{i + 1}: {r.compound} is given as {format_quantity(q)} but its stock is {format_quantity(comp.stock)}; add the compound's 'mw' (molar mass, e.g. mw: 465.3 g/mol) to convert between molar and mass units",
                )
            else:
                ctx.error(
                    at,
                    f"{sect} #{i + 1}: {r.compound} at {format_quantity(q)} cannot be made from its stock {format_quantity(comp.stock)} ({exc})",
                )
            continue
        stock = units[r.compound].to_canonical(comp.stock)
        shown = format_quantity(q)
        if concentration_kind(q) != concentration_kind(comp.stock):
            # A dose written in ng/mL against a mM stock: say what it is in the stock's unit.
            shown += f" (= {format_quantity(_in_stock_unit(units[r.compound], final, comp.stock))})"
        if final >= stock * (1 - 1e-12) and (
            sect == "schedule.additions" or final > stock * (1 + 1e-12)
        ):
            bad.add(r.loc)
            via = f" (the largest value of ${r.conc.name})" if isinstance(r.conc, ParamRef) else ""
            ctx.error(
                at,
                f"{sect} #{i + 1}: final concentration of {r.compound} {shown}{via} is above its stock {format_quantity(comp.stock)}"
                if final > stock * (1 + 1e-12)
                else f"{sect} #{i + 1}: final concentration of {r.compound} {shown}{via} equals its stock; adding stock to a well can only approach it",
            )
        elif final <= 0:
            bad.add(r.loc)
            ctx.error(at, f"{sect} #{i + 1}: the concentration of {r.compound} must be above zero")
    return bad


def trial_part(p: Protocol, failed: set[Loc]) -> Protocol | None:
    """``p`` without the factors and additions that are in error (``failed`` by
    :func:`stocks`, or naming an unknown compound or parameter), for the trial resolution;
    None when the trial cannot be sound (a feed or wash volume from a parameter that is
    unknown or not a volume)."""
    s = p.schedule
    for f in s.feeds:
        for v in (f.volume, f.wash.volume if f.wash is not None else None):
            if isinstance(v, ParamRef):
                prm = p.parameters.get(v.name)
                if prm is None or str(prm.default.dimensionality) != "[length] ** 3":
                    return None

    def keep(r: FactorRule | Addition) -> bool:
        return r.loc not in failed and r.compound in p.compounds and _usable(p, r.conc)

    factors = tuple(r for r in s.factors if keep(r))
    additions = tuple(r for r in s.additions if keep(r))
    if len(factors) == len(s.factors) and len(additions) == len(s.additions):
        return p
    return replace(p, schedule=replace(s, factors=factors, additions=additions))


def _in_stock_unit(u: cc.CompoundUnits, value: float, stock: pint.Quantity) -> pint.Quantity:
    """A canonical value in the stock's unit (a dose written in ng/mL shown next to a mM stock)."""
    return Q_(value, u.canonical).to(stock.units)


def solvents_and_trial(ctx: Ctx, p: Protocol) -> None:
    """Resolve with the defaults: its issues, solvent fractions, stock volumes too small."""
    try:
        plan = resolve(p, None, plates=1, strict=False)
    except LabctlError as exc:
        ctx.error(p.culture.loc, str(exc))
        return
    for issue in plan.issues:
        at = ctx.at(issue.loc, issue.key) if issue.key else issue.loc
        (ctx.error if issue.severity == "error" else ctx.warning)(at, issue.message)
    wells = len(plan.tasks[0].wells) if plan.tasks and plan.tasks[0].wells else 1
    seen: set[tuple] = set()
    solvent_seen: set[tuple] = set()
    for t in plan.tasks:
        spec = t.spec
        if isinstance(spec, (FeedSpec, WashoutSpec, AdditionSpec)):
            _solvent_check(ctx, p, t, solvent_seen)
        recipe = spec.recipe if isinstance(spec, (FeedSpec, WashoutSpec)) else None
        if recipe is not None:
            key = (t.loc, recipe.key())
            if key in seen:
                continue
            seen.add(key)
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


def well_solvent_fractions(p: Protocol, t: Task) -> dict[str, float]:
    """Summed volume fraction of each solvent in the well after task ``t``: what the cells
    receive. Each compound in the well came from its stock, so it brought its solvent in the
    ratio of its concentration to its stock's."""
    return solvent_fractions(p, tuple((n, q) for n, q in t.well_after.conc if n in p.compounds))


def _after(spec: FeedSpec | WashoutSpec | AdditionSpec) -> str:
    """'after the half change', in words for the solvent messages."""
    if isinstance(spec, AdditionSpec):
        return f"after adding {spec.compound}"
    if isinstance(spec, WashoutSpec):
        return f"after the wash-out of {spec.compound} and the full change"
    if spec.change is Change.TOP_UP:
        return "after the top-up"
    if spec.change is Change.FRACTION:
        return f"after the {spec.fraction * 100:g}% change"
    return f"after the {spec.change.value} change"


def _solvent_check(ctx: Ctx, p: Protocol, t: Task, seen: set[tuple]) -> None:
    """Solvent fractions of the fresh medium and of the well after ``t``.

    Semantics (docs/protocols.md, "Solvents"): a solvent's limit (``max_solvent``, default
    0.5% for DMSO and ethanol) holds for every medium: the fresh medium that is mixed and
    what the cells receive in the well after each change or addition; above it is an error.
    The DMSO warning (above 0.1%) is about the cells: it looks at the well. On a full change
    the two are the same; on a half change the well holds a mix of old and fresh medium; an
    addition brings its stock's solvent into the well with no fresh medium at all. Each
    message names both fractions. One message per rule and fresh medium (the first day).
    """
    spec = t.spec
    assert isinstance(spec, (FeedSpec, WashoutSpec, AdditionSpec))
    fresh_factors = spec.recipe.factors if isinstance(spec, (FeedSpec, WashoutSpec)) else ()
    fresh = solvent_fractions(p, fresh_factors)
    well = well_solvent_fractions(p, t)
    names = {solvent_key(c.solvent): c.solvent for c in p.compounds.values()}
    tag = spec.recipe.key() if isinstance(spec, (FeedSpec, WashoutSpec)) else spec.compound
    after = _after(spec)
    keys = set(fresh) | set(well)
    if isinstance(spec, AdditionSpec):
        # A spike changes only its own stock's solvent; the rest is the feed's (said there).
        keys &= {solvent_key(p.compounds[spec.compound].solvent)}
    for key in sorted(keys):
        f, w = fresh.get(key, 0.0), well.get(key, 0.0)
        limit = solvent_limit(p, key)
        over_limit = limit is not None and max(f, w) > limit * (1 + 1e-9)
        warn = not over_limit and key == "dmso" and w > DMSO_WARN * (1 + 1e-9)
        if not (over_limit or warn) or (t.loc, tag, key, over_limit) in seen:
            continue
        seen.add((t.loc, tag, key, over_limit))
        solvent = names.get(key, key)
        users = ", ".join(
            n
            for n, _ in (fresh_factors or t.well_after.conc)
            if n in p.compounds and solvent_key(p.compounds[n].solvent) == key
        )
        if isinstance(spec, AdditionSpec):
            said = f"day {t.day}: the cells receive {_pct(w)} {solvent} {after} ({users})"
        else:
            said = (
                f"day {t.day}: the fresh medium holds {_pct(f)} {solvent} ({users}); "
                f"the cells receive {_pct(w)} {after}"
            )
        if over_limit:
            assert limit is not None
            # "above" reads as said of the last figure (the well's): say so if only the
            # fresh medium is over (a dose: well feed can mix it stronger than the well gets).
            if w > limit * (1 + 1e-9):
                ctx.error(t.loc, f"{said}, above the {limit * 100:g}% limit")
            else:
                ctx.error(t.loc, f"{said}; the fresh medium is above the {limit * 100:g}% limit")
        else:
            ctx.warning(t.loc, f"{said}, above 0.1%")


def _pct(frac: float) -> str:
    return f"{frac * 100:.3g}%"
