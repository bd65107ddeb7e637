"""The operator's commands: the dialogs that take them, the worker calls that queue them
as the signed-in user (with their signature where one is needed), and the engine's verdict
on each, shown where the operator gave it.

:class:`OperatorCommands` opens the run-control, prompt, alarm, new-run and confirm-store
dialogs over the main window and queues what they send on the worker thread
(``bridge.call``). Every command sent is followed until the engine decides: the dialog that
sent it shows "waiting", or "queued: no engine is running ..." when none runs, then
"applied" or "rejected: why"; ``verdict`` carries each verdict to the window's panel, and a
rejection whose dialog was closed meanwhile opens a message box. It knows the window only
through the callables and signals it is given, so it imports no window.

Who may do what is :class:`~labctl.gui.access.ConsoleAccess`'s to say: an action the user
may not take (their role, a developer on another's run, the console locked) is refused
here with the reason, and refused again by the store check on the worker
(:func:`labctl.gui.auth.authorize`). A signed action opens a
:class:`~labctl.gui.sign_in.SignatureDialog` first; the password is checked, and the
signature recorded, on the worker thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtWidgets import QDialog, QMessageBox, QWidget

from labctl.accounts import SIGNED, Action
from labctl.clock import Clock
from labctl.gui.access import ConsoleAccess
from labctl.gui.dialogs import AcknowledgeDialog, CommandDialog, PromptDialog
from labctl.gui.models.commands import (
    ACTIONS,
    CommandRequest,
    Signing,
    Verdict,
    acknowledge,
    choice_action,
    run_command,
    skippable_tasks,
    submit_all,
    verdict_of,
)
from labctl.gui.models.runs import RunRow
from labctl.gui.models.snapshot import Snapshot, SnapshotLoader
from labctl.gui.new_run import NewRunDialog
from labctl.gui.sign_in import SignatureDialog
from labctl.gui.worker import StoreBridge


class OperatorCommands(QObject):
    """Opens the command dialogs over ``window`` and queues their commands for the engine.

    ``snapshot`` and ``run_id`` read the window's latest snapshot and current run; commands
    are written as ``access``'s user, when their role allows, signed where
    :data:`labctl.accounts.SIGNED` says (``wall``: the wall clock sessions and signatures
    are stamped with). Each queued command is watched by ``loader``, so the snapshot that
    follows reports whether the engine applied it (:meth:`follow`).
    """

    #: A line for the status bar: a command queued or applied, an alarm acknowledged.
    said = pyqtSignal(str)
    #: An error for the status bar: a command refused by the engine or not offered at all
    #: (no run chosen), a failed acknowledgement.
    error = pyqtSignal(str)
    #: A command's verdict, new or changed (a :class:`Verdict`).
    verdict = pyqtSignal(object)
    #: Something was written: read the store again.
    written = pyqtSignal()
    #: A new run was registered (its id).
    registered = pyqtSignal(int)

    def __init__(
        self,
        window: QWidget,
        bridge: StoreBridge,
        clock: Clock,
        loader: SnapshotLoader,
        *,
        snapshot: Callable[[], Snapshot | None],
        run_id: Callable[[], int | None],
        access: ConsoleAccess,
        wall: Clock,
    ) -> None:
        super().__init__(window)
        self.window = window
        self.bridge = bridge
        self.clock = clock
        self.loader = loader
        self._snapshot = snapshot
        self._run_id = run_id
        self.access = access
        self.wall = wall
        self.last_signature: SignatureDialog | None = None  # the signature dialog opened last
        self.prompt_dialogs: dict[int, PromptDialog] = {}
        self.last_dialog: QDialog | None = None  # the dialog opened last (tests, screenshots)
        # Commands sent from here that the engine has not decided on: their verdict so far
        # and the dialog that sent them (None: the new-run dialog, closed once registered).
        self.awaiting: dict[int, tuple[Verdict, Any]] = {}
        # The latest verdicts published, oldest first (tests, a record of this session).
        self.verdicts: deque[Verdict] = deque(maxlen=200)
        self.last_message: QMessageBox | None = None  # the last rejection told in a box

    def current_run(self) -> RunRow | None:
        snap = self._snapshot()
        return snap.run(self._run_id()) if snap else None

    def registered_by(self, run_id: int | None) -> str | None:
        """Who registered run ``run_id``, as the latest snapshot read it."""
        snap = self._snapshot()
        run = snap.run(run_id) if snap is not None and run_id is not None else None
        return run.registered_by if run is not None else None

    def why_not(self, action: Action, run_id: int | None = None) -> str | None:
        """None when the user may take ``action`` on run ``run_id`` now, else why not."""
        return self.access.why_not(action, self.registered_by(run_id))

    def _refused(self, action: Action, run_id: int | None) -> bool:
        """Say why ``action`` is not allowed (and return True), or return False."""
        why = self.why_not(action, run_id)
        if why is not None:
            self.error.emit(f"not allowed: {why}")
        return why is not None

    def _signs(self, action: Action) -> bool:
        user = self.access.user
        return action in SIGNED and user is not None and user.has_account

    def _open(self, dlg: QDialog) -> None:
        self.last_dialog = dlg
        dlg.open()

    # --- sending ----------------------------------------------------------------------------

    def send(self, requests: Sequence[CommandRequest], dialog: Any) -> None:
        """Queue ``requests`` on the worker (all or none) as the signed-in user, after their
        signature if one is needed; tell ``dialog`` how it went and, from then on, the
        engine's verdict on each."""
        reqs = list(requests)
        why = next((w for r in reqs if (w := self.why_not(r.action, r.run_id)) is not None), None)
        if why is not None:
            dialog.failed(f"not allowed: {why}")
            return
        signed = [r for r in reqs if r.signed and self._signs(r.action)]
        if not signed:
            self._queue(reqs, dialog, None, None)
            return
        self._open_signature(reqs, signed[0], dialog)

    def _open_signature(self, reqs: list[CommandRequest], r: CommandRequest, dialog: Any) -> None:
        user = self.access.user
        assert user is not None
        snap = self._snapshot()
        run = snap.run(r.run_id) if snap is not None else None
        where = (
            f"run {r.run_id} · {run.name} · {run.protocol}"
            if run is not None
            else (f"run {r.run_id}" if r.run_id is not None else "the engine")
        )
        sig = SignatureDialog(
            user,
            action=r.action.value,
            what=r.describe(),
            run=where,
            reason=r.reason.strip(),
            meaning=SIGNED[r.action],
            parent=dialog if isinstance(dialog, QWidget) else self.window,
        )
        sig.sign.connect(lambda meaning, pw: self._queue(reqs, dialog, Signing(meaning, pw), sig))
        sig.rejected.connect(lambda: dialog.failed("not signed: nothing was sent"))
        self.last_signature = sig
        sig.open()

    def _queue(
        self,
        reqs: list[CommandRequest],
        dialog: Any,
        signing: Signing | None,
        sig_dialog: SignatureDialog | None,
    ) -> None:
        who, wall, loader = self.access.user, self.wall, self.loader
        if who is None or self.access.locked:
            (sig_dialog or dialog).failed("nobody is signed in, or the console is locked")
            return

        def fn(store: Any) -> tuple[list[Any], bool]:
            cmds = submit_all(store, reqs, who=who, now=wall.now(), signing=signing)
            for c in cmds:
                loader.watch(c.id)
            return cmds, loader.engine(store).applies_commands

        def ok(result: tuple[list[Any], bool]) -> None:
            if sig_dialog is not None:
                sig_dialog.signed_ok()
            cmds, running = result
            verdicts = [
                verdict_of(c, engine_running=running, what=r.describe())
                for r, c in zip(reqs, cmds, strict=True)
            ]
            for v in verdicts:
                self.awaiting[v.command_id] = (v, dialog)
            dialog.sent(verdicts)
            for v in verdicts:
                self._publish(v, None)
            self.said.emit("; ".join(v.line() for v in verdicts))
            self.written.emit()

        # A wrong password leaves the signature dialog open to try again (or cancel).
        self.bridge.call(fn, ok, sig_dialog.failed if sig_dialog is not None else dialog.failed)

    def follow(self, snap: Snapshot) -> None:
        """Take the engine's verdicts in ``snap`` to where the commands were given; a command
        still pending turns 'queued' when the engine stops (and 'waiting' when one starts)."""
        for c in snap.finished_commands:
            if c.id not in self.awaiting:
                continue
            before, dialog = self.awaiting.pop(c.id)
            self._publish(verdict_of(c, engine_running=True, what=before.what), dialog)
        if snap.engine is None:
            return
        state = "waiting" if snap.engine.applies_commands else "queued"
        for cid, (v, dialog) in list(self.awaiting.items()):
            if v.state != state:
                now = Verdict(v.command_id, v.what, state)
                self.awaiting[cid] = (now, dialog)
                self._publish(now, dialog)

    def _publish(self, v: Verdict, dialog: Any) -> None:
        """Show ``v`` in its dialog if still open, the window's panel, and the status bar; a
        rejection nobody would see otherwise opens a message box."""
        self.verdicts.append(v)
        self.verdict.emit(v)
        if dialog is not None and dialog.isVisible():
            dialog.show_verdict(v)
        elif v.state == "rejected":
            self._tell_rejected(v)
        if v.state == "rejected":
            self.error.emit(v.line())
        elif v.state == "applied":
            self.said.emit(v.line())

    def _tell_rejected(self, v: Verdict) -> None:
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "The engine rejected a command",
            f"✕ {v.what}: {v.text}",
            QMessageBox.StandardButton.Ok,
            self.window,
        )
        box.setInformativeText(f"Command {v.command_id}. Nothing of it was applied.")
        self.last_message = box
        box.open()

    def follow_start(self, run_id: int) -> None:
        """Follow the start command queued with a new run (its dialog has closed)."""
        loader = self.loader

        def fn(store: Any) -> tuple[Any, bool]:
            cmd = run_command(store, run_id, "start")
            if cmd is not None and cmd.state == "pending":
                loader.watch(cmd.id)
            return cmd, loader.engine(store).applies_commands

        def ok(result: tuple[Any, bool]) -> None:
            cmd, running = result
            if cmd is None:
                return
            v = verdict_of(cmd, engine_running=running)
            if not v.final:
                self.awaiting[cmd.id] = (v, None)
            self._publish(v, None)

        self.bridge.call(fn, ok)

    # --- run controls -----------------------------------------------------------------------

    def confirm_store(self) -> CommandDialog | None:
        """Open the supervisor's "Confirm the devices were checked" for a held engine."""
        snap = self._snapshot()
        engine = snap.engine if snap else None
        if engine is None or not engine.can_confirm:
            self.error.emit("the engine is not held: there is nothing to confirm")
            return None
        if self._refused(Action.CONFIRM_STORE, None):
            return None
        dlg = CommandDialog("confirm-store", None, held=engine.held, parent=self.window)
        dlg.ready.connect(lambda reqs: self.send(reqs, dlg))
        self._open(dlg)
        return dlg

    def control(self, verb: str, *, plate: str | None = None) -> CommandDialog | None:
        """Open the dialog of a run control (pause, resume, release, skip, abort).

        Skip first reads the tasks it may name on the worker: its dialog opens afterwards
        (``last_dialog``) and this returns None.
        """
        run = self.current_run()
        if run is None:
            self.error.emit("choose a run first")
            return None
        if self._refused(ACTIONS[verb], run.id):
            return None
        if verb == "skip":
            run_id = run.id

            def open_skip(tasks: list[Any]) -> None:
                self._open_control(verb, run, tasks, plate)

            self.bridge.call(lambda s: skippable_tasks(s, run_id), open_skip)
            return None
        return self._open_control(verb, run, [], plate)

    def _open_control(
        self, verb: str, run: RunRow, tasks: list[Any], plate: str | None
    ) -> CommandDialog:
        dlg = CommandDialog(
            verb,
            run,
            tasks=tasks,
            plate=plate,
            signs=self._signs(ACTIONS[verb]),
            parent=self.window,
        )
        dlg.ready.connect(lambda reqs: self.send(reqs, dlg))
        self._open(dlg)
        return dlg

    # --- prompts ----------------------------------------------------------------------------

    def open_prompt(self, prompt_id: int) -> PromptDialog | None:
        """Open (or raise) the answer dialog of an open prompt."""
        if prompt_id in self.prompt_dialogs and self.prompt_dialogs[prompt_id].isVisible():
            dlg = self.prompt_dialogs[prompt_id]
            dlg.raise_()
            dlg.activateWindow()
            return dlg
        snap = self._snapshot()
        p = next((x for x in snap.prompts if x.id == prompt_id), None) if snap else None
        if p is None:
            return None
        if self.access.covered:
            return None
        run_id = p.run_id
        dlg = PromptDialog(
            p,
            self.clock,
            why_not=lambda action: self.why_not(action, run_id),
            signs=any(self._signs(choice_action(p, c)) for c in p.choices),
            parent=self.window,
        )
        dlg.ready.connect(lambda reqs: self.send(reqs, dlg))
        self.prompt_dialogs[prompt_id] = dlg
        self._open(dlg)
        return dlg

    def answer_first(self) -> None:
        snap = self._snapshot()
        if snap and snap.prompts:
            self.open_prompt(snap.prompts[0].id)

    def withdraw_answered(self, snap: Snapshot) -> None:
        """Withdraw the open dialogs of prompts no longer open (but not those showing the
        verdict on their own answer); forget closed dialogs."""
        open_ids = {p.id for p in snap.prompts}
        for pid, dlg in list(self.prompt_dialogs.items()):
            if pid not in open_ids and dlg.isVisible() and not dlg.withdrawn:
                if dlg.has_sent and not dlg.engine_rejected:
                    continue  # answered by this dialog: it shows the verdict
                dlg.withdraw("it has been answered (or its default applied)")
            if not dlg.isVisible():
                self.prompt_dialogs.pop(pid, None)

    def stop_timers(self) -> None:
        for dlg in list(self.prompt_dialogs.values()):
            dlg.timer.stop()

    # --- alarms -----------------------------------------------------------------------------

    def acknowledge_dialog(self, alarm_id: int) -> AcknowledgeDialog | None:
        snap = self._snapshot()
        a = next((x for x in snap.alarms if x.id == alarm_id), None) if snap else None
        if snap is None or a is None:
            return None
        if self._refused(Action.ANNOTATE, a.run_id):
            return None
        dlg = AcknowledgeDialog(a, snap.zone(self._run_id()), self.window)
        dlg.ready.connect(lambda aid, note: self.acknowledge(aid, note, dlg))
        self._open(dlg)
        return dlg

    def acknowledge(self, alarm_id: int, note: str, dialog: Any = None) -> None:
        who, wall = self.access.user, self.wall
        if who is None or self.access.locked:
            self.error.emit("nobody is signed in, or the console is locked")
            return

        def ok(_: Any) -> None:
            if dialog is not None:
                dialog.sent()
            self.said.emit(f"Alarm {alarm_id} acknowledged.")
            self.written.emit()

        self.bridge.call(
            lambda s: acknowledge(s, alarm_id, who=who, now=wall.now(), reason=note),
            ok,
            dialog.failed if dialog is not None else self.error.emit,
        )

    # --- a new run --------------------------------------------------------------------------

    def new_run(self) -> NewRunDialog | None:
        if self._refused(Action.REGISTER_RUN, None):
            return None
        run = self.current_run()
        dlg = NewRunDialog(
            self.bridge.call,
            self.clock,
            who=lambda: self.access.user,
            wall=self.wall,
            timezone=run.timezone if run else "UTC",
            parent=self.window,
        )
        dlg.registered.connect(self.registered)
        dlg.registered.connect(self.follow_start)
        self._open(dlg)
        return dlg
