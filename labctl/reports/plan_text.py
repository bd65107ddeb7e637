"""Plain-text rendering of a Plan: the day-by-day table a scientist reads."""

from __future__ import annotations

from labctl.plan.resolve import (
    AdditionSpec,
    EnvSpec,
    EventSpec,
    FeedSpec,
    Plan,
    Task,
    WashoutSpec,
)
from labctl.units import format_quantity


def task_detail(t: Task) -> str:
    """The second column of the plan: what is in the fresh medium, or what to do."""
    s = t.spec
    if isinstance(s, (FeedSpec, WashoutSpec)):
        return s.recipe.label()
    if isinstance(s, AdditionSpec):
        return f"{s.stock_ul:.3g} uL stock per well"
    if isinstance(s, EventSpec):
        bits = []
        if s.duration_s:
            bits.append(f"{s.duration_s / 60:g} min")
        if s.new_labware:
            bits.append(f"now {s.new_labware}")
        if s.new_volume_ul:
            bits.append(f"{s.new_volume_ul / 1000:g} mL/well")
        for g in s.qc:
            lim = " ".join(
                x
                for x in (
                    f">= {g.min:g}" if g.min is not None else "",
                    f"<= {g.max:g}" if g.max is not None else "",
                )
                if x
            )
            bits.append(f"QC {g.measure} {lim}{g.unit} (on fail: {g.on_fail.value})")
        return "; ".join(bits)
    if isinstance(s, EnvSpec):
        return ""
    return ""


def well_text(t: Task) -> str:
    w = t.well_after
    conc = ", ".join(f"{n} {format_quantity(q, 3)}" for n, q in w.conc)
    return f"{w.volume_ul / 1000:g} mL" + (f": {conc}" if conc else "")


def render_plan(plan: Plan, *, show_well: bool = False) -> str:
    params = ", ".join(f"{n} = {format_quantity(v)}" for n, v in plan.parameters.items()) or "none"
    lines = [
        f"{plan.title}",
        f"protocol {plan.protocol_id} v{plan.protocol_version} (sha256 {plan.protocol_sha256[:12]}), "
        f"{plan.plates} plate(s), day 0 = {plan.start:%a %Y-%m-%d}, times in {plan.timezone}",
        f"parameters: {params}",
        "",
        f"{'day':>4}  {'date':<10} {'time':<5}  {'task':<46} detail",
    ]
    last_day = None
    for t in plan.tasks:
        local = plan.local(t.due)
        day = f"{t.day:>4}" if t.day != last_day else "    "
        date = f"{local:%a %m-%d}" if t.day != last_day else ""
        last_day = t.day
        win = ""
        if t.after_previous_s is not None:
            win = f" [{t.after_previous_s / 3600:g} h after {t.previous_key}]"
        lines.append(
            f"{day}  {date:<10} {local:%H:%M}  {(t.kind.value + ': ' + t.title):<46} {task_detail(t)}{win}"
        )
        if show_well:
            lines.append(f"{'':>4}  {'':<10} {'':<5}  {'  in the well after:':<46} {well_text(t)}")
    feeds = len(plan.feeds())
    # Counted as labctl run and labctl status count them: one task per plate.
    n, p = len(plan.tasks), plan.plates
    per = f"{n * p} tasks ({n} per plate x {p} plates" if p > 1 else f"{n} tasks (1 plate"
    lines += [
        "",
        f"{per}, of which {feeds} feeds) from day {plan.first_day} to day {plan.last_day}.",
    ]
    return "\n".join(lines)
