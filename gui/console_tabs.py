"""The console's six views as tabs, and the worker reads they need beyond the snapshot.

Every view is shown the latest snapshot and the current run. What a snapshot does not hold
(a run's locked protocol with its plan and diagram, a day's prep sheets, the audit chain's
check and the batch record) is read on the worker thread when a view asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QTabWidget, QWidget

from labctl.clock import Clock
from labctl.gui.audit_view import AuditView
from labctl.gui.devices_view import DevicesView
from labctl.gui.models.audit import batch_record
from labctl.gui.models.common import ConsoleInputError
from labctl.gui.models.protocol import ProtocolInfo, prep_html, protocol_info
from labctl.gui.models.runs import RunRow
from labctl.gui.models.snapshot import Snapshot
from labctl.gui.protocol_view import ProtocolView, prepare_diagram
from labctl.gui.runs_view import RunsView
from labctl.gui.timeline_view import TimelineView
from labctl.gui.today_view import TodayView
from labctl.gui.worker import StoreBridge

TABS = ("Runs", "Timeline", "Today", "Devices", "Protocol", "Audit")


class ConsoleTabs(QTabWidget):
    """Runs, Timeline, Today, Devices, Protocol and Audit, on ``bridge``'s store.

    ``run_id`` and ``current_run`` read the window's current run (the one the tabs show);
    ``said`` carries a line for the status bar (a batch record saved).
    """

    said = pyqtSignal(str)

    def __init__(
        self,
        bridge: StoreBridge,
        clock: Clock,
        *,
        run_id: Callable[[], int | None],
        current_run: Callable[[], RunRow | None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self._run_id = run_id
        self._current_run = current_run
        self.protocol_info: ProtocolInfo | None = None
        self._protocol_loading: int | None = None
        self.setDocumentMode(False)
        self.runs_view = RunsView()
        self.timeline_view = TimelineView(clock)
        self.today_view = TodayView()
        self.devices_view = DevicesView()
        self.protocol_view = ProtocolView()
        self.audit_view = AuditView(bridge.call)
        views = (
            self.runs_view,
            self.timeline_view,
            self.today_view,
            self.devices_view,
            self.protocol_view,
            self.audit_view,
        )
        for i, (name, w) in enumerate(zip(TABS, views, strict=True)):
            self.addTab(w, name)
            self.setTabToolTip(i, f"{name} (Ctrl+{i + 1})")
        self.currentChanged.connect(self._tab_changed)
        self.today_view.want_prep.connect(self._load_prep)
        self.audit_view.verify.connect(self.verify_chain)
        self.audit_view.export.connect(self.export_batch_record)

    # --- the snapshot and the current run ---------------------------------------------------

    def show_snapshot(self, snap: Snapshot) -> None:
        """Show a new snapshot in every view."""
        run_id = self._run_id()
        run = snap.run(run_id)
        self.runs_view.set_rows(snap.runs, snap.now)
        if run_id is not None:
            self.runs_view.select(run_id, emit=False)
        self.runs_view.show_details(run, snap.now)
        self.devices_view.set_devices(snap.devices, snap.now)
        self.timeline_view.run_id = run_id
        self.timeline_view.set_snapshot(snap)
        self.today_view.set_snapshot(snap, run)
        self.audit_view.notify_head(snap.head_seq)

    def show_run(self, snap: Snapshot, run_id: int) -> None:
        """Show another run of the same snapshot."""
        run = snap.run(run_id)
        self.runs_view.select(run_id, emit=False)
        self.runs_view.show_details(run, snap.now)
        self.timeline_view.set_run(run_id)
        self.today_view.set_snapshot(snap, run)

    def run_changed(self) -> None:
        """The current run is another one: the audit trail and protocol follow it."""
        run = self._current_run()
        self.audit_view.set_run(
            self._run_id(), run.timezone if run else "UTC", run.name if run else ""
        )
        self.protocol_info = None
        if self.currentWidget() is self.protocol_view:
            self.load_protocol()

    def _tab_changed(self, index: int) -> None:
        if self.widget(index) is self.protocol_view:
            self.load_protocol()

    # --- reads on the worker ----------------------------------------------------------------

    def load_protocol(self) -> None:
        """Load the current run's locked protocol, plan and diagram (on the worker)."""
        run_id = self._run_id()
        if run_id is None or self._protocol_loading == run_id:
            return
        if self.protocol_info is not None and self.protocol_info.run_id == run_id:
            return
        run = self._current_run()
        self._protocol_loading = run_id
        self.protocol_view.loading(run.name if run else f"run {run_id}")

        width = self.protocol_view.diagram_width()

        def work(store: Any) -> tuple[ProtocolInfo, Any]:
            info = protocol_info(store, run_id)
            return info, prepare_diagram(info.diagram_png, width)

        def done(result: tuple[ProtocolInfo, Any]) -> None:
            info, images = result
            self._protocol_loading = None
            if info.run_id == self._run_id():
                self.protocol_info = info
                r = self._current_run()
                self.protocol_view.set_info(info, r.day if r else None, images)

        def failed(msg: str) -> None:
            self._protocol_loading = None
            self.protocol_view.failed(msg)

        self.bridge.call(work, done, failed)

    def _load_prep(self, run_id: int, day: int) -> None:
        self.bridge.call(
            lambda s: prep_html(s, run_id, day),
            lambda page: self.today_view.set_prep(run_id, day, page),
            self.today_view.prep_failed,
        )

    def verify_chain(self) -> None:
        self.bridge.call(
            lambda s: s.verify_chain(),
            lambda rep: self.audit_view.show_verified(rep.ok, rep.message),
            lambda msg: self.audit_view.show_verified(False, msg),
        )

    def export_batch_record(self, path: str) -> None:
        """Write the current run's batch record to ``path`` (on the worker)."""
        run_id = self._run_id()
        if run_id is None:
            return

        def fn(store: Any) -> str:
            html = batch_record(store, run_id)
            out = Path(path)
            tmp = out.with_name(out.name + ".part")
            try:
                # Written whole, then renamed: a reader never sees half a record.
                tmp.write_text(html, encoding="utf-8")
                tmp.replace(out)
            except OSError as exc:
                raise ConsoleInputError(f"cannot write {path}: {exc.strerror or exc}") from None
            return path

        self.bridge.call(fn, lambda p: self.said.emit(f"Batch record of run {run_id} saved to {p}"))
