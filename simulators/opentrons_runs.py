"""The state of the simulated robot's runs, and the faults that can be injected into it.

A run is the protocol engine of robot-server for one ``POST /runs``: its queue status, its
commands (each one an analysed command with this run's ids), its result and errors. The run
engine (:mod:`labctl.simulators.opentrons_run_engine`) changes it; the robot model keeps it.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from labctl.simulators.opentrons_analysis_data import ProtocolAnalysis
from labctl.simulators.opentrons_instruments import LoadFailure
from labctl.simulators.opentrons_refusals import Refusal, Refused
from labctl.simulators.opentrons_wire import RobotName, iso, new_id, replace_ids

#: Estimated duration of one command on a real robot, in seconds, before ``time_scale``.
#: ``waitForDuration`` uses its ``seconds`` parameter; unknown types take ``DEFAULT_DURATION_S``.
COMMAND_DURATIONS_S: Mapping[str, float] = {
    "home": 8.0,
    "comment": 0.05,
    "loadLabware": 0.1,
    "loadPipette": 0.1,
    "loadModule": 0.1,
    "loadLiquid": 0.1,
    "loadLid": 0.1,
    "loadLidStack": 0.1,
    "configureForVolume": 0.1,
    "configureNozzleLayout": 0.1,
    "setRailLights": 0.1,
    "pickUpTip": 5.0,
    "dropTip": 5.0,
    "dropTipInPlace": 3.0,
    "aspirate": 3.0,
    "aspirateInPlace": 2.0,
    "dispense": 3.0,
    "dispenseInPlace": 2.0,
    "blowout": 2.0,
    "blowOutInPlace": 1.0,
    "touchTip": 3.0,
    "airGapInPlace": 1.0,
    "prepareToAspirate": 1.0,
    "moveToWell": 2.0,
    "moveToCoordinates": 2.0,
    "moveRelative": 1.0,
    "moveToAddressableArea": 2.0,
    "moveToAddressableAreaForDropTip": 2.0,
    "moveLabware": 15.0,
    "liquidProbe": 5.0,
    "tryLiquidProbe": 5.0,
    "waitForResume": 0.0,
}
DEFAULT_DURATION_S = 1.0

#: Commands that physically touch liquid, tips or plates: each one that completes is logged.
PHYSICAL_COMMANDS = frozenset(
    {
        "aspirate",
        "aspirateInPlace",
        "dispense",
        "dispenseInPlace",
        "blowout",
        "blowOutInPlace",
        "airGapInPlace",
        "touchTip",
        "pickUpTip",
        "dropTip",
        "dropTipInPlace",
        "moveLabware",
        "liquidProbe",
        "tryLiquidProbe",
    }
)

ACTION_TYPES = (
    "play",
    "pause",
    "stop",
    "resume-from-recovery",
    "resume-from-recovery-assuming-false-positive",
)


@dataclasses.dataclass(frozen=True)
class Faults:
    """Injected misbehaviour; change it at runtime with :meth:`RobotSimulator.set_faults`.

    - ``offline``: every connection is closed without a reply.
    - ``fail_at_command``: the run command with this 0-based index fails (undefined error
      ``fail_error_type``/``fail_error_code``/``fail_error_detail``) and the run fails.
    - ``awaiting_recovery_at_command`` (Flex): that command fails with a recoverable error and
      the run waits in ``awaiting-recovery`` for ``resume-from-recovery`` or ``stop``.
    - ``door_open`` (Flex): a running run becomes ``blocked-by-open-door``; ``play`` is refused
      while blocked. Closing the door leaves the run ``paused`` until ``play``.
    - ``estop`` (Flex): ``"not-attached"`` / ``"engaged"`` / ``"not-acknowledged"`` answer 403 on
      ``POST /runs`` and run actions; ``"engaged"`` also fails an active run at once.
    - ``analysis_extra_delay_s``: seconds added to the analysis time of new uploads (slow robot).
    - ``analysis_not_ok``: new analyses report ``result: "not-ok"`` with one injected error.
    """

    offline: bool = False
    fail_at_command: int | None = None
    fail_error_type: str = "TipNotAttachedError"
    fail_error_code: str = "3005"
    fail_error_detail: str = "Pipette should have a tip attached, but does not."
    awaiting_recovery_at_command: int | None = None
    door_open: bool = False
    estop: Literal["not-attached", "engaged", "not-acknowledged"] | None = None
    analysis_extra_delay_s: float = 0.0
    analysis_not_ok: bool = False


#: Faults only a Flex has (an OT-2 has no recovery, door sensor or estop it reports).
FLEX_ONLY_FAULTS = ("awaiting_recovery_at_command", "door_open", "estop")
ESTOP_STATES = ("not-attached", "engaged", "not-acknowledged")


def checked_faults(robot: RobotName, faults: Faults | Mapping[str, Any] | None) -> Faults:
    """``faults`` (None: none; a mapping: Faults' fields) checked for ``robot``
    (ValueError if a fault does not exist on it)."""
    if faults is None:
        faults = Faults()
    elif not isinstance(faults, Faults):
        faults = Faults(**dict(faults))
    if robot == "OT-2":
        default = Faults()
        for name in FLEX_ONLY_FAULTS:
            if getattr(faults, name) != getattr(default, name):
                raise ValueError(f"fault {name!r} exists only on a Flex")
    if faults.estop is not None and faults.estop not in ESTOP_STATES:
        raise ValueError(f"unknown estop state {faults.estop!r}")
    return faults


class QueueStatus(enum.Enum):
    """Protocol engine queue status (opentrons ``QueueStatus``)."""

    SETUP = "setup"
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING_RECOVERY = "awaiting-recovery"
    AWAITING_RECOVERY_PAUSED = "awaiting-recovery-paused"


class RunResult(enum.Enum):
    """How a run ended (or is ending: see :attr:`Run.status`)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


TERMINAL_STATUSES = frozenset({"succeeded", "failed", "stopped"})


@dataclasses.dataclass
class Command:
    """One command of a run; ``template`` is the analysed command with this run's ids."""

    index: int
    id: str
    template: Mapping[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    status: str = "queued"
    error: dict[str, Any] | None = None
    remaining_s: float = 0.0  # simulated seconds of work left
    resumed_at: datetime | None = None  # when it last started progressing; None = frozen


@dataclasses.dataclass
class Run:
    """One run: what it was created from, and its state (changed by the run engine only)."""

    id: str
    protocol_id: str | None
    created_at: datetime
    templates: list[dict[str, Any]]
    analysis_errors: list[dict[str, Any]]
    labware: list[dict[str, Any]]
    pipettes: list[dict[str, Any]]
    modules: list[dict[str, Any]]
    liquids: list[dict[str, Any]]
    loaded_by_command: set[str]
    labware_offsets: list[dict[str, Any]]
    run_time_parameters: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    current: bool = True
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    commands: list[Command] = dataclasses.field(default_factory=list)
    queue: QueueStatus = QueueStatus.SETUP
    door_blocking: bool = False
    result: RunResult | None = None
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    started_at: datetime | None = None
    finish_at: datetime | None = None  # when the post-run home/drop-tip ends
    completed_at: datetime | None = None
    entered_recovery: bool = False
    recovery_target: int | None = None
    loaded: set[str] = dataclasses.field(default_factory=set)
    pipette_location: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    id_map: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def inflight(self) -> Command | None:
        last = self.commands[-1] if self.commands else None
        return last if last is not None and last.status == "running" else None

    @property
    def status(self) -> str:
        """EngineStatus, derived like opentrons ``CommandView.get_status``."""
        if self.result is not None:
            if self.completed_at is not None:
                return self.result.value
            return "stop-requested" if self.result is RunResult.STOPPED else "finishing"
        if self.queue is QueueStatus.RUNNING:
            return "running"
        if self.queue is QueueStatus.PAUSED:
            return "blocked-by-open-door" if self.door_blocking else "paused"
        if self.queue is QueueStatus.AWAITING_RECOVERY_PAUSED:
            if self.door_blocking:
                return "awaiting-recovery-blocked-by-open-door"
            return "awaiting-recovery-paused"
        if self.queue is QueueStatus.AWAITING_RECOVERY:
            return "awaiting-recovery"
        return "idle"

    @property
    def okay_to_clear(self) -> bool:
        """A new run may replace this one (idle, or fully finished)."""
        return self.completed_at is not None or self.status == "idle"


_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_run(
    protocol_id: str | None,
    analysis: ProtocolAnalysis | None,
    labware_offsets: Sequence[object],
    now: datetime,
) -> Run:
    """A new run of ``analysis`` (None: a run without a protocol), created at ``now``."""
    id_map: dict[str, str] = {}
    loaded_by_command: set[str] = set()
    if analysis is not None:
        # Each run loads its own labware and pipettes: new ids, same keys (as recorded).
        for group in (analysis.labware, analysis.pipettes, analysis.modules):
            for item in group:
                if _UUID_RE.match(str(item.get("id", ""))):
                    id_map[item["id"]] = new_id()
        for cmd in analysis.commands:
            result = cmd.get("result") or {}
            for key in ("labwareId", "pipetteId", "moduleId"):
                if key in result and str(cmd.get("commandType", "")).startswith("load"):
                    loaded_by_command.add(id_map.get(result[key], result[key]))
    templates = [replace_ids(c, id_map) for c in analysis.commands] if analysis else []
    offsets = []
    for offset in labware_offsets:
        if isinstance(offset, dict):
            offsets.append({"id": new_id(), "createdAt": iso(now), **offset})
    return Run(
        id=new_id(),
        protocol_id=protocol_id,
        created_at=now,
        templates=templates,
        analysis_errors=[replace_ids(e, id_map) for e in analysis.errors] if analysis else [],
        labware=[replace_ids(x, id_map) for x in analysis.labware] if analysis else [],
        pipettes=[replace_ids(x, id_map) for x in analysis.pipettes] if analysis else [],
        modules=[replace_ids(x, id_map) for x in analysis.modules] if analysis else [],
        liquids=[dict(x) for x in analysis.liquids] if analysis else [],
        loaded_by_command=loaded_by_command,
        labware_offsets=offsets,
        run_time_parameters=[dict(p) for p in analysis.run_time_parameters] if analysis else [],
        id_map=id_map,
    )


def fail_at_load(run: Run, failure: LoadFailure) -> None:
    """Make ``run`` fail at the ``loadPipette`` of ``failure`` as the analysis makes a
    command fail: that command fails with its error, the protocol raises there (nothing
    after it is issued) and the run fails with the run error."""
    template = run.templates[failure.index]
    failed = {k: v for k, v in template.items() if k != "result"}
    failed["status"] = "failed"
    failed["error"] = failure.command_error
    run.templates = [*run.templates[: failure.index], failed]
    run.analysis_errors = [failure.run_error]


class RunStore:
    """The robot's runs, oldest first, and which one is current (robot-server's run store,
    with its run auto-deleter: at most ``maximum`` runs, the oldest deleted first, whatever
    their protocol). Not thread-safe: the robot calls it with its lock held."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.by_id: dict[str, Run] = {}
        self.current_id: str | None = None

    def current(self) -> Run | None:
        return self.by_id.get(self.current_id) if self.current_id else None

    def get(self, run_id: str) -> Run:
        """The run (Refusal RUN_NOT_FOUND if there is none)."""
        run = self.by_id.get(run_id)
        if run is None:
            raise Refusal(Refused.RUN_NOT_FOUND, run_id)
        return run

    def add(self, run: Run) -> None:
        """Store a new run as the current one, first deleting the oldest to make room."""
        excess = len(self.by_id) - (self.maximum - 1)
        for run_id in list(self.by_id)[: max(0, excess)]:
            del self.by_id[run_id]
        self.by_id[run.id] = run
        self.current_id = run.id

    def protocol_ids(self) -> set[str | None]:
        """The protocols runs link to."""
        return {r.protocol_id for r in self.by_id.values()}
