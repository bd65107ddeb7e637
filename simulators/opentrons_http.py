"""The simulated robot's HTTP layer: robot-server's API (DEVICES.md section 1) over a Robot.

It answers the way the recordings in shared/reference/opentrons-http/ do (robot-server 8.1,
HTTP API 3/4): status codes, envelopes, camelCase keys, omitted ``None`` fields, 201 on
creation, error bodies ``{"errors": [{id, title, detail, errorCode}]}``, the legacy
``/health`` error shape, and the ``Opentrons-Version`` header being mandatory everywhere.
Requests are parsed and validated here, routed through :data:`ROUTES`, and answered from
the :class:`~labctl.simulators.opentrons_robot_model.Robot`; its refusals become robot-server's
error bodies here.

Threading: one daemon thread per connection (``ThreadingHTTPServer``); the robot has its own
lock.
"""

from __future__ import annotations

import dataclasses
import email.parser
import email.policy
import json
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Mapping
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from labctl.simulators.opentrons_instruments import instruments_body, pipettes_body
from labctl.simulators.opentrons_refusals import ActionNotAllowed, Refusal, Refused
from labctl.simulators.opentrons_robot_model import Robot
from labctl.simulators.opentrons_runs import ACTION_TYPES
from labctl.simulators.opentrons_wire import (
    API_VERSION,
    MAX_PROTOCOL_API,
    MIN_API_VERSION,
    SOFTWARE_VERSION,
    USER_FACING,
)

_log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Replies and error bodies
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reply:
    """One HTTP answer: status and JSON body, and how robot-server sends them."""

    status: int
    body: Any
    compact: bool = False  # errors and /health are compact JSON, model bodies are not
    version_headers: tuple[tuple[str, str], ...] = ()  # sent before content-length
    trailing_headers: tuple[tuple[str, str], ...] = ()  # sent after content-type


_ERROR_VERSION_HEADERS = (
    ("opentrons-min-version", str(MIN_API_VERSION)),
    ("opentrons-version", str(API_VERSION)),
)

# A Flex's estop states, as robot-server refuses runs and their actions in each:
# error id, title, detail, code.
_ESTOP_ERRORS: Mapping[str, tuple[str, str, str, str]] = {
    "not-attached": (
        "EstopNotAttached",
        "There is no Estop attached",
        "An estop must be attached to access this endpoint",
        "3009",
    ),
    "engaged": (
        "EstopEngaged",
        "An Estop is physically engaged",
        "Endpoint access is not permitted while estop is engaged",
        "3008",
    ),
    "not-acknowledged": (
        "EstopNotAcknowledged",
        "Estop event must be acknowledged",
        "Must acknowledge estop event to access this endpoint",
        "3008",
    ),
}


def _error(
    status: int,
    error_id: str,
    title: str,
    detail: str,
    *,
    code: str = "4000",
    source: Mapping[str, str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Reply:
    """robot-server's ErrorBody: ``{"errors": [ErrorDetails]}`` (key order id..errorCode)."""
    details: dict[str, Any] = {"id": error_id, "title": title, "detail": detail}
    if source is not None:
        details["source"] = dict(source)
    if meta is not None:
        details["meta"] = dict(meta)
    details["errorCode"] = code
    return Reply(status, {"errors": [details]}, True, _ERROR_VERSION_HEADERS)


def _legacy_error(message: str) -> Reply:
    """The error shape of the legacy /health router: ``{"message", "errorCode"}``."""
    return Reply(422, {"message": message, "errorCode": "4000"}, True, _ERROR_VERSION_HEADERS)


def _invalid_request(detail: str, source: Mapping[str, str]) -> Reply:
    return _error(422, "InvalidRequest", "Invalid Request", detail, source=source)


def _unexpected(detail: str) -> Reply:
    return _error(500, "UnexpectedError", "Unexpected Internal Error", detail)


def _run_not_found(run_id: str) -> Reply:
    return _error(
        404,
        "RunNotFound",
        "Run Not Found",
        f"Error 4000 GENERAL_ERROR (RunNotFoundError): Run {run_id} was not found.",
    )


def _run_not_found_from_exc(run_id: str) -> Reply:
    """The commands routes word RunNotFoundError through ``ErrorDetails.from_exc``: its
    message as the detail, and the error itself in ``meta``."""
    message = f"Run {run_id} was not found."
    meta = {
        "type": "RunNotFoundError",
        "code": "4000",
        "message": message,
        "detail": {"runId": run_id},
        "wrapping": [],
    }
    return _error(404, "RunNotFound", "Run Not Found", message, meta=meta)


def _protocol_not_found(protocol_id: str, *, quoted: bool = True) -> Reply:
    """robot-server words it two ways: a KeyError's text (quoted) or a plain sentence."""
    if quoted:
        detail = f"'Protocol {protocol_id} was not found.'"
    else:
        detail = f"Protocol {protocol_id} not found"
    return _error(404, "ProtocolNotFound", "Protocol Not Found", detail)


def _command_not_found(command_id: str) -> Reply:
    message = f"Command {command_id} does not exist"
    meta = {
        "type": "CommandDoesNotExistError",
        "code": "4000",
        "message": message,
        "detail": {},
        "wrapping": [],
    }
    return _error(404, "CommandNotFound", "Run Command Not Found", message, meta=meta)


def _robot_type_mismatch(protocol_robot_type: str, robot_type: str) -> Reply:
    theirs = USER_FACING.get(protocol_robot_type, (protocol_robot_type, protocol_robot_type))[0]
    ours = USER_FACING[robot_type][1]
    return _error(
        422,
        "ProtocolRobotTypeMismatch",
        "Protocol For Different Robot Type",
        f"This protocol is for {theirs} robots. It can't be analyzed or run on this"
        f" robot, which is {ours}.",
    )


def _estop(state: str) -> Reply:
    error_id, title, detail, code = _ESTOP_ERRORS[state]
    return _error(403, error_id, title, detail, code=code)


def _run_not_idle() -> Reply:
    return _error(
        409,
        "RunNotIdle",
        "Run is not idle.",
        "Run is currently active. Allow the run to finish or stop it with a `stop` action"
        " before attempting to modify it.",
        code="4001",
    )


def _action_not_allowed(exc: ActionNotAllowed) -> Reply:
    meta = {
        "type": "RunActionNotAllowedError",
        "code": "3000",
        "message": exc.message,
        "detail": {},
        "wrapping": [
            {
                "type": exc.engine_error,
                "code": "4000",
                "message": exc.message,
                "detail": {},
                "wrapping": [],
            }
        ],
    }
    return _error(
        409, "RunActionNotAllowed", "Run Action Not Allowed", exc.message, code="3000", meta=meta
    )


# How robot-server words each refusal (as most endpoints do): status, error id, title,
# detail ({} is the refusal's subject) and code; the others below.
_REFUSAL_BODIES: Mapping[Refused, tuple[int, str, str, str, str]] = {
    # robot-server's analysis_store: AnalysisNotFoundError / AnalysisIsPendingError (ValueError
    # and RuntimeError: no KeyError quotes; the id in double quotes).
    Refused.ANALYSIS_NOT_FOUND: (
        404,
        "AnalysisNotFound",
        "Protocol Analysis Not Found",
        'Analysis "{}" not found.',
        "4000",
    ),
    Refused.PROTOCOL_USED_BY_RUN: (
        409,
        "ProtocolUsedByRun",
        "Protocol Used by Run",
        "Protocol {} is used by a run and cannot be deleted.",
        "4000",
    ),
    Refused.ANALYSIS_PENDING: (
        503,
        "LastAnalysisPending",
        "Last Analysis Still Pending.",
        'Analysis "{}" is still pending.',
        "4000",
    ),
    Refused.FILES_INVALID: (422, "ProtocolFilesInvalid", "Protocol File(s) Invalid", "{}", "4000"),
    Refused.RUN_ALREADY_ACTIVE: (
        409,
        "RunAlreadyActive",
        "Run Already Active",
        "Current run is not idle or stopped.",
        "4001",
    ),
    Refused.RUN_NOT_CURRENT: (
        409,
        "RunStopped",
        "Run Stopped",
        "Run {} is not the current run",
        "4000",
    ),
    # robot-server 8.x update_run: RunDataManager.update's RunNotCurrentError, and the
    # run orchestrator's RunConflictError, each as its detail.
    Refused.UPDATE_NOT_CURRENT: (
        409,
        "RunStopped",
        "Run Stopped",
        "Cannot update {} because it is not the current run.",
        "4000",
    ),
    Refused.UPDATE_NOT_IDLE: (
        409,
        "RunNotIdle",
        "Run is not idle.",
        "Current run is not idle or stopped.",
        "4001",
    ),
}
_REFUSAL_REPLIES: Mapping[Refused, Callable[[str, Robot], Reply]] = {
    Refused.PROTOCOL_NOT_FOUND: lambda s, _: _protocol_not_found(s),
    Refused.RUN_NOT_FOUND: lambda s, _: _run_not_found(s),
    Refused.COMMAND_NOT_FOUND: lambda s, _: _command_not_found(s),
    Refused.ANALYSIS_PROCESS_DIED: lambda s, _: _unexpected(f"the analysis process died: {s}"),
    Refused.ROBOT_TYPE_MISMATCH: lambda s, robot: _robot_type_mismatch(s, robot.robot_type),
    # ASSUMPTION: robot-server lets the protocol's ParameterValueError (a plain ValueError)
    # escape run creation, which its handlers answer with a 500.
    Refused.PARAMETER_VALUES: lambda s, _: _unexpected(s),
    Refused.ESTOP: lambda s, _: _estop(s),
    Refused.RUN_NOT_IDLE: lambda s, _: _run_not_idle(),
}


def _refusal(robot: Robot, exc: Refusal) -> Reply:
    """robot-server's answer to a refusal, worded as most endpoints word it."""
    body = _REFUSAL_BODIES.get(exc.reason)
    if body is None:
        return _REFUSAL_REPLIES[exc.reason](exc.subject, robot)
    status, error_id, title, detail, code = body
    return _error(status, error_id, title, detail.format(exc.subject), code=code)


# --------------------------------------------------------------------------------------------
# Request parsing
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """One routed request: the path's parameters, the query, headers (lower-case names),
    the body, and the API version it is answered in."""

    args: tuple[str, ...]
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    version: int


class _BadQuery(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _int_query(query: Mapping[str, list[str]], name: str, default: int | None) -> int | None:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError as exc:
        raise _BadQuery(name) from exc


def _json_data(body: bytes) -> dict[str, Any] | Reply:
    """The ``data`` object of a JSON body, or the 422 robot-server answers without one."""
    try:
        parsed = json.loads(body or b"null")
    except ValueError as exc:
        return _invalid_request(str(exc), {"pointer": "/"})
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(data, dict):
        return _invalid_request("field required", {"pointer": "/data"})
    return data


def _rtp_values_ok(values: object) -> bool:
    """A ``runTimeParameterValues`` object: names to numbers, booleans or strings."""
    return isinstance(values, dict) and all(
        isinstance(k, str)
        and isinstance(v, bool | int | str | float)
        and not (isinstance(v, float) and not math.isfinite(v))
        for k, v in values.items()
    )


_RTP_VALUES_INVALID = "runTimeParameterValues must be an object of numbers, booleans and strings"


def _requested_version(headers: Mapping[str, str]) -> str | None:
    """The Opentrons-Version header: "*", a number as text, "invalid", or None if missing."""
    value = headers.get("opentrons-version")
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return "*"
    return value if re.fullmatch(r"-?\d+", value) else "invalid"


def _parse_multipart(
    content_type: str, body: bytes
) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """Split a multipart/form-data body into its ``files`` parts and its text fields."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("not multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ValueError("no parts")
    files: list[tuple[str, bytes]] = []
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        # (decode=True on a leaf part gives bytes; anything else carries no payload here.)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if name == "files" and filename:
            files.append((Path(filename).name, data))
        elif isinstance(name, str):
            fields[name] = data.decode("utf-8", errors="replace")
    return files, fields


# --------------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------------


def _get_health(robot: Robot, req: Request) -> Reply:
    flex = robot.robot == "Flex"
    logs = ["/logs/serial.log", "/logs/api.log", "/logs/server.log", "/logs/update_server.log"]
    links = {
        "apiLog": "/logs/api.log",
        "serialLog": "/logs/serial.log",
        "serverLog": "/logs/server.log",
    }
    if flex:
        logs.append("/logs/touchscreen.log")
        links["oddLog"] = "/logs/touchscreen.log"
    links.update(apiSpec="/openapi.json", systemTime="/system/time")
    body = {
        "name": robot.name,
        "robot_model": robot.robot_type,
        "api_version": SOFTWARE_VERSION,
        "fw_version": "0" if flex else "Virtual Smoothie",
        "board_revision": "UNKNOWN" if flex else "2.1",
        "logs": logs,
        "system_version": "0.0.0",
        "maximum_protocol_api_version": list(MAX_PROTOCOL_API),
        "minimum_protocol_api_version": [2, 15] if flex else [2, 0],
        "robot_serial": "simulator",
        "links": links,
    }
    return Reply(
        200,
        body,
        compact=True,
        trailing_headers=(
            ("opentrons-version", str(req.version)),
            ("opentrons-min-version", str(MIN_API_VERSION)),
        ),
    )


def _get_instruments(robot: Robot, req: Request) -> Reply:
    return Reply(200, instruments_body(robot.robot, robot.instruments))


def _get_pipettes(robot: Robot, req: Request) -> Reply:
    # The legacy router: a FastAPI response_model, nulls sent.
    return Reply(200, pipettes_body(robot.robot, robot.instruments))


def _get_modules(robot: Robot, req: Request) -> Reply:
    # No modules attached. HTTP API 2 and below get the legacy router's shape.
    if req.version <= 2:
        return Reply(200, {"modules": []})
    return Reply(200, {"data": [], "meta": {"cursor": 0, "totalLength": 0}})


def _post_protocols(robot: Robot, req: Request) -> Reply:
    try:
        files, fields = _parse_multipart(req.headers.get("content-type", ""), req.body)
    except ValueError:
        files, fields = [], {}
    if not files:
        return _invalid_request("field required", {"pointer": "/files"})
    kind = fields.get("protocolKind") or "standard"
    if kind not in ("standard", "quick-transfer"):
        return _error(400, "BadRequest", "Bad Request", f"Invalid protocol_kind: {kind}")
    values: dict[str, Any] = {}
    if "runTimeParameterValues" in fields:
        # A JSON object in a form field (robot-server json.loads it as it is).
        try:
            parsed = json.loads(fields["runTimeParameterValues"])
        except ValueError as exc:
            return _unexpected(str(exc))
        if not _rtp_values_ok(parsed):
            return _invalid_request(_RTP_VALUES_INVALID, {"parameter": "runTimeParameterValues"})
        values = parsed
    upload = robot.upload(files, values, key=fields.get("key"), kind=kind)
    return Reply(201 if upload.created else 200, upload.body)


def _get_protocols(robot: Robot, req: Request) -> Reply:
    return Reply(200, robot.list_protocols())


def _get_protocol(robot: Robot, req: Request) -> Reply:
    return Reply(200, robot.protocol(req.args[0]))


def _delete_protocol(robot: Robot, req: Request) -> Reply:
    robot.delete_protocol(req.args[0])
    return Reply(200, {})


def _get_analyses(robot: Robot, req: Request) -> Reply:
    try:
        return Reply(200, robot.analyses(req.args[0]))
    except Refusal as exc:
        if exc.reason is Refused.PROTOCOL_NOT_FOUND:
            return _protocol_not_found(exc.subject, quoted=False)
        raise


def _get_analysis(robot: Robot, req: Request) -> Reply:
    try:
        return Reply(200, robot.analysis_of(*req.args))
    except Refusal as exc:
        if exc.reason is Refused.PROTOCOL_NOT_FOUND:
            return _protocol_not_found(exc.subject, quoted=False)
        raise


def _post_runs(robot: Robot, req: Request) -> Reply:
    robot.check_estop()
    data: Mapping[str, Any] = {}
    if req.body.strip():
        parsed = _json_data(req.body)
        if isinstance(parsed, Reply):
            return parsed
        data = parsed
    values = data.get("runTimeParameterValues")
    if values is None:
        values = {}
    elif not _rtp_values_ok(values):
        return _invalid_request(_RTP_VALUES_INVALID, {"pointer": "/data/runTimeParameterValues"})
    offsets = data.get("labwareOffsets") or []
    return Reply(201, robot.create_run(data.get("protocolId"), values, offsets))


def _get_runs(robot: Robot, req: Request) -> Reply:
    return Reply(200, robot.list_runs(_int_query(req.query, "pageLength", None)))


def _get_run(robot: Robot, req: Request) -> Reply:
    return Reply(200, robot.run(req.args[0]))


def _patch_run(robot: Robot, req: Request) -> Reply:
    data = _json_data(req.body)
    if isinstance(data, Reply):
        return data
    if "current" in data and data["current"] is not False:
        return _invalid_request("unexpected value; permitted: False", {"pointer": "/data/current"})
    return Reply(200, robot.patch_run(req.args[0], data.get("current")))


def _delete_run(robot: Robot, req: Request) -> Reply:
    robot.delete_run(req.args[0])
    return Reply(200, {})


def _post_action(robot: Robot, req: Request) -> Reply:
    data = _json_data(req.body)
    if isinstance(data, Reply):
        return data
    action_type = data.get("actionType")
    if action_type is None:
        return _invalid_request("field required", {"pointer": "/data/actionType"})
    if action_type not in ACTION_TYPES:
        permitted = ", ".join(f"'{a}'" for a in ACTION_TYPES)
        return _invalid_request(
            f"value is not a valid enumeration member; permitted: {permitted}",
            {"pointer": "/data/actionType"},
        )
    run_id = req.args[0]
    try:
        return Reply(201, robot.act(run_id, action_type))
    except Refusal as exc:
        if exc.reason is Refused.RUN_NOT_FOUND:  # worded as a plain sentence here
            return _error(404, "RunNotFound", "Run Not Found", f"Run {run_id} not found.")
        raise
    except ActionNotAllowed as exc:
        return _action_not_allowed(exc)


def _get_commands(robot: Robot, req: Request) -> Reply:
    cursor = _int_query(req.query, "cursor", None)
    length = _int_query(req.query, "pageLength", 20) or 20
    try:
        return Reply(200, robot.commands(req.args[0], cursor, length))
    except Refusal as exc:
        if exc.reason is Refused.RUN_NOT_FOUND:
            return _run_not_found_from_exc(exc.subject)
        raise


def _get_command(robot: Robot, req: Request) -> Reply:
    try:
        return Reply(200, robot.command(*req.args))
    except Refusal as exc:
        if exc.reason is Refused.RUN_NOT_FOUND:
            return _run_not_found_from_exc(exc.subject)
        raise


def _get_command_errors(robot: Robot, req: Request) -> Reply:
    cursor = _int_query(req.query, "cursor", 0) or 0
    length = _int_query(req.query, "pageLength", 20) or 20
    return Reply(200, robot.command_errors(req.args[0], cursor, length))


Handler = Callable[[Robot, Request], Reply]


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    legacy_errors: bool = False  # the error shape of robot-server's V1-tagged routes


#: The API: method and path pattern (groups are the handler's ``Request.args``) -> handler.
ROUTES: tuple[Route, ...] = (
    Route("GET", re.compile(r"^/health$"), _get_health, legacy_errors=True),
    Route("GET", re.compile(r"^/instruments$"), _get_instruments),
    Route("GET", re.compile(r"^/pipettes$"), _get_pipettes, legacy_errors=True),
    Route("GET", re.compile(r"^/modules$"), _get_modules),
    Route("POST", re.compile(r"^/protocols$"), _post_protocols),
    Route("GET", re.compile(r"^/protocols$"), _get_protocols),
    Route("GET", re.compile(r"^/protocols/([^/]+)$"), _get_protocol),
    Route("DELETE", re.compile(r"^/protocols/([^/]+)$"), _delete_protocol),
    Route("GET", re.compile(r"^/protocols/([^/]+)/analyses$"), _get_analyses),
    Route("GET", re.compile(r"^/protocols/([^/]+)/analyses/([^/]+)$"), _get_analysis),
    Route("POST", re.compile(r"^/runs$"), _post_runs),
    Route("GET", re.compile(r"^/runs$"), _get_runs),
    Route("GET", re.compile(r"^/runs/([^/]+)$"), _get_run),
    Route("PATCH", re.compile(r"^/runs/([^/]+)$"), _patch_run),
    Route("DELETE", re.compile(r"^/runs/([^/]+)$"), _delete_run),
    Route("POST", re.compile(r"^/runs/([^/]+)/actions$"), _post_action),
    Route("GET", re.compile(r"^/runs/([^/]+)/commands$"), _get_commands),
    Route("GET", re.compile(r"^/runs/([^/]+)/commands/([^/]+)$"), _get_command),
    Route("GET", re.compile(r"^/runs/([^/]+)/commandErrors$"), _get_command_errors),
)


def _match_route(method: str, path: str) -> tuple[Route, tuple[str, ...]] | str | None:
    """(route, path args); "method" if the path exists for another method; None."""
    path_known = False
    for route in ROUTES:
        match = route.pattern.match(path)
        if match is None:
            continue
        if route.method == method:
            return route, match.groups()
        path_known = True
    return "method" if path_known else None


def handle_request(
    robot: Robot, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> Reply | None:
    """Answer one request; None means close the connection without a reply (offline)."""
    robot.note_request(method)
    if robot.faults.offline:
        return None
    parts = urlsplit(target)
    path = parts.path.rstrip("/") or "/"
    matched = _match_route(method, path)
    if matched is None:
        return _error(404, "BadRequest", "Bad Request", "Not Found")
    if isinstance(matched, str):
        return _error(405, "BadRequest", "Bad Request", "Method Not Allowed")
    route, args = matched
    version = _requested_version(headers)
    if version is None:
        if route.legacy_errors:
            return _legacy_error("header.opentrons-version: field required")
        return _invalid_request("field required", {"header": "opentrons-version"})
    if version == "invalid":
        if route.legacy_errors:
            return _legacy_error("header.opentrons-version: value is not a valid integer")
        return _invalid_request("value is not a valid integer", {"header": "opentrons-version"})
    used = API_VERSION if version == "*" else min(int(version), API_VERSION)
    if used < MIN_API_VERSION:
        return _error(
            400,
            "OutdatedAPIVersion",
            "Requested HTTP API version no longer supported",
            f"HTTP API version {used} is no longer supported. Please upgrade your Opentrons"
            " App or other client to a newer version.",
        )
    request = Request(args, parse_qs(parts.query), headers, body, used)
    try:
        return route.handler(robot, request)
    except _BadQuery as exc:
        return _invalid_request("value is not a valid integer", {"parameter": exc.name})
    except Refusal as exc:
        return _refusal(robot, exc)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], robot: Robot) -> None:
        self.robot = robot
        self._open: set[socket.socket] = set()  # client connections being served
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop every client connection, kept-alive ones too, as a robot that goes down
        does (its clients then reconnect to whatever answers on the address next)."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its client


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; every answer carries content-length."""

    protocol_version = "HTTP/1.1"
    # Replies go out in several writes; without this, Nagle and the client's delayed ACK
    # stall every kept-alive request by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def handle(self) -> None:
        if self.server.robot.faults.offline:
            return  # accept, then close without a byte: the robot is not answering
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        _log.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        robot = self.server.robot
        try:
            reply = handle_request(robot, self.command, self.path, headers, body)
        except Exception:  # the robot answers 500 rather than dropping the connection
            _log.exception("robot simulator: unhandled error for %s %s", self.command, self.path)
            reply = _unexpected("the simulated robot-server failed; see its log")
        if reply is None:
            self.close_connection = True
            return
        if reply.compact:
            payload = json.dumps(reply.body, separators=(",", ":"), ensure_ascii=False)
        else:
            # FastAPI's model responses are pydantic v1 .json(): default separators, ASCII.
            payload = json.dumps(reply.body)
        data = payload.encode("utf-8")
        self.send_response_only(reply.status)
        self.send_header("date", format_datetime(robot.clock.now(), usegmt=True))
        self.send_header("server", "uvicorn")
        for key, value in reply.version_headers:
            self.send_header(key, value)
        self.send_header("content-length", str(len(data)))
        self.send_header("content-type", "application/json")
        for key, value in reply.trailing_headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch


class HttpServer:
    """Serves a robot's HTTP API on ``(host, port)`` (0: any free port) from a background
    thread, between :meth:`start` and :meth:`stop`."""

    def __init__(self, robot: Robot, host: str, port: int) -> None:
        self.host = host
        self._server = _Server((host, port), robot)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"robot-sim-{robot.robot}",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, drop the client connections and close the socket."""
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
