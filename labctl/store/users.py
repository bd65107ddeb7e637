"""User accounts, sign-in sessions, electronic signatures and released protocols.

Every change here is an event in the audit chain (entity ``user``, ``session``,
``signature``, ``release``), written in the same transaction as the row, so the trail
shows who was given which role, who signed in, failed to, or was locked out, and every
signature with the hash of what was signed. Passwords are never stored, only their
scrypt hashes (:mod:`labctl.accounts`); session tokens only as SHA-256 digests.

Times of sign-ins and sessions are wall-clock (``now`` is passed in): a practice database's
paced clock must not end a person's session early.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from labctl.accounts import (
    LOCK_AFTER,
    LOCK_S,
    SESSION_IDLE_S,
    SESSION_MAX_S,
    AuthError,
    Meaning,
    PasswordHash,
    Role,
    check_password_rules,
    hash_password,
    verify_password,
)
from labctl.errors import StoreError
from labctl.store.codec import from_iso, to_iso
from labctl.store.rows import RowStore

__all__ = [
    "SIG_COLS",
    "Release",
    "Signature",
    "User",
    "UserStore",
    "release_row",
    "signature_row",
    "subject_sha256",
]

# The tables are made by version 3 of the schema (labctl/store/schema.py).


def subject_sha256(subject: dict[str, Any]) -> tuple[str, str]:
    """(canonical JSON of ``subject``, its SHA-256 hex digest): what a signature covers."""
    text = json.dumps(subject, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text, hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class User:
    """An account. ``locked_until`` is wall-clock UTC."""

    id: int
    name: str
    full_name: str
    role: Role
    disabled: bool
    failures: int
    locked_until: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Signature:
    """An electronic signature: who, what it means, when, and the hash of what was signed."""

    id: int
    user_name: str
    full_name: str
    meaning: Meaning
    action: str
    run_id: int | None
    subject: dict[str, Any]
    subject_sha256: str
    reason: str
    signed_at: datetime

    def line(self) -> str:
        """One line a reviewer reads."""
        return (
            f"{self.full_name} ({self.user_name}), {self.meaning.value}, "
            f"{self.signed_at:%Y-%m-%d %H:%M:%S} UTC, {self.action}, sha256 {self.subject_sha256[:16]}"
        )


@dataclass(frozen=True)
class Release:
    """A released protocol version: its text and hash, and the supervisor's signature."""

    id: int
    protocol_id: str
    version: str
    sha256: str
    text: str
    signature_id: int
    released_at: datetime


def _user(row: Any) -> User:
    return User(
        id=row[0],
        name=row[1],
        full_name=row[2],
        role=Role(row[3]),
        disabled=bool(row[4]),
        failures=int(row[5]),
        locked_until=from_iso(row[6]) if row[6] else None,
        created_at=from_iso(row[7]),
    )


def release_row(row: Any) -> Release:
    return Release(
        id=row[0],
        protocol_id=row[1],
        version=row[2],
        sha256=row[3],
        text=row[4],
        signature_id=row[5],
        released_at=from_iso(row[6]),
    )


_USER_COLS = "id, name, full_name, role, disabled, failures, locked_until, created_at"


def signature_row(row: Any) -> Signature:
    return Signature(
        id=row[0],
        user_name=row[1],
        full_name=row[2],
        meaning=Meaning(row[3]),
        action=row[4],
        run_id=row[5],
        subject=json.loads(row[6]),
        subject_sha256=row[7],
        reason=row[8],
        signed_at=from_iso(row[9]),
    )


SIG_COLS = (
    "id, user_name, full_name, meaning, action, run_id, subject, subject_sha256, reason, signed_at"
)


class UserStore(RowStore):
    """Accounts, sessions, signatures and releases (mixed into :class:`Store`)."""

    # ---------------------------------------------------------------- accounts

    def user_count(self) -> int:
        """How many accounts exist (0: the database was never set up for people)."""
        with self._query("count users"):
            return int(self._conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def users(self) -> list[User]:
        with self._query("list users"):
            rows = self._conn.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name").fetchall()
        return [_user(r) for r in rows]

    def get_user(self, name: str) -> User:
        """The account ``name``; AuthError if there is none."""
        with self._query(f"read user {name}"):
            row = self._conn.execute(
                f"SELECT {_USER_COLS} FROM users WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise AuthError(f"no user {name!r} in {self.path}")
        return _user(row)

    def add_user(
        self, name: str, role: Role, password: str, *, full_name: str, actor: str, now: datetime
    ) -> User:
        """A new account (its password checked against the rules, then hashed)."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise AuthError(f"user name {name!r}: use letters, digits, '.', '-' or '_'")
        check_password_rules(password, name)
        stored = hash_password(password).text()
        with self._writing(f"add user {name}"):
            if self._conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AuthError(f"user {name!r} exists already")
            uid = self._conn.execute(
                "INSERT INTO users (name, full_name, role, password, created_at, password_set)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, full_name or name, role.value, stored, to_iso(now), to_iso(now)),
            ).lastrowid
            self._append_event(
                entity="user", entity_id=uid, action="created", from_state=None,
                to_state=role.value, actor=actor, reason=f"account for {full_name or name}",
                data={"name": name, "full_name": full_name or name, "role": role.value},
                run_id=None,
            )  # fmt: skip
        return self.get_user(name)

    def set_password(self, name: str, password: str, *, actor: str, now: datetime) -> None:
        """A new password for ``name`` (also unlocks the account)."""
        check_password_rules(password, name)
        user = self.get_user(name)
        with self._writing(f"set the password of {name}"):
            self._conn.execute(
                "UPDATE users SET password = ?, password_set = ?, failures = 0,"
                " locked_until = NULL WHERE id = ?",
                (hash_password(password).text(), to_iso(now), user.id),
            )
            self._conn.execute(
                "UPDATE sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL",
                (to_iso(now), user.id),
            )
            self._user_event(user, "password-set", actor, "password changed; sessions ended")

    def set_disabled(self, name: str, disabled: bool, *, actor: str, now: datetime) -> None:
        """Disable an account (its sessions end) or enable it again (and unlock it)."""
        user = self.get_user(name)
        with self._writing(f"{'disable' if disabled else 'enable'} {name}"):
            self._conn.execute(
                "UPDATE users SET disabled = ?, failures = 0, locked_until = NULL WHERE id = ?",
                (int(disabled), user.id),
            )
            if disabled:
                self._conn.execute(
                    "UPDATE sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL",
                    (to_iso(now), user.id),
                )
            self._user_event(user, "disabled" if disabled else "enabled", actor, "")

    def _user_event(self, user: User, action: str, actor: str, reason: str) -> None:
        self._append_event(
            entity="user", entity_id=user.id, action=action, from_state=None, to_state=None,
            actor=actor, reason=reason, data={"name": user.name}, run_id=None,
        )  # fmt: skip

    def authenticate(self, name: str, password: str, *, now: datetime, what: str) -> User:
        """The account ``name`` if ``password`` is its password and it may sign in now.

        A wrong password counts towards the lock-out (LOCK_AFTER in a row locks the account
        for LOCK_S seconds); each failure and lock-out is an audit event. The message does
        not tell a wrong user name from a wrong password. ``what``: what the password was
        given for (signing in, a signature), for the trail.
        """
        with self._writing(f"check the password of {name}"):
            row = self._conn.execute(
                f"SELECT {_USER_COLS}, password FROM users WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise AuthError("wrong user name or password")
            user, stored = _user(row), PasswordHash.parse(row[-1])
            if user.disabled:
                raise AuthError(f"the account {name!r} is disabled: ask an admin")
            if user.locked_until is not None and user.locked_until > now:
                raise AuthError(
                    f"the account {name!r} is locked after {LOCK_AFTER} wrong passwords until "
                    f"{user.locked_until:%H:%M} UTC (an admin can unlock it: labctl users enable)"
                )
            ok = verify_password(password, stored)
            failures = 0 if ok else user.failures + 1
            locked = failures >= LOCK_AFTER
            self._conn.execute(
                "UPDATE users SET failures = ?, locked_until = ? WHERE id = ?",
                (
                    0 if locked else failures,
                    to_iso(now + timedelta(seconds=LOCK_S)) if locked else None,
                    user.id,
                ),
            )
            if not ok:
                self._user_event(
                    user, "locked" if locked else "password-wrong", name,
                    f"wrong password for {what}" + (f" ({LOCK_AFTER} in a row)" if locked else ""),
                )  # fmt: skip
        if not ok:
            raise AuthError(
                f"wrong user name or password; the account {name!r} is now locked for "
                f"{LOCK_S // 60} minutes"
                if locked
                else "wrong user name or password"
            )
        return user

    # ---------------------------------------------------------------- sessions

    def open_session(self, user: User, *, client: str, now: datetime) -> str:
        """A new session for a user who has just given their password; returns its token
        (kept by the client; only its digest is stored)."""
        token = secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode("ascii")).hexdigest()
        with self._writing(f"open a session for {user.name}"):
            sid = self._conn.execute(
                "INSERT INTO sessions (token_sha256, user_id, client, created_at, last_seen)"
                " VALUES (?, ?, ?, ?, ?)",
                (digest, user.id, client, to_iso(now), to_iso(now)),
            ).lastrowid
            self._append_event(
                entity="session", entity_id=sid, action="signed-in", from_state=None,
                to_state=None, actor=user.name, reason=f"signed in ({client})",
                data={"user": user.name, "client": client}, run_id=None,
            )  # fmt: skip
        return token

    def session_user(self, token: str, *, now: datetime) -> User:
        """The user of a live session (and note it was used now); AuthError when the
        session is unknown, ended, idle longer than SESSION_IDLE_S or older than
        SESSION_MAX_S, or its account is disabled."""
        digest = hashlib.sha256(token.encode("ascii", "replace")).hexdigest()
        with self._writing("check a session"):
            row = self._conn.execute(
                "SELECT id, user_id, created_at, last_seen, ended_at FROM sessions"
                " WHERE token_sha256 = ?",
                (digest,),
            ).fetchone()
            if row is None or row[4] is not None:
                raise AuthError("not signed in (or signed out): labctl login NAME")
            sid, uid, created, seen = row[0], row[1], from_iso(row[2]), from_iso(row[3])
            idle = (now - seen).total_seconds() > SESSION_IDLE_S
            old = (now - created).total_seconds() > SESSION_MAX_S
            ended = idle or old
            if ended:  # committed: the session stays ended whatever follows
                self._conn.execute(
                    "UPDATE sessions SET ended_at = ? WHERE id = ?", (to_iso(now), sid)
                )
            else:
                self._conn.execute(
                    "UPDATE sessions SET last_seen = ? WHERE id = ?", (to_iso(now), sid)
                )
            urow = self._conn.execute(
                f"SELECT {_USER_COLS} FROM users WHERE id = ?", (uid,)
            ).fetchone()
        if ended:
            raise AuthError(
                "the session has ended ("
                + (
                    f"unused for {SESSION_IDLE_S // 60} min"
                    if idle
                    else f"{SESSION_MAX_S // 3600} h old"
                )
                + "): sign in again with labctl login NAME"
            )
        user = _user(urow)
        if user.disabled:
            raise AuthError(f"the account {user.name!r} is disabled")
        return user

    def close_session(self, token: str, *, now: datetime) -> None:
        """End a session (sign out). Unknown tokens are ignored."""
        digest = hashlib.sha256(token.encode("ascii", "replace")).hexdigest()
        with self._writing("end a session"):
            row = self._conn.execute(
                "SELECT s.id, u.name FROM sessions s JOIN users u ON u.id = s.user_id"
                " WHERE s.token_sha256 = ? AND s.ended_at IS NULL",
                (digest,),
            ).fetchone()
            if row is None:
                return
            self._conn.execute(
                "UPDATE sessions SET ended_at = ? WHERE id = ?", (to_iso(now), row[0])
            )
            self._append_event(
                entity="session", entity_id=row[0], action="signed-out", from_state=None,
                to_state=None, actor=row[1], reason="signed out", data={}, run_id=None,
            )  # fmt: skip

    # ---------------------------------------------------------------- the database's kind

    def is_practice(self) -> bool:
        """Whether this is a practice or dry-run database (simulated devices): no accounts
        or released protocols needed there."""
        with self._query("read the database kind"):
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
        return row is not None and row[0] in ("practice", "dry-run")

    def claim_for(self, kind: str, *, actor: str) -> None:
        """Mark a new (or practice) database ``kind`` ('practice' or 'dry-run'); refuse a
        production database that holds runs or accounts (simulations never mix with its
        records)."""
        if self.is_practice():
            return
        with self._query("look for production records"):
            runs = self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        if runs or self.user_count():
            raise StoreError(
                f"{self.path} is a production database (it holds runs or user accounts): give "
                "the simulation a database of its own"
            )
        self.set_kind(kind, actor=actor)

    def set_kind(self, kind: str, *, actor: str) -> None:
        """Mark the database 'practice' or 'dry-run' (or 'production', the default)."""
        if kind not in ("practice", "dry-run", "production"):
            raise StoreError(f"unknown database kind {kind!r}")
        with self._writing("set the database kind"):
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('kind', ?)", (kind,)
            )
            self._append_event(
                entity="database", entity_id=None, action="kind", from_state=None,
                to_state=kind, actor=actor, reason=f"a {kind} database", data={}, run_id=None,
            )  # fmt: skip
