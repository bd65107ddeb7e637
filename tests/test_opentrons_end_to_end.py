"""The Opentrons HTTP client against the robot-server simulator on 127.0.0.1.

Written independently from the same spec (DEVICES.md section 1 and the recordings)."""

from __future__ import annotations

import socket
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labctl.clock import VirtualClock
from labctl.drivers.opentrons_http import OpentronsClient, RunPhase
from labctl.errors import DeviceBusy, DeviceError
from labctl.simulators.opentrons_instruments import STOCK_OT2_INSTRUMENTS
from labctl.simulators.opentrons_robot import RobotSimulator

PROTOCOLS = Path(__file__).parent / "fixtures" / "opentrons-http" / "protocols"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))


def run_to_end(client: OpentronsClient, clock: VirtualClock, run_id: str, limit_s: float = 3600):
    for _ in range(int(limit_s)):
        st = client.run_status(run_id)
        if st.phase.terminal:
            return st
        clock.sleep(5)
    raise AssertionError("run did not end")


@pytest.mark.parametrize("robot,name", [("OT-2", "ot2_ok.py"), ("Flex", "flex_ok.py")])
def test_good_protocol_runs_to_success(
    clock: VirtualClock, tmp_path, robot: str, name: str
) -> None:
    # ot2_ok.py loads a p300 GEN1: the recordings' robot (robot-server's stock simulated OT-2).
    fitted = STOCK_OT2_INSTRUMENTS if robot == "OT-2" else None
    with RobotSimulator(
        clock, robot=robot, action_log=tmp_path / "a.jsonl", instruments=fitted
    ) as sim:
        client = OpentronsClient("lh", sim.url, clock, poll_interval_s=1.0)
        health = client.health()
        assert health.robot_model == robot
        started = client.start_protocol(name, (PROTOCOLS / name).read_bytes())
        st = run_to_end(client, clock, started.run_id)
        assert st.phase is RunPhase.SUCCEEDED
        assert sim.action_entries(), "the simulator logged no physical action"


def test_bad_protocol_is_refused_before_a_run_exists(clock: VirtualClock) -> None:
    with RobotSimulator(clock, robot="OT-2") as sim:
        client = OpentronsClient("lh", sim.url, clock)
        with pytest.raises(DeviceError, match="tip"):
            client.start_protocol("ot2_no_tip.py", (PROTOCOLS / "ot2_no_tip.py").read_bytes())
        assert client.current_run_id() is None


def test_second_run_while_one_is_active_is_busy(clock: VirtualClock) -> None:
    with RobotSimulator(clock, robot="OT-2") as sim:
        client = OpentronsClient("lh", sim.url, clock)
        src = (PROTOCOLS / "ot2_delay.py").read_bytes()
        client.start_protocol("ot2_delay.py", src)
        up = client.upload_protocol("ot2_ok.py", (PROTOCOLS / "ot2_ok.py").read_bytes())
        with pytest.raises(DeviceBusy, match="busy"):
            client.create_run(up.protocol_id)


def test_injected_failure_maps_to_failed_with_the_error(clock: VirtualClock) -> None:
    with RobotSimulator(clock, robot="OT-2") as sim:
        sim.set_faults(fail_at_command=2)
        client = OpentronsClient("lh", sim.url, clock)
        started = client.start_protocol("ot2_ok.py", (PROTOCOLS / "ot2_ok.py").read_bytes())
        st = run_to_end(client, clock, started.run_id)
        assert st.phase is RunPhase.FAILED
        assert st.error is not None


def test_offline_robot_is_a_device_error(clock: VirtualClock) -> None:
    with RobotSimulator(clock, robot="OT-2") as sim:
        sim.set_faults(offline=True)
        client = OpentronsClient("lh", sim.url, clock, timeout_s=2.0)
        with pytest.raises(DeviceError, match="lh"):
            client.health()


# The OT-2 example protocol with its first tip as a run-time parameter (API 2.18).
PARAMETERISED = b"""\
from opentrons import protocol_api

metadata = {"protocolName": "OT-2 example transfer, first tip as a parameter"}
requirements = {"robotType": "OT-2", "apiLevel": "2.18"}


def add_parameters(parameters):
    parameters.add_int(
        variable_name="first_tip", display_name="First tip", default=0, minimum=0, maximum=95
    )


def run(protocol: protocol_api.ProtocolContext) -> None:
    tiprack = protocol.load_labware("opentrons_96_tiprack_300ul", 1)
    plate = protocol.load_labware("corning_96_wellplate_360ul_flat", 2)
    p300 = protocol.load_instrument("p300_single", "right", tip_racks=[tiprack])
    p300.starting_tip = tiprack.wells()[protocol.params.first_tip]
    p300.pick_up_tip()
    p300.aspirate(100, plate["A1"])
    p300.dispense(100, plate["B1"])
    p300.drop_tip()
"""


def test_run_time_parameters_reach_the_run(clock: VirtualClock) -> None:
    with RobotSimulator(clock, robot="OT-2", instruments=STOCK_OT2_INSTRUMENTS) as sim:
        client = OpentronsClient("lh", sim.url, clock)
        for first_tip, well in ((0, "A1"), (10, "C2"), (95, "H12")):
            started = client.start_protocol(
                f"job{first_tip}.py", PARAMETERISED, run_time_parameters={"first_tip": first_tip}
            )
            assert run_to_end(client, clock, started.run_id).phase is RunPhase.SUCCEEDED
            picked = [
                (e["slot"], e["well"])
                for e in sim.action_entries()
                if e["event"] == "command"
                and e["runId"] == started.run_id
                and e["commandType"] == "pickUpTip"
            ]
            assert picked == [("1", well)]
        # A value the protocol refuses never becomes a run.
        with pytest.raises(DeviceError, match="between 0 and 95"):
            client.start_protocol("job96.py", PARAMETERISED, run_time_parameters={"first_tip": 96})


def test_gets_reuse_one_connection_and_a_stale_one_is_replaced(clock: VirtualClock) -> None:
    with RobotSimulator(clock, robot="OT-2") as sim:
        client = OpentronsClient("lh", sim.url, clock)
        client.health()
        first = client._conn
        client.health()
        assert first is not None and client._conn is first  # kept alive between GETs
        first.sock.shutdown(socket.SHUT_RDWR)  # the connection died meanwhile
        assert client.health().robot_model == "OT-2"  # a GET is simply sent again
        client.close()
        assert client._conn is None


def test_a_request_that_changes_something_never_rides_a_kept_alive_connection(
    clock: VirtualClock,
) -> None:
    with RobotSimulator(clock, robot="OT-2") as sim:
        client = OpentronsClient("lh", sim.url, clock)
        client.health()
        kept = client._conn
        up = client.upload_protocol("ot2_ok.py", (PROTOCOLS / "ot2_ok.py").read_bytes())
        assert up.protocol_id
        assert client._conn is kept  # the POST used a connection of its own
