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
from labctl.engine.batches import riding
from labctl.engine.config import EngineConfig
from labctl.engine.machines import JobState, RunState, TaskState
from labctl.engine.places import Places
from labctl.engine.records import ChainRec, Fire, JobRec, Picture, RunRec
from labctl.errors import DeviceBusy, DeviceError, InvalidTransition, PlaceConflict
from labctl.jobs import Op
from labctl.store import Store

RECOVERY_KINDS = ("recovery", "interrupted")
IN_DOUBT = "in-doubt"  # a task the store says is to do, that may have been done in the time it lost


# How far a task got, one word per step (the plate's place after it), for 'in-doubt' prompts.
_STEP_WORDS = {
    "fetch": "fetched",
    "to_deck": "on-deck",
    "lh_run": "fed",
    "to_incubator": "back",
    "store": "done",
    "prompt": "done",
    "setpoint": "done",
    "leave": "out",  # a move to another incubator: out of the one it leaves
    "carry": "moved",
    "arrive": "done",
}
_DOUBT_WORDS = {
    "not-done": "nothing was done: the plate is in its slot, not fed",
    "fetched": "the plate is on the incubator's transfer station, not fed",
    "on-deck": "the plate is on the robot's deck, not fed",
    "fed": "the plate was fed and is still on the deck",
    "back": "the plate was fed and is back on the transfer station",
    "done": "the whole task was done: the plate was fed and is back in its slot",
}
# The same words for a plate moved from one incubator to another (a change of climate).
_MOVE_WORDS = {
    "not-done": "nothing was done: the plate is in its slot in the incubator it leaves",
    "out": "the plate is on the transfer station of the incubator it leaves",
    "moved": "the plate is on the transfer station of the incubator it moves to",
    "done": "the whole move was done: the plate is in its slot in the incubator it moves to",
}


def is_move(c: ChainRec) -> bool:
    """Whether ``c`` moves its plate from one incubator to another."""
    return any(j.op is Op.CARRY or j.params.get("step") == "carry" for j in c.jobs)


def doubt_steps(c: ChainRec) -> list[JobRec]:
    """The steps of ``c`` the store does not know were done, in order."""
    return [j for j in c.jobs if j.state not in (JobState.DONE, JobState.SKIPPED)]


def doubt_choices(c: ChainRec) -> list[str]:
    """'not-done' (nothing beyond what the store says), then the word of each step the store
    does not know was done, in order (the last is 'done').

    Where an arm carries the plate and the step leaves it on a place with several positions
    (deck slots), the word names the position (``on-deck@3``): an arm feels no plate on a
    station, so the engine must learn which slot the plate sits on before it puts another
    plate down."""
    return [w for w, _ in doubt_options(c)]


def doubt_options(c: ChainRec) -> list[tuple[str, int]]:
    """Each choice of :func:`doubt_choices` with the index (in :func:`doubt_steps`) of the
    last step it says happened (-1: none)."""
    steps = doubt_steps(c)
    out: list[tuple[str, int]] = [("not-done", -1)]
    seen: set[str] = set()
    for i, j in enumerate(steps):
        step = str(j.params.get("step") or j.op.value)
        word = _STEP_WORDS.get(step, _STEP_WORDS.get(j.op.value, "done"))
        if i == len(steps) - 1:
            out.append(("done", i))
            break
        word = word if word not in seen else f"{word}-{j.seq}"
        seen.add(word)
        positions = _positions_after(c, j.seq)
        if positions:
            out.extend((f"{word}@{p}", i) for p in positions)
        else:
            out.append((word, i))
    return out


def _positions_after(c: ChainRec, seq: int) -> list[int]:
    """The positions the plate may be on after step ``seq`` of an arm-carried chain, when
    it is on a place with several (else none: the place alone says where it is)."""
    if not any(j.role == "mover" for j in c.jobs):
        return []
    for h in c.holds:
        if h.first <= seq < h.last and len(h.positions) > 1:
            return list(h.positions)
    return []


def doubt_meaning(choice: str, c: ChainRec | None = None) -> str:
    """What a choice of :func:`doubt_choices` for chain ``c`` says, in words."""
    word, position = doubt_word(choice)
    words = _MOVE_WORDS if c is not None and is_move(c) else _DOUBT_WORDS
    base = word if word in words else word.rsplit("-", 1)[0]
    said = words.get(base, word)
    return said if position is None else f"{said} (deck position {position})"


def doubt_word(choice: str) -> tuple[str, int | None]:
    """``on-deck@3`` -> (``on-deck``, 3); a word without a position -> (word, None)."""
    word, _, at = choice.partition("@")
    return word, int(at) if at.isdigit() else None


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
        places: Places,
    ) -> None:
        self.store = store
        self.places = places
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
            if p.job_id in self.picture.jobs and p.kind == IN_DOUBT:
                self.picture.chain_of(self.picture.jobs[p.job_id]).doubt_prompt = p.id
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
                "already have been fed, so it will not be run again."
                f"{self._where(j, c)} Check the plate, finish the remaining wells by hand, then "
                "answer 'done' (or 'skip': recorded as a deviation)."
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
            f"the plate and the device: did it happen?{self._where(j, c)} {how}" + self._report(j)
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

    def ask_in_doubt(self, c: ChainRec, lh: JobRec, why: str) -> None:
        """A task not begun, whose liquid handling may have run in the time the store lost:
        the chain waits until a person says how far it got (where the plate is, whether it
        was fed): 'not-done', then one word per step (:func:`doubt_choices`)."""
        choices = doubt_choices(c)
        text = (
            f"{c.plate}: {c.title or c.task_key} ({c.key}) may already have been done, in part "
            f"or whole: {why}. Look at the plate and the robot, and say how far it got: "
            + "; ".join(f"'{w}' = {doubt_meaning(w, c)}" for w in choices)
            + ". What you say was done is not done again; the robot is still asked before it "
            "feeds." + self._report(lh)
        )
        p = self.store.insert_prompt(
            c.run_id, kind=IN_DOUBT, text=text, actor=self.cfg.actor, choices=choices, job_id=lh.id
        )
        c.doubt_prompt = p.id

    def _where(self, j: JobRec, c: ChainRec) -> str:
        """Where a liquid handling's plate is on the deck, and, when one robot run fed
        several plates, where each of them is: the person must judge each plate at its own
        position (the plan's position may not be the one the engine chose as plates came).
        A sentence with a leading space, or "" (not a liquid handling, or no deck position
        known)."""
        if j.op is not Op.LH_RUN:
            return ""
        lead = riding(j) or j.key
        shared: list[tuple[str, int | None]] = []
        for other in self.picture.jobs.values():
            if other.op is Op.LH_RUN and (other.key == lead or riding(other) == lead):
                oc = self.picture.chain_of(other)
                shared.append((oc.plate, self.places.deck_slot(oc)))
        if len(shared) > 1:
            shared.sort(key=lambda ps: (ps[1] is None, ps[1] or 0, ps[0]))
            each = ", ".join(
                f"{plate} on deck position {pos}"
                if pos is not None
                else f"{plate} (position not known)"
                for plate, pos in shared
            )
            return (
                f" This robot run fed {len(shared)} plates together: {each}. Judge each plate "
                "at its own position: the wells of one are not the other's."
            )
        pos = self.places.deck_slot(c)
        return "" if pos is None else f" {c.plate} is on {j.device} deck position {pos}."

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
        if p.kind == IN_DOUBT:
            return self._answer_doubt(p.id, p.job_id, answer, actor, reason)
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

    def _answer_doubt(
        self, prompt_id: int, job_id: int | None, answer: Any, actor: str, reason: str
    ) -> dict[str, Any]:
        lh = self.picture.jobs.get(job_id) if job_id is not None else None
        if lh is None:
            raise InvalidTransition(f"prompt {prompt_id} is about a task the engine no longer runs")
        c = self.picture.chain_of(lh)
        choices = doubt_choices(c)
        choice = answer.get("choice") if isinstance(answer, dict) else answer
        if choice not in choices:
            raise ValueError(f"'{choice}' is not one of {', '.join(choices)}")
        self.store.answer_prompt(prompt_id, {"choice": choice}, actor=actor, reason=reason)
        c.doubt_prompt = None
        _, position = doubt_word(str(choice))
        why = reason or f"the operator says how far the task got: {doubt_meaning(str(choice), c)}"
        steps = doubt_steps(c)
        upto = dict(doubt_options(c))[str(choice)]  # the last of those steps that happened
        if upto < 0:
            # Go on, asking the robot first: it may have fed the plate already.
            self.store.record("in-doubt", entity="job", entity_id=lh.id, actor=actor, reason=why)
            lh.in_doubt = True
            return {"choice": choice}
        now = self.clock.now()
        last = steps[upto]
        with self.store.atomic():
            if c.state is TaskState.PENDING:
                self.fire(c, "begin", why, actor=actor, updates={"actual_start": now})
            for j in steps[: upto + 1]:
                if j.state in (JobState.PENDING, JobState.READY):
                    self.fire(j, "confirm_done", why, actor=actor, updates={"finished_at": now})
                elif j.state in (JobState.FAILED, JobState.INTERRUPTED):
                    if j.prompt_id is not None:  # its own question is answered by this one
                        self.deadlines.pop(j.prompt_id, None)
                        self.store.answer_prompt(
                            j.prompt_id, {"choice": "done", "by": f"prompt {prompt_id}"},
                            actor=actor, reason=why,
                        )  # fmt: skip
                        j.prompt_id = None
                    self.fire(j, "confirm_done", why, actor=actor, updates={"finished_at": now})
            if last is c.jobs[-1]:
                self.fire(c, "finish", why, actor=actor, updates={"actual_end": now})
            else:
                if lh.seq <= last.seq:
                    c.main_start = c.main_start or now
                # The plate is where that step left it: it holds that place now.
                self.places.hold_at(c, last.seq, position)
        return {"choice": choice}

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
            # liquid handling happens after a skipped step. A move to another incubator
            # that is skipped part-way stops there: the plate is not where the rest expects.
            for later in c.jobs:
                if later.seq > j.seq and later.state in (JobState.PENDING, JobState.READY):
                    if j.op is Op.FETCH or later.op is Op.LH_RUN or is_move(c):
                        self.fire(later, "skip", f"follows skipped {j.op.value}", actor=actor)

    def holds(self, r: RunRec) -> bool:
        """Whether a failed job of the run still waits for a decision."""
        return any(
            j.prompt_id is not None and j.state in (JobState.FAILED, JobState.INTERRUPTED)
            for c in r.chains.values()
            for j in c.jobs
        )
