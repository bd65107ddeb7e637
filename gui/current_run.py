"""The current run: picked in the toolbar, shown in one line with its controls.

The console shows one run at a time (the tabs, the strip under the alarm banner); the
operator picks it here or in the runs table, and the first snapshot picks a default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PyQt6.QtWidgets import QComboBox, QFrame, QSizePolicy, QWidget

from labctl.gui.models.common import when_text
from labctl.gui.models.runs import RunRow
from labctl.gui.widgets import Badge, button, label, paper_strip


def default_run(runs: Sequence[RunRow]) -> RunRow | None:
    """The run to show first: one that needs attention, then one under way, then planned."""
    rank = {"holding": 0, "running": 1, "paused": 1, "planned": 2}

    def key(r: RunRow) -> tuple[int, int, int]:
        attention = 0 if (r.open_prompts or r.active_alarms) else 1
        return (rank.get(r.state, 3), attention, -r.id)

    return min(runs, key=key) if runs else None


class RunStrip(QFrame):
    """The current run in one line, with its controls. A control the user may not use
    (:meth:`set_denied`) is disabled, its tooltip saying why."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = paper_strip(self, "runStrip")
        self.name = label("No run selected", sub=True)
        self.badge = Badge()
        # How pressing the next task is: "⚠ LATE by 2 h 5 min" on vermillion, "◷ ends in
        # 12 min" on orange (words and colour), hidden when nothing presses.
        self.urgency = Badge()
        self.urgency.setObjectName("runUrgency")
        self.detail = label("", muted=True, wrap=True)
        # Long details wrap onto a second line (the tooltip has them all), never widen
        # the window; what the operator needs first (day, next task, when) comes first.
        self.detail.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.name)
        lay.addWidget(self.badge)
        lay.addWidget(self.urgency)
        lay.addWidget(self.detail, 1)
        self.pause = button("‖ Pause")
        self.pause.setToolTip("Pause the run or one plate (Ctrl+P)")
        self.resume = button("▶ Resume")
        self.resume.setToolTip("Resume the run or one plate (Ctrl+Shift+P)")
        self.release = button("Release run…", "primary")
        self.release.setToolTip(
            "The run is held (a QC failure or a fault): release it to go on (a reason, and "
            "your signature)"
        )
        self.skip = button("↷ Skip task…")
        self.skip.setToolTip("Skip a task (a deviation: a reason, and your signature) (Ctrl+K)")
        self.abort = button("■ Abort…", "danger")
        self.abort.setToolTip("Abort the run (cannot be undone: a reason, and your signature)")
        self.buttons = {
            "pause": self.pause,
            "resume": self.resume,
            "release": self.release,
            "skip": self.skip,
            "abort": self.abort,
        }
        self.tips = {verb: b.toolTip() for verb, b in self.buttons.items()}
        self.denied: dict[str, str] = {}
        self.usable: dict[str, bool] = dict.fromkeys(self.buttons, False)
        for b in self.buttons.values():
            lay.addWidget(b)

    def set_denied(self, why: dict[str, str | None]) -> None:
        """Why each control is not allowed to the user (None: allowed)."""
        self.denied = {verb: w for verb, w in why.items() if w is not None}
        self._enable()

    def _enable(self) -> None:
        for verb, b in self.buttons.items():
            why = self.denied.get(verb)
            b.setEnabled(self.usable[verb] and why is None)
            b.setToolTip(f"Not allowed: {why}" if why else self.tips[verb])

    def set_run(self, r: RunRow | None, now: Any) -> None:
        if r is None:
            self.name.setText("No run selected")
            self.badge.set_state("", "pending")
            self.urgency.set_state("", "pending")
            self.urgency.setProperty("level", "none")
            self.detail.setText("")
            self.usable = dict.fromkeys(self.buttons, False)
            self._enable()
            return
        self.name.setText(r.name)
        self.badge.set_state(r.state, r.tone)
        u = r.urgency(now) if now is not None else None
        if u is not None and u.loud:
            self.urgency.set_text(u.label, u.tone)
        else:
            self.urgency.set_state("", "pending")
        self.urgency.setProperty("level", u.level if u is not None else "none")
        self.urgency.setToolTip(
            f"The next task's window ends {when_text(r.next_window_end, r.timezone, now)}"
            if r.next_window_end is not None
            else ""
        )
        nxt = ""
        if r.never_started:
            nxt = " · not started: nothing of it will be carried out"
        elif r.next_task:
            when = when_text(r.next_time, r.timezone, now)
            due = f" ({u.text})" if u is not None and u.text and not u.loud else ""
            nxt = f" · next: {r.next_task} ({r.next_plates}) at {when}{due}"
        paused = f" · paused plates: {', '.join(r.paused_plates)}" if r.paused_plates else ""
        text = f"{r.day_text}{nxt}{paused} · {r.protocol}"
        self.detail.setText(text)
        self.detail.setToolTip(text)
        # The engine pauses a running or holding run, or one plate of it.
        self.release.setVisible(r.state == "holding")
        self.usable = {
            "pause": r.state in ("running", "holding"),
            "resume": r.state == "paused" or bool(r.paused_plates),
            "release": r.state == "holding",
            "skip": r.active,
            "abort": r.active,
        }
        self._enable()


class RunPicker(QComboBox):
    """The runs of the latest snapshot, by name, id and state; ``activated`` picks one."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumWidth(320)
        self.setToolTip("The run the tabs show")

    def fill(self, runs: Sequence[RunRow], run_id: int | None) -> None:
        """List ``runs`` with ``run_id`` current, without emitting signals."""
        self.blockSignals(True)
        self.clear()
        for r in runs:
            self.addItem(f"{r.name}  ·  #{r.id}  ·  {r.state}", r.id)
        self.select(run_id)
        self.blockSignals(False)

    def select(self, run_id: int | None) -> None:
        i = self.findData(run_id)
        if i >= 0:
            self.setCurrentIndex(i)
