"""Checks across a protocol's sections that need only the protocol itself.

Names, units and parameter references first; then labware and the day-by-day checks
(media coverage, factor windows, feeds per day); and, given a workcell, whether its
incubators can hold each environment. Checks that need a plan (stocks, solvents, the trial
resolution) are in :mod:`labctl.plan.checks`; :mod:`labctl.validate` runs them all in order.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pint

from labctl.labware import MIN_ASPIRATE_UL, LabwareNotFound, get_labware, known_load_names
from labctl.protocol.diagnostics import Ctx, did_you_mean
from labctl.protocol.model import Change, Compound, Loc, ParamRef, Protocol, Value
from labctl.units import Q_, Dim, concentration_kind, format_quantity

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
            f"{what} names compound '{name}', which is not in compounds{_hint(name, set(p.compounds))}",
        )
    return c


def _hint(name: str, declared: set[str]) -> str:
    """did_you_mean, or for a name cut at a comma (``{compound: N6,2′-O-...}`` in a flow
    mapping, where a comma ends the value) the whole name and the fix."""
    whole = sorted(d for d in declared if d.startswith(name + ","))
    if whole:
        return (
            f"; did you mean '{whole[0]}'? Inside {{...}} a comma ends the value: put the "
            f'name in quotes ("{whole[0]}")'
        )
    return did_you_mean(name, declared)


def _medium_ref(ctx: Ctx, p: Protocol, name: str, loc: Loc, what: str) -> None:
    if name not in p.media and name not in ctx.declared.get("media", ()):
        ctx.error(
            loc,
            f"{what} names medium '{name}', which is not in media{_hint(name, set(p.media))}",
        )


def names(ctx: Ctx, p: Protocol) -> None:
    """Every name a rule uses is declared; parameters used as values have the right unit."""
    s = p.schedule
    for i, r in enumerate(s.media):
        for name, _ in r.parts:
            # A plain medium name points at itself; a blend's part at the blend.
            _medium_ref(ctx, p, name, ctx.at(r.loc, "medium"), f"schedule.media #{i + 1}")
    for i, f in enumerate(s.factors):
        what = f"schedule.factors #{i + 1}"
        _compound_ref(ctx, p, f.compound, ctx.at(f.loc, "compound"), what)
        _param_dim_ok(ctx, p, f.conc, Dim.CONCENTRATION, what)
    for i, fd in enumerate(s.feeds):
        what = f"schedule.feeds #{i + 1}"
        if fd.volume is not None:
            _param_dim_ok(ctx, p, fd.volume, Dim.VOLUME, what)
        if fd.wash is not None:
            _medium_ref(
                ctx, p, fd.wash.medium, ctx.at(fd.wash.loc, "medium"), f"the wash in {what}"
            )
            if fd.wash.volume is not None:
                _param_dim_ok(ctx, p, fd.wash.volume, Dim.VOLUME, f"the wash in {what}")
    for i, a in enumerate(s.additions):
        what = f"schedule.additions #{i + 1}"
        _compound_ref(ctx, p, a.compound, ctx.at(a.loc, "compound"), what)
        _param_dim_ok(ctx, p, a.conc, Dim.CONCENTRATION, what)
        if a.washout_medium is not None:
            at = ctx.at(ctx.at(a.loc, "washout"), "medium")
            _medium_ref(ctx, p, a.washout_medium, at, f"the washout in {what}")


def labware(ctx: Ctx, p: Protocol) -> None:
    """Culture labware exists (Opentrons definitions), wells exist, volumes fit a well."""

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
                ctx.at(loc, "labware"),
                f"{what}: unknown labware '{load_name}'{did_you_mean(load_name, set(known_load_names()))}",
            )
            return
        if lw.is_tiprack:
            ctx.error(
                ctx.at(loc, "labware"), f"{what}: '{load_name}' is a tip rack, not a culture vessel"
            )
        for w in wells or ():
            if w not in lw.wells:
                ctx.error(ctx.well_locs.get((loc, w), loc), f"{what}: {load_name} has no well {w}")
        if volume is not None:
            ul = float(volume.to("uL").magnitude)
            if ul > lw.capacity_ul:
                # Point at the volume's value: that is what to change (the labware may be right).
                ctx.error(
                    ctx.at(loc, "volume"),
                    f"{what}: volume {format_quantity(volume)} is above the {lw.capacity_ul / 1000:g} mL capacity of a well of {load_name}",
                )
            if ul < MIN_ASPIRATE_UL:
                ctx.error(
                    ctx.at(loc, "volume"),
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


def days(ctx: Ctx, p: Protocol) -> None:
    """Day by day: one medium a day, distinct feed times, factors on fed days."""
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
    # A rule left out for its own error must not make others look wrong (a feed "without
    # medium" because the medium rule had a typo): those checks wait for the fix.
    media_whole = "schedule.media" not in ctx.incomplete
    feeds_whole = "schedule.feeds" not in ctx.incomplete
    for i, f in enumerate(s.feeds):
        if f.change is Change.NONE or not media_whole:
            continue
        missing = [d for d in f.days.days if d not in medium_day]
        if missing:
            ctx.error(
                f.loc,
                f"schedule.feeds #{i + 1} feeds on {_fmt_days(missing)}, {_which_has(missing)} no medium in schedule.media",
            )
    for i, fr in enumerate(s.factors if feeds_whole else ()):
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
    for i, a in enumerate(s.additions if media_whole else ()):
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


# --- the workcell ------------------------------------------------------------------------


def environment_vs_workcell(ctx: Ctx, p: Protocol, workcell: Any) -> None:
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
            elif qty == "o2":
                # No serial protocol sets O2: an incubator must already hold that level.
                pct = float(val.to("percent").magnitude)
                held = [(n, a["o2"]) for n, a in abilities if "o2" in a]
                if not any(abs(v - pct) <= 0.05 for _, v in held):
                    have = ", ".join(f"{n} holds {v:g}%" for n, v in held)
                    ctx.error(
                        r.loc,
                        f"schedule.environment #{i + 1} asks for {pct:g}% O2, but no incubator of workcell '{workcell.name}' holds it ({have}; O2 is set at the incubator, not by labctl)",
                    )
