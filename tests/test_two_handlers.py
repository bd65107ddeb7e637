"""Every liquid handler of a workcell is used: plates are shared between two robots, each
plate fed by its own robot all run long, and neither robot does two things at once (read
from the fake devices' own records)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from labctl.clock import VirtualClock
from labctl.engine import Engine, EngineConfig, register_run
from labctl.errors import PlanError
from labctl.jobs import WorkcellRoles, expand
from labctl.plan.resolve import resolve
from labctl.store import Store
from labctl.validate import load_protocol
from labctl.workcell import parse_workcell
from tests.fakes import FakeLiquidHandler, fake_workcell

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 30, 0, 0, tzinfo=timezone.utc)
WORKCELL = """
name: bay
timezone: UTC
devices:
  ot2-sim: {driver: opentrons, deck: {plate: [1, 3]}}
  ot2-b: {driver: opentrons, deck: {plate: [1, 3]}}
  inc-sim: {driver: cytomat, slots: 20}
  arm-sim: {driver: pf400, host: h, stations: {inc-sim/transfer: 1, ot2-sim/1: 2,
            ot2-sim/3: 3, ot2-b/1: 4, ot2-b/3: 5}}
  operator: {driver: operator}
"""
PLATES = ["P1", "P2", "P3", "P4"]


def test_roles_share_the_plates_between_every_liquid_handler() -> None:
    roles = WorkcellRoles.from_workcell(parse_workcell(WORKCELL, "bay.yaml"), PLATES)
    assert roles.more_handlers == (("ot2-b", (1, 3)),)
    assert [roles.handler_for(p)[0] for p in PLATES] == ["ot2-sim", "ot2-b"] * 2
    proto = load_protocol(ROOT / "protocols" / "kriks2011_da.yaml")
    plan = resolve(proto, plates=4, start=datetime(2026, 12, 1, 9, 0), timezone="UTC")
    by_plate = {
        c.plate: {j.device for j in c.jobs if j.op.value == "lh_run"}
        for c in expand(plan, PLATES, roles)
        if c.plate in PLATES and c.kind == "feed"
    }
    assert by_plate == {"P1": {"ot2-sim"}, "P2": {"ot2-b"}, "P3": {"ot2-sim"}, "P4": {"ot2-b"}}


def test_an_arm_must_reach_every_liquid_handler() -> None:
    text = WORKCELL.replace(" ot2-b/1: 4, ot2-b/3: 5", "")
    with pytest.raises(PlanError, match="no station for ot2-b/1, ot2-b/3"):
        WorkcellRoles.from_workcell(parse_workcell(text, "bay.yaml"), PLATES)


def test_a_run_on_two_robots_feeds_every_plate_once_and_overlaps_them(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    store = Store.open(tmp_path / "run.db", clock, durable=False)
    wc = parse_workcell(WORKCELL, "bay.yaml")
    roles = WorkcellRoles.from_workcell(wc, PLATES)
    proto = load_protocol(ROOT / "protocols" / "kriks2011_da.yaml")
    plan = resolve(proto, plates=4, start=datetime(2026, 12, 1, 9, 0), timezone="UTC")
    rid = register_run(
        store, clock, proto, plan, roles, name="two robots", workcell_name=wc.name,
        workcell_text=WORKCELL, actor="tester",
    )  # fmt: skip
    devices = fake_workcell(clock, arm=True)
    devices["ot2-b"] = FakeLiquidHandler("ot2-b", clock, None, durations={"lh_run": 600.0})
    store.insert_command("start", actor="tester", run_id=rid, reason="go")
    engine = Engine(store, clock, devices, EngineConfig())
    end = clock.now() + timedelta(days=40)
    engine.run(until=lambda: store.get_run(rid).state == "completed" or clock.now() > end)
    assert store.get_run(rid).state == "completed"

    fed = {name: [a["job"] for a in devices[name].actions] for name in ("ot2-sim", "ot2-b")}
    for name, jobs in fed.items():
        assert len(jobs) == len(set(jobs)) == 26 * 2, name  # each robot: its two plates
        assert {j.split("/")[1] for j in jobs} == (
            {"P1", "P3"} if name == "ot2-sim" else {"P2", "P4"}
        )
        ops = sorted(
            (datetime.fromisoformat(o["start"]), o["duration"]) for o in devices[name].ops.values()
        )
        for (s0, d0), (s1, _) in zip(ops, ops[1:], strict=False):
            assert s1 >= s0 + timedelta(seconds=d0), f"{name} did two things at once"
    # The two robots work at the same time: some feed of one overlaps one of the other.
    a = [
        (datetime.fromisoformat(o["start"]), o["duration"]) for o in devices["ot2-sim"].ops.values()
    ]
    b = [(datetime.fromisoformat(o["start"]), o["duration"]) for o in devices["ot2-b"].ops.values()]
    overlap = sum(
        1
        for s, d in a
        for t, e in b
        if s < t + timedelta(seconds=e) and t < s + timedelta(seconds=d)
    )
    assert overlap > 0
    moves = Counter(x["destination"] for x in devices["arm-sim"].actions)
    assert moves["ot2-b/1"] + moves["ot2-b/3"] == 26 * 2
    store.close()


@pytest.mark.parametrize("name", ["two-robots.yaml", "automated-weekdays.yaml", "hypoxic-bay.yaml"])
def test_the_shipped_example_workcells_are_valid_and_use_every_robot(
    name: str, tmp_path: Path
) -> None:
    from labctl.drivers.registry import build_devices

    path = ROOT / "docs" / "examples" / name
    wc = parse_workcell(path.read_text(encoding="utf-8"), str(path))
    roles = WorkcellRoles.from_workcell(wc, [f"P{i}" for i in range(1, 7)])
    handlers = {roles.handler_for(f"P{i}")[0] for i in range(1, 7)}
    assert handlers == {d.name for d in wc.devices.values() if d.driver == "opentrons"}
    clock = VirtualClock(T0)
    with Store.open(tmp_path / "s.db", clock) as store:
        assert set(build_devices(wc, store, clock)) >= {d for d in wc.devices}
