"""Operator commands and prompts: what passes between the operator and the engine.

A console or the CLI queues a command (pause, resume, skip, ...) and the engine applies or
rejects it; the engine opens a prompt and the operator answers it. Both sides go through
the store, so a console crash never stops a run and several consoles may watch one engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from labctl.store.models import COMMANDS, PROMPTS, Command, Event, Prompt
from labctl.store.rows import RowStore

__all__ = ["OperatorStore"]


class OperatorStore(RowStore):
    """Queues, applies and reads operator commands; opens, answers and reads prompts."""

    # ---------------------------------------------------------------- commands

    def insert_command(
        self,
        verb: str,
        *,
        actor: str,
        run_id: int | None = None,
        args: Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> Command:
        """Queue an operator command (state 'pending') for the engine to apply."""
        values = {
            "run_id": run_id,
            "verb": verb,
            "args": dict(args or {}),
            "actor": actor,
            "reason": reason,
            "state": "pending",
            "created_at": self.clock.now(),
        }
        return self._insert(COMMANDS, values, actor=actor, reason=reason)

    def mark_command_applied(
        self, command_id: int, *, actor: str, result: Any = None, reason: str = ""
    ) -> Event:
        """pending -> applied, with the time and what applying it did."""
        return self._settle_command(command_id, "applied", actor, result, reason)

    def mark_command_rejected(
        self, command_id: int, *, actor: str, reason: str, result: Any = None
    ) -> Event:
        """pending -> rejected; ``applied_at`` then holds when it was refused."""
        return self._settle_command(command_id, "rejected", actor, result, reason)

    def _settle_command(
        self, command_id: int, to_state: str, actor: str, result: Any, reason: str
    ) -> Event:
        return self.transition(
            "command",
            command_id,
            to_state,
            expected_from="pending",
            actor=actor,
            reason=reason,
            updates={"applied_at": self.clock.now(), "result": result},
        )

    def get_command(self, command_id: int) -> Command:
        return self._get(COMMANDS, command_id)

    def pending_commands(self, run_id: int | None = None) -> list[Command]:
        """Commands not yet applied or rejected, oldest first (all runs if ``run_id`` is None)."""
        extra, params = (" AND run_id = ?", [run_id]) if run_id is not None else ("", [])
        return self._rows(
            COMMANDS,
            f"SELECT * FROM commands WHERE state = 'pending'{extra} ORDER BY id",
            params,
        )

    # ---------------------------------------------------------------- prompts

    def insert_prompt(
        self,
        run_id: int,
        *,
        kind: str,
        text: str,
        actor: str,
        choices: Sequence[Any] = (),
        default_choice: str | None = None,
        deadline: datetime | None = None,
        job_id: int | None = None,
        reason: str = "",
    ) -> Prompt:
        """Open a prompt to the operator (state 'open')."""
        values = {
            "run_id": run_id,
            "job_id": job_id,
            "kind": kind,
            "text": text,
            "choices": list(choices),
            "default_choice": default_choice,
            "deadline": deadline,
            "state": "open",
            "created_at": self.clock.now(),
        }
        return self._insert(PROMPTS, values, actor=actor, reason=reason)

    def answer_prompt(self, prompt_id: int, answer: Any, *, actor: str, reason: str = "") -> Event:
        """Answer an open prompt (open -> answered). The caller checks ``answer`` is allowed."""
        return self.transition(
            "prompt",
            prompt_id,
            "answered",
            expected_from="open",
            actor=actor,
            reason=reason,
            updates={"answer": answer, "answered_by": actor, "answered_at": self.clock.now()},
        )

    def get_prompt(self, prompt_id: int) -> Prompt:
        return self._get(PROMPTS, prompt_id)

    def open_prompts(self, run_id: int | None = None) -> list[Prompt]:
        """Prompts waiting for an answer, oldest first."""
        extra, params = (" AND run_id = ?", [run_id]) if run_id is not None else ("", [])
        return self._rows(
            PROMPTS, f"SELECT * FROM prompts WHERE state = 'open'{extra} ORDER BY id", params
        )

    def prompts_for_job(self, job_id: int) -> list[Prompt]:
        """Every prompt asked for one job, oldest first."""
        return self._rows(PROMPTS, "SELECT * FROM prompts WHERE job_id = ? ORDER BY id", [job_id])
