"""The console tells the operator the truth at a glance (issue 16 A), on real widgets.

A practice copy of the simulated Kriks world (tests/console_fixtures.py: day 12, a failed
liquid-handler run waiting for a decision, a CO2 alarm) is opened in a console window
(pytest-qt, offscreen). The console's clock is the world's virtual clock: moving it on
(without the engine) makes work overdue, as a silent night would.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from console_fixtures import (
    KRIKS,
    TZ,
    WALL_START,
    Sim,
    copy_world,
    fake_daemon,
    fast_dir,
    make_practice,
    open_sim,
    shared_world,
    shown_window,
)
from PyQt6.QtCore import QDate, QDateTime, Qt, QTime
from PyQt6.QtGui import QColor, QFont, QFontMetrics
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QPushButton, QTableView

from labctl.clock import VirtualClock
from labctl.engine import register_run
from labctl.gui import models as m
from labctl.gui import theme
from labctl.gui.main_window import MainWindow
from labctl.gui.models.alarms import plain_words, worst_first
from labctl.gui.models.engine import STALE_S
from labctl.gui.models.urgency import urgency
from labctl.gui.runs_view import STATE as STATE_COLUMN
from labctl.gui.runs_view import WHEN as WHEN_COLUMN
from labctl.gui.widgets import BACKGROUND, FOREGROUND, URGENCY_ROLE
from labctl.jobs import WorkcellRoles
from labctl.plan.resolve import resolve
from labctl.validate import load_protocol

NOLBRANT = KRIKS.parent / "nolbrant2017_vm.yaml"


@pytest.fixture
def sim() -> Iterator[Sim]:
    folder = fast_dir("labctl-console-truth-")
    world = copy_world(shared_world(), folder / "copy")
    make_practice(world.db)  # no accounts: the window opens without a sign-in
    s = open_sim(world)
    yield s
    s.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def wall() -> VirtualClock:
    return VirtualClock(WALL_START)


@pytest.fixture
def win(qtbot, sim: Sim, wall: VirtualClock) -> Iterator[MainWindow]:  # noqa: ANN001
    w = shown_window(qtbot, sim, wall, actor="night", size=(1600, 900))
    qtbot.waitUntil(lambda: w.snapshot is not None, timeout=10_000)
    yield w
    w.close()


def later(qtbot, win: MainWindow, sim: Sim, hours: float) -> None:  # noqa: ANN001
    """Move the console's clock on (the engine does nothing meanwhile) and wait for the
    console to read the store at the new time."""
    sim.clock.advance(hours * 3600)
    qtbot.waitUntil(lambda: win.snapshot is not None and win.snapshot.now == sim.clock.now())


def cell(table: QTableView, row: int, col: int, role: int = Qt.ItemDataRole.DisplayRole) -> object:
    model = table.model()
    assert model is not None
    return model.data(model.index(row, col), role)


def register_planned(sim: Sim, name: str, *, zone: str = "Asia/Tokyo") -> int:
    """A run registered a week ago and never started (no start command)."""
    proto = load_protocol(NOLBRANT)
    start = (sim.clock.now() - timedelta(days=7)).replace(tzinfo=None)
    plan = resolve(proto, {}, plates=2, start=start, timezone=zone)
    return register_run(
        sim.store, sim.clock, proto, plan, WorkcellRoles.simulated(["P1", "P2"]),
        name=name, workcell_name="simulated", workcell_text="", actor="bob",
    )  # fmt: skip


# --- words ---------------------------------------------------------------------------------


def test_times_carry_their_zone_and_durations_are_whole() -> None:
    t = datetime(2026, 12, 7, 13, 53, tzinfo=timezone.utc)
    now = datetime(2026, 12, 7, 14, 0, tzinfo=timezone.utc)
    # The same instant in two runs' zones never reads the same bare "08:53".
    assert m.when_text(t, "America/New_York", now) == "08:53 EST"
    assert m.when_text(t, "Europe/Stockholm", now) == "14:53 CET"
    assert m.when_text(t - timedelta(days=16), TZ, now) == "Sat 21 Nov 14:53 CET"
    assert m.when_text(t, "Asia/Dubai", now) == "17:53 UTC+04"
    assert m.duration_text(15 * 86400 + 4 * 3600 + 41 * 60) == "15 d 4 h"
    assert m.duration_text(2 * 3600 + 5 * 60) == "2 h 5 min"
    assert m.duration_text(15 * 3600 + 41 * 60) == "15 h 41 min"


def test_urgency_in_words() -> None:
    now = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
    late = urgency(now - timedelta(hours=4), now - timedelta(hours=2, minutes=5), now)
    assert (late.level, late.label, late.loud) == ("late", "⚠ LATE by 2 h 5 min", True)
    risk = urgency(now - timedelta(hours=1), now + timedelta(minutes=12), now)
    assert (risk.level, risk.label, risk.tone) == ("at-risk", "◷ ends in 12 min", "holding")
    due = urgency(now - timedelta(hours=1), now + timedelta(hours=3, minutes=10), now)
    assert (due.level, due.text, due.loud) == ("due", "due now · ends in 3 h 10 min", False)
    planned_late = urgency(
        now + timedelta(hours=1),
        now + timedelta(hours=2),
        now,
        expected_start=now + timedelta(hours=3),
    )
    assert planned_late.level == "at-risk" and "1 h after its window" in planned_late.text


def test_alarm_words_and_order() -> None:
    at = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
    late = m.AlarmRow(
        1, 1, "task r1:d20-feed-1030/P6", "warning", "late",
        "r1:d20-feed-1030/P6 r1:d20-feed-1030/P6 cannot start inside its window",
        "active", at, None,
    )  # fmt: skip
    door = m.AlarmRow(2, None, "inc-sim", "error", "door", "door open", "active", at, None)
    older = m.AlarmRow(3, None, "ot2-sim", "error", "offline", "offline", "active",
                       at - timedelta(hours=1), None)  # fmt: skip
    # Worst first, then the one waiting longest.
    assert [a.id for a in worst_first([late, door, older])] == [3, 2, 1]
    assert plain_words(late.message) == "day 20 feed of P6 cannot start inside its window"
    line = m.alarm_sentence(late, {1: "Kriks DA"})
    assert line == "day 20 feed of P6 (Kriks DA) cannot start inside its window"
    assert "r1:" not in line


# --- the window ----------------------------------------------------------------------------


def test_overdue_work_is_flagged_in_words_and_colour(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    table = win.runs_view.table
    model = table.model()
    assert model is not None
    cols = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    window = cols.index("Window")
    # A silent night and day: nobody and nothing moves for 30 hours.
    later(qtbot, win, sim, 30)
    qtbot.waitUntil(lambda: str(cell(table, 0, window)).startswith("⚠ LATE by "))
    assert cell(table, 0, window, URGENCY_ROLE) == "late"
    assert cell(table, 0, window, BACKGROUND) == QColor(theme.VERMILLION)
    assert cell(table, 0, window, FOREGROUND) == QColor("#FFFFFF")
    # The run strip says it too, beside the run's name.
    badge = win.strip.urgency
    assert badge.text().startswith("⚠ LATE by ") and badge.tone_name == "fault"
    # Times carry their zone; "now" is the workcell's, in the header.
    when = str(cell(table, 0, cols.index("When")))
    assert when.endswith(" CET")
    now_local = sim.clock.now().astimezone(m.tzinfo(TZ))
    assert win.workcell_clock.text() == (
        f"Workcell time  {now_local:%a %d %b %H:%M:%S} {m.zone_abbr(now_local)}"
    )
    assert win.status_bar.time.text().endswith(" CET")


def test_at_risk_work_says_when_its_window_ends(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    run_id = sim.world.run_id
    pending = [
        t
        for t in sim.store.tasks(run_id)
        if t.state == "pending" and t.window_end is not None and t.window_end > sim.clock.now()
    ]
    first = min(pending, key=lambda t: t.window_end)
    # Twelve minutes before its window closes (the engine, stopped, started nothing).
    gap = (first.window_end - sim.clock.now()).total_seconds() - 12 * 60
    later(qtbot, win, sim, gap / 3600)
    row = win.snapshot.run(run_id)
    assert row is not None
    up = next(u for u in row.upcoming if u[4] == first.window_end)
    u = urgency(up[0], up[4], win.snapshot.now)
    assert (u.level, u.text) == ("at-risk", "ends in 12 min")
    assert "◷ ends in 12 min" in win.runs_view.details.upcoming.text()


def test_a_silent_engine_is_loud_and_says_since_when(
    qtbot, win: MainWindow, sim: Sim, wall: VirtualClock
) -> None:  # noqa: ANN001
    strip = win.engine_strip
    assert strip.loud and "none has ever run on this database" in strip.headline.text()
    daemon = fake_daemon(sim.world.db, sim.store, wall.now())
    try:
        qtbot.waitUntil(lambda: strip.level == "running", timeout=10_000)
        assert "last heartbeat 09:00:00 CET" in strip.detail.text()
        # No further reading comes (the store hangs, the poll is stuck): the strip still
        # turns loud once the heartbeat is over three beats old, and says since when.
        win.poller.stop()
        wall.advance(STALE_S + 1)
        win.clock_timer.timeout.emit()
        assert strip.level == "stale" and strip.loud
        assert strip.headline.text().startswith(
            "✕ ENGINE NOT RESPONDING since 09:00 CET (16 s ago)"
        )
    finally:
        daemon.release()


def test_alarms_worst_first_in_words_with_dates_and_a_sound(
    qtbot, win: MainWindow, sim: Sim
) -> None:  # noqa: ANN001
    beeps: list[int] = []
    win.banner.beep = lambda: beeps.append(1)
    never = register_planned(sim, "Nolbrant never started")
    sim.store.insert_alarm(
        severity="error", code="late", message="r9:d3-feed-0900/P1 will be late",
        actor="engine", run_id=never, device="task r9:d3-feed-0900/P1",
    )  # fmt: skip
    sim.clock.advance(60)
    sim.store.insert_alarm(
        severity="warning", code="late",
        message="r1:d12-feed-0900/P2 cannot start inside its window (ends 11:00 CET)",
        actor="engine", run_id=sim.world.run_id, device="task r1:d12-feed-0900/P2",
    )  # fmt: skip
    sim.clock.advance(60)
    sim.store.insert_alarm(
        severity="critical", code="estop", message="arm-sim: emergency stop pressed",
        actor="engine", device="arm-sim",
    )  # fmt: skip
    later(qtbot, win, sim, 0.01)
    qtbot.waitUntil(lambda: len(win.banner.alarms) == 3)
    # Severity, then time: the stop, the CO2 alarm (error), the late task (warning). The
    # never-started run's alarm is not shown.
    assert [a.code for a in win.banner.alarms] == ["estop", "co2-low", "late"]
    assert all(a.run_id != never for a in win.snapshot.alarms)
    lines = win.banner.lines
    assert lines[0].startswith("CRITICAL · arm-sim: emergency stop pressed · raised ")
    assert lines[2].startswith(
        "WARNING · day 12 feed of P2 (Kriks DA batch 2x6w) cannot start inside its window"
    )
    assert all(line.endswith(" CET") for line in lines)
    assert all("r1:" not in line for line in lines)
    assert win.banner.text.text().startswith("CRITICAL · arm-sim")
    # Show all lists each, with its own Acknowledge.
    win.banner.more.click()
    assert win.banner.list.isVisible() and win.banner.more.text() == "Hide list"
    rows = win.banner.list.findChildren(QPushButton)
    assert len(rows) == 3 and all(b.text() == "Acknowledge…" for b in rows)
    win.banner.ack.setEnabled(False)  # as the window does for a user who may not
    win.banner.ack.setToolTip("Not allowed: practice")
    assert not any(b.isEnabled() for b in rows)
    assert all(b.toolTip() == "Not allowed: practice" for b in rows)
    # It sounded for the new alarms; silenced, it stays silent until another comes.
    assert beeps and win.banner.sound.text() == "Sound on"
    win.banner.sound.click()
    assert win.banner.silenced and win.banner.sound.text() == "Sound off"
    n = len(beeps)
    win.banner.repeat.timeout.emit()
    assert len(beeps) == n
    sim.store.insert_alarm(
        severity="error", code="door", message="inc-sim: door open", actor="engine",
        device="inc-sim",
    )  # fmt: skip
    later(qtbot, win, sim, 0.01)
    qtbot.waitUntil(lambda: len(beeps) == n + 1)
    assert not win.banner.silenced and win.banner.sound.text() == "Sound on"


def test_runs_that_never_started_are_not_drawn(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    never = register_planned(sim, "Nolbrant never started")
    later(qtbot, win, sim, 0.01)
    qtbot.waitUntil(lambda: win.snapshot.run(never) is not None)
    snap = win.snapshot
    row = snap.run(never)
    assert row is not None and row.never_started and row.day_text == "not started"
    assert not [b for b in snap.bars if b.run_id == never]
    assert not [d for d in snap.devices if d.next_job and "Nolbrant" in d.next_job]
    i = next(i for i, r in enumerate(win.runs_view.model.rows) if r.id == never)
    table = win.runs_view.table
    model = table.model()
    cols = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert cell(table, i, cols.index("Window")) == "no start command"
    assert cell(table, i, cols.index("When")) == "—"


def test_devices_are_the_workcells_and_climate_ages_are_not_negative(
    qtbot, win: MainWindow, sim: Sim
) -> None:  # noqa: ANN001
    sim.store.insert_alarm(
        severity="error", code="out-too-long", message="plate P2 has been out 20 min",
        actor="engine", run_id=sim.world.run_id, device="plate P2",
    )  # fmt: skip
    later(qtbot, win, sim, 2)
    win.show_tab(3)
    qtbot.waitUntil(lambda: bool(win.devices_view.cards))
    names = {c.row.name for c in win.devices_view.cards if c.row}
    assert names and all(not n.startswith(("plate ", "run ", "task ")) for n in names)
    assert "inc-sim" in names
    inc = next(c for c in win.devices_view.cards if c.row and c.row.name == "inc-sim")
    climate = inc.lines["Climate"][1].text()
    assert " ago)" in climate and "(-" not in climate and "CET" in climate


def test_new_run_takes_typed_dates_and_a_checked_workcell(
    qtbot, win: MainWindow, tmp_path: Path
) -> None:  # noqa: ANN001
    dlg = win.new_run()
    assert dlg is not None
    dlg.start.setDateTime(QDateTime(QDate(2026, 12, 8), QTime(9, 0)))
    dlg.start.setFocus()
    dlg.start.selectAll()
    QTest.keyClicks(dlg.start, "2026-12-14 09:30")
    assert dlg.start_time() == datetime(2026, 12, 14, 9, 30)
    dlg.tz.setCurrentText("Europe/Stockholm")
    assert dlg.start_note.text() == "Mon 14 Dec 2026 09:30 CET (Europe/Stockholm)"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bay 2\ntimezone: Mars/Olympus\ndevices: {}\n", encoding="utf-8")
    dlg.workcell.path.setText(str(bad))
    dlg.workcell.validate()
    qtbot.waitUntil(lambda: dlg.workcell.check is not None)
    assert not dlg.workcell.ok() and dlg.workcell.note.text().startswith("✕ ")
    assert str(bad) in dlg.workcell.note.text()
    good = tmp_path / "bay2.yaml"
    good.write_text(
        "name: bay 2\ntimezone: America/New_York\ndevices:\n"
        "  ot2-a:\n    driver: opentrons\n    url: http://127.0.0.1:31950\n    robot: OT-2\n"
        "  inc-a:\n    driver: cytomat\n    port: /dev/null\n    slots: 10\n",
        encoding="utf-8",
    )
    dlg.workcell.path.setText(str(good))
    dlg.workcell.validate()
    qtbot.waitUntil(lambda: dlg.workcell.check is not None and dlg.workcell.check.ok)
    assert dlg.workcell.note.text().startswith("✓ workcell bay 2 · America/New_York")
    assert dlg.tz.currentText() == "America/New_York"  # the run follows the workcell's clock
    dlg.reject()


def test_the_window_fits_a_1600_by_900_screen_and_no_header_is_cut(
    qtbot, win: MainWindow, sim: Sim
) -> None:  # noqa: ANN001
    # A long run name, many plates and a long alarm: nothing may widen the window.
    proto = load_protocol(KRIKS)
    plan = resolve(proto, {}, plates=24, start=datetime(2026, 12, 20, 9), timezone=TZ)
    labels = [f"P{i + 1}" for i in range(24)]
    rid = register_run(
        sim.store, sim.clock, proto, plan, WorkcellRoles.simulated(labels),
        name="Kriks DA batch with a rather long name for the night shift 26-12-C",
        workcell_name="simulated", workcell_text="", actor="bob",
    )  # fmt: skip
    sim.store.insert_command("start", actor="bob", run_id=rid)
    sim.store.insert_alarm(
        severity="error", code="offline", message="ot2-sim: " + "connection refused; " * 12,
        actor="engine", device="ot2-sim",
    )  # fmt: skip
    later(qtbot, win, sim, 0.01)
    qtbot.waitUntil(lambda: win.snapshot.run(rid) is not None)
    win.set_run(rid)
    for tab in range(win.tabs.count()):
        win.show_tab(tab)
        qtbot.wait(20)
        assert win.minimumSizeHint().width() <= 1600, win.tabs.tabText(tab)
        assert win.minimumSizeHint().height() <= 900, win.tabs.tabText(tab)
    win.resize(1600, 900)
    assert win.width() <= 1600
    for table in (win.runs_view.table, win.today_view.table, win.audit_view.table,
                  win.protocol_view.table):  # fmt: skip
        hh = table.horizontalHeader()
        model = table.model()
        font = QFont(hh.font())
        font.setBold(True)
        fm = QFontMetrics(font)
        for c in range(model.columnCount()):
            if table.isColumnHidden(c) or hh.sectionResizeMode(c) == hh.ResizeMode.Stretch:
                continue
            text = str(model.headerData(c, Qt.Orientation.Horizontal))
            assert hh.sectionSize(c) >= fm.horizontalAdvance(text) + 16, text


def test_no_cell_of_the_runs_table_is_cut_as_its_times_change(
    qtbot, win: MainWindow, sim: Sim
) -> None:  # noqa: ANN001
    """A day later today's "08:58 CET" reads "Sun 13 Dec 08:58 CET": the columns are
    measured again (a column measured once showed "Sun 13 ...")."""
    table = win.runs_view.table
    model, hh = table.model(), table.horizontalHeader()

    def cut() -> list[str]:
        found = []
        for r in range(model.rowCount()):
            for c in range(1, model.columnCount()):  # the run's name elides on purpose
                if hh.sectionResizeMode(c) == hh.ResizeMode.Stretch or c == STATE_COLUMN:
                    continue
                idx = model.index(r, c)
                font = model.data(idx, Qt.ItemDataRole.FontRole) or table.font()
                text = str(model.data(idx) or "")
                if QFontMetrics(font).horizontalAdvance(text) > hh.sectionSize(c):
                    found.append(text)
        return found

    assert cut() == []
    when = cell(table, 0, WHEN_COLUMN)
    later(qtbot, win, sim, 24)
    assert cell(table, 0, WHEN_COLUMN) != when  # the text changed...
    assert cut() == []  # ...and still fits
