"""The operator's commands: the dialogs that take them and the worker calls that queue them.

:class:`OperatorCommands` opens the run-control, prompt, alarm and new-run dialogs over the
main window and queues what they send on the worker thread (``bridge.call``); the engine
applies the commands and the next snapshot shows the result. It knows the window only
through the callables and signals it is given, so it imports no window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtWidgets import QDialog, QWidget

from labctl.clock import Clock
from labctl.gui.auth import PasswordFile, Verifier
from labctl.gui.dialogs import AcknowledgeDialog, CommandDialog, PromptDialog
from labctl.gui.models.commands import CommandRequest, acknowledge, skippable_tasks, submit_all
from labctl.gui.models.runs import RunRow
from labctl.gui.models.snapshot import Snapshot, SnapshotLoader
from labctl.gui.new_run import NewRunDialog
from labctl.gui.worker import StoreBridge


class OperatorCommands(QObject):
    """Opens the command dialogs over ``window`` and queues their commands for the engine.

    ``snapshot`` and ``run_id`` read the window's latest snapshot and current run; commands
    are written as ``actor``, irreversible ones checked with ``verifier`` (or a password
    chosen on first use through ``password_setup``). Each queued command is watched by
    ``loader``, so the snapshot that follows reports whether the engine applied it.
    """

    #: A line for the status bar: a command queued or applied, an alarm acknowledged.
    said = pyqtSignal(str)
    #: An error for the status bar: a command refused by the engine or not offered at all
    #: (no run chosen), a failed acknowledgement.
    error = pyqtSignal(str)
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
        actor: str,
        verifier: Verifier | None,
        password_setup: PasswordFile | None,
    ) -> None:
        super().__init__(window)
        self.window = window
        self.bridge = bridge
        self.clock = clock
        self.loader = loader
        self._snapshot = snapshot
        self._run_id = run_id
        self.actor = actor
        self.verifier = verifier
        self.password_setup = password_setup
        self.prompt_dialogs: dict[int, PromptDialog] = {}
        self.last_dialog: QDialog | None = None  # the dialog opened last (tests, screenshots)

    def current_run(self) -> RunRow | None:
        snap = self._snapshot()
        return snap.run(self._run_id()) if snap else None

    def _first_use(self) -> bool:
        return self.password_setup is not None and not self.password_setup.is_set()

    def _open(self, dlg: QDialog) -> None:
        self.last_dialog = dlg
        dlg.open()

    # --- sending ----------------------------------------------------------------------------

    def send(
        self,
        requests: Sequence[CommandRequest],
        password: str | None,
        new_password: str | None,
        dialog: Any,
    ) -> None:
        """Queue ``requests`` on the worker (all or none); tell ``dialog`` how it went."""
        actor, verifier, setup, loader = self.actor, self.verifier, self.password_setup, self.loader
        reqs = list(requests)

        def fn(store: Any) -> list[Any]:
            if new_password and setup is not None:
                setup.set(new_password)
            cmds = submit_all(store, reqs, actor=actor, verifier=verifier, password=password)
            for c in cmds:
                loader.watch(c.id)
            return cmds

        def ok(cmds: list[Any]) -> None:
            dialog.sent(cmds)
            self.said.emit(
                "Queued for the engine: "
                + "; ".join(
                    f"{r.describe()} (command {c.id})" for r, c in zip(reqs, cmds, strict=True)
                )
            )
            self.written.emit()

        self.bridge.call(fn, ok, dialog.failed)

    def report_finished(self, snap: Snapshot) -> None:
        """Say which watched commands the engine applied or refused."""
        for c in snap.finished_commands:
            if c.state == "rejected":
                self.error.emit(f"The engine refused command {c.id} ({c.verb}): {c.reason}")
            else:
                self.said.emit(f"Command {c.id} ({c.verb}) applied by the engine.")

    # --- run controls -----------------------------------------------------------------------

    def control(self, verb: str, *, plate: str | None = None) -> CommandDialog | None:
        """Open the dialog of a run control (pause, resume, release, skip, abort).

        Skip first reads the tasks it may name on the worker: its dialog opens afterwards
        (``last_dialog``) and this returns None.
        """
        run = self.current_run()
        if run is None:
            self.error.emit("choose a run first")
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
            verb, run, tasks=tasks, plate=plate, first_use=self._first_use(), parent=self.window
        )
        dlg.ready.connect(lambda reqs, pw, new: self.send(reqs, pw, new, dlg))
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
        dlg = PromptDialog(p, self.clock, first_use=self._first_use(), parent=self.window)
        dlg.ready.connect(lambda reqs, pw, new: self.send(reqs, pw, new, dlg))
        self.prompt_dialogs[prompt_id] = dlg
        self._open(dlg)
        return dlg

    def answer_first(self) -> None:
        snap = self._snapshot()
        if snap and snap.prompts:
            self.open_prompt(snap.prompts[0].id)

    def withdraw_answered(self, snap: Snapshot) -> None:
        """Withdraw the open dialogs of prompts no longer open; forget closed dialogs."""
        open_ids = {p.id for p in snap.prompts}
        for pid, dlg in list(self.prompt_dialogs.items()):
            if pid not in open_ids and dlg.isVisible():
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
        dlg = AcknowledgeDialog(a, snap.zone(self._run_id()), self.window)
        dlg.ready.connect(lambda aid, note: self.acknowledge(aid, note, dlg))
        self._open(dlg)
        return dlg

    def acknowledge(self, alarm_id: int, note: str, dialog: Any = None) -> None:
        actor = self.actor

        def ok(_: Any) -> None:
            if dialog is not None:
                dialog.sent()
            self.said.emit(f"Alarm {alarm_id} acknowledged.")
            self.written.emit()

        self.bridge.call(
            lambda s: acknowledge(s, alarm_id, actor=actor, reason=note),
            ok,
            dialog.failed if dialog is not None else self.error.emit,
        )

    # --- a new run --------------------------------------------------------------------------

    def new_run(self) -> NewRunDialog:
        run = self.current_run()
        dlg = NewRunDialog(
            self.bridge.call,
            self.clock,
            timezone=run.timezone if run else "UTC",
            parent=self.window,
        )
        dlg.registered.connect(self.registered)
        self._open(dlg)
        return dlg
