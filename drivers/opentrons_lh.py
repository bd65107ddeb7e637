"""An Opentrons OT-2 or Flex as labctl's :class:`~labctl.devices.LiquidHandler`.

``start_job`` generates the job's protocol (drivers/opentrons_protocol.py), checks it in the
local opentrons simulator, has it on the robot analysed ``ok`` with the job's run-time
parameter values (drivers/opentrons_uploads.py, which also uploads jobs ahead through
``prepare``), creates the run with the same values and plays it; the run id is the op id.
Identical liquid handling gives identical files whatever the tips, so the local check runs
once per distinct protocol. ``poll`` maps the run's status to an
:class:`~labctl.devices.OpStatus`; ``find_op`` finds, after a controller crash, the run made
from the job's file; ``abort`` stops the run.

Tips and waste (drivers/opentrons_supplies.py): the handler tells each run where its tips
start and refuses, before anything is uploaded, a job the racks cannot serve ("refill
tips") or that would overfill the waste reservoir ("empty" it); :meth:`refilled` and
:meth:`emptied` record what the operator did. A job's tips are counted as used once its run
exists, whatever the run does next: a tip that may have been used is never offered again.

Only public methods of :class:`~labctl.drivers.opentrons_http.OpentronsClient` are used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from labctl.devices import DeviceAlarm, NotKnown, OpStatus
from labctl.errors import DeviceError, DeviceFault

from .opentrons_http import OpentronsClient, RunPhase
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
        self._in_flight: set[str] = set()  # runs this handler started and has not seen end

    # ------------------------------------------------------------------ tips and waste

    @property
    def tips_left(self) -> dict[str, int]:
        """Unused tips per rack role."""
        return self._supplies.tips_left

    def attended(self, job_key: str, detail: str) -> None:
        """The operator confirmed what a DeviceNeedsOperator asked for (labctl.devices.Attendable):
        new tip racks (all racks of the role named, full), or an emptied waste reservoir."""
        text = detail.lower()
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
        silent; nothing moves on the robot (see ProtocolUploads.prepare)."""
        self._uploads.prepare(job_key, lambda: self._plan(params))

    def start_job(self, job_key: str, params: dict[str, Any]) -> str:
        """Generate, check, upload and play the job's protocol; return the run id.

        Raises DeviceNeedsOperator before any upload if the racks cannot serve the job
        (refill tips) or the waste reservoir would overflow (empty it); DeviceFault if the
        job cannot be made into a protocol or fails the local or the robot's analysis; and
        the client's errors (DeviceBusy when another run holds the robot,
        DeviceCommunicationError/DeviceTimeout when it cannot be reached).
        """
        command = f"start {job_key}"
        filename = protocol_filename(job_key)
        try:
            job = self._plan(params)
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
                role = self.layout.role_of_mount(mount)
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
        carrying the robot's error detail and code (a stopped run is FAILED too)."""
        st = self.client.run_status(op_id)
        if st.phase.terminal:
            self._in_flight.discard(op_id)
        return run_outcome(self.client, self.name, op_id, st)

    def find_op(self, job_key: str) -> str | None:
        """The newest run made from the job's protocol file; None if the robot has no run of
        it or only one never played (so starting it now repeats nothing). Raises NotKnown
        when the robot cannot be asked."""
        filename = protocol_filename(job_key)
        try:
            listing = self.client.get("/protocols")
            runs: list[str] = []
            for protocol in _items(listing):
                files = protocol.get("files")
                if not isinstance(files, list) or not any(
                    isinstance(f, dict) and f.get("name") == filename and f.get("role") == "main"
                    for f in files
                ):
                    continue
                pid = protocol.get("id")
                if not isinstance(pid, str):
                    continue
                detail = self.client.get(f"/protocols/{quote(pid, safe='')}")
                links = detail.get("links") if isinstance(detail, dict) else None
                refs = links.get("referencingRuns") if isinstance(links, dict) else None
                for ref in refs if isinstance(refs, list) else []:
                    if isinstance(ref, dict) and isinstance(ref.get("id"), str):
                        runs.append(ref["id"])
            # The robot lists runs oldest first; a job retried after a failed play has several.
            if not runs:
                return None
            newest = runs[-1]
            # A run created but never played (a crash between create and play) has done
            # nothing: starting the job again repeats nothing, and its new run replaces it.
            if self.client.run_status(newest).status == "idle":
                return None
        except DeviceError as exc:
            raise NotKnown(f"{self.name}: cannot ask the robot about {job_key}: {exc}") from exc
        return newest

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
        ended is left as it is."""
        try:
            self.client.stop(op_id)
        except DeviceError:
            try:
                ended = self.client.run_status(op_id).phase.terminal
            except DeviceError:
                ended = False
            if not ended:
                raise

    # ------------------------------------------------------------------ helpers

    def _plan(self, params: Mapping[str, Any]) -> GeneratedProtocol:
        """The job's protocol, its tips starting at the first unused ones."""
        first = self._supplies.first_tips()
        return plan_protocol(params, self.layout, self.robot, first_tips=first)


def _items(reply: Any) -> list[dict[str, Any]]:
    data = reply.get("data") if isinstance(reply, dict) else None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
