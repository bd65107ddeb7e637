"""The new-run dialog's workcell file: named, read and validated before a run is registered.

Empty means the simulated workcell (practice databases and dry runs). A named file is read
and checked on the worker thread (:func:`labctl.gui.models.new_run.check_workcell`); what
is wrong is said under it with file:line:col, and the run cannot be registered until it is
right or the field is emptied.
"""

from __future__ import annotations

from collections.abc import Callable

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QVBoxLayout, QWidget

from labctl.gui.models.new_run import WorkcellCheck, check_workcell
from labctl.gui.widgets import button, label

SIMULATED = "The simulated workcell (practice and dry runs)."


class WorkcellChooser(QWidget):
    """A workcell file field with Browse… and its verdict; ``changed`` once it is known
    (a valid file, a wrong one, or none). ``call(fn, done, failed)`` runs ``fn`` on the
    worker thread."""

    changed = pyqtSignal()

    def __init__(self, call: Callable[..., object], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.call = call
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.path = QLineEdit()
        self.path.setObjectName("workcell")
        self.path.setPlaceholderText("Workcell file (.yaml); empty: the simulated workcell")
        self.browse = button("Browse…")
        self.browse.setAutoDefault(False)
        row.addWidget(self.path, 1)
        row.addWidget(self.browse)
        col.addLayout(row)
        self.note = label(SIMULATED, wrap=True)
        self.note.setObjectName("workcellNote")
        col.addWidget(self.note)
        self.check: WorkcellCheck | None = None
        self.browse.clicked.connect(self._browse)
        self.path.editingFinished.connect(self.validate)

    def chosen(self) -> WorkcellCheck | None:
        """The validated workcell (None: the simulated one, or not checked yet)."""
        return self.check if self.path.text().strip() else None

    def ok(self) -> bool:
        """No file named, or the named one is valid."""
        return not self.path.text().strip() or (self.check is not None and self.check.ok)

    def error(self) -> str:
        """Why the named file cannot be used ("" when it can)."""
        if self.ok():
            return ""
        return self.check.error if self.check is not None else "it has not been checked yet"

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Workcell file", "", "Workcells (*.yaml *.yml)")
        if path:
            self.path.setText(path)
            self.validate()

    def validate(self) -> None:
        """Check the file named (on the worker); empty: the simulated workcell."""
        path = self.path.text().strip()
        if not path:
            self.check = None
            self._say(SIMULATED, error=False)
            self.changed.emit()
            return
        if self.check is not None and self.check.file == path:
            return
        self._say("Checking the workcell file…", error=False)
        self.call(lambda _s: check_workcell(path), self.set_check, self._failed)

    def set_check(self, check: WorkcellCheck) -> None:
        if check.file != self.path.text().strip():
            return  # another file was named meanwhile
        self.check = check
        if check.ok:
            self._say(
                f"✓ workcell {check.name} · {check.timezone} · devices: {', '.join(check.devices)}",
                error=False,
            )
        else:
            self._say(f"✕ {check.error}", error=True)
        self.changed.emit()

    def _failed(self, message: str) -> None:
        self.check = WorkcellCheck(self.path.text().strip(), "", error=message)
        self._say(f"✕ {message}", error=True)
        self.changed.emit()

    def _say(self, text: str, *, error: bool) -> None:
        self.note.setText(text)
        self.note.setProperty("error", error)
        style = self.note.style()
        if style is not None:
            style.unpolish(self.note)
            style.polish(self.note)
