"""The engine daemon: one per database, a heartbeat, stop reasons, a store that went back,
and commands that get a verdict (the CLI against a daemon in a thread)."""

from __future__ import annotations

import shutil
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from labctl.cli.main import main
from labctl.clock import RealClock, VirtualClock
from labctl.engine import Engine, EngineConfig, register_run
from labctl.engine.daemon import Daemon, DaemonConfig
from labctl.engine.presence import EngineBusy, EngineLock, engine_status, went_backwards
from labctl.errors import StoreError
from labctl.jobs import WorkcellRoles
from labctl.plan.resolve import resolve
from labctl.store import Store
from labctl.validate import load_text
from tests.fakes import fake_workcell
from tests.helpers import protocol_text, sign_in

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)
SHORT = protocol_text(
    """
    media: [{days: "0-2", medium: M1}]
    factors: [{compound: A, conc: 1 uM, days: "0-2"}]
    feeds: [{days: "0-2", change: full}]
    """
)


def register(store: Store, clock, plates: int = 1) -> int:  # noqa: ANN001
    res = load_text(SHORT, "short.yaml")
    assert res.protocol is not None
    plan = resolve(res.protocol, plates=plates, start=datetime(2026, 12, 1, 9), timezone="UTC")
    labels = [f"P{i + 1}" for i in range(plates)]
    return register_run(
        store, clock, res.protocol, plan, WorkcellRoles.simulated(labels),
        name="t", workcell_name="sim", workcell_text="", actor="tester",
    )  # fmt: skip


class Bay:
    """A database, fake devices and a daemon on a virtual clock (wall time virtual too)."""

    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "run.db"
        self.clock = VirtualClock(T0)
        self.store = Store.open(self.db, self.clock, durable=False)
        self.devices = fake_workcell(self.clock)
        for d in self.devices.values():
            d.idempotent = True  # as the real drivers are (labctl.devices)

    def daemon(self) -> Daemon:
        engine = Engine(self.store, self.clock, self.devices, EngineConfig(alarm_check_s=3600))
        # Idle passes may sleep an hour of virtual time (commands here are queued up front).
        return Daemon(
            engine,
            self.db,
            self.clock,
            workcell="bay",
            config=DaemonConfig(command_poll_s=3600, max_idle_s=3600),
        )

    def serve(self, passes: int, until=lambda: False) -> tuple[Daemon, str]:  # noqa: ANN001
        d = self.daemon()
        count = [0]

        def stop() -> bool:
            count[0] += 1
            return count[0] > passes or until()

        return d, d.serve(stop)


def test_a_second_engine_on_a_database_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = EngineLock(tmp_path / "run.db")
    first.acquire({"pid": 4242, "host": "bay-pc", "since": "2026-12-06T03:00:00+00:00"})
    with pytest.raises(EngineBusy, match="engine 4242 on bay-pc"):
        EngineLock(tmp_path / "run.db").acquire({"pid": 1, "host": "x", "since": "now"})
    first.release()
    again = EngineLock(tmp_path / "run.db")
    again.acquire({"pid": 5, "host": "x", "since": "now"})  # free once released
    again.release()


def test_the_daemon_beats_serves_a_run_registered_meanwhile_and_says_why_it_stopped(
    tmp_path: Path,
) -> None:
    bay = Bay(tmp_path)
    d, reason = bay.serve(passes=3)
    assert reason == "stopped on request"
    st = engine_status(bay.db, bay.store, bay.clock.now())
    assert not st.running and "stopped on request" in st.text
    # A run registered while no engine runs is started by the next one, which keeps going.
    run_id = register(bay.store, bay.clock)
    bay.store.insert_command("start", actor="tester", run_id=run_id, reason="go")
    bay.serve(passes=2000, until=lambda: bay.store.get_run(run_id).state == "completed")
    assert bay.store.get_run(run_id).state == "completed"
    feeds = [a["job"] for a in bay.devices["ot2-sim"].actions]
    assert len(feeds) == 3 and len(set(feeds)) == 3
    sessions = bay.store.engine_sessions()
    assert [s.state for s in sessions] == ["stopped", "stopped"]


def test_a_killed_engine_is_reported_lost_by_status_and_by_the_next_engine(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    bay.store.engine_started(pid=99, host="old", workcell="bay", at=T0, actor="engine")
    st = engine_status(bay.db, bay.store, T0 + timedelta(minutes=5))
    assert not st.running and "stopped without a word" in st.text
    bay.serve(passes=1)
    [lost] = bay.store.engine_sessions(state="lost")
    assert lost.pid == 99


def test_a_store_restored_from_an_older_copy_holds_the_engine_until_confirmed(
    tmp_path: Path,
) -> None:
    bay = Bay(tmp_path)
    run_id = register(bay.store, bay.clock)
    bay.store.insert_command("start", actor="tester", run_id=run_id, reason="go")
    backup = tmp_path / "backup.db"
    bay.store.close()
    shutil.copy(bay.db, backup)  # before anything was done
    bay.store = Store.open(bay.db, bay.clock, durable=False)
    bay.serve(passes=500, until=lambda: bool(bay.devices["ot2-sim"].actions))  # the first feed
    done = len(bay.devices["ot2-sim"].actions)
    assert done >= 1
    # The database is put back to the copy taken before any of that.
    bay.store.close()
    shutil.copy(backup, bay.db)
    for suffix in ("-wal", "-shm"):
        Path(str(bay.db) + suffix).unlink(missing_ok=True)
    bay.store = Store.open(bay.db, bay.clock, durable=False)
    assert went_backwards(bay.db, bay.store) is not None
    started = len(bay.devices["ot2-sim"].ops) + len(bay.devices["inc-sim"].ops)
    d, _ = bay.serve(passes=40)
    assert len(bay.devices["ot2-sim"].ops) + len(bay.devices["inc-sim"].ops) == started
    assert [a.code for a in bay.store.active_alarms() if a.device == "engine"] == ["held"]
    assert "confirm" in (bay.store.last_engine().held or "")
    # Confirming without a reason is refused; with one, the engine goes on.
    bay.store.insert_command("confirm-store", actor="tester", reason="")
    bay.store.insert_command("confirm-store", actor="tester", reason="devices checked")
    bay.serve(passes=5)
    # Each task that may have been done is asked about; a person says how far it got, from
    # what the devices hold (the fakes keep every operation they were given).
    asked = [p for p in bay.store.open_prompts() if p.kind == "in-doubt"]
    assert asked
    held = {op["job"] for d in bay.devices.values() for op in d.ops.values()}
    for p in asked:
        lh = bay.store.get_job(p.job_id)
        chain = sorted(
            (j for j in bay.store.jobs(run_id) if j.task_id == lh.task_id), key=lambda j: j.seq
        )
        got = max((j.seq for j in chain if j.spec["key"] in held), default=-1)
        bay.store.insert_command(
            "answer", actor="tester", run_id=run_id, reason="looked",
            args={"prompt": p.id, "answer": {"choice": p.choices[got + 1]}},
        )  # fmt: skip
    bay.serve(passes=5)
    rejected = [
        e for e in bay.store.events(entity="command", limit=None) if e.to_state == "rejected"
    ]
    assert rejected and "reason" in rejected[-1].reason
    assert not [a for a in bay.store.active_alarms() if a.device == "engine"]
    # It goes on to the end; the devices, which hold what they did, did nothing twice.
    bay.serve(passes=5000, until=lambda: bay.store.get_run(run_id).state == "completed")
    assert bay.store.get_run(run_id).state == "completed"
    feeds = [a["job"] for a in bay.devices["ot2-sim"].actions]
    assert sorted(feeds) == sorted(set(feeds)) and len(feeds) == 3
    moves = [a["job"] for a in bay.devices["inc-sim"].actions]
    assert len(moves) == len(set(moves)) == 6  # a fetch and a store a day


def test_in_doubt_asks_only_the_first_task_of_a_plate_then_the_next_once_it_is_done(
    tmp_path: Path,
) -> None:
    # Where a plate is says nothing of which of its tasks put it there: the later feeds of
    # a plate cannot have begun before the first was done, so they are asked about in turn.
    bay = Bay(tmp_path)
    run_id = register(bay.store, bay.clock, plates=2)
    bay.store.insert_command("start", actor="tester", run_id=run_id, reason="go")
    engine = Engine(bay.store, bay.clock, bay.devices, EngineConfig(alarm_check_s=3600))
    engine.apply_commands()
    engine.recover()
    assert engine.doubt("the store went back", T0 + timedelta(days=10)) == 2
    asked = [p for p in bay.store.open_prompts() if p.kind == "in-doubt"]
    keys = sorted(bay.store.get_job(p.job_id).spec["key"] for p in asked)
    assert [k.split("/")[0].split(":")[1][:2] for k in keys] == ["d0", "d0"]
    assert {k.split("/")[1] for k in keys} == {"P1", "P2"}
    # P1's first feed was done in whole: the next feed of P1 is asked about, and survives a
    # restart of the engine (the doubt is kept in the store).
    p1 = next(p for p in asked if "/P1" in bay.store.get_job(p.job_id).spec["key"])
    engine.prompts.answer(p1.id, {"choice": "done"}, "tester", "looked at the plate")
    nxt = [p for p in bay.store.open_prompts() if p.kind == "in-doubt" and p.id != p1.id]
    p1_next = [p for p in nxt if "/P1" in bay.store.get_job(p.job_id).spec["key"]]
    assert [bay.store.get_job(p.job_id).spec["key"].split(":")[1][:2] for p in p1_next] == ["d1"]
    again = Engine(bay.store, bay.clock, bay.devices, EngineConfig(alarm_check_s=3600))
    again.recover()
    assert again._doubt is not None and again._doubt[0] == "the store went back"


def test_a_storage_error_stops_the_engine_and_is_its_stop_reason(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    d = bay.daemon()
    calls = [0]

    def broken() -> bool:
        calls[0] += 1
        if calls[0] > 2:
            raise StoreError("disk I/O error (SQLite: disk I/O error)")
        return False

    reason = d.serve(broken)
    assert d.failed and reason.startswith("storage error")
    st = engine_status(bay.db, bay.store, bay.clock.now())
    assert not st.running and "disk I/O error" in st.text


# ---- the CLI against a live daemon --------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path):  # noqa: ANN201
    """A daemon on real time in a thread (fake devices), and its database."""
    db = tmp_path / "run.db"
    wall = RealClock()
    store = Store.open(db, wall, durable=False)
    run_id = register(store, wall)
    engine = Engine(store, wall, fake_workcell(wall), EngineConfig())
    daemon = Daemon(engine, db, wall, workcell="bay", config=DaemonConfig(command_poll_s=0.05))
    stop = threading.Event()
    t = threading.Thread(target=daemon.serve, args=(stop.is_set,), daemon=True)
    t.start()
    deadline = wall.monotonic() + 10
    while store.last_engine() is None and wall.monotonic() < deadline:
        wall.sleep(0.02)
    yield db, run_id
    stop.set()
    t.join(10)
    store.close()


def test_commands_print_applied_or_rejected_with_their_exit_code(
    live: tuple[Path, int], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, run_id = live
    sign_in(db, monkeypatch, "olly", "operator")
    assert main(["start", str(run_id), "--db", str(db)]) == 0
    assert "applied: start" in capsys.readouterr().out
    assert main(["resume", str(run_id), "--db", str(db)]) == 1  # it is running, not paused
    assert "rejected: resume" in capsys.readouterr().err
    assert main(["pause", str(run_id), "--db", str(db), "--reason", "cleaning"]) == 0
    assert "applied: pause" in capsys.readouterr().out
    assert main(["status", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "running, seen" in text and "PAUSED" in text


def test_with_no_engine_a_command_stays_queued_with_its_own_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "run.db"
    with Store.open(db, RealClock()) as store:
        run_id = register(store, RealClock())
    sign_in(db, monkeypatch, "olly", "operator")
    assert main(["pause", str(run_id), "--db", str(db), "--reason", "x"]) == 3
    out = capsys.readouterr().out
    assert "queued" in out and "no engine has run on this database" in out


def test_a_command_on_a_database_that_does_not_exist_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    assert main(["status", "--db", str(missing)]) == 2  # a file that cannot be read
    assert "no run database at" in capsys.readouterr().err
    assert not missing.exists()
