"""The Maps tab: each liquid handler's deck and each incubator's slots, with the plates on
them (:mod:`labctl.gui.models.maps`, read on the worker thread), and the supervisor's
manual device actions (:mod:`labctl.gui.device_actions`).

:func:`attach_maps` adds the tab to a console window and keeps it up to date: the maps are
read again when a new snapshot arrives while the tab is shown, or when it is shown.
"""

from __future__ import annotations

from typing import Any

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QKeySequence
from PyQt6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from labctl.accounts import Action
from labctl.gui import theme
from labctl.gui.models.maps import DeckMap, DeckPosition, Maps, SlotMap, maps_of
from labctl.gui.models.snapshot import Snapshot
from labctl.gui.widgets import button, label

__all__ = ["MapsView", "attach_maps"]

SLOT_COLUMNS = 6  # incubator slots per row of the map
_ROLE_FILL = {
    "plate": "#E4E7EC",
    "medium": "#CFE8F7",
    "wash": "#CFE8F7",
    "waste": "#F6E2CC",
    "stocks": "#EDE0F0",
    "tips": "#FBF6C6",
    "small_tips": "#FBF6C6",
    "trash": "#D9DBDF",
}


def _cell(title: str, body: str, fill: str, ink: str = theme.INK, *, bold: bool = False) -> QLabel:
    """One square of a map: a small title line and the body under it."""
    weight = "bold" if bold else "normal"
    w = QLabel(
        f"<div style='font-size:9pt;color:{ink}'>{title}</div>"
        f"<div style='font-size:11pt;font-weight:{weight};color:{ink}'>{body or '&nbsp;'}</div>"
    )
    w.setTextFormat(Qt.TextFormat.RichText)
    w.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    w.setMinimumSize(120, 62)
    w.setWordWrap(True)
    w.setStyleSheet(
        f"QLabel {{ background: {fill}; border: 1px solid {theme.RULE}; border-radius: 4px;"
        " padding: 4px; }"
    )
    return w


def _position_cell(p: DeckPosition) -> QLabel:
    role = p.role_text + (" (default)" if p.role and p.default else "")
    if p.plates:
        return _cell(f"{p.slot} · {role}", " + ".join(p.plates), theme.BLUE, "#FFFFFF", bold=True)
    return _cell(f"{p.slot}", role or "empty", _ROLE_FILL.get(p.role, theme.PAPER))


class DeckCard(QFrame):
    """A deck as seen from the front: 4 rows of 3 slots."""

    def __init__(self, deck: DeckMap) -> None:
        super().__init__()
        self.setObjectName("deckCard")
        self.deck = deck
        col = QVBoxLayout(self)
        col.addWidget(label(f"{deck.device} · {deck.robot} deck", sub=True))
        grid = QGridLayout()
        grid.setSpacing(4)
        for r, row in enumerate(deck.rows):
            for c, pos in enumerate(row):
                grid.addWidget(_position_cell(pos), r, c)
        col.addLayout(grid)


class SlotCard(QFrame):
    """An incubator: its transfer station, then its slots in rows of SLOT_COLUMNS."""

    def __init__(self, inc: SlotMap) -> None:
        super().__init__()
        self.setObjectName("slotCard")
        self.inc = inc
        col = QVBoxLayout(self)
        used = len(inc.plates)
        col.addWidget(label(f"{inc.device} · {used} of {inc.slots} slots hold a plate", sub=True))
        on = " + ".join(inc.transfer)
        fill, ink = (theme.ORANGE, theme.INK) if on else (theme.PAPER, theme.INK)
        col.addWidget(_cell("transfer station", on or "empty", fill, ink, bold=bool(on)))
        grid = QGridLayout()
        grid.setSpacing(4)
        for i in range(inc.slots):
            slot = i + 1
            plate = inc.plates.get(slot, "")
            cell = (
                _cell(f"slot {slot}", plate, theme.BLUE, "#FFFFFF", bold=True)
                if plate
                else _cell(f"slot {slot}", "", theme.PAPER)
            )
            cell.setMinimumSize(90, 48)
            grid.addWidget(cell, i // SLOT_COLUMNS, i % SLOT_COLUMNS)
        col.addLayout(grid)
        for line in inc.moving:
            col.addWidget(label(f"↔ {line}", muted=True, wrap=True))


class MapsView(QWidget):
    """Decks and incubators with their plates; a button for manual device actions."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        top = QHBoxLayout()
        top.addWidget(label("Decks and incubators", heading=True))
        self.summary = label("reading…", muted=True)
        top.addWidget(self.summary)
        top.addStretch(1)
        self.actions_button = button("Manual device action…")
        top.addWidget(self.actions_button)
        lay.addLayout(top)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.inner = QWidget()
        self.grid = QGridLayout(self.inner)
        self.grid.setSpacing(16)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        scroll.setWidget(self.inner)
        lay.addWidget(scroll, 1)
        self.maps: Maps | None = None
        self.cards: list[QFrame] = []

    def set_maps(self, maps: Maps) -> None:
        """Draw ``maps`` (rebuilt only when they changed)."""
        if maps == self.maps:
            return
        self.maps = maps
        for w in self.cards:
            self.grid.removeWidget(w)
            w.deleteLater()
        self.cards = [DeckCard(d) for d in maps.decks] + [SlotCard(i) for i in maps.incubators]
        for i, card in enumerate(self.cards):
            self.grid.addWidget(card, i // 2, i % 2, Qt.AlignmentFlag.AlignTop)
        if maps.elsewhere:
            box = QFrame()
            col = QVBoxLayout(box)
            col.addWidget(label("Elsewhere", sub=True))
            for line in maps.elsewhere:
                col.addWidget(label(line, wrap=True))
            self.cards.append(box)
            self.grid.addWidget(box, (len(self.cards) - 1) // 2, (len(self.cards) - 1) % 2)
        n = sum(len(p.plates) for d in maps.decks for row in d.rows for p in row)
        m = sum(len(i.plates) + len(i.transfer) for i in maps.incubators)
        self.summary.setText(
            f"{len(maps.decks)} deck(s), {len(maps.incubators)} incubator(s); "
            f"{n} plate(s) on decks, {m} in incubators"
            if self.cards
            else "no live run: nothing to map"
        )

    def failed(self, message: str) -> None:
        self.summary.setText(f"✕ {message}")


def attach_maps(win: Any) -> MapsView:
    """``win`` is the console's MainWindow (not imported here: it imports this module).

    Add the Maps tab (View menu, Ctrl+7) and the manual device actions (Console menu)
    to ``win``; the maps follow its snapshots while shown."""
    from labctl.gui.device_actions import DeviceActions

    view = MapsView()
    index = win.tabs.addTab(view, "Maps")
    win.tabs.setTabToolTip(index, f"Maps (Ctrl+{index + 1})")
    seen: list[Any] = [None]  # the head of the audit trail the maps were read at

    def load(snap: Snapshot | None = None) -> None:
        head = snap.head_seq if snap is not None else None
        if snap is not None and head == seen[0]:
            return
        seen[0] = head
        win.bridge.call(maps_of, view.set_maps, view.failed)

    def shown(i: int) -> None:
        if win.tabs.widget(i) is view:
            seen[0] = None
            load(win.snapshot)

    win.tabs.currentChanged.connect(shown)
    win.snapshot_changed.connect(lambda snap: load(snap) if view.isVisible() else None)
    actions = DeviceActions(win, view)
    menus = {m.title(): m for m in win.menuBar().findChildren(QMenu)}
    if "&View" in menus:
        a = menus["&View"].addAction("Maps")
        a.setShortcut(QKeySequence(f"Ctrl+{index + 1}"))
        a.triggered.connect(lambda: win.show_tab(index))
    if "&Console" in menus:
        first = menus["&Console"].actions()
        menus["&Console"].insertAction(first[4] if len(first) > 4 else None, actions.action)

    def permit() -> None:
        why = win.access.why_not(Action.DEVICE_ACTION)
        for w in (actions.action, view.actions_button):
            w.setEnabled(why is None)
            w.setToolTip(f"Not allowed: {why}" if why else actions.TIP)

    win.access.changed.connect(permit)
    permit()
    view.actions_button.clicked.connect(actions.open)
    win.maps_view = view  # tests and tools reach it by name
    win.device_actions = actions
    return view
