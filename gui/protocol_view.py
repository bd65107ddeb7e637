"""Protocol: the run's locked protocol version: the plan day by day, the diagram, the
effective concentrations in the well, and the source text as registered."""

from __future__ import annotations

from typing import Any

from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QColor, QFont, QImage, QPixmap
from PyQt6.QtWidgets import (
    QCheckBox,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QScrollArea,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from labctl.gui import theme
from labctl.gui.models.common import local
from labctl.gui.models.protocol import PlanRow, ProtocolInfo
from labctl.gui.widgets import (
    BACKGROUND,
    DISPLAY,
    FONT,
    TOOLTIP,
    RowsModel,
    bold_font,
    fit_headers,
    headers,
    label,
)

COLUMNS = [
    "Day",
    "Date",
    "Time",
    "Window",
    "Kind",
    "Task",
    "Medium",
    "Factors (fresh)",
    "In the well",
    "Volume",
]
#: What the short column headers mean (their tooltips).
HEADER_TIPS = {
    3: "When the task may start: its window, in the run's zone",
    7: "Factors in the fresh medium",
    8: "What the cells receive: the factors in the well after the change (effective)",
    9: "The volume in each well after the task",
}


class PlanModel(RowsModel):
    """The plan's tasks (Qt items made from the plain rows); today's day highlighted."""

    COLUMNS = tuple(COLUMNS)

    def __init__(self) -> None:
        super().__init__()
        self.today: int | None = None

    def set_rows(self, rows: tuple[PlanRow, ...], today: int | None = None) -> None:  # type: ignore[override]
        self.today = today
        super().set_rows(rows)

    def cells(self, r: PlanRow) -> list[dict[int, object]]:  # type: ignore[override]
        if r.volume_ul is None:
            vol = ""
        elif r.volume_ul >= 1000:
            vol = f"{r.volume_ul / 1000:g} mL"
        else:
            vol = f"{r.volume_ul:g} µL"
        texts = [
            str(r.day),
            f"{r.date:%a %d %b}",
            r.time,
            r.window,
            r.kind,
            r.title,
            r.medium,
            r.factors,
            r.well,
            vol,
        ]
        today = self.today is not None and r.day == self.today
        tip = f"{r.title}\nIn the well after: {r.well}\nprotocol line {r.line}"
        out: list[dict[int, object]] = []
        for text in texts:
            cell: dict[int, object] = {DISPLAY: text, TOOLTIP: tip}
            if today:
                cell[BACKGROUND] = QColor("#FFF4D6")
                cell[FONT] = bold_font()
            out.append(cell)
        return out


class ProtocolView(QWidget):
    """Header with the locked version; tabs: plan table, diagram, source text."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.info: ProtocolInfo | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        self.title = label("Protocol", heading=True, wrap=True)
        lay.addWidget(self.title)
        self.meta = label("Choose a run to see its protocol.", muted=True, wrap=True)
        lay.addWidget(self.meta)
        self.tabs = QTabWidget()
        self.model = PlanModel()
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(True)
        hh, vh = headers(self.table)
        vh.setVisible(False)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((48, 96, 56, 104, 70, 220, 210, 0, 0, 70)):
            if width:
                hh.resizeSection(col, width)
        for col in (7, 8):
            hh.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)
        fit_headers(self.table, HEADER_TIPS)
        self.tabs.addTab(self.table, "Plan, day by day")
        diag = QWidget()
        dl = QVBoxLayout(diag)
        self.fit = QCheckBox("Fit to width")
        self.fit.setChecked(True)
        self.fit.toggled.connect(self._show_diagram)
        dl.addWidget(self.fit)
        self.image = QLabel("The diagram is drawn after the run is chosen…")
        self.image.setObjectName("diagram")
        self.image.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.image_scroll = QScrollArea()
        self.image_scroll.setWidget(self.image)
        self.image_scroll.setWidgetResizable(True)
        self.image_scroll.setStyleSheet(f"background: {theme.PAPER};")
        dl.addWidget(self.image_scroll, 1)
        self.tabs.addTab(diag, "Diagram")
        self.source = QPlainTextEdit()
        self.source.setReadOnly(True)
        mono = QFont("DejaVu Sans Mono")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.source.setFont(mono)
        self.tabs.addTab(self.source, "Source (locked)")
        self.tabs.currentChanged.connect(lambda _i: self._show_diagram())
        lay.addWidget(self.tabs, 1)
        self.pixmap: QPixmap | None = None
        self.full: QImage | None = None
        self._scaled: QPixmap | None = None

    def loading(self, run_name: str) -> None:
        self.title.setText(f"Protocol · {run_name}")
        self.meta.setText("Loading the run's locked protocol…")

    def diagram_width(self) -> int:
        """The width the diagram is scaled to when it fits the view."""
        viewport = self.image_scroll.viewport()
        return max(400, (viewport.width() if viewport is not None else 0) - 8)

    def set_info(
        self,
        info: ProtocolInfo,
        today: int | None,
        images: tuple[QImage | None, QImage | None] | None = None,
    ) -> None:
        """Show a run's protocol. ``images`` are the diagram decoded (and scaled to
        :meth:`diagram_width`) by :func:`prepare_diagram` on the worker thread."""
        self.info = info
        params = ", ".join(f"{k} = {v}" for k, v in info.parameters) or "defaults"
        self.title.setText(f"{info.title}")
        self.meta.setText(
            f"<b>{info.protocol_id} v{info.version}</b> as locked by run {info.run_id} "
            f"(sha256 {info.sha256[:16]}…) · parameters: {params} · {info.plates} plate(s) · "
            f"day 0 = {local(info.start, info.timezone):%a %d %b %Y %H:%M} {info.timezone}"
        )
        self.model.set_rows(info.rows, today)
        self.table.resizeRowsToContents()  # once per protocol, not on every layout pass
        if today is not None:
            for i, r in enumerate(info.rows):
                if r.day >= today:
                    row = max(0, i - 2)
                    QTimer.singleShot(
                        0,
                        lambda row=row: self.table.scrollTo(
                            self.model.index(row, 0), QTableView.ScrollHint.PositionAtTop
                        ),
                    )
                    break
        self.source.setPlainText(info.source_text)
        full, scaled = images if images is not None else prepare_diagram(info.diagram_png, None)
        self.full = full
        self.pixmap = QPixmap.fromImage(full) if full is not None else None
        self._scaled = QPixmap.fromImage(scaled) if scaled is not None else None
        self._show_diagram()

    def failed(self, message: str) -> None:
        self.meta.setText(f"<span style='color:{theme.VERMILLION}'><b>✕ {message}</b></span>")

    def _show_diagram(self) -> None:
        if self.pixmap is None:
            msg = (
                self.info.diagram_error if self.info and self.info.diagram_error else "No diagram."
            )
            self.image.setText(msg)
            return
        if self.fit.isChecked():
            w = self.diagram_width()
            if self._scaled is None or self._scaled.width() != w:
                self._scaled = self.pixmap.scaledToWidth(
                    w, Qt.TransformationMode.SmoothTransformation
                )
            self.image.setPixmap(self._scaled)
        else:
            self.image.setPixmap(self.pixmap)

    def resizeEvent(self, e: Any) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(e)
        if self.fit.isChecked() and self.pixmap is not None:
            self._show_diagram()


def prepare_diagram(png: bytes | None, width: int | None) -> tuple[QImage | None, QImage | None]:
    """Decode the diagram PNG and scale it to ``width``: (full image, scaled image).

    Uses QImage only, so the worker thread can do it; decoding and smooth scaling a large
    figure would otherwise hold the GUI thread for tens of milliseconds.
    """
    if not png:
        return None, None
    full = QImage.fromData(png, "PNG")
    if full.isNull():
        return None, None
    scaled = (
        full.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation) if width else None
    )
    return full, scaled
