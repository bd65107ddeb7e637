"""The console's models, without Qt, against a store filled by a simulated Kriks run.

The world (tests/console_fixtures.py) is the shipped Kriks protocol on 2 plates, driven by
the engine on fake devices to the morning of day 12, where a liquid-handler run has just
failed (open recovery prompt, default 'hold' in 15 min) and the incubator reports low CO2.
"""

from __future__ import annotations

import ast
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from console_fixtures import (
    KRIKS,
    TZ,
    WALL_START,
    Sim,
    World,
    answer_due_prompts,
    copy_world,
    fake_daemon,
    fast_dir,
    make_practice,
    open_sim,
    shared_world,
    task_state,
)

from labctl.accounts import AuthError
from labctl.clock import VirtualClock
from labctl.errors import ParameterError, ProtocolError
from labctl.gui import models as m
from labctl.gui.auth import ConsoleUser

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world() -> World:
    return shared_world()


@pytest.fixture
def sim(world: World) -> Sim:
    """A copy of the world as a practice database: commands need no account (the console's
    accounts are tests/test_console_accounts.py's)."""
    folder = fast_dir("labctl-console-test-")
    copy = copy_world(world, folder / "copy")
    make_practice(copy.db)
    s = open_sim(copy)
    yield s
    s.close()
    shutil.rmtree(folder, ignore_errors=True)


ALICE = ConsoleUser("alice")  # on a practice database: a name, no account
AS_ALICE = {"who": ALICE, "now": WALL_START}


def snapshot(sim: Sim) -> m.Snapshot:
    return m.SnapshotLoader(sim.clock).load(sim.store)


# --- the layers ---------------------------------------------------------------------------


MODEL_FILES = [f"models/{p.name}" for p in sorted((ROOT / "gui" / "models").glob("*.py"))]


@pytest.mark.parametrize("name", [*MODEL_FILES, "auth.py", "training.py"])
def test_models_know_no_qt(name: str) -> None:
    tree = ast.parse((ROOT / "gui" / name).read_text(encoding="utf-8"))
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [x for x in mods if x.startswith("PyQt")], mods


def _gui_imports() -> dict[str, set[str]]:
    """Each console module (``labctl.gui.x``) and the console modules it imports."""
    gui = ROOT / "gui"
    files = {
        ".".join(("labctl", "gui", *p.relative_to(gui).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): p
        for p in gui.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(n, ast.Import):
                deps |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.module:
                deps |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def test_console_modules_import_no_circle() -> None:
    graph = _gui_imports()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "import circle: " + " -> ".join((*path, name))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


# --- the snapshot ---------------------------------------------------------------------------


def test_run_row_on_day_12(sim: Sim) -> None:
    snap = snapshot(sim)
    (run,) = snap.runs
    assert run.id == sim.world.run_id
    assert run.state == "running" and run.tone == "running"
    assert (run.day, run.last_day, run.day_text) == (12, 25, "day 12 of 25")
    assert run.protocol == "kriks2011-da v1.0.0"
    assert run.plates == ("P1", "P2")
    assert run.active_alarms == 1 and run.open_prompts == 1
    # The day-12 feed is under way on P1 (its LH run failed): it is the next task.
    assert run.next_task == "Feed: full change, 2 mL/well"
    assert run.next_plates == "P1"
    (active,) = sim.store.tasks(run.id, state="active")
    assert run.next_time == active.actual_start
    tasks = sim.store.tasks(run.id)
    assert run.tasks_total == len(tasks)
    assert run.tasks_done == sum(t.state in ("done", "skipped") for t in tasks)


def test_alarm_and_recovery_prompt(sim: Sim) -> None:
    snap = snapshot(sim)
    (alarm,) = snap.alarms
    assert (alarm.device, alarm.code, alarm.state) == ("inc-sim", "co2-low", "active")
    (p,) = snap.prompts
    assert p.kind == "recovery"
    assert p.choices == ("retry", "skip", "hold")
    assert p.default_choice == "hold"
    assert p.seconds_left(sim.clock.now()) == 900.0
    assert p.irreversible_choices == frozenset({"skip"})
    assert p.plate == "P1" and p.step == "lh_run" and p.gates == ()
    assert m.countdown_text(p.seconds_left(sim.clock.now())) == "15:00"


def test_devices(sim: Sim) -> None:
    devs = {d.name: d for d in snapshot(sim).devices}
    assert set(devs) == {"inc-sim", "ot2-sim", "operator"}
    inc, ot2 = devs["inc-sim"], devs["ot2-sim"]
    assert (inc.role, inc.state, inc.tone) == ("incubator", "alarm", "fault")
    assert inc.climate is not None and inc.climate.co2_pct == 4.1
    assert inc.climate.text == "37.0 °C, CO₂ 4.1 %, RH 94 %"
    assert inc.last_error.startswith("inc-sim: CO2 4.1 %")
    assert (ot2.role, ot2.state) == ("liquid handler", "needs decision")
    assert ot2.last_error == "ot2-sim: lh_run: injected failure [device code 99]"
    assert devs["operator"].role == "operator"


def test_snapshot_is_reused_until_the_store_changes(sim: Sim) -> None:
    loader = m.SnapshotLoader(sim.clock)
    first = loader.load(sim.store)
    assert loader.load(sim.store) is first
    cmd = sim.store.insert_command("pause", actor="alice", run_id=sim.world.run_id, reason="x")
    loader.watch(cmd.id)
    second = loader.load(sim.store)
    assert second is not first
    assert second.pending_commands == 1 and second.finished_commands == ()
    sim.engine.step()
    third = loader.load(sim.store)
    assert [c.id for c in third.finished_commands] == [cmd.id]
    assert third.finished_commands[0].state == "applied"
    assert third.runs[0].state == "paused"
    # With nothing new, a later read re-derives (day numbers move) but reads no rows.
    sim.clock.advance(3600)
    fourth = loader.load(sim.store)
    assert fourth is not third and fourth.head_seq == third.head_seq


def test_change_feed_matches_a_full_read(sim: Sim) -> None:
    """Patching from the events since the last read gives what reading everything gives."""
    loader = m.SnapshotLoader(sim.clock)
    first = loader.load(sim.store)
    p = first.prompts[0]
    m.submit(sim.store, m.answer(p, {"choice": "retry"}), **AS_ALICE)
    end = sim.clock.now() + timedelta(hours=26)  # through the day-13 feed

    def later() -> bool:
        answer_due_prompts(sim.store, sim.clock, sim.answered)
        return sim.clock.now() >= end

    sim.engine.run(until=later, max_idle_s=900, max_steps=5000)
    patched = loader.load(sim.store)
    full = m.SnapshotLoader(sim.clock).load(sim.store)
    assert loader.full_reads == 1  # the second read patched
    assert patched.head_seq == full.head_seq
    assert patched.runs == full.runs
    assert patched.bars == full.bars
    assert patched.devices == full.devices
    assert patched.today == full.today
    assert patched.prompts == full.prompts
    assert patched.runs[0].tasks_done > first.runs[0].tasks_done


# --- timeline and today -------------------------------------------------------------------


def test_bars_and_lanes(sim: Sim) -> None:
    snap = snapshot(sim)
    # Bars are derived once a minute: "now" for them is the start of the current minute.
    now = sim.clock.now().replace(second=0, microsecond=0)
    failed = [b for b in snap.bars if b.failed]
    assert [(b.device, b.plate, b.op, b.state) for b in failed] == [
        ("ot2-sim", "P1", "lh_run", "failed")
    ]
    for b in snap.bars:
        assert b.end >= b.start
        if b.planned and b.state not in ("done", "skipped"):
            assert b.start >= now  # nothing waits in the past
        if b.main:
            assert b.window_end is not None
            # A failed main job must run again: its slack counts from now.
            main_start = now if b.failed else b.start
            assert b.slack_s == (b.window_end - main_start).total_seconds()
        else:
            assert b.window_start is None and b.slack_s is None
    ls = m.lanes(snap.bars, now - timedelta(hours=2), now + timedelta(hours=6))
    assert [lane.title for lane in ls] == ["ot2-sim", "inc-sim", "operator", "P1", "P2"]
    assert [lane.group for lane in ls] == ["Devices"] * 3 + ["Plates"] * 2
    p1 = ls[3]
    assert {b.plate for b in p1.bars} == {"P1"}
    assert any(b.failed for b in p1.bars)


def test_late_when_the_window_has_passed(sim: Sim) -> None:
    sim.clock.advance(6 * 3600)  # 15:18 local: past the 07:00-11:00 window of the P1 feed
    snap = snapshot(sim)
    late = [b for b in snap.bars if b.late]
    assert late and all(b.main and b.slack_s < 0 for b in late)
    assert {b.task_key for b in late} == {"d12-feed-0900"}
    today = [i for i in snap.today if i.late]
    assert today and all(i.state not in ("done", "skipped") for i in today)


def test_today_lists_the_operator_steps_of_the_day(sim: Sim) -> None:
    snap = snapshot(sim)
    items = snap.today
    assert items == tuple(sorted(items, key=lambda i: (i.when, i.run_id, i.plate)))
    today = sim.clock.now().astimezone(m.tzinfo(TZ)).date()
    assert all(i.when.astimezone(m.tzinfo(TZ)).date() == today for i in items)
    # Day 12 on 2 plates: each plate goes to the deck and back, by hand.
    texts = [i.what for i in items]
    assert sum("put it on deck slot 1" in t for t in texts) == 2
    assert sum("from deck slot 1" in t for t in texts) == 2
    page = m.today_html(items, snap.runs[0], snap.now)
    assert "Manual tasks Sun 13 Dec 2026: Kriks DA batch 2x6w (day 12 of 25)" in page
    assert page.count("&#9744;") == len(items)


def test_prep_sheets_of_the_day(sim: Sim) -> None:
    page = m.prep_html(sim.store, sim.world.run_id, 12)
    assert "<h2>Day 12: Sun 2026-12-13 09:00 CET</h2>" in page
    assert "NB_B27" in page and "DAPT" in page
    empty = m.prep_html(sim.store, sim.world.run_id, 40)
    assert "Nothing to prepare on day 40." in empty


# --- answers and commands -----------------------------------------------------------------


def _task_prompt(**kw: object) -> m.PromptView:
    base = dict(
        id=7, run_id=1, run_name="r", kind="task", heading="h", text="t", instructions="",
        plate="P1", step="event", choices=(), default_choice=None, deadline=None,
        created_at=datetime(2026, 12, 12, 12, 0), job_id=3, timezone=TZ, reagents=("NB_B27",),
        gates=(m.QcGate("FOXA2_LMX1A_pct", "%", 60.0, None, "hold"),),
    )  # fmt: skip
    base.update(kw)
    return m.PromptView(**base)  # type: ignore[arg-type]


def test_prompt_with_qc_gates_is_never_answered_without_its_values() -> None:
    task = _task_prompt()
    assert [g.measure for g in m.missing_qc(task, {})] == ["FOXA2_LMX1A_pct"]
    assert m.missing_qc(task, {"FOXA2_LMX1A_pct": "n/a"}) == list(task.gates)
    assert m.missing_qc(task, {"FOXA2_LMX1A_pct": "72"}) == []
    # Gates count whatever the choice (the engine checks every answer to such a prompt).
    both = _task_prompt(choices=("done", "skip"))
    with pytest.raises(m.ConsoleInputError, match=r"enter the FOXA2_LMX1A_pct value"):
        m.build_answer(both, choice="done")
    assert m.build_answer(both, choice="done", qc={"FOXA2_LMX1A_pct": "61"}) == {
        "choice": "done",
        "qc": {"FOXA2_LMX1A_pct": 61.0},
    }


def test_build_answer() -> None:
    rec = _task_prompt(kind="recovery", choices=("retry", "skip", "hold"), gates=(), reagents=())
    assert m.build_answer(rec, choice="retry") == {"choice": "retry"}
    with pytest.raises(m.ConsoleInputError, match="choose one of retry, skip, hold"):
        m.build_answer(rec, choice="later")
    task = _task_prompt()
    with pytest.raises(
        m.ConsoleInputError, match=r"enter the FOXA2_LMX1A_pct value \(at least 60 %\)"
    ):
        m.build_answer(task, qc={})
    with pytest.raises(m.ConsoleInputError, match="FOXA2_LMX1A_pct: 'lots' is not a number"):
        m.build_answer(task, qc={"FOXA2_LMX1A_pct": "lots"})
    ans = m.build_answer(task, qc={"FOXA2_LMX1A_pct": " 72,5 "}, lots={"NB_B27": " L123 ", "x": ""})
    assert ans == {"done": True, "qc": {"FOXA2_LMX1A_pct": 72.5}, "lots": {"NB_B27": "L123"}}
    assert m.qc_failures(task, {"FOXA2_LMX1A_pct": 59.9}) == [(task.gates[0], 59.9)]
    assert m.qc_failures(task, {"FOXA2_LMX1A_pct": 60.0}) == []


def test_reason_is_checked_before_anything_is_written(sim: Sim) -> None:
    rid = sim.world.run_id
    with pytest.raises(m.ConsoleInputError, match="give a reason to pause run"):
        m.submit(sim.store, m.pause(rid, "  "), **AS_ALICE)
    with pytest.raises(m.ConsoleInputError, match="give a reason to skip task"):
        m.submit_all(
            sim.store, [m.pause(rid, "first"), m.skip(rid, "d13-feed-0900", "")], **AS_ALICE
        )
    assert sim.store.pending_commands() == []


def test_a_production_database_without_accounts_takes_no_command(world: World) -> None:
    """As the CLI: nobody can be named as the actor before an admin sets it up."""
    folder = fast_dir("labctl-console-test-")
    s = open_sim(copy_world(world, folder / "copy"))
    try:
        with pytest.raises(
            AuthError, match="no user accounts yet, so nobody can act on it: an admin sets it up"
        ):
            m.submit(s.store, m.pause(s.world.run_id, "x"), **AS_ALICE)
        assert s.store.pending_commands() == []
    finally:
        s.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_practice_database_commands_are_not_signed(sim: Sim) -> None:
    cmd = m.submit(sim.store, m.abort(sim.world.run_id, "mycoplasma"), **AS_ALICE)
    assert (cmd.actor, cmd.args) == ("alice", {}) and sim.store.signatures() == []


def _apply(sim: Sim, request: m.CommandRequest, **kw: object) -> m.Command:
    cmd = m.submit(sim.store, request, **AS_ALICE, **kw)  # type: ignore[arg-type]
    sim.engine.step()
    done = sim.store.get_command(cmd.id)
    assert done.state == "applied", done
    return done


def test_pause_and_resume_the_run(sim: Sim) -> None:
    rid = sim.world.run_id
    cmd = _apply(sim, m.pause(rid, "CO2 alarm: wait for the gas"))
    assert (cmd.verb, cmd.args, cmd.actor, cmd.reason) == (
        "pause",
        {},
        "alice",
        "CO2 alarm: wait for the gas",
    )
    assert sim.store.get_run(rid).state == "paused"
    _apply(sim, m.resume(rid, "gas fixed"))
    assert sim.store.get_run(rid).state == "running"


def test_pause_one_plate(sim: Sim) -> None:
    rid = sim.world.run_id
    cmd = _apply(sim, m.pause(rid, "plate cracked?", plate="P2"))
    assert cmd.args == {"plate": "P2"}
    assert {p.label: p.state for p in sim.store.plates(rid)} == {"P1": "active", "P2": "paused"}
    assert snapshot(sim).runs[0].paused_plates == ("P2",)


def test_skip_a_task_on_one_plate(sim: Sim) -> None:
    rid = sim.world.run_id
    offered = {t.task_key: t for t in m.skippable_tasks(sim.store, rid)}
    assert offered["d13-feed-0900"].plates == ("P1", "P2")
    assert offered["d13-feed-0900"].title == "Feed: full change, 2 mL/well"
    cmd = _apply(
        sim,
        m.skip(rid, "d13-feed-0900", "no NB_B27 left", plate="P2"),
    )
    assert cmd.args == {"task": "d13-feed-0900", "plate": "P2"}
    assert task_state(sim.store, rid, "d13-feed-0900", "P2") == "skipped"
    assert task_state(sim.store, rid, "d13-feed-0900", "P1") == "pending"
    (dev,) = [
        e for e in sim.store.events(rid, action="deviation") if e.data.get("kind") == "skipped"
    ]
    assert dev.actor == "alice" and dev.reason == "no NB_B27 left"


def test_abort(sim: Sim) -> None:
    rid = sim.world.run_id
    _apply(sim, m.abort(rid, "mycoplasma positive"))
    assert sim.store.get_run(rid).state == "aborted"
    assert snapshot(sim).runs[0].day_text == "ended on day 12"


def test_answering_prompts_unblocks_the_run(sim: Sim) -> None:
    """Retry the failed LH run; then the operator's next step opens and is answered."""
    p = snapshot(sim).prompts[0]
    _apply(sim, m.answer(p, m.build_answer(p, choice="retry"), "tips reseated"))
    assert sim.store.get_prompt(p.id).state == "answered"
    assert sim.store.get_prompt(p.id).answer == {"choice": "retry"}
    job = sim.store.get_job(p.job_id)
    assert (job.state, job.attempts) == ("running", 1)

    def task_prompt_open() -> bool:
        return any(x.kind == "task" for x in sim.store.open_prompts())

    sim.engine.run(until=task_prompt_open, max_idle_s=900, max_steps=2000)
    assert sim.store.get_job(p.job_id).state == "done"  # the LH run finished this time
    (tp,) = [x for x in snapshot(sim).prompts if x.kind == "task"]
    assert (tp.step, tp.plate, tp.heading) == ("to_incubator", "P1", "Take the plate off the deck")
    _apply(sim, m.answer(tp, m.build_answer(tp)))
    sim.engine.step()
    assert sim.store.get_job(tp.job_id).state == "done"


def test_lots_entered_with_an_answer_reach_the_batch_record(sim: Sim) -> None:
    """The operator puts the next plate on the deck and records the lots of its medium."""
    rid = sim.world.run_id
    p = snapshot(sim).prompts[0]
    _apply(sim, m.answer(p, {"choice": "retry"}))
    loader = m.SnapshotLoader(sim.clock)

    def to_deck_open() -> bool:
        for q in loader.load(sim.store).prompts:
            if q.step == "to_deck":
                return True
            if q.kind == "task" and q.id not in sim.answered:  # everything else: done
                sim.answered.add(q.id)
                m.submit(
                    sim.store,
                    m.answer(q, m.build_answer(q)),
                    who=ConsoleUser("sim-operator"),
                    now=WALL_START,
                )
        return False

    sim.engine.run(until=to_deck_open, max_idle_s=900, max_steps=5000)
    (q,) = [x for x in loader.load(sim.store).prompts if x.step == "to_deck"]
    assert q.heading == "Put the plate on the deck"
    assert "NB_B27" in q.reagents and "DAPT" in q.reagents
    ans = m.build_answer(q, lots={"NB_B27": "NB-2612", "DAPT": "D-0042", "BDNF": ""})
    assert ans == {"done": True, "lots": {"NB_B27": "NB-2612", "DAPT": "D-0042"}}
    _apply(sim, m.answer(q, ans))
    sim.engine.step()
    lots = {(x.reagent, x.lot) for x in sim.store.reagent_lots(rid)}
    assert lots == {("NB_B27", "NB-2612"), ("DAPT", "D-0042")}
    assert "NB-2612" in m.batch_record(sim.store, rid)


def test_acknowledge_alarm(sim: Sim) -> None:
    (a,) = sim.store.active_alarms()
    m.acknowledge(sim.store, a.id, **AS_ALICE, reason="gas bottle changed")
    a2 = sim.store.get_alarm(a.id)
    assert (a2.state, a2.acknowledged_by) == ("acknowledged", "alice")
    (row,) = snapshot(sim).alarms
    assert row.state == "acknowledged"


# --- audit --------------------------------------------------------------------------------


def test_event_pages_cover_the_trail_in_order(sim: Sim) -> None:
    rid = sim.world.run_id
    flt = m.EventFilter(run_id=rid)
    seen: list[int] = []
    page = m.event_page(sim.store, flt, limit=200)
    while True:
        seen += [r.seq for r in page.rows]
        if not page.more:
            break
        page = m.event_page(sim.store, flt, after_seq=page.last_seq, limit=200)
    everything = [e.seq for e in sim.store.events(rid, limit=None, with_workcell=True)]
    assert seen == everything and len(seen) > 1000
    newest = m.event_page(sim.store, flt, newest_first=True, limit=5)
    assert [r.seq for r in newest.rows] == everything[::-1][:5]
    older = m.event_page(sim.store, flt, newest_first=True, before_seq=newest.last_seq, limit=5)
    assert [r.seq for r in older.rows] == everything[::-1][5:10]


def test_event_filters(sim: Sim) -> None:
    rid = sim.world.run_id
    prompts = m.event_page(sim.store, m.EventFilter(rid, entity="prompt"), limit=10_000)
    assert prompts.rows and {r.entity for r in prompts.rows} == {"prompt"}
    actor = m.event_page(sim.store, m.EventFilter(rid, actor="sim-operator"), limit=10_000)
    assert actor.rows and {r.actor for r in actor.rows} == {"sim-operator"}
    text = m.event_page(sim.store, m.EventFilter(rid, text="  injected failure "), limit=10_000)
    want = [e.seq for e in sim.store.events(rid, text="injected failure", limit=None)]
    assert len(want) >= 2 and [r.seq for r in text.rows] == want
    row = next(r for r in m.event_page(sim.store, m.EventFilter(rid, entity="run"), limit=10).rows)
    assert row.change == "∅ → planned" and row.action == "created"


def test_batch_record(sim: Sim) -> None:
    page = m.batch_record(sim.store, sim.world.run_id)
    assert "<h1>Batch record: Kriks DA batch 2x6w</h1>" in page
    assert "Hash chain verified" in page


# --- the protocol view ----------------------------------------------------------------------


def test_protocol_info_from_the_locked_text(sim: Sim, tmp_path: Path) -> None:
    info = m.protocol_info(sim.store, sim.world.run_id)
    run = sim.store.get_run(sim.world.run_id)
    assert info.source_text == run.protocol_text and info.sha256 == run.protocol_sha256
    assert info.parameters == (("chir", "3 µM"),)
    assert info.diagram_png is not None and info.diagram_png.startswith(b"\x89PNG")
    days = [r.day for r in info.rows]
    assert days == sorted(days) and days[0] == 0 and days[-1] == 25
    d12 = next(r for r in info.rows if r.day == 12 and r.kind == "feed")
    assert (d12.time, d12.window, d12.medium) == ("09:00", "07:00-11:00", "full: NB_B27")
    assert "CHIR99021 3 µM" in d12.well and "DAPT 10 µM" in d12.well
    assert d12.volume_ul == 2000.0
    d11 = next(r for r in info.rows if r.day == 11 and r.kind == "event")
    assert d11.factors == "QC FOXA2_LMX1A_pct"


# --- registering a run ------------------------------------------------------------------------


def test_check_protocol_text_reports_lines(tmp_path: Path) -> None:
    text = KRIKS.read_text(encoding="utf-8").replace("conc: 100 nM", "conc: 100 nm", 1)
    chk = m.check_protocol_text(text, "broken.yaml")
    assert not chk.ok
    (err,) = chk.errors
    assert (err.file, err.line) == ("broken.yaml", 91)
    assert "dimension [length]" in err.message
    good = m.check_protocol_text(KRIKS.read_text(encoding="utf-8"), str(KRIKS))
    assert good.ok and good.protocol_id == "kriks2011-da"
    assert [(p.name, p.default, p.min, p.max) for p in good.parameters] == [
        ("chir", "3 µM", "1 µM", "6 µM")
    ]


def test_register_new_run_and_start(tmp_path: Path) -> None:
    from fakes import fake_workcell

    from labctl.clock import VirtualClock
    from labctl.engine import Engine
    from labctl.store import Store

    clock = VirtualClock(datetime.fromisoformat("2026-12-13T08:00:00+00:00"))
    store = Store.open(tmp_path / "new.db", clock)
    store.set_kind("practice", actor="trainer")  # any protocol text, no account
    engine = Engine(store, clock, fake_workcell(clock))
    req = m.NewRunRequest(
        file=str(KRIKS),
        text=KRIKS.read_text(encoding="utf-8"),
        name="Kriks DA batch 26-12-B",
        plates=1,
        start=datetime(2026, 12, 20, 9, 0),
        timezone=TZ,
        parameters={"chir": "4 uM"},
        reason="second batch",
    )
    rid = m.register_new_run(store, clock, req, **AS_ALICE)
    run = store.get_run(rid)
    assert (run.name, run.state, run.plates, run.parameters) == (
        "Kriks DA batch 26-12-B",
        "planned",
        1,
        {"chir": "4 µM"},
    )
    assert m.local(run.start, TZ).isoformat() == "2026-12-20T09:00:00+01:00"
    (start,) = store.pending_commands(rid)
    assert (start.verb, start.actor, start.reason) == ("start", "alice", "second batch")
    engine.step()
    assert store.get_run(rid).state == "running"
    with pytest.raises(ParameterError, match="above its maximum"):
        m.register_new_run(
            store,
            clock,
            m.NewRunRequest(**{**req.__dict__, "parameters": {"chir": "9 uM"}}),
            **AS_ALICE,
        )
    with pytest.raises(ProtocolError):
        m.register_new_run(
            store, clock, m.NewRunRequest(**{**req.__dict__, "text": "labctl: 1\n"}), **AS_ALICE
        )
    assert [r.id for r in store.list_runs()] == [rid]  # nothing half-registered
    store.close()


def test_suggest_start_dates_ranks_best_first() -> None:
    found = m.suggest_start_dates(
        KRIKS.read_text(encoding="utf-8"),
        str(KRIKS),
        plates=1,
        parameters={},
        timezone=TZ,
        first=date(2026, 12, 14),
        days=3,
    )
    assert len(found) == 3
    assert [s.penalty for s in found] == sorted(s.penalty for s in found)
    assert {s.start.date() for s in found} == {
        date(2026, 12, 14),
        date(2026, 12, 15),
        date(2026, 12, 16),
    }
    assert all(s.ok == (s.penalty == 0) for s in found)


# --- the engine and what became of each command --------------------------------------------


def _engine(sim: Sim, wall: VirtualClock) -> m.EngineView:
    return m.engine_view(sim.world.db, sim.store, wall.now())


def test_engine_view_when_no_engine_ever_ran(sim: Sim) -> None:
    e = _engine(sim, VirtualClock(WALL_START))
    assert (e.level, e.running, e.ever, e.loud, e.applies_commands) == (
        "down", False, False, True, False,
    )  # fmt: skip
    assert e.headline == "ENGINE NOT RUNNING: runs are not being carried out"
    assert e.text.startswith("no engine has run on this database yet")
    assert "labctl engine" in e.advice


def test_engine_view_running_then_stale(sim: Sim) -> None:
    wall = VirtualClock(WALL_START)
    daemon = fake_daemon(sim.world.db, sim.store, wall.now())
    try:
        wall.advance(3)
        e = _engine(sim, wall)
        assert (e.level, e.running, e.loud, e.applies_commands) == ("running", True, False, True)
        assert e.text == "engine 4242 on bay-pc running, seen 3 s ago" and e.seen_s == 3.0
        assert e.headline == "ENGINE RUNNING" and e.tone == "ok" and not e.can_confirm
        # Three beats missed (15 s): it holds the database but carries nothing out.
        wall.advance(40)
        e = _engine(sim, wall)
        assert (e.level, e.running, e.loud, e.applies_commands) == ("stale", True, True, False)
        assert e.headline == "ENGINE NOT RESPONDING: runs are not being carried out"
        assert "has not beaten for 43 s: stuck?" in e.text
        daemon.beat(wall.now())
        assert _engine(sim, wall).level == "running"
        # Held and stuck: said to be stuck, and nothing to confirm until it answers.
        wall.advance(40)
        daemon.store.engine_beat(daemon.session_id, wall.now() - timedelta(seconds=40), held="x")
        e = _engine(sim, wall)
        assert (e.level, e.held, e.can_confirm) == ("stale", "x", False)
    finally:
        daemon.release()


def test_engine_view_held_until_a_supervisor_confirms(sim: Sim) -> None:
    wall = VirtualClock(WALL_START)
    why = (
        "the run database ends at event 40, but the engine had acted after event 52: it was "
        "restored from an older copy; check the devices, then: labctl confirm-store --reason ..."
    )
    daemon = fake_daemon(sim.world.db, sim.store, wall.now(), held=why)
    try:
        e = _engine(sim, wall)
        assert (e.level, e.running, e.loud, e.can_confirm, e.applies_commands) == (
            "held", True, False, True, True,
        )  # fmt: skip
        # The console says what to do in its own words, not the CLI's.
        assert e.held == why.split("; check the devices")[0]
        assert e.detail == f"Why: {e.held}"
        assert "Confirm the devices were checked" in e.advice
        assert "starts NOTHING until confirmed" in e.text
    finally:
        daemon.release()


def test_engine_view_not_running_since_it_stopped_or_was_lost(sim: Sim) -> None:
    wall = VirtualClock(WALL_START)
    daemon = fake_daemon(sim.world.db, sim.store, wall.now())
    wall.advance(60)
    daemon.stop(wall.now(), "stopped by the operator (Ctrl-C or SIGTERM)")
    wall.advance(600)
    e = _engine(sim, wall)
    assert (e.level, e.running, e.ever, e.loud) == ("down", False, True, True)
    assert e.text == (
        "engine NOT running since 2026-12-13 08:01:00 UTC: stopped by the operator (Ctrl-C or SIGTERM)"
    )
    # A session still marked running without its lock: the process died without a word.
    lost = fake_daemon(sim.world.db, sim.store, wall.now())
    lost.release()
    e = _engine(sim, wall)
    assert e.level == "down" and "stopped without a word" in e.text


def test_training_database_engine_is_its_simulation(sim: Sim) -> None:
    down = _engine(sim, VirtualClock(WALL_START))
    assert m.training_view(down, True).headline == "TRAINING SIMULATION RUNNING"
    assert m.training_view(down, True).applies_commands
    assert m.training_view(down, False).loud


def test_snapshot_reads_the_engine_at_every_poll(sim: Sim) -> None:
    wall = VirtualClock(WALL_START)
    loader = m.SnapshotLoader(sim.clock, wall)
    first = loader.load(sim.store)
    assert first.engine is not None and first.engine.level == "down"
    assert loader.load(sim.store) is first  # nothing moved, not even the engine
    daemon = fake_daemon(sim.world.db, sim.store, wall.now())  # its start is an audit event
    try:
        running = loader.load(sim.store)
        assert running.engine.level == "running" and not running.same_data(first)
        # Heartbeats write no audit event: the runs are not read again, the engine is.
        wall.advance(4)
        daemon.beat(wall.now())
        wall.advance(2)
        later = loader.load(sim.store)
        assert later is not running and later.same_data(running)
        assert later.runs is running.runs and later.engine.text.endswith("seen 2 s ago")
        wall.advance(60)
        assert loader.load(sim.store).engine.level == "stale"
    finally:
        daemon.release()


def test_verdicts_applied_rejected_and_queued(sim: Sim) -> None:
    rid = sim.world.run_id
    pause = m.submit(sim.store, m.pause(rid, "CO2 low"), **AS_ALICE)
    release = m.submit(sim.store, m.release(rid, "go on"), **AS_ALICE)
    assert m.verdict_of(pause, engine_running=False).text == m.QUEUED_TEXT
    assert m.QUEUED_TEXT == "queued: no engine is running — it applies when the engine starts"
    assert m.verdict_of(pause, engine_running=True).state == "waiting"
    sim.engine.step()
    applied = m.verdict_of(sim.store.get_command(pause.id), engine_running=False)
    assert applied.line() == f"command {pause.id} · pause run {rid}: applied (run now paused)"
    rejected = m.verdict_of(sim.store.get_command(release.id), engine_running=True)
    assert (rejected.state, rejected.final, rejected.tone) == ("rejected", True, "fault")
    assert rejected.text.startswith(f"rejected: run {rid}: cannot release while paused")


def test_a_qc_answer_without_its_values_is_rejected_by_the_engine(sim: Sim) -> None:
    """What an older console or a script might send: the engine's reason is the verdict."""
    rid = sim.world.run_id
    gate = {"measure": "FOXA2_LMX1A_pct", "unit": "%", "min": 60.0, "on_fail": "hold"}
    p = sim.store.insert_prompt(rid, kind="task", text="QC", actor="engine", choices=[gate])
    cmd = sim.store.insert_command(
        "answer", actor="bob", run_id=rid, args={"prompt": p.id, "answer": {"done": True}}
    )
    sim.engine.step()
    v = m.verdict_of(sim.store.get_command(cmd.id), engine_running=True)
    assert v.text == "rejected: this step records QC values: give FOXA2_LMX1A_pct (%)"
    assert sim.store.get_prompt(p.id).state == "open"


def test_release_and_confirm_store_queue_their_commands(sim: Sim) -> None:
    rid = sim.world.run_id
    with pytest.raises(m.ConsoleInputError, match="give a reason to release run"):
        m.submit(sim.store, m.release(rid, ""), **AS_ALICE)
    rel = m.submit(sim.store, m.release(rid, "QC reviewed: FOXA2 58 % accepted"), **AS_ALICE)
    assert (rel.verb, rel.run_id, rel.reason) == (
        "release",
        rid,
        "QC reviewed: FOXA2 58 % accepted",
    )
    req = m.confirm_store("incubator slots and the OT-2 deck checked against the run")
    assert (req.verb, req.run_id, req.irreversible, req.needs_reason) == (
        "confirm-store", None, True, True,
    )  # fmt: skip
    # A supervisor's word (their role, on a database with accounts), not a signed action.
    assert req.action.value == "confirm-store" and not req.signed
    with pytest.raises(m.ConsoleInputError, match="give a reason to confirm the devices"):
        m.submit(sim.store, m.confirm_store(" "), who=ConsoleUser("carol"), now=WALL_START)
    cmd = m.submit(sim.store, req, who=ConsoleUser("carol"), now=WALL_START)
    assert (cmd.verb, cmd.run_id, cmd.actor, cmd.args) == ("confirm-store", None, "carol", {})
    assert m.describe_command(cmd) == "confirm the devices were checked (the held engine goes on)"


def test_the_start_of_a_new_run_is_found_even_once_applied(sim: Sim) -> None:
    rid = sim.world.run_id
    start = m.run_command(sim.store, rid, "start")
    assert start is not None and start.state == "applied"
    assert m.run_command(sim.store, rid, "abort") is None
