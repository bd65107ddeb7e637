"""Build a :class:`~labctl.protocol.model.Protocol` from located YAML nodes.

Every problem becomes a located :class:`~labctl.errors.Diagnostic`; the loader goes on past
a bad element so that one run reports all problems of a file. Structural checks live here;
checks across sections are in ``checks`` (and, those that need a plan, in
:mod:`labctl.plan.checks`); :mod:`labctl.validate` reads a file and runs them all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import time
from typing import TypeVar

import pint

from labctl.protocol import names
from labctl.protocol.diagnostics import Ctx, did_you_mean, loc
from labctl.protocol.model import (
    EVENT_KINDS,
    Addition,
    Change,
    Compound,
    Culture,
    CultureChange,
    DaySet,
    Dose,
    EnvRule,
    Event,
    FactorRule,
    FeedRule,
    Loc,
    Medium,
    MediumRule,
    OnFail,
    Parameter,
    ParamRef,
    Phase,
    Protocol,
    QCGate,
    Reference,
    Schedule,
    Timing,
    Value,
    Wash,
)
from labctl.protocol.source import Map, Node, Scalar, Seq, describe
from labctl.protocol.spec import fields
from labctl.units import Q_, Dim, UnitParseError, concentration_kind, parse_quantity

FORMAT_VERSION = 1
MIN_DAY, MAX_DAY = -100, 1000  # beyond this a day is surely a typo (protocols last weeks)
MAX_DURATION_DAYS = MAX_DAY - MIN_DAY
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_PARAM_RE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]{0,63})$")
_TIME_RE = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")
_RANGE_RE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*(?:/\s*(\d+)\s*)?)?$")
_WELL_RE = re.compile(r"^[A-P](?:[1-9]|1\d|2[0-4])$")

T = TypeVar("T")


# --- structural helpers -------------------------------------------------------------------


def as_map(ctx: Ctx, node: Node | None, what: str) -> Map | None:
    if node is None:
        return None
    if not isinstance(node, Map):
        ctx.error(node, f"{what} must be a mapping (key: value lines), not {describe(node)}")
        return None
    return node


def as_list(ctx: Ctx, node: Node | None, what: str) -> list[Node]:
    if node is None or (isinstance(node, Scalar) and node.is_null):
        return []
    if not isinstance(node, Seq):
        ctx.error(node, f"{what} must be a list (lines starting with '- '), not {describe(node)}")
        return []
    return node.items


def check_keys(ctx: Ctx, m: Map, obj: str, what: str) -> None:
    """Unknown keys (with a suggestion) and missing required keys of one object."""
    ctx.note_values(loc(m), m)
    spec = fields(obj)
    for k, _ in m.entries:
        if k.text.startswith("x-"):
            continue  # extension keys are kept and ignored (PROTOCOL_FORMAT.md)
        if k.text not in spec:
            hint = did_you_mean(k.text, set(spec))
            v = m.get(k.text)
            if not hint and isinstance(v, Scalar) and v.is_null and v.text == "":
                # `{description: a, b}` splits at the comma: "b" becomes a key of its own.
                hint = "; if it belongs to the text before it, put that text in quotes (a comma inside {...} starts a new key)"
            ctx.error(k, f"unknown key '{k.text}' in {what}{hint}")
    present = set(m.keys())
    for f in spec.values():
        if f.required and f.name not in present:
            ctx.error(m, f"{what} is missing the required key '{f.name}'")
        elif f.required and (f.type == "string" or f.type.startswith("enum:")):
            # Text getters read null and "" as absent: say so, or the element would vanish.
            v = m.get(f.name)
            if isinstance(v, Scalar) and ((v.is_null and not v.quoted) or not v.text.strip()):
                ctx.error(v, f"'{f.name}' in {what} is empty; it needs a value")


def get_str(ctx: Ctx, m: Map, key: str, what: str, default: str = "") -> str:
    node = m.get(key)
    if node is None or (isinstance(node, Scalar) and node.is_null and not node.quoted):
        return default
    if not isinstance(node, Scalar):
        ctx.error(node, f"'{key}' in {what} must be text, not {describe(node)}")
        return default
    return node.text


def get_name(ctx: Ctx, node: Node, what: str) -> str | None:
    if not isinstance(node, Scalar) or node.is_null:
        ctx.error(node, f"{what} must be a name, not {describe(node)}")
        return None
    return node.text


def get_bool(ctx: Ctx, m: Map, key: str, what: str) -> bool:
    node = m.get(key)
    if node is None:
        return False
    if not isinstance(node, Scalar) or node.kind != "bool":
        ctx.error(node, f"'{key}' in {what} must be true or false, not {describe(node)}")
        return False
    return node.text.lower() in ("true", "yes", "on", "y")


def get_int(ctx: Ctx, m: Map, key: str, what: str, default: int, lo: int, hi: int) -> int:
    node = m.get(key)
    if node is None:
        return default
    if not isinstance(node, Scalar) or node.kind != "int":
        ctx.error(node, f"'{key}' in {what} must be a whole number, not {describe(node)}")
        return default
    try:
        v = int(node.text.replace("_", ""), 0)
    except ValueError:
        ctx.error(node, f"'{key}' in {what} must be a whole number, not {describe(node)}")
        return default
    if not lo <= v <= hi:
        ctx.error(node, f"'{key}' in {what} must be between {lo} and {hi}, not {v}")
        return default
    return v


def get_number(ctx: Ctx, m: Map, key: str, what: str) -> float | None:
    node = m.get(key)
    if node is None:
        return None
    if not isinstance(node, Scalar) or node.kind not in ("int", "float"):
        ctx.error(node, f"'{key}' in {what} must be a number, not {describe(node)}")
        return None
    try:
        v = float(node.text.replace("_", ""))
    except ValueError:
        ctx.error(node, f"'{key}' in {what} must be a number, not {describe(node)}")
        return None
    if v != v or v in (float("inf"), float("-inf")):
        ctx.error(node, f"'{key}' in {what} must be a finite number")
        return None
    return v


def parse_qty(ctx: Ctx, node: Node | None, key: str, what: str, dim: Dim) -> pint.Quantity | None:
    if node is None:
        return None
    if not isinstance(node, Scalar) or node.is_null:
        ctx.error(node, f"'{key}' in {what} must be {dim.value}, not {describe(node)}")
        return None
    if node.text.startswith("$"):
        ctx.error(node, f"'{key}' in {what} cannot be a parameter; write {dim.value}")
        return None
    try:
        q = parse_quantity(node.text, dim)
    except UnitParseError as exc:
        ctx.error(node, f"'{key}' in {what}: {exc}")
        return None
    if dim is Dim.DURATION and abs(q.to("day").magnitude) > MAX_DURATION_DAYS:
        # Beyond any protocol's span (and beyond what date arithmetic can hold).
        ctx.error(
            node,
            f"'{key}' in {what}: '{node.text}' is longer than {MAX_DURATION_DAYS} days, labctl's limit for a duration",
        )
        return None
    return q


def get_qty(ctx: Ctx, m: Map, key: str, what: str, dim: Dim) -> pint.Quantity | None:
    return parse_qty(ctx, m.get(key), key, what, dim)


def get_value(ctx: Ctx, m: Map, key: str, what: str, dim: Dim) -> Value | None:
    """A quantity or a ``$parameter`` reference."""
    node = m.get(key)
    if node is None:
        return None
    if isinstance(node, Scalar) and node.text.startswith("$"):
        pm = _PARAM_RE.match(node.text)
        if not pm:
            ctx.error(node, f"'{node.text}' is not a parameter reference ($ and a name)")
            return None
        return ParamRef(pm.group(1), loc(node))
    return parse_qty(ctx, node, key, what, dim)


def get_time(ctx: Ctx, m: Map, key: str, what: str) -> time | None:
    node = m.get(key)
    if node is None:
        return None
    if not isinstance(node, Scalar) or node.is_null:
        ctx.error(
            node, f"'{key}' in {what} must be a time of day like \"09:30\", not {describe(node)}"
        )
        return None
    tm = _TIME_RE.match(node.text)
    if not tm:
        ctx.error(
            node,
            f"'{key}' in {what}: '{node.text}' is not a time of day; write HH:MM, e.g. \"09:30\"",
        )
        return None
    return time(int(tm.group(1)), int(tm.group(2)))


def parse_days(ctx: Ctx, node: Node | None, what: str) -> DaySet | None:
    """A day set: 5, "0-11", [0, 2, 4], "11-25/2", -2, "-5--1"."""
    if node is None:
        return None
    items: list[Scalar] = []
    if isinstance(node, Seq):
        if not node.items:
            ctx.error(node, f"'days' in {what} is an empty list")
            return None
        for it in node.items:
            if not isinstance(it, Scalar) or it.is_null:
                ctx.error(
                    it,
                    f"'days' in {what}: a list of days holds numbers or ranges, not {describe(it)}",
                )
                return None
            items.append(it)
    elif isinstance(node, Scalar) and not node.is_null:
        items = [node]
    else:
        ctx.error(
            node,
            f'\'days\' in {what} must be a day (5), a range ("0-11"), a list ([0, 2]) or a step ("11-25/2"), not {describe(node)}',
        )
        return None
    days: set[int] = set()
    for it in items:
        rm = _RANGE_RE.match(it.text)
        if not rm:
            ctx.error(
                it,
                f"'days' in {what}: '{it.text}' is not a day set; write a day (5), a range (\"0-11\"), "
                'a list ([0, 2, 4]) or a step ("11-25/2")',
            )
            return None
        a = int(rm.group(1))
        b = int(rm.group(2)) if rm.group(2) is not None else a
        step = int(rm.group(3)) if rm.group(3) is not None else 1
        if b < a:
            ctx.error(it, f"'days' in {what}: range '{it.text}' ends before it starts")
            return None
        if step < 1:
            ctx.error(it, f"'days' in {what}: the step in '{it.text}' must be at least 1")
            return None
        if a < MIN_DAY or b > MAX_DAY:
            ctx.error(
                it,
                f"'days' in {what}: '{it.text}' is outside days {MIN_DAY} to {MAX_DAY}, labctl's limit for a protocol day",
            )
            return None
        days.update(range(a, b + 1, step))
    text = node.text if isinstance(node, Scalar) else "[" + ", ".join(i.text for i in items) + "]"
    return DaySet(tuple(sorted(days)), text)


def each_named(
    ctx: Ctx, node: Node | None, what: str, build: Callable[[str, Scalar, Map], T | None]
) -> dict[str, T]:
    """Build every ``name: {mapping}`` entry of a section."""
    out: dict[str, T] = {}
    if node is None or (isinstance(node, Scalar) and node.is_null):
        return out
    m = as_map(ctx, node, what)
    if m is None:
        return out
    seen: dict[str, Scalar] = {}  # name -> its key, to refuse look-alike duplicates
    for k, v in m.entries:
        if k.text.startswith("x-"):
            continue
        name = names.normal(k.text)
        why = names.problem(name)
        # Declared even when refused, so that its uses are not reported as unknown too.
        ctx.declared.setdefault(what, set()).add(name)
        if why is not None:
            ctx.error(k, f"'{name}' is not a valid name in {what}: {why}")
            ctx.incomplete.add(what)
            continue
        twin = next((t for t in seen if names.same(name, t)), None)
        if twin is not None:
            first = seen[twin]
            ctx.error(
                k,
                f"'{name}' in {what} looks the same as '{twin}' (line {first.mark.line}): they "
                f"differ in {names.difference(name, twin)}; rename or remove one, so that no "
                "one can take one for the other",
            )
            ctx.incomplete.add(what)
            continue
        seen[name] = k
        vm = as_map(ctx, v, f"{what}.{name}")
        if vm is None:
            ctx.incomplete.add(what)
            continue
        ctx.note_values(loc(k), vm)  # a named entry's loc is its name's
        item = build(name, k, vm)
        if item is not None:
            out[name] = item
        else:
            ctx.incomplete.add(what)
    return out


# --- sections -----------------------------------------------------------------------------


def _text(m: Map, key: str) -> str:
    """The text of ``m[key]`` as written (empty if absent)."""
    node = m.get(key)
    return node.text if isinstance(node, Scalar) else ""


def _parameter(ctx: Ctx, name: str, key: Scalar, m: Map) -> Parameter | None:
    what = f"parameter '{name}'"
    check_keys(ctx, m, "parameter", what)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
        ctx.error(
            key, f"parameter name '{name}' must be letters, digits and _ (it is used as ${name})"
        )
        return None
    default = get_qty(ctx, m, "default", what, Dim.ANY)
    lo = get_qty(ctx, m, "min", what, Dim.ANY)
    hi = get_qty(ctx, m, "max", what, Dim.ANY)
    if default is None:
        return None
    lo = _bound(ctx, m, "min", lo, default, what)
    hi = _bound(ctx, m, "max", hi, default, what)
    if {lo is None or _same_kind(lo, default), hi is None or _same_kind(hi, default)} != {True}:
        # A molar bound of a mass default (or the reverse): compared through the mw of the
        # compound that uses the parameter, in plan.checks (compounds are not known here).
        return Parameter(name, default, lo, hi, get_str(ctx, m, "description", what), loc(key))
    if lo is not None and hi is not None and lo > hi:
        ctx.error(m.get("min") or m, f"{what}: min is above max")
    elif lo is not None and default < lo:
        ctx.error(
            m.get("default") or m,
            f"default of {what} ({_text(m, 'default')}) is below its min ({_text(m, 'min')})",
        )
    elif hi is not None and default > hi:
        ctx.error(
            m.get("default") or m,
            f"default of {what} ({_text(m, 'default')}) is above its max ({_text(m, 'max')})",
        )
    return Parameter(name, default, lo, hi, get_str(ctx, m, "description", what), loc(key))


def _same_kind(a: pint.Quantity, b: pint.Quantity) -> bool:
    return bool(a.dimensionality == b.dimensionality)


def _bound(
    ctx: Ctx, m: Map, key: str, q: pint.Quantity | None, default: pint.Quantity, what: str
) -> pint.Quantity | None:
    """A parameter's min or max, if of the default's kind (or the other of molar and mass,
    which an mw converts); else an error and None (the parameter itself is kept, so that its
    uses are not reported as unknown)."""
    if q is None or _same_kind(q, default):
        return q
    if {concentration_kind(q), concentration_kind(default)} == {"molar", "mass"}:
        return q
    ctx.error(
        m.get(key) or m,
        f"'{key}' of {what} ({_text(m, key)}) is not in the same kind of unit as its default ({_text(m, 'default')})",
    )
    return None


def _compound(ctx: Ctx, name: str, key: Scalar, m: Map) -> Compound | None:
    what = f"compound '{name}'"
    check_keys(ctx, m, "compound", what)
    stock = get_qty(ctx, m, "stock", what, Dim.CONCENTRATION)
    mw = get_qty(ctx, m, "mw", what, Dim.MOLAR_MASS)
    max_solvent = get_qty(ctx, m, "max_solvent", what, Dim.FRACTION)
    if stock is not None and stock.magnitude <= 0:
        ctx.error(m.get("stock") or m, f"stock of {what} must be above zero")
        stock = None
    if mw is not None and mw.magnitude <= 0:
        ctx.error(m.get("mw") or m, f"mw of {what} must be above zero")
        mw = None
    frac = None
    if max_solvent is not None:
        frac = float(max_solvent.to("dimensionless").magnitude)
        if not 0 < frac <= 1:
            ctx.error(
                m.get("max_solvent") or m, f"max_solvent of {what} must be between 0% and 100%"
            )
            frac = None
    solvent = get_str(ctx, m, "solvent", what).strip()
    if stock is None or "solvent" not in m.keys():
        return None
    return Compound(
        name,
        stock,
        solvent,
        mw,
        get_str(ctx, m, "storage", what),
        get_bool(ctx, m, "light_sensitive", what),
        frac,
        loc(key),
    )


def _medium(ctx: Ctx, name: str, key: Scalar, m: Map) -> Medium | None:
    what = f"medium '{name}'"
    check_keys(ctx, m, "medium", what)
    return Medium(
        name,
        get_str(ctx, m, "description", what),
        get_qty(ctx, m, "shelf_life", what, Dim.DURATION),
        loc(key),
    )


def _wells(ctx: Ctx, node: Node | None, what: str, owner: Loc) -> tuple[str, ...] | None:
    """The wells listed (None = all); each well's location is kept in ``ctx.well_locs``
    under (owner, well), so the labware check can point at the well itself."""
    if node is None or (isinstance(node, Scalar) and node.text == "all"):
        return None
    if not isinstance(node, Seq) or not node.items:
        ctx.error(
            node,
            f"'wells' in {what} must be 'all' or a list of wells like [A1, A2], not {describe(node)}",
        )
        return None
    out: list[str] = []
    for it in node.items:
        if not isinstance(it, Scalar) or not _WELL_RE.match(it.text.upper()):
            ctx.error(it, f"'wells' in {what}: {describe(it)} is not a well name like A1")
            continue
        w = it.text.upper()
        if w in out:
            ctx.error(it, f"'wells' in {what}: well {w} is listed twice")
            continue
        out.append(w)
        ctx.well_locs[(owner, w)] = loc(it)
    return tuple(out) if out else None


def _culture(ctx: Ctx, node: Node | None) -> Culture | None:
    m = as_map(ctx, node, "culture")
    if m is None:
        return None
    check_keys(ctx, m, "culture", "culture")
    labware = get_str(ctx, m, "labware", "culture").strip()
    volume = get_qty(ctx, m, "volume", "culture", Dim.VOLUME)
    wells = _wells(ctx, m.get("wells"), "culture", loc(m))
    if not labware or volume is None:
        return None
    if volume.magnitude <= 0:
        ctx.error(m.get("volume") or m, "culture volume must be above zero")
        return None
    return Culture(labware, wells, volume, get_str(ctx, m, "coating", "culture"), loc(m))


def _timing(ctx: Ctx, node: Node | None, root: Map) -> Timing:
    default = Timing(time(9, 0), Q_(2, "hour"), None, loc(root))
    m = as_map(ctx, node, "timing")
    if m is None:
        return default
    check_keys(ctx, m, "timing", "timing")
    window = get_qty(ctx, m, "window", "timing", Dim.DURATION)
    moi = get_qty(ctx, m, "max_out_of_incubator", "timing", Dim.DURATION)
    for q, k in ((window, "window"), (moi, "max_out_of_incubator")):
        if q is not None and q.magnitude < 0:
            ctx.error(m.get(k) or m, f"timing {k} cannot be negative")
    return Timing(
        get_time(ctx, m, "feed_at", "timing") or default.feed_at,
        window if window is not None else default.window,
        moi,
        loc(m),
    )


def _medium_spec(ctx: Ctx, node: Node, what: str) -> tuple[tuple[str, float], ...] | None:
    if isinstance(node, Scalar) and not node.is_null:
        return ((names.normal(node.text.strip()), 1.0),)
    if isinstance(node, Map):
        parts: list[tuple[str, float]] = []
        for k, v in node.entries:
            q = parse_qty(ctx, v, k.text, f"the blend in {what}", Dim.FRACTION)
            if q is None:
                return None
            frac = float(q.to("dimensionless").magnitude)
            if not 0 < frac <= 1:
                ctx.error(v, f"blend part '{k.text}' in {what} must be above 0% and at most 100%")
                return None
            parts.append((names.normal(k.text), frac))
        if not parts:
            ctx.error(node, f"the blend in {what} is empty")
            return None
        total = sum(p for _, p in parts)
        if abs(total - 1.0) > 1e-6:
            ctx.error(node, f"the blend in {what} sums to {total * 100:g}%, not 100%")
            return None
        return tuple(parts)
    ctx.error(
        node,
        f"'medium' in {what} must be a medium name or a blend like {{KSR: 75%, N2: 25%}}, not {describe(node)}",
    )
    return None


def _rule_what(kind: str, i: int) -> str:
    return f"{kind} #{i + 1}"


def _rules(ctx: Ctx, node: Node | None, section: str, obj: str) -> Iterator[tuple[str, Map]]:
    """Each entry of a schedule list that is a mapping, keys checked, with its name for messages."""
    items = as_list(ctx, node, section)
    if node is not None and not isinstance(node, Seq) and not _is_null(node):
        ctx.incomplete.add(section)
    for i, it in enumerate(items):
        what = _rule_what(section, i)
        m = as_map(ctx, it, what)
        if m is None:
            ctx.incomplete.add(section)
            continue
        check_keys(ctx, m, obj, what)
        yield what, m


def _is_null(node: Node) -> bool:
    return isinstance(node, Scalar) and node.is_null


def _media_rules(ctx: Ctx, node: Node | None) -> list[MediumRule]:
    out = []
    for what, m in _rules(ctx, node, "schedule.media", "media_rule"):
        days = parse_days(ctx, m.get("days"), what)
        mn = m.get("medium")
        parts = _medium_spec(ctx, mn, what) if mn is not None else None
        if days and parts:
            out.append(MediumRule(days, parts, loc(m)))
        else:
            ctx.incomplete.add("schedule.media")  # left out: later checks must not miss it
    return out


def _factor_rules(ctx: Ctx, node: Node | None) -> list[FactorRule]:
    out = []
    for what, m in _rules(ctx, node, "schedule.factors", "factor_rule"):
        days = parse_days(ctx, m.get("days"), what)
        comp = names.normal(get_str(ctx, m, "compound", what).strip())
        conc = get_value(ctx, m, "conc", what, Dim.CONCENTRATION)
        if days and comp and conc is not None:
            out.append(FactorRule(comp, conc, days, loc(m)))
        else:
            ctx.incomplete.add("schedule.factors")
    return out


def _change(ctx: Ctx, node: Node | None, what: str) -> tuple[Change, float] | None:
    if node is None:
        return None
    if isinstance(node, Scalar) and not node.is_null:
        t = node.text.strip().lower()
        named = {
            "full": (Change.FULL, 1.0),
            "half": (Change.HALF, 0.5),
            "top-up": (Change.TOP_UP, 0.0),
            "topup": (Change.TOP_UP, 0.0),
            "none": (Change.NONE, 0.0),
        }
        if t in named:
            return named[t]
        if node.kind in ("int", "float"):
            try:
                f = float(t)
            except ValueError:
                f = -1.0
        elif t.endswith("%"):
            try:
                f = float(parse_quantity(t, Dim.FRACTION).to("dimensionless").magnitude)
            except UnitParseError:
                f = -1.0
        else:
            f = -1.0
            ctx.error(
                node,
                f"'change' in {what}: '{node.text}' is not a change (full, half, a fraction like 0.3, top-up or none){did_you_mean(t, ['full', 'half', 'top-up', 'none'])}",
            )
            return None
        if not 0 < f <= 1:
            ctx.error(
                node,
                f"'change' in {what}: a fraction must be above 0 and at most 1, not {node.text}",
            )
            return None
        if f == 1.0:
            return (Change.FULL, 1.0)
        return (Change.FRACTION, f)
    ctx.error(
        node,
        f"'change' in {what} must be full, half, a fraction (0.3), top-up or none, not {describe(node)}",
    )
    return None


def _wash(ctx: Ctx, node: Node | None, what: str) -> Wash | None:
    m = as_map(ctx, node, f"'wash' in {what}")
    if m is None:
        return None
    w = f"the wash in {what}"
    check_keys(ctx, m, "wash", w)
    medium = names.normal(get_str(ctx, m, "medium", w).strip())
    vol = get_value(ctx, m, "volume", w, Dim.VOLUME)
    times = get_int(ctx, m, "times", w, 1, 1, 10)
    if not medium:
        return None
    return Wash(medium, vol, times, loc(m))


def _feeds(ctx: Ctx, node: Node | None) -> list[FeedRule]:
    out = []
    for what, m in _rules(ctx, node, "schedule.feeds", "feed"):
        days = parse_days(ctx, m.get("days"), what)
        ch = _change(ctx, m.get("change"), what)
        vol = get_value(ctx, m, "volume", what, Dim.VOLUME)
        at = get_time(ctx, m, "at", what)
        window = get_qty(ctx, m, "window", what, Dim.DURATION)
        after = get_qty(ctx, m, "after_previous", what, Dim.DURATION)
        dose_text = get_str(ctx, m, "dose", what, "fresh").strip().lower()
        if dose_text not in ("fresh", "well"):
            ctx.error(
                m.get("dose") or m,
                f"'dose' in {what} must be fresh or well, not '{dose_text}'{did_you_mean(dose_text, ['fresh', 'well'])}",
            )
            dose_text = "fresh"
        wash = _wash(ctx, m.get("wash"), what) if m.get("wash") is not None else None
        if window is not None and window.magnitude < 0:
            ctx.error(m.get("window") or m, f"'window' in {what} cannot be negative")
        if after is not None and after.magnitude <= 0:
            ctx.error(
                m.get("after_previous") or m, f"'after_previous' in {what} must be above zero"
            )
            after = None
        if after is not None and at is not None:
            ctx.error(
                m.get("at") or m,
                f"{what} has both 'at' and 'after_previous'; a feed is due at one of them",
            )
        if ch is not None and ch[0] is Change.TOP_UP and vol is None:
            if m.get("volume") is None:  # (a volume that did not parse is reported already)
                ctx.error(m, f"{what} is a top-up and needs 'volume' (the volume added per well)")
            ch = None
        if ch is not None and ch[0] is Change.NONE and (vol is not None or wash is not None):
            ctx.error(m, f"{what} has change: none, so it cannot have a volume or a wash")
        if days and ch:
            out.append(
                FeedRule(days, ch[0], ch[1], vol, at, window, after, Dose(dose_text), wash, loc(m))
            )
        else:
            ctx.incomplete.add("schedule.feeds")
    return out


def _additions(ctx: Ctx, node: Node | None) -> list[Addition]:
    out = []
    for what, m in _rules(ctx, node, "schedule.additions", "addition"):
        days = parse_days(ctx, m.get("days"), what)
        comp = names.normal(get_str(ctx, m, "compound", what).strip())
        conc = get_value(ctx, m, "conc", what, Dim.CONCENTRATION)
        pulse = get_qty(ctx, m, "pulse", what, Dim.DURATION)
        if pulse is not None and pulse.magnitude <= 0:
            ctx.error(m.get("pulse") or m, f"'pulse' in {what} must be above zero")
            pulse = None
        wo_medium, wo_times = None, 1
        wo = m.get("washout")
        if wo is not None:
            wm = as_map(ctx, wo, f"'washout' in {what}")
            if wm is not None:
                check_keys(ctx, wm, "washout", f"the washout in {what}")
                wo_medium = names.normal(get_str(ctx, wm, "medium", what).strip()) or None
                wo_times = get_int(ctx, wm, "times", f"the washout in {what}", 1, 0, 10)
            if pulse is None:
                ctx.error(wo, f"'washout' in {what} needs a 'pulse' (how long before the wash-out)")
        if days and comp and conc is not None:
            out.append(
                Addition(
                    comp,
                    conc,
                    days,
                    get_time(ctx, m, "at", what),
                    get_qty(ctx, m, "window", what, Dim.DURATION),
                    pulse,
                    wo_medium,
                    wo_times,
                    loc(m),
                )
            )
        else:
            ctx.incomplete.add("schedule.additions")
    return out


def _environment(ctx: Ctx, node: Node | None) -> list[EnvRule]:
    out = []
    for what, m in _rules(ctx, node, "schedule.environment", "environment"):
        days = parse_days(ctx, m.get("days"), what)
        temp = get_qty(ctx, m, "temperature", what, Dim.TEMPERATURE)
        co2 = get_qty(ctx, m, "co2", what, Dim.FRACTION)
        o2 = get_qty(ctx, m, "o2", what, Dim.FRACTION)
        if not {"temperature", "co2", "o2"} & set(m.keys()):
            ctx.error(m, f"{what} sets nothing; give temperature, co2 or o2")
        if temp is not None and not 20 <= temp.to("degC").magnitude <= 45:
            ctx.error(
                m.get("temperature") or m, f"'temperature' in {what} must be between 20 and 45 degC"
            )
        for q, k in ((co2, "co2"), (o2, "o2")):
            if q is not None and not 0 <= q.to("percent").magnitude <= 100:
                ctx.error(m.get(k) or m, f"'{k}' in {what} must be between 0% and 100%")
        if days:
            out.append(EnvRule(days, temp, co2, o2, loc(m)))
    return out


def _qc(ctx: Ctx, node: Node | None, what: str) -> tuple[QCGate, ...]:
    out = []
    for i, it in enumerate(as_list(ctx, node, f"'qc' in {what}")):
        w = f"qc #{i + 1} of {what}"
        m = as_map(ctx, it, w)
        if m is None:
            continue
        check_keys(ctx, m, "qc", w)
        measure = get_str(ctx, m, "measure", w).strip()
        lo, hi = get_number(ctx, m, "min", w), get_number(ctx, m, "max", w)
        of = get_str(ctx, m, "on_fail", w).strip().lower()
        by = get_qty(ctx, m, "by", w, Dim.DURATION)
        if lo is None and hi is None and "min" not in m.keys() and "max" not in m.keys():
            ctx.error(m, f"{w} needs 'min' or 'max' (a gate with no limit cannot fail)")
        if lo is not None and hi is not None and lo > hi:
            ctx.error(m.get("min") or m, f"{w}: min is above max")
        if of and of not in {o.value for o in OnFail}:
            ctx.error(
                m.get("on_fail") or m,
                f"'on_fail' in {w} must be hold, abort, extend or note, not '{of}'{did_you_mean(of, [o.value for o in OnFail])}",
            )
            continue
        if of == "extend" and by is None:
            ctx.error(m, f"{w} has on_fail: extend and needs 'by' (e.g. by: 1 d)")
        if by is not None and of != "extend":
            ctx.error(m.get("by") or m, f"'by' in {w} only goes with on_fail: extend")
        if measure and of:
            out.append(QCGate(measure, get_str(ctx, m, "unit", w), lo, hi, OnFail(of), by, loc(m)))
    return tuple(out)


def _events(ctx: Ctx, node: Node | None) -> list[Event]:
    out = []
    for what, m in _rules(ctx, node, "schedule.events", "event"):
        days = parse_days(ctx, m.get("days"), what)
        kind = get_str(ctx, m, "kind", what).strip().lower()
        if kind and kind not in EVENT_KINDS:
            ctx.error(
                m.get("kind") or m,
                f"'kind' in {what}: '{kind}' is not an event kind (one of {', '.join(EVENT_KINDS)}){did_you_mean(kind, list(EVENT_KINDS))}",
            )
            kind = ""
        title = get_str(ctx, m, "title", what).strip()
        duration = get_qty(ctx, m, "duration", what, Dim.DURATION)
        cc = None
        cn = m.get("culture")
        if cn is not None:
            cm = as_map(ctx, cn, f"'culture' in {what}")
            if cm is None:
                ctx.incomplete.add("schedule.events")
            else:
                w = f"the culture change of {what}"
                check_keys(ctx, cm, "culture_change", w)
                vol = get_qty(ctx, cm, "volume", w, Dim.VOLUME)
                if vol is not None and vol.magnitude <= 0:
                    ctx.error(cm.get("volume") or cm, f"volume in {w} must be above zero")
                    vol = None
                lw = get_str(ctx, cm, "labware", w).strip() or None
                if lw is None and vol is None and cm.get("wells") is None:
                    ctx.error(cm, f"{w} changes nothing; give labware, wells or volume")
                if lw is not None and vol is None:
                    ctx.error(cm, f"{w} names new labware and needs its working 'volume' too")
                cc = CultureChange(
                    lw,
                    _wells(ctx, cm.get("wells"), w, loc(cm)),
                    vol,
                    get_str(ctx, cm, "coating", w) or None,
                    loc(cm),
                )
        qc = _qc(ctx, m.get("qc"), what)
        if days and kind and title:
            out.append(
                Event(
                    days,
                    kind,
                    title,
                    get_str(ctx, m, "instructions", what),
                    duration,
                    get_time(ctx, m, "at", what),
                    cc,
                    qc,
                    loc(m),
                )
            )
        elif m.get("culture") is not None:
            # Only an event that changes the culture changes what the wells go through.
            ctx.incomplete.add("schedule.events")
    return out


def _phases(ctx: Ctx, node: Node | None) -> tuple[Phase, ...]:
    out = []
    for i, it in enumerate(as_list(ctx, node, "phases")):
        what = f"phase #{i + 1}"
        m = as_map(ctx, it, what)
        if m is None:
            continue
        check_keys(ctx, m, "phase", what)
        days = parse_days(ctx, m.get("days"), what)
        name = get_str(ctx, m, "name", what)
        if days and name:
            out.append(Phase(name, days))
    return tuple(out)


def _reference(ctx: Ctx, node: Node | None) -> Reference | None:
    if node is None:
        return None
    if isinstance(node, Scalar) and not node.is_null:
        return Reference(node.text, "", "")
    m = as_map(ctx, node, "reference")
    if m is None:
        return None
    check_keys(ctx, m, "reference", "reference")
    return Reference(
        get_str(ctx, m, "citation", "reference"),
        get_str(ctx, m, "doi", "reference"),
        get_str(ctx, m, "url", "reference"),
    )


def _version(ctx: Ctx, node: Node) -> bool:
    """Whether ``labctl:`` says this format (1). A quoted '1' or 1.0 means it, but is an
    error (the key is a whole number) and loading goes on; any other value stops it."""
    want = str(FORMAT_VERSION)
    if isinstance(node, Scalar) and node.kind == "int" and node.text.strip() == want:
        return True
    text = node.text.strip() if isinstance(node, Scalar) else ""
    if isinstance(node, Scalar) and (
        (node.quoted and text == want)
        or (node.kind == "float" and text.replace("_", "") in (f"{want}.0", f"{want}."))
    ):
        ctx.error(
            node,
            f"'labctl' is the format version, a whole number: write labctl: {want} (the number "
            f"{want}, without quotes or decimals), not {describe(node)}",
        )
        return True
    ctx.error(
        node,
        f"this labctl reads format version {FORMAT_VERSION} ('labctl: {FORMAT_VERSION}'), not {describe(node)}",
    )
    return False


def build(ctx: Ctx, root: Node, text: str) -> Protocol | None:
    """Build the model from the root node; None if the structure is too broken to go on."""
    m = as_map(ctx, root, "a protocol file")
    if m is None:
        return None
    check_keys(ctx, m, "protocol", "the protocol")
    vnode = m.get("labctl")
    if vnode is not None and not _version(ctx, vnode):
        return None  # another format: its keys may mean other things, so stop here
    pid = get_str(ctx, m, "id", "the protocol").strip()
    if pid and not _ID_RE.match(pid):
        ctx.error(
            m.get("id") or m,
            f"id '{pid}' must be a slug: lower-case letters, digits, '.', '_' and '-' (up to 64)",
        )
    title = get_str(ctx, m, "title", "the protocol").strip()
    version = get_str(ctx, m, "version", "the protocol").strip()
    params = each_named(
        ctx, m.get("parameters"), "parameters", lambda n, k, v: _parameter(ctx, n, k, v)
    )
    compounds = each_named(
        ctx, m.get("compounds"), "compounds", lambda n, k, v: _compound(ctx, n, k, v)
    )
    media = each_named(ctx, m.get("media"), "media", lambda n, k, v: _medium(ctx, n, k, v))
    culture = _culture(ctx, m.get("culture"))
    timing = _timing(ctx, m.get("timing"), m)
    sm = as_map(ctx, m.get("schedule"), "schedule")
    if sm is not None:
        check_keys(ctx, sm, "schedule", "schedule")
        schedule = Schedule(
            tuple(_media_rules(ctx, sm.get("media"))),
            tuple(_factor_rules(ctx, sm.get("factors"))),
            tuple(_feeds(ctx, sm.get("feeds"))),
            tuple(_additions(ctx, sm.get("additions"))),
            tuple(_environment(ctx, sm.get("environment"))),
            tuple(_events(ctx, sm.get("events"))),
        )
    else:
        schedule = Schedule((), (), (), (), (), ())
    if culture is None:
        # Go on with a stand-in (the error is reported): the checks that do not need the
        # culture still run, so one pass reports every problem they find.
        ctx.incomplete.add("culture")
        culture = Culture("", None, Q_(1, "mL"), "", loc(m))
    return Protocol(
        id=pid,
        title=title,
        version=version,
        reference=_reference(ctx, m.get("reference")),
        description=get_str(ctx, m, "description", "the protocol"),
        phases=_phases(ctx, m.get("phases")),
        parameters=params,
        compounds=compounds,
        media=media,
        culture=culture,
        timing=timing,
        schedule=schedule,
        source_file=ctx.file,
        source_text=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )
