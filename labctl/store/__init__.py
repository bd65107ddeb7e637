"""SQLite store: runs, tasks, jobs, prompts, alarms, commands and the audit trail.

Open one with ``Store.open(path, clock)``; see :mod:`labctl.store.store` for how the Store
is put together, :mod:`labctl.store.core` for the rules (WAL, IMMEDIATE transactions, one
lock per connection) and :mod:`labctl.store.audit` for the hash chain's canonical form.
"""

from labctl.store.audit import GENESIS, AuditReport, canonical, event_hash
from labctl.store.models import (
    Alarm,
    Command,
    Event,
    Job,
    Plate,
    Prompt,
    QcValue,
    ReagentLot,
    Run,
    RunSummary,
    Task,
)
from labctl.store.schema import MIGRATIONS, SCHEMA_VERSION
from labctl.store.store import Store

__all__ = [
    "GENESIS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Alarm",
    "AuditReport",
    "Command",
    "Event",
    "Job",
    "Plate",
    "Prompt",
    "QcValue",
    "ReagentLot",
    "Run",
    "RunSummary",
    "Store",
    "Task",
    "canonical",
    "event_hash",
]
