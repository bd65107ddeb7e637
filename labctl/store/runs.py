"""Runs and their work: plates, dated tasks, and the device jobs of each task."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from labctl.store.models import JOBS, PLATES, RUNS, TASKS, Job, Plate, Run, RunSummary, Task
from labctl.store.rows import RowStore

__all__ = ["RunStore"]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RunStore(RowStore):
    """Adds and reads runs, plates, tasks and jobs; they change state by ``transition``."""

    # ---------------------------------------------------------------- inserts

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
        return self._insert(RUNS, values, actor=actor, reason=reason, event_data=event_data)

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
        return self._insert(PLATES, values, actor=actor, reason=reason)

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
        return self._insert(TASKS, values, actor=actor, reason=reason)

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
        return self._insert(JOBS, values, actor=actor, reason=reason)

    # ---------------------------------------------------------------- reads

    def get_run(self, run_id: int) -> Run:
        return self._get(RUNS, run_id)

    def get_plate(self, plate_id: int) -> Plate:
        return self._get(PLATES, plate_id)

    def get_task(self, task_id: int) -> Task:
        return self._get(TASKS, task_id)

    def get_job(self, job_id: int) -> Job:
        return self._get(JOBS, job_id)

    def list_runs(self, state: str | None = None) -> list[Run]:
        """All runs (or those in ``state``), newest first."""
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        return self._rows(RUNS, f"SELECT * FROM runs {where} ORDER BY id DESC", params)

    def plates(self, run_id: int) -> list[Plate]:
        return self._rows(PLATES, "SELECT * FROM plates WHERE run_id = ? ORDER BY id", [run_id])

    def tasks(self, run_id: int, state: str | None = None) -> list[Task]:
        """Tasks of a run by due time (then id)."""
        extra, params = (" AND state = ?", [state]) if state else ("", [])
        return self._rows(
            TASKS,
            f"SELECT * FROM tasks WHERE run_id = ?{extra} ORDER BY due, id",
            [run_id, *params],
        )

    def jobs(self, run_id: int, state: str | None = None) -> list[Job]:
        """Jobs of a run by scheduled start (their task's due time if unscheduled), task, seq."""
        extra, params = (" AND jobs.state = ?", [state]) if state else ("", [])
        return self._rows(
            JOBS,
            "SELECT jobs.* FROM jobs JOIN tasks ON tasks.id = jobs.task_id"
            f" WHERE tasks.run_id = ?{extra}"
            " ORDER BY COALESCE(jobs.scheduled_start, tasks.due), tasks.due, tasks.id, jobs.seq",
            [run_id, *params],
        )

    def run_summary(self, run_id: int) -> RunSummary:
        """A run with its counts, read in one snapshot."""
        with self._reading(f"summarise run {run_id}"):
            run = self.get_run(run_id)

            def count(sql: str) -> int:
                n: int = self._conn.execute(sql, (run_id,)).fetchone()[0]
                return n

            def by_state(sql: str) -> dict[str, int]:
                return dict(self._conn.execute(sql, (run_id,)).fetchall())

            # MAX over no rows: None for a run with no events yet, so not count().
            last_seq: int | None = self._conn.execute(
                "SELECT MAX(seq) FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
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
                last_event_seq=last_seq,
            )
