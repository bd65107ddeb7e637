"""PF400Arm against scripted TCS peers that check every line the driver writes.

Each peer is a tiny TCP server on 127.0.0.1 playing a transcript: ``> line`` is what the
driver must write (exactly), ``< reply`` what the arm answers (``\\r\\n`` is added).
``< <close>`` drops the connection instead of answering and ``< <silent>`` never answers;
the steps after either are played on the driver's next connection. ``< <gate> reply``
answers only once the test opens the peer's gate (to look at a move under way). Any
line that differs from the transcript, any step left unplayed and any extra byte fails
the test. The transcripts are the fixtures below. Reply shapes as PyLabRobot's log of a
real PF400 shows them (``mode 0`` -> ``0``, ``pd 2800`` -> ``0 0``, ``wherec`` -> seven
numbers) and as Argonne's pf400_module lists errors (``-1009 *No robot attached*``).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import pytest

from labctl.clock import RealClock, VirtualClock
from labctl.devices import NotKnown, OpState, OpStatus, PlateMover, Reports
from labctl.drivers.pf400 import Grasp, PF400Arm
from labctl.drivers.pf400_tcs import ArmNotReady
from labctl.errors import (
    DeviceBusy,
    DeviceCommunicationError,
    DeviceFault,
    DeviceNeedsOperator,
    DeviceTimeout,
    OperationLost,
    PlaceConflict,
)
from tests.serial_peer import CLOSE, ScriptedPeer, Step

WALL = RealClock()  # only to wait for the worker thread; the arm runs on a VirtualClock
STATIONS = {"inc-1/transfer": 1, "inc-hyp/transfer": 2, "ot2-a/1": 3, "ot2-a/3": 4, "nest": 5}
SRC, DST = "inc-1/transfer", "ot2-a/1"

# -- fixtures: transcripts -----------------------------------------------------------------

WHERE = "0 150.000 0.000 300.000 0.000 90.000 180.000 1"
CONNECT = "> mode 0\n< 0"
STATUS_CONNECT = "> mode 0\n< 0\n> selectRobot 1\n< 0"
GRIPPER_OPEN = "> wherej\n< 0 300.000 0.000 180.000 0.000 120.000"
GRIPPER_HOLDING = "> wherej\n< 0 300.000 0.000 180.000 0.000 85.400"
SESSION = f"> hp 1 20\n< 0\n> attach 1\n< 0\n> pd 2800\n< 0 1\n> wherec\n< {WHERE}"
SESSION_HOMING = (
    f"> hp 1 20\n< 0\n> attach 1\n< 0\n> pd 2800\n< 0 0\n> home\n< 0\n> wherec\n< {WHERE}"
)
GRASP = "> GraspData 85.5 50 10\n< 0"
# After the pick, the retract is waited for and the fingers read: the plate must be held.
PICK_1 = "> PickPlate 1 0 0\n< 0 -1\n> waitForEom\n< 0\n" + GRIPPER_HOLDING
PLACE_3 = "> PlacePlate 3 0 0\n< 0\n> waitForEom\n< 0"
MOVE_1_TO_3 = "\n".join([GRASP, PICK_1, PLACE_3])
# With a status port, the fingers are read there: the motion port sees the rest.
MOVE_1_TO_3_MOTION = "\n".join([GRASP, "> PickPlate 1 0 0\n< 0 -1\n> waitForEom\n< 0", PLACE_3])
FIRST_MOVE = "\n".join([CONNECT, GRIPPER_OPEN, SESSION, MOVE_1_TO_3])  # no status port

SILENT, GATE = b"<silent>", b"<gate> "


def transcript(*parts: str) -> list[Step]:
    """The (frame the driver writes, reply) steps of the transcript ``parts``."""
    lines = [x for p in parts for x in p.strip().splitlines() if x.strip()]
    sent = [f"{x[2:]}\n".encode() for x in lines if x.startswith("> ")]
    said = [x[2:].encode() for x in lines if x.startswith("< ")]
    assert len(sent) == len(said) == len(lines) / 2, f"bad transcript: {parts}"
    replies = [r if r in (CLOSE, SILENT) else r + b"\r\n" for r in said]
    return list(zip(sent, replies, strict=True))


class TcsPeer(ScriptedPeer):
    """A fake TCS port playing a transcript (see the module docstring): a ScriptedPeer on
    TCP whose steps may span several connections."""

    def __init__(self, *parts: str) -> None:
        self.connections = 0
        self.gate = threading.Event()
        super().__init__(transcript(*parts), frame_end=b"\n")
        assert self._server is not None
        self.port = self._server.getsockname()[1]

    def _accept(self) -> socket.socket | None:
        assert self._server is not None
        while not self._stop.is_set():
            if select.select([self._server], [], [], 0.01)[0]:
                self.connections += 1
                return self._server.accept()[0]
        return None

    def _play(self) -> None:
        buf = b""
        for expected, reply in self.script:
            if self._conn is None:
                self._conn, buf = self._accept(), b""
                if self._conn is None:
                    self.problems.append(f"no connection for {expected!r}")
                    return
            for _ in range(250):  # 5 s
                if b"\n" in buf:
                    break
                data = self._recv(0.02)
                if data is None:
                    self.problems.append(f"link closed while waiting for {expected!r}")
                    return
                buf += data
            frame, _, buf = buf.partition(b"\n")
            self.received.append(frame + b"\n")
            if frame + b"\n" != expected:
                self.problems.append(
                    f"step {self.steps_done}: expected {expected!r}, got {frame!r}"
                )
                return
            self.steps_done += 1
            if reply in (CLOSE, SILENT):
                while reply == SILENT and not self._stop.is_set() and self._recv(0.02) is not None:
                    pass  # until the driver gives up and hangs up
                self._conn.close()
                self._conn = None
                continue
            if reply is not None and reply.startswith(GATE):
                self.gate.wait(5)
                reply = reply[len(GATE) :]
            self._send(reply or b"")
        # Script done: anything more the driver writes, until the test ends, is a defect.
        extra = buf
        while self._conn is not None:
            data = self._recv(0.0 if self._stop.is_set() else 0.02)
            if data is None or (not data and self._stop.is_set()):
                break
            extra += data
        self.extra = extra


@pytest.fixture
def rig() -> Iterator:
    """rig(motion_transcript, status=None, **arm_kwargs) -> (arm, motion peer, status peer)."""
    made: list[tuple[PF400Arm, list[TcsPeer]]] = []

    def make(
        *motion: str, status: tuple[str, ...] | None = None, **kwargs: object
    ) -> tuple[PF400Arm, TcsPeer, TcsPeer | None]:
        m = TcsPeer(*motion)
        s = TcsPeer(*status) if status is not None else None
        options: dict = {"reply_timeout_s": 1.0, "motion_timeout_s": 1.0, **kwargs}
        if s is not None:
            options["status_port"] = s.port
        arm = PF400Arm("arm", "127.0.0.1", m.port, STATIONS, VirtualClock(), **options)
        made.append((arm, [p for p in (m, s) if p is not None]))
        return arm, m, s

    yield make
    for arm, peers in made:
        arm.close()
        for p in peers:
            p.finish()


def settle(arm: PF400Arm, op_id: str) -> OpStatus:
    """Poll until the move has ended (the worker runs on its own thread)."""
    for _ in range(500):
        st = arm.poll(op_id)
        if st.state is not OpState.RUNNING:
            return st
        WALL.sleep(0.01)
    raise AssertionError(f"{op_id} still running")


def lost(arm: PF400Arm, op_id: str) -> OperationLost:
    """Poll until the move's outcome is unknown; the OperationLost raised."""
    for _ in range(500):
        try:
            st = arm.poll(op_id)
        except OperationLost as exc:
            return exc
        assert st.state is OpState.RUNNING, st
        WALL.sleep(0.01)
    raise AssertionError(f"{op_id} still running")


def until(cond: object) -> None:
    for _ in range(500):
        if callable(cond) and cond():
            return
        WALL.sleep(0.01)
    raise AssertionError("condition never met")


# -- a session and a move --------------------------------------------------------------------


def test_the_arm_is_a_plate_mover_that_reports() -> None:
    arm = PF400Arm("arm", "127.0.0.1", 1, STATIONS, VirtualClock())
    assert isinstance(arm, PlateMover) and isinstance(arm, Reports)


def test_a_session_then_a_move_send_exactly_these_lines(rig) -> None:
    arm, motion, _ = rig(FIRST_MOVE, GRIPPER_OPEN, MOVE_1_TO_3)
    op = arm.start_move("r1:feed/P1", "P1", SRC, DST)
    assert op == "arm:r1:feed/P1"
    st = settle(arm, op)
    assert st.state is OpState.SUCCEEDED, st
    assert st.result == {"plate": "P1", "source": SRC, "destination": DST}
    # The session stands: the next move only checks the gripper and moves.
    assert settle(arm, arm.start_move("r1:feed/P2", "P2", SRC, DST)).state is OpState.SUCCEEDED
    assert motion.connections == 1


def test_home_only_when_the_arm_says_it_is_not_homed(rig) -> None:
    arm, _, _ = rig(CONNECT, GRIPPER_OPEN, SESSION_HOMING, MOVE_1_TO_3)
    assert settle(arm, arm.start_move("k", "P1", SRC, DST)).state is OpState.SUCCEEDED


def test_queries_go_to_the_status_port_while_motion_has_its_own(rig) -> None:
    arm, _, _ = rig(
        CONNECT,
        SESSION,
        MOVE_1_TO_3_MOTION,
        status=(
            STATUS_CONNECT,
            GRIPPER_OPEN,
            GRIPPER_HOLDING,
            "> sysState\n< 0 21",
            f"> wherec\n< {WHERE}",
            GRIPPER_OPEN,
        ),
    )
    op = arm.start_move("k", "P1", SRC, DST)
    assert settle(arm, op).state is OpState.SUCCEEDED
    assert arm.alarms() == []
    said = arm.report("k")
    assert (
        "the move of P1 from inc-1/transfer (station 1) to ot2-a/1 (station 3): succeeded" in said
    )
    assert "150.000 0.000 300.000" in said and "gripper open: no plate (120 mm)" in said


# -- idempotency ---------------------------------------------------------------------------


def test_start_is_idempotent_per_job_key_and_one_move_at_a_time(rig) -> None:
    arm, motion, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, PICK_1, "> PlacePlate 3 0 0\n< <gate> 0",
        "> waitForEom\n< 0",
    )  # fmt: skip
    op = arm.start_move("k", "P1", SRC, DST)
    until(lambda: motion.steps_done >= 9)  # the place is under way
    running = arm.poll(op)
    assert running.state is OpState.RUNNING and running.detail.endswith(": place")
    assert arm.start_move("k", "P1", SRC, DST) == op  # under way: nothing sent again
    with pytest.raises(DeviceBusy, match="busy moving P1"):
        arm.start_move("other", "P2", "nest", "ot2-a/3")
    motion.gate.set()
    assert settle(arm, op).state is OpState.SUCCEEDED
    assert arm.start_move("k", "P1", SRC, DST) == op  # done: nothing sent again
    assert arm.find_op("k") == op


def test_a_plate_this_arm_put_on_the_destination_is_not_moved_again(rig) -> None:
    arm, _, _ = rig(FIRST_MOVE)
    assert settle(arm, arm.start_move("k1", "P1", SRC, DST)).state is OpState.SUCCEEDED
    with pytest.raises(
        PlaceConflict, match="P1 is already on ot2-a/1: this arm put it there for k1"
    ):
        arm.start_move("k2", "P1", SRC, DST)  # e.g. a store restored from an older copy


def test_a_pick_from_an_empty_station_carries_nothing_and_is_a_place_conflict(rig) -> None:
    arm, _, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, "> PickPlate 1 0 0\n< 0 0", "> waitForEom\n< 0",
        # the operator looked and chose retry: checked and set up again, then moved
        "> wherej\n< 0 300.000 0.000 180.000 0.000 80.000", SESSION, MOVE_1_TO_3,
    )  # fmt: skip
    op = arm.start_move("k", "P1", SRC, DST)
    st = settle(arm, op)
    assert st.state is OpState.FAILED and isinstance(st.error, PlaceConflict)
    assert st.error.command == "PickPlate 1 0 0"
    assert "no plate felt on inc-1/transfer (station 1): nothing was carried" in st.error.detail
    assert "P1 may already be on ot2-a/1" in st.error.detail
    assert settle(arm, arm.start_move("k", "P1", SRC, DST)).state is OpState.SUCCEEDED


# -- errors ------------------------------------------------------------------------------------


def test_power_that_cannot_be_enabled_needs_the_operator(rig) -> None:
    arm, _, _ = rig(CONNECT, GRIPPER_OPEN, "> hp 1 20\n< -1025 *Timeout enabling power*")
    # The session is set up by the move's worker (homing may take minutes): the move fails.
    st = settle(arm, arm.start_move("k", "P1", SRC, DST))
    assert st.state is OpState.FAILED and isinstance(st.error, DeviceNeedsOperator)
    err = st.error
    assert (err.device, err.command, err.device_code) == ("arm", "hp 1 20", "-1025")
    assert "nothing was picked" in err.detail
    assert "Timeout enabling power: robot power is off" in err.detail


def test_an_estop_during_the_pick_needs_the_operator_and_the_next_move_sets_up_again(rig) -> None:
    arm, _, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, "> PickPlate 1 0 0\n< -1028 *Hard E-Stop*",
        # later: the gripper reads open, so no plate is held; power comes back first
        GRIPPER_OPEN, SESSION, MOVE_1_TO_3,
    )  # fmt: skip
    st = settle(arm, arm.start_move("k", "P1", SRC, DST))
    assert st.state is OpState.FAILED and isinstance(st.error, DeviceNeedsOperator)
    assert (st.error.command, st.error.device_code) == ("PickPlate 1 0 0", "-1028")
    assert "Hard E-Stop: the e-stop is engaged" in st.error.detail
    assert "plate P1 may be in the gripper" in st.error.detail
    assert settle(arm, arm.start_move("k", "P1", SRC, DST)).state is OpState.SUCCEEDED


def test_not_attached_sets_the_session_up_once_and_sends_the_refused_pick_again(rig) -> None:
    arm, _, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, "> PickPlate 1 0 0\n< -1009 *No robot attached*",
        SESSION, MOVE_1_TO_3,
    )  # fmt: skip
    assert settle(arm, arm.start_move("k", "P1", SRC, DST)).state is OpState.SUCCEEDED


def test_not_homed_twice_fails_without_a_third_try(rig) -> None:
    refused = "> PickPlate 1 0 0\n< -1021 *Robot not homed*"
    homing = f"> hp 1 20\n< 0\n> attach 1\n< 0\n> home\n< 0\n> wherec\n< {WHERE}"
    arm, _, _ = rig(CONNECT, GRIPPER_OPEN, SESSION, GRASP, refused, homing, GRASP, refused)
    st = settle(arm, arm.start_move("k", "P1", SRC, DST))
    assert st.state is OpState.FAILED and isinstance(st.error, ArmNotReady)
    assert isinstance(st.error, DeviceFault) and st.error.device_code == "-1021"
    assert "nothing was picked" in st.error.detail


def test_a_collision_while_placing_leaves_the_plate_in_the_gripper_and_nothing_is_retried(
    rig,
) -> None:
    arm, _, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, PICK_1,
        "> PlacePlate 3 0 0\n< -3100 *Hard envelope error*",
        f"> wherec\n< {WHERE}", GRIPPER_HOLDING,  # the report asks the (idle) arm
        # retry: the gripper still reads at plate width: refused before anything moves
        GRIPPER_HOLDING,
        # the operator took it out and answered: set up again, then the move
        GRIPPER_HOLDING, SESSION, MOVE_1_TO_3,
    )  # fmt: skip
    st = settle(arm, arm.start_move("k", "P1", SRC, DST))
    assert st.state is OpState.FAILED and type(st.error) is DeviceFault
    err = st.error
    assert (err.command, err.device_code) == ("PlacePlate 3 0 0", "-3100")
    assert "Hard envelope error: the arm ran into something (collision)" in err.detail
    assert "plate P1 is in the gripper (picked from inc-1/transfer for k" in err.detail
    assert (
        "put it on ot2-a/1 (then answer done) or back on inc-1/transfer (then retry)" in err.detail
    )
    said = arm.report("k")
    assert "plate P1 is in the gripper" in said and "a plate (85.4 mm)" in said
    with pytest.raises(DeviceNeedsOperator, match="plate P1 is in the gripper"):
        arm.start_move("k", "P1", SRC, DST)
    arm.attended("k", "take the plate out")
    assert settle(arm, arm.start_move("k", "P1", SRC, DST)).state is OpState.SUCCEEDED


def test_a_place_refused_as_not_attached_is_not_sent_again(rig) -> None:
    arm, _, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, PICK_1,
        "> PlacePlate 3 0 0\n< -1009 *No robot attached*",
    )  # fmt: skip
    st = settle(arm, arm.start_move("k", "P1", SRC, DST))
    assert st.state is OpState.FAILED and type(st.error) is DeviceNeedsOperator
    assert (st.error.command, st.error.device_code) == ("PlacePlate 3 0 0", "-1009")
    assert "plate P1 is in the gripper" in st.error.detail
    assert "picks or places nothing by itself" in st.error.detail


def test_a_pick_reply_that_is_neither_gripped_nor_empty_is_not_guessed(rig) -> None:
    arm, _, _ = rig(CONNECT, GRIPPER_OPEN, SESSION, GRASP, "> PickPlate 1 0 0\n< 0 maybe")
    st = settle(arm, arm.start_move("k", "P1", SRC, DST))
    assert st.state is OpState.FAILED and type(st.error) is DeviceNeedsOperator
    assert "unexpected reply 'maybe' (-1 or 0)" in st.error.detail
    assert "plate P1 may be in the gripper" in st.error.detail


def test_a_gripper_that_holds_a_plate_refuses_a_move_before_anything_moves(rig) -> None:
    arm, _, _ = rig(CONNECT, GRIPPER_HOLDING)
    with pytest.raises(
        DeviceNeedsOperator, match=r"the gripper holds a plate \(gripper at plate width"
    ):
        arm.start_move("k", "P1", SRC, DST)


def test_a_lost_link_during_the_place_makes_the_outcome_unknown(rig) -> None:
    arm, motion, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, PICK_1, "> PlacePlate 3 0 0\n< <close>",
        # a retry: a new connection, and the gripper still holds it
        CONNECT, GRIPPER_HOLDING,
    )  # fmt: skip
    op = arm.start_move("k", "P1", SRC, DST)
    exc = lost(arm, op)
    assert exc.command == "PlacePlate 3 0 0"
    assert "the arm closed the connection" in exc.detail
    assert "it is in the gripper or on ot2-a/1" in exc.detail
    with pytest.raises(OperationLost):
        arm.poll(op)  # and again: a person decides
    assert arm.find_op("k") == op
    with pytest.raises(DeviceNeedsOperator, match="plate P1 may be in the gripper"):
        arm.start_move("k", "P1", SRC, DST)
    assert motion.connections == 2


def test_closing_the_arm_during_a_move_makes_its_outcome_unknown_at_once(rig) -> None:
    arm, motion, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, PICK_1, "> PlacePlate 3 0 0\n< <silent>",
        motion_timeout_s=60.0,
    )  # fmt: skip
    op = arm.start_move("k", "P1", SRC, DST)
    until(lambda: motion.steps_done >= 9)
    arm.close()  # does not wait for the reply's 60 s deadline
    assert "it is in the gripper or on ot2-a/1" in lost(arm, op).detail


def test_no_reply_to_waitforeom_is_an_unknown_outcome_and_a_silent_query_a_timeout(rig) -> None:
    arm, _, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, PICK_1, "> PlacePlate 3 0 0\n< 0",
        "> waitForEom\n< <silent>", CONNECT, "> wherej\n< <silent>",
        reply_timeout_s=0.2, motion_timeout_s=0.2,
    )  # fmt: skip
    exc = lost(arm, arm.start_move("k", "P1", SRC, DST))
    assert exc.command == "waitForEom" and "no reply within 0.2 s" in exc.detail
    with pytest.raises(DeviceTimeout) as info:
        arm.start_move("k", "P1", SRC, DST)
    assert info.value.command == "wherej"


def test_an_arm_that_cannot_be_reached() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    arm = PF400Arm("arm", "127.0.0.1", port, STATIONS, VirtualClock(), connect_timeout_s=0.5)
    with pytest.raises(DeviceCommunicationError, match="cannot reach 127.0.0.1"):
        arm.start_move("k", "P1", SRC, DST)
    [alarm] = arm.alarms()
    assert alarm.code == "offline" and alarm.device == "arm"
    assert "could not be asked" in arm.report("k")


def test_an_unknown_station_is_refused_before_anything_is_sent(rig) -> None:
    arm, motion, _ = rig("")
    with pytest.raises(DeviceFault, match="no station 'ot2-b/1' in the workcell"):
        arm.start_move("k", "P1", SRC, "ot2-b/1")
    assert motion.connections == 0


def test_alarms_tell_an_estop_and_power_that_dropped(rig) -> None:
    arm, _, _ = rig(
        CONNECT, SESSION, MOVE_1_TO_3_MOTION,
        status=(
            STATUS_CONNECT, GRIPPER_OPEN, GRIPPER_HOLDING, "> sysState\n< 0 15",
            "> sysState\n< 0 7",
        ),
    )  # fmt: skip
    assert settle(arm, arm.start_move("k", "P1", SRC, DST)).state is OpState.SUCCEEDED
    [estop] = arm.alarms()
    assert estop.code == "estop" and "e-stop is engaged" in estop.message
    [off] = arm.alarms()
    assert off.code == "power-off" and "system state 7" in off.message


# -- after a restart ---------------------------------------------------------------------------


def test_an_operation_from_before_a_restart_is_lost_and_not_known(rig) -> None:
    seen = f"> wherec\n< {WHERE}\n" + GRIPPER_HOLDING
    arm, _, _ = rig(CONNECT, seen, seen)
    with pytest.raises(OperationLost) as info:
        arm.poll("arm:k9")
    assert info.value.command == "poll arm:k9"
    assert "no record of arm:k9" in info.value.detail
    assert "position 150.000 0.000 300.000" in info.value.detail
    assert "gripper at plate width: a plate (85.4 mm)" in info.value.detail
    with pytest.raises(NotKnown, match="cannot tell whether k9 happened; the arm shows: position"):
        arm.find_op("k9")


def test_grasp_settings_are_sent_as_given(rig) -> None:
    grasp = Grasp(
        width_mm=127.7, speed_pct=30, force_n=-15, compliance=True, compliance_torque_pct=20
    )
    arm, _, _ = rig(
        CONNECT, "> wherej\n< 0 300 0 180 0 80", SESSION, "> GraspData 127.7 30 -15\n< 0",
        "> PickPlate 5 1 20\n< 0 -1\n> waitForEom\n< 0",
        "> wherej\n< 0 300 0 180 0 127.7",
        "> PlacePlate 4 1 20\n< 0\n> waitForEom\n< 0",
        grasp=grasp,
    )  # fmt: skip
    assert settle(arm, arm.start_move("k", "P1", "nest", "ot2-a/3")).state is OpState.SUCCEEDED


def test_a_plate_that_slipped_out_after_the_pick_is_not_placed(rig) -> None:
    closed = "> wherej\n< 0 300.000 0.000 180.000 0.000 10.000"
    arm, _, _ = rig(
        CONNECT, GRIPPER_OPEN, SESSION, GRASP, "> PickPlate 1 0 0\n< 0 -1\n> waitForEom\n< 0",
        closed,
        # the next move: the fingers read closed on nothing, so nothing is held
        closed, SESSION, MOVE_1_TO_3,
    )  # fmt: skip
    st = settle(arm, arm.start_move("k", "P1", SRC, DST))
    assert st.state is OpState.FAILED and isinstance(st.error, DeviceNeedsOperator)
    assert "P1 was gripped on inc-1/transfer but is not in the gripper" in st.error.detail
    assert "put it back on inc-1/transfer, then retry" in st.error.detail
    assert settle(arm, arm.start_move("k", "P1", SRC, DST)).state is OpState.SUCCEEDED
