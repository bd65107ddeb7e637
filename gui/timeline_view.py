"""Timeline: a Gantt chart of the coming hours and days, per device and per plate.

Each job is a bar from its start to its end (real times once started, planned ones
before); the main job of a task (the liquid-handling run, the event) carries its window as
a band behind it and its slack. Late and failed jobs are marked with a symbol and a word as
well as a colour; a vertical line shows now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from PyQt6.QtCore import QEvent, QPointF, QRectF, QSize, Qt
from PyQt6.QtGui import QBrush, QColor, QFont, QFontMetrics, QHelpEvent, QPainter, QPaintEvent, QPen
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from labctl.clock import Clock
from labctl.gui import models, theme
from labctl.gui.models import Bar, Lane, Snapshot
from labctl.gui.widgets import button, label

SPANS = [("3 hours", 3), ("8 hours", 8), ("24 hours", 24), ("3 days", 72), ("7 days", 168)]
DEFAULT_SPAN = 1  # 8 hours


_URGENCY = [theme.VERMILLION, theme.BLUE, "#FFFFFF", theme.BLUISH_GREEN, theme.REDDISH_PURPLE]


def _worse(a: str, b: str) -> str:
    """Of two bar fills, the more urgent one (failed, running, planned, done, skipped)."""
    ra = _URGENCY.index(a) if a in _URGENCY else 2
    rb = _URGENCY.index(b) if b in _URGENCY else 2
    return a if ra <= rb else b


def bar_style(b: Bar) -> tuple[str, str, str]:
    """(fill, text colour, symbol) of a bar by its state."""
    if b.failed:
        t = theme.tone("fault")
    elif b.state == "running":
        t = theme.tone("running")
    elif b.state == "done":
        t = theme.tone("ok")
    elif b.state == "skipped":
        t = theme.tone("skipped")
    else:
        return ("#FFFFFF", theme.INK, "○")
    return (t.fill, t.text, t.symbol)


class GanttCanvas(QWidget):
    """Paints lanes of bars between ``start`` and ``end``; times aware UTC, shown in ``tz``."""

    LEFT = 200
    AXIS = 50
    LANE_H = 34
    GROUP_H = 26
    RIGHT = 16

    def __init__(self, clock: Clock, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.clock = clock
        self.lanes: list[Lane] = []
        self.start = clock.now()
        self.end = self.start + timedelta(hours=24)
        self.tz = "UTC"
        self.day_of: Callable[[datetime], str] | None = None
        self.setMouseTracking(True)
        self.setMinimumHeight(200)
        self._hit: list[tuple[QRectF, Bar]] = []
        self._steps: dict[int, list[Bar]] = {}  # collapsed task bar (-task id) -> its steps
        self._layout_key: tuple | None = None
        self._layout: list[tuple[str, float, int, Any, list[tuple]]] = []
        self._now_x: float | None = None

    def set_data(
        self,
        lanes: Sequence[Lane],
        start: datetime,
        end: datetime,
        tz: str,
        day_of: Callable[[datetime], str] | None = None,
    ) -> None:
        self.lanes = list(lanes)
        self.start, self.end, self.tz, self.day_of = start, end, tz, day_of
        self.setMinimumHeight(self._height())
        self.updateGeometry()
        self.update()

    def _height(self) -> int:
        groups = len({lane.group for lane in self.lanes})
        return self.AXIS + groups * self.GROUP_H + len(self.lanes) * self.LANE_H + 12

    def sizeHint(self) -> QSize:
        return QSize(1100, self._height())

    def x_of(self, t: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        w = self.width() - self.LEFT - self.RIGHT
        return self.LEFT + (t - self.start).total_seconds() / span * w

    # --- painting ---------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent | None) -> None:  # noqa: N802 - Qt's name
        """Draw what the exposed rectangle shows: lanes outside it are skipped, and bars
        too narrow to read are merged into blocks (thousands of jobs stay quick to draw)."""
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        exposed = event.rect() if event is not None else self.rect()
        p.fillRect(exposed, QColor(theme.PAPER))
        base = QFont(self.font())
        small = QFont(base)
        small.setPointSizeF(base.pointSizeF() * 0.88)
        bold = QFont(base)
        bold.setBold(True)
        fm_base, fm_small = QFontMetrics(base), QFontMetrics(small)
        rows = self._rows()
        # Tags (slack, "failed") are drawn right of their bar: keep bars a little left of view.
        x_lo, x_hi = exposed.left() - 170, exposed.right() + 2
        y_lo, y_hi = exposed.top(), exposed.bottom()
        for kind, y, i, lane, items in rows:
            h = self.GROUP_H if kind == "group" else self.LANE_H
            if y + h < y_lo or y > y_hi:
                continue
            if kind == "group":
                p.fillRect(QRectF(0, y, self.width(), self.GROUP_H), QColor("#EEF0F3"))
                p.setPen(QColor(theme.MUTED))
                p.setFont(bold)
                p.drawText(
                    QRectF(12, y, self.LEFT, self.GROUP_H),
                    Qt.AlignmentFlag.AlignVCenter,
                    lane.upper(),
                )
                continue
            if i % 2:
                p.fillRect(QRectF(0, y, self.width(), self.LANE_H), QColor("#F8F9FB"))
            show_window = lane.group == "Plates"
            for item in items:
                if item[2] < x_lo or item[1] > x_hi:
                    continue
                if item[0] == "block":
                    self._block(p, item, y, bold)
                else:
                    self._bar(p, item[3], item[1], item[2], y, small, bold, fm_small, show_window)
            p.setPen(QPen(QColor(theme.RULE), 1))
            p.drawLine(QPointF(0, y + self.LANE_H), QPointF(self.width(), y + self.LANE_H))
            # The lane title last, over anything that reached into the left column.
            p.fillRect(
                QRectF(0, y + 1, self.LEFT, self.LANE_H - 1),
                QColor("#F8F9FB" if i % 2 else theme.PAPER),
            )
            p.setPen(QColor(theme.INK))
            p.setFont(base)
            title = fm_base.elidedText(lane.title, Qt.TextElideMode.ElideMiddle, self.LEFT - 24)
            p.drawText(
                QRectF(12, y, self.LEFT - 20, self.LANE_H), Qt.AlignmentFlag.AlignVCenter, title
            )
        bottom = rows[-1][1] + self.LANE_H if rows else self.AXIS
        p.setPen(QPen(QColor(theme.RULE), 1))
        p.drawLine(QPointF(self.LEFT, self.AXIS), QPointF(self.LEFT, bottom))
        if y_lo <= self.AXIS:
            self._axis(p, base, small, bold)
        self._now(p, bottom, bold)
        if not self.lanes:
            p.setPen(QColor(theme.MUTED))
            p.setFont(base)
            p.drawText(
                QRectF(self.LEFT, self.AXIS, self.width() - self.LEFT, 80),
                Qt.AlignmentFlag.AlignCenter,
                "Nothing scheduled in this span.",
            )
        p.end()

    def _rows(self) -> list[tuple[str, float, int, Any, list[tuple]]]:
        """Where each group heading and lane goes, with its draw items, for this width.

        An item is ("bar", x0, x1, bar) or, for runs of bars under 4 px wide that touch,
        ("block", x0, x1, fill, failed, steps). Recomputed after set_data or a resize.
        """
        key = (self.width(), id(self.lanes), self.start, self.end)
        if self._layout_key == key:
            return self._layout
        rows: list[tuple[str, float, int, Any, list[tuple]]] = []
        hit: list[tuple[QRectF, Bar]] = []
        y = float(self.AXIS)
        group = None
        left, right = self.LEFT + 1, self.width() - self.RIGHT
        for i, lane in enumerate(self.lanes):
            if lane.group != group:
                group = lane.group
                rows.append(("group", y, -1, group, []))
                y += self.GROUP_H
            bars = self.collapsed(lane.bars) if lane.group == "Plates" else lane.bars
            items: list[tuple] = []
            block: list[Any] | None = None
            for b in bars:
                x0, x1 = self.x_of(b.start), self.x_of(b.end)
                wx1 = self.x_of(b.window_end) if b.window_end is not None else x1
                if max(x1, wx1) < left or x0 > right:
                    continue
                x0, x1 = max(left, x0), min(right, x1)
                fill = bar_style(b)[0]
                if x1 - x0 < 4 and not b.late and not (b.main and lane.group == "Plates"):
                    if block is not None and x0 <= block[2] + 1:
                        block[2] = max(block[2], x1)
                        block[4] = block[4] or b.failed
                        block[3] = _worse(block[3], fill)
                        block[5] += 1
                        continue
                    if block is not None:
                        items.append(tuple(block))
                    block = ["block", x0, max(x1, x0 + 3), fill, b.failed, 1]
                    hit.append((QRectF(x0 - 2, y + 3, 7, self.LANE_H - 6), b))
                    continue
                items.append(("bar", x0, max(x1, x0 + 3), b))
                hit.append((QRectF(x0 - 2, y + 3, max(x1 - x0, 3) + 4, self.LANE_H - 6), b))
            if block is not None:
                items.append(tuple(block))
            items.sort(key=lambda it: it[1])
            rows.append(("lane", y, i, lane, items))
            y += self.LANE_H
        self._layout_key, self._layout, self._hit = key, rows, hit
        return rows

    def _block(self, p: QPainter, item: tuple, y: float, bold: QFont) -> None:
        _, x0, x1, fill, failed, _n = item
        top, h = y + 7, self.LANE_H - 14
        p.setPen(Qt.PenStyle.NoPen if fill != "#FFFFFF" else QPen(QColor("#8A929E"), 1))
        p.setBrush(QColor(fill))
        p.drawRect(QRectF(x0, top, max(3.0, x1 - x0), h))
        if failed:
            # Too narrow for words inside: the word goes beside it, never colour alone.
            p.setPen(QColor(theme.VERMILLION))
            p.setFont(bold)
            p.drawText(QRectF(x1 + 3, top, 80, h), Qt.AlignmentFlag.AlignVCenter, "✕ failed")

    def collapsed(self, bars: Sequence[Bar]) -> list[Bar]:
        """A plate's tasks as one bar each when their steps are too narrow to tell apart.

        The bar spans the task's first start to last end and takes the most urgent state of
        its steps (failed, running, planned, done, skipped); its window and slack are the
        main job's.
        """
        by_task: dict[int, list[Bar]] = {}
        for b in bars:
            by_task.setdefault(b.task_id, []).append(b)
        out: list[Bar] = []
        for steps in by_task.values():
            narrow = min(self.x_of(b.end) - self.x_of(b.start) for b in steps) < 40
            if len(steps) == 1 or not narrow:
                out.extend(steps)
                continue
            main = next((b for b in steps if b.main), steps[0])
            self._steps[-main.task_id] = steps
            states = {b.state for b in steps}
            failed = any(b.failed for b in steps)
            if failed:
                state = next(b.state for b in steps if b.failed)
            elif "running" in states:
                state = "running"
            elif states <= {"done", "skipped"}:
                state = "done" if "done" in states else "skipped"
            else:
                state = "pending" if not states & {"done", "running"} else "running"
            out.append(
                replace(
                    main,
                    start=min(b.start for b in steps),
                    end=max(b.end for b in steps),
                    label=main.title,
                    state=state,
                    failed=failed,
                    planned=all(b.planned for b in steps),
                    job_id=-main.task_id,
                )
            )
        return sorted(out, key=lambda b: b.start)

    def _step_hours(self) -> int:
        hours = (self.end - self.start).total_seconds() / 3600
        for step in (1, 2, 3, 6, 12, 24):
            if hours / step <= 16:
                return step
        return 24

    def _axis(self, p: QPainter, base: QFont, small: QFont, bold: QFont) -> None:
        z = models.tzinfo(self.tz)
        p.fillRect(QRectF(0, 0, self.width(), self.AXIS), QColor(theme.PAPER))
        step = self._step_hours()
        t = self.start.astimezone(z).replace(minute=0, second=0, microsecond=0)
        t = t - timedelta(hours=t.hour % step)
        bottom = self.height()
        while t <= self.end:
            x = self.x_of(t)
            if x >= self.LEFT:
                midnight = t.hour == 0
                p.setPen(QPen(QColor("#9AA1AB" if midnight else "#E3E6EB"), 2 if midnight else 1))
                p.drawLine(QPointF(x, self.AXIS - 8 if not midnight else 4), QPointF(x, bottom))
                p.setFont(small)
                p.setPen(QColor(theme.MUTED))
                p.drawText(
                    QRectF(x + 3, self.AXIS - 22, 60, 18), Qt.AlignmentFlag.AlignLeft, f"{t:%H:%M}"
                )
                if midnight:
                    self._day_label(p, bold, x, t)
            t = (t + timedelta(hours=step)).astimezone(z)
            # Re-anchor on the hour after a DST change so labels stay on round hours.
            t = t.replace(minute=0, second=0, microsecond=0)
        # The first day is named at the left edge unless its midnight is drawn near it.
        first = self.start.astimezone(z)
        nxt = (first + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        if self.x_of(nxt) - self.LEFT > 200 or nxt > self.end:
            self._day_label(p, bold, self.LEFT, first)
        p.setPen(QPen(QColor(theme.RULE), 1))
        p.drawLine(QPointF(0, self.AXIS), QPointF(self.width(), self.AXIS))

    def _day_label(self, p: QPainter, bold: QFont, x: float, t: datetime) -> None:
        p.setFont(bold)
        p.setPen(QColor(theme.INK))
        day = f"{t:%a %d %b}"
        if self.day_of is not None:
            day += f" · {self.day_of(t)}"
        p.drawText(QRectF(x + 4, 4, 240, 20), Qt.AlignmentFlag.AlignLeft, day)

    def _bar(
        self,
        p: QPainter,
        b: Bar,
        x0: float,
        x1: float,
        y: float,
        small: QFont,
        bold: QFont,
        fm: QFontMetrics,
        show_window: bool,
    ) -> None:
        left = self.LEFT + 1
        right = self.width() - self.RIGHT
        top = y + 7
        h = self.LANE_H - 14
        if show_window and b.window_start is not None and b.window_end is not None:
            ws, we = self.x_of(b.window_start), self.x_of(b.window_end)
            wx0, wx1 = max(left, ws), min(right, we)
            if wx1 > wx0:
                p.fillRect(
                    QRectF(wx0, y + 3, wx1 - wx0, self.LANE_H - 6), theme.qcolor(theme.SKY_BLUE, 50)
                )
                p.setPen(QPen(theme.qcolor(theme.BLUE, 160), 1.2))
                for x in (ws, we):
                    if left <= x <= right:
                        p.drawLine(QPointF(x, y + 3), QPointF(x, y + self.LANE_H - 3))
        w = x1 - x0
        r = QRectF(x0, top, w, h)
        fill, ink, symbol = bar_style(b)
        p.setPen(QPen(QColor("#8A929E") if fill == "#FFFFFF" else QColor(fill).darker(130), 1))
        p.setBrush(QColor(fill))
        p.drawRoundedRect(r, 3, 3)
        if b.late:
            p.setBrush(QBrush(theme.qcolor(theme.BLACK, 90), Qt.BrushStyle.BDiagPattern))
            p.setPen(QPen(QColor(theme.ORANGE), 3))
            p.drawRoundedRect(r, 3, 3)
        p.setFont(small)
        state = "failed" if b.failed else b.state
        # The longest text that fits: label, then the state in words, then the symbol.
        for text in (f"{symbol} {b.label}", f"{symbol} {state}", symbol):
            if fm.horizontalAdvance(text) + 8 <= w:
                p.setPen(QColor(ink))
                p.drawText(r.adjusted(4, 0, -2, 0), Qt.AlignmentFlag.AlignVCenter, text)
                break
        else:
            text = ""
        if b.failed and not text.endswith("failed"):
            # The word goes beside the bar: never colour alone.
            p.setPen(QColor(theme.VERMILLION))
            p.setFont(bold)
            beside = "failed" if text == symbol else "✕ failed"
            p.drawText(QRectF(x1 + 3, top, 80, h), Qt.AlignmentFlag.AlignVCenter, beside)
        if b.main and not b.failed and (b.late or b.slack_s is not None) and show_window:
            tag = (
                f"⚠ late {models.duration_text(-(b.slack_s or 0))}"
                if b.late
                else f"slack {models.duration_text(b.slack_s or 0)}"
            )
            tw = fm.horizontalAdvance(tag) + 10
            tx = x1 + 4
            if tx + tw < right:
                tr = QRectF(tx, top + 1, tw, h - 2)
                if b.late:
                    p.setBrush(QColor(theme.ORANGE))
                    p.setPen(Qt.PenStyle.NoPen)
                    p.drawRoundedRect(tr, 3, 3)
                    p.setPen(QColor(theme.INK))
                    p.setFont(bold)
                else:
                    p.setPen(QColor(theme.MUTED))
                    p.setFont(small)
                p.drawText(tr, Qt.AlignmentFlag.AlignCenter, tag)

    def tick_now(self) -> None:
        """Move the now-line: repaint only the strips around its old and new places."""
        now = self.clock.now()
        x = self.x_of(now) if self.start <= now <= self.end else None
        for at in {self._now_x, x} - {None}:
            self.update(int(at) - 45, 0, 90, self.height())  # type: ignore[operator]

    def _now(self, p: QPainter, bottom: float, bold: QFont) -> None:
        now = self.clock.now()
        if not self.start <= now <= self.end:
            self._now_x = None
            return
        x = self.x_of(now)
        self._now_x = x
        p.setPen(QPen(QColor(theme.BLACK), 2))
        p.drawLine(QPointF(x, 22), QPointF(x, bottom))
        p.setFont(bold)
        tag = f"now {models.hhmm(now, self.tz)}"
        fm = QFontMetrics(bold)
        tw = fm.horizontalAdvance(tag) + 10
        r = QRectF(x - tw / 2, 4, tw, 18)
        p.setBrush(QColor(theme.BLACK))
        p.setPen(Qt.PenStyle.NoPen)
        p.drawRoundedRect(r, 3, 3)
        p.setPen(QColor("#FFFFFF"))
        p.drawText(r, Qt.AlignmentFlag.AlignCenter, tag)

    # --- tooltips ---------------------------------------------------------------------------

    def bar_at(self, pos: QPointF) -> Bar | None:
        for r, b in reversed(self._hit):
            if r.contains(pos):
                return b
        return None

    def tooltip_for(self, b: Bar) -> str:
        tz = self.tz
        lines = [
            f"<b>{b.title}</b>",
            f"{b.label} on {b.device} · plate {b.plate} · {b.run_name}",
            f"{'planned' if b.planned else 'ran'} {models.when_text(b.start, tz)} to {models.hhmm(b.end, tz)} · {b.state}",
        ]
        if b.window_start and b.window_end:
            lines.append(
                f"window {models.when_text(b.window_start, tz)} to {models.hhmm(b.window_end, tz)}"
            )
        if b.slack_s is not None:
            lines.append(
                ("⚠ late by " + models.duration_text(-b.slack_s))
                if b.late
                else ("slack " + models.duration_text(b.slack_s))
            )
        for step in self._steps.get(b.job_id, []):
            sym = bar_style(step)[2]
            lines.append(
                f"&nbsp;&nbsp;{sym} {models.hhmm(step.start, tz)} {step.label} on {step.device}: {step.state}"
            )
        return "<br>".join(lines)

    def event(self, e: QEvent | None) -> bool:
        if e is not None and e.type() == QEvent.Type.ToolTip and isinstance(e, QHelpEvent):
            b = self.bar_at(QPointF(e.pos()))
            if b is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(e.globalPos(), self.tooltip_for(b), self)
            return True
        return super().event(e)


def _swatch(fill: str, text: str, border: str = "#8A929E", extra: str = "") -> QLabel:
    w = QLabel(text)
    w.setStyleSheet(
        f"background: {fill}; border: 1px solid {border}; border-radius: 3px; padding: 2px 8px; {extra}"
    )
    return w


class TimelineView(QWidget):
    """The Gantt chart with its span, scroll and scope controls and a legend."""

    def __init__(self, clock: Clock, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.clock = clock
        self.snapshot: Snapshot | None = None
        self.run_id: int | None = None
        self.offset = timedelta(0)  # from the default start (a quarter of the span before now)
        self._stale = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        top = QHBoxLayout()
        self.title = label("Timeline", heading=True)
        top.addWidget(self.title)
        top.addStretch(1)
        self.span = QComboBox()
        for text, hours in SPANS:
            self.span.addItem(text, hours)
        self.span.setCurrentIndex(DEFAULT_SPAN)
        self.all_runs = QCheckBox("All active runs")
        self.earlier = button("◀ Earlier")
        self.now_button = button("Now")
        self.later = button("Later ▶")
        top.addWidget(self.all_runs)
        top.addWidget(QLabel("Show"))
        top.addWidget(self.span)
        top.addWidget(self.earlier)
        top.addWidget(self.now_button)
        top.addWidget(self.later)
        lay.addLayout(top)
        legend = QHBoxLayout()
        legend.setSpacing(8)
        for w in (
            _swatch("#FFFFFF", "○ planned"),
            _swatch(theme.BLUE, "▶ running", theme.BLUE, "color: white;"),
            _swatch(theme.BLUISH_GREEN, "✓ done", theme.BLUISH_GREEN, "color: white;"),
            _swatch(theme.VERMILLION, "✕ failed", theme.VERMILLION, "color: white;"),
            _swatch(theme.REDDISH_PURPLE, "↷ skipped", theme.REDDISH_PURPLE),
            _swatch("#FFFFFF", "⚠ late", theme.ORANGE, f"border: 3px solid {theme.ORANGE};"),
            _swatch(
                "rgba(86,180,233,0.25)", "window (band) · slack = window end − start", theme.BLUE
            ),
        ):
            legend.addWidget(w)
        legend.addStretch(1)
        lay.addLayout(legend)
        self.canvas = GanttCanvas(clock)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(self.canvas)
        lay.addWidget(self.scroll, 1)
        self.span.currentIndexChanged.connect(self._reset)
        self.all_runs.toggled.connect(self.refresh)
        self.now_button.clicked.connect(self._reset)
        self.earlier.clicked.connect(lambda: self._shift(-0.5))
        self.later.clicked.connect(lambda: self._shift(0.5))

    def span_hours(self) -> int:
        return int(self.span.currentData())

    def _reset(self) -> None:
        self.offset = timedelta(0)
        self.refresh()

    def _shift(self, fraction: float) -> None:
        self.offset += timedelta(hours=self.span_hours() * fraction)
        self.refresh()

    def set_run(self, run_id: int | None) -> None:
        self.run_id = run_id
        self.refresh()

    def set_snapshot(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.refresh()

    def window(self) -> tuple[datetime, datetime]:
        span = timedelta(hours=self.span_hours())
        start = self.clock.now() - span / 4 + self.offset
        return start, start + span

    def showEvent(self, e: Any) -> None:  # noqa: N802 - Qt's name
        super().showEvent(e)
        if self._stale:
            self.refresh()

    def refresh(self) -> None:
        """Redraw from the latest snapshot; while hidden, only note that it is due."""
        snap = self.snapshot
        if snap is None:
            return
        if not self.isVisible():
            self._stale = True
            return
        self._stale = False
        start, end = self.window()
        bars = snap.bars
        run = snap.run(self.run_id)
        if not self.all_runs.isChecked() and run is not None:
            bars = tuple(b for b in bars if b.run_id == run.id)
        lanes = models.lanes(bars, start, end)
        tz = run.timezone if run else (snap.runs[0].timezone if snap.runs else "UTC")
        day_of = None
        if run is not None and (
            self.all_runs.isChecked() is False or len({b.run_id for b in bars}) <= 1
        ):
            r = run

            def day_of(t: datetime, r: models.RunRow = r) -> str:
                return f"day {models.protocol_day(t, r.start, r.timezone)}"

        scope = "all active runs" if self.all_runs.isChecked() or run is None else run.name
        self.title.setText(f"Timeline · {scope}")
        self.canvas.set_data(lanes, start, end, tz, day_of)
