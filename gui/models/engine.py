"""Whether an engine carries the runs out, as the console says it at a glance.

:func:`engine_view` reads :func:`labctl.engine.presence.engine_status` (the engine's lock
beside the database and its heartbeat in the store) and sorts it into one of five levels
the console draws differently:

- ``running``: an engine holds the database and beat within three beats (15 s);
- ``starting``: a process holds the lock but has not opened its session yet;
- ``held``: a running engine that starts nothing until a supervisor confirms the devices
  were checked (its database went back: restored from an older copy);
- ``stale``: an engine holds the database but has not beaten for over three beats: it is
  stuck, and runs are not being carried out;
- ``down``: no engine runs (it stopped, crashed, or never ran): runs are not being carried
  out and commands wait in the queue.

``stale`` and ``down`` are loud: the console turns them red, in words as well as colour.
Heartbeats are wall-clock times, so ``wall_now`` comes from a real clock even when the
runs' clock is paced or virtual. Plain Python: no Qt here (STYLE.md 8).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from labctl.engine.daemon import DaemonConfig
from labctl.engine.presence import engine_status
from labctl.gui.models.common import duration_text
from labctl.store import Store

#: How often the engine daemon beats (wall seconds); three beats missed is "not responding".
HEARTBEAT_S = DaemonConfig().heartbeat_s
STALE_S = 3 * HEARTBEAT_S
LEVELS = ("running", "starting", "held", "stale", "down")

#: What the engine adds to its hold reason for CLI users; the console says it in its own words.
_CLI_HINT = "; check the devices, then: labctl confirm-store"

_HEADLINE = {
    "running": "ENGINE RUNNING",
    "starting": "ENGINE STARTING",
    "held": "ENGINE HELD: it starts nothing until a supervisor confirms",
    "stale": "ENGINE NOT RESPONDING: runs are not being carried out",
    "down": "ENGINE NOT RUNNING: runs are not being carried out",
}
_ADVICE = {
    "running": "",
    "starting": "It is reading its runs back from the database; commands apply once it is up.",
    "held": (
        "Check every device against the run database (plates in the incubators and on the "
        "deck, liquid-handler runs), then a supervisor presses “Confirm the devices were "
        "checked…”. Commands are still applied; no new work starts."
    ),
    "stale": (
        "Check the engine's computer and its log; if it hangs, stop it and start it again "
        "(labctl engine). Commands wait until it answers."
    ),
    "down": (
        "Start it on the workcell computer: labctl engine. Commands you give wait in the "
        "queue and apply when it starts."
    ),
}
_TONE = {
    "running": "ok",
    "starting": "pending",
    "held": "holding",
    "stale": "fault",
    "down": "fault",
}


@dataclass(frozen=True)
class EngineView:
    """The engine's state as the console shows it (see the module docstring).

    ``text`` is the line ``labctl status`` prints; ``held`` why a held engine starts
    nothing; ``seen_s`` wall seconds since its last heartbeat (None: no session yet);
    ``ever`` whether any engine ever served this database; ``heartbeat_at`` its last
    heartbeat and ``since`` when it stopped or fell silent (wall-clock, aware UTC).
    """

    level: str
    running: bool
    text: str
    held: str | None = None
    seen_s: float | None = None
    ever: bool = True
    headline: str = ""
    advice: str = ""
    heartbeat_at: datetime | None = None
    since: datetime | None = None

    @property
    def loud(self) -> bool:
        """No engine carries the runs out: the console says so in red."""
        return self.level in ("stale", "down")

    @property
    def tone(self) -> str:
        """The console's tone name for the level (``ok``, ``holding``, ``fault``, ...)."""
        return _TONE[self.level]

    @property
    def applies_commands(self) -> bool:
        """Whether a command queued now is applied within seconds (held engines apply them)."""
        return self.running and self.level != "stale"

    @property
    def can_confirm(self) -> bool:
        """A held engine that answers: a supervisor may confirm that the devices were
        checked (a stuck one would not apply it: it is said to be stuck instead)."""
        return self.level == "held" and self.held is not None

    @property
    def detail(self) -> str:
        """The line under the headline: the hold's reason, else what the engine said."""
        return f"Why: {self.held}" if self.level == "held" and self.held else self.text


def _view(
    level: str,
    running: bool,
    text: str,
    held: str | None,
    seen: float | None,
    ever: bool,
    *,
    heartbeat_at: datetime | None = None,
    since: datetime | None = None,
) -> EngineView:
    return EngineView(
        level,
        running,
        text,
        held,
        seen,
        ever,
        headline=_HEADLINE[level],
        advice=_ADVICE[level],
        heartbeat_at=heartbeat_at,
        since=since,
    )


def stale_view(view: EngineView, wall_now: datetime) -> EngineView:
    """``view`` aged to ``wall_now``: a running or held engine whose last heartbeat is now
    over three beats old is not responding (the console says so even when it cannot read
    the store again: a reading that is never refreshed must not say "running")."""
    if view.heartbeat_at is None or view.level not in ("running", "held"):
        return view
    seen = (wall_now - view.heartbeat_at).total_seconds()
    if seen <= STALE_S:
        return view
    return replace(
        view,
        level="stale",
        seen_s=seen,
        text=f"no heartbeat from the engine for {duration_text(seen)}",
        headline=_HEADLINE["stale"],
        advice=_ADVICE["stale"],
        since=view.heartbeat_at,
    )


def engine_view(db: Path, store: Store, wall_now: datetime) -> EngineView:
    """Whether an engine serves ``db`` now (``store`` is a connection to it).

    Reads the lock file and the newest engine session: cheap, but a read all the same, so
    the console calls it on its worker thread with each snapshot.
    """
    st = engine_status(db, store, wall_now, heartbeat_s=HEARTBEAT_S)
    last = store.last_engine()
    seen = (wall_now - last.heartbeat_at).total_seconds() if last is not None else None
    held = st.held.split(_CLI_HINT)[0].strip() if st.held else None
    ever = last is not None
    since = None
    if not st.running:
        level = "down"
        if last is not None:
            since = last.stopped_at or last.heartbeat_at
    elif last is None or last.state != "running":
        level = "starting"
    elif seen is not None and seen > STALE_S:
        level = "stale"
        since = last.heartbeat_at
    else:
        level = "held" if held else "running"
    beat = last.heartbeat_at if last is not None else None
    return _view(level, st.running, st.text, held, seen, ever, heartbeat_at=beat, since=since)


def training_view(view: EngineView, simulating: bool) -> EngineView:
    """The engine of a training database: ``labctl simulate`` drives its runs in-process
    and keeps no engine session, so while it runs (``simulating``) and no engine session
    exists, the simulation is the engine."""
    if view.ever:
        return view
    if simulating:
        return EngineView(
            "running",
            True,
            "the training simulation (labctl simulate) carries the runs out",
            ever=False,
            headline="TRAINING SIMULATION RUNNING",
        )
    return EngineView(
        "down",
        False,
        "the training simulation has ended: nothing carries the runs out",
        ever=False,
        headline="TRAINING SIMULATION ENDED",
        advice="Start another one: Console ▸ Training run…",
    )
