"""Reading the audit trail: events filtered and paged, its head, and the chain check."""

from __future__ import annotations

import dataclasses
from typing import Any

from labctl.store.audit import AuditReport, verify
from labctl.store.core import StoreCore
from labctl.store.models import EVENTS, Event

__all__ = ["HistoryStore"]

_EVENT_COLUMNS = ", ".join(EVENTS.columns)
_TRIGGERS = ("events_no_update", "events_no_delete", "events_append_only")


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, with % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class HistoryStore(StoreCore):
    """Reads the append-only audit trail (events are appended only with the writes of rows.py)."""

    def events(
        self,
        run_id: int | None = None,
        *,
        entity: str | None = None,
        entity_id: int | None = None,
        action: str | None = None,
        actor: str | None = None,
        text: str | None = None,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int | None = 100,
        newest_first: bool = False,
        with_workcell: bool = False,
    ) -> list[Event]:
        """Audit events, filtered and paged by seq.

        ``with_workcell`` (with ``run_id``): also the workcell's own events, filed under no
        run (device alarms, climate readings), as a run's audit view shows them.

        ``entity`` is the entity kind ('job', 'prompt', ...); ``text`` matches (case-
        insensitively for ASCII) anywhere in action, states, actor, reason or data. Page
        forwards with ``after_seq`` = last seq seen, backwards with ``before_seq`` and
        ``newest_first``.
        """
        where: list[str] = []
        params: list[Any] = []
        if run_id is not None:
            where.append("(run_id = ? OR run_id IS NULL)" if with_workcell else "run_id = ?")
            params.append(run_id)
        for column, value in (
            ("entity", entity),
            ("entity_id", entity_id),
            ("action", action),
            ("actor", actor),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if after_seq is not None:
            where.append("seq > ?")
            params.append(after_seq)
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        if text:
            searched = ("action", "from_state", "to_state", "actor", "reason", "data")
            where.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in searched) + ")")
            params.extend([_like(text)] * len(searched))
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq" + (" DESC" if newest_first else "")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._reading("list events"):
            return [EVENTS.decode(r) for r in self._db.query(sql, params)]

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest event: print it in a batch record as an outside anchor."""
        with self._reading("read the audit head"):
            row = self._conn.execute(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (row[0], row[1]) if row else None

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the database
        (SQLite's ``PRAGMA data_version``): a cheap way to notice a queued command."""
        with self._lock, self._guard("read the data version"):
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def event_hash(self, seq: int) -> str | None:
        """The hash of event ``seq`` (None if there is no such event)."""
        with self._reading("read an audit hash"):
            row = self._conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
        return str(row[0]) if row else None

    def verify_chain(self) -> AuditReport:
        """Check the whole audit trail's hash chain (see :mod:`labctl.store.audit`)."""
        with self._reading("verify the audit trail"):
            names = {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            }
            issued = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()

            def seq_of_hash(h: str) -> int | None:
                found = self._conn.execute("SELECT seq FROM events WHERE hash = ?", (h,)).fetchone()
                return found[0] if found else None

            # A separate cursor: seq_of_hash runs queries while this one is being read.
            cursor = self._conn.cursor().execute(
                f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq"
            )
            rows = (dict(zip(EVENTS.columns, r, strict=True)) for r in cursor)
            report = verify(
                rows, seq_of_hash=seq_of_hash, highest_issued=issued[0] if issued else 0
            )
        missing = [t for t in _TRIGGERS if t not in names]
        if missing:
            # Only an intact chain needs the warning in its message; a broken one says more.
            note = f" (append-only triggers missing: {', '.join(missing)})" if report.ok else ""
            report = dataclasses.replace(
                report, triggers_present=False, message=report.message + note
            )
        return report
