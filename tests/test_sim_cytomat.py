"""The Cytomat simulator, its serial links and the shared fault model.

Wire tests open a real pseudo-terminal with pyserial (9600 8N1) and a socket:// URL and
assert exact bytes; the rest drives ``handle_line`` directly. Time is a VirtualClock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import serial

from labctl.clock import VirtualClock
from labctl.errors import DeviceError
from labctl.simulators.cytomat import CytomatConfig, CytomatSim, cytomat_state, restore_cytomat
from labctl.simulators.faults import (
    ClimateConfig,
    Fault,
    FaultKind,
    FaultSpecError,
    load_faults,
    parse_faults,
)
from labctl.simulators.serial_link import BREAK, LineFramer, PtyLink, SocketLink

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


def ready_sim(clock: VirtualClock, **kw: object) -> CytomatSim:
    """An initialised Cytomat (no ll:in needed) with plates in slots 5 and 6."""
    kw.setdefault("plates", {5: "P5", 6: "P6"})
    return CytomatSim(clock, CytomatConfig(require_init=False), **kw)  # type: ignore[arg-type]


class Wire:
    """A pyserial client: write one frame, read one reply up to the terminator."""

    def __init__(self, port: serial.SerialBase, terminator: bytes = b"\r") -> None:
        self.port = port
        self.terminator = terminator

    def ask(self, frame: bytes) -> bytes:
        self.port.write(frame)
        return self.port.read_until(self.terminator)


@pytest.fixture(params=["pty", "socket"])
def link_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@contextmanager
def open_wire(kind: str, sim: CytomatSim) -> Iterator[Wire]:
    link: PtyLink | SocketLink
    if kind == "pty":
        link = PtyLink(sim).start()
        # The real Cytomat settings: 9600 baud, 8N1, no flow control.
        port = serial.serial_for_url(
            link.port, baudrate=9600, bytesize=8, parity="N", stopbits=1, timeout=5
        )
    else:
        link = SocketLink(sim).start()
        port = serial.serial_for_url(link.url, timeout=5)
    try:
        yield Wire(port, sim.terminator)
    finally:
        port.close()
        link.stop()
    assert link.failures == []


# -- over the wire -------------------------------------------------------------------------


def test_retrieve_and_store_cycle_over_the_wire(clock: VirtualClock, link_kind: str) -> None:
    sim = CytomatSim(clock, plates={5: "P5"})
    with open_wire(link_kind, sim) as wire:
        assert wire.ask(b"ch:bs\r") == b"bs 02\r"
        assert wire.ask(b"mv:st 005\r") == b"er 11\r"  # not initialised yet
        assert wire.ask(b"ll:in\r") == b"ok 01\r"
        assert wire.ask(b"ch:ba\r") == b"ba 21\r"
        clock.advance(59.9)
        assert wire.ask(b"ch:bs\r") == b"bs 01\r"
        clock.advance(0.1)
        assert wire.ask(b"ch:bs\r") == b"bs 02\r"
        # The register keeps the last step when the operation ends (ba 00 made
        # PyLabRobot's decoder fail: target 0 is no target).
        assert wire.ask(b"ch:ba\r") == b"ba 21\r"

        assert wire.ask(b"mv:st 005\r") == b"ok 11\r"  # busy, plate on the handler
        assert wire.ask(b"ch:ba\r") == b"ba 65\r"  # stacker, moving
        # Sensors: shovel retracted (bit 2) and occupied (4), gate closed (6), transfer
        # station in position 1 (8), handler towards the stacker (12).
        assert wire.ask(b"ch:ts\r") == b"ts 1154\r"
        clock.advance(7.5)
        assert wire.ask(b"ch:ba\r") == b"ba 85\r"  # transfer station, moving
        clock.advance(7.5)
        assert wire.ask(b"ch:bs\r") == b"bs 82\r"  # ready, transfer station occupied
        # Transfer station occupied (bit 7), shovel retracted and empty, gate closed.
        assert wire.ask(b"ch:ts\r") == b"ts 01C4\r"
        assert wire.ask(b"ch:ba\r") == b"ba 85\r"  # the last step, kept
        assert sim.transfer_station == "P5" and sim.slots == {}

        assert wire.ask(b"mv:ts 010\r") == b"ok 11\r"
        assert sim.transfer_station is None
        clock.advance(15)
        assert wire.ask(b"ch:bs\r") == b"bs 02\r"
        assert sim.slots == {10: "P5"}


def test_cr_and_crlf_requests_both_end_a_line(clock: VirtualClock, link_kind: str) -> None:
    with open_wire(link_kind, ready_sim(clock)) as wire:
        assert wire.ask(b"ch:bs\r\n") == b"bs 02\r"
        # Had the LF become an empty line, its "er 03" would come first.
        assert wire.ask(b"ch:be\r") == b"be 00\r"
        wire.port.write(b"ch:b")
        assert wire.ask(b"w\r") == b"bw 00\r"
        assert wire.ask(b"ch:bs\rch:be\r") == b"bs 02\r"
        assert wire.port.read_until(b"\r") == b"be 00\r"


def test_crlf_terminator_when_configured(clock: VirtualClock, link_kind: str) -> None:
    sim = CytomatSim(clock, CytomatConfig(terminator=b"\r\n", require_init=False))
    with open_wire(link_kind, sim) as wire:
        assert wire.ask(b"ch:bs\r") == b"bs 02\r\n"
        assert wire.ask(b"rs:be\r\n") == b"ok 02\r\n"


ERROR_FRAMES = [
    (b"\r", b"er 03\r"),
    (b"xx\r", b"er 03\r"),
    (b"mv:st005\r", b"er 03\r"),
    (b"mv:st\r", b"er 03\r"),
    (b"mv:st  005\r", b"er 03\r"),
    (b"mv:st 005 006\r", b"er 03\r"),
    (b"ch:bs 001\r", b"er 03\r"),
    (b"ll:in 001\r", b"er 03\r"),
    (b"ll:it\r", b"er 03\r"),
    (b"mv:zz 005\r", b"er 02\r"),
    (b"MV:ST 005\r", b"er 02\r"),
    (b"mv:xx 005\r", b"er 02\r"),
    (b"ll:va\r", b"er 02\r"),  # no shaker on this model
    (b"ch:zz\r", b"er 02\r"),
    (b"ch:io\r", b"er 02\r"),  # no O2 configured
    (b"mv:st 5\r", b"er 04\r"),
    (b"mv:st abc\r", b"er 04\r"),
    (b"ll:gp 003\r", b"er 04\r"),
    (b"ll:it 37\r", b"er 04\r"),
    (b"ll:it 60.0\r", b"er 04\r"),
    (b"ll:ic 25.0\r", b"er 04\r"),
    (b"mv:st 000\r", b"er 05\r"),
    (b"mv:ts 043\r", b"er 05\r"),
    (b"mv:ts 007\r", b"er 31\r"),  # transfer station empty
]


def test_immediate_error_codes_over_the_wire(clock: VirtualClock, link_kind: str) -> None:
    sim = ready_sim(clock)
    with open_wire(link_kind, sim) as wire:
        for frame, reply in ERROR_FRAMES:
            assert wire.ask(frame) == reply, frame
        sim.place_on_transfer_station("PX")
        assert wire.ask(b"mv:st 005\r") == b"er 32\r"  # transfer station occupied
        assert wire.ask(b"ch:bs\r") == b"bs 82\r"  # nothing started


def test_link_stops_cleanly_and_serves_a_reconnecting_client(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    before = set(threading.enumerate())
    with PtyLink(sim) as pty, SocketLink(sim) as sock:
        for url in (pty.port, pty.port, sock.url, sock.url):
            port = serial.serial_for_url(url, baudrate=9600, timeout=5)
            assert Wire(port).ask(b"ch:bs\r") == b"bs 02\r"
            port.close()
    assert set(threading.enumerate()) == before
    assert pty.failures == [] and sock.failures == []


def test_line_framer_splits_crlf_across_chunks_and_reports_break() -> None:
    framer = LineFramer()
    assert framer.feed(b"ch:b") == []
    assert framer.feed(b"s\r") == [b"ch:bs"]
    assert framer.feed(b"\nmv:st 005\r\n\r") == [b"mv:st 005", b""]
    assert framer.feed(b"partial\x00CR\r") == [BREAK, b"CR"]
    assert framer.feed(b"a\nb\r") == [b"a\nb"]  # a LF not after CR is an ordinary byte


# -- busy / ready lifecycle and execution errors ----------------------------------------


def test_actions_refused_while_busy_but_checks_answered(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    assert sim.handle_line("mv:st 005") == "ok 11"
    for action in ("mv:st 006", "mv:ts 007", "ll:in", "rs:be", "ll:it 30.0", "ll:gp 002"):
        assert sim.handle_line(action) == "er 01", action
    assert sim.handle_line("ch:bs") == "bs 11"
    assert sim.handle_line("ch:be") == "be 00"
    assert sim.handle_line("ch:it") == "it +37.0 +37.0"
    assert sim.handle_line("mv:zz") == "er 02"  # unknown before busy
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 82"


def test_retrieve_from_empty_slot_is_an_execution_error(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    assert sim.handle_line("mv:st 007") == "ok 01"  # accepted, nothing on the handler
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 0A"  # ready + error
    assert sim.handle_line("ch:be") == "be 02"
    assert sim.handle_line("mv:st 005") == "ok 19"  # still accepted; error stays set
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 8A"
    assert sim.handle_line("rs:be") == "ok 82"
    assert sim.handle_line("ch:be") == "be 00"
    assert sim.transfer_station == "P5"


def test_store_into_occupied_slot_is_an_execution_error(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    sim.place_on_transfer_station("PX")
    assert sim.handle_line("mv:ts 006") == "ok 81"  # plate stays on the transfer station
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 8A"
    assert sim.handle_line("ch:be") == "be 03"
    assert sim.slots == {5: "P5", 6: "P6"} and sim.transfer_station == "PX"
    assert sim.actions == ()


def test_gate_open_and_close(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    assert sim.handle_line("ll:gp 002") == "ok 01"
    assert sim.handle_line("ch:ba") == "ba 8E"
    clock.advance(3)
    assert sim.handle_line("ch:bs") == "bs 22"
    assert sim.handle_line("ll:gp 001") == "ok 21"
    clock.advance(3)
    assert sim.handle_line("ch:bs") == "bs 02"


def test_the_action_register_reads_00_only_before_the_first_operation(clock: VirtualClock) -> None:
    cold = CytomatSim(clock, plates={5: "P5"})
    assert cold.handle_line("ch:ba") == "ba 00"  # nothing done since power-up
    assert ready_sim(clock).handle_line("ch:ba") == "ba 21"  # started initialised
    sim = ready_sim(clock)
    sim.handle_line("ll:gp 002")
    clock.advance(3)
    assert sim.handle_line("ch:ba") == "ba 8E"  # kept: transfer station, open gate
    sim.power_cycle()
    assert sim.handle_line("ch:ba") == "ba 21"


# -- the handler's wait and exposed positions, the shovel ---------------------------------


def test_slot_to_wait_and_back_keeps_the_plate_on_the_handler(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    assert sim.handle_line("mv:ws 007") == "er 22"  # nothing on the handler
    assert sim.handle_line("mv:sw 005") == "ok 11"
    assert sim.handle_line("ch:ba") == "ba 65"  # stacker first ...
    clock.advance(15)
    assert sim.handle_line("ch:ba") == "ba 45"  # ... then the wait position
    assert sim.handle_line("ch:bs") == "bs 12"  # ready, handler occupied
    assert sim.handler == "P5" and sim.slots == {6: "P6"}
    assert sim.handle_line("mv:st 006") == "er 21"  # the handler is taken
    assert sim.handle_line("mv:sw 006") == "er 21"
    assert sim.handle_line("mv:ws 006") == "ok 11"  # into an occupied slot: fails at the end
    clock.advance(15)
    assert sim.handle_line("ch:be") == "be 03" and sim.handler == "P5"
    sim.handle_line("rs:be")
    assert sim.handle_line("mv:ws 009") == "ok 11"
    clock.advance(15)
    assert sim.handler is None and sim.slots == {6: "P6", 9: "P5"}
    assert [a.action for a in sim.actions] == ["slot_to_wait", "wait_to_slot"]


def test_wait_to_transfer_station_and_back(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    assert sim.handle_line("mv:tw") == "er 31"
    sim.handle_line("mv:sw 005")
    clock.advance(15)
    assert sim.handle_line("mv:wt 001") == "er 03"  # takes no location
    assert sim.handle_line("mv:wt") == "ok 11"
    with pytest.raises(DeviceError, match="not free"):
        sim.place_on_transfer_station("PX")  # a plate is on its way there
    clock.advance(15)
    assert sim.transfer_station == "P5" and sim.handler is None
    assert sim.handle_line("mv:tw") == "ok 11"  # the station is empty once the move starts
    clock.advance(15)
    assert sim.handler == "P5" and sim.transfer_station is None


def test_exposed_position_opens_the_gate_and_holds_the_plate_out(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    assert sim.handle_line("mv:hw") == "er 11"  # nothing held out
    assert sim.handle_line("mv:sh 005") == "ok 11"
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 32"  # ready, handler occupied, gate open
    assert sim.handle_line("ch:ts") == "ts 2138"  # shovel out and occupied, gate opened
    assert sim.handle_line("mv:st 006") == "er 11"  # the handler is outside
    assert sim.handle_line("ll:sp 001") == "er 11"
    assert sim.handle_line("mv:hs 006") == "ok 31"  # occupied: fails, the plate stays out
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 3A"
    sim.handle_line("rs:be")
    assert sim.handle_line("mv:hw") == "ok 31"  # the gate closes behind it
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 12"  # back inside, gate closed
    assert sim.handle_line("mv:wh") == "ok 11"
    clock.advance(15)
    assert sim.handle_line("mv:hs 009") == "ok 31"
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 02" and sim.slots == {6: "P6", 9: "P5"}


def test_an_extended_shovel_refuses_moves_until_retracted(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    assert sim.handle_line("ll:sp 003") == "er 04"
    assert sim.handle_line("ll:sp 002") == "ok 01"
    assert sim.handle_line("ch:ba") == "ba 47"  # wait position, extend shovel
    clock.advance(3)
    assert sim.handle_line("ch:ts") == "ts 0148"  # extended, gate closed, position 1
    assert sim.handle_line("mv:st 005") == "er 12"
    assert sim.handle_line("ll:sp 001") == "ok 01"
    clock.advance(3)
    assert sim.handle_line("mv:st 005") == "ok 11"


def test_barcode_scan_of_a_range_changes_nothing(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    for frame, reply in [
        ("mv:sn 001", "er 03"),
        ("mv:sn 1 2", "er 04"),
        ("mv:sn 001 043", "er 05"),
    ]:
        assert sim.handle_line(frame) == reply, frame
    assert sim.handle_line("mv:sn 001 010") == "ok 01"
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 02" and sim.slots == {5: "P5", 6: "P6"}


def test_swap_station_register_reports_the_transfer_station(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    assert sim.handle_line("ch:sw") == "sw 100"  # position 1 at the gate, both sides empty
    sim.place_on_transfer_station("PX")
    assert sim.handle_line("ch:sw") == "sw 110"


# -- models: rack/site addressing, shakers ------------------------------------------------


def test_c2c_425_addresses_rack_and_site_from_zero(clock: VirtualClock) -> None:
    config = CytomatConfig(slots=7, racks=(3, 4), model="C2C_425", require_init=False)
    sim = CytomatSim(clock, config, plates={6: "P6"})
    for frame, reply in [
        ("mv:st 006", "er 03"),  # one absolute number is not this model's form
        ("mv:st 1 2", "er 04"),
        ("mv:st 00 03", "er 05"),  # rack 0 has sites 00..02
        ("mv:st 02 00", "er 05"),  # two racks: 00 and 01
    ]:
        assert sim.handle_line(frame) == reply, frame
    assert sim.handle_line("mv:st 01 02") == "ok 11"  # rack 1 site 2 = slot 3 + 2 + 1
    clock.advance(15)
    assert sim.transfer_station == "P6"
    assert sim.handle_line("mv:ts 00 00") == "ok 11"
    clock.advance(15)
    assert sim.slots == {1: "P6"}
    assert sim.actions[-1].slot == 1 and sim.actions[-1].command == "mv:ts 00 00"


def test_slot_models_keep_three_digit_addresses(clock: VirtualClock) -> None:
    sim = CytomatSim(clock, CytomatConfig(model="C6000", require_init=False), plates={5: "P5"})
    assert sim.handle_line("mv:st 00 04") == "er 03"
    assert sim.handle_line("mv:st 005") == "ok 11"


def test_shakers_of_a_shaking_model(clock: VirtualClock) -> None:
    sim = CytomatSim(clock, CytomatConfig(model="C2C_450_SHAKE", require_init=False))
    assert sim.handle_line("se:pb 20 0400") == "ok 02"
    assert sim.handle_line("se:pb 21 0350") == "ok 02"
    assert sim.handle_line("ch:pb 20") == "pb 0400"
    assert sim.handle_line("ch:pb 21") == "pb 0350"
    for frame, reply in [
        ("se:pb 22 0400", "er 04"),  # two shakers: 20 and 21
        ("se:pb 20 400", "er 04"),
        ("se:pb 20", "er 03"),
        ("ll:va 003", "er 04"),
        ("ll:vi 001", "er 03"),
        ("ch:pb", "er 04"),
    ]:
        assert sim.handle_line(frame) == reply, frame
    assert [sim.handle_line(c) for c in ("ll:vi", "ll:va", "ll:vd 002", "ll:vd")] == ["ok 02"] * 4
    assert sim._shakers.running == set()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "C2C_50"}, "model must be one of"),
        ({"addressing": "level"}, "addressing must be"),
        ({"slots": 7, "racks": (3, 3)}, "7 in all"),
        ({"slots": 100, "racks": (100,)}, "1..99 sites"),
    ],
)
def test_config_refuses_an_unknown_model_or_racks_that_do_not_add_up(
    kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        CytomatConfig(**kwargs)  # type: ignore[arg-type]


def test_a_plate_on_the_handler_survives_a_restart(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    sim.handle_line("mv:sh 005")
    clock.advance(15)
    back = ready_sim(clock, plates={})
    restore_cytomat(back, cytomat_state(sim))
    assert back.handler == "P5" and back.handle_line("ch:bs") == "bs 32"
    assert back.handle_line("ch:ba") == "ba 85"
    assert back.handle_line("mv:hw") == "ok 31"


def test_physical_side_guards_the_transfer_station(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    with pytest.raises(DeviceError, match="empty"):
        sim.take_from_transfer_station()
    sim.handle_line("mv:st 005")
    with pytest.raises(DeviceError, match="not free"):
        sim.place_on_transfer_station("PX")  # a plate is on its way there
    clock.advance(15)
    assert sim.take_from_transfer_station() == "P5"
    assert sim.handle_line("ch:bs") == "bs 02"


# -- climate -------------------------------------------------------------------------------


def test_setpoints_and_deterministic_drift(clock: VirtualClock) -> None:
    sim = CytomatSim(clock, CytomatConfig(climate=ClimateConfig(o2=5.0)))
    assert sim.handle_line("ll:it 30.0") == "ok 02"
    assert sim.handle_line("ch:it") == "it +30.0 +37.0"
    clock.advance(900)  # one time constant: 30 + 7/e
    assert sim.handle_line("ch:it") == "it +30.0 +32.6"
    assert sim.handle_line("ll:ic 05.5") == "ok 02"
    assert sim.handle_line("ch:ic") == "ic +05.5 +05.0"
    clock.advance(3000)
    assert sim.handle_line("ch:ic") == "ic +05.5 +05.5"
    assert sim.handle_line("ch:ih") == "ih +95.0 +95.0"
    assert sim.handle_line("ch:io") == "io +05.0 +05.0"


# -- action log ------------------------------------------------------------------------------


def test_action_log_has_each_completed_action_once(clock: VirtualClock, tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    sim = CytomatSim(clock, name="inc-1", plates={5: "P5"}, action_log=path)
    sim.handle_line("ll:in")
    for _ in range(3):
        clock.advance(30)
        sim.handle_line("ch:bs")
    sim.handle_line("mv:st 005")
    clock.advance(100)  # completion noticed late: stamped with the completion time
    sim.handle_line("ch:bs")
    sim.handle_line("ch:bs")
    sim.handle_line("mv:ts 007")
    clock.advance(15)
    sim.handle_line("mv:st 009")  # empty slot: fails, not logged
    clock.advance(15)
    sim.handle_line("ch:bs")
    assert path.read_text().splitlines() == [
        '{"time": "2026-12-01T08:01:00+00:00", "device": "inc-1", "action": "init", '
        '"slot": null, "plate": null, "command": "ll:in", "seq": 1}',
        '{"time": "2026-12-01T08:01:45+00:00", "device": "inc-1", "action": "retrieve", '
        '"slot": 5, "plate": "P5", "command": "mv:st 005", "seq": 2}',
        '{"time": "2026-12-01T08:03:25+00:00", "device": "inc-1", "action": "store", '
        '"slot": 7, "plate": "P5", "command": "mv:ts 007", "seq": 3}',
    ]
    assert [a.to_json() for a in sim.actions] == path.read_text().splitlines()


# -- faults --------------------------------------------------------------------------------


def test_no_reply_loses_the_request_over_the_wire(clock: VirtualClock, link_kind: str) -> None:
    fault = Fault(FaultKind.NO_REPLY, after_commands=1)
    sim = ready_sim(clock, faults=[fault])
    with open_wire(link_kind, sim) as wire:
        assert wire.ask(b"ch:bs\r") == b"bs 02\r"
        wire.port.write(b"mv:st 005\r")  # lost: no reply and no move
        assert wire.ask(b"ch:bs\r") == b"bs 02\r"  # the first reply read is this one's
        assert sim.slots == {5: "P5", 6: "P6"}


def test_no_reply_can_lose_only_the_reply(clock: VirtualClock, tmp_path: Path) -> None:
    (fault,) = load_faults("- {fault: no_reply, after_commands: 0, lost: reply}")
    sim = ready_sim(clock, faults=[fault], action_log=tmp_path / "log")
    assert sim.handle_line("mv:st 005") is None
    assert sim.handle_line("ch:bs") == "bs 11"  # it moves all the same
    clock.advance(15)
    assert [(a.action, a.slot) for a in sim.actions] == [("retrieve", 5)]


def test_no_reply_window_by_time(clock: VirtualClock) -> None:
    at = T0 + timedelta(minutes=5)
    sim = ready_sim(clock, faults=[Fault(FaultKind.NO_REPLY, at=at, duration_s=600)])
    assert sim.handle_line("ch:bs") == "bs 02"
    clock.set(at)
    assert [sim.handle_line("ch:bs") for _ in range(3)] == [None, None, None]
    clock.advance(599)
    assert sim.handle_line("ch:bs") is None
    clock.advance(1)
    assert sim.handle_line("ch:bs") == "bs 02"


def test_garbled_reply_is_seeded_junk_over_the_wire(clock: VirtualClock, link_kind: str) -> None:
    def junk(seed: int) -> str | None:
        sim = ready_sim(clock, faults=[Fault(FaultKind.GARBLED_REPLY, after_commands=0, seed=seed)])
        return sim.handle_line("ch:bs")

    expected = junk(7)
    assert expected is not None and expected == junk(7) and expected != junk(8)
    assert "\r" not in expected and "\n" not in expected

    sim = ready_sim(clock, faults=[Fault(FaultKind.GARBLED_REPLY, after_commands=1, seed=7)])
    with open_wire(link_kind, sim) as wire:
        assert wire.ask(b"ch:bs\r") == b"bs 02\r"
        assert wire.ask(b"ch:bs\r") == expected.encode("latin-1") + b"\r"
        assert wire.ask(b"ch:bs\r") == b"bs 02\r"  # count 1: only one reply hit


def test_error_code_fault_fails_one_move(clock: VirtualClock) -> None:
    sim = ready_sim(clock, faults=[Fault(FaultKind.ERROR_CODE, after_commands=0, code="0B")])
    assert sim.handle_line("mv:st 005") == "ok 01"  # the fault keeps the plate in place
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 0A"
    assert sim.handle_line("ch:be") == "be 0B"
    assert sim.handle_line("rs:be") == "ok 02"
    assert sim.handle_line("mv:st 005") == "ok 11"  # only one move was hit
    clock.advance(15)
    assert sim.handle_line("ch:bs") == "bs 82"
    assert [a.action for a in sim.actions] == ["retrieve"]


def test_door_open_sets_bit_and_fails_moves(clock: VirtualClock) -> None:
    fault = Fault(FaultKind.DOOR_OPEN, at=T0 + timedelta(seconds=10), duration_s=60)
    sim = ready_sim(clock, faults=[fault])
    assert sim.handle_line("ch:bs") == "bs 02"
    clock.advance(10)
    assert sim.handle_line("ch:bs") == "bs 42"
    assert sim.handle_line("mv:st 005") == "ok 4A"  # failed at once: error register 05
    assert sim.handle_line("ch:be") == "be 05"
    assert sim.handle_line("rs:be") == "ok 42"
    assert sim.handle_line("ll:in") == "ok 4A"
    clock.advance(60)
    assert sim.handle_line("ch:bs") == "bs 0A"
    assert sim.slots == {5: "P5", 6: "P6"}


def test_co2_out_of_range_drifts_away_and_back(clock: VirtualClock) -> None:
    (fault,) = load_faults(
        'faults:\n  - {fault: co2_out_of_range, at: "2026-12-01T09:00:00Z",'
        " duration: 10 min, co2_offset: 2.0}\n"
    )
    sim = ready_sim(clock, faults=[fault])
    clock.set(datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc))
    assert sim.handle_line("ch:ic") == "ic +05.0 +05.0"
    clock.advance(300)  # one time constant toward 7.0
    assert sim.handle_line("ch:ic") == "ic +05.0 +06.3"
    clock.advance(600)  # window closed at 600 s (6.73), then one time constant back
    assert sim.handle_line("ch:ic") == "ic +05.0 +05.6"


def test_faults_for_other_devices_are_ignored(clock: VirtualClock) -> None:
    faults = parse_faults([{"device": "inc-2", "fault": "no_reply", "after_commands": 0}])
    sim = ready_sim(clock, name="inc-1", faults=faults)
    assert sim.handle_line("ch:bs") == "bs 02"


@pytest.mark.parametrize(
    ("scenario", "field"),
    [
        ("- {fault: on_fire, after_commands: 0}", "fault"),
        ("- {fault: no_reply, after_commands: 0, colour: red}", "colour"),
        ("- {fault: no_reply}", "at"),
        ('- {fault: no_reply, after_commands: 0, at: "2026-12-01T09:00:00Z"}', "at"),
        ('- {fault: no_reply, at: "2026-12-01T09:00:00"}', "at"),
        ("- {fault: no_reply, at: yesterday}", "at"),
        ("- {fault: no_reply, after_commands: -1}", "after_commands"),
        ("- {fault: no_reply, after_commands: two}", "after_commands"),
        ("- {fault: no_reply, after_commands: 0, duration: 10 weeks}", "duration"),
        ("- {fault: no_reply, after_commands: 0, duration: 0}", "duration"),
        ("- {fault: door_open, after_commands: 0, count: 2}", "count"),
        ("- {fault: no_reply, after_commands: 0, count: 0}", "count"),
        ("- {fault: error_code, after_commands: 0}", "code"),
        ("- {fault: error_code, after_commands: 0, code: 5}", "code"),
        ('- {fault: no_reply, after_commands: 0, code: "05"}', "code"),
        ("- {fault: co2_out_of_range, after_commands: 0}", "co2_offset"),
        ("- {fault: co2_out_of_range, after_commands: 0, co2_offset: high}", "co2_offset"),
        ("- {fault: no_reply, after_commands: 0, lost: both}", "lost"),
        ("- {fault: garbled_reply, after_commands: 0, lost: reply}", "lost"),
        ("- just a string", "fault"),
        ("{faults: [], extra: 1}", "extra"),
        ("fault: no_reply", "fault"),
        ("- {fault: [unclosed", "faults"),
    ],
)
def test_fault_scenario_errors_name_the_field(scenario: str, field: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        load_faults(scenario)
    assert info.value.field == field
    assert f"'{field}'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_fault_scenario_loads_every_field(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(
        "faults:\n"
        "  - {device: inc-1, fault: error_code, after_commands: 12, code: '05', count: 2}\n"
        "  - {fault: door_open, at: 2026-12-03T09:00:00Z, duration: 1.5 h}\n"
        "  - {fault: garbled_reply, after_commands: 3, duration: 30, seed: 4}\n"
    )
    a, b, c = load_faults(path)
    assert a == Fault(FaultKind.ERROR_CODE, device="inc-1", after_commands=12, code="05", count=2)
    assert b == Fault(
        FaultKind.DOOR_OPEN, at=datetime(2026, 12, 3, 9, tzinfo=timezone.utc), duration_s=5400.0
    )
    assert (c.duration_s, c.seed, c.window_hits) == (30.0, 4, None)
    assert load_faults("") == ()


def test_cytomat_rejects_a_code_of_the_wrong_shape(clock: VirtualClock) -> None:
    with pytest.raises(FaultSpecError, match="'code'"):
        CytomatSim(clock, faults=[Fault(FaultKind.ERROR_CODE, after_commands=0, code="00007")])


# -- what a dry run may sleep through (QuietWatch) --------------------------------------------


def test_quiet_until_a_timed_fault_then_not_while_it_acts(clock: VirtualClock) -> None:
    opens = T0 + timedelta(hours=2)
    sim = ready_sim(clock, faults=[Fault(FaultKind.DOOR_OPEN, at=opens, duration_s=1200)])
    assert sim.handle_line("ch:bs") == "bs 02"
    clock.advance(60)
    assert sim.quiet_since(T0) and sim.next_change() == opens
    clock.set(opens + timedelta(minutes=5))
    assert not sim.quiet_since(T0)  # the window opened in between
    assert not sim.quiet_since(opens + timedelta(minutes=1))  # and is open now
    assert sim.next_change() == clock.now()
    clock.set(opens + timedelta(minutes=30))
    assert not sim.quiet_since(opens)  # it closed in between: a check would see it gone
    assert sim.quiet_since(opens + timedelta(minutes=21)) and sim.next_change() is None


def test_a_command_or_a_move_under_way_is_never_quiet(clock: VirtualClock) -> None:
    sim = ready_sim(clock)
    clock.advance(60)
    assert sim.quiet_since(T0)
    start = clock.now()
    assert sim.handle_line("mv:st 005").startswith("ok")
    assert not sim.quiet_since(T0) and sim.next_change() == start  # busy
    clock.advance(600)  # the move is long done
    assert not sim.quiet_since(start)  # the command came after `since`
    assert sim.quiet_since(start + timedelta(seconds=1)) and sim.next_change() is None
    assert sim.handle_line("ch:bs").startswith("bs")  # checks change nothing
    assert sim.quiet_since(start + timedelta(seconds=1))


def test_a_fault_waiting_for_a_request_count_keeps_every_check(clock: VirtualClock) -> None:
    # It opens on some request number: skipping a check would move it to another request.
    sim = ready_sim(clock, faults=[Fault(FaultKind.NO_REPLY, after_commands=3)])
    clock.advance(3600)
    assert not sim.quiet_since(T0) and sim.next_change() == clock.now()


def test_the_check_a_reply_fault_hit_is_not_taken_as_the_last_word(clock: VirtualClock) -> None:
    at = T0 + timedelta(minutes=10)
    sim = ready_sim(clock, faults=[Fault(FaultKind.NO_REPLY, at=at)])  # one reply lost
    clock.set(at)
    assert sim.handle_line("ch:bs") is None
    clock.advance(600)
    # Exhausted now, but the check at `at` read "no reply": the next one must really ask.
    assert not sim.quiet_since(at)
    assert sim.quiet_since(at + timedelta(seconds=1)) and sim.next_change() is None


def test_a_drifting_climate_is_not_quiet_until_it_reads_steady(clock: VirtualClock) -> None:
    sim = CytomatSim(clock, CytomatConfig(climate=ClimateConfig(initial={"co2": 3.0})))
    assert not sim.quiet_since(T0) and sim.next_change() == T0
    clock.advance(3 * 3600)  # tau 300 s: the 2 % gap is below 1e-3 after 300 * ln(2000) s
    settled = T0 + timedelta(seconds=300 * math.log(2.0 / 1e-3))
    assert sim.quiet_since(settled + timedelta(seconds=1))
    assert not sim.quiet_since(settled - timedelta(seconds=1))
    assert sim.handle_line("ch:ic") == "ic +05.0 +05.0"
