"""The ways a page reaches a person: e-mail through an SMTP server, or a webhook's JSON POST.

Each :class:`Channel` sends one page per call, blocking (on a courier thread of
:class:`~labctl.engine.paging.Pager`) at most about its time-out, and says in one sentence
how it went or, raising :class:`PageError`, why it did not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any, Protocol
from urllib.parse import urlsplit

from labctl.engine.pages import Page
from labctl.errors import LabctlError
from labctl.workcell import SmtpSettings, WebhookSettings

__all__ = ["Channel", "PageError", "SmtpChannel", "WebhookChannel", "shown_url"]


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
