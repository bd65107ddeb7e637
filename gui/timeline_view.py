"""Timeline: a Gantt chart of the coming hours and days, per device and per plate.

Each job is a bar from its start to its end (real times once started, planned ones
before); the main job of a task (the liquid-handling run, the event) carries its window as
a band behind it and its slack. Late and failed jobs are marked with a symbol and a word as
well as a colour; a vertical line shows now. Where things go is worked out in
:mod:`labctl.gui.gantt_geometry` and drawn by :mod:`labctl.gui.gantt_paint`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from PyQt6.QtCore import QEvent, QPointF, QSize
from PyQt6.QtGui import QHelpEvent, QPainter, QPaintEvent
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from labctl.clock import Clock
from labctl.gui import theme
from labctl.gui.gantt_geometry import (
    GanttGeometry,
    bar_style,
    chart_height,
    collapse,
    x_of,
)
from labctl.gui.gantt_paint import GanttPainter
from labctl.gui.models.common import duration_text, hhmm, when_text
from labctl.gui.models.runs import RunRow, protocol_day
from labctl.gui.models.snapshot import Snapshot
from labctl.gui.models.timeline import Bar, Lane, lanes
from labctl.gui.widgets import button, label

SPANS = [("3 hours", 3), ("8 hours", 8), ("24 hours", 24), ("3 days", 72), ("7 days", 168)]
DEFAULT_SPAN = 1  # 8 hours


class GanttCanvas(QWidget):
    """Paints lanes of bars between ``start`` and ``end``; times aware UTC, shown in ``tz``.

    Where things go is :class:`~labctl.gui.gantt_geometry.GanttGeometry`, computed again
    after :meth:`set_data` or a resize; drawing is
    :class:`~labctl.gui.gantt_paint.GanttPainter`. A tooltip describes the bar under the
    mouse (and the steps of a collapsed task).
    """

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
        self._geometry: GanttGeometry | None = None  # of the last paint
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
        self.setMinimumHeight(chart_height(self.lanes))
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(1100, chart_height(self.lanes))

    def x_of(self, t: datetime) -> float:
        return x_of(t, self.start, self.end, self.width())

    def collapsed(self, bars: Sequence[Bar]) -> list[Bar]:
        """A plate's bars as the chart shows them now (see :func:`collapse`)."""
        return collapse(bars, self.x_of)[0]

    def chart(self) -> GanttGeometry:
        """The geometry for the current data and width (kept until either changes)."""
        key = (self.width(), id(self.lanes), self.start, self.end)
        if self._geometry is None or self._geometry.key != key:
            self._geometry = GanttGeometry(self.lanes, self.start, self.end, self.width())
        return self._geometry

    # --- painting ---------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent | None) -> None:  # noqa: N802 - Qt's name
        """Draw what the exposed rectangle shows: lanes outside it are skipped, and bars
        too narrow to read are merged into blocks (thousands of jobs stay quick to draw)."""
        p = QPainter(self)
        exposed = event.rect() if event is not None else self.rect()
        painter = GanttPainter(p, self.chart(), self.height(), self.font(), self.tz, self.day_of)
        self._now_x = painter.paint(exposed, self.clock.now())
        p.end()

    def tick_now(self) -> None:
        """Move the now-line: repaint only the strips around its old and new places."""
        now = self.clock.now()
        x = self.x_of(now) if self.start <= now <= self.end else None
        for at in {a for a in (self._now_x, x) if a is not None}:
            self.update(int(at) - 45, 0, 90, self.height())

    # --- tooltips ---------------------------------------------------------------------------

    def bar_at(self, pos: QPointF) -> Bar | None:
        return self._geometry.bar_at(pos) if self._geometry is not None else None

    def tooltip_for(self, b: Bar) -> str:
        tz = self.tz
        lines = [
            f"<b>{b.title}</b>",
            f"{b.label} on {b.device} · plate {b.plate} · {b.run_name}",
            f"{'planned' if b.planned else 'ran'} {when_text(b.start, tz)} to {hhmm(b.end, tz)} · {b.state}",
        ]
        if b.window_start and b.window_end:
            lines.append(f"window {when_text(b.window_start, tz)} to {hhmm(b.window_end, tz)}")
        if b.slack_s is not None:
            lines.append(
                ("⚠ late by " + duration_text(-b.slack_s))
                if b.late
                else ("slack " + duration_text(b.slack_s))
            )
        steps = self._geometry.steps if self._geometry is not None else {}
        for step in steps.get(b.job_id, []):
            sym = bar_style(step)[2]
            lines.append(
                f"&nbsp;&nbsp;{sym} {hhmm(step.start, tz)} {step.label} on {step.device}: {step.state}"
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
        # A long run name is cut by the window, never widens it (the tooltip has it whole).
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top.addWidget(self.title, 1)  # it takes the room left; the window cuts it
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
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setWidget(self.canvas)
        lay.addWidget(self.scroll_area, 1)
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

    def shown_span(self) -> tuple[datetime, datetime]:
        """The span shown: (start, end), aware UTC."""
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
        start, end = self.shown_span()
        bars = snap.bars
        run = snap.run(self.run_id)
        if not self.all_runs.isChecked() and run is not None:
            bars = tuple(b for b in bars if b.run_id == run.id)
        shown = lanes(bars, start, end)
        tz = run.timezone if run else (snap.runs[0].timezone if snap.runs else "UTC")
        day_of = None
        if run is not None and (
            self.all_runs.isChecked() is False or len({b.run_id for b in bars}) <= 1
        ):
            r = run

            def day_of(t: datetime, r: RunRow = r) -> str:
                return f"day {protocol_day(t, r.start, r.timezone)}"

        scope = "all active runs" if self.all_runs.isChecked() or run is None else run.name
        if run is not None and run.never_started and not self.all_runs.isChecked():
            scope += " (not started: nothing of it will be carried out)"
        self.title.setText(f"Timeline · {scope}")
        self.title.setToolTip(self.title.text())
        self.canvas.set_data(shown, start, end, tz, day_of)
