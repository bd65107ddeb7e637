"""Dialogs that send operator commands: answering a prompt, and the run controls.

Both kinds end in an explicit confirmation. Commands that cannot be taken back (abort,
skip, a prompt answered with 'skip') ask for a reason; the signed ones
(:data:`labctl.accounts.SIGNED`) are then signed in a signature dialog
(:class:`labctl.gui.sign_in.SignatureDialog`) on a database with accounts. A choice the
user's role does not allow is disabled, its tooltip saying why.

Enter in a reason field sends (the dialog's one default button), never cancels.

A dialog does not write anything itself: it emits ``ready(requests)`` and the main window
sends the requests on its worker thread, then calls :meth:`sent` (with
the first verdicts: waiting for the engine, or queued when none runs) or :meth:`failed` on
the dialog. A dialog that has sent stays open and shows the engine's verdict on each command
as it comes (:meth:`show_verdict`): applied, or rejected with the engine's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PyQt6.QtCore import QTimer, pyqtSignal
from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from labctl.accounts import Action
from labctl.clock import Clock
from labctl.errors import LabctlError
from labctl.gui import theme
from labctl.gui.models.alarms import plain_words, severity_word
from labctl.gui.models.commands import (
    IRREVERSIBLE_VERBS,
    CommandRequest,
    SkippableTask,
    Verdict,
    abort,
    answer,
    choice_action,
    confirm_store,
    pause,
    release,
    resume,
    skip,
)
from labctl.gui.models.common import ConsoleInputError, countdown_text, hhmm, when_text
from labctl.gui.models.devices import AlarmRow
from labctl.gui.models.prompts import PromptView, build_answer, qc_failures
from labctl.gui.models.runs import RunRow
from labctl.gui.qc_form import QcForm
from labctl.gui.sign_in import enter_submits
from labctl.gui.verdicts import VerdictList
from labctl.gui.widgets import GuardedDialog, button, label

CHOICE_TEXT = {
    "retry": ("Retry", "Run the step again now"),
    "skip": ("Skip", "Leave the step out (recorded as a deviation)"),
    "hold": ("Hold the run", "Stop starting new work until someone decides"),
    "done": ("It happened", "The step was done: mark it done"),
    "release": ("Release the run", "Go on with the run"),
    "abort": ("Abort the run", "Stop the run for good"),
}

KIND_TEXT = {
    "recovery": ("Recovery decision", "fault"),
    "interrupted": ("Interrupted step", "holding"),
    "decision": ("Decision", "holding"),
    "task": ("Manual step", "running"),
}


class _Sending:
    """Shared: show an error; once sent, the engine's verdict on each command."""

    error: QLabel
    verdicts: VerdictList

    def _show_error(self, message: str) -> None:
        self.error.setText(f"✕ {message}")
        self.error.setVisible(bool(message))

    def _verdict_box(self) -> VerdictList:
        box = VerdictList()
        box.setObjectName("verdicts")
        box.hide()
        return box

    @property
    def has_sent(self) -> bool:
        return bool(self.verdicts.verdicts)

    @property
    def engine_rejected(self) -> bool:
        return any(v.state == "rejected" for v in self.verdicts.verdicts.values())

    def show_verdict(self, v: Verdict) -> None:
        """The engine's verdict on a command this dialog sent (or that it is still queued)."""
        self.verdicts.show_verdict(v)
        self.verdicts.show()

    def verdict_text(self) -> str:
        return self.verdicts.text()


def _repolish(w: QWidget) -> None:
    style = w.style()
    if style is not None:
        style.unpolish(w)
        style.polish(w)


class PromptDialog(GuardedDialog, _Sending):
    """Answer one prompt. Only its buttons close it; each answer is confirmed first.

    ``ready(requests)`` carries the commands to send. ``why_not(action)``: None when the
    user may take the action of a choice, else why not (the choice is then disabled, its
    tooltip saying why); ``signs``: whether a signed choice is signed (a database with
    accounts), which the confirmation says.
    """

    ready = pyqtSignal(object)

    def __init__(
        self,
        prompt: PromptView,
        clock: Clock,
        *,
        why_not: Callable[[Action], str | None] | None = None,
        signs: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.prompt = prompt
        self.clock = clock
        self.signs = signs
        self.withdrawn = False
        self._pending: list[CommandRequest] = []
        self.setWindowTitle(f"Prompt {prompt.id}: {prompt.heading}")
        self.setMinimumWidth(700)
        lay = QVBoxLayout(self)
        lay.setSpacing(10)

        kind_text, kind_tone = KIND_TEXT.get(prompt.kind, ("Prompt", "holding"))
        top = QHBoxLayout()
        chip = QLabel(f"{theme.tone(kind_tone).symbol} {kind_text}")
        chip.setStyleSheet(
            f"background: {theme.tone(kind_tone).fill}; color: {theme.tone(kind_tone).text};"
            " border-radius: 9px; padding: 3px 10px; font-weight: bold;"
        )
        top.addWidget(chip)
        where = f"{prompt.run_name} · plate {prompt.plate}" if prompt.plate else prompt.run_name
        top.addWidget(
            label(
                f"{where} · asked {when_text(prompt.created_at, prompt.timezone, clock.now())}",
                muted=True,
            )
        )
        top.addStretch(1)
        lay.addLayout(top)
        lay.addWidget(label(prompt.heading, heading=True, wrap=True))
        text = label(prompt.text, wrap=True)
        lay.addWidget(text)
        if prompt.instructions and prompt.instructions not in prompt.text:
            box = QFrame()
            box.setProperty("card", True)
            bl = QVBoxLayout(box)
            bl.addWidget(label("Instructions", sub=True))
            bl.addWidget(label(prompt.instructions, wrap=True))
            lay.addWidget(box)

        self.qc = QcForm(prompt)
        self.qc.changed.connect(self._qc_ready)
        self.qc_edits, self.qc_status, self.qc_hint = self.qc.edits, self.qc.status, self.qc.hint
        lay.addWidget(self.qc)

        self.lot_edits: dict[str, QLineEdit] = {}
        if prompt.reagents:
            g = QGroupBox("Lots used (optional, recorded with the answer)")
            form = QFormLayout(g)
            for r in prompt.reagents:
                edit = QLineEdit()
                edit.setObjectName(f"lot:{r}")
                edit.setPlaceholderText("lot number")
                self.lot_edits[r] = edit
                form.addRow(r, edit)
            lay.addWidget(g)

        self.countdown = QLabel("")
        self.countdown.setObjectName("countdown")
        self.countdown.setStyleSheet(
            f"background: #FFF4D6; border: 1px solid {theme.ORANGE}; border-radius: 4px; padding: 6px;"
        )
        lay.addWidget(self.countdown)
        self.countdown.setVisible(prompt.seconds_left(clock.now()) is not None)

        self.error = label("", wrap=True)
        self.error.setStyleSheet(f"color: {theme.VERMILLION}; font-weight: bold;")
        self.error.setVisible(False)
        lay.addWidget(self.error)
        self.verdicts = self._verdict_box()
        lay.addWidget(self.verdicts)

        # The confirmation step, shown after a choice.
        self.confirm_box = QFrame()
        self.confirm_box.setProperty("card", True)
        cb = QVBoxLayout(self.confirm_box)
        self.confirm_text = label("", sub=True, wrap=True)
        cb.addWidget(self.confirm_text)
        self.reason = QLineEdit()
        self.reason.setObjectName("reason")
        self.reason.setPlaceholderText("Reason (goes into the audit trail)")
        cb.addWidget(self.reason)
        row = QHBoxLayout()
        row.addStretch(1)
        self.back_button = button("Back")
        self.confirm_button = button("Confirm and send", "primary")
        self.confirm_button.setObjectName("confirm")
        row.addWidget(self.back_button)
        row.addWidget(self.confirm_button)
        cb.addLayout(row)
        self.back_button.clicked.connect(self._back)
        self.confirm_button.clicked.connect(self._confirm)
        self.confirm_box.setVisible(False)
        lay.addWidget(self.confirm_box)

        if prompt.choices:
            explain = " · ".join(
                f"<b>{CHOICE_TEXT.get(c, (c, ''))[0]}</b>: {CHOICE_TEXT.get(c, ('', c))[1].lower()}"
                for c in prompt.choices
            )
            lay.addWidget(label(explain, muted=True, wrap=True))

        # The answers.
        self.choice_buttons: dict[str, QPushButton] = {}
        #: Choices the user may not take, and why (from labctl.accounts.allowed).
        self.denied: dict[str, str] = {}
        self.answers = QWidget()
        al = QHBoxLayout(self.answers)
        al.setContentsMargins(0, 0, 0, 0)
        self.later_button = button("Decide later" if prompt.choices else "Later")
        self.later_button.setObjectName("later")
        self.later_button.setToolTip("Close this window without answering; the prompt stays open")
        self.later_button.clicked.connect(lambda: self.close_by_button(False))
        al.addWidget(self.later_button)
        al.addStretch(1)
        choices = prompt.choices or ("done",)
        for c in choices:
            title, tip = CHOICE_TEXT.get(c, (c.capitalize(), ""))
            if prompt.choices and c == prompt.default_choice:
                title += " (default)"
            if not prompt.choices:
                title = "Done"
                tip = "Confirm the step is done" + (
                    " and record the values" if prompt.gates else ""
                )
            role = (
                "danger"
                if c in ("skip", "abort")
                else ("primary" if c in ("done", "retry", "release") else "")
            )
            b = button(title, role)
            b.setObjectName(f"choice:{c}")
            why = why_not(choice_action(prompt, c)) if why_not is not None else None
            if why is not None:
                self.denied[c] = why
                tip = f"Not allowed: {why}"
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, c=c: self._choose(c))
            self.choice_buttons[c] = b
            al.addWidget(b)
        lay.addWidget(self.answers)

        # After sending: the verdicts above, then close (or answer again after a rejection).
        self.after = QWidget()
        af = QHBoxLayout(self.after)
        af.setContentsMargins(0, 0, 0, 0)
        af.addStretch(1)
        self.again_button = button("Answer again")
        self.again_button.setObjectName("again")
        self.again_button.clicked.connect(self.answer_again)
        self.close_button = button("Close", "primary")
        self.close_button.setObjectName("close")
        self.close_button.clicked.connect(lambda: self.close_by_button(True))
        af.addWidget(self.again_button)
        af.addWidget(self.close_button)
        self.after.setVisible(False)
        lay.addWidget(self.after)

        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.tick)
        self.timer.start()
        self.tick()
        self._qc_ready(not self.qc.missing())
        enter_submits(self, self.confirm_button)
        for b in (self.again_button, self.close_button):
            b.setAutoDefault(True)  # Enter presses the one that has the focus

    # --- live feedback ---------------------------------------------------------------------

    def tick(self) -> None:
        left = self.prompt.seconds_left(self.clock.now())
        if left is None:
            return
        at = hhmm(self.prompt.deadline, self.prompt.timezone)
        if left > 0:
            self.countdown.setText(
                f"◷ If nobody answers, the default '{self.prompt.default_choice}' applies in "
                f"<b>{countdown_text(left)}</b> (at {at})."
            )
        else:
            self.countdown.setText(
                f"◷ The deadline ({at}) has passed: the engine applies the default "
                f"'{self.prompt.default_choice}'."
            )

    def _qc_ready(self, ready: bool) -> None:
        """No answer leaves without a number for every QC value (the engine rejects it)."""
        for c, b in self.choice_buttons.items():
            b.setEnabled(ready and c not in self.denied)

    # --- answering -------------------------------------------------------------------------

    def _choose(self, choice: str) -> None:
        """First step: build the answer (checks the inputs), then ask to confirm."""
        p = self.prompt
        try:
            ans = build_answer(
                p,
                choice=choice if p.choices else None,
                qc=self.qc.values(),
                lots={r: e.text() for r, e in self.lot_edits.items()},
            )
        except LabctlError as exc:
            self._show_error(exc.user_message())
            return
        self._show_error("")
        requests = [answer(p, ans)]
        if p.kind == "decision" and choice in ("release", "abort"):
            # As `labctl answer` does: a held run's decision is taken by releasing or
            # aborting the run itself (the engine then closes the decision prompt).
            requests = [release(p.run_id, "") if choice == "release" else abort(p.run_id, "")]
        self._pending = requests
        irreversible = any(r.irreversible for r in requests)
        required = any(r.needs_reason for r in requests)
        signed = self.signs and any(r.signed for r in requests)
        what = f"'{choice}'" if p.choices else "done"
        sentence = f"Send {what} for prompt {p.id}"
        if p.plate:
            sentence += f" (plate {p.plate})"
        sentence += "?"
        fails = qc_failures(p, ans.get("qc", {}))
        if fails:
            sentence += " " + "; ".join(
                f"{g.measure} {v:g} is outside {g.limits_text}: the run will {g.on_fail}"
                for g, v in fails
            )
            sentence += "."
        if irreversible:
            sentence += " This cannot be undone."
        if required:
            sentence += " Give a reason."
        if signed:
            sentence += " You sign it next, with your password."
        self.confirm_text.setText(sentence)
        self.reason.setVisible(True)
        self.reason.setPlaceholderText(
            "Reason (required)" if required else "Note for the audit trail (optional)"
        )
        self.confirm_button.setText("Sign…" if signed else "Confirm and send")
        self.confirm_button.setProperty("role", "danger" if irreversible else "primary")
        self.confirm_button.style().unpolish(self.confirm_button)  # type: ignore[union-attr]
        self.confirm_button.style().polish(self.confirm_button)  # type: ignore[union-attr]
        self.answers.setEnabled(False)
        self.confirm_box.setVisible(True)
        (self.reason if required else self.confirm_button).setFocus()

    def _back(self) -> None:
        self._pending = []
        self.confirm_box.setVisible(False)
        self.answers.setEnabled(True)
        self._show_error("")

    def _confirm(self) -> None:
        if not self._pending or not self.confirm_box.isVisible():
            return
        reason = self.reason.text().strip()
        if any(r.needs_reason for r in self._pending) and not reason:
            self._show_error("give a reason: it goes into the audit trail")
            return
        requests = [
            CommandRequest(r.verb, r.run_id, reason or f"answered prompt {self.prompt.id}", r.args)
            for r in self._pending
        ]
        self._show_error("")
        self.confirm_button.setEnabled(False)
        self.back_button.setEnabled(False)
        self.confirm_text.setText("Sending…")
        self.ready.emit(requests)

    def sent(self, verdicts: Sequence[Verdict]) -> None:
        """The commands are queued: show what became of them (waiting, queued) until the
        engine's verdict, which :meth:`show_verdict` brings."""
        self.timer.stop()
        self.countdown.setVisible(False)
        self.confirm_box.setVisible(False)
        self.answers.setVisible(False)
        self.qc.setEnabled(False)
        for e in self.lot_edits.values():
            e.setEnabled(False)
        for v in verdicts:
            self.show_verdict(v)
        self.again_button.setVisible(False)
        self.after.setVisible(True)
        self.close_button.setFocus()

    def show_verdict(self, v: Verdict) -> None:
        super().show_verdict(v)
        # A rejected answer leaves the prompt open: the operator may answer it again.
        self.again_button.setVisible(self.engine_rejected and not self.withdrawn)

    def answer_again(self) -> None:
        """After a rejection: back to the answers (the verdicts stay shown above)."""
        self.after.setVisible(False)
        self.answers.setVisible(True)
        self.qc.setEnabled(True)
        for e in self.lot_edits.values():
            e.setEnabled(True)
        self.confirm_button.setEnabled(True)
        self.back_button.setEnabled(True)
        self._back()
        self._qc_ready(not self.qc.missing())

    def failed(self, message: str) -> None:
        self.confirm_button.setEnabled(True)
        self.back_button.setEnabled(True)
        self.confirm_text.setText("Not sent.")
        self._show_error(message)

    def withdraw(self, why: str) -> None:
        """The prompt was answered elsewhere (another console, the engine's default)."""
        self.withdrawn = True
        self.timer.stop()
        self._show_error(f"This prompt is no longer open: {why}")
        self.answers.setVisible(False)
        self.confirm_box.setVisible(False)
        self.again_button.setVisible(False)
        self.after.setVisible(True)


# --- run controls -----------------------------------------------------------------------------

_VERB_TEXT = {
    "pause": (
        "Pause",
        "No new task starts on the run (or the plate) until it is resumed. Work already under way finishes.",
    ),
    "resume": ("Resume", "Tasks start again at their planned times (late ones at once)."),
    "release": (
        "Release run",
        "The run was held (a QC value outside its limits, or a fault someone decided to hold "
        "on). Releasing it lets the run go on: the engine starts the work that waited.",
    ),
    "skip": (
        "Skip task",
        "The task is left out on the chosen plates and recorded as a deviation. This cannot be undone.",
    ),
    "abort": (
        "Abort run",
        "No new liquid handling starts; plates under way go home; the run ends for good. This cannot be undone.",
    ),
    "confirm-store": (
        "Confirm the devices were checked",
        "The engine is held: its run database went back (restored from an older copy, or it "
        "lost its latest transactions), so the devices may already have done what the database "
        "says is still to do. Check every device against the database first: plates in the "
        "incubators and on the deck, liquid-handler runs, open prompts. Confirming lets the "
        "engine start work again from what the database says. A supervisor's decision; it "
        "cannot be undone.",
    ),
}
_REASON_HINT = {
    "confirm-store": "What was checked on the devices? (required; goes into the audit trail)",
}


class CommandDialog(QDialog, _Sending):
    """Pause, resume, release, skip or abort a run, or confirm a held engine's store
    (``run`` None, ``held`` its reason): a reason always; ``signs``: the command is signed
    next (release, skip and abort on a database with accounts). Once sent it stays open
    with the engine's verdict. Enter in the reason field sends."""

    ready = pyqtSignal(object)

    def __init__(
        self,
        verb: str,
        run: RunRow | None,
        *,
        tasks: Sequence[SkippableTask] = (),
        plate: str | None = None,
        held: str | None = None,
        signs: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.verb = verb
        self.run = run
        self.tasks = list(tasks)
        self.signs = signs
        title, explain = _VERB_TEXT[verb]
        self.irreversible = verb in IRREVERSIBLE_VERBS
        self.setWindowTitle(f"{title}: {run.name}" if run else title)
        self.setMinimumWidth(560)
        lay = QVBoxLayout(self)
        lay.setSpacing(10)
        lay.addWidget(label(f"{title} · {run.name}" if run else title, heading=True, wrap=True))
        if run is not None:
            lay.addWidget(
                label(f"Run {run.id} · {run.protocol} · {run.day_text} · {run.state}", muted=True)
            )
        if held:
            lay.addWidget(label(f"⚑ The engine starts nothing: {held}", wrap=True))
        warn = label(("⚠ " if self.irreversible else "") + explain, wrap=True)
        if self.irreversible:
            warn.setStyleSheet(
                f"background: #FBE3D6; border: 1px solid {theme.VERMILLION}; border-radius: 4px; padding: 8px;"
            )
        lay.addWidget(warn)
        self.inputs = QWidget()
        form = QFormLayout(self.inputs)
        form.setContentsMargins(0, 0, 0, 0)
        self.task = QComboBox()
        self.task.setObjectName("task")
        self.plate = QComboBox()
        self.plate.setObjectName("plate")
        if verb == "skip":
            for t in self.tasks:
                self.task.addItem(
                    f"Day {t.day} · {when_text(t.due, t.timezone)} · {t.title}  [{t.task_key}]",
                    t.task_key,
                )
            self.task.currentIndexChanged.connect(self._task_changed)
            form.addRow("Task", self.task)
            form.addRow("Plates", self.plate)
            self._task_changed()
        elif verb in ("pause", "resume") and run is not None:
            self.plate.addItem("The whole run", None)
            for p in run.plates:
                paused = " (paused)" if p in run.paused_plates else ""
                self.plate.addItem(f"Plate {p}{paused}", p)
            if plate:
                self.plate.setCurrentIndex(max(0, self.plate.findData(plate)))
            form.addRow("Applies to", self.plate)
        self.reason = QLineEdit()
        self.reason.setObjectName("reason")
        self.reason.setPlaceholderText(
            _REASON_HINT.get(verb, "Why? (required; goes into the audit trail)")
        )
        form.addRow("Reason", self.reason)
        lay.addWidget(self.inputs)
        self.sign_note = label(
            "✎ You sign this next: your password again and what your signature means.",
            muted=True,
            wrap=True,
        )
        self.sign_note.setVisible(signs)
        lay.addWidget(self.sign_note)
        self.error = label("", wrap=True)
        self.error.setStyleSheet(f"color: {theme.VERMILLION}; font-weight: bold;")
        self.error.setVisible(False)
        lay.addWidget(self.error)
        self.verdicts = self._verdict_box()
        lay.addWidget(self.verdicts)
        row = QHBoxLayout()
        row.addStretch(1)
        self.cancel_button = button("Cancel")
        self.cancel_button.setObjectName("cancel")
        self.ok_button = button(
            title + ("…" if signs else ""), "danger" if self.irreversible else "primary"
        )
        self.ok_button.setObjectName("ok")
        row.addWidget(self.cancel_button)
        row.addWidget(self.ok_button)
        lay.addLayout(row)
        self.cancel_button.clicked.connect(self.reject)
        self.ok_button.clicked.connect(self._ok)
        if verb == "skip" and not self.tasks:
            self._show_error("no task of this run is still pending: nothing can be skipped")
            self.ok_button.setEnabled(False)
        enter_submits(self, self.ok_button)  # issue 16: Enter in the reason field cancelled
        self.reason.setFocus()

    def _task_changed(self) -> None:
        self.plate.clear()
        i = self.task.currentIndex()
        if i < 0 or i >= len(self.tasks):
            return
        t = self.tasks[i]
        if len(t.plates) > 1:
            self.plate.addItem(f"Every pending plate ({', '.join(t.plates)})", None)
        for p in t.plates:
            self.plate.addItem(f"Plate {p}", p)

    def request(self) -> CommandRequest:
        reason = self.reason.text().strip()
        plate = self.plate.currentData() if self.plate.count() else None
        if self.verb == "confirm-store" or self.run is None:
            req = confirm_store(reason)
        elif self.verb == "skip":
            key = self.task.currentData()
            if key is None:
                raise ConsoleInputError("choose the task to skip")
            req = skip(self.run.id, str(key), reason, plate)
        elif self.verb == "pause":
            req = pause(self.run.id, reason, plate)
        elif self.verb == "resume":
            req = resume(self.run.id, reason, plate)
        elif self.verb == "release":
            req = release(self.run.id, reason)
        else:
            req = abort(self.run.id, reason)
        if not reason:
            raise ConsoleInputError("give a reason: it goes into the audit trail")
        return req

    def _ok(self) -> None:
        if not self.ok_button.isVisible() or not self.ok_button.isEnabled():
            return
        try:
            req = self.request()
        except LabctlError as exc:
            self._show_error(exc.user_message())
            return
        self._show_error("")
        self.ok_button.setEnabled(False)
        self.ok_button.setText("Signing…" if self.signs else "Sending…")
        self.ready.emit([req])

    def sent(self, verdicts: Sequence[Verdict]) -> None:
        """Queued: the inputs are done with; the verdicts show until the operator closes."""
        self.inputs.setEnabled(False)
        self.sign_note.hide()
        self.ok_button.hide()
        self.cancel_button.setDefault(True)  # Enter closes the dialog now
        self.cancel_button.setText("Close")
        self.cancel_button.setProperty("role", "primary")
        _repolish(self.cancel_button)
        for v in verdicts:
            self.show_verdict(v)
        self.cancel_button.setFocus()

    def failed(self, message: str) -> None:
        self.ok_button.setEnabled(True)
        self.ok_button.setText(_VERB_TEXT[self.verb][0] + ("…" if self.signs else ""))
        self._show_error(message)


class AcknowledgeDialog(QDialog, _Sending):
    """Acknowledge an alarm with an optional note; the alarm stays listed until cleared."""

    ready = pyqtSignal(int, str)

    def __init__(self, alarm: AlarmRow, tz: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.alarm = alarm
        self.setWindowTitle(f"Acknowledge alarm {alarm.code}")
        self.setMinimumWidth(520)
        lay = QVBoxLayout(self)
        lay.addWidget(label(f"⚠ {severity_word(alarm)} · {alarm.code}", heading=True))
        where = f"{plain_words(alarm.device)} · " if alarm.device else ""
        lay.addWidget(label(f"{where}raised {when_text(alarm.raised_at, tz)}", muted=True))
        lay.addWidget(label(plain_words(alarm.message), wrap=True))
        lay.addWidget(
            label(
                "Acknowledging records that you have seen it; the condition is not cleared until "
                "the device reports it gone.",
                muted=True,
                wrap=True,
            )
        )
        self.note = QLineEdit()
        self.note.setObjectName("note")
        self.note.setPlaceholderText("Note (optional): what you did or will do")
        lay.addWidget(self.note)
        self.error = label("", wrap=True)
        self.error.setStyleSheet(f"color: {theme.VERMILLION}; font-weight: bold;")
        self.error.setVisible(False)
        lay.addWidget(self.error)
        row = QHBoxLayout()
        row.addStretch(1)
        cancel = button("Cancel")
        self.ok_button = button("Acknowledge", "primary")
        self.ok_button.setObjectName("ok")
        row.addWidget(cancel)
        row.addWidget(self.ok_button)
        lay.addLayout(row)
        cancel.clicked.connect(self.reject)
        self.ok_button.clicked.connect(lambda: self.ready.emit(alarm.id, self.note.text().strip()))
        enter_submits(self, self.ok_button)

    def sent(self, _result: object = None) -> None:
        self.accept()

    def failed(self, message: str) -> None:
        self._show_error(message)
