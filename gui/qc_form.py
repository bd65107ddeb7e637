"""The QC values a prompt records, entered in its dialog.

One row per QC gate: the measure and its unit, the value typed, the limits and what the run
does outside them, and a live check ("✓ within limits", "✕ outside: hold", "✕ not a
number"). Below, while any value is not a number yet, a hint names each one with its
limits: the prompt dialog sends no answer until every value is there, since the engine
rejects an answer without them and a QC step is never passed by saying nothing.
"""

from __future__ import annotations

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QGridLayout, QGroupBox, QLabel, QLineEdit, QVBoxLayout, QWidget

from labctl.errors import LabctlError
from labctl.gui import theme
from labctl.gui.models.prompts import PromptView, QcGate, missing_qc, parse_number
from labctl.gui.widgets import label

_BOX = "background: #FFF4D6; border: 1px solid {}; border-radius: 4px; padding: 6px;"


class QcForm(QWidget):
    """The QC values of ``prompt`` (hidden when it has none); ``changed(ready)`` after each
    keystroke, ``ready`` when every value is a number."""

    changed = pyqtSignal(bool)

    def __init__(self, prompt: PromptView, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.prompt = prompt
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.edits: dict[str, QLineEdit] = {}
        self.status: dict[str, QLabel] = {}
        box = QGroupBox("QC values (required)")
        grid = QGridLayout(box)
        for col, head in enumerate(("Measure", "Value", "Limits", "Check")):
            grid.addWidget(label(head, muted=True), 0, col)
        for i, gate in enumerate(prompt.gates, start=1):
            edit = QLineEdit()
            edit.setObjectName(f"qc:{gate.measure}")
            edit.setPlaceholderText(gate.unit or "value")
            edit.textChanged.connect(self.check)
            self.edits[gate.measure] = edit
            self.status[gate.measure] = QLabel("")
            unit = f" ({gate.unit})" if gate.unit else ""
            grid.addWidget(QLabel(f"{gate.measure}{unit}"), i, 0)
            grid.addWidget(edit, i, 1)
            grid.addWidget(QLabel(f"{gate.limits_text}; if not: {gate.on_fail}"), i, 2)
            grid.addWidget(self.status[gate.measure], i, 3)
        lay.addWidget(box)
        self.hint = label("", wrap=True)
        self.hint.setObjectName("qcHint")
        self.hint.setStyleSheet(_BOX.format(theme.ORANGE))
        lay.addWidget(self.hint)
        self.setVisible(bool(prompt.gates))
        self.check()

    def values(self) -> dict[str, str]:
        """The text typed for each measure."""
        return {m: e.text() for m, e in self.edits.items()}

    def missing(self) -> list[QcGate]:
        """The gates without a number yet."""
        return missing_qc(self.prompt, self.values())

    def check(self) -> None:
        for gate in self.prompt.gates:
            self._check(gate)
        missing = self.missing()
        self.hint.setVisible(bool(missing))
        if missing:
            self.hint.setText(
                "⚠ Enter a number for "
                + ", ".join(f"<b>{g.measure}</b> ({g.limits_text})" for g in missing)
                + " to answer: a QC step is never passed without its values."
            )
        self.changed.emit(not missing)

    def _check(self, gate: QcGate) -> None:
        text = self.edits[gate.measure].text()
        st = self.status[gate.measure]
        if not text.strip():
            st.setText("")
            return
        try:
            v = parse_number(text)
        except LabctlError:
            st.setText("✕ not a number")
            st.setStyleSheet(f"color: {theme.VERMILLION}; font-weight: bold;")
            return
        if gate.passes(v):
            st.setText("✓ within limits")
            st.setStyleSheet(f"color: {theme.BLUISH_GREEN}; font-weight: bold;")
        else:
            st.setText(f"✕ outside: {gate.on_fail}")
            st.setStyleSheet(f"color: {theme.VERMILLION}; font-weight: bold;")
