"""Entry point of ``labctl console [--db PATH]``: the Qt application and its main window."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from labctl.clock import Clock, PacedClock, RealClock
from labctl.errors import LabctlError
from labctl.store import Store

__all__ = [
    "XCB_LIBRARIES",
    "configure",
    "database_clock",
    "main",
    "missing_xcb_libraries",
    "settle_heap",
]

#: What Qt's X11 platform plugin (libqxcb, libQt6XcbQpa) loads, by soname, with the Debian
#: or Ubuntu package that has it (read off the plugin with ldd). PyQt6 brings Qt, not these.
XCB_LIBRARIES = {
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}

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


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_xcb_libraries(
    env: Mapping[str, str] | None = None,
    platform: str = sys.platform,
    loads: Callable[[str], bool] | None = None,
) -> list[str]:
    """The sonames of :data:`XCB_LIBRARIES` that cannot be loaded, when the console will
    open through Qt's X11 plugin (Linux, $DISPLAY set, no Wayland, no other platform
    asked for); else []. Qt itself would abort the process (exit 134) with a page that
    names only libxcb-cursor0, whichever library is missing."""
    env = os.environ if env is None else env
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM", "xcb") != "xcb":
        return []
    if not env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return []
    can_load = loads or _loads
    return [name for name in XCB_LIBRARIES if not can_load(name)]


def database_clock(path: Path, wall: Clock) -> Clock:
    """The time the run database keeps: a practice workcell's paced clock (``labctl
    simulators up --pace N``: the simulators, the engine and every command agree on it),
    else ``wall``. A database that cannot be read leaves the window to say why."""
    if not path.is_file():
        return wall
    try:
        store = Store.open(path, wall)
    except LabctlError:
        return wall
    try:
        epoch = store.clock_epoch()
    except LabctlError:
        epoch = None
    finally:
        store.close()
    return PacedClock.shared(epoch) if epoch is not None else wall


def main(db_path: str | None) -> int:
    """Open the console on ``db_path`` (default: ``Store.default_path()``); run until closed.

    Returns the Qt event loop's exit code. On a database with accounts the window asks who
    signs in first (and locks after 10 minutes without input); see
    :mod:`labctl.gui.access`.
    """
    from PyQt6.QtWidgets import QApplication

    from labctl.gui.main_window import MainWindow

    missing = missing_xcb_libraries()
    if missing and QApplication.instance() is None:
        packages = " ".join(XCB_LIBRARIES[name] for name in missing)
        print(
            "labctl: error: the console cannot open a window: Qt's X11 plugin needs "
            f"{', '.join(missing)}, not installed here. Install them (Debian, Ubuntu): "
            f"sudo apt install {packages}",
            file=sys.stderr,
        )
        return 1
    path = Path(db_path).expanduser() if db_path else Store.default_path()
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "labctl"])
    configure(app)
    wall = RealClock()
    win = MainWindow(path, database_clock(path, wall), wall=wall)
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
