"""The device registry: workcell text -> devices, clear setting errors, device checks.

Serial incubators are reached over socket:// URLs served by the simulators on 127.0.0.1;
the robot check talks to the robot-server simulator.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labctl.clock import VirtualClock
from labctl.devices import OpState
from labctl.drivers.cytomat import CytomatDriver
from labctl.drivers.incubators import SerialIncubator
from labctl.drivers.liconic import LiconicDriver
from labctl.drivers.manual import ManualIncubator
from labctl.drivers.registry import (
    DeviceCheck,
    build_devices,
    check_devices,
    devices_check_cli,
    store_job_context,
)
from labctl.errors import DeviceError, LabctlError, ProtocolError
from labctl.jobs import Op
from labctl.operator import StoreOperator
from labctl.simulators.cytomat import CytomatConfig, CytomatSim
from labctl.simulators.liconic import LiconicSim
from labctl.simulators.opentrons_robot import RobotSimulator
from labctl.simulators.serial_link import SocketLink
from labctl.store import Store
from labctl.workcell import parse_workcell


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))


@pytest.fixture
def store(tmp_path: Path, clock: VirtualClock) -> Iterator[Store]:
    s = Store.open(tmp_path / "runs.sqlite", clock)
    yield s
    s.close()


@pytest.fixture
def cytomat_url(clock: VirtualClock) -> Iterator[tuple[CytomatSim, str]]:
    sim = CytomatSim(clock, CytomatConfig(slots=42, require_init=False), plates={5: "P1"})
    with SocketLink(sim) as link:
        yield sim, link.url


@pytest.fixture
def liconic_url(clock: VirtualClock) -> Iterator[str]:
    with SocketLink(LiconicSim(clock)) as link:
        yield link.url


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workcell(devices: str, file: str = "wc.yaml"):
    return parse_workcell("name: bay-1\ntimezone: Europe/Stockholm\ndevices:\n" + devices, file)


def test_builds_each_serial_and_manual_driver(
    clock: VirtualClock, store: Store, cytomat_url: tuple[CytomatSim, str], liconic_url: str
) -> None:
    sim, url = cytomat_url
    wc = workcell(
        f"  inc-1: {{driver: cytomat, url: '{url}', slots: 42, initialize: false,"
        " setpoints: {temperature: 37 degC, co2: 5%}}\n"
        f"  inc-hyp: {{driver: liconic, port: '{liconic_url}', cassettes: 2, levels: 11,"
        " slots: 22, setpoints: {o2: 4%}}\n"
        "  inc-2: {driver: manual-incubator}\n"
        "  arm: {driver: operator}\n"
    )
    devices = build_devices(wc, store, clock)
    assert sorted(devices) == ["arm", "inc-1", "inc-2", "inc-hyp"]  # no extra operator
    inc1, hyp = devices["inc-1"], devices["inc-hyp"]
    assert isinstance(inc1, SerialIncubator) and isinstance(inc1.driver, CytomatDriver)
    assert inc1.driver.slots == 42
    assert isinstance(hyp, SerialIncubator) and isinstance(hyp.driver, LiconicDriver)
    assert hyp.driver.levels == (11, 11)
    assert hyp.setpoints == {"temperature": 37.0, "co2": 5.0, "o2": 4.0}
    assert isinstance(devices["inc-2"], ManualIncubator)
    assert isinstance(devices["arm"], StoreOperator) and devices["arm"].name == "arm"

    # The built Cytomat reaches the simulator through the URL from the workcell.
    op = inc1.start_fetch("job-a", 5)
    clock.advance(sim.config.move_s + 1)
    assert inc1.poll(op).state is OpState.SUCCEEDED
    assert sim.transfer_station == "P1"
    inc1.close()


def test_an_operator_is_added_when_the_workcell_has_none(clock: VirtualClock, store: Store) -> None:
    devices = build_devices(workcell("  inc-2: {driver: manual-incubator}\n"), store, clock)
    assert sorted(devices) == ["inc-2", "operator"]
    assert isinstance(devices["operator"], StoreOperator)


def test_missing_port_names_device_key_and_example(clock: VirtualClock, store: Store) -> None:
    wc = workcell("  inc-1: {driver: cytomat, slots: 42}\n")
    with pytest.raises(ProtocolError) as exc:
        build_devices(wc, store, clock)
    assert [d.message for d in exc.value.diagnostics] == [
        "inc-1: 'port' is required (e.g. /dev/ttyUSB0 or socket://127.0.0.1:5001)"
    ]
    assert str(exc.value).startswith("wc.yaml:4:")


def test_unknown_driver_lists_the_known_ones(clock: VirtualClock, store: Store) -> None:
    wc = workcell("  arm: {driver: operator}\n  inc-9: {driver: cytomatt, port: /dev/ttyUSB0}\n")
    with pytest.raises(ProtocolError) as exc:
        build_devices(wc, store, clock)
    (diag,) = exc.value.diagnostics
    assert diag.line == 5
    assert diag.message == (
        "inc-9: unknown driver 'cytomatt' "
        "(known drivers: cytomat, liconic, manual-incubator, opentrons, operator, pf400)"
    )


def test_every_bad_setting_is_reported_at_once(clock: VirtualClock, store: Store) -> None:
    wc = workcell(
        "  a: {driver: cytomat, port: /dev/ttyUSB0, slots: many}\n"
        "  b: {driver: liconic, port: /dev/ttyUSB1, slots: 22}\n"
        "  c: {driver: liconic, port: /dev/ttyUSB1, levels: [11, 11], slots: 20}\n"
        "  d: {driver: cytomat, port: /dev/ttyUSB2, url: 'socket://127.0.0.1:1', slots: 4}\n"
        "  e: {driver: cytomat, port: /dev/ttyUSB3, slots: 4, setpoints: {co2: lots}}\n"
        "  f: {driver: opentrons, robot: OT-2, deck: {plate: 1}}\n"
        "  g: {driver: opentrons, url: 'ftp://robot', robot: OT-2, deck: {plate: 1}}\n"
        "  h: {driver: opentrons, url: 'http://10.0.0.12:31950', robot: OT-3000, deck: {plate: 1}}\n"
        "  i: {driver: cytomat, port: /dev/ttyUSB4, slots: 4, terminator: LF}\n"
    )
    with pytest.raises(ProtocolError) as exc:
        build_devices(wc, store, clock)
    assert [d.message for d in exc.value.diagnostics] == [
        "a: 'slots' must be a whole number, not 'many'",
        "b: 'levels' is required (levels per cassette: e.g. levels: 22 with cassettes: 2,"
        " or levels: [22, 22])",
        "c: 'slots' is 20 but cassettes and levels give 22",
        "d: give 'port' or 'url', not both",
        "e: setpoints.co2 must be a percentage like 5%, not 'lots'",
        "f: 'url' is required (e.g. http://10.0.0.12:31950)",
        "g: base_url must be http://host[:port], not 'ftp://robot'",
        "h: 'robot' must be OT-2 or Flex, not 'OT-3000'",
        "i: 'terminator' must be CR or CRLF, not 'LF'",
    ]
    assert [d.line for d in exc.value.diagnostics] == list(range(4, 13))


def test_without_a_workcell_the_error_says_what_to_do(clock: VirtualClock, store: Store) -> None:
    with pytest.raises(LabctlError) as exc:
        build_devices(None, store, clock)
    assert "--workcell" in str(exc.value) and "labctl simulate" in str(exc.value)


def test_simulated_devices_come_from_the_simulated_workcell(
    clock: VirtualClock, store: Store
) -> None:
    class Sim:
        devices = {"inc-sim": ManualIncubator("inc-sim", StoreOperator(store, "inc-sim"))}

    devices = build_devices(None, store, clock, sim=Sim())
    assert sorted(devices) == ["inc-sim", "operator"]
    assert devices["inc-sim"] is Sim.devices["inc-sim"]
    wc = workcell("  inc-sim: {driver: sim-cytomat}\n")
    assert build_devices(wc, store, clock, sim=Sim())["inc-sim"] is Sim.devices["inc-sim"]
    with pytest.raises(ProtocolError, match="inc-sim: driver 'sim-cytomat' is a simulated"):
        build_devices(wc, store, clock)


def test_manual_incubator_prompts_through_the_run_database(
    clock: VirtualClock, store: Store
) -> None:
    run = store.insert_run(
        "r1",
        protocol_text="x",
        protocol_id="p",
        protocol_version="1",
        parameters={},
        plates=1,
        start=clock.now(),
        timezone="UTC",
        workcell_name="bay",
        workcell_text="",
        actor="test",
        state="running",
    )
    task = store.insert_task(
        run.id, key="d1-feed/P1", kind="feed", day=1, due=clock.now(), spec={}, actor="test"
    )
    job = store.insert_job(
        task.id,
        seq=0,
        device="inc-2",
        op=Op.FETCH.value,
        spec={"key": "d1-feed/P1/0"},
        actor="test",
        state="running",
    )
    with pytest.raises(DeviceError, match="no running job"):
        store_job_context(store, "inc-2")("d9-feed/P1/0")
    inc = build_devices(workcell("  inc-2: {driver: manual-incubator}\n"), store, clock)["inc-2"]
    op = inc.start_fetch("d1-feed/P1/0", 3)
    (prompt,) = store.open_prompts()
    assert (prompt.run_id, prompt.job_id) == (run.id, job.id)
    assert prompt.text.startswith("inc-2: take the plate out of slot 3")
    assert inc.poll(op).state is OpState.RUNNING
    store.answer_prompt(prompt.id, {"done": True}, actor="ana")
    st = inc.poll(op)
    assert st.state is OpState.SUCCEEDED and st.result == {"done": True}


# --- checks ------------------------------------------------------------------------------


def test_check_devices_reports_ok_and_failing_devices(
    clock: VirtualClock, store: Store, cytomat_url: tuple[CytomatSim, str]
) -> None:
    _, url = cytomat_url
    dead = closed_port()
    with RobotSimulator(clock, robot="OT-2") as robot:
        wc = workcell(
            f"  ot2-a: {{driver: opentrons, url: '{robot.url}', robot: OT-2, deck: {{plate: 1}}}}\n"
            f"  ot2-b: {{driver: opentrons, url: '{robot.url}', robot: Flex, deck: {{plate: 1}}}}\n"
            f"  inc-1: {{driver: cytomat, url: '{url}', slots: 42}}\n"
            f"  inc-hyp: {{driver: liconic, url: 'socket://127.0.0.1:{dead}', levels: 11}}\n"
            "  inc-2: {driver: manual-incubator}\n"
            "  op: {driver: operator}\n"
            "  x: {driver: teleporter}\n"
            "  y: {driver: cytomat, slots: 4}\n"
        )
        checks = {c.name: c for c in check_devices(wc, store, clock)}
    assert list(checks) == ["ot2-a", "ot2-b", "inc-1", "inc-hyp", "inc-2", "op", "x", "y"]
    assert checks["ot2-a"].ok and checks["ot2-a"].state == "OT-2 healthy"
    assert "protocol API 2." in checks["ot2-a"].detail
    assert not checks["ot2-b"].ok and checks["ot2-b"].state == "OT-2, not Flex"
    inc = checks["inc-1"]
    assert (inc.ok, inc.state) == (True, "ready")
    assert inc.detail.startswith("transfer station empty; 37 degC; CO2 5 %")
    hyp = checks["inc-hyp"]
    assert (hyp.ok, hyp.state) == (False, "unreachable")
    assert hyp.detail.startswith("inc-hyp: open: cannot open serial port socket://127.0.0.1:")
    assert checks["inc-2"] == DeviceCheck(
        "inc-2", "manual-incubator", True, "manual", "the operator is prompted"
    )
    assert checks["op"] == DeviceCheck("op", "operator", True, "0 prompt(s) pending", "")
    assert (checks["x"].ok, checks["x"].state) == (False, "unknown driver")
    assert checks["y"] == DeviceCheck(
        "y",
        "cytomat",
        False,
        "bad settings",
        "'port' is required (e.g. /dev/ttyUSB0 or socket://127.0.0.1:5001)",
    )


def test_devices_check_cli_prints_a_table_and_sets_the_exit_code(
    tmp_path: Path,
    clock: VirtualClock,
    cytomat_url: tuple[CytomatSim, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url = cytomat_url
    good = tmp_path / "good.yaml"
    good.write_text(
        f"name: bay\ndevices:\n  inc-1: {{driver: cytomat, url: '{url}', slots: 42}}\n"
        "  op: {driver: operator}\n"
    )
    # No run database yet: the operator check reports no prompts (and creates none).
    monkeypatch.setenv("LABCTL_DB", str(tmp_path / "none.sqlite"))
    assert devices_check_cli(argparse.Namespace(workcell=str(good), db=None)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["DEVICE", "DRIVER", "OK", "STATE", "DETAIL"]
    assert out[1].split()[:4] == ["inc-1", "cytomat", "ok", "ready"]
    assert out[2].split() == ["op", "operator", "ok", "0", "prompt(s)", "pending"]
    assert out[-1] == "2 of 2 devices ok"
    assert not (tmp_path / "none.sqlite").exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"name: bay\ndevices:\n  inc-1: {{driver: liconic, url: 'socket://127.0.0.1:{closed_port()}', levels: 11}}\n"
    )
    db = tmp_path / "runs.sqlite"
    Store.open(db, clock).close()
    assert devices_check_cli(argparse.Namespace(workcell=str(bad), db=str(db))) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:4] == ["inc-1", "liconic", "FAIL", "unreachable"]
    assert out[-1] == "0 of 1 devices ok; failing: inc-1"


# --- the PF400 plate mover -------------------------------------------------------------------


def test_pf400_is_built_with_its_named_stations_and_grasp(
    clock: VirtualClock, store: Store
) -> None:
    from labctl.drivers.pf400 import PF400Arm

    wc = workcell(
        "  arm: {driver: pf400, host: 10.0.0.20, status_port: none,\n"
        "        stations: {inc-1/transfer: 1, ot2-a/1: 3, nest: 4},\n"
        "        grasp: {width: 127.8 mm, speed: 40 %, force: 12 N}}\n"
    )
    arm = build_devices(wc, store, clock)["arm"]
    assert isinstance(arm, PF400Arm)
    assert arm.stations == {"inc-1/transfer": 1, "ot2-a/1": 3, "nest": 4}
    assert arm.grasp.data_line() == "GraspData 127.8 40 12"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("host: h", "arm: 'stations' is required: the stations taught on the arm by name"),
        ("host: h, stations: {a: 1, b: 1}", "arm: 'stations': a and b are both station 1"),
        ("host: h, stations: {a: 0, b: two}", "arm: 'stations': a, b: a station is a number"),
        ("host: h, stations: {a: 1}, grasp: {width: -3 mm}", "arm: 'grasp': width must be above"),
        ("host: h, stations: {a: 1}, grasp: {speed: 150 %}", "arm: 'grasp': speed must be above"),
        ("host: h, stations: {a: 1}, grasp: {grip: 2}", "arm: 'grasp': unknown key 'grip'"),
        ("stations: {a: 1}", "arm: 'host' is required"),
    ],
)
def test_pf400_settings_errors_name_the_device_and_setting(
    clock: VirtualClock, store: Store, settings: str, message: str
) -> None:
    with pytest.raises(ProtocolError) as exc:
        build_devices(workcell(f"  arm: {{driver: pf400, {settings}}}\n"), store, clock)
    (diag,) = exc.value.diagnostics
    assert diag.message.startswith(message), diag.message
    assert diag.line == 4
