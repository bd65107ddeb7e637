"""The PF400 simulator over real TCP sockets on 127.0.0.1, with raw command lines (no driver).

Time is a VirtualClock that only the test advances: a reply that waits for the arm comes
once the test has moved the clock past the moment it waits for.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labctl.clock import VirtualClock
from labctl.simulators.pf400 import PF400Config, PF400Simulator

START = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
# Default timings: travel 3 s, descend 1 s, grip 0.5 s, retract 1 s, home 15 s, power 1 s.
CONFIG = PF400Config(stations=5)
PICK_TO_GRIP_S = 3.0 + 1.0 + 0.5
PLACE_S = 3.0 + 1.0 + 0.5 + 1.0
APPROACH_1 = "250.000 -433.013 200.000 -60.000 90.000 -180.000 1"
APPROACH_3 = "500.000 0.000 200.000 0.000 90.000 -180.000 1"
SAFE = "250.000 0.000 400.000 0.000 90.000 -180.000 1"


class Client:
    """One TCP connection speaking raw lines: a command ends with LF, a reply with CRLF."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._file = self.sock.makefile("rb")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\n")

    def reply(self) -> str:
        raw = self._file.readline()
        assert raw.endswith(b"\r\n"), f"reply {raw!r} is not a CRLF line"
        return raw[:-2].decode("ascii")

    def ask(self, line: str) -> str:
        self.send(line)
        return self.reply()

    def waiting(self) -> bool:
        """No reply has arrived within 0.2 s (real time)."""
        readable, _, _ = select.select([self.sock], [], [], 0.2)
        return not readable

    def hung_up(self) -> bool:
        return self._file.readline() == b""

    def close(self) -> None:
        self._file.close()
        self.sock.close()


def talk(client: Client, *exchanges: str) -> None:
    """Each exchange is ``"command -> reply"``: send the command, expect exactly that reply."""
    for exchange in exchanges:
        command, _, reply = exchange.partition(" -> ")
        assert client.ask(command) == reply, f"{command!r} -> {reply!r}"


def until(predicate: Callable[[], bool]) -> None:
    """Wait (real time, at most 5 s) until the simulator thread has done something."""
    pause = threading.Event()
    for _ in range(500):
        if predicate():
            return
        pause.wait(0.01)
    raise AssertionError("the simulator did not get there")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def sim(clock: VirtualClock, tmp_path: Path) -> Iterator[PF400Simulator]:
    s = PF400Simulator(clock, CONFIG, plates={1: "P1", 2: "P2"}, state_dir=tmp_path / "arm")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def arm(sim: PF400Simulator) -> Iterator[Client]:
    c = Client(sim.port)
    yield c
    c.close()


@pytest.fixture
def status(sim: PF400Simulator) -> Iterator[Client]:
    c = Client(sim.status_port)
    yield c
    c.close()


def move_on(sim: PF400Simulator, clock: VirtualClock, seconds: float) -> None:
    """Once the arm has its motion queued, let ``seconds`` of clock time pass."""
    until(lambda: sim.moving)
    clock.advance(seconds)


def session(sim: PF400Simulator, clock: VirtualClock, arm: Client) -> None:
    """The driver's session start: PC mode, power (waits 1 s), attach, home (15 s)."""
    assert arm.ask("mode 0") == "0"
    assert arm.ask("hp 1") == "0"
    clock.advance(1.0)
    assert arm.ask("attach 1") == "0"
    arm.send("home")
    move_on(sim, clock, 15.0)
    assert arm.reply() == "0"


def pick(sim: PF400Simulator, clock: VirtualClock, arm: Client, station: int) -> str:
    """``PickPlate`` to its reply, then ``waitForEom`` after the retract."""
    arm.send(f"PickPlate {station} 0 0")
    move_on(sim, clock, PICK_TO_GRIP_S)
    reply = arm.reply()
    arm.send("waitForEom")
    clock.advance(1.0)
    assert arm.reply() == "0"
    return reply


def place(sim: PF400Simulator, clock: VirtualClock, arm: Client, station: int) -> str:
    """``PlacePlate`` (replied when queued), the whole motion, then ``waitForEom``."""
    reply = arm.ask(f"PlacePlate {station} 0 0")
    if reply == "0":
        clock.advance(PLACE_S)
    return arm.ask("waitForEom")


# -- the session and a move -----------------------------------------------------------------


def test_session_start_with_exact_replies(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    assert arm.ask("version").startswith("0 TCS 3.0C1")
    talk(
        arm,
        "mode 0 -> 0",
        "mode -> 0 0",
        "hp -> 0 0",
        "sysState -> 0 7",
        "attach -> 0 0",
        "attach 1 -> -1046 Power not enabled",
    )
    arm.send("hp 1 20")  # waits for the power, up to 20 s
    assert arm.waiting()
    clock.advance(1.0)
    assert arm.reply() == "0"
    talk(
        arm,
        "hp -> 0 1",
        "sysState -> 0 20",
        "attach 1 -> 0",
        "attach -> 0 -1",
        "sysState -> 0 21",
        "pd 2800 -> 0 0",
    )
    arm.send("home")
    move_on(sim, clock, 14.0)
    assert arm.waiting()
    clock.advance(1.0)
    assert arm.reply() == "0"
    talk(
        arm,
        "pd 2800 -> 0 1",
        f"wherec -> 0 {SAFE}",
        "wherej -> 0 400.000 -62.303 130.010 -67.706 95.000",
        "nop -> 0",
        "selectRobot -> 0 1",
    )


def test_a_move_from_station_1_to_3(
    sim: PF400Simulator, clock: VirtualClock, arm: Client, tmp_path: Path
) -> None:
    session(sim, clock, arm)
    assert arm.ask("GraspData 85.5 50 10") == "0"
    assert arm.ask("GraspData") == "0 85.500 50.000 10.000"
    arm.send("PickPlate 1 0 0")
    move_on(sim, clock, PICK_TO_GRIP_S - 0.5)
    assert arm.waiting()  # the reply comes with the grip
    clock.advance(0.5)
    assert arm.reply() == "0 -1"
    talk(
        arm,
        "wherec -> 0 250.000 -433.013 150.000 -60.000 90.000 -180.000 1",
        "IsFullyClosed -> 0 0",
        "PlacePlate 3 0 0 -> 0",  # queued behind the retract
    )
    arm.send("waitForEom")
    clock.advance(1.0 + PLACE_S - 0.1)
    assert arm.waiting()
    clock.advance(0.1)
    assert arm.reply() == "0"
    assert arm.ask("wherec") == f"0 {APPROACH_3}"
    assert sim.stations == {2: "P2", 3: "P1"}
    assert sim.gripper is None
    assert arm.ask("movetosafe") == "0"
    clock.advance(3.0)
    assert arm.ask("waitForEom") == "0"
    assert arm.ask("wherec") == f"0 {SAFE}"
    log = [json.loads(line) for line in (tmp_path / "arm" / "pf400_actions.jsonl").open()]
    assert [(e["command"], e["station"], e["plate"], e["result"]) for e in log] == [
        ("home", None, None, "homed"),
        ("PickPlate", 1, "P1", "gripped"),
        ("PlacePlate", 3, "P1", "placed"),
        ("movetosafe", None, None, "moved"),
    ]
    assert [e["time"] for e in log] == [
        "2026-12-01T09:00:16+00:00",
        "2026-12-01T09:00:20.500000+00:00",
        "2026-12-01T09:00:26+00:00",  # grip 20.5, retract, travel, descend, release
        "2026-12-01T09:00:30+00:00",
    ]
    assert log == sim.actions and {e["device"] for e in log} == {"pf400"}


def test_the_status_port_answers_while_the_arm_moves(
    sim: PF400Simulator, clock: VirtualClock, arm: Client, status: Client
) -> None:
    session(sim, clock, arm)
    assert pick(sim, clock, arm, 1) == "0 -1"
    assert arm.ask("PlacePlate 3") == "0"
    arm.send("waitForEom")
    clock.advance(0.75)  # a quarter of the travel from station 1 to station 3
    assert arm.waiting()
    talk(
        status,
        "wherec -> 0 312.500 -324.760 200.000 -45.000 90.000 -180.000 1",
        "state -> 0 2",
        "hp -> 0 1",
        "sysState -> 0 21",
    )
    assert status.ask("wherej").startswith("0 200.000 ")
    assert status.ask("PickPlate 2") == "-2808 Not allowed by this thread"
    assert status.ask("attach 1") == "-2808 Not allowed by this thread"
    clock.advance(PLACE_S)
    assert arm.reply() == "0"
    assert status.ask("state") == "0 1"
    assert status.ask("wherec") == f"0 {APPROACH_3}"


# -- what the real arm refuses -------------------------------------------------------------


def test_motion_needs_power_then_attach_then_home(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    for command in ("PickPlate 1 0 0", "PlacePlate 3 0 0", "movetosafe", "home"):
        assert arm.ask(command) == "-1046 Power not enabled"
    assert arm.ask("hp 1") == "0"
    clock.advance(1.0)
    for command in ("PickPlate 1 0 0", "PlacePlate 3 0 0", "movetosafe", "home"):
        assert arm.ask(command) == "-1009 No robot attached"
    assert arm.ask("attach 1") == "0"
    for command in ("PickPlate 1 0 0", "PlacePlate 3 0 0", "movetosafe"):
        assert arm.ask(command) == "-1021 Robot not homed"
    assert sim.stations == {1: "P1", 2: "P2"} and sim.actions == []


def test_a_pick_from_an_empty_station_feels_no_plate(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    session(sim, clock, arm)
    assert pick(sim, clock, arm, 4) == "0 0"
    assert arm.ask("IsFullyClosed") == "0 -1"
    assert arm.ask("wherej").endswith(" 10.000")  # the fingers closed on nothing
    assert sim.gripper is None
    assert sim.actions[-1]["result"] == "no_plate"


def test_a_pick_with_a_plate_gripped_is_refused(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    session(sim, clock, arm)
    assert pick(sim, clock, arm, 1) == "0 -1"
    assert arm.ask("PickPlate 2 0 0") == "-2852 Invalid robot state to execute command"
    assert sim.gripper == "P1" and sim.stations == {2: "P2"}


def test_a_place_onto_an_occupied_station_collides(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    session(sim, clock, arm)
    assert pick(sim, clock, arm, 1) == "0 -1"
    assert arm.ask("PlacePlate 2 0 0") == "0"  # queued: the arm does not know yet
    arm.send("waitForEom")
    clock.advance(3.0 + 0.5)  # travel, then half-way down onto plate P2
    assert arm.reply() == "-3122 Soft envelope error"
    assert sim.gripper == "P1" and sim.stations == {2: "P2"}
    assert arm.ask("hp") == "0 1"  # the collision stopped the arm, power stays on
    wherec = arm.ask("wherec").split()
    assert wherec[3] == "175.000"  # stopped 25 mm above station 2, not at it
    assert arm.ask("waitForEom") == "0"  # the error was reported once
    assert sim.actions[-1]["result"] == "collision"


def test_an_error_pending_from_the_motion_answers_the_next_command_instead(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    session(sim, clock, arm)
    assert pick(sim, clock, arm, 1) == "0 -1"
    assert arm.ask("PlacePlate 2") == "0"
    clock.advance(PLACE_S)
    assert arm.ask("movetosafe") == "-3122 Soft envelope error"  # and it did not move
    assert not sim.moving
    assert arm.ask("movetosafe") == "0"


def test_malformed_commands(sim: PF400Simulator, clock: VirtualClock, arm: Client) -> None:
    session(sim, clock, arm)
    talk(
        arm,
        "fly 1 -> -2805 Unknown command",
        " -> -2805 Unknown command",
        "PickPlate -> -2801 Warning No Parameters",
        "PickPlate 1 0 0 0 -> -2800 Warning Parameter Mismatch",
        "PickPlate one -> -717 Invalid number format",
        "PickPlate 6 0 0 -> -2851 Invalid Station ID",
        "PlacePlate 0 -> -2851 Invalid Station ID",
        "GraspData 85 50 -> -2800 Warning Parameter Mismatch",
        "pd 9999 -> -1501 Unknown Data ID code",
        "mode 1 -> -204 Not implemented",
        f"WHEREC -> 0 {SAFE}",  # names are case-insensitive
    )
    arm.sock.sendall(b"nop\r\nsysState\n")  # CRLF ends a command too; lines are kept in order
    assert (arm.reply(), arm.reply()) == ("0", "0 21")


def test_bare_error_codes_when_configured(clock: VirtualClock) -> None:
    with PF400Simulator(clock, PF400Config(error_text=False)) as s:
        c = Client(s.port)
        assert c.ask("PickPlate 1") == "-1046"
        assert c.ask("hp") == "0 0"
        c.close()


def test_exit_hangs_up_and_the_port_takes_the_next_client(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    session(sim, clock, arm)
    arm.send("exit")
    assert arm.hung_up()
    again = Client(sim.port)
    assert again.ask("attach") == "0 -1"  # the robot thread keeps its attachment
    again.close()


def test_halt_stops_the_arm_and_a_waiting_pick_is_cancelled(
    sim: PF400Simulator, clock: VirtualClock, arm: Client, status: Client
) -> None:
    session(sim, clock, arm)
    arm.send("PickPlate 1")
    move_on(sim, clock, 1.5)
    assert status.ask("halt") == "0"
    assert arm.reply() == "-214 Cancelled"
    assert arm.ask("hp") == "0 1"
    assert arm.ask("wherec") == "0 250.000 -216.506 300.000 -30.000 90.000 -180.000 1"
    assert sim.stations == {1: "P1", 2: "P2"} and sim.gripper is None
    assert arm.ask("waitForEom") == "0"
    assert sim.actions[-1]["result"] == "halted"


def test_power_off_during_a_move(sim: PF400Simulator, clock: VirtualClock, arm: Client) -> None:
    session(sim, clock, arm)
    talk(
        arm,
        "movetosafe -> 0",
        "hp 0 -> 0",
        "waitForEom -> -1600 Power off requested",
        "movetosafe -> -1046 Power not enabled",
    )


# -- faults ----------------------------------------------------------------------------------


def test_estop_mid_move_drops_power_until_reset_and_hp(
    sim: PF400Simulator, clock: VirtualClock, arm: Client, status: Client
) -> None:
    session(sim, clock, arm)
    assert pick(sim, clock, arm, 1) == "0 -1"
    assert arm.ask("PlacePlate 3") == "0"
    clock.advance(2.0)
    sim.estop()
    assert arm.ask("waitForEom") == "-1028 Hard E-Stop"
    talk(
        status,
        "hp -> 0 0",
        "sysState -> 0 15",  # hard e-stop asserted (PyLabRobot brooks; found by the pair test)
        "state -> 0 0",
    )
    assert sim.gripper == "P1" and 3 not in sim.stations
    talk(
        arm,
        "PlacePlate 3 -> -1046 Power not enabled",
        "hp 1 20 -> -1028 Hard E-Stop",
        "hp 1 -> -1028 Hard E-Stop",
    )
    sim.reset_estop()
    assert arm.ask("hp") == "0 0"  # power stays off until asked for
    arm.send("hp 1 20")
    assert arm.waiting()  # (and the simulator has read the command before time moves)
    clock.advance(1.0)
    assert arm.reply() == "0"
    assert arm.ask("attach") == "0 -1" and arm.ask("pd 2800") == "0 1"
    assert place(sim, clock, arm, 3) == "0"
    assert sim.stations == {2: "P2", 3: "P1"}
    results = [(e["command"], e["result"]) for e in sim.actions]
    assert results[-2:] == [("PlacePlate", "estop"), ("PlacePlate", "placed")]


def test_estop_while_idle_refuses_the_next_motion(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    session(sim, clock, arm)
    sim.estop()
    assert arm.ask("nop") == "0"  # nothing was moving: no pending error
    assert arm.ask("PickPlate 1") == "-1046 Power not enabled"


def test_estop_while_a_pick_waits_for_its_grip(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    session(sim, clock, arm)
    arm.send("PickPlate 1")
    move_on(sim, clock, 1.0)
    sim.estop()
    assert arm.reply() == "-1028 Hard E-Stop"
    assert sim.stations == {1: "P1", 2: "P2"}


def test_lost_connection_mid_pick_the_arm_finishes_it(
    sim: PF400Simulator, clock: VirtualClock, arm: Client, status: Client
) -> None:
    session(sim, clock, arm)
    sim.drop_connection("PickPlate")
    arm.send("PickPlate 1 0 0")
    assert arm.hung_up()
    assert status.ask("state") == "0 2"  # the motion began and goes on
    clock.advance(PICK_TO_GRIP_S + 1.0)
    until(lambda: not sim.moving)
    again = Client(sim.port)
    talk(
        again,
        "attach -> 0 -1",
        f"wherec -> 0 {APPROACH_1}",
        "IsFullyClosed -> 0 0",  # something is in the fingers
    )
    assert sim.gripper == "P1" and sim.stations == {2: "P2"}
    assert again.ask("PickPlate 2") == "-2852 Invalid robot state to execute command"
    again.close()


def test_lost_connection_mid_place(sim: PF400Simulator, clock: VirtualClock, arm: Client) -> None:
    session(sim, clock, arm)
    assert pick(sim, clock, arm, 1) == "0 -1"
    sim.drop_connection("PlacePlate")
    arm.send("PlacePlate 3")
    assert arm.hung_up()
    clock.advance(PLACE_S)
    until(lambda: not sim.moving)
    assert sim.stations == {2: "P2", 3: "P1"}
    with pytest.raises(ValueError):
        sim.drop_connection("home")


def test_a_plate_slips_out_after_a_pick_that_felt_it(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    session(sim, clock, arm)
    sim.slip_next_pick()
    assert pick(sim, clock, arm, 4) == "0 0"  # nothing to slip: the fault waits for a plate
    assert pick(sim, clock, arm, 1) == "0 -1"
    assert sim.gripper is None and sim.stations == {1: "P1", 2: "P2"}
    assert arm.ask("IsFullyClosed") == "0 -1"
    assert place(sim, clock, arm, 3) == "0"  # the arm cannot tell: it places nothing
    assert 3 not in sim.stations
    results = [e["result"] for e in sim.actions]
    assert results[-3:] == ["gripped", "slipped", "released_empty"]
    sim.slip_next_pick(lost=True)
    assert pick(sim, clock, arm, 2) == "0 -1"
    assert sim.lost == ["P2"] and sim.stations == {1: "P1"}


def test_a_plate_put_by_hand_makes_the_next_place_collide(
    sim: PF400Simulator, clock: VirtualClock, arm: Client
) -> None:
    session(sim, clock, arm)
    assert pick(sim, clock, arm, 1) == "0 -1"
    sim.put_plate(3, "stray")
    assert place(sim, clock, arm, 3) == "-3122 Soft envelope error"
    assert sim.take_plate(3) == "stray"
    assert place(sim, clock, arm, 3) == "0"
    assert sim.stations == {2: "P2", 3: "P1"}
    with pytest.raises(ValueError):
        sim.take_plate(4)
    with pytest.raises(ValueError):
        sim.put_plate(3, "again")


# -- persistence and running as a process -------------------------------------------------


def test_a_restarted_simulator_finds_the_plates_where_they_were(
    clock: VirtualClock, tmp_path: Path
) -> None:
    state = tmp_path / "arm"
    with PF400Simulator(clock, CONFIG, plates={1: "P1", 2: "P2"}, state_dir=state) as first:
        c = Client(first.port)
        session(first, clock, c)
        assert pick(first, clock, c, 1) == "0 -1"
        assert place(first, clock, c, 4) == "0"
        assert pick(first, clock, c, 2) == "0 -1"
        c.close()
    # Power cycle: the initial plates given now are ignored, the saved state wins.
    with PF400Simulator(clock, CONFIG, plates={5: "X"}, state_dir=state) as second:
        c = Client(second.port)
        talk(
            c,
            "hp -> 0 0",
            "attach -> 0 0",
            "pd 2800 -> 0 0",
            "wherec -> 0 433.013 -250.000 200.000 -30.000 90.000 -180.000 1",
            "IsFullyClosed -> 0 0",
        )
        assert second.stations == {4: "P1"} and second.gripper == "P2"
        session(second, clock, c)
        assert place(second, clock, c, 5) == "0"
        c.close()
    log = [json.loads(line) for line in (state / "pf400_actions.jsonl").open()]
    moves = [(e["command"], e["station"], e["plate"]) for e in log if e["command"] != "home"]
    assert moves == [
        ("PickPlate", 1, "P1"),
        ("PlacePlate", 4, "P1"),
        ("PickPlate", 2, "P2"),
        ("PlacePlate", 5, "P2"),
    ]
    saved = json.loads((state / "pf400_state.json").read_text())
    assert saved["stations"] == {"4": "P1", "5": "P2"} and saved["gripper"] is None


def _serve(args: list[str]) -> tuple[subprocess.Popen[str], int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "labctl.simulators.pf400", "--port", "0", "--status-port", "0"]
        + args,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    words = proc.stdout.readline().split()
    assert words[:4] == ["pf400", "simulator", "on", "127.0.0.1"], words
    return proc, int(words[5]), int(words[7])


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_main_runs_as_a_process_and_restarts_from_its_state(tmp_path: Path) -> None:
    state = tmp_path / "arm"
    common = ["--stations", "3", "--state", str(state), "--pace", "200"]
    proc, port, status_port = _serve([*common, "--plate", "1=P1"])
    try:
        c = Client(port)
        for command in ("mode 0", "hp 1 20", "attach 1", "home"):
            assert c.ask(command) == "0"
        assert c.ask("PickPlate 1 0 0") == "0 -1"
        assert Client(status_port).ask("sysState") == "0 21"
        assert c.ask("PlacePlate 2 0 0") == "0"
        assert c.ask("waitForEom") == "0"
        c.close()
    finally:
        _stop(proc)
    assert json.loads((state / "pf400_state.json").read_text())["stations"] == {"2": "P1"}
    proc, port, _ = _serve(common)
    try:
        c = Client(port)
        assert c.ask("hp") == "0 0" and c.ask("pd 2800") == "0 0"
        for command in ("hp 1 20", "attach 1", "home"):
            assert c.ask(command) == "0"
        assert c.ask("PickPlate 2") == "0 -1"
        c.close()
    finally:
        _stop(proc)
    log = [json.loads(line) for line in (state / "pf400_actions.jsonl").open()]
    assert [e["result"] for e in log] == ["homed", "gripped", "placed", "homed", "gripped"]


def test_a_port_in_use_fails_the_start_cleanly(clock: VirtualClock) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    sim = PF400Simulator(clock)
    with pytest.raises(OSError):
        sim.start(status_port=taken.getsockname()[1])
    taken.close()
    with pytest.raises(RuntimeError):
        _ = sim.port
    sim.stop()
