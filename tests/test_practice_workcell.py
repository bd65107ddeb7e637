"""The parts of the practice workcell (``labctl simulators up``) in one process, on a
virtual clock: the Cytomat's state across a restart, the carries between its transfer
station and the deck, the simulated operator's decisions, the database's clock, and the
folder's lock. The whole thing, in separate processes, is tests/test_simulators_up.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from labctl.cli.simulators_cmd import next_commands, practice_epoch
from labctl.clock import Epoch, VirtualClock
from labctl.engine import register_run
from labctl.engine.prompts import check_qc_answer
from labctl.errors import LabctlError, ParameterError
from labctl.jobs import WorkcellRoles
from labctl.plan.resolve import resolve
from labctl.simulators.cytomat import CytomatSim, cytomat_state, restore_cytomat
from labctl.simulators.practice import PracticeConfig, PracticeWorkcell
from labctl.simulators.practice_bot import ACTOR, OperatorBot
from labctl.simulators.practice_world import CannotCarry, PlateWorld
from labctl.store import Store
from labctl.store.models import Job
from labctl.validate import load_text
from labctl.workcell import parse_workcell
from tests.helpers import protocol_text

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
WORKCELL = """\
name: practice
timezone: UTC
devices:
  ot2-sim: {driver: opentrons, url: "http://127.0.0.1:31950", robot: OT-2, deck: {plate: [1, 3]}}
  inc-sim: {driver: cytomat, port: "socket://127.0.0.1:31951", slots: 10}
  operator: {driver: operator}
"""
PROTOCOL = protocol_text(
    """
    media: [{days: "0-1", medium: M1}]
    factors: [{compound: A, conc: 1 uM, days: "0-1"}]
    feeds: [{days: "0-1", change: full}]
    events:
      - {days: 1, kind: sample, title: count the cells, qc: [{measure: viability, unit: "%", min: 80, on_fail: hold}]}
    """
)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# --- the Cytomat across a restart -----------------------------------------------------------


def test_a_restored_cytomat_finishes_the_move_under_way_and_logs_it_once(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    log = tmp_path / "inc.jsonl"
    saved: list[dict[str, Any]] = []
    sim = CytomatSim(clock, name="inc", plates={3: "P3"}, action_log=log, on_change=saved.append)
    sim.handle_line("ll:in")
    clock.advance(60)
    assert sim.handle_line("mv:st 003").startswith("ok")  # a 15 s move, now under way
    clock.advance(5)
    state = saved[-1]  # the process is killed here
    assert state["op"]["kind"] == "retrieve" and state["slots"] == {}

    again = CytomatSim(clock, name="inc", action_log=log)
    restore_cytomat(again, state)
    assert again.busy
    clock.advance(10)
    assert again.transfer_station == "P3" and not again.busy
    assert [e["action"] for e in lines(log)] == ["init", "retrieve"]

    # Killed after logging the move but before saving its end: it ends, unlogged again.
    third = CytomatSim(clock, name="inc", action_log=log)
    restore_cytomat(third, state)
    assert third.transfer_station == "P3" and not third.busy
    assert [e["seq"] for e in lines(log)] == [1, 2]
    assert cytomat_state(third)["seq"] == 2


def test_a_state_with_slots_the_cytomat_lacks_is_refused(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    state = cytomat_state(CytomatSim(clock, name="inc", plates={40: "P40"}))
    from labctl.simulators.cytomat import CytomatConfig

    with pytest.raises(ValueError, match="slot 40"):
        restore_cytomat(CytomatSim(clock, CytomatConfig(slots=10), name="inc"), state)


# --- carrying plates ------------------------------------------------------------------------


def fetched(clock: VirtualClock, tmp: Path, slot: int = 1) -> CytomatSim:
    """A Cytomat whose plate of ``slot`` is on the transfer station."""
    sim = CytomatSim(clock, name="inc-sim", plates={1: "P1", 2: "P2"}, action_log=tmp / "inc.jsonl")
    sim.handle_line("ll:in")
    clock.advance(60)
    sim.handle_line(f"mv:st {slot:03d}")
    clock.advance(20)
    assert sim.transfer_station == f"P{slot}"
    return sim


def world(clock: VirtualClock, tmp: Path, sim: CytomatSim) -> PlateWorld:
    return PlateWorld(
        clock,
        sim,
        robot="ot2-sim",
        state=tmp / "operator.state.json",
        action_log=tmp / "operator.jsonl",
    )


def test_a_carry_is_done_once_and_the_incubator_learns_it(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    sim = fetched(clock, tmp_path)
    w = world(clock, tmp_path, sim)
    w.carry(7, "to_deck", "r1/P1", "r1:d0/P1/1")
    w.carry(7, "to_deck", "r1/P1", "r1:d0/P1/1")  # the same prompt again: nothing more
    assert sim.transfer_station is None and w.on_deck() == {"r1/P1": "P1"}
    with pytest.raises(CannotCarry, match="empty"):
        w.carry(8, "to_deck", "r1/P2", "r1:d0/P2/1")
    w.carry(9, "to_incubator", "r1/P1", "r1:d0/P1/3")
    assert sim.transfer_station == "P1" and w.on_deck() == {}
    assert [(e["step"], e["prompt"]) for e in lines(tmp_path / "operator.jsonl")] == [
        ("to_deck", 7),
        ("to_incubator", 9),
    ]
    # A new process finds the deck where it was.
    assert world(clock, tmp_path, sim).carried(9, "r1:d0/P1/3")


@pytest.mark.parametrize("taken", [True, False])
def test_a_carry_cut_off_by_a_kill_is_settled_from_where_the_plate_is(
    tmp_path: Path, taken: bool
) -> None:
    clock = VirtualClock(T0)
    sim = fetched(clock, tmp_path)
    state = {
        "version": 1,
        "deck": {},
        "carries": {
            "7": {"step": "to_deck", "plate": "r1/P1", "label": "P1", "job": "j", "said": "took"}
            | {"done": False}
        },
    }
    (tmp_path / "operator.state.json").write_text(json.dumps(state))
    if taken:  # killed after the plate left the transfer station, before it was recorded
        sim.take_from_transfer_station()
    w = world(clock, tmp_path, sim)
    assert w.settle()
    assert w.carried(7, "j") is taken
    assert w.on_deck() == ({"r1/P1": "P1"} if taken else {})
    assert len(lines(tmp_path / "operator.jsonl")) == (1 if taken else 0)


# --- the simulated operator -----------------------------------------------------------------


def register(store: Store) -> int:
    """A run of PROTOCOL on one plate of the practice workcell; its id."""
    res = load_text(PROTOCOL, "p.yaml")
    assert res.protocol is not None
    plan = resolve(res.protocol, plates=1, start=datetime(2026, 12, 1), timezone="UTC")
    roles = WorkcellRoles.from_workcell(parse_workcell(WORKCELL, "wc.yaml"), ["P1"])
    return register_run(
        store, store.clock, res.protocol, plan, roles,
        name="t", workcell_name="practice", workcell_text=WORKCELL, actor="t",
    )  # fmt: skip


class Bay:
    """A run registered on the practice workcell, a Cytomat, the deck and the bot."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = VirtualClock(T0)
        self.store = Store.open(tmp / "run.db", self.clock, durable=False)
        self.run = register(self.store)
        self.sim = fetched(self.clock, tmp)
        self.world = world(self.clock, tmp, self.sim)
        self.robot_log = tmp / "robot.jsonl"
        self.bot = OperatorBot(
            self.store,
            self.clock,
            self.world,
            robot_log=self.robot_log,
            robot_sync=lambda: None,
            robot_status=lambda run_id: None,
            log=tmp / "bot.log",
        )

    def job(self, op: str, step: str | None = None, nth: int = 0) -> Job:
        jobs = [
            j
            for j in self.store.jobs(self.run)
            if j.op == op and (step is None or j.spec["params"].get("step") == step)
        ]
        return jobs[nth]

    def ask(self, job: Job, kind: str = "task", choices: list[Any] | None = None) -> int:
        text = job.spec["params"].get("text") or f"{job.op} failed"
        return self.store.insert_prompt(
            self.run, kind=kind, text=text, actor="engine", choices=choices or [], job_id=job.id
        ).id

    def answers(self) -> dict[int, Any]:
        return {
            c.args["prompt"]: c.args["answer"]
            for c in self.store.pending_commands()
            if c.verb == "answer" and c.actor == ACTOR
        }


def test_the_bot_carries_the_plate_then_answers_after_a_person_would(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    pid = bay.ask(bay.job("prompt", "to_deck"))
    bay.bot.step()
    assert bay.answers() == {} and bay.sim.transfer_station == "P1"  # not yet: reacting
    bay.clock.advance(60 + 120)
    bay.bot.step()
    assert bay.answers() == {pid: {"done": True}}
    assert bay.sim.transfer_station is None and bay.world.on_deck() == {"r1/P1": "P1"}
    bay.bot.step()
    assert len(bay.answers()) == 1  # answered once
    assert "took plate P1" in (tmp_path / "bot.log").read_text()


def test_the_bot_gives_a_number_for_every_qc_measure(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    event = bay.job("prompt", "event")
    gates = event.spec["params"]["qc"]
    pid = bay.ask(event, choices=gates)
    bay.clock.advance(24 * 3600)
    bay.bot.step()
    answer = bay.answers()[pid]
    check_qc_answer(gates, answer)
    assert answer["qc"]["viability"] >= 80


def test_a_persons_answer_makes_the_bot_carry_the_plate(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    job = bay.job("prompt", "to_deck")
    pid = bay.ask(job)
    bay.store.insert_command(
        "answer", actor="ada", run_id=bay.run, args={"prompt": pid, "answer": {"done": True}}
    )
    bay.bot.step()
    assert bay.sim.transfer_station is None and bay.world.carried(pid, job.spec["key"])
    assert bay.answers() == {}  # the person answered; the bot only carried


def test_the_bot_retries_a_fetch_that_did_not_happen_and_says_done_to_one_that_did(
    tmp_path: Path,
) -> None:
    bay = Bay(tmp_path)
    fetch = bay.job("fetch")  # slot 1; its plate is on the transfer station
    done = bay.ask(fetch, "interrupted", ["done", "retry", "skip"])
    second = bay.job("fetch", nth=1)
    assert second.spec["params"]["slot"] == 1
    bay.clock.advance(60)
    bay.bot.step()
    assert bay.answers()[done] == {"choice": "done"}

    bay.sim.handle_line("mv:ts 001")  # the plate goes home: a fetch now would not have happened
    bay.clock.advance(20)
    again = bay.ask(second, "recovery", ["retry", "skip", "hold"])
    bay.clock.advance(60)
    bay.bot.step()
    assert bay.answers()[again] == {"choice": "retry"}


def test_the_bot_never_retries_a_liquid_handling_that_moved_liquid(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    lh = bay.job("lh_run")
    name = lh.spec["key"].replace(":", "_").replace("/", "_")
    robot = [
        {"event": "protocol_upload", "protocolId": "p1", "files": [f"{name}.abc.py"]},
        {"event": "run_created", "runId": "r1", "protocolId": "p1"},
        {"event": "run_action", "runId": "r1", "actionType": "play"},
        {"event": "command", "runId": "r1", "commandType": "aspirate"},
        {"event": "run_finished", "runId": "r1", "status": "failed"},
    ]
    bay.robot_log.write_text("".join(json.dumps(e) + "\n" for e in robot))
    partial = bay.ask(lh, "recovery", ["done", "skip", "hold"])
    plain = bay.ask(lh, "recovery", ["retry", "skip", "hold"])
    bay.clock.advance(60)
    bay.bot.step()
    assert bay.answers() == {partial: {"choice": "done"}, plain: {"choice": "hold"}}


def test_the_bot_retries_a_liquid_handling_the_robot_never_played(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    pid = bay.ask(bay.job("lh_run"), "recovery", ["retry", "skip", "hold"])
    bay.clock.advance(60)
    bay.bot.step()
    assert bay.answers() == {pid: {"choice": "retry"}}


def test_the_bot_does_the_upkeep_the_robot_asks_for_then_retries(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    pid = bay.store.insert_prompt(
        bay.run,
        kind="recovery",
        text="P1: lh_run on ot2-sim failed: refill tips: 9 tips needed. Retry it, skip it",
        actor="engine",
        choices=["retry", "skip", "hold"],
        job_id=bay.job("lh_run").id,
    ).id
    bay.clock.advance(60)
    bay.bot.step()
    assert bay.answers() == {pid: {"choice": "retry"}}
    assert "put full tip racks in" in (tmp_path / "bot.log").read_text()


def test_decisions_are_left_to_a_person(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    bay.store.insert_prompt(
        bay.run, kind="decision", text="QC failed", actor="engine", choices=["release", "abort"]
    )
    bay.clock.advance(3600)
    bay.bot.step()
    bay.bot.step()
    assert bay.answers() == {}
    assert (tmp_path / "bot.log").read_text().count("a decision for a person") == 1


# --- the database's clock, and the folder -----------------------------------------------------


def test_the_practice_clock_is_kept_changed_only_without_live_runs_or_removed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "run.db"
    with Store.open(db, VirtualClock(T0), durable=False) as store:
        first = practice_epoch(store, db, 1440.0, None)
        assert first is not None and store.clock_epoch() == first
        run = register(store)  # a live run, planned on that clock
        assert practice_epoch(store, db, 1440.0, T0) == first  # started again: the same clock
        with pytest.raises(ParameterError, match="--pace 1440"):
            practice_epoch(store, db, 60.0, None)
        with pytest.raises(ParameterError, match="--pace 1440"):
            practice_epoch(store, db, None, None)
        store.transition(
            "run", run, "aborted", expected_from="planned", actor="t", reason="done with it"
        )
        assert practice_epoch(store, db, None, None) is None and store.clock_epoch() is None
        new = practice_epoch(store, db, 60.0, T0)
        assert isinstance(new, Epoch) and new.start == T0 and new.pace == 60.0
        register(store)  # now live, in paced time: real time is refused
        with pytest.raises(ParameterError, match="--pace 60"):
            practice_epoch(store, db, None, None)


def test_a_folder_is_served_by_one_simulators_process(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    with Store.open(tmp_path / "run.db", clock, durable=False) as store:
        first = PracticeWorkcell(clock, store, PracticeConfig(tmp_path / "wc"))
        try:
            with pytest.raises(LabctlError, match="served already"):
                PracticeWorkcell(clock, store, PracticeConfig(tmp_path / "wc"))
        finally:
            first.stop()
        PracticeWorkcell(clock, store, PracticeConfig(tmp_path / "wc")).stop()
        state = json.loads((tmp_path / "wc" / "devices" / "inc-sim.state.json").read_text())
        assert state["slots"] == {str(n): f"P{n}" for n in range(1, 7)}


def test_the_workcell_file_names_real_drivers_and_scales_time_outs_with_the_pace(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(T0)
    with Store.open(tmp_path / "run.db", clock, durable=False) as store:
        wc = PracticeWorkcell(clock, store, PracticeConfig(tmp_path, port=40000, pace=1440))
        try:
            text = wc.workcell_text()
        finally:
            wc.stop()
    parsed = parse_workcell(text, "workcell.yaml")
    assert {d.name: d.driver for d in parsed.devices.values()} == {
        "ot2-sim": "opentrons",
        "inc-sim": "cytomat",
        "arm-sim": "pf400",
        "operator": "operator",
    }
    arm = parsed.devices["arm-sim"].settings
    assert (arm["host"], arm["port"], arm["status_port"]) == ("127.0.0.1", 40002, 40003)
    assert arm["stations"]["inc-sim/transfer"] == 1 and "ot2-sim/3" in arm["stations"]
    # A move's time-out leaves the wire the same real time at any pace (30 s beyond it).
    assert timedelta(seconds=float(arm["motion_timeout_s"]) / 1440) > timedelta(seconds=30)
    inc = parsed.devices["inc-sim"].settings
    assert inc["port"] == "socket://127.0.0.1:40001"
    assert float(inc["reply_timeout_s"]) == 720.0  # half a real second at 1440x
    assert timedelta(seconds=float(inc["move_timeout_s"]) / 1440) > timedelta(seconds=30)


def test_the_readme_shows_the_commands_simulators_up_prints() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "labctl simulators up --out /tmp/simwc --db /tmp/simwc/run.db --pace 1440" in readme
    for line in next_commands("/tmp/simwc/workcell.yaml", "/tmp/simwc/run.db", 2):
        shown = line.strip() if line.startswith("  ") else f"# {line}"
        assert f"\n{shown}\n" in readme, shown
