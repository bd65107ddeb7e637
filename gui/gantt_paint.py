"""Painting the timeline's Gantt chart from its geometry (:mod:`labctl.gui.gantt_geometry`).

Late and failed jobs are marked with a symbol and a word as well as a colour; the main job
of a plate's task carries its window as a band behind it and its slack beside it; a
vertical line shows now.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from PyQt6.QtCore import QPointF, QRect, QRectF, Qt
from PyQt6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen

from labctl.gui import theme
from labctl.gui.gantt_geometry import (
    AXIS,
    GROUP_H,
    LANE_H,
    LEFT,
    RIGHT,
    Block,
    GanttGeometry,
    Placed,
    Row,
    bar_style,
    step_hours,
)
from labctl.gui.models.common import duration_text, hhmm, tzinfo, zone_abbr
from labctl.gui.models.timeline import Lane


class GanttPainter:
    """Paints one exposed rectangle of a chart ``height`` high with ``p``.

    Times are shown in ``tz``; ``day_of`` names the protocol day of a date on the axis.
    """

    def __init__(
        self,
        p: QPainter,
        geom: GanttGeometry,
        height: int,
        font: QFont,
        tz: str,
        day_of: Callable[[datetime], str] | None,
    ) -> None:
        self.p = p
        self.geom = geom
        self.width = geom.width
        self.height = height
        self.tz = tz
        self.day_of = day_of
        self.base = QFont(font)
        self.small = QFont(self.base)
        self.small.setPointSizeF(self.base.pointSizeF() * 0.88)
        self.bold = QFont(self.base)
        self.bold.setBold(True)
        self.fm_base, self.fm_small = QFontMetrics(self.base), QFontMetrics(self.small)

    def paint(self, exposed: QRect, now: datetime) -> float | None:
        """Draw what ``exposed`` shows: rows outside it are skipped, and so are bars outside
        it (with room for the tags right of a bar). Returns the x of the now-line, if shown."""
        p, geom = self.p, self.geom
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(exposed, QColor(theme.PAPER))
        # Tags (slack, "failed") are drawn right of their bar: keep bars a little left of view.
        x_lo, x_hi = exposed.left() - 170, exposed.right() + 2
        y_lo, y_hi = exposed.top(), exposed.bottom()
        for row in geom.rows:
            h = GROUP_H if row.lane is None else LANE_H
            if row.y + h < y_lo or row.y > y_hi:
                continue
            if row.lane is None:
                self._group(row)
            else:
                self._lane(row, row.lane, x_lo, x_hi)
        bottom = geom.bottom
        p.setPen(QPen(QColor(theme.RULE), 1))
        p.drawLine(QPointF(LEFT, AXIS), QPointF(LEFT, bottom))
        if y_lo <= AXIS:
            self._axis()
        now_x = self._now(now, bottom)
        if not geom.lanes:
            p.setPen(QColor(theme.MUTED))
            p.setFont(self.base)
            p.drawText(
                QRectF(LEFT, AXIS, self.width - LEFT, 80),
                Qt.AlignmentFlag.AlignCenter,
                "Nothing scheduled in this span.",
            )
        return now_x

    def _group(self, row: Row) -> None:
        p = self.p
        p.fillRect(QRectF(0, row.y, self.width, GROUP_H), QColor("#EEF0F3"))
        p.setPen(QColor(theme.MUTED))
        p.setFont(self.bold)
        p.drawText(
            QRectF(12, row.y, LEFT, GROUP_H), Qt.AlignmentFlag.AlignVCenter, row.group.upper()
        )

    def _lane(self, row: Row, lane: Lane, x_lo: float, x_hi: float) -> None:
        p, y, i = self.p, row.y, row.lane_index
        if i % 2:
            p.fillRect(QRectF(0, y, self.width, LANE_H), QColor("#F8F9FB"))
        show_window = row.group == "Plates"
        for item in row.items:
            if item.x1 < x_lo or item.x0 > x_hi:
                continue
            if isinstance(item, Block):
                self._block(item, y)
            else:
                self._bar(item, y, show_window)
        p.setPen(QPen(QColor(theme.RULE), 1))
        p.drawLine(QPointF(0, y + LANE_H), QPointF(self.width, y + LANE_H))
        # The lane title last, over anything that reached into the left column.
        p.fillRect(QRectF(0, y + 1, LEFT, LANE_H - 1), QColor("#F8F9FB" if i % 2 else theme.PAPER))
        p.setPen(QColor(theme.INK))
        p.setFont(self.base)
        title = self.fm_base.elidedText(lane.title, Qt.TextElideMode.ElideMiddle, LEFT - 24)
        p.drawText(QRectF(12, y, LEFT - 20, LANE_H), Qt.AlignmentFlag.AlignVCenter, title)

    def _block(self, item: Block, y: float) -> None:
        p = self.p
        x0, x1, fill = item.x0, item.x1, item.fill
        top, h = y + 7, LANE_H - 14
        p.setPen(Qt.PenStyle.NoPen if fill != "#FFFFFF" else QPen(QColor("#8A929E"), 1))
        p.setBrush(QColor(fill))
        p.drawRect(QRectF(x0, top, max(3.0, x1 - x0), h))
        if item.failed:
            # Too narrow for words inside: the word goes beside it, never colour alone.
            p.setPen(QColor(theme.VERMILLION))
            p.setFont(self.bold)
            p.drawText(QRectF(x1 + 3, top, 80, h), Qt.AlignmentFlag.AlignVCenter, "✕ failed")

    def _bar(self, item: Placed, y: float, show_window: bool) -> None:
        p, b, x0, x1 = self.p, item.bar, item.x0, item.x1
        small, bold, fm = self.small, self.bold, self.fm_small
        left = LEFT + 1
        right = self.width - RIGHT
        top = y + 7
        h = LANE_H - 14
        if show_window and b.window_start is not None and b.window_end is not None:
            ws, we = self.geom.x_of(b.window_start), self.geom.x_of(b.window_end)
            wx0, wx1 = max(left, ws), min(right, we)
            if wx1 > wx0:
                p.fillRect(
                    QRectF(wx0, y + 3, wx1 - wx0, LANE_H - 6), theme.qcolor(theme.SKY_BLUE, 50)
                )
                p.setPen(QPen(theme.qcolor(theme.BLUE, 160), 1.2))
                for x in (ws, we):
                    if left <= x <= right:
                        p.drawLine(QPointF(x, y + 3), QPointF(x, y + LANE_H - 3))
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
                f"⚠ late {duration_text(-(b.slack_s or 0))}"
                if b.late
                else f"slack {duration_text(b.slack_s or 0)}"
            )
            # Measured in the font it is drawn in (late tags are bold): never cut short.
            tw = QFontMetrics(bold if b.late else small).horizontalAdvance(tag) + 12
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

    def _axis(self) -> None:
        p, geom = self.p, self.geom
        z = tzinfo(self.tz)
        p.fillRect(QRectF(0, 0, self.width, AXIS), QColor(theme.PAPER))
        step = step_hours(geom.start, geom.end)
        t = geom.start.astimezone(z).replace(minute=0, second=0, microsecond=0)
        t = t - timedelta(hours=t.hour % step)
        bottom = self.height
        while t <= geom.end:
            x = geom.x_of(t)
            if x >= LEFT:
                midnight = t.hour == 0
                p.setPen(QPen(QColor("#9AA1AB" if midnight else "#E3E6EB"), 2 if midnight else 1))
                p.drawLine(QPointF(x, AXIS - 8 if not midnight else 4), QPointF(x, bottom))
                p.setFont(self.small)
                p.setPen(QColor(theme.MUTED))
                p.drawText(
                    QRectF(x + 3, AXIS - 22, 60, 18), Qt.AlignmentFlag.AlignLeft, f"{t:%H:%M}"
                )
                if midnight:
                    self._day_label(x + 4, t, 240)
            t = (t + timedelta(hours=step)).astimezone(z)
            # Re-anchor on the hour after a DST change so labels stay on round hours.
            t = t.replace(minute=0, second=0, microsecond=0)
        # The first day is named above the lane titles, where the now-tag never goes (on
        # the axis it was hidden under the tag when now was near the span's start).
        self._day_label(12, geom.start.astimezone(z), LEFT - 20)
        p.setPen(QPen(QColor(theme.RULE), 1))
        p.drawLine(QPointF(0, AXIS), QPointF(self.width, AXIS))

    def _day_label(self, left: float, t: datetime, width: float) -> None:
        """The day's name (``Sun 13 Dec CET · day 12``) on the top row, from ``left`` and
        cut with an ellipsis at ``width`` pixels."""
        p = self.p
        p.setFont(self.bold)
        p.setPen(QColor(theme.INK))
        day = f"{t:%a %d %b} {zone_abbr(t)}"
        if self.day_of is not None:
            day += f" · {self.day_of(t)}"
        day = QFontMetrics(self.bold).elidedText(day, Qt.TextElideMode.ElideRight, int(width))
        p.drawText(QRectF(left, 4, width, 20), Qt.AlignmentFlag.AlignLeft, day)

    def _now(self, now: datetime, bottom: float) -> float | None:
        """The now-line with its time on a black tag; its x (None when now is not shown)."""
        geom, p = self.geom, self.p
        if not geom.start <= now <= geom.end:
            return None
        x = geom.x_of(now)
        p.setPen(QPen(QColor(theme.BLACK), 2))
        # The tag stands on the hours' row: it may hide an hour (it says the time itself),
        # never the name of a day above it.
        top = AXIS - 23
        p.drawLine(QPointF(x, top), QPointF(x, bottom))
        p.setFont(self.bold)
        tag = f"now {hhmm(now, self.tz)}"
        fm = QFontMetrics(self.bold)
        tw = fm.horizontalAdvance(tag) + 10
        r = QRectF(x - tw / 2, top, tw, 18)
        p.setBrush(QColor(theme.BLACK))
        p.setPen(Qt.PenStyle.NoPen)
        p.drawRoundedRect(r, 3, 3)
        p.setPen(QColor("#FFFFFF"))
        p.drawText(r, Qt.AlignmentFlag.AlignCenter, tag)
        return x
