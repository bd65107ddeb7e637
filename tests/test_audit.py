"""The audit trail: canonical form, append-only triggers, and verify_chain() finding each kind
of tampering (done with raw sqlite3 after dropping the triggers) at the exact seq."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.clock import VirtualClock
from labctl.errors import InvalidTransition
from labctl.store import GENESIS, Store, canonical, event_hash

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
TRIGGERS = ("events_no_update", "events_no_delete", "events_append_only")
COLUMNS = (
    "seq, time, run_id, entity, entity_id, action, from_state, to_state, actor, reason, data, "
    "prev_hash, hash"
)


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


def make_run(store: Store):
    return store.insert_run(
        "mDA-01",
        protocol_text="protocol: mda\n",
        protocol_id="kriks2011_da",
        protocol_version="3",
        parameters={"cells": "H9"},
        plates=1,
        start=T0,
        timezone="Europe/Stockholm",
        workcell_name="sim",
        workcell_text="devices: {}\n",
        actor="cli:alice",
    )


def fill(store: Store, clock: VirtualClock) -> int:
    """A realistic little trail of 12 events; returns the number written."""
    run = make_run(store)
    plate = store.insert_plate(run.id, "P1", labware="corning_6", actor="planner")
    task = store.insert_task(
        run.id,
        key="d00-feed",
        kind="feed",
        day=0,
        due=T0,
        spec={"v": 500},
        actor="planner",
        plate_id=plate.id,
    )
    job = store.insert_job(task.id, seq=1, device="ot2", op="run", spec={}, actor="planner")
    store.transition("run", run.id, "running", expected_from="planned", actor="engine", reason="go")
    clock.advance(60)
    store.transition("job", job.id, "running", expected_from="pending", actor="engine", reason="")
    store.record(
        "device.call", entity="job", entity_id=job.id, actor="engine", data={"cmd": "POST /runs"}
    )
    clock.advance(600)
    store.record(
        "device.result",
        entity="job",
        entity_id=job.id,
        actor="engine",
        data={"status": "succeeded"},
    )
    store.transition("job", job.id, "done", expected_from="running", actor="engine", reason="")
    prompt = store.insert_prompt(run.id, kind="confirm", text="Fresh µ-slide?", actor="engine")
    store.answer_prompt(prompt.id, "yes", actor="console:bob")
    store.record("note", entity="run", entity_id=run.id, actor="console:bob", reason="looks fine")
    return 12


def open_raw_unguarded(path: Path) -> sqlite3.Connection:
    """What someone with the file and the sqlite3 shell can do: drop the triggers."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    return conn


def row_of(conn: sqlite3.Connection, seq: int) -> dict:
    cur = conn.execute(f"SELECT {COLUMNS} FROM events WHERE seq = ?", (seq,))
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def swap(conn: sqlite3.Connection, a: int, b: int) -> None:
    conn.execute("UPDATE events SET seq = -1 WHERE seq = ?", (a,))
    conn.execute("UPDATE events SET seq = ? WHERE seq = ?", (a, b))
    conn.execute("UPDATE events SET seq = ? WHERE seq = -1", (b,))


def make_room_at(conn: sqlite3.Connection, k: int) -> None:
    """Renumber seq >= k one up (in two steps, so the primary key never collides)."""
    conn.execute("UPDATE events SET seq = seq + 1000000 WHERE seq >= ?", (k,))
    conn.execute("UPDATE events SET seq = seq - 999999 WHERE seq >= 1000000")


def forge(conn: sqlite3.Connection, seq: int, *, well_made: bool) -> None:
    """Insert a fake event at ``seq``: linked and correctly hashed, or garbage."""
    prev = GENESIS if seq == 1 else row_of(conn, seq - 1)["hash"]
    row = {
        "seq": seq,
        "time": "2026-03-01T08:30:00.000000+00:00",
        "run_id": 1,
        "entity": "job",
        "entity_id": 1,
        "action": "device.result",
        "from_state": None,
        "to_state": None,
        "actor": "engine",
        "reason": "",
        "data": '{"status":"succeeded"}',
        "prev_hash": prev if well_made else "ab" * 32,
    }
    row["hash"] = event_hash(row) if well_made else "cd" * 32
    conn.execute(
        f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join('?' * len(row))})", list(row.values())
    )


def problem(store: Store) -> tuple[str | None, int | None]:
    report = store.verify_chain()
    assert report.ok is (report.problem is None)
    return report.problem, report.seq


# ---------------------------------------------------------------- canonical form


def test_canonical_form_is_pinned():
    row = {
        "seq": 1,
        "time": "2026-03-01T08:00:00.000000+00:00",
        "run_id": 1,
        "entity": "run",
        "entity_id": 1,
        "action": "created",
        "from_state": None,
        "to_state": "created",
        "actor": "cli:alice",
        "reason": "µ-test",
        "data": '{"a":1}',
        "prev_hash": GENESIS,
        "hash": "ignored: not part of the hashed fields",
    }
    expected = (
        '{"action":"created","actor":"cli:alice","data":"{\\"a\\":1}","entity":"run",'
        '"entity_id":1,"from_state":null,"prev_hash":"' + "0" * 64 + '","reason":"\\u00b5-test",'
        '"run_id":1,"seq":1,"time":"2026-03-01T08:00:00.000000+00:00","to_state":"created"}'
    )
    assert canonical(row) == expected
    assert event_hash(row) == hashlib.sha256(expected.encode("ascii")).hexdigest()
    assert event_hash(row) == "b137ab3f43f8a47ad3e90443f17092207ed976606eaecf05ccec93e0a23bae0f"


def test_stored_rows_hash_as_documented(store, clock, db_path):
    n = fill(store, clock)
    conn = sqlite3.connect(str(db_path))
    prev = GENESIS
    for seq in range(1, n + 1):
        row = row_of(conn, seq)
        assert row["prev_hash"] == prev
        assert row["hash"] == hashlib.sha256(canonical(row).encode()).hexdigest()
        prev = row["hash"]
    assert store.head() == (n, prev)
    # data is canonical JSON text: sorted keys, no spaces, UTF-8 kept.
    assert row_of(conn, 7)["data"] == '{"cmd":"POST /runs"}'


# ---------------------------------------------------------------- clean chain and triggers


def test_clean_chain_verifies(store, clock):
    empty = store.verify_chain()
    assert (empty.ok, empty.rows_checked, empty.problem, empty.seq) == (True, 0, None, None)
    n = fill(store, clock)
    report = store.verify_chain()
    assert (report.ok, report.rows_checked, report.problem, report.seq) == (True, n, None, None)
    assert report.message == f"audit trail intact: {n} events"
    assert report.triggers_present


def test_triggers_keep_events_append_only(store, clock, db_path):
    fill(store, clock)
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE refused"):
        conn.execute("UPDATE events SET reason = 'x' WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE refused"):
        conn.execute("DELETE FROM events WHERE seq = 3")
    last = row_of(conn, 12)
    bad_link = {**last, "seq": 13, "prev_hash": "ab" * 32, "hash": "cd" * 32}
    with pytest.raises(sqlite3.IntegrityError, match="must extend the hash chain"):
        conn.execute(
            f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join('?' * 13)})",
            list(bad_link.values()),
        )
    old_seq = {**last, "seq": 12, "prev_hash": last["hash"], "hash": "cd" * 32}
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join('?' * 13)})", list(old_seq.values())
        )
    assert store.verify_chain().ok


def test_dropped_triggers_are_reported(store, clock, db_path):
    fill(store, clock)
    open_raw_unguarded(db_path)
    report = store.verify_chain()
    assert report.ok and not report.triggers_present
    assert "append-only triggers missing: events_no_update" in report.message


# ---------------------------------------------------------------- tampering


@pytest.mark.parametrize(
    "column, value",
    [
        ("reason", "all fine"),
        ("to_state", "done"),
        ("actor", "console:eve"),
        ("data", '{"status":"failed"}'),
        ("time", "2026-03-01T08:01:00.000000+00:00"),
        ("run_id", None),
    ],
)
def test_detects_edited_row(store, clock, db_path, column, value):
    fill(store, clock)
    open_raw_unguarded(db_path).execute(f"UPDATE events SET {column} = ? WHERE seq = 8", (value,))
    report = store.verify_chain()
    assert (report.ok, report.problem, report.seq, report.rows_checked) == (False, "edited", 8, 8)
    assert report.message == "event seq 8 was edited: its contents do not match its hash"


def test_detects_edit_with_recomputed_hash(store, clock, db_path):
    fill(store, clock)
    conn = open_raw_unguarded(db_path)
    row = {**row_of(conn, 8), "data": '{"status":"failed"}'}
    conn.execute(
        "UPDATE events SET data = ?, hash = ? WHERE seq = 8", (row["data"], event_hash(row))
    )
    report = store.verify_chain()
    assert (report.problem, report.seq) == ("edited", 8)
    assert "seq 9 records another predecessor" in report.message


@pytest.mark.parametrize("seq", [1, 6, 12])
def test_detects_deleted_row(store, clock, db_path, seq):
    fill(store, clock)
    open_raw_unguarded(db_path).execute("DELETE FROM events WHERE seq = ?", (seq,))
    report = store.verify_chain()
    assert (report.ok, report.problem, report.seq) == (False, "deleted", seq)
    assert report.message.startswith(f"event seq {seq} is missing")


def test_detects_deleted_rows_at_the_end(store, clock, db_path):
    fill(store, clock)
    open_raw_unguarded(db_path).execute("DELETE FROM events WHERE seq >= 10")
    report = store.verify_chain()
    assert (report.problem, report.seq, report.rows_checked) == ("deleted", 10, 9)
    assert report.message == "event seq 10 is missing from the end of the trail (seq 10..12)"


def test_detects_deletion_hidden_by_renumbering(store, clock, db_path):
    fill(store, clock)
    conn = open_raw_unguarded(db_path)
    conn.execute("DELETE FROM events WHERE seq = 6")
    conn.execute("UPDATE events SET seq = seq + 1000000 WHERE seq > 6")
    conn.execute("UPDATE events SET seq = seq - 1000001 WHERE seq >= 1000000")
    assert problem(store) == ("deleted", 6)


@pytest.mark.parametrize("seq", [1, 5])
@pytest.mark.parametrize("well_made", [True, False])
def test_detects_inserted_row(store, clock, db_path, seq, well_made):
    fill(store, clock)
    conn = open_raw_unguarded(db_path)
    make_room_at(conn, seq)
    forge(conn, seq, well_made=well_made)
    report = store.verify_chain()
    assert (report.ok, report.problem, report.seq) == (False, "inserted", seq)
    assert report.message.startswith(f"event seq {seq} was inserted")


def test_detects_garbage_row_appended(store, clock, db_path):
    fill(store, clock)
    forge(open_raw_unguarded(db_path), 13, well_made=False)
    assert problem(store) == ("inserted", 13)


@pytest.mark.parametrize("a, b", [(1, 2), (4, 5), (11, 12)])
def test_detects_reordered_pair(store, clock, db_path, a, b):
    fill(store, clock)
    swap(open_raw_unguarded(db_path), a, b)
    report = store.verify_chain()
    assert (report.ok, report.problem, report.seq) == (False, "reordered", a)
    assert report.message == f"event seq {a} and seq {b} were swapped (reordered)"


def test_detects_distant_swap(store, clock, db_path):
    fill(store, clock)
    swap(open_raw_unguarded(db_path), 3, 9)
    report = store.verify_chain()
    assert (report.problem, report.seq) == ("reordered", 3)
    assert report.message == "event seq 3 holds the event written as seq 9 (reordered)"


# ---------------------------------------------------------------- property tests

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("task"), st.integers(0, 30)),
        st.tuples(
            st.just("move"),
            st.integers(0, 1000),
            st.sampled_from(["pending", "running", "done", "failed"]),
            st.booleans(),
        ),
        st.tuples(st.just("record"), st.text(max_size=12)),
        st.tuples(st.just("command"), st.text(max_size=8)),
        st.tuples(st.just("advance"), st.integers(0, 86400 * 3)),
    ),
    max_size=20,
)


def build(path: Path, ops: list[tuple]) -> tuple[Store, int]:
    """Apply random operations; returns the open store and how many events exist."""
    clock = VirtualClock(T0)
    store = Store.open(path, clock)
    run = make_run(store)
    events = 1
    tasks: list[list] = []  # [id, state]
    for op in ops:
        if op[0] == "task":
            t = store.insert_task(
                run.id,
                key=f"k{len(tasks)}",
                kind="feed",
                day=op[1],
                due=T0 + timedelta(days=op[1]),
                spec={"day": op[1]},
                actor="planner",
            )
            tasks.append([t.id, "pending"])
            events += 1
        elif op[0] == "move" and tasks:
            entry = tasks[op[1] % len(tasks)]
            if op[3]:
                store.transition(
                    "task", entry[0], op[2], expected_from=entry[1], actor="engine", reason=""
                )
                entry[1] = op[2]
                events += 1
            else:
                with pytest.raises(InvalidTransition):
                    store.transition(
                        "task",
                        entry[0],
                        op[2],
                        expected_from=entry[1] + "?",
                        actor="engine",
                        reason="",
                    )
        elif op[0] == "record":
            store.record(
                "note",
                entity="run",
                entity_id=run.id,
                actor="console",
                reason=op[1],
                data={"t": op[1]},
            )
            events += 1
        elif op[0] == "command":
            store.insert_command("note", actor="console", run_id=run.id, args={"x": op[1]})
            events += 1
        elif op[0] == "advance":
            clock.advance(op[1])
    return store, events


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_random_histories_verify(ops):
    with tempfile.TemporaryDirectory() as tmp:
        store, n = build(Path(tmp) / "labctl.db", ops)
        with store:
            report = store.verify_chain()
            assert (report.ok, report.rows_checked) == (True, n)
            assert [e.seq for e in store.events(limit=None)] == list(range(1, n + 1))


EDITABLE = (
    "time",
    "run_id",
    "entity",
    "entity_id",
    "action",
    "from_state",
    "to_state",
    "actor",
    "reason",
    "data",
    "prev_hash",
    "hash",
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, data=st.data())
def test_random_single_row_tamper_is_found(ops, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labctl.db"
        store, n = build(path, [("task", 0), ("record", "a"), *ops])
        n_before = n
        with store:
            conn = open_raw_unguarded(path)
            kind = data.draw(st.sampled_from(["edit", "delete", "swap", "insert"]), label="kind")
            expect_kind = {
                "edit": "edited",
                "delete": "deleted",
                "swap": "reordered",
                "insert": "inserted",
            }[kind]
            if kind == "edit":
                seq = data.draw(st.integers(1, n), label="seq")
                column = data.draw(st.sampled_from(EDITABLE), label="column")
                old = row_of(conn, seq)[column]
                new = "x" if old is None else old + (1 if isinstance(old, int) else "x")
                conn.execute(f"UPDATE events SET {column} = ? WHERE seq = ?", (new, seq))
                if column == "prev_hash" and seq == n:
                    # The last row neither matches its hash nor links back: from the chain
                    # alone it cannot be told apart from a forged row added at the end.
                    expect_kind = "inserted"
            elif kind == "delete":
                seq = data.draw(st.integers(1, n), label="seq")
                conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
            elif kind == "swap":
                seq = data.draw(st.integers(1, n - 1), label="seq")
                swap(conn, seq, seq + 1)
            else:
                seq = data.draw(st.integers(1, n + 1), label="seq")
                # A well-made row at the very end is a valid append: no chain can see it.
                well_made = seq <= n and data.draw(st.booleans(), label="well_made")
                make_room_at(conn, seq)
                forge(conn, seq, well_made=well_made)
            conn.close()
            report = store.verify_chain()
            assert (report.ok, report.problem, report.seq) == (False, expect_kind, seq), (
                report.message
            )
            assert report.message.startswith(f"event seq {seq} ")
            assert 1 <= report.rows_checked <= n_before + 1
