"""The dialog that starts a training run: a protocol, a number of plates, faults to inject,
the pace of the simulated clock and the real minutes a trainee has for each prompt."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from labctl.gui.sign_in import enter_submits
from labctl.gui.training import DAY_A_MINUTE, PACES, TRAINEE_S, TrainingConfig
from labctl.gui.widgets import button, label

#: The protocol offered first: the shipped Kriks protocol.
DEFAULT_PROTOCOL = Path(__file__).resolve().parent.parent / "protocols" / "kriks2011_da.yaml"


class TrainingDialog(QDialog):
    """Asks what to practise on; ``start`` carries the :class:`TrainingConfig` chosen."""

    start = pyqtSignal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Training run")
        form = QFormLayout(self)
        form.addRow(
            label(
                "Practise on the simulated workcell, on a fresh practice database and a clock of "
                "its own. Prompts wait for you; faults can be injected. Closing the training "
                "window ends the simulation.",
                wrap=True,
            )
        )
        self.path = QLineEdit(str(DEFAULT_PROTOCOL))
        browse = button("Browse…")
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form.addRow("Protocol", row)
        self.plates = QSpinBox()
        self.plates.setRange(1, 12)
        self.plates.setValue(2)
        form.addRow("Plates", self.plates)
        self.faults = QLineEdit()
        self.faults.setPlaceholderText("e.g. lh-fail-once (see labctl simulate --help)")
        form.addRow("Faults", self.faults)
        self.pace = QComboBox()
        for pace, words in PACES:
            self.pace.addItem(f"{words} ({pace:g}x)", pace)
        self.pace.setCurrentIndex(self.pace.findData(DAY_A_MINUTE))
        form.addRow("Clock", self.pace)
        self.minutes = QSpinBox()
        self.minutes.setRange(1, 60)
        self.minutes.setValue(int(TRAINEE_S // 60))
        self.minutes.setSuffix(" min")
        self.minutes.setToolTip(
            "Real minutes a prompt waits for you before its default applies (or a simulated "
            "colleague does the step)"
        )
        form.addRow("Time for a prompt", self.minutes)
        go = button("Start training", "primary")
        form.addRow(go)
        browse.clicked.connect(self._browse)
        go.clicked.connect(self._start)
        enter_submits(self, go)  # Enter in a field starts, never opens Browse… (issue 16)

    def _browse(self) -> None:
        path = self.path.text()
        chosen = QFileDialog.getOpenFileName(self, "Protocol", path, "YAML (*.yaml *.yml)")[0]
        self.path.setText(chosen or path)

    def _start(self) -> None:
        cfg = TrainingConfig(
            Path(self.path.text()),
            self.plates.value(),
            self.faults.text().strip() or None,
            pace=float(self.pace.currentData()),
            trainee_s=60.0 * self.minutes.value(),
        )
        self.accept()
        self.start.emit(cfg)
