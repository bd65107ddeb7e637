"""Where each plate is: in an incubator slot, on a transfer station, in an arm's gripper, on
a deck position, or with the operator, from the jobs the store recorded.

A plate's place changes only with a physical step that finished (a fetch, a move, a store);
a step under way says where it is going; a step that failed or was cut off leaves the place
uncertain, and says so, because only a person who looks can tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from labctl.store import Store
from labctl.store.models import Job

_MOVES = ("fetch", "to_deck", "to_incubator", "store", "carry")


@dataclass(frozen=True)
class PlateLocation:
    """Where plate ``plate`` of a run is, since when, and what is moving it now (if anything).

    ``certain`` is False after a physical step failed or was interrupted: ``where`` is then
    the last place known for sure.
    """

    plate: str
    where: str
    since: datetime | None
    moving: str | None = None
    certain: bool = True

    def text(self) -> str:
        out = f"{self.plate}: {self.where}"
        if self.moving:
            out += f", {self.moving}"
        if not self.certain:
            out += " (not certain: check the plate)"
        return out


def _step(job: Job) -> str | None:
    """Which physical step a job is (a device op or the operator's prompt doing it)."""
    params = (job.spec or {}).get("params") or {}
    if job.op in _MOVES:
        return job.op
    if job.op == "prompt" and params.get("step") in _MOVES:
        return str(params["step"])
    return None


def _place_after(step: str, params: dict[str, Any], deck: int | None = None) -> str:
    """Where ``step`` leaves the plate; ``deck``: the deck position the engine chose for
    it when the move started (the stored job names the plan's first choice)."""
    inc = params.get("incubator")
    if step == "fetch":
        return f"{inc} transfer station" if inc else "out of the incubator, with the operator"
    if step == "to_deck":
        lh = params.get("liquid_handler", "the liquid handler")
        return f"{lh} deck position {deck if deck is not None else params.get('deck_slot', '?')}"
    if step in ("to_incubator", "carry"):
        dest = str(params.get("destination", ""))
        if dest.endswith("/transfer"):
            return f"{dest.removesuffix('/transfer')} transfer station"
        return "on the bench, with the operator"
    slot = params.get("slot")
    return f"{inc} slot {slot}" if inc and slot is not None else "in the incubator"


def plate_locations(store: Store, run_id: int) -> list[PlateLocation]:
    """Every plate of the run, where it is now."""
    plates = {p.id: p.label for p in store.plates(run_id)}
    tasks = {t.id: t for t in store.tasks(run_id)}
    by_plate: dict[str, list[Job]] = {label: [] for label in plates.values()}
    for j in store.jobs(run_id):
        t = tasks.get(j.task_id)
        if t is None or t.plate_id not in plates or _step(j) is None:
            continue
        by_plate[plates[t.plate_id]].append(j)
    # The deck position each task's plate took, as the engine recorded it ('hold' events).
    deck: dict[int, int] = {}
    for e in store.events(run_id, entity="task", action="hold", limit=None):
        data = e.data or {}
        if str(data.get("place", "")).endswith(":deck") and "position" in data:
            deck[int(data.get("task_id", e.entity_id or 0))] = int(data["position"])
    out = []
    for label, jobs in sorted(by_plate.items()):
        out.append(_locate(label, jobs, deck))
    return out


def _locate(label: str, jobs: list[Job], deck: dict[int, int]) -> PlateLocation:
    """Where plate ``label`` is after ``jobs``; ``deck``: task id -> the deck position the
    engine chose for it."""
    # Where a plate is before its first step: in the slot its first fetch names.
    first = next(
        (j for j in sorted(jobs, key=lambda x: (x.task_id, x.seq)) if _step(j) == "fetch"), None
    )
    params0 = ((first.spec or {}).get("params") or {}) if first else {}
    where = _place_after("store", params0) if first else "in the incubator"
    since: datetime | None = None
    moving: str | None = None
    certain = True
    happened = [j for j in jobs if j.started_at is not None]
    for j in sorted(happened, key=lambda x: (x.started_at, x.seq)):
        step = _step(j)
        params = (j.spec or {}).get("params") or {}
        assert step is not None
        if j.state == "done":
            at = deck.get(j.task_id)
            where, since, certain = _place_after(step, params, at), j.finished_at, True
            moving = None
        elif j.state == "running":
            moving = (
                f"{step.replace('_', ' ')} under way on {j.device} since {j.started_at:%H:%M} UTC"
            )
        elif j.state in ("failed", "interrupted"):
            certain, moving = False, f"{step.replace('_', ' ')} on {j.device} {j.state}"
    return PlateLocation(label, where, since, moving, certain)
