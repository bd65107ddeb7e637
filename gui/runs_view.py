"""Runs: every run with its protocol, day N of M, state, next task and time, alarms."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from PyQt6.QtCore import QItemSelectionModel, QModelIndex, Qt, pyqtSignal
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from labctl.gui import theme
from labctl.gui.models.common import local, when_text
from labctl.gui.models.runs import RunRow
from labctl.gui.widgets import (
    DISPLAY,
    FONT,
    FOREGROUND,
    TONE_ROLE,
    TOOLTIP,
    USER,
    Badge,
    BadgeDelegate,
    RowsModel,
    bold_font,
    button,
    headers,
    label,
)

COLUMNS = [
    "Run",
    "Protocol",
    "Day",
    "State",
    "Plates",
    "Next task",
    "When",
    "Alarms",
    "Prompts",
    "Progress",
]


class RunsTableModel(RowsModel):
    """RunRow list as a table (Qt items made from the plain rows)."""

    COLUMNS = tuple(COLUMNS)

    def __init__(self) -> None:
        super().__init__()
        self.now: Any = None

    def set_rows(self, rows: Sequence[RunRow], now: Any = None) -> None:  # type: ignore[override]
        self.now = now
        super().set_rows(rows)

    def cells(self, r: RunRow) -> list[dict[int, object]]:  # type: ignore[override]
        out: list[dict[int, object]] = []
        for c in range(len(COLUMNS)):
            cell: dict[int, object] = {DISPLAY: self.text(r, c), USER: r.id}
            if c == 3:
                cell[TONE_ROLE] = r.tone
            if c == 7 and r.active_alarms:
                cell[FOREGROUND] = QColor(theme.VERMILLION)
            elif c == 8 and r.open_prompts:
                cell[FOREGROUND] = QColor(theme.BLUE)
            elif not r.active:
                cell[FOREGROUND] = QColor(theme.MUTED)
            if c == 0 or (c == 7 and r.active_alarms) or (c == 8 and r.open_prompts):
                cell[FONT] = bold_font()
            if c == 5 and r.next_task:
                cell[TOOLTIP] = f"{r.next_task} ({r.next_plates})"
            out.append(cell)
        return out

    def text(self, r: RunRow, c: int) -> str:
        if c == 0:
            return f"{r.name}  ·  #{r.id}"
        if c == 1:
            return r.protocol
        if c == 2:
            return r.day_text
        if c == 3:
            return r.state
        if c == 4:
            paused = f" ({len(r.paused_plates)} paused)" if r.paused_plates else ""
            return f"{len(r.plates)}{paused}"
        if c == 5:
            if not r.next_task:
                return "—"
            return f"{r.next_task} · {r.next_plates}"
        if c == 6:
            return when_text(r.next_time, r.timezone, self.now) if r.next_time else "—"
        if c == 7:
            return f"⚠ {r.active_alarms}" if r.active_alarms else "—"
        if c == 8:
            return f"● {r.open_prompts}" if r.open_prompts else "—"
        if c == 9:
            done = r.tasks_done - r.tasks_skipped
            pct = 100 * done / r.tasks_total if r.tasks_total else 0
            skipped = f" · {r.tasks_skipped} skipped" if r.tasks_skipped else ""
            return f"{pct:.0f} % ({done}/{r.tasks_total}){skipped}"
        return ""


class RunsView(QWidget):
    """The runs table; selecting a row makes it the console's current run."""

    run_selected = pyqtSignal(int)
    new_run = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        top = QHBoxLayout()
        top.addWidget(label("Runs", heading=True))
        self.count = label("", muted=True)
        top.addWidget(self.count)
        top.addStretch(1)
        self.new_button = button("New run…", "primary")
        self.new_button.setToolTip("Register a run from a protocol file (Ctrl+N)")
        self.new_button.clicked.connect(self.new_run)
        top.addWidget(self.new_button)
        lay.addLayout(top)
        self.model = RunsTableModel()
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setItemDelegateForColumn(3, BadgeDelegate(self.table))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        hh, vh = headers(self.table)
        vh.setVisible(False)
        vh.setDefaultSectionSize(34)
        # Column widths are measured once per change of the rows (set_rows), not on every
        # layout pass: ResizeToContents would re-measure every cell each time.
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        hh.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        lay.addWidget(self.table, 3)
        self.details = RunDetails()
        lay.addWidget(self.details, 2)
        selection = self.table.selectionModel()
        if selection is None:
            raise RuntimeError("a table view with a model has a selection model")
        self.selection = selection
        self.selection.currentRowChanged.connect(self._current)
        self.table.doubleClicked.connect(self._current)
        self._selected: int | None = None

    def show_details(self, run: RunRow | None, now: Any) -> None:
        self.details.set_run(run, now)

    def set_rows(self, rows: Sequence[RunRow], now: Any) -> None:
        keep = self._selected
        active = sum(1 for r in rows if r.active)
        self.count.setText(
            f"{len(rows)} runs, {active} active"
            if rows
            else "no runs in this database yet: register one with New run…, "
            "or practise with Console ▸ Training run…"
        )
        if list(rows) == self.model.rows and now == self.model.now:
            return
        grew = len(rows) != len(self.model.rows)
        self.model.set_rows(rows, now)
        if grew:  # measure the columns when runs come or go, not on every update
            for col in range(len(COLUMNS)):
                if col != 5:  # the next task takes the room that is left
                    self.table.resizeColumnToContents(col)
        if keep is not None:
            self.select(keep, emit=False)

    def select(self, run_id: int, *, emit: bool = True) -> None:
        for i, r in enumerate(self.model.rows):
            if r.id == run_id:
                self._selected = run_id
                self.selection.blockSignals(not emit)
                self.selection.setCurrentIndex(
                    self.model.index(i, 0),
                    QItemSelectionModel.SelectionFlag.ClearAndSelect
                    | QItemSelectionModel.SelectionFlag.Rows,
                )
                self.selection.blockSignals(False)
                return

    def _current(self, index: QModelIndex, _prev: QModelIndex | None = None) -> None:
        if index.isValid():
            rid = self.model.rows[index.row()].id
            if rid != self._selected or _prev is None:
                self._selected = rid
                self.run_selected.emit(rid)


class RunDetails(QFrame):
    """The selected run: its facts, its plates, and what comes next."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("card", True)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(16, 12, 16, 12)
        lay.setSpacing(28)
        left = QVBoxLayout()
        self.title = label("", sub=True)
        self.facts = label("", muted=True, wrap=True)
        self.plates_title = label("Plates", sub=True)
        self.plates_row = QHBoxLayout()
        self.plates_row.setSpacing(6)
        self.plates_row.addStretch(1)
        left.addWidget(self.title)
        left.addWidget(self.facts)
        left.addSpacing(8)
        left.addWidget(self.plates_title)
        left.addLayout(self.plates_row)
        left.addStretch(1)
        right = QVBoxLayout()
        right.addWidget(label("Coming up", sub=True))
        self.upcoming = QLabel()
        self.upcoming.setTextFormat(Qt.TextFormat.RichText)
        self.upcoming.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        right.addWidget(self.upcoming, 1)
        lay.addLayout(left, 2)
        lay.addLayout(right, 3)
        self.badges: list[Badge] = []
        self._key: tuple | None = None

    def set_run(self, r: RunRow | None, now: Any) -> None:
        key = (r, now.replace(second=0, microsecond=0) if now else None)
        if key == self._key:
            return
        self._key = key
        for b in self.badges:
            self.plates_row.removeWidget(b)
            b.deleteLater()
        self.badges = []
        if r is None:
            self.title.setText("Select a run")
            self.facts.setText("")
            self.upcoming.setText("")
            return
        self.title.setText(f"{r.name} · {r.protocol}")
        day0 = local(r.start, r.timezone)
        self.facts.setText(
            f"Day 0 {day0:%a %d %b %Y %H:%M} ({r.timezone}) · {r.day_text} · "
            f"parameters: {r.parameters} · {len(r.plates)} plate(s)"
        )
        for label_, state in r.plate_states:
            b = Badge(
                f"{label_} {state}", "paused" if state == "paused" else "ok" if r.active else "idle"
            )
            self.badges.append(b)
            self.plates_row.insertWidget(len(self.badges) - 1, b)
        rows = "".join(
            f"<tr><td style='padding:2px 14px 2px 0'>{when_text(when, r.timezone, now)}</td>"
            f"<td style='padding:2px 14px 2px 0; color:{theme.MUTED}'>day {day}</td>"
            f"<td style='padding:2px 14px 2px 0'>{html.escape(title)}</td>"
            f"<td style='color:{theme.MUTED}'>{html.escape(plates)}</td></tr>"
            for when, day, title, plates in r.upcoming
        )
        self.upcoming.setText(f"<table>{rows}</table>" if rows else "Nothing left to do.")
