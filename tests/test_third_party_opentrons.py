"""The simulated Opentrons robot driven by a client others wrote: opentrons-http-api 1.5.0.

The client (github.com/morefigs/opentrons-http-api) speaks HTTP API version 3 over
``requests`` to port 31950; here it is pointed at the simulator on 127.0.0.1 (its port
patched). Its ``API`` class returns the robot's JSON as dicts; its ``RobotClient`` builds
dataclasses from them. Time is a VirtualClock the tests move between polls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from opentrons_http_api.api import API
from opentrons_http_api.defs.dict_data import HealthInfo, Status
from opentrons_http_api.defs.enums import EngineStatus
from opentrons_http_api.robot_client import RobotClient

from labctl.clock import VirtualClock
from labctl.simulators.opentrons_analysis import warm_up
from labctl.simulators.opentrons_instruments import STOCK_OT2_INSTRUMENTS, InstrumentConfig
from labctl.simulators.opentrons_robot import RobotSimulator

# What labctl's feed protocols load on an OT-2: the simulated robot's default pipettes.
FEED = b"""from opentrons import protocol_api

requirements = {"robotType": "OT-2", "apiLevel": "2.18"}


def run(ctx: protocol_api.ProtocolContext) -> None:
    plate = ctx.load_labware("corning_6_wellplate_16.8ml_flat", "1")
    medium = ctx.load_labware("nest_1_reservoir_195ml", "2")
    tips = ctx.load_labware("opentrons_96_filtertiprack_1000ul", "10")
    pip = ctx.load_instrument("p1000_single_gen2", "right", tip_racks=[tips])
    pip.pick_up_tip()
    pip.aspirate(500, medium["A1"])
    pip.dispense(500, plate["A1"])
    pip.drop_tip()
"""


@pytest.fixture(scope="module", autouse=True)
def _opentrons_imported() -> None:
    warm_up()  # opentrons' import, once


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


class Robot:
    """A started simulator and the third-party client pointed at it."""

    def __init__(self, sim: RobotSimulator, clock: VirtualClock) -> None:
        self.sim = sim
        self.clock = clock
        self.api = API("127.0.0.1")
        self.client = RobotClient("127.0.0.1")

    def upload(self, tmp_path: Path, source: bytes = FEED) -> dict[str, Any]:
        """``post_protocols`` with a file on disk (requests names the part after it)."""
        path = tmp_path / "feed.py"
        path.write_bytes(source)
        with path.open("rb") as f:
            return self.api.post_protocols([f])

    def run_to_end(self, run_id: str) -> dict[str, Any]:
        """Poll ``get_runs_run_id`` as the client's own Status reads it, moving the clock."""
        for _ in range(2000):
            data = self.api.get_runs_run_id(run_id)["data"]
            if Status(EngineStatus(data["status"])).is_done:
                return data
            self.clock.advance(0.05)
        raise AssertionError("the run never ended")


@pytest.fixture
def robot(clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    started: list[RobotSimulator] = []

    def make(instruments: InstrumentConfig | None = None) -> Robot:
        sim = RobotSimulator(clock, "OT-2", time_scale=0.01, instruments=instruments).start()
        started.append(sim)
        # The client always dials port 31950: point it at this simulator's port.
        monkeypatch.setattr(API, "_PORT", sim.port)
        return Robot(sim, clock)

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield make
    for sim in started:
        sim.stop()


def test_health_parses_into_the_clients_dataclass(robot: Any) -> None:
    r = robot()
    health = r.client.health()
    assert isinstance(health, HealthInfo)
    assert (health.robot_model, health.api_version) == ("OT-2 Standard", "8.8.2")
    assert health.links["apiLog"] == "/logs/api.log"
    assert r.client.runs() == ()  # an empty list parses


def test_instruments_through_the_clients_transport(robot: Any) -> None:
    # 1.5.0 has no instruments call ("ATTACHED INSTRUMENTS" is empty): its own GET.
    r = robot()
    body = r.api._get("/instruments")
    assert [(i["mount"], i["instrumentName"], i["ok"]) for i in body["data"]] == [
        ("left", "p20_single_gen2", True),
        ("right", "p1000_single_gen2", True),
    ]
    assert body["meta"] == {"cursor": 0, "totalLength": 2}
    assert r.api._get("/modules") == {"data": [], "meta": {"cursor": 0, "totalLength": 0}}


def test_upload_run_poll_and_read_commands(robot: Any, tmp_path: Path) -> None:
    r = robot()
    uploaded = r.upload(tmp_path)["data"]
    assert uploaded["files"] == [{"name": "feed.py", "role": "main"}]
    assert uploaded["analysisSummaries"][0]["status"] == "pending"  # as robot-server answers
    pid = uploaded["id"]
    got = r.api.get_protocols_protocol_id(pid)["data"]
    assert got["analysisSummaries"][0]["status"] == "completed"
    assert [p["id"] for p in r.api.get_protocols()["data"]] == [pid]
    created = r.api.post_runs({"protocolId": pid, "labwareOffsets": []})["data"]
    assert (created["status"], created["current"]) == ("idle", True)
    run_id = created["id"]
    r.api.post_runs_run_id_actions(run_id, {"actionType": "play"})
    final = r.run_to_end(run_id)
    assert final["status"] == "succeeded"
    assert final["errors"] == []
    commands = r.api.get_runs_run_id_commands(run_id)
    listed = commands["data"]
    assert commands["meta"]["totalLength"] == len(listed) > 0
    assert {c["status"] for c in listed} == {"succeeded"}
    assert "pickUpTip" in [c["commandType"] for c in listed]
    first = r.api.get_runs_run_id_commands_command_id(run_id, listed[0]["id"])["data"]
    assert first["id"] == listed[0]["id"]
    picked = [e for e in r.sim.action_entries() if e["event"] == "command" and e["runId"] == run_id]
    assert [e["commandType"] for e in picked][:3] == ["pickUpTip", "aspirate", "dispense"]


def test_robot_client_cannot_parse_robot_server_8_bodies(robot: Any, tmp_path: Path) -> None:
    # RobotClient builds its dataclasses with ** from the robot's data: robot-server 8
    # sends keys 1.5.0 does not know (recorded: protocolKind; a run's ok,
    # hasEverEnteredErrorRecovery, runTimeParameters, outputFileIds), so it raises. So
    # does it against the real robot-server; the simulator sends the same keys.
    r = robot()
    path = tmp_path / "feed.py"
    path.write_bytes(FEED)
    with path.open("rb") as f, pytest.raises(TypeError, match="protocolKind"):
        r.client.upload_protocol(f)
    pid = r.api.get_protocols()["data"][0]["id"]
    with pytest.raises(TypeError, match="'ok'"):
        r.client.create_run(pid)
    run_id = r.api.get_runs()["data"][0]["id"]
    r.client.action_run(run_id, "play")  # answers nothing it parses: works
    assert r.run_to_end(run_id)["status"] == "succeeded"


def test_http_errors_reach_the_client_as_requests_errors(robot: Any, tmp_path: Path) -> None:
    r = robot()

    def error(call: Any, *args: Any) -> tuple[int, dict[str, Any]]:
        with pytest.raises(requests.HTTPError) as exc:
            call(*args)
        response = exc.value.response
        assert response is not None
        return response.status_code, response.json()["errors"][0]

    status, body = error(r.api.get_runs_run_id, "nope")
    assert (status, body["id"], body["errorCode"]) == (404, "RunNotFound", "4000")
    status, body = error(r.api.post_runs, {"protocolId": "nope"})
    assert (status, body["id"]) == (404, "ProtocolNotFound")
    pid = r.upload(tmp_path)["data"]["id"]
    first = r.api.post_runs({"protocolId": pid})["data"]["id"]
    second = r.api.post_runs({"protocolId": pid})["data"]["id"]
    status, body = error(r.api.post_runs_run_id_actions, first, {"actionType": "play"})
    assert (status, body["id"], body["detail"]) == (
        409,
        "RunStopped",
        f"Run {first} is not the current run",
    )
    status, body = error(r.api.post_runs_run_id_actions, second, {"actionType": "jump"})
    assert (status, body["id"]) == (422, "InvalidRequest")
    r.api.post_runs_run_id_actions(second, {"actionType": "play"})
    status, body = error(r.api.post_runs, {"protocolId": pid})
    assert (status, body["id"], body["errorCode"]) == (409, "RunAlreadyActive", "4001")


def test_a_run_without_its_pipette_fails_as_the_client_sees_it(robot: Any, tmp_path: Path) -> None:
    # robot-server's stock simulated OT-2 (p300 GEN1 on the right) and our feed protocol.
    r = robot(STOCK_OT2_INSTRUMENTS)
    pid = r.upload(tmp_path)["data"]["id"]
    run_id = r.api.post_runs({"protocolId": pid})["data"]["id"]
    r.api.post_runs_run_id_actions(run_id, {"actionType": "play"})
    final = r.run_to_end(run_id)
    assert Status(EngineStatus(final["status"])).status is EngineStatus.FAILED
    inner = final["errors"][0]["wrappedErrors"][0]["wrappedErrors"][0]
    assert (inner["errorType"], inner["errorCode"], inner["detail"]) == (
        "FailedToLoadPipetteError",
        "3010",
        "mount RIGHT: expected instrument p1000_single_gen2 but got p300_single_v1",
    )
    listed = r.api.get_runs_run_id_commands(run_id)["data"]
    assert (listed[-1]["commandType"], listed[-1]["status"]) == ("loadPipette", "failed")
    assert r.sim.action_entries()[-1]["event"] == "run_finished"  # nothing physical happened
