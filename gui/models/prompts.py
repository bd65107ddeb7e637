"""Open prompts as the operator answers them: heading, instructions, choices or QC gates,
reagents whose lots may be recorded, and the answer a prompt dialog builds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from labctl.engine.prompts import check_qc_answer
from labctl.gui.models.common import (
    ConsoleInputError,
    RunData,
    float_or_none,
    job_params,
    task_json,
)
from labctl.store import Store
from labctl.store.models import Job, Prompt, Task


@dataclass(frozen=True)
class QcGate:
    """A QC limit the operator's value is checked against (bounds inclusive, optional)."""

    measure: str
    unit: str
    min: float | None
    max: float | None
    on_fail: str  # hold, abort, continue, ...

    def passes(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    @property
    def limits_text(self) -> str:
        u = f" {self.unit}" if self.unit else ""
        if self.min is not None and self.max is not None:
            return f"{self.min:g} to {self.max:g}{u}"
        if self.min is not None:
            return f"at least {self.min:g}{u}"
        if self.max is not None:
            return f"at most {self.max:g}{u}"
        return "no limits"


@dataclass(frozen=True)
class PromptView:
    """An open prompt as the operator sees it, with what an answer needs."""

    id: int
    run_id: int
    run_name: str
    kind: str  # task, recovery, interrupted, decision
    heading: str
    text: str
    instructions: str
    plate: str
    step: str
    choices: tuple[str, ...]  # explicit choices (recovery, interrupted, decision)
    gates: tuple[QcGate, ...]  # QC values to enter (task prompts)
    reagents: tuple[str, ...]  # media and factors whose lots may be recorded
    default_choice: str | None
    deadline: datetime | None
    created_at: datetime
    job_id: int | None
    timezone: str

    def seconds_left(self, now: datetime) -> float | None:
        """Seconds until the default applies (None when there is no default)."""
        if self.deadline is None or self.default_choice is None:
            return None
        return (self.deadline - now).total_seconds()

    @property
    def irreversible_choices(self) -> frozenset[str]:
        return frozenset(c for c in self.choices if c in ("skip", "abort"))


_HEADINGS = {
    "fetch": "Take the plate out of the incubator",
    "to_deck": "Put the plate on the deck",
    "to_incubator": "Take the plate off the deck",
    "store": "Put the plate back into the incubator",
    "setpoint": "Set the incubator",
    "carry": "Move the plate to the other incubator",
}


def _gates(choices: Sequence[Any]) -> tuple[QcGate, ...]:
    out = []
    for c in choices:
        if isinstance(c, dict) and c.get("measure"):
            out.append(
                QcGate(
                    str(c["measure"]),
                    str(c.get("unit") or ""),
                    float_or_none(c.get("min")),
                    float_or_none(c.get("max")),
                    str(c.get("on_fail") or "hold"),
                )
            )
    return tuple(out)


def _reagents(task: Task | None) -> tuple[str, ...]:
    if task is None:
        return ()
    tj = task_json(task)
    names: list[str] = []
    for key in ("feed", "washout"):
        spec = tj.get(key)
        if isinstance(spec, dict):
            names += [str(m.get("medium")) for m in spec.get("medium") or [] if isinstance(m, dict)]
            names += list((spec.get("factors") or {}).keys())
    add = tj.get("addition")
    if isinstance(add, dict) and add.get("compound"):
        names.append(str(add["compound"]))
    return tuple(dict.fromkeys(n for n in names if n))


def prompt_view(p: Prompt, d: RunData | None, store: Store | None = None) -> PromptView:
    """What the prompt dialog needs: heading, instructions, choices or QC gates, reagents."""
    job: Job | None = None
    if p.job_id is not None:
        if d is not None:
            job = next((j for j in d.jobs if j.id == p.job_id), None)
        if job is None and store is not None:
            job = store.get_job(p.job_id)
    params = job_params(job) if job is not None else {}
    task: Task | None = None
    if job is not None and d is not None:
        task = next((t for t in d.tasks if t.id == job.task_id), None)
    step = str(params.get("step") or (job.op if job else p.kind))
    plate = str(params.get("plate") or "")
    if plate == "*":
        plate = "all plates"
    if p.kind == "recovery":
        heading = "A device failed: choose how to go on"
    elif p.kind == "interrupted":
        heading = "Interrupted step: did it happen?"
    elif p.kind == "in-doubt":
        heading = "Done before the database went back?"
    elif p.kind == "decision":
        heading = "Decision needed"
    elif step == "event":
        heading = str(params.get("title") or "Manual step")
    else:
        heading = _HEADINGS.get(step, "Operator step")
    choices = tuple(str(c) for c in p.choices if isinstance(c, str))
    return PromptView(
        id=p.id,
        run_id=p.run_id,
        run_name=d.run.name if d is not None else f"run {p.run_id}",
        kind=p.kind,
        heading=heading,
        text=p.text,
        instructions=str(params.get("instructions") or ""),
        plate=plate,
        step=step,
        choices=choices,
        gates=_gates(p.choices),
        reagents=_reagents(task) if step == "to_deck" else (),
        default_choice=p.default_choice,
        deadline=p.deadline,
        created_at=p.created_at,
        job_id=p.job_id,
        timezone=d.run.timezone if d is not None else "UTC",
    )


def parse_number(text: str) -> float:
    """A number typed by the operator ("72", "72.5", "72,5"); ConsoleInputError otherwise."""
    t = text.strip().replace(",", ".")
    try:
        v = float(t)
    except ValueError:
        raise ConsoleInputError(f"'{text}' is not a number") from None
    if not math.isfinite(v):
        raise ConsoleInputError(f"'{text}' is not a finite number")
    return v


def build_answer(
    prompt: PromptView,
    *,
    choice: str | None = None,
    qc: Mapping[str, str] | None = None,
    lots: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``answer`` of an answer command for ``prompt``.

    Prompts with explicit choices take ``{"choice": ...}`` (one of them); task prompts take
    ``{"done": true, "qc": {measure: value}, "lots": {reagent: lot}}`` (lots are optional).
    A prompt with QC gates needs a number for every gate, whatever the choice: the engine
    rejects an answer without them (:func:`labctl.engine.prompts.check_qc_answer`, which
    this also runs). Raises ConsoleInputError naming what is missing.
    """
    answer: dict[str, Any]
    if prompt.choices:
        if choice not in prompt.choices:
            raise ConsoleInputError(
                f"choose one of {', '.join(prompt.choices)} for prompt {prompt.id}"
            )
        answer = {"choice": choice}
    else:
        answer = {"done": True}
    values = qc_values(prompt, qc or {})
    if values:
        answer["qc"] = values
    try:
        check_qc_answer([{"measure": g.measure, "unit": g.unit} for g in prompt.gates], answer)
    except ValueError as exc:  # the engine's own rule, in case the two ever part
        raise ConsoleInputError(str(exc)) from None
    given = {k: v.strip() for k, v in (lots or {}).items() if v and v.strip()}
    if given and not prompt.choices:
        answer["lots"] = given
    return answer


def qc_values(prompt: PromptView, qc: Mapping[str, str]) -> dict[str, float]:
    """The number typed for every QC gate of ``prompt``; ConsoleInputError naming the first
    gate without one (and its limits)."""
    values: dict[str, float] = {}
    for g in prompt.gates:
        raw = qc.get(g.measure, "")
        if not str(raw).strip():
            raise ConsoleInputError(f"enter the {g.measure} value ({g.limits_text})")
        try:
            values[g.measure] = parse_number(str(raw))
        except ConsoleInputError as exc:
            raise ConsoleInputError(f"{g.measure}: {exc}") from None
    return values


def missing_qc(prompt: PromptView, qc: Mapping[str, str]) -> list[QcGate]:
    """The gates of ``prompt`` without a number in ``qc`` (what keeps its answer unsent)."""
    out = []
    for g in prompt.gates:
        try:
            parse_number(str(qc.get(g.measure, "")))
        except ConsoleInputError:
            out.append(g)
    return out


def qc_failures(prompt: PromptView, values: Mapping[str, float]) -> list[tuple[QcGate, float]]:
    """The gates whose value is outside its limits (what the engine will act on)."""
    return [
        (g, values[g.measure])
        for g in prompt.gates
        if g.measure in values and not g.passes(values[g.measure])
    ]
