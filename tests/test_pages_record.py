"""Pages to the person on call in the batch record and the console's audit tab.

The page events are written as :class:`~labctl.engine.paging.Pager` records them (its
``_record``: entity 'page', id the alarm's, action 'page-sent' or 'page-failed', filed
under the alarm's run; data: channel, recipients, level, subject, attempt, the channel's
answer), so these tests do not wait on couriers' threads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PyQt6.QtCore import Qt

from labctl.gui.audit_view import AuditView
from labctl.gui.models.audit import EventRow, event_row
from labctl.reports.batch import batch_record
from labctl.reports.words import page_words
from labctl.store import Store
from labctl.store.models import Alarm
from tests.test_engine import World

PRINTED = datetime(2026, 12, 24, 15, 30, tzinfo=timezone.utc)
MAIL_TO = "alice@lab.org"
HOOK = "https://hooks.example.org/…"
WHY = "mail.lab.org:587: connection refused"
TO = {"smtp": MAIL_TO, "webhook": HOOK}


def page(w: World, a: Alarm, channel: str, attempt: int, detail: str, *, ok: bool = True) -> None:
    """Record one page of alarm ``a`` as the pager does."""
    how = "e-mail" if channel == "smtp" else "webhook"
    subject = f"[labctl bay-1] CRITICAL: {a.message}"
    data = {
        "alarm": a.id, "key": f"{a.run_id}|{a.device}|{a.code}", "channel": channel,
        "to": [TO[channel]], "level": "critical", "subject": subject, "repeat": 0,
        "attempt": attempt, "at": w.clock.now().isoformat(), "detail": detail,
    }  # fmt: skip
    if ok:
        reason = f"paged by {how} ({detail}): {subject}"
    else:
        reason = (
            f"paging by {how} to {TO[channel]} failed (try {attempt}): {detail}; next try in "
            "0.5 min while the alarm stands active"
        )
    w.store.record(
        "page-sent" if ok else "page-failed", entity="page", entity_id=a.id, run_id=a.run_id,
        actor="pager", reason=reason, data=data,
    )  # fmt: skip


def page_both(w: World, a: Alarm) -> None:
    """Alarm ``a`` paged by e-mail and by webhook, each at the first try."""
    page(w, a, "smtp", 1, "accepted by mail.lab.org:587 for alice@lab.org")
    page(w, a, "webhook", 1, "HTTP 200")


def alarm(w: World, code: str, message: str, *, device: str | None = None) -> Alarm:
    run_id = None if device else w.run_id  # a device's alarm is the workcell's, under no run
    return w.store.insert_alarm(
        severity="error", code=code, message=message, actor="engine", run_id=run_id,
        device=device,
    )  # fmt: skip


def pages_section(store: Store, run_id: int) -> str:
    page = batch_record(store, run_id, printed_at=PRINTED)
    parts = re.split(r"<h2>(.*?)</h2>", page)
    found = {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}
    assert "Pages" in found, "the batch record has no Pages section"
    return found["Pages"]


def rows(section: str) -> list[str]:
    return re.findall(r"<tr(?: class='\w+')?>.*?</tr>", section.split("<tbody>", 1)[-1])


@pytest.fixture
def paged(tmp_path: Path) -> Iterator[tuple[World, Alarm, Alarm]]:
    """A run with its own alarm (its first e-mail fails) and a device's alarm, both paged."""
    w = World(tmp_path)
    own = alarm(w, "out-too-long", "Plate P1 out of the incubator for 25 min")
    door = alarm(w, "door", "Door of inc-1 open for 3 min", device="inc-1")
    page(w, own, "smtp", 1, WHY, ok=False)
    page(w, own, "webhook", 1, "HTTP 200")
    page_both(w, door)
    w.clock.advance(30.0)
    page(w, own, "smtp", 2, "accepted by mail.lab.org:587 for alice@lab.org")
    yield w, own, door
    w.store.close()


# ---- the batch record ------------------------------------------------------------------------


def test_the_record_lists_each_page_sent_or_failed(paged: tuple[World, Alarm, Alarm]) -> None:
    w, own, door = paged
    section = pages_section(w.store, w.run_id)
    got = rows(section)
    # own: e-mail failed, webhook sent, e-mail sent on the 2nd try; door: e-mail, webhook.
    assert len(got) == 5
    failed = [r for r in got if "FAILED" in r]
    assert len(failed) == 1 and failed[0].startswith("<tr class='bad'>")
    (row,) = failed
    assert "UTC<br>(" in row and "CET)" in row  # UTC and the run's zone, as other times
    assert "<td>e-mail</td>" in row and f"<td>{MAIL_TO}</td>" in row
    assert f"Alarm #{own.id} (critical), out-too-long: Plate P1 out of the incubator" in row
    assert "<td>1</td>" in row and f"FAILED: {WHY}" in row
    retried = [r for r in got if "<td>2</td>" in r]
    assert len(retried) == 1 and f"sent (accepted by mail.lab.org:587 for {MAIL_TO})" in retried[0]
    hooks = [r for r in got if "<td>webhook</td>" in r]
    assert len(hooks) == 2 and all("sent (HTTP 200)" in r and HOOK in r for r in hooks)
    # The device's alarm is filed under no run; it concerns the run, and so do its pages.
    door_rows = [r for r in got if f"Alarm #{door.id} (critical), door on inc-1" in r]
    assert len(door_rows) == 2 and all("class='bad'" not in r for r in door_rows)


def test_pages_are_listed_in_the_order_they_were_recorded(
    paged: tuple[World, Alarm, Alarm],
) -> None:
    w, _own, _door = paged
    got = rows(pages_section(w.store, w.run_id))
    first = next(i for i, r in enumerate(got) if "FAILED" in r)
    again = next(i for i, r in enumerate(got) if "<td>2</td>" in r)
    assert 0 <= first < again  # the failed first e-mail, then its second try


def test_a_run_without_pages_says_so(tmp_path: Path) -> None:
    w = World(tmp_path)
    alarm(w, "late", "Task r1:d1-feed/P1 is late")  # raised, nobody paged
    section = pages_section(w.store, w.run_id)
    assert "No page was sent or tried." in section and "<table" not in section
    w.store.close()


def test_workcell_pages_after_the_run_ended_are_not_its(tmp_path: Path) -> None:
    """A device's alarm paged again after the run ended, and one raised then, are another
    time's: the record lists only the pages sent while the run was on the workcell."""
    w = World(tmp_path)
    door = alarm(w, "door", "Door of inc-1 open", device="inc-1")
    page_both(w, door)
    w.store.transition(
        "run", w.run_id, "aborted", expected_from=w.state, actor="tester", reason="test"
    )
    w.clock.advance(3600.0)
    page_both(w, door)  # paged again: it is still active
    later = alarm(w, "climate", "CO2 of inc-2 at 3.1 %", device="inc-2")
    page_both(w, later)
    assert len(w.store.events(entity="page", limit=None)) == 6
    got = rows(pages_section(w.store, w.run_id))
    assert len(got) == 2 and all(f"Alarm #{door.id} (critical), door" in r for r in got)
    assert not any(f"Alarm #{later.id} " in r for r in got)
    w.store.close()


def test_values_in_the_pages_section_are_escaped(tmp_path: Path) -> None:
    w = World(tmp_path)
    page_both(w, alarm(w, "out-too-long", "<b>plate</b> & co"))
    section = pages_section(w.store, w.run_id)
    assert "&lt;b&gt;plate&lt;/b&gt; &amp; co" in section and "<b>plate" not in section
    w.store.close()


# ---- words -----------------------------------------------------------------------------------


def test_a_page_reads_as_a_sentence() -> None:
    sent = {"channel": "smtp", "to": [MAIL_TO, "bob@lab.org"], "subject": "S", "attempt": 2}
    assert page_words("page-sent", sent) == f"Paged {MAIL_TO}, bob@lab.org by e-mail: S (attempt 2)"
    failed = {"channel": "webhook", "to": [HOOK], "attempt": 1, "detail": "HTTP 500"}
    assert page_words("page-failed", failed) == (
        f"Page to {HOOK} by webhook failed (attempt 1): HTTP 500"
    )
    assert page_words("page-failed", {"attempt": True}) == "Page to ? by ? failed: ?"
    # The all clear after an alarm was acknowledged or cleared (labctl.engine.all_clear).
    clear = {"channel": "smtp", "to": [MAIL_TO], "subject": "Cleared: S", "attempt": 1}
    assert page_words("page-cleared", clear) == (
        f"All clear sent to {MAIL_TO} by e-mail: Cleared: S (attempt 1)"
    )
    assert page_words("page-failed", {**failed, "all_clear": True}).startswith(
        f"All-clear page to {HOOK} by webhook failed"
    )


def test_the_record_lists_the_all_clear_after_a_page(paged: tuple[World, Alarm, Alarm]) -> None:
    w, own, _door = paged
    data = {
        "channel": "smtp", "to": [MAIL_TO], "level": "critical", "attempt": 1,
        "subject": "Acknowledged by sue: plate P1 out", "detail": "accepted", "all_clear": True,
    }  # fmt: skip
    w.store.record(
        "page-cleared", entity="page", entity_id=own.id, run_id=own.run_id, actor="pager",
        reason="all clear", data=data,
    )  # fmt: skip
    got = rows(pages_section(w.store, w.run_id))
    assert len(got) == 6
    assert "all clear sent (accepted)" in got[-1] and f"Alarm #{own.id}" in got[-1]


# ---- the console's audit tab -----------------------------------------------------------------


def test_the_audit_view_filters_to_pages_and_words_them(
    qtbot,  # noqa: ANN001 - pytest-qt's fixture
    paged: tuple[World, Alarm, Alarm],
) -> None:
    w, own, _door = paged
    store = w.store

    def call(fn, ok, failed) -> int:  # noqa: ANN001 - the worker bridge's shape, run at once
        ok(fn(store))
        return 0

    view = AuditView(call)
    qtbot.addWidget(view)
    view.show()
    view.set_run(w.run_id, "Europe/Stockholm", "test")
    at = view.entity.findData("page")
    assert at >= 0, "the entity filter does not offer pages"
    view.entity.setCurrentIndex(at)
    model = view.model
    qtbot.waitUntil(lambda: not model.loading and bool(model.rows), timeout=5_000)
    assert {r.entity for r in model.rows} == {"page"}
    assert len(model.rows) == 5  # the run's and the device's alarm's pages, sent and failed
    assert {r.action for r in model.rows} == {"page-sent", "page-failed"}
    reasons = [model.data(model.index(i, 7)) for i in range(model.rowCount())]
    subject = next(
        e.data["subject"] for e in store.events(entity="page", limit=None) if e.entity_id == own.id
    )
    assert f"Paged {MAIL_TO} by e-mail: {subject} (attempt 2)" in reasons
    assert f"Page to {MAIL_TO} by e-mail failed (attempt 1): {WHY}" in reasons
    assert sum(r.startswith(f"Paged {HOOK} by webhook: ") for r in reasons) == 2
    # The pager's own reason stays readable, in the cell's tooltip.
    failed = next(i for i, r in enumerate(reasons) if "failed" in r)
    tip = model.data(model.index(failed, 7), Qt.ItemDataRole.ToolTipRole)
    assert "Recorded: paging by e-mail to alice@lab.org failed" in tip


def test_other_events_keep_their_recorded_reason(paged: tuple[World, Alarm, Alarm]) -> None:
    w, _own, _door = paged
    ev = next(e for e in w.store.events(w.run_id, limit=None) if e.entity == "alarm")
    row: EventRow = event_row(ev)
    assert (row.reason, row.recorded) == (ev.reason, "")
