"""What the wall monitor shows, from a console snapshot: the day's work across every run,
in the words a person reads from across the room. Plain Python, no Qt.

Four lists, most urgent first: what needs a person (open prompts, with the time left before
their default; alarms not yet acknowledged), what is late (a step past the end of its
window and not done), what is due next (each run's next step, with the time left), and what
runs (each live run, its day and state).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from labctl.gui.models.common import tzinfo
from labctl.gui.models.snapshot import Snapshot

__all__ = ["WallBoard", "WallLine", "span_text", "wall_board"]

ENDED = ("completed", "aborted", "failed")
FINISHED = ("done", "skipped")


@dataclass(frozen=True)
class WallLine:
    """One line of the wall: the big words, the smaller ones after them, and its tone
    (a key of :data:`labctl.gui.theme.TONES`)."""

    text: str
    detail: str
    tone: str


@dataclass(frozen=True)
class WallBoard:
    clock: str  # "03:12", the workcell's local time
    date: str  # "Sun 13 Dec"
    person: tuple[WallLine, ...]
    late: tuple[WallLine, ...]
    next: tuple[WallLine, ...]
    runs: tuple[WallLine, ...]


def span_text(seconds: float) -> str:
    """A span in the words a wall shows: "45 s", "42 min", "3 h 05 min", "2 d 4 h"."""
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _left(when: datetime | None, now: datetime) -> str:
    """ "in 42 min", or "42 min ago" once past."""
    if when is None:
        return ""
    secs = (when - now).total_seconds()
    return f"in {span_text(secs)}" if secs >= 0 else f"{span_text(secs)} ago"


def _hm(when: datetime, timezone: str) -> str:
    return when.astimezone(tzinfo(timezone)).strftime("%H:%M")


def wall_board(snap: Snapshot, now: datetime, timezone: str = "UTC") -> WallBoard:
    """The board at ``now`` (the console's clock) in ``timezone`` (the workcell's)."""
    runs = {r.id: r for r in snap.runs}
    live = [r for r in snap.runs if r.state not in ENDED]
    person = [
        WallLine(
            f"{p.run_name}: {p.heading}",
            (f"default '{p.default_choice}' {_left(p.deadline, now)}" if p.deadline else "")
            or f"waiting since {_hm(p.created_at, timezone)}",
            "holding" if p.kind != "recovery" else "fault",
        )
        for p in sorted(snap.prompts, key=lambda p: p.deadline or p.created_at)
    ]
    person += [
        WallLine(
            f"ALARM {a.device or ''} {a.code}".replace("  ", " "),
            f"{a.message} (since {_hm(a.raised_at, timezone)})",
            "fault",
        )
        for a in snap.alarms
        if a.state == "active"
    ]
    late: dict[tuple[int, str, str], WallLine] = {}
    for b in snap.bars:
        if not b.main or b.state in FINISHED or b.window_end is None or b.window_end >= now:
            continue
        run = runs.get(b.run_id)
        if run is None or run.state in ENDED:
            continue
        key = (b.run_id, b.task_key, b.plate)
        if key not in late:
            over = span_text((now - b.window_end).total_seconds())
            late[key] = WallLine(
                f"{b.run_name}: {b.title} {b.plate}".strip(),
                f"{over} late: its window ended {_hm(b.window_end, timezone)} · {b.state}",
                "fault",
            )
    nxt = [
        WallLine(
            f"{r.name}: {r.next_task}",
            f"{r.next_plates} · due {_left(r.next_time, now)} ({_hm(r.next_time, timezone)})"
            if r.next_time is not None
            else r.next_plates,
            "running" if r.state == "running" else "paused",
        )
        for r in sorted(live, key=lambda r: (r.next_time is None, r.next_time or now))
        if r.next_task
    ]
    going = [
        WallLine(
            r.name,
            f"day {r.day} of {r.last_day} · {r.state}"
            + (f" · {r.open_prompts} prompt(s)" if r.open_prompts else "")
            + (f" · {r.active_alarms} alarm(s)" if r.active_alarms else ""),
            r.tone,
        )
        for r in live
    ]
    t = now.astimezone(tzinfo(timezone))
    return WallBoard(
        f"{t:%H:%M}", f"{t:%a %d %b}", tuple(person), tuple(late.values()), tuple(nxt), tuple(going)
    )
