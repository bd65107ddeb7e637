"""robot-server's JSON conventions, shared by the simulated robot's modules (DEVICES.md 1).

Versions and robot types, timestamps, ids, ``ErrorOccurrence`` bodies, and the id and time
rewriting that turns an analysis into the commands of a run or a served analysis.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

RobotName = Literal["OT-2", "Flex"]

#: robot-server's ``robot_model`` / ``robotType`` for each simulated robot.
ROBOT_TYPES: Mapping[str, str] = {"OT-2": "OT-2 Standard", "Flex": "OT-3 Standard"}
#: How robot-server names a robot type to a user: (short name, with an article).
USER_FACING: Mapping[str, tuple[str, str]] = {
    "OT-2 Standard": ("OT-2", "an OT-2"),
    "OT-3 Standard": ("Flex", "a Flex"),
}

API_VERSION = 4  # robot_server/versioning.py
MIN_API_VERSION = 2
SOFTWARE_VERSION = "8.8.2"  # the opentrons package that analyses protocols here
MAX_PROTOCOL_API = (2, 27)  # opentrons 8.8.2 MAX_SUPPORTED_VERSION

TIME_KEYS = ("createdAt", "startedAt", "completedAt")


def iso(dt: datetime) -> str:
    """robot-server's timestamp form: ``2026-11-26T20:07:27.407749+00:00``."""
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def new_id() -> str:
    return str(uuid.uuid4())


def error_occurrence(
    error_type: str,
    code: str,
    detail: str,
    at: datetime,
    *,
    error_id: str | None = None,
    defined: bool = False,
    wrapped: Sequence[Mapping[str, Any]] = (),
    info: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An ``ErrorOccurrence`` in robot-server's key order (``info``: its ``errorInfo``)."""
    return {
        "id": error_id or new_id(),
        "createdAt": iso(at),
        "isDefined": defined,
        "errorType": error_type,
        "errorCode": code,
        "detail": detail,
        "errorInfo": dict(info or {}),
        "wrappedErrors": list(wrapped),
    }


def protocol_failure(
    inner: Mapping[str, Any], at: datetime, line: int | None = None
) -> dict[str, Any]:
    """Wrap a command error the way a Python protocol's run error is nested (recordings):
    ExceptionInProtocolError wrapping ProtocolCommandFailedError (the two share one id)
    wrapping ``inner``; ``line``: the protocol's line that issued the command, if known."""
    outer_id = new_id()
    text = f"{inner['errorType']}: {inner['detail']}"
    middle = error_occurrence(
        "ProtocolCommandFailedError", "4000", text, at, error_id=outer_id, wrapped=[inner]
    )
    where = f" [line {line}]" if line is not None else ""
    detail = (
        f"ProtocolCommandFailedError{where}: Error 4000 GENERAL_ERROR"
        f" (ProtocolCommandFailedError): {text}"
    )
    return error_occurrence(
        "ExceptionInProtocolError", "4000", detail, at, error_id=outer_id, wrapped=[middle]
    )


def error_tree_has_code(error: Mapping[str, Any], code: str) -> bool:
    """Whether ``error`` or any error it wraps has ``errorCode`` ``code``."""
    if error.get("errorCode") == code:
        return True
    return any(error_tree_has_code(e, code) for e in error.get("wrappedErrors", []))


def rebase_times(obj: Any, shift: timedelta) -> Any:
    """Copy of ``obj`` with every createdAt/startedAt/completedAt moved by ``shift``."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key in TIME_KEYS and isinstance(value, str):
                out[key] = iso(datetime.fromisoformat(value) + shift)
            else:
                out[key] = rebase_times(value, shift)
        return out
    if isinstance(obj, list | tuple):
        return [rebase_times(v, shift) for v in obj]
    return obj


def rebase_commands(
    commands: Sequence[Mapping[str, Any]], shift: timedelta
) -> list[dict[str, Any]]:
    """:func:`rebase_times` for a command list, sharing what holds no times.

    A command's times are its own createdAt/startedAt/completedAt and those inside its
    ``error``; its params and result (most of an analysis) are shared, not copied: what is
    served is read-only.
    """
    out = []
    for cmd in commands:
        moved = dict(cmd)
        for key in TIME_KEYS:
            value = moved.get(key)
            if isinstance(value, str):
                moved[key] = iso(datetime.fromisoformat(value) + shift)
        if "error" in moved:
            moved["error"] = rebase_times(moved["error"], shift)
        out.append(moved)
    return out


def earliest_command_time(commands: Sequence[Mapping[str, Any]]) -> datetime | None:
    """The earliest createdAt/startedAt/completedAt of the commands (not their errors)."""
    times = [
        datetime.fromisoformat(cmd[key])
        for cmd in commands
        for key in TIME_KEYS
        if isinstance(cmd.get(key), str)
    ]
    return min(times, default=None)


def earliest_time(obj: Any) -> datetime | None:
    """The earliest createdAt/startedAt/completedAt anywhere inside ``obj``."""
    found: list[datetime] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            for key, value in o.items():
                if key in TIME_KEYS and isinstance(value, str):
                    found.append(datetime.fromisoformat(value))
                else:
                    walk(value)
        elif isinstance(o, list | tuple):
            for v in o:
                walk(v)

    walk(obj)
    return min(found) if found else None


def replace_ids(obj: Any, mapping: Mapping[str, str]) -> Any:
    """``obj`` with every string equal to a key of ``mapping`` replaced (tuples become lists).

    Dicts and lists in which nothing is replaced are returned as they are, not copied: the
    result shares them with ``obj``, so neither may be changed in place afterwards (commands
    are served through copies). A labware ``definition`` holds no ids and is never walked:
    copying the definitions was most of the cost of creating a run."""
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, dict):
        out: dict[str, Any] | None = None
        for key, value in obj.items():
            if key == "definition" or not isinstance(value, str | dict | list | tuple):
                continue
            new = replace_ids(value, mapping)
            if new is not value:
                if out is None:
                    out = dict(obj)
                out[key] = new
        return obj if out is None else out
    if isinstance(obj, list | tuple):
        items = [replace_ids(v, mapping) for v in obj]
        if isinstance(obj, list) and all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        return items
    return obj
