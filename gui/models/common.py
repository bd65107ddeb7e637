"""What every console model uses: the operator's input errors, times as text in the lab's
zone, and the fields of task and job rows. Plain Python, no Qt (STYLE.md 8).

Conventions read here and written elsewhere: a task's ``spec`` holds the plan task as JSON
under ``"task"`` (see :func:`labctl.engine.register_run`), a job's ``spec`` its ``params``
and ``duration_s``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from labctl.errors import LabctlError
from labctl.store.models import Job, Plate, Run, Task

ACTIVE_RUN_STATES = ("planned", "running", "paused", "holding")


TERMINAL_JOB_STATES = ("done", "skipped")


class ConsoleInputError(LabctlError):
    """What the operator entered cannot be sent (no reason given, a QC value not a number)."""

    code = 1101


# --- small helpers ----------------------------------------------------------------------------


def tzinfo(name: str) -> ZoneInfo:
    """The zone ``name`` (UTC when the name is unknown, so a display never fails on it)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local(dt: datetime | None, tz: str) -> datetime | None:
    return dt.astimezone(tzinfo(tz)) if dt is not None else None


def zone_abbr(dt: datetime) -> str:
    """The zone's short name at ``dt`` (an aware time): ``"CET"``, ``"EST"``, ``"UTC"``;
    zones without a letter name read ``"UTC+04"`` rather than a bare ``"+04"``."""
    abbr = dt.strftime("%Z")
    if not abbr or abbr[0] in "+-":
        return f"UTC{abbr}"
    return abbr


def hhmm(dt: datetime | None, tz: str, *, zone: bool = True) -> str:
    """``"09:05 CET"`` in the zone (``"09:05"`` without ``zone``), ``"-"`` for no time.

    Every time the console shows carries its zone: two runs in different zones never read
    the same "08:53" for different moments."""
    d = local(dt, tz)
    if d is None:
        return "-"
    return f"{d:%H:%M} {zone_abbr(d)}" if zone else d.strftime("%H:%M")


def seconds_text(dt: datetime, tz: str) -> str:
    """``"09:05:03 CET"``: a time to the second, in the zone."""
    d = dt.astimezone(tzinfo(tz))
    return f"{d:%H:%M:%S} {zone_abbr(d)}"


def when_text(dt: datetime | None, tz: str, now: datetime | None = None) -> str:
    """``"09:05 CET"`` on ``now``'s date, ``"Tue 14 Dec 09:05 CET"`` on another day,
    ``"Tue 14 Dec 2027 09:05 CET"`` in another year (all in the zone ``tz``)."""
    d = local(dt, tz)
    if d is None:
        return "-"
    n = local(now, tz) if now is not None else None
    if n is not None and n.date() == d.date():
        return f"{d:%H:%M} {zone_abbr(d)}"
    if n is not None and n.year != d.year:
        return f"{d:%a %d %b %Y %H:%M} {zone_abbr(d)}"
    return f"{d:%a %d %b %H:%M} {zone_abbr(d)}"


def duration_text(seconds: float) -> str:
    """A span in full, its two largest units: ``"45 s"``, ``"12 min"``, ``"2 h 5 min"``,
    ``"15 d 4 h"`` (sign kept). Never cut to fit: callers make room for it."""
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 60:
        return f"{sign}{s:.0f} s"
    m = int(s // 60)
    if m < 60:
        return f"{sign}{m} min"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{sign}{h} h {m} min" if m else f"{sign}{h} h"
    d, h = divmod(h, 24)
    return f"{sign}{d} d {h} h" if h else f"{sign}{d} d"


def workcell_zone(text: str) -> str:
    """The ``timezone`` of a workcell file's text ("" when it has none or is empty)."""
    m = re.search(r"(?m)^timezone:\s*['\"]?([A-Za-z_+\-/0-9]+)", text or "")
    return m.group(1) if m else ""


def countdown_text(seconds: float) -> str:
    """``"14:05"`` (min:s) or ``"1:02:03"``; ``"0:00"`` once past."""
    s = max(0, int(math.ceil(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def float_or_none(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


# --- tasks and jobs ---------------------------------------------------------------------------


def task_json(t: Task) -> dict[str, Any]:
    spec = t.spec if isinstance(t.spec, dict) else {}
    inner = spec.get("task")
    return inner if isinstance(inner, dict) else {}


def task_title(t: Task) -> str:
    """``"Feed: full change, 2 mL/well"``; an event's own title."""
    tj = task_json(t)
    title = str(tj.get("title") or t.key)
    kind = str(tj.get("kind") or t.kind or "")
    if kind in ("event", "") or title.lower().startswith(kind):
        return title
    return f"{kind.capitalize()}: {title}"


def task_plate(t: Task, plates: Mapping[int, str]) -> str:
    if t.plate_id is not None and t.plate_id in plates:
        return plates[t.plate_id]
    spec = t.spec if isinstance(t.spec, dict) else {}
    plate = spec.get("plate")
    return "all plates" if plate in (None, "*") else str(plate)


def task_key_of(t: Task) -> str:
    """The plan task's key (the same for every plate), e.g. ``d12-feed-0900``."""
    spec = t.spec if isinstance(t.spec, dict) else {}
    return str(spec.get("task_key") or t.key.split("/")[0])


def job_params(j: Job) -> dict[str, Any]:
    spec = j.spec if isinstance(j.spec, dict) else {}
    p = spec.get("params")
    return p if isinstance(p, dict) else {}


def job_duration_s(j: Job) -> float:
    spec = j.spec if isinstance(j.spec, dict) else {}
    try:
        return float(spec.get("duration_s", 60.0))
    except (TypeError, ValueError):
        return 60.0


_STEP_LABELS = {
    "fetch": "fetch",
    "to_deck": "to deck",
    "lh_run": "liquid handling",
    "to_incubator": "to incubator",
    "store": "store",
    "carry": "to other incubator",
    "leave": "fetch",
    "arrive": "store",
    "setpoint": "setpoint",
    "event": "manual event",
    "prompt": "operator",
}


def job_label(j: Job) -> str:
    """What a job does in a few words: ``"liquid handling"``, ``"to deck (operator)"``."""
    p = job_params(j)
    if j.op == "prompt":
        step = str(p.get("step", "prompt"))
        if step == "event":
            return str(p.get("title") or "manual event")
        return f"{_STEP_LABELS.get(step, step)} (operator)"
    return _STEP_LABELS.get(j.op, j.op)


def main_job(jobs: Sequence[Job]) -> Job | None:
    """The job the task's window constrains: the LH run, the setpoint, or the event prompt."""
    for want in ("lh_run", "setpoint", "carry"):
        for j in jobs:
            if j.op == want:
                return j
    for j in jobs:
        if j.op == "prompt" and job_params(j).get("step") in ("event", "setpoint", "carry"):
            return j
    return jobs[0] if jobs else None


def tone_of(state: str) -> str:
    """The colour family of a state (views map tones to Okabe-Ito colours and symbols)."""
    return {
        "running": "running",
        "active": "running",
        "busy": "running",
        "ready": "running",
        "planned": "pending",
        "pending": "pending",
        "idle": "idle",
        "paused": "paused",
        "holding": "holding",
        "needs operator": "holding",
        "waiting": "holding",
        "interrupted": "holding",
        "completed": "ok",
        "done": "ok",
        "answered": "ok",
        "applied": "ok",
        "skipped": "skipped",
        "aborted": "fault",
        "failed": "fault",
        "fault": "fault",
        "needs decision": "fault",
        "alarm": "fault",
        "rejected": "fault",
        "acknowledged": "holding",
        "active alarm": "fault",
    }.get(state, "pending")


@dataclass(frozen=True)
class RunData:
    """The rows of one run, kept up to date from the change feed."""

    run: Run
    plates: tuple[Plate, ...]
    tasks: tuple[Task, ...]
    jobs: tuple[Job, ...]
    version: int  # changes whenever any of the rows above do
