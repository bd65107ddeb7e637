"""The PF400 driver against the PF400 simulator over TCP on 127.0.0.1.

Both were written from DEVICES.md section 11 by different hands, neither reading the other:
each case here checks one reading against the other, and what the arm did is read from the
simulator's own records (its station map and action log), never from the driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labctl.clock import PacedClock
from labctl.devices import OpState, OpStatus
from labctl.drivers.pf400 import PF400Arm
from labctl.errors import DeviceError, DeviceNeedsOperator, OperationLost, PlaceConflict
from labctl.simulators.pf400 import PF400Simulator

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
STATIONS = {"inc-1/transfer": 1, "ot2-a/1": 3, "ot2-a/3": 4, "nest": 5}


class Cell:
    """A simulated arm and its driver on one paced clock (a move takes tens of ms)."""

    def __init__(self, tmp: Path, plates: dict[int, str]) -> None:
        self.clock = PacedClock(T0, pace=200.0)
        self.dir = tmp
        self.sim = PF400Simulator(self.clock, name="arm", plates=plates, state_dir=tmp).start()
        self.arm = self._driver()

    def _driver(self) -> PF400Arm:
        return PF400Arm(
            "arm",
            "127.0.0.1",
            self.sim.port,
            STATIONS,
            self.clock,
            status_port=self.sim.status_port,
            motion_timeout_s=600.0,
        )

    def wait(self, op_id: str, limit_s: float = 20.0) -> OpStatus:
        """Poll as the engine does, until the move ends (wall seconds at most ``limit_s``)."""
        deadline = self.clock.monotonic() + limit_s * 200.0
        while True:
            st = self.arm.poll(op_id)
            if st.state is not OpState.RUNNING or self.clock.monotonic() > deadline:
                return st
            self.clock.sleep(2.0)

    def restart_sim(self) -> None:
        port, status = self.sim.port, self.sim.status_port
        self.sim.stop()
        self.sim = PF400Simulator(self.clock, name="arm", state_dir=self.dir).start(
            port=port, status_port=status
        )

    def close(self) -> None:
        self.arm.close()
        self.sim.stop()

    def results(self) -> list[str]:
        return [a.get("result", "") for a in self.sim.actions]


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[Cell]:
    c = Cell(tmp_path, {1: "P1"})
    yield c
    c.close()


def test_a_plate_goes_from_the_transfer_station_to_the_deck(cell: Cell) -> None:
    op = cell.arm.start_move("r1:d0-feed/P1/1", "P1", "inc-1/transfer", "ot2-a/1")
    st = cell.wait(op)
    assert st.state is OpState.SUCCEEDED, st
    assert cell.sim.stations == {3: "P1"} and cell.sim.gripper is None
    assert [r for r in cell.results() if r in ("gripped", "placed")] == ["gripped", "placed"]
    # And back, on the other reading of the same wire.
    back = cell.wait(cell.arm.start_move("r1:d0-feed/P1/3", "P1", "ot2-a/1", "inc-1/transfer"))
    assert back.state is OpState.SUCCEEDED and cell.sim.stations == {1: "P1"}


def test_the_same_job_started_twice_moves_the_plate_once(cell: Cell) -> None:
    key = "r1:d0-feed/P1/1"
    first = cell.arm.start_move(key, "P1", "inc-1/transfer", "ot2-a/1")
    assert cell.wait(first).state is OpState.SUCCEEDED
    again = cell.arm.start_move(key, "P1", "inc-1/transfer", "ot2-a/1")
    assert again == first and cell.wait(again).state is OpState.SUCCEEDED
    assert cell.results().count("gripped") == 1 and cell.sim.stations == {3: "P1"}


def test_a_pick_from_an_empty_station_carries_nothing_and_says_so(tmp_path: Path) -> None:
    cell = Cell(tmp_path, {})
    try:
        op_or_error: object
        try:
            op_or_error = cell.wait(cell.arm.start_move("k/1", "P1", "inc-1/transfer", "ot2-a/1"))
        except PlaceConflict as exc:
            op_or_error = exc
        if isinstance(op_or_error, OpStatus):
            assert op_or_error.state is OpState.FAILED
            assert isinstance(op_or_error.error, PlaceConflict), op_or_error
        assert cell.sim.stations == {} and cell.sim.gripper is None
        assert "no_plate" in cell.results() and "placed" not in cell.results()
    finally:
        cell.close()


def test_a_place_onto_an_occupied_station_leaves_the_plate_in_the_gripper_and_is_not_retried(
    tmp_path: Path,
) -> None:
    cell = Cell(tmp_path, {1: "P1", 3: "P9"})
    try:
        st = cell.wait(cell.arm.start_move("k/1", "P1", "inc-1/transfer", "ot2-a/1"))
        assert st.state in (OpState.FAILED, OpState.NEEDS_OPERATOR), st
        assert st.error is not None and "gripper" in str(st.error)
        assert cell.sim.gripper == "P1" and cell.sim.stations == {3: "P9"}
        assert cell.results().count("collision") == 1
        # Nothing more is tried for it, and the next move is refused until a person acts.
        for _ in range(3):
            cell.arm.poll(cell.arm.find_op("k/1") or "arm:k/1")
        assert cell.results().count("collision") == 1
        with pytest.raises(DeviceError):
            cell.wait(cell.arm.start_move("k2/1", "P1", "ot2-a/3", "nest"))
    finally:
        cell.close()


def test_an_estop_mid_move_needs_the_operator_and_shows_as_an_alarm(cell: Cell) -> None:
    op = cell.arm.start_move("k/1", "P1", "inc-1/transfer", "ot2-a/1")
    cell.clock.sleep(1.0)
    cell.sim.estop()
    st = cell.wait(op)
    assert st.state in (OpState.FAILED, OpState.NEEDS_OPERATOR)
    assert isinstance(st.error, DeviceNeedsOperator), st
    assert "estop" in {a.code for a in cell.arm.alarms()}
    assert cell.results().count("placed") == 0


def test_a_connection_lost_mid_pick_leaves_the_outcome_to_a_person(cell: Cell) -> None:
    cell.sim.drop_connection("PickPlate")
    op = cell.arm.start_move("k/1", "P1", "inc-1/transfer", "ot2-a/1")
    with pytest.raises(OperationLost):
        cell.wait(op)
    assert cell.results().count("placed") == 0  # the driver placed nothing on its own


def test_after_the_simulator_restarts_the_driver_reconnects_and_finds_the_plate(cell: Cell) -> None:
    assert (
        cell.wait(cell.arm.start_move("a/1", "P1", "inc-1/transfer", "ot2-a/1")).state
        is OpState.SUCCEEDED
    )
    cell.restart_sim()  # a power cycle: plates stay where they are
    assert cell.sim.stations == {3: "P1"}
    st = cell.wait(cell.arm.start_move("a/3", "P1", "ot2-a/1", "inc-1/transfer"))
    assert st.state is OpState.SUCCEEDED, st
    assert cell.sim.stations == {1: "P1"}


def test_a_new_driver_process_does_not_know_an_old_move(cell: Cell) -> None:
    op = cell.arm.start_move("a/1", "P1", "inc-1/transfer", "ot2-a/1")
    assert cell.wait(op).state is OpState.SUCCEEDED
    cell.arm.close()
    cell.arm = cell._driver()  # the engine restarted
    with pytest.raises(OperationLost):
        cell.arm.poll(op)
    assert "gripper" in cell.arm.report("a/1").lower() or cell.arm.report("a/1")


@pytest.mark.parametrize("lost", [False, True])
def test_a_plate_that_slips_out_after_the_pick_is_never_placed(cell: Cell, lost: bool) -> None:
    cell.sim.slip_next_pick(lost=lost)
    st = cell.wait(cell.arm.start_move("r1:d0-feed/P1/1", "P1", "inc-1/transfer", "ot2-a/1"))
    assert st.state is OpState.FAILED and isinstance(st.error, DeviceNeedsOperator)
    assert "is not in the gripper after the retract" in st.detail
    assert "placed" not in cell.results() and "released_empty" not in cell.results()
    assert cell.sim.stations == ({} if lost else {1: "P1"}) and cell.sim.gripper is None
    if not lost:  # it fell back where it was: a retry (the operator's answer) carries it
        again = cell.wait(cell.arm.start_move("r1:d0-feed/P1/1", "P1", "inc-1/transfer", "ot2-a/1"))
        assert again.state is OpState.SUCCEEDED and cell.sim.stations == {3: "P1"}
