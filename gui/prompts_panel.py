"""The side panel of open prompts: what waits for the operator, with countdowns.

Enter (or a double click) on the focused prompt opens its answer dialog.
"""

from __future__ import annotations

from collections.abc import Sequence

from PyQt6.QtCore import QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor, QKeyEvent
from PyQt6.QtWidgets import QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from labctl.clock import Clock
from labctl.gui import theme
from labctl.gui.dialogs import KIND_TEXT
from labctl.gui.models.common import countdown_text, duration_text, when_text
from labctl.gui.models.prompts import PromptView
from labctl.gui.widgets import button, label


class PromptList(QListWidget):
    """A list whose Enter key answers the focused prompt."""

    answer = pyqtSignal(int)

    def keyPressEvent(self, e: QKeyEvent | None) -> None:  # noqa: N802 - Qt's name
        if e is not None and e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            item = self.currentItem()
            if item is not None:
                self.answer.emit(int(item.data(Qt.ItemDataRole.UserRole)))
                e.accept()
                return
        super().keyPressEvent(e)


class PromptsPanel(QWidget):
    """Open prompts, oldest first; ``answer(prompt_id)`` when one is chosen."""

    answer = pyqtSignal(int)

    def __init__(self, clock: Clock, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.clock = clock
        self.prompts: list[PromptView] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 8, 8, 8)
        self.heading = label("Nothing waits for you", sub=True)
        lay.addWidget(self.heading)
        self.hint = label("Enter answers the selected prompt.", muted=True, wrap=True)
        lay.addWidget(self.hint)
        self.list = PromptList()
        self.list.setObjectName("prompts")
        self.list.setWordWrap(True)
        self.list.setSpacing(3)
        self.list.setUniformItemSizes(False)
        lay.addWidget(self.list, 1)
        self.answer_button = button("Answer…", "primary")
        self.answer_button.setToolTip("Open the selected prompt (Enter)")
        lay.addWidget(self.answer_button)
        self.list.answer.connect(self.answer)
        self.list.itemDoubleClicked.connect(
            lambda it: self.answer.emit(int(it.data(Qt.ItemDataRole.UserRole)))
        )
        self.answer_button.clicked.connect(self._answer_current)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self.set_prompts(())

    def _answer_current(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.answer.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def set_prompts(self, prompts: Sequence[PromptView]) -> None:
        current = self.list.currentItem()
        keep = current.data(Qt.ItemDataRole.UserRole) if current is not None else None
        self.prompts = list(prompts)
        self.list.clear()
        for p in self.prompts:
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, p.id)
            item.setText(self._text(p))
            kind_text, tone = KIND_TEXT.get(p.kind, ("Prompt", "holding"))
            t = theme.tone(tone)
            item.setForeground(QColor(theme.INK))
            item.setBackground(theme.qcolor(t.fill, 40))
            item.setSizeHint(
                QSize(200, 110 if p.seconds_left(self.clock.now()) is not None else 92)
            )
            item.setToolTip(p.text)
            self.list.addItem(item)
            if p.id == keep:
                self.list.setCurrentItem(item)
        if self.list.currentItem() is None and self.list.count():
            self.list.setCurrentRow(0)
        n = len(self.prompts)
        self.heading.setText(
            f"{n} prompt{'s' if n != 1 else ''} waiting" if n else "Nothing waits for you"
        )
        self.answer_button.setEnabled(bool(n))

    def _text(self, p: PromptView) -> str:
        kind_text, tone = KIND_TEXT.get(p.kind, ("Prompt", "holding"))
        sym = theme.tone(tone).symbol
        where = f"plate {p.plate} · " if p.plate else ""
        lines = [f"{sym} {kind_text} · {where}{p.run_name}", p.heading]
        left = p.seconds_left(self.clock.now())
        if left is not None:
            lines.append(f"◷ default '{p.default_choice}' in {countdown_text(left)}")
        now = self.clock.now()
        waited = duration_text(max(0.0, (now - p.created_at).total_seconds()))
        lines.append(f"asked {when_text(p.created_at, p.timezone, now)} · #{p.id}")
        lines.append(f"waiting {waited}")
        return "\n".join(lines)

    def _tick(self) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item is None:
                continue
            pid = item.data(Qt.ItemDataRole.UserRole)
            p = next((x for x in self.prompts if x.id == pid), None)
            if p is not None:  # countdowns and how long each has waited move
                item.setText(self._text(p))
