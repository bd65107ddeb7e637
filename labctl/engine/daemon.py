"""The engine as a long-lived process (``labctl engine``): one per database, always saying
whether it runs.

It takes the database's engine lock (a second engine is refused, naming the first), opens
a session in the store and beats every few seconds, so ``labctl status`` and the console
can say "engine running, seen 3 s ago" or "engine NOT running since ..., reason". It keeps
serving with no run at all and starts runs registered while it runs. It stops on Ctrl-C
or SIGTERM, or on a storage error (it then dispatches nothing more), and always leaves its
stop reason: in the store if it can, beside the database if it cannot.

Before telling any device to act it marks the store's head beside the database; on start,
and at every pass, a store that went backwards (restored from an older copy, lost its
latest transactions) holds the engine until an operator confirms.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from labctl.clock import Clock
from labctl.engine.loop import Engine
from labctl.engine.paging import Pager
from labctl.engine.presence import EngineLock, last_acted, mark_head, went_backwards
from labctl.errors import StoreError
from labctl.store import Store


@dataclass(frozen=True)
class DaemonConfig:
    """Wall-clock seconds: how often it beats, and at most how long it sleeps between passes
    (so commands from consoles and the CLI are applied within about this long)."""

    heartbeat_s: float = 5.0
    command_poll_s: float = 0.1  # how often an idle engine looks for a commit by a client
    max_idle_s: float = 5.0  # a pass of the loop at least this often, even with nothing due
    pace: float = 1.0  # virtual seconds per wall second of the engine's clock


class Daemon:
    """Serves one database until told to stop; :meth:`serve` returns the stop reason."""

    def __init__(
        self,
        engine: Engine,
        db: Path,
        wall: Clock,
        *,
        workcell: str,
        config: DaemonConfig | None = None,
        pager: Pager | None = None,
    ) -> None:
        """``pager``: pages the person on call (the workcell file's ``paging:``)."""
        self.engine = engine
        self.store: Store = engine.store
        self.clock = engine.clock
        self.wall = wall  # real time, for the heartbeat people read
        self.db = db
        self.workcell = workcell
        self.cfg = config or DaemonConfig()
        self.lock = EngineLock(db)
        self.session_id: int | None = None
        self.failed = False  # it stopped on an error (a storage error)
        self._next_beat: datetime | None = None
        self.pager = pager

    def serve(self, should_stop: Callable[[], bool] = lambda: False) -> str:
        """Run until ``should_stop()``, Ctrl-C or a storage error; returns why it stopped.
        Raises EngineBusy (nothing done) when another engine holds the database."""
        host = socket.gethostname()
        self.lock.acquire({"pid": os.getpid(), "host": host, "since": _iso(self.wall.now())})
        reason = "stopped"
        try:
            try:
                reason = self._serve(should_stop, host)
            except KeyboardInterrupt:
                reason = "stopped by the operator (Ctrl-C or SIGTERM)"
            except StoreError as exc:
                self.failed = True
                reason = f"storage error, nothing more dispatched: {exc}"
        finally:
            self._stop(reason)
        return reason

    def _serve(self, should_stop: Callable[[], bool], host: str) -> str:
        session = self.store.engine_started(
            pid=os.getpid(), host=host, workcell=self.workcell, at=self.wall.now(), actor="engine"
        )
        self.session_id = session.id
        self.engine.dispatcher.before_act.append(self._mark)
        self.engine.on_unhold.append(self._mark)
        self.engine.recover()
        self._check_store()
        if self.pager is not None:
            self.pager.attach(self.engine)
        self._beat(force=True)
        while not should_stop():
            self._check_store()
            wake = self.engine.step()
            self._beat()
            self._idle(wake)
        return "stopped on request"

    def _idle(self, wake: datetime | None) -> None:
        """Sleep until ``wake`` (at most a heartbeat), waking at once when a client commits
        something (a command, an answer): at a practice pace a second of waiting is many
        minutes of the run."""
        step = timedelta(seconds=self.cfg.command_poll_s * self.cfg.pace)
        until = self.clock.now() + timedelta(seconds=self.cfg.max_idle_s * self.cfg.pace)
        if wake is not None:
            until = min(until, wake)
        seen = self.store.data_version()
        while True:
            now = self.clock.now()
            if now >= until:
                return
            self.clock.sleep_until(min(until, now + step))
            self._beat()
            if self.store.data_version() != seen:
                return

    def _mark(self) -> None:
        mark_head(self.db, self.store)

    def _check_store(self) -> None:
        """Hold the engine if its store is behind what the devices were told."""
        if self.engine.held is not None:
            return
        why = went_backwards(self.db, self.store)
        if why is not None:
            # What the engine holds in memory may be newer than the store: read it again.
            self.engine.recover()
            doubted = self.engine.doubt(why, last_acted(self.db) or self.clock.now())
            more = f"; {doubted} task(s) that may have been done are asked about" if doubted else ""
            self.engine.hold(
                why + more + "; check the devices, then: labctl confirm-store --reason ..."
            )

    def _beat(self, *, force: bool = False) -> None:
        now = self.wall.now()
        if self.session_id is None or (not force and self._next_beat and now < self._next_beat):
            return
        self._next_beat = now + timedelta(seconds=self.cfg.heartbeat_s)
        self.store.engine_beat(self.session_id, now, held=self.engine.held)

    def _stop(self, reason: str) -> None:
        if self.pager is not None:
            try:
                self.pager.close()  # records the pages under way
            except StoreError:
                pass
        at = self.wall.now()
        self.lock.last_words({"stopped_at": _iso(at), "stop_reason": reason})
        if self.session_id is not None:
            try:
                self.store.engine_stopped(self.session_id, at, reason=reason, actor="engine")
            except StoreError:
                pass  # the lock file keeps the reason (the store is what failed)
        self.lock.release()


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")
