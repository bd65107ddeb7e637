"""Training mode (issue 16 B): a fresh practice database in a folder of its own, a paced
clock every view of the training window reads, prompts that wait real minutes for the
trainee, and every process it started ended with its window."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from PyQt6.QtWidgets import QLabel

from labctl.clock import Epoch, VirtualClock
from labctl.engine.config import EngineConfig
from labctl.gui.main_window import MainWindow
from labctl.gui.training import (
    DAY_A_MINUTE,
    TrainingClock,
    TrainingConfig,
    TrainingError,
    TrainingLauncher,
)
from labctl.gui.training_dialog import TrainingDialog
from labctl.gui.training_run import engine_config, paced_workcell
from labctl.store import Store

ROOT = Path(__file__).resolve().parent.parent
KRIKS = ROOT / "protocols" / "kriks2011_da.yaml"
WALL = datetime(2026, 12, 13, 8, 0, tzinfo=timezone.utc)


# --- processes, from psutil where installed, else /proc ------------------------------------


def _processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, session id) of every process on the machine."""
    try:
        import psutil
    except ImportError:
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue  # ended while we looked
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":  # a zombie has ended; only its parent's wait is left
                out.append((int(d.name), int(fields[1]), int(fields[3])))
        return out
    procs = []
    for p in psutil.process_iter(["pid", "ppid", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE:
            procs.append((p.info["pid"], p.info["ppid"], os.getsid(p.info["pid"])))
    return procs


def _descendants(pid: int) -> set[int]:
    procs = _processes()
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, ppid, _sid in procs:
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _in_session(sid: int) -> set[int]:
    return {pid for pid, _ppid, s in _processes() if s == sid}


# --- the parts ------------------------------------------------------------------------------


def test_training_deadlines_are_real_minutes() -> None:
    cfg = engine_config(DAY_A_MINUTE, 300.0)
    # 5 real minutes at a day a minute: 5 days of the simulated clock.
    assert cfg.recovery_timeout_s == 300.0 * 1440 == cfg.answer_timeout_s
    # Never shorter than a real run's (a slow pace keeps the usual 15 minutes).
    assert engine_config(1.0, 60.0).recovery_timeout_s == EngineConfig().recovery_timeout_s
    text = (
        "devices:\n  inc-sim: {driver: cytomat, port: /dev/pts/3}\n  ot2-sim: {driver: opentrons}\n"
    )
    wc = yaml.safe_load(paced_workcell(text, DAY_A_MINUTE))
    assert wc["devices"]["inc-sim"]["reply_timeout_s"] == 720.0
    assert "reply_timeout_s" not in wc["devices"]["ot2-sim"]


def test_the_training_clock_is_the_simulations_once_it_says_its_epoch(tmp_path: Path) -> None:
    wall = VirtualClock(WALL)
    clock = TrainingClock(tmp_path / "epoch.json", wall)
    assert clock.now() == WALL and not clock.epoch_known
    day0 = datetime(2026, 12, 14, 8, 0, tzinfo=timezone.utc)
    (tmp_path / "epoch.json").write_text(json.dumps(Epoch.now(1440.0, day0).to_json()))
    wall.advance(1.0)  # it looks again a moment later
    assert clock.epoch_known
    assert abs(clock.now() - day0) < timedelta(hours=1)  # the simulation's day, not today


class FakeProc:
    started: list[tuple[list[str], dict]] = []

    def __init__(self, argv: list[str], **kw: object) -> None:
        FakeProc.started.append((argv, kw))
        self.pid = -1

    def poll(self) -> int:
        return 0


def test_a_session_starts_on_a_fresh_practice_database_in_a_folder_of_its_own(
    tmp_path: Path,
) -> None:
    FakeProc.started.clear()
    launcher = TrainingLauncher(VirtualClock(WALL), python="py", popen=FakeProc, folder=tmp_path)
    cfg = TrainingConfig(KRIKS, plates=3, faults="f.yaml", pace=144.0, trainee_s=120.0)
    a, b = launcher.start(cfg), launcher.start(cfg)
    assert a.folder != b.folder and a.folder.parent == tmp_path
    (argv, kw), _ = FakeProc.started
    assert argv == [
        "py", "-m", "labctl.gui.training_run", str(KRIKS), "--plates", "3",
        "--db", str(a.db), "--epoch-file", str(a.folder / "epoch.json"),
        "--pace", "144", "--trainee-s", "120", "--faults", "f.yaml",
    ]  # fmt: skip
    assert kw["start_new_session"] and "shell" not in kw
    with Store.open(a.db, VirtualClock(WALL), create=False) as store:
        assert store.is_practice() and store.list_runs() == []
    assert "a day in 10 minutes" in a.describe() and "2 min" in a.describe()
    a.stop()
    assert not a.folder.exists() and b.folder.exists()
    with pytest.raises(TrainingError, match="at most 3600"):
        launcher.argv(TrainingConfig(KRIKS, pace=86400), tmp_path)
    with pytest.raises(TrainingError, match="at least one plate"):
        launcher.argv(TrainingConfig(KRIKS, plates=0), tmp_path)


def test_the_dialog_asks_for_the_pace_and_the_trainees_minutes(qtbot) -> None:  # noqa: ANN001
    dlg = TrainingDialog()
    qtbot.addWidget(dlg)
    got: list[TrainingConfig] = []
    dlg.start.connect(got.append)
    dlg.pace.setCurrentIndex(dlg.pace.findData(144.0))
    dlg.minutes.setValue(3)
    dlg._start()
    assert (got[0].pace, got[0].trainee_s) == (144.0, 180.0)


# --- a real training session ---------------------------------------------------------------


@pytest.fixture
def console(qtbot, tmp_path: Path) -> MainWindow:  # noqa: ANN001
    db = tmp_path / "practice.db"
    with Store.open(db, VirtualClock(WALL), create=True) as store:
        store.claim_for("practice", actor="trainer")
    w = MainWindow(db, VirtualClock(WALL), actor="tess", wall=VirtualClock(WALL), poll_ms=100)
    qtbot.addWidget(w)
    yield w
    w.close()


def test_a_training_window_runs_on_the_simulations_clock_and_ends_its_processes(
    qtbot, console: MainWindow, tmp_path: Path
) -> None:  # noqa: ANN001
    # The first robot run fails: a recovery prompt opens an hour (a second) into the run.
    faults = tmp_path / "fails.yaml"
    faults.write_text("faults:\n  - {device: ot2-sim, fault: run_fails, run: 1, at_command: 2}\n")
    console.launcher = TrainingLauncher(console.clock, folder=tmp_path / "training")
    before = _descendants(os.getpid())
    child = console.start_training(
        TrainingConfig(KRIKS, plates=1, faults=str(faults), pace=3600.0, trainee_s=600.0)
    )
    session = child.training
    assert session is not None and child.clock is session.clock
    sid = session.process.pid
    try:
        strip = child.findChild(QLabel, "trainingStrip").text()
        assert "an hour a second" in strip and "10 min" in strip
        qtbot.waitUntil(
            lambda: child.snapshot is not None and any(p.kind == "recovery" for p in child.snapshot.prompts),
            timeout=90_000,
        )  # fmt: skip
        started = _descendants(os.getpid()) - before
        assert sid in started and len(_in_session(sid)) >= 2  # the simulation and its helpers
        snap = child.snapshot
        (run,) = snap.runs
        # The window counts on the simulation's clock: day 0 of the run, not "day -1".
        assert run.day == 0 and session.clock.epoch_known
        assert abs(snap.now - child.clock.now()) < timedelta(hours=2)
        (prompt,) = [p for p in snap.prompts if p.kind == "recovery"]
        # The trainee has ten real minutes (ten hours of this clock), not 15 clock minutes.
        left = (prompt.deadline - snap.now).total_seconds()
        assert left > 600.0 * 3600 * 0.9
    finally:
        child.close()
    # Nothing the training started is left: not the simulation, not its helpers.
    assert _in_session(sid) == set()
    assert (_descendants(os.getpid()) - before) & started == set()
    assert not session.folder.exists()
