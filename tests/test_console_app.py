"""``labctl console`` as it starts (labctl.gui.app): on a bare Linux machine Qt's X11 plugin
needs system libraries PyQt6 does not bring (without them Qt aborts the process, exit 134,
naming libxcb-cursor0 whatever is missing; labctl names them and their packages and exits
1); on a practice database it keeps the database's paced clock."""

from __future__ import annotations

import os
import subprocess
import sys

from labctl.gui.app import XCB_LIBRARIES, missing_xcb_libraries

GONE = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}


def _loads(name: str) -> bool:
    return name not in GONE


def test_the_libraries_missing_for_an_x11_window_are_named() -> None:
    x11 = {"DISPLAY": ":0"}
    assert missing_xcb_libraries(x11, "linux", _loads) == [n for n in XCB_LIBRARIES if n in GONE]
    assert missing_xcb_libraries({**x11, "QT_QPA_PLATFORM": "xcb"}, "linux", _loads)
    # Not through the X11 plugin: nothing to check.
    assert missing_xcb_libraries({**x11, "QT_QPA_PLATFORM": "offscreen"}, "linux", _loads) == []
    assert missing_xcb_libraries({**x11, "WAYLAND_DISPLAY": "wayland-0"}, "linux", _loads) == []
    assert missing_xcb_libraries({}, "linux", _loads) == []
    assert missing_xcb_libraries(x11, "darwin", _loads) == []


CHILD = """
import sys
import labctl.gui.app as app
app._loads = lambda name: name not in {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
sys.exit(app.main(sys.argv[1]))
"""


def test_the_console_says_what_to_install_and_exits_1(tmp_path) -> None:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = ":99"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "labctl.db")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "labctl: error: the console cannot open a window: Qt's X11 plugin needs "
        "libxcb-icccm.so.4, libxcb-keysyms.so.1, not installed here. Install them (Debian, "
        "Ubuntu): sudo apt install libxcb-icccm4 libxcb-keysyms1"
    ]
    assert not (tmp_path / "labctl.db").exists()  # nothing made


def test_the_console_keeps_a_practice_databases_paced_clock(tmp_path) -> None:  # noqa: ANN001
    """`labctl simulators up --pace N` keeps its time scale in the database: the console
    reads the same 'now' as the engine and the CLI (it showed the wall clock, and a run
    the engine had begun as 'starts in 1 d')."""
    from datetime import datetime, timezone

    from labctl.clock import Epoch, PacedClock, RealClock
    from labctl.gui.app import database_clock
    from labctl.store import Store

    wall = RealClock()
    db = tmp_path / "run.db"
    assert database_clock(db, wall) is wall  # no database yet: the window says so
    start = datetime(2030, 1, 1, 8, 0, tzinfo=timezone.utc)
    with Store.open(db, wall, create=True) as store:
        assert database_clock(db, wall) is wall  # real time
        store.set_clock_epoch(Epoch(wall=wall.now(), start=start, pace=240.0), actor="test")
    clock = database_clock(db, wall)
    assert isinstance(clock, PacedClock) and clock.pace == 240.0
    assert start <= clock.now() < datetime(2030, 1, 2, tzinfo=timezone.utc)


def test_on_a_paced_clock_the_engine_strip_says_heartbeats_are_the_computers_time(
    qtbot,  # noqa: ANN001
    tmp_path,  # noqa: ANN001
) -> None:
    """The workcell's time runs a day in minutes; the engine's heartbeat is this computer's
    time: the strip says which clock its times are on, so 04:58 beside 16:33 misleads nobody."""
    from datetime import datetime, timezone

    from labctl.clock import Epoch, PacedClock, RealClock
    from labctl.gui.app import database_clock
    from labctl.gui.main_window import MainWindow
    from labctl.store import Store

    wall = RealClock()
    db = tmp_path / "run.db"
    with Store.open(db, wall, create=True) as store:
        start = datetime(2030, 1, 1, 8, 0, tzinfo=timezone.utc)
        store.set_clock_epoch(Epoch(wall=wall.now(), start=start, pace=240.0), actor="test")
    paced = MainWindow(db, database_clock(db, wall), wall=wall, actor="tester")
    real = MainWindow(db, wall, wall=wall, actor="tester")
    for w in (paced, real):
        qtbot.addWidget(w)
    assert isinstance(paced.clock, PacedClock)
    assert paced.engine_strip.wall_note == " on this computer's clock"
    assert real.engine_strip.wall_note == ""
    for w in (paced, real):
        w.close()
