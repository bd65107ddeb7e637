"""The wall monitor: the day's work across every run, read-only, in large type, for a screen
on the wall read from three metres (View > Wall monitor, a full-screen window of its own).

White and coloured text on black (contrast above 7:1 for every tone), the time in 96 px,
lines in 40 px, details in 26 px: a capital is about 1 cm high on a 24" full-HD screen,
read at 3 m. Each line starts with its tone's symbol, so colour never carries the meaning
alone. It has no controls: it follows the console window's snapshots and counts down each
second on the window's clock; Esc (or F11) leaves full screen, closing it leaves the console
as it was.
"""

from __future__ import annotations

from typing import Any

from PyQt6.QtCore import QEvent, QObject, Qt, QTimer
from PyQt6.QtGui import QCloseEvent, QKeyEvent, QKeySequence
from PyQt6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QMenu, QVBoxLayout, QWidget

from labctl.clock import Clock
from labctl.gui import theme
from labctl.gui.models.snapshot import Snapshot
from labctl.gui.models.wall import WallBoard, WallLine, wall_board

__all__ = ["WallView", "attach_wall"]

CLOCK_PX, HEAD_PX, LINE_PX, DETAIL_PX = 96, 34, 40, 26
MAX_LINES = 6  # per list: more would not be read from across the room ("+ 3 more")
#: Text colour of each tone on black (the fills of :data:`theme.TONES`, lightened where
#: needed so each reads at 7:1 or more against black).
INK = {
    "fault": "#FF7A45",
    "holding": theme.ORANGE,
    "running": theme.SKY_BLUE,
    "paused": theme.SKY_BLUE,
    "ok": "#3DDC97",
    "pending": "#FFFFFF",
    "idle": "#FFFFFF",
    "skipped": theme.REDDISH_PURPLE,
}
SECTIONS = (
    ("person", "NEEDS A PERSON", "nobody is needed"),
    ("late", "LATE", "nothing is late"),
    ("next", "DUE NEXT", "nothing more is due"),
    ("runs", "RUNNING", "no run is live"),
)


def _text(text: str, px: int, color: str = "#FFFFFF", *, bold: bool = False) -> QLabel:
    w = QLabel(text)
    w.setStyleSheet(
        f"color: {color}; font-size: {px}px; font-weight: {'bold' if bold else 'normal'};"
        " background: transparent;"
    )
    w.setWordWrap(True)
    return w


class WallView(QWidget):
    """The board, rebuilt from each snapshot and each second (countdowns)."""

    def __init__(self, clock: Clock, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.clock = clock
        self.setWindowTitle("labctl · wall monitor")
        self.setObjectName("wallMonitor")
        self.setStyleSheet("#wallMonitor { background: #000000; }")
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(self.backgroundRole(), Qt.GlobalColor.black)
        self.setPalette(pal)
        col = QVBoxLayout(self)
        col.setContentsMargins(40, 24, 40, 24)
        top = QHBoxLayout()
        self.clock_label = _text("--:--", CLOCK_PX, bold=True)
        self.date_label = _text("", HEAD_PX, "#D0D0D0")
        top.addWidget(self.clock_label)
        top.addSpacing(30)
        top.addWidget(self.date_label, 0, Qt.AlignmentFlag.AlignBottom)
        top.addStretch(1)
        self.source = _text("", DETAIL_PX, "#D0D0D0")
        self.source.setWordWrap(False)
        top.addWidget(self.source, 0, Qt.AlignmentFlag.AlignBottom)
        col.addLayout(top)
        grid = QGridLayout()
        grid.setHorizontalSpacing(60)
        grid.setVerticalSpacing(18)
        self.boxes: dict[str, QVBoxLayout] = {}
        for i, (key, title, _empty) in enumerate(SECTIONS):
            box = QVBoxLayout()
            box.setSpacing(6)
            box.addWidget(_text(title, HEAD_PX, "#D0D0D0", bold=True))
            inner = QVBoxLayout()
            inner.setSpacing(10)
            box.addLayout(inner)
            box.addStretch(1)
            grid.addLayout(box, i // 2, i % 2)
            self.boxes[key] = inner
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        col.addLayout(grid, 1)
        self.snapshot: Snapshot | None = None
        self.board: WallBoard | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    def set_snapshot(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.redraw()

    def timezone(self) -> str:
        snap = self.snapshot
        return snap.runs[0].timezone if snap is not None and snap.runs else "UTC"

    def redraw(self) -> None:
        """Draw the board at the clock's now (only what changed is rebuilt)."""
        snap = self.snapshot
        if snap is None:
            self.source.setText("reading the run database…")
            return
        board = wall_board(snap, self.clock.now(), self.timezone())
        self.clock_label.setText(board.clock)
        self.date_label.setText(board.date)
        self.source.setText("read-only · updates itself")
        if self.board is not None and _lists(board) == _lists(self.board):
            return
        self.board = board
        for key, _title, empty in SECTIONS:
            self._fill(self.boxes[key], getattr(board, key), empty)

    def _fill(self, box: QVBoxLayout, lines: tuple[WallLine, ...], empty: str) -> None:
        while box.count():
            item = box.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.deleteLater()
        if not lines:
            box.addWidget(_text(f"✓ {empty}", LINE_PX, INK["ok"]))
            return
        for line in lines[:MAX_LINES]:
            ink = INK.get(line.tone, "#FFFFFF")
            box.addWidget(
                _text(f"{theme.tone(line.tone).symbol} {line.text}", LINE_PX, ink, bold=True)
            )
            if line.detail:
                detail = _text(line.detail, DETAIL_PX, "#FFFFFF")
                detail.setIndent(LINE_PX)  # under the words, past the symbol
                box.addWidget(detail)
        if len(lines) > MAX_LINES:
            box.addWidget(_text(f"+ {len(lines) - MAX_LINES} more", DETAIL_PX, "#D0D0D0"))

    def keyPressEvent(self, e: QKeyEvent | None) -> None:  # noqa: N802 - Qt's name
        if e is not None and e.key() in (Qt.Key.Key_Escape, Qt.Key.Key_F11):
            if self.isFullScreen():
                self.showNormal()
            else:
                self.showFullScreen()
            return
        super().keyPressEvent(e)

    def closeEvent(self, e: QCloseEvent | None) -> None:  # noqa: N802 - Qt's name
        self.timer.stop()
        super().closeEvent(e)


def _lists(b: WallBoard) -> tuple[tuple[WallLine, ...], ...]:
    return (b.person, b.late, b.next, b.runs)


class _CloseWith(QObject):
    """Closes the wall windows when the console window closes."""

    def __init__(self, win: QWidget, walls: list[WallView]) -> None:
        super().__init__(win)
        self.walls = walls
        win.installEventFilter(self)

    def eventFilter(self, obj: QObject | None, e: QEvent | None) -> bool:  # noqa: N802
        if e is not None and e.type() == QEvent.Type.Close:
            for w in self.walls:
                w.close()
        return False


def attach_wall(win: Any) -> None:
    """``win`` is the console's MainWindow (not imported here: it imports this module).

    Add View > Wall monitor (F11) to ``win``: a full-screen window that follows its
    snapshots and closes with it."""
    walls: list[WallView] = []

    def open_wall() -> WallView:
        if walls and walls[0].isVisible():
            walls[0].raise_()
            return walls[0]
        view = WallView(win.clock)
        walls[:] = [view]
        win.snapshot_changed.connect(view.set_snapshot)
        if win.snapshot is not None:
            view.set_snapshot(win.snapshot)
        view.showFullScreen()
        return view

    menus = {m.title(): m for m in win.menuBar().findChildren(QMenu)}
    view_menu = menus.get("&View")
    if view_menu is not None:
        view_menu.addSeparator()
        a = view_menu.addAction("&Wall monitor (full screen)")
        a.setShortcut(QKeySequence("F11"))
        a.setStatusTip("The day's work across every run, in large type, for a screen on the wall")
        a.triggered.connect(open_wall)
    _CloseWith(win, walls)
    win.open_wall = open_wall  # tests and tools reach it
    win.walls = walls
