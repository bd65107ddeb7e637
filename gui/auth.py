"""Who acts on the console: the signed-in user of the run database, their role, their
electronic signatures. Plain Python (no Qt): every function here runs on the console's
worker thread, since checking a password (scrypt) takes 50-100 ms on purpose.

The rules are the CLI's (:mod:`labctl.cli.auth`), applied to a console session:

* A database with accounts (``store.user_count() > 0``): the console signs a person in
  (:func:`sign_in`, a store session with client ``console``); every command runs as that
  user and must be allowed by their role (:func:`authorize`, :func:`labctl.accounts.allowed`;
  a developer acts only on runs they registered); the signed actions
  (:data:`labctl.accounts.SIGNED`) carry the user's signature (:func:`sign`), whose subject
  is the CLI's ``{"action", "run", "protocol_sha256", "args", "reason"}``.
* A practice or dry-run database without accounts (training included): no sign-in; the
  actor is the name the console was given (the operating system's login name by default),
  and nothing is signed.
* A production database without accounts: the console shows it read-only
  (:data:`Access.NOT_SET_UP`): nobody can be named as the actor of a command there.

Sign-ins, sessions and signatures keep wall-clock time (``now``), never a practice
database's paced clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from labctl.accounts import (
    SIGNED,
    Action,
    AuthError,
    Meaning,
    PermissionDenied,
    Role,
    allowed,
    login_name,
)

if TYPE_CHECKING:
    from labctl.store import Store
    from labctl.store.users import User

__all__ = [
    "Access",
    "ConsoleUser",
    "access_of",
    "authorize",
    "keep_alive",
    "login_name",
    "not_set_up_text",
    "practice_user",
    "sign",
    "sign_in",
    "sign_out",
    "signature_subject",
    "unlock",
]


class Signed(Protocol):
    """What the console keeps of a signature: its id, which the signed command carries
    (the store's Signature has it, wherever the store keeps that class)."""

    @property
    def id(self) -> int: ...


class Access(str, Enum):
    """How the console may be used on a database."""

    ACCOUNTS = "accounts"  # sign in; every command as the signed-in user, by role
    PRACTICE = "practice"  # practice or dry-run database without accounts: no sign-in
    NOT_SET_UP = "not-set-up"  # production database without accounts: read-only


def access_of(store: Store) -> Access:
    """Whether ``store`` needs a sign-in, needs none, or cannot be acted on yet."""
    if store.user_count() > 0:
        return Access.ACCOUNTS
    return Access.PRACTICE if store.is_practice() else Access.NOT_SET_UP


def not_set_up_text(db: Path | str) -> str:
    """What the console says on a production database without accounts."""
    return (
        f"{db} has no user accounts yet, so nobody can act on it: an admin sets it up with "
        f"labctl setup --db {db} --admin NAME (then labctl users add ...). Until then the "
        "console only shows it."
    )


@dataclass(frozen=True)
class ConsoleUser:
    """Who uses the console. ``role`` None: a practice database without accounts (the
    name is the operating system's, or the one given); ``token``: the store session."""

    name: str
    full_name: str = ""
    role: Role | None = None
    token: str | None = field(default=None, repr=False)

    @property
    def has_account(self) -> bool:
        return self.role is not None

    def label(self) -> str:
        """ "Alice Lind (alice) · supervisor", or the bare name without an account."""
        if self.role is None:
            return self.name
        full = self.full_name if self.full_name and self.full_name != self.name else ""
        who = f"{full} ({self.name})" if full else self.name
        return f"{who} · {self.role.value}"

    def why_not(self, action: Action, run_registered_by: str | None = None) -> str | None:
        """None when this user may take ``action`` (on a run registered by
        ``run_registered_by``; None: no run, or not known), else why not, as
        :func:`labctl.accounts.allowed` words it. The store checks again when it counts."""
        if self.role is None:
            return None
        own = None if run_registered_by is None else run_registered_by == self.name
        return allowed(self.role, action, own_run=own)


def _user(u: User, token: str) -> ConsoleUser:
    return ConsoleUser(u.name, u.full_name, u.role, token)


def sign_in(store: Store, name: str, password: str, *, now: datetime) -> ConsoleUser:
    """Check ``password`` (the store counts a wrong one towards the lock-out and never says
    whether the name or the password was wrong) and open a console session."""
    if store.user_count() == 0:
        raise AuthError(not_set_up_text(store.path))
    user = store.authenticate(name.strip(), password, now=now, what="signing in to the console")
    return _user(user, store.open_session(user, client="console", now=now))


def unlock(store: Store, who: ConsoleUser, password: str, *, now: datetime) -> ConsoleUser:
    """The same user again after the console locked: their password, checked by the store
    (a wrong one counts towards the lock-out). The session goes on if it is still live
    (it ends after 30 min unused or 12 h); otherwise a new one is opened."""
    user = store.authenticate(who.name, password, now=now, what="unlocking the console")
    if who.token is not None:
        try:
            store.session_user(who.token, now=now)
            return _user(user, who.token)
        except AuthError:
            pass  # the session ended while the console was locked: a new one
    return _user(user, store.open_session(user, client="console", now=now))


def sign_out(store: Store, who: ConsoleUser, *, now: datetime) -> None:
    """End the console's session (an audit event says so)."""
    if who.token is not None:
        store.close_session(who.token, now=now)


def keep_alive(store: Store, who: ConsoleUser, *, now: datetime) -> None:
    """Note that the signed-in user is using the console (the session's idle time starts
    again); AuthError when the session has ended or the account was disabled."""
    if who.token is not None:
        store.session_user(who.token, now=now)


def authorize(
    store: Store, who: ConsoleUser, action: Action, run_id: int | None, *, now: datetime
) -> User | None:
    """The account ``who`` acts as, allowed to take ``action`` on run ``run_id`` now; None
    on a practice database without accounts. As :func:`labctl.cli.auth.who`: AuthError
    when nobody is signed in (or the session ended, or the database has no accounts yet),
    PermissionDenied when the role does not allow it. Read from the store each time: a
    role changed or an account disabled since the sign-in counts."""
    if store.user_count() == 0:
        if store.is_practice():
            return None
        raise AuthError(not_set_up_text(store.path))
    if who.token is None:
        raise AuthError(f"not signed in to {store.path}: sign in to the console first")
    user = store.session_user(who.token, now=now)
    if user.name != who.name:
        raise AuthError(f"the console's session belongs to {user.name}, not {who.name}")
    own = None if run_id is None else store.registered_by(run_id) == user.name
    why = allowed(user.role, action, own_run=own)
    if why is not None:
        raise PermissionDenied(f"{user.name}: {why}")
    return user


def signature_subject(
    store: Store, action: Action, run_id: int | None, args: dict[str, Any], reason: str
) -> dict[str, Any]:
    """What a signature on a command covers: the same subject as the CLI's."""
    return store.command_subject(action.value, run_id, args, reason)


def sign(
    store: Store,
    who: ConsoleUser,
    action: Action,
    subject: dict[str, Any],
    *,
    meaning: Meaning,
    password: str,
    reason: str,
    now: datetime,
    run_id: int | None = None,
) -> Signed:
    """``who``'s electronic signature on ``subject`` (their password again; a wrong one
    never signs and counts towards the lock-out)."""
    if action not in SIGNED:
        raise AuthError(f"{action.value} is not a signed action")
    return store.sign(
        who.name,
        password,
        meaning=meaning,
        action=action.value,
        subject=subject,
        reason=reason,
        now=now,
        run_id=run_id,
    )


def practice_user(name: str | None) -> ConsoleUser:
    """The actor on a practice database without accounts: ``name`` or the login name."""
    return ConsoleUser(name or login_name())
