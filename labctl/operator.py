"""The operator as a device: prompts written to the store, answered in the console or CLI.

``ask`` opens a prompt row (one per job; asking again for the same job returns the open one)
and ``poll`` reports SUCCEEDED with the answer once someone answered it. Nothing here waits:
the engine polls, as it does every other device.
"""

from __future__ import annotations

from typing import Any

from labctl.devices import DeviceAlarm, OpState, OpStatus
from labctl.errors import DeviceError
from labctl.store import Store


class StoreOperator:
    """Operator prompts through the run database. ``op_id`` is the prompt id as text."""

    def __init__(self, store: Store, name: str = "operator") -> None:
        self.store = store
        self.name = name

    def ask(self, job_key: str, prompt: dict[str, Any]) -> str:
        job_id = prompt.get("job_id")
        if job_id is not None:
            existing = self._prompt_for_job(int(job_id))
            if existing is not None:
                return str(existing)
        p = self.store.insert_prompt(
            int(prompt["run_id"]),
            kind=str(prompt.get("kind", "task")),
            text=str(prompt.get("text", "")),
            actor="engine",
            choices=list(prompt.get("choices", [])),
            default_choice=prompt.get("default"),
            deadline=prompt.get("deadline"),
            job_id=job_id,
            reason=f"job {job_key}",
        )
        return str(p.id)

    def _prompt_for_job(self, job_id: int) -> int | None:
        # Only an open task prompt is the same question; an answered one belongs to an
        # earlier attempt (a retried job asks again) and recovery prompts are the engine's.
        for p in self.store.prompts_for_job(job_id):
            if p.state == "open" and p.kind == "task":
                return p.id
        return None

    def poll(self, op_id: str) -> OpStatus:
        try:
            p = self.store.get_prompt(int(op_id))
        except Exception as exc:  # noqa: BLE001 - a missing prompt is a device error here
            raise DeviceError(self.name, f"prompt {op_id}", "no such prompt") from exc
        if p.state == "answered":
            answer = p.answer if isinstance(p.answer, dict) else {"answer": p.answer}
            return OpStatus(OpState.SUCCEEDED, f"answered by {p.answered_by}", result=answer)
        if p.state == "cancelled":
            return OpStatus(
                OpState.FAILED,
                "prompt cancelled",
                DeviceError(self.name, f"prompt {op_id}", "cancelled"),
            )
        return OpStatus(OpState.RUNNING, "waiting for the operator")

    def find_op(self, job_key: str) -> str | None:
        return None  # prompts are looked up by job id in ask(); a lost prompt is simply re-asked

    def alarms(self) -> list[DeviceAlarm]:
        return []
