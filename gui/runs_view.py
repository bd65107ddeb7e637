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
    QScrollArea,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from labctl.gui import theme
from labctl.gui.models.common import tzinfo, when_text, zone_abbr
from labctl.gui.models.runs import RunRow
from labctl.gui.models.urgency import urgency
from labctl.gui.widgets import (
    BACKGROUND,
    DISPLAY,
    FONT,
    FOREGROUND,
    TONE_ROLE,
    TOOLTIP,
    URGENCY_ROLE,
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
    "Day",
    "State",
    "Next task",
    "When",
    "Window",
    "Needs you",
    "Progress",
]

STATE, NEXT, WHEN, WINDOW, NEEDS, PROGRESS = (
    COLUMNS.index(c) for c in ("State", "Next task", "When", "Window", "Needs you", "Progress")
)


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
        u = r.urgency(self.now) if self.now is not None else None
        for c in range(len(COLUMNS)):
            cell: dict[int, object] = {DISPLAY: self.text(r, c), USER: r.id}
            if c == STATE:
                cell[TONE_ROLE] = r.tone
            if c == WINDOW and u is not None and u.loud:
                # Late and at-risk work: the words on the tone's colour (never colour alone).
                t = theme.tone(u.tone)
                cell[BACKGROUND] = QColor(t.fill)
                cell[FOREGROUND] = QColor(t.text)
                cell[URGENCY_ROLE] = u.level
            elif c == WINDOW and u is not None and u.level == "due":
                cell[FOREGROUND] = QColor(theme.BLUE)
                cell[URGENCY_ROLE] = u.level
            elif c == NEEDS and r.active_alarms:
                cell[FOREGROUND] = QColor(theme.VERMILLION)
            elif c == NEEDS and r.open_prompts:
                cell[FOREGROUND] = QColor(theme.BLUE)
            elif not r.active or r.never_started:
                cell[FOREGROUND] = QColor(theme.MUTED)
            if (
                c == 0
                or (c == WINDOW and u is not None and u.level != "none")
                or (c == NEEDS and (r.active_alarms or r.open_prompts))
            ):
                cell[FONT] = bold_font()
            cell[TOOLTIP] = self.tip(r, c)
            out.append(cell)
        return out

    def tip(self, r: RunRow, c: int) -> str | None:
        """A cell's tooltip: the whole text of what a narrow column may cut."""
        if c == 0:
            return f"{r.name} · {r.protocol} · run {r.id}"
        if c == NEXT and r.next_task:
            return f"{r.next_task} ({r.next_plates})"
        if c == WINDOW and r.next_window_end is not None:
            return (
                f"the next task's window ends {when_text(r.next_window_end, r.timezone, self.now)}"
            )
        if c == NEEDS:
            return f"{r.active_alarms} alarm(s) standing, {r.open_prompts} prompt(s) waiting"
        if c == PROGRESS:
            return (
                f"{r.tasks_done - r.tasks_skipped} of {r.tasks_total} tasks done, "
                f"{r.tasks_skipped} skipped; {len(r.plates)} plate(s)"
            )
        return None

    def text(self, r: RunRow, c: int) -> str:
        if c == 0:
            return f"{r.name}  ·  #{r.id}"
        if c == 1:
            return r.day_text
        if c == STATE:
            return r.state
        if c == NEXT:
            if not r.next_task or r.never_started:
                return "—"
            return f"{r.next_task} · {r.next_plates}"
        if c == WHEN:
            if r.never_started or not r.next_time:
                return "—"
            return when_text(r.next_time, r.timezone, self.now)
        if c == WINDOW:
            if r.never_started:
                return "no start command" if r.active else "—"
            u = r.urgency(self.now) if self.now is not None else None
            return u.label if u is not None and u.text else "—"
        if c == NEEDS:
            parts = ([f"⚠ {r.active_alarms}"] if r.active_alarms else []) + (
                [f"● {r.open_prompts}"] if r.open_prompts else []
            )
            return "  ".join(parts) or "—"
        if c == PROGRESS:
            done = r.tasks_done - r.tasks_skipped
            pct = 100 * done / r.tasks_total if r.tasks_total else 0
            return f"{pct:.0f} % ({done}/{r.tasks_total})"
        return ""


class RunsView(QWidget):
    """The runs table; selecting a row makes it the console's current run."""

    RUN_WIDTH = 260  # px: a longer run name is cut with "…" (its tooltip has it whole)

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
        self.table.setItemDelegateForColumn(STATE, BadgeDelegate(self.table))
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
        hh.setSectionResizeMode(NEXT, QHeaderView.ResizeMode.Stretch)
        hh.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        lay.addWidget(self.table, 1)
        self.details = RunDetails()
        lay.addWidget(self.details, 1)
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
        # Measured when the rows change (here), not on every layout pass. Every column but
        # the run's name: the day ("starts in 1 d", "day 12 of 25"), the time (today's
        # "08:54 UTC", then "Thu 10 Dec 08:54 UTC") and the window's words change with the
        # time, and a column measured once cut them ("Thu 10 ...").
        for col in range(1 if not grew else 0, len(COLUMNS)):
            if col != NEXT:  # the next task takes the room that is left
                self.table.resizeColumnToContents(col)
        if grew and self.table.columnWidth(0) > self.RUN_WIDTH:
            self.table.setColumnWidth(0, self.RUN_WIDTH)  # long names elide; tooltips say all
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


#: More plates than this are shown one badge per state ("22 active"), not one per plate:
#: two dozen badges in a row would push the window past the screen.
PLATE_BADGES = 8


def plate_badges(states: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(badge text, state, tooltip) for a run's plates: ``"P1 active"`` each while few,
    else ``"22 active"`` per state with the plates named in the tooltip."""
    if len(states) <= PLATE_BADGES:
        return [(f"{p} {s}", s, f"plate {p}: {s}") for p, s in states]
    by_state: dict[str, list[str]] = {}
    for p, s in states:
        by_state.setdefault(s, []).append(p)
    return [(f"{len(ps)} {s}", s, f"{s}: {', '.join(ps)}") for s, ps in by_state.items()]


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def upcoming_row(
    r: RunRow, when: Any, day: int, title: str, plates: str, end: Any, now: Any
) -> str:
    """One line of "Coming up": when (with its zone), day, task, plates, and late or at-risk
    work in words on its colour."""
    u = urgency(when, end, now, expected_start=when) if now is not None else None
    flag = ""
    if u is not None and u.loud:
        t = theme.tone(u.tone)
        flag = (
            f"<span style='background:{t.fill}; color:{t.text};'>"
            f"<b>&nbsp;{html.escape(u.label)}&nbsp;</b></span><br>"
        )
    elif u is not None and u.level == "due":
        flag = f"<span style='color:{theme.BLUE}'><b>{html.escape(u.label)}</b></span><br>"
    # The flag stands above its task's title, in the widest column: it is never cut, and
    # rows without one stay one line high.
    cell = "style='white-space:nowrap; padding:2px 14px 2px 0"
    return (
        f"<tr><td {cell}'>{when_text(when, r.timezone, now)}</td>"
        f"<td {cell}; color:{theme.MUTED}'>day {day}</td>"
        f"<td style='padding:2px 14px 2px 0'>{flag}{html.escape(_short(title))}</td>"
        f"<td {cell}; color:{theme.MUTED}'>{html.escape(plates)}</td>"
        "</tr>"
    )


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
        # The list never widens the window: the table takes the width there is and long
        # task titles wrap within their cell (a cut title hid the plates).
        self.upcoming.setWordWrap(True)
        self.upcoming.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        # It scrolls rather than grows: the runs table above keeps its rows in view when
        # strips (the engine's, your commands) take height.
        self.upcoming_area = QScrollArea()
        self.upcoming_area.setWidgetResizable(True)
        self.upcoming_area.setFrameShape(QFrame.Shape.NoFrame)
        self.upcoming_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.upcoming_area.setWidget(self.upcoming)
        self.upcoming_area.setStyleSheet(
            "QScrollArea, QScrollArea > QWidget > QWidget { background: transparent; }"
        )
        right.addWidget(self.upcoming_area, 1)
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
        day0 = r.start.astimezone(tzinfo(r.timezone))
        self.facts.setText(
            f"Day 0 {day0:%a %d %b %Y %H:%M} {zone_abbr(day0)} ({r.timezone}) · {r.day_text} · "
            f"parameters: {r.parameters} · {len(r.plates)} plate(s)"
        )
        for text, state, who in plate_badges(r.plate_states):
            b = Badge(text, "paused" if state == "paused" else "ok" if r.active else "idle")
            b.setToolTip(who)
            self.badges.append(b)
            self.plates_row.insertWidget(len(self.badges) - 1, b)
        rows = "".join(
            upcoming_row(r, when, day, title, plates, end, now)
            for when, day, title, plates, end in r.upcoming
        )
        if r.never_started:
            rows = ""
        self.upcoming.setText(
            f"<table width='100%'>{rows}</table>"
            if rows
            else "Not started: nothing of it will be carried out."
            if r.never_started
            else "Nothing left to do."
        )
