"""OpentronsLiquidHandler against the robot-server simulator on 127.0.0.1 (virtual time)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from labctl.clock import VirtualClock
from labctl.devices import DeviceAlarm, LiquidHandler, NotKnown, OpState, OpStatus
from labctl.drivers.opentrons_http import OpentronsClient
from labctl.drivers.opentrons_lh import OpentronsLiquidHandler, protocol_filename
from labctl.drivers.opentrons_protocol import DeckLayout, check_locally, generate
from labctl.errors import DeviceFault, DeviceNeedsOperator
from labctl.simulators.opentrons_robot import RobotSimulator

KEY = "r7:d3-feed-0900/P2/2"
# Two wells of one plate column: 2 tips for spent medium, 1 for fresh medium.
FEED: dict[str, Any] = {
    "plate": "P2",
    "task": "d3-feed-0900",
    "title": "full change, 2 mL/well",
    "day": 3,
    "labware": "corning_6_wellplate_16.8ml_flat",
    "wells": ["A1", "B1"],
    "kind": "feed",
    "change": "full",
    "remove_ul": 2000.0,
    "add_ul": 2000.0,
    "wash": None,
    "recipe": "KSR",
    "medium": [["KSR", 1.0]],
    "factors": {},
    "deck_slot": 1,
}
FEED_TIPS = 3


@pytest.fixture(scope="session", autouse=True)
def _opentrons_imported() -> None:
    """The ~3 s opentrons import, once per session."""
    check_locally(generate(FEED, DeckLayout.default("OT-2"), "OT-2"))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))


class Uploads:
    """Records what the handler uploads and the parameter values of the runs it creates
    (wraps the client's methods)."""

    def __init__(self, client: OpentronsClient) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.values: list[dict[str, Any] | None] = []  # sent with each upload
        self.run_values: list[dict[str, Any] | None] = []  # sent with each POST /runs
        upload_real, create_real = client.upload_protocol, client.create_run

        def upload(
            filename: str, source: bytes, labware: Any = (), *, run_time_parameters: Any = None
        ) -> Any:
            self.sent.append((filename, source))
            self.values.append(run_time_parameters)
            return upload_real(filename, source, labware, run_time_parameters=run_time_parameters)

        def create_run(protocol_id: str, run_time_parameters: Any = None) -> str:
            self.run_values.append(run_time_parameters)
            return create_real(protocol_id, run_time_parameters)

        client.upload_protocol = upload  # type: ignore[method-assign]
        client.create_run = create_run  # type: ignore[method-assign]


def tips_picked(sim: RobotSimulator, run_id: str) -> list[tuple[str, str]]:
    """(slot, well) of each tip the simulated robot picked up in a run."""
    return [
        (e["slot"], e["well"])
        for e in sim.action_entries()
        if e["event"] == "command" and e["runId"] == run_id and e["commandType"] == "pickUpTip"
    ]


class Rig:
    def __init__(self, sim: RobotSimulator, clock: VirtualClock, robot: str, **kw: Any) -> None:
        self.sim = sim
        self.clock = clock
        self.robot = robot
        self.layout = DeckLayout.default(robot)  # type: ignore[arg-type]
        self.client = OpentronsClient("ot2-a", sim.url, clock, timeout_s=2.0)
        self.uploads = Uploads(self.client)
        self.stored: list[dict[str, int]] = []
        self.lh = self.handler(**kw)

    def handler(self, **kw: Any) -> OpentronsLiquidHandler:
        kw.setdefault("store_tips", self.stored.append)
        return OpentronsLiquidHandler("ot2-a", self.client, self.layout, self.robot, **kw)  # type: ignore[arg-type]

    def run_to_end(self, op_id: str, limit: int = 2000) -> OpStatus:
        for _ in range(limit):
            st = self.lh.poll(op_id)
            if st.state is not OpState.RUNNING:
                return st
            self.clock.sleep(5)
        raise AssertionError("the run did not end")


@pytest.fixture
def rig(clock: VirtualClock, request: pytest.FixtureRequest) -> Iterator[Rig]:
    robot = getattr(request, "param", "OT-2")
    with RobotSimulator(clock, robot=robot) as sim:
        yield Rig(sim, clock, robot)


@pytest.mark.parametrize("rig", ["OT-2", "Flex"], indirect=True)
def test_a_feed_runs_to_success_and_uses_its_tips(rig: Rig) -> None:
    assert isinstance(rig.lh, LiquidHandler)
    full = rig.layout.tip_capacity()
    op_id = rig.lh.start_job(KEY, dict(FEED))
    st = rig.run_to_end(op_id)
    assert st.state is OpState.SUCCEEDED, st
    assert st.result["run_id"] == op_id
    assert st.result["commands"] == rig.client.run_status(op_id).commands_total > FEED_TIPS
    assert rig.lh.tips_left == {"tips": full["tips"] - FEED_TIPS, "small_tips": 96}
    assert rig.stored == [rig.lh.tips_left]
    # Uploaded as the job's file, exactly the generated protocol, run from tip 0.
    expected = generate(FEED, rig.layout, rig.robot)  # type: ignore[arg-type]
    assert rig.uploads.sent == [(protocol_filename(KEY), expected.encode())]
    assert rig.uploads.values == rig.uploads.run_values == [{"first_tip": 0}]
    racks = rig.layout.tips
    assert tips_picked(rig.sim, op_id) == [(racks[0], "A1"), (racks[0], "B1"), (racks[0], "C1")]
    # The next job starts where this one stopped, on the same robot: the same bytes under
    # its own name, another first tip.
    second = rig.lh.start_job(KEY.replace("P2", "P3"), {**FEED, "plate": "P3"})
    assert rig.run_to_end(second).state is OpState.SUCCEEDED
    assert rig.uploads.sent[1] == (protocol_filename(KEY.replace("P2", "P3")), expected.encode())
    assert rig.uploads.values[1] == rig.uploads.run_values[1] == {"first_tip": FEED_TIPS}
    assert tips_picked(rig.sim, second) == [(racks[0], "D1"), (racks[0], "E1"), (racks[0], "F1")]
    robot_params = rig.sim.handle_request("GET", f"/runs/{second}", {"opentrons-version": "3"}, b"")
    assert robot_params is not None
    assert [
        (p["variableName"], p["value"]) for p in robot_params.body["data"]["runTimeParameters"]
    ] == [("first_tip", 3.0)]
    assert rig.lh.tips_left["tips"] == full["tips"] - 2 * FEED_TIPS


def test_a_failing_run_is_failed_with_the_robots_error(rig: Rig) -> None:
    rig.sim.set_faults(fail_at_command=3)
    op_id = rig.lh.start_job(KEY, dict(FEED))
    st = rig.run_to_end(op_id)
    assert st.state is OpState.FAILED
    assert isinstance(st.error, DeviceFault)
    robot_error = rig.client.run_status(op_id).error
    assert robot_error is not None and robot_error.error_code
    assert st.error.device == "ot2-a"
    assert st.error.command == f"run {op_id}"
    assert st.error.device_code == robot_error.error_code
    assert robot_error.root_detail in st.detail
    assert st.detail.startswith("run failed at command 3 (")


def test_find_op_finds_the_run_after_the_op_id_was_lost(rig: Rig) -> None:
    op_id = rig.lh.start_job(KEY, dict(FEED))
    restarted = rig.handler()  # a new process: it knows nothing of the run
    assert restarted.find_op(KEY) == op_id
    assert restarted.find_op("r7:d3-feed-0900/P9/2") is None
    assert restarted.poll(op_id).state is OpState.RUNNING
    rig.sim.set_faults(offline=True)
    with pytest.raises(NotKnown, match="ot2-a"):
        restarted.find_op(KEY)


def test_a_run_created_but_never_played_counts_as_not_started_and_is_played(rig: Rig) -> None:
    # A crash between POST /runs and play: the robot holds an idle run of the job.
    source = generate(FEED, rig.layout, "OT-2").encode()
    uploaded = rig.client.upload_protocol(protocol_filename(KEY), source)
    rig.client.wait_for_analysis(uploaded.protocol_id, uploaded.analysis_id)
    idle = rig.client.create_run(uploaded.protocol_id)
    assert rig.lh.find_op(KEY) is None
    # Starting the job plays that run: no second run, nothing uploaded.
    op_id = rig.lh.start_job(KEY, dict(FEED))
    assert op_id == idle
    assert len(rig.uploads.sent) == len(rig.uploads.run_values) == 1  # the test's own
    assert rig.lh.find_op(KEY) == op_id
    assert rig.run_to_end(op_id).state is OpState.SUCCEEDED
    assert [e["runId"] for e in rig.sim.action_entries() if e["event"] == "run_created"] == [idle]


def test_offline_robot_is_an_alarm(rig: Rig) -> None:
    assert rig.lh.alarms() == []
    rig.sim.set_faults(offline=True)
    alarms = rig.lh.alarms()
    assert [(a.device, a.code) for a in alarms] == [("ot2-a", "offline")]
    assert "GET /health" in alarms[0].message
    rig.sim.set_faults(offline=False)
    assert rig.lh.alarms() == []


@pytest.mark.parametrize("rig", ["Flex"], indirect=True)
def test_an_open_door_needs_the_operator(rig: Rig) -> None:
    op_id = rig.lh.start_job(KEY, dict(FEED))
    rig.clock.sleep(9)
    rig.sim.set_faults(door_open=True)
    st = rig.lh.poll(op_id)
    assert st.state is OpState.NEEDS_OPERATOR
    assert isinstance(st.error, DeviceNeedsOperator)
    assert "door is open" in st.detail
    assert rig.lh.alarms() == [
        DeviceAlarm(
            "ot2-a", "door-open", f"run {op_id} is held by an open door: close it, then resume"
        )
    ]


def test_tips_running_out_needs_the_operator_before_any_upload(rig: Rig) -> None:
    lh = rig.handler(tip_capacity=FEED_TIPS - 1)
    with pytest.raises(DeviceNeedsOperator, match="refill tips") as exc:
        lh.start_job(KEY, dict(FEED))
    assert exc.value.device == "ot2-a"
    assert "3 tips needed, 2 left in slot(s) 10, 11" in str(exc.value)
    assert rig.uploads.sent == []
    assert not [e for e in rig.sim.action_entries() if e["event"] == "protocol_upload"]
    assert rig.client.current_run_id() is None
    lh.refilled()
    assert lh.tips_left["tips"] == 192 and rig.stored[-1]["tips"] == 192
    op_id = lh.start_job(KEY, dict(FEED))
    assert rig.run_to_end(op_id).state is OpState.SUCCEEDED
    assert rig.uploads.run_values == [{"first_tip": 0}]
    # Partly used racks: the positions before the last 100 are empty.
    lh.refilled(100)
    second = lh.start_job(KEY.replace("P2", "P4"), dict(FEED))
    assert rig.uploads.run_values[1] == {"first_tip": 92}
    assert rig.run_to_end(second).state is OpState.SUCCEEDED
    assert tips_picked(rig.sim, second) == [("10", "E12"), ("10", "F12"), ("10", "G12")]


def test_a_full_waste_reservoir_needs_the_operator_before_any_upload(rig: Rig) -> None:
    lh = rig.handler(waste_ul=258_000.0)  # 290 mL reservoir, filled to 261 mL at most
    with pytest.raises(DeviceNeedsOperator, match="empty the waste reservoir in slot 3"):
        lh.start_job(KEY, dict(FEED))
    assert rig.uploads.sent == []
    lh.emptied()
    lh.start_job(KEY, dict(FEED))
    assert lh.waste_ul == 4000.0  # 2 wells x 2 mL


def test_abort_stops_the_run(rig: Rig) -> None:
    op_id = rig.lh.start_job(KEY, dict(FEED))
    rig.lh.abort(op_id)
    st = rig.run_to_end(op_id)
    assert st.state is OpState.FAILED
    assert isinstance(st.error, DeviceFault) and "stopped" in st.detail
    rig.lh.abort(op_id)  # already ended: nothing to do, no error


def test_a_job_that_cannot_be_a_protocol_is_a_fault_before_any_upload(rig: Rig) -> None:
    with pytest.raises(DeviceFault, match="cannot make a protocol: .*not a well") as exc:
        rig.lh.start_job(KEY, {**FEED, "wells": ["A1", "Q7"]})
    assert exc.value.device == "ot2-a"
    assert rig.uploads.sent == []


def test_protocol_file_names_are_safe_and_distinct() -> None:
    assert protocol_filename("d3-feed-0900.P2_2") == "d3-feed-0900.P2_2.py"
    name = protocol_filename(KEY)
    assert re.fullmatch(r"r7_d3-feed-0900_P2_2\.[0-9a-f]{10}\.py", name)
    assert protocol_filename("r7_d3-feed-0900_P2_2") != name
    odd = protocol_filename('../"x"\n' + "k" * 300)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+\.py", odd) and not odd.startswith(".")
    assert len(odd) < 120
    with pytest.raises(ValueError):
        protocol_filename("")


def test_prepare_uploads_new_contents_once_and_start_uses_that_upload(rig: Rig) -> None:
    from labctl.devices import Preparable

    assert isinstance(rig.lh, Preparable)
    expected = generate(FEED, rig.layout, rig.robot).encode()  # type: ignore[arg-type]
    rig.lh.prepare(KEY, dict(FEED))
    assert rig.uploads.sent == [(protocol_filename(KEY), expected)]
    assert rig.uploads.values == [{"first_tip": 0}]
    # Contents the robot has had already: nothing is sent for another job.
    other = KEY.replace("P2", "P3")
    rig.lh.prepare(other, {**FEED, "plate": "P3"})
    assert len(rig.uploads.sent) == 1
    rig.clock.sleep(60)  # the robot analysed it meanwhile
    # The job starts with the tips the upload was analysed with: that upload is run.
    op_id = rig.lh.start_job(KEY, dict(FEED))
    assert len(rig.uploads.sent) == 1 and rig.uploads.run_values == [{"first_tip": 0}]
    assert rig.run_to_end(op_id).state is OpState.SUCCEEDED
    # The next job's tips differ from any prepared upload: it is uploaded as usual.
    second = rig.lh.start_job(other, {**FEED, "plate": "P3"})
    assert rig.uploads.sent[1] == (protocol_filename(other), expected)
    assert rig.uploads.values[1] == rig.uploads.run_values[1] == {"first_tip": FEED_TIPS}
    assert rig.run_to_end(second).state is OpState.SUCCEEDED


def test_prepare_is_silent_when_the_robot_is_offline_and_start_reports_it(rig: Rig) -> None:
    from labctl.errors import DeviceError

    rig.sim.set_faults(offline=True)
    # Best effort: no error, nothing remembered (asking for the pipettes fails already).
    rig.lh.prepare(KEY, dict(FEED))
    rig.sim.set_faults(offline=False)
    # For a while after, nothing is tried ahead (each try may wait out a time-out).
    rig.lh.prepare(KEY, dict(FEED))
    assert len(rig.uploads.sent) == 0
    rig.clock.sleep(601)
    rig.lh.prepare(KEY, dict(FEED))
    assert len(rig.uploads.sent) == 1
    rig.clock.sleep(60)
    op_id = rig.lh.start_job(KEY, dict(FEED))
    assert rig.run_to_end(op_id).state is OpState.SUCCEEDED
    rig.sim.set_faults(offline=True)
    with pytest.raises(DeviceError):
        rig.lh.start_job(KEY.replace("P2", "P4"), {**FEED, "plate": "P4"})


def test_a_job_that_starts_with_other_contents_than_were_prepared_is_uploaded_anew(
    rig: Rig,
) -> None:
    """Prepared with the parameters expected ahead, started with others (another deck
    position, more plates in a batch; here fewer wells) and the same tips: the run is of
    the job's protocol as it starts, never of the one prepared ahead."""
    rig.lh.prepare(KEY, dict(FEED))
    rig.clock.sleep(60)
    changed = {**FEED, "wells": ["A1"]}
    op_id = rig.lh.start_job(KEY, changed)
    expected = generate(changed, rig.layout, rig.robot).encode()  # type: ignore[arg-type]
    assert len(rig.uploads.sent) == 2
    assert rig.uploads.sent[-1] == (protocol_filename(KEY), expected)
    assert rig.run_to_end(op_id).state is OpState.SUCCEEDED
