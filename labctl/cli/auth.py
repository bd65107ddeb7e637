"""Who runs a command: the signed-in user of a CLI session, their role, their signatures.

A production database (the default) needs accounts: every command on it runs as the user
signed in with ``labctl login`` (the session's token is kept in a file only that user can
read, one per database, or in ``$LABCTL_SESSION``), and the user's role must allow it. A
practice or dry-run database (simulated devices) needs none: commands run as the login
name, unless accounts were made there too.

Signed actions ask for the password again (from the terminal, or one line on standard
input with ``--password-stdin``) and a meaning, and pass the signature's id with the command.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from labctl.clock import Clock, RealClock

if TYPE_CHECKING:
    from labctl.store import Store
    from labctl.store.users import Signature, User

__all__ = [
    "Actor",
    "add_sign_options",
    "drop_token",
    "read_password",
    "save_token",
    "sign_if_needed",
    "who",
]

WALL: Clock = RealClock()  # sessions and sign-ins keep wall-clock time, never a paced one


@dataclass(frozen=True)
class Actor:
    """Who acts. ``user`` is None on a practice database without accounts."""

    name: str
    user: User | None = None

    @property
    def role(self) -> Role | None:
        return None if self.user is None else self.user.role


def token_file(db: Path) -> Path:
    """Where this user's session token for database ``db`` is kept."""
    import platformdirs

    key = hashlib.sha256(str(db.resolve()).encode("utf-8")).hexdigest()[:24]
    return platformdirs.user_config_path("labctl") / "sessions" / f"{key}.token"


def save_token(db: Path, token: str) -> Path:
    """Keep ``token`` for ``db`` in a file only its owner can read; returns the file."""
    f = token_file(db)
    f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token)
    return f


def load_token(db: Path) -> str | None:
    """The session token for ``db``: ``$LABCTL_SESSION``, else the saved one, else None."""
    env = os.environ.get("LABCTL_SESSION")
    if env:
        return env.strip()
    f = token_file(db)
    try:
        return f.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def drop_token(db: Path) -> None:
    try:
        token_file(db).unlink()
    except OSError:
        pass


def read_password(args: argparse.Namespace, prompt: str, *, new: bool = False) -> str:
    """A password: one line of standard input with ``--password-stdin``, else asked at the
    terminal (twice for a new one). Never from an option: it would show in ``ps``."""
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        if not line:
            raise AuthError("--password-stdin: no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise AuthError(
            "a password is needed and there is no terminal to ask it at: give it as one line "
            "on standard input with --password-stdin"
        )
    first = getpass.getpass(prompt)
    if new and getpass.getpass("again: ") != first:
        raise AuthError("the two passwords differ")
    return first


def who(
    store: Store, db: Path, args: argparse.Namespace, action: Action, run_id: int | None = None
) -> Actor:
    """The user a command on ``store`` runs as, allowed to take ``action`` (on run ``run_id``).

    Raises AuthError when nobody is signed in (or the database has no accounts yet) and
    PermissionDenied when the role does not allow it.
    """
    named = getattr(args, "actor", None)
    if store.user_count() == 0:
        if store.is_practice():
            return Actor(str(named) if named else login_name())
        raise AuthError(
            f"{db} has no user accounts yet: an admin sets it up first with "
            f"labctl setup --db {db} --admin NAME"
        )
    token = load_token(db)
    if token is None:
        raise AuthError(f"not signed in to {db}: labctl login NAME --db {db}")
    user = store.session_user(token, now=WALL.now())
    if named and named != user.name:
        raise AuthError(f"--actor {named} but {user.name} is signed in: sign in as {named}")
    own = None if run_id is None else store.registered_by(run_id) == user.name
    why = allowed(user.role, action, own_run=own)
    if why is not None:
        raise PermissionDenied(f"{user.name}: {why}")
    return Actor(user.name, user)


def add_sign_options(p: argparse.ArgumentParser, action: Action) -> None:
    """--meaning and --password-stdin, for a command that may need a signature."""
    default = SIGNED[action].value
    p.add_argument(
        "--meaning",
        choices=[m.value for m in Meaning],
        default=default,
        help=f"what your signature means (default {default}); the password is asked again",
    )
    add_password_option(p)


def add_password_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password as one line from standard input (for scripts)",
    )


def sign_if_needed(
    store: Store,
    actor: Actor,
    args: argparse.Namespace,
    action: Action,
    subject: dict[str, Any],
    *,
    reason: str,
    run_id: int | None = None,
) -> Signature | None:
    """The user's electronic signature for a signed ``action`` (password asked again), or
    None on a database without accounts. A wrong password never signs."""
    if actor.user is None or action not in SIGNED:
        return None
    meaning = Meaning(getattr(args, "meaning", None) or SIGNED[action].value)
    password = read_password(args, f"password of {actor.name} to sign ({meaning.value}): ")
    return store.sign(
        actor.name,
        password,
        meaning=meaning,
        action=action.value,
        subject=subject,
        reason=reason,
        now=WALL.now(),
        run_id=run_id,
    )
