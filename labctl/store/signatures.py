"""Electronic signatures and released protocols (mixed into :class:`Store`).

A signature checks the user's password again (a wrong one never signs and counts towards
the lock-out), then commits the signature row and its audit event together. A release
keeps the protocol text, its SHA-256 and the supervisor's signature; neither row may be
changed, and :meth:`SignatureStore.verify_signatures` checks both against their events.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from labctl.accounts import AuthError, Meaning
from labctl.errors import StoreError
from labctl.store.codec import to_iso
from labctl.store.users import (
    SIG_COLS,
    Release,
    Signature,
    UserStore,
    release_row,
    signature_row,
    subject_sha256,
)

__all__ = ["SignatureStore"]


class SignatureStore(UserStore):
    """Signatures and releases, on top of the accounts they check."""

    # ---------------------------------------------------------------- signatures

    def sign(
        self,
        name: str,
        password: str,
        *,
        meaning: Meaning,
        action: str,
        subject: dict[str, Any],
        reason: str,
        now: datetime,
        run_id: int | None = None,
    ) -> Signature:
        """An electronic signature: the password is checked again (a wrong one never
        signs, and counts towards the lock-out), then the signature and its audit event
        are committed together."""
        if not reason.strip():
            raise AuthError("a signature needs a reason")
        user = self.authenticate(name, password, now=now, what=f"signing {action}")
        text, digest = subject_sha256(subject)
        with self._writing(f"record {name}'s signature"):
            sid = self._conn.execute(
                "INSERT INTO signatures (user_id, user_name, full_name, meaning, action, run_id,"
                " subject, subject_sha256, reason, signed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (user.id, user.name, user.full_name, meaning.value, action, run_id, text,
                 digest, reason, to_iso(now)),
            ).lastrowid  # fmt: skip
            self._append_event(
                entity="signature", entity_id=sid, action="signed", from_state=None,
                to_state=meaning.value, actor=user.name, reason=reason,
                data={"action": action, "meaning": meaning.value, "subject_sha256": digest,
                      "full_name": user.full_name},
                run_id=run_id,
            )  # fmt: skip
        return self.get_signature(int(sid or 0))

    def get_signature(self, sid: int) -> Signature:
        with self._query(f"read signature {sid}"):
            row = self._conn.execute(
                f"SELECT {SIG_COLS} FROM signatures WHERE id = ?", (sid,)
            ).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no signature {sid}")
        return signature_row(row)

    def signatures(self, run_id: int | None = None) -> list[Signature]:
        """Signatures of one run (or all), oldest first."""
        where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        with self._query("list signatures"):
            rows = self._conn.execute(
                f"SELECT {SIG_COLS} FROM signatures {where} ORDER BY id", params
            ).fetchall()
        return [signature_row(r) for r in rows]

    # ---------------------------------------------------------------- releases

    def release_protocol(
        self, protocol_id: str, version: str, text: str, *, signature: Signature, now: datetime
    ) -> Release:
        """Record a released protocol version (its text and hash), signed by ``signature``."""
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if signature.subject.get("sha256") != digest:
            raise StoreError("the signature does not cover this protocol text")
        with self._writing(f"release {protocol_id} {version}"):
            same = self._conn.execute(
                "SELECT sha256 FROM releases WHERE protocol_id = ? AND version = ?",
                (protocol_id, version),
            ).fetchone()
            if same is not None:
                raise AuthError(
                    f"{protocol_id} version {version} is released already"
                    + (
                        " with other content: give the changed protocol a new version"
                        if same[0] != digest
                        else ""
                    )
                )
            rid = self._conn.execute(
                "INSERT INTO releases (protocol_id, version, sha256, text, signature_id,"
                " released_at) VALUES (?,?,?,?,?,?)",
                (protocol_id, version, digest, text, signature.id, to_iso(now)),
            ).lastrowid
            self._append_event(
                entity="release", entity_id=rid, action="released", from_state=None,
                to_state="released", actor=signature.user_name, reason=signature.reason,
                data={"protocol": protocol_id, "version": version, "sha256": digest,
                      "signature": signature.id},
                run_id=None,
            )  # fmt: skip
        found = self.release_of(digest)
        assert found is not None
        return found

    def release_of(self, sha256: str) -> Release | None:
        """The release of the protocol text with this SHA-256, or None."""
        with self._query("read a release"):
            row = self._conn.execute(
                "SELECT id, protocol_id, version, sha256, text, signature_id, released_at"
                " FROM releases WHERE sha256 = ?",
                (sha256,),
            ).fetchone()
        return None if row is None else release_row(row)

    def releases(self) -> list[Release]:
        with self._query("list releases"):
            rows = self._conn.execute(
                "SELECT id, protocol_id, version, sha256, text, signature_id, released_at"
                " FROM releases ORDER BY protocol_id, id"
            ).fetchall()
        return [release_row(r) for r in rows]

    def release_for(self, protocol_id: str, version: str) -> Release | None:
        """The release of ``protocol_id`` at ``version`` (whatever its content), or None."""
        return next(
            (r for r in self.releases() if (r.protocol_id, r.version) == (protocol_id, version)),
            None,
        )

    def verify_signatures(self) -> list[str]:
        """Problems with signatures and releases that the hash chain alone cannot show: a
        row whose content no longer matches what it says it signed, or the audit event
        recorded with it (empty when all agree)."""
        problems: list[str] = []
        with self._reading("check signatures"):
            events = {
                (r[0], r[1]): json.loads(r[2])
                for r in self._conn.execute(
                    "SELECT entity, entity_id, data FROM events"
                    " WHERE entity IN ('signature', 'release')"
                )
            }
            actors = {
                r[0]: r[1]
                for r in self._conn.execute(
                    "SELECT entity_id, actor FROM events WHERE entity = 'signature'"
                )
            }
            sigs = [
                signature_row(r) for r in self._conn.execute(f"SELECT {SIG_COLS} FROM signatures")
            ]
            rels = [
                release_row(r)
                for r in self._conn.execute(
                    "SELECT id, protocol_id, version, sha256, text, signature_id, released_at"
                    " FROM releases"
                )
            ]
        for sig in sigs:
            ev = events.get(("signature", sig.id))
            if ev is None:
                problems.append(f"signature {sig.id} has no audit event")
                continue
            if subject_sha256(sig.subject)[1] != sig.subject_sha256:
                problems.append(f"signature {sig.id}: what it signed was changed after signing")
            if (ev.get("subject_sha256"), ev.get("meaning"), actors.get(sig.id)) != (
                sig.subject_sha256,
                sig.meaning.value,
                sig.user_name,
            ):
                problems.append(f"signature {sig.id} differs from its audit event")
        for rel in rels:
            ev = events.get(("release", rel.id))
            digest = hashlib.sha256(rel.text.encode("utf-8")).hexdigest()
            if ev is None or ev.get("sha256") != rel.sha256 or digest != rel.sha256:
                problems.append(
                    f"release {rel.id} ({rel.protocol_id} v{rel.version}): its text or hash "
                    "differs from what was released"
                )
        return problems
