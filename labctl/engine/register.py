"""Registering a run: its plates, tasks (one per plate) and jobs, planned, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from labctl.clock import Clock
from labctl.engine.machines import JobState, PlateState, RunState, TaskState
from labctl.jobs import Durations, WorkcellRoles, expand
from labctl.plan.resolve import Plan, plan_to_json
from labctl.protocol.model import Protocol
from labctl.schedule.scheduler import schedule
from labctl.store import Store
from labctl.workcell import OperatorCalendar


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
