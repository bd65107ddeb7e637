"""The runs table and today's manual tasks: a run in one row (state, protocol day, what
comes next) and the operator's jobs on today's date as a list and a printable checklist."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from labctl.gui.models.common import (
    ACTIVE_RUN_STATES,
    TERMINAL_JOB_STATES,
    RunData,
    duration_text,
    hhmm,
    job_label,
    job_params,
    local,
    task_key_of,
    task_plate,
    task_title,
    tone_of,
    tzinfo,
    workcell_zone,
)
from labctl.gui.models.timeline import Bar
from labctl.gui.models.urgency import NONE, Urgency, urgency
from labctl.store.models import Task

# --- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    """One run in the runs table."""

    id: int
    name: str
    protocol: str  # "kriks2011-da v1.0.0"
    state: str
    tone: str
    day: int  # protocol day today (negative before day 0)
    last_day: int
    plates: tuple[str, ...]
    paused_plates: tuple[str, ...]
    next_task: str | None
    next_plates: str
    next_time: datetime | None
    active_alarms: int
    open_prompts: int
    pending_commands: int
    tasks_done: int
    tasks_total: int
    start: datetime
    timezone: str
    tasks_skipped: int = 0
    ended_day: int | None = None  # for finished runs: the day it ended on
    # (when, day, title, plates, window end) of the next few tasks
    upcoming: tuple[tuple[datetime, int, str, str, datetime | None], ...] = ()
    plate_states: tuple[tuple[str, str], ...] = ()  # (label, state)
    parameters: str = ""
    registered_by: str | None = None  # the actor of the run's 'created' event
    next_window_end: datetime | None = None  # the next task's window closes then
    started: bool = True  # any of its tasks ever began (or it runs)
    start_pending: bool = False  # a start command waits for the engine
    workcell_zone: str = ""  # the zone of the workcell it was registered on ("": its own)
    next_active: bool = False  # the next task is under way
    late_tasks: int = 0  # tasks not begun whose window has ended
    oldest_late_end: datetime | None = None  # the earliest such window's end

    def urgency(self, now: datetime) -> Urgency:
        """How pressing the run's work is at ``now``: late tasks first ("LATE by 16 d 2 h ·
        95 tasks"), else its next task's (none for a run not under way)."""
        if not self.active or self.never_started:
            return NONE
        if self.late_tasks and self.oldest_late_end is not None:
            left = (self.oldest_late_end - now).total_seconds()
            many = f" · {self.late_tasks} tasks" if self.late_tasks > 1 else ""
            return Urgency("late", f"LATE by {duration_text(-left)}{many}", left)
        if self.next_task is None:
            return NONE
        if self.next_active:
            return Urgency("due", "under way")
        return urgency(self.next_time, self.next_window_end, now, expected_start=self.next_time)

    @property
    def never_started(self) -> bool:
        """Planned with no start command waiting, or ended before any task began: nothing
        of it will be carried out (not drawn, its alarms not shown)."""
        if self.state == "planned":
            return not self.start_pending
        return not self.active and not self.started

    @property
    def day_text(self) -> str:
        if self.state == "planned" and not self.start_pending and self.day >= 0:
            return "not started"
        if self.ended_day is not None:
            return f"ended on day {self.ended_day}" if self.started else "never started"
        if self.day < 0:
            return f"starts in {-self.day} d"
        return f"day {self.day} of {self.last_day}"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_RUN_STATES


def protocol_day(now: datetime, start: datetime, tz: str) -> int:
    """The protocol day of ``now`` for a run whose day 0 is ``start`` (days in the lab's zone)."""
    z = tzinfo(tz)
    return (now.astimezone(z).date() - start.astimezone(z).date()).days


def _task_time(t: Task) -> datetime:
    return t.actual_start or t.planned_start or t.window_start or t.due


def _natural(text: str) -> tuple:
    from labctl.jobs import natural_key

    return natural_key(text)


def run_row(
    d: RunData,
    now: datetime,
    *,
    open_prompts: int = 0,
    active_alarms: int = 0,
    pending_commands: int = 0,
    registered_by: str | None = None,
    start_pending: bool = False,
) -> RunRow:
    """The run ``d`` as a row of the runs table at ``now``; ``start_pending``: a start
    command for it waits for the engine."""
    run = d.run
    plates = {p.id: p.label for p in d.plates}
    open_tasks = [t for t in d.tasks if t.state in ("pending", "active")]
    open_tasks.sort(key=lambda t: (t.state != "active", _task_time(t), t.id))
    next_task = next_plates = None
    next_time = next_end = None
    if open_tasks:
        first = open_tasks[0]
        key = task_key_of(first)
        same = [t for t in open_tasks if task_key_of(t) == key]
        next_task = task_title(first)
        next_plates = ", ".join(sorted((task_plate(t, plates) for t in same), key=_natural))
        next_time = min(_task_time(t) for t in same)
        ends = [t.window_end for t in same if t.window_end is not None]
        next_end = min(ends) if ends else None
    upcoming: list[tuple[datetime, int, str, str, datetime | None]] = []
    seen: set[str] = set()
    for t in open_tasks:
        key = task_key_of(t)
        if key in seen:
            continue
        seen.add(key)
        same = [x for x in open_tasks if task_key_of(x) == key]
        labels = sorted((task_plate(x, plates) for x in same), key=_natural)
        ends = [x.window_end for x in same if x.window_end is not None]
        upcoming.append(
            (
                min(_task_time(x) for x in same),
                t.day,
                task_title(t),
                ", ".join(labels),
                min(ends) if ends else None,
            )
        )
        if len(upcoming) == 8:
            break
    late = [
        t
        for t in open_tasks
        if t.state == "pending" and t.window_end is not None and t.window_end < now
    ]
    done = sum(1 for t in d.tasks if t.state in ("done", "skipped"))
    skipped = sum(1 for t in d.tasks if t.state == "skipped")
    last_day = max((t.day for t in d.tasks), default=0)
    ended = None
    if run.state not in ACTIVE_RUN_STATES:
        ended = protocol_day(run.updated_at, run.start, run.timezone)
    return RunRow(
        id=run.id,
        name=run.name,
        protocol=f"{run.protocol_id} v{run.protocol_version}",
        state=run.state,
        tone=tone_of(run.state),
        day=protocol_day(now, run.start, run.timezone),
        last_day=last_day,
        plates=tuple(p.label for p in d.plates),
        paused_plates=tuple(p.label for p in d.plates if p.state == "paused"),
        next_task=next_task,
        next_plates=next_plates or "",
        next_time=next_time,
        active_alarms=active_alarms,
        open_prompts=open_prompts,
        pending_commands=pending_commands,
        tasks_done=done,
        tasks_total=len(d.tasks),
        start=run.start,
        timezone=run.timezone,
        tasks_skipped=skipped,
        ended_day=ended,
        upcoming=tuple(upcoming),
        plate_states=tuple((p.label, p.state) for p in d.plates),
        parameters=", ".join(f"{k} = {v}" for k, v in run.parameters.items()) or "defaults",
        registered_by=registered_by,
        next_window_end=next_end,
        next_active=bool(open_tasks) and open_tasks[0].state == "active",
        late_tasks=len(late),
        oldest_late_end=min((t.window_end for t in late if t.window_end), default=None),
        started=run.state in ("running", "paused", "holding", "completed")
        or any(t.actual_start is not None for t in d.tasks),
        start_pending=start_pending,
        workcell_zone=workcell_zone(run.workcell_text),
    )


# --- today ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TodayItem:
    """A manual task for the operator today (an event or carrying a plate)."""

    when: datetime
    run_id: int
    run_name: str
    plate: str
    what: str
    detail: str
    state: str
    late: bool
    timezone: str
    window_end: datetime | None = None  # its task must start by then

    def urgency(self, now: datetime) -> Urgency:
        """How pressing it is at ``now`` (none once it is done or under way)."""
        if self.state in TERMINAL_JOB_STATES or self.state == "running":
            return NONE
        return urgency(self.when, self.window_end, now)


def today_items(d: RunData, run_bars_: Iterable[Bar], now: datetime) -> list[TodayItem]:
    """The run's operator jobs (events, carrying plates) on today's date in its zone."""
    out: list[TodayItem] = []
    tz = d.run.timezone
    today = now.astimezone(tzinfo(tz)).date()
    bars = {b.job_id: b for b in run_bars_}
    tasks = {t.id: t for t in d.tasks}
    for j in d.jobs:
        if j.op != "prompt":
            continue
        b = bars.get(j.id)
        if b is None or b.start.astimezone(tzinfo(tz)).date() != today:
            continue
        p = job_params(j)
        t = tasks.get(j.task_id)
        late = bool(
            t is not None
            and t.window_end is not None
            and j.state not in TERMINAL_JOB_STATES
            and now > t.window_end
        )
        out.append(
            TodayItem(
                when=b.start,
                run_id=d.run.id,
                run_name=d.run.name,
                plate=b.plate,
                what=str(p.get("title") or p.get("text") or job_label(j)),
                detail=str(p.get("instructions") or p.get("text") or ""),
                state=j.state,
                late=late,
                timezone=tz,
                window_end=t.window_end if t is not None else None,
            )
        )
    return out


def today_html(items: Sequence[TodayItem], run: RunRow | None, now: datetime) -> str:
    """The day's manual tasks as a printable checklist (HTML)."""
    import html

    e = html.escape
    tz = run.timezone if run else "UTC"
    day = local(now, tz)
    title = f"Manual tasks {day:%a %d %b %Y}" if day else "Manual tasks"
    if run is not None:
        title += f": {run.name} ({run.day_text})"
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;color:#111}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:left;vertical-align:top}"
        "th{background:#eee}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if not items:
        out.append("<p>No manual tasks today.</p>")
    else:
        out.append(
            "<table><tr><th>&#10003;</th><th>Time</th><th>Plate</th><th>Task</th>"
            "<th>State</th><th>Initials</th></tr>"
        )
        for i in items:
            detail = f"<br><small>{e(i.detail)}</small>" if i.detail and i.detail != i.what else ""
            late = " (late)" if i.late else ""
            out.append(
                f"<tr><td>&#9744;</td><td>{hhmm(i.when, i.timezone)}</td><td>{e(i.plate)}</td>"
                f"<td>{e(i.what)}{detail}</td><td>{e(i.state)}{late}</td><td></td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
