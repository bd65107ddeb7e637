"""The simulated robot's protocol engine: how a run's state changes, all at given times.

Nothing here reads a clock or sleeps: the robot model passes ``now`` (an action, a fault
change) and :meth:`RunEngine.advance` plays a run forward to a moment. Each analysed command
takes an estimated duration (robot seconds per ``commandType`` times ``time_scale``), commands
start and finish one after another, and paused time does not count. Completed physical
commands are written to the action log exactly once, stamped with their simulated completion
time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from labctl.simulators.opentrons_refusals import ActionNotAllowed
from labctl.simulators.opentrons_runs import (
    DEFAULT_DURATION_S,
    PHYSICAL_COMMANDS,
    Command,
    Faults,
    QueueStatus,
    Run,
    RunResult,
)
from labctl.simulators.opentrons_wire import (
    RobotName,
    error_occurrence,
    iso,
    new_id,
    protocol_failure,
)

# Recoverable ("defined") errors a Flex raises per command type: errorType, errorCode, detail.
_DEFINED_ERRORS: Mapping[str, tuple[str, str, str]] = {
    "pickUpTip": ("tipPhysicallyMissing", "3003", "No Tip Detected"),
    "aspirate": ("overpressure", "3006", "Pipette Overpressure"),
    "aspirateInPlace": ("overpressure", "3006", "Pipette Overpressure"),
    "dispense": ("overpressure", "3006", "Pipette Overpressure"),
    "dispenseInPlace": ("overpressure", "3006", "Pipette Overpressure"),
    "dropTip": ("tipPhysicallyAttached", "3004", "Tip Drop Failed"),
    "dropTipInPlace": ("tipPhysicallyAttached", "3004", "Tip Drop Failed"),
    "liquidProbe": ("liquidNotFound", "2017", "Liquid Not Found"),
}
_DEFAULT_DEFINED_ERROR = ("stallOrCollision", "2003", "Stall or Collision Detected")


class RunEngine:
    """The protocol engine of one simulated robot: run state changes, all at given times.

    Nothing here reads a clock: callers pass ``now`` (an action, a fault change) and
    :meth:`advance` plays a run forward to a moment. Durations are robot seconds times
    ``time_scale``; ``faults`` returns the simulator's current faults; ``emit`` writes the
    action log.
    """

    def __init__(
        self,
        robot: RobotName,
        *,
        time_scale: float,
        finishing_s: float,
        stop_s: float,
        durations_s: Mapping[str, float],
        faults: Callable[[], Faults],
        emit: Callable[..., None],
    ) -> None:
        self.robot = robot
        self.time_scale = time_scale
        self.finishing_s = finishing_s
        self.stop_s = stop_s
        self.durations_s = dict(durations_s)
        self.faults = faults
        self.emit = emit

    def apply_action(self, run: Run, action_type: str, now: datetime) -> None:
        """Validate (like ``validate_action_allowed``) and apply one action at ``now``."""
        if run.result is not None:
            raise ActionNotAllowed("RunStoppedError", "The run has already stopped.")
        if action_type == "play":
            if run.status in ("blocked-by-open-door", "awaiting-recovery-blocked-by-open-door"):
                raise ActionNotAllowed(
                    "RobotDoorOpenError", "Front door or top window is currently open."
                )
            self._play(run, now)
        elif action_type == "pause":
            if run.queue is not QueueStatus.RUNNING:
                raise ActionNotAllowed(
                    "PauseNotAllowedError", "Cannot pause a run that is not running."
                )
            self._freeze(run, now)
            run.queue = QueueStatus.PAUSED
        elif action_type == "stop":
            self._stop(run, now)
        else:  # resume-from-recovery[-assuming-false-positive]
            if run.queue is not QueueStatus.AWAITING_RECOVERY:
                raise ActionNotAllowed(
                    "ResumeFromRecoveryNotAllowedError",
                    "Cannot resume from recovery if the run is not in recovery mode.",
                )
            target = run.recovery_target
            run.recovery_target = None
            run.queue = QueueStatus.RUNNING
            if action_type.endswith("false-positive") and target is not None:
                # The failed command did happen after all: it is a physical fact now.
                self._log_physical(run, run.commands[target], now, false_positive=True)
            self._issue_next(run, now)

    def _play(self, run: Run, now: datetime) -> None:
        if run.queue is QueueStatus.SETUP:
            run.started_at = now
            run.queue = QueueStatus.PAUSED if run.door_blocking else QueueStatus.RUNNING
            self._issue_next(run, now)
        elif run.queue is QueueStatus.PAUSED:
            run.queue = QueueStatus.RUNNING
            self._resume(run, now)
        elif run.queue is QueueStatus.AWAITING_RECOVERY_PAUSED:
            run.queue = QueueStatus.AWAITING_RECOVERY
        # RUNNING / AWAITING_RECOVERY: play is a no-op (still recorded as an action)

    def _stop(self, run: Run, now: datetime) -> None:
        if run.queue is QueueStatus.SETUP:
            run.result = RunResult.STOPPED
            run.finish_at = now  # nothing to home: an un-started run stops at once
            return
        inflight = run.inflight
        if inflight is not None:
            inflight.status = "failed"
            inflight.completed_at = now
            inflight.error = error_occurrence("RunStoppedError", "4000", "Run was cancelled", now)
        run.recovery_target = None
        run.queue = QueueStatus.PAUSED
        run.result = RunResult.STOPPED
        run.finish_at = now + timedelta(seconds=self.stop_s * self.time_scale)

    def door_changed(self, run: Run, is_open: bool, now: datetime) -> None:
        if run.result is not None:
            return
        run.door_blocking = is_open
        if is_open:
            if run.queue is QueueStatus.RUNNING:
                self._freeze(run, now)
                run.queue = QueueStatus.PAUSED
            elif run.queue is QueueStatus.AWAITING_RECOVERY:
                run.queue = QueueStatus.AWAITING_RECOVERY_PAUSED
        self.emit("door", now, runId=run.id, open=is_open, status=run.status)

    def estop_engaged(self, run: Run, now: datetime) -> None:
        if run.result is not None or run.queue is QueueStatus.SETUP:
            return
        error = error_occurrence("EStopActivatedError", "3008", "E-stop activated.", now)
        inflight = run.inflight
        if inflight is not None:
            inflight.status = "failed"
            inflight.completed_at = now
            inflight.error = dict(error, id=new_id())
        run.errors = [error]
        run.queue = QueueStatus.PAUSED
        run.result = RunResult.FAILED
        run.finish_at = now + timedelta(seconds=self.stop_s * self.time_scale)

    def _duration_s(self, template: Mapping[str, Any]) -> float:
        command_type = str(template.get("commandType"))
        if command_type == "waitForDuration":
            base = float((template.get("params") or {}).get("seconds", 0.0))
        else:
            base = self.durations_s.get(command_type, DEFAULT_DURATION_S)
        return max(0.0, base) * self.time_scale

    def _freeze(self, run: Run, now: datetime) -> None:
        """Pause the in-flight command mid-way (the hardware pauses; paused time is not work)."""
        cmd = run.inflight
        if cmd is not None and cmd.resumed_at is not None:
            cmd.remaining_s = max(0.0, cmd.remaining_s - (now - cmd.resumed_at).total_seconds())
            cmd.resumed_at = None

    def _resume(self, run: Run, now: datetime) -> None:
        """Continue after a pause: the frozen command goes on, or the queued one starts."""
        cmd = run.inflight
        if cmd is not None and cmd.resumed_at is None:
            cmd.resumed_at = now
        elif run.commands and run.commands[-1].status == "queued":
            self._start(run, run.commands[-1], now)

    def _issue_next(self, run: Run, at: datetime) -> None:
        """The protocol issues its next command at ``at`` (or its run function returns)."""
        index = len(run.commands)
        if index < len(run.templates):
            template = run.templates[index]
            cmd = Command(index=index, id=new_id(), template=template, created_at=at)
            run.commands.append(cmd)
            if run.queue is QueueStatus.RUNNING:
                self._start(run, cmd, at)
            return
        if run.protocol_id is None:
            return  # a run without a protocol keeps running until stopped
        if run.analysis_errors:
            # The protocol raised after its last command (not a command failure).
            run.errors = [self._rebadge_error(run.analysis_errors[0], at, {})]
            run.result = RunResult.FAILED
        else:
            run.result = RunResult.SUCCEEDED
        run.queue = QueueStatus.PAUSED
        run.finish_at = at + timedelta(seconds=self.finishing_s * self.time_scale)

    def _start(self, run: Run, cmd: Command, at: datetime) -> None:
        cmd.status = "running"
        cmd.started_at = at
        cmd.remaining_s = self._duration_s(cmd.template)
        cmd.resumed_at = at
        if cmd.template.get("commandType") == "waitForResume":
            # protocol.pause(): the engine pauses until someone plays.
            run.queue = QueueStatus.PAUSED
            cmd.resumed_at = None

    @staticmethod
    def _rebadge_error(
        error: Mapping[str, Any], at: datetime, ids: dict[str, str]
    ) -> dict[str, Any]:
        """Copy of an analysis error with fresh ids (shared ids stay shared) stamped ``at``."""

        def walk(e: Mapping[str, Any]) -> dict[str, Any]:
            out = dict(e)
            old = str(e.get("id"))
            out["id"] = ids.setdefault(old, new_id())
            out["createdAt"] = iso(at)
            out["wrappedErrors"] = [walk(w) for w in e.get("wrappedErrors", [])]
            return out

        return walk(error)

    def advance(self, run: Run, now: datetime) -> None:
        """Play the run forward to ``now``: finish due commands in order, start the next."""
        while True:
            if run.result is not None:
                if run.completed_at is None and run.finish_at is not None and run.finish_at <= now:
                    run.completed_at = run.finish_at
                    self.emit("run_finished", run.completed_at, runId=run.id, status=run.status)
                return
            cmd = run.inflight
            if cmd is None or cmd.resumed_at is None:
                return
            ends = cmd.resumed_at + timedelta(seconds=cmd.remaining_s)
            if ends > now:
                return
            cmd.remaining_s = 0.0
            cmd.resumed_at = None
            self._complete(run, cmd, ends)

    def _complete(self, run: Run, cmd: Command, at: datetime) -> None:
        faults = self.faults()
        template = cmd.template
        cmd.completed_at = at
        if self.robot == "Flex" and faults.awaiting_recovery_at_command == cmd.index:
            error_type, code, detail = _DEFINED_ERRORS.get(
                str(template.get("commandType")), _DEFAULT_DEFINED_ERROR
            )
            cmd.status = "failed"
            cmd.error = error_occurrence(error_type, code, detail, at, defined=True)
            paused = run.queue is QueueStatus.PAUSED or run.door_blocking
            run.queue = (
                QueueStatus.AWAITING_RECOVERY_PAUSED if paused else QueueStatus.AWAITING_RECOVERY
            )
            run.recovery_target = cmd.index
            run.entered_recovery = True
            return
        if faults.fail_at_command == cmd.index:
            cmd.status = "failed"
            cmd.error = error_occurrence(
                faults.fail_error_type, faults.fail_error_code, faults.fail_error_detail, at
            )
            self._fail_run(run, protocol_failure(cmd.error, at), at)
            return
        if template.get("status") == "failed":
            # The analysis saw this command fail (e.g. no tip): so does the run.
            ids: dict[str, str] = {}
            analysed = template.get("error") or {}
            cmd.error = self._rebadge_error(analysed, at, ids)
            cmd.status = "failed"
            if run.analysis_errors:
                run_error = self._rebadge_error(run.analysis_errors[0], at, ids)
            else:
                run_error = protocol_failure(cmd.error, at)
            self._fail_run(run, run_error, at)
            return
        cmd.status = "succeeded"
        result = template.get("result") or {}
        for key in ("labwareId", "pipetteId", "moduleId"):
            if key in result:
                run.loaded.add(str(result[key]))
        self._log_physical(run, cmd, at)
        self._issue_next(run, at)

    def _fail_run(self, run: Run, error: dict[str, Any], at: datetime) -> None:
        run.errors = [error]
        run.result = RunResult.FAILED
        run.queue = QueueStatus.PAUSED
        run.finish_at = at + timedelta(seconds=self.finishing_s * self.time_scale)

    def _log_physical(
        self, run: Run, cmd: Command, at: datetime, *, false_positive: bool = False
    ) -> None:
        """Track where each pipette is; log a completed physical command exactly once."""
        template = cmd.template
        command_type = str(template.get("commandType"))
        params: Mapping[str, Any] = template.get("params") or {}
        pipette_id = params.get("pipetteId")
        if pipette_id is not None:
            if "labwareId" in params:
                run.pipette_location[pipette_id] = {
                    "labwareId": params["labwareId"],
                    "well": params.get("wellName"),
                }
            elif "addressableAreaName" in params:
                run.pipette_location[pipette_id] = {
                    "addressableArea": params["addressableAreaName"]
                }
        if command_type not in PHYSICAL_COMMANDS:
            return
        entry: dict[str, Any] = {
            "runId": run.id,
            "protocolId": run.protocol_id,
            "index": cmd.index,
            "commandId": cmd.id,
            "commandKey": template.get("key"),
            "commandType": command_type,
        }
        if pipette_id is not None:
            entry["pipetteId"] = pipette_id
            pipette = next((p for p in run.pipettes if p.get("id") == pipette_id), None)
            if pipette is not None:
                entry["pipetteName"] = pipette.get("pipetteName")
                entry["mount"] = pipette.get("mount")
        location: Mapping[str, Any] = (
            {"labwareId": params["labwareId"], "well": params.get("wellName")}
            if "labwareId" in params and command_type != "moveLabware"
            else run.pipette_location.get(pipette_id, {})
            if pipette_id
            else {}
        )
        labware_id = location.get("labwareId")
        if labware_id is not None:
            entry["labwareId"] = labware_id
            labware = next((lw for lw in run.labware if lw.get("id") == labware_id), None)
            if labware is not None:
                entry["labware"] = labware.get("loadName")
                slot = (labware.get("location") or {}).get("slotName")
                if slot is not None:
                    entry["slot"] = slot
            if location.get("well") is not None:
                entry["well"] = location["well"]
        if location.get("addressableArea") is not None:
            entry["addressableArea"] = location["addressableArea"]
        if command_type == "moveLabware":
            entry["labwareId"] = params.get("labwareId")
            entry["newLocation"] = params.get("newLocation")
        if "volume" in params:
            entry["volume"] = params["volume"]
        if false_positive:
            entry["assumedFalsePositive"] = True
        self.emit("command", at, **entry)
