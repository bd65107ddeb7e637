"""How robot-server shows a run and its commands (``data`` of /runs/... responses).

Plain functions of run state, called under the robot's lock; each returns fresh JSON-ready
objects (deep copies where the state holds mutable parts), so a reply never changes after it
is made.
"""

from __future__ import annotations

import copy
from typing import Any

from labctl.simulators.opentrons_runs import Command, Run, RunResult
from labctl.simulators.opentrons_wire import iso


def _visible(run: Run, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Loaded items: fixed ones from the start, the others once their load command ran."""
    return [
        copy.deepcopy(x)
        for x in items
        if x.get("id") not in run.loaded_by_command or x.get("id") in run.loaded
    ]


def run_json(run: Run) -> dict[str, Any]:
    """A run as ``GET /runs/{id}`` shows it."""
    data: dict[str, Any] = {
        "id": run.id,
        "ok": True,
        "createdAt": iso(run.created_at),
        "status": run.status,
        "current": run.current,
        "actions": copy.deepcopy(run.actions),
        "errors": copy.deepcopy(run.errors),
        "hasEverEnteredErrorRecovery": run.entered_recovery,
        "pipettes": _visible(run, run.pipettes),
        "modules": _visible(run, run.modules),
        "labware": _visible(run, run.labware),
        "liquids": copy.deepcopy(run.liquids) if run.started_at else [],
        "labwareOffsets": copy.deepcopy(run.labware_offsets),
        "runTimeParameters": copy.deepcopy(run.run_time_parameters),
        "outputFileIds": [],
    }
    if run.protocol_id is not None:
        data["protocolId"] = run.protocol_id
    if run.completed_at is not None:
        data["completedAt"] = iso(run.completed_at)
    if run.started_at is not None:
        data["startedAt"] = iso(run.started_at)
    return data


def runs_page(runs: list[Run], current_id: str | None, page_length: int | None) -> dict[str, Any]:
    """The body of ``GET /runs``: the last ``page_length`` runs (None: all), oldest first."""
    total = len(runs)
    cursor = 0
    if page_length is not None and page_length < total:
        cursor = max(0, total - page_length)
        runs = runs[cursor:]
    links: dict[str, Any] = {}
    if current_id is not None:
        links["current"] = {"href": f"/runs/{current_id}"}
    return {
        "data": [run_json(r) for r in runs],
        "links": links,
        "meta": {"cursor": cursor, "totalLength": total},
    }


def command_summary(cmd: Command) -> dict[str, Any]:
    """A command as ``GET /runs/{id}/commands`` lists it (no result)."""
    out: dict[str, Any] = {
        "id": cmd.id,
        "key": cmd.template.get("key"),
        "commandType": cmd.template.get("commandType"),
        "createdAt": iso(cmd.created_at),
    }
    if cmd.started_at is not None:
        out["startedAt"] = iso(cmd.started_at)
    if cmd.completed_at is not None:
        out["completedAt"] = iso(cmd.completed_at)
    out["status"] = cmd.status
    if cmd.error is not None:
        out["error"] = copy.deepcopy(cmd.error)
    out["params"] = copy.deepcopy(cmd.template.get("params", {}))
    out["notes"] = []
    return out


def command_full(cmd: Command) -> dict[str, Any]:
    """A command as ``GET /runs/{id}/commands/{commandId}`` shows it (with its result)."""
    out: dict[str, Any] = {
        "id": cmd.id,
        "createdAt": iso(cmd.created_at),
        "commandType": cmd.template.get("commandType"),
        "key": cmd.template.get("key"),
        "status": cmd.status,
        "params": copy.deepcopy(cmd.template.get("params", {})),
    }
    if cmd.status == "succeeded" and "result" in cmd.template:
        out["result"] = copy.deepcopy(cmd.template["result"])
    if cmd.error is not None:
        out["error"] = copy.deepcopy(cmd.error)
    if cmd.started_at is not None:
        out["startedAt"] = iso(cmd.started_at)
    if cmd.completed_at is not None:
        out["completedAt"] = iso(cmd.completed_at)
    out["notes"] = []
    return out


def _command_link(run: Run, cmd: Command) -> dict[str, Any]:
    return {
        "href": f"/runs/{run.id}/commands/{cmd.id}",
        "meta": {
            "runId": run.id,
            "commandId": cmd.id,
            "index": cmd.index,
            "key": cmd.template.get("key"),
            "createdAt": iso(cmd.created_at),
        },
    }


def commands_page(run: Run, cursor: int | None, length: int) -> dict[str, Any]:
    """The body of ``GET /runs/{id}/commands``: ``length`` commands from ``cursor`` (None:
    around the running or last executed one, as robot-server 8.1 does in the recordings)."""
    commands = run.commands
    total = len(commands)
    if cursor is None:
        inflight = run.inflight
        queued = next((c for c in commands if c.status == "queued"), None)
        failed = next((c for c in reversed(commands) if c.status == "failed" and c.error), None)
        if inflight is not None:
            cursor = inflight.index
        elif queued is not None:
            cursor = queued.index - 1
        elif run.result is RunResult.FAILED and failed is not None:
            cursor = failed.index
        else:
            cursor = total - length
    start = max(0, min(cursor, total - 1))
    page = commands[start : min(total, start + length)]
    links: dict[str, Any] = {}
    current = run.inflight or next(
        (c for c in reversed(commands) if c.status in ("succeeded", "failed")), None
    )
    if current is not None:
        links["current"] = _command_link(run, current)
    if run.recovery_target is not None:
        links["currentlyRecoveringFrom"] = _command_link(run, commands[run.recovery_target])
    return {
        "data": [command_summary(c) for c in page],
        "links": links,
        "meta": {"cursor": start, "totalLength": total},
    }


def command_errors_page(run: Run, cursor: int, length: int) -> dict[str, Any]:
    """The body of ``GET /runs/{id}/commandErrors``: ``length`` errors from ``cursor``."""
    errors = [copy.deepcopy(c.error) for c in run.commands if c.error is not None]
    total = len(errors)
    start = max(0, min(cursor, total - 1))
    return {
        "data": errors[start : min(total, start + length)],
        "meta": {"cursor": start, "totalLength": total},
    }
