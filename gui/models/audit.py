"""The audit trail, a page at a time, and the run's batch record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from labctl.reports.words import PAGE_ACTIONS, page_words
from labctl.store import Store
from labctl.store.models import Event


@dataclass(frozen=True)
class EventFilter:
    """Which events the audit view lists (None/empty = any)."""

    run_id: int | None = None
    entity: str | None = None
    actor: str | None = None
    text: str | None = None

    def cleaned(self) -> EventFilter:
        return EventFilter(
            self.run_id,
            (self.entity or "").strip() or None,
            (self.actor or "").strip() or None,
            (self.text or "").strip() or None,
        )


@dataclass(frozen=True)
class EventRow:
    seq: int
    time: datetime
    entity: str
    entity_id: int | None
    action: str
    change: str  # "pending → running" or ""
    actor: str
    reason: str  # for a page: what happened, in words (labctl.reports.words.page_words)
    data: str  # compact JSON, cut at 300 characters
    recorded: str = ""  # the event's own reason, when ``reason`` shows it in words


@dataclass(frozen=True)
class EventPage:
    rows: tuple[EventRow, ...]
    last_seq: int | None  # page on from here (after_seq)
    more: bool  # a further page may exist


def _data_text(data: Mapping[str, Any]) -> str:
    import json

    if not data:
        return ""
    text = json.dumps(
        data, ensure_ascii=False, separators=(", ", ": "), default=str, sort_keys=True
    )
    return text if len(text) <= 300 else text[:299] + "…"


def event_row(ev: Event) -> EventRow:
    change = ""
    if ev.from_state or ev.to_state:
        change = f"{ev.from_state or '∅'} → {ev.to_state or '∅'}"
    reason, recorded = ev.reason, ""
    if ev.entity == "page" and ev.action in PAGE_ACTIONS:
        # The pager's reason is written for the trail; the operator reads who was paged, by
        # what, for what and how it went, from the event's data.
        reason, recorded = page_words(ev.action, ev.data), ev.reason
    return EventRow(
        ev.seq, ev.time, ev.entity, ev.entity_id, ev.action, change, ev.actor, reason,
        _data_text(ev.data), recorded,
    )  # fmt: skip


def event_page(
    store: Store,
    flt: EventFilter,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
    newest_first: bool = False,
    limit: int = 500,
) -> EventPage:
    """One page of audit events: oldest first after ``after_seq``, or newest first before
    ``before_seq``. ``last_seq`` of the page is where the next page starts."""
    f = flt.cleaned()
    evs = store.events(
        f.run_id,
        entity=f.entity,
        actor=f.actor,
        text=f.text,
        after_seq=after_seq,
        before_seq=before_seq,
        newest_first=newest_first,
        limit=limit,
        with_workcell=True,  # a run's view shows the devices' alarms and climate too
    )
    rows = tuple(event_row(e) for e in evs)
    cursor = before_seq if newest_first else after_seq
    return EventPage(rows, rows[-1].seq if rows else cursor, len(rows) == limit)


def batch_record(store: Store, run_id: int) -> str:
    """The run's batch record as HTML (labctl.reports.batch)."""
    from labctl.reports.batch import batch_record as _br

    return _br(store, run_id)
