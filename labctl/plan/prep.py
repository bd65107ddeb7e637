"""Media prep: what an operator mixes for each feed time, and a whole-run forecast.

For each feed time and each distinct fresh medium: the total to prepare for all plates
(plus the reservoir's dead volume and an overage), each base medium's and each stock's
volume, and the solvent fractions. A stock volume below what can be pipetted accurately
gets an intermediate dilution, stated on the sheet. Volumes are µL unless named otherwise.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pint

from labctl.plan import conc as cc
from labctl.plan.checks import solvent_fractions, solvent_key, solvent_limit
from labctl.plan.resolve import (
    AdditionSpec,
    FeedSpec,
    Plan,
    Recipe,
    Task,
    WashoutSpec,
    compound_units,
)
from labctl.protocol.model import Protocol
from labctl.units import format_quantity


@dataclass(frozen=True)
class PrepSettings:
    """``dead_volume_ul`` per reservoir; ``overage`` a fraction added to every batch."""

    dead_volume_ul: float = 5000.0
    overage: float = 0.10
    min_pipette_ul: float = 1.0


@dataclass(frozen=True)
class Intermediate:
    """Dilute ``stock_ul`` of stock with ``diluent_ul`` of ``diluent`` (1:factor), add ``add_ul``."""

    factor: int
    stock_ul: float
    diluent_ul: float
    diluent: str
    add_ul: float


@dataclass(frozen=True)
class StockLine:
    compound: str
    stock: pint.Quantity
    final: pint.Quantity
    solvent: str
    volume_ul: float  # of the stock itself, in the whole batch
    intermediate: Intermediate | None


@dataclass(frozen=True)
class MediumBatch:
    """One fresh medium to prepare. ``base`` lists (medium, µL); ``total_ul`` includes margins."""

    recipe: Recipe
    tasks: tuple[str, ...]
    needed_ul: float
    total_ul: float
    base: tuple[tuple[str, float], ...]
    stocks: tuple[StockLine, ...]
    solvents: tuple[tuple[str, float, float | None], ...]  # (solvent, fraction, limit)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdditionPrep:
    task: str
    compound: str
    conc: pint.Quantity
    per_well_ul: float
    total_ul: float
    intermediate: Intermediate | None


@dataclass(frozen=True)
class PrepSheet:
    """Everything to prepare for one feed time of a run."""

    due: datetime  # local time of the run
    day: int
    batches: tuple[MediumBatch, ...]
    additions: tuple[AdditionPrep, ...]
    wells_per_plate: int
    plates: int


@dataclass
class Forecast:
    """Whole-run totals: µL of each base medium and of each stock (margins included)."""

    media_ul: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    stocks_ul: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    feeds: int = 0


def _round_up(x: float, step: float) -> float:
    return math.ceil(x / step - 1e-9) * step


def _intermediate(volume_ul: float, diluent: str, s: PrepSettings) -> Intermediate:
    k = 10
    while volume_ul * k < s.min_pipette_ul:
        k *= 10
    add = volume_ul * k
    # Make 50% more intermediate than needed, and never pipette under the minimum.
    made = max(k * s.min_pipette_ul, add * 1.5)
    stock = _round_up(made / k, 0.1)
    return Intermediate(k, stock, stock * (k - 1), diluent, add)


def batch_for(
    protocol: Protocol,
    recipe: Recipe,
    per_plate_ul: float,
    plates: int,
    tasks: tuple[str, ...],
    s: PrepSettings,
) -> MediumBatch:
    """The batch of ``recipe`` for ``plates`` plates needing ``per_plate_ul`` each."""
    units = compound_units(protocol)
    needed = per_plate_ul * plates
    total = _round_up(needed * (1 + s.overage) + s.dead_volume_ul, 500.0)
    stocks: list[StockLine] = []
    for name, final in recipe.factors:
        comp = protocol.compounds[name]
        u = units[name]
        v = cc.stock_volume(u.to_canonical(final), u.to_canonical(comp.stock), total)
        inter = _intermediate(v, recipe.parts[0][0], s) if v < s.min_pipette_ul else None
        stocks.append(StockLine(name, comp.stock, final, comp.solvent, v, inter))
    added = sum(st.intermediate.add_ul if st.intermediate else st.volume_ul for st in stocks)
    base_total = total - added
    base = tuple((m, base_total * f) for m, f in recipe.parts)
    fr = solvent_fractions(protocol, recipe.factors)
    names = {solvent_key(c.solvent): c.solvent for c in protocol.compounds.values()}
    solvents = tuple((names[k], f, solvent_limit(protocol, k)) for k, f in sorted(fr.items()))
    notes = []
    for st in stocks:
        if st.intermediate:
            i = st.intermediate
            notes.append(
                f"{st.compound}: {st.volume_ul:.3g} uL of stock is below {s.min_pipette_ul:g} uL; "
                f"make a 1:{i.factor} intermediate ({i.stock_ul:.1f} uL stock + {i.diluent_ul:.1f} uL {i.diluent}) "
                f"and add {i.add_ul:.1f} uL of it"
            )
    for solv, f, lim in solvents:
        if lim is not None and f > lim:
            notes.append(f"{solv} at {f * 100:.3g}% is above its {lim * 100:g}% limit")
    return MediumBatch(recipe, tasks, needed, total, base, tuple(stocks), solvents, tuple(notes))


def _want(
    need: dict[tuple, tuple[Recipe, float, list[str]]], recipe: Recipe, per_plate: float, key: str
) -> None:
    """Add ``per_plate`` µL of ``recipe`` for task ``key`` to the batches of one feed time."""
    k = recipe.key()
    r, v, ks = need.get(k, (recipe, 0.0, []))
    need[k] = (r, v + per_plate, ks if key in ks else ks + [key])


def _wells(task: Task) -> int:
    return max(1, len(task.wells))


def prep_sheets(
    protocol: Protocol, plan: Plan, day: int | None = None, settings: PrepSettings | None = None
) -> list[PrepSheet]:
    """One sheet per feed time (of ``day``, or of the whole run)."""
    s = settings or PrepSettings()
    by_time: dict[datetime, list[Task]] = defaultdict(list)
    for t in plan.tasks:
        if day is not None and t.day != day:
            continue
        if isinstance(t.spec, (FeedSpec, WashoutSpec, AdditionSpec)):
            by_time[t.due].append(t)
    units = compound_units(protocol)
    sheets = []
    for due in sorted(by_time):
        tasks = by_time[due]
        need: dict[tuple, tuple[Recipe, float, list[str]]] = {}

        additions = []
        for t in tasks:
            n = _wells(t)
            sp = t.spec
            if isinstance(sp, (FeedSpec, WashoutSpec)):
                _want(need, sp.recipe, sp.add_ul * n, t.key)
                if sp.wash is not None:
                    _want(
                        need,
                        Recipe(((sp.wash.medium, 1.0),), ()),
                        sp.wash.volume_ul * sp.wash.times * n,
                        t.key,
                    )
            elif isinstance(sp, AdditionSpec):
                inter = None
                per_well = sp.stock_ul
                if 0 < per_well < s.min_pipette_ul:
                    inter = _intermediate(per_well, "the well's medium", s)
                    u = units[sp.compound]
                    diluted = u.to_canonical(protocol.compounds[sp.compound].stock) / inter.factor
                    # C1V1 again with the diluted stock: more volume, so a little more of it.
                    per_well = cc.spike_volume(
                        sp.well_before_ul,
                        u.to_canonical(sp.before),
                        u.to_canonical(sp.conc),
                        diluted,
                    )
                total = per_well * n * plan.plates * (1 + s.overage)
                if inter is not None:
                    made = _round_up(max(total, inter.factor * s.min_pipette_ul), 1.0)
                    stock_ul = _round_up(made / inter.factor, 0.1)
                    inter = Intermediate(
                        inter.factor,
                        stock_ul,
                        stock_ul * (inter.factor - 1),
                        inter.diluent,
                        per_well,
                    )
                additions.append(AdditionPrep(t.key, sp.compound, sp.conc, per_well, total, inter))
        batches = tuple(
            batch_for(protocol, r, v, plan.plates, tuple(ks), s) for r, v, ks in need.values()
        )
        sheets.append(
            PrepSheet(
                plan.local(due),
                tasks[0].day,
                batches,
                tuple(additions),
                _wells(tasks[0]),
                plan.plates,
            )
        )
    return sheets


def forecast(protocol: Protocol, plan: Plan, settings: PrepSettings | None = None) -> Forecast:
    """Totals over the whole run, from every prep sheet."""
    f = Forecast()
    for sheet in prep_sheets(protocol, plan, None, settings):
        f.feeds += 1
        for b in sheet.batches:
            for m, v in b.base:
                f.media_ul[m] += v
            for st in b.stocks:
                f.stocks_ul[st.compound] += (
                    st.intermediate.stock_ul if st.intermediate else st.volume_ul
                )
        for a in sheet.additions:
            f.stocks_ul[a.compound] += a.intermediate.stock_ul if a.intermediate else a.total_ul
    return f


# --- rendering ----------------------------------------------------------------------------


def _ul(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.2f} mL"
    if v >= 10:
        return f"{v:.1f} uL"
    return f"{v:.2f} uL"


def render_text(protocol: Protocol, sheets: list[PrepSheet]) -> str:
    lines: list[str] = []
    for sh in sheets:
        lines.append(
            f"== Day {sh.day}, {sh.due:%a %Y-%m-%d %H:%M} ({sh.plates} plate(s) x {sh.wells_per_plate} wells) =="
        )
        for b in sh.batches:
            lines.append(f"  {b.recipe.label()}")
            lines.append(
                f"    for {', '.join(b.tasks)}: {_ul(b.needed_ul)} needed; prepare {_ul(b.total_ul)} (incl. dead volume and overage)"
            )
            for m, v in b.base:
                lines.append(f"    {m:<28} {_ul(v):>12}")
            for st in b.stocks:
                if st.intermediate:
                    i = st.intermediate
                    lines.append(
                        f"    {st.compound:<28} {_ul(i.add_ul):>12}  of a 1:{i.factor} intermediate ({i.stock_ul:.1f} uL of {format_quantity(st.stock)} stock + {i.diluent_ul:.1f} uL {i.diluent}) -> {format_quantity(st.final)}"
                    )
                else:
                    lines.append(
                        f"    {st.compound:<28} {_ul(st.volume_ul):>12}  of {format_quantity(st.stock)} stock in {st.solvent} -> {format_quantity(st.final)}"
                    )
            for solv, f, lim in b.solvents:
                lim_s = f" (limit {lim * 100:g}%)" if lim is not None else ""
                lines.append(f"    solvent {solv}: {f * 100:.3g}%{lim_s}")
            for n in b.notes:
                lines.append(f"    NOTE: {n}")
        for a in sh.additions:
            how = f"{_ul(a.per_well_ul)} per well"
            if a.intermediate:
                how += f" of a 1:{a.intermediate.factor} intermediate of the stock"
            lines.append(
                f"  addition {a.task}: {a.compound} to {format_quantity(a.conc)}: {how}; total {_ul(a.total_ul)}"
            )
        lines.append("")
    return "\n".join(lines)


def render_forecast(f: Forecast) -> str:
    lines = [f"Consumables over the run ({f.feeds} prep times):"]
    for m, v in sorted(f.media_ul.items()):
        lines.append(f"  medium {m:<28} {_ul(v):>12}")
    for c, v in sorted(f.stocks_ul.items()):
        lines.append(f"  stock  {c:<28} {_ul(v):>12}")
    return "\n".join(lines)


def _local_text(due: datetime, zone: str) -> str:
    """``Wed 2026-12-09 09:00 CET``: a sheet's time (the run's local time) with its zone's
    abbreviation, as every time an operator reads carries its zone."""
    local = due if due.tzinfo is not None else due.replace(tzinfo=ZoneInfo(zone))
    local = local.astimezone(ZoneInfo(zone))
    return f"{local:%a %Y-%m-%d %H:%M} {local.tzname() or zone}"


def render_html(
    protocol: Protocol, plan: Plan, sheets: list[PrepSheet], fc: Forecast | None = None
) -> str:
    """A printable page: one table per feed time, with tick boxes for the operator."""
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Prep sheets: {e(protocol.title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;color:#111}table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:left}th{background:#eee}.n{text-align:right;font-variant-numeric:tabular-nums}"
        ".note{color:#8a4b00}section{page-break-inside:avoid}@media print{section{page-break-after:always}}</style></head><body>",
        f"<h1>Prep sheets: {e(protocol.title)}</h1>",
        f"<p>Protocol {e(protocol.id)} v{e(protocol.version)} (sha256 {e(protocol.sha256[:12])}), {plan.plates} plate(s), start {e(plan.start.strftime('%Y-%m-%d %H:%M'))} {e(plan.timezone)}</p>",
    ]
    for sh in sheets:
        out.append(f"<section><h2>Day {sh.day}: {e(_local_text(sh.due, plan.timezone))}</h2>")
        for b in sh.batches:
            out.append(
                f"<h3>{e(b.recipe.label())}</h3><p>For {e(', '.join(b.tasks))}: {_ul(b.needed_ul)} needed; prepare <b>{_ul(b.total_ul)}</b>.</p>"
            )
            out.append(
                "<table><tr><th>&#10003;</th><th>Component</th><th>Volume</th><th>Detail</th><th>Lot</th></tr>"
            )
            for m, v in b.base:
                out.append(
                    f"<tr><td>&#9744;</td><td>{e(m)}</td><td class='n'>{_ul(v)}</td><td>base medium</td><td></td></tr>"
                )
            for st in b.stocks:
                if st.intermediate:
                    i = st.intermediate
                    detail = f"1:{i.factor} intermediate: {i.stock_ul:.1f} uL stock + {i.diluent_ul:.1f} uL {i.diluent}; final {format_quantity(st.final)}"
                    vol = _ul(i.add_ul)
                else:
                    detail = f"{format_quantity(st.stock)} in {st.solvent}; final {format_quantity(st.final)}"
                    vol = _ul(st.volume_ul)
                out.append(
                    f"<tr><td>&#9744;</td><td>{e(st.compound)}</td><td class='n'>{vol}</td><td>{e(detail)}</td><td></td></tr>"
                )
            out.append("</table>")
            for solv, f, lim in b.solvents:
                out.append(
                    f"<p>Solvent {e(solv)}: {f * 100:.3g}%"
                    + (f" (limit {lim * 100:g}%)" if lim is not None else "")
                    + "</p>"
                )
            for n in b.notes:
                out.append(f"<p class='note'>Note: {e(n)}</p>")
        for a in sh.additions:
            out.append(
                f"<p>Addition {e(a.task)}: {e(a.compound)} to {e(format_quantity(a.conc))}, {_ul(a.per_well_ul)} per well, total {_ul(a.total_ul)}</p>"
            )
        out.append("<p>Prepared by: ____________ Checked by: ____________</p></section>")
    if fc is not None:
        out.append(
            "<section><h2>Consumables over the run</h2><table><tr><th>Item</th><th>Volume</th></tr>"
        )
        for m, v in sorted(fc.media_ul.items()):
            out.append(f"<tr><td>medium {e(m)}</td><td class='n'>{_ul(v)}</td></tr>")
        for c, v in sorted(fc.stocks_ul.items()):
            out.append(f"<tr><td>stock {e(c)}</td><td class='n'>{_ul(v)}</td></tr>")
        out.append("</table></section>")
    out.append("</body></html>")
    return "\n".join(out)
