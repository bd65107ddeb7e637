"""The difference of two versions of a protocol as a scientist reads it (``labctl diff``).

Both versions are resolved with their parameters' defaults (:func:`labctl.plan.resolve.resolve`)
and compared in two ways: the declarations (parameters, compounds, media, culture, timing)
as declared, and the schedule as resolved, day by day, so that a moved day range shows as
the days whose medium, factors or feeds changed. Consecutive days that changed the same way
are one line: ``days 3-7: CHIR99021 0.7 uM -> 3 uM``.

Each finding is a :class:`Difference`. A difference *in substance* changes what is done to
the cells or how (media, stocks, doses, feeds, timing, culture, environment, events and
their instructions and QC gates). The rest is text only: the protocol's id, title, version,
description, reference and phases, parameter descriptions, comments and layout. Values are
shown as the format spells them (``uM``, ``degC``), rounded to 4 significant digits (more
only where two different values would otherwise read the same); two quantities are the same
when they agree to 1 part in 10^9 in common units, so ``3000 nM`` equals ``3 uM``.

Loading and checking the files is the caller's (``labctl.validate``): this module only
compares two loaded protocols, so it stays below the loader in the layers.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, time
from typing import Any, TypeVar

import pint
import yaml

from labctl.plan.resolve import EnvSpec, FeedSpec, Plan, Recipe, Task, TaskKind, resolve
from labctl.protocol import source
from labctl.protocol.model import (
    Addition,
    Change,
    Compound,
    Event,
    Medium,
    Parameter,
    ParamRef,
    Protocol,
    QCGate,
    Value,
)
from labctl.units import format_quantity

# Sections in the order they are printed, with their headings.
SECTIONS: dict[str, str] = {
    "metadata": "metadata (text only)",
    "parameters": "parameters",
    "compounds": "compounds",
    "media": "media",
    "culture": "culture",
    "timing": "timing",
    "schedule": "schedule",
    "medium": "base medium, by day",
    "factors": "factors, by day",
    "feeds": "feeds, by day",
    "additions": "additions, by day",
    "environment": "incubator environment, by day",
    "events": "events",
    "text": "text (no effect on the cells)",
}
_LONG_TEXT = 70  # longer free text is reported as "changed", its values only in --json
T = TypeVar("T")


@dataclass(frozen=True)
class Difference:
    """One change from OLD to NEW.

    ``change`` is "added" (``old`` None), "removed" (``new`` None) or "changed"; ``old``
    and ``new`` are the values as the format spells them; ``days`` are the protocol days
    concerned (empty for declarations); ``text`` is the line a scientist reads.
    """

    section: str
    subject: str
    change: str
    old: str | None
    new: str | None
    days: tuple[int, ...]
    substantive: bool
    text: str


@dataclass(frozen=True)
class Side:
    """Which file and protocol version one side of the comparison is."""

    file: str
    id: str
    version: str
    sha256: str


@dataclass(frozen=True)
class ProtocolDiff:
    """Every difference from ``old`` to ``new``, in printing order."""

    old: Side
    new: Side
    identical_files: bool
    differences: tuple[Difference, ...]

    @property
    def substantive(self) -> tuple[Difference, ...]:
        return tuple(d for d in self.differences if d.substantive)

    @property
    def same_in_substance(self) -> bool:
        return not self.substantive


# --- how values read ----------------------------------------------------------------------


def qtext(q: pint.Quantity | None, digits: int = 4, none: str = "none") -> str:
    """A quantity as the format spells it: ``3 uM``, ``37 degC``, ``500 uL``, ``25%``."""
    if q is None:
        return none
    return format_quantity(q, digits).replace("µ", "u").replace("°C", "degC")


def same_q(a: pint.Quantity | None, b: pint.Quantity | None) -> bool:
    """Equal within 1e-9 (relative) in ``a``'s unit; a molar and a mass value never are."""
    if a is None or b is None:
        return a is None and b is None
    try:
        bv = float(b.to(a.units).magnitude)
    except pint.DimensionalityError:
        return False
    return math.isclose(float(a.magnitude), bv, rel_tol=1e-9, abs_tol=1e-12)


def qpair(a: pint.Quantity | None, b: pint.Quantity | None, none: str = "none") -> tuple[str, str]:
    """Both values as text, with more digits only where 4 would make them read the same."""
    sa, sb = qtext(a, none=none), qtext(b, none=none)
    for digits in (6, 9, 12, 15):
        if sa != sb:
            break
        sa, sb = qtext(a, digits, none), qtext(b, digits, none)
    return sa, sb


def days_text(days: Sequence[int]) -> str:
    """``day 5``, ``days 3-7``, ``days 21, 23``, ``days -5 to -1``."""
    ds = sorted(set(days))
    runs: list[list[int]] = []
    for d in ds:
        if runs and d == runs[-1][1] + 1:
            runs[-1][1] = d
        else:
            runs.append([d, d])
    parts = [str(a) if a == b else f"{a}-{b}" if a >= 0 else f"{a} to {b}" for a, b in runs]
    return ("day " if len(ds) == 1 else "days ") + ", ".join(parts)


def _hhmm(t: time | datetime) -> str:
    return f"{t:%H:%M}"


def _dur(seconds: float) -> str:
    s = round(seconds)
    if s and s % 3600 == 0:
        return f"{s // 3600} h"
    if s % 60 == 0:
        return f"{s // 60} min"
    return f"{s} s"


def _vol(ul: float) -> str:
    """A volume per well to 3 significant digits (pipetting precision)."""
    return f"{ul / 1000:.3g} mL" if ul >= 999.5 else f"{ul:.3g} uL"


def _pct(fraction: float) -> str:
    return f"{round(fraction * 100, 6):g}%"


def _count(n: int, what: str) -> str:
    """``1 line``, ``3 lines``."""
    return f"{n} {what}" + ("" if n == 1 else "s")


def _quote(text: str) -> str:
    return '"' + " ".join(text.split()) + '"'


def _short(text: str, n: int = 60) -> str:
    """Free text on one line, cut to ``n`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def _text(subject: str, old: str | None, new: str | None, days: Sequence[int] = ()) -> str:
    prefix = f"{days_text(days)}: " if days else ""
    if old is None:
        return f"{prefix}{subject} added: {new}"
    if new is None:
        return f"{prefix}{subject} removed (was {old})"
    return f"{prefix}{subject} {old} -> {new}"


def recipe_text(r: Recipe) -> str:
    """The fresh medium: ``NB_B27 with BDNF 20 ng/mL, DAPT 10 uM``."""
    base = parts_text(r.parts)
    if not r.factors:
        return base
    return base + " with " + ", ".join(f"{n} {qtext(q)}" for n, q in r.factors)


def parts_text(parts: Sequence[tuple[str, float]]) -> str:
    """A base medium or blend: ``KSR_medium`` or ``KSR_medium 75% + N2_medium 25%``."""
    if len(parts) == 1:
        return parts[0][0]
    return " + ".join(f"{n} {_pct(f)}" for n, f in parts)


# --- the collector ------------------------------------------------------------------------


@dataclass
class _Found:
    """Differences as they are found; per-day ones are joined over days at the end."""

    items: list[tuple[int, Difference]] = field(default_factory=list)
    daily: dict[tuple[str, str, str | None, str | None, bool], list[int]] = field(
        default_factory=dict
    )

    def add(
        self,
        section: str,
        subject: str,
        old: str | None,
        new: str | None,
        *,
        substantive: bool = True,
        days: Sequence[int] = (),
        text: str | None = None,
    ) -> None:
        change = "added" if old is None else "removed" if new is None else "changed"
        days = tuple(sorted(days))
        line = text or _text(subject, old, new, days)
        self.items.append(
            (
                len(self.items),
                Difference(section, subject, change, old, new, days, substantive, line),
            )
        )

    def value(
        self, section: str, subject: str, old: str, new: str, *, substantive: bool = True
    ) -> None:
        """A declared field; long free text reads "changed" (its values stay in the JSON)."""
        if old == new:
            return
        text = None
        if max(len(old), len(new)) > _LONG_TEXT:
            text = f"{subject} changed"
        self.add(section, subject, old, new, substantive=substantive, text=text)

    def qty(
        self,
        section: str,
        subject: str,
        a: pint.Quantity | None,
        b: pint.Quantity | None,
        none: str = "none",
    ) -> None:
        if not same_q(a, b):
            sa, sb = qpair(a, b, none)
            self.add(section, subject, sa, sb)

    def day(self, section: str, subject: str, old: str | None, new: str | None, day: int) -> None:
        """A change on one day; equal changes on other days join it in one line."""
        if old != new:
            self.daily.setdefault((section, subject, old, new, True), []).append(day)

    def result(self) -> tuple[Difference, ...]:
        for (section, subject, old, new, subst), days in self.daily.items():
            self.add(section, subject, old, new, substantive=subst, days=days)
        order = list(SECTIONS)
        ranked = sorted(
            self.items,
            key=lambda i: (order.index(i[1].section), i[1].days[:1] or (-(10**9),), i[0]),
        )
        return tuple(d for _, d in ranked)


# --- declarations -------------------------------------------------------------------------


def _metadata(f: _Found, a: Protocol, b: Protocol) -> None:
    f.value("metadata", "id", a.id, b.id, substantive=False)
    if a.title != b.title:  # shown whole, however long: it names the protocol
        f.add("metadata", "title", _quote(a.title), _quote(b.title), substantive=False)
    f.value("metadata", "version", a.version, b.version, substantive=False)
    f.value(
        "metadata", "description", _quote(a.description), _quote(b.description), substantive=False
    )
    ra, rb = a.reference, b.reference
    for name, get in (("citation", "citation"), ("DOI", "doi"), ("URL", "url")):
        x = getattr(ra, get, "") if ra else ""
        y = getattr(rb, get, "") if rb else ""
        f.value("metadata", f"reference {name}", x or "none", y or "none", substantive=False)
    pa = "; ".join(f"{p.name} {days_text(p.days.days)}" for p in a.phases) or "none"
    pb = "; ".join(f"{p.name} {days_text(p.days.days)}" for p in b.phases) or "none"
    f.value("metadata", "phases", pa, pb, substantive=False)


def _opt(x: T | None, text: Callable[[T], str]) -> str | None:
    """``text(x)``, or None (absent) for None."""
    return None if x is None else text(x)


def _bounds(p: Parameter) -> str:
    return f"default {qtext(p.default)}, min {qtext(p.min)}, max {qtext(p.max)}"


def _parameters(f: _Found, a: Protocol, b: Protocol) -> None:
    for name in _names(a.parameters, b.parameters):
        x, y = a.parameters.get(name), b.parameters.get(name)
        if x is None or y is None:
            f.add("parameters", f"${name}", _opt(x, _bounds), _opt(y, _bounds))
            continue
        for what in ("default", "min", "max"):
            f.qty("parameters", f"${name} {what}", getattr(x, what), getattr(y, what))
        f.value(
            "parameters",
            f"${name} description",
            _quote(x.description),
            _quote(y.description),
            substantive=False,
        )


def _compound(c: Compound) -> str:
    bits = [f"stock {qtext(c.stock)} in {c.solvent}"]
    if c.mw is not None:
        bits.append(f"mw {qtext(c.mw)}")
    return ", ".join(bits)


def _compounds(f: _Found, a: Protocol, b: Protocol) -> None:
    for name in _names(a.compounds, b.compounds):
        x, y = a.compounds.get(name), b.compounds.get(name)
        if x is None or y is None:
            f.add("compounds", name, _opt(x, _compound), _opt(y, _compound))
            continue
        f.qty("compounds", f"{name} stock", x.stock, y.stock)
        f.value("compounds", f"{name} solvent", x.solvent, y.solvent)
        f.qty("compounds", f"{name} mw", x.mw, y.mw)
        f.value("compounds", f"{name} storage", x.storage or "none", y.storage or "none")
        yes = {True: "yes", False: "no"}
        f.value(
            "compounds",
            f"{name} light-sensitive",
            yes[x.light_sensitive],
            yes[y.light_sensitive],
        )
        f.value(
            "compounds",
            f"{name} max_solvent",
            "default" if x.max_solvent is None else _pct(x.max_solvent),
            "default" if y.max_solvent is None else _pct(y.max_solvent),
        )


def _media(f: _Found, a: Protocol, b: Protocol) -> None:
    for name in _names(a.media, b.media):
        x, y = a.media.get(name), b.media.get(name)
        if x is None or y is None:

            def full(m: Medium) -> str:
                return _quote(m.description)

            def short(m: Medium) -> str:
                return _quote(_short(m.description))

            line = _text(name, _opt(x, short), _opt(y, short))
            f.add("media", name, _opt(x, full), _opt(y, full), text=line)
            continue
        f.value("media", f"{name} description", _quote(x.description), _quote(y.description))
        f.qty("media", f"{name} shelf life", x.shelf_life, y.shelf_life)


def _culture_and_timing(f: _Found, a: Protocol, b: Protocol) -> None:
    ca, cb = a.culture, b.culture
    f.value("culture", "labware", ca.labware, cb.labware)
    f.value("culture", "wells", _wells(ca.wells), _wells(cb.wells))
    f.qty("culture", "volume", ca.volume, cb.volume)
    f.value("culture", "coating", ca.coating or "none", cb.coating or "none")
    ta, tb = a.timing, b.timing
    f.value("timing", "feed_at", _hhmm(ta.feed_at), _hhmm(tb.feed_at))
    f.qty("timing", "window", ta.window, tb.window)
    f.qty("timing", "max_out_of_incubator", ta.max_out_of_incubator, tb.max_out_of_incubator)
    span_a, span_b = f"{a.first_day} to {a.last_day}", f"{b.first_day} to {b.last_day}"
    f.value("schedule", "protocol days", span_a, span_b)


def _wells(w: tuple[str, ...] | None) -> str:
    return "all" if w is None else ", ".join(w)


def _names(x: dict[str, Any], y: dict[str, Any]) -> list[str]:
    """Names of both, OLD's order first, then the ones NEW adds."""
    return list(x) + [n for n in y if n not in x]


# --- the schedule, day by day -------------------------------------------------------------


def _pair(
    old: Sequence[T],
    new: Sequence[T],
    keys: Sequence[Callable[[T], Hashable]],
    *,
    rest_in_order: bool = True,
) -> tuple[list[tuple[T, T]], list[T], list[T]]:
    """Match items: by each key in turn, then (``rest_in_order``) what is left in order."""
    pairs: list[tuple[T, T]] = []
    rest_a, rest_b = list(old), list(new)
    for key in keys:
        for x in list(rest_a):
            for y in rest_b:
                if key(x) == key(y):
                    pairs.append((x, y))
                    rest_a.remove(x)
                    rest_b.remove(y)
                    break
    while rest_in_order and rest_a and rest_b:
        pairs.append((rest_a.pop(0), rest_b.pop(0)))
    return pairs, rest_a, rest_b


def _tasks_by_day(plan: Plan, kind: TaskKind) -> dict[int, list[Task]]:
    out: dict[int, list[Task]] = {}
    for t in plan.tasks:
        if t.kind is kind:
            out.setdefault(t.day, []).append(t)
    return out


def _change_word(s: FeedSpec) -> str:
    if s.change is Change.FRACTION:
        return f"{_pct(s.fraction)} change"
    if s.change is Change.TOP_UP:
        return "top-up"
    return f"{s.change.value} change"


def _feed_aspects(t: Task, plan: Plan) -> dict[str, str]:
    assert isinstance(t.spec, FeedSpec)
    s = t.spec
    tied = ""
    if t.after_previous_s is not None:
        tied = f" ({_dur(t.after_previous_s)} after the previous feed)"
    wash = "none"
    if s.wash is not None:
        wash = f"{s.wash.times}x {s.wash.medium}, {_vol(s.wash.volume_ul)}/well"
    return {
        "feed": f"{_change_word(s)}, {_vol(s.add_ul)}/well",
        "feed time": _hhmm(plan.local(t.due)) + tied,
        "feed window": "+/- " + _dur((t.window_end - t.due).total_seconds()),
        "wash before the feed": wash,
        "feed concentrations meant": "in the fresh medium"
        if s.dose.value == "fresh"
        else "in the well after the change",
    }


def _same_volume(x: Task, y: Task) -> bool:
    """The same change adding the same volume, to pipetting precision (1 uL or 0.5%): a
    half change's volume follows the well's, which a spike's few uL of stock move."""
    a, b = x.spec, y.spec
    assert isinstance(a, FeedSpec) and isinstance(b, FeedSpec)
    return (
        a.change is b.change
        and math.isclose(a.fraction, b.fraction, abs_tol=1e-9)
        and abs(a.add_ul - b.add_ul) <= max(1.0, 0.005 * a.add_ul)
    )


def _feeds(f: _Found, pa: Plan, pb: Plan) -> None:
    fa, fb = _tasks_by_day(pa, TaskKind.FEED), _tasks_by_day(pb, TaskKind.FEED)
    for day in sorted(set(fa) | set(fb)):
        pairs, gone, new = _pair(
            fa.get(day, []), fb.get(day, []), [lambda t: _hhmm(pa.local(t.due))]
        )
        for t in gone:
            asp = _feed_aspects(t, pa)
            f.day("feeds", "feed", f"{asp['feed']} at {asp['feed time']}", None, day)
        for t in new:
            asp = _feed_aspects(t, pb)
            assert isinstance(t.spec, FeedSpec)
            what = f"{asp['feed']} at {asp['feed time']} of {recipe_text(t.spec.recipe)}"
            f.day("feeds", "feed", None, what, day)
        for x, y in pairs:
            ax, ay = _feed_aspects(x, pa), _feed_aspects(y, pb)
            if _same_volume(x, y):
                ay["feed"] = ax["feed"]
            for aspect in ax:
                f.day("feeds", aspect, ax[aspect], ay[aspect], day)
            assert isinstance(x.spec, FeedSpec) and isinstance(y.spec, FeedSpec)
            _recipes(f, x.spec.recipe, y.spec.recipe, day)


def _recipes(f: _Found, a: Recipe, b: Recipe, day: int) -> None:
    """The fresh media of one feed: base medium, then each compound."""
    same_parts = len(a.parts) == len(b.parts) and all(
        n == m and math.isclose(x, y, abs_tol=1e-9)
        for (n, x), (m, y) in zip(a.parts, b.parts, strict=True)
    )
    if not same_parts:
        f.day("medium", "medium", parts_text(a.parts), parts_text(b.parts), day)
    qa, qb = dict(a.factors), dict(b.factors)
    for name in sorted(set(qa) | set(qb)):
        x, y = qa.get(name), qb.get(name)
        if x is None or y is None:
            f.day("factors", name, _opt(x, qtext), _opt(y, qtext), day)
        elif not same_q(x, y):
            f.day("factors", name, *qpair(x, y), day)


def _param_use(p: Protocol) -> dict[tuple[int, str], str]:
    """(day, compound) -> how its factor dose is set: ``set by $chir`` or ``fixed``."""
    out: dict[tuple[int, str], str] = {}
    for r in p.schedule.factors:
        how = f"set by {r.conc}" if isinstance(r.conc, ParamRef) else "fixed"
        for d in r.days.days:
            out[(d, r.compound)] = how
    return out


def _factor_params(f: _Found, a: Protocol, b: Protocol) -> None:
    """A dose that a run could set with --param and no longer can (or the reverse)."""
    ua, ub = _param_use(a), _param_use(b)
    for day, name in sorted(set(ua) & set(ub)):
        f.day("factors", f"{name} dose", ua[(day, name)], ub[(day, name)], day)


def _env_by_day(plan: Plan) -> dict[int, EnvSpec]:
    cur = EnvSpec(37.0, 5.0, None)  # the resolver's default: 37 degC, 5% CO2, ambient O2
    changes = {t.day: t.spec for t in plan.tasks if t.kind is TaskKind.ENVIRONMENT}
    out: dict[int, EnvSpec] = {}
    for day in range(plan.first_day, plan.last_day + 1):
        spec = changes.get(day)
        if isinstance(spec, EnvSpec):
            cur = spec
        out[day] = cur
    return out


def _environment(f: _Found, pa: Plan, pb: Plan) -> None:
    ea, eb = _env_by_day(pa), _env_by_day(pb)
    for day in sorted(set(ea) & set(eb)):
        x, y = ea[day], eb[day]
        f.day(
            "environment",
            "temperature",
            f"{x.temperature_c:g} degC",
            f"{y.temperature_c:g} degC",
            day,
        )
        f.day("environment", "CO2", f"{x.co2_pct:g}%", f"{y.co2_pct:g}%", day)
        o2a = "ambient" if x.o2_pct is None else f"{x.o2_pct:g}%"
        o2b = "ambient" if y.o2_pct is None else f"{y.o2_pct:g}%"
        f.day("environment", "O2", o2a, o2b, day)


def _value(v: Value, plan: Plan) -> pint.Quantity:
    return plan.parameters[v.name] if isinstance(v, ParamRef) else v


def _additions_by_day(p: Protocol) -> dict[int, list[Addition]]:
    out: dict[int, list[Addition]] = {}
    for a in p.schedule.additions:
        for d in a.days.days:
            out.setdefault(d, []).append(a)
    return out


def _addition_aspects(a: Addition, p: Protocol, plan: Plan, day: int) -> dict[str, str]:
    out = {
        "": qtext(_value(a.conc, plan)),
        "time": _hhmm(a.at or p.timing.feed_at),
        "window": "+/- " + qtext(a.window or p.timing.window),
        "pulse": qtext(a.pulse),
    }
    if a.pulse is not None:
        # As the resolver does: washed with the day's (first) base medium unless named.
        base = next((r.parts[0][0] for r in p.schedule.media if day in r.days), "?")
        medium = a.washout_medium or base
        out["wash-out"] = f"{a.washout_times}x {medium} wash, then a full change"
    return out


def _addition_summary(asp: dict[str, str]) -> str:
    """``1 ug/mL at 09:00 for 1 h (then 1x NB_B27 wash, then a full change)``."""
    text = f"{asp['']} at {asp['time']}"
    if "wash-out" in asp:
        text += f" for {asp['pulse']} (then {asp['wash-out']})"
    return text


def _additions(f: _Found, a: Protocol, b: Protocol, pa: Plan, pb: Plan) -> None:
    da, db = _additions_by_day(a), _additions_by_day(b)
    for day in sorted(set(da) | set(db)):
        pairs, gone, new = _pair(
            da.get(day, []),
            db.get(day, []),
            [lambda x: (x.compound, x.at), lambda x: x.compound],
        )
        for x in gone:
            asp = _addition_aspects(x, a, pa, day)
            f.day("additions", f"{x.compound} spike", _addition_summary(asp), None, day)
        for y in new:
            asp = _addition_aspects(y, b, pb, day)
            f.day("additions", f"{y.compound} spike", None, _addition_summary(asp), day)
        for x, y in pairs:
            ax, ay = _addition_aspects(x, a, pa, day), _addition_aspects(y, b, pb, day)
            if x.compound != y.compound:
                f.day("additions", "spike of", x.compound, y.compound, day)
            for aspect in sorted(set(ax) | set(ay)):
                subject = f"{y.compound} spike {aspect}".rstrip()
                f.day("additions", subject, ax.get(aspect, "none"), ay.get(aspect, "none"), day)


# --- events -------------------------------------------------------------------------------


def _gate(g: QCGate) -> str:
    lim = " and ".join(
        x
        for x in (
            f">= {g.min:g}{g.unit}" if g.min is not None else "",
            f"<= {g.max:g}{g.unit}" if g.max is not None else "",
        )
        if x
    )
    by = f", by {qtext(g.by)}" if g.by is not None else ""
    return f"{lim or 'recorded'} (on fail: {g.on_fail.value}{by})"


def _event_summary(e: Event, p: Protocol) -> str:
    bits = [f"at {_hhmm(e.at or p.timing.feed_at)}"]
    if e.duration is not None:
        bits.append(qtext(e.duration))
    bits += [f"QC {g.measure} {_gate(g)}" for g in e.qc]
    return ", ".join(bits)


def _event_aspects(e: Event, p: Protocol) -> dict[str, str]:
    c = e.culture
    kept = "not changed"
    return {
        "title": _quote(e.title),
        "time": _hhmm(e.at or p.timing.feed_at),
        "duration": qtext(e.duration),
        "instructions": _quote(e.instructions),
        "new labware": (c.labware if c else None) or kept,
        "new wells": _wells(c.wells) if c and c.wells is not None else kept,
        "new working volume": qtext(c.volume if c else None, none=kept),
        "new coating": (c.coating if c else None) or kept,
    }


def _events(f: _Found, a: Protocol, b: Protocol) -> None:
    pairs, gone, new = _pair(
        a.schedule.events,
        b.schedule.events,
        [lambda e: (e.kind, e.title), lambda e: (e.kind, e.days.days)],
        rest_in_order=False,  # a new title on new days is another event, not an edit
    )
    for e in gone:
        f.add(
            "events", f"{e.kind} '{_short(e.title)}'", _event_summary(e, a), None, days=e.days.days
        )
    for e in new:
        f.add(
            "events", f"{e.kind} '{_short(e.title)}'", None, _event_summary(e, b), days=e.days.days
        )
    for x, y in pairs:
        label, days = f"{x.kind} '{_short(x.title)}'", x.days.days
        if x.days.days != y.days.days:
            ta, tb = days_text(x.days.days), days_text(y.days.days)
            both = sorted({*x.days.days, *y.days.days})  # a move concerns the days of both
            move = f"{label} moves from {ta} to {tb}"
            f.add("events", f"{label} days", ta, tb, days=both, text=move)
        ax, ay = _event_aspects(x, a), _event_aspects(y, b)
        for aspect in ax:
            if ax[aspect] == ay[aspect]:
                continue
            subject = f"{label} {aspect}"
            text = None
            if max(len(ax[aspect]), len(ay[aspect])) > _LONG_TEXT:
                text = f"{days_text(days)}: {subject} changed"
            f.add("events", subject, ax[aspect], ay[aspect], days=days, text=text)
        ga, gb = {g.measure: g for g in x.qc}, {g.measure: g for g in y.qc}
        for m in _names(ga, gb):
            old = _gate(ga[m]) if m in ga else None
            new_ = _gate(gb[m]) if m in gb else None
            if old != new_:
                f.add("events", f"{label} QC {m}", old, new_, days=days)


# --- text: comments and layout ------------------------------------------------------------


def _plain(node: source.Node | None) -> Any:
    """A parsed file as plain values (scalars' text), without positions or key order."""
    if isinstance(node, source.Map):
        return tuple(sorted((k.text, _plain(v)) for k, v in node.entries))
    if isinstance(node, source.Seq):
        return tuple(_plain(i) for i in node.items)
    if isinstance(node, source.Scalar):
        return node.text
    return None


def comments(text: str) -> list[str]:
    """The comment lines of YAML text: what lies between the scanner's tokens after '#'."""
    out: list[str] = []
    pos = 0
    try:
        tokens = list(yaml.scan(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return out
    for tok in [*tokens, None]:
        end = tok.start_mark.index if tok is not None else len(text)
        for line in text[pos:end].splitlines():
            if "#" in line:
                out.append(line[line.index("#") :].rstrip())
        if tok is not None:
            pos = max(pos, tok.end_mark.index)
    return out


def _text_changes(f: _Found, a: Protocol, b: Protocol) -> None:
    ca, cb = comments(a.source_text), comments(b.source_text)
    if ca != cb:
        removed, added = [], []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ca, b=cb, autojunk=False).get_opcodes():
            if op != "equal":
                removed += ca[i1:i2]
                added += cb[j1:j2]
        f.add(
            "text",
            "comments",
            "\n".join(removed),
            "\n".join(added),
            substantive=False,
            text=f"comments changed ({_count(len(removed), 'line')} removed, {len(added)} added)",
        )
    if f.items or f.daily or a.source_text == b.source_text:
        return
    ra, _ = source.parse(a.source_text, a.source_file)
    rb, _ = source.parse(b.source_text, b.source_file)
    if _plain(ra) == _plain(rb):
        what = "layout only (spacing, line breaks, quoting or key order)"
    else:
        what = "written differently with the same meaning (e.g. units, day lists or x- keys)"
    f.add("text", "wording", None, what, substantive=False, text=what)


# --- the whole comparison -----------------------------------------------------------------


def compare(old: Protocol, new: Protocol) -> ProtocolDiff:
    """Every difference from ``old`` to ``new`` (both loaded and checked).

    Each is resolved with its own parameters' defaults from the same start; PlanError
    (with file:line:column) if one cannot be resolved.
    """
    start = datetime(2000, 1, 3, 0, 0)  # any day: only days and times of day are compared
    pa = resolve(old, start=start, timezone="UTC")
    pb = resolve(new, start=start, timezone="UTC")
    f = _Found()
    _metadata(f, old, new)
    _parameters(f, old, new)
    _compounds(f, old, new)
    _media(f, old, new)
    _culture_and_timing(f, old, new)
    _feeds(f, pa, pb)
    _factor_params(f, old, new)
    _additions(f, old, new, pa, pb)
    _environment(f, pa, pb)
    _events(f, old, new)
    _text_changes(f, old, new)
    return ProtocolDiff(
        Side(old.source_file, old.id, old.version, old.sha256),
        Side(new.source_file, new.id, new.version, new.sha256),
        old.source_text == new.source_text,
        f.result(),
    )


def summary(d: ProtocolDiff) -> str:
    """The closing sentence: what differs in substance, or that nothing does."""
    n, m = len(d.substantive), len(d.differences) - len(d.substantive)
    if d.identical_files:
        return "No difference in what the cells receive: the files are identical."
    if not n:
        return f"No difference in what the cells receive; {_count(m, 'difference')} in text only."
    return f"{_count(n, 'difference')} in substance" + (f", {m} in text only." if m else ".")


def render_text(d: ProtocolDiff) -> str:
    """The diff as a scientist reads it: one heading per section, one line per change."""
    o, n = d.old, d.new
    lines = [f"{o.file} ({o.id} {o.version}) -> {n.file} ({n.id} {n.version})"]
    for section, title in SECTIONS.items():
        found = [x for x in d.differences if x.section == section]
        if found:
            lines += ["", f"{title}:", *(f"  {x.text}" for x in found)]
    lines += ["", summary(d)]
    return "\n".join(lines)


def diff_to_json(d: ProtocolDiff) -> dict[str, Any]:
    """The diff as plain JSON data (``labctl diff --json``)."""
    data = asdict(d)
    data["same_in_substance"] = d.same_in_substance
    data["summary"] = summary(d)
    for x in data["differences"]:
        x["days"] = list(x["days"])
    return data
