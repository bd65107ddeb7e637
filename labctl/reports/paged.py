"""The pages to the person on call for a run's alarms, for its batch record.

Every page sent or failed is an audit event of :mod:`labctl.engine.paging` (entity
``page``, id the alarm's, action ``page-sent``, ``page-cleared`` (the all clear) or
``page-failed``, filed under the alarm's run; data: channel, recipients, level, subject,
attempt, the channel's answer). The run's own pages are among the events the record has
read already. The workcell's alarms that
concern the run (device alarms, filed under no run: Store.alarms_for_run) are paged under
no run too: their pages are read (by entity, an indexed read) only when there are such
alarms, and only those sent while the run was registered and not finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from labctl.reports.words import PAGE_ACTIONS, channel_words, plain
from labctl.store import Event, Run, Store
from labctl.store.models import Alarm

__all__ = ["PageRow", "page_rows"]

# Run states after which the workcell's alarms no longer concern it (Store.alarms_for_run).
_FINISHED = ("completed", "aborted", "failed")


@dataclass(frozen=True)
class PageRow:
    """One page to the person on call, delivered or not: a 'page-sent', 'page-cleared' or
    'page-failed' event (labctl.engine.paging). ``channel`` and ``alarm`` are in words; ``detail`` is the
    channel's answer (the server's reply, or why it failed)."""

    seq: int
    time: datetime
    sent: bool
    all_clear: bool  # the follow-up once the alarm was acknowledged or cleared
    channel: str
    recipients: str
    alarm: str
    attempt: int | None
    detail: str

    @property
    def outcome(self) -> str:
        """``sent (250 OK)`` or ``FAILED: connection refused``."""
        what = "all clear " if self.all_clear else ""
        if self.sent:
            return f"{what}sent ({self.detail})" if self.detail else f"{what}sent"
        return f"{what}FAILED: {self.detail or 'no reason recorded'}"


def page_rows(store: Store, run: Run, events: list[Event], alarms: list[Alarm]) -> list[PageRow]:
    """The pages of ``run``'s alarms, oldest first: those among ``events`` (the run's, as
    the record read them) and those of the workcell's ``alarms`` (see the module text)."""
    found = [e for e in events if e.entity == "page" and e.action in PAGE_ACTIONS]
    workcell = {a.id for a in alarms if a.run_id is None}
    if workcell:
        end = run.updated_at if run.state in _FINISHED else None
        found += [
            e
            for e in store.events(entity="page", limit=None)
            if e.run_id is None
            and e.action in PAGE_ACTIONS
            and e.entity_id in workcell
            and e.time >= run.created_at
            and (end is None or e.time <= end)
        ]
    by_id = {a.id: a for a in alarms}
    return [
        _page_row(e, by_id.get(int(e.entity_id or 0))) for e in sorted(found, key=lambda e: e.seq)
    ]


def _page_row(e: Event, alarm: Alarm | None) -> PageRow:
    d = e.data
    level = f" ({d['level']})" if d.get("level") else ""
    if alarm is not None:
        where = f" on {alarm.device}" if alarm.device else ""
        about = f"Alarm #{alarm.id}{level}, {alarm.code}{where}: {alarm.message}"
    else:  # not among the run's alarms (a store written by other tools): what the page said
        about = f"Alarm #{e.entity_id}{level}: {d.get('subject') or '?'}"
    attempt = d.get("attempt")
    return PageRow(
        seq=e.seq,
        time=e.time,
        sent=e.action in ("page-sent", "page-cleared"),
        all_clear=e.action == "page-cleared" or bool(d.get("all_clear")),
        channel=channel_words(d.get("channel")),
        recipients=plain(d.get("to")) if d.get("to") else "?",
        alarm=about,
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        detail=str(d.get("detail") or ""),
    )
