"""Generated Opentrons protocols (drivers/opentrons_protocol.py).

Every generated protocol here also runs through opentrons 8.8.2's own simulator
(check_locally), which is what a robot's analysis does; opentrons is imported once per session.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from datetime import datetime
from typing import Any

import pytest

from labctl.drivers import opentrons_protocol as op
from labctl.drivers.opentrons_protocol import (
    DeckLayout,
    DeckLayoutError,
    GenerationError,
    OutOfTips,
    check_locally,
    generate,
    plan_protocol,
)
from labctl.errors import DeviceFault
from labctl.jobs import Op, WorkcellRoles, expand
from labctl.plan.resolve import resolve
from tests.helpers import load

SIX = "corning_6_wellplate_16.8ml_flat"
NINETY_SIX = "corning_96_wellplate_360ul_flat"
ALL_SIX = ["A1", "B1", "A2", "B2", "A3", "B3"]
EVIL = '"); import os; os.system("rm -rf /") #'
EVIL_LINES = "a'''\nimport os\nos.system('x')\n\"\"\"\\"


@pytest.fixture(scope="session", autouse=True)
def _opentrons_imported() -> None:
    """The ~3 s opentrons import, once: check a protocol no test checks."""
    check_locally(generate(feed(add_ul=500.0, remove_ul=0.0), DeckLayout.default("OT-2"), "OT-2"))


def feed(**kw: Any) -> dict[str, Any]:
    """LH_RUN params as labctl.jobs builds them for a feed."""
    p: dict[str, Any] = {
        "plate": "P1",
        "task": "d3-feed-0900",
        "title": "full change, 2 mL/well",
        "day": 3,
        "labware": SIX,
        "wells": list(ALL_SIX),
        "kind": "feed",
        "change": "full",
        "fraction": 1.0,
        "remove_ul": 2000.0,
        "add_ul": 2000.0,
        "dose": "fresh",
        "wash": None,
        "recipe": "KSR with LDN193189 100 nM",
        "medium": [["KSR", 1.0]],
        "factors": {"LDN193189": "100 nM"},
        "deck_slot": 1,
    }
    p.update(kw)
    return p


def addition(**kw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "plate": "P1",
        "task": "d1-add-Y-1500",
        "title": "add Y to 10 µM for 1 h",
        "day": 1,
        "labware": SIX,
        "wells": list(ALL_SIX),
        "kind": "addition",
        "compound": "Y-27632",
        "conc": "10 µM",
        "stock_ul": 2.002,
        "pulse_s": 3600.0,
        "well_before_ul": 2000.0,
        "deck_slot": 1,
    }
    p.update(kw)
    return p


def washout(**kw: Any) -> dict[str, Any]:
    p = feed(
        kind="washout",
        compound="Y-27632",
        remove_ul=2002.002,
        add_ul=2000.0,
        wash={"medium": "KSR", "volume_ul": 2000.0, "times": 1},
    )
    for key in ("change", "fraction", "dose"):
        del p[key]
    p.update(kw)
    return p


def calls(source: str, name: str) -> list[list[Any]]:
    """The literal arguments of every call of ``name`` in ``source`` (others as None)."""
    found = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
    ]
    return [[_value(a) for a in node.args] for node in sorted(found, key=lambda n: n.lineno)]


def _value(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def group_lists(source: str) -> list[list[str]]:
    """The well groups of the generated ``for group in [...]`` loop."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.For) and getattr(node.target, "id", "") == "group":
            return ast.literal_eval(node.iter)
    raise AssertionError("no group loop")


def tips_by_role(layout: DeckLayout, check: op.CheckResult) -> dict[str, int]:
    out = {role: 0 for role in layout.tip_capacity()}
    for mount, n in check.tips.items():
        role = layout.role_of_mount(mount)
        assert role is not None
        out[role] += n
    return out


# ------------------------------------------------------------------ simulated on both robots

JOBS = {
    "feed-full": feed(),
    "feed-half": feed(change="half", fraction=0.5, remove_ul=1000.0, add_ul=1000.0),
    "feed-top-up": feed(change="top-up", remove_ul=0.0, add_ul=500.0),
    "feed-washes": feed(wash={"medium": "PBS", "volume_ul": 1000.0, "times": 2}),
    "addition": addition(),
    "washout": washout(),
}
# Tips each job takes from the main and the small racks (both robots): a new tip per well
# for spent liquid, one per plate column for fresh liquid, stock and mix tips per well.
EXPECTED_TIPS = {
    "feed-full": {"tips": 6 + 3, "small_tips": 0},
    "feed-half": {"tips": 6 + 3, "small_tips": 0},
    "feed-top-up": {"tips": 1, "small_tips": 0},
    "feed-washes": {"tips": 6 + 2 * (3 + 6) + 3, "small_tips": 0},
    "addition": {"tips": 6, "small_tips": 6},
    "washout": {"tips": 6 + (3 + 6) + 3, "small_tips": 0},
}


@pytest.mark.parametrize("robot", ["OT-2", "Flex"])
@pytest.mark.parametrize("job", list(JOBS))
def test_every_kind_passes_the_opentrons_simulator(robot: str, job: str) -> None:
    layout = DeckLayout.default(robot)  # type: ignore[arg-type]
    gen = plan_protocol(JOBS[job], layout, robot)  # type: ignore[arg-type]
    result = check_locally(gen.source)
    assert gen.tips == EXPECTED_TIPS[job]
    assert tips_by_role(layout, result) == gen.tips
    assert result.commands > sum(gen.tips.values())
    assert f'"robotType": {robot!r}' in gen.source
    assert "'apiLevel': " not in gen.source and "\"apiLevel\": '2.18'" in gen.source
    ast.parse(gen.source)
    # One run-time parameter per rack role used, full racks by default.
    used = {role for role, n in EXPECTED_TIPS[job].items() if n}
    assert gen.run_time_parameters == {op.TIP_PARAMETERS[role]: 0 for role in used}


def test_volumes_and_parts_of_a_full_feed_with_washes() -> None:
    gen = plan_protocol(
        feed(wash={"medium": "PBS", "volume_ul": 1000.0, "times": 2}),
        DeckLayout.default("OT-2"),
        "OT-2",
    )
    assert group_lists(gen.source) == [["A1", "B1"], ["A2", "B2"], ["A3", "B3"]]
    # 2 mL in two 1000 µL parts with the 1000 µL pipette; washes of 1 mL in one part.
    assert calls(gen.source, "remove") == [
        [None, None, None, [1000.0, 1000.0]],
        [None, None, None, [1000.0]],
    ]
    assert calls(gen.source, "add") == [
        [None, None, None, None, [1000.0]],
        [None, None, None, None, [1000.0, 1000.0]],
    ]
    assert (gen.medium_ul, gen.wash_ul, gen.waste_ul) == (12000.0, 12000.0, 24000.0)
    assert "for _ in range(2):" in gen.source


def test_a_96_well_feed_is_split_by_column_and_by_pipette_volume() -> None:
    # A P300 with 200 µL tips: 250 µL per well goes in two equal parts.
    layout = DeckLayout.from_deck(
        {"pipette": "p300_single_gen2", "tip_rack": "opentrons_96_filtertiprack_200ul"}, "OT-2"
    )
    params = feed(labware=NINETY_SIX, wells="all", remove_ul=250.0, add_ul=250.0)
    gen = plan_protocol(params, layout, "OT-2")
    groups = group_lists(gen.source)
    assert len(groups) == 12
    assert groups[0] == ["A1", "B1", "C1", "D1", "E1", "F1", "G1", "H1"]
    assert groups[11][-1] == "H12"
    assert calls(gen.source, "remove") == [[None, None, None, [125.0, 125.0]]]
    assert calls(gen.source, "add") == [[None, None, None, None, [125.0, 125.0]]]
    assert gen.tips == {"tips": 96 + 12, "small_tips": 0}
    assert (gen.medium_ul, gen.waste_ul) == (24000.0, 24000.0)
    assert tips_by_role(layout, check_locally(gen.source)) == gen.tips


def test_volumes_are_split_into_equal_parts_rounded_to_a_tenth() -> None:
    layout = DeckLayout.default("OT-2")
    # 2002.002 µL: three parts (1000 + 1000 + 2 would leave 2 µL below the P1000's minimum).
    parts = calls(plan_protocol(washout(), layout, "OT-2").source, "remove")[0][3]
    assert parts == [667.3, 667.3, 667.4]
    # 50 µL is below the P1000's 100 µL: the P20 does it in three parts.
    gen = plan_protocol(feed(labware=NINETY_SIX, remove_ul=50.0, add_ul=50.0), layout, "OT-2")
    assert calls(gen.source, "remove")[0][0] is None
    assert "remove(small, small_rates, group, [16.7, 16.7, 16.6])" in gen.source
    assert gen.tips == {"tips": 0, "small_tips": 6 + 3}
    # 15 µL fits both pipettes of a Flex in one part: the smaller one does it.
    gen = plan_protocol(
        feed(labware=NINETY_SIX, remove_ul=15.0, add_ul=15.0), DeckLayout.default("Flex"), "Flex"
    )
    assert "add(small, small_rates, medium['A1'], group, [15.0])" in gen.source


def test_small_stock_volumes_use_the_small_pipette_and_refuse_below_its_range() -> None:
    gen = plan_protocol(addition(), DeckLayout.default("OT-2"), "OT-2")
    (args,) = calls(gen.source, "spike")
    assert args[3] == ALL_SIX and args[4] == [2.0] and args[7:] == [500.5, 3]
    assert gen.stock_ul == 12.0
    # Flex: 2 µL needs the 50 µL pipette's low-volume mode.
    flex = plan_protocol(addition(), DeckLayout.default("Flex"), "Flex")
    assert "small.configure_for_volume(2.0)" in flex.source
    with pytest.raises(GenerationError, match="intermediate"):
        plan_protocol(addition(stock_ul=0.3), DeckLayout.default("OT-2"), "OT-2")
    inter = plan_protocol(
        addition(stock_ul=0.3, intermediate_ul=3.0), DeckLayout.default("OT-2"), "OT-2"
    )
    assert calls(inter.source, "spike")[0][4] == [3.0]


# ------------------------------------------------------------------ injection


def _shape(source: str) -> str:
    """The module's AST with every literal value masked."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            node.value = "<literal>"
    return ast.dump(tree, include_attributes=False)


@pytest.mark.parametrize("evil", [EVIL, EVIL_LINES, "x\\", "{0}{}%s\x00\u2028"])
@pytest.mark.parametrize("job", ["feed-washes", "addition", "washout"])
def test_labels_cannot_change_the_program(evil: str, job: str) -> None:
    layout = DeckLayout.default("Flex")
    benign = JOBS[job]
    hostile = {
        **benign,
        "title": evil,
        "recipe": evil,
        "compound": evil,
        "plate": evil,
        "task": evil,
        "day": evil,
        "medium": [[evil, 1.0]],
        "factors": {evil: evil},
    }
    if benign.get("wash"):
        hostile["wash"] = {**benign["wash"], "medium": evil}
    good = generate(benign, layout, "Flex")
    bad = generate(hostile, layout, "Flex")
    assert _shape(bad) == _shape(good)
    names = {n.id for n in ast.walk(ast.parse(bad)) if isinstance(n, ast.Name)}
    assert "os" not in names
    # The label arrived, as text inside literals, whitespace folded to spaces.
    folded = " ".join(evil.split())
    texts = [n.value for n in ast.walk(ast.parse(bad)) if isinstance(n, ast.Constant)]
    assert any(isinstance(t, str) and folded in t for t in texts)


def test_a_hostile_label_still_simulates() -> None:
    params = {**JOBS["feed-washes"], "recipe": EVIL_LINES}
    params["wash"] = {**params["wash"], "medium": EVIL}
    assert check_locally(generate(params, DeckLayout.default("OT-2"), "OT-2")).commands > 0


@pytest.mark.parametrize(
    "change",
    [
        {"labware": "corning_6_wellplate_16.8ml_flat'); import os #"},
        {"wells": ["A1", "A1'] + __import__('os').system('x') + ['"]},
        {"remove_ul": "1000); import os #"},
        {"add_ul": float("nan")},
        {"add_ul": True},
        {"recipe": 12},
        {"wash": {"medium": "PBS", "volume_ul": 1000.0, "times": "2); import os #"}},
        {"deck_slot": "1'); import os #"},
        {"kind": "feed'); import os #"},
    ],
)
def test_values_of_the_wrong_type_or_shape_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(GenerationError):
        generate({**feed(), **change}, DeckLayout.default("OT-2"), "OT-2")


# ------------------------------------------------------------------ determinism


def test_the_same_job_on_another_plate_and_day_gives_the_same_bytes() -> None:
    layout = DeckLayout.default("OT-2")
    a = generate(feed(), layout, "OT-2")
    b = generate(
        feed(plate="P7", task="d9-feed-1000", title="day 9: full change", day=9), layout, "OT-2"
    )
    assert a == b
    assert a.encode() == generate(feed(), layout, "OT-2").encode()
    for text in ("P1", "d3-feed", "full change, 2 mL"):
        assert text not in a
    # Different liquid handling does change it.
    assert generate(feed(add_ul=1500.0), layout, "OT-2") != a


def test_the_tips_used_before_change_only_the_run_time_parameters() -> None:
    layout = DeckLayout.default("OT-2")
    fresh = plan_protocol(addition(), layout, "OT-2")
    used = plan_protocol(addition(), layout, "OT-2", first_tips={"tips": 100, "small_tips": 17})
    assert used.source.encode() == fresh.source.encode()
    assert used.sha256 == fresh.sha256
    assert fresh.run_time_parameters == {"first_tip": 0, "first_small_tip": 0}
    assert used.run_time_parameters == {"first_tip": 100, "first_small_tip": 17}
    assert used.first_tips == {"tips": 100, "small_tips": 17}
    # The protocol reads them: the starting tip comes from the parameter, nothing is fixed.
    assert "big.starting_tip = big_racks[big_first // 96].wells()[big_first % 96]" in used.source
    assert "big_first = ctx.params.first_tip" in used.source
    assert "small_first = ctx.params.first_small_tip" in used.source
    # A feed uses no small tips: no parameter for them, and a value for them is not sent.
    feed_job = plan_protocol(feed(), layout, "OT-2", first_tips={"tips": 5, "small_tips": 9})
    assert feed_job.run_time_parameters == {"first_tip": 5}
    assert "first_small_tip" not in feed_job.source


def declared_parameters(source: str) -> list[dict[str, Any]]:
    """The keyword arguments of every ``parameters.add_int(...)`` in ``add_parameters``."""
    tree = ast.parse(source)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "add_parameters"]
    assert len(funcs) == 1  # module level, where opentrons looks for it
    out = []
    for node in ast.walk(funcs[0]):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr == "add_int"
            out.append({k.arg: ast.literal_eval(k.value) for k in node.keywords})
    return out


def test_tip_parameters_are_declared_with_the_racks_range() -> None:
    layout = DeckLayout.from_deck({"tips": [9, 10, 11], "small_tips": 7}, "OT-2")
    source = generate(addition(), layout, "OT-2", first_tips={"tips": 200})
    assert declared_parameters(source) == [
        {
            "variable_name": "first_tip",
            "display_name": "First main tip",
            "description": "first unused tip in the main pipette's racks",
            "default": 0,
            "minimum": 0,
            "maximum": 3 * 96 - 1,
        },
        {
            "variable_name": "first_small_tip",
            "display_name": "First small tip",
            "description": "first unused tip in the small pipette's racks",
            "default": 0,
            "minimum": 0,
            "maximum": 95,
        },
    ]
    # Labels cannot reach the declarations: they hold fixed names and numbers only.
    hostile = generate({**addition(), "compound": EVIL}, layout, "OT-2")
    assert declared_parameters(hostile) == declared_parameters(source)


SCHEDULE = """\
media:
  - {days: "0-2", medium: M1}
factors:
  - {compound: A, conc: 1 uM, days: "0-2"}
feeds:
  - {days: 0, change: full}
  - {days: 1, change: half}
  - {days: 2, change: full, wash: {medium: PBS, times: 2}}
additions:
  - {compound: Y, conc: 10 uM, days: 1, at: "15:00", pulse: 1 h}
"""


def test_real_jobs_from_a_plan_generate_and_simulate() -> None:
    """Every LH_RUN job labctl.jobs makes for a small protocol, as it makes them."""
    loaded = load(SCHEDULE)
    assert loaded.protocol is not None, [d.format() for d in loaded.diagnostics]
    plan = resolve(loaded.protocol, plates=2, start=datetime(2027, 3, 1), timezone="UTC")
    roles = WorkcellRoles("ot2", "inc", "arm", "op", {"P1": 10, "P2": 11})
    layout = DeckLayout.default("OT-2")
    sources = set()
    for chain in expand(plan, ["P1", "P2"], roles):
        for job in chain.jobs:
            if job.op is Op.LH_RUN:
                sources.add(generate(job.params, layout, "OT-2"))
    # feed full, feed half, addition, washout, feed with washes; both plates give the same.
    assert len(sources) == 5
    for source in sources:
        check_locally(source)


# ------------------------------------------------------------------ tips


def test_tips_running_out_is_reported_with_the_counts() -> None:
    layout = DeckLayout.default("OT-2")
    assert layout.tip_capacity() == {"tips": 192, "small_tips": 96}
    plan_protocol(feed(), layout, "OT-2", first_tips={"tips": 192 - 9})  # exactly enough
    with pytest.raises(OutOfTips) as exc:
        plan_protocol(feed(), layout, "OT-2", first_tips={"tips": 192 - 8})
    assert exc.value.short == {"tips": (9, 8)}
    washes = feed(labware=NINETY_SIX, wells="all", remove_ul=100.0, add_ul=100.0)
    washes["wash"] = {"medium": "PBS", "volume_ul": 100.0, "times": 2}
    with pytest.raises(GenerationError, match="add tip racks"):
        plan_protocol(washes, layout, "OT-2")


def picked(analysis: Any) -> list[tuple[str, str]]:
    """(slot, well) of every tip a robot's analysis picks up."""
    slots = {
        c["result"]["labwareId"]: c["params"]["location"].get("slotName")
        for c in analysis.commands
        if c["commandType"] == "loadLabware"
    }
    return [
        (slots[c["params"]["labwareId"]], c["params"]["wellName"])
        for c in analysis.commands
        if c["commandType"] == "pickUpTip"
    ]


def test_tip_rack_positions_continue_across_racks() -> None:
    """The robot's own analysis (opentrons 8.8.2) with the value the run would get."""
    from labctl.simulators.opentrons_analysis import analyse_protocol

    layout = DeckLayout.default("OT-2")
    job = plan_protocol(feed(), layout, "OT-2", first_tips={"tips": 95})
    files = [("feed.py", job.source.encode())]
    analysis = analyse_protocol(files, job.run_time_parameters, derive=False)
    assert analysis.result == "ok"
    # Rack 1 (slot 10) ends at H12; the run goes on in rack 2 (slot 11) from A1.
    assert picked(analysis) == [("10", "H12")] + [
        ("11", w) for w in "A1 B1 C1 D1 E1 F1 G1 H1".split()
    ]
    assert [(p["variableName"], p["value"]) for p in analysis.run_time_parameters] == [
        ("first_tip", 95.0)
    ]
    # The robot refuses a value outside the racks.
    beyond = analyse_protocol(files, {"first_tip": 192}, derive=False)
    assert beyond.result == "not-ok"
    assert "between 0 and 191" in beyond.errors[0]["detail"]
    # And with the defaults (a run created without values) it starts at rack 1's A1.
    assert picked(analyse_protocol(files, None, derive=False))[0] == ("10", "A1")


# ------------------------------------------------------------------ deck layout


def test_the_workcell_deck_of_devices_md_and_its_defaults() -> None:
    layout = DeckLayout.from_deck(
        {"plate": 1, "reservoir": 2, "tips": [10, 11], "stocks": 4}, "OT-2"
    )
    assert (layout.plates, layout.medium, layout.tips, layout.stocks) == (
        ("1",),
        "2",
        ("10", "11"),
        "4",
    )
    assert (layout.waste, layout.wash, layout.small_tips, layout.trash) == ("3", "5", ("7",), None)
    # Two plate slots: the medium's default slot 2 is taken, so it moves to the first free
    # slot of the fallback order, and the roles after it move along.
    two = DeckLayout.from_deck({"plate": [1, 2]}, "OT-2")
    assert (two.plates, two.medium, two.waste, two.stocks, two.wash) == (
        ("1", "2"),
        "3",
        "5",
        "4",
        "6",
    )
    flex = DeckLayout.from_deck({"plate": 1, "tips": ["A2", 8]}, "Flex")
    assert (flex.plates, flex.tips, flex.trash) == (("D1",), ("A2", "B2"), "A3")
    assert flex.small_tips == ("B1",)  # B2 was taken by a tip rack
    none = DeckLayout.from_deck({"small_pipette": None}, "OT-2")
    assert none.small_pipette is None and none.tip_capacity() == {"tips": 192}


@pytest.mark.parametrize(
    "deck,robot,message",
    [
        ({"plate": 1, "reservoir": 1}, "OT-2", "both in slot 1"),
        ({"plate": 12}, "OT-2", "fixed trash"),
        ({"plate": "E5"}, "Flex", "not a slot"),
        ({"reservoirs": 2}, "OT-2", "unknown deck key"),
        ({"trash": "B2"}, "Flex", "column 1 or 3"),
        ({"pipette": "flex_1channel_1000"}, "OT-2", "not an OT-2 pipette"),
        ({"tip_rack": "nest_1_reservoir_195ml"}, "OT-2", "must be a tip rack"),
        ({"medium_labware": "no_such_reservoir"}, "OT-2", "unknown Opentrons labware"),
    ],
)
def test_bad_decks_are_refused(deck: dict[str, Any], robot: str, message: str) -> None:
    with pytest.raises(DeckLayoutError, match=message):
        DeckLayout.from_deck(deck, robot)  # type: ignore[arg-type]


def test_bad_jobs_are_refused_with_the_reason() -> None:
    layout = DeckLayout.default("OT-2")
    cases = [
        (feed(labware="no_such_plate"), "unknown Opentrons labware"),
        (feed(wells=["A1", "Z9"]), "not a well"),
        (feed(add_ul=20000.0), "well capacity"),
        (feed(deck_slot=3), "not a culture plate slot"),
        (washout(remove_ul=None), "remove_ul"),
        (feed(kind="dance"), "kind must be"),
        (addition(stock_ul=300.0), "does not fit one tube"),  # 6 x 300 µL > 1.5 mL
    ]
    for params, message in cases:
        with pytest.raises(GenerationError, match=message):
            generate(params, layout, "OT-2")
    with pytest.raises(GenerationError, match="for an OT-2"):
        generate(feed(), layout, "Flex")


# ------------------------------------------------------------------ local check


def test_a_failing_protocol_is_a_device_fault_naming_the_device_and_is_cached() -> None:
    good = generate(feed(), DeckLayout.default("OT-2"), "OT-2")
    bad = good.replace(
        "            pip.pick_up_tip()\n            for volume in parts:",
        "            for volume in parts:",
        1,
    )
    assert bad != good
    with pytest.raises(DeviceFault) as exc:
        check_locally(bad, device="ot2-a")
    assert exc.value.device == "ot2-a"
    assert re.search(r"tip", str(exc.value), re.I)
    digest = op.hashlib.sha256(bad.encode()).hexdigest()
    assert isinstance(op._CHECKS[digest], op._Failure)
    with pytest.raises(DeviceFault, match="fails in the simulator"):
        check_locally(bad, device="ot2-a")
    first = check_locally(good)
    assert check_locally(good) is first
    assert first.sha256 == op.hashlib.sha256(good.encode()).hexdigest()


# --- several plates in one run (a batch) --------------------------------------------------


def test_a_batch_feeds_each_plate_in_turn_and_counts_k_times_the_tips_and_liquids() -> None:
    layout = DeckLayout.from_deck({"plate": [1, 3]}, "OT-2")
    one = plan_protocol(feed(), layout, "OT-2")
    two = plan_protocol(feed(batch=[1, 3]), layout, "OT-2")
    assert two.tips["tips"] == 2 * one.tips["tips"]
    assert (two.medium_ul, two.waste_ul) == (2 * one.medium_ul, 2 * one.waste_ul)
    assert (
        "plates = [ctx.load_labware('corning_6_wellplate_16.8ml_flat', '1', 'culture plate 1'), "
        "ctx.load_labware('corning_6_wellplate_16.8ml_flat', '3', 'culture plate 3')]"
    ) in two.source
    assert "    for plate in plates:\n" in two.source
    # opentrons' own simulator runs it: every well of both plates, twice the tips
    result = check_locally(two.source)
    assert result.tips_total == two.tips["tips"] + two.tips.get("small_tips", 0)
    assert check_locally(one.source).commands < result.commands


def test_a_batch_names_only_culture_plate_slots_each_once() -> None:
    layout = DeckLayout.from_deck({"plate": [1, 3]}, "OT-2")
    with pytest.raises(GenerationError, match="named twice"):
        plan_protocol(feed(batch=[1, 1]), layout, "OT-2")
    with pytest.raises(GenerationError, match="not a culture plate slot"):
        plan_protocol(feed(batch=[1, 2]), layout, "OT-2")
    with pytest.raises(GenerationError, match="batch must list"):
        plan_protocol(feed(batch=[]), layout, "OT-2")


@pytest.mark.parametrize("robot", ["OT-2", "Flex"])
def test_pipettes_are_loaded_on_the_mounts_the_layout_names(robot: str) -> None:
    """The driver sets the mounts to where the robot carries each pipette: the protocol loads
    them there, the opentrons simulator runs it, and its tips per mount count for the right
    racks."""
    default = DeckLayout.default(robot)  # type: ignore[arg-type]
    swapped = dataclasses.replace(default, pipette_mount="left", small_pipette_mount="right")
    gen = plan_protocol(JOBS["addition"], swapped, robot)  # type: ignore[arg-type]
    loads = [(c[0], c[1]) for c in calls(gen.source.replace("ctx.", ""), "load_instrument")]
    assert loads == [(default.pipette, "left"), (default.small_pipette, "right")]
    result = check_locally(gen.source)
    assert set(result.tips) == {"left", "right"}
    assert tips_by_role(swapped, result) == gen.tips == EXPECTED_TIPS["addition"]
    assert swapped.role_of_mount("left") == "tips"
    assert swapped.role_of_mount("right") == "small_tips"
    for mounts in (("left", "left"), ("right", "middle")):
        with pytest.raises(DeckLayoutError, match="pipette mounts must be left and right"):
            dataclasses.replace(default, pipette_mount=mounts[0], small_pipette_mount=mounts[1])
