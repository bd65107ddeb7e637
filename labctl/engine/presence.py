"""One engine per database, and what it leaves beside the database file.

- ``<db>.engine``: a lock file. The engine holds an exclusive ``flock`` on it for its whole
  life; the kernel drops the lock when the process ends however it ends (Ctrl-C, a crash,
  SIGKILL), so a stale lock is never left to clean up and a second engine is refused
  with the holder's name. Its text (JSON) says who holds it and, after the engine ended,
  its last words: the stop reason, also when the database itself could not be written.
- ``<db>.head``: the last audit event (seq and hash) the engine had committed before it
  last told a device to act. A database restored from an older copy, or one that lost its
  latest transactions, ends before that event or holds another one there: the engine then
  dispatches nothing until an operator confirms (``labctl confirm-store``).

Both live outside the database on purpose: they must survive what happens to it.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from labctl.errors import LabctlError
from labctl.store import Store


class EngineBusy(LabctlError):
    """Another engine serves this database."""


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".engine")


def head_path(db: Path) -> Path:
    return db.with_name(db.name + ".head")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` atomically, on disk before this returns."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class EngineLock:
    """The exclusive lock of one database's engine (see the module docstring)."""

    def __init__(self, db: Path) -> None:
        self.path = lock_path(db)
        self._fh: IO[str] | None = None

    def acquire(self, holder: dict[str, Any]) -> None:
        """Take the lock and write ``holder`` (pid, host, since) into the file. Raises
        EngineBusy naming the current holder if another process has it."""
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the engine's life
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            other = _read_json(self.path)
            who = (
                f"engine {other.get('pid', '?')} on {other.get('host', '?')} "
                f"(since {other.get('since', '?')})"
            )
            raise EngineBusy(
                f"another engine already serves {self.path.name.removesuffix('.engine')}: {who}. "
                "Stop it first; two engines on one database would both drive the devices"
            ) from None
        fh.seek(0)
        fh.truncate()
        json.dump(holder, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
        self._fh = fh

    def last_words(self, words: dict[str, Any]) -> None:
        """Add the stop reason (and when) to the file, while still holding the lock."""
        if self._fh is None:
            return
        data = {**_read_json(self.path), **words}
        self._fh.seek(0)
        self._fh.truncate()
        json.dump(data, self._fh, sort_keys=True)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


@dataclass(frozen=True)
class LockState:
    """What the lock file says: whether an engine holds it now, and its text."""

    held: bool
    info: dict[str, Any]


def read_lock(db: Path) -> LockState:
    """Whether an engine holds ``db``'s lock now (tried without taking it), and the file's text."""
    path = lock_path(db)
    if not path.exists():
        return LockState(False, {})
    info = _read_json(path)
    try:
        with open(path, encoding="utf-8") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return LockState(True, info)
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        return LockState(False, info)
    return LockState(False, info)


# ---- the head marker ---------------------------------------------------------------------


def mark_head(db: Path, store: Store) -> None:
    """Record the store's last event as one the devices may have acted on, and when (the
    runs' clock): a device is told to act right after."""
    head = store.head()
    if head is not None:
        at = store.clock.now().isoformat()
        _write_json(head_path(db), {"seq": head[0], "hash": head[1], "at": at})


def last_acted(db: Path) -> datetime | None:
    """When (the runs' clock) the engine last marked the store's head before acting."""
    at = _read_json(head_path(db)).get("at")
    try:
        return datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        return None


def went_backwards(db: Path, store: Store) -> str | None:
    """Why the store is behind what the engine last acted on (None when it is not)."""
    mark = _read_json(head_path(db))
    seq, digest = mark.get("seq"), mark.get("hash")
    if not isinstance(seq, int) or not isinstance(digest, str):
        return None
    head = store.head()
    last = head[0] if head else 0
    if last < seq:
        return (
            f"the run database ends at event {last}, but the engine had acted after event "
            f"{seq}: it was restored from an older copy or lost its latest transactions, so "
            "devices may already have done what it says is still to do"
        )
    at = store.event_hash(seq)
    if at != digest:
        return (
            f"event {seq} of the run database is not the one the engine wrote: the database was "
            "replaced or rewritten, so what it says may not be what the devices did"
        )
    return None


# ---- what a person is told --------------------------------------------------------------


@dataclass(frozen=True)
class EngineStatus:
    """Whether an engine serves the database, and one line saying so for people."""

    running: bool
    text: str
    held: str | None = None  # why a running engine starts nothing


def engine_status(
    db: Path, store: Store, now: datetime, *, heartbeat_s: float = 5.0
) -> EngineStatus:
    """From the lock (is a process holding it?) and the store's sessions (what it said).

    ``now`` is wall-clock time. A held lock with a heartbeat older than three beats is a
    running engine that is stuck (or whose machine's clock jumped): said as such.
    """
    lock = read_lock(db)
    last = store.last_engine()
    if lock.held:
        if last is None or last.state != "running":
            who = f"engine {lock.info.get('pid', '?')} on {lock.info.get('host', '?')}"
            return EngineStatus(True, f"{who} is starting")
        ago = (now - last.heartbeat_at).total_seconds()
        who = f"engine {last.pid} on {last.host}"
        if ago > 3 * heartbeat_s:
            return EngineStatus(
                True,
                f"{who} holds the database but has not beaten for {_ago(ago)}: stuck?",
                last.held,
            )
        text = f"{who} running, seen {_ago(max(ago, 0.0))} ago"
        if last.held:
            text += f"; it starts NOTHING until confirmed: {last.held}"
        return EngineStatus(True, text, last.held)
    words = lock.info.get("stop_reason")
    if last is None:
        return EngineStatus(
            False, "no engine has run on this database yet (start one: labctl engine)"
        )
    if last.state == "running":
        return EngineStatus(
            False,
            f"engine NOT running since {last.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC: it stopped without "
            "a word (killed, crashed or its machine went down)",
        )
    reason = last.stop_reason or "no reason given"
    if words and str(lock.info.get("stopped_at", "")) > _iso_s(last.stopped_at):
        reason = str(words)  # the store could not take its last words
    when = last.stopped_at or last.heartbeat_at
    return EngineStatus(False, f"engine NOT running since {when:%Y-%m-%d %H:%M:%S} UTC: {reason}")


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _iso_s(t: datetime | None) -> str:
    return t.isoformat(timespec="seconds") if t is not None else ""
