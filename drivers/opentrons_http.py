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

JSON request bodies are ``{"data": ...}``. The wire itself (headers, the kept-alive
connection, errors) is drivers/opentrons_transport.py; what the replies mean is
drivers/opentrons_replies.py, whose types this module exports too.

Errors are labctl's typed :class:`~labctl.errors.DeviceError` subclasses; a message names the
device and the request, e.g. ``ot2-a: POST /runs: robot busy with another run [device code
4001]``. ``device_code`` is the robot's ``errorCode`` (for a failed protocol, the innermost
one, such as ``"3005"`` for TipNotAttachedError). A reply of the wrong shape is a
DeviceCommunicationError ("unexpected reply").

One client may be shared between threads. The client never repeats a request that changes
something: whether a repeated POST is safe is the engine's decision (after an ambiguous
``play``, ask ``current_run_id()`` and ``run_status()``).
"""

from __future__ import annotations

import http.client
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from labctl.clock import Clock
from labctl.errors import DeviceCommunicationError, DeviceFault, DeviceTimeout

from . import opentrons_replies as replies
from .opentrons_replies import (
    Analysis,
    EngineError,
    FailedCommand,
    ParameterValue,
    RobotHealth,
    RobotModel,
    RunPhase,
    RunStatus,
    ShapeError,
    StartedRun,
    UploadedProtocol,
)
from .opentrons_transport import (
    DEFAULT_PORT,
    NotFound,
    ProtocolRejected,
    RobotTransport,
    compact_json,
    multipart,
)

__all__ = [
    "DEFAULT_PORT",
    "Analysis",
    "EngineError",
    "FailedCommand",
    "NotFound",
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

_T = TypeVar("_T")

# Command errors fetched in one page (the Opentrons app uses the same page length).
_ERRORS_PAGE_LENGTH = 100


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
        self._http = RobotTransport(
            name, base_url, api_version=api_version, timeout_s=self.timeout_s
        )

    # ------------------------------------------------------------------ the sequence

    def health(self) -> RobotHealth:
        """``GET /health`` (not enveloped, snake_case)."""
        return self._call("GET", "/health", replies.health)

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
        values = _parameter_values(self.name, run_time_parameters)
        if values:
            fields.append(("runTimeParameterValues", compact_json(values)))
        body, content_type = multipart(files, fields)
        status, reply = self._http.request(
            "POST", "/protocols", body=body, content_type=content_type
        )
        return self._parsed(command, replies.uploaded, status, reply)

    def get_analysis(self, protocol_id: str, analysis_id: str) -> Analysis:
        """One ``GET /protocols/{pid}/analyses/{aid}``."""
        path = f"/protocols/{_seg(protocol_id)}/analyses/{_seg(analysis_id)}"
        return self._call("GET", path, partial(replies.analysis, protocol_id))

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
        values = _parameter_values(self.name, run_time_parameters)
        if values:
            data["runTimeParameterValues"] = values
        return self._call("POST", "/runs", replies.created_id, json_body={"data": data})

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
        body = {"data": {"current": False}}
        self._call("PATCH", f"/runs/{_seg(run_id)}", replies.envelope, json_body=body)

    def run_status(self, run_id: str) -> RunStatus:
        """``GET /runs/{rid}`` and ``GET /runs/{rid}/commands?cursor=0&pageLength=1``."""
        path = f"/runs/{_seg(run_id)}"
        try:
            run = self._call("GET", path, partial(replies.run_record, run_id))
        except replies.BadRun as exc:
            raise DeviceFault(
                self.name, f"GET {path}", f"robot cannot read run {run_id}: {exc}"
            ) from None
        # Without cursor the robot pages around its current command, not from 0; cursor=0
        # gives totalLength and links.current whatever the run's progress.
        query = {"cursor": 0, "pageLength": 1}
        position = self._call("GET", f"{path}/commands", replies.command_position, query=query)
        return replies.run_status(run, position)

    def failed_command(self, run_id: str) -> FailedCommand | None:
        """The run's latest command error and, if it is the current command, that command.

        ``GET /runs/{rid}/commandErrors`` then ``GET /runs/{rid}/commands?pageLength=1`` (the
        page around the current command). None if no command failed (a run can still fail
        outside any command: see ``RunStatus.error``).
        """
        path = f"/runs/{_seg(run_id)}/commandErrors"
        query = {"cursor": 0, "pageLength": _ERRORS_PAGE_LENGTH}
        items, total = self._call("GET", path, replies.command_errors, query=query)
        if not items:
            return None
        if total > len(items):
            # More errors than one page (long error recovery): fetch the newest one.
            query = {"cursor": total - 1, "pageLength": 1}
            items = self._call("GET", path, replies.items, query=query) or items
        latest = self._parsed(f"GET {path}", replies.engine_error, items[-1])
        cpath = f"/runs/{_seg(run_id)}/commands"
        parse = partial(replies.failed_command, latest=latest)
        return self._call("GET", cpath, parse, query={"pageLength": 1})

    def current_run_id(self) -> str | None:
        """The robot's current run (``GET /runs`` ``links.current``), or None.

        Use it after an ambiguous failure (timeout on ``POST /runs`` or ``play``) or a
        controller restart, to find out what the robot is doing.
        """
        return self._call("GET", "/runs", replies.current_run_id, query={"pageLength": 1})

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

    def get(self, path: str, query: Mapping[str, object] | None = None) -> Any:
        """One GET of a resource this client has no method for; the reply's JSON as sent.

        Errors as for every request (DeviceError subclasses); the shape is the caller's to
        check.
        """
        return self._http.request("GET", path, query=query)[1]

    def close(self) -> None:
        """Close the kept-alive connection (a later request opens a new one)."""
        self._http.close()

    @property
    def link_losses(self) -> int:
        """Requests so far that failed for want of a link (refused, timed out, dropped): when
        it grew, the robot may have been restarted (and its pipettes changed) since."""
        return self._http.link_losses

    @property
    def _conn(self) -> http.client.HTTPConnection | None:
        # The transport's kept-alive connection (tests check that GETs share it).
        return self._http.kept_connection

    # ------------------------------------------------------------------ helpers

    def _action(self, run_id: str, action: str) -> None:
        body = {"data": {"actionType": action}}
        self._call("POST", f"/runs/{_seg(run_id)}/actions", replies.envelope, json_body=body)

    def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], _T],
        *,
        query: Mapping[str, object] | None = None,
        json_body: object = None,
    ) -> _T:
        """One request, its reply read by ``parse``."""
        _, reply = self._http.request(method, path, query=query, json_body=json_body)
        return self._parsed(f"{method} {path}", parse, reply)

    def _parsed(self, command: str, parse: Callable[..., _T], *args: Any) -> _T:
        """``parse(*args)``; a reply of the wrong shape becomes a DeviceCommunicationError."""
        try:
            return parse(*args)
        except ShapeError as exc:
            raise DeviceCommunicationError(self.name, command, f"unexpected reply: {exc}") from None


def _seg(value: str) -> str:
    """Quote an id for use as one path segment."""
    return quote(value, safe="")


def _parameter_values(
    device: str, values: Mapping[str, ParameterValue] | None
) -> dict[str, ParameterValue]:
    """Checked copy of run-time parameter values, in name order (same values, same bytes).

    Raises ValueError for a name that is not an identifier or a value that is not a finite
    number, a boolean or a string.
    """
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
                f"{device}: run-time parameter {name!r} = {value!r} is not a name with"
                " a finite number, boolean or string"
            )
        out[name] = value
    return dict(sorted(out.items()))
