"""Checks across a protocol's sections (PROTOCOL_FORMAT.md, "What labctl checks").

Names, units and parameter references first; then the day-by-day checks (media coverage,
factor windows, feeds per day, stocks, solvents); then a trial resolution with the default
parameters, which tracks each well and reports volumes and ``dose: well`` targets.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pint

from labctl import conc as cc
from labctl.labware import LabwareNotFound, get_labware, known_load_names
from labctl.protocol.loader import Ctx, did_you_mean
from labctl.protocol.model import Change, Compound, Loc, ParamRef, Protocol, Value
from labctl.units import Q_, Dim, concentration_kind, format_quantity

DMSO_WARN = 0.001  # above 0.1% DMSO is a warning (PROTOCOL_FORMAT.md)
_LIMITED_SOLVENTS = {"dmso": 0.005, "ethanol": 0.005, "etoh": 0.005}
MIN_PIPETTE_UL = 1.0
PREP_DEAD_VOLUME_UL = 5000.0  # reservoir dead volume assumed by the validate-time prep check


def check(ctx: Ctx, p: Protocol, *, workcell: Any | None = None) -> None:
    """Add every cross-section diagnostic of ``p`` to ``ctx``."""
    _names(ctx, p)
    if ctx.has_errors:
        return  # later checks would only repeat the same mistakes in other words
    _labware(ctx, p)
    _days(ctx, p)
    _stocks(ctx, p)
    if ctx.has_errors:
        return
    _solvents_and_trial(ctx, p)
    if workcell is not None:
        _environment_vs_workcell(ctx, p, workcell)


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


# --- names and units ----------------------------------------------------------------------


def _param_dim_ok(ctx: Ctx, p: Protocol, v: Value, dim: Dim, what: str) -> None:
    if not isinstance(v, ParamRef):
        return
    param = p.parameters.get(v.name)
    if param is None and v.name in ctx.declared.get("parameters", ()):
        return  # declared, but its entry had errors (reported there)
    if param is None:
        ctx.error(
            v.loc,
            f"{what} uses ${v.name}, but there is no parameter '{v.name}'{did_you_mean(v.name, set(p.parameters))}",
        )
        return
    q = param.default
    ok = (
        concentration_kind(q) is not None
        if dim is Dim.CONCENTRATION
        else str(q.dimensionality) == "[length] ** 3"
    )
    if not ok:
        ctx.error(
            v.loc, f"{what} uses ${v.name}, whose default {format_quantity(q)} is not {dim.value}"
        )


def _compound_ref(ctx: Ctx, p: Protocol, name: str, loc: Loc, what: str) -> Compound | None:
    c = p.compounds.get(name)
    if c is None and name not in ctx.declared.get("compounds", ()):
        ctx.error(
            loc,
            f"{what} names compound '{name}', which is not in compounds{did_you_mean(name, set(p.compounds))}",
        )
    return c


def _medium_ref(ctx: Ctx, p: Protocol, name: str, loc: Loc, what: str) -> None:
    if name not in p.media and name not in ctx.declared.get("media", ()):
        ctx.error(
            loc,
            f"{what} names medium '{name}', which is not in media{did_you_mean(name, set(p.media))}",
        )


def _names(ctx: Ctx, p: Protocol) -> None:
    s = p.schedule
    for i, r in enumerate(s.media):
        for name, _ in r.parts:
            _medium_ref(ctx, p, name, r.loc, f"schedule.media #{i + 1}")
    for i, f in enumerate(s.factors):
        what = f"schedule.factors #{i + 1}"
        _compound_ref(ctx, p, f.compound, f.loc, what)
        _param_dim_ok(ctx, p, f.conc, Dim.CONCENTRATION, what)
    for i, fd in enumerate(s.feeds):
        what = f"schedule.feeds #{i + 1}"
        if fd.volume is not None:
            _param_dim_ok(ctx, p, fd.volume, Dim.VOLUME, what)
        if fd.wash is not None:
            _medium_ref(ctx, p, fd.wash.medium, fd.wash.loc, f"the wash in {what}")
            if fd.wash.volume is not None:
                _param_dim_ok(ctx, p, fd.wash.volume, Dim.VOLUME, f"the wash in {what}")
    for i, a in enumerate(s.additions):
        what = f"schedule.additions #{i + 1}"
        _compound_ref(ctx, p, a.compound, a.loc, what)
        _param_dim_ok(ctx, p, a.conc, Dim.CONCENTRATION, what)
        if a.washout_medium is not None:
            _medium_ref(ctx, p, a.washout_medium, a.loc, f"the washout in {what}")


def _labware(ctx: Ctx, p: Protocol) -> None:
    def one(
        load_name: str,
        wells: tuple[str, ...] | None,
        volume: pint.Quantity | None,
        loc: Loc,
        what: str,
    ) -> None:
        try:
            lw = get_labware(load_name)
        except LabwareNotFound:
            if not known_load_names():
                ctx.warning(
                    loc,
                    "labware definitions (opentrons_shared_data) are not installed; labware not checked",
                )
                return
            ctx.error(
                loc,
                f"{what}: unknown labware '{load_name}'{did_you_mean(load_name, set(known_load_names()))}",
            )
            return
        if lw.is_tiprack:
            ctx.error(loc, f"{what}: '{load_name}' is a tip rack, not a culture vessel")
        for w in wells or ():
            if w not in lw.wells:
                ctx.error(ctx.well_locs.get((loc, w), loc), f"{what}: {load_name} has no well {w}")
        if volume is not None:
            ul = float(volume.to("uL").magnitude)
            if ul > lw.capacity_ul:
                ctx.error(
                    loc,
                    f"{what}: volume {format_quantity(volume)} is above the {lw.capacity_ul / 1000:g} mL capacity of a well of {load_name}",
                )
            from labctl.resolve import MIN_ASPIRATE_UL

            if ul < MIN_ASPIRATE_UL:
                ctx.error(
                    loc,
                    f"{what}: volume {format_quantity(volume)} is below the {format_quantity(Q_(MIN_ASPIRATE_UL, 'uL'))} that can be aspirated",
                )

    one(p.culture.labware, p.culture.wells, p.culture.volume, p.culture.loc, "culture")
    for e in p.schedule.events:
        if e.culture is not None and e.culture.labware is not None:
            one(
                e.culture.labware,
                e.culture.wells,
                e.culture.volume,
                e.culture.loc,
                f"the culture change of '{e.title}'",
            )
        elif e.culture is not None and (e.culture.wells or e.culture.volume is not None):
            one(
                p.culture.labware,
                e.culture.wells,
                e.culture.volume,
                e.culture.loc,
                f"the culture change of '{e.title}'",
            )


# --- day by day ---------------------------------------------------------------------------


def _days(ctx: Ctx, p: Protocol) -> None:
    s = p.schedule
    medium_day: dict[int, int] = {}
    for i, r in enumerate(s.media):
        for d in r.days.days:
            if d in medium_day:
                ctx.error(
                    r.loc,
                    f"schedule.media #{i + 1} gives day {d} a medium, but #{medium_day[d] + 1} already does",
                )
                break
            medium_day[d] = i
    feed_days: set[int] = set()
    by_day: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    for i, f in enumerate(s.feeds):
        for d in f.days.days:
            by_day[d].append((i, f))
            if f.change is not Change.NONE:
                feed_days.add(d)
    for d, entries in sorted(by_day.items()):
        if len(entries) < 2:
            continue
        seen: dict[str, int] = {}
        for i, f in entries:
            if f.after_previous is not None or f.change is Change.NONE:
                continue  # ordered by its tie to the previous feed, or not a feed at all
            t = f"{(f.at or p.timing.feed_at):%H:%M}"
            if t in seen:
                ctx.error(
                    f.loc,
                    f"schedule.feeds #{i + 1} feeds day {d} at {t}, as #{seen[t] + 1} does; two feeds on one day need distinct 'at' times",
                )
            else:
                seen[t] = i
        kinds = {f.change for _, f in entries}
        if Change.NONE in kinds and len(kinds) > 1:
            i = next(i for i, f in entries if f.change is Change.NONE)
            ctx.error(
                s.feeds[i].loc,
                f"schedule.feeds #{i + 1} says day {d} has no feed, but another entry feeds it",
            )
    for i, f in enumerate(s.feeds):
        if f.change is Change.NONE:
            continue
        missing = [d for d in f.days.days if d not in medium_day]
        if missing:
            ctx.error(
                f.loc,
                f"schedule.feeds #{i + 1} feeds on {_fmt_days(missing)}, {_which_has(missing)} no medium in schedule.media",
            )
    for i, fr in enumerate(s.factors):
        fed = [d for d in fr.days.days if d in feed_days]
        if not fed:
            ctx.error(
                fr.loc,
                f"schedule.factors #{i + 1} ({fr.compound}, days {fr.days.text}) has no feed on any of its days, so it would never reach the cells",
            )
        elif fr.days.first not in feed_days:
            ctx.warning(
                fr.loc,
                f"schedule.factors #{i + 1} ({fr.compound}) starts on day {fr.days.first}, which has no feed; it reaches the cells from day {fed[0]}",
            )
    seen_f: dict[tuple[str, int], int] = {}
    for i, fr in enumerate(s.factors):
        for d in fr.days.days:
            if (fr.compound, d) in seen_f:
                ctx.error(
                    fr.loc,
                    f"schedule.factors #{i + 1} sets {fr.compound} on day {d}, as #{seen_f[(fr.compound, d)] + 1} does",
                )
                break
            seen_f[(fr.compound, d)] = i
    for i, a in enumerate(s.additions):
        if a.pulse is not None:
            missing = [d for d in a.days.days if d not in medium_day]
            if missing:
                ctx.error(
                    a.loc,
                    f"schedule.additions #{i + 1} is a pulse on {_fmt_days(missing)}, {_which_has(missing)} no medium for the full change after the wash-out",
                )


def _fmt_days(days: list[int]) -> str:
    """'day 5' or 'days 5, 6, 7'."""
    listed = ", ".join(str(d) for d in days[:5]) + (" ..." if len(days) > 5 else "")
    return ("day " if len(days) == 1 else "days ") + listed


def _which_has(days: list[int]) -> str:
    return "which has" if len(days) == 1 else "which have"


def _worst(p: Protocol, v: Value) -> pint.Quantity:
    """The largest value a concentration can take in a run (a parameter's max, else default)."""
    if isinstance(v, ParamRef):
        prm = p.parameters[v.name]
        return prm.max if prm.max is not None else prm.default
    return v


def _stocks(ctx: Ctx, p: Protocol) -> None:
    from labctl.resolve import compound_units

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


# --- solvents, prep and the trial resolution ----------------------------------------------


def _solvents_and_trial(ctx: Ctx, p: Protocol) -> None:
    from labctl.errors import LabctlError
    from labctl.resolve import AdditionSpec, FeedSpec, WashoutSpec, resolve

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


_UNITS_OF: list[tuple[Protocol, dict[str, cc.CompoundUnits]]] = []


def _canon(p: Protocol, name: str, q: pint.Quantity) -> float:
    from labctl.resolve import compound_units

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


def _environment_vs_workcell(ctx: Ctx, p: Protocol, workcell: Any) -> None:
    """Each environment setpoint must be holdable by some incubator of the workcell."""
    caps = getattr(workcell, "incubator_capabilities", None)
    if caps is None:
        return
    abilities = caps()  # list of (device name, set of controllable quantities)
    for i, r in enumerate(p.schedule.environment):
        for qty, val in (("o2", r.o2), ("co2", r.co2), ("temperature", r.temperature)):
            if val is None:
                continue
            if not any(qty in a for _, a in abilities):
                ctx.error(
                    r.loc,
                    f"schedule.environment #{i + 1} sets {qty} to {format_quantity(val)}, but no incubator of workcell '{workcell.name}' controls {qty}",
                )
