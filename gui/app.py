"""Entry point of ``labctl console [--db PATH]``: the Qt application and its main window."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from labctl.clock import RealClock
from labctl.store import Store

__all__ = ["configure", "main", "settle_heap"]

#: Seconds a Python thread may hold the interpreter before another gets a turn (default
#: 0.005). The worker thread computes snapshots in Python; a shorter turn means the GUI
#: thread, which needs the interpreter for every event it handles, waits less.
SWITCH_INTERVAL_S = 0.0002


def configure(app: object) -> None:
    """Application-wide settings of the console: names, look, interpreter turn length."""
    from labctl.gui import theme

    app.setApplicationName("labctl console")  # type: ignore[attr-defined]
    app.setOrganizationName("labctl")  # type: ignore[attr-defined]
    theme.apply(app)  # type: ignore[arg-type]
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def settle_heap() -> int:
    """Put every object alive now out of the cyclic garbage collector's sight
    (``gc.freeze``); returns how many. Called once the window shows its first snapshot.

    Why: a full collection walks every tracked object (Qt's wrappers, the modules, pint's
    registry: some 300,000) on whichever thread happens to allocate, mostly the worker
    building a snapshot, and holds the interpreter all along: 100-300 ms in which the GUI
    thread cannot run a line (bench/console.py). What start-up made lives as long as the
    window; later garbage is still collected as usual.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def main(db_path: str | None) -> int:
    """Open the console on ``db_path`` (default: ``Store.default_path()``); run until closed.

    Returns the Qt event loop's exit code. On a database with accounts the window asks who
    signs in first (and locks after 10 minutes without input); see
    :mod:`labctl.gui.access`.
    """
    from PyQt6.QtWidgets import QApplication

    from labctl.gui.main_window import MainWindow

    path = Path(db_path).expanduser() if db_path else Store.default_path()
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "labctl"])
    configure(app)
    win = MainWindow(path, RealClock())
    win.show()
    settled: list[int] = []

    def first_snapshot(_snap: object) -> None:
        if not settled:
            settled.append(settle_heap())

    win.snapshot_changed.connect(first_snapshot)
    try:
        return int(app.exec())
    finally:
        win.shutdown()  # the worker thread stops and closes its Store before we return
        gc.unfreeze()  # the window is gone: what it kept may be collected again
