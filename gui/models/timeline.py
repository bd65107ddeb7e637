"""The timeline's bars and lanes: every job of a run from its start to its end (real times
once started, planned ones before), with the main job's window and slack."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from labctl.gui.models.common import (
    TERMINAL_JOB_STATES,
    RunData,
    job_duration_s,
    job_label,
    main_job,
    task_key_of,
    task_plate,
    task_title,
)
from labctl.store.models import Job


@dataclass(frozen=True)
class Bar:
    """One job on the timeline. Times aware UTC; ``planned`` jobs have not started yet."""

    run_id: int
    run_name: str
    job_id: int
    task_id: int
    task_key: str
    title: str
    label: str
    plate: str
    device: str
    op: str
    state: str
    start: datetime
    end: datetime
    planned: bool
    main: bool
    window_start: datetime | None
    window_end: datetime | None
    slack_s: float | None  # window end - main start (negative: late)
    late: bool
    failed: bool


@dataclass(frozen=True)
class Lane:
    """One row of the timeline: a device or a plate of a run."""

    key: str
    title: str
    group: str  # "Devices" or "Plates"
    bars: tuple[Bar, ...]


def _jobs_by_task(jobs: Iterable[Job]) -> dict[int, list[Job]]:
    out: dict[int, list[Job]] = {}
    for j in jobs:
        out.setdefault(j.task_id, []).append(j)
    for js in out.values():
        js.sort(key=lambda j: j.seq)
    return out


def run_bars(d: RunData, now: datetime) -> list[Bar]:
    """Every job of a run as a timeline bar (started jobs at their real times).

    A job not started yet is drawn at its scheduled start, but never before the end of the
    job before it in its task, nor in the past (it can start no earlier than now).
    """
    plates = {p.id: p.label for p in d.plates}
    by_task = _jobs_by_task(d.jobs)
    out: list[Bar] = []
    for t in d.tasks:
        js = by_task.get(t.id, [])
        if not js:
            continue
        m = main_job(js)
        plate = task_plate(t, plates)
        title = task_title(t)
        # When the main job starts (or started, or is planned to): the window constrains it.
        spans: list[tuple[Job, datetime, datetime, bool]] = []
        cursor: datetime | None = None
        for j in js:
            dur = timedelta(seconds=job_duration_s(j))
            if j.started_at is not None:
                start = j.started_at
                if j.finished_at is not None:
                    end = j.finished_at
                elif j.state == "running":
                    end = max(start + dur, now)
                else:
                    end = start + dur
                planned = False
            else:
                start = j.scheduled_start or t.planned_start or t.window_start or t.due
                if cursor is not None:
                    start = max(start, cursor)
                if j.state not in TERMINAL_JOB_STATES and t.state in ("pending", "active"):
                    start = max(start, now)
                end = start + dur
                planned = True
            cursor = end
            spans.append((j, start, end, planned))
        main_start = next((s for j, s, _, _ in spans if m is not None and j.id == m.id), None)
        if (
            m is not None
            and m.state in ("failed", "interrupted")
            and t.state in ("pending", "active")
        ):
            # It has to run again (or be skipped): a retry starts no earlier than now.
            main_start = max(now, main_start or now)
        slack = (
            (t.window_end - main_start).total_seconds()
            if t.window_end is not None and main_start is not None
            else None
        )
        task_open = t.state in ("pending", "active")
        late = slack is not None and slack < 0 and (task_open or t.actual_start is not None)
        for j, start, end, planned in spans:
            is_main = m is not None and j.id == m.id
            out.append(
                Bar(
                    run_id=d.run.id,
                    run_name=d.run.name,
                    job_id=j.id,
                    task_id=t.id,
                    task_key=task_key_of(t),
                    title=title,
                    label=job_label(j),
                    plate=plate,
                    device=j.device,
                    op=j.op,
                    state=j.state,
                    start=start,
                    end=end,
                    planned=planned,
                    main=is_main,
                    window_start=t.window_start if is_main else None,
                    window_end=t.window_end if is_main else None,
                    slack_s=slack if is_main else None,
                    late=late and is_main,
                    failed=j.state in ("failed", "interrupted"),
                )
            )
    return out


def lanes(
    bars: Iterable[Bar], start: datetime, end: datetime, *, several_runs: bool | None = None
) -> list[Lane]:
    """Timeline lanes for ``[start, end)``: one per device, then one per plate of each run.

    A bar is kept when it or its window overlaps the span. Plate lanes are titled
    ``"P1"``, or ``"run name · P1"`` when several runs are shown.
    """
    from labctl.jobs import natural_key

    keep = [
        b
        for b in bars
        if (b.start < end and b.end > start)
        or (b.window_start is not None and b.window_end is not None and b.window_start < end
            and b.window_end > start)
    ]  # fmt: skip
    if several_runs is None:
        several_runs = len({b.run_id for b in bars}) > 1
    devices: dict[str, list[Bar]] = {}
    plates: dict[tuple[int, str], list[Bar]] = {}
    names: dict[int, str] = {}
    for b in keep:
        devices.setdefault(b.device, []).append(b)
        plates.setdefault((b.run_id, b.plate), []).append(b)
        names[b.run_id] = b.run_name
    order = {"ot2": 0, "inc": 1, "operator": 3}

    def dev_key(name: str) -> tuple:
        return (next((v for k, v in order.items() if name.startswith(k)), 2), natural_key(name))

    out = [
        Lane(f"device:{n}", n, "Devices", tuple(sorted(bs, key=lambda b: b.start)))
        for n, bs in sorted(devices.items(), key=lambda kv: dev_key(kv[0]))
    ]
    for (run_id, plate), bs in sorted(
        plates.items(), key=lambda kv: (-kv[0][0], kv[0][1] == "all plates", natural_key(kv[0][1]))
    ):
        title = f"{names[run_id]} · {plate}" if several_runs else plate
        out.append(
            Lane(
                f"plate:{run_id}:{plate}", title, "Plates", tuple(sorted(bs, key=lambda b: b.start))
            )
        )
    return out
