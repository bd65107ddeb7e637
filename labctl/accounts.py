"""Who may do what: roles, the actions each may take, electronic signatures, passwords.

Records kept under GMP must say who did what (21 CFR Part 11, EU GMP Annex 11). Every
command on a production database runs as a signed-in user whose role allows it; the
consequential ones (abort, skip, releasing a hold or a protocol, accepting a deviation)
also need the user's password again and a meaning, recorded with the hash of what was
signed. Separation of duties: an admin manages accounts and does nothing else; a protocol
developer acts only on the runs they registered.

Passwords are kept as scrypt hashes (memory-hard: 16 MiB per guess with the parameters
below), salted per user, compared in constant time. Five wrong passwords in a row lock
the account for 15 minutes (an admin may unlock it sooner).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import Enum

from labctl.errors import LabctlError

__all__ = [
    "Action",
    "AuthError",
    "LOCK_AFTER",
    "LOCK_S",
    "Meaning",
    "MIN_PASSWORD",
    "PasswordHash",
    "PermissionDenied",
    "Role",
    "SESSION_IDLE_S",
    "SESSION_MAX_S",
    "SIGNED",
    "allowed",
    "check_password_rules",
    "hash_password",
    "login_name",
    "verify_password",
]

MIN_PASSWORD = 10  # characters; NIST SP 800-63B asks at least 8
LOCK_AFTER = 5  # wrong passwords in a row
LOCK_S = 15 * 60  # how long a locked account stays locked, seconds
SESSION_IDLE_S = 30 * 60  # a CLI session ends after this long unused, seconds
SESSION_MAX_S = 12 * 3600  # and after this long in any case (one shift), seconds

# scrypt cost: N=2**14, r=8 -> 128 * r * N = 16 MiB of memory per guess.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 2**14, 8, 1, 32


class AuthError(LabctlError):
    """Signing in or signing failed: unknown user, wrong password, account locked or
    disabled, session ended. The message never says which of user or password was wrong."""

    code = 1100


class PermissionDenied(LabctlError):
    """The signed-in user's role does not allow the action."""

    code = 1101


class Role(str, Enum):
    """A user's one role."""

    OPERATOR = "operator"
    DEVELOPER = "developer"  # writes and dry-runs protocols; runs its own development runs
    SUPERVISOR = "supervisor"  # releases protocols and holds, may act on every run
    ADMIN = "admin"  # manages accounts only


class Meaning(str, Enum):
    """What a signature means (Part 11.50: the meaning is shown with the signature)."""

    PERFORMED = "performed"
    REVIEWED = "reviewed"
    APPROVED = "approved"


class Action(str, Enum):
    """What a command does, as far as permissions go."""

    VIEW = "view"  # status, prompts, reports, audit verify, the console's views
    REGISTER_RUN = "register-run"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ANSWER = "answer"  # answer a prompt
    ACCEPT_DEVIATION = "accept-deviation"  # answer a prompt with 'skip': a deviation
    SKIP = "skip"
    ABORT = "abort"
    RELEASE_HOLD = "release"  # release a held run (after a QC failure or a fault)
    CONFIRM_STORE = "confirm-store"
    DEVICE_ACTION = "device-action"  # move a device by hand, through the engine
    RUN_ENGINE = "engine"
    ANNOTATE = "annotate"  # notes, reagent lots, QC values on a live run
    AMEND_FINISHED = "amend-finished"  # anything added to a finished run's record
    RELEASE_PROTOCOL = "release-protocol"
    MANAGE_USERS = "manage-users"


_O, _D, _S, _A = Role.OPERATOR, Role.DEVELOPER, Role.SUPERVISOR, Role.ADMIN
_PEOPLE = frozenset({_O, _D, _S})

#: Which roles may take each action.
PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.VIEW: frozenset({_O, _D, _S, _A}),
    Action.REGISTER_RUN: _PEOPLE,
    Action.START: _PEOPLE,
    Action.PAUSE: _PEOPLE,
    Action.RESUME: _PEOPLE,
    Action.ANSWER: _PEOPLE,
    Action.ACCEPT_DEVIATION: _PEOPLE,
    Action.SKIP: _PEOPLE,
    Action.ABORT: _PEOPLE,
    Action.RELEASE_HOLD: frozenset({_S}),
    Action.CONFIRM_STORE: frozenset({_S}),
    Action.DEVICE_ACTION: frozenset({_S}),
    Action.RUN_ENGINE: _PEOPLE,
    Action.ANNOTATE: _PEOPLE,
    Action.AMEND_FINISHED: frozenset({_S}),
    Action.RELEASE_PROTOCOL: frozenset({_S}),
    Action.MANAGE_USERS: frozenset({_A}),
}

#: Actions a developer may take only on runs they registered themselves.
OWN_RUNS_ONLY: dict[Role, frozenset[Action]] = {
    _D: frozenset(
        {
            Action.START,
            Action.PAUSE,
            Action.RESUME,
            Action.ANSWER,
            Action.ACCEPT_DEVIATION,
            Action.SKIP,
            Action.ABORT,
            Action.ANNOTATE,
        }
    )
}

#: Actions that need an electronic signature (password again and a meaning), with the
#: meaning proposed when the user gives none.
SIGNED: dict[Action, Meaning] = {
    Action.ABORT: Meaning.PERFORMED,
    Action.SKIP: Meaning.PERFORMED,
    Action.ACCEPT_DEVIATION: Meaning.APPROVED,
    Action.RELEASE_HOLD: Meaning.APPROVED,  # after a QC failure: the QC override
    Action.RELEASE_PROTOCOL: Meaning.APPROVED,
}


def allowed(role: Role, action: Action, *, own_run: bool | None = None) -> str | None:
    """None when ``role`` may take ``action``, else why not (one sentence).

    ``own_run``: whether the run acted on was registered by the same user (None: no run).
    """
    if role not in PERMISSIONS[action]:
        who = ", ".join(sorted(r.value for r in PERMISSIONS[action]))
        article = "an" if role.value[0] in "aeiou" else "a"
        return f"{article} {role.value} may not {action.value} (only: {who})"
    if own_run is False and action in OWN_RUNS_ONLY.get(role, frozenset()):
        return f"a {role.value} may {action.value} only on runs they registered"
    return None


@dataclass(frozen=True)
class PasswordHash:
    """A stored password: scrypt parameters, salt and digest (hex), as one text field."""

    n: int
    r: int
    p: int
    salt: str
    digest: str

    def text(self) -> str:
        return f"scrypt${self.n}${self.r}${self.p}${self.salt}${self.digest}"

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        try:
            kind, n, r, p, salt, digest = text.split("$")
            if kind != "scrypt":
                raise ValueError(kind)
            return cls(int(n), int(r), int(p), salt, digest)
        except ValueError:
            raise AuthError("a stored password hash is damaged: ask an admin to reset it") from None


def check_password_rules(password: str, user: str) -> None:
    """Raise AuthError when a new password is too weak to accept."""
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"a password needs at least {MIN_PASSWORD} characters")
    if user.casefold() in password.casefold():
        raise AuthError("a password must not contain the user name")


def hash_password(password: str) -> PasswordHash:
    """A new salted scrypt hash of ``password``."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return PasswordHash(_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, salt.hex(), digest.hex())


def verify_password(password: str, stored: PasswordHash) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison)."""
    digest = _scrypt(password, bytes.fromhex(stored.salt), stored.n, stored.r, stored.p)
    return hmac.compare_digest(digest.hex(), stored.digest)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_SCRYPT_LEN, maxmem=64 << 20
    )


def login_name() -> str:
    """The operating system's name for the user: who acts on a practice database, which
    has no accounts."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - some containers have no user name
        return "operator"
