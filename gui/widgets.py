"""Small building blocks of the console: state badges, the alarm banner, guarded dialogs."""

from __future__ import annotations

from collections.abc import Sequence

from PyQt6.QtCore import QModelIndex, QRectF, QSize, Qt
from PyQt6.QtGui import (
    QCloseEvent,
    QFont,
    QFontMetrics,
    QKeyEvent,
    QPainter,
    QStandardItem,
    QStandardItemModel,
)
from PyQt6.QtWidgets import (
    QDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from labctl.gui import theme

TONE_ROLE = Qt.ItemDataRole.UserRole + 1  # a model's tone name for a state cell
URGENCY_ROLE = Qt.ItemDataRole.UserRole + 2  # late, at-risk, due: how pressing a cell's work is


class Badge(QWidget):
    """A state as a rounded badge: symbol and word on the tone's colour.

    Painted directly (no style sheet): badges change with every snapshot, and a style
    sheet set on a widget makes Qt re-style it, which is slow.
    """

    def __init__(
        self, state: str = "", tone_name: str = "pending", parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._text = ""
        self._tone = theme.tone(tone_name)
        f = QFont(self.font())
        f.setBold(True)
        self.setFont(f)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.set_state(state, tone_name)

    def set_state(self, state: str, tone_name: str) -> None:
        text = theme.badge_text(state, tone_name) if state else ""
        tone = theme.tone(tone_name)
        if text == self._text and tone == self._tone:
            return
        self._text, self._tone = text, tone
        self.setAccessibleName(state)
        self.updateGeometry()
        self.update()

    def set_text(self, text: str, tone_name: str) -> None:
        """Show ``text`` as it is (its own symbol and words) on the tone's colour."""
        tone = theme.tone(tone_name)
        if text == self._text and tone == self._tone:
            return
        self._text, self._tone = text, tone
        self.setAccessibleName(text)
        self.updateGeometry()
        self.update()

    @property
    def tone_name(self) -> str:
        """The tone the badge is drawn in (``fault``, ``holding``, ...; tests read it)."""
        return next((k for k, v in theme.TONES.items() if v == self._tone), "pending")

    def text(self) -> str:
        return self._text

    def sizeHint(self) -> QSize:
        fm = QFontMetrics(self.font())
        return QSize(fm.horizontalAdvance(self._text) + 22 if self._text else 0, fm.height() + 8)

    def paintEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        if not self._text:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(theme.qcolor(self._tone.fill))
        p.drawRoundedRect(r, r.height() / 2, r.height() / 2)
        p.setPen(theme.qcolor(self._tone.text))
        p.drawText(r, Qt.AlignmentFlag.AlignCenter, self._text)
        p.end()


class BadgeDelegate(QStyledItemDelegate):
    """Draws a state cell as a badge; the model gives the text and, in TONE_ROLE, the tone."""

    def paint(
        self, painter: QPainter | None, option: QStyleOptionViewItem, index: QModelIndex
    ) -> None:
        tone_name = index.data(TONE_ROLE)
        if not tone_name or painter is None:
            super().paint(painter, option, index)
            return
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        t = theme.tone(str(tone_name))
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        font = QFont(option.font)
        font.setBold(True)
        fm = QFontMetrics(font)
        w = min(option.rect.width() - 8, fm.horizontalAdvance(text) + 20)
        h = min(option.rect.height() - 6, fm.height() + 6)
        r = QRectF(option.rect.x() + 4, option.rect.center().y() - h / 2 + 1, w, h)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(theme.qcolor(t.fill))
        painter.drawRoundedRect(r, h / 2, h / 2)
        painter.setPen(theme.qcolor(t.text))
        painter.setFont(font)
        painter.drawText(r, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        s = super().sizeHint(option, index)
        return QSize(s.width() + 28, max(s.height(), 28))


class GuardedDialog(QDialog):
    """A dialog that only its own buttons close: Escape and the window's close button do
    nothing, so a decision is never dismissed by accident."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._may_close = False
        self.setWindowFlags(
            Qt.WindowType.Dialog | Qt.WindowType.CustomizeWindowHint | Qt.WindowType.WindowTitleHint
        )

    def keyPressEvent(self, event: QKeyEvent | None) -> None:  # noqa: N802 - Qt's name
        if event is not None and event.key() == Qt.Key.Key_Escape:
            event.accept()  # swallowed on purpose
            return
        super().keyPressEvent(event)

    def reject(self) -> None:
        if self._may_close:
            super().reject()

    def closeEvent(self, event: QCloseEvent | None) -> None:  # noqa: N802 - Qt's name
        if event is None:
            return
        if self._may_close:
            event.accept()
        else:
            event.ignore()

    def close_by_button(self, accepted: bool) -> None:
        """Close on purpose (an explicit button was pressed)."""
        self._may_close = True
        if accepted:
            self.accept()
        else:
            super().reject()


def paper_strip(frame: QFrame, name: str, *, margins: int = 8) -> QHBoxLayout:
    """Make ``frame`` a white strip across the window (named ``name``, a rule below) and
    return its row layout."""
    frame.setObjectName(name)
    frame.setStyleSheet(
        f"#{name} {{ background: {theme.PAPER}; border-bottom: 1px solid {theme.RULE}; }}"
    )
    lay = QHBoxLayout(frame)
    lay.setContentsMargins(14, margins, 10, margins)
    return lay


def label(
    text: str = "",
    *,
    muted: bool = False,
    heading: bool = False,
    sub: bool = False,
    wrap: bool = False,
) -> QLabel:
    w = QLabel(text)
    if muted:
        w.setProperty("muted", True)
    if heading:
        w.setProperty("heading", True)
    if sub:
        w.setProperty("subheading", True)
    w.setWordWrap(wrap)
    w.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return w


def cut_by_window(w: QLabel) -> QLabel:
    """Let the window cut ``w`` rather than grow for it (a title with a run's name, a long
    detail): the window must fit a 1600 x 900 screen whatever the names are."""
    w.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return w


def button(text: str, role: str = "") -> QPushButton:
    b = QPushButton(text)
    if role:
        b.setProperty("role", role)
    return b


def headers(table: QTableView) -> tuple[QHeaderView, QHeaderView]:
    """The (horizontal, vertical) headers of ``table``; a table view always has both."""
    hh, vh = table.horizontalHeader(), table.verticalHeader()
    if hh is None or vh is None:
        raise RuntimeError("a table view without its headers")
    return hh, vh


class RowsModel(QStandardItemModel):
    """Rows of plain data held in Qt's own items, so drawing a table calls no Python.

    (A Python ``data()`` is called for every cell and role at every paint; while the worker
    thread computes, each of those calls waits for Python's interpreter lock, and a table
    of a few hundred cells takes a noticeable fraction of a second to draw.) Subclasses
    give ``COLUMNS`` and ``cells(row)``: one ``{role: value}`` mapping per column. ``rows``
    keeps the plain rows, in display order.
    """

    COLUMNS: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.rows: list = []
        self.setHorizontalHeaderLabels(list(self.COLUMNS))

    def cells(self, row: object) -> list[dict[int, object]]:
        raise NotImplementedError

    def _items(self, row: object) -> list[QStandardItem]:
        out = []
        for cell in self.cells(row):
            item = QStandardItem()
            item.setEditable(False)
            for role, value in cell.items():
                if value is not None:
                    item.setData(value, role)
            out.append(item)
        return out

    def set_rows(self, rows: Sequence[object]) -> None:
        """Replace every row."""
        self.rows = list(rows)
        self.removeRows(0, self.rowCount())
        for r in self.rows:
            self.appendRow(self._items(r))

    def prepare(self, rows: Sequence[object]) -> list[list[QStandardItem]]:
        """The items of ``rows``, made on any thread (items belong to no model yet): the
        worker makes a page's items, the GUI thread only appends them."""
        return [self._items(r) for r in rows]

    def append_rows(
        self, rows: Sequence[object], items: Sequence[list[QStandardItem]] | None = None
    ) -> None:
        """Append ``rows`` (with their ``items`` if :meth:`prepare` made them)."""
        self.rows.extend(rows)
        made = list(items) if items is not None else [self._items(r) for r in rows]
        for row_items in made:
            self.appendRow(row_items)

    def prepend_rows(self, rows: Sequence[object]) -> None:
        """Put ``rows`` on top, in the order given."""
        self.rows[0:0] = list(rows)
        for i, r in enumerate(rows):
            self.insertRow(i, self._items(r))


DISPLAY = Qt.ItemDataRole.DisplayRole
TOOLTIP = Qt.ItemDataRole.ToolTipRole
FOREGROUND = Qt.ItemDataRole.ForegroundRole
BACKGROUND = Qt.ItemDataRole.BackgroundRole
FONT = Qt.ItemDataRole.FontRole
ALIGN = Qt.ItemDataRole.TextAlignmentRole
USER = Qt.ItemDataRole.UserRole


def bold_font() -> QFont:
    f = QFont()
    f.setBold(True)
    return f


def fit_headers(table: QTableView, tips: dict[int, str] | None = None) -> None:
    """Make every column of ``table`` at least as wide as its header's words (bold, with the
    style's padding), so no header is cut; ``tips`` gives a header its full meaning as a
    tooltip where the words are short. Stretched columns keep stretching."""
    hh, _ = headers(table)
    model = table.model()
    if model is None:
        return
    font = QFont(hh.font())
    font.setBold(True)
    fm = QFontMetrics(font)
    for col in range(model.columnCount()):
        text = str(model.headerData(col, Qt.Orientation.Horizontal) or "")
        need = fm.horizontalAdvance(text) + 28
        if hh.sectionSize(col) < need:
            hh.resizeSection(col, need)
        tip = (tips or {}).get(col)
        if tip:
            model.setHeaderData(col, Qt.Orientation.Horizontal, tip, TOOLTIP)
    hh.setMinimumSectionSize(min(60, hh.minimumSectionSize()))
