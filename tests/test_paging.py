"""Paging the person on call: e-mail to a local SMTP server and a webhook to a local HTTP
receiver (both on 127.0.0.1, written here), timing on the virtual clock."""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import socketserver
import threading
import time
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from labctl.clock import RealClock, VirtualClock
from labctl.devices import DeviceAlarm
from labctl.engine.daemon import Daemon, DaemonConfig
from labctl.engine.pages import Context
from labctl.engine.paging import Pager, SmtpChannel, WebhookChannel
from labctl.errors import ProtocolError
from labctl.store import Store
from labctl.workcell import PagingSettings, SmtpSettings, WebhookSettings, parse_workcell
from tests.helpers import protocol_text
from tests.test_engine import World

SECRET = "s3cret-for-the-hook"
ENV = {"HOOK_SECRET": SECRET, "SMTP_PW": "pw"}
OUT_TOO_LONG = protocol_text(
    """
    media: [{days: "0-2", medium: M1}]
    feeds: [{days: "0-2", change: full}]
    """
).replace(
    'timing: {feed_at: "09:00", window: 1 h}',
    'timing: {feed_at: "09:00", window: 1 h, max_out_of_incubator: 20 min}',
)


# ---- a tiny SMTP server and an HTTP receiver on 127.0.0.1 ----------------------------------


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Enough SMTP for smtplib: EHLO, MAIL, RCPT, DATA, RSET, QUIT."""

    server: SmtpServer

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        srv = self.server
        if srv.mode == "hang":  # accepts the connection, never greets
            srv.release.wait(10)
            return
        self._say("220 test ESMTP")
        rcpts: list[str] = []
        sender = ""
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._say("250-test greets you")
                self._say("250 8BITMIME")
            elif verb == "MAIL":
                if srv.mode == "fail":
                    self._say("451 4.3.0 mailbox busy, try again later")
                    continue
                sender = line.split(":", 1)[1].strip(" <>")
                self._say("250 OK")
            elif verb == "RCPT":
                rcpts.append(line.split(":", 1)[1].strip(" <>"))
                self._say("250 OK")
            elif verb == "DATA":
                self._say("354 go ahead")
                data = b""
                while True:
                    chunk = self.rfile.readline()
                    if chunk in (b".\r\n", b""):
                        break
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                srv.received.append((sender, list(rcpts), data))
                self._say("250 queued")
            elif verb == "RSET":
                rcpts.clear()
                self._say("250 OK")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:
                self._say("502 not implemented")


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.mode = "ok"  # "ok", "fail" (451 to MAIL FROM) or "hang" (no greeting)
        self.release = threading.Event()
        self.received: list[tuple[str, list[str], bytes]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(data, policy=default_policy)  # type: ignore[misc]
            for _, _, data in self.received
        ]


class _HookHandler(BaseHTTPRequestHandler):
    server: HookServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.path, dict(self.headers.items()), body))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class HookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.status = 200
        self.received: list[tuple[str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/T0K3N-in-the-path"


def settings(smtp: SmtpServer | None, hook: HookServer | None, **kw: Any) -> PagingSettings:
    return PagingSettings(
        SmtpSettings(
            "127.0.0.1",
            smtp.port,
            "labctl@bay-1.lab.example",
            ("oncall@lab.example", "Night Shift <night@lab.example>"),
            starttls=False,
        )
        if smtp is not None
        else None,
        WebhookSettings(hook.url, {"X-Team": "cells"}, "HOOK_SECRET") if hook is not None else None,
        **kw,
    )


def make_pager(
    store: Store,
    clock: Any,
    s: PagingSettings,
    db: Path,
    *,
    timeout_s: float = 5.0,
) -> Pager:
    channels: list[Any] = []
    if s.smtp is not None:
        channels.append(SmtpChannel(s.smtp, timeout_s=timeout_s, env=ENV))
    if s.webhook is not None:
        channels.append(WebhookChannel(s.webhook, timeout_s=timeout_s, env=ENV))
    ctx = Context("bay-1", "Europe/Stockholm", str(db), "lab-pc", False, s.repeat_after_s)
    return Pager(s, store, clock, ctx, channels)


def pages(store: Store, action: str | None = None) -> list[Any]:
    return [e for e in store.events(entity="page", limit=None) if action in (None, e.action)]


def plate_out_too_long(tmp_path: Path) -> tuple[World, Any]:
    """A run whose robot takes 30 min: plate P1 is out longer than its 20 min."""
    w = World(tmp_path, OUT_TOO_LONG, plates=1)
    w.devices["ot2-sim"].durations["lh_run"] = 1800
    w.command("start")
    w.run_until(lambda: any(a.code == "out-too-long" for a in w.store.active_alarms()), 2)
    (alarm,) = w.store.active_alarms()
    return w, alarm


# ---- a raised alarm is paged once by each channel, with what, where, when and what to do ----


def test_a_raised_alarm_is_paged_once_by_each_channel_with_its_content(
    tmp_path: Path, smtp: SmtpServer, hook: HookServer
) -> None:
    w, alarm = plate_out_too_long(tmp_path)
    pager = make_pager(w.store, w.clock, settings(smtp, hook), tmp_path / "run.db")
    pager.attach(w.engine)
    w.clock.advance(5 * 60)  # 25 min out by now
    w.engine.step()  # the pager's hook hands the page to the couriers
    assert pager.settle(10)
    for _ in range(3):  # more passes, minutes later: nothing is sent twice
        w.clock.advance(60)
        w.engine.step()
        assert pager.settle(10)

    (mail,) = smtp.messages()
    subject = "[labctl bay-1] CRITICAL: plate P1 out of the incubator 25 min (run 1, day 0 feed)"
    assert mail["Subject"] == subject
    assert mail["From"] == "labctl@bay-1.lab.example"
    assert mail["X-Labctl-Alarm"] == str(alarm.id)
    assert sorted(smtp.received[0][1]) == ["night@lab.example", "oncall@lab.example"]
    body = mail.get_content()
    assert "What:   plate P1 has been out of the incubator 20 min (limit 20 min)" in body
    assert (
        "Where:  workcell bay-1; run 1 'test'; plate P1; task r1:d0-feed-0900/P1 (day 0 feed)"
        in body
    )
    # Out since 07:58:00 UTC (the alarm came at 08:18:01 UTC, 1201 s out): 08:58 in Stockholm.
    assert "Since:  Tue 01 Dec 2026 08:58 CET (07:58 UTC), 25 min ago" in body
    assert "Level:  critical (alarm 1, code out-too-long); first page" in body
    assert "put it back in its incubator" in body
    assert f"labctl status 1 --db {tmp_path / 'run.db'}" in body
    assert "Acknowledge the alarm on the console" in body

    ((path, headers, raw),) = hook.received
    assert path == "/hooks/T0K3N-in-the-path"
    assert headers["X-Team"] == "cells"
    assert headers["Content-Type"].startswith("application/json")
    mac = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert headers["X-Labctl-Signature"] == f"sha256={mac}"
    doc = json.loads(raw)
    assert doc["schema"] == "labctl.page/1"
    assert doc["subject"] == subject and doc["level"] == "critical"
    assert doc["alarm"]["id"] == alarm.id and doc["alarm"]["code"] == "out-too-long"
    assert doc["where"]["plate"] == "P1"
    assert doc["where"]["run"] == {"id": 1, "name": "test"}
    assert doc["where"]["task"] == {"key": "r1:d0-feed-0900/P1", "day": 0, "kind": "feed"}
    assert doc["since"] == "2026-12-01T07:58:00Z"
    assert doc["since_local"] == "2026-12-01T08:58:00+01:00"
    assert doc["timezone"] == "Europe/Stockholm"
    assert doc["text"].startswith(subject + "\n\nWhat:")
    assert doc["page"]["repeat"] == 0

    sent = pages(w.store, "page-sent")
    assert [(e.entity_id, e.run_id, e.data["channel"]) for e in sent] == [
        (alarm.id, 1, "smtp"),
        (alarm.id, 1, "webhook"),
    ] or [(e.entity_id, e.run_id, e.data["channel"]) for e in sent] == [
        (alarm.id, 1, "webhook"),
        (alarm.id, 1, "smtp"),
    ]
    by = {e.data["channel"]: e for e in sent}
    assert by["smtp"].data["to"] == ["oncall@lab.example", "Night Shift <night@lab.example>"]
    assert by["smtp"].actor == "pager" and "paged by e-mail" in by["smtp"].reason
    # The hook's path may hold its token: the trail keeps the host only.
    assert by["webhook"].data["to"] == [f"http://127.0.0.1:{hook.server_address[1]}/..."]
    assert "T0K3N" not in json.dumps([e.data for e in pages(w.store)])
    assert not pages(w.store, "page-failed")
    assert w.store.verify_chain().ok


# ---- acknowledged: no more pages; still active: paged again after repeat_after ------------


def test_an_acknowledged_alarm_is_not_paged_again(
    tmp_path: Path, smtp: SmtpServer, hook: HookServer
) -> None:
    w, alarm = plate_out_too_long(tmp_path)
    pager = make_pager(w.store, w.clock, settings(smtp, hook), tmp_path / "run.db")
    pager.tick(w.clock.now())
    assert pager.settle(10)
    assert len(smtp.received) == 1 and len(hook.received) == 1
    w.store.acknowledge_alarm(alarm.id, actor="sue", reason="on my way")
    w.clock.advance(3 * 3600)
    pager.tick(w.clock.now())
    assert pager.settle(10)
    # Only the all clear (tests/test_all_clear.py), then nothing more.
    assert len(smtp.received) == 2 and len(hook.received) == 2
    assert smtp.messages()[1]["Subject"].startswith("Acknowledged by sue: [labctl bay-1]")
    w.clock.advance(3 * 3600)
    pager.tick(w.clock.now())
    assert pager.settle(10)
    assert len(smtp.received) == 2 and len(hook.received) == 2
    assert pager.next_due(w.clock.now()) is None


def test_repeat_after_pages_again_and_a_restarted_engine_does_not_page_early(
    tmp_path: Path, smtp: SmtpServer, hook: HookServer
) -> None:
    w, alarm = plate_out_too_long(tmp_path)
    s = settings(smtp, hook, repeat_after_s=1800.0)
    pager = make_pager(w.store, w.clock, s, tmp_path / "run.db")
    first = w.clock.now()
    pager.tick(first)
    assert pager.settle(10)
    assert pager.next_due(first) == first + timedelta(minutes=30)

    # The engine restarts 10 minutes later: a new pager reads the store's page events.
    w.clock.advance(600)
    pager.close()
    again = make_pager(w.store, w.clock, s, tmp_path / "run.db")
    again.tick(w.clock.now())
    assert again.settle(10)
    assert len(smtp.received) == 1 and len(hook.received) == 1
    assert again.next_due(w.clock.now()) == first + timedelta(minutes=30)

    w.clock.set(first + timedelta(minutes=30))
    again.tick(w.clock.now())
    assert again.settle(10)
    assert len(smtp.received) == 2 and len(hook.received) == 2
    second = smtp.messages()[1]
    assert "page 2: still active, not acknowledged" in second.get_content()
    assert json.loads(hook.received[1][2])["page"]["repeat"] == 1
    assert [e.data["repeat"] for e in pages(w.store, "page-sent")] == [0, 0, 1, 1]


def test_a_condition_raised_again_soon_is_not_paged_again(tmp_path: Path, hook: HookServer) -> None:
    """A flapping device: its alarm clears and comes back (a new alarm row) within
    repeat_after; the person was told minutes ago and is not paged again yet."""
    clock = VirtualClock(datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc))
    store = Store.open(tmp_path / "run.db", clock, durable=False)
    pager = make_pager(store, clock, settings(None, hook), tmp_path / "run.db")
    a = store.insert_alarm(
        severity="error", code="offline", message="inc-1 does not answer", actor="engine",
        device="inc-1",
    )  # fmt: skip
    pager.tick(clock.now())
    assert pager.settle(10)
    store.clear_alarm(a.id, actor="engine", reason="condition cleared")
    clock.advance(240)
    store.insert_alarm(
        severity="error", code="offline", message="inc-1 does not answer", actor="engine",
        device="inc-1",
    )  # fmt: skip
    pager.tick(clock.now())
    assert pager.settle(10)
    assert len(hook.received) == 1
    clock.advance(1800)
    pager.tick(clock.now())
    assert pager.settle(10)
    assert len(hook.received) == 2
    doc = json.loads(hook.received[1][2])
    assert doc["subject"] == "[labctl bay-1] ALARM: inc-1 does not answer"
    assert doc["where"]["device"] == "inc-1"
    assert "power, cable and network of inc-1" in doc["what_to_do"]


def test_only_alarms_at_or_above_the_paging_level_and_nothing_when_quiet(
    tmp_path: Path, hook: HookServer
) -> None:
    clock = VirtualClock(datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc))
    store = Store.open(tmp_path / "run.db", clock, durable=False)
    store.insert_alarm(
        severity="warning", code="late", message="r1:d2-feed-0900/P2 will be late",
        actor="engine", device="task r1:d2-feed-0900/P2",
    )  # fmt: skip
    store.insert_alarm(
        severity="error", code="needs-operator", message="ot2 needs the operator",
        actor="engine", device="ot2",
    )  # fmt: skip
    store.insert_alarm(
        severity="error", code="climate", message="inc-1: CO2 2.1% (set 5%)", actor="engine",
        device="inc-1",
    )  # fmt: skip
    quiet = make_pager(store, clock, settings(None, hook, quiet=True), tmp_path / "run.db")
    quiet.tick(clock.now())
    assert quiet.settle(10) and not hook.received

    critical = make_pager(store, clock, settings(None, hook, severity="critical"), tmp_path)
    critical.tick(clock.now())
    assert critical.settle(10)
    assert [json.loads(b)["alarm"]["code"] for _, _, b in hook.received] == ["climate"]

    hook.received.clear()
    alarm = make_pager(store, clock, settings(None, hook, severity="alarm"), tmp_path)
    alarm.tick(clock.now())  # climate was paged by the pager before: not again yet
    assert alarm.settle(10)
    assert [json.loads(b)["alarm"]["code"] for _, _, b in hook.received] == ["needs-operator"]

    hook.received.clear()
    warning = make_pager(store, clock, settings(None, hook, severity="warning"), tmp_path)
    warning.tick(clock.now())
    assert warning.settle(10)
    assert [json.loads(b)["level"] for _, _, b in hook.received] == ["warning"]


# ---- failures: retried with backoff, recorded, and the engine never waits on them ----------


def test_a_failing_smtp_server_is_retried_recorded_and_never_blocks_the_engine(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    w = World(tmp_path, plates=1)
    w.devices["inc-sim"].alarm = DeviceAlarm("inc-sim", "door", "inc-sim: the door is open")
    pager = make_pager(w.store, w.clock, settings(smtp, None), tmp_path / "run.db", timeout_s=0.5)
    pager.attach(w.engine)
    smtp.mode = "hang"
    w.engine.step()  # raises the door alarm
    assert any(a.code == "door" for a in w.store.active_alarms())
    steps = []
    for _ in range(5):  # the next passes hand out the page while the server hangs
        t0 = time.perf_counter()
        w.engine.step()
        steps.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    pager.tick(w.clock.now())
    tick_s = time.perf_counter() - t0
    assert pager._inflight, "the page is still on its way while the engine steps"
    assert max(steps) < 0.1, steps  # the SMTP time-out is 0.5 s: never waited on
    assert tick_s < 0.02, tick_s

    assert pager.settle(10)
    (failed,) = pages(w.store, "page-failed")
    assert failed.data["channel"] == "smtp" and failed.data["attempt"] == 1
    assert "no answer within 0.5 s" in failed.reason
    assert "next try in 0.5 min" in failed.reason
    retry_at = failed.time + timedelta(seconds=30)
    assert pager.next_due(w.clock.now()) == retry_at

    smtp.mode = "fail"
    w.clock.set(retry_at - timedelta(seconds=1))
    pager.tick(w.clock.now())
    assert pager.settle(10) and len(pages(w.store)) == 1  # not before its time
    w.clock.set(retry_at)
    pager.tick(w.clock.now())
    assert pager.settle(10)
    second = pages(w.store, "page-failed")[1]
    assert second.data["attempt"] == 2
    assert "451 4.3.0 mailbox busy" in second.reason and "next try in 1 min" in second.reason

    smtp.mode = "ok"
    w.clock.set(second.time + timedelta(seconds=60))
    pager.tick(w.clock.now())
    assert pager.settle(10)
    (sent,) = pages(w.store, "page-sent")
    assert sent.data["attempt"] == 3 and sent.data["repeat"] == 0
    (mail,) = smtp.messages()
    assert mail["Subject"] == "[labctl bay-1] CRITICAL: inc-sim: door open"
    assert "Close the door of inc-sim" in mail.get_content()
    # Delivered: the next page is a repeat, repeat_after later.
    assert pager.next_due(w.clock.now()) == sent.time + timedelta(minutes=30)


def test_a_webhook_answering_500_is_recorded_and_tried_again(
    tmp_path: Path, hook: HookServer
) -> None:
    clock = VirtualClock(datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc))
    store = Store.open(tmp_path / "run.db", clock, durable=False)
    store.insert_alarm(
        severity="error", code="held", message="the engine starts nothing: store went back",
        actor="engine", device="engine",
    )  # fmt: skip
    pager = make_pager(store, clock, settings(None, hook), tmp_path / "run.db")
    hook.status = 500
    pager.tick(clock.now())
    assert pager.settle(10)
    (failed,) = pages(store, "page-failed")
    assert "answered HTTP 500" in failed.reason and "T0K3N" not in failed.reason
    hook.status = 204
    clock.advance(30)
    pager.tick(clock.now())
    assert pager.settle(10)
    assert len(hook.received) == 2 and len(pages(store, "page-sent")) == 1
    doc = json.loads(hook.received[1][2])
    assert doc["subject"] == "[labctl bay-1] ALARM: the engine is held: it starts nothing"
    assert "labctl confirm-store --reason" in doc["what_to_do"]


def test_a_page_that_cannot_be_worded_still_goes_out(
    tmp_path: Path, hook: HookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import labctl.engine.paging as paging

    def broken(*args: Any, **kw: Any) -> None:
        raise KeyError("no such thing")

    monkeypatch.setattr(paging, "compose", broken)
    clock = VirtualClock(datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc))
    store = Store.open(tmp_path / "run.db", clock, durable=False)
    store.insert_alarm(
        severity="error", code="estop", message="arm: emergency stop pressed", actor="engine",
        device="arm",
    )  # fmt: skip
    pager = make_pager(store, clock, settings(None, hook), tmp_path / "run.db")
    pager.tick(clock.now())  # the engine's step goes on
    assert pager.settle(10)
    doc = json.loads(hook.received[0][2])
    assert doc["subject"] == "[labctl bay-1] ALARM: arm: arm: emergency stop pressed"
    assert "could not be worded in full: KeyError" in doc["text"]


def test_an_smtp_password_not_in_the_environment_is_said_and_recorded(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    clock = VirtualClock(datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc))
    store = Store.open(tmp_path / "run.db", clock, durable=False)
    store.insert_alarm(
        severity="error", code="offline", message="inc-1 does not answer", actor="engine",
        device="inc-1",
    )  # fmt: skip
    s = PagingSettings(
        SmtpSettings(
            "127.0.0.1",
            smtp.port,
            "labctl@lab.example",
            ("oncall@lab.example",),
            username="labctl",
            password_env="LABCTL_TEST_SMTP_PW",
        )  # fmt: skip
    )
    ctx = Context("bay-1", "Europe/Stockholm")
    pager = Pager(s, store, clock, ctx, [SmtpChannel(s.smtp, env={})])  # type: ignore[arg-type]
    assert (
        "WARNING: the SMTP password's environment variable LABCTL_TEST_SMTP_PW" in pager.describe()
    )
    pager.tick(clock.now())
    assert pager.settle(10)
    (failed,) = pages(store, "page-failed")
    assert "environment variable LABCTL_TEST_SMTP_PW is not set" in failed.reason
    assert not smtp.received


def test_the_engine_daemon_pages_and_records_how(tmp_path: Path, hook: HookServer) -> None:
    w = World(tmp_path, plates=1)
    w.devices["ot2-sim"].alarm = DeviceAlarm("ot2-sim", "offline", "ot2-sim: no answer")
    pager = make_pager(w.store, w.clock, settings(None, hook), tmp_path / "run.db")
    passes = [0]

    def enough() -> bool:
        passes[0] += 1
        return passes[0] > 3

    daemon = Daemon(
        w.engine,
        tmp_path / "run.db",
        RealClock(),
        workcell="bay-1",
        config=DaemonConfig(command_poll_s=0.01, max_idle_s=1.0),
        pager=pager,
    )
    daemon.serve(enough)
    (how,) = w.store.events(entity="engine", action="paging", limit=None)
    assert how.reason.startswith("pages by webhook http://127.0.0.1:")
    assert "at or above alarm, again every 30 min until acknowledged" in how.reason
    assert [json.loads(b)["alarm"]["code"] for _, _, b in hook.received] == ["offline"]
    assert len(pages(w.store, "page-sent")) == 1  # recorded as the daemon stopped


# ---- the workcell file's paging: section ---------------------------------------------------

BASE = """\
name: bay-1
timezone: Europe/Stockholm
devices:
  person: {driver: operator}
"""


def test_a_paging_section_is_read_with_its_defaults() -> None:
    wc = parse_workcell(
        BASE
        + """\
paging:
  smtp:
    host: smtp.lab.example
    username: labctl
    password_env: LABCTL_SMTP_PASSWORD
    from: "labctl <labctl@lab.example>"
    to: [oncall@lab.example]
  webhook: {url: "https://hooks.lab.example/T/B/X", headers: {X-Team: cells}, secret_env: HOOK}
  repeat_after: 45 min
""",
        "wc.yaml",
    )
    p = wc.paging
    assert p is not None and p.channels() == ["smtp", "webhook"]
    assert p.smtp == SmtpSettings(
        "smtp.lab.example", 587, "labctl <labctl@lab.example>", ("oncall@lab.example",),
        True, False, "labctl", "LABCTL_SMTP_PASSWORD",
    )  # fmt: skip
    assert p.webhook == WebhookSettings(
        "https://hooks.lab.example/T/B/X", {"X-Team": "cells"}, "HOOK"
    )
    assert (p.severity, p.repeat_after_s, p.quiet) == ("alarm", 2700.0, False)
    assert parse_workcell(BASE, "wc.yaml").paging is None


def test_paging_errors_say_file_line_and_column() -> None:
    text = (
        BASE
        + """\
paging:
  smtp:
    host: smtp.lab.example
    password: hunter2
    port: 99999
    to: []
    cc: [boss@lab.example]
  webhook: {url: "ftp://hooks.lab.example/x"}
  severity: error
  repeat_after: 10 s
  quiet: maybe
  escalate: true
"""
    )
    with pytest.raises(ProtocolError) as e:
        parse_workcell(text, "wc.yaml")
    got = sorted(d.format() for d in e.value.diagnostics)
    assert got == sorted(
        [
            "wc.yaml:8:5: error: smtp: a password never goes in the workcell file: put it in "
            "an environment variable of the engine and name that with password_env",
            "wc.yaml:9:11: error: port must be a number from 1 to 65535, not the number '99999'",
            "wc.yaml:11:5: error: unknown key 'cc' in smtp (expected host, port, starttls, ssl, "
            "username, password_env, from, to)",
            "wc.yaml:6:3: error: smtp needs 'from': the sender address (e.g. labctl@example.org)",
            "wc.yaml:10:9: error: smtp 'to' is empty: whom should the pages go to?",
            "wc.yaml:12:18: error: webhook url must start with https:// (or http://); its scheme "
            "is 'ftp' in the text 'ftp://hooks.lab.example/x'",
            "wc.yaml:13:13: error: paging severity must be one of warning, alarm, critical (the "
            "lowest level paged), not the text 'error'",
            "wc.yaml:14:17: error: repeat_after must be at least 1 min (or never): pages are not "
            "a stream",
            "wc.yaml:15:10: error: quiet must be true or false, not the text 'maybe'",
            "wc.yaml:16:3: error: unknown key 'escalate' in paging (expected smtp, webhook, "
            "severity, repeat_after, quiet)",
        ]
    )


@pytest.mark.parametrize(
    ("paging", "where", "message"),
    [
        ("paging:\n  smtp: {host: h, from: a@b.c}\n", "6:3", "smtp needs 'to'"),
        ("paging:\n  smtp: {host: h, to: [x@y.z], from: nobody}\n", "6:38", "from: the text 'nobody' is not an e-mail address"),
        ("paging:\n  webhook: {headers: {A: b}}\n", "6:3", "webhook needs 'url'"),
        ("paging:\n  webhook: {url: 'https:///x'}\n", "6:18", "has no host"),
        ("paging:\n  webhook: {url: hooks.lab.example/x}\n", "6:18", "its scheme is none"),
        ("paging:\n  severity: alarm\n", "5:1", "paging needs smtp: {...} or webhook: {...}"),
        ("paging:\n", "5:1", "paging must be a mapping"),
        ("paging:\n  webhook: {url: 'https://h/x', secret: abc}\n", "6:33", "a secret never goes in the workcell file"),
        ("paging:\n  webhook: {url: 'https://h/x', secret_env: 'my secret'}\n", "6:45", "secret_env names an environment variable"),
        (
            "paging:\n  smtp: {host: h, starttls: false, username: u, password_env: P, from: a@b.c, to: x@y.z}\n",
            "6:36",
            "a password is never sent unencrypted",
        ),
        ("paging:\n  smtp: {host: h, username: u, from: a@b.c, to: x@y.z}\n", "6:19", "a username needs password_env"),
    ],
)  # fmt: skip
def test_each_paging_mistake_is_located(paging: str, where: str, message: str) -> None:
    with pytest.raises(ProtocolError) as e:
        parse_workcell(BASE + paging, "wc.yaml")
    found = [d.format() for d in e.value.diagnostics]
    assert any(f.startswith(f"wc.yaml:{where}: error: ") and message in f for f in found), found
