"""The engine's current schedule of every live run, re-made when reality departs from it.

The scheduler sees the whole workcell at once: every run's pending chains, every chain
under way (its started jobs fixed where they are, in whatever state its run is), devices
that cannot take work now (a blocking alarm stands), each run's operator calendar, and the
durations the workcell has really kept (:class:`~labctl.engine.pace.Pace`). A chain that
cannot make its window raises a 'late' alarm before the window is missed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from labctl.engine.alarms import Alarms, task_subject
from labctl.engine.config import EngineConfig
from labctl.engine.machines import JobState, RunState, TaskState
from labctl.engine.pace import Pace
from labctl.engine.records import ChainRec, Picture, to_chain
from labctl.jobs import Chain
from labctl.schedule.scheduler import Schedule, Slot, schedule
from labctl.workcell import OperatorCalendar

SCHEDULED_RUNS = (RunState.RUNNING, RunState.PLANNED)  # whose pending chains are planned


class Planner:
    """Holds the latest schedule and the pending chains in planned order."""

    def __init__(self, cfg: EngineConfig, picture: Picture, pace: Pace, alarms: Alarms) -> None:
        self.cfg = cfg
        self.picture = picture
        self.pace = pace
        self.alarms = alarms
        self.stale = True  # re-plan at the next pass
        self.schedule: Schedule | None = None
        self.order: list[ChainRec] = []  # pending chains by planned start
        self.planned_end: dict[str, datetime] = {}  # chain key -> end in the latest schedule
        self._late_alarmed: set[str] = set()  # chain keys

    def invalidate(self) -> None:
        """Something changed what may run when: re-plan at the next pass."""
        self.stale = True

    def replan(self, now: datetime, blocked: set[str]) -> None:
        """Schedule every live run together; ``blocked``: devices that cannot take work now."""
        self.stale = False
        chains: list[Chain] = []
        fixed: dict[str, Slot] = {}
        done_at: dict[str, datetime] = {}
        operators: dict[str, OperatorCalendar] = {}
        durations = {j.id: self.pace.planned(j) for j in self.picture.jobs.values()}
        for r in self.picture.runs.values():
            if r.calendar is not None:
                operators[r.tag] = r.calendar
            planned = r.state in SCHEDULED_RUNS
            for c in r.chains.values():
                if planned and c.main_start is not None:
                    done_at[c.key] = c.main_start
                # A chain under way goes on in any live run (its plate goes home): its started
                # jobs keep their device, plate and places busy where they are.
                if c.state is TaskState.ACTIVE or (planned and c.state is TaskState.PENDING):
                    chains.append(to_chain(c, durations))
                if c.state is TaskState.ACTIVE:
                    fixed.update(self._started(c, now, durations))
        # A device with a blocking alarm takes no work at least until the next check.
        until = now + timedelta(seconds=self.cfg.alarm_check_s)
        self.schedule = schedule(
            chains,
            now=now,
            busy_until={d: until for d in sorted(blocked)},
            fixed=fixed,
            done_at=done_at,
            operators=operators,
        )
        for key, cp in self.schedule.chains.items():
            self.planned_end[key] = cp.end
        self.order = sorted(
            (c for c in self.picture.chains.values() if c.state is TaskState.PENDING),
            key=lambda x: (self.planned_start(x), x.key),
        )
        self._alarm_late()

    def _started(self, c: ChainRec, now: datetime, durations: dict[int, float]) -> dict[str, Slot]:
        out = {}
        for j in c.jobs:
            if j.started_at is not None and j.state is not JobState.READY:
                end = j.finished_at or max(now, j.started_at + timedelta(seconds=durations[j.id]))
                out[j.key] = Slot(j.key, j.device, j.started_at, end, None, None)
        return out

    def _alarm_late(self) -> None:
        """Raised before the window is missed; cleared once the task ends (the batch record
        keeps the late start)."""
        assert self.schedule is not None
        for key in self.schedule.late:
            if key in self._late_alarmed:
                continue
            c = self.picture.find_chain(key)
            if c is None:
                continue
            self._late_alarmed.add(key)
            cp = self.schedule.chains[key]
            tz = ZoneInfo(self.picture.run_of(c).timezone)
            end = (cp.window_end or c.window_end).astimezone(tz)
            self.alarms.raise_(
                c.run_id,
                task_subject(c),
                "late",
                f"{c.key} cannot start inside its window (ends {end:%a %d %b %H:%M %Z}; "
                f"slack {cp.slack_s / 60:.0f} min): it will be late",
            )

    # ---- what the schedule says -------------------------------------------------------

    def planned_start(self, c: ChainRec) -> datetime:
        if self.schedule is not None and c.key in self.schedule.chains:
            return self.schedule.chains[c.key].start
        return c.planned_start or c.window_start

    def scheduled_position(self, c: ChainRec, place: str) -> int | None:
        """The deck position the schedule chose for the chain (None for other places)."""
        if self.schedule is None or not place.endswith(":deck"):
            return None
        for j in c.jobs:
            slot = self.schedule.slots.get(j.key)
            if slot is not None and slot.deck_slot is not None:
                return slot.deck_slot
        return None

    def next_start_after(self, now: datetime) -> datetime | None:
        """The planned start of the first pending chain not yet due."""
        return next((t for t in (self.planned_start(c) for c in self.order) if t > now), None)
