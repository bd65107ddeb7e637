"""Confirming irreversible console commands (abort, skip) with the operator's password.

There is no user database yet, so the check is a small pluggable function, a
:data:`Verifier`: ``verifier(actor, password) -> bool``. The console takes one as an
argument; tests pass their own, and a site with a directory service can pass a function
that asks it.

The default, :class:`PasswordFile`, keeps ONE console password per operating-system user,
as a salted PBKDF2-HMAC-SHA256 hash in ``console-password.json`` in that user's config
folder (``platformdirs.user_config_path("labctl")``, e.g. ``~/.config/labctl`` on Linux),
written with owner-only permissions. The password is never stored, only::

    {"version": 1, "algorithm": "pbkdf2_sha256", "iterations": 600000,
     "salt": "<base64, 16 random bytes>", "hash": "<base64, 32 bytes>"}

It is set on first use: the first irreversible command asks the operator to choose it
(twice, at least 8 characters). To reset it, delete the file; the next irreversible command
asks again. The iteration count is stored with the hash, so raising it later keeps old
files valid. Hashing takes a good part of a second on purpose; the console runs it on its
worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import platformdirs

from labctl.errors import LabctlError

__all__ = ["MIN_LENGTH", "PasswordFile", "PasswordSetupError", "Verifier", "default_path"]

Verifier = Callable[[str, str], bool]
MIN_LENGTH = 8
ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256


class PasswordSetupError(LabctlError):
    """The console password cannot be set or read (too short, file unreadable)."""

    code = 1103


def default_path() -> Path:
    """``console-password.json`` in the user's labctl config folder."""
    return platformdirs.user_config_path("labctl") / "console-password.json"


def _hash(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


class PasswordFile:
    """The default verifier: a salted PBKDF2 hash in a JSON file (see the module text)."""

    def __init__(self, path: Path | None = None, *, iterations: int = ITERATIONS) -> None:
        self.path = path or default_path()
        self.iterations = iterations

    def is_set(self) -> bool:
        """Whether a password has been chosen (the file exists)."""
        return self.path.is_file()

    def set(self, password: str) -> None:
        """Choose the password (replacing any previous one). At least MIN_LENGTH characters."""
        if len(password) < MIN_LENGTH:
            raise PasswordSetupError(f"the password needs at least {MIN_LENGTH} characters")
        salt = secrets.token_bytes(16)
        record = {
            "version": 1,
            "algorithm": "pbkdf2_sha256",
            "iterations": self.iterations,
            "salt": base64.b64encode(salt).decode("ascii"),
            "hash": base64.b64encode(_hash(password, salt, self.iterations)).decode("ascii"),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            # Owner-only from the first byte: create with mode 0600 rather than chmod after.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise PasswordSetupError(
                f"cannot write the console password file {self.path}: {exc.strerror or exc}"
            ) from None

    def _record(self) -> dict[str, object]:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PasswordSetupError(
                "no console password has been set yet: set one first"
            ) from None
        except (OSError, ValueError) as exc:
            raise PasswordSetupError(
                f"the console password file {self.path} cannot be read ({exc}); "
                "delete it to choose a new password"
            ) from None
        if not isinstance(record, dict) or record.get("algorithm") != "pbkdf2_sha256":
            raise PasswordSetupError(f"{self.path} is not a labctl console password file")
        return record

    def verify(self, password: str) -> bool:
        """Whether ``password`` is the one set (constant-time comparison)."""
        r = self._record()
        try:
            salt = base64.b64decode(str(r["salt"]), validate=True)
            want = base64.b64decode(str(r["hash"]), validate=True)
            iterations = int(r["iterations"])  # type: ignore[call-overload]
        except (KeyError, ValueError, TypeError):
            raise PasswordSetupError(
                f"{self.path} is damaged: delete it to choose a new password"
            ) from None
        return hmac.compare_digest(_hash(password, salt, iterations), want)

    def verifier(self) -> Verifier:
        """This file as a :data:`Verifier` (one password per OS user, whatever the actor)."""

        def check(actor: str, password: str) -> bool:
            return self.verify(password)

        return check
