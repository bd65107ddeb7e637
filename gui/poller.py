"""Reading snapshots on a timer: one read at a time, on the worker thread."""

from __future__ import annotations

from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from labctl.gui.models.snapshot import Snapshot, SnapshotLoader
from labctl.gui.worker import StoreBridge


class SnapshotPoller(QObject):
    """Asks ``bridge`` for ``loader``'s snapshot every ``poll_ms`` and on :meth:`refresh`,
    from :meth:`start` (the console reads nothing before someone may see it) to :meth:`stop`.

    A request made while a read is under way is dropped: the read under way answers it.
    ``snapshot`` carries each snapshot read (the same object again when nothing changed),
    ``failed`` the message of a read that failed; both arrive on the GUI thread.
    """

    snapshot = pyqtSignal(object)
    failed = pyqtSignal(str)

    def __init__(
        self,
        bridge: StoreBridge,
        loader: SnapshotLoader,
        poll_ms: int,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.loader = loader
        self._reading = False
        self.timer = QTimer(self)
        self.timer.setInterval(poll_ms)
        self.timer.timeout.connect(self.refresh)

    def start(self) -> None:
        """Read now, then every ``poll_ms`` (until :meth:`stop`)."""
        self.timer.start()
        self.refresh()

    @property
    def active(self) -> bool:
        return self.timer.isActive()

    def refresh(self) -> None:
        """Ask the worker for a snapshot (skipped while one is being read, or stopped)."""
        if self._reading or not self.timer.isActive():
            return
        self._reading = True
        self.bridge.call(self.loader.load, self._done, self._failed)

    def _done(self, snap: Snapshot) -> None:
        self._reading = False
        self.snapshot.emit(snap)

    def _failed(self, message: str) -> None:
        self._reading = False
        self.failed.emit(message)

    def stop(self) -> None:
        self.timer.stop()
