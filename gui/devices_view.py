"""Devices: each device's state, current operation, climate, last error and its alarms."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from labctl.gui.models.alarms import plain_words, severity_word
from labctl.gui.models.common import duration_text, hhmm, when_text
from labctl.gui.models.devices import DeviceRow
from labctl.gui.models.urgency import urgency
from labctl.gui.widgets import Badge, button, label


def card_rows(d: DeviceRow, now: datetime) -> list[tuple[str, str]]:
    """The (label, text) lines of a device card."""
    tz = d.timezone
    rows: list[tuple[str, str]] = []
    if d.current:
        until = f", until about {hhmm(d.until, tz)}" if d.until else ""
        rows.append(("Now", f"{d.current} (since {hhmm(d.since, tz)}{until})"))
    else:
        rows.append(
            ("Now", "waiting for the operator" if d.state == "waiting" else "nothing running")
        )
    if d.next_job:
        u = urgency(d.next_at, d.next_window_end, now)
        if u.level == "late":
            rows.append(("Next", f"{d.next_job} · due now: its task is {u.label}"))
        else:
            press = f" ({u.label})" if u.loud else ""
            rows.append(("Next", f"{d.next_job} at {when_text(d.next_at, tz, now)}{press}"))
    if d.climate is not None:
        age_s = (now - d.climate.at).total_seconds()
        if age_s < -60:
            # Written on a clock ahead of this console's (a dry run's virtual time): say so
            # rather than print a negative age.
            age = f"{duration_text(-age_s)} ahead of this console's clock"
        else:
            age = f"{duration_text(max(0.0, age_s))} ago"
        rows.append(
            ("Climate", f"{d.climate.text}  ·  read {when_text(d.climate.at, tz, now)} ({age})")
        )
    elif d.role == "incubator":
        rows.append(("Climate", "no readings recorded"))
    if d.last_error:
        rows.append(("Last error", f"{d.last_error}  ·  {when_text(d.last_error_at, tz, now)}"))
    return rows


class DeviceCard(QFrame):
    """One device: name, role, state badge, then what it does, climate, error, alarms.

    Built once per device; later snapshots only change its texts (:meth:`update_row`), and
    its alarm boxes when the alarms change: building widgets is what makes a tab slow.
    """

    acknowledge = pyqtSignal(int)
    LINES = ("Now", "Next", "Climate", "Last error")

    def __init__(self, d: DeviceRow, now: datetime, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("deviceCard")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 12, 16, 12)
        lay.setSpacing(6)
        top = QHBoxLayout()
        top.addWidget(label(d.name, sub=True))
        self.role = label(d.role, muted=True)
        top.addWidget(self.role)
        top.addStretch(1)
        self.badge = Badge(d.state, d.tone)
        top.addWidget(self.badge, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(top)
        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(4)
        self.lines: dict[str, tuple[QLabel, QLabel]] = {}
        for i, key in enumerate(self.LINES):
            k, v = label(key, muted=True), label("", wrap=True)
            if key == "Last error":
                v.setProperty("error", True)
            grid.addWidget(k, i, 0)
            grid.addWidget(v, i, 1)
            self.lines[key] = (k, v)
        grid.setColumnStretch(1, 1)
        lay.addLayout(grid)
        self.alarm_area = QVBoxLayout()
        self.alarm_area.setSpacing(4)
        lay.addLayout(self.alarm_area)
        self.row: DeviceRow | None = None
        self.update_row(d, now)

    def update_row(self, d: DeviceRow, now: datetime) -> None:
        old = self.row
        self.row = d
        tone = d.tone if d.state != "idle" else "idle"
        if self.property("tone") != tone:
            self.setProperty("tone", tone)
            self.style().unpolish(self)  # type: ignore[union-attr]
            self.style().polish(self)  # type: ignore[union-attr]
        self.badge.set_state(d.state, d.tone)
        self.role.setText(d.role)
        rows = dict(card_rows(d, now))
        for key, (k, v) in self.lines.items():
            text = rows.get(key)
            k.setVisible(text is not None)
            v.setVisible(text is not None)
            if text is not None and v.text() != text:
                v.setText(text)
        if old is None or old.alarms != d.alarms:
            self._alarms(d, now)

    def _alarms(self, d: DeviceRow, now: datetime) -> None:
        while self.alarm_area.count():
            item = self.alarm_area.takeAt(0)
            if item is not None and item.widget() is not None:
                item.widget().deleteLater()  # type: ignore[union-attr]
        for a in d.alarms:
            box = QFrame()
            box.setProperty("alarmbox", a.state)
            bl = QHBoxLayout(box)
            bl.setContentsMargins(8, 4, 4, 4)
            state = (
                severity_word(a) if a.state == "active" else f"acknowledged by {a.acknowledged_by}"
            )
            raised = when_text(a.raised_at, d.timezone, now)
            bl.addWidget(
                label(f"⚠ <b>{state}</b> · raised {raised}: {plain_words(a.message)}", wrap=True), 1
            )
            if a.state == "active":
                b = button("Acknowledge…")
                b.setObjectName(f"ack:{a.id}")
                b.clicked.connect(lambda _=False, i=a.id: self.acknowledge.emit(i))
                bl.addWidget(b)
            self.alarm_area.addWidget(box)


class DevicesView(QWidget):
    """A grid of device cards, rebuilt when the snapshot changes."""

    acknowledge = pyqtSignal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        top = QHBoxLayout()
        top.addWidget(label("Devices", heading=True))
        self.summary = label("", muted=True)
        top.addWidget(self.summary)
        top.addStretch(1)
        lay.addLayout(top)
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.inner = QWidget()
        self.grid = QGridLayout(self.inner)
        self.grid.setSpacing(12)
        self.grid.setColumnStretch(0, 1)
        self.grid.setColumnStretch(1, 1)
        self.scroll_area.setWidget(self.inner)
        lay.addWidget(self.scroll_area, 1)
        self.cards: list[DeviceCard] = []
        self._key: tuple | None = None
        self._pending: tuple[Sequence[DeviceRow], datetime] | None = None

    def showEvent(self, e: object) -> None:  # noqa: N802 - Qt's name
        super().showEvent(e)  # type: ignore[arg-type]
        if self._pending is not None:
            self.set_devices(*self._pending)

    def set_devices(self, devices: Sequence[DeviceRow], now: datetime) -> None:
        """Show the devices (only when shown: a hidden tab keeps the latest for later).

        The cards are kept and updated in place while the same devices are listed.
        """
        if not self.isVisible():
            self._pending = (devices, now)
            return
        self._pending = None
        key = (tuple(devices), now.replace(second=0, microsecond=0))
        if key == self._key:
            return
        self._key = key
        if [c.row.name for c in self.cards if c.row] == [d.name for d in devices]:
            for card, d in zip(self.cards, devices, strict=True):
                card.update_row(d, now)
        else:
            for c in self.cards:
                self.grid.removeWidget(c)
                c.deleteLater()
            while self.grid.count():
                item = self.grid.takeAt(0)
                if item is not None and item.widget() is not None:
                    item.widget().deleteLater()  # type: ignore[union-attr]
            self.cards = []
            for i, d in enumerate(devices):
                card = DeviceCard(d, now)
                card.acknowledge.connect(self.acknowledge)
                self.cards.append(card)
                self.grid.addWidget(card, i // 2, i % 2, Qt.AlignmentFlag.AlignTop)
            if not devices:
                self.grid.addWidget(QLabel("No device has work in an active run."), 0, 0)
            self.grid.setRowStretch(len(devices) // 2 + 1, 1)
        busy = sum(1 for d in devices if d.current)
        bad = sum(1 for d in devices if d.tone == "fault")
        self.summary.setText(f"{len(devices)} devices · {busy} at work · {bad} need attention")
