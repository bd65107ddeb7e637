"""Expand a Plan's tasks into jobs: the device operations, in order, for each plate.

A task done to a plate becomes a :class:`Chain` of :class:`JobSpec` run back to back: for a
medium change FETCH (incubator), TO_DECK (plate mover or operator), LH_RUN (liquid
handler), TO_INCUBATOR, STORE; for a manual event one operator PROMPT; for a change of
environment either one SETPOINT (a workcell with one automated incubator) or, where
another incubator holds the new climate, a move of each plate there: FETCH from the one,
CARRY (mover or operator), STORE into the other. Which device does what comes from
:class:`WorkcellRoles`.
Durations are estimates in seconds (:class:`Durations`); the scheduler places the chains.

Besides its jobs a chain occupies *places*: the incubator's transfer station and the
liquid handler's deck position (:class:`Hold`), and the plate itself. Two plates can never
be on one place at once; the scheduler enforces it as it does for devices.

Pure functions of their inputs: no clock, no devices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any

from labctl.errors import PlanError
from labctl.plan.resolve import (
    AdditionSpec,
    EnvSpec,
    EventSpec,
    FeedSpec,
    Plan,
    Recipe,
    Task,
    TaskKind,
    WashoutSpec,
    WashSpec,
)
from labctl.protocol.model import Change
from labctl.roles import AMBIENT, Climate, WorkcellRoles, climate_text
from labctl.units import format_quantity

__all__ = [
    "Chain",
    "Durations",
    "Hold",
    "JobSpec",
    "Op",
    "Role",
    "WorkcellRoles",
    "climates",
    "expand",
    "homes",
    "seeded_climate",
    "lh_duration_s",
    "natural_key",
    "on_deck",
]

ALL_PLATES = "*"  # the plate label of a chain that concerns the whole run (incubator setpoints)


class Role(str, Enum):
    INCUBATOR = "incubator"
    MOVER = "mover"
    LIQUID_HANDLER = "liquid_handler"
    OPERATOR = "operator"


class Op(str, Enum):
    FETCH = "fetch"  # incubator: slot -> transfer station
    TO_DECK = "to_deck"  # mover: transfer station (or bench) -> deck position
    LH_RUN = "lh_run"  # liquid handler: run the medium change / addition / washout
    TO_INCUBATOR = "to_incubator"  # mover: deck position -> transfer station (or bench)
    STORE = "store"  # incubator: transfer station -> slot
    PROMPT = "prompt"  # operator: do what params["text"] says, confirm on the console
    SETPOINT = "setpoint"  # incubator: change temperature / CO2 / O2
    CARRY = "carry"  # mover: one incubator's transfer station -> another's


@dataclass(frozen=True)
class JobSpec:
    """One device operation. ``params`` is JSON-able data the device call needs.

    ``duration_s`` is an estimate in seconds. ``key`` is ``chain key + "/" + seq``.
    """

    key: str
    task_key: str
    plate: str
    seq: int
    role: Role
    device: str
    op: Op
    params: dict[str, Any]
    duration_s: float


@dataclass(frozen=True)
class Hold:
    """A place the plate occupies from the start of job ``first`` to the end of job ``last``.

    ``place`` names it (``"ot2-a:deck"``, ``"inc-1:transfer"``); ``positions`` are the
    interchangeable positions there (deck slots), of which the scheduler picks one that is
    free. A move holds both ends for its whole duration, so no plate is ever put down on a
    place another plate still occupies.
    """

    place: str
    first: int
    last: int
    positions: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Chain:
    """The jobs of one task on one plate, run back to back (fetch, to deck, LH run, back, store).

    Times are aware UTC; the window constrains the START of the chain's main job (the LH
    run, the event prompt, or the setpoint: ``jobs[main_seq]``). ``max_out_s`` is the
    longest the plate may be out of the incubator (from FETCH end to STORE start), seconds.
    ``manual`` chains need a person: they must start and end inside operator hours.
    ``previous_key`` ties the chain to the previous feed chain of the same plate: its main
    job is due ``after_previous_s`` seconds after that chain's actual main start.
    """

    key: str
    task_key: str
    plate: str
    jobs: tuple[JobSpec, ...]
    due: datetime
    window_start: datetime
    window_end: datetime
    max_out_s: float | None
    manual: bool
    after_previous_s: float | None
    previous_key: str | None
    main_seq: int = 0
    holds: tuple[Hold, ...] = ()
    kind: str = ""  # the task's kind (TaskKind value)
    title: str = ""
    day: int = 0
    run: str = ""  # the run's id when chains of several runs are scheduled together
    # Further plates this chain occupies: a batch merged into one chain for the scheduler
    # (labctl.schedule.batches); expand never sets it.
    also_plates: tuple[str, ...] = ()

    @property
    def main(self) -> JobSpec:
        return self.jobs[self.main_seq]

    @property
    def duration_s(self) -> float:
        """Seconds from the first job's start to the last job's end, back to back."""
        return sum(j.duration_s for j in self.jobs)

    def out_s(self) -> float | None:
        """Seconds the plate spends out of the incubator (FETCH end to STORE start)."""
        if len(self.jobs) < 3:
            return None
        return sum(j.duration_s for j in self.jobs[1:-1])


@dataclass(frozen=True)
class Durations:
    """Duration estimates in seconds.

    Incubator moves take 10-25 s (DEVICES.md 2.5, 3.5); an arm move ~30 s; an operator
    carrying a plate and confirming ~2 min; an OT-2 medium change about 20-25 s per well
    plus a couple of minutes of homing, tip pick-up and reservoir set-up.
    """

    fetch: float = 20
    store: float = 20
    move_arm: float = 30
    move_operator: float = 120
    lh_overhead: float = 120
    lh_per_well_full: float = 25
    lh_per_well_partial: float = 20
    lh_per_well_addition: float = 10
    lh_per_wash: float = 15
    prompt: float = 300
    setpoint: float = 10
    min_event_prompt: float = 60


def lh_duration_s(task: Task, d: Durations = Durations(), plates: int = 1) -> float:
    """Estimated liquid-handler run time (s) of a feed/addition/washout task for ``plates``
    plates fed in one robot run (the overhead of a run is paid once)."""
    n = (len(task.wells) or 1) * plates
    s = task.spec
    if isinstance(s, FeedSpec):
        per = d.lh_per_well_full if s.change is Change.FULL else d.lh_per_well_partial
        washes = s.wash.times if s.wash is not None else 0
        return d.lh_overhead + n * per + n * washes * d.lh_per_wash
    if isinstance(s, AdditionSpec):
        return d.lh_overhead + n * d.lh_per_well_addition
    if isinstance(s, WashoutSpec):
        return d.lh_overhead + n * s.wash.times * d.lh_per_wash + n * d.lh_per_well_full
    return d.lh_overhead


def natural_key(text: str) -> tuple:
    """Sort key that puts P2 before P10."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text))


def on_deck(job: JobSpec, deck_slot: int) -> JobSpec:
    """``job`` with the plate on deck position ``deck_slot`` instead of the one expand chose.

    The scheduler picks a free position when the liquid handler has several
    (``Slot.deck_slot``); apply it to the TO_DECK, LH_RUN and TO_INCUBATOR jobs (or their
    operator prompts) before starting them. Jobs without a deck position come back as is.
    """
    p = job.params
    old = p.get("deck_slot")
    if old is None or old == deck_slot:
        return job
    lh = p.get("liquid_handler", "")
    new = dict(p, deck_slot=deck_slot)
    for k in ("source", "destination"):
        if new.get(k) == f"{lh}/{old}":
            new[k] = f"{lh}/{deck_slot}"
    if isinstance(new.get("text"), str):
        new["text"] = new["text"].replace(
            f"deck slot {old} of {lh}", f"deck slot {deck_slot} of {lh}"
        )
    return replace(job, params=new)


def expand(
    plan: Plan,
    plates: list[str],
    roles: WorkcellRoles,
    durations: Durations = Durations(),
    *,
    max_out_s: float | None = None,
    run: str = "",
) -> list[Chain]:
    """The chains of every task of ``plan`` on every plate, in task order then plate order.

    ``max_out_s`` is the protocol's ``timing.max_out_of_incubator`` in seconds (the Plan does
    not carry it). ``run``, when given, prefixes chain and job keys (``"r7:d3-feed-0900/P2"``)
    so that chains of several runs scheduled together stay distinct; the plates of
    different runs are then different plates even when their labels are equal.

    An event's ``duration`` in the protocol is the operator's time for the event on the
    whole run; each plate's prompt gets an equal share (at least ``min_event_prompt``).
    """
    if not plates:
        raise PlanError("expand needs at least one plate label")
    if len(set(plates)) != len(plates):
        raise PlanError(f"plate labels must be unique, got {plates}")
    prefix = f"{run}:" if run else ""
    chains: list[Chain] = []
    prev_volume: float | None = None  # the well's volume before the current task
    where = homes(plan, roles)
    for i, task in enumerate(plan.tasks):
        inc = where[i]
        if task.kind is TaskKind.ENVIRONMENT:
            before = where[i - 1] if i > 0 else inc
            if roles.incubator_for(_climate(task)) is None:  # no incubator holds it: set it
                chains.append(_env_chain(task, roles, inc, durations, prefix, run))
            elif inc != before and any(t.kind is not TaskKind.ENVIRONMENT for t in plan.tasks[:i]):
                # (before the plates' first task they are seeded where they belong)
                for p in plates:
                    chains.append(_move_chain(task, p, roles, before, inc, durations, prefix, run))
        elif task.kind is TaskKind.EVENT:
            for p in plates:
                chains.append(_event_chain(task, p, len(plates), roles, durations, prefix, run))
        else:
            lh = _lh_params(task, prev_volume)
            for group in roles.batches(plates):
                members = [
                    _lh_chain(task, p, lh, roles, inc, durations, max_out_s, prefix, run, group)
                    for p in group
                ]
                chains.extend(_batch(members))
        prev_volume = task.well_after.volume_ul
    return chains


def _climate(task: Task) -> Climate:
    s = task.spec
    assert isinstance(s, EnvSpec)
    return (s.temperature_c, s.co2_pct, s.o2_pct)


def climates(plan: Plan) -> list[Climate]:
    """Every climate ``plan`` keeps its plates in: the default, and each environment's."""
    return [AMBIENT, *(_climate(t) for t in plan.tasks if t.kind is TaskKind.ENVIRONMENT)]


def seeded_climate(plan: Plan) -> Climate:
    """The climate the plates are in at their first task (where they are seeded)."""
    here = AMBIENT
    for t in plan.tasks:
        if t.kind is not TaskKind.ENVIRONMENT:
            break
        here = _climate(t)
    return here


def homes(plan: Plan, roles: WorkcellRoles) -> list[str | None]:
    """The incubator the plates live in at each task of ``plan`` (None: a manual one).

    Where the workcell has several automated incubators, an environment task sends them
    to the incubator that holds its climate (if one does); before their first task they
    are where the first environment puts them, so plates are seeded straight into a
    hypoxic incubator when day 0 asks for low O2. Otherwise they stay in
    ``roles.incubator`` (whose setpoints an environment task changes)."""
    here = (
        roles.incubator_for(seeded_climate(plan)) or roles.incubator_for(AMBIENT) or roles.incubator
    )
    out: list[str | None] = []
    for t in plan.tasks:
        if t.kind is TaskKind.ENVIRONMENT:
            here = roles.incubator_for(_climate(t)) or here
        out.append(here)
    return out


# --- chain builders -----------------------------------------------------------------------


def _chain_key(prefix: str, task_key: str, plate: str) -> str:
    return f"{prefix}{task_key}/{plate}"


@dataclass
class _Builder:
    key: str
    task: Task
    plate: str
    jobs: list[JobSpec] = field(default_factory=list)

    def add(self, role: Role, device: str, op: Op, params: dict[str, Any], dur: float) -> int:
        seq = len(self.jobs)
        self.jobs.append(
            JobSpec(
                f"{self.key}/{seq}",
                self.task.key,
                self.plate,
                seq,
                role,
                device,
                op,
                params,
                float(dur),
            )
        )
        return seq


def _base_chain(b: _Builder, run: str, **kw: Any) -> Chain:
    t = b.task
    return Chain(
        key=b.key,
        task_key=t.key,
        plate=b.plate,
        jobs=tuple(b.jobs),
        due=t.due,
        window_start=t.window_start,
        window_end=t.window_end,
        kind=t.kind.value,
        title=t.title,
        day=t.day,
        run=run,
        manual=any(j.role is Role.OPERATOR for j in b.jobs),
        **kw,
    )


def _lh_chain(
    task: Task,
    plate: str,
    lh_params: dict[str, Any],
    roles: WorkcellRoles,
    inc: str | None,
    d: Durations,
    max_out_s: float | None,
    prefix: str,
    run: str,
    group: list[str],
) -> Chain:
    """Feed ``plate`` (kept in incubator ``inc``; None: a manual one) on its robot, in one
    robot run with the other plates of ``group`` (a batch)."""
    b = _Builder(_chain_key(prefix, task.key, plate), task, plate)
    op = roles.operator
    lh, deck_slots = roles.handler_for(plate)
    if len(group) > 1 and len(deck_slots) < 2 * roles.batch_of(lh):
        # Room for one batch: each plate of it has its own position. (With room for two,
        # positions are chosen as for single plates: the next batch goes where it fits.)
        deck_slots = (deck_slots[group.index(plate)],)
    deck = deck_slots[0]
    slot = _slot(roles, inc, plate)
    where = f"the transfer station of {inc}" if inc is not None else "the incubator"
    on_deck = f"deck slot {deck} of {lh}"
    common = {"plate": plate, "task": task.key}

    if inc is not None:
        b.add(Role.INCUBATOR, inc, Op.FETCH, {**common, "slot": slot, "incubator": inc}, d.fetch)
    else:
        text = f"Take plate {plate} out of the incubator."
        b.add(Role.OPERATOR, op, Op.PROMPT, {**common, "step": "fetch", "text": text}, d.fetch)
    move = {
        **common,
        "source": f"{inc}/transfer" if inc is not None else "bench",
        "destination": f"{lh}/{deck}",
        "deck_slot": deck,
        "deck_positions": list(deck_slots),
        "liquid_handler": lh,
    }
    if roles.mover is not None:
        b.add(Role.MOVER, roles.mover, Op.TO_DECK, move, d.move_arm)
    else:
        text = (
            f"Take plate {plate} from {where} and put it on {on_deck}."
            if inc is not None
            else f"Put plate {plate} on {on_deck}."
        )
        b.add(
            Role.OPERATOR,
            op,
            Op.PROMPT,
            {**move, "step": "to_deck", "text": text},
            d.move_operator,
        )
    main = b.add(
        Role.LIQUID_HANDLER,
        lh,
        Op.LH_RUN,
        {
            **common,
            **lh_params,
            "deck_slot": deck,
            "deck_positions": list(deck_slots),
            "liquid_handler": lh,
        },
        lh_duration_s(task, d, len(group)),
    )
    back = {**move, "source": move["destination"], "destination": move["source"]}
    if roles.mover is not None:
        b.add(Role.MOVER, roles.mover, Op.TO_INCUBATOR, back, d.move_arm)
    else:
        text = (
            f"Take plate {plate} from {on_deck} and put it on {where}."
            if inc is not None
            else f"Take plate {plate} from {on_deck} back to the incubator."
        )
        b.add(
            Role.OPERATOR,
            op,
            Op.PROMPT,
            {**back, "step": "to_incubator", "text": text},
            d.move_operator,
        )
    if inc is not None:
        b.add(Role.INCUBATOR, inc, Op.STORE, {**common, "slot": slot, "incubator": inc}, d.store)
    else:
        text = f"Put plate {plate} back into the incubator and close the door."
        b.add(Role.OPERATOR, op, Op.PROMPT, {**common, "step": "store", "text": text}, d.store)

    holds = [Hold(f"{lh}:deck", 1, 3, deck_slots)]
    if inc is not None:
        # The transfer station holds one plate: from the fetch until the move takes it
        # away, and from the move that brings it back until the store.
        holds = [Hold(f"{inc}:transfer", 0, 1), *holds, Hold(f"{inc}:transfer", 3, 4)]
    return _base_chain(
        b,
        run,
        max_out_s=max_out_s,
        after_previous_s=task.after_previous_s,
        previous_key=(_chain_key(prefix, task.previous_key, plate) if task.previous_key else None),
        main_seq=main,
        holds=tuple(holds),
    )


def _batch(members: list[Chain]) -> list[Chain]:
    """Tie the chains of one batch together: the first plate's LH job (the leader) names
    the others' (``riders``), each rider names the leader (``rides``). The engine runs
    one robot run for the plates on the deck when the leader starts; a rider not there
    then is fed by a run of its own (labctl.engine.batches)."""
    if len(members) < 2:
        return members
    lead = members[0]
    riders = [c.main.key for c in members[1:]]
    out = [_with_main_params(lead, riders=riders)]
    out += [_with_main_params(c, rides=lead.main.key) for c in members[1:]]
    return out


def _with_main_params(c: Chain, **more: Any) -> Chain:
    jobs = list(c.jobs)
    jobs[c.main_seq] = replace(c.main, params={**c.main.params, **more})
    return replace(c, jobs=tuple(jobs))


def _event_chain(
    task: Task,
    plate: str,
    n_plates: int,
    roles: WorkcellRoles,
    d: Durations,
    prefix: str,
    run: str,
) -> Chain:
    s = task.spec
    assert isinstance(s, EventSpec)
    b = _Builder(_chain_key(prefix, task.key, plate), task, plate)
    dur = d.prompt if s.duration_s is None else max(d.min_event_prompt, s.duration_s / n_plates)
    params = {
        "plate": plate,
        "task": task.key,
        "step": "event",
        "kind": s.kind,
        "title": s.title,
        "instructions": s.instructions,
        "text": f"Plate {plate}: {s.title}",
        "duration_s": s.duration_s,
        "new_labware": s.new_labware,
        "new_volume_ul": s.new_volume_ul,
        "qc": [
            {
                "measure": g.measure,
                "unit": g.unit,
                "min": g.min,
                "max": g.max,
                "on_fail": g.on_fail.value,
                "by_s": float(g.by.to("s").magnitude) if g.by is not None else None,
            }
            for g in s.qc
        ],
    }
    b.add(Role.OPERATOR, roles.operator, Op.PROMPT, params, dur)
    return _base_chain(b, run, max_out_s=None, after_previous_s=None, previous_key=None)


def _slot(roles: WorkcellRoles, inc: str | None, plate: str) -> int | None:
    slot = roles.slot_in(inc, plate)
    if inc is not None and slot is None:
        raise PlanError(f"plate {plate} has no slot in incubator {inc} in the workcell roles")
    return slot


def _env_chain(
    task: Task, roles: WorkcellRoles, inc: str | None, d: Durations, prefix: str, run: str
) -> Chain:
    """Change the setpoints of incubator ``inc`` (None: a person changes a manual one)."""
    s = task.spec
    assert isinstance(s, EnvSpec)
    b = _Builder(_chain_key(prefix, task.key, ALL_PLATES), task, ALL_PLATES)
    params: dict[str, Any] = {
        "task": task.key,
        "temperature_c": s.temperature_c,
        "co2_pct": s.co2_pct,
        "o2_pct": s.o2_pct,
    }
    if inc is not None:
        b.add(Role.INCUBATOR, inc, Op.SETPOINT, params, d.setpoint)
    else:
        text = f"Set the incubator to {task.title.removeprefix('incubator ')}."
        params = {**params, "plate": ALL_PLATES, "step": "setpoint", "text": text}
        b.add(Role.OPERATOR, roles.operator, Op.PROMPT, params, d.prompt)
    return _base_chain(b, run, max_out_s=None, after_previous_s=None, previous_key=None)


def _move_chain(
    task: Task,
    plate: str,
    roles: WorkcellRoles,
    source: str | None,
    target: str | None,
    d: Durations,
    prefix: str,
    run: str,
) -> Chain:
    """Move ``plate`` from incubator ``source`` to ``target``, which holds the climate its
    protocol now asks for: FETCH, CARRY (the arm, or a person), STORE."""
    assert source is not None and target is not None
    b = _Builder(_chain_key(prefix, task.key, plate), task, plate)
    climate = climate_text(_climate(task))
    common = {"plate": plate, "task": task.key, "climate": climate}
    here, there = _slot(roles, source, plate), _slot(roles, target, plate)
    b.add(
        Role.INCUBATOR,
        source,
        Op.FETCH,
        {**common, "slot": here, "incubator": source, "step": "leave"},
        d.fetch,
    )
    carry = {
        **common,
        "source": f"{source}/transfer",
        "destination": f"{target}/transfer",
        "from_incubator": source,
        "to_incubator": target,
    }
    if roles.mover is not None:
        main = b.add(Role.MOVER, roles.mover, Op.CARRY, carry, d.move_arm)
    else:
        text = (
            f"Take plate {plate} from the transfer station of {source} and put it on the "
            f"transfer station of {target} ({climate})."
        )
        main = b.add(
            Role.OPERATOR,
            roles.operator,
            Op.PROMPT,
            {**carry, "step": "carry", "text": text},
            d.move_operator,
        )
    b.add(
        Role.INCUBATOR,
        target,
        Op.STORE,
        {**common, "slot": there, "incubator": target, "step": "arrive"},
        d.store,
    )
    holds = (Hold(f"{source}:transfer", 0, 1), Hold(f"{target}:transfer", 1, 2))
    return _base_chain(
        b,
        run,
        max_out_s=None,
        after_previous_s=None,
        previous_key=None,
        main_seq=main,
        holds=holds,
    )


# --- liquid-handling parameters -----------------------------------------------------------


def _recipe_params(r: Recipe) -> dict[str, Any]:
    return {
        "recipe": r.label(),
        "medium": [[n, round(f, 6)] for n, f in r.parts],
        "factors": {n: format_quantity(q) for n, q in r.factors},
    }


def _wash_params(w: WashSpec | None) -> dict[str, Any] | None:
    if w is None:
        return None
    return {"medium": w.medium, "volume_ul": round(w.volume_ul, 3), "times": w.times}


def _lh_params(task: Task, prev_volume: float | None) -> dict[str, Any]:
    """What the liquid-handling job needs (JSON-able; volumes µL per well)."""
    s = task.spec
    out: dict[str, Any] = {
        "title": task.title,
        "day": task.day,
        "labware": task.labware,
        "wells": list(task.wells),
    }
    if isinstance(s, FeedSpec):
        out.update(
            kind="feed",
            change=s.change.value,
            fraction=s.fraction,
            remove_ul=round(s.remove_ul, 3),
            add_ul=round(s.add_ul, 3),
            dose=s.dose.value,
            wash=_wash_params(s.wash),
            **_recipe_params(s.recipe),
        )
    elif isinstance(s, AdditionSpec):
        out.update(
            kind="addition",
            compound=s.compound,
            conc=format_quantity(s.conc),
            stock_ul=round(s.stock_ul, 4),
            pulse_s=s.pulse_s,
            well_before_ul=round(s.well_before_ul, 3),
        )
    elif isinstance(s, WashoutSpec):
        out.update(
            kind="washout",
            compound=s.compound,
            remove_ul=round(prev_volume, 3) if prev_volume is not None else None,
            add_ul=round(s.add_ul, 3),
            wash=_wash_params(s.wash),
            **_recipe_params(s.recipe),
        )
    return out
