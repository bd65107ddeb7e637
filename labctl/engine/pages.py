"""What a page says: the e-mail subject and text and the webhook's JSON of one alarm.

The subject names the workcell, the level and the trouble in a few words, with its run and
task: ``[labctl bay-1] CRITICAL: plate P3 out of the incubator 25 min (run 2, day 12
feed)``. The text says what, where, since when (the workcell's time zone and UTC), what to
do, and the commands that show it. The webhook's JSON (schema ``labctl.page/1``) carries
the same, field by field (docs/workcell.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from labctl.store import Store
from labctl.store.models import Alarm, Run, Task
from labctl.workcell import PAGING_LEVELS

__all__ = [
    "CRITICAL_CODES",
    "ENGINE_SILENT",
    "WATCHDOG_CODES",
    "Context",
    "Page",
    "all_clear_page",
    "alarm_json",
    "compose",
    "iso_utc",
    "level_of",
    "plain_page",
    "rank",
]

# Alarms of the store's 'error' severity that are critical: the cells suffer by the minute
# (a plate out of its incubator, an incubator out of its climate or with its door open).
CRITICAL_CODES = frozenset({"out-too-long", "climate", "door"})
# The engine has written nothing for too long while runs depend on it: raised and cleared by
# the watchdog (labctl.engine.watchdog), paged by the watchdog's pager and never the engine's.
ENGINE_SILENT = "engine-silent"
WATCHDOG_CODES = frozenset({ENGINE_SILENT})


def level_of(a: Alarm) -> str:
    """The paging level of an alarm: the store's 'warning' is warning, its 'error' is alarm,
    or critical for :data:`CRITICAL_CODES` (a severity 'critical' is critical)."""
    if a.severity in PAGING_LEVELS:
        return a.severity
    return "critical" if a.code in CRITICAL_CODES else "alarm"


def rank(level: str) -> int:
    return PAGING_LEVELS.index(level) if level in PAGING_LEVELS else len(PAGING_LEVELS)


# ---- the page ------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of one alarm: the e-mail subject and text, and the webhook's JSON object."""

    alarm_id: int
    run_id: int | None
    level: str
    key: str  # run|subject|code: the condition, the same for an alarm raised again
    subject: str
    body: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Context:
    """Where the page is sent from and how its reader looks further (for :func:`compose`)."""

    workcell: str
    timezone: str = "UTC"
    db: str | None = None  # the run database, for the commands the page suggests
    host: str = ""  # the engine's machine
    practice: bool = False
    repeat_after_s: float | None = 1800.0
    sender: str = "the labctl engine"  # who sends the pages (the watchdog, for its own)


@dataclass(frozen=True)
class _Where:
    run: Run | None = None
    task: Task | None = None
    plate: str | None = None
    device: str | None = None


_TASK_IN_TEXT = re.compile(r"\b(r\d+:d\d+-\S+?)(?=[\s,;)]|$)")

# What the person paged does about each code ({device}, {plate}, {run}, {db} filled in).
_TODO = {
    "out-too-long": "Go to plate {plate}: if nothing is carrying it, put it back in its "
    "incubator; if its step stopped, see why (a device alarm, a prompt). The time out of the "
    "incubator is recorded as a deviation in the batch record.",
    "climate": "Check {device}: its CO2 (and N2) supply, its door seal and its setpoints. The "
    "plates inside are exposed while its climate is out of range.",
    "door": "Close the door of {device}. Nothing moves in or out of it while it is open, and "
    "its climate is lost meanwhile.",
    "door-open": "Close the door of {device}, then resume its run on the robot (touchscreen "
    "or app); the plate waits on the deck meanwhile.",
    "offline": "Check the power, cable and network of {device}. Nothing new starts on it "
    "until it answers; plates wait where they are.",
    "unreachable": "Check the power, cable and network of {device}: a step under way on it "
    "is followed again as soon as it answers.",
    "estop": "Find out why the emergency stop of {device} was pressed. Look in its gripper "
    "for a plate before releasing it.",
    "power-off": "The motor power of {device} is off. Look in its gripper for a plate before "
    "powering it again.",
    "needs-operator": "Go to {device}: it waits for a person (the console's Devices view "
    "says why).",
    "wrong-robot": "Another robot model answers at the address of {device}: check the "
    "address in the workcell file against the robot.",
    "late": "See what holds the workcell up (a device alarm, a held run, a busy robot): the "
    "engine starts the task as soon as it can, and the batch record keeps the late start.",
    "no-answer": "Answer the prompt on the console, or: labctl prompts{db} then labctl answer ...",
    "hold": "Read why run {run} is held (labctl status {run}{db}), decide, then release it on "
    "the console or with: labctl release {run} --reason ...{db}",
    "held": "The run database went back (restored, or it lost its latest writes): check the "
    "devices against it, then: labctl confirm-store --reason ...{db}",
    ENGINE_SILENT: "Find out why the engine stopped (its service's log, or the terminal it ran "
    "in; labctl status{db} says what it last wrote) and start it again: labctl engine "
    "--workcell ...{db}. Until it runs nothing is carried out: no plate is moved, no incubator "
    "watched, no other alarm paged.",
}
_DEFAULT_TODO = "Look at the alarm on the console and act on its message."


def compose(store: Store, a: Alarm, now: datetime, ctx: Context, *, repeat: int = 0) -> Page:
    """The page of alarm ``a`` at ``now``; ``repeat``: how many pages of it went out before
    (0: the first). Reads the alarm's run and task from ``store``."""
    w = _where(store, a)
    level = level_of(a)
    tz = _zone(ctx.timezone)
    since = _out_since(store, a, w) or a.raised_at
    headline = _headline(a, w, now, since)
    detail = []
    if w.run is not None and f"run {w.run.id}" not in headline:
        detail.append(f"run {w.run.id}")
    if w.task is not None:
        detail.append(f"day {w.task.day} {w.task.kind}")
    tag = f"labctl {ctx.workcell}" + (" PRACTICE" if ctx.practice else "")
    subject = f"[{tag}] {level.upper()}: {headline}" + (f" ({', '.join(detail)})" if detail else "")
    db = f" --db {ctx.db}" if ctx.db else ""
    run_arg = f" {a.run_id}" if a.run_id is not None else ""
    see = [f"labctl status{run_arg}{db}", f"labctl console{db}"]
    todo = _TODO.get(a.code, _DEFAULT_TODO).format(
        device=w.device or a.device or "the device",
        plate=w.plate or "?",
        run=a.run_id if a.run_id is not None else "",
        db=db,
    )
    where = _where_text(ctx.workcell, w, a)
    ago = _minutes(now - since)
    when = f"{_local(since, tz)} ({since.astimezone(timezone.utc):%H:%M} UTC), {ago} min ago"
    again = (
        f"every {ctx.repeat_after_s / 60:g} min while the alarm stands unacknowledged"
        if ctx.repeat_after_s
        else "not again (paged once per alarm)"
    )
    nth = "first page" if repeat == 0 else f"page {repeat + 1}: still active, not acknowledged"
    lines = [
        subject,
        "",
        f"What:   {a.message}",
        f"Where:  {where}",
        f"Since:  {when}",
        f"Level:  {level} (alarm {a.id}, code {a.code}); {nth}",
        "",
        "What to do:",
        f"  {todo}",
        "",
        "See it:",
        *(f"  {c}" for c in see),
        "  Acknowledge the alarm on the console (the alarm banner) to stop these pages.",
        "",
        f"Sent by {ctx.sender}{' on ' + ctx.host if ctx.host else ''} at "
        f"{_local(now, tz)} ({now.astimezone(timezone.utc):%H:%M} UTC). Pages repeat {again}.",
    ]
    body = "\n".join(lines[2:]) + "\n"
    payload: dict[str, Any] = {
        "schema": "labctl.page/1",
        "kind": "alarm",
        "workcell": ctx.workcell,
        "practice": ctx.practice,
        "level": level,
        "subject": subject,
        "headline": headline,
        "text": "\n".join(lines) + "\n",
        "alarm": alarm_json(a),
        "where": {
            "run": None if w.run is None else {"id": w.run.id, "name": w.run.name},
            "task": None
            if w.task is None
            else {"key": w.task.key, "day": w.task.day, "kind": w.task.kind},
            "plate": w.plate,
            "device": w.device,
        },
        "since": iso_utc(since),
        "since_local": since.astimezone(tz).isoformat(timespec="seconds"),
        "timezone": ctx.timezone,
        "what_to_do": todo,
        "see": see,
        "page": {
            "repeat": repeat,
            "sent_at": iso_utc(now),
            "repeat_after_s": ctx.repeat_after_s,
            "host": ctx.host,
        },
    }
    key = f"{a.run_id}|{a.device}|{a.code}"
    return Page(a.id, a.run_id, level, key, subject, body, payload)


def plain_page(a: Alarm, now: datetime, ctx: Context, why: str, *, repeat: int = 0) -> Page:
    """A page of ``a`` from the alarm row alone, for when :func:`compose` fails (``why``):
    the person is still told, in fewer words."""
    level = level_of(a)
    subject = f"[labctl {ctx.workcell}] {level.upper()}: {a.device or a.code}: {a.message}"
    subject = subject if len(subject) <= 160 else subject[:157] + "..."
    body = (
        f"What:   {a.message}\n"
        f"Where:  workcell {ctx.workcell}; {a.device or ''}"
        f"{f'; run {a.run_id}' if a.run_id is not None else ''}\n"
        f"Since:  {iso_utc(a.raised_at)}\n"
        f"Level:  {level} (alarm {a.id}, code {a.code}); page {repeat + 1}\n\n"
        "Look at the alarm on the console; acknowledge it there to stop these pages.\n"
        f"(This page could not be worded in full: {why})\n"
    )
    payload: dict[str, Any] = {
        "schema": "labctl.page/1",
        "kind": "alarm",
        "workcell": ctx.workcell,
        "practice": ctx.practice,
        "level": level,
        "subject": subject,
        "text": f"{subject}\n\n{body}",
        "alarm": alarm_json(a),
        "page": {"repeat": repeat, "sent_at": iso_utc(now), "host": ctx.host},
    }
    return Page(a.id, a.run_id, level, f"{a.run_id}|{a.device}|{a.code}", subject, body, payload)


def all_clear_page(a: Alarm, now: datetime, ctx: Context, *, subject: str, sent: int) -> Page:
    """The one short page after ``a`` stopped being active: ``Acknowledged by sue: <subject>``
    or ``Cleared: <subject>``, ``subject`` being its last page's by that channel, ``sent`` how
    many pages of it that channel delivered."""
    tz = _zone(ctx.timezone)
    if a.state == "acknowledged":
        how, by, at = "acknowledged", a.acknowledged_by or "?", a.acknowledged_at or now
        first = f"Acknowledged by {by}: {subject}"
        said = (
            f"acknowledged by {by} at {_local(at, tz)} ({at.astimezone(timezone.utc):%H:%M} "
            "UTC): someone is on it. Its cause may still stand (the console shows it until it "
            "clears)."
        )
    else:
        how, by, at = "cleared", a.cleared_by or "?", a.cleared_at or now
        first = f"Cleared: {subject}"
        ack = f", acknowledged by {a.acknowledged_by} before" if a.acknowledged_by else ""
        said = (
            f"its condition is gone (cleared by {by} at {_local(at, tz)}, "
            f"{at.astimezone(timezone.utc):%H:%M} UTC{ack})."
        )
    pages = f"{sent} page{'s' if sent != 1 else ''}"
    body = (
        f"Alarm {a.id} ({a.code}) {said}\n"
        f"It was: {a.message}\n"
        f"No more pages of it (after {pages}).\n\n"
        f"Sent by {ctx.sender}{' on ' + ctx.host if ctx.host else ''} at {_local(now, tz)}.\n"
    )
    payload: dict[str, Any] = {
        "schema": "labctl.page/1",
        "kind": "all-clear",
        "workcell": ctx.workcell,
        "practice": ctx.practice,
        "level": level_of(a),
        "subject": first,
        "text": f"{first}\n\n{body}",
        "alarm": alarm_json(a),
        "all_clear": {"how": how, "by": by, "at": iso_utc(at)},
        "page": {"repeat": sent, "sent_at": iso_utc(now), "host": ctx.host},
    }
    key = f"{a.run_id}|{a.device}|{a.code}"
    return Page(a.id, a.run_id, level_of(a), key, first, body, payload)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _where(store: Store, a: Alarm) -> _Where:
    """The run, task, plate and device an alarm is about (read from its subject)."""
    subject = a.device or ""
    run = store.get_run(a.run_id) if a.run_id is not None else None
    kind, _, rest = subject.partition(" ")
    key: str | None = None
    plate: str | None = None
    if kind == "task":
        key = rest
    elif kind == "prompt":
        key = rest.rsplit("/", 1)[0]  # a job key is its chain's key + "/" + its number
    elif kind == "plate":
        plate = rest
        m = _TASK_IN_TEXT.search(a.message)
        key = m.group(1) if m else None
    elif kind != "run" and subject != "engine":
        return _Where(run, device=subject or None)
    task = None
    if run is not None and (key is not None or plate is not None):
        tasks = store.tasks(run.id)
        task = next((t for t in tasks if t.key == key), None)
        if task is None and plate is not None:  # the plate's task under way
            task = next((t for t in tasks if t.state == "active" and _plate_of(t) == plate), None)
    if task is not None and plate is None:
        plate = _plate_of(task)
    return _Where(run, task, plate)


def _plate_of(t: Task) -> str | None:
    return t.key.rsplit("/", 1)[1] if "/" in t.key else None


def _out_since(store: Store, a: Alarm, w: _Where) -> datetime | None:
    """When a plate out too long left its incubator (from the deviation recorded with the
    alarm: its time less the seconds it had been out)."""
    if a.code != "out-too-long" or w.task is None:
        return None
    for e in store.events(
        entity="task", entity_id=w.task.id, action="deviation", newest_first=True, limit=20
    ):
        seconds = e.data.get("seconds")
        if e.data.get("kind") == "out_of_incubator" and isinstance(seconds, (int, float)):
            return e.time - timedelta(seconds=float(seconds))
    return None


def _headline(a: Alarm, w: _Where, now: datetime, since: datetime) -> str:
    """What is wrong in a few words, as of ``now``."""
    dev = w.device or a.device or "a device"
    plate = f"plate {w.plate}" if w.plate else "a plate"
    run = f"run {a.run_id}"
    if w.run is not None:
        run += f" '{w.run.name}'"
    words = {
        "out-too-long": f"{plate} out of the incubator {_minutes(now - since)} min",
        "late": f"{plate} will start late" if w.plate else "a task will start late",
        "no-answer": f"prompt for {plate} unanswered" if w.plate else "a prompt is unanswered",
        "hold": f"{run} is on hold",
        "held": "the engine is held: it starts nothing",
        ENGINE_SILENT: "the engine is silent: nothing is carried out",
        "door": f"{dev}: door open",
        "door-open": f"{dev}: door open, its run is paused",
        "offline": f"{dev} does not answer",
        "unreachable": f"{dev} does not answer",
        "climate": f"{dev}: climate out of range",
        "estop": f"{dev}: emergency stop",
        "power-off": f"{dev}: motor power off",
        "needs-operator": f"{dev} needs a person",
        "wrong-robot": f"{dev}: another robot answers",
    }
    text = words.get(a.code)
    if text is None:
        first = a.message.strip().splitlines()[0] if a.message.strip() else a.code
        text = first if len(first) <= 80 else first[:77] + "..."
    return text


def _where_text(workcell: str, w: _Where, a: Alarm) -> str:
    parts = [f"workcell {workcell}"]
    if w.device:
        parts.append(f"device {w.device}")
    if w.run is not None:
        parts.append(f"run {w.run.id} '{w.run.name}'")
    if w.plate:
        parts.append(f"plate {w.plate}")
    if w.task is not None:
        parts.append(f"task {w.task.key} (day {w.task.day} {w.task.kind})")
    elif not w.device and a.device:
        parts.append(a.device)
    return "; ".join(parts)


def _minutes(d: timedelta) -> int:
    return max(0, round(d.total_seconds() / 60))


def _local(t: datetime, tz: ZoneInfo) -> str:
    return f"{t.astimezone(tz):%a %d %b %Y %H:%M %Z}"


def iso_utc(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def alarm_json(a: Alarm) -> dict[str, Any]:
    """The alarm's fields in a page's JSON body."""
    return {
        "id": a.id,
        "code": a.code,
        "severity": a.severity,
        "subject": a.device,
        "message": a.message,
        "state": a.state,
        "raised_at": iso_utc(a.raised_at),
    }
