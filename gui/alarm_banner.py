"""The alarm banner: the worst alarm that needs a person, across the top of the window.

Alarms come worst first (:func:`labctl.gui.models.alarms.worst_first`: severity, then the
one waiting longest), each said in words (plate, "day 20 feed of P6", the run's name) with
the date, time and zone it was raised. "Show all" lists every one of them in the banner,
each with its own Acknowledge. A new alarm sounds (:meth:`QApplication.beep`, again every
:data:`REPEAT_S` seconds while it stands unacknowledged) until someone presses "Sound on"
to silence it: the silence lasts until another alarm comes.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from PyQt6.QtCore import QEvent, QObject, QTimer, pyqtSignal
from PyQt6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from labctl.gui import theme
from labctl.gui.models.alarms import alarm_sentence, raised_text, severity_word
from labctl.gui.models.devices import AlarmRow
from labctl.gui.models.runs import RunRow
from labctl.gui.widgets import button

#: While an alarm stands unacknowledged and the sound is on, it sounds again this often (s).
REPEAT_S = 30


def _beep() -> None:
    QApplication.beep()


class AlarmBanner(QFrame):
    """Unacknowledged alarms across the top of the window, until someone acknowledges them.

    Vermillion with a warning symbol and the words, so it reads without colour too.
    ``acknowledge(alarm_id)`` asks the window to acknowledge one. ``beep`` makes the sound
    (tests pass a counter).
    """

    acknowledge = pyqtSignal(int)
    show_all = pyqtSignal()  # the full list was opened (the window may follow)

    def __init__(self, parent: QWidget | None = None, *, beep: Callable[[], None] = _beep) -> None:
        super().__init__(parent)
        self.setObjectName("alarmBanner")
        self.setStyleSheet(
            f"#alarmBanner {{ background: {theme.VERMILLION}; }}"
            "#alarmBanner QLabel { color: white; }"
            "#alarmBanner QPushButton { background: white; color: #1B1F24; border: none;"
            " border-radius: 4px; padding: 6px 14px; font-weight: bold; }"
            "#alarmBanner QPushButton:focus { border: 2px solid black; }"
            '#alarmBanner QPushButton[sound="off"] { background: #3A3F47; color: white; }'
        )
        self.beep = beep
        col = QVBoxLayout(self)
        col.setContentsMargins(14, 8, 10, 8)
        col.setSpacing(4)
        lay = QHBoxLayout()
        self.icon = QLabel("⚠")
        f = self.icon.font()
        f.setPointSizeF(f.pointSizeF() * 1.8)
        self.icon.setFont(f)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setMinimumWidth(200)
        tf = self.text.font()
        tf.setPointSizeF(tf.pointSizeF() * 1.1)
        self.text.setFont(tf)
        self.more = button("Show all")
        self.sound = button("Sound on")
        self.sound.setObjectName("alarmSound")
        self.ack = button("Acknowledge…")
        self.ack.setToolTip("Record that you have seen this alarm (it stays listed until cleared)")
        lay.addWidget(self.icon)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.more)
        lay.addWidget(self.sound)
        lay.addWidget(self.ack)
        col.addLayout(lay)
        self.list = QWidget()
        self.list_lay = QVBoxLayout(self.list)
        self.list_lay.setContentsMargins(36, 0, 0, 0)
        self.list_lay.setSpacing(2)
        self.list.hide()
        col.addWidget(self.list)
        self.more.clicked.connect(self.toggle_list)
        self.sound.clicked.connect(self.toggle_sound)
        self.ack.clicked.connect(self._ack)
        # The list's Acknowledge buttons follow the main one (the user's permission, set on
        # it by the window, with the reason as its tooltip).
        self.ack.installEventFilter(self)
        self.alarms: tuple[AlarmRow, ...] = ()
        self.lines: list[str] = []  # each alarm as the list shows it, worst first
        self.timezone = "UTC"
        self.silenced = False
        self.beeps = 0
        self._known: set[int] = set()
        self.repeat = QTimer(self)
        self.repeat.setInterval(REPEAT_S * 1000)
        self.repeat.timeout.connect(self._sound)
        self._show_sound()
        self.hide()

    # --- alarms ---------------------------------------------------------------------------

    def set_alarms(
        self,
        alarms: Sequence[AlarmRow],
        timezone: str = "UTC",
        *,
        runs: Sequence[RunRow] = (),
        now: datetime | None = None,
    ) -> None:
        """Show the active alarms of ``alarms`` (worst first as given); ``timezone`` is the
        workcell's, for alarms of no run; a run's alarms are in its zone."""
        self.timezone = timezone
        self.alarms = tuple(a for a in alarms if a.state == "active")
        names = {r.id: r.name for r in runs}
        zones = {r.id: r.timezone for r in runs}
        self.lines = [
            self.line(a, names, zones.get(a.run_id or -1, timezone), now) for a in self.alarms
        ]
        new = {a.id for a in self.alarms} - self._known
        self._known = {a.id for a in self.alarms}
        if not self.alarms:
            self.repeat.stop()
            self.list.hide()
            self.hide()
            return
        more = f"   (+{len(self.alarms) - 1} more)" if len(self.alarms) > 1 else ""
        worst = self.alarms[0]
        self.text.setText(f"{html.escape(self.lines[0])}{more}")
        self.text.setToolTip(f"{worst.code} · {worst.message}")
        self.more.setVisible(len(self.alarms) > 1)
        self._fill_list(names)
        self.show()
        if new:
            # Another alarm needs a person: sound again, even if an earlier one was silenced.
            self.silenced = False
            self._show_sound()
            self._sound()
            self.repeat.start()

    @staticmethod
    def line(a: AlarmRow, names: Mapping[int, str], tz: str, now: datetime | None) -> str:
        """``"ALARM · plate P4 (Kriks held): out of the incubator … · raised Fri 20 Nov 09:10
        CET"``."""
        return f"{severity_word(a)} · {alarm_sentence(a, names)} · raised {raised_text(a, tz, now)}"

    def _fill_list(self, names: Mapping[int, str]) -> None:
        while self.list_lay.count():
            item = self.list_lay.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.deleteLater()
        for a, text in zip(self.alarms, self.lines, strict=True):
            row = QWidget()
            rl = QHBoxLayout(row)
            rl.setContentsMargins(0, 0, 0, 0)
            lab = QLabel(html.escape(text))
            lab.setWordWrap(True)
            lab.setObjectName(f"alarmLine:{a.id}")
            rl.addWidget(lab, 1)
            b = button("Acknowledge…")
            b.setObjectName(f"ack:{a.id}")
            b.setEnabled(self.ack.isEnabled())
            b.setToolTip(self.ack.toolTip())
            b.clicked.connect(lambda _=False, i=a.id: self.acknowledge.emit(i))
            rl.addWidget(b)
            self.list_lay.addWidget(row)
        self.more.setText("Hide list" if self.list.isVisibleTo(self) else "Show all")

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:  # noqa: N802
        if (
            obj is self.ack
            and event is not None
            and event.type()
            in (
                QEvent.Type.EnabledChange,
                QEvent.Type.ToolTipChange,
            )
        ):
            for b in self.list.findChildren(QPushButton):
                b.setEnabled(self.ack.isEnabled())
                b.setToolTip(self.ack.toolTip())
        return super().eventFilter(obj, event)

    def toggle_list(self) -> None:
        self.list.setVisible(not self.list.isVisibleTo(self))
        self.more.setText("Hide list" if self.list.isVisibleTo(self) else "Show all")
        if self.list.isVisibleTo(self):
            self.show_all.emit()

    def _ack(self) -> None:
        if self.alarms:
            self.acknowledge.emit(self.alarms[0].id)

    # --- sound ----------------------------------------------------------------------------

    def toggle_sound(self) -> None:
        """Silence the alarms standing now (until a new one comes), or sound them again."""
        self.silenced = not self.silenced
        self._show_sound()
        if self.silenced:
            self.repeat.stop()
        elif self.alarms:
            self._sound()
            self.repeat.start()

    def _sound(self) -> None:
        if self.silenced or not self.alarms:
            return
        top = self.window()
        if top is not None and top is not self and not top.isVisible():
            self.repeat.stop()  # the window was closed: a console nobody sees stays quiet
            return
        self.beeps += 1
        self.beep()

    def _show_sound(self) -> None:
        off = self.silenced
        self.sound.setText("Sound off" if off else "Sound on")
        self.sound.setProperty("sound", "off" if off else "on")
        self.sound.setToolTip(
            "Silenced until a new alarm comes: press to sound again"
            if off
            else f"The alarm sounds every {REPEAT_S} s until acknowledged: press to silence it "
            "(until a new alarm comes)"
        )
        style = self.sound.style()
        if style is not None:
            style.unpolish(self.sound)
            style.polish(self.sound)
