"""The watchdog: someone is paged when the engine itself stops (``labctl watchdog``).

The engine pages the alarms it sees (:mod:`labctl.engine.paging`), so an engine that died,
hung or was stopped pages nobody. The watchdog is a separate small process (run by systemd
or cron) that reads the engine's heartbeat from the store (written every few seconds,
wall-clock, by :class:`~labctl.engine.daemon.Daemon`). When the engine has written nothing
for longer than ``silent_after_s`` while a run depends on it, it raises one alarm (code
``engine-silent``, severity critical, subject ``engine``, no run: it concerns them all)
and pages it with the same :class:`~labctl.engine.paging.Pager` the engine uses (its
audit events, repeat and all-clear rules), built as the watchdog's: it pages only that
alarm, which the engine's pager leaves to it. When the engine writes again (or no run
depends on it any more) the watchdog clears the alarm, and the pager sends the all clear.

A run depends on the engine when it is *running*, or *paused* or *held* with a task whose
time has come that is not done (a plate may be mid-step). An engine that stopped cleanly
(its session says why: Ctrl-C, SIGTERM) was stopped on purpose: only a *running* run makes
that a page. An engine that stopped on a storage error, was lost (killed, crashed, its
machine down) or is still registered as running but silent (hung) is paged for as soon as
any run depends on it.

The alarm and its pages live in the store, so a watchdog started again (by cron, every
minute) finds the alarm it raised before and neither raises a second one nor pages it
again early. Limits: a watchdog whose database is locked by a hung engine cannot write its
alarm (it says so on standard error and tries again); a watchdog that is not running
watches nothing (run it under systemd with Restart=always, or from cron).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from labctl.clock import Clock
from labctl.engine.pages import ENGINE_SILENT
from labctl.engine.paging import Pager
from labctl.engine.presence import read_lock
from labctl.errors import StoreError
from labctl.store import Store
from labctl.store.models import Alarm, EngineSession, Run

__all__ = ["ACTOR", "SUBJECT", "Verdict", "Watchdog"]

ACTOR = "watchdog"
SUBJECT = "engine"  # the alarm's subject, as the engine's own 'held' alarm
SILENT_AFTER_S = 120.0  # default: 24 missed heartbeats (the engine beats every 5 s)
EVERY_S = 30.0  # default: seconds between two checks
# How the daemon words a stop on a storage error (Daemon.serve): not a stop on purpose.
_FAILED_STOP = "storage error"
_DEPENDS = frozenset({"running", "paused", "holding"})
_UNFINISHED = frozenset({"pending", "active"})


@dataclass(frozen=True)
class Verdict:
    """What one check found. ``alarm``: the engine-silent alarm standing after it (None:
    none); ``raised``/``cleared``: whether this check raised or cleared it; ``text``: one
    line for people; ``failed``: the check itself could not be made (the store said no)."""

    alarm: Alarm | None
    raised: bool
    cleared: bool
    text: str
    failed: bool = False

    @property
    def well(self) -> bool:
        """No alarm stands and the check was made."""
        return self.alarm is None and not self.failed


@dataclass(frozen=True)
class _Silence:
    since: datetime | None  # the last heartbeat or stop (None: no engine ever ran)
    stopped: str | None  # why it stopped, when its session says it did
    clean: bool  # stopped on purpose (its session says so)
    running: bool  # its session still says it runs (hung, or gone without a word)


class Watchdog:
    """Checks the engine's heartbeat against the runs that depend on it (module docstring).

    ``wall``: real time, against which the heartbeat (wall-clock) is read and through which
    :meth:`run` sleeps; the runs' time (paced on a practice database) is the store's clock.
    ``pager``: the watchdog's pager (None: the workcell pages nobody; the alarm still shows).
    ``db``: the database file, to tell a hung engine (its lock held) from a dead one."""

    def __init__(
        self,
        store: Store,
        wall: Clock,
        *,
        timezone: str = "UTC",
        pager: Pager | None = None,
        db: Path | None = None,
        silent_after_s: float = SILENT_AFTER_S,
        settle_s: float = 30.0,
    ) -> None:
        """``settle_s``: real seconds each check waits at most for the pages under way
        (the watchdog has nothing else to do meanwhile)."""
        self.store = store
        self.wall = wall
        self.pager = pager
        self.db = db
        self.silent_after_s = silent_after_s
        self.settle_s = settle_s
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.tz = ZoneInfo("UTC")
        # A practice database's workcell runs on a paced clock (labctl simulators up
        # --pace N) while heartbeats are this computer's time: the words say which.
        try:
            paced = store.clock_epoch() is not None
        except StoreError:
            paced = False
        self.clock_note = " on this computer's clock" if paced else ""

    def check(self) -> Verdict:
        """One look at the heartbeat: raise, keep or clear the alarm, then page what is due
        and wait (at most ``settle_s``) for those pages to be recorded."""
        now = self.wall.now()
        with self.store.atomic():  # one alarm, also when two watchdogs look at once
            silence = self._silence(self.store.last_engine(), now)
            runs = self._depending(silence) if silence is not None else []
            standing, raised, cleared, text = self._decide(silence, runs, now)
        if self.pager is not None:
            self.pager.tick(self.store.clock.now())
            self.pager.settle(self.settle_s)
        return Verdict(standing, raised, cleared, text)

    def _decide(
        self, silence: _Silence | None, runs: list[Run], now: datetime
    ) -> tuple[Alarm | None, bool, bool, str]:
        """Raise, keep or clear the alarm: (the alarm standing, raised, cleared, words)."""
        standing = self._standing()
        if silence is not None and runs:
            text = self._message(silence, runs, now)
            if standing is not None:
                return standing, False, False, f"still silent: {text}"
            alarm = self.store.insert_alarm(
                severity="critical", code=ENGINE_SILENT, message=text, actor=ACTOR,
                device=SUBJECT,
            )  # fmt: skip
            return alarm, True, False, text
        if standing is not None:
            why = "the engine writes again"
            if silence is not None:
                why = "no run depends on the engine any more"
            self.store.clear_alarm(standing.id, actor=ACTOR, reason=why)
            return None, False, True, f"alarm cleared: {why}"
        if silence is not None:
            return None, False, False, f"{self._head(silence, now)}; no run depends on it"
        return None, False, False, "the engine writes its heartbeat"

    def run(
        self,
        every_s: float = EVERY_S,
        *,
        say: Callable[[Verdict], None] = lambda v: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Check every ``every_s`` seconds (slept through the wall clock) until
        ``should_stop()`` (after a check) or Ctrl-C; ``say`` gets each verdict. A check the
        store refuses (locked by a hung engine, a disk error) is said and tried again."""
        while True:
            try:
                verdict = self.check()
            except StoreError as exc:
                text = f"cannot check the run database: {exc}; trying again in {every_s:g} s"
                verdict = Verdict(self._standing_or_none(), False, False, text, failed=True)
            say(verdict)
            if should_stop():
                return
            self.wall.sleep(every_s)

    # ---- what the store says ------------------------------------------------------------

    def _standing_or_none(self) -> Alarm | None:
        try:
            return self._standing()
        except StoreError:
            return None

    def _standing(self) -> Alarm | None:
        """The engine-silent alarm not yet cleared (active or acknowledged), if any."""
        return next(
            (
                a
                for a in self.store.active_alarms()
                if a.code == ENGINE_SILENT and a.device == SUBJECT
            ),
            None,
        )

    def _silence(self, last: EngineSession | None, now: datetime) -> _Silence | None:
        """How the engine fell silent (None: it wrote within ``silent_after_s``)."""
        if last is None:
            return _Silence(None, None, False, False)
        if last.state == "stopped":
            reason = last.stop_reason or "no reason given"
            clean = not reason.startswith(_FAILED_STOP)
            silence = _Silence(last.stopped_at or last.heartbeat_at, reason, clean, False)
        else:  # 'running' (hung, or gone without a word) or 'lost'
            silence = _Silence(last.heartbeat_at, None, False, last.state == "running")
        assert silence.since is not None
        if now - silence.since <= timedelta(seconds=self.silent_after_s):
            return None
        return silence

    def _depending(self, silence: _Silence) -> list[Run]:
        """The runs that depend on the engine: running ones; unless it stopped cleanly,
        also paused or held ones with an unfinished task whose time has come."""
        now = self.store.clock.now()  # the runs' time (paced on a practice database)
        out = []
        for r in sorted(self.store.list_runs(), key=lambda r: r.id):
            if r.state == "running":
                out.append(r)
            elif r.state in _DEPENDS and not silence.clean and self._work_due(r, now):
                out.append(r)
        return out

    def _work_due(self, r: Run, now: datetime) -> bool:
        return any(
            t.state in _UNFINISHED and (t.window_start or t.due) <= now
            for t in self.store.tasks(r.id)
        )

    # ---- words --------------------------------------------------------------------------

    def _message(self, s: _Silence, runs: list[Run], now: datetime) -> str:
        """``The engine has written nothing since 03:12 CET (14 min); runs 1 'a', 2 'b'
        depend on it``, and what became of its process when its session says it runs."""
        names = ", ".join(f"{r.id} '{r.name}'" for r in runs)
        depend = f"run {names} depends" if len(runs) == 1 else f"runs {names} depend"
        return f"{self._head(s, now)}; {depend} on it{self._process(s)}"

    def _head(self, s: _Silence, now: datetime) -> str:
        if s.since is None:
            return "No engine has ever run on this database"
        ago = _duration(now - s.since)
        if s.stopped is not None:
            return f"The engine stopped at {self._when(s.since, now)} ({ago} ago): {s.stopped}"
        return f"The engine has written nothing since {self._when(s.since, now)} ({ago})"

    def _process(self, s: _Silence) -> str:
        """What the engine's lock says of a session that still says it runs."""
        if self.db is None or not s.running:
            return ""
        if read_lock(self.db).held:
            return "; its process still holds the database: hung?"
        return "; its process is gone (killed, crashed, or its machine went down)"

    def _when(self, t: datetime, now: datetime) -> str:
        """``03:12 CET``, with the date when that was not today (in the workcell's zone)."""
        local = t.astimezone(self.tz)
        day = "" if local.date() == now.astimezone(self.tz).date() else f"{local:%a %d %b} "
        return f"{day}{local:%H:%M} {local.tzname()}{self.clock_note}"


def _duration(d: timedelta) -> str:
    """``14 min``, ``3 h 5 min``, ``2 d 4 h``."""
    m = max(0, round(d.total_seconds() / 60))
    if m < 90:
        return f"{m} min"
    if m < 48 * 60:
        return f"{m // 60} h {m % 60} min"
    return f"{m // 1440} d {m % 1440 // 60} h"
