"""Audit: the run's events, filterable by entity, actor and text, paged as the table scrolls.

The table model never holds the whole trail: it asks the worker for pages of 250 events
after the last seq it has (``Store.events(after_seq=...)``) when the view scrolls near its
end (Qt's canFetchMore/fetchMore), so 50,000 events stay responsive. New events appear when
the store's newest event moves past the last one shown.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QModelIndex, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor, QStandardItem
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from labctl.gui import theme
from labctl.gui.models.audit import EventFilter, EventPage, EventRow, event_page
from labctl.gui.models.common import local, zone_abbr
from labctl.gui.widgets import (
    ALIGN,
    DISPLAY,
    FONT,
    FOREGROUND,
    TOOLTIP,
    RowsModel,
    bold_font,
    button,
    cut_by_window,
    fit_headers,
    headers,
    label,
)

COLUMNS = ["Seq", "Time", "Entity", "Id", "Action", "Change", "Actor", "Reason", "Data"]
ENTITIES = [
    "run",
    "plate",
    "task",
    "job",
    "prompt",
    "command",
    "alarm",
    "page",  # pages to the person on call: sent and failed
    "qc",
    "lot",
    "device",
    "engine",
]
Call = Callable[..., int]  # StoreBridge.call


class EventTableModel(RowsModel):
    """Audit events fetched page by page through ``call`` (the worker bridge)."""

    PAGE = 250  # rows a page: enough to fill two screens, small enough to add in one go
    COLUMNS = tuple(COLUMNS)

    def __init__(self, call: Call) -> None:
        super().__init__()
        self.call = call
        self.filter = EventFilter()
        self.tz = "UTC"
        self.last_seq: int | None = None
        self.more = False
        self.loading = False
        self.newest_first = False
        self.error: str | None = None
        self._generation = 0
        self.page_loaded: Callable[[], None] | None = None

    def set_filter(self, flt: EventFilter, tz: str = "UTC", *, newest_first: bool = False) -> None:
        """Start over with ``flt``; the first page is requested at once."""
        self._generation += 1
        self.set_rows([])
        self.filter = flt
        self.tz = tz
        self.newest_first = newest_first
        self.last_seq = None
        self.more = True
        self.loading = False
        self.error = None
        self.fetchMore(QModelIndex())

    def notify_head(self, head_seq: int | None) -> None:
        """The store's newest event: when past what is shown, there is more to fetch
        (newest first: the new events are put on top)."""
        if head_seq is None or self.loading:
            return
        if self.newest_first:
            top = self.rows[0].seq if self.rows else None
            if top is None or head_seq > top:
                self._fetch_newer(top)
            return
        if not self.more and (self.last_seq is None or head_seq > self.last_seq):
            self.more = True

    def _fetch_newer(self, top: int | None) -> None:
        self.loading = True
        gen, flt = self._generation, self.filter
        self.call(
            lambda store: event_page(store, flt, after_seq=top, limit=self.PAGE),
            lambda page: self._newer(gen, page),
            lambda msg: self._failed(gen, msg),
        )

    def _newer(self, gen: int, page: EventPage) -> None:
        if gen != self._generation:
            return
        self.loading = False
        if page.more:  # more than a page arrived: start over from the newest
            self.set_filter(self.filter, self.tz, newest_first=True)
            return
        if page.rows:
            self.prepend_rows(list(reversed(page.rows)))
            if self.last_seq is None:
                self.last_seq = self.rows[-1].seq
        if self.page_loaded is not None:
            self.page_loaded()

    def canFetchMore(self, parent: QModelIndex) -> bool:  # noqa: N802 - Qt's name
        return not parent.isValid() and self.more and not self.loading

    def fetchMore(self, parent: QModelIndex) -> None:  # noqa: N802 - Qt's name
        if parent.isValid() or self.loading or not self.more:
            return
        self.loading = True
        gen, flt, cursor, newest = self._generation, self.filter, self.last_seq, self.newest_first

        def read(store: Any) -> tuple[EventPage, list[list[QStandardItem]]]:
            page = event_page(
                store,
                flt,
                after_seq=None if newest else cursor,
                before_seq=cursor if newest else None,
                newest_first=newest,
                limit=self.PAGE,
            )
            # A page's items are made here, on the worker: making 250 rows' items took the
            # GUI thread 60-70 ms (bench/console.py), now it only appends them.
            return page, self.prepare(page.rows)

        self.call(
            read,
            lambda got: self._arrived(gen, got[0], got[1]),
            lambda msg: self._failed(gen, msg),
        )

    def _arrived(
        self, gen: int, page: EventPage, items: list[list[QStandardItem]] | None = None
    ) -> None:
        if gen != self._generation:
            return  # a page of a filter since replaced
        self.loading = False
        if page.rows:
            self.append_rows(page.rows, items)
        self.last_seq = page.last_seq
        self.more = page.more
        if self.page_loaded is not None:
            self.page_loaded()

    def _failed(self, gen: int, message: str) -> None:
        if gen != self._generation:
            return
        self.loading = False
        self.more = False
        self.error = message
        if self.page_loaded is not None:
            self.page_loaded()

    def cells(self, e: EventRow) -> list[dict[int, object]]:  # type: ignore[override]
        d = local(e.time, self.tz)
        texts = [
            str(e.seq),
            f"{d:%Y-%m-%d %H:%M:%S} {zone_abbr(d)}" if d else "",
            e.entity,
            "" if e.entity_id is None else str(e.entity_id),
            e.action,
            e.change,
            e.actor,
            e.reason,
            e.data,
        ]
        alarm = e.action == "deviation" or (e.entity == "alarm" and e.action == "created")
        out: list[dict[int, object]] = []
        for c, text in enumerate(texts):
            cell: dict[int, object] = {DISPLAY: text}
            if c in (7, 8) and text:
                cell[TOOLTIP] = text
            if c == 7 and e.recorded:
                cell[TOOLTIP] = f"{text}\n\nRecorded: {e.recorded}"
            if alarm:
                cell[FOREGROUND] = QColor(theme.VERMILLION)
            elif c in (0, 1):
                cell[FOREGROUND] = QColor(theme.MUTED)
            if e.action == "deviation":
                cell[FONT] = bold_font()
            if c in (0, 3):
                cell[ALIGN] = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            out.append(cell)
        return out


class AuditView(QWidget):
    """Filter bar, the event table, chain verification and the batch record export."""

    verify = pyqtSignal()
    export = pyqtSignal(str)

    def __init__(self, call: Call, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_id: int | None = None
        self.tz = "UTC"
        self._stale = False
        self._head: int | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        top = QHBoxLayout()
        self.title = cut_by_window(label("Audit trail", heading=True))
        top.addWidget(self.title, 1)  # it takes the room left; the window cuts it
        self.verify_button = button("Verify chain")
        self.verify_button.setToolTip("Check the hash chain of the whole audit trail")
        self.export_button = button("Export batch record…", "primary")
        self.export_button.setToolTip("Save the run's batch record as HTML (Ctrl+E)")
        top.addWidget(self.verify_button)
        top.addWidget(self.export_button)
        lay.addLayout(top)
        bar = QHBoxLayout()
        self.this_run = QCheckBox("This run only")
        self.this_run.setChecked(True)
        self.newest = QCheckBox("Newest first")
        self.newest.setChecked(True)
        self.entity = QComboBox()
        self.entity.addItem("Any entity", None)
        for e in ENTITIES:
            self.entity.addItem(e, e)
        self.actor = QLineEdit()
        self.actor.setPlaceholderText("Actor (exact)")
        self.actor.setClearButtonEnabled(True)
        self.text = QLineEdit()
        self.text.setPlaceholderText("Search action, states, reason, data…")
        self.text.setClearButtonEnabled(True)
        bar.addWidget(self.this_run)
        bar.addWidget(self.newest)
        bar.addWidget(QLabel("Entity"))
        bar.addWidget(self.entity)
        bar.addWidget(self.actor)
        bar.addWidget(self.text, 1)
        lay.addLayout(bar)
        self.model = EventTableModel(call)
        self.model.page_loaded = self._loaded
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        hh, vh = headers(self.table)
        vh.setVisible(False)
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(26)
        widths = [64, 190, 84, 50, 90, 170, 100, 260]
        for i, w in enumerate(widths):
            hh.resizeSection(i, w)
        hh.setStretchLastSection(True)
        fit_headers(self.table)
        lay.addWidget(self.table, 1)
        self.status = label("", muted=True)
        lay.addWidget(self.status)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(350)
        self._debounce.timeout.connect(self.apply_filter)
        for sig in (self.actor.textChanged, self.text.textChanged):
            sig.connect(self._debounce.start)
        self.entity.currentIndexChanged.connect(self.apply_filter)
        self.this_run.toggled.connect(self.apply_filter)
        self.newest.toggled.connect(self.apply_filter)
        self.verify_button.clicked.connect(self.verify)
        self.export_button.clicked.connect(self.choose_export)

    def current_filter(self) -> EventFilter:
        return EventFilter(
            self.run_id if self.this_run.isChecked() else None,
            self.entity.currentData(),
            self.actor.text(),
            self.text.text(),
        )

    def set_run(self, run_id: int | None, tz: str, name: str = "") -> None:
        self.run_id = run_id
        self.tz = tz
        self.title.setText(f"Audit trail · {name}" if name else "Audit trail")
        self.export_button.setEnabled(run_id is not None)
        self.apply_filter()

    def apply_filter(self) -> None:
        """Load the first page for the current filter (once shown: a hidden tab waits)."""
        if not self.isVisible():
            self._stale = True
            return
        self._stale = False
        self.status.setText("Loading…")
        self.model.set_filter(self.current_filter(), self.tz, newest_first=self.newest.isChecked())

    def showEvent(self, e: object) -> None:  # noqa: N802 - Qt's name
        super().showEvent(e)  # type: ignore[arg-type]
        if self._stale:
            self.apply_filter()
        elif self._head is not None:
            self.notify_head(self._head)

    def notify_head(self, head_seq: int | None) -> None:
        self._head = head_seq
        if not self.isVisible() or self._stale:
            return
        self.model.notify_head(head_seq)
        sb = self.table.verticalScrollBar()
        if (
            not self.model.newest_first
            and self.model.more
            and not self.model.loading
            and sb is not None
            and sb.value() >= sb.maximum() - 2
        ):
            self.model.fetchMore(QModelIndex())

    def _loaded(self) -> None:
        m = self.model
        if m.error:
            self.status.setText(f"✕ {m.error}")
            return
        more = " · scroll down for more" if m.more else " · all loaded"
        self.status.setText(f"{len(m.rows):,} events shown{more}")

    def show_verified(self, ok: bool, message: str) -> None:
        colour = theme.BLUISH_GREEN if ok else theme.VERMILLION
        self.status.setText(
            f"<span style='color:{colour}'><b>{'✓' if ok else '✕'} {message}</b></span>"
        )

    def choose_export(self) -> None:
        """Ask where to save the run's batch record, then emit ``export`` with the path."""
        if self.run_id is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the batch record", f"batch-record-run-{self.run_id}.html", "HTML (*.html)"
        )
        if path:
            self.export.emit(str(Path(path)))
