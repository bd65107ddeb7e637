"""A supervisor's manual device actions from the console: present a plate at an incubator's
transfer station (or put it away), open or close its gate (the automatic lift door), move a
plate with the arm between two named stations.

The console never drives a device: the dialog queues a ``device-action`` command
(:data:`labctl.engine.manual.DEVICE_ACTION`) on the worker thread, after checking the user
may (:data:`Action.DEVICE_ACTION`: a supervisor's), and follows it
until the engine applied it (the device did it, recorded in the audit trail) or rejected it
(a run's task needs the device, the device refused or failed): the verdict shows in the
dialog and the status bar.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from PyQt6.QtCore import QTimer
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from labctl.accounts import Action
from labctl.engine.manual import DEVICE_ACTION, describe
from labctl.gui.auth import ConsoleUser, authorize
from labctl.gui.models.common import ConsoleInputError
from labctl.gui.models.maps import Maps, maps_of
from labctl.gui.widgets import button, label
from labctl.store import Store
from labctl.store.models import Command

__all__ = ["DeviceActionDialog", "DeviceActions", "submit_device_action", "verdict_text"]

SLOT_ACTIONS = ("present", "put-away")  # the incubator actions that take a slot
FOLLOW_MS = 300  # how often the dialog reads its command's state until the engine decides


def submit_device_action(
    store: Store, who: ConsoleUser, args: Mapping[str, Any], reason: str, *, now: datetime
) -> Command:
    """Queue a manual device action as ``who`` (worker thread). Raises ConsoleInputError
    without a reason, AuthError / PermissionDenied when ``who`` may not."""
    if not reason.strip():
        raise ConsoleInputError("say why (it goes into the audit trail)")
    authorize(store, who, Action.DEVICE_ACTION, None, now=now)
    return store.insert_command(DEVICE_ACTION, actor=who.name, args=dict(args), reason=reason)


def verdict_text(cmd: Command) -> str:
    """The engine's verdict on a device action, in words."""
    what = describe(cmd.args or {})
    result = cmd.result if isinstance(cmd.result, dict) else {}
    if cmd.state == "applied":
        return f"✓ done: {what}" + (f" ({result['detail']})" if result.get("detail") else "")
    if cmd.state == "rejected":
        return f"✕ not done: {result.get('reason', 'rejected')}"
    return f"… waiting for the engine: {what}"


class DeviceActionDialog(QDialog):
    """Choose a device and an action; Send queues it; the verdict shows below."""

    def __init__(self, win: Any, maps: Maps, parent: QWidget | None = None) -> None:
        super().__init__(parent or win)
        self.win = win
        self.maps = maps
        self.command: Command | None = None
        self.setWindowTitle("Manual device action")
        form = QFormLayout(self)
        form.addRow(
            label(
                "The engine does it only while no run's task needs the device, and records "
                "it in the audit trail. A plate you present stays out until you put it away; "
                "a gate you open stays open until you close it.",
                wrap=True,
            )
        )
        self.device = QComboBox()
        for inc in maps.incubators:
            self.device.addItem(f"{inc.device} (incubator)", ("incubator", inc.device))
        for name, _stations in maps.movers:
            self.device.addItem(f"{name} (arm)", ("mover", name))
        form.addRow("Device", self.device)
        self.action = QComboBox()
        form.addRow("Action", self.action)
        self.slot = QSpinBox()
        self.slot.setRange(1, 999)
        form.addRow("Slot", self.slot)
        self.source, self.destination = QComboBox(), QComboBox()
        form.addRow("From station", self.source)
        form.addRow("To station", self.destination)
        self.plate = QLineEdit()
        self.plate.setPlaceholderText("the plate's label, e.g. P1 (optional)")
        form.addRow("Plate", self.plate)
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("why (recorded in the audit trail)")
        form.addRow("Reason", self.reason)
        self.send_button = button("Send to the engine", "primary")
        form.addRow(self.send_button)
        self.verdict = label("", wrap=True)
        self.verdict.setObjectName("deviceActionVerdict")
        form.addRow(self.verdict)
        self.form = form
        self.timer = QTimer(self)
        self.timer.setInterval(FOLLOW_MS)
        self.timer.timeout.connect(self._follow)
        self.device.currentIndexChanged.connect(self._device_changed)
        self.action.currentIndexChanged.connect(self._action_changed)
        self.send_button.clicked.connect(self.send)
        self._device_changed()

    def _device_changed(self) -> None:
        kind, name = self.device.currentData() or ("", "")
        self.action.clear()
        if kind == "incubator":
            self.action.addItem("present a plate at the transfer station", "present")
            self.action.addItem("put the plate on the transfer station away", "put-away")
            self.action.addItem(
                "open the gate (automatic door) at the transfer station", "open-gate"
            )
            self.action.addItem("close the gate at the transfer station", "close-gate")
            inc = next(i for i in self.maps.incubators if i.device == name)
            self.slot.setRange(1, max(1, inc.slots))
        elif kind == "mover":
            self.action.addItem("move a plate", "move")
            stations = dict(self.maps.movers)[name]
            for box in (self.source, self.destination):
                box.clear()
                box.addItems(stations)
        for field in (self.source, self.destination, self.plate):
            self.form.setRowVisible(field, kind == "mover")
        self._action_changed()

    def _action_changed(self) -> None:
        """The slot is asked only for the actions that take a plate from or to one."""
        self.form.setRowVisible(self.slot, self.action.currentData() in SLOT_ACTIONS)

    def args(self) -> dict[str, Any]:
        """The command's args from the fields."""
        kind, name = self.device.currentData() or ("", "")
        out: dict[str, Any] = {"device": name, "action": self.action.currentData()}
        if kind == "incubator":
            if out["action"] in SLOT_ACTIONS:
                out["slot"] = self.slot.value()
        else:
            out["source"] = self.source.currentText()
            out["destination"] = self.destination.currentText()
            if self.plate.text().strip():
                out["plate"] = self.plate.text().strip()
        return out

    def send(self) -> None:
        """Queue the action on the worker; then follow it."""
        who, wall = self.win.access.user, self.win.wall
        if who is None:
            self.verdict.setText("✕ nobody is signed in")
            return
        args, reason = self.args(), self.reason.text()
        self.send_button.setEnabled(False)
        self.verdict.setText("sending…")

        def sent(cmd: Command) -> None:
            self.command = cmd
            self.verdict.setText(verdict_text(cmd))
            self.win.say(f"command {cmd.id} · {describe(args)}: sent to the engine")
            self.timer.start()

        def failed(message: str) -> None:
            self.send_button.setEnabled(True)
            self.verdict.setText(f"✕ {message}")

        self.win.bridge.call(
            lambda s: submit_device_action(s, who, args, reason, now=wall.now()), sent, failed
        )

    def _follow(self) -> None:
        cmd = self.command
        if cmd is None:
            return
        self.win.bridge.call(lambda s: s.get_command(cmd.id), self._followed)

    def _followed(self, cmd: Command) -> None:
        self.command = cmd
        self.verdict.setText(verdict_text(cmd))
        if cmd.state != "pending":
            self.timer.stop()
            self.send_button.setEnabled(True)
            self.win.say(f"command {cmd.id} · {verdict_text(cmd)}")

    def done(self, result: int) -> None:  # noqa: D102 - QDialog's
        self.timer.stop()
        super().done(result)


class DeviceActions:
    """The Console menu entry and the Maps tab's button; :meth:`open` reads the maps (the
    devices and their stations) on the worker, then opens the dialog."""

    TIP = (
        "Present or put away a plate, open or close an incubator's gate, or move a plate "
        "with the arm (a supervisor's action)"
    )

    def __init__(self, win: Any, view: Any) -> None:
        self.win = win
        self.view = view
        self.dialog: DeviceActionDialog | None = None
        self.action = QAction("Manual &device action…", win)
        self.action.setStatusTip(self.TIP)
        self.action.triggered.connect(self.open)

    def open(self) -> None:
        def ready(maps: Maps) -> None:
            self.view.set_maps(maps)
            self.dialog = DeviceActionDialog(self.win, maps)
            self.dialog.open()

        self.win.bridge.call(maps_of, ready, self.win.show_error)
