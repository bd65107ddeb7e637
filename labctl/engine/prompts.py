"""What the engine asks the operator when a job fails or was cut off, and what it does with
the answer (retry, done, skip, hold), including the default applied when nobody answers.

A step that may have moved liquid is never offered 'retry': running the program again
could feed wells twice. After a crash a job the device cannot vouch for is INTERRUPTED and
only a person says whether it happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from labctl.clock import Clock
from labctl.devices import Attendable, Device, Reports
from labctl.engine.config import EngineConfig
from labctl.engine.machines import JobState, RunState
from labctl.engine.records import ChainRec, Fire, JobRec, Picture, RunRec
from labctl.errors import DeviceBusy, DeviceError, InvalidTransition, PlaceConflict
from labctl.jobs import Op
from labctl.store import Store

RECOVERY_KINDS = ("recovery", "interrupted")


def check_qc_answer(choices: list[Any], answer: Any) -> None:
    """A prompt carrying QC gates is answered only with a number for every measure
    (ValueError naming what is missing): a gate is never passed by saying nothing."""
    gates = [c for c in choices if isinstance(c, dict) and "measure" in c]
    if not gates:
        return
    given = answer.get("qc") if isinstance(answer, dict) else None
    given = given if isinstance(given, dict) else {}
    missing, bad = [], []
    for g in gates:
        m = str(g["measure"])
        if m not in given:
            missing.append(f"{m} ({g.get('unit') or 'no unit'})")
            continue
        try:
            value = float(given[m])
        except (TypeError, ValueError):
            bad.append(f"{m} = {given[m]!r}")
            continue
        if value != value or value in (float("inf"), float("-inf")):
            bad.append(f"{m} = {given[m]!r}")
    if missing:
        raise ValueError(f"this step records QC values: give {', '.join(missing)}")
    if bad:
        raise ValueError(f"QC values must be numbers: {', '.join(bad)}")


class Prompts:
    """Recovery and interruption prompts of jobs, their answers and their deadlines."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        cfg: EngineConfig,
        picture: Picture,
        devices: Mapping[str, Device],
        fire: Fire,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cfg = cfg
        self.picture = picture
        self.devices = devices
        self.fire = fire
        self.deadlines: dict[int, tuple[datetime, str, int]] = {}  # prompt -> (when, default, job)

    def load(self) -> None:
        """Link open prompts to their jobs (after the picture was loaded)."""
        self.deadlines.clear()
        for p in self.store.open_prompts():
            if p.job_id in self.picture.jobs and p.kind in RECOVERY_KINDS:
                self.picture.jobs[p.job_id].prompt_id = p.id
                if p.deadline is not None and p.default_choice is not None:
                    self.deadlines[p.id] = (p.deadline, p.default_choice, p.job_id)

    # ---- asking -------------------------------------------------------------------------

    def ask_recovery(
        self,
        j: JobRec,
        c: ChainRec,
        error: DeviceError | None,
        detail: str,
        *,
        partial: bool = False,
    ) -> None:
        """A failed job: retry / skip / hold, with a default after ``recovery_timeout_s``.

        ``partial``: a liquid handling stopped part-way (some wells may be fed): done / skip
        / hold, never retry.
        """
        deadline = self.clock.now() + timedelta(seconds=self.cfg.recovery_timeout_s)
        if isinstance(error, PlaceConflict):
            # Where the plate is says the step may already have happened: only a person who
            # looks can tell, and nobody is expected to guess: no default but holding.
            text = (
                f"{c.plate}: {j.op.value} on {j.device} was refused: {detail}. It may already "
                "have happened. Look at the device: 'done' = it happened; 'retry' = it did not, "
                "do it now; 'skip' = leave it out (a deviation); 'hold' = hold the run."
                + self._report(j)
            )
            choices, default = ["done", "retry", "skip", "hold"], "hold"
        elif partial:
            text = (
                f"{c.plate}: {j.op.value} on {j.device} stopped part-way: {detail}. Some wells may "
                "already have been fed, so it will not be run again. Check the plate, finish the "
                "remaining wells by hand, then answer 'done' (or 'skip': recorded as a deviation)."
            )
            choices, default = ["done", "skip", "hold"], "hold"
        else:
            default = "retry" if isinstance(error, DeviceBusy) and j.op is not Op.LH_RUN else "hold"
            text = (
                f"{c.plate}: {j.op.value} on {j.device} failed: {detail}. "
                f"Retry it, skip it (a deviation), or hold the run. Default '{default}' in "
                f"{self.cfg.recovery_timeout_s / 60:g} min."
            )
            choices = ["retry", "skip", "hold"]
        p = self.store.insert_prompt(
            c.run_id,
            kind="recovery",
            text=text,
            actor=self.cfg.actor,
            choices=choices,
            default_choice=default,
            deadline=deadline,
            job_id=j.id,
        )
        j.prompt_id = p.id
        self.deadlines[p.id] = (deadline, default, j.id)

    def ask_interrupted(self, j: JobRec, c: ChainRec, why: str) -> None:
        """A job under way that its device cannot vouch for (the engine stopped, the device
        restarted and lost it): done / retry / skip / hold, with what the device says now.
        A liquid handling that may have moved liquid is never offered 'retry'."""
        choices = ["done", "retry", "skip", "hold"]
        if j.op is Op.LH_RUN:
            choices.remove("retry")
            how = (
                "'done' = it happened (or finish the wells by hand first); 'skip' = leave it out "
                "(a deviation); 'hold' = hold the run. It is never run again by itself: some "
                "wells may already be fed."
            )
        else:
            how = (
                "'done' = it happened; 'retry' = it did not happen, do it now; 'skip' = leave it "
                "out (a deviation); 'hold' = hold the run."
            )
        text = (
            f"{c.plate}: {j.op.value} on {j.device} ({j.key}) was under way, and {why}. Check "
            f"the plate and the device: did it happen? {how}" + self._report(j)
        )
        p = self.store.insert_prompt(
            c.run_id,
            kind="interrupted",
            text=text,
            actor=self.cfg.actor,
            choices=choices,
            job_id=j.id,
        )
        j.prompt_id = p.id

    def _report(self, j: JobRec) -> str:
        """What the job's device says of it now, as the end of a prompt's text."""
        dev = self.devices.get(j.device)
        if not isinstance(dev, Reports):
            return ""
        try:
            said = dev.report(j.key)
        except Exception as exc:  # noqa: BLE001 - a report must never stop a prompt
            said = f"it could not be asked ({exc})"
        return f" {j.device} says: {said}" if said else ""

    # ---- answers ------------------------------------------------------------------------

    def answer(self, prompt_id: int, answer: Any, actor: str, reason: str) -> dict[str, Any]:
        """Apply an operator's answer to prompt ``prompt_id`` (from a command)."""
        p = self.store.get_prompt(prompt_id)
        if p.state != "open":
            raise InvalidTransition(f"prompt {prompt_id} is {p.state}, not open")
        if p.kind in RECOVERY_KINDS:
            choice = answer.get("choice") if isinstance(answer, dict) else answer
            if choice not in p.choices:
                raise ValueError(f"'{choice}' is not one of {', '.join(map(str, p.choices))}")
            job = self.picture.jobs.get(p.job_id) if p.job_id is not None else None
            if job is None:
                raise InvalidTransition(
                    f"prompt {prompt_id} is about a job the engine no longer runs"
                )
            self.store.answer_prompt(prompt_id, {"choice": choice}, actor=actor, reason=reason)
            self.deadlines.pop(prompt_id, None)
            self.apply_choice(job, str(choice), actor, reason or f"operator chose {choice}")
            return {"choice": choice}
        # Task prompts (manual events, plate moves): the answer completes the job on poll,
        # which comes at once rather than at the job's (growing) poll interval.
        check_qc_answer(p.choices, answer)
        task_job = self.picture.jobs.get(p.job_id) if p.job_id is not None else None
        if task_job is not None and task_job.state is JobState.RUNNING:
            task_job.next_poll = self.clock.now()
        self.store.answer_prompt(
            prompt_id,
            answer if isinstance(answer, dict) else {"answer": answer},
            actor=actor,
            reason=reason,
        )
        return {"answered": prompt_id}

    def apply_defaults(self, now: datetime) -> None:
        """Apply the default choice of recovery prompts nobody answered in time."""
        for pid, (deadline, default, job_id) in sorted(self.deadlines.items()):
            if deadline > now:
                continue
            del self.deadlines[pid]
            if self.store.get_prompt(pid).state != "open" or job_id not in self.picture.jobs:
                continue  # answered meanwhile (by a console, through a command)
            self.store.answer_prompt(
                pid,
                {"choice": default, "by_default": True},
                actor=self.cfg.actor,
                reason=f"no answer within {self.cfg.recovery_timeout_s / 60:g} min: default applied",
            )
            self.apply_choice(
                self.picture.jobs[job_id], default, self.cfg.actor, "time-out: default applied"
            )

    def next_deadline(self) -> datetime | None:
        return min((d for d, _, _ in self.deadlines.values()), default=None)

    def apply_choice(self, j: JobRec, choice: str, actor: str, reason: str) -> None:
        """Carry out 'hold', 'retry', 'done' or 'skip' for job ``j``."""
        c = self.picture.chain_of(j)
        r = self.picture.run_of(c)
        prev_id, j.prompt_id = j.prompt_id, None
        if choice == "hold":
            self._hold(j, c, r, prev_id, actor, reason)
            return
        if choice in ("retry", "done") and j.needs_operator:
            # The operator dealt with what the device asked for (new tip racks, emptied waste).
            dev = self.devices.get(j.device)
            if isinstance(dev, Attendable):
                dev.attended(j.key, j.needs_operator)
            self.store.record(
                "attended", entity="job", entity_id=j.id, actor=actor, reason=j.needs_operator
            )
            j.needs_operator = None
        if choice == "retry":
            j.attempts += 1
            self.fire(j, "retry", reason, actor=actor, updates={"attempts": j.attempts})
        elif choice == "done":
            self.fire(
                j, "confirm_done", reason, actor=actor, updates={"finished_at": self.clock.now()}
            )
            if j.seq == c.main_seq:
                c.main_start = c.main_start or self.clock.now()
        elif choice == "skip":
            self.skip_job(j, c, reason, actor)
        if r.state is RunState.HOLDING and not self.holds(r):
            self.fire(r, "release", "the operator decided", actor=actor)

    def _hold(
        self, j: JobRec, c: ChainRec, r: RunRec, prev_id: int | None, actor: str, reason: str
    ) -> None:
        if r.state in (RunState.RUNNING, RunState.PAUSED):
            self.fire(r, "hold", f"{c.key}: {reason}", actor=actor)
        # Ask again, without a default: only a person can say what happens next. Same
        # choices as before but 'hold' (it is held now), and 'done' always: the operator may
        # have finished the step by hand. A step that may have moved liquid was never
        # offered 'retry', and is not now.
        prev = self.store.get_prompt(prev_id) if prev_id else None
        again = [x for x in (prev.choices if prev else ["retry", "skip"]) if x != "hold"]
        again += [] if "done" in again else ["done"]
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

    def skip_job(self, j: JobRec, c: ChainRec, reason: str, actor: str) -> None:
        """Skip a failed or interrupted job (a deviation) and what can no longer follow it."""
        with self.store.atomic():
            self.fire(j, "skip", reason, actor=actor)
            self.store.record(
                "deviation",
                entity="job",
                entity_id=j.id,
                actor=actor,
                reason=reason,
                data={"kind": "skipped", "job": j.key, "op": j.op.value},
            )
            # A plate never fetched needs nothing more; otherwise it still goes home, but no
            # liquid handling happens after a skipped step.
            for later in c.jobs:
                if later.seq > j.seq and later.state in (JobState.PENDING, JobState.READY):
                    if j.op is Op.FETCH or later.op is Op.LH_RUN:
                        self.fire(later, "skip", f"follows skipped {j.op.value}", actor=actor)

    def holds(self, r: RunRec) -> bool:
        """Whether a failed job of the run still waits for a decision."""
        return any(
            j.prompt_id is not None and j.state in (JobState.FAILED, JobState.INTERRUPTED)
            for c in r.chains.values()
            for j in c.jobs
        )
