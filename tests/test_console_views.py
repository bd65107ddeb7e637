"""The console's views (pytest-qt, offscreen) against a store filled by a simulated Kriks run.

Each control is driven through its dialog as an operator would; the test then checks the
commands table and lets the engine apply the command (Engine.step), and checks the new
state. Store reads and writes of the console happen on its worker thread, so the tests wait
for them with qtbot.waitUntil (no timing assertions).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from console_fixtures import (
    KRIKS,
    TZ,
    WALL_START,
    Sim,
    World,
    accounts_world,
    copy_world,
    fake_daemon,
    fast_dir,
    open_sim,
    password,
    release_protocol,
    shown_window,
    sign_in_window,
    task_state,
)
from PyQt6.QtCore import QModelIndex, Qt
from PyQt6.QtWidgets import QLabel, QLineEdit

from labctl.clock import VirtualClock
from labctl.gui import models as m
from labctl.gui.dialogs import PromptDialog
from labctl.gui.main_window import MainWindow

PASSWORD = password("alice")  # the supervisor who registered the world's run


@pytest.fixture(scope="module")
def world() -> World:
    return accounts_world()


@pytest.fixture
def sim(world: World) -> Sim:
    folder = fast_dir("labctl-console-test-")
    s = open_sim(copy_world(world, folder / "copy"))
    yield s
    s.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def wall() -> VirtualClock:
    """The console's wall clock (the engine's heartbeat is read against it)."""
    return VirtualClock(WALL_START)


@pytest.fixture
def win(qtbot, sim: Sim, wall: VirtualClock) -> MainWindow:  # noqa: ANN001 - pytest-qt's fixture
    w = shown_window(qtbot, sim, wall)
    sign_in_window(qtbot, w, "alice", PASSWORD)
    qtbot.waitUntil(lambda: w.snapshot is not None, timeout=10_000)
    yield w
    w.close()
    # No dangling thread: the worker has stopped and closed its Store.
    assert w.bridge._thread.isFinished()
    assert w.bridge._worker.store is None


def commands(sim: Sim) -> list[m.Command]:
    return [sim.store.get_command(c.id) for c in sim.store.pending_commands()]


def wait_for_command(qtbot, sim: Sim, verb: str) -> m.Command:  # noqa: ANN001
    qtbot.waitUntil(
        lambda: any(c.verb == verb for c in sim.store.pending_commands()), timeout=10_000
    )
    (cmd,) = [c for c in sim.store.pending_commands() if c.verb == verb]
    return cmd


def test_runs_view(win: MainWindow, sim: Sim) -> None:
    model = win.runs_view.model
    assert model.rowCount() == 1
    row = [model.data(model.index(0, c)) for c in range(model.columnCount())]
    assert row[:3] == ["Kriks DA batch 2x6w  ·  #1", "day 12 of 25", "running"]
    assert row[3] == "Feed: full change, 2 mL/well · P1"
    (active,) = sim.store.tasks(sim.world.run_id, state="active")
    assert row[4] == m.hhmm(active.actual_start, TZ)  # with its zone: "08:57 CET"
    assert row[4].endswith(" CET")
    assert row[5] == "▶ under way"
    assert row[6] == "⚠ 1  ● 1"  # an alarm and a prompt need the operator
    assert model.data(model.index(0, 2), Qt.ItemDataRole.UserRole + 1) == "running"
    assert "kriks2011-da v1.0.0" in model.data(model.index(0, 0), Qt.ItemDataRole.ToolTipRole)
    assert win.run_id == sim.world.run_id
    assert win.strip.name.text() == "Kriks DA batch 2x6w"
    assert win.strip.badge.text() == "▶ running"  # a symbol and a word, not colour alone


def test_alarm_banner_until_acknowledged(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    assert win.banner.isVisible()
    # In words, with its date (today: the time) and zone; the code is the tooltip's.
    text = win.banner.text.text()
    assert text.startswith("ALARM · inc-sim: CO2 4.1 % below its 5.0 % setpoint")
    assert text.endswith("· raised 09:10 CET") and "co2-low" in win.banner.text.toolTip()
    win.banner.ack.click()
    dlg = win.last_dialog
    qtbot.waitUntil(dlg.isVisible)
    dlg.note.setText("gas bottle changed")
    dlg.ok_button.click()
    qtbot.waitUntil(lambda: sim.store.active_alarms()[0].state == "acknowledged", timeout=10_000)
    a = sim.store.active_alarms()[0]
    assert (a.acknowledged_by, a.state) == ("alice", "acknowledged")
    qtbot.waitUntil(lambda: not win.banner.isVisible(), timeout=10_000)
    win.show_tab(3)  # the alarm stays listed on its device until it is cleared
    card = next(c for c in win.devices_view.cards if c.row.name == "inc-sim")
    assert card.row.alarms[0].state == "acknowledged"


def test_timeline(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    win.show_tab(1)
    canvas = win.timeline_view.canvas
    assert [lane.title for lane in canvas.lanes] == ["ot2-sim", "inc-sim", "operator", "P1", "P2"]
    start, end = win.timeline_view.shown_span()
    assert (end - start).total_seconds() == 8 * 3600 and start < sim.clock.now() < end
    assert canvas.start <= sim.clock.now() <= canvas.end
    img = canvas.grab().toImage()
    assert not img.isNull() and img.width() > 500
    failed = next(b for lane in canvas.lanes for b in lane.bars if b.failed)
    tip = canvas.tooltip_for(failed)
    assert "failed" in tip and "ot2-sim" in tip and "window" in tip
    # The plate lanes show each task as one bar when its steps are too narrow to read.
    p1 = next(lane for lane in canvas.lanes if lane.title == "P1")
    collapsed = canvas.collapsed(p1.bars)
    assert len(collapsed) < len(p1.bars)
    assert any(b.failed and b.label == "Feed: full change, 2 mL/well" for b in collapsed)
    win.timeline_view.span.setCurrentIndex(3)  # 3 days
    assert (canvas.end - canvas.start).total_seconds() == 72 * 3600


def test_today_view_prep_and_save(qtbot, win: MainWindow, tmp_path: Path) -> None:  # noqa: ANN001
    win.show_tab(2)
    view = win.today_view
    qtbot.waitUntil(lambda: view.prep_page != "", timeout=20_000)
    assert view.day.value() == 12
    assert "<h2>Day 12: Sun 2026-12-13 09:00 CET</h2>" in view.prep_page
    assert view.model.rowCount() == len(win.snapshot.today) > 0
    assert view.table.isColumnHidden(1)  # one run: no run column
    out = view.save_html(str(tmp_path / "today.html"))
    page = out.read_text(encoding="utf-8")
    assert "Manual tasks Sun 13 Dec 2026" in page and "Day 12: Sun 2026-12-13 09:00" in page
    view.day.setValue(11)
    qtbot.waitUntil(lambda: "<h2>Day 11" in view.prep_page, timeout=20_000)


def test_print_today(qtbot, win: MainWindow, tmp_path: Path) -> None:  # noqa: ANN001
    from PyQt6.QtPrintSupport import QPrinter

    win.show_tab(2)
    qtbot.waitUntil(lambda: win.today_view.prep_page != "", timeout=20_000)
    pdf = tmp_path / "today.pdf"

    def printer() -> QPrinter:
        p = QPrinter(QPrinter.PrinterMode.ScreenResolution)
        p.setOutputFormat(QPrinter.OutputFormat.PdfFormat)
        p.setOutputFileName(str(pdf))
        return p

    win.today_view.print_(printer)
    assert pdf.read_bytes().startswith(b"%PDF")


def test_devices_view(win: MainWindow) -> None:
    assert win.devices_view.cards == []  # a hidden tab is not built
    win.show_tab(3)
    cards = {c.row.name: c for c in win.devices_view.cards}
    assert set(cards) == {"inc-sim", "ot2-sim", "operator"}
    assert cards["inc-sim"].badge.text() == "✕ alarm"
    assert cards["ot2-sim"].badge.text() == "✕ needs decision"
    assert cards["operator"].badge.text() == "○ idle"
    assert cards["inc-sim"].findChild(type(cards["inc-sim"].badge), None) is not None


def test_protocol_view(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    win.show_tab(4)
    qtbot.waitUntil(lambda: win.protocol_info is not None, timeout=30_000)
    view = win.protocol_view
    assert view.model.rowCount() == len(win.protocol_info.rows)
    assert view.model.today == 12
    assert view.pixmap is not None and not view.pixmap.isNull()
    assert view.source.toPlainText() == sim.store.get_run(sim.world.run_id).protocol_text
    assert "kriks2011-da v1.0.0" in view.meta.text() and "chir = 3 µM" in view.meta.text()


def test_audit_pages_and_filters(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    win.show_tab(5)
    audit = win.audit_view
    audit.newest.setChecked(False)
    model = audit.model
    qtbot.waitUntil(lambda: len(model.rows) == model.PAGE, timeout=10_000)
    total = len(sim.store.events(sim.world.run_id, limit=None, with_workcell=True))
    assert model.canFetchMore(QModelIndex())
    while model.canFetchMore(QModelIndex()) or model.loading:
        if not model.loading:
            model.fetchMore(QModelIndex())
        qtbot.waitUntil(lambda: not model.loading, timeout=10_000)
    assert [r.seq for r in model.rows] == [
        e.seq for e in sim.store.events(sim.world.run_id, limit=None, with_workcell=True)
    ]
    assert len(model.rows) == total
    audit.entity.setCurrentIndex(audit.entity.findData("prompt"))
    qtbot.waitUntil(lambda: bool(model.rows) and not model.loading, timeout=10_000)
    assert {r.entity for r in model.rows} == {"prompt"}
    # Newest first, and new events arrive on top.
    audit.entity.setCurrentIndex(0)
    audit.newest.setChecked(True)
    qtbot.waitUntil(lambda: bool(model.rows) and not model.loading, timeout=10_000)
    top = model.rows[0].seq
    assert top == sim.store.head()[0]
    sim.store.record(
        "note", entity="run", entity_id=sim.world.run_id, actor="bob", reason="checked"
    )
    qtbot.waitUntil(lambda: model.rows[0].seq > top, timeout=10_000)
    assert (model.rows[0].actor, model.rows[0].action) == ("bob", "note")


def test_verify_chain_and_export(qtbot, win: MainWindow, tmp_path: Path) -> None:  # noqa: ANN001
    win.verify_chain()
    qtbot.waitUntil(lambda: "✓" in win.audit_view.status.text(), timeout=10_000)
    out = tmp_path / "batch.html"
    win.export_batch_record(str(out))
    qtbot.waitUntil(
        lambda: any("Batch record of run 1 saved" in x for x in win.messages), timeout=10_000
    )
    assert "<h1>Batch record: Kriks DA batch 2x6w</h1>" in out.read_text(encoding="utf-8")


# --- controls ---------------------------------------------------------------------------------


def test_pause_writes_the_command_and_the_engine_applies_it(
    qtbot, win: MainWindow, sim: Sim
) -> None:  # noqa: ANN001
    dlg = win.control("pause")
    assert dlg is not None and dlg.plate.currentData() is None  # the whole run
    dlg.ok_button.click()
    assert "give a reason" in dlg.error.text()  # nothing sent without a reason
    assert sim.store.pending_commands() == []
    dlg.reason.setText("CO2 alarm: wait for the gas")
    dlg.ok_button.click()
    cmd = wait_for_command(qtbot, sim, "pause")
    assert (cmd.run_id, cmd.args, cmd.actor, cmd.reason) == (
        sim.world.run_id,
        {},
        "alice",
        "CO2 alarm: wait for the gas",
    )
    # No engine runs on the test's database: the dialog stays and says so.
    qtbot.waitUntil(lambda: dlg.has_sent, timeout=10_000)
    assert dlg.isVisible() and not dlg.ok_button.isVisible()
    assert f"command {cmd.id} · pause run 1: {m.QUEUED_TEXT}" in dlg.verdict_text()
    sim.engine.step()
    assert sim.store.get_run(sim.world.run_id).state == "paused"
    qtbot.waitUntil(lambda: win.strip.badge.text() == "‖ paused", timeout=10_000)
    qtbot.waitUntil(lambda: "applied (run now paused)" in dlg.verdict_text(), timeout=10_000)
    assert "✓ applied (run now paused)" in dlg.verdicts.lines[cmd.id].text()
    assert f"command {cmd.id} · pause run 1: applied" in win.verdict_panel.text()
    dlg.cancel_button.click()  # now "Close"
    assert not dlg.isVisible()
    assert win.verdict_panel.isVisible()  # until dismissed
    win.verdict_panel.dismiss.click()
    assert not win.verdict_panel.isVisible()


def test_pause_one_plate_with_the_shortcut(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    qtbot.keyClick(win, Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(
        lambda: getattr(win, "last_dialog", None) is not None and win.last_dialog.isVisible()
    )
    dlg = win.last_dialog
    assert dlg.verb == "pause"
    dlg.plate.setCurrentIndex(dlg.plate.findData("P2"))
    dlg.reason.setText("lid cracked?")
    dlg.ok_button.click()
    cmd = wait_for_command(qtbot, sim, "pause")
    assert cmd.args == {"plate": "P2"}
    sim.engine.step()
    assert {p.label: p.state for p in sim.store.plates(sim.world.run_id)}["P2"] == "paused"


def signature(qtbot, win: MainWindow):  # noqa: ANN001, ANN201
    """The signature dialog the console opened last, once visible."""
    qtbot.waitUntil(
        lambda: win.commands.last_signature is not None and win.commands.last_signature.isVisible(),
        timeout=10_000,
    )
    return win.commands.last_signature


def sign(qtbot, win: MainWindow, pw: str = PASSWORD):  # noqa: ANN001, ANN201
    sig = signature(qtbot, win)
    sig.password.setText(pw)
    sig.sign_button.click()
    return sig


def test_abort_is_signed(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    dlg = win.control("abort")
    assert dlg.irreversible and dlg.sign_note.isVisible()
    dlg.reason.setText("mycoplasma positive")
    dlg.ok_button.click()
    sig = sign(qtbot, win, "guess")
    qtbot.waitUntil(lambda: "wrong user name or password" in sig.error.text(), timeout=10_000)
    assert sig.error.text().startswith("✕ not signed")
    assert sim.store.pending_commands() == [] and sim.store.signatures() == []
    assert sig.isVisible() and dlg.isVisible()
    sig.password.setText(PASSWORD)
    sig.sign_button.click()
    cmd = wait_for_command(qtbot, sim, "abort")
    assert (cmd.reason, cmd.actor) == ("mycoplasma positive", "alice")
    (s,) = sim.store.signatures()
    assert cmd.args == {"signature": s.id} and s.meaning.value == "performed"
    sim.engine.step()
    assert sim.store.get_run(sim.world.run_id).state == "aborted"


def test_skip_a_task(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    qtbot.keyClick(win, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(
        lambda: getattr(win, "last_dialog", None) is not None and win.last_dialog.isVisible(),
        timeout=10_000,
    )
    dlg = win.last_dialog
    assert dlg.verb == "skip"
    dlg.task.setCurrentIndex(dlg.task.findData("d13-feed-0900"))
    assert [dlg.plate.itemData(i) for i in range(dlg.plate.count())] == [None, "P1", "P2"]
    dlg.plate.setCurrentIndex(2)
    dlg.reason.setText("no NB_B27 left")
    dlg.ok_button.click()
    sign(qtbot, win)
    cmd = wait_for_command(qtbot, sim, "skip")
    (s,) = sim.store.signatures()
    assert cmd.args == {"task": "d13-feed-0900", "plate": "P2", "signature": s.id}
    sim.engine.step()
    assert task_state(sim.store, sim.world.run_id, "d13-feed-0900", "P2") == "skipped"
    assert task_state(sim.store, sim.world.run_id, "d13-feed-0900", "P1") == "pending"


# --- prompts ----------------------------------------------------------------------------------


def test_prompt_dialog_cannot_be_dismissed_by_accident(qtbot, win: MainWindow) -> None:  # noqa: ANN001
    dlg = win.open_prompt(win.snapshot.prompts[0].id)
    qtbot.waitUntil(dlg.isVisible)
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)
    assert dlg.isVisible()
    dlg.close()
    assert dlg.isVisible()
    dlg.reject()
    assert dlg.isVisible()
    assert "default 'hold' applies in <b>15:00</b>" in dlg.countdown.text()
    dlg.later_button.click()
    assert not dlg.isVisible()


def test_enter_answers_the_focused_prompt(qtbot, win: MainWindow) -> None:  # noqa: ANN001
    lst = win.prompts.list
    assert lst.count() == 1 and win.prompts.heading.text() == "1 prompt waiting"
    lst.setFocus()
    lst.setCurrentRow(0)
    qtbot.keyClick(lst, Qt.Key.Key_Return)
    dlg = win.prompt_dialogs[win.snapshot.prompts[0].id]
    assert dlg.isVisible() and dlg.prompt.kind == "recovery"
    dlg.later_button.click()


def test_recovery_retry_in_the_console_unblocks_the_run(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    p = win.snapshot.prompts[0]
    dlg = win.open_prompt(p.id)
    dlg.choice_buttons["retry"].click()
    assert dlg.confirm_box.isVisible() and dlg.confirm_button.text() == "Confirm and send"
    assert sim.store.pending_commands() == []  # nothing before the confirmation
    dlg.reason.setText("tips reseated")
    dlg.confirm_button.click()
    cmd = wait_for_command(qtbot, sim, "answer")
    assert cmd.args == {"prompt": p.id, "answer": {"choice": "retry"}}
    assert cmd.reason == "tips reseated"
    qtbot.waitUntil(lambda: dlg.has_sent, timeout=10_000)
    sim.engine.step()
    assert sim.store.get_prompt(p.id).state == "answered"
    assert sim.store.get_job(p.job_id).state == "running"
    qtbot.waitUntil(lambda: win.prompts.list.count() == 0, timeout=10_000)
    # The prompt is answered: its dialog shows the verdict, not "answered elsewhere".
    qtbot.waitUntil(lambda: "applied ('retry' carried out)" in dlg.verdict_text(), timeout=10_000)
    assert dlg.isVisible() and not dlg.withdrawn and not dlg.error.isVisible()
    dlg.close_button.click()
    assert not dlg.isVisible()


def test_skip_choice_needs_reason_and_signature(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    p = win.snapshot.prompts[0]
    dlg = win.open_prompt(p.id)
    dlg.choice_buttons["skip"].click()
    assert dlg.confirm_button.text() == "Sign…"
    dlg.confirm_button.click()
    assert "give a reason" in dlg.error.text()
    dlg.reason.setText("plate P1 lost: leave the feed out")
    dlg.confirm_button.click()
    sig = signature(qtbot, win)
    assert sig.chosen_meaning().value == "approved"  # accepting a deviation
    sign(qtbot, win)
    cmd = wait_for_command(qtbot, sim, "answer")
    (s,) = sim.store.signatures()
    assert cmd.args["answer"] == {"choice": "skip"} and cmd.args["signature"] == s.id
    assert s.action == "accept-deviation"
    sim.engine.step()
    assert sim.store.get_job(p.job_id).state == "skipped"


def test_task_prompt_in_the_console_unblocks_the_run(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    # Retry the failed run (as the operator would), then let the LH run finish: the
    # operator's next step (take the plate off the deck) opens as a prompt.
    p = win.snapshot.prompts[0]
    sim.store.insert_command(
        "answer",
        actor="alice",
        run_id=p.run_id,
        args={"prompt": p.id, "answer": {"choice": "retry"}},
    )
    sim.engine.run(
        until=lambda: any(x.kind == "task" for x in sim.store.open_prompts()),
        max_idle_s=900,
        max_steps=2000,
    )
    qtbot.waitUntil(lambda: any(x.kind == "task" for x in win.snapshot.prompts), timeout=10_000)
    tp = next(x for x in win.snapshot.prompts if x.kind == "task")
    dlg = win.open_prompt(tp.id)
    assert dlg.windowTitle() == f"Prompt {tp.id}: Take the plate off the deck"
    assert not dlg.countdown.isVisible()  # no default, no countdown
    dlg.choice_buttons["done"].click()
    dlg.confirm_button.click()
    cmd = wait_for_command(qtbot, sim, "answer")
    assert cmd.args == {"prompt": tp.id, "answer": {"done": True}}
    sim.engine.step()  # applies the answer
    sim.engine.step()  # polls the operator: the step is done
    assert sim.store.get_job(tp.job_id).state == "done"


def test_qc_prompt_checks_values_against_limits(qtbot, sim: Sim) -> None:  # noqa: ANN001
    prompt = m.PromptView(
        id=9, run_id=1, run_name="Kriks DA batch 2x6w", kind="task",
        heading="FOXA2/LMX1A immunostaining", text="Plate P1: FOXA2/LMX1A immunostaining",
        instructions="Record the percentage of FOXA2+/LMX1A+ cells.", plate="P1", step="event",
        choices=(), gates=(m.QcGate("FOXA2_LMX1A_pct", "%", 60.0, None, "hold"),),
        reagents=(), default_choice=None, deadline=None,
        created_at=datetime.fromisoformat("2026-12-12T12:00:00+00:00"), job_id=3, timezone=TZ,
    )  # fmt: skip
    dlg = PromptDialog(prompt, sim.clock)
    qtbot.addWidget(dlg)
    sent: list[list] = []
    dlg.ready.connect(sent.append)
    dlg.show()
    edit: QLineEdit = dlg.qc_edits["FOXA2_LMX1A_pct"]
    # No answer without the value: "Done" waits for it, and the hint names it with its limits.
    assert not dlg.choice_buttons["done"].isEnabled()
    assert dlg.qc_hint.isVisible()
    assert "<b>FOXA2_LMX1A_pct</b> (at least 60 %)" in dlg.qc_hint.text()
    dlg.choice_buttons["done"].click()
    assert not dlg.confirm_box.isVisible() and sent == []
    edit.setText("many")
    assert not dlg.choice_buttons["done"].isEnabled()
    assert dlg.qc_status["FOXA2_LMX1A_pct"].text() == "✕ not a number"
    edit.setText("55")
    assert dlg.choice_buttons["done"].isEnabled() and not dlg.qc_hint.isVisible()
    assert dlg.qc_status["FOXA2_LMX1A_pct"].text() == "✕ outside: hold"
    dlg.choice_buttons["done"].click()
    assert (
        "FOXA2_LMX1A_pct 55 is outside at least 60 %: the run will hold" in dlg.confirm_text.text()
    )
    dlg._back()
    edit.setText("72,5")
    assert dlg.qc_status["FOXA2_LMX1A_pct"].text() == "✓ within limits"
    dlg.choice_buttons["done"].click()
    dlg.confirm_button.click()
    ((req,),) = sent
    assert (req.verb, req.args) == (
        "answer",
        {"prompt": 9, "answer": {"done": True, "qc": {"FOXA2_LMX1A_pct": 72.5}}},
    )
    assert not req.signed
    dlg.timer.stop()


# --- new run and training -------------------------------------------------------------------


def test_new_run_from_a_file(qtbot, win: MainWindow, sim: Sim, tmp_path: Path) -> None:  # noqa: ANN001
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        KRIKS.read_text(encoding="utf-8").replace("conc: 100 nM", "conc: 100 nm", 1),
        encoding="utf-8",
    )
    release_protocol(sim.store, KRIKS)  # a production database runs released texts only
    dlg = win.new_run()
    dlg.path.setText(str(broken))
    dlg.validate()
    qtbot.waitUntil(lambda: dlg.check is not None, timeout=10_000)
    assert not dlg.register_button.isEnabled()
    # One error (warnings the validator adds may come with it), marked at its line.
    texts = [dlg.problems.item(i).text() for i in range(dlg.problems.count())]
    (error,) = [t for t in texts if t.startswith("✕")]
    assert error.startswith("✕ line 91:")
    assert dlg.source.marks[91] == "error"
    assert {k for k, v in dlg.source.marks.items() if v == "error"} == {91}
    assert dlg.source.textCursor().blockNumber() == 90  # the view jumped to the line
    dlg.check = None
    dlg.path.setText(str(KRIKS))
    dlg.validate()
    qtbot.waitUntil(lambda: dlg.check is not None and dlg.check.ok, timeout=10_000)
    assert dlg.register_button.isEnabled()
    dlg.name.setText("Kriks DA batch 26-12-B")
    dlg.plates.setValue(1)
    dlg.register()
    qtbot.waitUntil(lambda: len(sim.store.list_runs()) == 2, timeout=20_000)
    new = sim.store.list_runs()[0]
    assert (new.name, new.state, new.plates) == ("Kriks DA batch 26-12-B", "planned", 1)
    (start,) = sim.store.pending_commands(new.id)
    assert (start.verb, start.actor) == ("start", "alice")
    qtbot.waitUntil(
        lambda: (
            win.run_id == new.id
            and win.snapshot is not None
            and win.snapshot.run(new.id) is not None
        ),
        timeout=10_000,
    )
    # Its start command is followed like any other: queued (no engine), then applied.
    line = f"command {start.id} · start run {new.id}: "
    qtbot.waitUntil(lambda: line + m.QUEUED_TEXT in win.verdict_panel.text(), timeout=10_000)
    sim.engine.step()
    qtbot.waitUntil(lambda: line + "applied" in win.verdict_panel.text(), timeout=10_000)


def test_training_window_watches_the_training_database(
    qtbot, win: MainWindow, tmp_path: Path
) -> None:  # noqa: ANN001
    from labctl.gui.training import TrainingConfig, TrainingLauncher

    started: list[list[str]] = []

    class Proc:
        def __init__(self, argv: list[str], **kw: object) -> None:
            started.append(argv)

        def poll(self) -> int:
            return 0

        def terminate(self) -> None:
            pass

    win.launcher = TrainingLauncher(win.clock, python="python3", popen=Proc, folder=tmp_path)
    child = win.start_training(TrainingConfig(KRIKS, plates=2))
    try:
        (argv,) = started
        assert argv[:4] == ["python3", "-m", "labctl.gui.training_run", str(KRIKS)]
        assert argv[argv.index("--db") + 1] == str(child.db_path)
        assert child.windowTitle().startswith("TRAINING")
        qtbot.waitUntil(lambda: child.snapshot is not None, timeout=10_000)
        assert child.snapshot.runs == ()
        assert child.runs_view.count.text().startswith("no runs in this database yet")
        assert child.findChild(QLabel, "trainingStrip").text().strip().startswith("TRAINING MODE")
        # The training simulation keeps no engine session: its process is the engine.
        assert child.engine_strip.headline.text() == "✕ TRAINING SIMULATION ENDED"
    finally:
        child.close()


# --- the engine, and what became of each command -------------------------------------------

RESTORED = (
    "the run database ends at event 40, but the engine had acted after event 52: it was "
    "restored from an older copy or lost its latest transactions, so devices may already have "
    "done what it says is still to do; check the devices, then: labctl confirm-store --reason ..."
)


def test_engine_strip_says_whether_an_engine_runs(
    qtbot, win: MainWindow, sim: Sim, wall: VirtualClock
) -> None:  # noqa: ANN001
    strip = win.engine_strip
    # No engine ever ran on the test's database: loud, in words as well as colour.
    assert strip.isVisible() and strip.loud and strip.level == "down"
    assert strip.headline.text() == (
        "✕ ENGINE NOT RUNNING (none has ever run on this database): runs are not being carried out"
    )
    assert "no engine has run on this database yet" in strip.detail.text()
    assert "labctl engine" in strip.advice.text() and strip.advice.isVisible()
    assert not strip.confirm_button.isVisible()
    daemon = fake_daemon(sim.world.db, sim.store, wall.now())
    try:
        qtbot.waitUntil(lambda: strip.level == "running", timeout=10_000)
        assert not strip.loud and not strip.advice.isVisible()
        assert strip.text() == (
            "▶ ENGINE RUNNING · engine 4242 on bay-pc running, seen 0 s ago · last heartbeat "
            "09:00:00 CET (0 s ago)"
        )
        wall.advance(4)
        daemon.beat(wall.now())
        wall.advance(3)
        qtbot.waitUntil(lambda: "seen 3 s ago" in strip.detail.text(), timeout=10_000)
        assert "last heartbeat 09:00:04 CET" in strip.detail.text()
        # With an engine running, a command waits for its verdict rather than queueing.
        dlg = win.control("pause")
        dlg.reason.setText("plates to the microscope")
        dlg.ok_button.click()
        qtbot.waitUntil(lambda: dlg.has_sent, timeout=10_000)
        assert (
            "◷ sent: waiting for the engine's verdict"
            in dlg.verdicts.lines[next(iter(dlg.verdicts.verdicts))].text()
        )
        # The heartbeat stops: three beats later the strip turns loud, on every tab.
        wall.advance(30)
        qtbot.waitUntil(lambda: strip.level == "stale", timeout=10_000)
        assert strip.loud and "NOT RESPONDING since 09:00 CET" in strip.headline.text()
        qtbot.waitUntil(lambda: "has not beaten for 33 s: stuck?" in strip.detail.text())
        for tab in range(6):
            win.show_tab(tab)
            assert strip.isVisible()
        daemon.stop(wall.now(), "storage error, nothing more dispatched: disk full")
        qtbot.waitUntil(lambda: strip.level == "down", timeout=10_000)
        assert strip.headline.text().startswith("✕ ENGINE NOT RUNNING since 09:00 CET")
        assert strip.detail.text() == (
            "engine NOT running since 2026-12-13 08:00:37 UTC: storage error, nothing more "
            "dispatched: disk full"
        )
        # The command sent meanwhile is queued now, and its dialog says so.
        qtbot.waitUntil(lambda: m.QUEUED_TEXT in dlg.verdict_text(), timeout=10_000)
    finally:
        daemon.release()


def test_a_rejected_command_shows_the_engines_reason(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    dlg = win.control("release")  # the run is running, not held: the engine refuses
    dlg.reason.setText("QC reviewed")
    dlg.ok_button.click()
    sign(qtbot, win)
    cmd = wait_for_command(qtbot, sim, "release")
    qtbot.waitUntil(lambda: dlg.has_sent, timeout=10_000)
    sim.engine.step()
    qtbot.waitUntil(lambda: dlg.engine_rejected, timeout=10_000)
    reason = sim.store.get_command(cmd.id).result["reason"]
    assert reason.startswith("run 1: cannot release while running")
    assert f"✕ rejected: {reason}" in dlg.verdicts.lines[cmd.id].text()
    assert f"command {cmd.id} · release run 1: rejected: {reason}" in win.verdict_panel.text()
    assert win.commands.last_message is None  # its own dialog showed it
    dlg.cancel_button.click()
    # A rejection whose dialog was closed before the verdict: a message box says it.
    dlg = win.control("resume")
    dlg.reason.setText("gas back")
    dlg.ok_button.click()
    cmd = wait_for_command(qtbot, sim, "resume")
    qtbot.waitUntil(lambda: dlg.has_sent, timeout=10_000)
    dlg.cancel_button.click()
    sim.engine.step()
    qtbot.waitUntil(lambda: win.commands.last_message is not None, timeout=10_000)
    box = win.commands.last_message
    assert box.isVisible() and box.windowTitle() == "The engine rejected a command"
    assert box.text().startswith("✕ resume run 1: rejected: run 1: cannot resume")
    box.accept()


def send_with_reason(qtbot, sim: Sim, dlg, verb: str, reason: str, win=None) -> m.Command:  # noqa: ANN001
    """OK without a reason is refused (nothing written); with ``reason`` it is queued
    (signed first, in ``win``'s signature dialog, when ``win`` is given)."""
    dlg.ok_button.click()
    assert "give a reason" in dlg.error.text() and sim.store.pending_commands() == []
    dlg.reason.setText(reason)
    dlg.ok_button.click()
    if win is not None:
        sign(qtbot, win)
    cmd = wait_for_command(qtbot, sim, verb)
    assert (cmd.reason, cmd.actor) == (reason, "alice")
    return cmd


def _hold_the_run(sim: Sim) -> None:
    """The operator chose 'hold' on the failed feed: the run waits for a decision."""
    (p,) = [x for x in sim.store.open_prompts() if x.kind == "recovery"]
    sim.store.insert_command(
        "answer", actor="bob", run_id=p.run_id, args={"prompt": p.id, "answer": {"choice": "hold"}}
    )
    sim.engine.step()
    assert sim.store.get_run(sim.world.run_id).state == "holding"


def test_release_a_held_run(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    _hold_the_run(sim)
    qtbot.waitUntil(lambda: win.strip.release.isVisible(), timeout=10_000)
    assert win.strip.release.text() == "Release run…"
    win.strip.release.click()
    dlg = win.last_dialog
    assert dlg.verb == "release" and dlg.windowTitle() == "Release run: Kriks DA batch 2x6w"
    cmd = send_with_reason(qtbot, sim, dlg, "release", "LH tips reseated; feed done by hand", win)
    assert cmd.args == {"signature": sim.store.signatures()[0].id}
    assert cmd.run_id == sim.world.run_id
    sim.engine.step()
    qtbot.waitUntil(lambda: "applied (run now running)" in dlg.verdict_text(), timeout=10_000)
    qtbot.waitUntil(lambda: not win.strip.release.isVisible(), timeout=10_000)


def test_a_held_engine_is_confirmed_by_a_supervisor(
    qtbot, win: MainWindow, sim: Sim, wall: VirtualClock
) -> None:  # noqa: ANN001
    sim.engine.hold(RESTORED)
    daemon = fake_daemon(sim.world.db, sim.store, wall.now(), held=RESTORED)
    try:
        strip = win.engine_strip
        qtbot.waitUntil(lambda: strip.level == "held", timeout=10_000)
        assert not strip.loud and strip.confirm_button.isVisible()
        assert (
            strip.headline.text() == "⚑ ENGINE HELD: it starts nothing until a supervisor confirms"
        )
        assert strip.detail.text().startswith("Why: the run database ends at event 40")
        assert "labctl confirm-store" not in strip.detail.text()
        assert "Confirm the devices were checked…" in strip.advice.text()
        strip.confirm_button.click()
        dlg = win.last_dialog
        assert dlg.verb == "confirm-store" and dlg.run is None
        assert dlg.windowTitle() == "Confirm the devices were checked"
        assert not dlg.signs  # a supervisor's word (the role), not a signed action
        checked = "incubator slots and the OT-2 deck match the run database"
        cmd = send_with_reason(qtbot, sim, dlg, "confirm-store", checked)
        assert (cmd.run_id, cmd.args) == (None, {})
        qtbot.waitUntil(lambda: dlg.has_sent, timeout=10_000)
        assert "◷ sent: waiting for the engine's verdict" in dlg.verdicts.lines[cmd.id].text()
        sim.engine.step()
        assert sim.engine.held is None
        daemon.beat(wall.now())
        qtbot.waitUntil(
            lambda: "applied (the engine starts work again)" in dlg.verdict_text(), timeout=10_000
        )
        qtbot.waitUntil(lambda: strip.level == "running", timeout=10_000)
        assert not strip.confirm_button.isVisible()
    finally:
        daemon.release()


def test_a_qc_answer_the_engine_rejects_is_shown_in_its_dialog(
    qtbot, win: MainWindow, sim: Sim
) -> None:  # noqa: ANN001
    gate = {"measure": "FOXA2_LMX1A_pct", "unit": "%", "min": 60.0, "on_fail": "hold"}
    p = sim.store.insert_prompt(
        sim.world.run_id, kind="task", text="Plate P1: FOXA2/LMX1A", actor="engine", choices=[gate]
    )
    qtbot.waitUntil(lambda: any(x.id == p.id for x in win.snapshot.prompts), timeout=10_000)
    dlg = win.open_prompt(p.id)
    assert not dlg.choice_buttons["done"].isEnabled()
    # An answer without the value, as an older console would send it: the engine refuses.
    view = next(x for x in win.snapshot.prompts if x.id == p.id)
    win.commands.send([m.answer(view, {"done": True})], dlg)
    qtbot.waitUntil(lambda: dlg.has_sent, timeout=10_000)
    sim.engine.step()
    qtbot.waitUntil(lambda: dlg.engine_rejected, timeout=10_000)
    assert "rejected: this step records QC values: give FOXA2_LMX1A_pct (%)" in dlg.verdict_text()
    assert dlg.again_button.isVisible()
    dlg.again_button.click()
    dlg.qc_edits["FOXA2_LMX1A_pct"].setText("64")
    dlg.choice_buttons["done"].click()
    dlg.confirm_button.click()
    qtbot.waitUntil(lambda: len(dlg.verdicts.verdicts) == 2, timeout=10_000)
    sim.engine.step()
    qtbot.waitUntil(lambda: dlg.verdict_text().count(": applied") == 1, timeout=10_000)
    assert sim.store.get_prompt(p.id).answer == {"done": True, "qc": {"FOXA2_LMX1A_pct": 64.0}}


# main() runs the Qt event loop to its end, and QApplication.quit() leaves the process's
# event loops unable to run again (a later window in the same process would never hear
# from its worker): it runs in a process of its own.
MAIN_CHILD = """
import gc, json, sys
from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QApplication
from labctl.gui.app import main
from labctl.gui.main_window import MainWindow

db, pw = sys.argv[1], sys.argv[2]
app = QApplication([])
seen = {}

def check():
    wins = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    dlg = wins[0].access.sign_in_dialog if wins else None
    if dlg is not None and dlg.isVisible() and dlg.sign_in_button.isEnabled():
        dlg.name.setText("alice")
        dlg.password.setText(pw)
        dlg.sign_in_button.click()
    if wins and wins[0].snapshot is not None:
        w = wins[0]
        seen.update(win=w, db=str(w.db_path), run=w.snapshot.runs[0].name,
                    frozen=gc.get_freeze_count())
        app.quit()
    else:
        QTimer.singleShot(20, check)

QTimer.singleShot(20, check)
rc = main(db)
w = seen.pop("win")
seen.update(rc=rc, finished=w.bridge._thread.isFinished(), after=gc.get_freeze_count())
print(json.dumps(seen))
"""


def test_main_opens_the_console_and_returns_when_quit(sim: Sim) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [sys.executable, "-c", MAIN_CHILD, str(sim.world.db), PASSWORD],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rc"] == 0 and got["db"] == str(sim.world.db)
    assert got["run"] == "Kriks DA batch 2x6w"
    assert got["finished"]  # main() stopped the worker before returning
    # What start-up made is out of the collector's sight while the window is open (a full
    # collection on the worker thread froze the window for 100-300 ms), not after.
    assert got["frozen"] > 10_000 and got["after"] == 0
