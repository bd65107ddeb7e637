"""Today: the operator's manual tasks of the day and the day's prep sheets, printable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QFontMetrics, QTextDocument
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QSpinBox,
    QSplitter,
    QTableView,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from labctl.gui import theme
from labctl.gui.models.common import hhmm, tone_of, tzinfo, zone_abbr
from labctl.gui.models.runs import RunRow, TodayItem, today_html
from labctl.gui.models.snapshot import Snapshot
from labctl.gui.widgets import (
    DISPLAY,
    FOREGROUND,
    TONE_ROLE,
    TOOLTIP,
    URGENCY_ROLE,
    BadgeDelegate,
    RowsModel,
    button,
    cut_by_window,
    fit_headers,
    headers,
    label,
)

COLUMNS = ["Time", "Run", "Plate", "Task", "State"]
PREVIEW_CSS = "<style>p.title{font-size:15pt; font-weight:bold}</style>"


class TodayModel(RowsModel):
    """Today's manual tasks (Qt items made from the plain rows)."""

    COLUMNS = tuple(COLUMNS)

    def __init__(self) -> None:
        super().__init__()
        self.now: datetime | None = None

    def cells(self, i: TodayItem) -> list[dict[int, object]]:  # type: ignore[override]
        u = i.urgency(self.now) if self.now is not None else None
        loud = u is not None and u.loud
        texts = [
            hhmm(i.when, i.timezone),
            i.run_name,
            i.plate,
            i.what,
            u.label if loud and u is not None else ("late" if i.late else i.state),
        ]
        out: list[dict[int, object]] = []
        for c, text in enumerate(texts):
            cell: dict[int, object] = {DISPLAY: text, TOOLTIP: i.detail or i.what}
            if c == 4:
                # Late work: "⚠ LATE by 2 h 5 min" on vermillion; at risk: "◷ ends in 12
                # min" on orange. Words and colour, never colour alone.
                tone = u.tone if loud and u is not None else None
                cell[TONE_ROLE] = tone or ("holding" if i.late else tone_of(i.state))
                cell[URGENCY_ROLE] = u.level if u is not None else None
            if i.state in ("done", "skipped"):
                cell[FOREGROUND] = QColor(theme.MUTED)
            out.append(cell)
        return out


class TodayView(QWidget):
    """Left: today's manual tasks; right: the prep sheets of the chosen protocol day.

    ``want_prep(run_id, day)`` asks the window to load the prep sheets on its worker.
    """

    want_prep = pyqtSignal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.snapshot: Snapshot | None = None
        self.run: RunRow | None = None
        self.prep_page = ""
        self._loaded: tuple[int, int] | None = None
        self._wanted = False
        self._rows_stale: list[TodayItem] | None = None
        self._stale_now: datetime | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        top = QHBoxLayout()
        self.title = cut_by_window(label("Today", heading=True))
        top.addWidget(self.title, 1)  # it takes the room left; the window cuts it
        top.addWidget(label("Prep sheets for protocol day", muted=True))
        self.day = QSpinBox()
        self.day.setRange(-30, 400)
        self.day.setObjectName("prepDay")
        top.addWidget(self.day)
        self.print_button = button("Print…")
        self.print_button.setToolTip("Print the manual tasks and the prep sheets")
        self.save_button = button("Save HTML…")
        top.addWidget(self.print_button)
        top.addWidget(self.save_button)
        lay.addLayout(top)
        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(label("Manual tasks today", sub=True))
        self.model = TodayModel()
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setItemDelegateForColumn(4, BadgeDelegate(self.table))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        # One line a row (the full text is the tooltip): uniform rows need no measuring,
        # so hundreds of tasks stay quick to show.
        self.table.setWordWrap(False)
        hh, vh = headers(self.table)
        vh.setVisible(False)
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(30)
        # Sizes are measured once per change of the rows (see set_snapshot), never on every
        # layout pass (ResizeToContents would measure every cell again and again).
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in ((0, 96), (1, 170), (2, 60), (4, 110)):
            hh.resizeSection(col, width)
        hh.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        fit_headers(self.table)
        ll.addWidget(self.table, 1)
        self.empty = label("No manual tasks today.", muted=True)
        ll.addWidget(self.empty)
        split.addWidget(left)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.prep_title = label("Prep sheets", sub=True)
        rl.addWidget(self.prep_title)
        self.prep = QTextBrowser()
        self.prep.setObjectName("prep")
        self.prep.setOpenExternalLinks(False)

        rl.addWidget(self.prep, 1)
        split.addWidget(right)
        split.setSizes([560, 640])
        lay.addWidget(split, 1)
        self.day.valueChanged.connect(self._day_changed)
        self.print_button.clicked.connect(self.print_)
        self.save_button.clicked.connect(self.save_html)

    def set_snapshot(self, snap: Snapshot, run: RunRow | None) -> None:
        self.snapshot = snap
        run_changed = (self.run.id if self.run else None) != (run.id if run else None)
        self.run = run
        items = [i for i in snap.today if run is None or i.run_id == run.id]
        self.table.setColumnHidden(1, run is not None)  # one run: its name is in the title
        minute = snap.now.replace(second=0, microsecond=0)
        moved = minute != self.model.now  # "ends in 12 min" moves with the clock
        if (items != self.model.rows or moved) and (self.isVisible() or not self.model.rows):
            self.model.now = minute
            self.model.set_rows(items)
            self._fit_state()
        elif items != self.model.rows or moved:
            self._rows_stale = items  # filled in when the tab is shown
            self._stale_now = minute
        self.empty.setVisible(not items)
        z = snap.now.astimezone(tzinfo(run.timezone if run else "UTC"))
        self.title.setText(
            f"Today · {z:%a %d %b %Y} {zone_abbr(z)}"
            + (f" · {run.day_text}" if run else "")  # the run's name is in the strip above
        )
        self.title.setToolTip(self.title.text())
        if run is not None and run_changed:
            self.day.blockSignals(True)
            self.day.setValue(max(0, run.day))
            self.day.blockSignals(False)
            self._request()
        elif run is None:
            self.prep.setHtml("<p>Choose a run to see its prep sheets.</p>")

    def _fit_state(self) -> None:
        """Make the State column as wide as its longest badge ("⚠ LATE by 15 d 4 h"):
        measured from the texts (cheap), not by laying out every cell."""
        font = QFont(self.table.font())
        font.setBold(True)
        fm = QFontMetrics(font)
        texts = {
            str(self.model.data(self.model.index(r, 4)) or "") for r in range(self.model.rowCount())
        }
        widest = max((fm.horizontalAdvance(t) for t in texts), default=0)
        hh = self.table.horizontalHeader()
        if hh is not None:
            hh.resizeSection(4, max(110, widest + 36))

    def _day_changed(self) -> None:
        self._request()

    def _request(self) -> None:
        if self.run is None:
            return
        key = (self.run.id, self.day.value())
        if key == self._loaded:
            return
        if not self.isVisible():
            self._wanted = True  # loaded when the tab is shown: resolving takes a moment
            return
        self._wanted = False
        self.prep_title.setText(f"Prep sheets · day {self.day.value()} · loading…")
        self.want_prep.emit(*key)

    def showEvent(self, e: Any) -> None:  # noqa: N802 - Qt's name
        super().showEvent(e)
        if self._rows_stale is not None:
            self.model.now = self._stale_now
            self.model.set_rows(self._rows_stale)
            self._rows_stale = None
            self._fit_state()
        if self._wanted:
            self._request()

    def set_prep(self, run_id: int, day: int, page: str) -> None:
        self._loaded = (run_id, day)
        self.prep_page = page
        self.prep_title.setText(f"Prep sheets · day {day}")
        # Smaller headings than on paper: the panel is a preview of the printed page.
        # (Qt sizes <h1> as "xx-large" whatever the style says, so the title becomes a <p>.)
        preview = page.replace("<h1>", "<p class='title'>").replace("</h1>", "</p>")
        self.prep.setHtml(preview.replace("</head>", PREVIEW_CSS + "</head>", 1))

    def prep_failed(self, message: str) -> None:
        self.prep_title.setText("Prep sheets")
        self.prep.setHtml(f"<p style='color:{theme.VERMILLION}'><b>✕ {message}</b></p>")

    def document_html(self) -> str:
        """Manual tasks then prep sheets, one printable page."""
        snap = self.snapshot
        tasks = today_html(self.model.rows, self.run, snap.now) if snap else ""
        body = tasks.split("<body>", 1)[-1].rsplit("</body>", 1)[0]
        prep = (
            self.prep_page.split("<body>", 1)[-1].rsplit("</body>", 1)[0] if self.prep_page else ""
        )
        head = tasks.split("<body>", 1)[0] if tasks else "<html><body>"
        return f"{head}<body>{body}<hr>{prep}</body></html>"

    def save_html(self, path: str | None = None) -> Path | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save the day's sheets", "today.html", "HTML (*.html)"
            )
            if not path:
                return None
        out = Path(path)
        tmp = out.with_name(out.name + ".part")
        tmp.write_text(self.document_html(), encoding="utf-8")
        tmp.replace(out)  # whole or not at all
        return out

    def print_(self, printer_factory: Callable[[], Any] | None = None) -> None:
        """Print through the system's print dialog (QPrinter)."""
        from PyQt6.QtPrintSupport import QPrintDialog, QPrinter

        printer = (
            printer_factory() if printer_factory else QPrinter(QPrinter.PrinterMode.HighResolution)
        )
        if printer_factory is None:
            dlg = QPrintDialog(printer, self)
            if dlg.exec() != QPrintDialog.DialogCode.Accepted:
                return
        doc = QTextDocument()
        doc.setHtml(self.document_html())
        doc.print(printer)
