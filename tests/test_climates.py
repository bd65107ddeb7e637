"""Plates live in the incubator that holds the climate their protocol asks for each day: a
workcell with a hypoxic incubator seeds them there for a low-O2 phase and moves each plate
to the normoxic one when the phase ends (labctl.roles, labctl.jobs, and a whole dry run
judged from the incubators', the arm's and the robot's own logs)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from labctl.engine.machines import JobState, TaskState
from labctl.engine.prompts import doubt_choices, doubt_meaning
from labctl.engine.records import ChainRec, JobRec
from labctl.errors import PlanError
from labctl.jobs import Chain, Op, WorkcellRoles, climates, expand, homes, seeded_climate
from labctl.plan.resolve import Plan, resolve
from labctl.roles import AMBIENT, same_climate
from labctl.schedule.scheduler import schedule
from labctl.workcell import parse_workcell
from tests.helpers import load
from tests.test_simulate import SMALL, assert_feeds_exact, read_jsonl, robot_runs, run_simulate

WORKCELL = """
name: bay
timezone: UTC
devices:
  ot2-a: {driver: opentrons, deck: {plate: [1, 3]}}
  inc-hyp: {driver: liconic, levels: 11, cassettes: 2, setpoints: {o2: 4%}}
  inc-1: {driver: cytomat, slots: 40, setpoints: {temperature: 37 degC, co2: 5%}}
  arm: {driver: pf400, host: h, stations: {inc-1/transfer: 1, inc-hyp/transfer: 2,
        ot2-a/1: 3, ot2-a/3: 4}}
  person: {driver: operator}
"""

PROTOCOL = """\
media:
  - {days: "0-3", medium: M1}
feeds:
  - {days: "0-3", change: full}
environment:
  - {days: "%s", o2: 4%%}
"""


def plan_with_hypoxia(days: str) -> Plan:
    res = load(PROTOCOL % days)
    assert res.protocol is not None, [d.format() for d in res.diagnostics]
    return resolve(res.protocol, plates=2, start=datetime(2027, 3, 1), timezone="UTC")


def bay(text: str = WORKCELL, plates: int = 2, plan: Plan | None = None) -> WorkcellRoles:
    wc = parse_workcell(text, "bay.yaml")
    p = plan or plan_with_hypoxia("0-1")
    return WorkcellRoles.from_workcell(
        wc, [f"P{i + 1}" for i in range(plates)], climates=climates(p)
    )


# --- which incubator holds which climate ---------------------------------------------------


def test_the_ambient_incubator_is_the_main_one_and_the_hypoxic_one_gets_slots_too() -> None:
    roles = bay()
    assert roles.incubator == "inc-1"  # listed second, but it holds 37 degC, 5% CO2, air
    assert roles.slots == {"P1": 1, "P2": 2}
    assert roles.more_slots == {"inc-hyp": {"P1": 1, "P2": 2}}
    assert roles.incubator_for(AMBIENT) == "inc-1"
    assert roles.incubator_for((37.0, 5.0, 4.0)) == "inc-hyp"
    assert roles.incubator_for((37.0, 5.0, 5.0)) is None  # nobody holds 5% O2


def test_a_run_without_a_low_o2_phase_takes_no_slot_in_the_hypoxic_incubator() -> None:
    res = load(PROTOCOL.split("environment")[0])
    assert res.protocol is not None
    plan = resolve(res.protocol, plates=2, start=datetime(2027, 3, 1), timezone="UTC")
    assert bay(plan=plan).more_slots == {}


def test_slots_other_runs_hold_are_left_in_every_incubator() -> None:
    wc = parse_workcell(WORKCELL, "bay.yaml")
    roles = WorkcellRoles.from_workcell(
        wc,
        ["P1", "P2"],
        climates=climates(plan_with_hypoxia("0-1")),
        taken_in={"inc-1": {1, 2}, "inc-hyp": {1}},
    )
    assert roles.slots == {"P1": 3, "P2": 4}
    assert roles.more_slots["inc-hyp"] == {"P1": 2, "P2": 3}


def test_the_hypoxic_incubator_is_checked_for_room_and_for_the_arms_station() -> None:
    with pytest.raises(PlanError, match="'inc-hyp' has 22 slots"):
        bay(plates=23)
    text = WORKCELL.replace(" inc-hyp/transfer: 2,", "")
    with pytest.raises(PlanError, match="no station for inc-hyp/transfer"):
        bay(text)


def test_climates_compare_within_a_twentieth_and_o2_air_only_with_air() -> None:
    assert same_climate((37.0, 5.0, None), (37.04, 4.96, None))
    assert not same_climate((37.0, 5.0, None), (37.0, 5.0, 21.0))
    assert not same_climate((37.0, 5.0, 4.0), (37.0, 5.0, 4.2))


# --- the chains ---------------------------------------------------------------------------


def _by_key(chains: list[Chain]) -> dict[str, Chain]:
    return {c.key: c for c in chains}


def test_plates_are_seeded_in_the_hypoxic_incubator_and_moved_when_the_phase_ends() -> None:
    plan = plan_with_hypoxia("0-1")
    roles = bay(plan=plan)
    assert same_climate(seeded_climate(plan), (37.0, 5.0, 4.0))
    chains = _by_key(expand(plan, ["P1", "P2"], roles))
    assert "d0-environment/*" not in chains  # nothing to do: the plates start there
    assert not any(j.op is Op.SETPOINT for c in chains.values() for j in c.jobs)
    for day, inc in ((0, "inc-hyp"), (1, "inc-hyp"), (2, "inc-1"), (3, "inc-1")):
        feed = chains[f"d{day}-feed-0900/P1"]
        assert feed.jobs[0].op is Op.FETCH and feed.jobs[0].device == inc
        assert feed.jobs[-1].op is Op.STORE and feed.jobs[-1].device == inc
        assert feed.jobs[1].params["source"] == f"{inc}/transfer"
    move = chains["d2-environment/P2"]
    assert [(j.op, j.device) for j in move.jobs] == [
        (Op.FETCH, "inc-hyp"),
        (Op.CARRY, "arm"),
        (Op.STORE, "inc-1"),
    ]
    assert move.main.op is Op.CARRY
    assert move.jobs[1].params["source"] == "inc-hyp/transfer"
    assert move.jobs[1].params["destination"] == "inc-1/transfer"
    assert (move.jobs[0].params["slot"], move.jobs[2].params["slot"]) == (2, 2)
    assert [(h.place, h.first, h.last) for h in move.holds] == [
        ("inc-hyp:transfer", 0, 1),
        ("inc-1:transfer", 1, 2),
    ]


def test_a_phase_in_the_middle_moves_the_plates_there_and_back() -> None:
    plan = plan_with_hypoxia("1-2")
    roles = bay(plan=plan)
    keys = [t.key for t in plan.tasks]
    assert keys[1] == "d1-environment" and keys[4] == "d3-environment"
    assert homes(plan, roles) == ["inc-1", "inc-hyp", "inc-hyp", "inc-hyp", "inc-1", "inc-1"]
    chains = _by_key(expand(plan, ["P1", "P2"], roles))
    there, back = chains["d1-environment/P1"], chains["d3-environment/P1"]
    assert (there.jobs[0].device, there.jobs[2].device) == ("inc-1", "inc-hyp")
    assert (back.jobs[0].device, back.jobs[2].device) == ("inc-hyp", "inc-1")


def test_without_an_arm_a_person_carries_the_plate_between_the_transfer_stations() -> None:
    text = "\n".join(
        line for line in WORKCELL.splitlines() if "arm" not in line and "ot2-a/1" not in line
    )
    plan = plan_with_hypoxia("0-1")
    roles = bay(text, plan=plan)
    assert roles.mover is None
    move = _by_key(expand(plan, ["P1"], roles))["d2-environment/P1"]
    carry = move.jobs[1]
    assert carry.op is Op.PROMPT and carry.params["step"] == "carry"
    assert "transfer station of inc-hyp" in carry.params["text"]
    assert "transfer station of inc-1" in carry.params["text"]


def test_one_automated_incubator_has_its_setpoints_changed_as_before() -> None:
    text = WORKCELL.replace(
        "  inc-hyp: {driver: liconic, levels: 11, cassettes: 2, setpoints: {o2: 4%}}\n", ""
    )
    text = text.replace(" inc-hyp/transfer: 2,", "")
    plan = plan_with_hypoxia("0-1")
    roles = bay(text, plan=plan)
    assert roles.climates == () and roles.more_slots == {}
    chains = _by_key(expand(plan, ["P1"], roles))
    assert chains["d0-environment/*"].jobs[0].op is Op.SETPOINT
    assert chains["d2-environment/*"].jobs[0].device == "inc-1"


def test_the_moves_are_scheduled_one_transfer_station_at_a_time() -> None:
    plan = plan_with_hypoxia("0-1")
    chains = expand(plan, [f"P{i}" for i in range(1, 7)], bay(plates=6, plan=plan))
    sched = schedule(chains, now=plan.start)
    moves = [c for c in chains if c.kind == "environment"]
    assert len(moves) == 6 and not sched.late
    # the hypoxic incubator's transfer station holds one plate at a time: from its fetch
    # to the end of the arm's carry, no other plate is put there
    held = sorted((sched.slots[c.jobs[0].key].start, sched.slots[c.jobs[1].key].end) for c in moves)
    for (_, end), (start, _) in zip(held, held[1:], strict=False):
        assert start >= end


# --- in-doubt words for a move -------------------------------------------------------------


def _move_rec() -> ChainRec:
    plan = plan_with_hypoxia("0-1")
    c = _by_key(expand(plan, ["P1"], bay(plan=plan)))["d2-environment/P1"]
    jobs = [
        JobRec(
            i + 1, 1, j.seq, j.device, j.op, j.key, j.params, j.duration_s, JobState.PENDING,
            None, None, 0, j.role.value,
        )
        for i, j in enumerate(c.jobs)
    ]  # fmt: skip
    return ChainRec(
        1, 1, c.key, c.task_key, 1, c.plate, TaskState.PENDING, c.due, c.window_start,
        c.window_end, None, False, None, None, None, [], main_seq=c.main_seq,
        holds=list(c.holds), jobs=jobs,
    )  # fmt: skip


def test_a_move_in_doubt_is_asked_in_its_own_words() -> None:
    c = _move_rec()
    assert doubt_choices(c) == ["not-done", "out", "moved", "done"]
    assert "incubator it leaves" in doubt_meaning("out", c)
    assert "incubator it moves to" in doubt_meaning("moved", c)
    assert "fed" not in doubt_meaning("done", c)


# --- a whole dry run, judged from the devices' own logs ------------------------------------


def _incubator_of_each_feed(out: Path) -> dict[tuple[str, str], str]:
    """(plate, day of the robot run) -> the incubator the plate was fetched from for it."""
    fetched: list[tuple[str, str, str]] = []  # time, plate, incubator
    for log, inc in (("hypoxic_actions.jsonl", "inc-hyp"), ("incubator_actions.jsonl", "inc-sim")):
        for e in read_jsonl(out / "devices" / log):
            if e["action"] == "retrieve":
                fetched.append((e["time"], e["plate"], inc))
    out_map: dict[tuple[str, str], str] = {}
    for r in robot_runs(out):
        assert r.job is not None
        before = [f for f in fetched if f[1] == r.job.plate and f[0] <= r.created.isoformat()]
        out_map[(r.job.plate, r.job.task_key)] = max(before)[2]
    return out_map


@pytest.mark.parametrize("hands", [False, True], ids=["arm", "operator"])
def test_a_dry_run_feeds_the_low_o2_days_from_the_hypoxic_incubator(
    tmp_path: Path, hands: bool
) -> None:
    proto = tmp_path / "hyp.yaml"
    proto.write_text(SMALL + '  environment:\n    - {days: "0-1", o2: 4%}\n', encoding="utf-8")
    out = tmp_path / "out"
    assert run_simulate(proto, out, *(["--no-arm"] if hands else []), plates=2) == 0
    wc = (out / "workcell.yaml").read_text(encoding="utf-8")
    assert "inc-hyp:" in wc and "o2: 4%" in wc
    assert_feeds_exact(out)
    where = _incubator_of_each_feed(out)
    assert where == {
        (p, f"d{d}-feed-0900"): ("inc-hyp" if d < 2 else "inc-sim")
        for p in ("P1", "P2")
        for d in range(4)
    }
    # each plate left the hypoxic incubator once for good and arrived in the other once
    hyp = read_jsonl(out / "devices" / "hypoxic_actions.jsonl")
    cyto = read_jsonl(out / "devices" / "incubator_actions.jsonl")
    for p in ("P1", "P2"):
        assert [e["action"] for e in hyp if e.get("plate") == p] == ["retrieve", "store"] * 2 + [
            "retrieve"
        ]
        assert [e["action"] for e in cyto if e.get("plate") == p][:1] == ["store"]
    if hands:
        carried = [
            e
            for e in read_jsonl(out / "devices" / "operator_actions.jsonl")
            if e["action"] == "carry"
        ]
        assert sorted(e["plate"] for e in carried) == ["P1", "P2"]
    else:
        placed = [
            e
            for e in read_jsonl(out / "devices" / "arm_actions.jsonl")
            if e["command"] == "PlacePlate" and e["result"] == "placed"
        ]
        from labctl.simulators.workcell import ARM_STATIONS

        normoxic = ARM_STATIONS["inc-sim/transfer"]
        # back to the transfer station after each of 4 feeds, once more for the move
        # per plate: back after each of the 2 normoxic feeds, and once for the move
        assert sum(1 for e in placed if e["station"] == normoxic) == 2 * (2 + 1)


def test_validate_refuses_an_o2_level_no_incubator_of_the_workcell_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labctl.cli.main import main

    proto = tmp_path / "hyp5.yaml"
    proto.write_text(SMALL + '  environment:\n    - {days: "0-1", o2: 5%}\n', encoding="utf-8")
    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "hypoxic-bay.yaml"
    assert main(["validate", "--workcell", str(example), str(proto)]) == 1
    said = capsys.readouterr()
    assert "hyp5.yaml:23:7: error:" in said.out + said.err
    assert "asks for 5% O2" in said.out + said.err and "inc-hyp holds 4%" in said.out + said.err
    ok = tmp_path / "hyp4.yaml"
    ok.write_text(SMALL + '  environment:\n    - {days: "0-1", o2: 4%}\n', encoding="utf-8")
    assert main(["validate", "--workcell", str(example), str(ok)]) == 0
