"""Registering a new run from a protocol file: validated first, errors shown at their lines.

The operator picks the file, sees every diagnostic next to the source (click one to jump
to its line), chooses plates, the day-0 start (with ranked suggestions from the scheduler)
and parameters, and registers the run as the signed-in user; its ``start`` command is
queued for the engine. On a production database the protocol text must be released as it
is (the refusal is ``labctl run``'s, :func:`labctl.cli.user_cmds.require_released`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from PyQt6.QtCore import QDate, QDateTime, QRect, QSize, Qt, QTime, pyqtSignal
from PyQt6.QtGui import (
    QColor,
    QFont,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QTextBlock,
    QTextCursor,
    QTextFormat,
)
from PyQt6.QtWidgets import (
    QComboBox,
    QDateTimeEdit,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from labctl.clock import Clock
from labctl.gui import theme
from labctl.gui.auth import ConsoleUser
from labctl.gui.models.common import ConsoleInputError, local, zone_abbr
from labctl.gui.models.new_run import (
    NewRunRequest,
    ProtocolCheck,
    StartSuggestion,
    check_protocol_text,
    register_new_run,
    suggest_start_dates,
)
from labctl.gui.widgets import button, headers, label
from labctl.gui.workcell_chooser import WorkcellChooser

Call = Callable[..., int]
COMMON_ZONES = [
    "Europe/Stockholm",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "UTC",
]


class _Gutter(QWidget):
    def __init__(self, view: CodeView) -> None:
        super().__init__(view)
        self.view = view

    def sizeHint(self) -> QSize:
        return QSize(self.view.gutter_width(), 0)

    def paintEvent(self, event: QPaintEvent | None) -> None:  # noqa: N802 - Qt's name
        self.view.paint_gutter(event)


class CodeView(QPlainTextEdit):
    """Read-only source with line numbers; lines with problems get ✕ or ⚠ in the margin."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.marks: dict[int, str] = {}  # 1-based line -> "error" / "warning"
        self.gutter = _Gutter(self)
        self.blockCountChanged.connect(
            lambda _n: self.setViewportMargins(self.gutter_width(), 0, 0, 0)
        )
        self.updateRequest.connect(self._scrolled)
        self.setViewportMargins(self.gutter_width(), 0, 0, 0)

    def line_block(self, line: int) -> QTextBlock:
        """The block of 1-based ``line`` (the first line for 0 or less)."""
        doc = self.document()
        return doc.findBlockByLineNumber(max(0, line - 1)) if doc is not None else QTextBlock()

    def gutter_width(self) -> int:
        digits = len(str(max(1, self.blockCount())))
        return 28 + self.fontMetrics().horizontalAdvance("9") * digits

    def _scrolled(self, rect: QRect, dy: int) -> None:
        if dy:
            self.gutter.scroll(0, dy)
        else:
            self.gutter.update(0, rect.y(), self.gutter.width(), rect.height())

    def resizeEvent(self, e: QResizeEvent | None) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(e)
        cr = self.contentsRect()
        self.gutter.setGeometry(QRect(cr.left(), cr.top(), self.gutter_width(), cr.height()))

    def paint_gutter(self, event: QPaintEvent | None) -> None:
        if event is None:
            return
        p = QPainter(self.gutter)
        p.fillRect(event.rect(), QColor("#F1F3F6"))
        block = self.firstVisibleBlock()
        n = block.blockNumber()
        top = round(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        h = self.fontMetrics().height()
        while block.isValid() and top <= event.rect().bottom():
            bottom = top + round(self.blockBoundingRect(block).height())
            if block.isVisible() and bottom >= event.rect().top():
                mark = self.marks.get(n + 1)
                if mark:
                    p.setPen(QColor(theme.VERMILLION if mark == "error" else "#8A5A00"))
                    p.drawText(
                        2, top, 16, h, Qt.AlignmentFlag.AlignLeft, "✕" if mark == "error" else "⚠"
                    )
                p.setPen(QColor(theme.INK if mark else "#8A929E"))
                p.drawText(
                    0, top, self.gutter.width() - 6, h, Qt.AlignmentFlag.AlignRight, str(n + 1)
                )
            block = block.next()
            top = bottom
            n += 1
        p.end()


def _zoned(start: datetime, tz: str) -> str:
    """A start (naive, local in ``tz``) with its weekday and zone: ``Mon 14 Dec 2026 09:00
    CET`` (the zone's name as typed when it is not one)."""
    try:
        when = start.replace(tzinfo=ZoneInfo(tz)) if start.tzinfo is None else start
    except (ZoneInfoNotFoundError, ValueError):
        return f"{start:%a %d %b %Y %H:%M} {tz}"
    return f"{when:%a %d %b %Y %H:%M} {zone_abbr(when)}"


def _read_and_check(path: str) -> Callable[[Any], ProtocolCheck]:
    def fn(_store: Any) -> ProtocolCheck:
        from labctl.protocol.source import read_text

        return check_protocol_text(read_text(path), path)

    return fn


class NewRunDialog(QDialog):
    """``registered(run_id)`` once the run is stored and its start command queued."""

    registered = pyqtSignal(int)

    def __init__(
        self,
        call: Call,
        clock: Clock,
        *,
        who: Callable[[], ConsoleUser | None],
        wall: Clock,
        timezone: str = "UTC",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.call = call
        self.clock = clock
        self.who = who
        self.wall = wall
        self.check: ProtocolCheck | None = None
        self.setWindowTitle("New run")
        self.resize(1180, 760)
        lay = QVBoxLayout(self)
        lay.addWidget(label("New run", heading=True))
        row = QHBoxLayout()
        self.path = QLineEdit()
        self.path.setObjectName("path")
        self.path.setPlaceholderText("Protocol file (.yaml)")
        self.browse = button("Browse…")
        self.validate_button = button("Validate")
        row.addWidget(self.path, 1)
        row.addWidget(self.browse)
        row.addWidget(self.validate_button)
        lay.addLayout(row)
        self.verdict = label(
            "Choose a protocol file; it is validated before anything is registered.", wrap=True
        )
        lay.addWidget(self.verdict)
        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.source = CodeView()
        self.source.setObjectName("source")
        mono = QFont("DejaVu Sans Mono")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        mono.setPointSizeF(9.5)
        self.source.setFont(mono)
        self.source.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        ll.addWidget(self.source, 3)
        ll.addWidget(label("Problems (click to see the line)", sub=True))
        self.problems = QListWidget()
        self.problems.setObjectName("problems")
        self.problems.setWordWrap(True)
        ll.addWidget(self.problems, 1)
        split.addWidget(left)
        right = QWidget()
        form = QFormLayout(right)
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. Kriks DA batch 26-12-A")
        self.plates = QSpinBox()
        self.plates.setRange(1, 24)
        self.plates.setValue(6)
        self.start = QDateTimeEdit()
        # Digits only: a weekday section ("ddd") swallows typed digits and garbles the date.
        # The weekday and zone are said beside it (start_note).
        self.start.setDisplayFormat("yyyy-MM-dd HH:mm")
        self.start.setCalendarPopup(True)
        self.start.setObjectName("start")
        self.start_note = label("", muted=True)
        self.start_note.setObjectName("startNote")
        z = local(clock.now(), timezone)
        assert z is not None
        tomorrow = z.date() + timedelta(days=1)
        self.start.setDateTime(
            QDateTime(QDate(tomorrow.year, tomorrow.month, tomorrow.day), QTime(9, 0))
        )
        self.tz = QComboBox()
        self.tz.setEditable(True)
        self.tz.addItems(([timezone] if timezone not in COMMON_ZONES else []) + COMMON_ZONES)
        self.tz.setCurrentText(timezone)
        self.workcell = WorkcellChooser(call)
        start_row = QHBoxLayout()
        start_row.addWidget(self.start)
        start_row.addWidget(self.start_note, 1)
        self.params = QTableWidget(0, 3)
        self.params.setHorizontalHeaderLabels(["Parameter", "Value", "Allowed"])
        hh, vh = headers(self.params)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        vh.setVisible(False)
        self.suggest_button = button("Suggest start dates")
        self.suggestions = QListWidget()
        self.suggestions.setObjectName("suggestions")
        self.suggestions.setWordWrap(True)
        self.hours_note = label(
            "Ranked on the simulated workcell for operator hours Mon-Fri 08:00-18:00: a start "
            "whose manual steps fall outside them, or whose feeds run late, ranks lower.",
            muted=True,
            wrap=True,
        )
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("Batch / note for the audit trail")
        form.addRow("Name", self.name)
        form.addRow("Plates", self.plates)
        form.addRow("Workcell", self.workcell)
        form.addRow("Day 0 starts", start_row)
        form.addRow("Time zone", self.tz)
        form.addRow("Parameters", self.params)
        form.addRow(self.suggest_button)
        form.addRow(self.hours_note)
        form.addRow(self.suggestions)
        form.addRow("Note", self.reason)
        split.addWidget(right)
        split.setSizes([660, 500])
        lay.addWidget(split, 1)
        self.error = label("", wrap=True)
        self.error.setStyleSheet(f"color: {theme.VERMILLION}; font-weight: bold;")
        lay.addWidget(self.error)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.cancel = button("Cancel")
        self.register_button = button("Register and start", "primary")
        self.register_button.setObjectName("register")
        self.register_button.setEnabled(False)
        buttons.addWidget(self.cancel)
        buttons.addWidget(self.register_button)
        lay.addLayout(buttons)
        self.browse.clicked.connect(self._browse)
        self.workcell.changed.connect(self._workcell_changed)
        self.start.dateTimeChanged.connect(self._note_start)
        self.tz.currentTextChanged.connect(self._note_start)
        self._note_start()
        self.validate_button.clicked.connect(self.validate)
        self.path.returnPressed.connect(self.validate)
        self.problems.itemClicked.connect(self._jump)
        self.suggest_button.clicked.connect(self.suggest)
        self.suggestions.itemClicked.connect(self._use_suggestion)
        self.cancel.clicked.connect(self.reject)
        self.register_button.clicked.connect(self.register)
        # Enter in a field never cancels (issue 16); in the file name it validates.
        for b in self.findChildren(QPushButton):
            b.setAutoDefault(False)

    # --- the workcell and the start -------------------------------------------------------

    def _workcell_changed(self) -> None:
        wc = self.workcell.chosen()
        if wc is not None and wc.ok:
            self.tz.setCurrentText(wc.timezone)  # the run's days follow the workcell's clock
        self._enable_register()

    def _enable_register(self) -> None:
        self.register_button.setEnabled(
            self.check is not None and self.check.ok and self.workcell.ok()
        )

    def _note_start(self) -> None:
        """Say the typed start in words, with its weekday and zone: "Mon 14 Dec 2026 09:00
        CET (Europe/Stockholm)", or why the zone is not one."""
        tz = self.tz.currentText().strip() or "UTC"
        try:
            z = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            self.start_note.setText(f"✕ unknown time zone '{tz}'")
            return
        when = self.start_time().replace(tzinfo=z)
        self.start_note.setText(f"{when:%a %d %b %Y %H:%M} {zone_abbr(when)} ({tz})")

    # --- validating -------------------------------------------------------------------------

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Protocol file", "", "Protocols (*.yaml *.yml)")
        if path:
            self.path.setText(path)
            self.validate()

    def validate(self) -> None:
        path = self.path.text().strip()
        if not path:
            return
        self.verdict.setText("Validating…")
        self.register_button.setEnabled(False)
        self.call(_read_and_check(path), self.set_check, self._failed)

    def set_check(self, check: ProtocolCheck) -> None:
        self.check = check
        self.source.setPlainText(check.text)
        self.problems.clear()
        self.source.marks = {}
        marks = []
        for d in check.diagnostics:
            sym = "✕" if d.severity == "error" else "⚠"
            item = QListWidgetItem(f"{sym} line {d.line}:{d.column} {d.severity}: {d.message}")
            item.setData(Qt.ItemDataRole.UserRole, d.line)
            item.setForeground(QColor(theme.VERMILLION if d.severity == "error" else "#8A5A00"))
            self.problems.addItem(item)
            if self.source.marks.get(d.line) != "error":
                self.source.marks[d.line] = d.severity
            sel = QTextEdit.ExtraSelection()
            sel.format.setBackground(QColor("#FBE3D6" if d.severity == "error" else "#FFF4D6"))
            sel.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
            sel.cursor = QTextCursor(self.source.line_block(d.line))
            marks.append(sel)
        self.source.setExtraSelections(marks)
        self.source.gutter.update()
        n_err, n_warn = len(check.errors), len(check.diagnostics) - len(check.errors)
        if check.ok:
            self.verdict.setText(
                f"<span style='color:{theme.BLUISH_GREEN}'><b>✓ valid</b></span> · {check.protocol_id} "
                f"v{check.version} · {check.title} · days {check.first_day}-{check.last_day}"
                + (f" · {n_warn} warning(s)" if n_warn else "")
            )
            if not self.name.text():
                self.name.setPlaceholderText(f"{check.protocol_id} (name it after the batch)")
        else:
            self.verdict.setText(
                f"<span style='color:{theme.VERMILLION}'><b>✕ {n_err} error(s)</b></span>"
                + (f", {n_warn} warning(s)" if n_warn else "")
                + ": fix the file before a run can be registered."
            )
            if check.errors:
                self._goto(check.errors[0].line)
        self.params.setRowCount(len(check.parameters))
        for i, p in enumerate(check.parameters):
            name = QTableWidgetItem(p.name)
            name.setFlags(Qt.ItemFlag.ItemIsEnabled)
            name.setToolTip(p.description)
            value = QTableWidgetItem(p.default)
            allowed = QTableWidgetItem(f"{p.min or '…'} to {p.max or '…'}")
            allowed.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.params.setItem(i, 0, name)
            self.params.setItem(i, 1, value)
            self.params.setItem(i, 2, allowed)
        self._enable_register()

    def _failed(self, message: str) -> None:
        self.verdict.setText(f"<span style='color:{theme.VERMILLION}'><b>✕ {message}</b></span>")

    def _jump(self, item: QListWidgetItem) -> None:
        self._goto(int(item.data(Qt.ItemDataRole.UserRole)))

    def _goto(self, line: int) -> None:
        cur = QTextCursor(self.source.line_block(line))
        self.source.setTextCursor(cur)
        self.source.centerCursor()

    # --- choices ----------------------------------------------------------------------------

    def parameters(self) -> dict[str, str]:
        out = {}
        defaults = {p.name: p.default for p in self.check.parameters} if self.check else {}
        for i in range(self.params.rowCount()):
            n, v = self.params.item(i, 0), self.params.item(i, 1)
            if (
                n is not None
                and v is not None
                and v.text().strip()
                and v.text().strip() != defaults.get(n.text())
            ):
                out[n.text()] = v.text().strip()
        return out

    def start_time(self) -> datetime:
        dt = self.start.dateTime()
        d, t = dt.date(), dt.time()
        return datetime(d.year(), d.month(), d.day(), t.hour(), t.minute())

    def request(self) -> NewRunRequest:
        if self.check is None or not self.check.ok:
            raise ConsoleInputError("validate a protocol without errors first")
        if not self.workcell.ok():
            raise ConsoleInputError(f"the workcell file cannot be used: {self.workcell.error()}")
        wc = self.workcell.chosen()
        return NewRunRequest(
            file=self.check.file,
            text=self.check.text,
            name=self.name.text(),
            plates=self.plates.value(),
            start=self.start_time(),
            timezone=self.tz.currentText().strip() or "UTC",
            parameters=self.parameters(),
            reason=self.reason.text(),
            workcell_file=wc.file if wc is not None else "",
            workcell_text=wc.text if wc is not None else "",
        )

    def suggest(self) -> None:
        if self.check is None or not self.check.ok:
            return
        text, file = self.check.text, self.check.file
        plates, params, tz = self.plates.value(), self.parameters(), self.tz.currentText().strip()
        first = self.start_time().date()
        at = self.start_time().time()
        wc = self.workcell.chosen()
        hours = wc.operator_hours if wc is not None and wc.ok else None
        self.suggestions.clear()
        self.suggestions.addItem("Ranking the next 14 start dates…")
        self.call(
            lambda _s: suggest_start_dates(
                text,
                file,
                plates=plates,
                parameters=params,
                timezone=tz,
                first=first,
                at=at,
                operator_hours=hours,
            ),
            self.set_suggestions,
            self._suggest_failed,
        )

    def set_suggestions(self, found: list[StartSuggestion]) -> None:
        self.suggestions.clear()
        for rank, s in enumerate(found[:10], start=1):
            mark = "✓" if s.ok else "⚠"
            at = _zoned(s.start, self.tz.currentText().strip() or "UTC")
            item = QListWidgetItem(f"{rank}. {mark} {at} · {s.note}")
            item.setToolTip(f"penalty {s.penalty:g} (0 = everything fits); click to use this start")
            item.setData(Qt.ItemDataRole.UserRole, s.start)
            item.setForeground(QColor(theme.INK if s.ok else "#8A5A00"))
            self.suggestions.addItem(item)

    def _suggest_failed(self, message: str) -> None:
        self.suggestions.clear()
        self.suggestions.addItem(f"✕ {message}")

    def _use_suggestion(self, item: QListWidgetItem) -> None:
        when = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(when, datetime):
            self.start.setDateTime(
                QDateTime(QDate(when.year, when.month, when.day), QTime(when.hour, when.minute))
            )

    # --- registering ------------------------------------------------------------------------

    def register(self) -> None:
        """Register the run as the signed-in user (checked again on the worker)."""
        try:
            req = self.request()
        except ConsoleInputError as exc:
            self.error.setText(f"✕ {exc.user_message()}")
            return
        who = self.who()
        if who is None:
            self.error.setText("✕ nobody is signed in")
            return
        clock, wall = self.clock, self.wall
        self.error.setText("")
        self.register_button.setEnabled(False)
        self.register_button.setText("Registering…")
        self.call(
            lambda store: register_new_run(store, clock, req, who=who, now=wall.now()),
            self._registered,
            self._register_failed,
        )

    def _registered(self, run_id: int) -> None:
        self.registered.emit(run_id)
        self.accept()

    def _register_failed(self, message: str) -> None:
        self.register_button.setEnabled(True)
        self.register_button.setText("Register and start")
        self.error.setText(f"✕ {message}")
