"""The run engine: carries out registered runs on a workcell, writing every step first.

One loop (:meth:`Engine.step`) applies operator commands from the store, polls running
device operations, applies recovery time-outs, watches device alarms, dispatches due jobs
and completes runs. Jobs are started and then polled, so one thread interleaves all devices.

The rule that keeps runs safe: a job's move to RUNNING is committed (with its audit event)
BEFORE the device is told to act, and the device's op id is recorded after. On start the
engine rebuilds everything from the store and reconciles each job found RUNNING with its
device (:meth:`Engine.recover`); where the device cannot tell whether an operation
happened, the job is INTERRUPTED and the operator decides. Nothing that may have happened
is repeated automatically.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from labctl.clock import Clock
from labctl.devices import (
    Device,
    DeviceAlarm,
    Incubator,
    LiquidHandler,
    NotKnown,
    Operator,
    OpState,
    OpStatus,
    PlateMover,
    Preparable,
    QuietWatch,
)
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
from labctl.errors import (
    DeviceBusy,
    DeviceError,
    DeviceNeedsOperator,
    InvalidTransition,
    LabctlError,
)
from labctl.jobs import Chain, Durations, Hold, Op, WorkcellRoles, expand, on_deck
from labctl.plan.resolve import Plan, plan_to_json
from labctl.protocol.model import Protocol
from labctl.schedule.scheduler import Schedule, Slot, schedule
from labctl.store import Store
from labctl.workcell import OperatorCalendar, parse_workcell

BLOCKING_ALARMS = {"door", "door-open", "offline", "unreachable", "needs-operator", "estop"}
ACTIVE_RUNS = (RunState.RUNNING, RunState.PAUSED, RunState.HOLDING, RunState.PLANNED)


@dataclass(frozen=True)
class EngineConfig:
    """Timing of the loop, in seconds."""

    poll_s: float = 5.0  # first poll interval once an operation passed its expected end
    poll_max_s: float = 30.0  # the interval grows to this for operations that run long
    recovery_timeout_s: float = 900.0  # after this the recovery prompt's default applies
    alarm_check_s: float = 120.0  # device alarms (door, climate, offline) are read this often
    climate_record_s: float = 1800.0  # incubator readings are written to the trail this often
    answer_timeout_s: float = 1800.0  # an unanswered task prompt raises an alarm after this
    late_margin_s: float = 60.0  # a chain later than planned by this much triggers a re-plan
    learn_last: int = 9  # planned durations follow the median overrun of this many past jobs
    learn_first: int = 3  # ... once this many of the kind have finished (one may be a one-off)
    # Liquid-handling jobs planned within this are prepared ahead (labctl.devices.Preparable:
    # a robot gets a new protocol to analyse up to two days before its first use, not as the
    # plate waits on its deck).
    prepare_ahead_s: float = 2 * 86400.0
    actor: str = "engine"


# --- registering a run ---------------------------------------------------------------------


def register_run(
    store: Store,
    clock: Clock,
    protocol: Protocol,
    plan: Plan,
    roles: WorkcellRoles,
    *,
    name: str,
    workcell_name: str,
    workcell_text: str,
    actor: str,
    durations: Durations | None = None,
    plate_labels: Sequence[str] | None = None,
    operators: OperatorCalendar | None = None,
) -> int:
    """Store a new run (state PLANNED) with its plates, tasks (one per plate) and jobs.

    Everything is written in one transaction, so a run exists whole or not at all.
    Returns the run id.
    """
    labels = list(plate_labels or [f"P{i + 1}" for i in range(plan.plates)])
    plan_json = plan_to_json(plan)
    by_task = {t["key"]: t for t in plan_json["tasks"]}
    moi = protocol.timing.max_out_of_incubator
    max_out_s = float(moi.to("s").magnitude) if moi is not None else None
    with store.atomic():
        run = store.insert_run(
            name,
            protocol_text=protocol.source_text,
            protocol_id=protocol.id,
            protocol_version=protocol.version,
            parameters={k: v for k, v in plan_json["parameters"].items()},
            plates=plan.plates,
            start=plan.start,
            timezone=plan.timezone,
            workcell_name=workcell_name,
            workcell_text=workcell_text,
            actor=actor,
            state=RunState.PLANNED.value,
        )
        # Keys carry the run ("r7:d3-feed-0900/P2") so chains of several runs stay apart.
        chains = expand(
            plan, labels, roles, durations or Durations(), max_out_s=max_out_s, run=f"r{run.id}"
        )
        sched = schedule(chains, now=clock.now(), operators=operators)
        plate_ids = {}
        for label in labels:
            plate_ids[label] = store.insert_plate(
                run.id,
                label,
                labware=protocol.culture.labware,
                actor=actor,
                state=PlateState.ACTIVE.value,
            ).id
        for ch in chains:
            cp = sched.chains.get(ch.key)
            spec = {
                "task_key": ch.task_key,
                "plate": ch.plate,
                "manual": ch.manual,
                "max_out_s": ch.max_out_s,
                "after_previous_s": ch.after_previous_s,
                "previous_key": ch.previous_key,
                "main_seq": ch.main_seq,
                "holds": [[h.place, h.first, h.last, list(h.positions)] for h in ch.holds],
                "title": ch.title,
                "run": ch.run,
                "task": by_task.get(ch.task_key, {}),
            }
            task = store.insert_task(
                run.id,
                key=ch.key,
                kind=by_task.get(ch.task_key, {}).get("kind", "task"),
                day=int(by_task.get(ch.task_key, {}).get("day", 0)),
                due=ch.due,
                spec=spec,
                actor=actor,
                plate_id=plate_ids.get(ch.plate),
                window_start=ch.window_start,
                window_end=ch.window_end,
                planned_start=cp.start if cp else None,
                planned_end=cp.end if cp else None,
                state=TaskState.PENDING.value,
            )
            for j in ch.jobs:
                slot = sched.slots.get(j.key)
                store.insert_job(
                    task.id,
                    seq=j.seq,
                    device=j.device,
                    op=j.op.value,
                    spec={
                        "key": j.key,
                        "role": j.role.value,
                        "params": j.params,
                        "duration_s": j.duration_s,
                    },
                    actor=actor,
                    scheduled_start=slot.start if slot else None,
                    state=JobState.PENDING.value,
                )
    return run.id


# --- the in-memory picture (rebuilt from the store on start) ----------------------------------


@dataclass
class JobRec:
    id: int
    task_id: int
    seq: int
    device: str
    op: Op
    key: str
    params: dict[str, Any]
    duration_s: float
    state: JobState
    op_id: str | None
    started_at: datetime | None
    attempts: int
    next_poll: datetime | None = None
    prompt_id: int | None = None  # open recovery/interruption prompt
    role: str = "operator"
    finished_at: datetime | None = None
    needs_operator: str | None = (
        None  # why the device wanted a person before this job (tips, waste)
    )
    polls: int = 0  # polls since it passed its expected end (the interval grows with them)


@dataclass
class ChainRec:
    task_id: int
    run_id: int
    key: str
    task_key: str
    plate_id: int | None
    plate: str
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
    main: int = 0  # seq of the main job (the LH run, the event prompt, the setpoint)
    holds: list[tuple[str, int, int, tuple[int, ...]]] = field(
        default_factory=list
    )  # place, first, last, positions
    title: str = ""
    run_tag: str = ""
    kind: str = ""
    day: int = 0
    jobs: list[JobRec] = field(default_factory=list)
    main_start: datetime | None = None
    late_alarmed: bool = False
    out_alarmed: bool = False
    held: dict[str, int] = field(default_factory=dict)  # place -> position this chain holds

    def main_seq(self) -> int:
        return self.main

    def deck_slot(self) -> int | None:
        for place, pos in self.held.items():
            if place.endswith(":deck"):
                return pos
        return None


@dataclass
class RunRec:
    id: int
    name: str
    state: RunState
    timezone: str
    chains: dict[str, ChainRec] = field(default_factory=dict)


class Engine:
    """Drives every active run in one store. Not thread-safe: one engine per database."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        devices: Mapping[str, Device],
        config: EngineConfig | None = None,
        *,
        watch: QuietWatch | None = None,
    ) -> None:
        """``watch`` (a simulated workcell in virtual time) lets the engine skip alarm
        checks that could only read what the last one read; real runs pass none."""
        self.store = store
        self.clock = clock
        self.devices = dict(devices)
        self.cfg = config or EngineConfig()
        self.runs: dict[int, RunRec] = {}
        self.jobs: dict[int, JobRec] = {}
        self.chains: dict[int, ChainRec] = {}
        self._schedule: Schedule | None = None
        self._replan = True
        self._maybe_complete = True
        self._alarms: dict[tuple[str, str], int] = {}  # (device, code) -> alarm id
        # (device, op) -> how much longer than estimated its latest jobs took (s, oldest
        # first); plans add the median, so they follow the workcell's real pace.
        self._overruns: dict[tuple[str, str], list[float]] = {}
        self._next_alarm_check: datetime | None = None
        self._alarm_checked_at: datetime | None = None  # when devices were last read
        self.watch = watch
        self.alarm_checks = 0  # device alarm checks made (a dry run prints both)
        self.alarm_checks_skipped = 0  # ... and slept through because the watch said quiet
        self._next_climate: datetime | None = None
        self._recovered = False
        # Caches of what the loop looks at every pass (the store stays the truth; these
        # are rebuilt by load() and kept in step with every change this engine makes).
        self.running: set[int] = set()
        self.paused_plates: set[int] = set()
        self.deadlines: dict[
            int, tuple[datetime, str, int]
        ] = {}  # prompt -> (deadline, default, job)
        self._order: list[ChainRec] = []
        self.active: set[int] = set()  # task ids of chains under way
        self.planned_end: dict[str, datetime] = {}  # chain key -> end in the latest schedule
        self.occupied: dict[tuple[str, int], int] = {}  # (place, position) -> task id holding it
        self.operators: dict[str, OperatorCalendar] = {}  # run tag ("r7") -> its workcell's
        # Called at the start of every step with the current time (a simulated
        # workcell applies its timed faults and its scripted operator's decisions here).
        self.hooks: list[Callable[[datetime], None]] = []
        # Asked for the next moment something outside the engine will act (a simulated
        # workcell's scripted operator deciding); the loop wakes then.
        self.wakes: list[Callable[[datetime], datetime | None]] = []
        self._prepared: set[str] = set()  # keys of jobs offered to their device's prepare

    # ---- state changes: always store first ----------------------------------------------

    def _commit(
        self, kind: str, entity_id: int, src: str, dst: str, trigger: str, **kw: Any
    ) -> None:
        self.store.transition(
            kind,
            entity_id,
            dst,
            expected_from=src,
            actor=kw.get("actor", self.cfg.actor),
            reason=kw.get("reason", trigger),
            data=kw.get("data"),
            updates=kw.get("updates"),
        )

    def _job(self, j: JobRec, trigger: str, reason: str, **kw: Any) -> None:
        j.state = JOB_MACHINE.fire(j.id, j.state, trigger, self._commit, reason=reason, **kw)  # type: ignore[assignment]
        if j.state is JobState.RUNNING:
            self.running.add(j.id)
        else:
            self.running.discard(j.id)
        if j.state in (JobState.DONE, JobState.SKIPPED) and j.task_id in self.chains:
            self._release(self.chains[j.task_id], j)

    def _task(self, c: ChainRec, trigger: str, reason: str, **kw: Any) -> None:
        c.state = TASK_MACHINE.fire(c.task_id, c.state, trigger, self._commit, reason=reason, **kw)  # type: ignore[assignment]
        if c.state is TaskState.ACTIVE:
            self.active.add(c.task_id)
        else:
            self.active.discard(c.task_id)
            self._maybe_complete = True
            self._clear_alarm(f"task {c.key}", "late")
            for place in list(c.held):  # a finished or skipped chain holds nothing
                self.occupied.pop((place, c.held.pop(place)), None)

    def _run(self, r: RunRec, trigger: str, reason: str, **kw: Any) -> None:
        r.state = RUN_MACHINE.fire(r.id, r.state, trigger, self._commit, reason=reason, **kw)  # type: ignore[assignment]
        # A held run pages someone: an alarm stays until the run leaves HOLDING.
        if r.state is RunState.HOLDING:
            self._raise_alarm(
                r.id,
                f"run {r.id}",
                "hold",
                f"run {r.id} '{r.name}' is on hold: {reason}",
                self.clock.now(),
            )
        else:
            self._clear_alarm(f"run {r.id}", "hold")
        self._replan = True
        self._maybe_complete = True

    # ---- loading and recovery ---------------------------------------------------------------

    def load(self) -> None:
        """Rebuild the in-memory picture of every active run from the store."""
        self.runs.clear()
        self.jobs.clear()
        self.chains.clear()
        self.running.clear()
        self.occupied.clear()
        self.active.clear()
        self._maybe_complete = True
        self.paused_plates.clear()
        self.deadlines.clear()
        for run in self.store.list_runs():
            state = RunState(run.state) if run.state in RunState._value2member_map_ else None
            if state not in ACTIVE_RUNS:
                continue
            rr = RunRec(run.id, run.name, state, run.timezone)
            if run.workcell_text:
                try:
                    wc = parse_workcell(run.workcell_text, run.workcell_name)
                    self.operators[f"r{run.id}"] = wc.operator_calendar()
                except LabctlError:
                    pass  # checked when the run was registered
            plate_rows = self.store.plates(run.id)
            plates = {p.id: p.label for p in plate_rows}
            self.paused_plates.update(
                p.id for p in plate_rows if p.state == PlateState.PAUSED.value
            )
            tasks = {t.id: t for t in self.store.tasks(run.id)}
            for t in tasks.values():
                spec = t.spec or {}
                qc = ((spec.get("task") or {}).get("event") or {}).get("qc") or []
                c = ChainRec(
                    t.id,
                    run.id,
                    t.key,
                    spec.get("task_key", t.key),
                    t.plate_id,
                    plates.get(t.plate_id, spec.get("plate", "*")),
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
                    main=int(spec.get("main_seq", 0)),
                    holds=[
                        (h[0], int(h[1]), int(h[2]), tuple(h[3])) for h in spec.get("holds", [])
                    ],
                    title=str(spec.get("title", "")),
                    run_tag=str(spec.get("run", "")),
                    kind=t.kind,
                    day=t.day,
                )
                rr.chains[c.key] = c
                self.chains[t.id] = c
                if c.state is TaskState.ACTIVE:
                    self.active.add(c.task_id)
            for j in self.store.jobs(run.id):
                js = j.spec or {}
                jr = JobRec(
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
                self.jobs[j.id] = jr
                self.chains[j.task_id].jobs.append(jr)
                if jr.state is JobState.RUNNING:
                    self.running.add(jr.id)
            self._rebuild_holds(run.id, rr)
            for c in rr.chains.values():
                c.jobs.sort(key=lambda x: x.seq)
                main = next((j for j in c.jobs if j.seq == c.main_seq()), None)
                if main is not None and main.started_at is not None:
                    c.main_start = main.started_at
            self.runs[run.id] = rr
        self._overruns.clear()
        done = [j for j in self.jobs.values() if j.state is JobState.DONE and j.finished_at]
        for j in sorted(done, key=lambda x: (x.finished_at, x.id)):
            self._learn_duration(j)
        for a in self.store.active_alarms():
            if a.device is not None:
                self._alarms[(a.device, a.code)] = a.id
        for p in self.store.open_prompts():
            if p.job_id in self.jobs and p.kind in ("recovery", "interrupted"):
                self.jobs[p.job_id].prompt_id = p.id
                if p.deadline is not None and p.default_choice is not None:
                    self.deadlines[p.id] = (p.deadline, p.default_choice, p.job_id)
        self._replan = True

    def _rebuild_holds(self, run_id: int, rr: RunRec) -> None:
        """Which chain holds which place (deck position, transfer station), from the trail."""
        chosen: dict[tuple[int, str], int] = {}
        for ev in self.store.events(run_id, action="hold", limit=None):
            chosen[(int(ev.data["task_id"]), str(ev.data["place"]))] = int(ev.data["position"])
        for c in rr.chains.values():
            c.jobs.sort(key=lambda x: x.seq)
            if c.state is not TaskState.ACTIVE:
                continue
            for place, first, last, positions in c.holds:
                started = any(
                    j.seq == first and j.state not in (JobState.PENDING, JobState.READY)
                    for j in c.jobs
                )
                released = any(
                    j.seq == last and j.state in (JobState.DONE, JobState.SKIPPED) for j in c.jobs
                )
                if started and not released:
                    pos = chosen.get((c.task_id, place), positions[0])
                    c.held[place] = pos
                    self.occupied[(place, pos)] = c.task_id

    def recover(self) -> None:
        """After a start or a crash: reconcile every job found RUNNING with its device."""
        self.load()
        for j in list(self.jobs.values()):
            if j.state is not JobState.RUNNING:
                continue
            dev = self.devices.get(j.device)
            c = self.chains[j.task_id]
            if dev is None:
                self._interrupt(j, c, f"device {j.device} is not in this workcell")
                continue
            op_id = j.op_id
            if op_id is None:
                try:
                    op_id = dev.find_op(j.key)
                except NotKnown:
                    self._interrupt(
                        j,
                        c,
                        f"{j.device} cannot tell whether {j.op.value} was received before the engine stopped",
                    )
                    continue
                except DeviceError as exc:
                    self._interrupt(j, c, f"{j.device} could not be asked after the restart: {exc}")
                    continue
                if op_id is None:
                    # The device confirms it never received the operation: starting it now
                    # repeats nothing. Record the finding, then make the job ready again.
                    self.store.record(
                        "reconciled",
                        entity="job",
                        entity_id=j.id,
                        actor=self.cfg.actor,
                        reason=f"{j.device} has no record of {j.key}: it never started",
                    )
                    self._job(j, "interrupt", "engine stopped before the device received it")
                    self._job(j, "retry", f"{j.device} confirms it never received {j.key}")
                    continue
                self._set_op(j, op_id, "found on the device after a restart")
            j.next_poll = self.clock.now()
        self._recovered = True

    def _interrupt(self, j: JobRec, c: ChainRec, why: str) -> None:
        self._job(j, "interrupt", why)
        self._ask_interrupted(j, c, why)

    def _set_op(self, j: JobRec, op_id: str, reason: str) -> None:
        self.store.transition(
            "job",
            j.id,
            JobState.RUNNING.value,
            expected_from=JobState.RUNNING.value,
            actor=self.cfg.actor,
            reason=reason,
            updates={"device_op_id": op_id},
        )
        j.op_id = op_id

    # ---- the loop -------------------------------------------------------------------------

    def step(self) -> datetime | None:
        """One pass of the loop. Returns when it next needs to run (None: nothing to do)."""
        if not self._recovered:
            self.recover()
        now = self.clock.now()
        for hook in self.hooks:
            hook(now)
        self.apply_commands()
        self._poll_running(now)
        self._apply_prompt_defaults(now)
        self._check_alarms(now)
        self._watch_out_of_incubator(now)
        if self._replan:
            self._do_replan(now)
        self._dispatch(now)
        self._prepare_ahead(now)
        self._complete_runs()
        return self._next_wake()

    def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        max_idle_s: float = 3600.0,
        max_steps: int | None = None,
    ) -> None:
        """Loop until no run is active (or ``until()``), sleeping on the clock between steps."""
        steps = 0
        while True:
            wake = self.step()
            steps += 1
            if until is not None and until():
                return
            if not any(r.state in ACTIVE_RUNS for r in self.runs.values()):
                return
            if max_steps is not None and steps >= max_steps:
                return
            now = self.clock.now()
            limit = now + timedelta(seconds=max_idle_s)
            self.clock.sleep_until(min(wake, limit) if wake is not None else limit)
            if self.clock.now() <= now:
                self.clock.sleep(min(self.cfg.poll_s, 1.0))

    # ---- commands from the console and CLI ---------------------------------------------------

    def apply_commands(self) -> None:
        for cmd in self.store.pending_commands():
            try:
                result = self._apply(cmd.verb, cmd.run_id, cmd.args or {}, cmd.actor, cmd.reason)
            except (LabctlError, KeyError, ValueError) as exc:
                self.store.mark_command_rejected(cmd.id, reason=str(exc), actor=self.cfg.actor)
                continue
            self.store.mark_command_applied(cmd.id, result=result, actor=self.cfg.actor)

    def _run_of(self, run_id: int | None) -> RunRec:
        if run_id is None or run_id not in self.runs:
            raise InvalidTransition(f"run {run_id} is not active")
        return self.runs[run_id]

    def _apply(
        self, verb: str, run_id: int | None, args: dict[str, Any], actor: str, reason: str
    ) -> dict[str, Any]:
        kw = {"actor": actor}
        if verb in ("start", "pause", "resume", "abort", "release"):
            r = self._run_of(run_id)
            plate = args.get("plate")
            if plate and verb in ("pause", "resume"):
                return self._plate(r, plate, verb, actor, reason)
            if verb == "abort":
                self._abort(r, reason or "aborted", actor)
            else:
                self._run(r, verb, reason or verb, **kw)
            if verb in ("release", "abort"):
                # The decision the run was held for has been taken: close its prompts.
                for p in self.store.open_prompts(r.id):
                    if p.kind == "decision":
                        self.store.answer_prompt(
                            p.id, {"choice": verb}, actor=actor, reason=reason or verb
                        )
            return {"state": r.state.value}
        if verb == "skip":
            r = self._run_of(run_id)
            return self._skip_task(r, str(args["task"]), args.get("plate"), actor, reason)
        if verb == "answer":
            return self._answer(int(args["prompt"]), args.get("answer"), actor, reason)
        raise ValueError(f"unknown command '{verb}'")

    def _plate(self, r: RunRec, label: str, verb: str, actor: str, reason: str) -> dict[str, Any]:
        plates = {p.label: p for p in self.store.plates(r.id)}
        if label not in plates:
            raise ValueError(f"run {r.id} has no plate {label}")
        p = plates[label]
        new = PLATE_MACHINE.fire(
            p.id, p.state, verb, self._commit, actor=actor, reason=reason or verb
        )
        if new is PlateState.PAUSED:
            self.paused_plates.add(p.id)
        else:
            self.paused_plates.discard(p.id)
        self._replan = True
        return {"plate": label, "state": new.value}

    def _abort(self, r: RunRec, reason: str, actor: str) -> None:
        self._run(r, "abort", reason, actor=actor)
        # Chains not begun are skipped; begun ones finish their plate moves (the plate goes
        # home) but no liquid handling starts any more.
        for c in r.chains.values():
            if c.state is TaskState.PENDING:
                self._task(c, "skip", f"run aborted: {reason}", actor=actor)
                for j in c.jobs:
                    if j.state in (JobState.PENDING, JobState.READY):
                        self._job(j, "skip", "run aborted", actor=actor)

    def _skip_task(
        self, r: RunRec, task_key: str, plate: str | None, actor: str, reason: str
    ) -> dict[str, Any]:
        if not reason:
            raise ValueError("skipping a task needs a reason (it is recorded as a deviation)")
        hits = [
            c
            for c in r.chains.values()
            if (c.task_key == task_key or c.key == task_key) and (plate is None or c.plate == plate)
        ]
        if not hits:
            raise ValueError(f"run {r.id} has no task {task_key}")
        skipped = []
        for c in hits:
            if c.state is not TaskState.PENDING:
                raise InvalidTransition(
                    f"task {c.key} has already started; answer its prompts instead"
                )
        for c in hits:
            with self.store.atomic():
                self._task(c, "skip", reason, actor=actor)
                for j in c.jobs:
                    if j.state in (JobState.PENDING, JobState.READY):
                        self._job(j, "skip", reason, actor=actor)
                self.store.record(
                    "deviation",
                    entity="task",
                    entity_id=c.task_id,
                    actor=actor,
                    reason=reason,
                    data={"kind": "skipped", "task": c.key},
                )
            skipped.append(c.key)
        self._replan = True
        return {"skipped": skipped}

    # ---- prompts: recovery choices, interruptions, QC ----------------------------------------

    def _ask_recovery(
        self,
        j: JobRec,
        c: ChainRec,
        error: DeviceError | None,
        detail: str,
        *,
        partial: bool = False,
    ) -> None:
        default = "retry" if isinstance(error, DeviceBusy) and j.op is not Op.LH_RUN else "hold"
        deadline = self.clock.now() + timedelta(seconds=self.cfg.recovery_timeout_s)
        if partial:
            # Some wells may already have fresh medium: running the program again would
            # feed them twice, so labctl never offers it. A person checks and finishes.
            text = (
                f"{c.plate}: {j.op.value} on {j.device} stopped part-way: {detail}. Some wells may "
                "already have been fed, so it will not be run again. Check the plate, finish the "
                "remaining wells by hand, then answer 'done' (or 'skip': recorded as a deviation)."
            )
            p = self.store.insert_prompt(
                c.run_id,
                kind="recovery",
                text=text,
                actor=self.cfg.actor,
                choices=["done", "skip", "hold"],
                default_choice="hold",
                deadline=deadline,
                job_id=j.id,
            )
            j.prompt_id = p.id
            self.deadlines[p.id] = (deadline, "hold", j.id)
            return
        text = (
            f"{c.plate}: {j.op.value} on {j.device} failed: {detail}. "
            f"Retry it, skip it (a deviation), or hold the run. Default '{default}' in "
            f"{self.cfg.recovery_timeout_s / 60:g} min."
        )
        p = self.store.insert_prompt(
            c.run_id,
            kind="recovery",
            text=text,
            actor=self.cfg.actor,
            choices=["retry", "skip", "hold"],
            default_choice=default,
            deadline=deadline,
            job_id=j.id,
        )
        j.prompt_id = p.id
        self.deadlines[p.id] = (deadline, default, j.id)

    def _ask_interrupted(self, j: JobRec, c: ChainRec, why: str) -> None:
        text = (
            f"{c.plate}: {j.op.value} on {j.device} ({j.key}) was under way when the engine "
            f"stopped, and {why}. Check the plate and the device: did it happen? "
            "'done' = it happened; 'retry' = it did not happen, do it now; 'skip' = leave it out (deviation)."
        )
        p = self.store.insert_prompt(
            c.run_id,
            kind="interrupted",
            text=text,
            actor=self.cfg.actor,
            choices=["done", "retry", "skip"],
            job_id=j.id,
        )
        j.prompt_id = p.id

    def _answer(self, prompt_id: int, answer: Any, actor: str, reason: str) -> dict[str, Any]:
        p = self.store.get_prompt(prompt_id)
        if p.state != "open":
            raise InvalidTransition(f"prompt {prompt_id} is {p.state}, not open")
        if p.kind in ("recovery", "interrupted"):
            choice = answer.get("choice") if isinstance(answer, dict) else answer
            if choice not in p.choices:
                raise ValueError(f"'{choice}' is not one of {', '.join(map(str, p.choices))}")
            self.store.answer_prompt(prompt_id, {"choice": choice}, actor=actor, reason=reason)
            self.deadlines.pop(prompt_id, None)
            self._apply_choice(
                self.jobs[p.job_id], str(choice), actor, reason or f"operator chose {choice}"
            )
            return {"choice": choice}
        # Task prompts (manual events, plate moves): the answer completes the job on poll,
        # which comes at once rather than at the job's (growing) poll interval.
        job = self.jobs.get(p.job_id) if p.job_id is not None else None
        if job is not None and job.state is JobState.RUNNING:
            job.next_poll = self.clock.now()
        self.store.answer_prompt(
            prompt_id,
            answer if isinstance(answer, dict) else {"answer": answer},
            actor=actor,
            reason=reason,
        )
        return {"answered": prompt_id}

    def _apply_choice(self, j: JobRec, choice: str, actor: str, reason: str) -> None:
        c = self.chains[j.task_id]
        r = self.runs[c.run_id]
        prev_id, j.prompt_id = j.prompt_id, None
        if choice == "hold":
            if r.state in (RunState.RUNNING, RunState.PAUSED):
                self._run(r, "hold", f"{c.key}: {reason}", actor=actor)
            # Ask again, without a default: only a person can say what happens next.
            prev = self.store.get_prompt(prev_id) if prev_id else None
            # Same choices as before but 'hold' (it is held now), and 'done' always: the
            # operator may have finished the step by hand. A step that had moved liquid
            # keeps 'retry' out.
            again = [x for x in (prev.choices if prev else ["retry", "skip"]) if x != "hold"]
            again += [] if "done" in again else ["done"]
            if "retry" in again and "done" in again and again.index("done") < again.index("retry"):
                again.remove("retry")
            p = self.store.insert_prompt(
                c.run_id,
                kind="recovery",
                text=f"{c.plate}: {j.op.value} on {j.device} failed; the run is on hold. "
                + (
                    "Retry or skip it."
                    if "retry" in again
                    else "Finish it by hand and answer 'done', or 'skip' it."
                ),
                actor=self.cfg.actor,
                choices=again,
                job_id=j.id,
            )
            j.prompt_id = p.id
            return
        if choice in ("retry", "done") and j.needs_operator:
            # The operator dealt with what the device asked for (new tip racks, emptied waste).
            attended = getattr(self.devices.get(j.device), "attended", None)
            if callable(attended):
                attended(j.key, j.needs_operator)
            self.store.record(
                "attended", entity="job", entity_id=j.id, actor=actor, reason=j.needs_operator
            )
            j.needs_operator = None
        if choice == "retry":
            j.attempts += 1
            self._job(j, "retry", reason, actor=actor, updates={"attempts": j.attempts})
        elif choice == "done":
            self._job(
                j, "confirm_done", reason, actor=actor, updates={"finished_at": self.clock.now()}
            )
            if j.seq == c.main_seq():
                c.main_start = c.main_start or self.clock.now()
        elif choice == "skip":
            self._skip_job(j, c, reason, actor)
        if r.state is RunState.HOLDING and not self._holds(r):
            self._run(r, "release", "the operator decided", actor=actor)

    def _skip_job(self, j: JobRec, c: ChainRec, reason: str, actor: str) -> None:
        with self.store.atomic():
            self._job(j, "skip", reason, actor=actor)
            self.store.record(
                "deviation",
                entity="job",
                entity_id=j.id,
                actor=actor,
                reason=reason,
                data={"kind": "skipped", "job": j.key, "op": j.op.value},
            )
            # A plate never fetched needs nothing more; otherwise it still goes home, but
            # no liquid handling happens after a skipped step.
            for later in c.jobs:
                if later.seq > j.seq and later.state in (JobState.PENDING, JobState.READY):
                    if j.op is Op.FETCH or later.op is Op.LH_RUN:
                        self._job(later, "skip", f"follows skipped {j.op.value}", actor=actor)

    def _holds(self, r: RunRec) -> bool:
        return any(
            self.jobs[jid].prompt_id is not None and self.jobs[jid].state is JobState.FAILED
            for c in r.chains.values()
            for jid in [j.id for j in c.jobs]
        )

    def _apply_prompt_defaults(self, now: datetime) -> None:
        for pid, (deadline, default, job_id) in sorted(self.deadlines.items()):
            if deadline > now:
                continue
            del self.deadlines[pid]
            if self.store.get_prompt(pid).state != "open" or job_id not in self.jobs:
                continue  # answered meanwhile (by a console, through a command)
            self.store.answer_prompt(
                pid,
                {"choice": default, "by_default": True},
                actor=self.cfg.actor,
                reason=f"no answer within {self.cfg.recovery_timeout_s / 60:g} min: default applied",
            )
            self._apply_choice(
                self.jobs[job_id], default, self.cfg.actor, "time-out: default applied"
            )

    # ---- devices ----------------------------------------------------------------------------

    def _start_op(self, j: JobRec, c: ChainRec) -> str:
        dev = self.devices.get(j.device)
        if dev is None:
            raise DeviceError(j.device, j.op.value, "no such device in the workcell")
        p = self._params(c, j)
        if j.op is Op.LH_RUN:
            assert isinstance(dev, LiquidHandler) or hasattr(dev, "start_job")
            return dev.start_job(j.key, p)  # type: ignore[union-attr]
        if j.op is Op.FETCH:
            return dev.start_fetch(j.key, int(p["slot"]))  # type: ignore[union-attr]
        if j.op is Op.STORE:
            return dev.start_store(j.key, int(p["slot"]))  # type: ignore[union-attr]
        if j.op is Op.SETPOINT:
            if isinstance(dev, Incubator) or hasattr(dev, "start_setpoint"):
                return dev.start_setpoint(
                    j.key,
                    float(p.get("temperature_c", 37.0)),
                    float(p.get("co2_pct", 5.0)),
                    p.get("o2_pct"),
                )  # type: ignore[union-attr]
        if j.op in (Op.TO_DECK, Op.TO_INCUBATOR) and (
            isinstance(dev, PlateMover) or hasattr(dev, "start_move")
        ):
            return dev.start_move(
                j.key, c.plate, str(p.get("source", "")), str(p.get("destination", ""))
            )  # type: ignore[union-attr]
        if isinstance(dev, Operator) or hasattr(dev, "ask"):
            prompt = {
                **p,
                "run_id": c.run_id,
                "job_id": j.id,
                "kind": "task",
                "text": p.get("text") or p.get("title") or j.op.value,
                "choices": p.get("qc") or [],
                "duration_s": j.duration_s,
            }
            return dev.ask(j.key, prompt)  # type: ignore[union-attr]
        raise DeviceError(j.device, j.op.value, "this device cannot do that operation")

    def _poll_running(self, now: datetime) -> None:
        for jid in sorted(self.running):
            j = self.jobs[jid]
            if j.state is not JobState.RUNNING or j.op_id is None:
                continue
            if j.next_poll is not None and j.next_poll > now:
                continue
            c = self.chains[j.task_id]
            dev = self.devices.get(j.device)
            try:
                st = (
                    dev.poll(j.op_id)
                    if dev is not None
                    else OpStatus(OpState.FAILED, "device gone")
                )
            except DeviceError as exc:
                self._raise_alarm(c.run_id, j.device, "unreachable", f"{exc}", now)
                j.next_poll = now + timedelta(seconds=self.cfg.poll_s)
                continue
            self._clear_alarm(j.device, "unreachable")
            if st.state is OpState.RUNNING:
                self._clear_alarm(j.device, "needs-operator")
                if j.op is Op.PROMPT and j.started_at is not None:
                    # Nobody has answered: after twice its expected time (at least the
                    # answer time-out) page someone, and stop paging once it is answered.
                    limit = max(2 * j.duration_s, self.cfg.answer_timeout_s)
                    if (now - j.started_at).total_seconds() > limit:
                        self._raise_alarm(
                            c.run_id,
                            f"prompt {j.key}",
                            "no-answer",
                            f"{c.plate}: nobody has answered '{j.params.get('text') or j.op.value}' for {limit / 60:.0f} min",
                            now,
                        )
                j.polls += 1
                j.next_poll = now + timedelta(
                    seconds=min(self.cfg.poll_max_s, self.cfg.poll_s * 1.3**j.polls)
                )
                if j.op is not Op.PROMPT and j.started_at is not None:
                    # The first poll came a little early (to see faster jobs); until the
                    # expected end there is nothing more to learn.
                    expected = j.started_at + timedelta(seconds=self._planned_duration(j))
                    j.next_poll = max(j.next_poll, expected)
                if st.check_at is not None and st.check_at > j.next_poll:
                    # The device says when it can next have changed: look then, but often
                    # enough that an unanswered prompt still pages someone on time.
                    latest = now + timedelta(seconds=self.cfg.answer_timeout_s)
                    j.next_poll = min(st.check_at, latest)
            elif st.state is OpState.NEEDS_OPERATOR:
                self._raise_alarm(
                    c.run_id,
                    j.device,
                    "needs-operator",
                    f"{j.device} needs the operator: {st.detail}",
                    now,
                )
                j.next_poll = now + timedelta(seconds=self.cfg.poll_s)
            elif st.state is OpState.SUCCEEDED:
                self._clear_alarm(j.device, "needs-operator")
                self._finish(j, c, st, now)
            else:
                self._job(
                    j,
                    "fail",
                    st.detail or "device reported failure",
                    data={"error": str(st.error) if st.error else st.detail},
                    updates={
                        "finished_at": now,
                        "result": {"error": str(st.error) if st.error else st.detail},
                    },
                )
                # A liquid-handling step that moved liquid before it stopped may have fed
                # some wells: never offer to run it again (a device that cannot tell counts).
                partial = j.op is Op.LH_RUN and bool((st.result or {}).get("liquid_moved", True))
                self._ask_recovery(j, c, st.error, str(st.error or st.detail), partial=partial)

    def _finish(self, j: JobRec, c: ChainRec, st: OpStatus, now: datetime) -> None:
        if j.op is Op.PROMPT:
            self._clear_alarm(f"prompt {j.key}", "no-answer")
        with self.store.atomic():
            self._job(
                j,
                "finish",
                st.detail or "done",
                updates={"finished_at": now, "result": st.result or {}},
            )
            if j.op is Op.PROMPT and c.qc:
                self._record_qc(c, st.result)
            lots = (st.result or {}).get("lots") if isinstance(st.result, dict) else None
            if isinstance(lots, dict):
                # Media and reagent lots the operator used, for the batch record.
                for reagent, lot in sorted(lots.items()):
                    self.store.insert_reagent_lot(
                        c.run_id,
                        reagent=str(reagent),
                        lot=str(lot),
                        actor=str(st.result.get("by", self.cfg.actor)),
                        task_id=c.task_id,
                    )
        j.finished_at = now
        self._learn_duration(j)
        if j.seq == c.main_seq() and c.main_start is None:
            c.main_start = j.started_at or now
        if (
            all(x.state in (JobState.DONE, JobState.SKIPPED) for x in c.jobs)
            and c.state is TaskState.ACTIVE
        ):
            self._task(c, "finish", "all jobs done", updates={"actual_end": now})
            planned_end = self.planned_end.get(c.key)
            if (
                planned_end is not None
                and (now - planned_end).total_seconds() > self.cfg.late_margin_s
            ):
                self._replan = True  # reality slipped: re-plan what has not started

    def _record_qc(self, c: ChainRec, answer: dict[str, Any]) -> None:
        values = (answer or {}).get("qc") or {}
        r = self.runs[c.run_id]
        for gate in c.qc:
            m = gate["measure"]
            if m not in values:
                continue
            v = float(values[m])
            lo, hi = gate.get("min"), gate.get("max")
            ok = (lo is None or v >= lo) and (hi is None or v <= hi)
            self.store.insert_qc_value(
                c.run_id,
                measure=m,
                value=v,
                unit=gate.get("unit", ""),
                actor=self.cfg.actor,
                task_id=c.task_id,
                min_value=lo,
                max_value=hi,
            )
            if ok:
                continue
            action = gate.get("on_fail", "hold")
            why = f"QC {m} = {v:g} outside its limits on {c.plate}: {action}"
            if action == "hold" and r.state is RunState.RUNNING:
                self._run(r, "hold", why)
                self.store.insert_prompt(
                    c.run_id,
                    kind="decision",
                    text=why + ". Release the run to go on, or abort it.",
                    actor=self.cfg.actor,
                    choices=["release", "abort"],
                )
            elif action == "abort":
                self._abort(r, why, self.cfg.actor)
            else:
                self.store.record(
                    "deviation",
                    entity="task",
                    entity_id=c.task_id,
                    actor=self.cfg.actor,
                    reason=why,
                    data={"kind": "qc", "measure": m, "value": v, "on_fail": action},
                )

    def _on_alarm_grid(self, due: datetime, t: datetime) -> datetime:
        """The first moment ``due + k * alarm_check_s`` (k >= 0) not before ``t``."""
        if t <= due:
            return due
        step = timedelta(seconds=self.cfg.alarm_check_s)
        return due + step * -((due - t) // step)  # ceil in whole microseconds

    def _alarm_check_due(self, now: datetime) -> datetime | None:
        """When the next periodic alarm check is due, as seen at ``now``.

        Checks the watch let the engine sleep through count as made on time: the cadence
        stays the one of an engine that woke for every check.
        """
        due = self._next_alarm_check
        if due is not None and self.watch is not None and now > due:
            later = self._on_alarm_grid(due, now)
            self.alarm_checks_skipped += (later - due) // timedelta(seconds=self.cfg.alarm_check_s)
            due = self._next_alarm_check = later
        return due

    def _quiet(self, now: datetime) -> bool:
        """Whether the watch says no device can have changed since the last alarm check."""
        since = self._alarm_checked_at
        return self.watch is not None and since is not None and self.watch.quiet(since, now)

    def _check_alarms(self, now: datetime) -> None:
        due = self._alarm_check_due(now)
        if due is not None and now < due:
            return
        self._next_alarm_check = now + timedelta(seconds=self.cfg.alarm_check_s)
        if self._quiet(now):
            # Each reading would equal the last check's: the alarms it left stand.
            self.alarm_checks_skipped += 1
            return
        self._alarm_checked_at = now
        self.alarm_checks += 1
        run_id = next((r.id for r in self.runs.values() if r.state in ACTIVE_RUNS), None)
        for name, dev in self.devices.items():
            try:
                current = {a.code: a for a in dev.alarms()}
            except DeviceError as exc:
                current = {"unreachable": DeviceAlarm(name, "unreachable", str(exc))}
            for code, a in current.items():
                self._raise_alarm(run_id, name, code, a.message, now)
            for dname, code in list(self._alarms):
                if dname == name and code not in current and code not in ("needs-operator", "late"):
                    self._clear_alarm(name, code)
        self._record_climate(run_id, now)

    def _record_climate(self, run_id: int | None, now: datetime) -> None:
        """Incubator readings into the trail, at most every ``climate_record_s`` (console, batch record)."""
        if self._next_climate is not None and now < self._next_climate:
            return
        self._next_climate = now + timedelta(seconds=self.cfg.climate_record_s)
        for name, dev in self.devices.items():
            read = getattr(dev, "climate", None)
            if not isinstance(dev, Incubator) or not callable(read):
                continue
            try:
                c = read()
            except (DeviceError, NotImplementedError):
                continue
            if all(v is None for v in (c.temperature_c, c.co2_pct, c.humidity_pct, c.o2_pct)):
                continue
            self.store.record(
                "climate",
                entity="device",
                actor=self.cfg.actor,
                run_id=run_id,
                reason=f"{name} climate",
                data={
                    "device": name,
                    "temperature_c": c.temperature_c,
                    "co2_pct": c.co2_pct,
                    "humidity_pct": c.humidity_pct,
                    "o2_pct": c.o2_pct,
                },
            )

    def _raise_alarm(
        self, run_id: int | None, device: str, code: str, message: str, now: datetime
    ) -> None:
        if (device, code) in self._alarms:
            return
        a = self.store.insert_alarm(
            severity="warning" if code == "late" else "error",
            code=code,
            message=message,
            actor=self.cfg.actor,
            run_id=run_id,
            device=device,
        )
        self._alarms[(device, code)] = a.id

    def _clear_alarm(self, device: str, code: str) -> None:
        aid = self._alarms.pop((device, code), None)
        if aid is not None:
            self.store.clear_alarm(aid, actor=self.cfg.actor, reason="condition cleared")

    def _out_since(self, c: ChainRec) -> datetime | None:
        """When the plate of an active chain left the incubator (None if it is not out)."""
        if c.max_out_s is None or not c.jobs:
            return None
        first, last = c.jobs[0], c.jobs[-1]
        if first.state is not JobState.DONE or first.finished_at is None:
            return None
        if last.state in (JobState.DONE, JobState.SKIPPED) or last.started_at is not None:
            return None
        return first.finished_at

    def _watch_out_of_incubator(self, now: datetime) -> None:
        """A plate out longer than the protocol allows raises an alarm and a deviation."""
        for tid in sorted(self.active):
            c = self.chains[tid]
            since = self._out_since(c)
            if since is None or c.out_alarmed or c.max_out_s is None:
                continue
            out_s = (now - since).total_seconds()
            if out_s > c.max_out_s:
                c.out_alarmed = True
                why = f"plate {c.plate} has been out of the incubator {out_s / 60:.0f} min (limit {c.max_out_s / 60:g} min) during {c.key}"
                self._raise_alarm(c.run_id, f"plate {c.plate}", "out-too-long", why, now)
                self.store.record(
                    "deviation",
                    entity="task",
                    entity_id=c.task_id,
                    actor=self.cfg.actor,
                    reason=why,
                    data={"kind": "out_of_incubator", "task": c.key, "seconds": out_s},
                )
        for dev, code in list(self._alarms):
            if code == "out-too-long" and not any(
                self._out_since(self.chains[t]) is not None
                and f"plate {self.chains[t].plate}" == dev
                for t in self.active
            ):
                self._clear_alarm(dev, code)

    def _device_blocked(self, device: str) -> bool:
        """No new operation goes to a device that is offline, open or waiting for a person.

        A climate alarm alone does not stop plate moves: leaving plates out would be worse.
        """
        return any(d == device and code in BLOCKING_ALARMS for (d, code) in self._alarms)

    # ---- scheduling and dispatch -----------------------------------------------------------

    def _do_replan(self, now: datetime) -> None:
        self._replan = False
        chains: list[Chain] = []
        done_at: dict[str, datetime] = {}
        busy: dict[str, datetime] = {}
        fixed: dict[str, Slot] = {}
        for r in self.runs.values():
            if r.state not in (RunState.RUNNING, RunState.PLANNED):
                continue
            for c in r.chains.values():
                if c.main_start is not None:
                    done_at[c.key] = c.main_start
                if c.state is TaskState.PENDING:
                    chains.append(self._chain_of(c))
                elif c.state is TaskState.ACTIVE:
                    # Under way: its started jobs are fixed, the rest follows them.
                    chains.append(self._chain_of(c))
                    for j in c.jobs:
                        if j.started_at is not None and j.state is not JobState.READY:
                            end = j.finished_at or max(
                                now, j.started_at + timedelta(seconds=self._planned_duration(j))
                            )
                            fixed[j.key] = Slot(
                                j.key, j.device, j.started_at, end, c.deck_slot(), None
                            )
        self._schedule = schedule(
            chains,
            now=now,
            busy_until=busy,
            fixed=fixed,
            done_at=done_at,
            operators=self.operators,
        )
        for key, cp in self._schedule.chains.items():
            self.planned_end[key] = cp.end
        self._order = sorted(
            (c for c in self.chains.values() if c.state is TaskState.PENDING),
            key=lambda x: (self._planned_start(x), x.key),
        )
        for key in self._schedule.late:
            c = next(
                (c for r in self.runs.values() for c in r.chains.values() if c.key == key), None
            )
            if c is not None and not c.late_alarmed:
                c.late_alarmed = True
                cp = self._schedule.chains[key]
                # Raised before the window is missed; cleared once the task is done (the
                # batch record keeps the late start).
                self._raise_alarm(
                    c.run_id,
                    f"task {c.key}",
                    "late",
                    f"{c.key} cannot start inside its window (slack {cp.slack_s / 60:.0f} min): it will be late",
                    now,
                )

    def _learn_duration(self, j: JobRec) -> None:
        """Note how much longer (or shorter) than estimated a finished job took."""
        if j.started_at is None or j.finished_at is None:
            return
        took = (j.finished_at - j.started_at).total_seconds()
        seen = self._overruns.setdefault((j.device, j.op.value), [])
        seen.append(took - j.duration_s)
        del seen[: -self.cfg.learn_last]

    def _planned_duration(self, j: JobRec) -> float:
        """The job's estimate (s) corrected by the median overrun of its kind's latest jobs.

        The estimates are generic (jobs.Durations); a workcell's robot, incubator and
        operators each have their own pace, and a plan that ignores it is late at every
        step. The median ignores a one-off (an operator away for an hour, a first move
        that also initialised the device); the result is never below half the estimate.
        """
        seen = self._overruns.get((j.device, j.op.value))
        if not seen or len(seen) < self.cfg.learn_first:
            return j.duration_s
        return max(j.duration_s * 0.5, j.duration_s + statistics.median(seen))

    def _chain_of(self, c: ChainRec) -> Chain:
        """The scheduler's view of a stored chain (jobs, window, tie, holds)."""
        from labctl.jobs import JobSpec, Role

        jobs = tuple(
            JobSpec(
                j.key,
                c.task_key,
                c.plate,
                j.seq,
                Role(j.role),
                j.device,
                j.op,
                j.params,
                self._planned_duration(j),
            )
            for j in c.jobs
        )
        holds = tuple(
            Hold(place, first, last, positions) for place, first, last, positions in c.holds
        )
        return Chain(
            c.key,
            c.task_key,
            c.plate,
            jobs,
            c.due,
            c.window_start,
            c.window_end,
            c.max_out_s,
            c.manual,
            c.after_previous_s,
            c.previous_key,
            main_seq=c.main,
            holds=holds,
            kind=c.kind,
            title=c.title,
            day=c.day,
            run=c.run_tag,
        )

    def _planned_start(self, c: ChainRec) -> datetime:
        if self._schedule is not None and c.key in self._schedule.chains:
            return self._schedule.chains[c.key].start
        return c.planned_start or c.window_start

    def _dispatch(self, now: datetime) -> None:
        busy = {self.jobs[i].device for i in self.running if self.jobs[i].op is not Op.PROMPT}
        # Chains under way first (their next step), then pending ones in planned order.
        for tid in sorted(self.active):
            self._advance(self.chains[tid], now, busy)
        begun = False
        for c in self._order:
            if self._planned_start(c) > now:
                break  # sorted by planned start: nothing later is due
            r = self.runs[c.run_id]
            if (
                c.state is not TaskState.PENDING
                or r.state is not RunState.RUNNING
                or c.plate_id in self.paused_plates
            ):
                continue
            if not self._previous_done(r, c) or self._plate_busy(r, c):
                continue
            first = c.jobs[0] if c.jobs else None
            if (
                first is None
                or (first.device in busy and first.op is not Op.PROMPT)
                or self._device_blocked(first.device)
            ):
                continue
            self._task(c, "begin", "its planned time has come", updates={"actual_start": now})
            self._advance(c, now, busy)
            begun = True
        if begun:
            self._order = [c for c in self._order if c.state is TaskState.PENDING]

    def _advance(self, c: ChainRec, now: datetime, busy: set[str]) -> None:
        """Start the chain's next step if it may start now."""
        r = self.runs[c.run_id]
        nxt = next((j for j in c.jobs if j.state not in (JobState.DONE, JobState.SKIPPED)), None)
        if nxt is None:
            self._task(c, "finish", "all jobs done", updates={"actual_end": now})
            return
        if nxt.state is JobState.PENDING:
            if r.state is RunState.ABORTED and nxt.op is Op.LH_RUN:
                self._job(nxt, "skip", "run aborted")
                return
            self._job(nxt, "ready", "previous step done")
        if nxt.state is not JobState.READY:
            return
        if (nxt.device in busy and nxt.op is not Op.PROMPT) or self._device_blocked(nxt.device):
            return
        if r.state is RunState.HOLDING and nxt.op is Op.LH_RUN:
            return
        if not self._acquire(c, nxt):
            return  # the place it needs (deck position, transfer station) is taken: wait
        self._start(nxt, c, now)
        if nxt.state is JobState.RUNNING and nxt.op is not Op.PROMPT:
            busy.add(nxt.device)

    def _acquire(self, c: ChainRec, j: JobRec) -> bool:
        """Take every place the chain starts to hold at job ``j``; False if one is taken.

        Nothing is taken unless everything asked for is free.

        A place holds one plate per position (DESIGN: a plate is never put down where
        another still is). The scheduler's choice of deck position is used when free.
        """
        wanted: list[tuple[str, int]] = []
        opening = bool(c.jobs) and j.seq == c.jobs[0].seq
        for place, first, _last, positions in c.holds:
            # Deck positions are reserved when the chain begins, not when the plate
            # arrives: a plate never leaves the incubator without a place to go, so two
            # chains can never wait on each other's plate (deck full, transfer station
            # taken by a plate that is waiting for the deck).
            reserve = opening and place.endswith(":deck")
            if (first != j.seq and not reserve) or place in c.held:
                continue
            prefer = self._scheduled_position(c, place)
            free = [p for p in positions if (place, p) not in self.occupied]
            if not free:
                return False
            wanted.append((place, prefer if prefer in free else free[0]))
        for place, pos in wanted:
            self.store.record(
                "hold",
                entity="task",
                entity_id=c.task_id,
                actor=self.cfg.actor,
                reason=f"{c.plate} takes {place} position {pos}",
                data={"task_id": c.task_id, "place": place, "position": pos},
            )
            c.held[place] = pos
            self.occupied[(place, pos)] = c.task_id
        return True

    def _scheduled_position(self, c: ChainRec, place: str) -> int | None:
        if self._schedule is None or not place.endswith(":deck"):
            return None
        for j in c.jobs:
            slot = self._schedule.slots.get(j.key)
            if slot is not None and slot.deck_slot is not None:
                return slot.deck_slot
        return None

    def _release(self, c: ChainRec, j: JobRec) -> None:
        """Give back the places whose last job is ``j`` (done or skipped)."""
        for place, _first, last, _pos in c.holds:
            if place in c.held and (
                last == j.seq or c.state in (TaskState.DONE, TaskState.SKIPPED)
            ):
                pos = c.held.pop(place)
                self.occupied.pop((place, pos), None)

    def _prepare_ahead(self, now: datetime) -> None:
        """Let devices prepare the liquid-handling jobs of running runs planned to begin
        within ``prepare_ahead_s`` (each once), with the deck position the schedule gives.
        Never acts physically and never fails the run: start_job reports what prepare met."""
        horizon = now + timedelta(seconds=self.cfg.prepare_ahead_s)
        for c in self._order:
            if self._planned_start(c) > horizon:
                break  # sorted by planned start
            if (
                c.state is not TaskState.PENDING
                or self.runs[c.run_id].state is not RunState.RUNNING
            ):
                continue
            for j in c.jobs:
                if j.op is not Op.LH_RUN or j.key in self._prepared:
                    continue
                self._prepared.add(j.key)
                device = self.devices.get(j.device)
                if j.state is not JobState.PENDING or not isinstance(device, Preparable):
                    continue
                try:
                    device.prepare(j.key, self._params(c, j, self._expected_deck_slot(c)))
                except Exception as exc:  # noqa: BLE001 - optional work must not stop feeding
                    self.store.record(
                        "prepare-failed",
                        entity="job",
                        entity_id=j.id,
                        actor=self.cfg.actor,
                        reason=f"{j.device} could not prepare {j.key}: {exc}",
                        data={"error": type(exc).__name__},
                    )

    def _expected_deck_slot(self, c: ChainRec) -> int | None:
        """The deck position the chain holds, or else the one it will most likely take (the
        schedule's choice, as ``_take`` prefers it, or the place's first position)."""
        held = c.deck_slot()
        if held is not None:
            return held
        for place, _first, _last, positions in c.holds:
            if place.endswith(":deck") and positions:
                return self._scheduled_position(c, place) or positions[0]
        return None

    def _params(self, c: ChainRec, j: JobRec, slot: int | None = None) -> dict[str, Any]:
        """The job's parameters with the deck position this chain holds (or ``slot``)."""
        slot = c.deck_slot() if slot is None else slot
        if slot is None:
            return j.params
        from labctl.jobs import JobSpec, Role

        spec = JobSpec(
            j.key, c.task_key, c.plate, j.seq, Role(j.role), j.device, j.op, j.params, j.duration_s
        )
        return on_deck(spec, slot).params

    def _start(self, j: JobRec, c: ChainRec, now: datetime) -> None:
        # 1. commit RUNNING (with the audit entry) before the device hears anything
        self._job(j, "start", f"dispatch to {j.device}", updates={"started_at": now})
        j.started_at = now
        # 2. tell the device
        try:
            op_id = self._start_op(j, c)
        except DeviceError as exc:
            j.needs_operator = str(exc) if isinstance(exc, DeviceNeedsOperator) else None
            self._job(
                j,
                "fail",
                f"{exc}",
                data={"error": str(exc)},
                updates={"finished_at": now, "result": {"error": str(exc)}},
            )
            self._ask_recovery(j, c, exc, str(exc))
            return
        # 3. record its op id, so a restart can reconcile it
        self._set_op(j, op_id, f"{j.device} accepted {j.op.value}")
        # First poll a little before the expected end: polling only from the plan on would
        # measure no job as shorter than planned, and the learned pace could only grow.
        first = self._planned_duration(j) - 2 * self.cfg.poll_s
        j.next_poll = now + timedelta(seconds=max(first, 1.0) if j.op is not Op.PROMPT else 0)
        if j.seq == c.main_seq():
            c.main_start = now

    def _previous_done(self, r: RunRec, c: ChainRec) -> bool:
        if c.previous_key is None:
            return True
        prev = r.chains.get(f"{c.previous_key}/{c.plate}") or r.chains.get(c.previous_key)
        return prev is None or prev.state in (TaskState.DONE, TaskState.SKIPPED)

    def _plate_busy(self, r: RunRec, c: ChainRec) -> bool:
        """A plate takes part in one chain at a time."""
        if c.plate == "*":
            return False
        return any(
            self.chains[t].plate == c.plate and self.chains[t].run_id == r.id
            for t in self.active
            if t != c.task_id
        )

    def _complete_runs(self) -> None:
        if not self._maybe_complete:
            return
        self._maybe_complete = False
        for r in self.runs.values():
            if (
                r.state is RunState.RUNNING
                and r.chains
                and all(c.state in (TaskState.DONE, TaskState.SKIPPED) for c in r.chains.values())
            ):
                self._run(r, "complete", "every task is done or skipped")

    def _next_wake(self) -> datetime | None:
        """The next moment something is due: a poll, a chain's planned start, a deadline.

        Chains already due but blocked (device busy, plate busy) are not counted: what
        unblocks them is a running job finishing, which has its own poll time.
        """
        now = self.clock.now()
        times = [self.jobs[i].next_poll for i in self.running if self.jobs[i].next_poll is not None]
        nxt_chain = next(
            (self._planned_start(c) for c in self._order if self._planned_start(c) > now), None
        )
        if nxt_chain is not None:
            times.append(nxt_chain)
        times.extend(d for d, _, _ in self.deadlines.values())
        for tid in self.active:
            c = self.chains[tid]
            since = self._out_since(c)
            if since is not None and not c.out_alarmed and c.max_out_s is not None:
                times.append(since + timedelta(seconds=c.max_out_s + 1))
        times.extend(t for t in (wake(now) for wake in self.wakes) if t is not None and t > now)
        due = self._alarm_check_due(now)
        if due is not None and times:
            if self.watch is not None and self._quiet(now):
                # Sleep through the checks until the watch expects a change: the check due
                # at or after that moment is the one a periodic engine would make first.
                change = self.watch.next_change(now)
                due = None if change is None else self._on_alarm_grid(due, change)
            if due is not None:
                times.append(due)
        return min(times) if times else None  # type: ignore[type-var]
