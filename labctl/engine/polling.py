"""Following running operations: poll each device when it can have changed, finish jobs
that succeeded (with their QC values and reagent lots), ask about those that failed.

Polls come a little before the expected end, then at a growing interval; a device that
knows when it can next have changed (``OpStatus.check_at``) is polled then instead. An
operator prompt nobody answers pages someone after twice its expected time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from labctl.devices import Device, OpState, OpStatus
from labctl.engine.alarms import Alarms
from labctl.engine.batches import Batches, riding
from labctl.engine.config import EngineConfig
from labctl.engine.machines import JobState, RunState, TaskState
from labctl.engine.pace import Pace
from labctl.engine.planner import Planner
from labctl.engine.prompts import Prompts
from labctl.engine.records import ChainRec, Fire, JobRec, Picture, RunRec
from labctl.errors import DeviceError, OperationLost
from labctl.jobs import Op
from labctl.store import Store

Abort = Callable[[RunRec, str, str], None]  # (run, reason, actor)
Extend = Callable[[RunRec, float, str, str], object]  # (run, seconds, reason, actor)


def prompt_subject(j: JobRec) -> str:
    return f"prompt {j.key}"


class Poller:
    """Polls running jobs and settles what their devices report."""

    def __init__(
        self,
        store: Store,
        cfg: EngineConfig,
        picture: Picture,
        devices: Mapping[str, Device],
        alarms: Alarms,
        prompts: Prompts,
        planner: Planner,
        pace: Pace,
        fire: Fire,
        abort: Abort,
        extend: Extend,
        batches: Batches,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.picture = picture
        self.devices = devices
        self.alarms = alarms
        self.prompts = prompts
        self.planner = planner
        self.pace = pace
        self.fire = fire
        self.abort = abort
        self.extend = extend
        self.batches = batches

    def poll_due(self, now: datetime) -> None:
        """Poll every running job whose next poll is due."""
        for jid in sorted(self.picture.running):
            j = self.picture.jobs[jid]
            if j.state is not JobState.RUNNING or j.op_id is None:
                continue
            if j.next_poll is not None and j.next_poll > now:
                continue
            c = self.picture.chain_of(j)
            lead = riding(j)
            if lead is not None:
                self._follow(j, c, lead, now)
                continue
            dev = self.devices.get(j.device)
            try:
                st = (
                    dev.poll(j.op_id)
                    if dev is not None
                    else OpStatus(OpState.FAILED, "device gone")
                )
            except OperationLost as exc:
                # The device no longer knows it (it restarted): a person says what happened.
                self.alarms.clear(None, j.device, "unreachable")
                self.fire(j, "interrupt", f"{exc}", data={"error": str(exc)})
                self.prompts.ask_interrupted(j, c, f"{j.device} no longer knows it: {exc.detail}")
                continue
            except DeviceError as exc:
                # Raised here, cleared only by a poll that gets through (a device check that
                # reads the device's alarms does not vouch for the operation: no flapping).
                self.alarms.raise_(None, j.device, "unreachable", f"{exc}", sticky=True)
                j.next_poll = now + timedelta(seconds=self.cfg.poll_s)
                continue
            self.alarms.clear(None, j.device, "unreachable")
            if st.state is OpState.RUNNING:
                self.alarms.clear(None, j.device, "needs-operator")
                self._still_running(j, c, st, now)
            elif st.state is OpState.NEEDS_OPERATOR:
                self.alarms.raise_(
                    None, j.device, "needs-operator", f"{j.device} needs the operator: {st.detail}"
                )
                j.next_poll = now + timedelta(seconds=self.cfg.poll_s)
            elif st.state is OpState.SUCCEEDED:
                self.alarms.clear(None, j.device, "needs-operator")
                self._finish(j, c, st, now)
            else:
                self._failed(j, c, st, now)

    def _follow(self, j: JobRec, c: ChainRec, key: str, now: datetime) -> None:
        """A job riding in the robot run of job ``key`` ends as that run ends."""
        found = self.batches.find(c, key)
        if found is None:
            why = f"the robot run of {key} it was fed in is not known"
            self.fire(j, "interrupt", why)
            self.prompts.ask_interrupted(j, c, why)
            return
        lead_c, lead = found
        if lead.state in (JobState.PENDING, JobState.READY, JobState.RUNNING):
            j.next_poll = max(now + timedelta(seconds=self.cfg.poll_s), lead.next_poll or now)
            return
        if lead.state is JobState.DONE:
            detail = f"fed with {lead_c.plate} in the robot run of {key}"
            self._finish(j, c, OpStatus(OpState.SUCCEEDED, detail, result={"rode": key}), now)
            return
        why = f"the robot run it shared with {lead_c.plate} ({key}) is {lead.state.value}"
        if lead.state is JobState.INTERRUPTED:
            self.fire(j, "interrupt", why)
            self.prompts.ask_interrupted(j, c, why)
            return
        # failed or skipped: liquid may have moved into this plate's wells too
        self.fire(
            j,
            "fail",
            why,
            data={"error": why},
            updates={"finished_at": now, "result": {"error": why}},
        )
        self.prompts.ask_recovery(j, c, None, why, partial=True)

    def _still_running(self, j: JobRec, c: ChainRec, st: OpStatus, now: datetime) -> None:
        if j.op is Op.PROMPT and j.started_at is not None:
            # Nobody has answered: after twice its expected time (at least the answer
            # time-out) page someone, and stop paging once it is answered.
            limit = max(2 * j.duration_s, self.cfg.answer_timeout_s)
            if (now - j.started_at).total_seconds() > limit:
                self.alarms.raise_(
                    c.run_id,
                    prompt_subject(j),
                    "no-answer",
                    f"{c.plate}: nobody has answered '{j.params.get('text') or j.op.value}' for {limit / 60:.0f} min",
                )
        j.polls += 1
        j.next_poll = now + timedelta(
            seconds=min(self.cfg.poll_max_s, self.cfg.poll_s * 1.3**j.polls)
        )
        if j.op is not Op.PROMPT and j.started_at is not None:
            # The first poll came a little early (to see faster jobs); until the expected
            # end there is nothing more to learn.
            expected = j.started_at + timedelta(seconds=self.pace.planned(j))
            j.next_poll = max(j.next_poll, expected)
        if st.check_at is not None and st.check_at > j.next_poll:
            # The device says when it can next have changed: look then, but often enough
            # that an unanswered prompt still pages someone on time.
            latest = now + timedelta(seconds=self.cfg.answer_timeout_s)
            j.next_poll = min(st.check_at, latest)

    def _failed(self, j: JobRec, c: ChainRec, st: OpStatus, now: datetime) -> None:
        error = str(st.error) if st.error else st.detail
        self.fire(
            j,
            "fail",
            st.detail or "device reported failure",
            data={"error": error},
            updates={"finished_at": now, "result": {"error": error}},
        )
        # A liquid-handling step that moved liquid before it stopped may have fed some
        # wells: never offer to run it again (a device that cannot tell counts as moved).
        partial = j.op is Op.LH_RUN and bool((st.result or {}).get("liquid_moved", True))
        self.prompts.ask_recovery(j, c, st.error, str(st.error or st.detail), partial=partial)

    def _finish(self, j: JobRec, c: ChainRec, st: OpStatus, now: datetime) -> None:
        if j.op is Op.PROMPT:
            self.alarms.clear(c.run_id, prompt_subject(j), "no-answer")
        result: dict[str, Any] = st.result or {}
        with self.store.atomic():
            self.fire(
                j, "finish", st.detail or "done", updates={"finished_at": now, "result": result}
            )
            if j.op is Op.PROMPT and c.qc:
                self._record_qc(c, result)
            lots = result.get("lots")
            if isinstance(lots, dict):
                # Media and reagent lots the operator used, for the batch record.
                for reagent, lot in sorted(lots.items()):
                    self.store.insert_reagent_lot(
                        c.run_id,
                        reagent=str(reagent),
                        lot=str(lot),
                        actor=str(result.get("by", self.cfg.actor)),
                        task_id=c.task_id,
                    )
        j.finished_at = now
        self.pace.learn(j)
        if j.seq == c.main_seq and c.main_start is None:
            c.main_start = j.started_at or now
        if c.finished() and c.state is TaskState.ACTIVE:
            self.fire(c, "finish", "all jobs done", updates={"actual_end": now})
            planned_end = self.planner.planned_end.get(c.key)
            if (
                planned_end is not None
                and (now - planned_end).total_seconds() > self.cfg.late_margin_s
            ):
                self.planner.invalidate()  # reality slipped: re-plan what has not started

    def _record_qc(self, c: ChainRec, answer: dict[str, Any]) -> None:
        values = answer.get("qc") or {}
        r = self.picture.run_of(c)
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
                self.fire(r, "hold", why)
                self.store.insert_prompt(
                    c.run_id,
                    kind="decision",
                    text=why + ". Release the run to go on, or abort it.",
                    actor=self.cfg.actor,
                    choices=["release", "abort"],
                )
            elif action == "abort":
                self.abort(r, why, self.cfg.actor)
            elif action == "extend" and gate.get("by_s"):
                self.extend(r, float(gate["by_s"]), why, self.cfg.actor)
                self.planner.invalidate()
            else:
                self.store.record(
                    "deviation",
                    entity="task",
                    entity_id=c.task_id,
                    actor=self.cfg.actor,
                    reason=why,
                    data={"kind": "qc", "measure": m, "value": v, "on_fail": action},
                )
