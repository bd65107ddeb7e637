"""The run database: opening and migrating, every table's round trip, transition(), reads,
and two connections (as two processes would) on one file."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import platformdirs
import pytest

from labctl.clock import VirtualClock
from labctl.engine.machines import RunState
from labctl.errors import InvalidTransition, StoreError
from labctl.store import SCHEMA_VERSION, Store
from labctl.store.schema import _V1, migrate, read_version

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
T0_TEXT = "2026-03-01T08:00:00.000000+00:00"
TABLES = {
    "meta",
    "runs",
    "plates",
    "tasks",
    "jobs",
    "prompts",
    "qc_values",
    "reagent_lots",
    "alarms",
    "commands",
    "events",
    "engines",
}


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "labctl.db"


@pytest.fixture
def store(db_path: Path, clock: VirtualClock):
    s = Store.open(db_path, clock)
    yield s
    s.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def make_run(store: Store, name: str = "mDA-01", **kw):
    args = dict(
        protocol_text="protocol: mda\nversion: 3\n",
        protocol_id="kriks2011_da",
        protocol_version="3",
        parameters={"seeding_density": 200000, "cells": "H9"},
        plates=2,
        start=datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc),
        timezone="Europe/Stockholm",
        workcell_name="sim",
        workcell_text="devices: {}\n",
        actor="cli:alice",
    )
    args.update(kw)
    return store.insert_run(name, **args)


def make_task(store: Store, run_id: int, key: str, due: datetime, **kw):
    args = dict(kind="feed", day=0, spec={"medium": "N2B27", "volume_ul": 500}, actor="planner")
    args.update(kw)
    return store.insert_task(run_id, key=key, due=due, **args)


# ---------------------------------------------------------------- opening, schema, migrations


def test_default_path_uses_env_then_user_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LABCTL_DB", str(tmp_path / "x.db"))
    assert Store.default_path() == tmp_path / "x.db"
    monkeypatch.delenv("LABCTL_DB")
    assert Store.default_path() == platformdirs.user_data_path("labctl") / "labctl.db"


def test_open_creates_schema_in_wal_with_foreign_keys(store, db_path):
    conn = raw(db_path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names - {"sqlite_sequence"} == TABLES | {"users", "sessions", "signatures", "releases"}
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
        str(SCHEMA_VERSION),
    )
    assert store.schema_version == SCHEMA_VERSION == 3
    # A plate of a run that does not exist violates the foreign key.
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        store.insert_plate(999, "P1", labware="corning_6", actor="planner")
    assert conn.execute("SELECT COUNT(*) FROM plates").fetchone() == (0,)
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)


def test_busy_timeout_is_set(db_path, clock):
    with Store.open(db_path, clock, busy_timeout=2.5) as s:
        assert s._conn.execute("PRAGMA busy_timeout").fetchone() == (2500,)
        assert s._conn.execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_reopen_keeps_rows_and_does_not_migrate_again(db_path, clock):
    with Store.open(db_path, clock) as s:
        run = make_run(s)
    with Store.open(db_path, clock, create=False) as s:
        assert s.get_run(run.id) == run
        assert s.schema_version == SCHEMA_VERSION
        assert len(s.events()) == 1


def test_open_missing_without_create(tmp_path, clock):
    with pytest.raises(StoreError, match="no run database at"):
        Store.open(tmp_path / "absent.db", clock, create=False)
    assert not (tmp_path / "absent.db").exists()


def test_open_creates_parent_folders(tmp_path, clock):
    path = tmp_path / "a" / "b" / "labctl.db"
    with Store.open(path, clock) as s:
        assert s.schema_version == SCHEMA_VERSION
    assert path.is_file()


def test_migrates_an_empty_file(tmp_path, clock):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with Store.open(path, clock) as s:
        assert s.schema_version == SCHEMA_VERSION


def test_migration_steps_apply_in_order_and_roll_back_on_failure(tmp_path):
    conn = raw(tmp_path / "m.db")

    def add_note_column(c: sqlite3.Connection) -> None:
        c.execute("ALTER TABLE runs ADD COLUMN note TEXT")

    assert migrate(conn, "m.db", [(1, _V1), (2, add_note_column)]) == 2
    assert read_version(conn) == 2
    assert "note" in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}

    def half_done(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE scratch (x)")
        raise RuntimeError("step 3 failed")

    steps = [(1, _V1), (2, add_note_column), (3, "CREATE TABLE ok3 (x);"), (4, half_done)]
    with pytest.raises(RuntimeError, match="step 3 failed"):
        migrate(conn, "m.db", steps)
    # Step 3 committed on its own; step 4 left nothing behind.
    assert read_version(conn) == 3
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "ok3" in tables and "scratch" not in tables
    assert not conn.in_transaction


def test_newer_schema_is_refused(db_path, clock):
    Store.open(db_path, clock).close()
    raw(db_path).execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    with pytest.raises(StoreError) as err:
        Store.open(db_path, clock)
    msg = str(err.value)
    assert str(db_path) in msg
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this labctl" in msg
    assert "upgrade labctl" in msg


def test_non_database_file_is_refused(tmp_path, clock):
    path = tmp_path / "notes.db"
    path.write_text("this is a text file, not SQLite\n" * 200)
    with pytest.raises(StoreError, match="is not a usable labctl run database.*not a database"):
        Store.open(path, clock)
    assert path.read_text().startswith("this is a text file")  # left untouched


def test_directory_is_refused(tmp_path, clock):
    with pytest.raises(StoreError, match="is not a file"):
        Store.open(tmp_path, clock)


def test_foreign_sqlite_database_is_refused(tmp_path, clock):
    path = tmp_path / "other.db"
    raw(path).execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match="not a labctl run database.*'customers'"):
        Store.open(path, clock)


def test_corrupt_file_is_refused(db_path, clock):
    with Store.open(db_path, clock) as s:
        run = make_run(s, protocol_text="x" * 20000)
        for i in range(40):
            make_task(s, run.id, f"t{i}", T0 + timedelta(days=i))
    data = bytearray(db_path.read_bytes())
    assert not Path(str(db_path) + "-wal").exists()  # checkpointed on close
    data[8192:] = b"\xa5" * (len(data) - 8192)  # keep the header and schema pages
    db_path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="is corrupt"):
        Store.open(db_path, clock)


# ---------------------------------------------------------------- round trips


def test_run_round_trip(store, db_path, clock):
    run = make_run(store)
    assert run.id == 1
    assert run.name == "mDA-01"
    assert run.protocol_sha256 == hashlib.sha256(b"protocol: mda\nversion: 3\n").hexdigest()
    assert run.parameters == {"seeding_density": 200000, "cells": "H9"}
    assert run.start == datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    assert run.state == "planned"
    assert run.created_at == run.updated_at == T0
    assert store.get_run(run.id) == run
    row = raw(db_path).execute("SELECT parameters, start, created_at FROM runs").fetchone()
    # JSON text and ISO-8601 UTC text, never pickle.
    assert row == (
        '{"cells":"H9","seeding_density":200000}',
        "2026-03-02T09:00:00.000000+00:00",
        T0_TEXT,
    )
    (event,) = store.events()
    assert (event.entity, event.entity_id, event.run_id, event.action) == ("run", 1, 1, "created")
    assert (event.from_state, event.to_state, event.actor) == (None, "planned", "cli:alice")
    assert event.data["protocol_sha256"] == run.protocol_sha256
    assert event.data["workcell_sha256"] == hashlib.sha256(b"devices: {}\n").hexdigest()
    assert "protocol_text" not in event.data


def test_plate_task_job_round_trip(store, clock):
    run = make_run(store)
    plate = store.insert_plate(run.id, "P1", labware="corning_6_wellplate", actor="planner")
    assert store.get_plate(plate.id) == plate
    assert (plate.run_id, plate.label, plate.state) == (run.id, "P1", "pending")
    due = datetime(2026, 3, 3, 9, 0, tzinfo=timezone.utc)
    task = make_task(
        store,
        run.id,
        "d01-feed-P1",
        due,
        plate_id=plate.id,
        day=1,
        window_start=due - timedelta(hours=2),
        window_end=due + timedelta(hours=2),
        planned_start=due,
    )
    assert store.get_task(task.id) == task
    assert task.spec == {"medium": "N2B27", "volume_ul": 500}
    assert (task.due, task.window_end, task.actual_start) == (due, due + timedelta(hours=2), None)
    job = store.insert_job(
        task.id, seq=1, device="ot2", op="run_program", spec={"program": "feed"}, actor="planner"
    )
    assert store.get_job(job.id) == job
    assert (job.state, job.attempts, job.result, job.scheduled_start) == ("pending", 0, None, None)
    assert [e.entity for e in store.events()] == ["run", "plate", "task", "job"]
    # A job's events carry the run id, found through its task.
    assert store.events(entity="job")[0].run_id == run.id
    with pytest.raises(StoreError, match="UNIQUE"):
        make_task(store, run.id, "d01-feed-P1", due)


def test_prompt_round_trip_and_answer(store, clock):
    run = make_run(store)
    prompt = store.insert_prompt(
        run.id,
        kind="confirm",
        text="Load fresh N2B27 in slot 2",
        choices=["done", "skip"],
        default_choice="done",
        deadline=T0 + timedelta(minutes=30),
        actor="engine",
    )
    assert store.get_prompt(prompt.id) == prompt
    assert (prompt.state, prompt.choices, prompt.answer, prompt.created_at) == (
        "open",
        ["done", "skip"],
        None,
        T0,
    )
    assert store.open_prompts() == [prompt]
    clock.advance(60)
    event = store.answer_prompt(prompt.id, "done", actor="console:bob", reason="loaded")
    assert (event.action, event.from_state, event.to_state) == ("transition", "open", "answered")
    answered = store.get_prompt(prompt.id)
    assert (answered.state, answered.answer, answered.answered_by) == (
        "answered",
        "done",
        "console:bob",
    )
    assert answered.answered_at == T0 + timedelta(seconds=60)
    assert store.open_prompts(run.id) == []
    with pytest.raises(InvalidTransition, match="prompt 1 is 'answered', not 'open'"):
        store.answer_prompt(prompt.id, "skip", actor="console:eve")


def test_qc_and_reagent_lot_round_trip(store):
    run = make_run(store)
    ok = store.insert_qc_value(
        run.id, measure="confluence", value=72.5, unit="%", min_value=60, max_value=90, actor="op"
    )
    low = store.insert_qc_value(
        run.id, measure="viability", value=55, unit="%", min_value=80, actor="op"
    )
    unbounded = store.insert_qc_value(
        run.id, measure="count", value=1.2e6, unit="cells", actor="op"
    )
    assert [q.passed for q in (ok, low, unbounded)] == [True, False, True]
    assert store.qc_values(run.id) == [ok, low, unbounded]
    assert (ok.value, ok.min_value, ok.max_value, ok.recorded_at) == (72.5, 60, 90, T0)
    lot = store.insert_reagent_lot(
        run.id, reagent="CHIR99021", lot="L-2291", expiry=date(2027, 1, 31), actor="op"
    )
    assert store.reagent_lots(run.id) == [lot]
    assert lot.expiry == date(2027, 1, 31)
    qc_events = store.events(entity="qc")
    assert [(e.from_state, e.to_state) for e in qc_events] == [(None, None)] * 3
    with pytest.raises(StoreError, match="qc rows have no state"):
        store.transition("qc", ok.id, "x", expected_from="y", actor="a", reason="")


def test_alarm_lifecycle(store, clock):
    run = make_run(store)
    a1 = store.insert_alarm(
        severity="critical",
        code="2004",
        message="cytomat: door open",
        actor="engine",
        run_id=run.id,
        device="cytomat",
    )
    a2 = store.insert_alarm(severity="warning", code="W1", message="low tips", actor="engine")
    assert store.get_alarm(a1.id) == a1
    assert (a1.state, a1.raised_at, a1.raised_by, a1.cleared_at) == ("active", T0, "engine", None)
    clock.advance(5)
    store.acknowledge_alarm(a1.id, actor="console:bob")
    assert [a.id for a in store.active_alarms()] == [a1.id, a2.id]
    assert [a.id for a in store.active_alarms(run.id)] == [a1.id]
    clock.advance(5)
    store.clear_alarm(a1.id, actor="engine", reason="door closed")
    store.clear_alarm(a2.id, actor="console:bob")  # straight from active
    cleared = store.get_alarm(a1.id)
    assert (cleared.state, cleared.acknowledged_by, cleared.cleared_by) == (
        "cleared",
        "console:bob",
        "engine",
    )
    assert (cleared.acknowledged_at, cleared.cleared_at) == (
        T0 + timedelta(seconds=5),
        T0 + timedelta(seconds=10),
    )
    assert store.active_alarms() == []
    with pytest.raises(InvalidTransition, match="alarm 1 is 'cleared'"):
        store.clear_alarm(a1.id, actor="engine")


def test_commands_pending_applied_rejected(store, clock):
    run = make_run(store)
    pause = store.insert_command("pause", actor="console:bob", run_id=run.id, reason="lunch")
    skip = store.insert_command(
        "skip",
        actor="cli:alice",
        run_id=run.id,
        args={"task": "d03-feed-P2"},
        reason="contaminated",
    )
    other = store.insert_command("shutdown", actor="cli:alice")
    assert store.get_command(skip.id) == skip
    assert (skip.state, skip.args, skip.reason, skip.created_at) == (
        "pending",
        {"task": "d03-feed-P2"},
        "contaminated",
        T0,
    )
    assert store.pending_commands() == [pause, skip, other]
    assert store.pending_commands(run.id) == [pause, skip]
    clock.advance(2)
    store.mark_command_applied(pause.id, actor="engine", result={"paused": True})
    store.mark_command_rejected(skip.id, actor="engine", reason="task already done")
    assert store.pending_commands() == [other]
    applied = store.get_command(pause.id)
    assert (applied.state, applied.applied_at, applied.result) == (
        "applied",
        T0 + timedelta(seconds=2),
        {"paused": True},
    )
    rejected = store.get_command(skip.id)
    assert rejected.state == "rejected"
    (event,) = store.events(entity="command", entity_id=skip.id, action="transition")
    assert (event.to_state, event.reason, event.actor) == (
        "rejected",
        "task already done",
        "engine",
    )
    with pytest.raises(InvalidTransition, match="command 1 is 'applied', not 'pending'"):
        store.mark_command_applied(pause.id, actor="engine")


# ---------------------------------------------------------------- transition() and record()


def test_transition_commits_state_and_event_together(store, db_path, clock):
    run = make_run(store)
    clock.advance(3600)
    event = store.transition(
        "run",
        run.id,
        "running",
        expected_from="planned",
        actor="engine",
        reason="start",
        data={"by": "schedule"},
    )
    assert (event.seq, event.entity, event.entity_id, event.run_id) == (2, "run", run.id, run.id)
    assert (event.action, event.from_state, event.to_state) == ("transition", "planned", "running")
    assert event.data == {"by": "schedule"}
    assert event.time == T0 + timedelta(hours=1)
    # Already on disk for another connection: the device may now be told to act.
    conn = raw(db_path)
    assert conn.execute("SELECT state, updated_at FROM runs").fetchone() == (
        "running",
        "2026-03-01T09:00:00.000000+00:00",
    )
    assert conn.execute("SELECT MAX(seq) FROM events").fetchone() == (2,)
    assert store.events()[-1] == event


def test_transition_with_updates_and_same_state(store, clock):
    run = make_run(store)
    task = make_task(store, run.id, "k", T0)
    job = store.insert_job(task.id, seq=1, device="ot2", op="run", spec={}, actor="planner")
    started = T0 + timedelta(minutes=1)
    store.transition(
        "job",
        job.id,
        "running",
        expected_from="pending",
        actor="engine",
        reason="due",
        updates={"started_at": started, "device_op_id": "run-77", "attempts": 1},
    )
    ev = store.transition(
        "job",
        job.id,
        "running",
        expected_from="running",
        actor="engine",
        reason="poll",
        updates={"result": {"status": "running", "step": 3}},
    )
    assert ev.action == "update"
    assert ev.data == {"updates": {"result": {"status": "running", "step": 3}}}
    got = store.get_job(job.id)
    assert (got.state, got.started_at, got.device_op_id, got.attempts, got.result) == (
        "running",
        started,
        "run-77",
        1,
        {"status": "running", "step": 3},
    )
    with pytest.raises(StoreError, match="cannot set state"):
        store.transition(
            "job",
            job.id,
            "done",
            expected_from="running",
            actor="e",
            reason="",
            updates={"state": "x"},
        )
    with pytest.raises(StoreError, match="jobs has no column"):
        store.transition(
            "job",
            job.id,
            "done",
            expected_from="running",
            actor="e",
            reason="",
            updates={"colour": 1},
        )
    with pytest.raises(StoreError, match="unknown entity kind 'robot'"):
        store.transition("robot", 1, "done", expected_from="running", actor="e", reason="")
    with pytest.raises(StoreError, match="no job with id 42"):
        store.transition("job", 42, "done", expected_from="running", actor="e", reason="")
    assert store.get_job(job.id).state == "running"


def test_transition_refuses_wrong_expected_state(store):
    run = make_run(store)
    before = store.events()
    with pytest.raises(InvalidTransition) as err:
        store.transition("run", run.id, "done", expected_from="running", actor="engine", reason="")
    assert str(err.value) == "run 1 is 'planned', not 'running': cannot move it to 'done'"
    assert store.get_run(run.id).state == "planned"
    assert store.events() == before


def test_transition_failure_after_update_rolls_back_state_and_event(store, db_path):
    run = make_run(store)
    before = store.events()
    # The event's data cannot be stored: this fails after the UPDATE has run.
    with pytest.raises(StoreError, match="cannot be stored as JSON"):
        store.transition(
            "run",
            run.id,
            "running",
            expected_from="planned",
            actor="engine",
            reason="",
            data={"device": object()},
        )
    assert raw(db_path).execute("SELECT state FROM runs").fetchone() == ("planned",)
    assert store.events() == before
    # The chain continues without a gap.
    ev = store.transition(
        "run", run.id, "running", expected_from="planned", actor="engine", reason=""
    )
    assert ev.seq == 2 and ev.prev_hash == before[-1].hash
    assert store.verify_chain().ok


def test_atomic_block_rolls_back_every_transition_in_it(store):
    run = make_run(store)
    t1 = make_task(store, run.id, "a", T0)
    t2 = make_task(store, run.id, "b", T0)
    with pytest.raises(RuntimeError, match="device refused"):
        with store.atomic():
            store.transition(
                "task", t1.id, "running", expected_from="pending", actor="e", reason=""
            )
            store.transition(
                "task", t2.id, "running", expected_from="pending", actor="e", reason=""
            )
            raise RuntimeError("device refused")
    assert [t.state for t in store.tasks(run.id)] == ["pending", "pending"]
    assert len(store.events()) == 3
    # A nested block is a savepoint: catching its failure keeps the outer block's writes.
    with store.atomic():
        store.transition("task", t1.id, "running", expected_from="pending", actor="e", reason="")
        with pytest.raises(InvalidTransition):
            with store.atomic():
                store.transition(
                    "task", t2.id, "running", expected_from="pending", actor="e", reason=""
                )
                store.transition(
                    "task", t2.id, "done", expected_from="pending", actor="e", reason=""
                )
    assert [t.state for t in store.tasks(run.id)] == ["running", "pending"]
    assert [e.seq for e in store.events()] == [1, 2, 3, 4]
    assert store.verify_chain().ok


def test_record_device_call_and_free_entities(store):
    run = make_run(store)
    task = make_task(store, run.id, "k", T0)
    job = store.insert_job(task.id, seq=1, device="ot2", op="run", spec={}, actor="planner")
    ev = store.record(
        "device.call",
        entity="job",
        entity_id=job.id,
        actor="engine",
        data={"device": "ot2", "command": "POST /runs"},
    )
    assert (ev.run_id, ev.from_state, ev.to_state, ev.reason) == (run.id, None, None, "")
    ev2 = store.record(
        "device.connected", entity="device", actor="engine", data={"device": "cytomat"}
    )
    assert (ev2.run_id, ev2.entity_id) == (None, None)
    with pytest.raises(StoreError, match="no job with id 9"):
        store.record("device.call", entity="job", entity_id=9, actor="engine")
    with pytest.raises(StoreError, match="belongs to run 1, not 2"):
        store.record("note", entity="job", entity_id=job.id, actor="engine", run_id=2)
    with pytest.raises(StoreError, match="needs an actor"):
        store.record("note", entity="engine", actor="")
    assert store.get_job(job.id).state == "pending"


# ---------------------------------------------------------------- reads


def test_tasks_and_jobs_are_ordered_by_due_time(store):
    run = make_run(store)
    late = make_task(store, run.id, "late", T0 + timedelta(days=2))
    early = make_task(store, run.id, "early", T0 + timedelta(days=1))
    mid = make_task(store, run.id, "mid", T0 + timedelta(days=1, hours=3))
    assert [t.key for t in store.tasks(run.id)] == ["early", "mid", "late"]
    j_late = store.insert_job(late.id, seq=1, device="ot2", op="run", spec={}, actor="p")
    j_e2 = store.insert_job(early.id, seq=2, device="cytomat", op="return", spec={}, actor="p")
    j_e1 = store.insert_job(early.id, seq=1, device="cytomat", op="fetch", spec={}, actor="p")
    # Scheduled before the early task's due time: it sorts first.
    j_mid = store.insert_job(
        mid.id,
        seq=1,
        device="ot2",
        op="run",
        spec={},
        actor="p",
        scheduled_start=T0 + timedelta(hours=20),
    )
    assert [j.id for j in store.jobs(run.id)] == [j_mid.id, j_e1.id, j_e2.id, j_late.id]
    store.transition("task", mid.id, "done", expected_from="pending", actor="e", reason="")
    assert [t.key for t in store.tasks(run.id, state="pending")] == ["early", "late"]
    assert [j.id for j in store.jobs(run.id, state="pending")] == [
        j_mid.id,
        j_e1.id,
        j_e2.id,
        j_late.id,
    ]
    other = make_run(store, "other")
    assert store.tasks(other.id) == [] and store.jobs(other.id) == []


def test_list_runs_and_summary(store, clock):
    r1 = make_run(store, "first")
    r2 = make_run(store, "second")
    store.transition("run", r2.id, "running", expected_from="planned", actor="engine", reason="")
    assert [r.name for r in store.list_runs()] == ["second", "first"]
    assert [r.name for r in store.list_runs(state="running")] == ["second"]
    store.insert_plate(r1.id, "P1", labware="l", actor="p")
    store.insert_plate(r1.id, "P2", labware="l", actor="p")
    t1 = make_task(store, r1.id, "a", T0)
    make_task(store, r1.id, "b", T0)
    store.transition("task", t1.id, "done", expected_from="pending", actor="e", reason="")
    store.insert_job(t1.id, seq=1, device="ot2", op="run", spec={}, actor="p")
    store.insert_prompt(r1.id, kind="confirm", text="?", actor="engine")
    store.insert_alarm(severity="warning", code="W", message="m", actor="engine", run_id=r1.id)
    store.insert_command("pause", actor="console", run_id=r1.id)
    s = store.run_summary(r1.id)
    assert s.run == store.get_run(r1.id)
    assert (s.plates, s.tasks_by_state, s.jobs_by_state) == (
        2,
        {"done": 1, "pending": 1},
        {"pending": 1},
    )
    assert (s.open_prompts, s.active_alarms, s.pending_commands) == (1, 1, 1)
    assert s.last_event_seq == store.events(r1.id, newest_first=True, limit=1)[0].seq
    with pytest.raises(StoreError, match="no run with id 77"):
        store.run_summary(77)


def test_events_filters_and_paging(store):
    run = make_run(store)
    other = make_run(store, "other")
    task = make_task(store, run.id, "k", T0)
    for i in range(5):
        store.record("device.call", entity="task", entity_id=task.id, actor="engine", data={"n": i})
    store.record(
        "note",
        entity="run",
        entity_id=run.id,
        actor="console:bob",
        reason="Medium looked 100% CLEAR",
    )
    store.record(
        "note", entity="run", entity_id=other.id, actor="console:bob", reason="100 percent"
    )
    assert len(store.events()) == 10
    assert [e.seq for e in store.events(run.id)] == [1, 3, 4, 5, 6, 7, 8, 9]
    assert [e.seq for e in store.events(entity="task")] == [3, 4, 5, 6, 7, 8]
    assert [e.seq for e in store.events(actor="console:bob")] == [9, 10]
    assert [e.seq for e in store.events(action="device.call", limit=2)] == [4, 5]
    assert [e.seq for e in store.events(action="device.call", after_seq=5, limit=2)] == [6, 7]
    assert [e.seq for e in store.events(newest_first=True, limit=3)] == [10, 9, 8]
    assert [e.seq for e in store.events(newest_first=True, before_seq=8, limit=2)] == [7, 6]
    # Text search: case-insensitive, anywhere (data too), '%' taken literally.
    assert [e.seq for e in store.events(text="clear")] == [9]
    assert [e.seq for e in store.events(text="100%")] == [9]
    assert [e.seq for e in store.events(text='"n":3')] == [7]
    assert [e.seq for e in store.events(run.id, text="100")] == [9]


# ---------------------------------------------------------------- several connections


def test_two_stores_see_each_others_writes(db_path, clock):
    with Store.open(db_path, clock) as a, Store.open(db_path, clock) as b:
        run = make_run(a)
        assert b.get_run(run.id) == run
        cmd = b.insert_command("pause", actor="console:bob", run_id=run.id)
        assert a.pending_commands() == [cmd]
        a.mark_command_applied(cmd.id, actor="engine")
        assert b.pending_commands() == []
        # While one writer holds its transaction, the other still reads (WAL).
        with a.atomic():
            a.transition(
                "run", run.id, "running", expected_from="planned", actor="engine", reason=""
            )
            assert b.get_run(run.id).state == "planned"
        assert b.get_run(run.id).state == "running"


def test_a_writer_waits_then_reports_lock(db_path, clock):
    with Store.open(db_path, clock) as a, Store.open(db_path, clock, busy_timeout=0.05) as b:
        run = make_run(a)
        with a.atomic():
            a.record("note", entity="run", entity_id=run.id, actor="engine")
            with pytest.raises(StoreError, match="locked by another process"):
                b.insert_command("pause", actor="console", run_id=run.id)
        assert b.insert_command("pause", actor="console", run_id=run.id).state == "pending"


def test_concurrent_writers_in_two_threads_keep_one_chain(db_path, clock):
    with Store.open(db_path, clock) as a:
        run = make_run(a)
        tasks = [make_task(a, run.id, f"t{i}", T0) for i in range(40)]
    errors: list[BaseException] = []

    def engine(tasks_to_do) -> None:
        try:
            with Store.open(db_path, clock) as s:
                for t in tasks_to_do:
                    s.transition(
                        "task", t.id, "running", expected_from="pending", actor="engine", reason=""
                    )
                    s.record("device.call", entity="task", entity_id=t.id, actor="engine")
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    def console() -> None:
        try:
            with Store.open(db_path, clock) as s:
                for i in range(40):
                    s.insert_command("note", actor="console", run_id=run.id, args={"i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=engine, args=(tasks[:20],)),
        threading.Thread(target=engine, args=(tasks[20:],)),
        threading.Thread(target=console),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store.open(db_path, clock) as s:
        events = s.events(limit=None)
        assert [e.seq for e in events] == list(range(1, 41 + 1 + 80 + 40))
        assert all(t.state == "running" for t in s.tasks(run.id))
        assert len(s.pending_commands()) == 40
        report = s.verify_chain()
        assert (report.ok, report.rows_checked) == (True, len(events))


def test_state_enums_are_stored_as_their_values(store):
    run = make_run(store, state=RunState.PLANNED)
    ev = store.transition(
        "run",
        run.id,
        RunState.RUNNING,
        expected_from=RunState.PLANNED,
        actor="engine",
        reason="",
        data={"trigger": "start"},
    )
    assert (ev.from_state, ev.to_state) == ("planned", "running")
    assert type(ev.to_state) is str
    assert store.get_run(run.id).state == "running"
    assert [r.id for r in store.list_runs(state="running")] == [run.id]
    assert store.verify_chain().ok


def test_a_version_1_database_is_brought_to_the_newest_with_its_data(tmp_path, clock) -> None:
    from labctl.store.schema import MIGRATIONS, migrate

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(str(path), isolation_level=None)
    assert migrate(conn, str(path), MIGRATIONS[:1]) == 1
    conn.execute(
        "INSERT INTO commands (verb, args, actor, reason, state, created_at) "
        "VALUES ('pause', '{}', 'bob', 'r', 'pending', '2026-12-01T09:00:00.000000+00:00')"
    )
    conn.close()
    with Store.open(path, clock) as s:
        assert s.schema_version == 3
        assert [c.verb for c in s.pending_commands()] == ["pause"]
        assert s.last_engine() is None
        assert s.user_count() == 0 and not s.is_practice()  # set up by an admin next


def test_engine_sessions_start_beat_stop_and_a_lost_one_is_named(store, clock) -> None:
    t = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
    first = store.engine_started(pid=11, host="bay", workcell="wc", at=t, actor="engine")
    store.engine_beat(first.id, t + timedelta(seconds=5), held="store rolled back")
    seen = store.last_engine()
    assert seen is not None and seen.heartbeat_at == t + timedelta(seconds=5)
    assert seen.held == "store rolled back" and seen.state == "running"
    # It was killed: the next engine finds it still marked running and names it lost.
    second = store.engine_started(
        pid=12, host="bay", workcell="wc", at=t + timedelta(minutes=1), actor="engine"
    )
    lost = store.engine_sessions(state="lost")
    assert [x.id for x in lost] == [first.id] and lost[0].stopped_at == seen.heartbeat_at
    store.engine_stopped(second.id, t + timedelta(minutes=2), reason="Ctrl-C", actor="engine")
    last = store.last_engine()
    assert last is not None and (last.state, last.stop_reason) == ("stopped", "Ctrl-C")
    actions = [(e.entity, e.to_state) for e in store.events(entity="engine", limit=None)]
    assert actions == [
        ("engine", "running"),
        ("engine", "lost"),
        ("engine", "running"),
        ("engine", "stopped"),
    ]
    assert store.verify_chain().ok
