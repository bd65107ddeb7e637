"""The state machines of runs and jobs: each one Enum and one transition table (STYLE.md 2).

The ``transitions`` package checks that a trigger is allowed from the current state; the
store is where state lives. :func:`fire` runs one trigger: the new state is committed to
SQLite with its audit entry (through the ``commit`` callback, inside the machine's
``before_state_change``) before the call returns, and an invalid trigger raises
InvalidTransition without touching the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum
from typing import Any, Generic, TypeVar

from transitions import Machine, MachineError

from labctl.errors import InvalidTransition


class RunState(str, Enum):
    PLANNED = "planned"
    RUNNING = "running"
    PAUSED = "paused"
    HOLDING = "holding"  # an operator decision is needed (QC failure, fault)
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"


class JobState(str, Enum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"  # was running when the engine stopped; nobody knows if it happened


_R = RunState
RUN_TRANSITIONS: list[tuple[str, list[RunState], RunState]] = [
    ("start", [_R.PLANNED], _R.RUNNING),
    ("pause", [_R.RUNNING, _R.HOLDING], _R.PAUSED),
    ("resume", [_R.PAUSED], _R.RUNNING),
    ("hold", [_R.RUNNING, _R.PAUSED], _R.HOLDING),
    ("release", [_R.HOLDING], _R.RUNNING),
    ("complete", [_R.RUNNING], _R.COMPLETED),
    ("abort", [_R.PLANNED, _R.RUNNING, _R.PAUSED, _R.HOLDING], _R.ABORTED),
    ("fail", [_R.RUNNING, _R.PAUSED, _R.HOLDING], _R.FAILED),
]

_J = JobState
JOB_TRANSITIONS: list[tuple[str, list[JobState], JobState]] = [
    ("ready", [_J.PENDING], _J.READY),
    ("unready", [_J.READY], _J.PENDING),  # its run was paused before it started
    ("start", [_J.READY], _J.RUNNING),
    (
        "refused",
        [_J.RUNNING],
        _J.READY,
    ),  # the device refused it (busy, initialising): nothing happened
    ("finish", [_J.RUNNING], _J.DONE),
    ("fail", [_J.RUNNING], _J.FAILED),
    ("interrupt", [_J.RUNNING], _J.INTERRUPTED),
    ("retry", [_J.FAILED, _J.INTERRUPTED], _J.READY),
    # The operator saw that it happened (also a step not started, after the store went back
    # to an older copy: the task was done in the time the store lost).
    ("confirm_done", [_J.INTERRUPTED, _J.FAILED, _J.PENDING, _J.READY], _J.DONE),
    ("skip", [_J.PENDING, _J.READY, _J.FAILED, _J.INTERRUPTED], _J.SKIPPED),
]


class TaskState(str, Enum):
    """A task on one plate (the store's task row: one chain of jobs)."""

    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    SKIPPED = "skipped"


_T = TaskState
TASK_TRANSITIONS: list[tuple[str, list[TaskState], TaskState]] = [
    ("begin", [_T.PENDING], _T.ACTIVE),
    ("finish", [_T.ACTIVE], _T.DONE),
    ("skip", [_T.PENDING, _T.ACTIVE], _T.SKIPPED),
]


class PlateState(str, Enum):
    ACTIVE = "active"
    PAUSED = "paused"


PLATE_TRANSITIONS: list[tuple[str, list[PlateState], PlateState]] = [
    ("pause", [PlateState.ACTIVE], PlateState.PAUSED),
    ("resume", [PlateState.PAUSED], PlateState.ACTIVE),
]

TERMINAL_RUN = {_R.COMPLETED, _R.ABORTED, _R.FAILED}
TERMINAL_JOB = {_J.DONE, _J.SKIPPED}

# commit(entity_kind, entity_id, from_state, to_state, trigger, **kwargs) -> None
Commit = Callable[..., None]


S = TypeVar("S", bound=Enum)


class _Model:
    def __init__(self) -> None:
        self.state: Enum | None = None


class StateMachine(Generic[S]):
    """One machine for every entity of a kind. It holds one model, which stands for each
    entity in turn while a trigger fires (set to the entity's state, under a lock):
    attaching a model per firing made transitions build its trigger methods every time."""

    def __init__(self, kind: str, states: type[S], table: list[tuple[str, list[S], S]]) -> None:
        self.kind = kind
        self.states = states
        self.table = table
        self._lock = threading.Lock()
        self._machine = Machine(
            model=[],
            states=states,
            transitions=[{"trigger": t, "source": list(src), "dest": dst} for t, src, dst in table],
            initial=list(states)[0],
            auto_transitions=False,
            send_event=True,
            before_state_change="_commit",
        )
        self._model = _Model()
        self._machine.add_model(self._model, initial=list(states)[0])

    def triggers_from(self, state: S) -> list[str]:
        return [t for t, src, _ in self.table if state in src]

    def target(self, state: S, trigger: str) -> S:
        for t, src, dst in self.table:
            if t == trigger and state in src:
                return dst
        raise InvalidTransition(f"{self.kind}: cannot {trigger} from {state.value}")

    def fire(
        self, entity_id: Any, state: S | str, trigger: str, commit: Commit, **kwargs: Any
    ) -> S:
        """Fire ``trigger`` on the entity in ``state``; ``commit`` persists it. Returns the new state."""
        current = self.states(state)

        def _commit(event: Any) -> None:
            # transitions names Enum states by member name; the store keeps the values.
            src = self.states[event.transition.source].value
            dst = self.states[event.transition.dest].value
            commit(self.kind, entity_id, src, dst, trigger, **event.kwargs)

        model = self._model
        with self._lock:  # one model stands for every entity: one firing at a time
            self._machine.set_state(current, model=model)
            model._commit = _commit  # type: ignore[attr-defined]
            try:
                getattr(model, trigger)(**kwargs)
            except MachineError:
                raise InvalidTransition(
                    f"{self.kind} {entity_id}: cannot {trigger} while {current.value} "
                    f"(allowed: {', '.join(self.triggers_from(current)) or 'nothing'})"
                ) from None
            except AttributeError:
                raise InvalidTransition(f"{self.kind}: unknown trigger '{trigger}'") from None
            finally:
                del model._commit  # type: ignore[attr-defined]
            new = model.state
        return self.states(new)


RUN_MACHINE = StateMachine("run", RunState, RUN_TRANSITIONS)
JOB_MACHINE = StateMachine("job", JobState, JOB_TRANSITIONS)
TASK_MACHINE = StateMachine("task", TaskState, TASK_TRANSITIONS)
PLATE_MACHINE = StateMachine("plate", PlateState, PLATE_TRANSITIONS)
