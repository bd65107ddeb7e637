"""Screenshots of the operator console on a simulated Kriks run at day 12.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/screenshots.py [--out docs/screenshots] [--plates 4]

Builds the run database with tests/console_fixtures.py (the shipped Kriks protocol driven
by the engine on fake devices and a virtual clock to the morning of day 12, with a failed
liquid-handler run waiting for a recovery decision and a CO2 alarm), opens the console on
it with the clock frozen there, and writes one PNG per main view (QWidget.grab()), plus the
prompt, pause, skip and new-run dialogs; then the engine strip in each state (no engine,
running, held, not responding, stopped) and the verdicts of commands (applied, rejected,
queued), with a QC prompt that waits for its values.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/screenshots.py --only engine --out /tmp/console-live
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from datetime import datetime, timedelta  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

from console_fixtures import (  # noqa: E402
    TZ,
    WALL_START,
    Sim,
    build_world,
    fake_daemon,
    make_practice,
    open_sim,
)
from PyQt6.QtWidgets import QApplication, QWidget  # noqa: E402

from labctl.clock import RealClock, VirtualClock  # noqa: E402
from labctl.engine import register_run  # noqa: E402
from labctl.gui import theme  # noqa: E402
from labctl.gui.main_window import MainWindow  # noqa: E402
from labctl.jobs import WorkcellRoles  # noqa: E402
from labctl.plan.resolve import resolve  # noqa: E402
from labctl.validate import load_protocol  # noqa: E402

SIZE = (1600, 900)  # the console must fit a 1600 x 900 screen


def wait_for(app: QApplication, cond: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Process events until ``cond()`` (or raise after ``timeout_s`` of real time)."""
    clock = RealClock()
    end = clock.monotonic() + timeout_s
    while not cond():
        app.processEvents()
        if clock.monotonic() > end:
            raise RuntimeError("the console did not get there in time")
        clock.sleep(0.01)
    for _ in range(5):
        app.processEvents()


def settle(app: QApplication, seconds: float = 0.4) -> None:
    """Let queued work (layouts, shows, worker replies) finish before a grab."""
    clock = RealClock()
    end = clock.monotonic() + seconds
    while clock.monotonic() < end:
        app.processEvents()
        clock.sleep(0.01)


def grab(w: QWidget, path: Path) -> None:
    settle(QApplication.instance())  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not w.grab().save(str(path), "PNG"):
        raise RuntimeError(f"cannot write {path}")
    print(f"wrote {path}")


def add_other_runs(sim: Sim) -> None:
    """A run planned to start next week and an older one aborted, so the runs table shows
    more than one kind of row. The abort goes through a command the engine applies."""
    now = sim.clock.now()
    z = ZoneInfo(TZ)
    for file, plates, start, name in (
        (
            "nolbrant2017_vm.yaml",
            2,
            (now + timedelta(days=4)).astimezone(z).date(),
            "Nolbrant VM pilot",
        ),
        (
            "kriks2011_da.yaml",
            2,
            (now - timedelta(days=5)).astimezone(z).date(),
            "Kriks DA batch 26-12-A",
        ),
    ):
        proto = load_protocol(ROOT / "protocols" / file)
        start_dt = datetime.combine(start, datetime.min.time()).replace(hour=9)
        plan = resolve(proto, {}, plates=plates, start=start_dt, timezone=TZ)
        labels = [f"P{i + 1}" for i in range(plates)]
        run_id = register_run(
            sim.store, sim.clock, proto, plan, WorkcellRoles.simulated(labels),
            name=name, workcell_name="simulated", workcell_text="", actor="bob",
        )  # fmt: skip
        if name.endswith("26-12-A"):
            sim.store.insert_command(
                "abort", actor="bob", run_id=run_id,
                reason="mycoplasma test positive on the source line",
            )  # fmt: skip
    sim.engine.recover()
    sim.engine.apply_commands()


RESTORED = (
    "the run database ends at event 9120, but the engine had acted after event 9133: it was "
    "restored from an older copy or lost its latest transactions, so devices may already have "
    "done what it says is still to do"
)


def engine_shots(
    app: QApplication, win: MainWindow, sim: Sim, wall: VirtualClock, out: Path
) -> None:
    """The engine strip in each state, and what became of commands, as the operator sees it."""
    db = sim.world.db
    win.show_tab(0)
    wait_for(app, lambda: win.engine_strip.level == "down")
    grab(win, out / "engine-not-running.png")
    ctl = win.control("pause")
    assert ctl is not None
    ctl.reason.setText("Incubator CO2 low: wait for the gas supply")
    ctl.ok_button.click()
    wait_for(app, lambda: ctl.has_sent)
    grab(ctl, out / "verdict-queued.png")
    ctl.reject()
    daemon = fake_daemon(db, sim.store, wall.now())
    try:
        wait_for(app, lambda: win.engine_strip.level == "running")
        sim.engine.step()  # the pause queued above is applied now
        wall.advance(3)
        wait_for(app, lambda: "seen 3 s ago" in win.engine_strip.detail.text())
        grab(win, out / "engine-running.png")
        ctl = win.control("release")  # a paused run cannot be released: rejected
        assert ctl is not None
        ctl.reason.setText("QC reviewed")
        ctl.ok_button.click()
        wait_for(app, lambda: ctl.has_sent)
        sim.engine.step()
        wait_for(app, lambda: ctl.engine_rejected)
        grab(ctl, out / "verdict-rejected.png")
        ctl.reject()
        ctl = win.control("resume")
        assert ctl is not None
        ctl.reason.setText("gas supply fixed")
        ctl.ok_button.click()
        wait_for(app, lambda: ctl.has_sent)
        sim.engine.step()
        wait_for(app, lambda: ": applied" in ctl.verdict_text())
        grab(ctl, out / "verdict-applied.png")
        ctl.reject()
        wall.advance(40)
        wait_for(app, lambda: win.engine_strip.level == "stale")
        grab(win, out / "engine-not-responding.png")
        daemon.beat(wall.now(), held=RESTORED)
        sim.engine.hold(RESTORED)
        wait_for(app, lambda: win.engine_strip.level == "held")
        win.verdict_panel.dismiss_final()
        grab(win, out / "engine-held.png")
        dlg = win.confirm_store()
        assert dlg is not None
        dlg.reason.setText("incubator slots and the OT-2 deck checked against the run database")
        grab(dlg, out / "confirm-store.png")
        dlg.reject()
        wall.advance(60)
        daemon.stop(wall.now(), "stopped by the operator (Ctrl-C or SIGTERM)")
    finally:
        daemon.release()
    wall.advance(300)
    wait_for(app, lambda: win.engine_strip.level == "down" and win.engine_strip.engine is not None)
    wait_for(app, lambda: "since" in win.engine_strip.detail.text())
    grab(win, out / "engine-stopped.png")
    gate = {"measure": "FOXA2_LMX1A_pct", "unit": "%", "min": 60.0, "on_fail": "hold"}
    p = sim.store.insert_prompt(
        sim.world.run_id,
        kind="task",
        text="Plate P1: FOXA2/LMX1A immunostaining. Record the share of FOXA2+/LMX1A+ cells.",
        actor="engine",
        choices=[gate],
    )
    wait_for(app, lambda: any(x.id == p.id for x in (win.snapshot.prompts if win.snapshot else ())))
    qc = win.open_prompt(p.id)
    assert qc is not None
    wait_for(app, qc.isVisible)
    grab(qc, out / "prompt-qc-needs-values.png")
    qc.close_by_button(False)


def view_shots(app: QApplication, win: MainWindow, out: Path, tmp: str) -> None:
    """One PNG per main view, and the prompt, control and new-run dialogs."""
    shots = [
        ("runs", 0, None),
        ("timeline", 1, None),
        ("today", 2, lambda: win.today_view.prep_page != ""),
        ("devices", 3, None),
        ("protocol", 4, lambda: win.protocol_info is not None),
        ("audit", 5, lambda: len(win.audit_view.model.rows) > 0),
    ]
    for name, tab, ready in shots:
        win.show_tab(tab)
        if ready is not None:
            wait_for(app, ready)
        grab(win, out / f"{name}.png")
    win.show_tab(1)
    win.timeline_view.span.setCurrentIndex(3)  # 3 days
    win.timeline_view.all_runs.setChecked(True)
    wait_for(app, lambda: True)
    grab(win, out / "timeline-3-days.png")
    win.timeline_view.span.setCurrentIndex(1)
    win.timeline_view.all_runs.setChecked(False)
    win.show_tab(4)
    win.protocol_view.tabs.setCurrentIndex(1)
    wait_for(app, lambda: True)
    grab(win, out / "protocol-diagram.png")
    win.protocol_view.tabs.setCurrentIndex(0)
    win.show_tab(1)
    p = win.snapshot.prompts[0] if win.snapshot and win.snapshot.prompts else None
    if p is not None:
        dlg = win.open_prompt(p.id)
        assert dlg is not None
        wait_for(app, dlg.isVisible)
        grab(dlg, out / "prompt-recovery.png")
        dlg.choice_buttons["skip"].click()
        wait_for(app, lambda: True)
        dlg.adjustSize()
        grab(dlg, out / "prompt-recovery-confirm.png")
        dlg.close_by_button(False)
    ctl = win.control("pause")
    assert ctl is not None
    wait_for(app, ctl.isVisible)
    ctl.reason.setText("Incubator CO2 low: wait for the gas supply to be fixed")
    grab(ctl, out / "control-pause.png")
    ctl.reject()
    win.control("skip")
    wait_for(
        app,
        lambda: (
            getattr(win, "last_dialog", None) is not None
            and win.last_dialog.isVisible()
            and win.last_dialog is not ctl
        ),
    )
    grab(win.last_dialog, out / "control-skip.png")
    win.last_dialog.reject()
    nr = win.new_run()
    broken = Path(tmp) / "broken.yaml"
    text = (ROOT / "protocols" / "kriks2011_da.yaml").read_text(encoding="utf-8")
    broken.write_text(
        text.replace("conc: 100 nM", "conc: 100 nm", 1).replace(
            "window: 2 h", "window: 2 hours later"
        ),
        encoding="utf-8",
    )
    nr.path.setText(str(broken))
    nr.validate()
    wait_for(app, lambda: nr.check is not None)
    grab(nr, out / "new-run-errors.png")
    nr.path.setText(str(ROOT / "protocols" / "kriks2011_da.yaml"))
    nr.check = None
    nr.validate()
    wait_for(app, lambda: nr.check is not None and nr.check.ok)
    nr.plates.setValue(4)
    nr.name.setText("Kriks DA batch 26-12-B")
    nr.suggest()
    wait_for(app, lambda: nr.suggestions.count() > 1, 120)
    grab(nr, out / "new-run.png")
    nr.reject()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--plates", type=int, default=4)
    ap.add_argument(
        "--only", choices=("views", "engine"), help="only the views, or only the engine states"
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    app = QApplication.instance() or QApplication(["labctl-screenshots"])
    theme.apply(app)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="labctl-shots-") as tmp:
        world = build_world(Path(tmp) / "world", plates=args.plates, progress=print)
        make_practice(world.db)  # no accounts: the views open without a sign-in
        sim = open_sim(world)  # the clock, frozen at the recovery prompt on day 12
        add_other_runs(sim)
        wall = VirtualClock(WALL_START)
        win = MainWindow(world.db, sim.clock, actor="alice", wall=wall, poll_ms=200)
        win.resize(*SIZE)
        win.show()
        try:
            wait_for(app, lambda: win.snapshot is not None)
            if args.only != "engine":
                view_shots(app, win, out, tmp)
            if args.only != "views":
                engine_shots(app, win, sim, wall, out)
        finally:
            win.close()
            sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
