"""The console's main window: the engine strip, tabs, the alarm banner, the prompts panel,
the run controls.

It owns the worker bridge (all store access off the GUI thread) and a poller that reads a
snapshot on a timer (:mod:`labctl.gui.poller`); each snapshot is handed to the engine strip
(always visible: whether an engine carries the runs out, :mod:`labctl.gui.verdicts`), the
banner, the run strip (:mod:`labctl.gui.current_run`), the prompts panel and the tabs
(:mod:`labctl.gui.console_tabs`). Commands go through dialogs
(:mod:`labctl.gui.operator_commands`) and are queued on the worker thread; the engine
applies or rejects them, and the verdict shows in the dialog that sent the command and in
the "Your commands" panel. Menus and shortcuts are :mod:`labctl.gui.menus`.

Who uses the window is :class:`~labctl.gui.access.ConsoleAccess`'s: on a database with
accounts the window reads nothing until someone signs in, locks after inactivity, and
every control the user's role does not allow is disabled with the reason as its tooltip;
the status bar says who is signed in. A production database without accounts opens
read-only under a banner that says how to set it up.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QResizeEvent
from PyQt6.QtWidgets import (
    QDialog,
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QStatusBar,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from labctl.accounts import Action
from labctl.clock import Clock, PacedClock, RealClock
from labctl.errors import LabctlError
from labctl.gui import theme
from labctl.gui.access import IDLE_LOCK_S, ConsoleAccess
from labctl.gui.alarm_banner import AlarmBanner
from labctl.gui.auth import Access, not_set_up_text
from labctl.gui.console_tabs import TABS, ConsoleTabs
from labctl.gui.current_run import RunPicker, RunStrip, default_run
from labctl.gui.dialogs import CommandDialog, PromptDialog
from labctl.gui.header import attach_header
from labctl.gui.maps import attach_maps
from labctl.gui.menus import MenuSlots, build_menus
from labctl.gui.models.commands import ACTIONS
from labctl.gui.models.common import seconds_text
from labctl.gui.models.protocol import ProtocolInfo
from labctl.gui.models.runs import RunRow
from labctl.gui.models.snapshot import Snapshot, SnapshotLoader
from labctl.gui.new_run import NewRunDialog
from labctl.gui.operator_commands import OperatorCommands
from labctl.gui.poller import SnapshotPoller
from labctl.gui.prompts_panel import PromptsPanel
from labctl.gui.training import TrainingConfig, TrainingLauncher, TrainingSession
from labctl.gui.training_dialog import TrainingDialog
from labctl.gui.verdicts import EngineStrip, VerdictPanel
from labctl.gui.wall import attach_wall
from labctl.gui.worker import StoreBridge


class ConsoleStatusBar(QStatusBar):
    """The run database, who is signed in (and their role), when the store was last read
    and how many commands wait for the engine; messages show on the left for a while."""

    def __init__(self, db_path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.db = QLabel(f"{db_path}")
        self.actor = QLabel("")
        self.actor.setObjectName("signedIn")
        self.time = QLabel("connecting…")
        self.cmds = QLabel("")
        self.addPermanentWidget(self.cmds)
        self.addPermanentWidget(self.actor)
        self.addPermanentWidget(self.time)
        self.addWidget(self.db)

    def set_pending(self, n: int) -> None:
        self.cmds.setText(f"{n} command{'s' if n != 1 else ''} waiting for the engine" if n else "")


class MainWindow(QMainWindow):
    """The operator console on one run database.

    ``clock`` gives "now" (countdowns, day numbers, the timeline's now-line) and stamps the
    commands written; ``wall`` (a real clock by default) reads the engine's heartbeat and
    stamps sign-ins, sessions and signatures, wall-clock times even when ``clock`` is
    paced, and times the inactivity lock (``idle_lock_s`` seconds without input).
    ``actor``: the name commands are given in on a practice database without accounts
    (default: the operating system's login name).
    """

    snapshot_changed = pyqtSignal(object)

    def __init__(
        self,
        db_path: Path,
        clock: Clock,
        *,
        actor: str | None = None,
        wall: Clock | None = None,
        poll_ms: int = 2000,
        training: TrainingSession | None = None,
        launcher: TrainingLauncher | None = None,
        idle_lock_s: float = IDLE_LOCK_S,
    ) -> None:
        super().__init__()
        self.db_path = Path(db_path)
        self.clock = clock
        self.training = training
        self.launcher = launcher
        self.snapshot: Snapshot | None = None
        self.run_id: int | None = None
        self.wall = wall or RealClock()
        self.loader = SnapshotLoader(
            clock, self.wall, simulating=training.running if training is not None else None
        )
        self.bridge = StoreBridge(self.db_path, clock, self)
        self.bridge.error.connect(self.show_error)
        self.access = ConsoleAccess(
            self,
            self.bridge,
            self.wall,
            actor=actor,
            training=training is not None,
            idle_s=idle_lock_s,
        )
        self.commands = OperatorCommands(
            self,
            self.bridge,
            clock,
            self.loader,
            snapshot=lambda: self.snapshot,
            run_id=lambda: self.run_id,
            access=self.access,
            wall=self.wall,
        )
        self.commands.said.connect(self.say)
        self.commands.error.connect(self.show_error)
        self.commands.written.connect(self.refresh)
        self.commands.registered.connect(self._registered)
        self.commands.verdict.connect(lambda v: self.verdict_panel.show_verdict(v))
        self.children_windows: list[MainWindow] = []
        self.messages: list[str] = []  # status messages, newest last (tests read them)

        title = f"labctl console · {self.db_path.name}"
        if training:
            title = f"TRAINING · {title}"
        self.setWindowTitle(title)
        self.resize(1440, 900)
        self._build_central(training)
        self._build_prompts_dock()

        self.run_box = RunPicker()
        self.run_box.activated.connect(lambda i: self.set_run(self.run_box.itemData(i)))
        self.menu_actions = build_menus(
            self,
            self.run_box,
            TABS,
            MenuSlots(
                new_run=self.new_run,
                refresh=self.refresh,
                training=self.training_dialog,
                control=self.control,
                confirm_store=self.confirm_store,
                answer_first=self.commands.answer_first,
                export=self.audit_view.choose_export,
                show_tab=self.show_tab,
                lock=self.access.lock,
                switch_user=self.access.switch_user,
            ),
        )
        self.status_bar = ConsoleStatusBar(self.db_path, self)
        self.setStatusBar(self.status_bar)

        self.runs_view.run_selected.connect(self.set_run)
        self.runs_view.new_run.connect(self.new_run)
        self.devices_view.acknowledge.connect(self.commands.acknowledge_dialog)
        self.strip.pause.clicked.connect(lambda: self.control("pause"))
        self.strip.resume.clicked.connect(lambda: self.control("resume"))
        self.strip.release.clicked.connect(lambda: self.control("release"))
        self.strip.skip.clicked.connect(lambda: self.control("skip"))
        self.strip.abort.clicked.connect(lambda: self.control("abort"))
        self.strip.set_run(None, None)

        self.poller = SnapshotPoller(self.bridge, self.loader, poll_ms, self)
        self.poller.snapshot.connect(self._on_snapshot)
        self.poller.failed.connect(self._on_poll_error)
        self.clock_timer = QTimer(self)
        self.clock_timer.setInterval(1000)
        self.clock_timer.timeout.connect(self._tick)
        self.clock_timer.start()
        self.workcell_clock = attach_header(self)  # the workcell's time; the engine's age
        self.access.changed.connect(self._access_changed)
        self.access.viewing.connect(self._viewing)
        self.access.quit.connect(self.close)
        self.access.said.connect(self.say)
        attach_maps(self)  # the Maps tab and manual device actions
        attach_wall(self)  # View > Wall monitor
        self._access_changed()
        self.access.start()

    # --- building ---------------------------------------------------------------------------

    def _build_central(self, training: TrainingSession | None) -> None:
        """The training strip (in training), the engine strip, the alarm banner, the verdicts
        of this console's commands, the run strip and the tabs."""
        central = QWidget()
        col = QVBoxLayout(central)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        if training is not None:
            strip = QLabel(
                f"  TRAINING MODE · {training.describe()} · nothing here touches real devices  "
            )
            strip.setObjectName("trainingStrip")
            strip.setStyleSheet(
                f"background: {theme.YELLOW}; color: black; font-weight: bold; padding: 6px;"
            )
            col.addWidget(strip)
        self.readonly_strip = QLabel(f"  READ-ONLY · {not_set_up_text(self.db_path)}")
        self.readonly_strip.setObjectName("readOnlyStrip")
        self.readonly_strip.setWordWrap(True)
        self.readonly_strip.setStyleSheet(
            f"background: {theme.ORANGE}; color: black; font-weight: bold; padding: 6px;"
        )
        self.readonly_strip.hide()
        col.addWidget(self.readonly_strip)
        self.engine_strip = EngineStrip()
        if isinstance(self.clock, PacedClock):
            # A practice clock runs faster than this computer's: the engine's heartbeat is
            # read on the computer's clock, which the strip then says.
            self.engine_strip.wall_note = " on this computer's clock"
        self.engine_strip.confirm.connect(self.confirm_store)
        col.addWidget(self.engine_strip)
        self.banner = AlarmBanner()
        self.banner.acknowledge.connect(self.commands.acknowledge_dialog)
        col.addWidget(self.banner)
        self.verdict_panel = VerdictPanel()
        col.addWidget(self.verdict_panel)
        self.strip = RunStrip()
        col.addWidget(self.strip)
        self.tabs = ConsoleTabs(
            self.bridge, self.clock, run_id=lambda: self.run_id, current_run=self.current_run
        )
        self.tabs.said.connect(self.say)
        col.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        # The views, by name (tests and tools reach them through the window).
        self.runs_view = self.tabs.runs_view
        self.timeline_view = self.tabs.timeline_view
        self.today_view = self.tabs.today_view
        self.devices_view = self.tabs.devices_view
        self.protocol_view = self.tabs.protocol_view
        self.audit_view = self.tabs.audit_view

    def _build_prompts_dock(self) -> None:
        self.prompts = PromptsPanel(self.clock)
        self.prompts.answer.connect(self.open_prompt)
        dock = QDockWidget("Waiting for you", self)
        dock.setObjectName("promptsDock")
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        dock.setWidget(self.prompts)
        dock.setMinimumWidth(320)
        self.prompts_dock = dock
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)

    def show_tab(self, i: int) -> None:
        self.tabs.setCurrentIndex(i)

    # --- who uses the console (labctl.gui.access) -------------------------------------------

    @property
    def actor(self) -> str:
        """The name commands are given in now ("" when nobody is signed in)."""
        user = self.access.user
        return user.name if user is not None else ""

    def _viewing(self, on: bool) -> None:
        if on:
            self.poller.start()
        else:
            self.poller.stop()

    def _access_changed(self) -> None:
        a = self.access
        covered = a.covered
        for w in (self.menuBar(), self.centralWidget(), self.prompts_dock, self.statusBar()):
            if w is not None:
                w.setEnabled(not covered)
        for tb in self.findChildren(QToolBar):
            tb.setEnabled(not covered)
        self.status_bar.actor.setText(a.status_text())
        self.readonly_strip.setVisible(a.mode is Access.NOT_SET_UP)
        self._apply_permissions()

    def _apply_permissions(self) -> None:
        """Disable what the user may not do now, each with the reason as its tooltip."""
        apply_permissions(self)

    def resizeEvent(self, event: QResizeEvent | None) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if self.access.lock_screen.isVisible():
            self.access.lock_screen.cover()

    # --- snapshots --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Ask the worker for a snapshot (skipped while one is being read)."""
        self.poller.refresh()

    def _on_poll_error(self, message: str) -> None:
        self.status_bar.time.setText("✕ store unreadable")
        self.engine_strip.set_unknown(message)
        self.show_error(message)

    def _tick(self) -> None:
        if self.snapshot is not None and self.timeline_view.isVisible():
            self.timeline_view.canvas.tick_now()

    def _on_snapshot(self, snap: Snapshot) -> None:
        tz = snap.workcell_zone(self.run_id)
        self.status_bar.time.setText(f"updated {seconds_text(self.clock.now(), tz)}")
        if snap.engine is not None:
            self.engine_strip.set_engine(snap.engine)
        self.commands.follow(snap)
        if snap is self.snapshot:
            return
        first = self.snapshot is None
        same = snap.same_data(self.snapshot)
        self.snapshot = snap
        if same:
            return  # only the engine's reading moved: the views stay as they are
        if self.run_id is None or snap.run(self.run_id) is None:
            pick = default_run(snap.runs)
            self.run_id = pick.id if pick else None
        self.run_box.fill(snap.runs, self.run_id)
        self.banner.set_alarms(snap.alarms, tz, runs=snap.runs, now=snap.now)
        self.strip.set_run(snap.run(self.run_id), snap.now)
        self._apply_permissions()
        self.prompts.set_prompts(snap.prompts)
        self.tabs.show_snapshot(snap)
        self.status_bar.set_pending(snap.pending_commands)
        self.commands.withdraw_answered(snap)
        if first:
            self.tabs.run_changed()
        self.snapshot_changed.emit(snap)

    # --- the current run --------------------------------------------------------------------

    def current_run(self) -> RunRow | None:
        return self.snapshot.run(self.run_id) if self.snapshot else None

    def set_run(self, run_id: int | None) -> None:
        if run_id is None or run_id == self.run_id:
            return
        self.run_id = run_id
        snap = self.snapshot
        if snap is not None:
            self.strip.set_run(snap.run(run_id), snap.now)
            self._apply_permissions()
            self.run_box.select(run_id)
            self.tabs.show_run(snap, run_id)
        self.tabs.run_changed()

    # --- messages ---------------------------------------------------------------------------

    def say(self, message: str) -> None:
        self.messages.append(message)
        self.status_bar.showMessage(message, 15_000)

    def show_error(self, message: str) -> None:
        self.messages.append(f"✕ {message}")
        self.status_bar.showMessage(f"✕ {message}", 30_000)

    # --- commands (labctl.gui.operator_commands) --------------------------------------------

    @property
    def prompt_dialogs(self) -> dict[int, PromptDialog]:
        return self.commands.prompt_dialogs

    @property
    def last_dialog(self) -> QDialog | None:
        """The command dialog opened last (None before the first)."""
        return self.commands.last_dialog

    def control(self, verb: str, *, plate: str | None = None) -> CommandDialog | None:
        """Open the dialog of a run control (pause, resume, release, skip, abort)."""
        return self.commands.control(verb, plate=plate)

    def confirm_store(self) -> CommandDialog | None:
        """Open "Confirm the devices were checked" for a held engine (a supervisor's)."""
        return self.commands.confirm_store()

    def open_prompt(self, prompt_id: int) -> PromptDialog | None:
        """Open (or raise) the answer dialog of an open prompt."""
        return self.commands.open_prompt(prompt_id)

    def new_run(self) -> NewRunDialog | None:
        return self.commands.new_run()

    def _registered(self, run_id: int) -> None:
        self.say(f"Run {run_id} registered; its start command was sent to the engine.")
        self.run_id = run_id
        self.snapshot = None
        self.refresh()

    # --- reads on the worker (labctl.gui.console_tabs) -------------------------------------

    @property
    def protocol_info(self) -> ProtocolInfo | None:
        """The current run's protocol once loaded (the Protocol tab loads it when shown)."""
        return self.tabs.protocol_info

    def verify_chain(self) -> None:
        self.tabs.verify_chain()

    def export_batch_record(self, path: str) -> None:
        self.tabs.export_batch_record(path)

    # --- training ---------------------------------------------------------------------------

    def training_dialog(self) -> None:
        dlg = TrainingDialog(self)
        dlg.start.connect(self.start_training)
        dlg.open()

    def start_training(self, cfg: TrainingConfig) -> MainWindow | None:
        launcher = self.launcher or TrainingLauncher(self.clock)
        try:
            session = launcher.start(cfg)
        except LabctlError as exc:
            QMessageBox.warning(self, "Training", exc.user_message())
            return None
        # Training needs no account: its practice database names the user who started it.
        win = MainWindow(
            session.db, session.clock, actor=self.actor or None, wall=self.wall, training=session
        )
        self.children_windows.append(win)
        win.show()
        return win

    # --- closing ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop timers and the worker thread, ending the user's session (idempotent)."""
        self.poller.stop()
        self.clock_timer.stop()
        self.prompts.timer.stop()
        self.commands.stop_timers()
        self.access.shutdown()
        self.bridge.shutdown(last=self.access.sign_out_on_close())
        if self.training is not None:
            self.training.stop()

    def closeEvent(self, event: QCloseEvent | None) -> None:  # noqa: N802 - Qt's name
        for w in self.children_windows:
            w.close()
        self.shutdown()
        super().closeEvent(event)


def _permit(action: QAction, why: str | None) -> None:
    """Enable ``action`` when ``why`` is None, else disable it and say why."""
    action.setEnabled(why is None)
    action.setToolTip(f"Not allowed: {why}" if why else action.text().replace("&", ""))


def apply_permissions(win: MainWindow) -> None:
    """Disable what the user may not do now in window ``win``, each control with the
    reason as its tooltip (the run strip, menus, toolbar, banner, engine strip)."""
    a = win.access
    run = win.current_run()
    reg = run.registered_by if run is not None else None
    why = {verb: a.why_not(ACTIONS[verb], reg) for verb in win.strip.buttons}
    win.strip.set_denied(why)
    for verb, w in why.items():
        _permit(win.menu_actions[verb], w)
    _permit(win.menu_actions["new"], a.why_not(Action.REGISTER_RUN))
    _permit(win.menu_actions["confirm-store"], a.why_not(Action.CONFIRM_STORE))
    _permit(win.menu_actions["answer"], a.why_not(Action.VIEW))
    _permit(win.menu_actions["export"], a.why_not(Action.VIEW))
    no_new = a.why_not(Action.REGISTER_RUN)
    win.runs_view.new_button.setEnabled(no_new is None)
    win.runs_view.new_button.setToolTip(f"Not allowed: {no_new}" if no_new else "")
    no_confirm = a.why_not(Action.CONFIRM_STORE)
    win.engine_strip.confirm_button.setEnabled(no_confirm is None)
    if no_confirm:
        win.engine_strip.confirm_button.setToolTip(f"Not allowed: {no_confirm}")
    alarm = win.banner.alarms[0] if win.banner.alarms else None
    alarm_run = alarm.run_id if alarm is not None else None
    no_ack = a.why_not(Action.ANNOTATE, win.commands.registered_by(alarm_run))
    win.banner.ack.setEnabled(no_ack is None)
    win.banner.ack.setToolTip(
        f"Not allowed: {no_ack}"
        if no_ack
        else "Record that you have seen this alarm (it stays listed until cleared)"
    )
    accounts = a.mode is Access.ACCOUNTS and a.user is not None
    win.menu_actions["lock"].setEnabled(accounts and not a.locked)
    win.menu_actions["switch-user"].setEnabled(accounts)
    for key in ("refresh", "training"):
        win.menu_actions[key].setEnabled(not a.covered)
