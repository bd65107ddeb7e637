"""Draw a protocol's schedule the way differentiation papers do (PNG or SVG).

Days run along the bottom axis; one row per base medium (bar height = its share of a
blend), one row per compound with a bar over the days it is in the fresh medium, labelled
with its final concentration; additions and pulses as markers on their compound's row;
feeds as markers on a feed row (full, half, partial, top-up and washed changes drawn
differently); incubator changes as a row; events as labelled vertical markers; phases as
bands across the top.

:func:`segments` computes all of that from the protocol and its resolved Plan as plain
data (tested without matplotlib); :func:`draw` only lays it out. Concentrations come from
the plan's bound parameters, so ``--param chir=0.8uM`` changes the picture. matplotlib is
imported only inside :func:`draw`, with the Agg canvas and no pyplot, so it works headless
and from any thread.
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pint

from labctl.errors import LabctlError
from labctl.plan import conc as cc
from labctl.plan.resolve import (
    AdditionSpec,
    EnvSpec,
    EventSpec,
    FeedSpec,
    Plan,
    TaskKind,
    compound_units,
)
from labctl.protocol.model import Change, ParamRef, Protocol, Value
from labctl.units import format_quantity

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg")
EVENT_LABEL_CHARS = 34  # event titles are shortened to this many characters

# --- the schedule as data -------------------------------------------------------------------


class RowKind(str, Enum):
    PHASES = "phases"
    EVENTS = "events"
    MEDIUM = "medium"
    COMPOUND = "compound"
    ENVIRONMENT = "environment"
    FEED = "feed"


class MarkKind(str, Enum):
    FULL = "full"  # full medium change
    HALF = "half"  # half change
    FRACTION = "fraction"  # another share replaced (label gives the %)
    TOP_UP = "top-up"  # medium added, none removed
    WASH = "wash"  # wash(es), then a change (washed feeds and pulse wash-outs)
    ADDITION = "addition"  # compound spiked into the well
    PULSE = "pulse"  # spiked, then washed out at ``end``
    EVENT = "event"  # replate, sort, sample, ...


@dataclass(frozen=True)
class Segment:
    """A bar over protocol days ``[start, end)``: days 0-4 are ``[0, 5)``.

    ``fraction`` is a medium's share of the blend (1.0 for a single medium or a compound);
    ``value`` is a compound's final concentration in the fresh medium (display units).
    """

    start: int
    end: int
    label: str
    fraction: float = 1.0
    value: pint.Quantity | None = None


@dataclass(frozen=True)
class Marker:
    """A moment on a row. ``x`` is in days: day + local time of day / 24 h.

    ``end`` (days) is where a pulse is washed out or a several-day event's window closes.
    """

    x: float
    kind: MarkKind
    label: str
    end: float | None = None


@dataclass(frozen=True)
class Row:
    """One row of the figure, top to bottom in the order :func:`segments` returns."""

    kind: RowKind
    name: str
    segments: tuple[Segment, ...] = ()
    markers: tuple[Marker, ...] = ()


def segments(protocol: Protocol, plan: Plan) -> list[Row]:
    """The figure's rows, top to bottom: phases, events, media, compounds, incubator, feeds.

    Rows with nothing to show are left out (no phases row without phases, etc.). Compound
    bars follow the schedule's factor rules with values bound from ``plan.parameters``;
    runs of consecutive days at one concentration make one segment, so a biphasic dose
    gives two. Markers come from the plan's tasks at their local times.
    """
    rows: list[Row] = []
    if protocol.phases:
        segs = [
            Segment(a, b, ph.name)
            for ph in protocol.phases
            for a, b in _runs(sorted(set(ph.days.days)))
        ]
        rows.append(Row(RowKind.PHASES, "phase", tuple(sorted(segs, key=lambda s: s.start))))
    ev = _event_markers(protocol, plan)
    if ev:
        rows.append(Row(RowKind.EVENTS, "events", markers=tuple(ev)))
    rows.extend(_medium_rows(protocol, plan))
    rows.extend(_compound_rows(protocol, plan))
    env = _environment_segments(plan)
    if env:
        rows.append(Row(RowKind.ENVIRONMENT, "incubator", tuple(env)))
    feeds = _feed_markers(plan)
    if feeds:
        rows.append(Row(RowKind.FEED, "feeding", markers=tuple(feeds)))
    return rows


def _runs(days: list[int]) -> list[tuple[int, int]]:
    """Consecutive days as half-open ``[first, last + 1)`` ranges."""
    out: list[tuple[int, int]] = []
    for d in days:
        if out and out[-1][1] == d:
            out[-1] = (out[-1][0], d + 1)
        else:
            out.append((d, d + 1))
    return out


def _merge(per_day: list[tuple[int, Any, str, float, pint.Quantity | None]]) -> list[Segment]:
    """(day, key, label, fraction, value) per day into segments of consecutive equal keys."""
    out: list[Segment] = []
    last_key: Any = None
    for day, key, label, fraction, value in per_day:
        if out and out[-1].end == day and key == last_key:
            prev = out[-1]
            out[-1] = Segment(prev.start, day + 1, prev.label, prev.fraction, prev.value)
        else:
            out.append(Segment(day, day + 1, label, fraction, value))
        last_key = key
    return out


def _x(plan: Plan, when: datetime) -> float:
    """A moment as protocol days from the start of day 0, in the run's local time."""
    local = plan.local(when)
    day = (local.date() - plan.start.date()).days
    secs = local.hour * 3600 + local.minute * 60 + local.second
    return day + secs / 86400.0


def _medium_rows(protocol: Protocol, plan: Plan) -> list[Row]:
    per: dict[str, list[tuple[int, Any, str, float, pint.Quantity | None]]] = {}
    for day in range(plan.first_day, plan.last_day + 1):
        # The first matching rule holds, as in the resolver.
        rule = next((r for r in protocol.schedule.media if day in r.days), None)
        if rule is None:
            continue
        for name, frac in rule.parts:
            label = "" if frac >= 1.0 else f"{frac * 100:g}%"
            per.setdefault(name, []).append((day, round(frac, 9), label, frac, None))
    return [Row(RowKind.MEDIUM, name, tuple(_merge(days))) for name, days in per.items()]


def _compound_rows(protocol: Protocol, plan: Plan) -> list[Row]:
    units = compound_units(protocol)

    def bound(v: Value) -> pint.Quantity | None:
        if isinstance(v, ParamRef):
            return plan.parameters.get(v.name)
        return v

    def display(name: str, q: pint.Quantity) -> tuple[Any, pint.Quantity]:
        """(comparison key, quantity in the compound's display unit)."""
        u = units.get(name)
        if u is not None:
            try:
                canon = u.to_canonical(q)
                return round(canon, 12), u.to_display(canon)
            except cc.ConcError:
                pass  # reported by validation; draw the value as written
        return (str(q.units), round(float(q.magnitude), 12)), q

    per: dict[str, list[tuple[int, Any, str, float, pint.Quantity | None]]] = {}
    first_seen: dict[str, tuple[int, int]] = {}
    for i, r in enumerate(protocol.schedule.factors):
        first_seen.setdefault(r.compound, (r.days.first, i))
        first_seen[r.compound] = min(first_seen[r.compound], (r.days.first, i))
    n = len(protocol.schedule.factors)
    for i, a in enumerate(protocol.schedule.additions):
        key = (a.days.first, n + i)
        first_seen[a.compound] = min(first_seen.get(a.compound, key), key)
    for day in range(plan.first_day, plan.last_day + 1):
        today: dict[str, pint.Quantity] = {}
        for r in protocol.schedule.factors:
            q = bound(r.conc)
            if day in r.days and q is not None:
                today[r.compound] = q  # a later rule for the same day wins, as in the resolver
        for name, q in today.items():
            key, shown = display(name, q)
            if float(shown.magnitude) > 0:
                per.setdefault(name, []).append((day, key, format_quantity(shown), 1.0, shown))
    markers: dict[str, list[Marker]] = {}
    for t in plan.tasks:
        if t.kind is TaskKind.ADDITION and isinstance(t.spec, AdditionSpec):
            s = t.spec
            x = _x(plan, t.due)
            if s.pulse_s is not None:
                pulse = format_quantity(_duration(s.pulse_s))
                m = Marker(
                    x,
                    MarkKind.PULSE,
                    f"{format_quantity(s.conc)}, {pulse} pulse",
                    x + s.pulse_s / 86400.0,
                )
            else:
                m = Marker(x, MarkKind.ADDITION, f"{format_quantity(s.conc)} added")
            markers.setdefault(s.compound, []).append(m)
    names = sorted(set(per) | set(markers), key=lambda c: first_seen.get(c, (0, 0)))
    return [
        Row(RowKind.COMPOUND, c, tuple(_merge(per.get(c, []))), tuple(markers.get(c, ())))
        for c in names
    ]


def _duration(seconds: float) -> pint.Quantity:
    from labctl.units import Q_

    q = Q_(seconds, "s")
    if seconds >= 86400 and seconds % 3600 == 0:
        return q.to("h") if seconds % 86400 else q.to("d")
    if seconds >= 3600:
        return q.to("h")
    if seconds >= 60:
        return q.to("min")
    return q


def env_label(e: EnvSpec) -> str:
    """What differs from a standard incubator (37 °C, 5% CO2, ambient O2); "" if nothing."""
    parts = []
    if e.o2_pct is not None:
        parts.append(f"{e.o2_pct:g}% O2")
    if e.co2_pct != 5.0:
        parts.append(f"{e.co2_pct:g}% CO2")
    if e.temperature_c != 37.0:
        parts.append(f"{e.temperature_c:g} °C")
    return ", ".join(parts)


def _environment_segments(plan: Plan) -> list[Segment]:
    changes = {
        t.day: t.spec
        for t in plan.tasks
        if t.kind is TaskKind.ENVIRONMENT and isinstance(t.spec, EnvSpec)
    }
    if not changes:
        return []
    state = EnvSpec(37.0, 5.0, None)
    per: list[tuple[int, Any, str, float, pint.Quantity | None]] = []
    for day in range(plan.first_day, plan.last_day + 1):
        state = changes.get(day, state)
        label = env_label(state)
        if label:
            per.append((day, state, label, 1.0, None))
    return _merge(per)


def _feed_markers(plan: Plan) -> list[Marker]:
    out: list[Marker] = []
    for t in plan.tasks:
        if t.kind is TaskKind.WASHOUT:
            out.append(Marker(_x(plan, t.due), MarkKind.WASH, ""))
        elif t.kind is TaskKind.FEED and isinstance(t.spec, FeedSpec):
            s = t.spec
            if s.wash is not None:
                kind, label = MarkKind.WASH, ""
            elif s.change is Change.FULL:
                kind, label = MarkKind.FULL, ""
            elif s.change is Change.HALF:
                kind, label = MarkKind.HALF, ""
            elif s.change is Change.TOP_UP:
                kind, label = MarkKind.TOP_UP, ""
            else:
                kind, label = MarkKind.FRACTION, f"{s.fraction * 100:g}%"
            out.append(Marker(_x(plan, t.due), kind, label))
    return out


def short_title(text: str, n: int = EVENT_LABEL_CHARS) -> str:
    """``text`` cut to at most ``n`` characters at a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= n:
        return text
    cut = text[: n - 1]
    if " " in cut[n // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-(") + "…"


def _event_markers(protocol: Protocol, plan: Plan) -> list[Marker]:
    by_loc = {e.loc: e for e in protocol.schedule.events}
    out: list[Marker] = []
    for t in plan.tasks:
        if t.kind is not TaskKind.EVENT or not isinstance(t.spec, EventSpec):
            continue
        x = _x(plan, t.due)
        ev = by_loc.get(t.loc)
        end = float(ev.days.last + 1) if ev is not None and ev.days.last > ev.days.first else None
        out.append(Marker(x, MarkKind.EVENT, short_title(f"{t.spec.kind}: {t.spec.title}"), end))
    return out


# --- drawing --------------------------------------------------------------------------------

# Okabe-Ito, the colour-blind-safe palette (black left out: it is the text colour).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442")
MEDIUM_GREYS = ("#8C8C8C", "#B5B5B5", "#6E6E6E", "#A0A0A0")
PHASE_FILLS = ("#DDE8F3", "#F6E7CC", "#D5EEE5", "#F4DCCF", "#EBDDE8")
FONT = 7.5  # pt, bar and marker labels
ROW_FONT = 8.5  # pt, row names

# Layout in inches. The axes' y data unit IS the inch (0 at the top), so rows stack exactly.
ROW_H = 0.30
MEDIUM_ROW_H = 0.40  # room above a blend's bar for its share
BAR_H = 0.20
PHASE_LINE_H = 0.15
LANE_H = 0.19
GAP = 0.10
TOP = 0.12
TITLE_LINE_H = 0.22
AXIS_H = 0.48
LEGEND_LINE_H = 0.17
RIGHT = 0.35


@dataclass
class _Measure:
    """Text widths in inches, from the Agg renderer's font metrics."""

    renderer: RendererAgg

    def width(self, text: str, size: float = FONT, weight: str = "normal") -> float:
        from matplotlib.font_manager import FontProperties

        if not text:
            return 0.0
        w, _h, _d = self.renderer.get_text_width_height_descent(
            text, FontProperties(size=size, weight=weight), ismath=False
        )
        return w / 72.0  # the renderer below runs at 72 dpi: pixels are points


def _tint(colour: str, share: float = 0.45) -> str:
    """``colour`` (#rrggbb) mixed with white: ``share`` of the colour."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - (255 - c) * share):02x}" for c in rgb)


def _check_output(output: str | Path) -> tuple[Path, str]:
    path = Path(output)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise LabctlError(
            f"cannot draw the diagram as '{path.name}': the file name must end in .png or .svg"
        )
    return path, ext[1:]


def draw(protocol: Protocol, plan: Plan, output: str | Path) -> None:
    """Write the schedule figure to ``output`` (.png at 150 dpi, or .svg with real text).

    Raises LabctlError for another extension or a path that can't be written.
    """
    path, fmt = _check_output(output)
    # The object-oriented API on the Agg canvas: no pyplot, no global figure state, no
    # display needed, safe off the main thread.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
    from matplotlib.figure import Figure

    rows = segments(protocol, plan)
    fig = Figure()
    FigureCanvasAgg(fig)
    _layout(fig, protocol, plan, rows, _Measure(RendererAgg(10, 10, 72)))
    buf = io.BytesIO()
    # Text stays text in SVG (searchable, smaller); no timestamp, so output is reproducible.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "labctl"}):
        meta = {"Date": None} if fmt == "svg" else {"Software": "labctl"}
        fig.savefig(buf, format=fmt, dpi=150, metadata=meta, facecolor="white")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())  # rendered in full first: no half-written file
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LabctlError(f"cannot write the diagram to {path}: {reason}") from None


def _day_width(n_days: int) -> float:
    """Inches per day: wide enough for a concentration in a two-day bar."""
    if n_days <= 20:
        return 0.42
    if n_days <= 32:
        return 0.36
    return max(0.24, 12.0 / n_days)


def _layout(fig: Figure, protocol: Protocol, plan: Plan, rows: list[Row], m: _Measure) -> None:
    x0, x1 = plan.first_day, plan.last_day + 1
    day_w = _day_width(x1 - x0)
    axis_w = (x1 - x0) * day_w
    label_w = max((m.width(r.name, ROW_FONT) for r in rows), default=0.5)
    left = label_w + 0.3

    # Vertical plan of the rows area (inches from the top of the axes).
    y = 0.0
    placed: list[tuple[Row, float, float]] = []  # row, top, height
    prev_kind: RowKind | None = None
    lanes: list[tuple[Marker, int, float, str]] = []
    for r in rows:
        if prev_kind is not None and _section(r.kind) != _section(prev_kind):
            y += GAP
        if r.kind is RowKind.PHASES:
            h = _phase_height(r, day_w, m)
        elif r.kind is RowKind.EVENTS:
            lanes = _event_lanes(r, day_w, x0, x1, m)
            h = (max((ln for _, ln, _, _ in lanes), default=0) + 1) * LANE_H + 0.08
        elif r.kind is RowKind.FEED:
            h = ROW_H + (0.1 if any(mk.label for mk in r.markers) else 0.0)
        elif r.kind is RowKind.MEDIUM and any(sg.fraction < 1 for sg in r.segments):
            h = MEDIUM_ROW_H
        else:
            h = ROW_H
        placed.append((r, y, h))
        y += h
        prev_kind = r.kind
    rows_h = max(y, ROW_H)

    title_lines = _title_lines(protocol, plan, left + axis_w + RIGHT, m)
    handles = _legend_entries(rows)
    ncol, legend_rows = _legend_shape(handles, left + axis_w + RIGHT - 0.4, m)
    title_h = TOP + len(title_lines) * TITLE_LINE_H + 0.1
    legend_h = legend_rows * LEGEND_LINE_H + 0.1 if handles else 0.0
    width = left + axis_w + RIGHT
    height = title_h + rows_h + AXIS_H + legend_h
    fig.set_size_inches(width, height)

    ax = fig.add_axes((left / width, (AXIS_H + legend_h) / height, axis_w / width, rows_h / height))
    ax.set_xlim(x0, x1)
    ax.set_ylim(rows_h, 0)  # inches, downwards
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_yticks([])
    _day_axis(ax, x0, x1, rows_h)

    # Title block.
    ty = height - TOP
    for i, (text, size, weight) in enumerate(title_lines):
        fig.text(
            0.3 / width,
            (ty - (i + 0.7) * TITLE_LINE_H) / height,
            text,
            fontsize=size,
            fontweight=weight,
            va="baseline",
            ha="left",
        )

    colour = iter(PALETTE * 10)
    grey = iter(MEDIUM_GREYS * 10)
    events_row = None
    for r, top, h in placed:
        ax.text(
            x0 - 0.12 / day_w,
            top + h / 2,
            r.name,
            fontsize=ROW_FONT,
            ha="right",
            va="center",
            fontweight="bold" if r.kind is RowKind.PHASES else "normal",
            fontstyle="italic"
            if r.kind in (RowKind.EVENTS, RowKind.FEED, RowKind.ENVIRONMENT)
            else "normal",
        )
        if r.kind is RowKind.PHASES:
            _draw_phases(ax, r, top, h, day_w, m, rows_h)
        elif r.kind is RowKind.EVENTS:
            events_row = (r, top, h)
        elif r.kind is RowKind.MEDIUM:
            _draw_bars(ax, r, top, next(grey), day_w, m, x0, x1, by_fraction=True, row_h=h)
        elif r.kind is RowKind.COMPOUND:
            _draw_bars(ax, r, top, next(colour) if r.segments else "#444444", day_w, m, x0, x1)
            _draw_additions(ax, r, top, day_w, m, x1)
        elif r.kind is RowKind.ENVIRONMENT:
            _draw_bars(ax, r, top, "#56B4E9", day_w, m, x0, x1)
        elif r.kind is RowKind.FEED:
            _draw_feeds(ax, r, top, day_w)
    if events_row is not None:
        r, top, h = events_row
        _draw_events(ax, lanes, top, h, rows_h)
    # Faint separators between sections.
    for (r1, t1, h1), (r2, t2, _h2) in zip(placed, placed[1:], strict=False):
        if _section(r1.kind) != _section(r2.kind):
            ax.axhline((t1 + h1 + t2) / 2, color="#CCCCCC", lw=0.6, zorder=0.2)

    if handles:
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(0.3 / width, legend_h / height),
            ncol=ncol,
            frameon=False,
            fontsize=FONT,
            handlelength=2.2,
            columnspacing=1.4,
            borderaxespad=0.0,
        )


def _section(kind: RowKind) -> str:
    return {RowKind.PHASES: "top", RowKind.EVENTS: "top"}.get(kind, kind.value)


def _title_lines(
    protocol: Protocol, plan: Plan, width_in: float, m: _Measure
) -> list[tuple[str, float, str]]:
    lines: list[tuple[str, float, str]] = []
    title = plan.title or protocol.title
    chars = max(20, int(len(title) * (width_in - 0.6) / max(m.width(title, 11, "bold"), 0.1)))
    for part in textwrap.wrap(title, chars) or [""]:
        lines.append((part, 11.0, "bold"))
    sub = f"{plan.protocol_id}  v{plan.protocol_version}"
    if plan.parameters:
        sub += "   ·   " + ", ".join(
            f"{k} = {format_quantity(v)}" for k, v in sorted(plan.parameters.items())
        )
    chars = max(20, int(len(sub) * (width_in - 0.6) / max(m.width(sub, 8.5), 0.1)))
    for part in textwrap.wrap(sub, chars):
        lines.append((part, 8.5, "normal"))
    return lines


def _day_axis(ax: Axes, x0: int, x1: int, rows_h: float) -> None:
    n = x1 - x0
    step = 1 if n <= 30 else 2
    days = [d for d in range(x0, x1) if d % step == 0]
    ax.set_xticks([d + 0.5 for d in days])  # a label sits in the middle of its day
    ax.set_xticklabels([str(d) for d in days], fontsize=FONT)
    ax.set_xticks(list(range(x0, x1 + 1)), minor=True)
    ax.tick_params(axis="x", which="major", length=0, pad=4)
    ax.tick_params(axis="x", which="minor", length=4)
    for lab, d in zip(ax.get_xticklabels(), days, strict=True):
        if d == 0:
            lab.set_fontweight("bold")
    ax.set_xlabel("day", fontsize=ROW_FONT, labelpad=3)
    for d in range(x0, x1 + 1):
        ax.axvline(d, color="#EBEBEB", lw=0.6, zorder=0)
    if x0 <= 0 <= x1:
        ax.axvline(0, color="#555555", lw=0.9, zorder=0.3)  # day 0: the run's start


def _fits(text_w: float, space_w: float) -> bool:
    return text_w + 0.06 <= space_w


def _phase_height(r: Row, day_w: float, m: _Measure) -> float:
    lines = max(
        (len(_wrap_to(s.label, (s.end - s.start) * day_w, m)) for s in r.segments), default=1
    )
    return max(ROW_H, lines * PHASE_LINE_H + 0.12)


def _wrap_to(text: str, width_in: float, m: _Measure, size: float = FONT) -> list[str]:
    """``text`` wrapped to lines of at most ``width_in`` inches (at most 3 lines)."""
    if _fits(m.width(text, size), width_in):
        return [text]
    for chars in range(len(text) - 1, 3, -1):
        lines = textwrap.wrap(text, chars, break_long_words=False)
        if all(_fits(m.width(ln, size), width_in) for ln in lines):
            if len(lines) <= 3:
                return lines
            break
    lines = textwrap.wrap(text, max(4, int(len(text) * width_in / m.width(text, size))))
    if len(lines) > 3:
        lines = lines[:3]
        lines[-1] = lines[-1][:-1] + "…"
    return lines


def _draw_phases(
    ax: Axes, r: Row, top: float, h: float, day_w: float, m: _Measure, rows_h: float
) -> None:
    from matplotlib.patches import Rectangle

    for i, s in enumerate(r.segments):
        fill = PHASE_FILLS[i % len(PHASE_FILLS)]
        ax.add_patch(
            Rectangle(
                (s.start, top + 0.03),
                s.end - s.start,
                h - 0.06,
                facecolor=fill,
                edgecolor="#777777",
                lw=0.6,
                zorder=1,
            )
        )
        lines = _wrap_to(s.label, (s.end - s.start) * day_w, m)
        ax.text(
            (s.start + s.end) / 2,
            top + h / 2,
            "\n".join(lines),
            fontsize=FONT,
            ha="center",
            va="center",
            zorder=2,
            linespacing=1.1,
        )
        if i > 0:
            ax.plot(
                [s.start, s.start],
                [top + h, rows_h],
                color="#999999",
                lw=0.7,
                ls=(0, (4, 3)),
                zorder=0.4,
            )


def _draw_bars(
    ax: Axes,
    r: Row,
    top: float,
    colour: str,
    day_w: float,
    m: _Measure,
    x0: int,
    x1: int,
    by_fraction: bool = False,
    row_h: float = ROW_H,
) -> None:
    from matplotlib.patches import Rectangle

    base = top + row_h - (ROW_H - BAR_H) / 2  # bar bottom
    segs = r.segments
    for i, s in enumerate(segs):
        bh = BAR_H * (s.fraction if by_fraction else 1.0)
        # Opaque tint: event and grid lines pass behind bars, not through their labels.
        ax.add_patch(
            Rectangle(
                (s.start, base - bh),
                s.end - s.start,
                bh,
                facecolor=_tint(colour),
                edgecolor=colour,
                lw=0.9,
                zorder=1,
            )
        )
        if not s.label:
            continue
        w = m.width(s.label)
        seg_w = (s.end - s.start) * day_w
        # A label sits inside its bar; a blend's share sits above it, in line across the row.
        cy = (base - BAR_H) / 2 + top / 2 if s.fraction < 1 else base - bh / 2
        right_free = ((segs[i + 1].start if i + 1 < len(segs) else x1) - s.end) * day_w
        left_free = (s.start - (segs[i - 1].end if i > 0 else x0)) * day_w
        if _fits(w, seg_w):
            ax.text(
                (s.start + s.end) / 2,
                cy,
                s.label,
                fontsize=FONT,
                ha="center",
                va="center",
                zorder=3,
            )
        elif _fits(w, right_free):
            ax.text(
                s.end + 0.04 / day_w, cy, s.label, fontsize=FONT, ha="left", va="center", zorder=3
            )
        elif _fits(w, left_free):
            ax.text(
                s.start - 0.04 / day_w,
                cy,
                s.label,
                fontsize=FONT,
                ha="right",
                va="center",
                zorder=3,
            )
        else:
            ax.text(
                (s.start + s.end) / 2,
                cy,
                s.label,
                fontsize=FONT - 1.5,
                ha="center",
                va="center",
                zorder=3,
            )


def _draw_additions(ax: Axes, r: Row, top: float, day_w: float, m: _Measure, x1: int) -> None:
    from matplotlib.patches import Rectangle

    cy = top + ROW_H / 2
    for mk in r.markers:
        pulse = mk.kind is MarkKind.PULSE
        if pulse and mk.end is not None and (mk.end - mk.x) * day_w > 0.1:
            ax.add_patch(
                Rectangle(
                    (mk.x, cy - BAR_H / 4),
                    mk.end - mk.x,
                    BAR_H / 2,
                    facecolor="#555555",
                    edgecolor="none",
                    zorder=2,
                )
            )
        ax.plot([mk.x], [cy], ls="none", zorder=4, **(_PULSE if pulse else _ADDITION))
        w = m.width(mk.label)
        anchor = max(mk.x, mk.end or mk.x)  # a long pulse's label follows its bar
        pad = 0.1 / day_w
        left = anchor + pad + w / day_w > x1
        ax.text(
            mk.x - pad if left else anchor + pad,
            cy,
            mk.label,
            fontsize=FONT,
            ha="right" if left else "left",
            va="center",
            zorder=4,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3, "alpha": 0.85},
        )


_ADDITION: dict[str, Any] = {"marker": "v", "ms": 7, "mfc": "#222222", "mec": "#222222"}
_PULSE: dict[str, Any] = {"marker": "v", "ms": 7, "mfc": "white", "mec": "#222222", "mew": 1.2}
_FEED_STYLE: dict[MarkKind, dict[str, Any]] = {
    MarkKind.FULL: {"marker": "o", "mfc": "#222222", "mec": "#222222"},
    MarkKind.HALF: {
        "marker": "o",
        "fillstyle": "bottom",
        "mfc": "#222222",
        "mec": "#222222",
        "mfcalt": "white",
    },
    MarkKind.FRACTION: {
        "marker": "D",
        "fillstyle": "bottom",
        "mfc": "#222222",
        "mec": "#222222",
        "mfcalt": "white",
        "ms": 5,
    },
    MarkKind.TOP_UP: {"marker": "^", "mfc": "white", "mec": "#222222"},
    MarkKind.WASH: {"marker": "s", "mfc": "#0072B2", "mec": "#222222"},
}
_FEED_NAMES = {
    MarkKind.FULL: "full change",
    MarkKind.HALF: "half change",
    MarkKind.FRACTION: "partial change (share shown)",
    MarkKind.TOP_UP: "top-up (nothing removed)",
    MarkKind.WASH: "wash, then full change",
}


def _draw_feeds(ax: Axes, r: Row, top: float, day_w: float) -> None:
    cy = top + ROW_H / 2
    # Feeds closer than a marker's width (a wash-out an hour after a feed) are spread
    # up and down so each stays visible.
    clusters: list[list[Marker]] = []
    for mk in sorted(r.markers, key=lambda k: k.x):
        if clusters and (mk.x - clusters[-1][-1].x) * day_w < 0.1:
            clusters[-1].append(mk)
        else:
            clusters.append([mk])
    for group in clusters:
        n = len(group)
        for i, mk in enumerate(group):
            dy = 0.0 if n == 1 else -0.07 + 0.14 * i / (n - 1)
            style = {"ms": 6, "mew": 0.8, **_FEED_STYLE[mk.kind]}
            ax.plot([mk.x], [cy + dy], ls="none", zorder=3, **style)
            if mk.label:
                ax.text(mk.x, cy + 0.17, mk.label, fontsize=FONT - 1.5, ha="center", va="top")


def _event_lanes(
    r: Row, day_w: float, x0: int, x1: int, m: _Measure
) -> list[tuple[Marker, int, float, str]]:
    """(marker, lane, label x, label alignment); labels in one lane never overlap.

    A label starts just right of its marker (or of the end of a several-day event) and
    turns to the marker's left where it would run past the last day.
    """
    out: list[tuple[Marker, int, float, str]] = []
    lane_end: list[float] = []
    pad = 0.08 / day_w
    for mk in sorted(r.markers, key=lambda k: k.x):
        w = m.width(mk.label) / day_w
        anchor = max(mk.x, mk.end or mk.x)
        if anchor + pad + w <= x1:
            tx, ha, a, b = anchor + pad, "left", mk.x - pad, anchor + pad + w
        else:
            tx, ha, a, b = mk.x - pad, "right", mk.x - pad - w, anchor + pad
        a = max(a, x0)
        for lane, end in enumerate(lane_end):
            if a >= end + pad:
                lane_end[lane] = b
                break
        else:
            lane = len(lane_end)
            lane_end.append(b)
        out.append((mk, lane, tx, ha))
    return out


def _draw_events(
    ax: Axes,
    lanes: list[tuple[Marker, int, float, str]],
    top: float,
    h: float,
    rows_h: float,
) -> None:
    from matplotlib.patches import Rectangle

    bottom = top + h - 0.04
    for mk, lane, tx, ha in lanes:
        ly = bottom - (lane + 0.5) * LANE_H  # lane 0 sits just above the rows
        ax.plot([mk.x, mk.x], [ly, rows_h], color="#666666", lw=0.7, ls=(0, (1, 2)), zorder=0.5)
        if mk.end is not None and mk.end > mk.x:
            # A several-day event: due from the first day, window to the end of the last.
            ax.add_patch(
                Rectangle(
                    (mk.x, ly - 0.035),
                    mk.end - mk.x,
                    0.07,
                    facecolor="#BBBBBB",
                    edgecolor="#666666",
                    lw=0.5,
                    zorder=1,
                )
            )
        ax.plot(
            [mk.x],
            [ly],
            marker="D",
            ms=4.5,
            color="#D55E00",
            mec="#222222",
            mew=0.5,
            zorder=3,
            ls="none",
        )
        ax.text(
            tx,
            ly,
            mk.label,
            fontsize=FONT,
            ha=ha,
            va="center",
            zorder=3,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3, "alpha": 0.85},
        )


def _legend_entries(rows: list[Row]) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    kinds = {r.kind for r in rows}
    out: list[Any] = []
    if RowKind.MEDIUM in kinds:
        out.append(
            Patch(
                facecolor=_tint("#8C8C8C"),
                edgecolor="#8C8C8C",
                label="base medium (bar height = share of a blend)",
            )
        )
    if any(r.kind is RowKind.COMPOUND and r.segments for r in rows):
        out.append(
            Patch(
                facecolor=_tint(PALETTE[0]),
                edgecolor=PALETTE[0],
                label="in the fresh medium (final conc.)",
            )
        )
    marks = {mk.kind for r in rows for mk in r.markers}
    for kind in (MarkKind.FULL, MarkKind.HALF, MarkKind.FRACTION, MarkKind.TOP_UP, MarkKind.WASH):
        if kind in marks:
            style = {"ms": 6, "mew": 0.8, **_FEED_STYLE[kind]}
            out.append(Line2D([], [], ls="none", label=_FEED_NAMES[kind], **style))
    if MarkKind.ADDITION in marks:
        out.append(Line2D([], [], ls="none", label="added to the well", **_ADDITION))
    if MarkKind.PULSE in marks:
        out.append(Line2D([], [], ls="none", label="pulse: added, then washed out", **_PULSE))
    if MarkKind.EVENT in marks:
        out.append(
            Line2D(
                [],
                [],
                marker="D",
                ms=4.5,
                color="#666666",
                mfc="#D55E00",
                mec="#222222",
                ls=(0, (1, 2)),
                lw=0.7,
                label="event",
            )
        )
    if RowKind.PHASES in kinds:
        out.append(Line2D([], [], color="#999999", lw=0.7, ls=(0, (4, 3)), label="phase boundary"))
    return out


def _legend_shape(handles: list[Any], width_in: float, m: _Measure) -> tuple[int, int]:
    """(columns, rows) so the legend fits in ``width_in`` inches."""
    if not handles:
        return 1, 0
    col_w = max(m.width(h.get_label()) for h in handles) + 0.55
    ncol = max(1, min(len(handles), int(width_in // col_w)))
    return ncol, math.ceil(len(handles) / ncol)
