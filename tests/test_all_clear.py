"""The all clear: one short page on each channel that paged an alarm, once it is acknowledged
or cleared (labctl.engine.all_clear), to the local SMTP server and HTTP receiver of
tests/test_paging.py, timing on the virtual clock."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from labctl.clock import VirtualClock
from labctl.engine.all_clear import SETTLE_S, STALE_S
from labctl.engine.paging import Pager
from labctl.store import Store
from labctl.store.models import Alarm
from tests.test_paging import (
    HookServer,
    SmtpServer,
    make_pager,
    pages,
    settings,
)

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
SUBJECT = "[labctl bay-1] ALARM: inc-1 does not answer"


class Bay:
    """A store on a virtual clock and a pager on it (the engine's unless ``watchdog``)."""

    def __init__(
        self, tmp: Path, smtp: SmtpServer | None, hook: HookServer | None, **kw: Any
    ) -> None:
        self.tmp = tmp
        self.clock = VirtualClock(T0)
        self.store = Store.open(tmp / "run.db", self.clock, durable=False)
        self.settings = settings(smtp, hook, **kw)
        self.pager = self.new_pager()

    def new_pager(self) -> Pager:
        return make_pager(self.store, self.clock, self.settings, self.tmp / "run.db")

    def offline(self, device: str = "inc-1") -> Alarm:
        return self.store.insert_alarm(
            severity="error", code="offline", message=f"{device} does not answer",
            actor="engine", device=device,
        )  # fmt: skip

    def tick(self, advance_s: float = 0.0, pager: Pager | None = None) -> None:
        self.clock.advance(advance_s)
        p = pager or self.pager
        p.tick(self.clock.now())
        assert p.settle(10)


def hook_docs(hook: HookServer) -> list[dict[str, Any]]:
    return [json.loads(body) for _, _, body in hook.received]


def test_a_cleared_alarm_gets_one_all_clear_per_channel_once_it_stays_cleared(
    tmp_path: Path, smtp: SmtpServer, hook: HookServer
) -> None:
    bay = Bay(tmp_path, smtp, hook)
    a = bay.offline()
    bay.tick()
    assert len(smtp.received) == 1 and len(hook.received) == 1
    bay.tick(600)
    bay.store.clear_alarm(a.id, actor="engine", reason="condition cleared")
    bay.tick(SETTLE_S - 1)  # not called clear before it has stayed so
    assert len(smtp.received) == 1 and len(hook.received) == 1
    assert bay.pager.next_due(bay.clock.now()) == bay.store.get_alarm(a.id).cleared_at + timedelta(
        seconds=SETTLE_S
    )
    bay.tick(1)
    assert len(smtp.received) == 2 and len(hook.received) == 2
    mail = smtp.messages()[1]
    assert mail["Subject"] == f"Cleared: {SUBJECT}"
    body = mail.get_content()
    assert (
        "Alarm 1 (offline) its condition is gone (cleared by engine at Tue 01 Dec 2026 03:10"
        in body
    )
    assert "It was: inc-1 does not answer" in body and "after 1 page" in body
    doc = hook_docs(hook)[1]
    assert doc["kind"] == "all-clear" and hook_docs(hook)[0]["kind"] == "alarm"
    assert doc["subject"] == f"Cleared: {SUBJECT}"
    assert doc["all_clear"] == {"how": "cleared", "by": "engine", "at": "2026-12-01T02:10:00Z"}
    assert doc["alarm"]["state"] == "cleared"

    cleared = pages(bay.store, "page-cleared")
    assert sorted(e.data["channel"] for e in cleared) == ["smtp", "webhook"]
    sent = pages(bay.store, "page-sent")
    assert all(set(e.data) == set(sent[0].data) for e in cleared)  # the same data shape
    assert all(e.entity_id == a.id and e.actor == "pager" for e in cleared)
    assert cleared[0].data["subject"] == f"Cleared: {SUBJECT}"
    assert "all clear sent by" in cleared[0].reason
    for _ in range(3):  # only once
        bay.tick(3600)
    assert len(smtp.received) == 2 and len(hook.received) == 2
    assert bay.pager.next_due(bay.clock.now()) is None
    assert bay.store.verify_chain().ok


def test_an_acknowledged_alarm_is_told_at_once_and_not_again_when_it_clears(
    tmp_path: Path, hook: HookServer
) -> None:
    bay = Bay(tmp_path, None, hook)
    a = bay.offline()
    bay.tick()
    bay.store.acknowledge_alarm(a.id, actor="sue", reason="on my way")
    bay.tick(1)
    doc = hook_docs(hook)[1]
    assert doc["subject"] == f"Acknowledged by sue: {SUBJECT}"
    assert doc["all_clear"]["how"] == "acknowledged" and doc["all_clear"]["by"] == "sue"
    assert "someone is on it" in doc["text"]
    bay.store.clear_alarm(a.id, actor="engine", reason="condition cleared")
    bay.tick(SETTLE_S + 60)
    assert len(hook.received) == 2
    assert len(pages(bay.store, "page-cleared")) == 1


def test_a_restarted_engine_sends_the_all_clear_it_owed_and_never_one_twice(
    tmp_path: Path, hook: HookServer
) -> None:
    bay = Bay(tmp_path, None, hook)
    first, second = bay.offline("inc-1"), bay.offline("inc-2")
    bay.tick()
    assert len(hook.received) == 2
    bay.store.acknowledge_alarm(first.id, actor="sue")
    bay.tick(1)  # the first's all clear goes out
    assert len(hook.received) == 3
    bay.pager.close()
    bay.store.acknowledge_alarm(second.id, actor="olly")  # while the engine is down
    again = bay.new_pager()  # a new engine reads what is owed from the page events
    bay.tick(60, again)
    bay.tick(60, again)
    assert [d["subject"].split(":")[0] for d in hook_docs(hook)[3:]] == ["Acknowledged by olly"]
    assert sorted(e.entity_id for e in pages(bay.store, "page-cleared")) == [first.id, second.id]


def test_a_condition_that_comes_back_before_it_settles_is_not_called_clear(
    tmp_path: Path, hook: HookServer
) -> None:
    bay = Bay(tmp_path, None, hook)
    a = bay.offline()
    bay.tick()
    bay.store.clear_alarm(a.id, actor="engine", reason="condition cleared")
    bay.tick(120)
    bay.offline()  # back at the next device check: a new alarm of the same condition
    bay.tick(SETTLE_S)
    assert len(hook.received) == 1 and not pages(bay.store, "page-cleared")
    bay.tick(1800)  # the new alarm is paged by the usual rules
    assert [d["kind"] for d in hook_docs(hook)] == ["alarm", "alarm"]


def test_only_channels_that_paged_it_and_a_failed_all_clear_is_tried_again(
    tmp_path: Path, smtp: SmtpServer, hook: HookServer
) -> None:
    bay = Bay(tmp_path, smtp, hook)
    a = bay.offline()
    smtp.mode = "fail"  # the mail never goes out: only the webhook paged it
    bay.tick()
    assert len(pages(bay.store, "page-sent")) == 1
    bay.store.acknowledge_alarm(a.id, actor="sue")
    hook.status = 500
    bay.tick(1)
    (failed,) = [e for e in pages(bay.store, "page-failed") if e.data.get("all_clear")]
    assert failed.data["channel"] == "webhook" and failed.data["attempt"] == 1
    assert "all clear by webhook" in failed.reason and "next try in 0.5 min" in failed.reason
    hook.status = 200
    bay.tick(29)
    assert len(hook.received) == 2  # the page and the failed all clear
    bay.tick(1)
    assert len(hook.received) == 3
    (done,) = pages(bay.store, "page-cleared")
    assert done.data["channel"] == "webhook" and done.data["attempt"] == 2
    smtp.mode = "ok"
    bay.tick(3600)
    assert not smtp.received  # the mail never paged it: no all clear by mail


def test_no_all_clear_for_an_alarm_never_paged_nor_a_stale_one_nor_when_quiet(
    tmp_path: Path, hook: HookServer
) -> None:
    bay = Bay(tmp_path, None, hook, severity="critical")
    low = bay.offline()  # an alarm, below critical: not paged
    bay.tick()
    bay.store.acknowledge_alarm(low.id, actor="sue")
    bay.tick(60)
    assert not hook.received

    def climate() -> Alarm:
        return bay.store.insert_alarm(
            severity="error", code="climate", message="inc-1: CO2 2.1% (set 5%)",
            actor="engine", device="inc-1",
        )  # fmt: skip

    stale = climate()
    bay.tick()
    assert len(hook.received) == 1
    bay.pager.close()
    bay.store.acknowledge_alarm(stale.id, actor="sue")
    bay.clock.advance(STALE_S + 60)  # the engine was down half a day: old news
    bay.tick(0, bay.new_pager())
    assert len(hook.received) == 1 and not pages(bay.store, "page-cleared")

    hushed = climate()
    bay.tick(0, bay.new_pager())
    assert len(hook.received) == 2
    bay.store.acknowledge_alarm(hushed.id, actor="sue")
    quiet = make_pager(bay.store, bay.clock, settings(None, hook, quiet=True), tmp_path)
    bay.tick(60, quiet)  # paging set quiet for maintenance: no all clear either
    assert len(hook.received) == 2 and not pages(bay.store, "page-cleared")
