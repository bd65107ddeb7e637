"""An Opentrons OT-2 or Flex as labctl's :class:`~labctl.devices.LiquidHandler`.

``start_job`` generates the job's protocol (drivers/opentrons_protocol.py), checks it in the
local opentrons simulator, has it on the robot analysed ``ok`` with the job's run-time
parameter values (drivers/opentrons_uploads.py, which also uploads jobs ahead through
``prepare``), creates the run with the same values and plays it; the run id is the op id.
Identical liquid handling gives identical files whatever the tips, so the local check runs
once per distinct protocol. ``poll`` maps the run's status to an
:class:`~labctl.devices.OpStatus`; ``find_op`` finds, after a controller crash, the run made
from the job's file; ``abort`` stops the run; ``report`` says what the robot knows of a job.

The robot is asked before anything is started (labctl.devices: ``start_*`` is idempotent per
job key), from the runs of the job's protocol file (drivers/opentrons_jobruns.py): a run
under way or succeeded is answered with, never made again; one created but never played is
played; after a run that failed or was stopped a new one is made only when the engine says
the operator chose to retry (``params["attempt"]``: the retries asked for so far), as that
run may have moved liquid. So a store restored from an older copy cannot feed a plate twice.
A run the robot no longer knows (it was restarted or reset: 404 ``RunNotFound``) raises
OperationLost from ``poll``: whether it ran cannot be told, a person decides.

Pipettes (drivers/opentrons_instruments.py): before a protocol is generated (for a start or
an upload ahead) the robot is asked what is attached (``GET /instruments``, or the older
``GET /pipettes``; the reading is kept until the link fails, a run fails for a pipette, the
robot forgets a run or a person fitted pipettes) and each pipette the deck names is loaded
on the mount where it is. A job whose pipettes are not attached is refused before anything
is uploaded (PipettesNotFitted, a DeviceNeedsOperator naming what is attached and needed).

Tips and waste (drivers/opentrons_supplies.py): the handler tells each run where its tips
start and refuses, before anything is uploaded, a job the racks cannot serve ("refill
tips") or that would overfill the waste reservoir ("empty" it); :meth:`refilled` and
:meth:`emptied` record what the operator did. A job's tips are counted as used once its run
exists, whatever the run does next: a tip that may have been used is never offered again.

Only public methods of :class:`~labctl.drivers.opentrons_http.OpentronsClient` are used.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from labctl.devices import DeviceAlarm, NotKnown, OpState, OpStatus
from labctl.errors import DeviceError, DeviceFault, OperationLost

from .opentrons_http import OpentronsClient, RunPhase
from .opentrons_instruments import FITTED_MARK, PIPETTE_ERROR_CODES, AttachedInstruments
from .opentrons_jobruns import JobRun, JobRuns, describe, job_runs, read_run, short_id
from .opentrons_outcome import DOOR_STATUSES, run_outcome
from .opentrons_protocol import (
    DeckLayout,
    GeneratedProtocol,
    GenerationError,
    OutOfTips,
    Robot,
    check_locally,
    plan_protocol,
)
from .opentrons_supplies import Supplies
from .opentrons_uploads import ProtocolUploads, protocol_filename

__all__ = ["OpentronsLiquidHandler", "protocol_filename"]

log = logging.getLogger(__name__)

# Runs this handler saw fail, remembered for jobs started without an ``attempt`` (below).
_FAILED_SEEN_MAX = 512


class OpentronsLiquidHandler:
    """One Opentrons robot driven through its HTTP API.

    ``layout`` is its deck (from the workcell's ``deck`` setting) and ``robot`` its model.
    ``check`` runs each new protocol through the local opentrons simulator before upload.
    ``tip_capacity`` is the number of unused tips now in the racks: an int for the main
    pipette's racks, or a mapping per rack role; roles not given count as full racks
    (None: all full). ``store_tips`` is called with the per-role counts whenever they change,
    so the caller can persist them and pass them back as ``tip_capacity`` after a restart.
    ``waste_ul`` is the liquid already in the waste reservoir (µL).
    The tip and waste counts are thread-safe (one lock, in :class:`Supplies`).
    """

    def __init__(
        self,
        name: str,
        client: OpentronsClient,
        layout: DeckLayout,
        robot: Robot,
        *,
        check: bool = True,
        tip_capacity: int | Mapping[str, int] | None = None,
        store_tips: Callable[[dict[str, int]], None] | None = None,
        waste_ul: float = 0.0,
    ) -> None:
        if robot != layout.robot:
            raise ValueError(f"{name}: the deck layout is for an {layout.robot}, not an {robot}")
        self.name = name
        self.client = client
        self.layout = layout
        self.robot: Robot = robot
        self.check = check
        self._supplies = Supplies(
            name, layout, tip_capacity=tip_capacity, store_tips=store_tips, waste_ul=waste_ul
        )
        self._uploads = ProtocolUploads(client)
        self._instruments = AttachedInstruments(client)
        self._in_flight: set[str] = set()  # runs this handler started and has not seen end
        self._failed_seen: OrderedDict[str, None] = OrderedDict()  # runs poll reported FAILED

    # ------------------------------------------------------------------ tips and waste

    @property
    def tips_left(self) -> dict[str, int]:
        """Unused tips per rack role."""
        return self._supplies.tips_left

    def attended(self, job_key: str, detail: str) -> None:
        """The operator confirmed what a DeviceNeedsOperator asked for (labctl.devices.Attendable):
        new tip racks (all racks of the role named, full), or an emptied waste reservoir."""
        text = detail.lower()
        if FITTED_MARK in text:
            self._instruments.forget()  # the operator fitted pipettes: read them again
            return
        if "tip" in text:
            for role in list(self.tips_left):
                self.refilled(None, role)
        if "waste" in text:
            self.emptied()

    def refilled(self, n: int | None = None, role: str = "tips") -> None:
        """The operator put new racks in: ``role``'s racks now hold ``n`` unused tips (None:
        full), taken from the last positions (used positions come first)."""
        self._supplies.refilled(n, role)

    @property
    def waste_ul(self) -> float:
        """Liquid sent to the waste reservoir since it was last emptied (µL)."""
        return self._supplies.waste_ul

    def emptied(self) -> None:
        """The operator emptied the waste reservoir."""
        self._supplies.emptied()

    # ------------------------------------------------------------------ LiquidHandler

    def prepare(self, job_key: str, params: dict[str, Any]) -> None:
        """Upload the job's protocol now if this robot has not had its contents yet, so it is
        analysed by the time the job starts (labctl.devices.Preparable). The values are the
        tips as they stand now; ``start_job`` re-uploads if its own differ. Best effort and
        silent; nothing moves on the robot (see ProtocolUploads.prepare). The pipettes are
        loaded where the robot last said they are attached."""
        command = f"prepare {job_key}"
        self._uploads.prepare(
            job_key, lambda: self._plan(params, self._instruments.fitted(self.layout, command))
        )

    def start_job(self, job_key: str, params: dict[str, Any]) -> str:
        """Generate, check, upload and play the job's protocol; return the run id.

        The robot is asked first (see the module docstring): a run of the job under way,
        waiting for a person or succeeded is returned as it is; one never played is played.
        ``params["attempt"]`` is how many retries the operator has asked for (0, or missing,
        on a first start): after a run of the job failed or was stopped a new run is made
        only while the failed runs are no more than that, else DeviceFault (that run may have
        moved liquid). An engine that does not pass ``attempt`` gets a new run only after
        failures this handler itself reported from ``poll`` (it saw them, so the engine's
        start again is the operator's retry).

        Raises PipettesNotFitted (a DeviceNeedsOperator) before any upload if the robot does
        not carry the pipettes the deck names (each is loaded on the mount where it is
        attached), DeviceNeedsOperator if the racks cannot serve the job
        (refill tips) or the waste reservoir would overflow (empty it); DeviceFault if the
        job cannot be made into a protocol or fails the local or the robot's analysis; and
        the client's errors (DeviceBusy when another run holds the robot,
        DeviceCommunicationError/DeviceTimeout when it cannot be reached).
        """
        command = f"start {job_key}"
        filename = protocol_filename(job_key)
        found = self._job_run_to_answer(command, filename, params)
        if found is not None:
            return found
        layout = self._instruments.fitted(self.layout, command)
        try:
            job = self._plan(params, layout)
        except OutOfTips as exc:
            raise self._supplies.out_of_tips(command, exc) from exc
        except GenerationError as exc:
            raise DeviceFault(self.name, command, f"cannot make a protocol: {exc}") from exc
        tips = dict(job.tips)
        if self.check:
            result = check_locally(job.source, device=self.name)
            # The simulator's count is the truth; ours must agree (both are tested), but
            # never risk reusing a tip on a disagreement.
            for mount, count in result.tips.items():
                role = layout.role_of_mount(mount)
                if role is not None and count > tips.get(role, 0):
                    tips[role] = count
            self._supplies.require_tips(command, tips)
        self._supplies.require_waste_room(command, job.waste_ul)
        protocol_id = self._uploads.analysed(job_key, filename, job)
        run_id = self.client.create_run(protocol_id, job.run_time_parameters)
        # From here the run may use tips: count them now, not when it ends.
        self._supplies.use(tips, job.waste_ul)
        try:
            self.client.play(run_id)
        except DeviceError:
            # An ambiguous failure (timeout) may still have started it: ask the robot.
            try:
                status = self.client.run_status(run_id)
            except DeviceError:
                status = None
            if status is None or status.phase is RunPhase.PENDING:
                raise
        self._in_flight.add(run_id)
        return run_id

    def poll(self, op_id: str) -> OpStatus:
        """The run's state: RUNNING (idle or running), NEEDS_OPERATOR (paused, door open,
        error recovery), SUCCEEDED with ``{commands, run_id}``, or FAILED with a DeviceFault
        carrying the robot's error detail and code (a stopped run is FAILED too).

        Raises OperationLost when the robot does not know the run (404 RunNotFound: it was
        restarted or reset), and the client's errors when it cannot be reached."""
        try:
            st = self.client.run_status(op_id)
        except OperationLost as exc:
            self._in_flight.discard(op_id)
            self._instruments.forget()  # restarted: its pipettes may have changed too
            raise OperationLost(
                self.name,
                f"run {op_id}",
                "the robot no longer knows this run (it was restarted or reset): whether it "
                "ran, and how far, cannot be told from the robot; check the plate",
                device_code=exc.device_code,
            ) from exc
        if st.phase.terminal:
            self._in_flight.discard(op_id)
        outcome = run_outcome(self.client, self.name, op_id, st)
        if outcome.state is OpState.FAILED:
            if _pipette_failure(outcome):
                self._instruments.forget()  # the robot's pipettes are not what was read
            self._failed_seen[op_id] = None
            while len(self._failed_seen) > _FAILED_SEEN_MAX:
                self._failed_seen.popitem(last=False)
        return outcome

    def find_op(self, job_key: str) -> str | None:
        """The newest run made from the job's protocol file; None if the robot has no run of
        it or only one never played (so starting it now repeats nothing). Runs the robot
        stopped before they were played do not count. Raises NotKnown when the robot cannot
        be asked."""
        try:
            newest = job_runs(self.client, protocol_filename(job_key)).newest
        except DeviceError as exc:
            raise NotKnown(f"{self.name}: cannot ask the robot about {job_key}: {exc}") from exc
        # A run created but never played (a crash between create and play) has done
        # nothing: starting the job again plays it (start_job), which repeats nothing.
        if newest is None or newest.phase is RunPhase.PENDING:
            return None
        return newest.run_id

    def report(self, job_key: str) -> str:
        """What the robot knows of the job now, e.g. "run 7f3a1c2e failed after 12 of 30
        commands", "no run of this job on the robot" (labctl.devices.Reports). The newest
        three attempts, newest first. Never raises: a robot that cannot be asked says so."""
        try:
            runs = job_runs(self.client, protocol_filename(job_key)).counted
            if not runs:
                return f"{self.name}: no run of this job on the robot"
            words = [describe(self.client, r) for r in reversed(runs[-3:])]
        except DeviceError as exc:
            return f"{self.name}: the robot could not be asked ({exc.detail})"
        except Exception as exc:  # a report must never stop the engine asking a person
            log.exception("%s: report on %s failed", self.name, job_key)
            return f"{self.name}: the robot's answer could not be read ({exc})"
        older = len(runs) - len(words)
        return f"{self.name}: " + "; ".join(words) + (f" (and {older} older)" if older else "")

    def alarms(self) -> list[DeviceAlarm]:
        """``offline`` when /health fails, ``wrong-robot`` when another model answers,
        ``door-open`` when the current run is held by an open door."""
        try:
            health = self.client.health()
        except DeviceError as exc:
            return [DeviceAlarm(self.name, "offline", str(exc))]
        out: list[DeviceAlarm] = []
        if health.robot_model != self.robot:
            out.append(
                DeviceAlarm(
                    self.name,
                    "wrong-robot",
                    f"{self.name} is configured as an {self.robot} but an "
                    f"{health.robot_model} answers",
                )
            )
        if not self._in_flight:
            return out  # no run of ours under way: the health answer is all there is to know
        try:
            run_id = self.client.current_run_id()
            status = self.client.run_status(run_id) if run_id is not None else None
        except DeviceError as exc:
            return [*out, DeviceAlarm(self.name, "offline", str(exc))]
        if status is not None and status.status in DOOR_STATUSES:
            out.append(
                DeviceAlarm(
                    self.name,
                    "door-open",
                    f"run {status.run_id} is held by an open door: close it, then resume",
                )
            )
        return out

    def abort(self, op_id: str) -> None:
        """Stop the run (the robot passes stop-requested to stopped). A run that has already
        ended, or that the robot no longer knows, is left as it is."""
        try:
            self.client.stop(op_id)
        except OperationLost:
            return  # the robot does not know the run: there is nothing on it to stop
        except DeviceError:
            try:
                ended = self.client.run_status(op_id).phase.terminal
            except DeviceError:
                ended = False
            if not ended:
                raise

    # ------------------------------------------------------------------ helpers

    def _job_run_to_answer(
        self, command: str, filename: str, params: Mapping[str, Any]
    ) -> str | None:
        """The run ``start_job`` answers with instead of making one (see its docstring), or
        None when a new run is to be made. Raises DeviceFault when a failed run forbids one,
        and the client's errors when the robot cannot be asked."""
        runs = job_runs(self.client, filename)
        newest = runs.newest
        if newest is None:
            return None
        if newest.phase is RunPhase.PENDING:
            return newest.run_id if self._play_found(newest.run_id) else None
        if not newest.failed:
            # Under way, waiting for a person, or done: the job is on the robot already.
            if not newest.phase.terminal:
                self._in_flight.add(newest.run_id)
            log.info("%s: %s: run %s is %s", self.name, command, newest.run_id, newest.status)
            return newest.run_id
        if len(runs.failures) <= self._retries_asked(params, runs):
            return None
        raise DeviceFault(self.name, command, _refusal(newest, runs))

    def _retries_asked(self, params: Mapping[str, Any], runs: JobRuns) -> int:
        """How many failed runs of the job the operator has chosen to retry after.

        ``params["attempt"]`` when the engine passes it. Without it, as many as the failed
        runs this handler reported from ``poll`` (the engine saw them fail, so starting the
        job again is a retry), provided it reported all of them; else 0."""
        attempt = params.get("attempt")
        if isinstance(attempt, int) and not isinstance(attempt, bool):
            return max(attempt, 0)
        failures = runs.failures
        if failures and all(r.run_id in self._failed_seen for r in failures):
            return len(failures)
        return 0

    def _play_found(self, run_id: str) -> bool:
        """Play a run of the job that was created but never played; False when the robot
        cannot play it any more (another run was created since, or it is gone), so a new
        run is to be made."""
        try:
            self.client.play(run_id)
        except OperationLost:
            return False
        except DeviceError:
            # A refusal (no longer the current run) or an ambiguous failure: ask the robot.
            try:
                run = read_run(self.client, run_id)
            except OperationLost:
                return False
            except DeviceError:
                run = None
            if run is None or (not run.played and run.current):
                raise
            if not run.played:
                return False  # released without being played (idle, or stopped by the robot)
        self._in_flight.add(run_id)
        log.info("%s: played run %s, created earlier but never played", self.name, run_id)
        return True

    def _plan(self, params: Mapping[str, Any], layout: DeckLayout) -> GeneratedProtocol:
        """The job's protocol on ``layout`` (the deck with its pipettes' mounts), its tips
        starting at the first unused ones."""
        first = self._supplies.first_tips()
        return plan_protocol(params, layout, self.robot, first_tips=first)


def _pipette_failure(outcome: OpStatus) -> bool:
    """Whether a failed run failed for a pipette (not attached, another model, firmware)."""
    error = outcome.error
    if error is None:
        return False
    return error.device_code in PIPETTE_ERROR_CODES or any(
        name in outcome.detail for name in ("FailedToLoadPipette", "PipetteNotAttached")
    )


def _refusal(newest: JobRun, runs: JobRuns) -> str:
    """Why a job whose run failed is not started again (one sentence for a person)."""
    ended = "failed" if newest.phase is RunPhase.FAILED else "was stopped"
    count = len(runs.failures)
    earlier = f" ({count} runs of it ended so)" if count > 1 else ""
    return (
        f"a previous run of this job (run {short_id(newest.run_id)}) {ended} on the robot"
        f"{earlier} and may have moved liquid, so it is not started again: check the plate; "
        "running it again is the operator's choice (retry)"
    )
