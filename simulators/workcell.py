"""The built-in simulated workcell: a robot server on 127.0.0.1, a Cytomat on a
pseudo-terminal, and a scripted operator, all on one shared clock.

It writes the workcell file that points at them, so the REAL drivers reach the simulators
over the same wire as hardware (HTTP, serial). The simulated devices are named ``ot2-sim``,
``inc-sim`` and ``operator``. Faults come from a scenario file (YAML)::

    faults:
      - {device: inc-sim, fault: door_open, at: "2026-12-03T09:00:00Z", duration: 20 min}
      - {device: inc-sim, fault: error_code, code: "05", after_commands: 40}
      - {device: inc-sim, fault: co2_out_of_range, at: "2026-12-02T02:00:00Z", duration: 2 h, co2_offset: 3}
      - {device: ot2-sim, fault: run_fails, run: 3, at_command: 5}     # the 3rd robot run fails
      - {device: ot2-sim, fault: offline, at: "2026-12-04T08:30:00Z", duration: 30 min}
      - {device: operator, fault: no_answer, at: "2026-12-05T00:00:00Z", duration: 12 h}
      - {device: operator, fault: recovery_choice, choice: retry}       # how the script decides

Incubator faults are those of :mod:`labctl.simulators.faults`. Times are virtual: ``at`` is
either relative to the run's day 0, ``day 1 08:50`` (day 1 at 08:50 in the run's time zone,
so a scenario fits any ``--start``), or an ISO time with a zone. A time the simulation never
reaches (before its start, an hour before day 0's first task, or after it gives up) is
refused, not silently left out. An optional ``expect:`` block says how the run ends (see
:data:`EXPECT_KEYS`); ``labctl simulate`` checks it. A robot
``door_open`` needs a Flex (the OT-2 reports no door): on the OT-2 workcell it is refused. The
operator's ``no_answer`` without ``at`` lasts the whole run; ``qc_value`` takes ``measure`` and
``value``. Examples, one per fault kind: the repository's scenarios/ folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml

from labctl.clock import Clock, VirtualClock, utc
from labctl.errors import InputFileError, LabctlError
from labctl.roles import AMBIENT, Climate, same_climate
from labctl.simulators.arm_faults import ARM_FAULT_KEYS, ArmFault, ArmFaults, arm_fault
from labctl.simulators.cytomat import CytomatConfig, CytomatSim
from labctl.simulators.faults import (
    ClimateConfig,
    Fault,
    FaultSpecError,
    parse_duration,
    parse_faults,
)
from labctl.simulators.handover import TransferSpot
from labctl.simulators.liconic import LiconicConfig, LiconicSim
from labctl.simulators.opentrons_analysis import AnalysisService, default_analysis
from labctl.simulators.opentrons_instruments import InstrumentConfig
from labctl.simulators.opentrons_robot import RobotSimulator
from labctl.simulators.opentrons_wire import RobotName
from labctl.simulators.operator import OperatorScript, PlateHands, SimulatedOperator
from labctl.simulators.pf400 import PF400Config, PF400Simulator
from labctl.simulators.serial_link import PtyLink
from labctl.store import Store

ROBOT, INCUBATOR, OPERATOR, ARM = "ot2-sim", "inc-sim", "operator", "arm-sim"
HYPOXIC = "inc-hyp"  # a LiCONiC fed with N2, added when a protocol asks for low O2
DECK_PLATES = (1, 3)  # the simulated robot's culture-plate positions
# With two plates a run the deck takes two pairs, so the arm puts the next pair down while
# the robot feeds this one (an OT-2 deck is then full: 4 plates, 2 liquids, waste, stocks,
# 3 tip racks).
BATCH_PLATES = (6, 9)
MAX_BATCH = 2
# The arm's taught stations: the incubator's transfer station, each deck position, a nest.
ARM_STATIONS = {
    f"{INCUBATOR}/transfer": 1,
    **{f"{ROBOT}/{p}": i + 2 for i, p in enumerate(DECK_PLATES)},
    "nest": 2 + len(DECK_PLATES),
}
MAX_ROBOTS = 4


def robot_name(k: int) -> str:
    """The name of the simulated workcell's k-th robot (0: ``ot2-sim``, 1: ``ot2-sim-2``)."""
    return ROBOT if k == 0 else f"{ROBOT}-{k + 1}"


def deck_plates(batch: int = 1) -> tuple[int, ...]:
    """The simulated robot's culture-plate positions with ``batch`` plates a run: room for
    two batches (:data:`DECK_PLATES`, then :data:`BATCH_PLATES` when batching)."""
    return DECK_PLATES if batch <= 1 else DECK_PLATES + BATCH_PLATES


def arm_stations(robots: int, batch: int = 1) -> dict[str, int]:
    """The arm's stations for a workcell of ``robots`` robots: :data:`ARM_STATIONS`, then
    each further robot's deck positions, then the positions batching adds to each robot
    (appended, so a station's number does not depend on the batch)."""
    out = dict(ARM_STATIONS)
    for k in range(1, robots):
        for p in DECK_PLATES:
            out[f"{robot_name(k)}/{p}"] = len(out) + 1
    for k in range(robots):
        for p in deck_plates(batch)[len(DECK_PLATES) :]:
            out[f"{robot_name(k)}/{p}"] = len(out) + 1
    return out


class ScenarioError(LabctlError):
    """A fault scenario file is not valid."""


@dataclass(frozen=True)
class RobotFault:
    kind: str  # run_fails | offline | door_open
    run: int | None = None
    at_command: int | None = None
    at: datetime | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class Scenario:
    incubator: list[Fault]
    robot: list[RobotFault]
    operator: OperatorScript
    source: str = ""
    arm: list[ArmFault] = field(default_factory=list)
    expect: dict[str, Any] = field(default_factory=dict)  # how the run ends (EXPECT_KEYS)


#: The keys of a scenario's ``expect:`` block: the run's final state; at most this many tasks
#: started after their window; exactly this many deviations; the kinds of the prompts left
#: open ([] for none); alarm codes that must have been raised (others may be too).
EXPECT_KEYS = ("state", "late", "deviations", "open_prompts", "alarms")
_RUN_STATES = ("completed", "holding", "aborted", "failed", "running", "paused")
_RELATIVE = re.compile(r"day\s+(\d+)\s+(\d{1,2}):(\d{2})(?::(\d{2}))?")


@dataclass(frozen=True)
class _Run:
    """Where a scenario's times land: day 0 (aware, in the run's zone) and the moments the
    simulation starts and gives up (None: a scenario read on its own)."""

    day0: datetime | None = None
    span: tuple[datetime, datetime] | None = None

    def day(self, when: datetime) -> str:
        if self.day0 is None:
            return f"{when:%Y-%m-%d %H:%M} UTC"
        local = when.astimezone(self.day0.tzinfo)
        return f"day {(local.date() - self.day0.date()).days} {local:%H:%M}"


def _when(v: Any, where: str, run: _Run = _Run()) -> datetime:
    """The moment of an ``at``: relative (``day 1 08:50``) or ISO with a zone; ScenarioError
    when it is neither, or falls where the simulation never is."""
    m = _RELATIVE.fullmatch(str(v).strip()) if not isinstance(v, datetime) else None
    if m is not None:
        day, hh, mm, ss = (int(g or 0) for g in m.groups())
        if hh > 23 or mm > 59 or ss > 59:
            raise ScenarioError(f"{where}: 'at' {v!r}: no such time of day")
        if run.day0 is None:
            raise ScenarioError(
                f"{where}: 'at' {v!r} is relative to day 0: it needs the run (labctl simulate)"
            )
        local = datetime.combine(run.day0.date() + timedelta(days=day), time(hh, mm, ss))
        dt = utc(local.replace(tzinfo=run.day0.tzinfo))
    else:
        if isinstance(v, datetime):
            dt = v
        else:
            try:
                dt = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
            except ValueError:
                raise ScenarioError(
                    f"{where}: 'at' must be a time of the run like 'day 1 08:50' (day 0 is "
                    "the run's first day) or an ISO time like 2026-12-03T09:00:00Z"
                ) from None
        if dt.tzinfo is None:
            raise ScenarioError(f"{where}: 'at' needs a time zone (end it with Z for UTC)")
    if run.span is not None:
        first, last = run.span
        if not first <= dt <= last:
            side = (
                f"before the simulation starts ({run.day(first)}, an hour before day 0's "
                "first task)"
                if dt < first
                else f"after the simulation stops at the latest ({run.day(last)}, "
                "--grace-days after the last task's window)"
            )
            raise ScenarioError(
                f"{where}: 'at' {v} falls on {run.day(dt)} ({utc(dt):%Y-%m-%d %H:%M} UTC), "
                f"{side}: it would never happen. Give a time of this run, e.g. 'day 1 08:50' "
                "(relative to day 0), or the --start the scenario was written for"
            )
    return dt


def _expect(data: Any, path: str | Path) -> dict[str, Any]:
    """A checked ``expect:`` block (see :data:`EXPECT_KEYS`)."""
    where = f"{path}: expect"
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: must be a mapping of {', '.join(EXPECT_KEYS)}")
    _check_keys(data, set(EXPECT_KEYS), where)
    if "state" in data and data["state"] not in _RUN_STATES:
        raise ScenarioError(f"{where}: state must be one of {', '.join(_RUN_STATES)}")
    for key in ("late", "deviations"):
        if key in data:
            _count(data, key, 0, where)
    for key in ("open_prompts", "alarms"):
        v = data.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ScenarioError(f"{where}: {key} must be a list of words, e.g. [recovery]")
    return dict(data)


_ROBOT_KEYS = {
    "run_fails": {"device", "fault", "run", "at_command"},
    "offline": {"device", "fault", "at", "duration"},
    "door_open": {"device", "fault", "at", "duration"},
}
_OPERATOR_KEYS = {
    "no_answer": {"device", "fault", "at", "duration"},
    "recovery_choice": {"device", "fault", "choice"},
    "qc_value": {"device", "fault", "measure", "value"},
}


def _check_keys(f: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in f if k not in allowed)
    if unknown:
        raise ScenarioError(
            f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
        )


def _duration(f: dict[str, Any], where: str) -> float | None:
    if "duration" not in f:
        return None
    try:
        return parse_duration(f["duration"])
    except FaultSpecError as exc:
        raise ScenarioError(f"{where}: field 'duration': {exc.reason}") from None


def _count(f: dict[str, Any], key: str, lo: int, where: str) -> int:
    v = f.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ScenarioError(f"{where}: '{key}' must be a whole number >= {lo}, not {v!r}")
    return v


def _read(path: str | Path) -> Any:
    """The scenario file's YAML: InputFileError when it cannot be read (exit 2), a
    ScenarioError with the line when it is not YAML."""
    f = Path(path)
    if f.is_dir():
        raise InputFileError(f"{path}: is a folder, not a scenario file")
    try:
        text = f.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputFileError(f"{path}: cannot be read ({why})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ScenarioError(f"{path}{at}: YAML syntax: {problem}") from None


def load_scenario(
    path: str | Path | None,
    *,
    day0: datetime | None = None,
    span: tuple[datetime, datetime] | None = None,
) -> Scenario:
    """Read a fault scenario; raises ScenarioError with the entry and field named.

    ``day0`` (aware, in the run's time zone) places relative times (``day 1 08:50``);
    ``span`` (the simulation's first and last moment) refuses a time outside it.
    """
    if path is None:
        return Scenario([], [], OperatorScript())
    run = _Run(day0, span)
    data = _read(path)
    if isinstance(data, dict):
        extra = sorted(str(k) for k in data if k not in ("faults", "expect"))
        if extra:
            raise ScenarioError(
                f"{path}: unknown key {extra[0]!r} (a scenario has 'faults:' and 'expect:')"
            )
    items = data.get("faults") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ScenarioError(f"{path}: a scenario is a list of faults under 'faults:'")
    expect = _expect(data.get("expect") if isinstance(data, dict) else None, path)
    inc: list[Fault] = []
    robot: list[RobotFault] = []
    arm: list[ArmFault] = []
    script = OperatorScript()
    seen: set[str] = set()  # operator entries that may appear once
    for i, f in enumerate(items):
        where = f"{path}: fault #{i + 1}"
        if not isinstance(f, dict):
            raise ScenarioError(f"{where}: must be a mapping")
        dev = f.get("device", INCUBATOR)
        kind = f.get("fault")
        if dev == INCUBATOR:
            if "at" in f:
                f = dict(f, at=_when(f["at"], where, run))
            try:
                inc.extend(parse_faults([dict(f)]))
            except FaultSpecError as exc:
                # parse_faults numbers its one entry 0: name the scenario's entry instead.
                raise ScenarioError(f"{where}: field '{exc.field}': {exc.reason}") from None
        elif dev == ROBOT:
            if kind not in _ROBOT_KEYS:
                raise ScenarioError(
                    f"{where}: robot faults are run_fails, offline, door_open; not {kind!r}"
                )
            _check_keys(f, _ROBOT_KEYS[kind], where)
            dur = _duration(f, where)
            at = _when(f["at"], where, run) if "at" in f else None
            if kind == "run_fails":
                if "run" not in f or "at_command" not in f:
                    raise ScenarioError(
                        f"{where}: run_fails needs 'run' (which robot run, from 1) and 'at_command'"
                    )
                robot.append(
                    RobotFault(kind, _count(f, "run", 1, where), _count(f, "at_command", 0, where))
                )
                continue
            if at is None:
                raise ScenarioError(f"{where}: {kind} needs 'at'")
            robot.append(RobotFault(kind, None, None, at, dur))
        elif dev == OPERATOR:
            if kind not in _OPERATOR_KEYS:
                raise ScenarioError(
                    f"{where}: operator faults are no_answer, recovery_choice, qc_value; not {kind!r}"
                )
            _check_keys(f, _OPERATOR_KEYS[kind], where)
            if kind in ("no_answer", "recovery_choice"):
                # The script holds one absence and one choice: a second would silently replace the first.
                if kind in seen:
                    raise ScenarioError(f"{where}: only one operator {kind} entry per scenario")
                seen.add(kind)
            if kind == "no_answer":
                dur = _duration(f, where)
                if "at" not in f:
                    if dur is not None:
                        raise ScenarioError(
                            f"{where}: no_answer with a 'duration' needs 'at' (when it starts)"
                        )
                    # Absent for the whole run: an aware minimum, as it is compared with the
                    # clock's aware UTC times.
                    script.absent_from = utc(datetime.min)
                else:
                    script.absent_from = _when(f["at"], where, run)
                    if dur is not None:
                        script.absent_until = script.absent_from + timedelta(seconds=dur)
            elif kind == "recovery_choice":
                if f.get("choice") not in ("retry", "skip", "hold", "done"):
                    raise ScenarioError(f"{where}: choice must be retry, skip, hold or done")
                script.recovery_choice = f["choice"]
            else:
                value = f.get("value")
                if (
                    not isinstance(f.get("measure"), str)
                    or isinstance(value, bool)
                    or not isinstance(value, int | float)
                ):
                    raise ScenarioError(
                        f"{where}: qc_value needs 'measure' (a QC measure's name) and 'value' (a number)"
                    )
                script.qc_values[f["measure"]] = float(value)
        elif dev == ARM:
            if kind not in ARM_FAULT_KEYS:
                raise ScenarioError(
                    f"{where}: arm faults are {', '.join(ARM_FAULT_KEYS)}; not {kind!r}"
                )
            _check_keys(f, ARM_FAULT_KEYS[kind], where)
            if "at" not in f:
                raise ScenarioError(f"{where}: {kind} needs 'at'")
            try:
                at = _when(f["at"], where, run)
                arm.append(arm_fault(f, at, _duration(f, where), ARM_STATIONS))
            except ValueError as exc:
                raise ScenarioError(f"{where}: {exc}") from None
        else:
            raise ScenarioError(
                f"{where}: unknown device {dev!r} (the simulated workcell has {ROBOT}, "
                f"{INCUBATOR}, {ARM}, {OPERATOR})"
            )
    return Scenario(inc, robot, script, str(path), arm, expect)


def simulated_robot(
    clock: Clock,
    analysis: AnalysisService,
    log_dir: Path,
    robot: RobotName = "OT-2",
    name: str = ROBOT,
    instruments: InstrumentConfig | None = None,
) -> RobotSimulator:
    """The simulated workcell's robot (``ot2-sim``), logging to ``log_dir``: an analysis
    is pending for 5 s on the clock and, when a reply needs it, waited for. Deterministic in
    virtual time; at any pace it takes the same clock time however long opentrons takes in
    real time; and a protocol uploaded ahead of its job (OpentronsLiquidHandler.prepare) is
    analysed while the run goes on. ``instruments``: its pipette per mount (None: those
    labctl's protocols load, see opentrons_instruments.DEFAULT_INSTRUMENTS)."""
    return RobotSimulator(
        clock,
        robot=robot,
        analysis=analysis,
        analysis_delay_s=5.0,
        analysis_overlap=True,
        name=name,
        instruments=instruments,
        action_log=log_dir / ("robot_actions.jsonl" if name == ROBOT else f"{name}_actions.jsonl"),
    )


class _TransferHands(PlateHands):
    """The operator's hands on the incubators' transfer stations (name -> simulator)."""

    def __init__(self, incubators: dict[str, CytomatSim | LiconicSim]) -> None:
        self.incubators = incubators

    def take(self, plate: str, place: str) -> None:
        sim = self.incubators.get(place.removesuffix("/transfer"))
        if sim is not None and sim.transfer_station is not None:
            sim.take_from_transfer_station()

    def put(self, plate: str, place: str) -> None:
        sim = self.incubators.get(place.removesuffix("/transfer"))
        if sim is not None and sim.transfer_station is None:
            sim.place_on_transfer_station(plate)


def hypoxic_climate(climates: Iterable[Climate]) -> Climate | None:
    """The climate of the hypoxic incubator a workcell needs for ``climates`` (the first
    that asks for an O2 level: no serial protocol sets O2, so it is held by an incubator of
    its own), or None when none asks for one."""
    return next((c for c in climates if c[2] is not None), None)


class SimulatedWorkcell:
    """Start the simulators for ``plates`` plates; ``devices`` holds the ``sim-*`` ones.

    Use as a context manager (or call ``stop()``): it owns a server thread and a pty.
    """

    def __init__(
        self,
        clock: Clock,
        store: Store | None,
        plates: list[str],
        log_dir: Path,
        *,
        scenario: Scenario | None = None,
        robot: RobotName = "OT-2",
        timezone: str = "UTC",
        analysis: AnalysisService | None = None,
        arm: bool = True,
        robots: int = 1,
        climates: Sequence[Climate] = (),
        start: Climate = AMBIENT,
        batch: int = 1,
        instruments: InstrumentConfig | None = None,
    ) -> None:
        """``climates``: those the run asks for (a hypoxic LiCONiC, ``inc-hyp``, joins the
        Cytomat when one asks for O2); ``start``: the climate the plates are seeded in;
        ``batch``: plates each robot feeds in one run (its ``batch`` setting);
        ``instruments``: every robot's pipette per mount (None: the robot's default)."""
        if not 1 <= batch <= MAX_BATCH:
            raise ScenarioError(f"batch must be 1 to {MAX_BATCH}, not {batch}")
        self.batch = batch
        self.clock = clock
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.scenario = scenario or Scenario([], [], OperatorScript())
        self.timezone = timezone
        self.plates = list(plates)
        if robot != "Flex" and any(f.kind == "door_open" for f in self.scenario.robot):
            # An OT-2 has no door sensor the robot-server reports: the fault would silently do nothing.
            raise ScenarioError(
                f"{self.scenario.source or 'scenario'}: {ROBOT} door_open needs a Flex; "
                f"the simulated robot is an {robot}"
            )
        # One analysis service for the program (default): its caches outlive this workcell.
        self.analysis = analysis if analysis is not None else default_analysis()
        if not 1 <= robots <= MAX_ROBOTS:
            raise ScenarioError(f"robots must be 1 to {MAX_ROBOTS}, not {robots}")
        if robots > 1 and not arm:
            raise ScenarioError("several robots need the arm (not --no-arm)")
        self.robot = simulated_robot(
            clock, self.analysis, self.log_dir, robot, instruments=instruments
        )
        # Further robots share the analysis service; faults act on the first only.
        self.more_robots = [
            simulated_robot(clock, self.analysis, self.log_dir, robot, robot_name(k), instruments)
            for k in range(1, robots)
        ]
        self.stations = arm_stations(robots, batch)
        self.hypoxic_climate = hypoxic_climate(climates)
        seeded_hypoxic = self.hypoxic_climate is not None and same_climate(
            start, self.hypoxic_climate
        )
        self.incubator = CytomatSim(
            clock,
            CytomatConfig(slots=max(10, len(plates) + 2), require_init=False),
            name=INCUBATOR,
            plates={} if seeded_hypoxic else {i + 1: p for i, p in enumerate(plates)},
            faults=self.scenario.incubator,
            action_log=self.log_dir / "incubator_actions.jsonl",
        )
        self.link = PtyLink(self.incubator)
        self.hypoxic: LiconicSim | None = None
        self.hypoxic_link: PtyLink | None = None
        if self.hypoxic_climate is not None:
            t, co2, o2 = self.hypoxic_climate
            self.hypoxic = LiconicSim(
                clock,
                LiconicConfig(
                    cassettes=1,
                    levels=max(10, len(plates) + 2),
                    climate=ClimateConfig(temperature=t, co2=co2, o2=o2, humidity=90.0),
                ),
                name=HYPOXIC,
                plates={(1, i + 1): p for i, p in enumerate(plates)} if seeded_hypoxic else {},
                action_log=self.log_dir / "hypoxic_actions.jsonl",
            )
            self.hypoxic_link = PtyLink(self.hypoxic)
            self.stations[f"{HYPOXIC}/transfer"] = len(self.stations) + 1
        # The plate mover: the arm picks the plate the incubator put on its transfer
        # station (one physical place both see) and carries it to the deck and back.
        self.arm: PF400Simulator | None = None
        if arm:
            self.arm = PF400Simulator(
                clock,
                PF400Config(stations=len(self.stations)),
                name=ARM,
                linked={
                    self.stations[f"{inc.name}/transfer"]: TransferSpot(inc)
                    for inc in self.incubators
                },
                action_log=self.log_dir / "arm_actions.jsonl",
            )
        elif self.scenario.arm:
            raise ScenarioError(
                f"{self.scenario.source or 'scenario'}: arm faults need the arm (not --no-arm)"
            )
        self.arm_faults = (
            None
            if self.arm is None
            else ArmFaults(self.arm, self.scenario.arm, self.stations, clock, store)
        )
        self._speculated = False
        self.devices: dict[str, Any] = {}
        if store is not None:
            self.devices[OPERATOR] = SimulatedOperator(
                store,
                clock,
                _TransferHands({inc.name: inc for inc in self.incubators}),
                name=OPERATOR,
                script=self.scenario.operator,
                action_log=self.log_dir / "operator_actions.jsonl",
                look=None if self.arm_faults is None else self.arm_faults.look,
            )
        self.robot.failing_runs = {
            f.run: f.at_command
            for f in self.scenario.robot
            if f.kind == "run_fails" and f.run and f.at_command is not None
        }

    def start(self) -> SimulatedWorkcell:
        # The robot's opentrons starts importing in its own processes while the run is
        # being set up, and analyses the next values ahead of need on the other core.
        self.analysis.start()
        self._speculated = self.analysis.speculating
        self.analysis.speculate(True)
        for r in self.robots:
            r.start()
        self.link.start()
        if self.hypoxic_link is not None:
            self.hypoxic_link.start()
        if self.arm is not None:
            self.arm.start()
            if isinstance(self.clock, VirtualClock):
                # The driver's worker sends the arm lines in real time; virtual time
                # must wait for them and stop at each motion's end (VirtualClock gates).
                self.clock.add_gate(self.arm_faults or self.arm)
        return self

    def stop(self) -> None:
        if self.arm is not None:
            if isinstance(self.clock, VirtualClock):
                self.clock.remove_gate(self.arm_faults or self.arm)
            self.arm.stop()
        self.link.stop()
        if self.hypoxic_link is not None:
            self.hypoxic_link.stop()
        for r in self.robots:
            r.stop()
        self.analysis.speculate(self._speculated)  # as it was before this workcell started

    def __enter__(self) -> SimulatedWorkcell:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def workcell_text(self) -> str:
        """The workcell file pointing at the running simulators (DEVICES.md section 10)."""
        wc = {
            "name": "simulated",
            "timezone": self.timezone,
            "devices": {
                **{
                    r.name: {
                        "driver": "opentrons",
                        "url": r.url,
                        "robot": self.robot_model,
                        "deck": {"plate": list(deck_plates(self.batch))},
                        "check": False,  # the simulated robot analyses every protocol itself
                        **({"batch": self.batch} if self.batch > 1 else {}),
                    }
                    for r in self.robots
                },
                INCUBATOR: {
                    "driver": "cytomat",
                    "port": self.link.port,
                    "slots": self.incubator.config.slots,
                    "setpoints": {"temperature": "37 degC", "co2": "5%"},
                },
                **self._hypoxic_entry(),
                **self._arm_entry(),
                OPERATOR: {"driver": "sim-operator"},
            },
            "operators": {"hours": {"mon-sun": "00:00-24:00"}},
        }
        return (
            "# Written by labctl: the simulated workcell (valid while it runs)\n"
            + yaml.safe_dump(wc, sort_keys=False)
        )

    def _hypoxic_entry(self) -> dict[str, Any]:
        if self.hypoxic is None or self.hypoxic_link is None or self.hypoxic_climate is None:
            return {}
        t, co2, o2 = self.hypoxic_climate
        return {
            HYPOXIC: {
                "driver": "liconic",
                "port": self.hypoxic_link.port,
                "levels": self.hypoxic.config.levels,
                "n2_register_is_o2": True,  # this (simulated) unit shows O2 in DM985
                "setpoints": {"temperature": f"{t:g} degC", "co2": f"{co2:g}%", "o2": f"{o2:g}%"},
            }
        }

    def _arm_entry(self) -> dict[str, Any]:
        if self.arm is None:
            return {}
        return arm_entry(self.arm.port, self.arm.status_port, stations=dict(self.stations))

    def tick(self, run_ids: list[int]) -> None:
        """Apply time-based faults and the scripted operator's decisions (each engine step)."""
        now = self.clock.now()
        offline = door = False
        for f in self.scenario.robot:
            if f.at is None:
                continue
            active = now >= f.at and (
                f.duration_s is None or now < f.at + timedelta(seconds=f.duration_s)
            )
            offline |= f.kind == "offline" and active
            door |= f.kind == "door_open" and active
        changes: dict[str, Any] = {}
        if self.robot.faults.offline != offline:
            changes["offline"] = offline
        # The door closes again when its window ends (the robot then waits paused for play).
        if self.robot_model == "Flex" and self.robot.faults.door_open != door:
            changes["door_open"] = door
        if changes:
            self.robot.set_faults(**changes)
        if self.arm_faults is not None:
            self.arm_faults.apply(now)
        op = self.devices.get(OPERATOR)
        if isinstance(op, SimulatedOperator):
            op.answer_recoveries(run_ids)

    # ---- what a dry run may sleep through (labctl.devices.QuietWatch) -----------------------

    def quiet(self, since: datetime, now: datetime) -> bool:
        """Whether no simulated device can have changed what an alarm check reads in
        ``[since, now]``, and the scripted operator has no decision to make (the engine's
        alarm-check steps are also when it decides)."""
        if not all(inc.quiet_since(since) for inc in self.incubators):
            return False
        if not all(r.quiet_since(since) for r in self.robots):
            return False
        if self.arm is not None and not self.arm.quiet_since(since):
            return False
        for at, end in self._fault_windows():
            if at <= now and (end is None or end >= since):
                return False
        return not self._operator_deciding()

    def next_change(self, now: datetime) -> datetime | None:
        """The earliest moment after ``now`` something could change without a command:
        ``now`` while anything is under way, a fault window's edge, or None."""
        if self._operator_deciding():
            return now
        arm = self.arm.next_change() if self.arm is not None else None
        robots = [r.next_change() for r in self.robots]
        incubators = [inc.next_change() for inc in self.incubators]
        times = [t for t in (*robots, *incubators, arm) if t]
        for at, end in self._fault_windows():
            times.extend(t for t in (at, end) if t is not None and t > now)
        return min(times, default=None)

    def _fault_windows(self) -> list[tuple[datetime, datetime | None]]:
        """(start, end or None for never) of each timed robot fault (offline, door) and
        arm fault."""
        arm = self.arm_faults.windows() if self.arm_faults is not None else []
        return arm + [
            (f.at, None if f.duration_s is None else f.at + timedelta(seconds=f.duration_s))
            for f in self.scenario.robot
            if f.at is not None
        ]

    def next_decision(self, now: datetime) -> datetime | None:
        """When the scripted operator will next decide a recovery prompt (None: nothing)."""
        op = self.devices.get(OPERATOR)
        return op.next_decision(now) if isinstance(op, SimulatedOperator) else None

    def _operator_deciding(self) -> bool:
        """Whether a recovery or interruption prompt waits for the scripted operator."""
        op = self.devices.get(OPERATOR)
        return isinstance(op, SimulatedOperator) and op.has_decisions_pending()

    @property
    def incubators(self) -> list[CytomatSim | LiconicSim]:
        """Every incubator of the workcell: the Cytomat, then the hypoxic LiCONiC if any."""
        return [self.incubator] + ([self.hypoxic] if self.hypoxic is not None else [])

    @property
    def robots(self) -> list[RobotSimulator]:
        """Every robot of the workcell, the first (``ot2-sim``, where faults act) first."""
        return [self.robot, *self.more_robots]

    @property
    def robot_model(self) -> str:
        """``OT-2`` or ``Flex``: the model the robot simulator plays."""
        return str(self.robot.robot)


def arm_entry(port: int, status_port: int, **extra: Any) -> dict[str, Any]:
    """The workcell file's entry for the simulated arm on 127.0.0.1 (``extra`` settings)."""
    settings = {"driver": "pf400", "host": "127.0.0.1", "port": port}
    return {ARM: {**settings, "status_port": status_port, "stations": dict(ARM_STATIONS), **extra}}


def read_actions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
