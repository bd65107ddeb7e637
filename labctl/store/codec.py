"""How values are written to the store: ISO-8601 UTC text for times, canonical JSON for data.

Times are stored as ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (fixed width, always UTC), so text
order is time order and ``ORDER BY due`` sorts correctly in SQL. JSON is written sorted and
compact, so the same value always gives the same text (the audit hash relies on this).
Never pickle: a database must stay readable by any SQLite tool and by later versions.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from enum import Enum
from typing import Any

from labctl.clock import utc
from labctl.errors import StoreError

__all__ = ["from_iso", "from_json", "parse_date", "plain", "to_iso", "to_json"]


def to_iso(value: datetime) -> str:
    """``value`` as fixed-width ISO-8601 UTC text (a naive datetime is taken to be UTC)."""
    return utc(value).isoformat(timespec="microseconds")


def from_iso(text: str) -> datetime:
    """Parse text written by :func:`to_iso` back into an aware UTC datetime."""
    return utc(datetime.fromisoformat(text))


def parse_date(text: str) -> date:
    """Parse an ISO ``YYYY-MM-DD`` date."""
    return date.fromisoformat(text)


def plain(value: Any) -> Any:
    """An Enum's value (state Enums such as ``RunState.RUNNING`` are stored as 'running')."""
    return value.value if isinstance(value, Enum) else value


def _jsonable(value: Any) -> Any:
    # Types callers commonly hold in specs and event data; anything else is refused
    # rather than stringified, so nothing is silently stored in a lossy form.
    if isinstance(value, datetime):
        return to_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def to_json(value: Any) -> str:
    """Canonical JSON text: keys sorted, no spaces, UTF-8 kept, no NaN/Infinity.

    datetimes become ISO-8601 UTC text, dates ``YYYY-MM-DD``, Enums their value. Raises
    :class:`StoreError` for anything else that JSON cannot hold.
    """
    try:
        return json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_jsonable,
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value cannot be stored as JSON: {exc}") from exc


def from_json(text: str | None) -> Any:
    """Inverse of :func:`to_json` (``None`` stays ``None``)."""
    return None if text is None else json.loads(text)
