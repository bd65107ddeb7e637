"""The engine daemons that served this database: started, beating, stopped or lost.

A start, a stop and a loss are audit events; the heartbeat is not (it changes no state,
and every few seconds would drown the trail). Times here are wall-clock and passed in by
the caller, who reads them from a real clock even when the runs are paced.
"""

from __future__ import annotations

import json
from datetime import datetime

from labctl.clock import Epoch
from labctl.errors import StoreError
from labctl.store.codec import to_iso
from labctl.store.models import ENGINES, EngineSession
from labctl.store.rows import RowStore

__all__ = ["EngineStore"]


class EngineStore(RowStore):
    """Sessions of the engine daemon: one row per start."""

    def engine_started(
        self, *, pid: int, host: str, workcell: str, at: datetime, actor: str
    ) -> EngineSession:
        """A new session; any session still marked running is marked lost first (its
        process is gone: the caller holds the database's engine lock)."""
        with self.atomic():
            for old in self.engine_sessions(state="running"):
                self.transition(
                    "engine",
                    old.id,
                    "lost",
                    expected_from="running",
                    actor=actor,
                    reason=(
                        f"engine {old.pid} on {old.host} stopped without a word (killed, crashed "
                        f"or its machine went down); last seen {old.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
                    ),
                    updates={"stopped_at": old.heartbeat_at, "stop_reason": "no heartbeat"},
                )
            values = {
                "pid": pid,
                "host": host,
                "workcell": workcell,
                "state": "running",
                "started_at": at,
                "heartbeat_at": at,
            }
            return self._insert(ENGINES, values, actor=actor, reason="engine started")

    def engine_beat(self, session_id: int, at: datetime, *, held: str | None = None) -> None:
        """The engine is alive at ``at``; ``held``: why it dispatches nothing (None: it does)."""
        with self._writing("record the engine's heartbeat"):
            self._conn.execute(
                "UPDATE engines SET heartbeat_at = ?, held = ? WHERE id = ?",
                (to_iso(at), held, session_id),
            )

    def engine_stopped(self, session_id: int, at: datetime, *, reason: str, actor: str) -> None:
        """The engine ends, saying why (Ctrl-C, a storage error, ...)."""
        self.transition(
            "engine",
            session_id,
            "stopped",
            expected_from="running",
            actor=actor,
            reason=reason,
            updates={"stopped_at": at, "stop_reason": reason, "heartbeat_at": at},
        )

    def engine_sessions(self, *, state: str | None = None, limit: int = 20) -> list[EngineSession]:
        """Sessions, newest first."""
        extra, params = (" WHERE state = ?", [state]) if state else ("", [])
        return self._rows(
            ENGINES, f"SELECT * FROM engines{extra} ORDER BY id DESC LIMIT ?", [*params, limit]
        )

    def clock_epoch(self) -> Epoch | None:
        """The paced time scale of this database's runs (None: they run in real time).

        A practice workcell (``labctl simulators up --pace N``) runs its simulators, its
        engine and every client on one shared epoch, kept here so each process agrees."""
        with self._reading("read the clock epoch"):
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'clock_epoch'").fetchone()
        if row is None:
            return None
        try:
            return Epoch.from_json(json.loads(row[0]))
        except ValueError as exc:
            raise StoreError(f"{self.path}: meta.clock_epoch is not an epoch: {exc}") from None

    def store_doubt(self) -> tuple[str, datetime] | None:
        """Why, and until when, the engine last found this store behind its devices (the
        tasks whose window had opened by then may have begun in the time it lost); None
        when it never did."""
        with self._reading("read the store doubt"):
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'store_doubt'").fetchone()
        if row is None:
            return None
        try:
            d = json.loads(row[0])
            return str(d["reason"]), datetime.fromisoformat(d["acted_until"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.path}: meta.store_doubt is not readable: {exc}") from None

    def set_store_doubt(self, reason: str, acted_until: datetime) -> None:
        """Keep why the store is in doubt and until when the engine had acted (read again by
        an engine that restarts while tasks behind the first of a plate are still to ask)."""
        value = {"reason": reason, "acted_until": acted_until.isoformat()}
        with self._writing("keep the store doubt"):
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('store_doubt', ?)",
                (json.dumps(value, sort_keys=True),),
            )

    def set_clock_epoch(self, epoch: Epoch | None, *, actor: str) -> None:
        """Set (or, with None, remove) the paced time scale of this database."""
        with self._writing("set the clock epoch"):
            if epoch is None:
                self._conn.execute("DELETE FROM meta WHERE key = 'clock_epoch'")
            else:
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('clock_epoch', ?)",
                    (json.dumps(epoch.to_json(), sort_keys=True),),
                )
            self._append_event(
                entity="engine",
                entity_id=None,
                action="clock",
                from_state=None,
                to_state=None,
                actor=actor,
                reason="paced time" if epoch is not None else "real time",
                data=epoch.to_json() if epoch is not None else {},
                run_id=None,
            )

    def last_engine(self) -> EngineSession | None:
        """The newest session (None if no engine ever served this database)."""
        rows = self.engine_sessions(limit=1)
        return rows[0] if rows else None
