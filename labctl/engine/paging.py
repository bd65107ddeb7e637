"""Paging: the person on call is told of the alarms that need a person, by e-mail or webhook.

The workcell file's ``paging:`` section (:class:`~labctl.workcell.PagingSettings`) says
whom to tell and for which alarms. An alarm is paged while it stands *active* (not yet
acknowledged, not cleared) at or above the paging level; it is paged again every
``repeat_after`` while it stays so. Acknowledging it on the console stops the pages.

Nothing here blocks the engine: :meth:`Pager.tick` runs at the start of each engine step
(:meth:`Pager.attach` makes it one of the engine's hooks), reads the store, hands the
pages that are due to one courier thread per channel and records what the couriers
report back (each delivery is one connection with a short time-out). A failed delivery is
tried again after 30 s, 1, 2, 5, then every 10 minutes, while the alarm stands active.

When a paged alarm is acknowledged or cleared, each channel that paged it sends one short
"all clear" (:mod:`labctl.engine.all_clear`). The engine's pager pages every alarm but the
watchdog's (``engine-silent``, :data:`~labctl.engine.pages.WATCHDOG_CODES`), which the
watchdog's own pager (``labctl watchdog``, :mod:`labctl.engine.watchdog`) pages: a stopped
engine pages nobody, so the watchdog must not depend on it.

Every page sent or failed is an audit event (entity ``page``, id the alarm's, action
``page-sent`` or ``page-failed``, data: channel, recipients, level, subject, attempt; an
all clear is ``page-cleared``, or ``page-failed`` with ``all_clear: true``).
When a page is next due is worked out from those events, so an engine that restarts does
not page again an alarm paged less than ``repeat_after`` ago. A condition that clears and
comes back (a device that flaps) is a new alarm of the same (run, subject, code): it is not
paged again until ``repeat_after`` has passed since that condition was last paged.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from labctl.clock import Clock
from labctl.engine.all_clear import ALL_CLEAR_TRIES, AllClears, Owed
from labctl.engine.channels import (
    Channel,
    PageError,
    SmtpChannel,
    WebhookChannel,
    shown_url,
)
from labctl.engine.pages import (
    WATCHDOG_CODES,
    Context,
    Page,
    all_clear_page,
    compose,
    iso_utc,
    level_of,
    plain_page,
    rank,
)
from labctl.errors import StoreError
from labctl.store import Store
from labctl.store.models import Alarm, Event
from labctl.workcell import PagingSettings, Workcell

if TYPE_CHECKING:
    from labctl.engine.loop import Engine

__all__ = ["Channel", "PageError", "Pager", "SmtpChannel", "WebhookChannel", "shown_url"]

# After the n-th failed delivery in a row, the next try waits BACKOFF_S[n-1] (the last one
# from then on): soon enough for a mail server that restarts, not a flood for a dead one.
BACKOFF_S = (30.0, 60.0, 120.0, 300.0, 600.0)
ACTOR = "pager"


# ---- the pager -------------------------------------------------------------------------------


@dataclass
class _Job:
    page: Page
    channel: str
    attempt: int  # 1 for the first try of this page, 2 after one failure...
    repeat: int
    all_clear: bool = False  # the follow-up of an alarm no longer active (all_clear.py)


@dataclass
class _Done:
    job: _Job
    ok: bool
    detail: str
    at: datetime


class _Courier:
    """One channel's thread: takes jobs one at a time and reports each outcome."""

    def __init__(self, channel: Channel, clock: Clock, results: queue.SimpleQueue[_Done]) -> None:
        self.channel = channel
        self.clock = clock
        self.results = results
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None

    def put(self, job: _Job) -> None:
        if self.thread is None:  # started on the first page: a quiet workcell has no thread
            self.thread = threading.Thread(
                target=self._run, name=f"labctl-pager-{self.channel.name}", daemon=True
            )
            self.thread.start()
        self.jobs.put(job)

    def stop(self, timeout_s: float) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                detail, ok = self.channel.send(job.page, self.clock.now()), True
            except PageError as exc:
                detail, ok = str(exc), False
            except Exception as exc:  # noqa: BLE001 - every failure is recorded; the thread lives on
                detail, ok = f"{type(exc).__name__}: {exc}", False
            self.results.put(_Done(job, ok, detail, self.clock.now()))


@dataclass
class _State:
    """When a channel next pages an alarm, as the store's page events say."""

    due: datetime | None  # None: not again (paged once, no repeats)
    sent: int = 0  # pages delivered
    failures: int = 0  # failed tries since the last delivery


class Pager:
    """Pages the person on call (see the module docstring). Not thread-safe: called from
    the engine's thread; only the couriers' sending happens elsewhere."""

    def __init__(
        self,
        settings: PagingSettings,
        store: Store,
        clock: Clock,
        context: Context,
        channels: Sequence[Channel] = (),
        *,
        backoff_s: Sequence[float] = BACKOFF_S,
        actor: str = ACTOR,
        watchdog: bool = False,
    ) -> None:
        """``backoff_s``: seconds before the next try after 1, 2, ... failures in a row;
        ``watchdog``: the watchdog's pager, which pages only the watchdog's alarms (the
        engine's pages all the others)."""
        self.settings = settings
        self.store = store
        self.clock = clock
        self.context = context
        self.channels = list(channels)
        self.backoff_s = tuple(backoff_s)
        self.actor = actor
        self._results: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._couriers = {c.name: _Courier(c, clock, self._results) for c in self.channels}
        self._threshold = rank(settings.severity)
        self._inflight: dict[tuple[int, str], _Job] = {}
        # When each (alarm, channel) is next due, as read from the store's page events;
        # dropped whenever an event of it is written, so it is read again.
        self._states: dict[tuple[int, str], _State] = {}
        self._live: dict[int, Alarm] = {}  # the alarms paged, as of the last tick
        self.watchdog = watchdog
        self._clears = AllClears(store, list(self._couriers), self._mine, self._backoff)

    @classmethod
    def for_workcell(
        cls,
        wc: Workcell,
        store: Store,
        clock: Clock,
        *,
        db: str | Path | None = None,
        watchdog: bool = False,
    ) -> Pager | None:
        """The pager of a workcell file's ``paging:`` section with its real channels (None
        without one). ``db``: the run database, named in the commands a page suggests;
        ``watchdog``: the watchdog's pager (see :meth:`__init__`)."""
        settings = wc.paging
        if settings is None:
            return None
        channels: list[Channel] = []
        if settings.smtp is not None:
            channels.append(SmtpChannel(settings.smtp))
        if settings.webhook is not None:
            channels.append(WebhookChannel(settings.webhook))
        ctx = Context(
            wc.name,
            wc.timezone,
            str(db) if db is not None else None,
            socket.gethostname(),
            store.is_practice(),
            settings.repeat_after_s,
            "the labctl watchdog" if watchdog else "the labctl engine",
        )
        return cls(settings, store, clock, ctx, channels, watchdog=watchdog)

    # ---- wiring ---------------------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        """Page at the start of each of ``engine``'s steps and wake it when a page is due;
        records in the trail how the engine pages (or that it is quiet)."""
        engine.hooks.append(self.tick)
        engine.wakes.append(self.next_due)
        self.store.record(
            "paging",
            entity="engine",
            actor=self.actor,
            reason=self.describe(),
            data={
                "channels": {c.name: c.recipients() for c in self.channels},
                "severity": self.settings.severity,
                "repeat_after_s": self.settings.repeat_after_s,
                "quiet": self.settings.quiet,
                "problems": self.problems(),
            },
        )

    def describe(self) -> str:
        """How the engine pages, in one sentence (with what would make pages fail)."""
        if self.settings.quiet:
            return "set up but quiet: no page is sent"
        ways = [
            f"{'e-mail to' if c.name == 'smtp' else 'webhook'} {', '.join(c.recipients())}"
            for c in self.channels
        ]
        every = self.settings.repeat_after_s
        again = f"again every {every / 60:g} min" if every else "once"
        out = (
            f"pages by {' and '.join(ways)}, for active alarms at or above "
            f"{self.settings.severity}, {again} until acknowledged, then an all clear"
        )
        problems = self.problems()
        return out + (f"; WARNING: {'; '.join(problems)}" if problems else "")

    def problems(self) -> list[str]:
        return [p for c in self.channels for p in c.problems()]

    # ---- the engine's side ----------------------------------------------------------------

    def tick(self, now: datetime) -> None:
        """Record what the couriers delivered, then hand out the pages now due. Reads the
        store and queues; never waits on a network."""
        self._collect()
        if self.settings.quiet or not self._couriers:
            return
        standing = {a.id: a for a in self.store.active_alarms()}
        self._live = {
            a.id: a
            for a in standing.values()
            if a.state == "active" and self._mine(a) and rank(level_of(a)) >= self._threshold
        }
        # Forget alarms no longer paged (acknowledged, cleared): a cache, not the truth.
        self._states = {k: v for k, v in self._states.items() if k[0] in self._live}
        for a in self._live.values():
            pages: dict[int, Page] = {}  # by repeat number (channels may differ)
            for name, courier in self._couriers.items():
                st = self._waiting(a, name)
                if st is None or st.due is None or st.due > now:
                    continue
                if st.sent not in pages:
                    pages[st.sent] = self._compose(a, now, st.sent)
                job = _Job(pages[st.sent], name, st.failures + 1, st.sent)
                self._inflight[(a.id, name)] = job
                courier.put(job)
        for o in self._clears.due(standing, now, self._inflight):
            self._send_all_clear(o, now)

    def _mine(self, a: Alarm) -> bool:
        """Whether this pager pages ``a``: the watchdog's alarms are the watchdog's pager's."""
        return (a.code in WATCHDOG_CODES) == self.watchdog

    def _send_all_clear(self, o: Owed, now: datetime) -> None:
        page = all_clear_page(o.alarm, now, self.context, subject=o.subject, sent=o.sent)
        job = _Job(page, o.channel, o.attempt, o.sent, all_clear=True)
        self._clears.forget(o.alarm.id, o.channel)  # read again once its outcome is recorded
        self._inflight[(o.alarm.id, o.channel)] = job
        self._couriers[o.channel].put(job)

    def _compose(self, a: Alarm, now: datetime, repeat: int) -> Page:
        try:
            return compose(self.store, a, now, self.context, repeat=repeat)
        except StoreError:
            raise  # the engine stops on a storage error, as everywhere
        except Exception as exc:  # noqa: BLE001 - a page must never stop the engine
            return plain_page(a, now, self.context, f"{type(exc).__name__}: {exc}", repeat=repeat)

    def next_due(self, now: datetime) -> datetime | None:
        """When the next page (a repeat, a retry) of the alarms seen at the last tick is
        due; the engine wakes for it. None: none is."""
        times = [
            st.due
            for a in self._live.values()
            for name in self._couriers
            if (st := self._waiting(a, name)) is not None and st.due is not None
        ]
        clear = self._clears.next_due()
        return min([*times, clear] if clear is not None else times, default=None)

    def settle(self, timeout_s: float = 30.0) -> bool:
        """Wait (real time, at most ``timeout_s`` for each) for the deliveries under way and
        record them. For tests and for stopping; True when none is left."""
        while self._inflight:
            try:
                done = self._results.get(timeout=timeout_s)
            except queue.Empty:
                return False
            self._record(done)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Let the deliveries under way finish (at most about ``timeout_s``), record them
        and stop the couriers."""
        self.settle(timeout_s)
        for c in self._couriers.values():
            c.stop(timeout_s)
        self._collect()

    # ---- the store's side -----------------------------------------------------------------

    def _collect(self) -> None:
        while True:
            try:
                done = self._results.get_nowait()
            except queue.Empty:
                return
            self._record(done)

    def _record(self, d: _Done) -> None:
        job = d.job
        key = (job.page.alarm_id, job.channel)
        self._inflight.pop(key, None)
        self._states.pop(key, None)  # read again from the events about to be written
        channel = next(c for c in self.channels if c.name == job.channel)
        how = "e-mail" if job.channel == "smtp" else "webhook"
        if d.ok and not job.all_clear:
            self._clears.paged(*key)
        data = {
            "alarm": job.page.alarm_id,
            "key": job.page.key,
            "channel": job.channel,
            "to": channel.recipients(),
            "level": job.page.level,
            "subject": job.page.subject,
            "repeat": job.repeat,
            "attempt": job.attempt,
            "at": iso_utc(d.at),
            "detail": d.detail,
        }
        if job.all_clear:
            action, reason = self._all_clear_words(job, d, how, channel.recipients())
            if not d.ok:
                data["all_clear"] = True
        elif d.ok:
            action, reason = "page-sent", f"paged by {how} ({d.detail}): {job.page.subject}"
        else:
            action = "page-failed"
            wait = self._backoff(job.attempt)
            reason = (
                f"paging by {how} to {', '.join(channel.recipients())} failed (try "
                f"{job.attempt}): {d.detail}; next try in {wait / 60:g} min while the alarm "
                "stands active"
            )
        self.store.record(
            action,
            entity="page",
            entity_id=job.page.alarm_id,
            run_id=job.page.run_id,
            actor=self.actor,
            reason=reason,
            data=data,
        )

    def _all_clear_words(self, job: _Job, d: _Done, how: str, to: list[str]) -> tuple[str, str]:
        """The action and reason of an all-clear's event."""
        if d.ok:
            return "page-cleared", f"all clear sent by {how} ({d.detail}): {job.page.subject}"
        if job.attempt >= ALL_CLEAR_TRIES:
            then = f"given up after {job.attempt} tries"
        else:
            then = f"next try in {self._backoff(job.attempt) / 60:g} min"
        return "page-failed", (
            f"all clear by {how} to {', '.join(to)} failed (try {job.attempt}): {d.detail}; {then}"
        )

    def _backoff(self, failures: int) -> float:
        return float(self.backoff_s[min(failures, len(self.backoff_s)) - 1])

    def _waiting(self, a: Alarm, channel: str) -> _State | None:
        """When ``channel`` next pages ``a`` (None while a delivery of it is under way),
        worked out from the page events in the store and kept until the next event of it
        is written."""
        key = (a.id, channel)
        if key in self._inflight:
            return None
        st = self._states.get(key)
        if st is None:
            events = [
                e
                for e in self.store.events(entity="page", entity_id=a.id, limit=None)
                if e.data.get("channel") == channel and not e.data.get("all_clear")
            ]
            st = self._states[key] = self._from_events(a, channel, events)
        return st

    def _from_events(self, a: Alarm, channel: str, events: list[Event]) -> _State:
        sent = [e for e in events if e.action == "page-sent"]
        last = sent[-1] if sent else None
        failed = [
            e for e in events if e.action == "page-failed" and (last is None or e.seq > last.seq)
        ]
        repeat = self.settings.repeat_after_s
        if failed:
            retry = failed[-1].time + timedelta(seconds=self._backoff(len(failed)))
            return _State(retry, len(sent), len(failed))
        if last is not None:
            again = last.time + timedelta(seconds=repeat) if repeat else None
            return _State(again, len(sent))
        # Never paged: unless the same condition (raised again after clearing) was paged
        # less than repeat_after ago, it is due now.
        before = self._same_condition_paged(a, channel)
        if before is not None:
            return _State(before + timedelta(seconds=repeat) if repeat else None, 0)
        return _State(a.raised_at)

    def _same_condition_paged(self, a: Alarm, channel: str) -> datetime | None:
        """When a page of another alarm of the same (run, subject, code) last went out by
        ``channel``, if less than repeat_after before this alarm was raised."""
        window = self.settings.repeat_after_s or 0.0
        key = f"{a.run_id}|{a.device}|{a.code}"
        for e in self.store.events(entity="page", action="page-sent", newest_first=True, limit=200):
            if e.time < a.raised_at - timedelta(seconds=window):
                return None
            if (
                e.entity_id != a.id
                and e.data.get("key") == key
                and e.data.get("channel") == channel
            ):
                return e.time
        return None
