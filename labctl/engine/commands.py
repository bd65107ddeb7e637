"""Operator commands from the console and the CLI, applied by the engine.

Clients never change state themselves: they queue a command row, the engine applies it
here and marks it applied (with what it did) or rejected (with why). A command for a run
the engine has not loaded yet (registered while it runs) loads that run first.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from labctl.engine.machines import JobState, PlateState, TaskState
from labctl.engine.manual import DEVICE_ACTION, ManualActions
from labctl.engine.prompts import Prompts
from labctl.engine.records import Fire, Picture, RunRec, Transitions
from labctl.errors import InvalidTransition, LabctlError
from labctl.store import Store

RUN_VERBS = ("start", "pause", "resume", "abort", "release")
# Commands to the engine itself (no run): verb -> handler(actor, reason) -> what it did.
EngineVerbs = dict[str, Callable[[str, str], dict[str, Any]]]


class Commands:
    """Applies queued operator commands: run and plate state, skips, prompt answers."""

    def __init__(
        self,
        store: Store,
        picture: Picture,
        transitions: Transitions,
        prompts: Prompts,
        fire: Fire,
        actor: str,
    ) -> None:
        self.store = store
        self.transitions = transitions
        self.picture = picture
        self.prompts = prompts
        self.fire = fire
        self.actor = actor
        self.engine_verbs: EngineVerbs = {}
        # A supervisor's manual device actions, on the engine's devices (labctl.engine.manual).
        self.manual = ManualActions(store, prompts.clock, prompts.devices, picture, actor)
        self.replan_wanted = False  # a command changed what may run (the engine re-plans)

    def apply_pending(self) -> None:
        """Apply every pending command in order; each is marked applied or rejected."""
        for cmd in self.store.pending_commands():
            try:
                result = self.apply(cmd.verb, cmd.run_id, cmd.args or {}, cmd.actor, cmd.reason)
            except (LabctlError, KeyError, ValueError) as exc:
                self.store.mark_command_rejected(
                    cmd.id, reason=str(exc), result={"reason": str(exc)}, actor=self.actor
                )
                continue
            self.store.mark_command_applied(cmd.id, result=result, actor=self.actor)

    def apply(
        self, verb: str, run_id: int | None, args: dict[str, Any], actor: str, reason: str
    ) -> dict[str, Any]:
        """Apply one command; returns what it did. Raises LabctlError/ValueError to reject."""
        if verb in self.engine_verbs:
            return self.engine_verbs[verb](actor, reason)
        if verb == DEVICE_ACTION:
            return self.manual.apply(args, actor, reason)
        if verb in RUN_VERBS:
            r = self.run_of(run_id)
            plate = args.get("plate")
            if plate and verb in ("pause", "resume"):
                return self._plate(r, str(plate), verb, actor, reason)
            if verb == "abort":
                self.abort(r, reason or "aborted", actor)
            else:
                if verb == "start":
                    self._check_released(r)
                self.fire(r, verb, reason or verb, actor=actor)
            if verb in ("release", "abort"):
                # The decision the run was held for has been taken: close its prompts.
                for p in self.store.open_prompts(r.id):
                    if p.kind == "decision":
                        self.store.answer_prompt(
                            p.id, {"choice": verb}, actor=actor, reason=reason or verb
                        )
            return {"state": r.state.value}
        if verb == "skip":
            r = self.run_of(run_id)
            return self._skip_task(r, str(args["task"]), args.get("plate"), actor, reason)
        if verb == "answer":
            return self.prompts.answer(int(args["prompt"]), args.get("answer"), actor, reason)
        raise ValueError(f"unknown command '{verb}'")

    def _check_released(self, r: RunRec) -> None:
        """A real run starts only from a released protocol text (a practice or dry-run
        database runs any): the check ``labctl run`` made, made again where it counts. A
        database without accounts is one the CLI refuses to act on (or a test's)."""
        if self.store.is_practice() or self.store.user_count() == 0:
            return
        run = self.store.get_run(r.id)
        if self.store.release_of(run.protocol_sha256) is None:
            raise InvalidTransition(
                f"run {r.id}: its protocol {run.protocol_id} v{run.protocol_version} (sha256 "
                f"{run.protocol_sha256[:16]}) is not released: a supervisor releases it first"
            )

    def run_of(self, run_id: int | None) -> RunRec:
        """The live run ``run_id``; one registered since the engine loaded is loaded now."""
        if run_id is not None and run_id not in self.picture.runs:
            row = next((r for r in self.store.list_runs() if r.id == run_id), None)
            if row is not None and self.picture.add_run(self.store, row) is not None:
                self.replan_wanted = True
        if run_id is None or run_id not in self.picture.runs:
            raise InvalidTransition(f"run {run_id} is not active")
        return self.picture.runs[run_id]

    def abort(self, r: RunRec, reason: str, actor: str) -> None:
        """Abort the run: chains not begun are skipped; begun ones finish their plate moves
        (the plate goes home) but no liquid handling starts any more."""
        self.fire(r, "abort", reason, actor=actor)
        for c in r.chains.values():
            if c.state is TaskState.PENDING:
                self.fire(c, "skip", f"run aborted: {reason}", actor=actor)
                for j in c.jobs:
                    if j.state in (JobState.PENDING, JobState.READY):
                        self.fire(j, "skip", "run aborted", actor=actor)

    def extend(self, r: RunRec, seconds: float, reason: str, actor: str) -> list[str]:
        """Shift every task of the run not yet begun by ``seconds`` (its due time and window):
        the rest of the run happens that much later. Returns the keys of the tasks moved."""
        shift = timedelta(seconds=seconds)
        moved = []
        with self.store.atomic():
            for c in sorted(r.chains.values(), key=lambda x: x.key):
                if c.state is not TaskState.PENDING:
                    continue
                c.due, c.window_start, c.window_end = (
                    c.due + shift,
                    c.window_start + shift,
                    c.window_end + shift,
                )
                self.store.transition(
                    "task",
                    c.task_id,
                    TaskState.PENDING.value,
                    expected_from=TaskState.PENDING.value,
                    actor=actor,
                    reason=reason,
                    updates={
                        "due": c.due,
                        "window_start": c.window_start,
                        "window_end": c.window_end,
                    },
                )
                moved.append(c.key)
            self.store.record(
                "deviation",
                entity="run",
                entity_id=r.id,
                actor=actor,
                reason=reason,
                data={"kind": "extended", "seconds": seconds, "tasks": len(moved)},
            )
        self.replan_wanted = True
        return moved

    def _plate(self, r: RunRec, label: str, verb: str, actor: str, reason: str) -> dict[str, Any]:
        plates = {p.label: p for p in self.store.plates(r.id)}
        if label not in plates:
            raise ValueError(f"run {r.id} has no plate {label}")
        p = plates[label]
        # The store is the plate's only record; the picture keeps only which are paused.
        new = self.transitions.fire_plate(p, verb, actor=actor, reason=reason or verb)
        if new is PlateState.PAUSED:
            self.picture.paused_plates.add(p.id)
        else:
            self.picture.paused_plates.discard(p.id)
        self.replan_wanted = True
        return {"plate": label, "state": new.value}

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
        for c in hits:
            if c.state is not TaskState.PENDING:
                raise InvalidTransition(
                    f"task {c.key} has already started; answer its prompts instead"
                )
        for c in hits:
            with self.store.atomic():
                self.fire(c, "skip", reason, actor=actor)
                for j in c.jobs:
                    if j.state in (JobState.PENDING, JobState.READY):
                        self.fire(j, "skip", reason, actor=actor)
                self.store.record(
                    "deviation",
                    entity="task",
                    entity_id=c.task_id,
                    actor=actor,
                    reason=reason,
                    data={"kind": "skipped", "task": c.key},
                )
        self.replan_wanted = True
        return {"skipped": [c.key for c in hits]}
