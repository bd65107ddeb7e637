"""The audit trail's hash chain: its canonical form, and the check that finds tampering.

Canonical form of an event (version 1). For the row with sequence number ``seq``::

    hash = sha256_hex(utf8(canonical))
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=True, allow_nan=False)
    payload = {"seq", "time", "run_id", "entity", "entity_id", "action", "from_state",
               "to_state", "actor", "reason", "data", "prev_hash"}  -> the row's values

Each value is the column exactly as stored: integers for ``seq``/``run_id``/``entity_id``,
text for the others, JSON ``null`` for SQL NULL. ``data`` is the stored JSON *text* as a
JSON string (it is not parsed and re-serialised, so the hash never depends on how a JSON
library prints numbers). ``time`` is ISO-8601 UTC text (``2026-01-01T09:00:00.000000+00:00``).
``ensure_ascii`` makes the canonical text pure ASCII, so there is no Unicode normalisation
question. ``prev_hash`` is the ``hash`` of the row with the previous ``seq``; the first row
uses 64 zeros (:data:`GENESIS`). ``sha256_hex`` is the lowercase hex digest.

Because ``seq`` and ``prev_hash`` are inside the hash, moving a row, removing one or
slipping one in all break the chain, and :func:`verify` names the first such place. What a
chain cannot show: someone who rewrites every row from some point on, recomputing all hashes,
or who removes rows at the end and also lowers ``sqlite_sequence``. To catch that, keep the
head hash (:meth:`Store.head`) outside the database, e.g. in the printed batch record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AuditReport", "GENESIS", "HASH_FIELDS", "canonical", "event_hash", "verify"]

#: prev_hash of the first event.
GENESIS = "0" * 64

#: The columns covered by the hash, in table order (the JSON object sorts them anyway).
HASH_FIELDS: tuple[str, ...] = (
    "seq",
    "time",
    "run_id",
    "entity",
    "entity_id",
    "action",
    "from_state",
    "to_state",
    "actor",
    "reason",
    "data",
    "prev_hash",
)


def canonical(row: Mapping[str, Any]) -> str:
    """The canonical text of an event row (see the module docstring)."""
    return json.dumps(
        {k: row[k] for k in HASH_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


def event_hash(row: Mapping[str, Any]) -> str:
    """sha256 hex digest of :func:`canonical` of ``row``."""
    return hashlib.sha256(canonical(row).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditReport:
    """Result of checking the chain.

    ``problem`` is None when ``ok``, else one of 'edited', 'deleted', 'inserted',
    'reordered'; ``seq`` is the first event that can no longer be trusted (for 'deleted',
    the first missing number). ``rows_checked`` counts the rows read, including the one
    where the check stopped. ``triggers_present`` says whether the append-only triggers
    are still in the schema (the chain is checked either way).
    """

    ok: bool
    rows_checked: int
    problem: str | None
    seq: int | None
    message: str
    triggers_present: bool = True


def _report(kind: str, seq: int, checked: int, message: str) -> AuditReport:
    return AuditReport(False, checked, kind, seq, f"event seq {seq} {message}")


def _written_as(row: Mapping[str, Any], seq_of_hash: Callable[[str], int | None]) -> int | None:
    """The seq this row's hash was computed for (None if its contents match no seq).

    A row moved by a reorder or a renumbering still verifies under its old number; that
    number is one step away, or follows the row its prev_hash names.
    """
    seq = row["seq"]
    candidates = [seq, seq - 1, seq + 1]
    if row["prev_hash"] == GENESIS:
        candidates.append(1)
    else:
        before = seq_of_hash(row["prev_hash"])
        if before is not None:
            candidates.append(before + 1)
    for cand in candidates:
        if event_hash({**row, "seq": cand}) == row["hash"]:
            return cand
    return None


def _lookahead(rows: Iterable[Mapping[str, Any]]) -> Iterator[tuple[Mapping, Mapping | None]]:
    it = iter(rows)
    cur = next(it, None)
    while cur is not None:
        nxt = next(it, None)
        yield cur, nxt
        cur = nxt


def verify(
    rows: Iterable[Mapping[str, Any]],
    *,
    seq_of_hash: Callable[[str], int | None],
    highest_issued: int,
) -> AuditReport:
    """Walk ``rows`` (ordered by seq) and report the first break in the chain.

    ``seq_of_hash`` finds the seq of the row currently holding a hash (used only once a
    problem is found); ``highest_issued`` is the largest seq ever handed out
    (``sqlite_sequence``), which reveals rows removed from the end.
    """
    checked = 0
    prev: Mapping[str, Any] | None = None
    expected = 1
    for row, nxt in _lookahead(rows):
        checked += 1
        seq = row["seq"]
        if seq < expected:  # only possible before the first row: seq 0 or negative
            return _report("inserted", seq, checked, "is numbered before the first event")
        if seq > expected:
            gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            return _report("deleted", expected, checked, f"is missing (gap: seq {gap})")
        expected = seq + 1
        linked = row["prev_hash"] == (prev["hash"] if prev else GENESIS)
        self_ok = event_hash(row) == row["hash"]
        if self_ok and linked:
            prev = row
            continue

        if self_ok:
            # Its own hash is right but it names another predecessor: either the previous
            # row was rewritten (hash recomputed), or this row was forged onto another one.
            other = seq_of_hash(row["prev_hash"])
            if other is not None:
                return _report(
                    "inserted", seq, checked, f"links to seq {other}, not to seq {seq - 1}"
                )
            if prev is None:
                return _report("inserted", seq, checked, "does not start from the genesis hash")
            return _report(
                "edited",
                prev["seq"],
                checked,
                f"was rewritten: its hash changed and seq {seq} records another predecessor",
            )

        written = _written_as(row, seq_of_hash)
        if written is None:
            if nxt is not None and _written_as(nxt, seq_of_hash) == seq:
                return _report(
                    "inserted", seq, checked, "was inserted: the events after it were renumbered"
                )
            if linked or (nxt is not None and nxt["prev_hash"] == row["hash"]):
                return _report(
                    "edited", seq, checked, "was edited: its contents do not match its hash"
                )
            return _report(
                "inserted", seq, checked, "was inserted: it neither matches its hash nor links"
            )
        if written == seq + 1:
            if nxt is not None and _written_as(nxt, seq_of_hash) == seq:
                return _report(
                    "reordered", seq, checked, f"and seq {seq + 1} were swapped (reordered)"
                )
            return _report(
                "deleted", seq, checked, "was deleted and the events after it renumbered"
            )
        if written == seq - 1:
            # The previous row passed as a well-forged event; this one was pushed up by it.
            return _report(
                "inserted",
                seq - 1,
                checked,
                "was inserted: the events after it were renumbered",
            )
        return _report(
            "reordered", seq, checked, f"holds the event written as seq {written} (reordered)"
        )

    if expected - 1 < highest_issued:
        first = expected
        gap = f"{first}" if first == highest_issued else f"{first}..{highest_issued}"
        return _report(
            "deleted", first, checked, f"is missing from the end of the trail (seq {gap})"
        )
    return AuditReport(True, checked, None, None, f"audit trail intact: {checked} events")
