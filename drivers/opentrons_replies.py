"""What the Opentrons robot-server's JSON replies mean: the reply types and their parsing.

Each parse function takes one parsed JSON reply (DEVICES.md section 1) and returns what the
client hands on; it raises :class:`ShapeError` when the reply is JSON but not of the
expected shape (the client turns that into a DeviceCommunicationError naming the request).
Replies may carry keys these functions do not know and omit fields that are ``None``; both
are tolerated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

__all__ = [
    "Analysis",
    "BadRun",
    "EngineError",
    "FailedCommand",
    "ParameterValue",
    "RobotHealth",
    "RobotModel",
    "RunPhase",
    "RunRecord",
    "RunStatus",
    "ShapeError",
    "StartedRun",
    "UploadedProtocol",
    "phase_of",
]

RobotModel = Literal["OT-2", "Flex"]

#: A run-time parameter value (Protocol API 2.18+ ``add_int``/``add_float``/``add_bool``/
#: ``add_str``), sent as a JSON number, boolean or string.
ParameterValue = int | float | bool | str

# robot-server names the Flex "OT-3" on the wire (/health robot_model, protocol robotType).
_ROBOT_MODELS: dict[str, RobotModel] = {"OT-2 Standard": "OT-2", "OT-3 Standard": "Flex"}

# Deepest ErrorOccurrence nesting we follow; real chains are 3 deep.
_MAX_ERROR_DEPTH = 32


class ShapeError(Exception):
    """A reply that parsed as JSON but not in the expected shape."""


class BadRun(Exception):
    """The robot cannot read its own stored run (a robot-server BadRun); the message is the
    run's ``dataError``."""


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


@dataclass(frozen=True)
class RunRecord:
    """``GET /runs/{rid}`` itself: what :func:`run_status` combines with the command page."""

    run_id: str
    status: str
    current: bool
    error: EngineError | None


# ---------------------------------------------------------------------- replies


def health(reply: object) -> RobotHealth:
    """``GET /health`` (not enveloped, snake_case)."""
    h = _obj(reply, "reply")
    model = _str(h, "robot_model")
    if model not in _ROBOT_MODELS:
        raise ShapeError(f"unknown robot_model {model!r}")
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


def uploaded(status: int, reply: object) -> UploadedProtocol:
    """``POST /protocols`` answered with HTTP ``status`` (200: the files were there already)."""
    data = _data(reply)
    summaries = _list(data, "analysisSummaries")
    if not summaries:
        raise ShapeError("no analysisSummaries")
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


def analysis(protocol_id: str, reply: object) -> Analysis:
    """``GET /protocols/{pid}/analyses/{aid}``."""
    data = _data(reply)
    status = _str(data, "status")
    result = _opt_str(data, "result")
    if status == "completed" and result is None:
        raise ShapeError("completed analysis without a result")
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


def envelope(reply: object) -> dict[str, Any]:
    """The object inside a ``{"data": {...}}`` envelope (an action's or a PATCH's reply)."""
    return _data(reply)


def created_id(reply: object) -> str:
    """The id of what a POST created (``data.id``)."""
    return _str(_data(reply), "id")


def run_record(run_id: str, reply: object) -> RunRecord:
    """``GET /runs/{rid}``; raises :class:`BadRun` when the robot cannot read the run."""
    data = _data(reply)
    if data.get("ok") is False:
        raise BadRun(data.get("dataError", "unknown error"))
    rid = _str(data, "id", default=run_id)
    status = _str(data, "status")
    errors = _list(data, "errors", default=[])
    error = _flatten(errors[0]) if errors else None
    return RunRecord(rid, status, data.get("current") is True, error)


def command_position(reply: object) -> tuple[int, int | None, str | None]:
    """(totalLength, links.current index, links.current command id) of a command page."""
    total = _int(_obj(_obj(reply, "reply").get("meta"), "meta"), "totalLength")
    link = _current_link(reply)
    if link is None:
        return total, None, None
    return total, link[0], link[1]


def phase_of(status: str) -> RunPhase:
    """What a run's raw engine status means (a status this client does not know needs a
    person: it neither claims success nor failure)."""
    return _PHASES.get(status, RunPhase.NEEDS_OPERATOR)


def run_status(run: RunRecord, position: tuple[int, int | None, str | None]) -> RunStatus:
    """A run and the :func:`command_position` of its commands (paged from cursor 0)."""
    phase = phase_of(run.status)
    total, index, command_id = position
    if index is None:
        done = 0
    elif phase.terminal:
        done = index + 1
    else:
        done = index  # the current command is still running
    return RunStatus(
        run_id=run.run_id,
        status=run.status,
        phase=phase,
        current=run.current,
        error=run.error,
        commands_done=min(done, total),
        commands_total=total,
        current_command_id=command_id,
    )


def command_errors(reply: object) -> tuple[list[Any], int]:
    """(the page's items, totalLength) of ``GET /runs/{rid}/commandErrors``."""
    items = _list(reply, "data")
    total = _int(
        _obj(_obj(reply, "reply").get("meta", {}), "meta"), "totalLength", default=len(items)
    )
    return items, total


def items(reply: object) -> list[Any]:
    """The ``data`` list of a page."""
    return _list(reply, "data")


def engine_error(item: object) -> EngineError:
    """One ErrorOccurrence, flattened."""
    return _flatten(item)


def failed_command(reply: object, latest: EngineError) -> FailedCommand:
    """The failed command in a page around the run's current command, if it is the current
    one; else only ``latest``, the run's newest command error."""
    link = _current_link(reply)
    for item in _list(reply, "data"):
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
    return FailedCommand(error=latest, command_id=None, command_type=None, index=None)


def current_run_id(reply: object) -> str | None:
    """The run id in ``links.current`` of ``GET /runs``, or None."""
    links = _obj(reply, "reply").get("links") or {}
    current = _obj(links, "links").get("current")
    if current is None:
        return None
    href = _str(_obj(current, "links.current"), "href")
    prefix = "/runs/"
    if not href.startswith(prefix) or len(href) == len(prefix):
        raise ShapeError(f"unexpected current run link {href!r}")
    return href[len(prefix) :]


# ---------------------------------------------------------------------- parsing helpers


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ShapeError(f"{what} is not an object")
    return value


def _data(reply: object) -> dict[str, Any]:
    """The object inside a ``{"data": {...}}`` envelope."""
    return _obj(_obj(reply, "reply").get("data"), "data")


def _str(obj: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise ShapeError(f"{key!r} missing or not a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ShapeError(f"{key!r} is not a string")
    return value


def _int(obj: Mapping[str, Any], key: str, *, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ShapeError(f"{key!r} missing or not an integer")
    return value


def _list(obj: object, key: str, *, default: list[Any] | None = None) -> list[Any]:
    value = _obj(obj, "reply").get(key, default)
    if not isinstance(value, list):
        raise ShapeError(f"{key!r} missing or not a list")
    return value


def _level(obj: Mapping[str, Any], key: str) -> tuple[int, int]:
    value = obj.get(key)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ShapeError(f"{key!r} is not [major, minor]")
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
