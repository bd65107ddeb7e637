"""Which workcell device plays which role, and where each plate lives.

A workcell has one or more liquid handlers, zero or more automated incubators, perhaps a
plate mover (robot arm) and an operator. :class:`WorkcellRoles` names them for a run and
gives each plate its incubator slots. Where a workcell has several automated incubators,
each holds the climate its ``setpoints`` declare (temperature, CO2, O2: an O2 level is
set at the device, e.g. a LiCONiC fed with N2 for hypoxia), and a plate lives in the one
whose climate is the one its protocol asks for that day (:meth:`WorkcellRoles.incubator_for`).

Pure data and functions of the workcell file: no clock, no devices.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from labctl.errors import PlanError
from labctl.workcell import INCUBATOR_DRIVERS, MOVER_DRIVERS, Workcell
from labctl.workcell import Device as WorkcellDevice

__all__ = ["AMBIENT", "Climate", "WorkcellRoles", "climate_text", "same_climate"]

# (temperature degC, CO2 %, O2 % or None for ambient air): what an incubator holds.
Climate = tuple[float, float, float | None]
AMBIENT: Climate = (37.0, 5.0, None)  # the format's default environment
_TOLERANCE = 0.05  # degC or percentage points: setpoints closer than this are the same


def same_climate(a: Climate, b: Climate) -> bool:
    """Whether two climates are the same (O2 None, ambient, matches only None)."""
    if abs(a[0] - b[0]) > _TOLERANCE or abs(a[1] - b[1]) > _TOLERANCE:
        return False
    if a[2] is None or b[2] is None:
        return a[2] is None and b[2] is None
    return abs(a[2] - b[2]) <= _TOLERANCE


def climate_text(c: Climate) -> str:
    """``37 degC, 5% CO2, 4% O2`` (O2 left out when ambient)."""
    o2 = "" if c[2] is None else f", {c[2]:g}% O2"
    return f"{c[0]:g} degC, {c[1]:g}% CO2{o2}"


def _climate_of(d: WorkcellDevice) -> Climate:
    sp = d.setpoints()
    return (sp.get("temperature", 37.0), sp.get("co2", 5.0), sp.get("o2"))


@dataclass(frozen=True)
class WorkcellRoles:
    """Which workcell device plays which role, and where each plate lives.

    ``incubator`` is None when plates are kept in a manual incubator (the operator takes
    them out and puts them back); ``mover`` is None when the operator carries plates
    between the incubator and the deck. ``slots`` maps plate label -> slot in
    ``incubator``; ``deck_slots`` are the liquid handler's deck positions that can take a
    culture plate (two let a mover load the next plate while the current one is being fed).
    ``more_handlers`` are further liquid handlers (name, deck slots): the plates are
    shared between all of them in turn, in the order of ``slots`` (:meth:`handler_for`).

    ``climates`` lists every automated incubator (name, climate its setpoints declare)
    when the workcell has more than one, and ``more_slots`` each plate's slot in the
    incubators other than ``incubator`` it may live in (incubator -> plate -> slot).
    ``batch`` maps a liquid handler to how many plates it feeds in one robot run (the
    plates of a task then share one generated protocol: :meth:`batches`).
    """

    liquid_handler: str
    incubator: str | None
    mover: str | None
    operator: str
    slots: dict[str, int]
    deck_slots: tuple[int, ...] = (1,)
    more_handlers: tuple[tuple[str, tuple[int, ...]], ...] = ()
    climates: tuple[tuple[str, Climate], ...] = ()
    more_slots: dict[str, dict[str, int]] = field(default_factory=dict)
    batch: dict[str, int] = field(default_factory=dict)

    def batch_of(self, handler: str) -> int:
        """How many plates ``handler`` feeds in one robot run (its ``batch`` setting, at
        most its culture-plate positions; 1 when not set)."""
        positions = dict(((self.liquid_handler, self.deck_slots), *self.more_handlers))
        return max(1, min(self.batch.get(handler, 1), len(positions.get(handler, (1,)))))

    def batches(self, plates: list[str]) -> list[list[str]]:
        """``plates`` in the groups fed together: the plates of each liquid handler (see
        :meth:`handler_for`), in order, in runs of :meth:`batch_of` (the last may be
        smaller). Without batching every plate is a group of its own."""
        by_handler: dict[str, list[str]] = {}
        for p in plates:
            by_handler.setdefault(self.handler_for(p)[0], []).append(p)
        out: list[list[str]] = []
        for handler, mine in by_handler.items():
            n = self.batch_of(handler)
            out.extend(mine[i : i + n] for i in range(0, len(mine), n))
        order = {p: i for i, p in enumerate(plates)}
        return sorted(out, key=lambda g: order[g[0]])

    def handler_for(self, plate: str) -> tuple[str, tuple[int, ...]]:
        """The liquid handler (name, deck slots) that feeds ``plate``: every handler of
        the workcell in turn, by the plate's place in ``slots`` (a plate keeps its
        handler for the whole run, so its robot's tips and media stay its own)."""
        handlers = ((self.liquid_handler, self.deck_slots), *self.more_handlers)
        order = list(self.slots)
        i = order.index(plate) if plate in order else 0
        return handlers[i % len(handlers)]

    def incubator_for(self, climate: Climate) -> str | None:
        """The incubator that holds ``climate`` where the workcell has several (the plates
        move there when their protocol asks for it); None when only one is automated (its
        setpoints are changed instead) or none holds that climate."""
        if len(self.climates) < 2:
            return None
        return next((n for n, c in self.climates if same_climate(c, climate)), None)

    def slot_in(self, incubator: str | None, plate: str) -> int | None:
        """``plate``'s slot in ``incubator`` (None: it has none there)."""
        if incubator is None or incubator == self.incubator:
            return self.slots.get(plate)
        return self.more_slots.get(incubator, {}).get(plate)

    @classmethod
    def from_workcell(
        cls,
        wc: Workcell,
        plates: list[str],
        *,
        taken: Collection[int] = (),
        climates: Iterable[Climate] = (),
        taken_in: Mapping[str, Collection[int]] | None = None,
    ) -> WorkcellRoles:
        """Roles from a workcell file; plates get the lowest incubator slots not taken.

        ``climates`` are those the run's protocol asks for: each plate also gets a slot in
        every further incubator that holds one of them. ``taken_in`` maps an incubator to
        the slots other runs hold there (``taken``: those of the main incubator).
        The main incubator is the automated one that holds 37 degC, 5% CO2 and ambient O2
        (else the first). Raises PlanError when the workcell has no liquid handler, too
        few slots, or a plate mover that cannot reach a station the run needs.
        """
        lh = mover = op = None
        handlers: list[WorkcellDevice] = []
        incubators: list[WorkcellDevice] = []
        for d in wc.devices.values():
            drv = d.driver.lower()
            tokens = set(re.split(r"[-_.]", drv))
            if "deck" in d.settings or _is_liquid_handler(drv):
                handlers.append(d)
                lh = lh or d
            elif drv in INCUBATOR_DRIVERS and drv != "manual-incubator":
                incubators.append(d)
            elif op is None and "operator" in tokens:
                op = d
            elif mover is None and (drv in MOVER_DRIVERS or tokens & {"arm", "mover"}):
                mover = d
        if lh is None:
            raise PlanError(
                f"workcell '{wc.name}' has no liquid handler "
                "(a device with driver: opentrons and a 'deck' setting)"
            )
        inc = next((d for d in incubators if same_climate(_climate_of(d), AMBIENT)), None)
        inc = inc or (incubators[0] if incubators else None)
        named = [(d.name, _climate_of(d)) for d in incubators] if len(incubators) > 1 else []
        wanted = list(climates)
        others = [
            d
            for d in incubators
            if d is not inc and any(same_climate(_climate_of(d), c) for c in wanted)
        ]
        if mover is not None and mover.driver in MOVER_DRIVERS:
            _check_stations(mover, [d for d in (inc, *others) if d is not None], handlers)
        taken_in = taken_in or {}
        main_taken = {*taken, *(taken_in.get(inc.name, ()) if inc is not None else ())}
        slots = _allocate(inc, plates, main_taken)
        more = {d.name: _allocate(d, plates, set(taken_in.get(d.name, ()))) for d in others}
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
            climates=tuple(named),
            more_slots=more,
            batch={h.name: n for h in handlers if (n := _batch(h)) > 1},
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


def _allocate(inc: WorkcellDevice | None, plates: list[str], taken: set[int]) -> dict[str, int]:
    """The lowest free slot of ``inc`` for each plate; PlanError when they do not fit.
    (A manual incubator, None, has no slot count: its numbers only name the plates' places.)"""
    capacity = _capacity(inc) if inc is not None else None
    free = (s for s in range(1, 100_000) if s not in taken)
    out: dict[str, int] = {}
    for p in plates:
        s = next(free)
        if capacity is not None and s > capacity:
            raise PlanError(
                f"incubator '{inc.name if inc else ''}' has {capacity} slots; "
                f"{len(plates)} plates do not fit next to the {len(taken)} already taken"
            )
        out[p] = s
    return out


def _capacity(inc: WorkcellDevice) -> int | None:
    """How many slots an incubator has: its ``slots``, else (LiCONiC) its ``levels`` per
    cassette times ``cassettes``, or their sum when ``levels`` is a list; None: unknown."""
    s = inc.settings
    raw = s.get("slots")
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    levels, cassettes = s.get("levels"), s.get("cassettes", 1)
    if isinstance(levels, list) and all(isinstance(x, int) for x in levels):
        return sum(levels) or None
    if isinstance(levels, int) and isinstance(cassettes, int) and levels > 0 and cassettes > 0:
        return levels * cassettes
    return None


def _check_stations(
    mover: WorkcellDevice, incubators: list[WorkcellDevice], handlers: list[WorkcellDevice]
) -> None:
    """A plate mover must reach the transfer station of every incubator the run uses and
    every deck position plates go to, on every liquid handler; raises PlanError naming
    the stations its ``stations`` lack."""
    if not incubators:
        raise PlanError(
            f"plate mover '{mover.name}' needs an automated incubator (cytomat or liconic) "
            "to take plates from; with a manual incubator the operator carries plates"
        )
    stations = mover.settings.get("stations")
    if not isinstance(stations, dict):
        return  # the driver's own check names what is missing
    needed = [f"{inc.name}/transfer" for inc in incubators] + [
        f"{lh.name}/{p}" for lh in handlers for p in _deck_slots(lh.settings.get("deck"))
    ]
    missing = [n for n in needed if n not in stations]
    if missing:
        raise PlanError(
            f"plate mover '{mover.name}' has no station for {', '.join(missing)}: "
            "add them to its 'stations' (the numbers taught on the arm)"
        )


def _batch(handler: WorkcellDevice) -> int:
    """A liquid handler's ``batch`` setting: plates fed in one robot run (1 if unset or
    not a whole number; the registry reports a bad value, naming the device)."""
    raw = handler.settings.get("batch", 1)
    n = raw if isinstance(raw, int) and not isinstance(raw, bool) else 1
    return max(1, min(n, len(_deck_slots(handler.settings.get("deck")))))


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
