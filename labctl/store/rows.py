"""One row and its audit event: the generic insert, transition, record and read.

Every write here commits the row change and its event in one transaction (DESIGN.md:
committed, with its audit entry, before the device is told to act). The subject classes
(runs, operator, alarms, records, history) build their public methods on these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlite_utils.db import NotFoundError

from labctl.errors import InvalidTransition, StoreError
from labctl.store.codec import plain, to_iso
from labctl.store.core import StoreCore
from labctl.store.models import TABLES, Event, M, TableSpec

__all__ = ["RowStore"]

# Columns transition() may not set through ``updates``: identity, state and bookkeeping.
_FIXED = frozenset({"id", "state", "created_at", "updated_at"})


class RowStore(StoreCore):
    """Rows of any table, each change committed together with its audit event.

    :meth:`transition` raises :class:`InvalidTransition` when a row is not in the state
    it expects; everything else raises :class:`StoreError`.
    """

    # ---------------------------------------------------------------- writes

    def transition(
        self,
        entity: str,
        entity_id: int,
        to_state: str,
        *,
        expected_from: str,
        actor: str,
        reason: str,
        data: dict[str, Any] | None = None,
        updates: dict[str, Any] | None = None,
    ) -> Event:
        """Move one row to ``to_state`` and append its audit event, in ONE transaction.

        Checks the row is in ``expected_from`` (else :class:`InvalidTransition` naming the
        entity, id and actual state, and nothing is written), sets ``state`` plus the
        columns in ``updates`` (datetimes and JSON values coded as on insert), and appends
        an event with action 'transition' ('update' if the state stays the same) whose data
        is ``data`` plus ``{"updates": updates}``. Commit happens before this returns:
        only then may a device be told to act.
        """
        spec = _stateful_table(entity)
        to_state, expected_from = plain(to_state), plain(expected_from)
        updates = dict(updates or {})
        fixed = _FIXED & set(updates)
        if fixed:
            raise StoreError(f"transition() cannot set {', '.join(sorted(fixed))} of a {entity}")
        if updates and data and "updates" in data:
            raise StoreError("event data may not use the key 'updates' when updates are given")
        values = spec.encode_row(updates)
        values["state"] = to_state
        if "updated_at" in spec.columns:
            values["updated_at"] = to_iso(self.clock.now())
        with self._writing(f"move {entity} {entity_id} to {to_state!r}"):
            row = self._conn.execute(
                f"SELECT state, {spec.run_id_sql} FROM {spec.table} WHERE id = ?", (entity_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no {entity} with id {entity_id}")
            actual, run_id = row
            if actual != expected_from:
                raise InvalidTransition(
                    f"{entity} {entity_id} is {actual!r}, not {expected_from!r}: "
                    f"cannot move it to {to_state!r}"
                )
            assignments = ", ".join(f"{col} = ?" for col in values)
            self._conn.execute(
                f"UPDATE {spec.table} SET {assignments} WHERE id = ?",
                [*values.values(), entity_id],
            )
            event_data = dict(data or {})
            if updates:
                event_data["updates"] = updates
            return self._append_event(
                entity=entity,
                entity_id=entity_id,
                action="transition" if actual != to_state else "update",
                from_state=actual,
                to_state=to_state,
                actor=actor,
                reason=reason,
                data=event_data,
                run_id=run_id,
            )

    def record(
        self,
        action: str,
        *,
        entity: str,
        entity_id: int | None = None,
        actor: str,
        reason: str = "",
        data: dict[str, Any] | None = None,
        run_id: int | None = None,
    ) -> Event:
        """Append an event that changes no state: a device call or result, a note.

        ``entity`` may be a table kind ('job', 'run', ...; the row must exist and its run
        is filled in) or any other name ('device', 'engine') with ``run_id`` given by the
        caller.
        """
        with self._writing(f"record {action!r} for {entity} {entity_id}"):
            if entity in TABLES and entity_id is not None:
                row_run = self._run_of(TABLES[entity], entity_id)
                if run_id is not None and run_id != row_run:
                    raise StoreError(f"{entity} {entity_id} belongs to run {row_run}, not {run_id}")
                run_id = row_run
            return self._append_event(
                entity=entity,
                entity_id=entity_id,
                action=action,
                from_state=None,
                to_state=None,
                actor=actor,
                reason=reason,
                data=data,
                run_id=run_id,
            )

    def _insert(
        self,
        spec: TableSpec[M],
        values: dict[str, Any],
        *,
        actor: str,
        reason: str = "",
        event_data: Mapping[str, Any] | None = None,
    ) -> M:
        """Insert one row and its 'created' event in one transaction; return the row."""
        encoded = spec.encode_row(values)
        with self._writing(f"add a {spec.kind}"):
            new_id = self._conn.execute(
                f"INSERT INTO {spec.table} ({', '.join(encoded)}) "
                f"VALUES ({', '.join('?' * len(encoded))})",
                list(encoded.values()),
            ).lastrowid
            if new_id is None:  # sqlite3 sets it after every successful INSERT
                raise StoreError(f"{self.path}: SQLite gave no id for the new {spec.kind}")
            self._append_event(
                entity=spec.kind,
                entity_id=new_id,
                action="created",
                from_state=None,
                to_state=values.get("state"),
                actor=actor,
                reason=reason,
                data=values if event_data is None else event_data,
                run_id=self._run_of(spec, new_id),
            )
            return spec.decode(self._row(spec, new_id))

    # ---------------------------------------------------------------- reads

    def _run_of(self, spec: TableSpec[Any], row_id: int) -> int | None:
        """The run of row ``row_id`` (None for a run-less alarm or command)."""
        row = self._conn.execute(
            f"SELECT {spec.run_id_sql} FROM {spec.table} WHERE id = ?", (row_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no {spec.kind} with id {row_id}")
        run_id: int | None = row[0]
        return run_id

    def _row(self, spec: TableSpec[Any], row_id: int) -> dict[str, Any]:
        """The raw row ``row_id`` of the spec's table; raises NotFoundError if absent."""
        # Fetched whole (one row at most): a half-read statement would hold its snapshot.
        rows = list(self._db.query(f"SELECT * FROM [{spec.table}] WHERE id = ?", [row_id]))
        if not rows:
            raise NotFoundError(f"no {spec.table} row with id {row_id}")
        return rows[0]

    def _get(self, spec: TableSpec[M], row_id: int) -> M:
        with self._query(f"read {spec.kind} {row_id}"):
            try:
                return spec.decode(self._row(spec, row_id))
            except NotFoundError:
                raise StoreError(f"{self.path}: no {spec.kind} with id {row_id}") from None

    def _rows(self, spec: TableSpec[M], sql: str, params: Sequence[Any] = ()) -> list[M]:
        with self._query(f"list {spec.table}"):
            return [spec.decode(r) for r in self._db.query(sql, list(params))]


def _stateful_table(entity: str) -> TableSpec[Any]:
    """The table of entity kind ``entity`` (a name a caller passed in), whose rows have a state."""
    spec = TABLES.get(entity)
    if spec is None:
        raise StoreError(f"unknown entity kind {entity!r} (known: {', '.join(TABLES)})")
    if not spec.stateful:
        raise StoreError(f"{entity} rows have no state to transition")
    return spec
