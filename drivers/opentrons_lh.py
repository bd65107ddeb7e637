"""An Opentrons OT-2 or Flex as labctl's :class:`~labctl.devices.LiquidHandler`.

``start_job`` generates the job's protocol (drivers/opentrons_protocol.py), checks it in the
local opentrons simulator, uploads it as ``<job key>.py`` with the job's run-time parameter
values (the first unused tip of each rack), waits for the robot's analysis, refuses anything
but ``ok``, creates the run with the same values and plays it; the run id is the op id.
Identical liquid handling gives identical files whatever the tips, so the local check runs
once per distinct protocol; the job key in the file name keeps jobs apart on the robot.
``prepare`` (the engine calls it up to two days ahead) uploads the protocol of a job whose
contents this robot has not had yet, so the robot analyses new contents while other work goes
on; ``start_job`` runs that upload when its analysis is of the very values the job starts
with (then the plate does not wait on the deck for an analysis, which takes tens of seconds
on an OT-2), and uploads again otherwise: a run's analysis must be of its own tips.
``poll`` maps the run's status to an :class:`~labctl.devices.OpStatus`; ``find_op`` finds,
after a controller crash, the run made from the job's file; ``abort`` stops the run.

Tips and waste: Opentrons robots do not remember tips between runs, so this driver counts them. It
keeps the number of unused tips per rack role ("tips" for the main pipette, "small_tips"
for the small one), tells each run where to start (run-time parameters), and refuses to
start a job the racks cannot serve (DeviceNeedsOperator "refill tips"), before anything is
uploaded.
:meth:`OpentronsLiquidHandler.refilled` records new racks. A job's tips are counted as used
once its run exists, whatever the run does next: a tip that may have been used is never
offered again. Likewise it adds up the liquid sent to the waste reservoir and asks for it
to be emptied (:meth:`OpentronsLiquidHandler.emptied`) before a job would overfill it.

Only public methods of :class:`~labctl.drivers.opentrons_http.OpentronsClient` are used, plus
one small GET helper here for ``/protocols`` (the client has no method for it).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any
from urllib.parse import quote, urlsplit

from labctl.devices import DeviceAlarm, NotKnown, OpState, OpStatus
from labctl.errors import (
    DeviceCommunicationError,
    DeviceError,
    DeviceFault,
    DeviceNeedsOperator,
    DeviceTimeout,
)
from labctl.labware import get_labware

from .opentrons_http import OpentronsClient, RunPhase, RunStatus
from .opentrons_protocol import (
    DeckLayout,
    GenerationError,
    OutOfTips,
    Robot,
    check_locally,
    plan_protocol,
)

__all__ = ["OpentronsLiquidHandler", "protocol_filename"]

# Statuses of a run stopped by an open door (Flex), DEVICES.md 1.4.
_DOOR_STATUSES = frozenset({"blocked-by-open-door", "awaiting-recovery-blocked-by-open-door"})
_MAX_KEY_CHARS = 100
# Share of the waste reservoir's capacity filled before the operator must empty it.
_WASTE_FILL = 0.9
# Protocol contents remembered as already given to the robot (prepare skips them). The robot
# itself keeps only 5 protocols no run uses; more prepared at once would be deleted unused.
_SEEN_MAX = 256
_PREPARED_MAX = 4
_PREPARE_PAUSE_S = 600.0  # after a failed upload ahead, none is tried for this long


@dataclass(frozen=True)
class _Prepared:
    """An upload made ahead of a job's start (see OpentronsLiquidHandler.prepare)."""

    protocol_id: str
    analysis_id: str
    values: dict[str, Any]  # the run-time parameter values it was analysed with


def protocol_filename(job_key: str) -> str:
    """The file name a job's protocol is uploaded as: ``<safe key>.py``.

    The key is kept where it is made of ``[A-Za-z0-9_.-]``; other characters become ``_``
    and then a short hash of the original key is appended, so two keys never share a name
    (``r7:d3/P2/2`` and ``r7_d3_P2_2`` stay apart). Long keys are cut and hashed likewise.
    """
    if not job_key:
        raise ValueError("a job key cannot be empty")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job_key).lstrip(".")
    if safe != job_key or len(safe) > _MAX_KEY_CHARS:
        digest = sha256(job_key.encode()).hexdigest()[:10]
        safe = f"{safe[:_MAX_KEY_CHARS]}.{digest}"
    return f"{safe}.py"


class OpentronsLiquidHandler:
    """One Opentrons robot driven through its HTTP API.

    ``layout`` is its deck (from the workcell's ``deck`` setting) and ``robot`` its model.
    ``check`` runs each new protocol through the local opentrons simulator before upload.
    ``tip_capacity`` is the number of unused tips now in the racks: an int for the main
    pipette's racks, or a mapping per rack role; roles not given count as full racks
    (None: all full). ``store_tips`` is called with the per-role counts whenever they change,
    so the caller can persist them and pass them back as ``tip_capacity`` after a restart.
    ``waste_ul`` is the liquid already in the waste reservoir (µL).
    Thread-safe: one lock serialises the tip bookkeeping.
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
        self._full = layout.tip_capacity()
        self._left = dict(self._full)
        given = {"tips": tip_capacity} if isinstance(tip_capacity, int) else (tip_capacity or {})
        for role, count in given.items():
            self._left[role] = self._valid_count(role, count)
        self._store = store_tips
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()  # runs this handler started and has not seen end
        self._waste_ul = float(waste_ul)
        self._waste_max_ul = get_labware(layout.waste_labware).capacity_ul * _WASTE_FILL
        self._seen: OrderedDict[str, None] = OrderedDict()  # sha256 of sources uploaded
        self._prepared: OrderedDict[str, _Prepared] = OrderedDict()  # job key -> upload
        self._prepare_paused_until = float("-inf")  # clock.monotonic() seconds

    # ------------------------------------------------------------------ tips

    @property
    def tips_left(self) -> dict[str, int]:
        """Unused tips per rack role."""
        with self._lock:
            return dict(self._left)

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
        with self._lock:
            self._left[role] = self._full.get(role, 0) if n is None else self._valid_count(role, n)
            left = dict(self._left)
        if self._store is not None:
            self._store(left)

    @property
    def waste_ul(self) -> float:
        """Liquid sent to the waste reservoir since it was last emptied (µL)."""
        with self._lock:
            return self._waste_ul

    def emptied(self) -> None:
        """The operator emptied the waste reservoir."""
        with self._lock:
            self._waste_ul = 0.0

    def _valid_count(self, role: str, count: object) -> int:
        if role not in self._full:
            raise ValueError(f"{self.name}: no tip racks for {role!r} on this deck")
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"{self.name}: a tip count must be an integer, not {count!r}")
        if not 0 <= count <= self._full[role]:
            raise ValueError(
                f"{self.name}: {role} racks hold 0..{self._full[role]} tips, not {count}"
            )
        return count

    def _use(self, tips: Mapping[str, int], waste_ul: float) -> None:
        with self._lock:
            for role, used in tips.items():
                self._left[role] = max(0, self._left.get(role, 0) - used)
            self._waste_ul += waste_ul
            left = dict(self._left)
        if self._store is not None:
            self._store(left)

    # ------------------------------------------------------------------ LiquidHandler

    def prepare(self, job_key: str, params: dict[str, Any]) -> None:
        """Upload the job's protocol now if this robot has not had its contents yet, so it is
        analysed by the time the job starts (labctl.devices.Preparable). The values are the
        tips as they stand now; ``start_job`` re-uploads if its own differ. Best effort and
        silent: a job that cannot be made or uploaded now is left to ``start_job``, which
        reports why. Nothing moves on the robot. After an upload that failed (the robot
        unreachable, say), none is tried for ``_PREPARE_PAUSE_S``: each try may wait out the
        client's time-out, and the engine's loop waits with it."""
        now = self.client.clock.monotonic()
        if now < self._prepare_paused_until:
            return
        with self._lock:
            first = {role: self._full[role] - self._left[role] for role in self._full}
        try:
            job = plan_protocol(params, self.layout, self.robot, first_tips=first)
        except (OutOfTips, GenerationError):
            return
        source = job.source.encode()
        digest = sha256(source).hexdigest()
        if digest in self._seen or job_key in self._prepared:
            return
        values = job.run_time_parameters
        try:
            uploaded = self.client.upload_protocol(
                protocol_filename(job_key), source, run_time_parameters=values
            )
        except DeviceError:
            self._prepare_paused_until = now + _PREPARE_PAUSE_S
            return
        self._remember(digest)
        self._prepared[job_key] = _Prepared(
            uploaded.protocol_id, uploaded.analysis_id, dict(values or {})
        )
        while len(self._prepared) > _PREPARED_MAX:
            self._prepared.popitem(last=False)  # its job did not come: start_job uploads

    def _remember(self, digest: str) -> None:
        self._seen[digest] = None
        self._seen.move_to_end(digest)
        while len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)

    def _prepared_analysis(self, job_key: str, values: Mapping[str, Any]) -> _Prepared | None:
        """The upload ``prepare`` made for the job, if its analysis is of ``values``.

        Waits for that analysis in any case: the robot refuses a new upload of the same file
        while the last analysis is pending (503 LastAnalysisPending). None if there is none,
        the values differ, or the robot no longer has it (it deletes unused protocols to make
        room) or cannot be asked: the job is then uploaded as usual, which reports errors."""
        prepared = self._prepared.pop(job_key, None)
        if prepared is None:
            return None
        try:
            analysis = self.client.wait_for_analysis(prepared.protocol_id, prepared.analysis_id)
        except DeviceError:
            return None
        if prepared.values != dict(values) or not analysis.completed:
            return None
        self.client.require_ok(analysis)
        return prepared

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
        with self._lock:
            first = {role: self._full[role] - self._left[role] for role in self._full}
        try:
            job = plan_protocol(params, self.layout, self.robot, first_tips=first)
        except OutOfTips as exc:
            raise DeviceNeedsOperator(self.name, command, self._refill_message(exc)) from exc
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
            with self._lock:
                left = dict(self._left)
            short = {
                role: (used, left.get(role, 0))
                for role, used in tips.items()
                if used > left.get(role, 0)
            }
            if short:
                raise DeviceNeedsOperator(
                    self.name, command, self._refill_message(OutOfTips(short))
                )

        with self._lock:
            waste = self._waste_ul
        if waste + job.waste_ul > self._waste_max_ul:
            raise DeviceNeedsOperator(
                self.name,
                command,
                f"empty the waste reservoir in slot {self.layout.waste}: it holds about "
                f"{waste / 1000:g} mL and the job adds {job.waste_ul / 1000:g} mL; then confirm",
            )
        source = job.source.encode()
        values = job.run_time_parameters
        prepared = self._prepared_analysis(job_key, values or {})
        if prepared is not None:
            protocol_id = prepared.protocol_id
        else:
            # The values go with the upload too, so the robot's analysis is of this very run.
            uploaded = self.client.upload_protocol(filename, source, run_time_parameters=values)
            self._remember(sha256(source).hexdigest())
            self.client.require_ok(
                self.client.wait_for_analysis(
                    uploaded.protocol_id,
                    uploaded.analysis_id,
                    pending=uploaded.analysis_status == "pending",
                )
            )
            protocol_id = uploaded.protocol_id
        run_id = self.client.create_run(protocol_id, values)
        # From here the run may use tips: count them now, not when it ends.
        self._use(tips, job.waste_ul)
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
        progress = f"command {st.commands_done} of {st.commands_total}"
        if st.phase in (RunPhase.PENDING, RunPhase.RUNNING):
            return OpStatus(OpState.RUNNING, f"{st.status}: {progress}")
        if st.phase is RunPhase.SUCCEEDED:
            return OpStatus(
                OpState.SUCCEEDED,
                f"run {op_id} succeeded ({st.commands_total} commands)",
                result={"commands": st.commands_total, "run_id": op_id},
            )
        if st.phase is RunPhase.NEEDS_OPERATOR:
            reason = self._operator_reason(st)
            error = DeviceNeedsOperator(
                self.name,
                f"run {op_id}",
                reason,
                device_code=st.error.error_code if st.error else None,
            )
            return OpStatus(OpState.NEEDS_OPERATOR, reason, error=error)
        detail, error = self._failure(op_id, st)
        # Whether any liquid moved before it stopped: then some wells may be fed already,
        # and the engine must not run the program again by itself.
        return OpStatus(
            OpState.FAILED,
            detail,
            error,
            result={
                "commands_done": st.commands_done,
                "run_id": op_id,
                "liquid_moved": self._liquid_moved(op_id),
            },
        )

    def _liquid_moved(self, op_id: str) -> bool:
        """True if the run completed any aspirate or dispense (True when it cannot tell)."""
        moved_types = {
            "aspirate",
            "dispense",
            "aspirateInPlace",
            "dispenseInPlace",
            "blowout",
            "blowOutInPlace",
        }
        cursor, total = 0, None
        try:
            while total is None or cursor < total:
                page = self._get(f"/runs/{op_id}/commands?cursor={cursor}&pageLength=100")
                data = page.get("data") or []
                total = int((page.get("meta") or {}).get("totalLength", len(data)))
                for cmd in data:
                    if cmd.get("commandType") in moved_types and cmd.get("status") == "succeeded":
                        return True
                if not data:
                    break
                cursor += len(data)
        except (DeviceError, ValueError, TypeError, AttributeError):
            return True
        return False

    def find_op(self, job_key: str) -> str | None:
        """The newest run made from the job's protocol file; None if the robot has no run of
        it or only one never played (so starting it now repeats nothing). Raises NotKnown
        when the robot cannot be asked."""
        filename = protocol_filename(job_key)
        try:
            listing = self._get("/protocols")
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
                detail = self._get(f"/protocols/{quote(pid, safe='')}")
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
        if status is not None and status.status in _DOOR_STATUSES:
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

    def _refill_message(self, exc: OutOfTips) -> str:
        parts = []
        for role, (need, left) in exc.short.items():
            slots = self.layout.tips if role == "tips" else self.layout.small_tips
            rack = self.layout.tip_rack if role == "tips" else self.layout.small_tip_rack
            parts.append(
                f"{need} {role.replace('_', ' ')} needed, {left} left in slot(s) "
                f"{', '.join(slots)} ({rack})"
            )
        return "refill tips: " + "; ".join(parts) + ": put full racks in, then confirm"

    def _operator_reason(self, st: RunStatus) -> str:
        if st.status in _DOOR_STATUSES:
            reason = "the robot's door is open: close it, then resume the run"
        elif st.status.startswith("awaiting-recovery"):
            reason = "the run waits for error recovery on the robot"
        elif st.status == "paused":
            reason = "the run is paused on the robot"
        else:
            reason = f"the run is in an unknown state {st.status!r}"
        if st.error is not None:
            reason += f" ({_describe(st.error.root_detail, st.error.detail)})"
        return reason

    def _failure(self, op_id: str, st: RunStatus) -> tuple[str, DeviceError]:
        command = f"run {op_id}"
        if st.phase is RunPhase.STOPPED:
            message = "run stopped before the end (aborted)"
            return message, DeviceFault(self.name, command, message)
        error, code, where = st.error, None, ""
        try:
            failed = self.client.failed_command(op_id)
        except DeviceError:
            failed = None
        if failed is not None:
            error = error or failed.error
            if failed.command_type:
                where = f" at command {failed.index} ({failed.command_type})"
        if error is None:
            message = f"run failed{where}"
        else:
            code = error.error_code or error.outer_error_code or None
            kind = f"{error.error_type}: " if error.error_type else ""
            message = f"run failed{where}: {kind}{_describe(error.root_detail, error.detail)}"
        return message, DeviceFault(self.name, command, message, device_code=code)

    def _get(self, path: str) -> Any:
        """One GET on the robot (the client has no /protocols listing); JSON reply."""
        client = self.client
        command = f"GET {path}"
        parts = urlsplit(client.base_url)
        conn_cls = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(parts.hostname or "", parts.port or 31950, timeout=client.timeout_s)
        headers = {"Opentrons-Version": str(client.api_version), "Accept": "application/json"}
        try:
            conn.request("GET", parts.path.rstrip("/") + path, headers=headers)
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        except TimeoutError as exc:
            raise DeviceTimeout(self.name, command, "robot offline: no reply") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DeviceCommunicationError(self.name, command, f"robot offline: {exc}") from exc
        finally:
            conn.close()
        if not 200 <= status < 300:
            raise DeviceCommunicationError(self.name, command, f"HTTP {status}")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DeviceCommunicationError(self.name, command, "reply is not JSON") from exc


def _items(reply: Any) -> list[dict[str, Any]]:
    data = reply.get("data") if isinstance(reply, dict) else None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _describe(first: str, second: str) -> str:
    """``first``, plus ``second`` in brackets when it says something ``first`` does not."""
    if first and second and first not in second:
        return f"{first} ({second})"
    return first or second or "no detail"
