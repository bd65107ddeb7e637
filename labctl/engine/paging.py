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

Every page sent or failed is an audit event (entity ``page``, id the alarm's, action
``page-sent`` or ``page-failed``, data: channel, recipients, level, subject, attempt).
When a page is next due is worked out from those events, so an engine that restarts does
not page again an alarm paged less than ``repeat_after`` ago. A condition that clears and
comes back (a device that flaps) is a new alarm of the same (run, subject, code): it is not
paged again until ``repeat_after`` has passed since that condition was last paged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import smtplib
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from labctl.clock import Clock
from labctl.engine.pages import Context, Page, compose, iso_utc, level_of, plain_page, rank
from labctl.errors import LabctlError, StoreError
from labctl.store import Store
from labctl.store.models import Alarm, Event
from labctl.workcell import PagingSettings, SmtpSettings, WebhookSettings, Workcell

if TYPE_CHECKING:
    from labctl.engine.loop import Engine

__all__ = ["Channel", "PageError", "Pager", "SmtpChannel", "WebhookChannel", "shown_url"]

# After the n-th failed delivery in a row, the next try waits BACKOFF_S[n-1] (the last one
# from then on): soon enough for a mail server that restarts, not a flood for a dead one.
BACKOFF_S = (30.0, 60.0, 120.0, 300.0, 600.0)
ACTOR = "pager"


class PageError(LabctlError):
    """A page could not be delivered (the channel says why in one sentence)."""

    code = 3100


# ---- the channels ----------------------------------------------------------------------------


class Channel(Protocol):
    """One way of telling a person. ``send`` blocks (on a courier thread) at most about its
    time-out; it returns how the page went out, or raises why it did not."""

    name: str

    def send(self, page: Page, now: datetime) -> str: ...

    def recipients(self) -> list[str]:
        """Whom it pages, as recorded (never a secret)."""
        ...

    def problems(self) -> list[str]:
        """What would make every page fail now (an environment variable not set)."""
        ...


class SmtpChannel:
    """E-mail through an SMTP server (STARTTLS, or TLS from the start, with a login)."""

    name = "smtp"

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        timeout_s: float = 20.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.s = settings
        self.timeout_s = timeout_s
        self.env = os.environ if env is None else env

    def recipients(self) -> list[str]:
        return list(self.s.to)

    def problems(self) -> list[str]:
        pe = self.s.password_env
        if pe and not self.env.get(pe):
            return [f"the SMTP password's environment variable {pe} is not set for the engine"]
        return []

    def message(self, page: Page, now: datetime) -> EmailMessage:
        m = EmailMessage()
        m["Subject"] = page.subject
        m["From"] = self.s.sender
        m["To"] = ", ".join(self.s.to)
        m["Date"] = format_datetime(now.astimezone(timezone.utc))
        domain = parseaddr(self.s.sender)[1].rpartition("@")[2] or "labctl.invalid"
        m["Message-ID"] = make_msgid(f"labctl.alarm{page.alarm_id}", domain=domain)
        m["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
        m["X-Labctl-Alarm"] = str(page.alarm_id)
        m["X-Labctl-Level"] = page.level
        if page.level != "warning":
            m["Importance"] = "high"
            m["X-Priority"] = "1"
        # Plain 7-bit text reads as is everywhere (raw, in a pager's SMS gateway); any
        # other text goes quoted-printable.
        m.set_content(page.body, cte="7bit" if page.body.isascii() else "quoted-printable")
        return m

    def send(self, page: Page, now: datetime) -> str:
        s = self.s
        password = ""
        if s.password_env:
            password = self.env.get(s.password_env, "")
            if not password:
                raise PageError(f"environment variable {s.password_env} is not set")
        ctx = ssl.create_default_context()
        # The local name given in EHLO, without the DNS lookup smtplib would make for it.
        me = socket.gethostname() or "labctl"
        conn: smtplib.SMTP
        try:
            if s.ssl:
                conn = smtplib.SMTP_SSL(
                    s.host, s.port, local_hostname=me, timeout=self.timeout_s, context=ctx
                )
            else:
                conn = smtplib.SMTP(s.host, s.port, local_hostname=me, timeout=self.timeout_s)
            with conn:
                if s.starttls:
                    conn.starttls(context=ctx)
                if s.username:
                    conn.login(s.username, password)
                refused = conn.send_message(self.message(page, now))
        except smtplib.SMTPException as exc:
            raise PageError(f"{s.host}:{s.port}: {_smtp_why(exc, self.timeout_s)}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise PageError(f"{s.host}:{s.port}: {_os_why(exc, self.timeout_s)}") from exc
        took = [a for a in s.to if parseaddr(a)[1] not in refused]
        out = f"accepted by {s.host}:{s.port} for {', '.join(took)}"
        if refused:
            out += f"; refused for {', '.join(sorted(refused))}"
        return out


class WebhookChannel:
    """A JSON POST (labctl.page/1, see docs/workcell.md), signed when a secret is set."""

    name = "webhook"

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        timeout_s: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.s = settings
        self.timeout_s = timeout_s
        self.env = os.environ if env is None else env
        # No redirects: a POST must not turn into a GET somewhere else.
        self._opener = urllib.request.build_opener(_NoRedirect())

    def recipients(self) -> list[str]:
        return [shown_url(self.s.url)]

    def problems(self) -> list[str]:
        se = self.s.secret_env
        if se and not self.env.get(se):
            return [f"the webhook secret's environment variable {se} is not set for the engine"]
        return []

    def request(self, page: Page) -> urllib.request.Request:
        body = json.dumps(page.payload, ensure_ascii=False, sort_keys=True).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "labctl-pager/1",
            **self.s.headers,
        }
        if self.s.secret_env:
            secret = self.env.get(self.s.secret_env, "")
            if not secret:
                raise PageError(f"environment variable {self.s.secret_env} is not set")
            digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
            headers["X-Labctl-Signature"] = f"sha256={digest}"
        return urllib.request.Request(self.s.url, data=body, headers=headers, method="POST")

    def send(self, page: Page, now: datetime) -> str:
        req = self.request(page)
        where = shown_url(self.s.url)
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            raise PageError(f"{where} answered HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            why = exc.reason if isinstance(exc.reason, OSError) else None
            text = _os_why(why, self.timeout_s) if why is not None else str(exc.reason)
            raise PageError(f"{where}: {text}") from exc
        except OSError as exc:
            raise PageError(f"{where}: {_os_why(exc, self.timeout_s)}") from exc
        return f"{where} answered HTTP {status}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None


def shown_url(url: str) -> str:
    """The webhook's address as recorded and shown: scheme and host only, since a chat
    service's hook URL holds its secret in its path."""
    p = urlsplit(url)
    rest = "/..." if p.path.strip("/") or p.query else ""
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}{rest}"


def _smtp_why(exc: smtplib.SMTPException, timeout_s: float) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else exc.smtp_error
        )
        return f"the server answered {exc.smtp_code} {text}".strip()
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"every recipient was refused ({', '.join(sorted(exc.recipients))})"
    if isinstance(exc.__context__, OSError):  # smtplib words a time-out as a disconnection
        return f"{exc} ({_os_why(exc.__context__, timeout_s)})"
    return str(exc) or type(exc).__name__


def _os_why(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server up, and is this its port?)"
    return str(exc) or type(exc).__name__


# ---- the pager -------------------------------------------------------------------------------


@dataclass
class _Job:
    page: Page
    channel: str
    attempt: int  # 1 for the first try of this page, 2 after one failure...
    repeat: int


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
    ) -> None:
        """``backoff_s``: seconds before the next try after 1, 2, ... failures in a row."""
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

    @classmethod
    def for_workcell(
        cls, wc: Workcell, store: Store, clock: Clock, *, db: str | Path | None = None
    ) -> Pager | None:
        """The pager of a workcell file's ``paging:`` section with its real channels (None
        without one). ``db``: the run database, named in the commands a page suggests."""
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
        )
        return cls(settings, store, clock, ctx, channels)

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
            f"{self.settings.severity}, {again} until acknowledged"
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
        self._live = {
            a.id: a
            for a in self.store.active_alarms()
            if a.state == "active" and rank(level_of(a)) >= self._threshold
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
        return min(times, default=None)

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
        if d.ok:
            reason = f"paged by {how} ({d.detail}): {job.page.subject}"
        else:
            wait = self._backoff(job.attempt)
            reason = (
                f"paging by {how} to {', '.join(channel.recipients())} failed (try "
                f"{job.attempt}): {d.detail}; next try in {wait / 60:g} min while the alarm "
                "stands active"
            )
        self.store.record(
            "page-sent" if d.ok else "page-failed",
            entity="page",
            entity_id=job.page.alarm_id,
            run_id=job.page.run_id,
            actor=self.actor,
            reason=reason,
            data=data,
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
                if e.data.get("channel") == channel
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
