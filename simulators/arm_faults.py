"""Faults of the simulated workcell's arm, and the person who sees to them.

A scenario entry with ``device: arm-sim`` (see scenarios/) is one of:

===================  ===========================================  ==============================
fault                fields                                       what happens
===================  ===========================================  ==============================
``estop``            ``at``, optional ``duration``                 the e-stop is pressed; released
                                                                  after ``duration``
``link_lost``        ``at``, optional ``command`` (PlacePlate)     the next such command starts
                                                                  its motion, then the arm hangs
                                                                  up without a reply
``plate_slips``      ``at``, optional ``lost`` (false)             the next gripped plate slips
                                                                  out on the retract: back onto
                                                                  its station, or off the deck
``station_blocked``  ``at``, ``station`` (a workcell station       a person leaves a stray plate
                     name), optional ``duration``                  there; taken away after
                                                                  ``duration``
===================  ===========================================  ==============================

:meth:`ArmFaults.look` is the scripted operator going to look at the arm when a recovery
prompt is about one of its moves: the answer follows from where the plate physically is
(a plate in the gripper is taken out and put back where it was picked, then 'retry'; one
on the move's destination is 'done'; a stray plate in the way is removed, then 'retry'),
and is logged as hand actions in the arm's own log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from labctl.clock import Activity, Clock
from labctl.simulators.pf400 import PF400Simulator
from labctl.store import Store
from labctl.store.models import Prompt

__all__ = [
    "ARM_FAULT_KEYS",
    "LATER",
    "ArmFault",
    "ArmFaults",
    "arm_fault",
    "look_at_arm",
    "look_at_move",
]

LATER = "later"  # look(): the arm still moves, look again on the next step
STRAY = "stray-plate"

ARM_FAULT_KEYS = {
    "estop": {"device", "fault", "at", "duration"},
    "link_lost": {"device", "fault", "at", "command"},
    "plate_slips": {"device", "fault", "at", "lost"},
    "station_blocked": {"device", "fault", "at", "station", "duration"},
}


@dataclass(frozen=True)
class ArmFault:
    """One arm fault of a scenario (times aware UTC, durations in seconds)."""

    kind: str
    at: datetime
    duration_s: float | None = None
    command: str = "PlacePlate"
    station: str | None = None
    lost: bool = False

    @property
    def end(self) -> datetime:
        """When it stops acting (a one-shot fault: when it is armed)."""
        return self.at + timedelta(seconds=self.duration_s or 0.0)


def arm_fault(
    f: Mapping[str, Any], at: datetime, duration_s: float | None, stations: Mapping[str, int]
) -> ArmFault:
    """An :class:`ArmFault` from a checked scenario entry; ValueError says what is wrong."""
    kind = str(f["fault"])
    command = str(f.get("command", "PlacePlate"))
    if command not in ("PickPlate", "PlacePlate"):
        raise ValueError(f"'command' must be PickPlate or PlacePlate, not {command!r}")
    lost = f.get("lost", False)
    if not isinstance(lost, bool):
        raise ValueError(f"'lost' must be true or false, not {lost!r}")
    station = f.get("station")
    if kind == "station_blocked" and station not in stations:
        raise ValueError(f"'station' must be one of {', '.join(sorted(stations))}, not {station!r}")
    return ArmFault(kind, at, duration_s, command, None if station is None else str(station), lost)


class ArmFaults:
    """Applies ``faults`` to ``arm`` as the clock passes them (:meth:`apply`, each step)."""

    def __init__(
        self,
        arm: PF400Simulator,
        faults: list[ArmFault],
        stations: Mapping[str, int],
        clock: Clock,
        store: Store | None,
    ) -> None:
        self.arm = arm
        self.faults = list(faults)
        self.stations = dict(stations)
        self.clock = clock
        self.store = store
        self._done: set[tuple[int, str]] = set()

    # -- as the virtual clock's gate: faults land at their moment, even mid-move ----------

    def activity(self) -> Activity:
        """The arm's activity, with the next fault's moment as an event the clock stops at."""
        a = self.arm.activity()
        now = self.clock.now()
        times = [a.next_event] if a.next_event is not None else []
        for i, f in enumerate(self.faults):
            if (i, "start") not in self._done and f.at > now:
                times.append(f.at)
            elif f.duration_s is not None and (i, "end") not in self._done and f.end > now:
                times.append(f.end)
        return replace(a, next_event=min(times, default=None))

    def moved(self) -> None:
        """The clock moved: faults due by now act, then the arm's waiting replies wake."""
        self.apply(self.clock.now())
        self.arm.moved()

    def windows(self) -> list[tuple[datetime, datetime | None]]:
        """(start, end) of each fault, for the dry run's quiet watch."""
        return [(f.at, f.end) for f in self.faults]

    def apply(self, now: datetime) -> None:
        """Start each fault whose time has come, end each whose duration is over."""
        for i, f in enumerate(self.faults):
            if now < f.at:
                continue
            if (i, "start") not in self._done and self._start(f):
                self._done.add((i, "start"))
            if (
                f.duration_s is not None
                and now >= f.end
                and (i, "start") in self._done
                and (i, "end") not in self._done
            ):
                self._done.add((i, "end"))
                self._end(f)

    def _start(self, f: ArmFault) -> bool:
        if f.kind == "estop":
            self.arm.estop()
        elif f.kind == "link_lost":
            self.arm.drop_connection(f.command)
        elif f.kind == "plate_slips":
            self.arm.slip_next_pick(lost=f.lost)
        else:
            assert f.station is not None
            if self.stations[f.station] in self.arm.stations:
                return False  # occupied now: the stray plate goes there once it is free
            try:
                self.arm.put_plate(self.stations[f.station], STRAY)
            except ValueError:
                return False
        return True

    def _end(self, f: ArmFault) -> None:
        if f.kind == "estop":
            self.arm.reset_estop()
        elif f.kind == "station_blocked":
            assert f.station is not None
            if self.arm.stations.get(self.stations[f.station]) == STRAY:
                self.arm.take_plate(self.stations[f.station])

    # -- the person who looks --------------------------------------------------------------

    def look(self, p: Prompt) -> str | None:
        """The answer a person gives to ``p`` after looking at the arm (see the module
        docstring); None when ``p`` is not about an arm move or the plate is nowhere to be
        found (the script, or the prompt's default, decides); LATER while the arm moves."""
        if self.store is None or p.job_id is None:
            return None
        job = self.store.get_job(p.job_id)
        if job.device != self.arm.arm.name:
            return None
        if arm_busy(self.arm):
            return LATER  # nobody retries an arm still moving or held by its e-stop
        params = job.spec.get("params", {}) if isinstance(job.spec, dict) else {}
        ends = [str(params.get("source", "")), str(params.get("destination", ""))]
        lh = str(params.get("liquid_handler", ""))
        deck = {n for name, n in self.stations.items() if name.startswith(f"{lh}/")}
        for n, there in self.arm.stations.items():
            if there == STRAY:
                self.arm.take_plate(n)  # a stray plate in the way
        plate = str(params.get("plate", ""))
        if job.op == "carry":  # one transfer station to another
            src, dst = ({self.stations[e]} if e in self.stations else set() for e in ends)
            fact, _ = look_at_move(self.arm, plate, src, dst)
        else:
            transfer = next((self.stations.get(e) for e in ends if e.endswith("/transfer")), None)
            fact, _ = look_at_arm(self.arm, plate, job.op, deck, transfer)
        if fact == "not":
            return "retry" if "retry" in p.choices else None
        if fact == "happened" and "done" in p.choices:
            return "done"
        return None  # nowhere to be found, or 'done' not offered: a person decides


def arm_busy(arm: PF400Simulator) -> bool:
    """Whether the arm still moves or is held by its e-stop (nobody touches it then)."""
    return arm.moving or arm.arm.estop


def put_back_from_gripper(arm: PF400Simulator) -> int | None:
    """A person takes the plate out of the stopped arm's gripper and puts it back on the
    station it was picked from; returns that station (None: nothing held, or the station
    is taken: the plate stays in the gripper for a person to decide)."""
    plate, back = arm.gripper, arm.picked_from
    if plate is None or back is None or back in arm.stations:
        return None
    arm.take_from_gripper()
    arm.put_plate(back, plate)
    return back


def look_at_arm(
    arm: PF400Simulator, plate: str, op: str, deck: set[int], transfer: int | None
) -> tuple[str, str]:
    """What a person at the arm finds of its move ``op`` (``to_deck`` / ``to_incubator``)
    of ``plate``: ('happened' | 'not' | 'busy' | 'unknown', in words). ``deck``: the
    stations on the robot's deck, ``transfer``: the incubator's transfer station. A plate
    left in the gripper (this one or another, which blocks the arm) is put back on the
    station it was picked from; this one is then 'not' moved.

    Which deck position a move used is not taken from the job (the engine chooses it when
    the move starts): any of the robot's deck stations counts."""
    transfers = {transfer} if transfer is not None else set()
    src, dst = (transfers, deck) if op == "to_deck" else (deck, transfers)
    return look_at_move(arm, plate, src, dst)


def look_at_move(
    arm: PF400Simulator, plate: str, source: set[int], destination: set[int]
) -> tuple[str, str]:
    """What a person at the arm finds of a move of ``plate`` from one of the ``source``
    stations to one of the ``destination`` stations: ('happened' | 'not' | 'busy' |
    'unknown', in words); a plate left in the gripper is put back where it was picked
    (see :func:`look_at_arm`)."""
    if arm_busy(arm):
        return "busy", f"{arm.arm.name} is moving or held by its e-stop"
    held = arm.gripper
    back = put_back_from_gripper(arm)
    if held == plate:
        if back is None:
            return "unknown", f"plate {plate} is in the gripper and its station is taken"
        return "not", f"plate {plate} was in the gripper: put back on station {back} by hand"
    where = arm.stations
    there = next((n for n in destination if where.get(n) == plate), None)
    here = next((n for n in source if where.get(n) == plate), None)
    if there is not None:
        return "happened", f"plate {plate} is on station {there}, where it was going"
    if here is not None:
        return "not", f"plate {plate} is on station {here}, where it was picked"
    return "unknown", f"plate {plate} is on neither end of its move"
