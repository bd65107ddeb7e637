"""The run database: the one module that writes labctl's state (STYLE.md item 3).

Everything else asks a :class:`Store`: the engine moves entities with :meth:`Store.transition`
(state change and audit event committed together, before any device is told to act),
consoles and the CLI read state and add operator commands. SQL never appears outside this
package.

Several processes share one file: the engine daemon writes, consoles and the CLI read and
add commands. The file is in WAL mode (readers never block the writer), every write is an
IMMEDIATE transaction (writers queue on the busy timeout instead of failing half-way), and
foreign keys are enforced. Within one process a Store may be shared between threads: one
re-entrant lock serialises the use of its connection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import platformdirs
import sqlite_utils
from sqlite_utils.db import NotFoundError

from labctl.clock import Clock
from labctl.errors import InvalidTransition, StoreError
from labctl.store import audit
from labctl.store.codec import plain, to_iso, to_json
from labctl.store.models import (
    EVENTS,
    TABLES,
    Alarm,
    Command,
    Event,
    Job,
    Plate,
    Prompt,
    QcValue,
    ReagentLot,
    Run,
    RunSummary,
    TableSpec,
    Task,
)
from labctl.store.schema import migrate, read_version

__all__ = ["Store"]

_EVENT_COLUMNS = ", ".join(EVENTS.columns)
_TRIGGERS = ("events_no_update", "events_no_delete", "events_append_only")
# Columns transition() may not set through ``updates``: identity, state and bookkeeping.
_FIXED = frozenset({"id", "state", "created_at", "updated_at"})


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, with % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Store:
    """A labctl run database on one SQLite file. Create with :meth:`open`.

    Times written are ``clock.now()`` (ISO-8601 UTC text). Methods raise
    :class:`StoreError` for database trouble (locked beyond the busy timeout, corrupt,
    constraint violated, unknown id) and :class:`InvalidTransition` when a row is not in
    the state a transition expects.
    """

    def __init__(self, db: sqlite_utils.Database, path: Path, clock: Clock) -> None:
        """Private: use :meth:`open`, which sets the connection up and migrates."""
        self._db = db
        self._conn: sqlite3.Connection = db.conn
        self.path = path
        self.clock = clock
        self._lock = threading.RLock()
        self._depth = 0  # nesting of atomic(): 0 = no transaction open

    # ---------------------------------------------------------------- opening

    @staticmethod
    def default_path() -> Path:
        """``$LABCTL_DB`` if set, else ``labctl.db`` in the user's data directory."""
        env = os.environ.get("LABCTL_DB")
        if env:
            return Path(env).expanduser()
        return platformdirs.user_data_path("labctl") / "labctl.db"

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        clock: Clock,
        *,
        create: bool = True,
        busy_timeout: float = 10.0,
        durable: bool = True,
    ) -> Store:
        """Open (or, if ``create``, create) the database at ``path`` and bring it up to date.

        ``busy_timeout`` is how long, in seconds of real time (SQLite waits inside its own
        C code), a write waits for another process's write to finish. Runs a quick
        integrity check, so a corrupt file fails here rather than mid-run. Raises
        :class:`StoreError` for a missing file (``create=False``), a file that is not a
        labctl database, a corrupt one, or one written by a newer labctl.

        ``durable`` (the default) makes every commit wait for the disk (synchronous=FULL),
        so a committed transition survives a power cut before the device acts. Dry runs on
        simulated devices pass False (synchronous=NORMAL: safe against crashes of labctl,
        not of the machine), which makes commits about ten times faster.
        """
        path = Path(path)
        if path.exists() and not path.is_file():
            raise StoreError(f"{path} is not a file, so it cannot be a run database")
        if not path.exists():
            if not create:
                raise StoreError(f"no run database at {path}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder for {path}: {exc}") from exc
        try:
            conn = sqlite3.connect(
                str(path),
                timeout=busy_timeout,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,  # guarded by the Store's lock instead
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run database {path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            # Reading the journal mode is the first real read of the file: a non-database
            # file fails here with "file is not a database".
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot switch to WAL mode (journal mode {mode})")
            conn.execute("PRAGMA foreign_keys = ON")
            # FULL: a transition reported committed must survive a power cut, because the
            # device is told to act right after the commit.
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            check = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            if check != ["ok"]:
                raise StoreError(f"{path} is corrupt: {'; '.join(check[:3])}")
            migrate(conn, str(path))
            db = sqlite_utils.Database(conn, execute_plugins=False)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            what = (
                "is corrupt" if "malformed" in str(exc) else "is not a usable labctl run database"
            )
            raise StoreError(f"{path} {what} (SQLite: {exc})") from exc
        return cls(db, path, clock)

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._reading("read the schema version"):
            return read_version(self._conn)

    # ---------------------------------------------------------------- transactions

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn SQLite's exceptions into one StoreError naming the file and the action."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(
                    f"{self.path}: {what}: the database stayed locked by another process"
                ) from exc
            raise StoreError(f"{self.path}: {what}: {exc}") from exc
        except (sqlite3.Error, NotFoundError) as exc:
            raise StoreError(f"{self.path}: {what}: {exc or 'not found'}") from exc

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One IMMEDIATE transaction around the block: all its writes commit, or none.

        Nested blocks become savepoints, so an exception caught inside an outer block
        still undoes everything its inner block wrote. Holds the Store's lock throughout.
        Tell devices to act only after the outermost block has exited.
        """
        with self._lock:
            depth = self._depth
            savepoint = f"sp{depth}"
            with self._guard("begin a transaction"):
                self._conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._conn.in_transaction:  # SQLite may already have rolled back
                    if depth == 0:
                        self._conn.execute("ROLLBACK")
                    else:
                        self._conn.execute(f"ROLLBACK TO {savepoint}")
                        self._conn.execute(f"RELEASE {savepoint}")
                raise
            self._depth -= 1
            try:
                with self._guard("commit"):
                    self._conn.execute("COMMIT" if depth == 0 else f"RELEASE {savepoint}")
            except StoreError:
                if depth == 0 and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        with self._guard(what), self.atomic():
            yield

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """A consistent snapshot for several queries (a deferred read transaction)."""
        with self._lock, self._guard(what):
            if self._conn.in_transaction:  # inside atomic() or an outer read: reuse it
                yield
                return
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    @contextmanager
    def _query(self, what: str) -> Iterator[None]:
        """Around ONE statement whose rows are all fetched inside the block: SQLite reads
        it from one snapshot by itself, so no transaction is opened (see ``_reading``)."""
        with self._lock, self._guard(what):
            yield

    # ---------------------------------------------------------------- audit events

    def _append_event(
        self,
        *,
        entity: str,
        entity_id: int | None,
        action: str,
        from_state: str | None,
        to_state: str | None,
        actor: str,
        reason: str,
        data: Mapping[str, Any] | None,
        run_id: int | None,
    ) -> Event:
        """Append one event to the chain. Must run inside :meth:`atomic`."""
        if not actor:
            raise StoreError(f"an event needs an actor ({entity} {entity_id}: {action})")
        # The last number issued, not the last row's: a tail deleted behind the triggers'
        # back leaves a gap that verify_chain reports, instead of being silently continued.
        issued, last_hash = self._conn.execute(
            "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'events'),"
            " (SELECT hash FROM events ORDER BY seq DESC LIMIT 1)"
        ).fetchone()
        row: dict[str, Any] = {
            "seq": (issued or 0) + 1,
            "time": to_iso(self.clock.now()),
            "run_id": run_id,
            "entity": entity,
            "entity_id": entity_id,
            "action": action,
            "from_state": plain(from_state),
            "to_state": plain(to_state),
            "actor": actor,
            "reason": reason,
            "data": to_json(dict(data or {})),
            "prev_hash": last_hash if last_hash is not None else audit.GENESIS,
        }
        row["hash"] = audit.event_hash(row)
        self._conn.execute(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * len(row))})",
            [row[c] for c in EVENTS.columns],
        )
        return EVENTS.decode(row)

    def _spec(self, entity: str, *, stateful: bool = False) -> TableSpec:
        spec = TABLES.get(entity)
        if spec is None:
            raise StoreError(f"unknown entity kind {entity!r} (known: {', '.join(TABLES)})")
        if stateful and not spec.stateful:
            raise StoreError(f"{entity} rows have no state to transition")
        return spec

    def transition(
        self,
        entity: str,
        entity_id: int,
        to_state: str,
        *,
        expected_from: str,
        actor: str,
        reason: str,
        data: dict[str, Any] | None = None,
        updates: dict[str, Any] | None = None,
    ) -> Event:
        """Move one row to ``to_state`` and append its audit event, in ONE transaction.

        Checks the row is in ``expected_from`` (else :class:`InvalidTransition` naming the
        entity, id and actual state, and nothing is written), sets ``state`` plus the
        columns in ``updates`` (datetimes and JSON values coded as on insert), and appends
        an event with action 'transition' ('update' if the state stays the same) whose data
        is ``data`` plus ``{"updates": updates}``. Commit happens before this returns:
        only then may a device be told to act.
        """
        spec = self._spec(entity, stateful=True)
        to_state, expected_from = plain(to_state), plain(expected_from)
        updates = dict(updates or {})
        fixed = _FIXED & set(updates)
        if fixed:
            raise StoreError(f"transition() cannot set {', '.join(sorted(fixed))} of a {entity}")
        if updates and data and "updates" in data:
            raise StoreError("event data may not use the key 'updates' when updates are given")
        values = spec.encode_row(updates)
        values["state"] = to_state
        if "updated_at" in spec.columns:
            values["updated_at"] = to_iso(self.clock.now())
        with self._writing(f"move {entity} {entity_id} to {to_state!r}"):
            row = self._conn.execute(
                f"SELECT state, {spec.run_id_sql} FROM {spec.table} WHERE id = ?", (entity_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no {entity} with id {entity_id}")
            actual, run_id = row
            if actual != expected_from:
                raise InvalidTransition(
                    f"{entity} {entity_id} is {actual!r}, not {expected_from!r}: "
                    f"cannot move it to {to_state!r}"
                )
            assignments = ", ".join(f"{col} = ?" for col in values)
            self._conn.execute(
                f"UPDATE {spec.table} SET {assignments} WHERE id = ?",
                [*values.values(), entity_id],
            )
            event_data = dict(data or {})
            if updates:
                event_data["updates"] = updates
            return self._append_event(
                entity=entity,
                entity_id=entity_id,
                action="transition" if actual != to_state else "update",
                from_state=actual,
                to_state=to_state,
                actor=actor,
                reason=reason,
                data=event_data,
                run_id=run_id,
            )

    def record(
        self,
        action: str,
        *,
        entity: str,
        entity_id: int | None = None,
        actor: str,
        reason: str = "",
        data: dict[str, Any] | None = None,
        run_id: int | None = None,
    ) -> Event:
        """Append an event that changes no state: a device call or result, a note.

        ``entity`` may be a table kind ('job', 'run', ...; the row must exist and its run
        is filled in) or any other name ('device', 'engine') with ``run_id`` given by the
        caller.
        """
        with self._writing(f"record {action!r} for {entity} {entity_id}"):
            if entity in TABLES and entity_id is not None:
                spec = TABLES[entity]
                row = self._conn.execute(
                    f"SELECT {spec.run_id_sql} FROM {spec.table} WHERE id = ?", (entity_id,)
                ).fetchone()
                if row is None:
                    raise StoreError(f"no {entity} with id {entity_id}")
                if run_id is not None and run_id != row[0]:
                    raise StoreError(f"{entity} {entity_id} belongs to run {row[0]}, not {run_id}")
                run_id = row[0]
            return self._append_event(
                entity=entity,
                entity_id=entity_id,
                action=action,
                from_state=None,
                to_state=None,
                actor=actor,
                reason=reason,
                data=data,
                run_id=run_id,
            )

    # ---------------------------------------------------------------- inserts

    def _insert(
        self,
        entity: str,
        values: dict[str, Any],
        *,
        actor: str,
        reason: str = "",
        event_data: Mapping[str, Any] | None = None,
    ) -> Any:
        """Insert one row and its 'created' event in one transaction; return the row."""
        spec = self._spec(entity)
        encoded = spec.encode_row(values)
        with self._writing(f"add a {entity}"):
            cur = self._conn.execute(
                f"INSERT INTO {spec.table} ({', '.join(encoded)}) "
                f"VALUES ({', '.join('?' * len(encoded))})",
                list(encoded.values()),
            )
            new_id = cur.lastrowid
            run_id = self._conn.execute(
                f"SELECT {spec.run_id_sql} FROM {spec.table} WHERE id = ?", (new_id,)
            ).fetchone()[0]
            self._append_event(
                entity=entity,
                entity_id=new_id,
                action="created",
                from_state=None,
                to_state=values.get("state"),
                actor=actor,
                reason=reason,
                data=values if event_data is None else event_data,
                run_id=run_id,
            )
            return spec.decode(self._row(spec, new_id))

    def insert_run(
        self,
        name: str,
        *,
        protocol_text: str,
        protocol_id: str,
        protocol_version: str,
        parameters: Mapping[str, Any],
        plates: int,
        start: datetime,
        timezone: str,
        workcell_name: str,
        workcell_text: str,
        actor: str,
        reason: str = "",
        state: str = "planned",
    ) -> Run:
        """Add a run; the store computes ``protocol_sha256`` from ``protocol_text``."""
        now = self.clock.now()
        values = {
            "name": name,
            "protocol_text": protocol_text,
            "protocol_sha256": _sha256(protocol_text),
            "protocol_id": protocol_id,
            "protocol_version": protocol_version,
            "parameters": dict(parameters),
            "plates": plates,
            "start": start,
            "timezone": timezone,
            "workcell_name": workcell_name,
            "workcell_text": workcell_text,
            "state": state,
            "created_at": now,
            "updated_at": now,
        }
        # The audit row carries digests of the texts, not the texts themselves.
        event_data = {
            k: v for k, v in values.items() if k not in ("protocol_text", "workcell_text")
        }
        event_data["workcell_sha256"] = _sha256(workcell_text)
        return self._insert("run", values, actor=actor, reason=reason, event_data=event_data)

    def insert_plate(
        self,
        run_id: int,
        label: str,
        *,
        labware: str,
        actor: str,
        state: str = "pending",
        reason: str = "",
    ) -> Plate:
        """Add a plate (label unique within the run)."""
        values = {"run_id": run_id, "label": label, "labware": labware, "state": state}
        return self._insert("plate", values, actor=actor, reason=reason)

    def insert_task(
        self,
        run_id: int,
        *,
        key: str,
        kind: str,
        day: int,
        due: datetime,
        spec: Any,
        actor: str,
        plate_id: int | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        planned_start: datetime | None = None,
        planned_end: datetime | None = None,
        state: str = "pending",
        reason: str = "",
    ) -> Task:
        """Add a task (``key`` unique within the run, ``spec`` any JSON value)."""
        values = {
            "run_id": run_id,
            "plate_id": plate_id,
            "key": key,
            "kind": kind,
            "day": day,
            "due": due,
            "window_start": window_start,
            "window_end": window_end,
            "spec": spec,
            "state": state,
            "planned_start": planned_start,
            "planned_end": planned_end,
        }
        return self._insert("task", values, actor=actor, reason=reason)

    def insert_job(
        self,
        task_id: int,
        *,
        seq: int,
        device: str,
        op: str,
        spec: Any,
        actor: str,
        scheduled_start: datetime | None = None,
        state: str = "pending",
        reason: str = "",
    ) -> Job:
        """Add a device operation to a task (``seq`` unique within the task)."""
        values = {
            "task_id": task_id,
            "seq": seq,
            "device": device,
            "op": op,
            "spec": spec,
            "state": state,
            "scheduled_start": scheduled_start,
        }
        return self._insert("job", values, actor=actor, reason=reason)

    def insert_prompt(
        self,
        run_id: int,
        *,
        kind: str,
        text: str,
        actor: str,
        choices: Sequence[Any] = (),
        default_choice: str | None = None,
        deadline: datetime | None = None,
        job_id: int | None = None,
        reason: str = "",
    ) -> Prompt:
        """Open a prompt to the operator (state 'open')."""
        values = {
            "run_id": run_id,
            "job_id": job_id,
            "kind": kind,
            "text": text,
            "choices": list(choices),
            "default_choice": default_choice,
            "deadline": deadline,
            "state": "open",
            "created_at": self.clock.now(),
        }
        return self._insert("prompt", values, actor=actor, reason=reason)

    def insert_command(
        self,
        verb: str,
        *,
        actor: str,
        run_id: int | None = None,
        args: Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> Command:
        """Queue an operator command (state 'pending') for the engine to apply."""
        values = {
            "run_id": run_id,
            "verb": verb,
            "args": dict(args or {}),
            "actor": actor,
            "reason": reason,
            "state": "pending",
            "created_at": self.clock.now(),
        }
        return self._insert("command", values, actor=actor, reason=reason)

    def insert_alarm(
        self,
        *,
        severity: str,
        code: str,
        message: str,
        actor: str,
        run_id: int | None = None,
        device: str | None = None,
    ) -> Alarm:
        """Raise an alarm (state 'active', raised now by ``actor``)."""
        values = {
            "run_id": run_id,
            "device": device,
            "severity": severity,
            "code": code,
            "message": message,
            "state": "active",
            "raised_at": self.clock.now(),
            "raised_by": actor,
        }
        return self._insert("alarm", values, actor=actor)

    def insert_qc_value(
        self,
        run_id: int,
        *,
        measure: str,
        value: float,
        unit: str,
        actor: str,
        min_value: float | None = None,
        max_value: float | None = None,
        task_id: int | None = None,
    ) -> QcValue:
        """Record a QC measurement; ``passed`` is min_value <= value <= max_value (bounds optional)."""
        passed = (min_value is None or value >= min_value) and (
            max_value is None or value <= max_value
        )
        values = {
            "run_id": run_id,
            "task_id": task_id,
            "measure": measure,
            "value": float(value),
            "unit": unit,
            "min_value": min_value,
            "max_value": max_value,
            "passed": passed,
            "recorded_at": self.clock.now(),
        }
        return self._insert("qc", values, actor=actor)

    def insert_reagent_lot(
        self,
        run_id: int,
        *,
        reagent: str,
        lot: str,
        actor: str,
        expiry: date | None = None,
        task_id: int | None = None,
    ) -> ReagentLot:
        """Record which lot of a reagent a run (or one task of it) used."""
        values = {
            "run_id": run_id,
            "task_id": task_id,
            "reagent": reagent,
            "lot": lot,
            "expiry": expiry,
            "recorded_at": self.clock.now(),
        }
        return self._insert("lot", values, actor=actor)

    # ---------------------------------------------------------------- common transitions

    def answer_prompt(self, prompt_id: int, answer: Any, *, actor: str, reason: str = "") -> Event:
        """Answer an open prompt (open -> answered). The caller checks ``answer`` is allowed."""
        return self.transition(
            "prompt",
            prompt_id,
            "answered",
            expected_from="open",
            actor=actor,
            reason=reason,
            updates={"answer": answer, "answered_by": actor, "answered_at": self.clock.now()},
        )

    def mark_command_applied(
        self, command_id: int, *, actor: str, result: Any = None, reason: str = ""
    ) -> Event:
        """pending -> applied, with the time and what applying it did."""
        return self.transition(
            "command",
            command_id,
            "applied",
            expected_from="pending",
            actor=actor,
            reason=reason,
            updates={"applied_at": self.clock.now(), "result": result},
        )

    def mark_command_rejected(
        self, command_id: int, *, actor: str, reason: str, result: Any = None
    ) -> Event:
        """pending -> rejected; ``applied_at`` then holds when it was refused."""
        return self.transition(
            "command",
            command_id,
            "rejected",
            expected_from="pending",
            actor=actor,
            reason=reason,
            updates={"applied_at": self.clock.now(), "result": result},
        )

    def acknowledge_alarm(self, alarm_id: int, *, actor: str, reason: str = "") -> Event:
        """active -> acknowledged (the condition may persist until cleared)."""
        return self.transition(
            "alarm",
            alarm_id,
            "acknowledged",
            expected_from="active",
            actor=actor,
            reason=reason,
            updates={"acknowledged_at": self.clock.now(), "acknowledged_by": actor},
        )

    def clear_alarm(self, alarm_id: int, *, actor: str, reason: str = "") -> Event:
        """active or acknowledged -> cleared."""
        with self.atomic():
            current = self.get_alarm(alarm_id).state
            if current not in ("active", "acknowledged"):
                raise InvalidTransition(f"alarm {alarm_id} is {current!r}: cannot clear it")
            return self.transition(
                "alarm",
                alarm_id,
                "cleared",
                expected_from=current,
                actor=actor,
                reason=reason,
                updates={"cleared_at": self.clock.now(), "cleared_by": actor},
            )

    # ---------------------------------------------------------------- reads

    def _row(self, spec: TableSpec, row_id: int) -> dict[str, Any]:
        """The raw row ``row_id`` of the spec's table; raises NotFoundError if absent."""
        # Fetched whole (one row at most): a half-read statement would hold its snapshot.
        rows = list(self._db.query(f"SELECT * FROM [{spec.table}] WHERE id = ?", [row_id]))
        if not rows:
            raise NotFoundError(f"no {spec.table} row with id {row_id}")
        return rows[0]

    def _get(self, entity: str, row_id: int) -> Any:
        spec = self._spec(entity)
        with self._query(f"read {entity} {row_id}"):
            try:
                return spec.decode(self._row(spec, row_id))
            except NotFoundError:
                raise StoreError(f"{self.path}: no {entity} with id {row_id}") from None

    def _rows(self, entity: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        spec = self._spec(entity)
        with self._query(f"list {spec.table}"):
            return [spec.decode(r) for r in self._db.query(sql, list(params))]

    def get_run(self, run_id: int) -> Run:
        return self._get("run", run_id)

    def get_plate(self, plate_id: int) -> Plate:
        return self._get("plate", plate_id)

    def get_task(self, task_id: int) -> Task:
        return self._get("task", task_id)

    def get_job(self, job_id: int) -> Job:
        return self._get("job", job_id)

    def get_prompt(self, prompt_id: int) -> Prompt:
        return self._get("prompt", prompt_id)

    def get_alarm(self, alarm_id: int) -> Alarm:
        return self._get("alarm", alarm_id)

    def get_command(self, command_id: int) -> Command:
        return self._get("command", command_id)

    def list_runs(self, state: str | None = None) -> list[Run]:
        """All runs (or those in ``state``), newest first."""
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        return self._rows("run", f"SELECT * FROM runs {where} ORDER BY id DESC", params)

    def run_summary(self, run_id: int) -> RunSummary:
        """A run with its counts, read in one snapshot."""
        with self._reading(f"summarise run {run_id}"):
            run = self.get_run(run_id)

            def count(sql: str) -> int:
                return self._conn.execute(sql, (run_id,)).fetchone()[0]

            def by_state(sql: str) -> dict[str, int]:
                return dict(self._conn.execute(sql, (run_id,)).fetchall())

            return RunSummary(
                run=run,
                plates=count("SELECT COUNT(*) FROM plates WHERE run_id = ?"),
                tasks_by_state=by_state(
                    "SELECT state, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY state"
                ),
                jobs_by_state=by_state(
                    "SELECT jobs.state, COUNT(*) FROM jobs JOIN tasks ON tasks.id = jobs.task_id"
                    " WHERE tasks.run_id = ? GROUP BY jobs.state"
                ),
                open_prompts=count(
                    "SELECT COUNT(*) FROM prompts WHERE run_id = ? AND state = 'open'"
                ),
                active_alarms=count(
                    "SELECT COUNT(*) FROM alarms WHERE run_id = ?"
                    " AND state IN ('active', 'acknowledged')"
                ),
                pending_commands=count(
                    "SELECT COUNT(*) FROM commands WHERE run_id = ? AND state = 'pending'"
                ),
                last_event_seq=count("SELECT MAX(seq) FROM events WHERE run_id = ?"),
            )

    def plates(self, run_id: int) -> list[Plate]:
        return self._rows("plate", "SELECT * FROM plates WHERE run_id = ? ORDER BY id", [run_id])

    def tasks(self, run_id: int, state: str | None = None) -> list[Task]:
        """Tasks of a run by due time (then id)."""
        extra, params = (" AND state = ?", [state]) if state else ("", [])
        return self._rows(
            "task",
            f"SELECT * FROM tasks WHERE run_id = ?{extra} ORDER BY due, id",
            [run_id, *params],
        )

    def jobs(self, run_id: int, state: str | None = None) -> list[Job]:
        """Jobs of a run by scheduled start (their task's due time if unscheduled), task, seq."""
        extra, params = (" AND jobs.state = ?", [state]) if state else ("", [])
        return self._rows(
            "job",
            "SELECT jobs.* FROM jobs JOIN tasks ON tasks.id = jobs.task_id"
            f" WHERE tasks.run_id = ?{extra}"
            " ORDER BY COALESCE(jobs.scheduled_start, tasks.due), tasks.due, tasks.id, jobs.seq",
            [run_id, *params],
        )

    def pending_commands(self, run_id: int | None = None) -> list[Command]:
        """Commands not yet applied or rejected, oldest first (all runs if ``run_id`` is None)."""
        extra, params = (" AND run_id = ?", [run_id]) if run_id is not None else ("", [])
        return self._rows(
            "command",
            f"SELECT * FROM commands WHERE state = 'pending'{extra} ORDER BY id",
            params,
        )

    def open_prompts(self, run_id: int | None = None) -> list[Prompt]:
        """Prompts waiting for an answer, oldest first."""
        extra, params = (" AND run_id = ?", [run_id]) if run_id is not None else ("", [])
        return self._rows(
            "prompt", f"SELECT * FROM prompts WHERE state = 'open'{extra} ORDER BY id", params
        )

    def prompts_for_job(self, job_id: int) -> list[Prompt]:
        """Every prompt asked for one job, oldest first."""
        return self._rows("prompt", "SELECT * FROM prompts WHERE job_id = ? ORDER BY id", [job_id])

    def active_alarms(self, run_id: int | None = None) -> list[Alarm]:
        """Alarms not yet cleared (acknowledged ones included), oldest first."""
        extra, params = (" AND run_id = ?", [run_id]) if run_id is not None else ("", [])
        return self._rows(
            "alarm",
            f"SELECT * FROM alarms WHERE state IN ('active', 'acknowledged'){extra} ORDER BY id",
            params,
        )

    def alarms(self, run_id: int | None = None) -> list[Alarm]:
        """Every alarm (cleared ones too), oldest first; ``run_id``: those filed under it."""
        extra, params = (" WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        return self._rows("alarm", f"SELECT * FROM alarms{extra} ORDER BY id", params)

    def alarms_for_run(self, run_id: int, *, active_only: bool = False) -> list[Alarm]:
        """The alarms that concern a run, oldest first: those filed under it, and the
        workcell's own (device alarms, filed under no run) that stood while the run was
        registered and not yet finished: a door left open concerns every run on it."""
        active = " AND a.state IN ('active', 'acknowledged')" if active_only else ""
        return self._rows(
            "alarm",
            "SELECT a.* FROM alarms a JOIN runs r ON r.id = ? WHERE "
            "(a.run_id = r.id OR (a.run_id IS NULL"
            " AND (a.cleared_at IS NULL OR a.cleared_at >= r.created_at)"
            " AND (r.state NOT IN ('completed', 'aborted', 'failed')"
            " OR a.raised_at <= r.updated_at)))"
            f"{active} ORDER BY a.id",
            [run_id],
        )

    def qc_values(self, run_id: int) -> list[QcValue]:
        return self._rows("qc", "SELECT * FROM qc_values WHERE run_id = ? ORDER BY id", [run_id])

    def reagent_lots(self, run_id: int) -> list[ReagentLot]:
        return self._rows(
            "lot", "SELECT * FROM reagent_lots WHERE run_id = ? ORDER BY id", [run_id]
        )

    def events(
        self,
        run_id: int | None = None,
        *,
        entity: str | None = None,
        entity_id: int | None = None,
        action: str | None = None,
        actor: str | None = None,
        text: str | None = None,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int | None = 100,
        newest_first: bool = False,
    ) -> list[Event]:
        """Audit events, filtered and paged by seq.

        ``entity`` is the entity kind ('job', 'prompt', ...); ``text`` matches (case-
        insensitively for ASCII) anywhere in action, states, actor, reason or data. Page
        forwards with ``after_seq`` = last seq seen, backwards with ``before_seq`` and
        ``newest_first``.
        """
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("run_id", run_id),
            ("entity", entity),
            ("entity_id", entity_id),
            ("action", action),
            ("actor", actor),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if after_seq is not None:
            where.append("seq > ?")
            params.append(after_seq)
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        if text:
            searched = ("action", "from_state", "to_state", "actor", "reason", "data")
            where.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in searched) + ")")
            params.extend([_like(text)] * len(searched))
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq" + (" DESC" if newest_first else "")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._reading("list events"):
            return [EVENTS.decode(r) for r in self._db.query(sql, params)]

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest event: print it in a batch record as an outside anchor."""
        with self._reading("read the audit head"):
            row = self._conn.execute(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (row[0], row[1]) if row else None

    def verify_chain(self) -> audit.AuditReport:
        """Check the whole audit trail's hash chain (see :mod:`labctl.store.audit`)."""
        with self._reading("verify the audit trail"):
            names = {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            }
            issued = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()

            def seq_of_hash(h: str) -> int | None:
                found = self._conn.execute("SELECT seq FROM events WHERE hash = ?", (h,)).fetchone()
                return found[0] if found else None

            # A separate cursor: seq_of_hash runs queries while this one is being read.
            cursor = self._conn.cursor().execute(
                f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq"
            )
            rows = (dict(zip(EVENTS.columns, r, strict=True)) for r in cursor)
            report = audit.verify(
                rows, seq_of_hash=seq_of_hash, highest_issued=issued[0] if issued else 0
            )
        missing = [t for t in _TRIGGERS if t not in names]
        if missing:
            # Only an intact chain needs the warning in its message; a broken one says more.
            note = f" (append-only triggers missing: {', '.join(missing)})" if report.ok else ""
            report = dataclasses.replace(
                report, triggers_present=False, message=report.message + note
            )
        return report
