"""Rows of the run database as frozen dataclasses, and how each table's columns are coded.

Every read helper of :class:`~labctl.store.Store` returns these; nothing outside the store
sees a raw SQLite row. Times are aware UTC datetimes, JSON columns are decoded Python
values, ids are SQLite integer row ids.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from labctl.errors import StoreError
from labctl.store.codec import from_iso, from_json, parse_date, plain, to_iso, to_json

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "Alarm",
    "Command",
    "Event",
    "Job",
    "Plate",
    "Prompt",
    "QcValue",
    "ReagentLot",
    "Run",
    "RunSummary",
    "Task",
    "TableSpec",
    "TABLES",
    "EVENTS",
    "RUNS",
    "PLATES",
    "TASKS",
    "JOBS",
    "PROMPTS",
    "QC_VALUES",
    "REAGENT_LOTS",
    "ALARMS",
    "COMMANDS",
    "ENGINES",
    "EngineSession",
]

#: The dataclass a table's rows decode to.
M = TypeVar("M", bound="DataclassInstance")


@dataclass(frozen=True)
class Run:
    """One protocol applied to some plates from a start time on one workcell."""

    id: int
    name: str
    protocol_text: str  # the YAML exactly as loaded, so a run can be replayed and audited
    protocol_sha256: str  # hex sha256 of protocol_text (UTF-8)
    protocol_id: str
    protocol_version: str
    parameters: dict[str, Any]
    plates: int  # number of plates asked for; their labels are in the plates table
    start: datetime
    timezone: str  # IANA name of the lab's zone; protocol days are counted in it
    workcell_name: str
    workcell_text: str
    state: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Plate:
    id: int
    run_id: int
    label: str
    labware: str
    state: str


@dataclass(frozen=True)
class Task:
    """A dated piece of protocol work (a feed, an addition, a manual event) for one plate."""

    id: int
    run_id: int
    plate_id: int | None  # None for run-wide tasks
    key: str  # unique within the run; stable across re-planning
    kind: str
    day: int
    due: datetime
    window_start: datetime | None
    window_end: datetime | None
    spec: Any
    state: str
    planned_start: datetime | None
    planned_end: datetime | None
    actual_start: datetime | None
    actual_end: datetime | None


@dataclass(frozen=True)
class Job:
    """One device operation of a task, ``seq`` giving its order within the task."""

    id: int
    task_id: int
    seq: int
    device: str
    op: str
    spec: Any
    state: str
    scheduled_start: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    device_op_id: str | None  # the device's own id for the operation, to reconcile after a crash
    result: Any
    attempts: int


@dataclass(frozen=True)
class Prompt:
    """A question to the operator; ``answer`` is set when state becomes 'answered'."""

    id: int
    run_id: int
    job_id: int | None
    kind: str
    text: str
    choices: list[Any]
    default_choice: str | None
    deadline: datetime | None
    state: str
    answer: Any
    answered_by: str | None
    answered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class QcValue:
    """A measured QC value; ``passed`` is computed by the store from the bounds when recorded."""

    id: int
    run_id: int
    task_id: int | None
    measure: str
    value: float
    unit: str
    min_value: float | None
    max_value: float | None
    passed: bool
    recorded_at: datetime


@dataclass(frozen=True)
class ReagentLot:
    id: int
    run_id: int
    task_id: int | None
    reagent: str
    lot: str
    expiry: date | None
    recorded_at: datetime


@dataclass(frozen=True)
class Alarm:
    """A raised condition. State: 'active' -> 'acknowledged' -> 'cleared' (or active -> cleared)."""

    id: int
    run_id: int | None
    device: str | None
    severity: str
    code: str
    message: str
    state: str
    raised_at: datetime
    raised_by: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    cleared_by: str | None


@dataclass(frozen=True)
class Command:
    """An operator command from a console or the CLI, applied (or rejected) by the engine."""

    id: int
    run_id: int | None
    verb: str
    args: dict[str, Any]
    actor: str
    reason: str
    state: str  # 'pending', 'applied' or 'rejected'
    created_at: datetime
    applied_at: datetime | None
    result: Any


@dataclass(frozen=True)
class EngineSession:
    """One start of the engine daemon on this database. Times are wall-clock UTC.

    ``state``: 'running' (it beats), 'stopped' (it said why) or 'lost' (it stopped beating
    without a word: killed, crashed, the machine went down; noticed by the next start).
    ``held``: why it dispatches nothing now (None while it does).
    """

    id: int
    pid: int
    host: str
    workcell: str
    state: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    stop_reason: str | None
    held: str | None


@dataclass(frozen=True)
class Event:
    """One row of the append-only audit trail (see :mod:`labctl.store.audit`)."""

    seq: int
    time: datetime
    run_id: int | None
    entity: str
    entity_id: int | None
    action: str
    from_state: str | None
    to_state: str | None
    actor: str
    reason: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class RunSummary:
    """A run with the counts a status line or console header needs."""

    run: Run
    plates: int
    tasks_by_state: dict[str, int]
    jobs_by_state: dict[str, int]
    open_prompts: int
    active_alarms: int
    pending_commands: int
    last_event_seq: int | None


@dataclass(frozen=True)
class TableSpec(Generic[M]):
    """How one table maps to its dataclass ``M``: which columns hold JSON, times, dates, booleans.

    ``kind`` is the entity name used in events and in :meth:`Store.transition`;
    ``run_id_sql`` is an SQL expression giving a row's run id (jobs reach it via their task).
    """

    kind: str
    table: str
    model: type[M]
    json_cols: frozenset[str] = frozenset()
    time_cols: frozenset[str] = frozenset()
    date_cols: frozenset[str] = frozenset()
    bool_cols: frozenset[str] = frozenset()
    stateful: bool = True
    run_id_sql: str = "run_id"

    @functools.cached_property
    def columns(self) -> tuple[str, ...]:
        """The table's columns: the model's fields, in order."""
        return tuple(f.name for f in dataclasses.fields(self.model))

    def encode(self, column: str, value: Any) -> Any:
        """The SQLite value for ``value`` in ``column``."""
        if value is None:  # SQL NULL, also for JSON columns (never the text 'null')
            return None
        if column in self.json_cols:
            return to_json(value)
        value = plain(value)
        if column in self.time_cols:
            if not isinstance(value, datetime):
                raise StoreError(f"{self.table}.{column} needs a datetime, got {value!r}")
            return to_iso(value)
        if column in self.date_cols:
            if not isinstance(value, date):
                raise StoreError(f"{self.table}.{column} needs a date, got {value!r}")
            return value.isoformat()
        if column in self.bool_cols:
            return int(bool(value))
        return value

    def encode_row(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Encode a mapping of column -> value, refusing columns the table does not have."""
        unknown = set(values) - set(self.columns)
        if unknown:
            raise StoreError(f"{self.table} has no column(s) {', '.join(sorted(unknown))}")
        return {k: self.encode(k, v) for k, v in values.items()}

    def decode(self, row: Mapping[str, Any]) -> M:
        """Build the dataclass from a row mapping (extra keys in ``row`` are ignored)."""
        out: dict[str, Any] = {}
        for col in self.columns:
            value = row[col]
            if col in self.json_cols:
                value = from_json(value)
            elif value is None:
                pass
            elif col in self.time_cols:
                value = from_iso(value)
            elif col in self.date_cols:
                value = parse_date(value)
            elif col in self.bool_cols:
                value = bool(value)
            out[col] = value
        return self.model(**out)


def _spec(kind: str, table: str, model: type[M], **kw: Any) -> TableSpec[M]:
    for key in ("json_cols", "time_cols", "date_cols", "bool_cols"):
        if key in kw:
            kw[key] = frozenset(kw[key])
    return TableSpec(kind=kind, table=table, model=model, **kw)


RUNS = _spec(
    "run",
    "runs",
    Run,
    json_cols={"parameters"},
    time_cols={"start", "created_at", "updated_at"},
    run_id_sql="id",
)
PLATES = _spec("plate", "plates", Plate)
TASKS = _spec(
    "task",
    "tasks",
    Task,
    json_cols={"spec"},
    time_cols={
        "due",
        "window_start",
        "window_end",
        "planned_start",
        "planned_end",
        "actual_start",
        "actual_end",
    },
)
JOBS = _spec(
    "job",
    "jobs",
    Job,
    json_cols={"spec", "result"},
    time_cols={"scheduled_start", "started_at", "finished_at"},
    run_id_sql="(SELECT tasks.run_id FROM tasks WHERE tasks.id = jobs.task_id)",
)
PROMPTS = _spec(
    "prompt",
    "prompts",
    Prompt,
    json_cols={"choices", "answer"},
    time_cols={"deadline", "answered_at", "created_at"},
)
QC_VALUES = _spec(
    "qc", "qc_values", QcValue, time_cols={"recorded_at"}, bool_cols={"passed"}, stateful=False
)
REAGENT_LOTS = _spec(
    "lot",
    "reagent_lots",
    ReagentLot,
    time_cols={"recorded_at"},
    date_cols={"expiry"},
    stateful=False,
)
ALARMS = _spec("alarm", "alarms", Alarm, time_cols={"raised_at", "acknowledged_at", "cleared_at"})
COMMANDS = _spec(
    "command",
    "commands",
    Command,
    json_cols={"args", "result"},
    time_cols={"created_at", "applied_at"},
)

ENGINES = _spec(
    "engine",
    "engines",
    EngineSession,
    time_cols={"started_at", "heartbeat_at", "stopped_at"},
    run_id_sql="NULL",
)

#: Entity kind (as used in events and transition()) -> table description.
TABLES: dict[str, TableSpec[Any]] = {
    s.kind: s
    for s in (
        RUNS,
        PLATES,
        TASKS,
        JOBS,
        PROMPTS,
        QC_VALUES,
        REAGENT_LOTS,
        ALARMS,
        COMMANDS,
        ENGINES,
    )
}

EVENTS = _spec("event", "events", Event, json_cols={"data"}, time_cols={"time"}, stateful=False)
