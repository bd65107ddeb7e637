"""The console's worker thread: every store access happens here, never on the GUI thread.

:class:`StoreBridge` lives on the GUI thread. ``bridge.call(fn, on_done, on_error)`` sends
``fn`` to a worker object living on its own :class:`QThread`, which holds the console's own
:class:`~labctl.store.Store` connection and runs ``fn(store)``; the result (plain data from
:mod:`labctl.gui.models`, never a widget) comes back through a queued signal and
``on_done(result)`` runs on the GUI thread. Calls run one at a time in the order sent, so a
slow one (drawing a diagram) delays polling but never the event loop.

``fn`` must not touch Qt widgets: it runs off the GUI thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QObject, QThread, pyqtSignal, pyqtSlot

from labctl.clock import Clock
from labctl.errors import LabctlError
from labctl.store import Store

__all__ = ["StoreBridge"]

log = logging.getLogger("labctl.gui")


class _Worker(QObject):
    """Owns the worker thread's Store; runs the functions it is sent."""

    done = pyqtSignal(int, object)
    failed = pyqtSignal(int, str)

    def __init__(self, path: Path, clock: Clock) -> None:
        super().__init__()
        self.path = path
        self.clock = clock
        self.store: Store | None = None

    @pyqtSlot(int, object)
    def run(self, rid: int, fn: Callable[[Store], Any]) -> None:
        try:
            if self.store is None:
                self.store = Store.open(self.path, self.clock)
            result = fn(self.store)
        except LabctlError as exc:
            self.failed.emit(rid, exc.user_message())
        except Exception as exc:  # noqa: BLE001 - shown as one line, logged with its trace
            log.exception("console worker call failed")
            self.failed.emit(rid, f"internal error ({type(exc).__name__}): {exc}")
        else:
            self.done.emit(rid, result)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


class StoreBridge(QObject):
    """GUI-thread handle on the worker thread and its Store on ``path``."""

    _post = pyqtSignal(int, object)
    #: Emitted on the GUI thread for every failed call that has no ``on_error``.
    error = pyqtSignal(str)
    #: How many calls are queued or running (for a busy indicator).
    busy = pyqtSignal(int)

    def __init__(self, path: Path, clock: Clock, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = path
        self.clock = clock
        self._thread = QThread()
        self._thread.setObjectName("labctl-console-store")
        self._worker = _Worker(path, clock)
        self._worker.moveToThread(self._thread)
        self._post.connect(self._worker.run)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self._on_failed)
        self._calls: dict[
            int, tuple[Callable[[Any], None] | None, Callable[[str], None] | None]
        ] = {}
        self._next = 0
        self._stopped = False
        self._thread.start()

    def call(
        self,
        fn: Callable[[Store], Any],
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> int:
        """Run ``fn(store)`` on the worker thread; returns the call's id."""
        if self._stopped:
            return -1
        self._next += 1
        self._calls[self._next] = (on_done, on_error)
        self.busy.emit(len(self._calls))
        self._post.emit(self._next, fn)
        return self._next

    @property
    def pending(self) -> int:
        return len(self._calls)

    def _on_done(self, rid: int, result: Any) -> None:
        on_done, _ = self._calls.pop(rid, (None, None))
        self.busy.emit(len(self._calls))
        if on_done is not None and not self._stopped:
            on_done(result)

    def _on_failed(self, rid: int, message: str) -> None:
        _, on_error = self._calls.pop(rid, (None, None))
        self.busy.emit(len(self._calls))
        if self._stopped:
            return
        if on_error is not None:
            on_error(message)
        else:
            self.error.emit(message)

    def shutdown(
        self, timeout_ms: int = 10_000, *, last: Callable[[Store], Any] | None = None
    ) -> None:
        """Close the worker's Store and stop its thread (waits for the running call).

        ``last``: a final call on the worker's Store before it closes (ending the console's
        session), made only if the Store was opened; its failure is logged, not raised.
        """
        if self._stopped:
            return
        self._stopped = True
        self._calls.clear()
        self._thread.quit()
        self._thread.wait(timeout_ms)
        # The thread has stopped: its Store can be used and closed from here (its lock
        # waits for a call still running if the wait above timed out).
        if last is not None and self._worker.store is not None:
            try:
                last(self._worker.store)
            except Exception:  # noqa: BLE001 - closing goes on; the trail keeps the session
                log.exception("console: the last call before closing failed")
        self._worker.close()
