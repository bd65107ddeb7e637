"""The watchdog (labctl watchdog): an engine silent while a run depends on it is paged by a
process of its own, through the same pager (to the local SMTP server and HTTP receiver of
tests/test_paging.py), and cleared with an all clear when the engine writes again."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from labctl.clock import Epoch, RealClock, VirtualClock
from labctl.engine.all_clear import SETTLE_S
from labctl.engine.pages import Context
from labctl.engine.paging import Pager, SmtpChannel, WebhookChannel
from labctl.engine.presence import EngineLock
from labctl.engine.watchdog import Watchdog
from labctl.store import Store
from labctl.store.models import Alarm
from tests.helpers import run_cli as run
from tests.test_daemon import register
from tests.test_paging import (
    ENV,
    HookServer,
    SmtpServer,
    pages,
    settings,
)

# 03:12 in Stockholm, when the engine last wrote.
BEAT = datetime(2026, 12, 1, 2, 12, tzinfo=timezone.utc)
WORKCELL = """\
name: bay-1
timezone: Europe/Stockholm
devices:
  person: {driver: operator}
"""


class Bay:
    """A run database with one run and an engine session that beat last at ``beat``."""

    def __init__(self, tmp: Path, *, beat: datetime = BEAT, state: str = "running") -> None:
        self.db = tmp / "run.db"
        self.clock = VirtualClock(beat)
        self.store = Store.open(self.db, self.clock, durable=False)
        self.run_id = register(self.store, self.clock)
        self.to(state)
        self.session = self.store.engine_started(
            pid=4242, host="bay-pc", workcell="bay-1", at=beat, actor="engine"
        )

    def to(self, state: str) -> None:
        if state in ("running", "paused"):
            self.run_state("running")
        if state == "paused":
            self.run_state("paused")

    def run_state(self, state: str) -> None:
        was = self.store.get_run(self.run_id).state
        self.store.transition(
            "run", self.run_id, state, expected_from=was, actor="engine", reason=state
        )

    def stop_cleanly(self) -> None:
        reason = "stopped by the operator (Ctrl-C or SIGTERM)"
        self.store.engine_stopped(self.session.id, self.clock.now(), reason=reason, actor="engine")

    def pager(self, smtp: SmtpServer | None, hook: HookServer | None, **kw: Any) -> Pager:
        s = settings(smtp, hook, **kw)
        channels: list[Any] = []
        if s.smtp is not None:
            channels.append(SmtpChannel(s.smtp, timeout_s=5.0, env=ENV))
        if s.webhook is not None:
            channels.append(WebhookChannel(s.webhook, timeout_s=5.0, env=ENV))
        ctx = Context(
            "bay-1", "Europe/Stockholm", str(self.db), "lab-pc", False, s.repeat_after_s,
            "the labctl watchdog",
        )  # fmt: skip
        return Pager(s, self.store, self.clock, ctx, channels, watchdog=True)

    def dog(self, pager: Pager | None = None) -> Watchdog:
        return Watchdog(
            self.store, self.clock, timezone="Europe/Stockholm", pager=pager, db=self.db,
            silent_after_s=120.0, settle_s=10.0,
        )  # fmt: skip

    def silent(self) -> list[Alarm]:
        return [a for a in self.store.alarms() if a.code == "engine-silent"]


def docs(hook: HookServer) -> list[dict[str, Any]]:
    return [json.loads(body) for _, _, body in hook.received]


# ---- silent while a run depends on it: one alarm, paged; fresh again: cleared, all clear ----


def test_a_silent_engine_is_paged_once_and_its_all_clear_follows_when_it_writes_again(
    tmp_path: Path, smtp: SmtpServer, hook: HookServer
) -> None:
    bay = Bay(tmp_path)
    dog = bay.dog(bay.pager(smtp, hook))
    bay.clock.advance(100)
    assert dog.check().well  # 100 s: not silent yet
    assert not bay.silent() and not hook.received

    bay.clock.set(BEAT + timedelta(minutes=14))
    v = dog.check()
    assert v.raised and not v.well
    (alarm,) = bay.silent()
    assert (alarm.severity, alarm.device, alarm.run_id, alarm.raised_by) == (
        "critical", "engine", None, "watchdog",
    )  # fmt: skip
    assert alarm.message == (
        "The engine has written nothing since 03:12 CET (14 min); run 1 't' depends on it; "
        "its process is gone (killed, crashed, or its machine went down)"
    )
    (mail,) = smtp.messages()
    subject = "[labctl bay-1] CRITICAL: the engine is silent: nothing is carried out"
    assert mail["Subject"] == subject
    body = mail.get_content()
    assert f"What:   {alarm.message}" in body
    assert "start it again: labctl engine --workcell ..." in body
    assert "Sent by the labctl watchdog on lab-pc" in body
    (doc,) = docs(hook)
    assert doc["alarm"]["code"] == "engine-silent" and doc["level"] == "critical"
    sent = pages(bay.store, "page-sent")
    assert sorted(e.data["channel"] for e in sent) == ["smtp", "webhook"]
    assert all(e.entity_id == alarm.id and e.actor == "pager" for e in sent)

    # Checks every 30 s (slept through the clock): the alarm stands, nothing is paged twice.
    seen: list[Any] = []
    dog.run(30, say=seen.append, should_stop=lambda: len(seen) >= 4)
    assert bay.clock.now() == BEAT + timedelta(minutes=14, seconds=90)
    assert [v.raised for v in seen] == [False] * 4 and not any(v.well for v in seen)
    assert len(bay.silent()) == 1 and len(smtp.received) == 1 and len(hook.received) == 1

    bay.store.engine_beat(bay.session.id, bay.clock.now())  # the engine writes again
    v = dog.check()
    assert v.cleared and v.well
    assert bay.store.get_alarm(alarm.id).state == "cleared"
    assert bay.store.get_alarm(alarm.id).cleared_by == "watchdog"
    seen.clear()

    def beating() -> bool:
        bay.store.engine_beat(bay.session.id, bay.clock.now())
        return bay.clock.now() > BEAT + timedelta(minutes=15, seconds=SETTLE_S + 30)

    dog.run(30, say=seen.append, should_stop=beating)
    assert all(v.well for v in seen)
    assert len(smtp.received) == 2 and len(hook.received) == 2
    assert smtp.messages()[1]["Subject"] == f"Cleared: {subject}"
    assert docs(hook)[1]["kind"] == "all-clear"
    assert sorted(e.data["channel"] for e in pages(bay.store, "page-cleared")) == [
        "smtp",
        "webhook",
    ]
    assert bay.store.verify_chain().ok


def test_a_hung_engine_that_holds_its_lock_is_said_to_be_hung(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    lock = EngineLock(bay.db)
    lock.acquire({"pid": 4242, "host": "bay-pc"})
    try:
        bay.clock.advance(3 * 3600)
        v = bay.dog().check()
    finally:
        lock.release()
    assert v.raised
    assert v.text == (
        "The engine has written nothing since 03:12 CET (3 h 0 min); run 1 't' depends on it; "
        "its process still holds the database: hung?"
    )


# ---- who depends on it: a clean stop with no running run pages nobody ----------------------


def test_a_clean_stop_with_no_running_run_pages_nobody(tmp_path: Path, hook: HookServer) -> None:
    bay = Bay(tmp_path, state="paused")
    bay.clock.set(datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc))  # day 0's feed is due
    bay.stop_cleanly()
    dog = bay.dog(bay.pager(None, hook))
    bay.clock.advance(3600)
    v = dog.check()
    assert v.well and not bay.silent() and not hook.received
    assert v.text.startswith(
        "The engine stopped at 13:00 CET (60 min ago): stopped by the operator"
    )
    assert v.text.endswith("; no run depends on it")

    bay.run_state("running")  # a run running with the engine stopped: someone depends on it
    v = dog.check()
    assert v.raised and len(hook.received) == 1
    assert v.text.startswith("The engine stopped at 13:00 CET (60 min ago): stopped by the")
    assert v.text.endswith("; run 1 't' depends on it")


def test_a_paused_run_with_work_due_depends_on_an_engine_that_died(tmp_path: Path) -> None:
    bay = Bay(tmp_path, state="paused")  # day 0's feed at 09:00 UTC is not due at 02:12
    dog = bay.dog()
    bay.clock.advance(3600)
    assert dog.check().well and not bay.silent()
    bay.clock.set(datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc))
    v = dog.check()
    assert v.raised and "run 1 't' depends on it" in v.text
    assert "Tue 01 Dec" not in v.text  # same day in Stockholm: the time alone
    bay.clock.set(datetime(2026, 12, 2, 9, 30, tzinfo=timezone.utc))
    assert "still silent" in dog.check().text and len(bay.silent()) == 1


def test_an_aborted_run_leaves_nobody_depending_and_the_alarm_is_cleared(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    dog = bay.dog()
    bay.clock.advance(600)
    assert dog.check().raised
    bay.run_state("aborted")
    v = dog.check()
    assert v.cleared and v.text == "alarm cleared: no run depends on the engine any more"


# ---- the engine's pager and the watchdog's page different alarms ---------------------------


def test_the_engines_pager_leaves_the_watchdogs_alarm_to_it(
    tmp_path: Path, hook: HookServer
) -> None:
    bay = Bay(tmp_path)
    bay.clock.advance(600)
    bay.dog().check()  # no pager: the alarm stands, nobody paged
    bay.store.insert_alarm(
        severity="error", code="offline", message="inc-1 does not answer", actor="engine",
        device="inc-1",
    )  # fmt: skip
    watchdogs = bay.pager(None, hook)
    engines = Pager(watchdogs.settings, bay.store, bay.clock, watchdogs.context, watchdogs.channels)
    engines.tick(bay.clock.now())
    assert engines.settle(10)
    assert [d["alarm"]["code"] for d in docs(hook)] == ["offline"]
    watchdogs.tick(bay.clock.now())
    assert watchdogs.settle(10)
    assert [d["alarm"]["code"] for d in docs(hook)] == ["offline", "engine-silent"]


# ---- the command: --once for cron, exit codes, bad input ----------------------------------


def cli_bay(tmp_path: Path, hook: HookServer, ago_s: float) -> tuple[Bay, Path]:
    """A database whose engine beat last ``ago_s`` real seconds ago, and its workcell file."""
    bay = Bay(tmp_path, beat=RealClock().now() - timedelta(seconds=ago_s))
    wc = tmp_path / "workcell.yaml"
    wc.write_text(WORKCELL + f"paging:\n  webhook: {{url: '{hook.url}'}}\n", encoding="utf-8")
    return bay, wc


def test_once_exits_1_while_the_alarm_stands_and_0_when_all_is_well(
    tmp_path: Path, hook: HookServer, capsys: pytest.CaptureFixture[str]
) -> None:
    bay, wc = cli_bay(tmp_path, hook, 20 * 60)
    args = ("watchdog", "--once", "--workcell", wc, "--db", bay.db)
    code, out, err = run(capsys, *args)
    assert (code, err) == (1, "")
    assert out.startswith("watchdog: ALARM 1 raised: The engine has written nothing since ")
    assert "(20 min); run 1 't' depends on it" in out
    assert [d["alarm"]["code"] for d in docs(hook)] == ["engine-silent"]
    code, out, _ = run(capsys, *args)
    assert code == 1 and out.startswith("watchdog: ALARM 1 stands (active): still silent: ")
    assert len(hook.received) == 1

    bay.store.engine_beat(bay.session.id, RealClock().now())
    code, out, _ = run(capsys, *args)
    assert (code, out) == (0, "watchdog: ok: alarm cleared: the engine writes again\n")
    code, out, _ = run(capsys, *args, "--silent-after", "600")
    assert (code, out) == (0, "watchdog: ok: the engine writes its heartbeat\n")


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("missing", "labctl: error: "),
        ("invalid", "labctl: error: the workcell file cannot be used: "),
        ("no-db", "labctl: error: no run database at "),
        ("short", "labctl: error: --silent-after 5 is too short"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str, message: str
) -> None:
    wc = tmp_path / "workcell.yaml"
    wc.write_text(WORKCELL + "paging: {severity: loud}\nspare: 1\n", encoding="utf-8")
    db = tmp_path / "run.db"
    Store.open(db, VirtualClock(BEAT), durable=False).close()
    argv: list[object] = ["watchdog", "--once", "--workcell", wc, "--db", db]
    if what == "missing":
        argv[3] = tmp_path / "nowhere.yaml"
    if what != "invalid":
        wc.write_text(WORKCELL, encoding="utf-8")
    if what == "no-db":
        argv[5] = tmp_path / "none.db"
    if what == "short":
        argv += ["--silent-after", "5"]
    code, out, err = run(capsys, *argv)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith(message), err
    assert "Traceback" not in err
    if what == "invalid":
        assert "(and 2 more errors in the file)" in lines[0]


def test_watchdog_once_as_a_real_process_against_a_stale_database(
    tmp_path: Path, hook: HookServer
) -> None:
    bay, wc = cli_bay(tmp_path, hook, 3600)
    bay.store.close()
    proc = subprocess.run(
        [sys.executable, "-m", "labctl", "watchdog", "--once", "--workcell", str(wc),
         "--db", str(bay.db)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("watchdog: ALARM 1 raised: The engine has written nothing")
    assert "(60 min); run 1 't' depends on it" in proc.stdout
    assert proc.stderr == ""
    (doc,) = docs(hook)
    assert doc["subject"] == "[labctl bay-1] CRITICAL: the engine is silent: nothing is carried out"
    assert "Sent by the labctl watchdog on " in doc["text"]


def test_on_a_paced_practice_database_the_times_say_they_are_the_computers(
    tmp_path: Path,
) -> None:
    """The workcell's clock runs a day a minute there, heartbeats on this computer's: the
    alarm says which clock its time is on (04:31 beside a workcell time of another day)."""
    bay = Bay(tmp_path)
    bay.store.set_clock_epoch(Epoch(wall=BEAT, start=BEAT, pace=1440.0), actor="test")
    bay.clock.set(BEAT + timedelta(minutes=14))
    bay.dog().check()
    (alarm,) = bay.silent()
    assert alarm.message.startswith(
        "The engine has written nothing since 03:12 CET on this computer's clock (14 min)"
    )
