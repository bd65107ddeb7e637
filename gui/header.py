"""The window's header clock: the workcell's time now, in the workcell's zone.

Every time the console shows carries its zone; this clock says what "now" is on the
workcell (the zone of the current run's workcell file, else the run's own), so that
"LATE by 2 h" and "ends in 12 min" can be checked at a glance. The same one-second tick
ages the engine strip's last reading (:meth:`labctl.gui.verdicts.EngineStrip.tick`): a
heartbeat that stops coming turns the strip loud even when no new reading arrives.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from PyQt6.QtWidgets import QLabel, QSizePolicy, QToolBar, QWidget

from labctl.gui.models.common import local, zone_abbr


class WorkcellClock(QLabel):
    """``Workcell time  Mon 07 Dec 03:06:12 CET``, bold, its zone's name in the tooltip."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("workcellClock")
        self.setStyleSheet("QLabel#workcellClock { font-weight: bold; padding: 0 10px; }")
        self.zone = "UTC"

    def show_time(self, now: datetime, zone: str) -> None:
        d = local(now, zone)
        if d is None:
            return
        self.zone = zone
        self.setText(f"Workcell time  {d:%a %d %b %H:%M:%S} {zone_abbr(d)}")
        self.setToolTip(
            f"Now on the workcell ({zone}). Every time on this console is shown with its zone."
        )


def attach_header(win: Any) -> WorkcellClock:
    """Put the workcell clock at the right of ``win``'s (a MainWindow) run toolbar and tick it (and the
    engine strip's age) with the window's one-second timer."""
    clock = WorkcellClock()
    tb = win.findChild(QToolBar, "runToolbar")
    if tb is not None:
        gap = QWidget()
        gap.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        tb.addWidget(gap)
        tb.addWidget(clock)

    def tick() -> None:
        snap = win.snapshot
        zone = snap.workcell_zone(win.run_id) if snap is not None else "UTC"
        clock.show_time(win.clock.now(), zone)
        win.engine_strip.tick(win.wall.now(), zone)

    win.clock_timer.timeout.connect(tick)
    # Right after each reading (connected after the window's own slot): the strip shows it
    # in the workcell's zone and aged to now at once, not a second later.
    win.poller.snapshot.connect(lambda _snap: tick())
    tick()
    return clock
