"""A simulated operator: answers the engine's prompts by script, and moves plates by hand.

It is the person of a dry run. Prompts go into the run database exactly as for a real
operator (so a console shows them and a trainee may answer first); if nobody has answered
when the prompt's work would be done (its duration on the shared clock, plus a reaction
time), the script answers: plate moves are done on the simulated incubator (the plate
leaves or reaches its transfer station), QC values are reported as passing (or as set in
the scenario), and recovery prompts get the scenario's choice. Every physical action it
does is logged, once, like the devices' own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from labctl.clock import Clock
from labctl.devices import DeviceAlarm, OpState, OpStatus
from labctl.errors import DeviceError
from labctl.store import Store
from labctl.store.models import Prompt


class PlateHands:
    """The physical side the operator touches: the incubators' transfer stations, named
    ``<incubator>/transfer`` as in a move's source and destination."""

    def take(self, plate: str, place: str) -> None:  # pragma: no cover - interface
        """Take ``plate`` from the transfer station ``place``."""

    def put(self, plate: str, place: str) -> None:  # pragma: no cover - interface
        """Put ``plate`` on the transfer station ``place``."""


@dataclass
class OperatorScript:
    """How the simulated operator behaves. Times in seconds."""

    reaction_s: float = 60.0  # from a prompt appearing to starting on it
    qc_values: dict[str, float] = field(default_factory=dict)  # measure -> value (default: a pass)
    recovery_choice: str | None = (
        None  # answer to recovery prompts (None: leave them to the default)
    )
    absent_from: datetime | None = None  # does not answer at all from this time on
    absent_until: datetime | None = None
    # Scripted decisions per job at most: a person who retried a step this often and saw it
    # fail each time stops and looks (the prompt then stays open, the run waits for them).
    max_decisions_per_job: int = 3


class SimulatedOperator:
    """Implements labctl.devices.Operator over the store; answers by script on the clock."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        hands: PlateHands | None,
        *,
        name: str = "operator",
        script: OperatorScript | None = None,
        action_log: Path | None = None,
        look: Callable[[Prompt], str | None] | None = None,
    ) -> None:
        # look(prompt): what a person answers after looking at the device (the arm faults'
        # ArmFaults.look): a choice, "later" (look again next step), or None (the script).
        self.look = look
        self.store = store
        self.clock = clock
        self.hands = hands
        self.name = name
        self.script = script or OperatorScript()
        self.action_log = action_log
        self._asked: dict[
            str, tuple[int, datetime, dict[str, Any]]
        ] = {}  # op id -> (prompt, due, prompt data)
        self._done: set[str] = set()
        self._decided: set[int] = set()
        self._per_job: dict[int, int] = {}  # job id -> scripted recovery decisions taken

    def absent(self, now: datetime) -> bool:
        s = self.script
        return (
            s.absent_from is not None
            and now >= s.absent_from
            and (s.absent_until is None or now < s.absent_until)
        )

    # --- the Operator interface -------------------------------------------------------------

    def ask(self, job_key: str, prompt: dict[str, Any]) -> str:
        job_id = prompt.get("job_id")
        for p in self.store.prompts_for_job(int(job_id)) if job_id is not None else []:
            if p.state == "open" and p.kind == "task":
                op = str(p.id)
                break
        else:
            p = self.store.insert_prompt(
                int(prompt["run_id"]),
                kind="task",
                text=str(prompt.get("text", "")),
                actor="engine",
                choices=list(prompt.get("choices", [])),
                job_id=job_id,
                reason=f"job {job_key}",
            )
            op = str(p.id)
        duration = float(prompt.get("duration_s") or 60.0)
        due = self.clock.now() + timedelta(seconds=self.script.reaction_s + duration)
        self._asked[op] = (int(op), due, dict(prompt, job_key=job_key))
        return op

    def poll(self, op_id: str) -> OpStatus:
        try:
            p = self.store.get_prompt(int(op_id))
        except Exception as exc:  # noqa: BLE001 - a missing prompt is this device's error
            raise DeviceError(self.name, f"prompt {op_id}", "no such prompt") from exc
        if p.state == "answered":
            self._act(op_id)  # a trainee answered: the hands still have to move the plate
            ans = p.answer if isinstance(p.answer, dict) else {"answer": p.answer}
            return OpStatus(OpState.SUCCEEDED, f"answered by {p.answered_by}", result=ans)
        if p.state != "open":
            return OpStatus(
                OpState.FAILED,
                f"prompt {p.state}",
                DeviceError(self.name, f"prompt {op_id}", p.state),
            )
        now = self.clock.now()
        asked = self._asked.get(op_id)
        if asked is None:  # asked before a restart: answer after a reaction time from now
            asked = (
                int(op_id),
                now + timedelta(seconds=self.script.reaction_s),
                {"choices": p.choices, "text": p.text},
            )
            self._asked[op_id] = asked
        if now < asked[1] or self.absent(now):
            # The script knows when the person will answer: the end of the reaction and
            # the task, or of an absence (unknown if it lasts the whole run).
            back = self.script.absent_until if self.absent(now) else None
            later = max(asked[1], back) if back is not None else asked[1]
            check_at = None if self.absent(now) and back is None else later
            return OpStatus(OpState.RUNNING, "waiting for the operator", check_at=check_at)
        answer = self._answer_for(asked[2])
        self._act(op_id)
        self.store.answer_prompt(int(op_id), answer, actor="sim-operator", reason="scripted answer")
        return OpStatus(OpState.SUCCEEDED, "answered by sim-operator", result=answer)

    def find_op(self, job_key: str) -> str | None:
        return None  # prompts are matched by job id in ask()

    def alarms(self) -> list[DeviceAlarm]:
        return []

    # --- what the person does ----------------------------------------------------------------

    def _answer_for(self, prompt: dict[str, Any]) -> dict[str, Any]:
        qc = {}
        for g in prompt.get("choices", []) or []:
            if isinstance(g, dict) and "measure" in g:
                m = g["measure"]
                if m in self.script.qc_values:
                    qc[m] = self.script.qc_values[m]
                else:  # a passing value: inside both limits
                    lo, hi = g.get("min"), g.get("max")
                    qc[m] = float(lo + 1 if lo is not None else (hi - 1 if hi is not None else 0.0))
        out: dict[str, Any] = {"done": True}
        if qc:
            out["qc"] = qc
        return out

    def _act(self, op_id: str) -> None:
        if op_id in self._done:
            return
        self._done.add(op_id)
        data = self._asked.get(op_id, (0, self.clock.now(), {}))[2]
        step = data.get("step")
        plate = str(data.get("plate", ""))
        source, destination = str(data.get("source", "")), str(data.get("destination", ""))
        if self.hands is not None:
            # to_deck takes the plate off a transfer station, to_incubator puts it on one,
            # carry (to another incubator) does both
            if step in ("to_deck", "carry") and source.endswith("/transfer"):
                self.hands.take(plate, source)
            if step in ("to_incubator", "carry") and destination.endswith("/transfer"):
                self.hands.put(plate, destination)
        if self.action_log is not None and step:
            rec = {
                "time": self.clock.now().isoformat(),
                "device": self.name,
                "action": step,
                "plate": plate,
                "job": data.get("job_key"),
                "source": data.get("source"),
                "destination": data.get("destination"),
            }
            with open(self.action_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")

    def next_decision(self, now: datetime) -> datetime | None:
        """When the script will next decide an open recovery or interruption prompt (it
        decides in :meth:`answer_recoveries`, called each engine step): the end of its
        reaction time, or of an absence; None if it has nothing to decide."""
        times = []
        for p in self.store.open_prompts():
            if p.id in self._decided or p.kind not in ("recovery", "interrupted"):
                continue
            at = max(now, p.created_at + timedelta(seconds=self.script.reaction_s))
            if self.absent(at):
                if self.script.absent_until is None:
                    continue  # away for good: nothing will come
                at = max(at, self.script.absent_until)
            times.append(at)
        return min(times, default=None)

    def has_decisions_pending(self) -> bool:
        """Whether an open recovery or interruption prompt is not yet decided by the script."""
        return any(
            p.id not in self._decided and p.kind in ("recovery", "interrupted")
            for p in self.store.open_prompts()
        )

    def answer_recoveries(self, run_ids: list[int]) -> None:
        """Answer open recovery prompts with the script's choice (called each engine step)."""
        if self.absent(self.clock.now()):
            return
        for rid in run_ids:
            for p in self.store.open_prompts(rid):
                if p.id in self._decided or p.kind not in ("recovery", "interrupted"):
                    continue
                if (
                    p.job_id is not None
                    and self._per_job.get(p.job_id, 0) >= self.script.max_decisions_per_job
                ):
                    continue  # retrying blindly again would loop: leave it to a person
                # Routine upkeep a person just does: put new tip racks in, empty the waste.
                upkeep = (
                    "refill tips" in p.text
                    or "empty" in p.text.lower()
                    and "waste" in p.text.lower()
                )
                choice = "retry" if upkeep and "retry" in p.choices else self.script.recovery_choice
                age = (self.clock.now() - p.created_at).total_seconds()
                if age >= self.script.reaction_s and self.look is not None:
                    seen = self.look(p)
                    if seen == "later":
                        continue
                    choice = seen if seen is not None else choice
                if choice is not None and choice in p.choices:
                    if age >= self.script.reaction_s:
                        self._decided.add(p.id)
                        if p.job_id is not None:
                            self._per_job[p.job_id] = self._per_job.get(p.job_id, 0) + 1
                        self.store.insert_command(
                            "answer",
                            actor="sim-operator",
                            run_id=rid,
                            args={"prompt": p.id, "answer": {"choice": choice}},
                            reason="scripted operator decision",
                        )
