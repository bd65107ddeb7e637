"""The run database schema as numbered migrations, and the code that applies them.

``MIGRATIONS`` is a list of ``(version, step)``; a step is an SQL script or a callable taking
the ``sqlite3.Connection``. Each step runs in its own IMMEDIATE transaction together with the
update of ``meta.schema_version``, so a failed step leaves the database at the previous
version. Versions only grow: never edit a released step, append a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

from labctl.errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "read_version"]

Step = str | Callable[[sqlite3.Connection], None]

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL,
    protocol_text    TEXT NOT NULL,
    protocol_sha256  TEXT NOT NULL,
    protocol_id      TEXT NOT NULL,
    protocol_version TEXT NOT NULL,
    parameters       TEXT NOT NULL,          -- JSON object
    plates           INTEGER NOT NULL CHECK (plates >= 0),
    start            TEXT NOT NULL,          -- ISO-8601 UTC
    timezone         TEXT NOT NULL,          -- IANA zone name
    workcell_name    TEXT NOT NULL,
    workcell_text    TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE plates (
    id      INTEGER PRIMARY KEY,
    run_id  INTEGER NOT NULL REFERENCES runs(id),
    label   TEXT NOT NULL,
    labware TEXT NOT NULL,
    state   TEXT NOT NULL,
    UNIQUE (run_id, label)
);

CREATE TABLE tasks (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    plate_id      INTEGER REFERENCES plates(id),
    key           TEXT NOT NULL,
    kind          TEXT NOT NULL,
    day           INTEGER NOT NULL,
    due           TEXT NOT NULL,
    window_start  TEXT,
    window_end    TEXT,
    spec          TEXT NOT NULL,             -- JSON
    state         TEXT NOT NULL,
    planned_start TEXT,
    planned_end   TEXT,
    actual_start  TEXT,
    actual_end    TEXT,
    UNIQUE (run_id, key)
);
CREATE INDEX tasks_run_due ON tasks (run_id, due);

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    task_id         INTEGER NOT NULL REFERENCES tasks(id),
    seq             INTEGER NOT NULL,
    device          TEXT NOT NULL,
    op              TEXT NOT NULL,
    spec            TEXT NOT NULL,           -- JSON
    state           TEXT NOT NULL,
    scheduled_start TEXT,
    started_at      TEXT,
    finished_at     TEXT,
    device_op_id    TEXT,
    result          TEXT,                    -- JSON
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    UNIQUE (task_id, seq)
);
CREATE INDEX jobs_state ON jobs (state);

CREATE TABLE prompts (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs(id),
    job_id         INTEGER REFERENCES jobs(id),
    kind           TEXT NOT NULL,
    text           TEXT NOT NULL,
    choices        TEXT NOT NULL,            -- JSON list
    default_choice TEXT,
    deadline       TEXT,
    state          TEXT NOT NULL,
    answer         TEXT,                     -- JSON
    answered_by    TEXT,
    answered_at    TEXT,
    created_at     TEXT NOT NULL
);
CREATE INDEX prompts_run_state ON prompts (run_id, state);

CREATE TABLE qc_values (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    task_id     INTEGER REFERENCES tasks(id),
    measure     TEXT NOT NULL,
    value       REAL NOT NULL,
    unit        TEXT NOT NULL,
    min_value   REAL,
    max_value   REAL,
    passed      INTEGER NOT NULL CHECK (passed IN (0, 1)),
    recorded_at TEXT NOT NULL
);
CREATE INDEX qc_values_run ON qc_values (run_id);

CREATE TABLE reagent_lots (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    task_id     INTEGER REFERENCES tasks(id),
    reagent     TEXT NOT NULL,
    lot         TEXT NOT NULL,
    expiry      TEXT,                        -- ISO date
    recorded_at TEXT NOT NULL
);
CREATE INDEX reagent_lots_run ON reagent_lots (run_id);

CREATE TABLE alarms (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER REFERENCES runs(id),
    device          TEXT,
    severity        TEXT NOT NULL,
    code            TEXT NOT NULL,
    message         TEXT NOT NULL,
    state           TEXT NOT NULL,
    raised_at       TEXT NOT NULL,
    raised_by       TEXT NOT NULL,
    acknowledged_at TEXT,
    acknowledged_by TEXT,
    cleared_at      TEXT,
    cleared_by      TEXT
);
CREATE INDEX alarms_state ON alarms (state);

CREATE TABLE commands (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER REFERENCES runs(id),
    verb       TEXT NOT NULL,
    args       TEXT NOT NULL,                -- JSON object
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'rejected')),
    created_at TEXT NOT NULL,
    applied_at TEXT,
    result     TEXT                          -- JSON
);
CREATE INDEX commands_state ON commands (state, id);

-- The audit trail. seq is assigned by the store (last issued + 1, read from
-- sqlite_sequence so that a deleted tail leaves a visible gap); AUTOINCREMENT keeps
-- SQLite from ever reusing a number.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time       TEXT NOT NULL,
    run_id     INTEGER REFERENCES runs(id),
    entity     TEXT NOT NULL,
    entity_id  INTEGER,
    action     TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    data       TEXT NOT NULL,                -- canonical JSON object
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE
);
CREATE INDEX events_run ON events (run_id, seq);
CREATE INDEX events_entity ON events (entity, entity_id, seq);

-- Append-only in SQL too. Someone with the file can drop these; the hash chain
-- (audit.verify) still shows what they then changed.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE refused');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE refused');
END;

-- A new row must extend the chain: a larger seq, linked to the current last row.
CREATE TRIGGER events_append_only BEFORE INSERT ON events
WHEN NEW.seq IS NULL
  OR NEW.seq <= COALESCE((SELECT MAX(seq) FROM events), 0)
  OR NEW.prev_hash IS NOT COALESCE(
        (SELECT hash FROM events ORDER BY seq DESC LIMIT 1),
        '0000000000000000000000000000000000000000000000000000000000000000')
BEGIN
    SELECT RAISE(ABORT, 'events must extend the hash chain: insert refused');
END;
"""

# Version 2: the engine daemons that served this database, one row per start. Times are
# wall-clock (ISO-8601 UTC) even when runs are paced: "seen 3 s ago" is read by people.
_V2 = """
CREATE TABLE engines (
    id           INTEGER PRIMARY KEY,
    pid          INTEGER NOT NULL,
    host         TEXT NOT NULL,
    workcell     TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running', 'stopped', 'lost')),
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    stopped_at   TEXT,
    stop_reason  TEXT,
    held         TEXT                       -- why it dispatches nothing now (NULL: it does)
);
CREATE INDEX engines_state ON engines (state, id);
"""

#: (version, step) in increasing order. The database's version is the last one applied.
# Version 3: user accounts, sessions, signatures and released protocols (store/users.py).
_V3 = """
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    full_name     TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('operator', 'developer', 'supervisor', 'admin')),
    password      TEXT NOT NULL,               -- scrypt$N$r$p$salt$digest
    failures      INTEGER NOT NULL DEFAULT 0,  -- wrong passwords in a row
    locked_until  TEXT,                        -- wall-clock ISO time
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    password_set  TEXT NOT NULL
);

CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    token_sha256  TEXT NOT NULL UNIQUE,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    client        TEXT NOT NULL,                -- 'cli' or 'console'
    created_at    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    ended_at      TEXT
);

CREATE TABLE signatures (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users(id),
    user_name      TEXT NOT NULL,
    full_name      TEXT NOT NULL,
    meaning        TEXT NOT NULL CHECK (meaning IN ('performed', 'reviewed', 'approved')),
    action         TEXT NOT NULL,
    run_id         INTEGER REFERENCES runs(id),
    subject        TEXT NOT NULL,               -- canonical JSON of what was signed
    subject_sha256 TEXT NOT NULL,
    reason         TEXT NOT NULL,
    signed_at      TEXT NOT NULL
);

CREATE TABLE releases (
    id             INTEGER PRIMARY KEY,
    protocol_id    TEXT NOT NULL,
    version        TEXT NOT NULL,
    sha256         TEXT NOT NULL UNIQUE,
    text           TEXT NOT NULL,
    signature_id   INTEGER NOT NULL REFERENCES signatures(id),
    released_at    TEXT NOT NULL,
    UNIQUE (protocol_id, version)
);

CREATE TRIGGER signatures_no_update BEFORE UPDATE ON signatures
BEGIN
    SELECT RAISE(ABORT, 'signatures cannot be changed');
END;
CREATE TRIGGER signatures_no_delete BEFORE DELETE ON signatures
BEGIN
    SELECT RAISE(ABORT, 'signatures cannot be deleted');
END;
CREATE TRIGGER releases_no_update BEFORE UPDATE ON releases
BEGIN
    SELECT RAISE(ABORT, 'a released protocol cannot be changed: release a new version');
END;
"""


MIGRATIONS: list[tuple[int, Step]] = [
    (1, _V1),
    (2, _V2),
    (3, _V3),
]

#: The newest schema this code understands.
SCHEMA_VERSION: int = MIGRATIONS[-1][0]


def _statements(script: str) -> Iterator[str]:
    """Split an SQL script into statements (trigger bodies and quoted ';' are kept whole).

    ``sqlite3.Connection.executescript`` would COMMIT the open transaction first, which would
    break the all-or-nothing promise of a migration, so statements are run one by one.
    """
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                yield buf.strip()
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise StoreError(f"incomplete SQL statement in migration: {buf.strip()[:60]!r}")


def read_version(conn: sqlite3.Connection) -> int:
    """The schema version stored in ``meta`` (0 for a database without the meta table)."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        return int(row[0]) if row else 0
    except ValueError:
        raise StoreError(f"meta.schema_version is not a number: {row[0]!r}") from None


def migrate(
    conn: sqlite3.Connection,
    where: str,
    migrations: list[tuple[int, Step]] | None = None,
) -> int:
    """Bring the database on ``conn`` (autocommit mode) to the newest version; return it.

    ``where`` names the file in messages. Raises :class:`StoreError` if the database is
    newer than the code, or is an SQLite file that is not a labctl database.
    Safe against a second process migrating at the same time: the version is read inside
    the IMMEDIATE transaction that applies the step.
    """
    steps = MIGRATIONS if migrations is None else migrations
    latest = steps[-1][0] if steps else 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = read_version(conn)
            if current == 0:
                foreign = conn.execute(
                    "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' LIMIT 1"
                ).fetchone()
                if foreign:
                    raise StoreError(
                        f"{where} is an SQLite database but not a labctl run database "
                        f"(it has a table {foreign[0]!r} and no schema version)"
                    )
            if current > latest:
                raise StoreError(
                    f"{where} has schema version {current}, newer than this labctl "
                    f"understands (up to {latest}): upgrade labctl to open it"
                )
            pending = [(v, s) for v, s in steps if v > current]
            if not pending:
                conn.execute("COMMIT")
                return current
            version, step = pending[0]
            if callable(step):
                step(conn)
            else:
                for statement in _statements(step):
                    conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(version),),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
