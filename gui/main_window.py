"""The console's main window: tabs, the alarm banner, the prompts panel, the run controls.

It owns the worker bridge (all store access off the GUI thread) and polls the store on a
timer; each snapshot is handed to the views. Commands go through dialogs and are queued on
the worker thread; the engine applies them and the next snapshot shows the result.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QKeySequence
from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from labctl.clock import Clock
from labctl.errors import LabctlError
from labctl.gui import models, theme
from labctl.gui.audit_view import AuditView
from labctl.gui.auth import PasswordFile, Verifier
from labctl.gui.devices_view import DevicesView
from labctl.gui.dialogs import AcknowledgeDialog, CommandDialog, PromptDialog
from labctl.gui.models import CommandRequest, ProtocolInfo, RunRow, Snapshot
from labctl.gui.new_run import NewRunDialog
from labctl.gui.prompts_panel import PromptsPanel
from labctl.gui.protocol_view import ProtocolView, prepare_diagram
from labctl.gui.runs_view import RunsView
from labctl.gui.timeline_view import TimelineView
from labctl.gui.today_view import TodayView
from labctl.gui.training import TrainingConfig, TrainingLauncher, TrainingSession
from labctl.gui.widgets import AlarmBanner, Badge, button, label
from labctl.gui.worker import StoreBridge

TABS = ("Runs", "Timeline", "Today", "Devices", "Protocol", "Audit")


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - some containers have no user name
        return "operator"


def default_run(runs: Sequence[RunRow]) -> RunRow | None:
    """The run to show first: one that needs attention, then one under way, then planned."""
    rank = {"holding": 0, "running": 1, "paused": 1, "planned": 2}

    def key(r: RunRow) -> tuple[int, int, int]:
        attention = 0 if (r.open_prompts or r.active_alarms) else 1
        return (rank.get(r.state, 3), attention, -r.id)

    return min(runs, key=key) if runs else None


class RunStrip(QFrame):
    """The current run in one line, with its controls."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("runStrip")
        self.setStyleSheet(
            f"#runStrip {{ background: {theme.PAPER}; border-bottom: 1px solid {theme.RULE}; }}"
        )
        lay = QHBoxLayout(self)
        lay.setContentsMargins(14, 8, 10, 8)
        self.name = label("No run selected", sub=True)
        self.badge = Badge()
        self.detail = label("", muted=True)
        # Long details are cut by the window, never widen it.
        self.detail.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.name)
        lay.addWidget(self.badge)
        lay.addWidget(self.detail, 1)
        self.pause = button("‖ Pause")
        self.pause.setToolTip("Pause the run or one plate (Ctrl+P)")
        self.resume = button("▶ Resume")
        self.resume.setToolTip("Resume the run or one plate (Ctrl+Shift+P)")
        self.release = button("Release hold")
        self.skip = button("↷ Skip task…")
        self.skip.setToolTip("Skip a task (a deviation; needs your password) (Ctrl+K)")
        self.abort = button("■ Abort…", "danger")
        self.abort.setToolTip("Abort the run (cannot be undone; needs your password)")
        for b in (self.pause, self.resume, self.release, self.skip, self.abort):
            lay.addWidget(b)

    def set_run(self, r: RunRow | None, now: Any) -> None:
        if r is None:
            self.name.setText("No run selected")
            self.badge.set_state("", "pending")
            self.detail.setText("")
            for b in (self.pause, self.resume, self.release, self.skip, self.abort):
                b.setEnabled(False)
            return
        self.name.setText(r.name)
        self.badge.set_state(r.state, r.tone)
        nxt = ""
        if r.next_task:
            nxt = f" · next: {r.next_task} ({r.next_plates}) at {models.when_text(r.next_time, r.timezone, now)}"
        paused = f" · paused plates: {', '.join(r.paused_plates)}" if r.paused_plates else ""
        self.detail.setText(f"{r.protocol} · {r.day_text}{nxt}{paused}")
        # The engine pauses a running or holding run, or one plate of it.
        self.pause.setEnabled(r.state in ("running", "holding"))
        self.resume.setEnabled(r.state == "paused" or bool(r.paused_plates))
        self.release.setVisible(r.state == "holding")
        self.skip.setEnabled(r.active)
        self.abort.setEnabled(r.active)


class MainWindow(QMainWindow):
    """The operator console on one run database.

    ``clock`` gives "now" (countdowns, day numbers, the timeline's now-line) and stamps the
    commands written; ``verifier`` checks passwords for irreversible commands and
    ``password_setup`` (a :class:`PasswordFile`, or None when the verifier needs no setup)
    lets the operator choose one on first use.
    """

    snapshot_changed = pyqtSignal(object)

    def __init__(
        self,
        db_path: Path,
        clock: Clock,
        *,
        actor: str | None = None,
        verifier: Verifier | None = None,
        password_setup: PasswordFile | None = None,
        poll_ms: int = 2000,
        training: TrainingSession | None = None,
        launcher: TrainingLauncher | None = None,
    ) -> None:
        super().__init__()
        self.db_path = Path(db_path)
        self.clock = clock
        self.actor = actor or current_user()
        self.password_setup = password_setup
        self.verifier = verifier or (password_setup.verifier() if password_setup else None)
        self.training = training
        self.launcher = launcher
        self.snapshot: Snapshot | None = None
        self.run_id: int | None = None
        self.loader = models.SnapshotLoader(clock)
        self.bridge = StoreBridge(self.db_path, clock, self)
        self.bridge.error.connect(self.show_error)
        self.prompt_dialogs: dict[int, PromptDialog] = {}
        self.protocol_info: ProtocolInfo | None = None
        self.children_windows: list[MainWindow] = []
        self._polling = False
        self._protocol_loading: int | None = None
        self.messages: list[str] = []  # status messages, newest last (tests read them)

        title = f"labctl console · {self.db_path.name}"
        if training:
            title = f"TRAINING · {title}"
        self.setWindowTitle(title)
        self.resize(1440, 900)

        central = QWidget()
        col = QVBoxLayout(central)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        if training is not None:
            strip = QLabel(
                f"  TRAINING MODE · simulated workcell at a day a minute · {training.db}  "
                "· nothing here touches real devices"
            )
            strip.setObjectName("trainingStrip")
            strip.setStyleSheet(
                f"background: {theme.YELLOW}; color: black; font-weight: bold; padding: 6px;"
            )
            col.addWidget(strip)
        self.banner = AlarmBanner()
        self.banner.acknowledge.connect(self.acknowledge_dialog)
        self.banner.show_all.connect(lambda: self.show_tab(3))
        col.addWidget(self.banner)
        self.strip = RunStrip()
        col.addWidget(self.strip)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(False)
        col.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self.runs_view = RunsView()
        self.timeline_view = TimelineView(clock)
        self.today_view = TodayView()
        self.devices_view = DevicesView()
        self.protocol_view = ProtocolView()
        self.audit_view = AuditView(self.bridge.call)
        for i, (name, w) in enumerate(
            zip(
                TABS,
                (
                    self.runs_view,
                    self.timeline_view,
                    self.today_view,
                    self.devices_view,
                    self.protocol_view,
                    self.audit_view,
                ),
                strict=True,
            )
        ):
            self.tabs.addTab(w, name)
            self.tabs.setTabToolTip(i, f"{name} (Ctrl+{i + 1})")
        self.tabs.currentChanged.connect(self._tab_changed)

        self.prompts = PromptsPanel(clock)
        self.prompts.answer.connect(self.open_prompt)
        dock = QDockWidget("Waiting for you", self)
        dock.setObjectName("promptsDock")
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        dock.setWidget(self.prompts)
        dock.setMinimumWidth(320)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)

        self.run_box = QComboBox()
        self.run_box.setMinimumWidth(320)
        self.run_box.setToolTip("The run the tabs show")
        self.run_box.activated.connect(lambda i: self.set_run(self.run_box.itemData(i)))
        self._build_actions()

        self.status_db = QLabel(f"{self.db_path}")
        self.status_actor = QLabel(f"operator: {self.actor}")
        self.status_time = QLabel("connecting…")
        self.status_cmds = QLabel("")
        sb = self.statusBar()
        sb.addPermanentWidget(self.status_cmds)
        sb.addPermanentWidget(self.status_actor)
        sb.addPermanentWidget(self.status_time)
        sb.addWidget(self.status_db)

        self.runs_view.run_selected.connect(self.set_run)
        self.runs_view.new_run.connect(self.new_run)
        self.devices_view.acknowledge.connect(self.acknowledge_dialog)
        self.today_view.want_prep.connect(self._load_prep)
        self.audit_view.verify.connect(self.verify_chain)
        self.audit_view.export.connect(self.export_batch_record)
        self.strip.pause.clicked.connect(lambda: self.control("pause"))
        self.strip.resume.clicked.connect(lambda: self.control("resume"))
        self.strip.release.clicked.connect(lambda: self.control("release"))
        self.strip.skip.clicked.connect(lambda: self.control("skip"))
        self.strip.abort.clicked.connect(lambda: self.control("abort"))
        self.strip.set_run(None, None)

        self.timer = QTimer(self)
        self.timer.setInterval(poll_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.clock_timer = QTimer(self)
        self.clock_timer.setInterval(1000)
        self.clock_timer.timeout.connect(self._tick)
        self.clock_timer.start()
        self.refresh()

    # --- menus and shortcuts ----------------------------------------------------------------

    def _action(
        self,
        text: str,
        slot: Any,
        shortcut: str | QKeySequence.StandardKey | None = None,
        tip: str = "",
    ) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            a.setStatusTip(tip)
        a.triggered.connect(slot)
        self.addAction(a)
        return a

    def _build_actions(self) -> None:
        mb = self.menuBar()
        console = mb.addMenu("&Console")
        self.act_new = self._action(
            "&New run…", self.new_run, "Ctrl+N", "Register a run from a protocol file"
        )
        self.act_refresh = self._action("&Refresh", self.refresh, "F5", "Read the store now")
        self.act_training = self._action(
            "&Training run…",
            self.training_dialog,
            None,
            "Practise on the simulated workcell, a day a minute",
        )
        self.act_quit = self._action("&Quit", self.close, "Ctrl+Q")
        for a in (self.act_new, self.act_refresh, self.act_training, self.act_quit):
            console.addAction(a)
        run = mb.addMenu("&Run")
        self.act_pause = self._action("&Pause…", lambda: self.control("pause"), "Ctrl+P")
        self.act_resume = self._action("&Resume…", lambda: self.control("resume"), "Ctrl+Shift+P")
        self.act_release = self._action("Re&lease hold…", lambda: self.control("release"))
        self.act_skip = self._action("&Skip task…", lambda: self.control("skip"), "Ctrl+K")
        self.act_abort = self._action("&Abort run…", lambda: self.control("abort"))
        self.act_answer = self._action("Answer the first &prompt", self.answer_first, "Ctrl+Return")
        self.act_export = self._action("&Export batch record…", self.audit_view._export, "Ctrl+E")
        for a in (self.act_pause, self.act_resume, self.act_release, self.act_skip, self.act_abort):
            run.addAction(a)
        run.addSeparator()
        run.addAction(self.act_answer)
        run.addAction(self.act_export)
        view = mb.addMenu("&View")
        for i, name in enumerate(TABS):
            view.addAction(
                self._action(name, lambda _=False, i=i: self.show_tab(i), f"Ctrl+{i + 1}")
            )
        tb = self.addToolBar("Run")
        tb.setObjectName("runToolbar")
        tb.setMovable(False)
        tb.addWidget(QLabel("  Run "))
        tb.addWidget(self.run_box)
        tb.addSeparator()
        tb.addAction(self.act_new)
        tb.addAction(self.act_refresh)

    def show_tab(self, i: int) -> None:
        self.tabs.setCurrentIndex(i)

    # --- polling ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Ask the worker for a snapshot (skipped while one is being read)."""
        if self._polling:
            return
        self._polling = True
        self.bridge.call(self.loader.load, self._on_snapshot, self._on_poll_error)

    def _on_poll_error(self, message: str) -> None:
        self._polling = False
        self.status_time.setText("✕ store unreadable")
        self.show_error(message)

    def _tick(self) -> None:
        if self.snapshot is not None and self.timeline_view.isVisible():
            self.timeline_view.canvas.tick_now()

    def _on_snapshot(self, snap: Snapshot) -> None:
        self._polling = False
        tz = self._tz(snap)
        self.status_time.setText(f"updated {models.local(self.clock.now(), tz):%H:%M:%S}")
        for c in snap.finished_commands:
            if c.state == "rejected":
                self.show_error(f"The engine refused command {c.id} ({c.verb}): {c.reason}")
            else:
                self.say(f"Command {c.id} ({c.verb}) applied by the engine.")
        if snap is self.snapshot:
            return
        first = self.snapshot is None
        self.snapshot = snap
        if self.run_id is None or snap.run(self.run_id) is None:
            pick = default_run(snap.runs)
            self.run_id = pick.id if pick else None
        self._fill_run_box(snap)
        run = snap.run(self.run_id)
        self.runs_view.set_rows(snap.runs, snap.now)
        if self.run_id is not None:
            self.runs_view.select(self.run_id, emit=False)
        self.runs_view.show_details(run, snap.now)
        self.banner.set_alarms(snap.alarms, tz)
        self.strip.set_run(run, snap.now)
        self.prompts.set_prompts(snap.prompts)
        self.devices_view.set_devices(snap.devices, snap.now)
        self.timeline_view.run_id = self.run_id
        self.timeline_view.set_snapshot(snap)
        self.today_view.set_snapshot(snap, run)
        self.audit_view.notify_head(snap.head_seq)
        n = snap.pending_commands
        self.status_cmds.setText(
            f"{n} command{'s' if n != 1 else ''} waiting for the engine" if n else ""
        )
        open_ids = {p.id for p in snap.prompts}
        for pid, dlg in list(self.prompt_dialogs.items()):
            if pid not in open_ids and dlg.isVisible():
                dlg.withdraw("it has been answered (or its default applied)")
            if not dlg.isVisible():
                self.prompt_dialogs.pop(pid, None)
        if first:
            self._run_changed()
        self.snapshot_changed.emit(snap)

    def _tz(self, snap: Snapshot | None) -> str:
        if snap is None:
            return "UTC"
        run = snap.run(self.run_id)
        return run.timezone if run else (snap.runs[0].timezone if snap.runs else "UTC")

    def _fill_run_box(self, snap: Snapshot) -> None:
        self.run_box.blockSignals(True)
        self.run_box.clear()
        for r in snap.runs:
            self.run_box.addItem(f"{r.name}  ·  #{r.id}  ·  {r.state}", r.id)
        i = self.run_box.findData(self.run_id)
        if i >= 0:
            self.run_box.setCurrentIndex(i)
        self.run_box.blockSignals(False)

    # --- the current run --------------------------------------------------------------------

    def current_run(self) -> RunRow | None:
        return self.snapshot.run(self.run_id) if self.snapshot else None

    def set_run(self, run_id: int | None) -> None:
        if run_id is None or run_id == self.run_id:
            return
        self.run_id = run_id
        snap = self.snapshot
        if snap is not None:
            run = snap.run(run_id)
            self.strip.set_run(run, snap.now)
            self.runs_view.select(run_id, emit=False)
            self.runs_view.show_details(run, snap.now)
            i = self.run_box.findData(run_id)
            if i >= 0:
                self.run_box.setCurrentIndex(i)
            self.timeline_view.set_run(run_id)
            self.today_view.set_snapshot(snap, run)
        self._run_changed()

    def _run_changed(self) -> None:
        run = self.current_run()
        self.audit_view.set_run(
            self.run_id, run.timezone if run else "UTC", run.name if run else ""
        )
        self.protocol_info = None
        if self.tabs.currentWidget() is self.protocol_view:
            self.load_protocol()

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.protocol_view:
            self.load_protocol()

    def load_protocol(self) -> None:
        """Load the current run's locked protocol, plan and diagram (on the worker)."""
        run_id = self.run_id
        if run_id is None or self._protocol_loading == run_id:
            return
        if self.protocol_info is not None and self.protocol_info.run_id == run_id:
            return
        run = self.current_run()
        self._protocol_loading = run_id
        self.protocol_view.loading(run.name if run else f"run {run_id}")

        width = self.protocol_view.diagram_width()

        def work(store: Any) -> tuple[ProtocolInfo, Any]:
            info = models.protocol_info(store, run_id)
            return info, prepare_diagram(info.diagram_png, width)

        def done(result: tuple[ProtocolInfo, Any]) -> None:
            info, images = result
            self._protocol_loading = None
            if info.run_id == self.run_id:
                self.protocol_info = info
                r = self.current_run()
                self.protocol_view.set_info(info, r.day if r else None, images)

        def failed(msg: str) -> None:
            self._protocol_loading = None
            self.protocol_view.failed(msg)

        self.bridge.call(work, done, failed)

    def _load_prep(self, run_id: int, day: int) -> None:
        self.bridge.call(
            lambda s: models.prep_html(s, run_id, day),
            lambda page: self.today_view.set_prep(run_id, day, page),
            self.today_view.prep_failed,
        )

    # --- messages ---------------------------------------------------------------------------

    def say(self, message: str) -> None:
        self.messages.append(message)
        self.statusBar().showMessage(message, 15_000)

    def show_error(self, message: str) -> None:
        self.messages.append(f"✕ {message}")
        self.statusBar().showMessage(f"✕ {message}", 30_000)

    # --- commands ---------------------------------------------------------------------------

    def _first_use(self) -> bool:
        return self.password_setup is not None and not self.password_setup.is_set()

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
            cmds = models.submit_all(store, reqs, actor=actor, verifier=verifier, password=password)
            for c in cmds:
                loader.watch(c.id)
            return cmds

        def ok(cmds: list[Any]) -> None:
            dialog.sent(cmds)
            self.say(
                "Queued for the engine: "
                + "; ".join(
                    f"{r.describe()} (command {c.id})" for r, c in zip(reqs, cmds, strict=True)
                )
            )
            self.refresh()

        self.bridge.call(fn, ok, dialog.failed)

    def control(self, verb: str, *, plate: str | None = None) -> CommandDialog | None:
        """Open the dialog of a run control (pause, resume, release, skip, abort)."""
        run = self.current_run()
        if run is None:
            self.show_error("choose a run first")
            return None
        if verb == "skip":
            run_id = run.id
            self.bridge.call(
                lambda s: models.skippable_tasks(s, run_id),
                lambda tasks: self._open_control(verb, run, tasks, plate),
            )
            return None
        return self._open_control(verb, run, [], plate)

    def _open_control(
        self, verb: str, run: RunRow, tasks: list[Any], plate: str | None
    ) -> CommandDialog:
        dlg = CommandDialog(
            verb, run, tasks=tasks, plate=plate, first_use=self._first_use(), parent=self
        )
        dlg.ready.connect(lambda reqs, pw, new: self.send(reqs, pw, new, dlg))
        self.last_dialog: QDialog = dlg
        dlg.open()
        return dlg

    def open_prompt(self, prompt_id: int) -> PromptDialog | None:
        """Open (or raise) the answer dialog of an open prompt."""
        if prompt_id in self.prompt_dialogs and self.prompt_dialogs[prompt_id].isVisible():
            dlg = self.prompt_dialogs[prompt_id]
            dlg.raise_()
            dlg.activateWindow()
            return dlg
        snap = self.snapshot
        p = next((x for x in snap.prompts if x.id == prompt_id), None) if snap else None
        if p is None:
            return None
        dlg = PromptDialog(p, self.clock, first_use=self._first_use(), parent=self)
        dlg.ready.connect(lambda reqs, pw, new: self.send(reqs, pw, new, dlg))
        self.prompt_dialogs[prompt_id] = dlg
        self.last_dialog = dlg
        dlg.open()
        return dlg

    def answer_first(self) -> None:
        if self.snapshot and self.snapshot.prompts:
            self.open_prompt(self.snapshot.prompts[0].id)

    def acknowledge_dialog(self, alarm_id: int) -> AcknowledgeDialog | None:
        snap = self.snapshot
        a = next((x for x in snap.alarms if x.id == alarm_id), None) if snap else None
        if a is None:
            return None
        dlg = AcknowledgeDialog(a, self._tz(snap), self)
        dlg.ready.connect(lambda aid, note: self.acknowledge(aid, note, dlg))
        self.last_dialog = dlg
        dlg.open()
        return dlg

    def acknowledge(self, alarm_id: int, note: str, dialog: Any = None) -> None:
        actor = self.actor

        def ok(_: Any) -> None:
            if dialog is not None:
                dialog.sent()
            self.say(f"Alarm {alarm_id} acknowledged.")
            self.refresh()

        self.bridge.call(
            lambda s: models.acknowledge(s, alarm_id, actor=actor, reason=note),
            ok,
            dialog.failed if dialog is not None else self.show_error,
        )

    def new_run(self) -> NewRunDialog:
        run = self.current_run()
        dlg = NewRunDialog(
            self.bridge.call, self.clock, timezone=run.timezone if run else "UTC", parent=self
        )
        dlg.registered.connect(self._registered)
        self.last_dialog = dlg
        dlg.open()
        return dlg

    def _registered(self, run_id: int) -> None:
        self.say(f"Run {run_id} registered; its start command waits for the engine.")
        self.run_id = run_id
        self.snapshot = None
        self.refresh()

    # --- audit ------------------------------------------------------------------------------

    def verify_chain(self) -> None:
        self.bridge.call(
            lambda s: s.verify_chain(),
            lambda rep: self.audit_view.show_verified(rep.ok, rep.message),
            lambda msg: self.audit_view.show_verified(False, msg),
        )

    def export_batch_record(self, path: str) -> None:
        run_id = self.run_id
        if run_id is None:
            return

        def fn(store: Any) -> str:
            html = models.batch_record(store, run_id)
            out = Path(path)
            tmp = out.with_name(out.name + ".part")
            try:
                # Written whole, then renamed: a reader never sees half a record.
                tmp.write_text(html, encoding="utf-8")
                tmp.replace(out)
            except OSError as exc:
                raise models.ConsoleInputError(
                    f"cannot write {path}: {exc.strerror or exc}"
                ) from None
            return path

        self.bridge.call(fn, lambda p: self.say(f"Batch record of run {run_id} saved to {p}"))

    # --- training ---------------------------------------------------------------------------

    def training_dialog(self) -> None:
        dlg = QDialog(self)
        dlg.setWindowTitle("Training run")
        form = QFormLayout(dlg)
        form.addRow(
            label(
                "Practise on the simulated workcell: a whole day passes in a minute. Faults can be injected.",
                wrap=True,
            )
        )
        path = QLineEdit(
            str(Path(__file__).resolve().parent.parent / "protocols" / "kriks2011_da.yaml")
        )
        browse = button("Browse…")
        row = QHBoxLayout()
        row.addWidget(path, 1)
        row.addWidget(browse)
        form.addRow("Protocol", row)
        plates = QSpinBox()
        plates.setRange(1, 12)
        plates.setValue(2)
        form.addRow("Plates", plates)
        faults = QLineEdit()
        faults.setPlaceholderText("e.g. lh-fail-once (see labctl simulate --help)")
        form.addRow("Faults", faults)
        go = button("Start training", "primary")
        form.addRow(go)
        browse.clicked.connect(
            lambda: path.setText(
                QFileDialog.getOpenFileName(dlg, "Protocol", path.text(), "YAML (*.yaml *.yml)")[0]
                or path.text()
            )
        )

        def start() -> None:
            cfg = TrainingConfig(Path(path.text()), plates.value(), faults.text().strip() or None)
            dlg.accept()
            self.start_training(cfg)

        go.clicked.connect(start)
        dlg.open()

    def start_training(self, cfg: TrainingConfig) -> MainWindow | None:
        launcher = self.launcher or TrainingLauncher(self.clock)
        try:
            session = launcher.start(cfg)
        except LabctlError as exc:
            QMessageBox.warning(self, "Training", exc.user_message())
            return None
        win = MainWindow(
            session.db,
            self.clock,
            actor=self.actor,
            verifier=self.verifier,
            password_setup=self.password_setup,
            training=session,
        )
        self.children_windows.append(win)
        win.show()
        return win

    # --- closing ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop timers and the worker thread (idempotent)."""
        self.timer.stop()
        self.clock_timer.stop()
        self.prompts.timer.stop()
        for dlg in list(self.prompt_dialogs.values()):
            dlg.timer.stop()
        self.bridge.shutdown()
        if self.training is not None:
            self.training.stop()

    def closeEvent(self, event: QCloseEvent | None) -> None:  # noqa: N802 - Qt's name
        for w in self.children_windows:
            w.close()
        self.shutdown()
        super().closeEvent(event)
