"""The workcell file (DEVICES.md section 10): which devices a lab has and how to reach them.

Only the shape is checked here (the core never imports drivers); each driver checks its own
connection keys when the registry builds it. The ``paging:`` section (who is told of an
alarm, by e-mail or a webhook) is read into :class:`PagingSettings`; the engine's pager
(labctl.engine.paging) sends the pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from labctl.errors import Diagnostic, ProtocolError
from labctl.protocol import source
from labctl.protocol.source import Map, Scalar, Seq
from labctl.units import Dim, UnitParseError, parse_quantity

INCUBATOR_DRIVERS = {"cytomat", "liconic", "manual-incubator", "sim-cytomat", "sim-liconic"}
MOVER_DRIVERS = {"pf400"}  # plate movers: robot arms that carry plates between stations
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS_RE = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-4]):([0-5]\d)\s*$")


@dataclass(frozen=True)
class Device:
    """One device entry: its name, driver and the driver's own settings (plain data)."""

    name: str
    driver: str
    settings: dict[str, Any]
    line: int

    def setpoints(self) -> dict[str, float]:
        """Incubator setpoints in degC / percent; defaults 37 degC and 5% CO2."""
        out = {"temperature": 37.0, "co2": 5.0}
        sp = self.settings.get("setpoints") or {}
        for k, v in sp.items():
            try:
                q = parse_quantity(str(v), Dim.TEMPERATURE if k == "temperature" else Dim.FRACTION)
            except UnitParseError:
                continue
            out[k] = float(q.to("degC" if k == "temperature" else "percent").magnitude)
        return out


@dataclass(frozen=True)
class OperatorCalendar:
    """When a person is at the workcell: weekday (0 = Monday) -> (start, end), wall-clock
    times in ``timezone`` (the workcell's, not a run's); an end not after its start runs
    past midnight. No hours at all: someone is always there."""

    hours: dict[int, tuple[time, time]] = field(default_factory=dict)
    timezone: str = "UTC"


# Paging levels, lowest first. The store's alarms are 'warning' or 'error'; the pager
# reads 'error' as alarm, and as critical where cells suffer by the minute (see
# labctl.engine.paging.level_of).
PAGING_LEVELS = ("warning", "alarm", "critical")


@dataclass(frozen=True)
class SmtpSettings:
    """E-mail pages: the server (``port`` default 587 with STARTTLS, 465 with ``ssl``, 25
    with neither), the sender and the addresses paged. The password is never in the file:
    ``password_env`` names the environment variable of the engine's process holding it."""

    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password_env: str | None = None


@dataclass(frozen=True)
class WebhookSettings:
    """Webhook pages: a JSON POST to ``url`` with ``headers``; with ``secret_env`` the body
    is signed (HMAC-SHA256 with the secret that environment variable holds)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    secret_env: str | None = None


@dataclass(frozen=True)
class PagingSettings:
    """Who is paged, for which alarms and how often. ``severity``: the lowest level paged
    (one of PAGING_LEVELS); ``repeat_after_s``: seconds after which an alarm still active
    and unacknowledged is paged again (None: once only); ``quiet``: nothing is sent."""

    smtp: SmtpSettings | None = None
    webhook: WebhookSettings | None = None
    severity: str = "alarm"
    repeat_after_s: float | None = 1800.0
    quiet: bool = False

    def channels(self) -> list[str]:
        """The channels configured, by name ('smtp', 'webhook')."""
        return [n for n, c in (("smtp", self.smtp), ("webhook", self.webhook)) if c is not None]


@dataclass(frozen=True)
class Workcell:
    name: str
    timezone: str
    devices: dict[str, Device]
    operator_hours: dict[int, tuple[time, time]] = field(default_factory=dict)  # weekday 0=Mon
    source_file: str = ""
    paging: PagingSettings | None = None  # None: nobody is paged

    def operator_calendar(self) -> OperatorCalendar:
        """The operators' hours, in the workcell's own time zone."""
        return OperatorCalendar(dict(self.operator_hours), self.timezone)

    def incubators(self) -> list[Device]:
        return [d for d in self.devices.values() if d.driver in INCUBATOR_DRIVERS]

    def incubator_capabilities(self) -> list[tuple[str, dict[str, float]]]:
        return [(d.name, d.setpoints()) for d in self.incubators()]

    def can_hold(self, quantity: str, value: float) -> bool:
        """Whether some incubator's setpoint for ``quantity`` is ``value`` (degC or %)."""
        for _, sp in self.incubator_capabilities():
            if quantity in sp and abs(sp[quantity] - value) < 1e-6:
                return True
        return False


def _plain(node: source.Node) -> Any:
    if isinstance(node, Map):
        return {k.text: _plain(v) for k, v in node.entries}
    if isinstance(node, Seq):
        return [_plain(i) for i in node.items]
    assert isinstance(node, Scalar)
    if node.is_null:
        return None
    if node.kind == "int" and not node.quoted:
        try:
            return int(node.text, 0)
        except ValueError:
            return node.text
    if node.kind == "bool" and not node.quoted:
        return node.text.lower() in ("true", "yes", "on", "y")
    return node.text


def load_workcell(path: str | Path) -> Workcell:
    """Read a workcell file; raises ProtocolError with located diagnostics, InputFileError."""
    text = source.read_text(path)
    return parse_workcell(text, str(path))


def parse_workcell(text: str, file: str) -> Workcell:
    root, diags = source.parse(text, file)
    errs = list(diags)

    def err(node: source.Node, msg: str) -> None:
        errs.append(Diagnostic(file, node.mark.line, node.mark.col, "error", msg))

    if root is None:
        raise ProtocolError(errs)
    if not isinstance(root, Map):
        err(root, "a workcell file must be a mapping with name, timezone and devices")
        raise ProtocolError(errs)
    for k, _ in root.entries:
        if k.text not in (
            "name",
            "timezone",
            "devices",
            "operators",
            "paging",
        ) and not k.text.startswith("x-"):
            err(
                k,
                f"unknown key '{k.text}' in the workcell (expected name, timezone, devices, "
                "operators, paging)",
            )
    name_node, tz_node = root.get("name"), root.get("timezone")
    name = _plain(name_node) if name_node is not None else Path(file).stem
    tz = _plain(tz_node) if tz_node is not None else "UTC"
    devices: dict[str, Device] = {}
    dn = root.get("devices")
    if not isinstance(dn, Map) or not dn.entries:
        err(
            dn or root,
            "the workcell needs 'devices': a mapping of device names to {driver: ..., ...}",
        )
    else:
        for k, v in dn.entries:
            if not isinstance(v, Map):
                err(
                    v,
                    f"device '{k.text}' must be a mapping like {{driver: cytomat, port: /dev/ttyUSB0}}",
                )
                continue
            drv = v.get("driver")
            if not isinstance(drv, Scalar) or not drv.text:
                err(v, f"device '{k.text}' needs a 'driver'")
                continue
            settings = _plain(v)
            settings.pop("driver", None)
            devices[k.text] = Device(k.text, drv.text, settings, k.mark.line)
    hours: dict[int, tuple[time, time]] = {}
    on = root.get("operators")
    if isinstance(on, Map) and isinstance(on.get("hours"), Map):
        for k, v in on.get("hours").entries:  # type: ignore[union-attr]
            days = _weekdays(k.text)
            m = _HOURS_RE.match(v.text) if isinstance(v, Scalar) else None
            if days is None or m is None:
                err(k, f"operator hours '{k.text}: ...' must look like mon-fri: \"08:00-18:00\"")
                continue
            a = time(int(m.group(1)), int(m.group(2)))
            b = time(23, 59) if m.group(3) == "24" else time(int(m.group(3)), int(m.group(4)))
            for d in days:
                hours[d] = (a, b)
    pk = root.key_node("paging")
    paging = _Paging(err).section(pk, root.get("paging")) if pk is not None else None
    if errs:
        raise ProtocolError(errs)
    return Workcell(str(name), str(tz), devices, hours, file, paging)


def _weekdays(text: str) -> list[int] | None:
    out: list[int] = []
    for part in text.lower().replace(" ", "").split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a not in _DAYS or b not in _DAYS:
                return None
            i, j = _DAYS.index(a), _DAYS.index(b)
            out.extend(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        elif part in _DAYS:
            out.append(_DAYS.index(part))
        else:
            return None
    return out


# ---- the paging: section -------------------------------------------------------------------

_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
_PAGING_KEYS = ("smtp", "webhook", "severity", "repeat_after", "quiet")
_SMTP_KEYS = ("host", "port", "starttls", "ssl", "username", "password_env", "from", "to")
_WEBHOOK_KEYS = ("url", "headers", "secret_env")
_SECRET_KEYS = {"password": "password_env", "secret": "secret_env", "token": "secret_env"}
_NEVER = ("never", "off", "no", "none")


class _Paging:
    """Reads the ``paging:`` section, reporting each problem at its own line and column."""

    def __init__(self, err: Callable[[source.Node, str], None]) -> None:
        self.err = err

    def section(self, key: Scalar, node: source.Node | None) -> PagingSettings | None:
        if not isinstance(node, Map) or not node.entries:
            self.err(
                node if node is not None and not _null(node) else key,
                "paging must be a mapping with smtp: {...} and/or webhook: {...}",
            )
            return None
        self._keys(node, _PAGING_KEYS, "paging")
        smtp = self._smtp(node)
        webhook = self._webhook(node)
        if node.get("smtp") is None and node.get("webhook") is None:
            self.err(key, "paging needs smtp: {...} or webhook: {...} (or both): whom to tell")
        severity = "alarm"
        sn = node.get("severity")
        if sn is not None:
            text = sn.text.strip().lower() if isinstance(sn, Scalar) else ""
            if text not in PAGING_LEVELS:
                self.err(
                    sn,
                    f"paging severity must be one of {', '.join(PAGING_LEVELS)} (the lowest "
                    f"level paged), not {source.describe(sn)}",
                )
            else:
                severity = text
        return PagingSettings(
            smtp,
            webhook,
            severity,
            self._repeat(node.get("repeat_after")),
            self._bool(node, "quiet", False),
        )

    # ---- the channels -------------------------------------------------------------------

    def _smtp(self, paging: Map) -> SmtpSettings | None:
        key, node = paging.key_node("smtp"), paging.get("smtp")
        if key is None:
            return None
        if not isinstance(node, Map):
            self.err(node if node is not None and not _null(node) else key, _SMTP_SHAPE)
            return None
        self._keys(node, _SMTP_KEYS, "smtp")
        host = self._text(node, "host")
        if node.get("host") is None:
            self.err(key, "smtp needs 'host': the mail server (e.g. smtp.example.org)")
        ssl = self._bool(node, "ssl", False)
        starttls = self._bool(node, "starttls", not ssl)
        if ssl and starttls:
            self.err(
                node.key_node("starttls") or key,
                "smtp: ssl (TLS from the start, port 465) and starttls (port 587) exclude each "
                "other: set one",
            )
        port = self._port(node, 465 if ssl else 587 if starttls else 25)
        username = self._text(node, "username")
        password_env = self._env(node, "password_env")
        if username is not None and node.get("password_env") is None:
            self.err(
                node.key_node("username") or key,
                "smtp: a username needs password_env: the name of the environment variable "
                "that holds the password (a password never goes in the workcell file)",
            )
        if node.get("password_env") is not None and node.get("username") is None:
            self.err(node.key_node("password_env") or key, "smtp: password_env needs a username")
        if username is not None and not (ssl or starttls):
            self.err(
                node.key_node("username") or key,
                "smtp: a password is never sent unencrypted: set starttls: true (or ssl: true)",
            )
        sender = self._address(node.get("from"), "from")
        if node.get("from") is None:
            self.err(key, "smtp needs 'from': the sender address (e.g. labctl@example.org)")
        to = self._recipients(key, node.get("to"))
        if host is None or sender is None or not to:
            return None
        return SmtpSettings(host, port, sender, tuple(to), starttls, ssl, username, password_env)

    def _webhook(self, paging: Map) -> WebhookSettings | None:
        key, node = paging.key_node("webhook"), paging.get("webhook")
        if key is None:
            return None
        if not isinstance(node, Map):
            self.err(
                node if node is not None and not _null(node) else key,
                "webhook must be a mapping like {url: https://hooks.example.org/labctl}",
            )
            return None
        self._keys(node, _WEBHOOK_KEYS, "webhook")
        url = self._url(key, node.get("url"))
        headers: dict[str, str] = {}
        hn = node.get("headers")
        if hn is not None and not isinstance(hn, Map):
            self.err(hn, "webhook headers must be a mapping of names to texts")
        elif isinstance(hn, Map):
            for k, v in hn.entries:
                value = v.text if isinstance(v, Scalar) and not _null(v) else None
                if not _HEADER_RE.match(k.text):
                    self.err(k, f"'{source.one_line(k.text)}' is not an HTTP header name")
                elif value is None or "\n" in value or "\r" in value:
                    self.err(v, f"header {k.text} must be one line of text")
                else:
                    headers[k.text] = value
        secret_env = self._env(node, "secret_env")
        return WebhookSettings(url, headers, secret_env) if url is not None else None

    # ---- values ---------------------------------------------------------------------------

    def _keys(self, node: Map, allowed: tuple[str, ...], where: str) -> None:
        for k, _ in node.entries:
            if k.text in allowed:
                continue
            if k.text in _SECRET_KEYS and _SECRET_KEYS[k.text] in allowed:
                self.err(
                    k,
                    f"{where}: a {k.text} never goes in the workcell file: put it in an "
                    f"environment variable of the engine and name that with "
                    f"{_SECRET_KEYS[k.text]}",
                )
                continue
            self.err(
                k,
                f"unknown key '{source.one_line(k.text)}' in {where} (expected "
                f"{', '.join(allowed)})",
            )

    def _text(self, node: Map, key: str) -> str | None:
        v = node.get(key)
        if v is None:
            return None
        if not isinstance(v, Scalar) or _null(v) or not v.text.strip():
            self.err(v, f"{key} must be a text, not {source.describe(v)}")
            return None
        return v.text.strip()

    def _bool(self, node: Map, key: str, default: bool) -> bool:
        v = node.get(key)
        if v is None:
            return default
        if not isinstance(v, Scalar) or v.kind != "bool" or v.quoted:
            self.err(v, f"{key} must be true or false, not {source.describe(v)}")
            return default
        return v.text.lower() in ("true", "yes", "on", "y")

    def _port(self, node: Map, default: int) -> int:
        v = node.get("port")
        if v is None:
            return default
        n = _plain(v) if isinstance(v, Scalar) and not v.quoted else None
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 65535:
            self.err(v, f"port must be a number from 1 to 65535, not {source.describe(v)}")
            return default
        return n

    def _env(self, node: Map, key: str) -> str | None:
        v = node.get(key)
        name = self._text(node, key)
        if v is not None and name is not None and not _ENV_RE.match(name):
            self.err(
                v,
                f"{key} names an environment variable (like LABCTL_SMTP_PASSWORD), not "
                f"{source.describe(v)}: the secret itself never goes in the workcell file",
            )
            return None
        return name

    def _address(self, v: source.Node | None, what: str) -> str | None:
        if v is None:
            return None
        text = v.text.strip() if isinstance(v, Scalar) and not _null(v) else ""
        _, addr = parseaddr(text)
        local, at, domain = addr.partition("@")
        if not (local and at and domain) or "@" in domain or " " in addr or "\n" in text:
            self.err(v, f"{what}: {source.describe(v)} is not an e-mail address")
            return None
        return text

    def _recipients(self, key: Scalar, v: source.Node | None) -> list[str]:
        if v is None or _null(v):
            self.err(v or key, "smtp needs 'to': the addresses to page (a list)")
            return []
        items = v.items if isinstance(v, Seq) else [v]
        out = [a for a in (self._address(i, "to") for i in items) if a is not None]
        if isinstance(v, Seq) and not v.items:
            self.err(v, "smtp 'to' is empty: whom should the pages go to?")
        return out

    def _url(self, key: Scalar, v: source.Node | None) -> str | None:
        if v is None:
            self.err(key, "webhook needs 'url': where the JSON page is POSTed (https://...)")
            return None
        text = v.text.strip() if isinstance(v, Scalar) and not _null(v) else ""
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - a port that is not a number raises here
        except ValueError:
            parts = None
        if parts is None or parts.scheme.lower() not in ("http", "https"):
            scheme = f"'{parts.scheme}'" if parts is not None and parts.scheme else "none"
            self.err(
                v,
                f"webhook url must start with https:// (or http://); its scheme is {scheme} "
                f"in {source.describe(v)}",
            )
            return None
        if not parts.hostname or any(c.isspace() for c in text):
            self.err(v, f"webhook url '{source.one_line(text)}' has no host (https://HOST/...)")
            return None
        return text

    def _repeat(self, v: source.Node | None) -> float | None:
        if v is None:
            return 1800.0
        text = v.text.strip() if isinstance(v, Scalar) and not _null(v) else ""
        if text.lower() in _NEVER:
            return None
        try:
            seconds = float(parse_quantity(text, Dim.DURATION).to("s").magnitude)
        except UnitParseError as exc:
            self.err(v, f"repeat_after: {exc} (or never)")
            return 1800.0
        if seconds < 60:
            self.err(v, "repeat_after must be at least 1 min (or never): pages are not a stream")
            return 1800.0
        return seconds


_SMTP_SHAPE = (
    "smtp must be a mapping like {host: smtp.example.org, from: labctl@example.org, "
    "to: [oncall@example.org]}"
)


def _null(node: source.Node) -> bool:
    return isinstance(node, Scalar) and node.is_null
