"""The run database: the one package that writes labctl's state (STYLE.md item 3).

Everything else asks a :class:`Store`: the engine moves entities with :meth:`Store.transition`
(state change and audit event committed together, before any device is told to act),
consoles and the CLI read state and add operator commands. SQL never appears outside this
package.

:class:`Store` is put together from one class per subject, all sharing one connection,
lock and transaction depth: the connection core (core.py: open, transactions, the audit
append), rows and their events (rows.py: insert, transition, record), then runs, operator
commands and prompts, alarms, batch-record measurements, engine sessions, the audit
trail's reads, and user accounts with their signatures. They
are mixins rather than parts held by the Store because every write of every subject must
join the same ``atomic()`` transaction on the same connection; separate objects would only
forward to that one connection.
"""

from __future__ import annotations

from typing import Any

from labctl.store.alarms import AlarmStore
from labctl.store.commands import OperatorStore
from labctl.store.engines import EngineStore
from labctl.store.history import HistoryStore
from labctl.store.records import RecordStore
from labctl.store.runs import RunStore
from labctl.store.signatures import SignatureStore

__all__ = ["Store"]


class Store(
    RunStore, OperatorStore, AlarmStore, RecordStore, EngineStore, HistoryStore, SignatureStore
):
    """A labctl run database on one SQLite file. Create with :meth:`open`.

    Times written are ``clock.now()`` (ISO-8601 UTC text). Methods raise
    :class:`StoreError` for database trouble (locked beyond the busy timeout, corrupt,
    constraint violated, unknown id) and :class:`InvalidTransition` when a row is not in
    the state a transition expects. One Store may be shared between threads of a process
    (a re-entrant lock serialises its connection); several processes may open one file.
    """

    def command_subject(
        self, action: str, run_id: int | None, args: dict[str, Any], reason: str
    ) -> dict[str, Any]:
        """What a signature on an operator command covers (the CLI and the console sign
        the same): the action, the run and its protocol's hash, the command's args, why."""
        run = self.get_run(run_id) if run_id is not None else None
        return {
            "action": action,
            "run": run_id,
            "protocol_sha256": run.protocol_sha256 if run is not None else None,
            "args": args,
            "reason": reason,
        }

    def registered_by(self, run_id: int) -> str | None:
        """Who registered run ``run_id``: the actor of its 'created' event."""
        events = self.events(run_id, entity="run", entity_id=run_id, action="created", limit=1)
        return events[0].actor if events else None
