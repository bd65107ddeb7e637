"""Expansion of a plan into chains of device jobs (labctl.jobs)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from labctl.errors import PlanError
from labctl.jobs import (
    Chain,
    Durations,
    Hold,
    Op,
    Role,
    WorkcellRoles,
    expand,
    natural_key,
    on_deck,
)
from labctl.plan.resolve import Plan, resolve
from labctl.workcell import parse_workcell
from tests.helpers import load

SCHEDULE = """\
media:
  - {days: "0-2", medium: M1}
factors:
  - {compound: A, conc: 1 uM, days: "0-2"}
feeds:
  - {days: 0, change: full}
  - {days: 1, change: half, after_previous: 24 h, window: 30 min}
  - {days: 2, change: full, wash: {medium: PBS, times: 2}}
additions:
  - {compound: Y, conc: 10 uM, days: 1, at: "15:00", pulse: 1 h}
environment:
  - {days: "0-1", o2: 5%}
events:
  - days: 2
    at: "13:00"
    kind: sample
    title: QC stain
    instructions: stain it
    duration: 30 min
    qc: [{measure: pct, unit: "%", min: 60, on_fail: hold}]
"""

PLATES = ["P1", "P2"]


def small_plan() -> Plan:
    res = load(SCHEDULE)
    assert res.protocol is not None, [d.format() for d in res.diagnostics]
    return resolve(res.protocol, plates=2, start=datetime(2027, 3, 1), timezone="Europe/Stockholm")


def arm_roles(plates: list[str] = PLATES) -> WorkcellRoles:
    return WorkcellRoles("ot2", "inc", "arm", "op", {p: 10 + i for i, p in enumerate(plates)})


def by_key(chains: list[Chain]) -> dict[str, Chain]:
    return {c.key: c for c in chains}


def test_chain_count_order_and_keys() -> None:
    plan = small_plan()
    chains = expand(plan, PLATES, arm_roles(), max_out_s=1200)
    # 2 environment tasks once each, 6 other tasks on both plates
    assert len(chains) == 2 + 6 * 2
    assert [c.key for c in chains] == [
        "d0-environment/*",
        "d0-feed-0900/P1",
        "d0-feed-0900/P2",
        "d1-feed-0900/P1",
        "d1-feed-0900/P2",
        "d1-add-Y-1500/P1",
        "d1-add-Y-1500/P2",
        "d1-washout-Y-1600/P1",
        "d1-washout-Y-1600/P2",
        "d2-environment/*",
        "d2-feed-0900/P1",
        "d2-feed-0900/P2",
        "d2-sample-1300/P1",
        "d2-sample-1300/P2",
    ]
    # every params dict crosses into the store as JSON
    json.dumps([[j.params for j in c.jobs] for c in chains])


def test_feed_chain_with_incubator_and_arm() -> None:
    plan = small_plan()
    c = by_key(expand(plan, PLATES, arm_roles(), max_out_s=1200))["d0-feed-0900/P2"]
    assert [j.op for j in c.jobs] == [Op.FETCH, Op.TO_DECK, Op.LH_RUN, Op.TO_INCUBATOR, Op.STORE]
    assert [j.role for j in c.jobs] == [
        Role.INCUBATOR,
        Role.MOVER,
        Role.LIQUID_HANDLER,
        Role.MOVER,
        Role.INCUBATOR,
    ]
    assert [j.device for j in c.jobs] == ["inc", "arm", "ot2", "arm", "inc"]
    assert [j.seq for j in c.jobs] == [0, 1, 2, 3, 4]
    assert [j.key for j in c.jobs] == [f"d0-feed-0900/P2/{i}" for i in range(5)]
    assert all(j.task_key == "d0-feed-0900" and j.plate == "P2" for j in c.jobs)
    assert c.main_seq == 2 and c.main.op is Op.LH_RUN
    assert not c.manual
    assert c.max_out_s == 1200
    assert c.jobs[0].params["slot"] == 11 and c.jobs[4].params["slot"] == 11
    assert c.jobs[1].params["source"] == "inc/transfer"
    assert c.jobs[1].params["destination"] == "ot2/1"
    assert c.jobs[3].params["source"] == "ot2/1"
    assert c.jobs[3].params["destination"] == "inc/transfer"
    task = plan.tasks[1]
    assert (c.due, c.window_start, c.window_end) == (task.due, task.window_start, task.window_end)
    lh = c.jobs[2].params
    assert lh["kind"] == "feed" and lh["change"] == "full"
    assert lh["labware"] == "corning_6_wellplate_16.8ml_flat"
    assert lh["wells"] == ["A1", "B1", "A2", "B2", "A3", "B3"]
    assert lh["remove_ul"] == 2000 and lh["add_ul"] == 2000
    assert lh["wash"] is None
    assert lh["recipe"] == "M1 with A 1 µM"
    assert lh["medium"] == [["M1", 1.0]] and lh["factors"] == {"A": "1 µM"}
    d = Durations()
    assert [j.duration_s for j in c.jobs] == [
        d.fetch,
        d.move_arm,
        d.lh_overhead + 6 * d.lh_per_well_full,
        d.move_arm,
        d.store,
    ]
    # out of the incubator: from the end of the fetch to the start of the store
    assert c.out_s() == 2 * d.move_arm + d.lh_overhead + 6 * d.lh_per_well_full
    # places: transfer station while fetched and while returned, deck slot in between
    assert c.holds == (
        Hold("inc:transfer", 0, 1),
        Hold("ot2:deck", 1, 3, (1,)),
        Hold("inc:transfer", 3, 4),
    )


def test_tie_half_change_addition_washout_and_wash_params() -> None:
    plan = small_plan()
    ch = by_key(expand(plan, PLATES, arm_roles()))
    d = Durations()
    half = ch["d1-feed-0900/P1"]
    assert half.previous_key == "d0-feed-0900/P1" and half.after_previous_s == 86400
    assert half.jobs[2].params["change"] == "half"
    assert half.jobs[2].params["remove_ul"] == 1000 and half.jobs[2].params["add_ul"] == 1000
    assert half.jobs[2].duration_s == d.lh_overhead + 6 * d.lh_per_well_partial
    assert half.max_out_s is None  # not given to expand

    add = ch["d1-add-Y-1500/P1"]
    p = add.jobs[2].params
    assert p["kind"] == "addition" and p["compound"] == "Y" and p["conc"] == "10 µM"
    assert p["stock_ul"] == pytest.approx(2.002, abs=1e-3)  # 2 mL to 10 uM from 10 mM
    assert p["pulse_s"] == 3600
    assert add.jobs[2].duration_s == d.lh_overhead + 6 * d.lh_per_well_addition

    wo = ch["d1-washout-Y-1600/P2"]
    p = wo.jobs[2].params
    assert p["kind"] == "washout" and p["compound"] == "Y"
    assert p["remove_ul"] == pytest.approx(2002.002, abs=1e-3)  # the well before the washout
    assert p["wash"] == {"medium": "M1", "volume_ul": 2000.0, "times": 1}
    assert p["add_ul"] == 2000
    assert wo.jobs[2].duration_s == d.lh_overhead + 6 * d.lh_per_wash + 6 * d.lh_per_well_full

    washed = ch["d2-feed-0900/P1"].jobs[2]
    assert washed.params["wash"] == {"medium": "PBS", "volume_ul": 2000.0, "times": 2}
    assert washed.duration_s == d.lh_overhead + 6 * d.lh_per_well_full + 6 * 2 * d.lh_per_wash


def test_event_and_environment_chains() -> None:
    plan = small_plan()
    ch = by_key(expand(plan, PLATES, arm_roles()))
    ev = ch["d2-sample-1300/P2"]
    assert len(ev.jobs) == 1
    j = ev.jobs[0]
    assert (j.op, j.role, j.device) == (Op.PROMPT, Role.OPERATOR, "op")
    assert ev.manual and ev.max_out_s is None
    assert j.duration_s == 30 * 60 / 2  # the event's 30 min shared by the run's 2 plates
    assert j.params["kind"] == "sample" and j.params["title"] == "QC stain"
    assert j.params["instructions"] == "stain it"
    assert j.params["qc"] == [
        {"measure": "pct", "unit": "%", "min": 60.0, "max": None, "on_fail": "hold", "by_s": None}
    ]
    assert j.params["text"] == "Plate P2: QC stain"
    task = next(t for t in plan.tasks if t.key == "d2-sample-1300")
    assert (ev.window_start, ev.window_end) == (task.window_start, task.window_end)

    env = ch["d0-environment/*"]
    assert env.plate == "*" and len(env.jobs) == 1 and not env.manual
    assert (env.jobs[0].op, env.jobs[0].device) == (Op.SETPOINT, "inc")
    assert env.jobs[0].params == {
        "task": "d0-environment",
        "temperature_c": 37.0,
        "co2_pct": 5.0,
        "o2_pct": 5.0,
    }
    back = ch["d2-environment/*"].jobs[0].params
    assert back["o2_pct"] is None  # back to ambient


def test_simulated_roles_operator_carries_plates() -> None:
    plan = small_plan()
    roles = WorkcellRoles.simulated(PLATES)
    assert (roles.liquid_handler, roles.incubator, roles.mover, roles.operator) == (
        "ot2-sim",
        "inc-sim",
        None,
        "operator",
    )
    c = by_key(expand(plan, PLATES, roles))["d0-feed-0900/P2"]
    assert [(j.op, j.device) for j in c.jobs] == [
        (Op.FETCH, "inc-sim"),
        (Op.PROMPT, "operator"),
        (Op.LH_RUN, "ot2-sim"),
        (Op.PROMPT, "operator"),
        (Op.STORE, "inc-sim"),
    ]
    assert c.manual  # a person carries the plate
    assert c.jobs[1].params["step"] == "to_deck"
    assert c.jobs[1].params["text"] == (
        "Take plate P2 from the transfer station of inc-sim and put it on deck slot 1 of ot2-sim."
    )
    assert c.jobs[3].params["step"] == "to_incubator"
    assert c.jobs[1].duration_s == Durations().move_operator
    assert c.holds[1] == Hold("ot2-sim:deck", 1, 3, (1, 2))


def test_no_incubator_no_mover_everything_by_the_operator() -> None:
    plan = small_plan()
    roles = WorkcellRoles("ot2", None, None, "op", {})
    ch = by_key(expand(plan, PLATES, roles))
    c = ch["d0-feed-0900/P1"]
    assert [j.op for j in c.jobs] == [Op.PROMPT, Op.PROMPT, Op.LH_RUN, Op.PROMPT, Op.PROMPT]
    assert [j.params.get("step") for j in c.jobs] == [
        "fetch",
        "to_deck",
        None,
        "to_incubator",
        "store",
    ]
    assert c.jobs[0].params["text"] == "Take plate P1 out of the incubator."
    assert c.holds == (Hold("ot2:deck", 1, 3, (1,)),)  # no transfer station
    env = ch["d0-environment/*"]
    assert env.manual and env.jobs[0].op is Op.PROMPT and env.jobs[0].device == "op"
    assert env.jobs[0].params["text"] == "Set the incubator to 37 degC, 5% CO2, 5% O2."


def test_run_prefix_keeps_runs_apart() -> None:
    plan = small_plan()
    ch = by_key(expand(plan, PLATES, arm_roles(), run="r7"))
    c = ch["r7:d1-feed-0900/P1"]
    assert c.task_key == "d1-feed-0900" and c.run == "r7"
    assert c.previous_key == "r7:d0-feed-0900/P1"
    assert c.jobs[2].key == "r7:d1-feed-0900/P1/2"


def test_expand_rejects_bad_plate_lists() -> None:
    plan = small_plan()
    with pytest.raises(PlanError, match="at least one plate"):
        expand(plan, [], arm_roles())
    with pytest.raises(PlanError, match="unique"):
        expand(plan, ["P1", "P1"], arm_roles())
    with pytest.raises(PlanError, match="plate P3 has no slot in incubator inc"):
        expand(plan, ["P1", "P3"], arm_roles())


WORKCELL = """\
name: bay-1
timezone: Europe/Stockholm
devices:
  ot2-a:   {driver: opentrons, url: "http://10.0.0.12:31950", deck: {plate: [1, 3], reservoir: 2}}
  inc-1:   {driver: cytomat, port: /dev/ttyUSB0, slots: 4}
  arm:     {driver: operator}
operators:
  hours: {mon-fri: "08:00-18:00"}
"""


def test_roles_from_workcell() -> None:
    wc = parse_workcell(WORKCELL, "wc.yaml")
    r = WorkcellRoles.from_workcell(wc, ["P1", "P2"], taken=[1, 3])
    assert (r.liquid_handler, r.incubator, r.mover, r.operator) == ("ot2-a", "inc-1", None, "arm")
    assert r.slots == {"P1": 2, "P2": 4}
    assert r.deck_slots == (1, 3)
    with pytest.raises(PlanError, match="inc-1' has 4 slots"):
        WorkcellRoles.from_workcell(wc, ["P1", "P2", "P3"], taken=[1, 3])


def test_roles_from_workcell_with_arm_and_manual_incubator() -> None:
    wc = parse_workcell(
        "name: x\ndevices:\n  lh: {driver: opentrons}\n  box: {driver: manual-incubator}\n"
        "  pf: {driver: sim-arm}\n",
        "wc.yaml",
    )
    r = WorkcellRoles.from_workcell(wc, ["P1"])
    assert (r.liquid_handler, r.incubator, r.mover, r.operator) == ("lh", None, "pf", "operator")
    assert r.deck_slots == (1,)
    no_lh = parse_workcell("name: x\ndevices:\n  inc: {driver: cytomat}\n", "wc.yaml")
    with pytest.raises(PlanError, match="no liquid handler"):
        WorkcellRoles.from_workcell(no_lh, ["P1"])


def test_natural_key_orders_plate_numbers() -> None:
    assert sorted(["P10", "P2", "P1"], key=natural_key) == ["P1", "P2", "P10"]


def test_on_deck_moves_the_plate_to_the_chosen_position() -> None:
    plan = small_plan()
    c = by_key(expand(plan, PLATES, WorkcellRoles.simulated(PLATES)))["d0-feed-0900/P2"]
    to_deck, lh, back = (on_deck(j, 2) for j in c.jobs[1:4])
    assert to_deck.params["deck_slot"] == 2 and to_deck.params["destination"] == "ot2-sim/2"
    assert to_deck.params["text"] == (
        "Take plate P2 from the transfer station of inc-sim and put it on deck slot 2 of ot2-sim."
    )
    assert lh.params["deck_slot"] == 2 and lh.params["deck_positions"] == [1, 2]
    assert back.params["source"] == "ot2-sim/2"
    assert back.params["text"].startswith("Take plate P2 from deck slot 2 of ot2-sim")
    assert c.jobs[1].params["deck_slot"] == 1  # the original is not changed
    assert on_deck(c.jobs[0], 2) is c.jobs[0]  # the fetch has no deck position
    assert on_deck(c.jobs[2], 1) is c.jobs[2]


_ARM_WC = (
    "name: x\ndevices:\n  ot2-a: {driver: opentrons, url: 'http://h:31950', robot: OT-2,\n"
    "          deck: {plate: [1, 3]}}\n  inc-1: {driver: cytomat, port: /dev/ttyUSB0, slots: 4}\n"
    "  pf: {driver: pf400, host: h, stations: {%s}}\n"
)


def test_a_pf400_carries_when_it_reaches_the_transfer_station_and_every_deck_position() -> None:
    wc = parse_workcell(_ARM_WC % "inc-1/transfer: 1, ot2-a/1: 2, ot2-a/3: 3", "wc.yaml")
    r = WorkcellRoles.from_workcell(wc, ["P1", "P2"])
    assert (r.liquid_handler, r.incubator, r.mover) == ("ot2-a", "inc-1", "pf")
    assert r.deck_slots == (1, 3)


def test_a_pf400_missing_a_station_is_refused_naming_it() -> None:
    wc = parse_workcell(_ARM_WC % "inc-1/transfer: 1, ot2-a/1: 2", "wc.yaml")
    with pytest.raises(PlanError, match=r"plate mover 'pf' has no station for ot2-a/3"):
        WorkcellRoles.from_workcell(wc, ["P1"])
    manual = parse_workcell(
        "name: x\ndevices:\n  ot2-a: {driver: opentrons, deck: {plate: 1}}\n"
        "  box: {driver: manual-incubator}\n  pf: {driver: pf400, host: h, stations: {a: 1}}\n",
        "wc.yaml",
    )
    with pytest.raises(PlanError, match="needs an automated incubator"):
        WorkcellRoles.from_workcell(manual, ["P1"])
