"""Resolve a protocol into a run's Plan: dated tasks, each with due time and window.

Per well it tracks volume and every compound's concentration through each change (full,
half, fractional, top-up, ``dose: well``, additions, pulses and their wash-outs, replating),
so the effective concentration in the well is known for every task. Every well of every
plate gets the same treatment, so one well's state stands for all.

Problems found while resolving (a target that can't be reached, a well that would
overflow) are collected as :class:`PlanIssue` with the source location, not raised, so
``validate`` reports them all; ``resolve(strict=True)`` raises PlanError on errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pint

from labctl.errors import ParameterError, PlanError
from labctl.labware import MIN_ASPIRATE_UL, LabwareNotFound, get_labware
from labctl.plan import conc as cc
from labctl.protocol.model import (
    Addition,
    Change,
    Dose,
    Event,
    FactorRule,
    FeedRule,
    Loc,
    ParamRef,
    Protocol,
    QCGate,
    Value,
)
from labctl.protocol.names import key_text
from labctl.units import (
    Dim,
    MolarMassNeeded,
    UnitConversionError,
    UnitParseError,
    concentration_kind,
    convert,
    format_quantity,
    format_unit,
    parse_quantity,
    quantity_text,
    round_sig,
)


class TaskKind(str, Enum):
    FEED = "feed"
    ADDITION = "addition"
    WASHOUT = "washout"
    EVENT = "event"
    ENVIRONMENT = "environment"


@dataclass(frozen=True)
class PlanIssue:
    """A problem found while resolving, at ``loc`` (the rule); ``key`` names the rule's value
    it is about, if one (validate points the message at that value)."""

    loc: Loc
    severity: str  # "error" | "warning"
    message: str
    key: str | None = None


@dataclass(frozen=True)
class Recipe:
    """A fresh medium: base parts (name, fraction) and compounds at final concentrations."""

    parts: tuple[tuple[str, float], ...]
    factors: tuple[tuple[str, pint.Quantity], ...]

    def key(self) -> tuple:
        return (
            self.parts,
            tuple((n, round(float(q.magnitude), 12), str(q.units)) for n, q in self.factors),
        )

    def label(self) -> str:
        base = " + ".join(f"{n} {p * 100:g}%" if len(self.parts) > 1 else n for n, p in self.parts)
        if not self.factors:
            return base
        return base + " with " + ", ".join(f"{n} {format_quantity(q)}" for n, q in self.factors)


@dataclass(frozen=True)
class WashSpec:
    medium: str
    volume_ul: float
    times: int


@dataclass(frozen=True)
class FeedSpec:
    """A medium change per well: remove, (wash), then add fresh medium (µL per well)."""

    change: Change
    fraction: float
    remove_ul: float
    add_ul: float
    recipe: Recipe
    dose: Dose
    wash: WashSpec | None


@dataclass(frozen=True)
class AdditionSpec:
    """Spike ``stock_ul`` µL of stock per well so the well holds ``conc``."""

    compound: str
    conc: pint.Quantity
    stock_ul: float
    pulse_s: float | None
    well_before_ul: float
    before: pint.Quantity  # the compound's concentration in the well before the spike


@dataclass(frozen=True)
class WashoutSpec:
    """End of a pulse: wash, then a full change with the day's fresh medium."""

    compound: str
    wash: WashSpec
    add_ul: float
    recipe: Recipe


@dataclass(frozen=True)
class EventSpec:
    kind: str
    title: str
    instructions: str
    duration_s: float | None
    new_labware: str | None
    new_volume_ul: float | None
    qc: tuple[QCGate, ...]


@dataclass(frozen=True)
class EnvSpec:
    temperature_c: float
    co2_pct: float
    o2_pct: float | None  # None = ambient


@dataclass(frozen=True)
class WellState:
    """The well after a task: volume (µL) and concentrations (display units)."""

    volume_ul: float
    conc: tuple[tuple[str, pint.Quantity], ...]


Spec = FeedSpec | AdditionSpec | WashoutSpec | EventSpec | EnvSpec


@dataclass(frozen=True)
class Task:
    """One dated thing to do to every plate of the run.

    ``due``/``window_start``/``window_end`` are aware UTC datetimes. A task tied to the
    previous feed (``after_previous``) keeps the tie in ``after_previous_s`` and
    ``previous_key`` so the scheduler can move it with the actual time of that feed.
    """

    key: str
    kind: TaskKind
    day: int
    due: datetime
    window_start: datetime
    window_end: datetime
    title: str
    spec: Spec
    labware: str
    wells: tuple[str, ...]
    well_after: WellState
    loc: Loc
    after_previous_s: float | None = None
    previous_key: str | None = None


@dataclass(frozen=True)
class Plan:
    protocol_id: str
    protocol_version: str
    protocol_sha256: str
    title: str
    parameters: dict[str, pint.Quantity]
    plates: int
    start: datetime  # aware, in the run's time zone
    timezone: str
    tasks: tuple[Task, ...]
    first_day: int
    last_day: int
    issues: tuple[PlanIssue, ...] = ()

    def date_of(self, day: int) -> date:
        return self.start.date() + timedelta(days=day)

    def local(self, dt: datetime) -> datetime:
        return dt.astimezone(ZoneInfo(self.timezone))

    def tasks_on(self, day: int) -> list[Task]:
        return [t for t in self.tasks if t.day == day]

    def feeds(self) -> list[Task]:
        return [t for t in self.tasks if t.kind is TaskKind.FEED]


# --- parameters ---------------------------------------------------------------------------


def bind_parameters(protocol: Protocol, given: dict[str, Any] | None) -> dict[str, pint.Quantity]:
    """Defaults overridden by ``given`` (text like "0.8 uM" or Quantities), bounds checked."""
    values = {n: p.default for n, p in protocol.parameters.items()}
    for name, raw in (given or {}).items():
        p = protocol.parameters.get(name)
        if p is None:
            from labctl.protocol.diagnostics import did_you_mean

            known = ", ".join(sorted(protocol.parameters)) or "none"
            raise ParameterError(
                f"unknown parameter '{name}'{did_you_mean(name, set(protocol.parameters))} "
                f"(this protocol has: {known})"
            )
        try:
            q = raw if isinstance(raw, pint.Quantity) else parse_quantity(str(raw), Dim.ANY)
        except UnitParseError as exc:
            raise ParameterError(f"parameter '{name}': {exc}") from None
        try:
            q = in_default_unit(protocol, name, q)
            lo = in_default_unit(protocol, name, p.min) if p.min is not None else None
            hi = in_default_unit(protocol, name, p.max) if p.max is not None else None
        except UnitConversionError as exc:
            raise ParameterError(f"parameter '{name}': {exc}") from None
        shown = raw if isinstance(raw, str) else format_quantity(raw)
        if not isinstance(raw, pint.Quantity) and q.units != parse_quantity(str(raw)).units:
            shown = f"{raw} ({format_quantity(q)})"  # converted: say what it came to
        if lo is not None and p.min is not None and q < lo * (1 - 1e-12):
            raise ParameterError(
                f"parameter '{name}': {shown} is below its minimum {format_quantity(p.min)}"
            )
        if hi is not None and p.max is not None and q > hi * (1 + 1e-12):
            raise ParameterError(
                f"parameter '{name}': {shown} is above its maximum {format_quantity(p.max)}"
            )
        values[name] = q
    return values


def parameter_users(protocol: Protocol, name: str) -> list[str]:
    """The declared compounds whose factor or addition concentration is ``$name``."""
    rules: list[FactorRule | Addition] = [*protocol.schedule.factors, *protocol.schedule.additions]
    out: list[str] = []
    for r in rules:
        if isinstance(r.conc, ParamRef) and r.conc.name == name and r.compound not in out:
            if r.compound in protocol.compounds:
                out.append(r.compound)
    return out


def in_default_unit(protocol: Protocol, name: str, q: pint.Quantity) -> pint.Quantity:
    """``q`` in the unit of parameter ``name``'s default.

    A mass value for a molar default (or the reverse) converts through the ``mw`` of the
    compound that uses the parameter. Raises UnitConversionError saying what is missing: a
    value of another kind, no compound using it, a compound without ``mw``, or compounds
    whose molar masses differ (the same mass would mean a different molar dose for each).
    """
    default = protocol.parameters[name].default
    if q.dimensionality == default.dimensionality:
        return q.to(default.units)
    kinds = {concentration_kind(q), concentration_kind(default)}
    if kinds != {"molar", "mass"}:
        raise UnitConversionError(
            f"{format_quantity(q)} is not in the same kind of unit as its default "
            f"{format_quantity(default)}"
        )
    what = (
        f"{format_quantity(q)} is a {concentration_kind(q)} concentration and its default "
        f"{format_quantity(default)} a {concentration_kind(default)} one"
    )
    users = parameter_users(protocol, name)
    if not users:
        raise UnitConversionError(
            f"{what}; no compound uses ${name}, so there is no molar mass to convert with: "
            f"give it in {format_unit(default.units)}"
        )
    missing = [c for c in users if protocol.compounds[c].mw is None]
    if missing:
        raise MolarMassNeeded(
            f"{what}; converting needs the molar mass of {', '.join(missing)}, which has no "
            f"'mw' (add e.g. mw: 465.3 g/mol to the compound), or give it in "
            f"{format_unit(default.units)}"
        )
    mws = {float(protocol.compounds[c].mw.to("g/mol").magnitude) for c in users}  # type: ignore[union-attr]
    if len({round(m, 9) for m in mws}) > 1:
        listed = ", ".join(
            f"{c} ({format_quantity(protocol.compounds[c].mw)})"  # type: ignore[arg-type]
            for c in users
        )
        raise UnitConversionError(
            f"{what}; ${name} is used by compounds of different molar mass ({listed}), so "
            f"it means a different dose for each: give it in {format_unit(default.units)}"
        )
    return convert(q, default.units, protocol.compounds[users[0]].mw)


def parse_param_args(args: list[str]) -> dict[str, str]:
    """``["chir=0.8uM", ...]`` from the command line into a dict."""
    out: dict[str, str] = {}
    for a in args:
        if "=" not in a:
            raise ParameterError(f"--param '{a}' must be NAME=VALUE, e.g. chir=0.8uM")
        k, v = a.split("=", 1)
        out[k.strip()] = v.strip()
    return out


# --- the resolver -------------------------------------------------------------------------


def compound_units(protocol: Protocol) -> dict[str, cc.CompoundUnits]:
    """Each compound's canonical conversion and the unit people read it in."""
    display: dict[str, str] = {}
    rules: list[FactorRule | Addition] = [*protocol.schedule.factors, *protocol.schedule.additions]
    for rule in rules:
        if rule.compound in display:
            continue
        if isinstance(rule.conc, ParamRef):
            param = protocol.parameters.get(rule.conc.name)
            if param is None:
                continue
            qq = param.default
        else:
            qq = rule.conc
        if concentration_kind(qq) is not None:
            display[rule.compound] = f"{qq.units:~}"
    out = {}
    for name, c in protocol.compounds.items():
        kind = concentration_kind(c.stock) or "fraction"
        mw = float(c.mw.to("g/mol").magnitude) if c.mw is not None else None
        out[name] = cc.CompoundUnits(kind, mw, display.get(name, f"{c.stock.units:~}"))
    return out


@dataclass
class _State:
    well: cc.Well
    labware: str
    wells: tuple[str, ...]
    volume_ul: float  # the culture's working volume
    capacity_ul: float


@dataclass
class _Resolver:
    protocol: Protocol
    params: dict[str, pint.Quantity]
    start: datetime
    tz: ZoneInfo
    issues: list[PlanIssue] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.units = compound_units(self.protocol)

    # issues
    def error(self, loc: Loc, msg: str, key: str | None = None) -> None:
        issue = PlanIssue(loc, "error", msg, key)
        if issue not in self.issues:
            self.issues.append(issue)

    def warning(self, loc: Loc, msg: str, key: str | None = None) -> None:
        issue = PlanIssue(loc, "warning", msg, key)
        if issue not in self.issues:
            self.issues.append(issue)

    # values
    def value(self, v: Value) -> pint.Quantity:
        if isinstance(v, ParamRef):
            return self.params[v.name]
        return v

    def volume_ul(self, v: Value | None, default_ul: float) -> float:
        if v is None:
            return default_ul
        return float(self.value(v).to("uL").magnitude)

    def when(self, day: int, tod: time) -> datetime:
        local = datetime.combine(self.start.date() + timedelta(days=day), tod, tzinfo=self.tz)
        return local.astimezone(ZoneInfo("UTC"))

    # composition
    def medium_on(self, day: int) -> tuple[tuple[str, float], ...] | None:
        for r in self.protocol.schedule.media:
            if day in r.days:
                return r.parts
        return None

    def factors_on(self, day: int, loc: Loc) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.protocol.schedule.factors:
            if day in r.days and r.compound in self.units:
                try:
                    out[r.compound] = self.units[r.compound].to_canonical(self.value(r.conc))
                except cc.ConcError as exc:
                    self.error(r.loc, f"factor {r.compound}: {exc}", "conc")
        return out

    def recipe(self, parts: tuple[tuple[str, float], ...], canon: dict[str, float]) -> Recipe:
        factors = tuple((n, self.units[n].to_display(v)) for n, v in sorted(canon.items()) if v > 0)
        return Recipe(parts, factors)

    def well_state(self, s: _State) -> WellState:
        return WellState(
            s.well.volume,
            tuple(
                (n, self.units[n].to_display(v))
                for n, v in sorted(s.well.conc.items())
                if n in self.units
            ),
        )

    def check_volume(self, s: _State, loc: Loc, what: str, key: str | None = None) -> None:
        if s.well.volume > s.capacity_ul + 1e-6:
            self.error(
                loc,
                f"{what}: the well would hold {s.well.volume / 1000:g} mL, above the "
                f"{s.capacity_ul / 1000:g} mL capacity of {s.labware}",
                key,
            )

    def resolve(self) -> list[Task]:
        p = self.protocol
        try:
            lw = get_labware(p.culture.labware)
            capacity, all_wells = lw.capacity_ul, lw.wells
        except LabwareNotFound:
            capacity, all_wells = float("inf"), ()
        vol0 = float(p.culture.volume.to("uL").magnitude)
        state = _State(
            cc.Well(vol0, {}), p.culture.labware, p.culture.wells or all_wells, vol0, capacity
        )
        items = self._items()
        tasks: list[Task] = []
        feed_times: dict[str, datetime] = {}
        last_feed_key: str | None = None
        prev_env: EnvSpec | None = EnvSpec(37.0, 5.0, None)
        window_default = p.timing.window
        for day in range(p.first_day, p.last_day + 1):
            env = self._env_on(day)
            if env != prev_env:
                due = self.when(day, time(0, 0))
                tasks.append(
                    self._task(
                        f"d{day}-environment",
                        TaskKind.ENVIRONMENT,
                        day,
                        due,
                        due,
                        due + timedelta(hours=1),
                        _env_title(env),
                        env,
                        state,
                        p.schedule.environment[0].loc if p.schedule.environment else Loc(1, 1),
                    )
                )
                prev_env = env
            day_items = sorted(
                ((t, o, x) for d, t, o, x in items if d == day), key=lambda i: (i[0], i[1])
            )
            for tod, _order, obj in day_items:
                if isinstance(obj, FeedRule):
                    key = f"d{day}-feed-{tod:%H%M}"
                    due = self.when(day, tod)
                    after_s = prev_key = None
                    if obj.after_previous is not None:
                        if last_feed_key is None:
                            self.error(
                                obj.loc,
                                f"the feed on day {day} has after_previous but no feed comes before it",
                            )
                        else:
                            after_s = float(obj.after_previous.to("s").magnitude)
                            prev_key = last_feed_key
                            due = feed_times[last_feed_key] + timedelta(seconds=after_s)
                            key = f"d{day}-feed-{self.local(due):%H%M}"
                    task = self._feed(obj, day, key, due, state, window_default)
                    if task is not None:
                        task = replace(task, after_previous_s=after_s, previous_key=prev_key)
                        tasks.append(task)
                        feed_times[key] = due
                        last_feed_key = key
                elif isinstance(obj, Addition):
                    tasks.extend(self._addition(obj, day, tod, state, window_default))
                elif isinstance(obj, Event):
                    tasks.append(self._event(obj, day, tod, state, window_default))
        tasks.sort(key=lambda t: t.due)  # stable: same-time tasks keep their processing order
        return tasks

    def local(self, dt: datetime) -> datetime:
        return dt.astimezone(self.tz)

    def _items(self) -> list[tuple[int, time, int, object]]:
        """(day, time of day, order, rule) for everything that happens at a time of day."""
        p = self.protocol
        out: list[tuple[int, time, int, object]] = []
        for f in p.schedule.feeds:
            for d in f.days.days:
                if f.change is Change.NONE:
                    continue
                out.append((d, f.at or p.timing.feed_at, 1, f))
        for a in p.schedule.additions:
            for d in a.days.days:
                out.append((d, a.at or p.timing.feed_at, 2, a))
        for e in p.schedule.events:
            # An event with a range is due once, on the first day of it (window to the last).
            out.append((e.days.first, e.at or p.timing.feed_at, 0, e))
        # after_previous feeds are ordered by the tie, not by their nominal time of day
        return out

    def _env_on(self, day: int) -> EnvSpec:
        t, co2, o2 = 37.0, 5.0, None
        for r in self.protocol.schedule.environment:
            if day in r.days:
                if r.temperature is not None:
                    t = float(r.temperature.to("degC").magnitude)
                if r.co2 is not None:
                    co2 = float(r.co2.to("percent").magnitude)
                if r.o2 is not None:
                    o2 = float(r.o2.to("percent").magnitude)
        return EnvSpec(t, co2, o2)

    def _window(
        self, due: datetime, w: pint.Quantity | None, default: pint.Quantity
    ) -> tuple[datetime, datetime]:
        secs = float((w if w is not None else default).to("s").magnitude)
        return due - timedelta(seconds=secs), due + timedelta(seconds=secs)

    def _task(
        self,
        key: str,
        kind: TaskKind,
        day: int,
        due: datetime,
        ws: datetime,
        we: datetime,
        title: str,
        spec: Spec,
        s: _State,
        loc: Loc,
    ) -> Task:
        return Task(
            key, kind, day, due, ws, we, title, spec, s.labware, s.wells, self.well_state(s), loc
        )

    def _feed(
        self, f: FeedRule, day: int, key: str, due: datetime, s: _State, wdef: pint.Quantity
    ) -> Task | None:
        parts = self.medium_on(day)
        if parts is None:
            return None  # reported by checks: a feed day with no medium
        target = self.factors_on(day, f.loc)
        add = self.volume_ul(
            f.volume,
            s.volume_ul if f.change is not Change.FRACTION and f.change is not Change.HALF else -1,
        )
        if f.change is Change.FULL:
            remove = s.well.volume
        elif f.change is Change.TOP_UP:
            remove = 0.0
        else:
            remove = s.well.volume * f.fraction
            if add < 0:
                add = remove
        if add < MIN_ASPIRATE_UL:
            self.error(
                f.loc,
                f"the feed on day {day} adds {add:g} uL per well, below the {MIN_ASPIRATE_UL:g} uL that can be pipetted",
                "volume",
            )
        wash = None
        well = s.well
        if f.wash is not None:
            wvol = self.volume_ul(f.wash.volume, s.volume_ul)
            if wvol > s.capacity_ul:
                self.error(
                    f.wash.loc,
                    f"the wash on day {day} uses {wvol / 1000:g} mL per well, above the well's capacity",
                    "volume",
                )
            wash = WashSpec(f.wash.medium, wvol, f.wash.times)
            remove = well.volume  # a wash needs the well emptied first
            well = cc.Well(0.0, {})
        if f.dose is Dose.WELL:
            try:
                fresh = cc.fresh_for_target(well, remove, add, target)
            except cc.ConcError as exc:
                self.error(
                    f.loc,
                    f"dose: well on day {day}: {exc} is already above its target in the kept medium; it cannot be reached by adding",
                )
                fresh = dict(target)
        else:
            fresh = target
        self._check_stocks(fresh, f.loc, day)
        s.well = cc.exchange(well, remove, add, fresh)
        self.check_volume(
            s, f.loc, f"the feed on day {day}", "volume" if f.volume is not None else None
        )
        recipe = self.recipe(parts, fresh)
        ws, we = self._window(due, f.window, wdef)
        spec = FeedSpec(f.change, f.fraction, remove, add, recipe, f.dose, wash)
        title = _feed_title(f, add)
        return self._task(key, TaskKind.FEED, day, due, ws, we, title, spec, s, f.loc)

    def _check_stocks(self, fresh: dict[str, float], loc: Loc, day: int) -> None:
        for n, v in fresh.items():
            stock = self.units[n].to_canonical(self.protocol.compounds[n].stock)
            if v > stock * (1 + 1e-9):
                self.error(
                    loc,
                    f"on day {day} the fresh medium needs {n} at {format_quantity(self.units[n].to_display(v))}, above its stock {format_quantity(self.protocol.compounds[n].stock)}",
                )

    def _addition(
        self, a: Addition, day: int, tod: time, s: _State, wdef: pint.Quantity
    ) -> list[Task]:
        comp = self.protocol.compounds.get(a.compound)
        if comp is None:
            return []
        u = self.units[a.compound]
        try:
            target = u.to_canonical(self.value(a.conc))
            stock = u.to_canonical(comp.stock)
        except cc.ConcError as exc:
            self.error(a.loc, f"addition of {a.compound}: {exc}", "conc")
            return []
        due = self.when(day, tod)
        current = s.well.conc.get(a.compound, 0.0)
        try:
            vol = cc.spike_volume(s.well.volume, current, target, stock)
        except cc.ConcError:
            self.error(
                a.loc,
                f"addition of {a.compound} on day {day}: {format_quantity(self.value(a.conc))} is not below its stock {format_quantity(comp.stock)}",
                "conc",
            )
            return []
        if vol == 0.0:
            self.warning(
                a.loc,
                f"addition of {a.compound} on day {day}: the well already holds {format_quantity(u.to_display(current))}; nothing to add",
            )
        before_ul = s.well.volume
        s.well = cc.spike(s.well, a.compound, vol, stock)
        self.check_volume(s, a.loc, f"the addition on day {day}")
        ws, we = self._window(due, a.window, wdef)
        pulse_s = float(a.pulse.to("s").magnitude) if a.pulse is not None else None
        q = self.value(a.conc)
        out = [
            self._task(
                f"d{day}-add-{key_text(a.compound)}-{tod:%H%M}",
                TaskKind.ADDITION,
                day,
                due,
                ws,
                we,
                f"add {a.compound} to {format_quantity(q)}"
                + (f" for {format_quantity(a.pulse)}" if a.pulse is not None else ""),
                AdditionSpec(a.compound, q, vol, pulse_s, before_ul, u.to_display(current)),
                s,
                a.loc,
            )
        ]
        if pulse_s is not None:
            parts = self.medium_on(day)
            if parts is None:
                self.error(
                    a.loc,
                    f"the pulse of {a.compound} on day {day} ends with a full change, but day {day} has no medium",
                )
                return out
            wo_medium = a.washout_medium or parts[0][0]
            fresh = self.factors_on(day, a.loc)
            wash = WashSpec(wo_medium, s.volume_ul, a.washout_times)
            s.well = cc.exchange(cc.Well(0.0, {}), 0.0, s.volume_ul, fresh)
            end = due + timedelta(seconds=pulse_s)
            ws2, we2 = self._window(end, a.window, wdef)
            local_end = self.local(end)
            wday = (local_end.date() - self.start.date()).days
            out.append(
                self._task(
                    f"d{wday}-washout-{key_text(a.compound)}-{local_end:%H%M}",
                    TaskKind.WASHOUT,
                    wday,
                    end,
                    ws2,
                    we2,
                    f"wash out {a.compound} ({a.washout_times}x {wo_medium}), then full change",
                    WashoutSpec(a.compound, wash, s.volume_ul, self.recipe(parts, fresh)),
                    s,
                    a.loc,
                )
            )
        return out

    def _event(self, e: Event, day: int, tod: time, s: _State, wdef: pint.Quantity) -> Task:
        due = self.when(day, tod)
        ws, _ = self._window(due, None, wdef)
        _, we = self._window(self.when(e.days.last, tod), None, wdef)
        new_lw = new_vol = None
        if e.culture is not None:
            c = e.culture
            if c.labware is not None:
                try:
                    lw = get_labware(c.labware)
                    s.capacity_ul, s.wells = lw.capacity_ul, c.wells or lw.wells
                except LabwareNotFound:
                    s.capacity_ul, s.wells = float("inf"), c.wells or ()
                s.labware = c.labware
                new_lw = c.labware
            elif c.wells is not None:
                s.wells = c.wells
            if c.volume is not None:
                s.volume_ul = float(c.volume.to("uL").magnitude)
                new_vol = s.volume_ul
            # Replated cells sit in that day's fresh medium at the new working volume.
            fresh = self.factors_on(day, e.loc) if self.medium_on(day) is not None else {}
            s.well = cc.Well(s.volume_ul, dict(fresh))
            self.check_volume(s, c.loc, f"the culture after '{e.title}'", "volume")
        dur = float(e.duration.to("s").magnitude) if e.duration is not None else None
        key = f"d{day}-{e.kind}-{tod:%H%M}"
        spec = EventSpec(e.kind, e.title, e.instructions, dur, new_lw, new_vol, e.qc)
        return self._task(
            key, TaskKind.EVENT, day, due, ws, we, f"{e.kind}: {e.title}", spec, s, e.loc
        )


def _feed_title(f: FeedRule, add: float) -> str:
    if f.change is Change.FULL:
        t = f"full change, {add / 1000:g} mL/well"
    elif f.change is Change.HALF:
        t = f"half change, {add / 1000:g} mL/well"
    elif f.change is Change.TOP_UP:
        t = f"top-up, {add / 1000:g} mL/well"
    else:
        t = f"{f.fraction * 100:g}% change, {add / 1000:g} mL/well"
    if f.dose is Dose.WELL:
        t += " (dosed to well)"
    if f.wash is not None:
        t = f"wash {f.wash.times}x {f.wash.medium}, " + t
    return t


def _env_title(e: EnvSpec) -> str:
    o2 = "ambient O2" if e.o2_pct is None else f"{e.o2_pct:g}% O2"
    return f"incubator {e.temperature_c:g} degC, {e.co2_pct:g}% CO2, {o2}"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlanError(
            f"unknown time zone '{name}' (use an IANA name such as Europe/Stockholm)"
        ) from None


def resolve(
    protocol: Protocol,
    parameters: dict[str, Any] | None = None,
    plates: int = 1,
    start: datetime | None = None,
    timezone: str = "UTC",
    *,
    strict: bool = True,
) -> Plan:
    """The run's Plan for ``plates`` plates from ``start`` (naive = wall time in ``timezone``).

    With ``strict`` (the default) a problem of severity error raises PlanError; otherwise
    issues are returned on the plan for the caller to report.
    """
    if plates < 1 or plates > 1000:
        raise PlanError(f"plates must be between 1 and 1000, not {plates}")
    tz = zone(timezone)
    if start is None:
        start = datetime(2000, 1, 3, 9, 0)  # a Monday; validation only cares about day offsets
    start = start.replace(tzinfo=tz) if start.tzinfo is None else start.astimezone(tz)
    params = bind_parameters(protocol, parameters)
    r = _Resolver(protocol, params, start, tz)
    tasks = r.resolve()
    keys: set[str] = set()
    unique: list[Task] = []
    for t in tasks:
        k, n = t.key, 2
        while k in keys:  # two additions of one compound at one time etc.: keep keys unique
            k, n = f"{t.key}-{n}", n + 1
        keys.add(k)
        unique.append(t if k == t.key else replace(t, key=k))
    plan = Plan(
        protocol.id,
        protocol.version,
        protocol.sha256,
        protocol.title,
        params,
        plates,
        start,
        timezone,
        tuple(unique),
        protocol.first_day,
        protocol.last_day,
        tuple(r.issues),
    )
    errs = [i for i in r.issues if i.severity == "error"]
    if strict and errs:
        raise PlanError(
            f"{protocol.source_file}:{errs[0].loc.line}:{errs[0].loc.col}: {errs[0].message}"
        )
    return plan


def task_to_json(t: Task, tz: ZoneInfo, *, spelling: str = "display") -> dict[str, Any]:
    """A task as plain JSON data (times ISO-8601 with offset, volumes µL).

    A quantity is ``{"value", "unit", "text"}``: the value to 12 significant digits, the
    unit as the protocol format writes it (``ng/mL``, ``uM``), and a short text for people
    (4 digits; with ``spelling="format"`` in the format's spelling too, else as labctl
    prints it, ``3 µM``). See :func:`plan_to_json`.
    """

    def q(x: pint.Quantity) -> dict[str, Any]:
        text = format_quantity(x)
        if spelling == "format":
            text = _format_spelling(text)
        return {"value": round_sig(float(x.magnitude)), "unit": format_unit(x.units), "text": text}

    d: dict[str, Any] = {
        "key": t.key,
        "kind": t.kind.value,
        "day": t.day,
        "due": t.due.astimezone(tz).isoformat(),
        "window_start": t.window_start.astimezone(tz).isoformat(),
        "window_end": t.window_end.astimezone(tz).isoformat(),
        "title": t.title,
        "labware": t.labware,
        "wells": list(t.wells),
        "line": t.loc.line,
        "well_after": {
            "volume_ul": round(t.well_after.volume_ul, 6),
            "conc": {n: q(c) for n, c in t.well_after.conc},
        },
    }
    if t.after_previous_s is not None:
        d["after_previous_s"] = t.after_previous_s
        d["previous_key"] = t.previous_key
    s = t.spec
    if isinstance(s, FeedSpec):
        d["feed"] = {
            "change": s.change.value,
            "fraction": s.fraction,
            "remove_ul": round(s.remove_ul, 6),
            "add_ul": round(s.add_ul, 6),
            "dose": s.dose.value,
            "medium": [{"medium": n, "fraction": f} for n, f in s.recipe.parts],
            "factors": {n: q(c) for n, c in s.recipe.factors},
            "wash": None
            if s.wash is None
            else {"medium": s.wash.medium, "volume_ul": s.wash.volume_ul, "times": s.wash.times},
        }
    elif isinstance(s, AdditionSpec):
        d["addition"] = {
            "compound": s.compound,
            "conc": q(s.conc),
            "stock_ul_per_well": round(s.stock_ul, 6),
            "pulse_s": s.pulse_s,
        }
    elif isinstance(s, WashoutSpec):
        d["washout"] = {
            "compound": s.compound,
            "wash_medium": s.wash.medium,
            "times": s.wash.times,
            "add_ul": s.add_ul,
            "medium": [{"medium": n, "fraction": f} for n, f in s.recipe.parts],
            "factors": {n: q(c) for n, c in s.recipe.factors},
        }
    elif isinstance(s, EventSpec):
        d["event"] = {
            "kind": s.kind,
            "title": s.title,
            "instructions": s.instructions,
            "duration_s": s.duration_s,
            "new_labware": s.new_labware,
            "new_volume_ul": s.new_volume_ul,
            "qc": [
                {
                    "measure": g.measure,
                    "unit": g.unit,
                    "min": g.min,
                    "max": g.max,
                    "on_fail": g.on_fail.value,
                    **({"by_s": float(g.by.to("s").magnitude)} if g.by is not None else {}),
                }
                for g in s.qc
            ],
        }
    elif isinstance(s, EnvSpec):
        d["environment"] = {
            "temperature_c": s.temperature_c,
            "co2_pct": s.co2_pct,
            "o2_pct": s.o2_pct,
        }
    return d


def plan_to_json(plan: Plan, *, spelling: str = "display") -> dict[str, Any]:
    """The plan as plain JSON data.

    Every number is rounded to 12 significant digits (float noise such as
    10.000000000000002 sits far below that; no value a person or a pipette means moves).
    Units are written as the protocol format writes them. ``spelling="format"`` (``labctl
    plan --json``) writes the texts for people in the format's spelling too (``3 uM``, so
    one spelling in the whole document); the default keeps labctl's display (``3 µM``) for
    the screens that show those texts. Parameter values keep all 12 digits in both: a run
    records them and is resolved again from them.
    """
    if spelling not in ("display", "format"):
        raise ValueError(f"spelling must be 'display' or 'format', not {spelling!r}")
    tz = ZoneInfo(plan.timezone)

    def param(v: pint.Quantity) -> str:
        return quantity_text(v) if spelling == "format" else format_quantity(v, 12)

    out = {
        "protocol": {
            "id": plan.protocol_id,
            "version": plan.protocol_version,
            "sha256": plan.protocol_sha256,
            "title": plan.title,
        },
        "parameters": {n: param(v) for n, v in plan.parameters.items()},
        "plates": plan.plates,
        "start": plan.start.isoformat(),
        "timezone": plan.timezone,
        "days": [plan.first_day, plan.last_day],
        "tasks": [task_to_json(t, tz, spelling=spelling) for t in plan.tasks],
        "issues": [
            {"line": i.loc.line, "column": i.loc.col, "severity": i.severity, "message": i.message}
            for i in plan.issues
        ],
    }
    return _rounded(out)


def _rounded(x: Any) -> Any:
    """``x`` with every float rounded to 12 significant digits (see :func:`plan_to_json`)."""
    if isinstance(x, float):
        return round_sig(x)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def _format_spelling(text: str) -> str:
    """labctl's display text of a quantity in the protocol format's spelling (µ -> u)."""
    return text.replace("µ", "u").replace("°C", "degC")
