"""What the console shows, computed from the run database: plain Python, no Qt (STYLE.md 8).

Views take these frozen dataclasses and draw them; the functions here take a
:class:`~labctl.store.Store` (read only, except :func:`submit`, :func:`register_new_run`
and :func:`acknowledge`, which write operator commands or register a run the way the CLI
does) and a time ``now`` from the injected clock. They run on the console's worker thread,
never on the GUI thread, so they may take a few hundred milliseconds.

Conventions read here and written elsewhere:

- incubator climate readings are events of entity ``device`` and action ``climate`` whose
  data holds ``device``, ``temperature_c``, ``co2_pct``, ``humidity_pct``, ``o2_pct``;
- a task's ``spec`` holds the plan task as JSON under ``"task"`` (see
  :func:`labctl.engine.register_run`), a job's ``spec`` its ``params`` and ``duration_s``.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from labctl.clock import Clock
from labctl.errors import LabctlError, ProtocolError
from labctl.store import Store
from labctl.store.models import Alarm, Command, Event, Job, Plate, Prompt, Run, Task

__all__ = [
    "ACTIVE_RUN_STATES",
    "AlarmRow",
    "Bar",
    "ClimateReading",
    "CommandRequest",
    "ConsoleInputError",
    "DeviceRow",
    "EventFilter",
    "EventPage",
    "EventRow",
    "Lane",
    "NewRunRequest",
    "PasswordRejected",
    "PlanRow",
    "PromptView",
    "ProtocolCheck",
    "ProtocolInfo",
    "QcGate",
    "RunRow",
    "Snapshot",
    "SnapshotLoader",
    "StartSuggestion",
    "TodayItem",
    "acknowledge",
    "build_answer",
    "check_protocol_text",
    "event_page",
    "lanes",
    "prep_html",
    "protocol_info",
    "register_new_run",
    "submit",
    "suggest_start_dates",
]

ACTIVE_RUN_STATES = ("planned", "running", "paused", "holding")
TERMINAL_JOB_STATES = ("done", "skipped")
#: Commands the operator cannot take back: they ask for the password as well as a reason.
IRREVERSIBLE_VERBS = ("abort", "skip")


class ConsoleInputError(LabctlError):
    """What the operator entered cannot be sent (no reason given, a QC value not a number)."""

    code = 1101


class PasswordRejected(LabctlError):
    """The password given to confirm an irreversible command was wrong (or none was set)."""

    code = 1102


# --- small helpers ----------------------------------------------------------------------------


def tzinfo(name: str) -> ZoneInfo:
    """The zone ``name`` (UTC when the name is unknown, so a display never fails on it)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local(dt: datetime | None, tz: str) -> datetime | None:
    return dt.astimezone(tzinfo(tz)) if dt is not None else None


def hhmm(dt: datetime | None, tz: str) -> str:
    """``"09:05"`` in the zone, ``"-"`` for no time."""
    d = local(dt, tz)
    return d.strftime("%H:%M") if d else "-"


def when_text(dt: datetime | None, tz: str, now: datetime | None = None) -> str:
    """``"09:05"`` today, ``"Tue 14 Dec 09:05"`` on another day (in the zone)."""
    d = local(dt, tz)
    if d is None:
        return "-"
    if now is not None and local(now, tz).date() == d.date():  # type: ignore[union-attr]
        return d.strftime("%H:%M")
    return d.strftime("%a %d %b %H:%M")


def duration_text(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3 h 05 min"``, ``"2 d 4 h"`` (sign kept)."""
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 60:
        return f"{sign}{s:.0f} s"
    m = int(s // 60)
    if m < 60:
        return f"{sign}{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{sign}{h} h {m:02d} min"
    d, h = divmod(h, 24)
    return f"{sign}{d} d {h} h"


def countdown_text(seconds: float) -> str:
    """``"14:05"`` (min:s) or ``"1:02:03"``; ``"0:00"`` once past."""
    s = max(0, int(math.ceil(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


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
    for want in ("lh_run", "setpoint"):
        for j in jobs:
            if j.op == want:
                return j
    for j in jobs:
        if j.op == "prompt" and job_params(j).get("step") in ("event", "setpoint"):
            return j
    return jobs[0] if jobs else None


def _state_tone(state: str) -> str:
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


tone_of = _state_tone


# --- rows of the snapshot ---------------------------------------------------------------------


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
    upcoming: tuple[tuple[datetime, int, str, str], ...] = ()  # (when, day, title, plates)
    plate_states: tuple[tuple[str, str], ...] = ()  # (label, state)
    parameters: str = ""

    @property
    def day_text(self) -> str:
        if self.ended_day is not None:
            return f"ended on day {self.ended_day}"
        if self.day < 0:
            return f"starts in {-self.day} d"
        return f"day {self.day} of {self.last_day}"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_RUN_STATES


@dataclass(frozen=True)
class AlarmRow:
    id: int
    run_id: int | None
    device: str | None
    severity: str
    code: str
    message: str
    state: str  # active (unacknowledged) or acknowledged
    raised_at: datetime
    acknowledged_by: str | None

    @classmethod
    def of(cls, a: Alarm) -> AlarmRow:
        return cls(
            a.id, a.run_id, a.device, a.severity, a.code, a.message, a.state, a.raised_at,
            a.acknowledged_by,
        )  # fmt: skip


@dataclass(frozen=True)
class QcGate:
    """A QC limit the operator's value is checked against (bounds inclusive, optional)."""

    measure: str
    unit: str
    min: float | None
    max: float | None
    on_fail: str  # hold, abort, continue, ...

    def passes(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    @property
    def limits_text(self) -> str:
        u = f" {self.unit}" if self.unit else ""
        if self.min is not None and self.max is not None:
            return f"{self.min:g} to {self.max:g}{u}"
        if self.min is not None:
            return f"at least {self.min:g}{u}"
        if self.max is not None:
            return f"at most {self.max:g}{u}"
        return "no limits"


@dataclass(frozen=True)
class PromptView:
    """An open prompt as the operator sees it, with what an answer needs."""

    id: int
    run_id: int
    run_name: str
    kind: str  # task, recovery, interrupted, decision
    heading: str
    text: str
    instructions: str
    plate: str
    step: str
    choices: tuple[str, ...]  # explicit choices (recovery, interrupted, decision)
    gates: tuple[QcGate, ...]  # QC values to enter (task prompts)
    reagents: tuple[str, ...]  # media and factors whose lots may be recorded
    default_choice: str | None
    deadline: datetime | None
    created_at: datetime
    job_id: int | None
    timezone: str

    def seconds_left(self, now: datetime) -> float | None:
        """Seconds until the default applies (None when there is no default)."""
        if self.deadline is None or self.default_choice is None:
            return None
        return (self.deadline - now).total_seconds()

    @property
    def irreversible_choices(self) -> frozenset[str]:
        return frozenset(c for c in self.choices if c in ("skip", "abort"))


@dataclass(frozen=True)
class ClimateReading:
    temperature_c: float | None
    co2_pct: float | None
    humidity_pct: float | None
    o2_pct: float | None
    at: datetime

    @property
    def text(self) -> str:
        parts = []
        if self.temperature_c is not None:
            parts.append(f"{self.temperature_c:.1f} °C")
        if self.co2_pct is not None:
            parts.append(f"CO₂ {self.co2_pct:.1f} %")
        if self.o2_pct is not None:
            parts.append(f"O₂ {self.o2_pct:.1f} %")
        if self.humidity_pct is not None:
            parts.append(f"RH {self.humidity_pct:.0f} %")
        return ", ".join(parts) or "no readings"


@dataclass(frozen=True)
class DeviceRow:
    name: str
    role: str
    state: str  # idle, busy, waiting, fault, alarm
    tone: str
    current: str | None  # what it does now
    since: datetime | None
    until: datetime | None
    next_job: str | None
    next_at: datetime | None
    climate: ClimateReading | None
    last_error: str | None
    last_error_at: datetime | None
    alarms: tuple[AlarmRow, ...]
    timezone: str


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


@dataclass(frozen=True)
class RunData:
    """The rows of one run, kept up to date from the change feed."""

    run: Run
    plates: tuple[Plate, ...]
    tasks: tuple[Task, ...]
    jobs: tuple[Job, ...]
    version: int  # changes whenever any of the rows above do


@dataclass(frozen=True)
class Snapshot:
    """Everything the console shows, read at ``now`` when the newest event was ``head_seq``."""

    now: datetime
    head_seq: int | None
    runs: tuple[RunRow, ...]
    alarms: tuple[AlarmRow, ...]
    prompts: tuple[PromptView, ...]
    devices: tuple[DeviceRow, ...]
    bars: tuple[Bar, ...]
    today: tuple[TodayItem, ...]
    finished_commands: tuple[Command, ...] = ()
    pending_commands: int = 0

    def run(self, run_id: int | None) -> RunRow | None:
        return next((r for r in self.runs if r.id == run_id), None)


# --- reading a snapshot -----------------------------------------------------------------------


class SnapshotLoader:
    """Reads :class:`Snapshot` s from a store, re-reading only what changed.

    Every change to the store appends an audit event, so the events after the last one seen
    are a change feed: they name the runs, plates, tasks and jobs to read again (one row
    each), and carry the incubators' climate readings. The first read, and any read after
    more than :data:`FEED_LIMIT` events, loads every run whole. Keep one loader per store
    connection (not thread-safe: the console's worker thread owns it). Times come from
    ``clock``.
    """

    #: With nothing new in the store, a snapshot is re-derived (late flags, day numbers)
    #: at most this often; in between the previous snapshot object is returned as it is.
    REFRESH_S = 30.0
    #: More new events than this since the last read: reload everything instead of patching.
    FEED_LIMIT = 2000
    #: More changed rows than this in one run: reload the run instead of patching it.
    PATCH_LIMIT = 200

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._runs: dict[int, RunData] = {}
        self._last: Snapshot | None = None
        self._seen: int | None = None  # the newest event already taken into account
        self._watch: set[int] = set()
        self._alarms: tuple[Alarm, ...] = ()
        self._prompts: tuple[Prompt, ...] = ()
        self._pending: tuple[Command, ...] = ()
        self._climate: dict[str, ClimateReading] = {}
        self._derived: dict[int, tuple[Any, tuple[Bar, ...], tuple[TodayItem, ...]]] = {}
        self._version = 0
        self.full_reads = 0  # how many times everything was read (for tests and benches)

    def watch(self, command_id: int) -> None:
        """Report the command in ``finished_commands`` once the engine applied or rejected it."""
        self._watch.add(command_id)

    def load(self, store: Store) -> Snapshot:
        """The current snapshot (the previous object itself when nothing changed)."""
        now = self.clock.now()
        head = store.head()
        head_seq = head[0] if head else None
        last = self._last
        if last is not None and head_seq == last.head_seq:
            if (now - last.now).total_seconds() < self.REFRESH_S:
                return last
            self._last = self._derive(now, head_seq, (), store)
            return self._last
        self._read(store, head_seq)
        finished = []
        for cid in sorted(self._watch):
            c = store.get_command(cid)
            if c.state != "pending":
                finished.append(c)
                self._watch.discard(cid)
        self._last = self._derive(now, head_seq, tuple(finished), store)
        return self._last

    # --- reading ------------------------------------------------------------------------------

    def _read(self, store: Store, head_seq: int | None) -> None:
        feed = None
        if self._seen is not None:
            feed = store.events(after_seq=self._seen, limit=self.FEED_LIMIT)
            if len(feed) >= self.FEED_LIMIT:
                feed = None
        if feed is None:
            self._read_all(store, head_seq)
        else:
            self._patch(store, feed)
            if feed:
                self._seen = feed[-1].seq
        self._alarms = tuple(store.active_alarms())
        self._prompts = tuple(store.open_prompts())
        self._pending = tuple(store.pending_commands())

    def _load_run(self, store: Store, run: Run) -> RunData:
        self._version += 1
        active = run.state in ACTIVE_RUN_STATES
        return RunData(
            run=run,
            plates=tuple(store.plates(run.id)),
            tasks=tuple(store.tasks(run.id)),
            # Finished runs need no jobs: they are not on the timeline any more.
            jobs=tuple(store.jobs(run.id)) if active else (),
            version=self._version,
        )

    def _read_all(self, store: Store, head_seq: int | None) -> None:
        self.full_reads += 1
        self._seen = head_seq or 0  # read before the rows: later changes come in the feed
        self._runs = {run.id: self._load_run(store, run) for run in store.list_runs()}
        self._climate = {}
        for ev in store.events(entity="device", action="climate", newest_first=True, limit=200):
            self._take_climate(ev)

    def _take_climate(self, ev: Event) -> None:
        dev = str(ev.data.get("device") or "")
        if dev and (dev not in self._climate or self._climate[dev].at <= ev.time):
            self._climate[dev] = _climate_of(ev)

    def _patch(self, store: Store, feed: Sequence[Event]) -> None:
        """Apply the change feed: re-read each changed row, or a whole run if many changed."""
        dirty: dict[int, dict[str, set[int]]] = {}
        for ev in feed:
            if ev.entity == "device" and ev.action == "climate":
                self._take_climate(ev)
            if ev.run_id is None or ev.entity_id is None:
                continue
            if ev.entity in ("run", "plate", "task", "job"):
                dirty.setdefault(ev.run_id, {}).setdefault(ev.entity, set()).add(ev.entity_id)
        for run_id, kinds in dirty.items():
            d = self._runs.get(run_id)
            n = sum(len(ids) for ids in kinds.values())
            run = store.get_run(run_id) if (d is None or "run" in kinds) else d.run
            was_active = d is not None and d.run.state in ACTIVE_RUN_STATES
            if d is None or n > self.PATCH_LIMIT or was_active != (run.state in ACTIVE_RUN_STATES):
                self._runs[run_id] = self._load_run(store, run)
                continue
            plates, tasks, jobs = d.plates, d.tasks, d.jobs
            if "plate" in kinds:
                plates = _replace_rows(
                    plates, [store.get_plate(i) for i in kinds["plate"]], lambda p: p.id
                )
            if "task" in kinds:
                tasks = _replace_rows(
                    tasks, [store.get_task(i) for i in kinds["task"]], lambda t: (t.due, t.id)
                )
            if "job" in kinds and (run.state in ACTIVE_RUN_STATES):
                jobs = _replace_rows(
                    jobs, [store.get_job(i) for i in kinds["job"]], lambda j: (j.task_id, j.seq)
                )
            self._version += 1
            self._runs[run_id] = RunData(run, plates, tasks, jobs, self._version)

    def _bars_of(self, d: RunData, now: datetime) -> tuple[tuple[Bar, ...], tuple[TodayItem, ...]]:
        """A run's bars and today's items, computed once per change of the run and minute.

        Deriving them is the costly part of a snapshot (thousands of jobs); a run that did
        not change keeps its bars until the minute turns (planned bars follow now).
        """
        minute = now.replace(second=0, microsecond=0)
        key = (d.version, minute)
        hit = self._derived.get(d.run.id)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        bars = tuple(run_bars(d, minute))
        today = tuple(_today_of(d, bars, minute))
        self._derived[d.run.id] = (key, bars, today)
        return bars, today

    def _derive(
        self, now: datetime, head_seq: int | None, finished: tuple[Command, ...], store: Store
    ) -> Snapshot:
        datas = sorted(self._runs.values(), key=lambda d: d.run.id, reverse=True)
        alarms = tuple(AlarmRow.of(a) for a in self._alarms)
        active = [d for d in datas if d.run.state in ACTIVE_RUN_STATES]
        per_run = [self._bars_of(d, now) for d in active]
        bars = tuple(b for bs, _ in per_run for b in bs)
        today = tuple(
            sorted((i for _, ts in per_run for i in ts), key=lambda i: (i.when, i.run_id, i.plate))
        )
        return Snapshot(
            now=now,
            head_seq=head_seq,
            runs=tuple(
                run_row(
                    d,
                    now,
                    open_prompts=sum(1 for p in self._prompts if p.run_id == d.run.id),
                    active_alarms=sum(1 for a in self._alarms if a.run_id == d.run.id),
                    pending_commands=sum(1 for c in self._pending if c.run_id == d.run.id),
                )
                for d in datas
            ),
            alarms=alarms,
            prompts=tuple(prompt_view(p, self._runs.get(p.run_id), store) for p in self._prompts),
            devices=device_rows(active, bars, alarms, self._prompts, self._climate, now),
            bars=bars,
            today=today,
            finished_commands=finished,
            pending_commands=len(self._pending),
        )


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _climate_of(ev: Event) -> ClimateReading:
    d = ev.data
    return ClimateReading(
        _float(d.get("temperature_c")),
        _float(d.get("co2_pct")),
        _float(d.get("humidity_pct")),
        _float(d.get("o2_pct")),
        ev.time,
    )


# --- runs -------------------------------------------------------------------------------------


def protocol_day(now: datetime, start: datetime, tz: str) -> int:
    """The protocol day of ``now`` for a run whose day 0 is ``start`` (days in the lab's zone)."""
    z = tzinfo(tz)
    return (now.astimezone(z).date() - start.astimezone(z).date()).days


def _task_time(t: Task) -> datetime:
    return t.actual_start or t.planned_start or t.window_start or t.due


def _replace_rows(
    rows: Sequence[Any], fresh: Sequence[Any], order: Callable[[Any], Any]
) -> tuple[Any, ...]:
    """``rows`` with the rows of ``fresh`` put in by id (new ones added), sorted by ``order``."""
    by_id = {r.id: r for r in rows}
    for r in fresh:
        by_id[r.id] = r
    return tuple(sorted(by_id.values(), key=order))


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
) -> RunRow:
    run = d.run
    plates = {p.id: p.label for p in d.plates}
    open_tasks = [t for t in d.tasks if t.state in ("pending", "active")]
    open_tasks.sort(key=lambda t: (t.state != "active", _task_time(t), t.id))
    next_task = next_plates = None
    next_time = None
    if open_tasks:
        first = open_tasks[0]
        key = task_key_of(first)
        same = [t for t in open_tasks if task_key_of(t) == key]
        next_task = task_title(first)
        next_plates = ", ".join(sorted((task_plate(t, plates) for t in same), key=_natural))
        next_time = min(_task_time(t) for t in same)
    upcoming: list[tuple[datetime, int, str, str]] = []
    seen: set[str] = set()
    for t in open_tasks:
        key = task_key_of(t)
        if key in seen:
            continue
        seen.add(key)
        same = [x for x in open_tasks if task_key_of(x) == key]
        labels = sorted((task_plate(x, plates) for x in same), key=_natural)
        upcoming.append((min(_task_time(x) for x in same), t.day, task_title(t), ", ".join(labels)))
        if len(upcoming) == 8:
            break
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
    )


# --- timeline ---------------------------------------------------------------------------------


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


# --- today ------------------------------------------------------------------------------------


def _today_of(d: RunData, run_bars_: Iterable[Bar], now: datetime) -> list[TodayItem]:
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
            )
        )
    return out


# --- prompts ----------------------------------------------------------------------------------

_HEADINGS = {
    "fetch": "Take the plate out of the incubator",
    "to_deck": "Put the plate on the deck",
    "to_incubator": "Take the plate off the deck",
    "store": "Put the plate back into the incubator",
    "setpoint": "Set the incubator",
}


def _gates(choices: Sequence[Any]) -> tuple[QcGate, ...]:
    out = []
    for c in choices:
        if isinstance(c, dict) and c.get("measure"):
            out.append(
                QcGate(
                    str(c["measure"]),
                    str(c.get("unit") or ""),
                    _float(c.get("min")),
                    _float(c.get("max")),
                    str(c.get("on_fail") or "hold"),
                )
            )
    return tuple(out)


def _reagents(task: Task | None) -> tuple[str, ...]:
    if task is None:
        return ()
    tj = task_json(task)
    names: list[str] = []
    for key in ("feed", "washout"):
        spec = tj.get(key)
        if isinstance(spec, dict):
            names += [str(m.get("medium")) for m in spec.get("medium") or [] if isinstance(m, dict)]
            names += list((spec.get("factors") or {}).keys())
    add = tj.get("addition")
    if isinstance(add, dict) and add.get("compound"):
        names.append(str(add["compound"]))
    return tuple(dict.fromkeys(n for n in names if n))


def prompt_view(p: Prompt, d: RunData | None, store: Store | None = None) -> PromptView:
    """What the prompt dialog needs: heading, instructions, choices or QC gates, reagents."""
    job: Job | None = None
    if p.job_id is not None:
        if d is not None:
            job = next((j for j in d.jobs if j.id == p.job_id), None)
        if job is None and store is not None:
            job = store.get_job(p.job_id)
    params = job_params(job) if job is not None else {}
    task: Task | None = None
    if job is not None and d is not None:
        task = next((t for t in d.tasks if t.id == job.task_id), None)
    step = str(params.get("step") or (job.op if job else p.kind))
    plate = str(params.get("plate") or "")
    if plate == "*":
        plate = "all plates"
    if p.kind == "recovery":
        heading = "A device failed: choose how to go on"
    elif p.kind == "interrupted":
        heading = "Interrupted step: did it happen?"
    elif p.kind == "decision":
        heading = "Decision needed"
    elif step == "event":
        heading = str(params.get("title") or "Manual step")
    else:
        heading = _HEADINGS.get(step, "Operator step")
    choices = tuple(str(c) for c in p.choices if isinstance(c, str))
    return PromptView(
        id=p.id,
        run_id=p.run_id,
        run_name=d.run.name if d is not None else f"run {p.run_id}",
        kind=p.kind,
        heading=heading,
        text=p.text,
        instructions=str(params.get("instructions") or ""),
        plate=plate,
        step=step,
        choices=choices,
        gates=_gates(p.choices),
        reagents=_reagents(task) if step == "to_deck" else (),
        default_choice=p.default_choice,
        deadline=p.deadline,
        created_at=p.created_at,
        job_id=p.job_id,
        timezone=d.run.timezone if d is not None else "UTC",
    )


def parse_number(text: str) -> float:
    """A number typed by the operator ("72", "72.5", "72,5"); ConsoleInputError otherwise."""
    t = text.strip().replace(",", ".")
    try:
        v = float(t)
    except ValueError:
        raise ConsoleInputError(f"'{text}' is not a number") from None
    if not math.isfinite(v):
        raise ConsoleInputError(f"'{text}' is not a finite number")
    return v


def build_answer(
    prompt: PromptView,
    *,
    choice: str | None = None,
    qc: Mapping[str, str] | None = None,
    lots: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``answer`` of an answer command for ``prompt``.

    Prompts with explicit choices take ``{"choice": ...}`` (one of them); task prompts take
    ``{"done": true, "qc": {measure: value}, "lots": {reagent: lot}}`` with a number for
    every QC gate (lots are optional). Raises ConsoleInputError naming what is missing.
    """
    if prompt.choices:
        if choice not in prompt.choices:
            raise ConsoleInputError(
                f"choose one of {', '.join(prompt.choices)} for prompt {prompt.id}"
            )
        return {"choice": choice}
    answer: dict[str, Any] = {"done": True}
    values: dict[str, float] = {}
    for g in prompt.gates:
        raw = (qc or {}).get(g.measure, "")
        if not str(raw).strip():
            raise ConsoleInputError(f"enter the {g.measure} value ({g.limits_text})")
        try:
            values[g.measure] = parse_number(str(raw))
        except ConsoleInputError as exc:
            raise ConsoleInputError(f"{g.measure}: {exc}") from None
    if values:
        answer["qc"] = values
    given = {k: v.strip() for k, v in (lots or {}).items() if v and v.strip()}
    if given:
        answer["lots"] = given
    return answer


def qc_failures(prompt: PromptView, values: Mapping[str, float]) -> list[tuple[QcGate, float]]:
    """The gates whose value is outside its limits (what the engine will act on)."""
    return [
        (g, values[g.measure])
        for g in prompt.gates
        if g.measure in values and not g.passes(values[g.measure])
    ]


# --- devices ----------------------------------------------------------------------------------

_ROLE_TEXT = {
    "liquid_handler": "liquid handler",
    "incubator": "incubator",
    "operator": "operator",
    "mover": "plate mover",
}


def device_rows(
    datas: Sequence[RunData],
    bars: Sequence[Bar],
    alarms: Sequence[AlarmRow],
    prompts: Sequence[Prompt],
    climate: Mapping[str, ClimateReading],
    now: datetime,
) -> tuple[DeviceRow, ...]:
    """Each device's state: alarm > fault (a failed job waits for a decision) > busy > idle."""
    roles: dict[str, str] = {}
    by_device: dict[str, list[Job]] = {}
    names: dict[int, str] = {}
    tz = datas[0].run.timezone if datas else "UTC"
    for d in datas:
        for j in d.jobs:
            mine = by_device.get(j.device)
            if mine is None:
                mine = by_device[j.device] = []
                spec = j.spec if isinstance(j.spec, dict) else {}
                roles[j.device] = _ROLE_TEXT.get(str(spec.get("role")), str(spec.get("role") or ""))
            mine.append(j)
            names[j.id] = d.run.name
    bar_of = {b.job_id: b for b in bars}
    devices = set(roles) | {a.device for a in alarms if a.device} | set(climate)
    waiting = {
        p.job_id for p in prompts if p.state == "open" and p.kind in ("recovery", "interrupted")
    }
    out = []
    for name in sorted(devices):
        mine = by_device.get(name, [])
        running = sorted(
            (j for j in mine if j.state == "running"), key=lambda j: j.started_at or now
        )
        failed = [j for j in mine if j.state in ("failed", "interrupted")]
        dev_alarms = tuple(a for a in alarms if a.device == name)
        upcoming = sorted(
            (bar_of[j.id] for j in mine if j.id in bar_of and bar_of[j.id].planned
             and j.state not in TERMINAL_JOB_STATES),
            key=lambda b: b.start,
        )  # fmt: skip
        current = since = until = None
        if any(a.state == "active" for a in dev_alarms):
            state = "alarm"
        elif any(j.id in waiting for j in failed):
            state = "needs decision"
        elif running:
            state = "waiting" if roles.get(name) == "operator" else "busy"
        else:
            state = "idle"
        if running:
            j = running[0]
            b = bar_of.get(j.id)
            plate = b.plate if b else str(job_params(j).get("plate") or "")
            current = f"{job_label(j)} · {plate} · {names.get(j.id, '')}".strip(" ·")
            if len(running) > 1:
                current += f" (+{len(running) - 1} more)"
            since = j.started_at
            until = (j.started_at + timedelta(seconds=job_duration_s(j))) if j.started_at else None
        errors: list[tuple[datetime, str]] = []
        for j in mine:
            if j.state in ("failed", "interrupted") or (
                isinstance(j.result, dict) and j.result.get("error")
            ):
                msg = j.result.get("error") if isinstance(j.result, dict) else None
                errors.append(
                    (j.finished_at or j.started_at or now, str(msg or f"{j.op} {j.state}"))
                )
        errors += [(a.raised_at, a.message) for a in dev_alarms]
        last = max(errors, key=lambda e: e[0]) if errors else None
        nxt = upcoming[0] if upcoming else None
        out.append(
            DeviceRow(
                name=name,
                role=roles.get(name, "incubator" if name in climate else ""),
                state=state,
                tone=tone_of(state),
                current=current,
                since=since,
                until=until,
                next_job=f"{nxt.label} · {nxt.plate}" if nxt else None,
                next_at=nxt.start if nxt else None,
                climate=climate.get(name),
                last_error=last[1] if last else None,
                last_error_at=last[0] if last else None,
                alarms=dev_alarms,
                timezone=tz,
            )
        )
    return tuple(out)


# --- operator commands ------------------------------------------------------------------------

Verifier = Callable[[str, str], bool]
"""Checks a password: ``verifier(actor, password) -> bool`` (see :mod:`labctl.gui.auth`)."""


@dataclass(frozen=True)
class CommandRequest:
    """An operator command before it is queued: what, for which run, and why."""

    verb: str
    run_id: int
    reason: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def irreversible(self) -> bool:
        """Abort and skip (also a prompt answered with 'skip') cannot be taken back."""
        if self.verb in IRREVERSIBLE_VERBS:
            return True
        answer = self.args.get("answer") if self.verb == "answer" else None
        return isinstance(answer, dict) and answer.get("choice") in IRREVERSIBLE_VERBS

    @property
    def needs_reason(self) -> bool:
        return self.verb in ("pause", "resume", "abort", "skip", "release") or self.irreversible

    def describe(self) -> str:
        """One line for the confirmation and the status bar."""
        a = self.args
        plate = f" plate {a['plate']} of" if a.get("plate") else ""
        if self.verb == "skip":
            on = f" on {a['plate']}" if a.get("plate") else " on every plate"
            return f"skip task {a.get('task')}{on} of run {self.run_id}"
        if self.verb == "answer":
            ans = a.get("answer") or {}
            what = f"'{ans['choice']}'" if isinstance(ans, dict) and "choice" in ans else "done"
            return f"answer prompt {a.get('prompt')} of run {self.run_id} with {what}"
        return f"{self.verb}{plate} run {self.run_id}"


def pause(run_id: int, reason: str, plate: str | None = None) -> CommandRequest:
    return CommandRequest("pause", run_id, reason, {"plate": plate} if plate else {})


def resume(run_id: int, reason: str, plate: str | None = None) -> CommandRequest:
    return CommandRequest("resume", run_id, reason, {"plate": plate} if plate else {})


def release(run_id: int, reason: str) -> CommandRequest:
    return CommandRequest("release", run_id, reason)


def abort(run_id: int, reason: str) -> CommandRequest:
    return CommandRequest("abort", run_id, reason)


def skip(run_id: int, task_key: str, reason: str, plate: str | None = None) -> CommandRequest:
    args: dict[str, Any] = {"task": task_key}
    if plate:
        args["plate"] = plate
    return CommandRequest("skip", run_id, reason, args)


def answer(prompt: PromptView, answer_: dict[str, Any], reason: str = "") -> CommandRequest:
    return CommandRequest("answer", prompt.run_id, reason, {"prompt": prompt.id, "answer": answer_})


def submit(
    store: Store,
    request: CommandRequest,
    *,
    actor: str,
    verifier: Verifier | None = None,
    password: str | None = None,
) -> Command:
    """Queue ``request`` for the engine, after checking its reason and, if it cannot be
    undone, the operator's password. Returns the pending command row.

    Raises ConsoleInputError (no reason) or PasswordRejected; nothing is written then.
    The password check runs here, on the worker thread: PBKDF2 takes a noticeable fraction
    of a second on purpose.
    """
    reason = request.reason.strip()
    if request.needs_reason and not reason:
        raise ConsoleInputError(
            f"give a reason to {request.describe()}: it goes into the audit trail"
        )
    if request.irreversible:
        if verifier is None:
            raise PasswordRejected("no password check is configured: the command was not sent")
        if not password or not verifier(actor, password):
            raise PasswordRejected(f"wrong password for {actor}: the command was not sent")
    return store.insert_command(
        request.verb, actor=actor, run_id=request.run_id, args=dict(request.args), reason=reason
    )


def acknowledge(store: Store, alarm_id: int, *, actor: str, reason: str = "") -> None:
    """Acknowledge an active alarm (it stays listed until the engine clears it)."""
    store.acknowledge_alarm(alarm_id, actor=actor, reason=reason or "seen on the console")


# --- audit trail ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """Which events the audit view lists (None/empty = any)."""

    run_id: int | None = None
    entity: str | None = None
    actor: str | None = None
    text: str | None = None

    def cleaned(self) -> EventFilter:
        return EventFilter(
            self.run_id,
            (self.entity or "").strip() or None,
            (self.actor or "").strip() or None,
            (self.text or "").strip() or None,
        )


@dataclass(frozen=True)
class EventRow:
    seq: int
    time: datetime
    entity: str
    entity_id: int | None
    action: str
    change: str  # "pending → running" or ""
    actor: str
    reason: str
    data: str  # compact JSON, cut at 300 characters


@dataclass(frozen=True)
class EventPage:
    rows: tuple[EventRow, ...]
    last_seq: int | None  # page on from here (after_seq)
    more: bool  # a further page may exist


def _data_text(data: Mapping[str, Any]) -> str:
    import json

    if not data:
        return ""
    text = json.dumps(
        data, ensure_ascii=False, separators=(", ", ": "), default=str, sort_keys=True
    )
    return text if len(text) <= 300 else text[:299] + "…"


def event_row(ev: Event) -> EventRow:
    change = ""
    if ev.from_state or ev.to_state:
        change = f"{ev.from_state or '∅'} → {ev.to_state or '∅'}"
    return EventRow(
        ev.seq, ev.time, ev.entity, ev.entity_id, ev.action, change, ev.actor, ev.reason,
        _data_text(ev.data),
    )  # fmt: skip


def event_page(
    store: Store,
    flt: EventFilter,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
    newest_first: bool = False,
    limit: int = 500,
) -> EventPage:
    """One page of audit events: oldest first after ``after_seq``, or newest first before
    ``before_seq``. ``last_seq`` of the page is where the next page starts."""
    f = flt.cleaned()
    evs = store.events(
        f.run_id,
        entity=f.entity,
        actor=f.actor,
        text=f.text,
        after_seq=after_seq,
        before_seq=before_seq,
        newest_first=newest_first,
        limit=limit,
    )
    rows = tuple(event_row(e) for e in evs)
    cursor = before_seq if newest_first else after_seq
    return EventPage(rows, rows[-1].seq if rows else cursor, len(rows) == limit)


def batch_record(store: Store, run_id: int) -> str:
    """The run's batch record as HTML (labctl.reports.batch)."""
    from labctl.reports.batch import batch_record as _br

    return _br(store, run_id)


# --- the run's locked protocol ----------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    day: int
    date: date
    time: str  # local HH:MM
    window: str
    kind: str
    title: str
    medium: str
    factors: str
    well: str  # effective concentrations in the well after the task
    volume_ul: float | None
    line: int


@dataclass(frozen=True)
class ProtocolInfo:
    run_id: int
    protocol_id: str
    version: str
    sha256: str
    title: str
    parameters: tuple[tuple[str, str], ...]
    start: datetime
    timezone: str
    plates: int
    rows: tuple[PlanRow, ...]
    diagram_png: bytes | None
    diagram_error: str | None
    source_text: str


def _plan_of_text(
    text: str,
    parameters: Mapping[str, Any],
    plates: int,
    start: datetime,
    timezone: str,
    file: str = "<locked protocol>",
) -> tuple[Any, Any]:
    from labctl.plan.resolve import resolve
    from labctl.validate import load_text

    res = load_text(text, file)
    if not res.ok or res.protocol is None:
        raise ProtocolError(res.diagnostics)
    plan = resolve(
        res.protocol, dict(parameters), plates=plates, start=start, timezone=timezone, strict=False
    )
    return res.protocol, plan


def _plan_of_run(run: Run) -> tuple[Any, Any]:
    """(Protocol, Plan) of a run from its locked protocol text, parameters and start.

    Cached: a run's protocol, parameters and start never change, and resolving takes a
    good part of a second (the prep sheets of each day and the protocol view reuse it).
    """
    import json

    return _cached_plan(
        run.protocol_text,
        json.dumps(run.parameters, sort_keys=True, default=str),
        run.plates,
        run.start.isoformat(),
        run.timezone,
        f"run {run.id} (locked protocol)",
    )


@functools.lru_cache(maxsize=16)
def _cached_plan(
    text: str, parameters: str, plates: int, start: str, timezone: str, file: str
) -> tuple[Any, Any]:
    import json

    return _plan_of_text(
        text, json.loads(parameters), plates, datetime.fromisoformat(start), timezone, file
    )


def _mix(parts: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for p in parts:
        f = _float(p.get("fraction"))
        name = str(p.get("medium"))
        out.append(name if f is None or f >= 0.9999 else f"{name} {f * 100:.0f} %")
    return " + ".join(out)


def _conc(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{n} {v.get('text') if isinstance(v, dict) else v}" for n, v in d.items())


def plan_rows(plan: Any) -> tuple[PlanRow, ...]:
    """The plan's tasks day by day, with what goes in and what the well holds after."""
    from labctl.plan.resolve import plan_to_json

    data = plan_to_json(plan)
    rows = []
    for t in data["tasks"]:
        due = datetime.fromisoformat(t["due"])
        ws, we = datetime.fromisoformat(t["window_start"]), datetime.fromisoformat(t["window_end"])
        medium = factors = ""
        if "feed" in t:
            medium = f"{t['feed']['change']}: " + _mix(t["feed"]["medium"])
            factors = _conc(t["feed"]["factors"])
        elif "washout" in t:
            medium = "washout: " + _mix(t["washout"]["medium"])
            factors = _conc(t["washout"]["factors"])
        elif "addition" in t:
            a = t["addition"]
            factors = f"{a['compound']} {a['conc']['text']}"
        elif "event" in t:
            medium = t["event"]["kind"]
            gates = t["event"].get("qc") or []
            factors = "; ".join(f"QC {g['measure']}" for g in gates)
        elif "environment" in t:
            e = t["environment"]
            medium = f"{e['temperature_c']:g} °C, CO₂ {e['co2_pct']:g} %"
        well = t["well_after"]
        rows.append(
            PlanRow(
                day=int(t["day"]),
                date=due.date(),
                time=due.strftime("%H:%M"),
                window=f"{ws:%H:%M}-{we:%H:%M}"
                if ws.date() == we.date()
                else f"{ws:%d %b %H:%M}-{we:%d %b %H:%M}",
                kind=t["kind"],
                title=t["title"],
                medium=medium,
                factors=factors,
                well=_conc(well.get("conc") or {}),
                volume_ul=_float(well.get("volume_ul")),
                line=int(t.get("line") or 0),
            )
        )
    return tuple(rows)


def diagram_png(protocol: Any, plan: Any) -> bytes:
    """The schedule figure (labctl.reports.diagram) as PNG bytes."""
    from labctl.reports.diagram import draw

    with tempfile.TemporaryDirectory(prefix="labctl-console-") as d:
        path = Path(d) / "diagram.png"
        draw(protocol, plan, path)
        return path.read_bytes()


def diagram_png_isolated(run: Run, *, timeout_s: float = 120.0) -> bytes:
    """The run's schedule figure drawn in a child process (labctl.gui.render_diagram).

    matplotlib holds Python's GIL while it renders; in a child process that cannot stall
    the console's GUI thread. Raises LabctlError with the child's message on failure.
    """
    import json
    import subprocess
    import sys

    request = {
        "text": run.protocol_text,
        "parameters": run.parameters,
        "plates": run.plates,
        "start": run.start.isoformat(),
        "timezone": run.timezone,
    }
    try:
        done = subprocess.run(  # noqa: S603 - our own module, no shell, fixed arguments
            [sys.executable, "-m", "labctl.gui.render_diagram"],
            input=json.dumps(request).encode("utf-8"),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabctlError(f"the diagram could not be drawn: {exc}") from None
    if done.returncode != 0 or not done.stdout.startswith(b"\x89PNG"):
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise LabctlError(f"the diagram could not be drawn: {why[-1] if why else 'no output'}")
    return done.stdout


def protocol_info(
    store: Store, run_id: int, *, diagram: bool = True, isolated: bool = True
) -> ProtocolInfo:
    """The run's plan from its locked protocol version (runs.protocol_text, never the file).

    The diagram is drawn in a child process unless ``isolated`` is False.
    """
    run = store.get_run(run_id)
    protocol, plan = _plan_of_run(run)
    png = err = None
    if diagram:
        try:
            png = diagram_png_isolated(run) if isolated else diagram_png(protocol, plan)
        except LabctlError as exc:
            err = exc.user_message()
    return ProtocolInfo(
        run_id=run.id,
        protocol_id=run.protocol_id,
        version=run.protocol_version,
        sha256=run.protocol_sha256,
        title=protocol.title,
        parameters=tuple((k, str(v)) for k, v in run.parameters.items()),
        start=run.start,
        timezone=run.timezone,
        plates=run.plates,
        rows=plan_rows(plan),
        diagram_png=png,
        diagram_error=err,
        source_text=run.protocol_text,
    )


def prep_html(store: Store, run_id: int, day: int) -> str:
    """Printable prep sheets (labctl.plan.prep) of ``day`` of the run, from its locked protocol."""
    from labctl.plan.prep import prep_sheets, render_html

    run = store.get_run(run_id)
    protocol, plan = _plan_of_run(run)
    sheets = prep_sheets(protocol, plan, day)
    page = render_html(protocol, plan, sheets)
    if not sheets:
        page = page.replace("</body>", f"<p><b>Nothing to prepare on day {day}.</b></p></body>", 1)
    return page


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


# --- registering a new run --------------------------------------------------------------------


@dataclass(frozen=True)
class ParamInfo:
    name: str
    default: str
    min: str
    max: str
    description: str


@dataclass(frozen=True)
class ProtocolCheck:
    """A protocol file as validated before a run is registered from it."""

    file: str
    text: str
    ok: bool
    diagnostics: tuple[Any, ...]  # labctl.errors.Diagnostic, errors and warnings
    protocol_id: str
    title: str
    version: str
    first_day: int
    last_day: int
    parameters: tuple[ParamInfo, ...]

    @property
    def errors(self) -> tuple[Any, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")


def check_protocol_text(text: str, file: str) -> ProtocolCheck:
    """Validate a protocol (labctl.protocol.loader.load_text); never raises for bad input."""
    from labctl.units import format_quantity
    from labctl.validate import load_text

    res = load_text(text, file)
    p = res.protocol
    params = ()
    if p is not None:
        params = tuple(
            ParamInfo(
                n,
                format_quantity(v.default),
                format_quantity(v.min) if v.min is not None else "",
                format_quantity(v.max) if v.max is not None else "",
                v.description or "",
            )
            for n, v in p.parameters.items()
        )
    return ProtocolCheck(
        file=file,
        text=text,
        ok=res.ok,
        diagnostics=tuple(res.diagnostics),
        protocol_id=p.id if p else "",
        title=p.title if p else "",
        version=p.version if p else "",
        first_day=p.first_day if p else 0,
        last_day=p.last_day if p else 0,
        parameters=params,
    )


@dataclass(frozen=True)
class NewRunRequest:
    """What the operator chose in the new-run dialog. ``start`` is local wall time (naive)."""

    file: str
    text: str
    name: str
    plates: int
    start: datetime
    timezone: str
    parameters: Mapping[str, str]
    reason: str = ""


#: Operator hours used to rank start dates when no workcell file gives them: weekdays
#: 08:00-18:00 (Monday = 0). A weekend manual task then costs a start date points.
DEFAULT_OPERATOR_HOURS: dict[int, tuple[time, time]] = {
    d: (time(8, 0), time(18, 0)) for d in range(5)
}


@dataclass(frozen=True)
class StartSuggestion:
    start: datetime
    penalty: float
    ok: bool
    note: str


def _load_ok(text: str, file: str) -> Any:
    from labctl.validate import load_text

    res = load_text(text, file)
    if not res.ok or res.protocol is None:
        raise ProtocolError(res.diagnostics)
    return res.protocol


def suggest_start_dates(
    text: str,
    file: str,
    *,
    plates: int,
    parameters: Mapping[str, str],
    timezone: str,
    first: date,
    days: int = 14,
    at: time = time(9, 0),
    operator_hours: Mapping[int, tuple[time, time]] | None = None,
) -> list[StartSuggestion]:
    """Rank the ``days`` start dates from ``first`` (at ``at`` local) with
    :func:`labctl.schedule.suggest.suggest_starts` on the simulated workcell, best first."""
    from labctl.jobs import WorkcellRoles
    from labctl.plan.resolve import resolve
    from labctl.schedule.suggest import suggest_starts
    from labctl.workcell import OperatorCalendar

    proto = _load_ok(text, file)
    labels = [f"P{i + 1}" for i in range(plates)]
    mo = proto.timing.max_out_of_incubator
    max_out = float(mo.to("s").magnitude) if mo is not None else None

    def factory(start: datetime) -> Any:
        return resolve(proto, dict(parameters), plates=plates, start=start, timezone=timezone)

    candidates = [datetime.combine(first + timedelta(days=k), at) for k in range(days)]
    hours = DEFAULT_OPERATOR_HOURS if operator_hours is None else operator_hours
    # The simulated workcell keeps the run's own zone (training and dry runs have no other).
    scores = suggest_starts(
        factory,
        candidates,
        WorkcellRoles.simulated(labels),
        OperatorCalendar(dict(hours), timezone),
        timezone,
        max_out_s=max_out,
    )
    return [
        StartSuggestion(
            s.start,
            s.penalty,
            s.ok,
            "everything fits"
            if s.ok
            else s.reasons[0] + (f" (+{len(s.reasons) - 1} more)" if len(s.reasons) > 1 else ""),
        )
        for s in scores
    ]


def register_new_run(store: Store, clock: Clock, req: NewRunRequest, *, actor: str) -> int:
    """Register the run (labctl.engine.register_run on the simulated workcell roles) and
    queue its ``start`` command for the engine. Returns the run id.

    Raises ProtocolError, ParameterError or PlanError when the protocol or the choices do
    not make a plan; nothing is written then.
    """
    from labctl.plan.resolve import resolve

    if not 1 <= req.plates <= 96:
        raise ConsoleInputError(f"plates must be between 1 and 96, not {req.plates}")
    proto = _load_ok(req.text, req.file)
    plan = resolve(
        proto, dict(req.parameters), plates=req.plates, start=req.start, timezone=req.timezone
    )
    labels = [f"P{i + 1}" for i in range(req.plates)]
    name = req.name.strip() or f"{proto.id} {plan.start:%Y-%m-%d}"
    with store.atomic():  # the run and its start command exist together or not at all
        return _register(store, clock, proto, plan, labels, name, req, actor)


def _register(
    store: Store,
    clock: Clock,
    proto: Any,
    plan: Any,
    labels: list[str],
    name: str,
    req: NewRunRequest,
    actor: str,
) -> int:
    from labctl.engine import register_run
    from labctl.jobs import WorkcellRoles

    run_id = register_run(
        store,
        clock,
        proto,
        plan,
        WorkcellRoles.simulated(labels),
        name=name,
        workcell_name="simulated",
        workcell_text="",
        actor=actor,
    )
    store.insert_command(
        "start",
        actor=actor,
        run_id=run_id,
        reason=req.reason.strip() or "registered on the console",
    )
    return run_id


@dataclass(frozen=True)
class SkippableTask:
    """A plan task not started on at least one plate: what the skip dialog offers."""

    task_key: str
    title: str
    day: int
    due: datetime
    plates: tuple[str, ...]
    timezone: str


def skippable_tasks(store: Store, run_id: int) -> list[SkippableTask]:
    """The run's tasks still pending on some plate, by due time (for the skip dialog)."""
    run = store.get_run(run_id)
    plates = {p.id: p.label for p in store.plates(run_id)}
    out: dict[str, SkippableTask] = {}
    for t in store.tasks(run_id, state="pending"):
        key = task_key_of(t)
        plate = task_plate(t, plates)
        if key in out:
            prev = out[key]
            out[key] = SkippableTask(
                key,
                prev.title,
                prev.day,
                min(prev.due, t.due),
                (*prev.plates, plate),
                prev.timezone,
            )
        else:
            out[key] = SkippableTask(key, task_title(t), t.day, t.due, (plate,), run.timezone)
    return sorted(out.values(), key=lambda s: (s.due, s.task_key))


def submit_all(
    store: Store,
    requests: Sequence[CommandRequest],
    *,
    actor: str,
    verifier: Verifier | None = None,
    password: str | None = None,
) -> list[Command]:
    """Queue several commands together, all or none (e.g. answer a decision and release).

    The password is checked once, before anything is written, if any request needs it.
    """
    if any(r.irreversible for r in requests):
        if verifier is None:
            raise PasswordRejected("no password check is configured: nothing was sent")
        if not password or not verifier(actor, password):
            raise PasswordRejected(f"wrong password for {actor}: nothing was sent")

    def checked(_actor: str, _password: str) -> bool:
        return True  # checked above, once (PBKDF2 is slow on purpose)

    with store.atomic():
        return [
            submit(store, r, actor=actor, verifier=checked, password=password or "-")
            for r in requests
        ]
