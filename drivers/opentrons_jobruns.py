"""The runs one job has on an Opentrons robot, found by the job's protocol file name.

A job's protocol is uploaded as ``<job key>.py`` (drivers/opentrons_uploads.py), so the robot
itself can say what became of the job: ``GET /protocols`` names each protocol's files,
``GET /protocols/{id}`` links the runs made from it (``referencingRuns``) and
``GET /runs/{id}`` tells each run's state. :func:`job_runs` reads them, oldest first;
:meth:`JobRuns.counted` drops the runs the robot stopped before they were ever played (a
run left idle is stopped when the next one is created, DEVICES.md 1.4: it did nothing).

:func:`describe` words a run for a person ("run 7f3a1c2e failed after 12 of 30 commands").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from labctl.errors import DeviceCommunicationError, OperationLost

from .opentrons_http import OpentronsClient
from .opentrons_replies import RunPhase, phase_of

__all__ = ["JobRun", "JobRuns", "describe", "job_runs", "read_run", "short_id"]


@dataclass(frozen=True)
class JobRun:
    """One run of a job as the robot keeps it."""

    run_id: str
    status: str  # the robot's engine status ("unreadable" for a run it cannot read)
    phase: RunPhase
    created_at: str  # ISO-8601, as the robot wrote it
    played: bool  # it was started at least once (a play action, or a start time)
    current: bool  # the robot's current run (only the current run can be played)

    @property
    def counted(self) -> bool:
        """Whether it stands for an attempt of the job: played, or still waiting to be."""
        return self.played or self.phase is RunPhase.PENDING

    @property
    def failed(self) -> bool:
        """Ended without succeeding (failed, or stopped part-way)."""
        return self.phase in (RunPhase.FAILED, RunPhase.STOPPED)


@dataclass(frozen=True)
class JobRuns:
    """The job's runs on the robot, oldest first."""

    runs: tuple[JobRun, ...]

    @property
    def counted(self) -> tuple[JobRun, ...]:
        """The runs that are attempts of the job (see :attr:`JobRun.counted`)."""
        return tuple(r for r in self.runs if r.counted)

    @property
    def newest(self) -> JobRun | None:
        """The newest attempt, or None when the robot holds none."""
        counted = self.counted
        return counted[-1] if counted else None

    @property
    def failures(self) -> tuple[JobRun, ...]:
        """The attempts that ended without succeeding."""
        return tuple(r for r in self.counted if r.failed)


def job_runs(client: OpentronsClient, filename: str) -> JobRuns:
    """The runs made from protocols whose main file is ``filename``, oldest first.

    Two requests when the robot holds the file but no run of it, one when it holds neither;
    one more per run. A run deleted while it is being read is left out. Raises the client's
    DeviceError when the robot cannot be asked, DeviceCommunicationError for a reply of the
    wrong shape.
    """
    runs: list[JobRun] = []
    for protocol in _items(client.get("/protocols")):
        files = protocol.get("files")
        pid = protocol.get("id")
        if not isinstance(pid, str) or not isinstance(files, list):
            continue
        if not any(
            isinstance(f, dict) and f.get("name") == filename and f.get("role") == "main"
            for f in files
        ):
            continue
        detail = client.get(f"/protocols/{quote(pid, safe='')}")
        links = detail.get("links") if isinstance(detail, dict) else None
        refs = links.get("referencingRuns") if isinstance(links, dict) else None
        for ref in refs if isinstance(refs, list) else []:
            rid = ref.get("id") if isinstance(ref, dict) else None
            if not isinstance(rid, str):
                continue
            try:
                runs.append(read_run(client, rid))
            except OperationLost:
                continue  # deleted since the protocol was read (the robot keeps ~20 runs)
    # One robot writes every time in one format (UTC, microseconds): the text sorts.
    runs.sort(key=lambda r: r.created_at)
    return JobRuns(tuple(runs))


def read_run(client: OpentronsClient, run_id: str) -> JobRun:
    """One run as :func:`job_runs` sees it (``GET /runs/{id}``). Raises OperationLost when
    the robot does not know it, and the client's other errors."""
    path = f"/runs/{quote(run_id, safe='')}"
    return _job_run(client.name, path, run_id, client.get(path))


def short_id(run_id: str) -> str:
    """The first 8 characters of a run id, as a person reads it."""
    return run_id[:8]


def describe(client: OpentronsClient, run: JobRun) -> str:
    """A few words on ``run``, with its progress where the robot gives it, e.g. ``run
    7f3a1c2e failed after 12 of 30 commands``. Raises the client's DeviceError."""
    name = f"run {short_id(run.run_id)}"
    if run.status == "unreadable":
        return f"{name}: the robot cannot read it"
    if run.phase is RunPhase.PENDING:
        return f"{name} was created but never started"
    if not run.played:
        return f"{name} was stopped before it started"
    st = client.run_status(run.run_id)
    progress = f"{st.commands_done} of {st.commands_total} commands"
    if run.phase is RunPhase.SUCCEEDED:
        return f"{name} succeeded ({st.commands_total} commands)"
    if run.phase is RunPhase.FAILED:
        return f"{name} failed after {progress}"
    if run.phase is RunPhase.STOPPED:
        return f"{name} was stopped after {progress}"
    if run.phase is RunPhase.NEEDS_OPERATOR:
        return f"{name} is {run.status}, waiting for a person, at {progress}"
    return f"{name} is {run.status}: {progress}"


def _job_run(device: str, path: str, run_id: str, reply: Any) -> JobRun:
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, dict):
        raise DeviceCommunicationError(device, f"GET {path}", "unexpected reply: no run data")
    created = data.get("createdAt")
    created_at = created if isinstance(created, str) else ""
    if data.get("ok") is False:
        # A run the robot cannot read back: it may have done anything.
        return JobRun(run_id, "unreadable", RunPhase.FAILED, created_at, True, False)
    status = data.get("status")
    if not isinstance(status, str):
        raise DeviceCommunicationError(device, f"GET {path}", "unexpected reply: no status")
    actions = data.get("actions")
    played = bool(data.get("startedAt")) or any(
        isinstance(a, dict) and a.get("actionType") == "play"
        for a in (actions if isinstance(actions, list) else [])
    )
    current = data.get("current") is True
    return JobRun(run_id, status, phase_of(status), created_at, played, current)


def _items(reply: Any) -> list[dict[str, Any]]:
    data = reply.get("data") if isinstance(reply, dict) else None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
