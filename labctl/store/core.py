"""The run database's connection: opening the file, transactions, and the audit append.

Several processes share one file: the engine daemon writes, consoles and the CLI read and
add commands. The file is in WAL mode (readers never block the writer), every write is an
IMMEDIATE transaction (writers queue on the busy timeout instead of failing half-way), and
foreign keys are enforced. Within one process a store may be shared between threads: one
re-entrant lock serialises the use of its connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import platformdirs
import sqlite_utils
from sqlite_utils.db import NotFoundError

from labctl.clock import Clock
from labctl.errors import StoreError
from labctl.store.audit import GENESIS, event_hash
from labctl.store.codec import plain, to_iso, to_json
from labctl.store.models import EVENTS, Event
from labctl.store.schema import migrate, read_version

__all__ = ["StoreCore"]

_EVENT_COLUMNS = ", ".join(EVENTS.columns)

_S = TypeVar("_S", bound="StoreCore")


class StoreCore:
    """One connection to a run database: opening, transactions, and appending audit events.

    Times written are ``clock.now()`` (ISO-8601 UTC text). Database trouble (locked beyond
    the busy timeout, corrupt, constraint violated, unknown id) raises :class:`StoreError`.
    """

    def __init__(self, db: sqlite_utils.Database, path: Path, clock: Clock) -> None:
        """Private: use :meth:`open`, which sets the connection up and migrates."""
        self._db = db
        self._conn: sqlite3.Connection = db.conn
        self.path = path
        self.clock = clock
        self._lock = threading.RLock()
        self._depth = 0  # nesting of atomic(): 0 = no transaction open

    # ---------------------------------------------------------------- opening

    @staticmethod
    def default_path() -> Path:
        """``$LABCTL_DB`` if set, else ``labctl.db`` in the user's data directory."""
        env = os.environ.get("LABCTL_DB")
        if env:
            return Path(env).expanduser()
        return platformdirs.user_data_path("labctl") / "labctl.db"

    @classmethod
    def open(
        cls: type[_S],
        path: str | os.PathLike[str],
        clock: Clock,
        *,
        create: bool = True,
        busy_timeout: float = 10.0,
        durable: bool = True,
    ) -> _S:
        """Open (or, if ``create``, create) the database at ``path`` and bring it up to date.

        ``busy_timeout`` is how long, in seconds of real time (SQLite waits inside its own
        C code), a write waits for another process's write to finish. Runs a quick
        integrity check, so a corrupt file fails here rather than mid-run. Raises
        :class:`StoreError` for a missing file (``create=False``), a file that is not a
        labctl database, a corrupt one, or one written by a newer labctl.

        ``durable`` (the default) makes every commit wait for the disk (synchronous=FULL),
        so a committed transition survives a power cut before the device acts. Dry runs on
        simulated devices pass False (synchronous=NORMAL: safe against crashes of labctl,
        not of the machine), which makes commits about ten times faster.
        """
        path = Path(path)
        if path.exists() and not path.is_file():
            raise StoreError(f"{path} is not a file, so it cannot be a run database")
        if not path.exists():
            if not create:
                raise StoreError(f"no run database at {path}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder for {path}: {exc}") from exc
        try:
            conn = sqlite3.connect(
                str(path),
                timeout=busy_timeout,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,  # guarded by the store's lock instead
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run database {path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            # Reading the journal mode is the first real read of the file: a non-database
            # file fails here with "file is not a database".
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot switch to WAL mode (journal mode {mode})")
            conn.execute("PRAGMA foreign_keys = ON")
            # FULL: a transition reported committed must survive a power cut, because the
            # device is told to act right after the commit.
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            check = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            if check != ["ok"]:
                raise StoreError(f"{path} is corrupt: {'; '.join(check[:3])}")
            migrate(conn, str(path))
            db = sqlite_utils.Database(conn, execute_plugins=False)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            what = (
                "is corrupt" if "malformed" in str(exc) else "is not a usable labctl run database"
            )
            raise StoreError(f"{path} {what} (SQLite: {exc})") from exc
        return cls(db, path, clock)

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        with self._lock:
            self._conn.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._reading("read the schema version"):
            return read_version(self._conn)

    # ---------------------------------------------------------------- transactions

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn SQLite's exceptions into one StoreError naming the file and the action."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(
                    f"{self.path}: {what}: the database stayed locked by another process"
                ) from exc
            raise StoreError(f"{self.path}: {what}: {exc}") from exc
        except (sqlite3.Error, NotFoundError) as exc:
            raise StoreError(f"{self.path}: {what}: {exc or 'not found'}") from exc

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One IMMEDIATE transaction around the block: all its writes commit, or none.

        Nested blocks become savepoints, so an exception caught inside an outer block
        still undoes everything its inner block wrote. Holds the store's lock throughout.
        Tell devices to act only after the outermost block has exited.
        """
        with self._lock:
            depth = self._depth
            savepoint = f"sp{depth}"
            with self._guard("begin a transaction"):
                self._conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._conn.in_transaction:  # SQLite may already have rolled back
                    if depth == 0:
                        self._conn.execute("ROLLBACK")
                    else:
                        self._conn.execute(f"ROLLBACK TO {savepoint}")
                        self._conn.execute(f"RELEASE {savepoint}")
                raise
            self._depth -= 1
            try:
                with self._guard("commit"):
                    self._conn.execute("COMMIT" if depth == 0 else f"RELEASE {savepoint}")
            except StoreError:
                if depth == 0 and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        with self._guard(what), self.atomic():
            yield

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """A consistent snapshot for several queries (a deferred read transaction)."""
        with self._lock, self._guard(what):
            if self._conn.in_transaction:  # inside atomic() or an outer read: reuse it
                yield
                return
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    @contextmanager
    def _query(self, what: str) -> Iterator[None]:
        """Around ONE statement whose rows are all fetched inside the block: SQLite reads
        it from one snapshot by itself, so no transaction is opened (see ``_reading``)."""
        with self._lock, self._guard(what):
            yield

    # ---------------------------------------------------------------- audit append

    def _append_event(
        self,
        *,
        entity: str,
        entity_id: int | None,
        action: str,
        from_state: str | None,
        to_state: str | None,
        actor: str,
        reason: str,
        data: Mapping[str, Any] | None,
        run_id: int | None,
    ) -> Event:
        """Append one event to the chain. Must run inside :meth:`atomic`."""
        if not actor:
            raise StoreError(f"an event needs an actor ({entity} {entity_id}: {action})")
        # The last number issued, not the last row's: a tail deleted behind the triggers'
        # back leaves a gap that verify_chain reports, instead of being silently continued.
        issued, last_hash = self._conn.execute(
            "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'events'),"
            " (SELECT hash FROM events ORDER BY seq DESC LIMIT 1)"
        ).fetchone()
        row: dict[str, Any] = {
            "seq": (issued or 0) + 1,
            "time": to_iso(self.clock.now()),
            "run_id": run_id,
            "entity": entity,
            "entity_id": entity_id,
            "action": action,
            "from_state": plain(from_state),
            "to_state": plain(to_state),
            "actor": actor,
            "reason": reason,
            "data": to_json(dict(data or {})),
            "prev_hash": last_hash if last_hash is not None else GENESIS,
        }
        row["hash"] = event_hash(row)
        self._conn.execute(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * len(row))})",
            [row[c] for c in EVENTS.columns],
        )
        return EVENTS.decode(row)
