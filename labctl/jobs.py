"""Expand a Plan's tasks into jobs: the device operations, in order, for each plate.

A task done to a plate becomes a :class:`Chain` of :class:`JobSpec` run back to back: for a
medium change FETCH (incubator), TO_DECK (plate mover or operator), LH_RUN (liquid
handler), TO_INCUBATOR, STORE; for a manual event one operator PROMPT; for an incubator
setpoint change one SETPOINT. Which device does what comes from :class:`WorkcellRoles`.
Durations are estimates in seconds (:class:`Durations`); the scheduler places the chains.

Besides its jobs a chain occupies *places*: the incubator's transfer station and the
liquid handler's deck position (:class:`Hold`), and the plate itself. Two plates can never
be on one place at once; the scheduler enforces it as it does for devices.

Pure functions of their inputs: no clock, no devices.
"""

from __future__ import annotations

import re
from collections.abc import Collection
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
from labctl.units import format_quantity
from labctl.workcell import INCUBATOR_DRIVERS, MOVER_DRIVERS, Workcell
from labctl.workcell import Device as WorkcellDevice

__all__ = [
    "Chain",
    "Durations",
    "Hold",
    "JobSpec",
    "Op",
    "Role",
    "WorkcellRoles",
    "expand",
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
class WorkcellRoles:
    """Which workcell device plays which role, and where each plate lives.

    ``incubator`` is None when plates are kept in a manual incubator (the operator takes
    them out and puts them back); ``mover`` is None when the operator carries plates
    between the incubator and the deck. ``slots`` maps plate label -> incubator slot;
    ``deck_slots`` are the liquid handler's deck positions that can take a culture plate
    (two let a mover load the next plate while the current one is being fed).
    ``more_handlers`` are further liquid handlers (name, deck slots): the plates are
    shared between all of them in turn, in the order of ``slots`` (:meth:`handler_for`).
    """

    liquid_handler: str
    incubator: str | None
    mover: str | None
    operator: str
    slots: dict[str, int]
    deck_slots: tuple[int, ...] = (1,)
    more_handlers: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def handler_for(self, plate: str) -> tuple[str, tuple[int, ...]]:
        """The liquid handler (name, deck slots) that feeds ``plate``: every handler of
        the workcell in turn, by the plate's place in ``slots`` (a plate keeps its
        handler for the whole run, so its robot's tips and media stay its own)."""
        handlers = ((self.liquid_handler, self.deck_slots), *self.more_handlers)
        order = list(self.slots)
        i = order.index(plate) if plate in order else 0
        return handlers[i % len(handlers)]

    @classmethod
    def from_workcell(
        cls, wc: Workcell, plates: list[str], *, taken: Collection[int] = ()
    ) -> WorkcellRoles:
        """Roles from a workcell file; plates get the lowest incubator slots not in ``taken``.

        Raises PlanError when the workcell has no liquid handler or too few slots.
        """
        lh = inc = mover = op = None
        handlers: list[WorkcellDevice] = []
        for d in wc.devices.values():
            drv = d.driver.lower()
            tokens = set(re.split(r"[-_.]", drv))
            if "deck" in d.settings or _is_liquid_handler(drv):
                handlers.append(d)
                lh = lh or d
            elif inc is None and drv in INCUBATOR_DRIVERS and drv != "manual-incubator":
                inc = d
            elif op is None and "operator" in tokens:
                op = d
            elif mover is None and (drv in MOVER_DRIVERS or tokens & {"arm", "mover"}):
                mover = d
        if lh is None:
            raise PlanError(
                f"workcell '{wc.name}' has no liquid handler "
                "(a device with driver: opentrons and a 'deck' setting)"
            )
        if mover is not None and mover.driver in MOVER_DRIVERS:
            _check_stations(mover, inc, handlers)
        capacity = None
        if inc is not None:
            raw = inc.settings.get("slots")
            capacity = raw if isinstance(raw, int) and raw > 0 else None
        used = set(taken)
        free = (s for s in range(1, 100_000) if s not in used)
        slots: dict[str, int] = {}
        for p in plates:
            s = next(free)
            if capacity is not None and s > capacity:
                raise PlanError(
                    f"incubator '{inc.name if inc else ''}' has {capacity} slots; "
                    f"{len(plates)} plates do not fit next to the {len(taken)} already taken"
                )
            slots[p] = s
        return cls(
            liquid_handler=lh.name,
            incubator=inc.name if inc is not None else None,
            mover=mover.name if mover is not None else None,
            operator=op.name if op is not None else "operator",
            slots=slots,
            deck_slots=_deck_slots(lh.settings.get("deck")),
            more_handlers=tuple(
                (h.name, _deck_slots(h.settings.get("deck"))) for h in handlers[1:]
            ),
        )

    @classmethod
    def simulated(cls, plates: list[str]) -> WorkcellRoles:
        """The built-in simulated workcell: ot2-sim, inc-sim, the operator carries plates.

        The simulated OT-2 takes culture plates on deck slots 1 and 2, so the operator can
        put the next plate down while the current one is being fed.
        """
        return cls(
            liquid_handler="ot2-sim",
            incubator="inc-sim",
            mover=None,
            operator="operator",
            slots={p: i + 1 for i, p in enumerate(plates)},
            deck_slots=(1, 2),
        )


def _check_stations(
    mover: WorkcellDevice, inc: WorkcellDevice | None, handlers: list[WorkcellDevice]
) -> None:
    """A plate mover must reach the incubator's transfer station and every deck position
    plates go to, on every liquid handler; raises PlanError naming the stations its
    ``stations`` lack."""
    if inc is None:
        raise PlanError(
            f"plate mover '{mover.name}' needs an automated incubator (cytomat or liconic) "
            "to take plates from; with a manual incubator the operator carries plates"
        )
    stations = mover.settings.get("stations")
    if not isinstance(stations, dict):
        return  # the driver's own check names what is missing
    needed = [f"{inc.name}/transfer"] + [
        f"{lh.name}/{p}" for lh in handlers for p in _deck_slots(lh.settings.get("deck"))
    ]
    missing = [n for n in needed if n not in stations]
    if missing:
        raise PlanError(
            f"plate mover '{mover.name}' has no station for {', '.join(missing)}: "
            "add them to its 'stations' (the numbers taught on the arm)"
        )


def _is_liquid_handler(driver: str) -> bool:
    return any(w in driver for w in ("opentrons", "ot2", "ot-2", "flex", "liquid"))


def _deck_slots(deck: object) -> tuple[int, ...]:
    """The culture-plate positions of a deck setting ``{plate: 1}`` or ``{plate: [1, 3]}``."""
    plate = deck.get("plate") if isinstance(deck, dict) else None
    if isinstance(plate, int) and not isinstance(plate, bool):
        return (plate,)
    if isinstance(plate, list):
        out = tuple(p for p in plate if isinstance(p, int) and not isinstance(p, bool))
        if out:
            return out
    return (1,)


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


def lh_duration_s(task: Task, d: Durations = Durations()) -> float:
    """Estimated liquid-handler run time (s) for one plate of a feed/addition/washout task."""
    n = len(task.wells) or 1
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
    for task in plan.tasks:
        if task.kind is TaskKind.ENVIRONMENT:
            chains.append(_env_chain(task, roles, durations, prefix, run))
        elif task.kind is TaskKind.EVENT:
            for p in plates:
                chains.append(_event_chain(task, p, len(plates), roles, durations, prefix, run))
        else:
            lh = _lh_params(task, prev_volume)
            for p in plates:
                chains.append(_lh_chain(task, p, lh, roles, durations, max_out_s, prefix, run))
        prev_volume = task.well_after.volume_ul
    return chains


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
    d: Durations,
    max_out_s: float | None,
    prefix: str,
    run: str,
) -> Chain:
    b = _Builder(_chain_key(prefix, task.key, plate), task, plate)
    inc, op = roles.incubator, roles.operator
    lh, deck_slots = roles.handler_for(plate)
    deck = deck_slots[0]
    slot = roles.slots.get(plate)
    if inc is not None and slot is None:
        raise PlanError(f"plate {plate} has no incubator slot in the workcell roles")
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
        lh_duration_s(task, d),
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


def _env_chain(task: Task, roles: WorkcellRoles, d: Durations, prefix: str, run: str) -> Chain:
    s = task.spec
    assert isinstance(s, EnvSpec)
    b = _Builder(_chain_key(prefix, task.key, ALL_PLATES), task, ALL_PLATES)
    params: dict[str, Any] = {
        "task": task.key,
        "temperature_c": s.temperature_c,
        "co2_pct": s.co2_pct,
        "o2_pct": s.o2_pct,
    }
    if roles.incubator is not None:
        b.add(Role.INCUBATOR, roles.incubator, Op.SETPOINT, params, d.setpoint)
    else:
        text = f"Set the incubator to {task.title.removeprefix('incubator ')}."
        params = {**params, "plate": ALL_PLATES, "step": "setpoint", "text": text}
        b.add(Role.OPERATOR, roles.operator, Op.PROMPT, params, d.prompt)
    return _base_chain(b, run, max_out_s=None, after_previous_s=None, previous_key=None)


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
