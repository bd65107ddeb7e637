"""The engine's one picture of the runs: records of runs, chains and jobs, their indices,
their transitions, and their conversion to the scheduler's types.

The store is the truth; :meth:`Picture.load` rebuilds the picture from it (on start, after
a crash) and every change the engine makes goes through :meth:`Transitions.fire`, which
commits the transition with its audit entry and returns what changed (:class:`Changed`).
The engine then lets the picture's indices, the places and the alarms react to it, in one
place (``Engine.fire``), instead of each transition hiding side effects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from labctl.engine.machines import (
    JOB_MACHINE,
    PLATE_MACHINE,
    RUN_MACHINE,
    TASK_MACHINE,
    JobState,
    PlateState,
    RunState,
    TaskState,
)
from labctl.errors import LabctlError
from labctl.jobs import Chain, Hold, JobSpec, Op, Role
from labctl.store import Store
from labctl.store.models import Job, Plate, Task
from labctl.store.models import Run as RunRow
from labctl.workcell import OperatorCalendar, parse_workcell

# Runs the engine carries out; an ABORTED run stays while a begun chain still takes its
# plate home (no liquid handling starts any more).
ACTIVE_RUNS = (RunState.RUNNING, RunState.PAUSED, RunState.HOLDING, RunState.PLANNED)
FINISHED_JOB = (JobState.DONE, JobState.SKIPPED)
FINISHED_TASK = (TaskState.DONE, TaskState.SKIPPED)


@dataclass
class JobRec:
    """One device operation of a chain, as stored (times are aware UTC datetimes)."""

    id: int
    task_id: int
    seq: int
    device: str
    op: Op
    key: str
    params: dict[str, Any]
    duration_s: float  # the generic estimate (jobs.Durations), seconds
    state: JobState
    op_id: str | None
    started_at: datetime | None
    attempts: int
    role: str = "operator"
    finished_at: datetime | None = None
    next_poll: datetime | None = None
    prompt_id: int | None = None  # open recovery/interruption prompt
    needs_operator: str | None = None  # why the device wanted a person (tips, waste)
    polls: int = 0  # polls since it passed its expected end (the interval grows with them)
    not_before: datetime | None = None  # refused by a busy device: ask it again then
    refused_since: datetime | None = None  # when its device first refused it (busy)
    refusals: int = 0
    # The store went back after this step may have run: the device is asked first, and a
    # person decides where it cannot tell (never started again on the store's word).
    in_doubt: bool = False


@dataclass
class ChainRec:
    """A task on one plate: its window and its jobs in order (the store's task row)."""

    task_id: int
    run_id: int
    key: str  # "r7:d3-feed-0900/P2"
    task_key: str  # "d3-feed-0900"
    plate_id: int | None
    plate: str  # label, "P2" ("*" for a task of every plate)
    state: TaskState
    due: datetime
    window_start: datetime
    window_end: datetime
    planned_start: datetime | None
    manual: bool
    max_out_s: float | None
    after_previous_s: float | None
    previous_key: str | None
    qc: list[dict[str, Any]]
    main_seq: int = 0  # seq of the main job (the LH run, the event prompt, the setpoint)
    holds: list[Hold] = field(default_factory=list)
    title: str = ""
    run_tag: str = ""  # "r7"
    kind: str = ""
    day: int = 0
    jobs: list[JobRec] = field(default_factory=list)
    main_start: datetime | None = None
    doubt_prompt: int | None = None  # open 'in-doubt' prompt: not begun until answered

    def next_job(self) -> JobRec | None:
        """The first job not done or skipped."""
        return next((j for j in self.jobs if j.state not in FINISHED_JOB), None)

    def finished(self) -> bool:
        return all(j.state in FINISHED_JOB for j in self.jobs)

    def out_since(self) -> datetime | None:
        """When the plate left the incubator, while it is out (None otherwise)."""
        if self.max_out_s is None or not self.jobs:
            return None
        first, last = self.jobs[0], self.jobs[-1]
        if first.state is not JobState.DONE or first.finished_at is None:
            return None
        if last.state in FINISHED_JOB or last.started_at is not None:
            return None
        return first.finished_at


@dataclass
class RunRec:
    """A run and its chains by key. ``calendar``: its workcell's operator hours."""

    id: int
    name: str
    state: RunState
    timezone: str
    calendar: OperatorCalendar | None = None
    chains: dict[str, ChainRec] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"r{self.id}"

    def live(self) -> bool:
        """Whether the engine still has work in it (an aborted run until its plates are home)."""
        if self.state in ACTIVE_RUNS:
            return True
        return self.state is RunState.ABORTED and any(
            c.state is TaskState.ACTIVE for c in self.chains.values()
        )


Record = JobRec | ChainRec | RunRec


@dataclass(frozen=True)
class Changed:
    """One committed transition: which record, from which state to which, and why."""

    record: Record
    before: Enum
    after: Enum
    trigger: str
    reason: str


class Fire(Protocol):
    """Commit a transition of a record and let the engine react to it (``Engine.fire``)."""

    def __call__(self, rec: Record, trigger: str, reason: str, **kw: Any) -> Changed: ...


class Picture:
    """Every live run, its chains and jobs, and the indices the loop reads every pass."""

    def __init__(self) -> None:
        self.runs: dict[int, RunRec] = {}
        self.chains: dict[int, ChainRec] = {}  # by task id
        self.jobs: dict[int, JobRec] = {}
        self.running: set[int] = set()  # job ids RUNNING
        self.active: set[int] = set()  # task ids ACTIVE
        self.paused_plates: set[int] = set()  # plate ids

    # ---- building it from the store ---------------------------------------------------

    def load(self, store: Store) -> None:
        """Rebuild the picture of every live run from the store."""
        self.runs.clear()
        self.chains.clear()
        self.jobs.clear()
        self.running.clear()
        self.active.clear()
        self.paused_plates.clear()
        for row in store.list_runs():
            self.add_run(store, row)

    def add_run(self, store: Store, row: RunRow) -> RunRec | None:
        """Add one run from its stored row (None if it is not live). Used on load and for
        a run registered while the engine runs."""
        if row.state not in RunState._value2member_map_:
            return None
        rr = RunRec(row.id, row.name, RunState(row.state), row.timezone, _calendar(row))
        plate_rows = store.plates(row.id)
        plates = {p.id: p.label for p in plate_rows}
        for t in store.tasks(row.id):
            c = _chain_rec(t, row.id, plates)
            rr.chains[c.key] = c
            self.chains[t.id] = c
        for job_row in store.jobs(row.id):
            jr = _job_rec(job_row)
            self.jobs[jr.id] = jr
            self.chains[jr.task_id].jobs.append(jr)
        doubted = {
            int(e.entity_id or 0) for e in store.events(row.id, action="in-doubt", limit=None)
        }
        doubted -= {
            int(e.entity_id or 0)
            for e in store.events(row.id, action="in-doubt-settled", limit=None)
        }
        for c in rr.chains.values():
            c.jobs.sort(key=lambda x: x.seq)
            for j in c.jobs:
                j.in_doubt = j.id in doubted and j.state in (JobState.PENDING, JobState.READY)
            main = next((j for j in c.jobs if j.seq == c.main_seq), None)
            if main is not None and main.started_at is not None:
                c.main_start = main.started_at
        if not rr.live():
            for c in rr.chains.values():
                self.chains.pop(c.task_id, None)
                for j in c.jobs:
                    self.jobs.pop(j.id, None)
            return None
        self.paused_plates.update(p.id for p in plate_rows if p.state == PlateState.PAUSED.value)
        for c in rr.chains.values():
            if c.state is TaskState.ACTIVE:
                self.active.add(c.task_id)
            self.running.update(j.id for j in c.jobs if j.state is JobState.RUNNING)
        self.runs[rr.id] = rr
        return rr

    # ---- looking things up ------------------------------------------------------------

    def chain_of(self, j: JobRec) -> ChainRec:
        return self.chains[j.task_id]

    def run_of(self, c: ChainRec) -> RunRec:
        return self.runs[c.run_id]

    def live_runs(self) -> Iterator[RunRec]:
        return (r for r in self.runs.values() if r.live())

    def find_chain(self, key: str) -> ChainRec | None:
        return next(
            (c for r in self.runs.values() for c in r.chains.values() if c.key == key), None
        )

    # ---- keeping the indices in step --------------------------------------------------

    def index(self, ch: Changed) -> None:
        """Keep ``running`` and ``active`` in step with a committed change."""
        rec = ch.record
        if isinstance(rec, JobRec):
            (self.running.add if rec.state is JobState.RUNNING else self.running.discard)(rec.id)
        elif isinstance(rec, ChainRec):
            (self.active.add if rec.state is TaskState.ACTIVE else self.active.discard)(rec.task_id)


class Transitions:
    """Commits transitions of the picture's records: the store first, then the record."""

    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor

    def _commit(
        self, kind: str, entity_id: int, src: str, dst: str, trigger: str, **kw: Any
    ) -> None:
        self.store.transition(
            kind,
            entity_id,
            dst,
            expected_from=src,
            actor=kw.get("actor", self.actor),
            reason=kw.get("reason", trigger),
            data=kw.get("data"),
            updates=kw.get("updates"),
        )

    def fire(self, rec: Record, trigger: str, reason: str, **kw: Any) -> Changed:
        """Commit ``trigger`` on ``rec`` (InvalidTransition if not allowed from its state);
        ``kw``: actor, data (audit), updates (row columns). Returns what changed."""
        before: Enum = rec.state
        if isinstance(rec, JobRec):
            rec.state = JOB_MACHINE.fire(
                rec.id, rec.state, trigger, self._commit, reason=reason, **kw
            )
        elif isinstance(rec, ChainRec):
            rec.state = TASK_MACHINE.fire(
                rec.task_id, rec.state, trigger, self._commit, reason=reason, **kw
            )
        else:
            rec.state = RUN_MACHINE.fire(
                rec.id, rec.state, trigger, self._commit, reason=reason, **kw
            )
        return Changed(rec, before, rec.state, trigger, reason)

    def fire_plate(self, plate: Plate, trigger: str, *, actor: str, reason: str) -> PlateState:
        """Pause or resume one plate (its row holds its state; the picture only its id)."""
        return PLATE_MACHINE.fire(
            plate.id, plate.state, trigger, self._commit, actor=actor, reason=reason
        )

    def set_op(self, j: JobRec, op_id: str, reason: str) -> None:
        """Record the device's id of a RUNNING job's operation (a restart reconciles by it)."""
        self.store.transition(
            "job",
            j.id,
            JobState.RUNNING.value,
            expected_from=JobState.RUNNING.value,
            actor=self.actor,
            reason=reason,
            updates={"device_op_id": op_id},
        )
        j.op_id = op_id


# ---- the scheduler's view ------------------------------------------------------------


def to_job_spec(c: ChainRec, j: JobRec, duration_s: float | None = None) -> JobSpec:
    """The jobs module's description of a stored job (``duration_s``: the planned one)."""
    return JobSpec(
        j.key,
        c.task_key,
        c.plate,
        j.seq,
        Role(j.role),
        j.device,
        j.op,
        j.params,
        j.duration_s if duration_s is None else duration_s,
    )


def to_chain(c: ChainRec, durations: dict[int, float]) -> Chain:
    """The scheduler's view of a stored chain; ``durations``: job id -> planned seconds."""
    return Chain(
        c.key,
        c.task_key,
        c.plate,
        tuple(to_job_spec(c, j, durations.get(j.id)) for j in c.jobs),
        c.due,
        c.window_start,
        c.window_end,
        c.max_out_s,
        c.manual,
        c.after_previous_s,
        c.previous_key,
        main_seq=c.main_seq,
        holds=tuple(c.holds),
        kind=c.kind,
        title=c.title,
        day=c.day,
        run=c.run_tag,
    )


# ---- from stored rows ----------------------------------------------------------------


def _calendar(row: RunRow) -> OperatorCalendar | None:
    """The operator hours of the workcell the run was registered on, in its own zone."""
    if not row.workcell_text:
        return None
    try:
        return parse_workcell(row.workcell_text, row.workcell_name).operator_calendar()
    except LabctlError:
        return None  # it was checked when the run was registered


def _chain_rec(t: Task, run_id: int, plates: dict[int, str]) -> ChainRec:
    spec = t.spec or {}
    qc = ((spec.get("task") or {}).get("event") or {}).get("qc") or []
    return ChainRec(
        t.id,
        run_id,
        t.key,
        spec.get("task_key", t.key),
        t.plate_id,
        plates[t.plate_id] if t.plate_id in plates else str(spec.get("plate", "*")),
        TaskState(t.state),
        t.due,
        t.window_start or t.due,
        t.window_end or t.due,
        t.planned_start,
        bool(spec.get("manual")),
        spec.get("max_out_s"),
        spec.get("after_previous_s"),
        spec.get("previous_key"),
        qc,
        main_seq=int(spec.get("main_seq", 0)),
        holds=[Hold(h[0], int(h[1]), int(h[2]), tuple(h[3])) for h in spec.get("holds", [])],
        title=str(spec.get("title", "")),
        run_tag=str(spec.get("run", "")),
        kind=t.kind,
        day=t.day,
    )


def _job_rec(j: Job) -> JobRec:
    js = j.spec or {}
    return JobRec(
        j.id,
        j.task_id,
        j.seq,
        j.device,
        Op(j.op),
        js.get("key", f"job{j.id}"),
        js.get("params", {}),
        float(js.get("duration_s", 60)),
        JobState(j.state),
        j.device_op_id,
        j.started_at,
        j.attempts,
        role=str(js.get("role", "operator")),
        finished_at=j.finished_at,
    )
