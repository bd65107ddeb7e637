"""Client for the Opentrons robot-server HTTP API (OT-2 and Flex, port 31950).

Speaks the sequence of shared/DEVICES.md section 1.5, checked against the exchanges recorded
from Opentrons' own robot-server 8.1 (shared/reference/opentrons-http/):

1. ``health()``: ``GET /health``.
2. ``upload_protocol()``: ``POST /protocols`` (multipart, parts named ``files``).
3. ``wait_for_analysis()``: poll ``GET /protocols/{pid}/analyses/{aid}`` until ``completed``;
   ``require_ok()`` refuses anything but ``result == "ok"`` (the robot itself would happily
   create a run from a ``not-ok`` protocol).
4. ``create_run()``: ``POST /runs``, with the protocol's run-time parameter values if it has
   any (``runTimeParameterValues``); 5. ``play()``: ``POST /runs/{rid}/actions``.
6. ``run_status()``: ``GET /runs/{rid}`` plus one command page for progress. The caller polls:
   device operations are started and polled by the engine (DESIGN.md), so this client never
   waits for a run to end.
7. ``failed_command()``, ``release()`` (``PATCH current:false``), ``stop()`` (abort).

``start_protocol()`` chains steps 2 to 5.

Every request carries ``Opentrons-Version: <api_version>`` (the robot answers 422 without it,
even on ``/health``) and JSON request bodies are ``{"data": ...}``. Replies may carry keys this
client does not know and omit fields that are ``None``; both are tolerated.

Errors are labctl's typed :class:`~labctl.errors.DeviceError` subclasses; a message names the
device and the request, e.g. ``ot2-a: POST /runs: robot busy with another run [device code
4001]``. ``device_code`` is the robot's ``errorCode`` (for a failed protocol, the innermost
one, such as ``"3005"`` for TipNotAttachedError).

Each request opens its own connection, so one client may be shared between threads. The client
never retries: whether a repeated POST is safe is the engine's decision (after an ambiguous
``play``, ask ``current_run_id()`` and ``run_status()``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from labctl.clock import Clock
from labctl.errors import (
    DeviceBusy,
    DeviceCommunicationError,
    DeviceError,
    DeviceFault,
    DeviceNeedsOperator,
    DeviceTimeout,
)

__all__ = [
    "DEFAULT_PORT",
    "Analysis",
    "EngineError",
    "FailedCommand",
    "OpentronsClient",
    "ParameterValue",
    "ProtocolRejected",
    "RobotHealth",
    "RobotModel",
    "RunPhase",
    "RunStatus",
    "StartedRun",
    "UploadedProtocol",
]

DEFAULT_PORT = 31950

RobotModel = Literal["OT-2", "Flex"]

#: A run-time parameter value (Protocol API 2.18+ ``add_int``/``add_float``/``add_bool``/
#: ``add_str``), sent as a JSON number, boolean or string.
ParameterValue = int | float | bool | str

# robot-server names the Flex "OT-3" on the wire (/health robot_model, protocol robotType).
_ROBOT_MODELS: dict[str, RobotModel] = {"OT-2 Standard": "OT-2", "OT-3 Standard": "Flex"}

# 409 ids meaning "another run holds the robot" (DEVICES.md 1.3).
_BUSY_IDS = frozenset({"RunNotIdle", "ProtocolUsedByRun", "ProtocolRunIsActive"})
# 422 ids meaning "these protocol files will not run on this robot".
_REJECTED_IDS = frozenset({"ProtocolFilesInvalid", "ProtocolRobotTypeMismatch"})

# Deepest ErrorOccurrence nesting we follow; real chains are 3 deep.
_MAX_ERROR_DEPTH = 32
# Command errors fetched in one page (the Opentrons app uses the same page length).
_ERRORS_PAGE_LENGTH = 100


class ProtocolRejected(DeviceFault):
    """The robot refused the protocol files (422 ``ProtocolFilesInvalid`` or
    ``ProtocolRobotTypeMismatch``), or the client refused a file name it cannot send.

    ``error_id`` is the robot's ``errors[0].id``.
    """

    def __init__(
        self,
        device: str,
        command: str,
        message: str,
        *,
        device_code: str | None = None,
        error_id: str = "",
    ) -> None:
        super().__init__(device, command, message, device_code=device_code)
        self.error_id = error_id


class RunPhase(Enum):
    """What a run's engine status means to the controller."""

    PENDING = "pending"  # idle: created, not started
    RUNNING = "running"  # running, finishing, stop-requested
    NEEDS_OPERATOR = "needs-operator"  # paused, door open, error recovery, unknown status
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        """True once the run has a result and will not change any more."""
        return self in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.STOPPED)


# EngineStatus (DEVICES.md 1.4) -> phase. A status not listed here (a newer robot-server)
# maps to NEEDS_OPERATOR: it neither claims success nor failure and brings a person to look.
_PHASES: dict[str, RunPhase] = {
    "idle": RunPhase.PENDING,
    "running": RunPhase.RUNNING,
    "finishing": RunPhase.RUNNING,
    "stop-requested": RunPhase.RUNNING,
    "paused": RunPhase.NEEDS_OPERATOR,
    "blocked-by-open-door": RunPhase.NEEDS_OPERATOR,
    "awaiting-recovery": RunPhase.NEEDS_OPERATOR,
    "awaiting-recovery-paused": RunPhase.NEEDS_OPERATOR,
    "awaiting-recovery-blocked-by-open-door": RunPhase.NEEDS_OPERATOR,
    "succeeded": RunPhase.SUCCEEDED,
    "failed": RunPhase.FAILED,
    "stopped": RunPhase.STOPPED,
}


@dataclass(frozen=True)
class RobotHealth:
    """``GET /health``: what robot answers and which protocol API levels it runs."""

    name: str
    robot_model: RobotModel
    api_version: str  # robot software, e.g. "8.1.0"
    fw_version: str
    system_version: str | None
    min_protocol_api: tuple[int, int]  # e.g. (2, 15) on a Flex
    max_protocol_api: tuple[int, int]
    serial: str | None


@dataclass(frozen=True)
class UploadedProtocol:
    """A protocol stored on the robot and the analysis it started."""

    protocol_id: str
    analysis_id: str  # the newest analysisSummaries entry
    robot_type: RobotModel | None
    protocol_name: str | None
    reused: bool  # True on 200: an identical file set was already on the robot
    analysis_status: str = "pending"  # of that analysis, as the upload reply gave it


@dataclass(frozen=True)
class EngineError:
    """One flattened ErrorOccurrence chain.

    ``detail`` is the outermost detail (for a Python protocol it names the protocol's line);
    ``error_type``/``error_code``/``root_detail`` come from the innermost wrapped error,
    the actual cause (e.g. ``TipNotAttachedError``, ``"3005"``).
    """

    error_id: str
    detail: str
    error_type: str
    error_code: str
    root_detail: str
    outer_error_type: str
    outer_error_code: str


@dataclass(frozen=True)
class Analysis:
    """A protocol analysis. ``result`` is None while ``status`` is ``pending``."""

    protocol_id: str
    analysis_id: str
    status: str  # "pending" | "completed"
    result: str | None  # "ok" | "not-ok" | "parameter-value-required"
    robot_type: RobotModel | None
    errors: tuple[str, ...]  # each error's (outermost) detail
    error_chain: tuple[EngineError, ...]
    command_count: int

    @property
    def completed(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True)
class RunStatus:
    """One look at a run.

    ``status`` is the robot's raw engine status, ``phase`` what it means. ``commands_done``
    counts commands finished (succeeded or failed) up to the robot's current command, and
    ``commands_total`` the commands the run holds so far: a Python protocol adds its commands
    as it goes, so the analysis' ``command_count`` is the better denominator while running.
    """

    run_id: str
    status: str
    phase: RunPhase
    current: bool  # the robot's current run (False once released or superseded)
    error: EngineError | None  # the run's errors[0], flattened
    commands_done: int
    commands_total: int
    current_command_id: str | None


@dataclass(frozen=True)
class FailedCommand:
    """The command a run failed on, or only the error when no failed command is current."""

    error: EngineError
    command_id: str | None
    command_type: str | None
    index: int | None  # 0-based position in the run's commands


@dataclass(frozen=True)
class StartedRun:
    """A protocol uploaded, analysed ok, made a run and played."""

    protocol_id: str
    analysis_id: str
    run_id: str
    robot_type: RobotModel | None
    command_count: int  # from the analysis: the expected length of the run


class _ShapeError(Exception):
    """A reply that parsed as JSON but not in the expected shape (internal only)."""


class OpentronsClient:
    """HTTP client for one Opentrons robot.

    ``base_url`` is e.g. ``http://10.0.0.5:31950`` (port 31950 if none is given).
    ``timeout_s`` bounds each socket operation of a request, ``poll_interval_s`` is the wait
    between analysis polls and ``analysis_timeout_s`` the longest wait for an analysis, all in
    seconds on ``clock`` (waits use ``clock.sleep``, so a VirtualClock takes no wall time).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        clock: Clock,
        *,
        api_version: int = 3,
        timeout_s: float = 10.0,
        poll_interval_s: float = 1.0,
        analysis_timeout_s: float = 300,
    ) -> None:
        # "*" (latest) is deliberately impossible: a robot update must not change the wire
        # format under a running controller.
        if isinstance(api_version, bool) or not isinstance(api_version, int) or api_version < 2:
            raise ValueError(f"{name}: api_version must be an integer >= 2, not {api_version!r}")
        for label, value in (
            ("timeout_s", timeout_s),
            ("poll_interval_s", poll_interval_s),
            ("analysis_timeout_s", analysis_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{name}: {label} must be > 0, not {value!r}")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{name}: base_url must be http://host[:port], not {base_url!r}")
        self.name = name
        self.base_url = base_url
        self.clock = clock
        self.api_version = api_version
        self.timeout_s = float(timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self.analysis_timeout_s = float(analysis_timeout_s)
        self._https = parts.scheme == "https"
        self._conn: http.client.HTTPConnection | None = None  # kept alive between GETs
        self._conn_lock = threading.Lock()
        self._host = parts.hostname
        self._port = parts.port or DEFAULT_PORT
        self._prefix = parts.path.rstrip("/")

    # ------------------------------------------------------------------ the sequence

    def health(self) -> RobotHealth:
        """``GET /health`` (not enveloped, snake_case)."""
        command = "GET /health"
        body = self._request("GET", "/health")
        try:
            h = _obj(body, "reply")
            model = _str(h, "robot_model")
            if model not in _ROBOT_MODELS:
                raise _ShapeError(f"unknown robot_model {model!r}")
            return RobotHealth(
                name=_str(h, "name", default=""),
                robot_model=_ROBOT_MODELS[model],
                api_version=_str(h, "api_version"),
                fw_version=_str(h, "fw_version", default=""),
                system_version=_opt_str(h, "system_version"),
                min_protocol_api=_level(h, "minimum_protocol_api_version"),
                max_protocol_api=_level(h, "maximum_protocol_api_version"),
                serial=_opt_str(h, "robot_serial"),
            )
        except _ShapeError as exc:
            raise self._shape(command, exc) from None

    def upload_protocol(
        self,
        filename: str,
        source: bytes,
        labware: Sequence[tuple[str, bytes]] = (),
        *,
        run_time_parameters: Mapping[str, ParameterValue] | None = None,
    ) -> UploadedProtocol:
        """``POST /protocols``: the main file plus custom labware definitions (name, JSON bytes).

        ``run_time_parameters`` (if any) go along as the form field ``runTimeParameterValues``
        (a JSON object in a string), so the robot analyses the protocol with the values its
        run will have; re-uploading identical files with other values makes the robot analyse
        them again (the reply's newest analysis). 201 (new) and 200 (identical files already
        stored) both succeed. Raises :class:`ProtocolRejected` on 422 ``ProtocolFilesInvalid``
        / ``ProtocolRobotTypeMismatch``; ValueError for values that are not numbers,
        booleans or strings.
        """
        command = "POST /protocols"
        files = [(filename, source), *labware]
        for fname, _ in files:
            # The name goes into a quoted header parameter; refuse what would break it.
            if not fname or any(c in fname for c in '"\\/') or not fname.isprintable():
                raise ProtocolRejected(
                    self.name,
                    command,
                    f"cannot upload a file named {fname!r}",
                    error_id="InvalidFileName",
                )
        fields: list[tuple[str, bytes]] = []
        values = self._parameter_values(run_time_parameters)
        if values:
            fields.append(("runTimeParameterValues", _json(values)))
        body, content_type = _multipart(files, fields)
        status, reply = self._request_status(
            "POST", "/protocols", body=body, content_type=content_type
        )
        try:
            data = _data(reply)
            summaries = _list(data, "analysisSummaries")
            if not summaries:
                raise _ShapeError("no analysisSummaries")
            metadata = data.get("metadata")
            name = metadata.get("protocolName") if isinstance(metadata, dict) else None
            return UploadedProtocol(
                protocol_id=_str(data, "id"),
                analysis_id=_str(_obj(summaries[-1], "analysis summary"), "id"),
                robot_type=_robot_type(data),
                protocol_name=name if isinstance(name, str) else None,
                reused=status == 200,
                analysis_status=str(summaries[-1].get("status") or "pending"),
            )
        except _ShapeError as exc:
            raise self._shape(command, exc) from None

    def get_analysis(self, protocol_id: str, analysis_id: str) -> Analysis:
        """One ``GET /protocols/{pid}/analyses/{aid}``."""
        path = f"/protocols/{_seg(protocol_id)}/analyses/{_seg(analysis_id)}"
        reply = self._request("GET", path)
        try:
            data = _data(reply)
            status = _str(data, "status")
            result = _opt_str(data, "result")
            if status == "completed" and result is None:
                raise _ShapeError("completed analysis without a result")
            chain = tuple(_flatten(e) for e in _list(data, "errors", default=[]))
            return Analysis(
                protocol_id=protocol_id,
                analysis_id=_str(data, "id"),
                status=status,
                result=result,
                robot_type=_robot_type(data),
                errors=tuple(e.detail for e in chain),
                error_chain=chain,
                command_count=len(_list(data, "commands", default=[])),
            )
        except _ShapeError as exc:
            raise self._shape(f"GET {path}", exc) from None

    def wait_for_analysis(
        self, protocol_id: str, analysis_id: str, *, pending: bool = False
    ) -> Analysis:
        """Poll the analysis until ``completed``; return it.

        ``pending`` (the upload said so): wait ``poll_interval_s`` before the first poll, an
        analysis just started is not done at once.

        The wait between polls starts at ``poll_interval_s`` and doubles up to 8 times that
        (an analysis takes seconds to a minute: no need to ask every second throughout).
        Raises DeviceTimeout after ``analysis_timeout_s`` (clock seconds). Does not judge the
        result: pass the analysis to :meth:`require_ok`.
        """
        start = self.clock.monotonic()
        wait = self.poll_interval_s
        if pending:
            self.clock.sleep(wait)
            wait = min(2 * wait, 8 * self.poll_interval_s)
        while True:
            analysis = self.get_analysis(protocol_id, analysis_id)
            if analysis.completed:
                return analysis
            waited = self.clock.monotonic() - start
            if waited >= self.analysis_timeout_s:
                raise DeviceTimeout(
                    self.name,
                    f"GET /protocols/{protocol_id}/analyses/{analysis_id}",
                    f"protocol analysis still {analysis.status} after {waited:g} s",
                )
            self.clock.sleep(min(wait, self.analysis_timeout_s - waited))
            wait = min(2 * wait, 8 * self.poll_interval_s)

    def require_ok(self, analysis: Analysis) -> Analysis:
        """Return ``analysis`` if it completed with result ``ok``, else raise DeviceFault.

        The fault carries the analysis errors' details and, as device code, the innermost
        error code of the first error.
        """
        if analysis.completed and analysis.result == "ok":
            return analysis
        command = f"analysis of protocol {analysis.protocol_id}"
        if not analysis.completed:
            message = f"protocol analysis is still {analysis.status}; refusing to run"
        elif analysis.result == "parameter-value-required":
            message = "protocol needs run-time parameter values; refusing to run"
        else:
            message = f"protocol analysis {analysis.result}; refusing to run"
        if analysis.errors:
            message += ": " + "; ".join(analysis.errors)
        code = analysis.error_chain[0].error_code if analysis.error_chain else None
        raise DeviceFault(self.name, command, message, device_code=code or None)

    def create_run(
        self,
        protocol_id: str,
        run_time_parameters: Mapping[str, ParameterValue] | None = None,
    ) -> str:
        """``POST /runs`` for an analysed protocol; return the run id.

        ``run_time_parameters`` maps a protocol's run-time parameter names to the values this
        run uses (``runTimeParameterValues``; parameters not given keep their defaults).
        409 RunAlreadyActive -> DeviceBusy; Flex 403 estop -> DeviceNeedsOperator; ValueError
        for values that are not numbers, booleans or strings.
        """
        data: dict[str, Any] = {"protocolId": protocol_id}
        values = self._parameter_values(run_time_parameters)
        if values:
            data["runTimeParameterValues"] = values
        reply = self._request("POST", "/runs", json_body={"data": data})
        try:
            return _str(_data(reply), "id")
        except _ShapeError as exc:
            raise self._shape("POST /runs", exc) from None

    def play(self, run_id: str) -> None:
        """Start the run, or resume it after a pause."""
        self._action(run_id, "play")

    def pause(self, run_id: str) -> None:
        """Pause a running run (409 unless it is running)."""
        self._action(run_id, "pause")

    def stop(self, run_id: str) -> None:
        """Abort the run. Accepted at once; the run passes stop-requested to stopped."""
        self._action(run_id, "stop")

    def release(self, run_id: str) -> None:
        """``PATCH /runs/{rid} current:false``: the run stops being the robot's current run."""
        path = f"/runs/{_seg(run_id)}"
        reply = self._request("PATCH", path, json_body={"data": {"current": False}})
        try:
            _data(reply)
        except _ShapeError as exc:
            raise self._shape(f"PATCH {path}", exc) from None

    def run_status(self, run_id: str) -> RunStatus:
        """``GET /runs/{rid}`` and ``GET /runs/{rid}/commands?cursor=0&pageLength=1``."""
        path = f"/runs/{_seg(run_id)}"
        reply = self._request("GET", path)
        try:
            data = _data(reply)
            if data.get("ok") is False:
                # A BadRun: the robot cannot read its own stored run.
                raise DeviceFault(
                    self.name,
                    f"GET {path}",
                    f"robot cannot read run {run_id}: {data.get('dataError', 'unknown error')}",
                )
            rid = _str(data, "id", default=run_id)
            status = _str(data, "status")
            errors = _list(data, "errors", default=[])
            error = _flatten(errors[0]) if errors else None
            current = data.get("current") is True
        except _ShapeError as exc:
            raise self._shape(f"GET {path}", exc) from None
        phase = _PHASES.get(status, RunPhase.NEEDS_OPERATOR)
        # Without cursor the robot pages around its current command, not from 0; cursor=0
        # gives totalLength and links.current whatever the run's progress.
        total, index, command_id = self._command_position(run_id, cursor=0)
        if index is None:
            done = 0
        elif phase.terminal:
            done = index + 1
        else:
            done = index  # the current command is still running
        return RunStatus(
            run_id=rid,
            status=status,
            phase=phase,
            current=current,
            error=error,
            commands_done=min(done, total),
            commands_total=total,
            current_command_id=command_id,
        )

    def failed_command(self, run_id: str) -> FailedCommand | None:
        """The run's latest command error and, if it is the current command, that command.

        ``GET /runs/{rid}/commandErrors`` then ``GET /runs/{rid}/commands?pageLength=1`` (the
        page around the current command). None if no command failed (a run can still fail
        outside any command: see ``RunStatus.error``).
        """
        path = f"/runs/{_seg(run_id)}/commandErrors"
        reply = self._request("GET", path, query={"cursor": 0, "pageLength": _ERRORS_PAGE_LENGTH})
        try:
            items = _list(reply, "data")
            total = _int(_obj(reply.get("meta", {}), "meta"), "totalLength", default=len(items))
        except _ShapeError as exc:
            raise self._shape(f"GET {path}", exc) from None
        if not items:
            return None
        if total > len(items):
            # More errors than one page (long error recovery): fetch the newest one.
            reply = self._request("GET", path, query={"cursor": total - 1, "pageLength": 1})
            try:
                items = _list(reply, "data") or items
            except _ShapeError as exc:
                raise self._shape(f"GET {path}", exc) from None
        try:
            latest = _flatten(items[-1])
        except _ShapeError as exc:
            raise self._shape(f"GET {path}", exc) from None

        cpath = f"/runs/{_seg(run_id)}/commands"
        reply = self._request("GET", cpath, query={"pageLength": 1})
        try:
            link = _current_link(reply)
            commands = _list(reply, "data")
            for item in commands:
                cmd = _obj(item, "command")
                if cmd.get("status") != "failed" or not isinstance(cmd.get("error"), dict):
                    continue
                if link is not None and cmd.get("id") != link[1]:
                    continue
                return FailedCommand(
                    error=_flatten(cmd["error"]),
                    command_id=_str(cmd, "id"),
                    command_type=_opt_str(cmd, "commandType"),
                    index=link[0] if link is not None else None,
                )
        except _ShapeError as exc:
            raise self._shape(f"GET {cpath}", exc) from None
        return FailedCommand(error=latest, command_id=None, command_type=None, index=None)

    def current_run_id(self) -> str | None:
        """The robot's current run (``GET /runs`` ``links.current``), or None.

        Use it after an ambiguous failure (timeout on ``POST /runs`` or ``play``) or a
        controller restart, to find out what the robot is doing.
        """
        reply = self._request("GET", "/runs", query={"pageLength": 1})
        try:
            links = _obj(reply, "reply").get("links") or {}
            current = _obj(links, "links").get("current")
            if current is None:
                return None
            href = _str(_obj(current, "links.current"), "href")
        except _ShapeError as exc:
            raise self._shape("GET /runs", exc) from None
        prefix = "/runs/"
        if not href.startswith(prefix) or len(href) == len(prefix):
            raise self._shape("GET /runs", _ShapeError(f"unexpected current run link {href!r}"))
        return href[len(prefix) :]

    def start_protocol(
        self,
        filename: str,
        source: bytes,
        labware: Sequence[tuple[str, bytes]] = (),
        run_time_parameters: Mapping[str, ParameterValue] | None = None,
    ) -> StartedRun:
        """Upload, wait for the analysis, refuse unless ok, create a run and play it.

        ``run_time_parameters`` go with the upload (the robot analyses what will run) and with
        the run. Returns as soon as ``play`` is accepted; poll :meth:`run_status` for the
        outcome.
        """
        uploaded = self.upload_protocol(
            filename, source, labware, run_time_parameters=run_time_parameters
        )
        analysis = self.require_ok(
            self.wait_for_analysis(uploaded.protocol_id, uploaded.analysis_id)
        )
        run_id = self.create_run(uploaded.protocol_id, run_time_parameters)
        self.play(run_id)
        return StartedRun(
            protocol_id=uploaded.protocol_id,
            analysis_id=analysis.analysis_id,
            run_id=run_id,
            robot_type=analysis.robot_type or uploaded.robot_type,
            command_count=analysis.command_count,
        )

    # ------------------------------------------------------------------ helpers

    def _parameter_values(
        self, values: Mapping[str, ParameterValue] | None
    ) -> dict[str, ParameterValue]:
        """Checked copy of run-time parameter values, in name order (same values, same bytes)."""
        out: dict[str, ParameterValue] = {}
        for name, value in (values or {}).items():
            finite = not isinstance(value, float) or math.isfinite(value)
            if (
                not isinstance(name, str)
                or not name.isidentifier()
                or not isinstance(value, int | float | str)  # bool is an int
                or not finite
            ):
                raise ValueError(
                    f"{self.name}: run-time parameter {name!r} = {value!r} is not a name with"
                    " a finite number, boolean or string"
                )
            out[name] = value
        return dict(sorted(out.items()))

    def _action(self, run_id: str, action: str) -> None:
        path = f"/runs/{_seg(run_id)}/actions"
        reply = self._request("POST", path, json_body={"data": {"actionType": action}})
        try:
            _data(reply)
        except _ShapeError as exc:
            raise self._shape(f"POST {path}", exc) from None

    def _command_position(self, run_id: str, *, cursor: int) -> tuple[int, int | None, str | None]:
        """(totalLength, links.current index, links.current command id) of the run's commands."""
        path = f"/runs/{_seg(run_id)}/commands"
        reply = self._request("GET", path, query={"cursor": cursor, "pageLength": 1})
        try:
            total = _int(_obj(_obj(reply, "reply").get("meta"), "meta"), "totalLength")
            link = _current_link(reply)
        except _ShapeError as exc:
            raise self._shape(f"GET {path}", exc) from None
        if link is None:
            return total, None, None
        return total, link[0], link[1]

    def _shape(self, command: str, exc: Exception) -> DeviceCommunicationError:
        return DeviceCommunicationError(self.name, command, f"unexpected reply: {exc}")

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        json_body: object = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        return self._request_status(
            method, path, query=query, json_body=json_body, body=body, content_type=content_type
        )[1]

    def _request_status(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        json_body: object = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON) of a 2xx reply, else raise."""
        command = f"{method} {path}"
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Opentrons-Version": str(self.api_version), "Accept": "application/json"}
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            content_type = "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        # GETs reuse one kept-alive connection (polls are most of the traffic); a request
        # that changes something always gets a fresh one and is never sent twice.
        reuse = method == "GET"
        conn = None
        if reuse:
            with self._conn_lock:
                conn, self._conn = self._conn, None
        fresh = conn is None
        if conn is None:
            conn = conn_cls(self._host, self._port, timeout=self.timeout_s)
        keep = False
        try:
            try:
                _send(conn, method, target, body, headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if fresh:
                    raise
                # The kept-alive connection had gone stale: a GET may simply be sent again.
                conn.close()
                conn = conn_cls(self._host, self._port, timeout=self.timeout_s)
                _send(conn, method, target, body, headers)
                resp = conn.getresponse()
            status = resp.status
            raw = resp.read()
            keep = reuse and not resp.will_close
        except TimeoutError as exc:
            raise DeviceTimeout(
                self.name, command, f"robot offline: no reply within {self.timeout_s:g} s"
            ) from exc
        except ConnectionRefusedError as exc:
            raise DeviceCommunicationError(
                self.name, command, "robot offline: connection refused"
            ) from exc
        except (ConnectionError, http.client.RemoteDisconnected) as exc:
            raise DeviceCommunicationError(
                self.name, command, "robot offline: connection closed by the robot"
            ) from exc
        except http.client.HTTPException as exc:
            raise DeviceCommunicationError(
                self.name, command, f"garbled HTTP reply ({type(exc).__name__})"
            ) from exc
        except OSError as exc:
            raise DeviceCommunicationError(
                self.name, command, f"robot offline: {exc.strerror or exc}"
            ) from exc
        finally:
            if keep:
                with self._conn_lock:
                    if self._conn is None:
                        self._conn, conn = conn, None
            if conn is not None:
                conn.close()

        if not 200 <= status < 300:
            raise self._http_error(command, status, raw)
        try:
            return status, json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DeviceCommunicationError(
                self.name, command, f"reply is not JSON (HTTP {status}): {_snippet(raw)}"
            ) from exc

    def close(self) -> None:
        """Close the kept-alive connection (a later request opens a new one)."""
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _http_error(self, command: str, status: int, raw: bytes) -> DeviceError:
        """The typed error for a 4xx/5xx reply (DEVICES.md 1.2 error bodies)."""
        error_id, detail, code = _error_fields(raw)
        if not detail:
            detail = f"HTTP {status}: {_snippet(raw)}" if raw.strip() else f"HTTP {status}"
        described = f"{error_id}: {detail}" if error_id else detail
        name = self.name
        if status == 409 and error_id == "RunAlreadyActive":
            return DeviceBusy(name, command, "robot busy with another run", device_code=code)
        if status == 409 and error_id in _BUSY_IDS:
            return DeviceBusy(name, command, described, device_code=code)
        if status == 409 and "door" in detail.lower():
            # Flex: play refused while the door is open; a person has to close it.
            return DeviceNeedsOperator(name, command, described, device_code=code)
        if status == 403 and (error_id or "").startswith("Estop"):
            message = f"emergency stop: {described}"
            return DeviceNeedsOperator(name, command, message, device_code=code)
        if status == 422 and error_id in _REJECTED_IDS:
            message = f"protocol rejected: {described}"
            return ProtocolRejected(
                name, command, message, device_code=code, error_id=error_id or ""
            )
        if status in (400, 422):
            # The robot did not understand the request (version, envelope): a wire mismatch.
            message = f"request refused: {described}"
            return DeviceCommunicationError(name, command, message, device_code=code)
        if status == 503:
            message = f"robot not ready: {described}"
            return DeviceBusy(name, command, message, device_code=code)
        return DeviceFault(name, command, described, device_code=code)


# ---------------------------------------------------------------------- parsing helpers


def _seg(value: str) -> str:
    """Quote an id for use as one path segment."""
    return quote(value, safe="")


def _snippet(raw: bytes, limit: int = 80) -> str:
    text = raw[:limit].decode("utf-8", "replace")
    return repr(text) + ("..." if len(raw) > limit else "")


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _ShapeError(f"{what} is not an object")
    return value


def _data(reply: object) -> dict[str, Any]:
    """The object inside a ``{"data": {...}}`` envelope."""
    return _obj(_obj(reply, "reply").get("data"), "data")


def _str(obj: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise _ShapeError(f"{key!r} missing or not a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _ShapeError(f"{key!r} is not a string")
    return value


def _int(obj: Mapping[str, Any], key: str, *, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ShapeError(f"{key!r} missing or not an integer")
    return value


def _list(obj: object, key: str, *, default: list[Any] | None = None) -> list[Any]:
    value = _obj(obj, "reply").get(key, default)
    if not isinstance(value, list):
        raise _ShapeError(f"{key!r} missing or not a list")
    return value


def _level(obj: Mapping[str, Any], key: str) -> tuple[int, int]:
    value = obj.get(key)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise _ShapeError(f"{key!r} is not [major, minor]")
    return (value[0], value[1])


def _robot_type(data: Mapping[str, Any]) -> RobotModel | None:
    value = data.get("robotType")
    return _ROBOT_MODELS.get(value) if isinstance(value, str) else None


def _current_link(reply: object) -> tuple[int, str] | None:
    """(index, commandId) of ``links.current`` of a command page, or None."""
    links = _obj(reply, "reply").get("links") or {}
    current = _obj(links, "links").get("current")
    if current is None:
        return None
    meta = _obj(_obj(current, "links.current").get("meta"), "links.current.meta")
    return _int(meta, "index"), _str(meta, "commandId")


def _flatten(occurrence: object) -> EngineError:
    """Outer detail plus the innermost errorType/errorCode/detail of an ErrorOccurrence."""
    outer = _obj(occurrence, "error")
    inner = outer
    for _ in range(_MAX_ERROR_DEPTH):
        wrapped = inner.get("wrappedErrors")
        if not isinstance(wrapped, list) or not wrapped:
            break
        inner = _obj(wrapped[0], "wrapped error")

    def code(e: Mapping[str, Any]) -> str:
        # errorCode is a string on the wire ("3005"); accept a number from older servers.
        value = e.get("errorCode", "")
        return str(value) if isinstance(value, (str, int)) else ""

    return EngineError(
        error_id=_str(outer, "id", default=""),
        detail=_str(outer, "detail", default=""),
        error_type=_str(inner, "errorType", default=""),
        error_code=code(inner),
        root_detail=_str(inner, "detail", default=""),
        outer_error_type=_str(outer, "errorType", default=""),
        outer_error_code=code(outer),
    )


def _error_fields(raw: bytes) -> tuple[str | None, str, str | None]:
    """(errors[0].id, detail, errorCode) of an error body; empty when it has none.

    Understands ``{"errors": [{id, title, detail, errorCode}]}`` and /health's
    ``{"message", "errorCode"}``.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "", None
    if not isinstance(body, dict):
        return None, "", None
    first: Mapping[str, Any] = body
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
    error_id = first.get("id")
    detail = first.get("detail") or first.get("message") or first.get("title") or ""
    code = first.get("errorCode")
    return (
        error_id if isinstance(error_id, str) else None,
        detail if isinstance(detail, str) else str(detail),
        str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else None,
    )


def _content_type_for(filename: str) -> str:
    if filename.lower().endswith(".json"):
        return "application/json"
    if filename.lower().endswith(".py"):
        return "text/x-python"
    return "application/octet-stream"


def _json(value: object) -> bytes:
    """Compact JSON, as the client sends it."""
    return json.dumps(value, separators=(",", ":")).encode()


def _multipart(
    files: Iterable[tuple[str, bytes]], fields: Iterable[tuple[str, bytes]] = ()
) -> tuple[bytes, str]:
    """multipart/form-data with one part named ``files`` per file, then one text part per
    form field (name, value).

    The boundary is derived from the files (not random) so the same upload is the same
    bytes, and it is checked not to occur inside any file or field.
    """
    files = list(files)
    fields = list(fields)
    digest = hashlib.sha256()
    for name, content in files:
        digest.update(name.encode() + b"\0" + content + b"\0")
    parts = [content for _, content in files] + [value for _, value in fields]
    salt = 0
    while True:
        boundary = f"labctl-{digest.hexdigest()[:32]}{salt or ''}"
        if not any(boundary.encode() in content for content in parts):
            break
        salt += 1
    out = bytearray()
    for name, content in files:
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'.encode()
        out += f"Content-Type: {_content_type_for(name)}\r\n\r\n".encode()
        out += content + b"\r\n"
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _send(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    body: bytes | None,
    headers: dict[str, str],
) -> None:
    """Send one request with Nagle off (small requests on a kept-alive connection)."""
    if conn.sock is None:
        conn.connect()
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not a TCP socket (tests may hand in others): Nagle then stays on
    conn.request(method, target, body=body, headers=headers)
