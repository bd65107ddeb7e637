"""The LiCONiC StoreX simulator: session rules, relays, DMs, operations, faults, action log.

Wire tests open a real pseudo-terminal with pyserial at the device's settings (9600 8E1,
RTS/CTS) and a socket:// URL, and assert exact bytes; the rest drives ``handle_line``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import serial

from labctl.clock import VirtualClock
from labctl.errors import DeviceError
from labctl.simulators.faults import ClimateConfig, Fault, FaultKind, FaultSpecError, load_faults
from labctl.simulators.liconic import LiconicConfig, LiconicSim
from labctl.simulators.serial_link import PtyLink, SocketLink

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


def ask_all(sim: LiconicSim, *lines: str) -> list[str | None]:
    return [sim.handle_line(line) for line in lines]


def open_sim(clock: VirtualClock, config: LiconicConfig | None = None, **kw: object) -> LiconicSim:
    """A LiCONiC with its session open and handling initialised; plates at (1,5) and (2,3)."""
    kw.setdefault("plates", {(1, 5): "P15", (2, 3): "P23"})
    sim = LiconicSim(clock, config, **kw)  # type: ignore[arg-type]
    assert ask_all(sim, "CR", "ST 1801") == ["CC", "OK"]
    clock.advance(sim.config.init_s)
    assert sim.handle_line("RD 1915") == "1"
    return sim


class Wire:
    def __init__(self, port: serial.SerialBase) -> None:
        self.port = port

    def ask(self, frame: bytes) -> bytes:
        self.port.write(frame)
        return self.port.read_until(b"\r\n")


@pytest.fixture(params=["pty", "socket"])
def link_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@contextmanager
def open_wire(kind: str, sim: LiconicSim) -> Iterator[Wire]:
    link: PtyLink | SocketLink
    if kind == "pty":
        link = PtyLink(sim).start()
        # The real LiCONiC settings: 9600 baud, 8E1, RTS/CTS handshake.
        port = serial.serial_for_url(
            link.port, baudrate=9600, bytesize=8, parity="E", stopbits=1, rtscts=True, timeout=5
        )
    else:
        link = SocketLink(sim).start()
        port = serial.serial_for_url(link.url, timeout=5)
    try:
        yield Wire(port)
    finally:
        port.close()
        link.stop()
    assert link.failures == []


# -- over the wire -------------------------------------------------------------------------


def test_session_init_export_import_over_the_wire(clock: VirtualClock, link_kind: str) -> None:
    sim = LiconicSim(clock, plates={(1, 5): "P15"})
    with open_wire(link_kind, sim) as wire:
        assert wire.ask(b"RD 1915\r") == b"E1\r\n"  # session not opened yet
        assert wire.ask(b"CR\r") == b"CC\r\n"
        assert wire.ask(b"ST 1801\r") == b"OK\r\n"
        assert wire.ask(b"RD 1915\r") == b"0\r\n"
        assert wire.ask(b"RD 1801\r") == b"1\r\n"
        clock.advance(20)
        assert wire.ask(b"RD 1915\r") == b"1\r\n"

        assert wire.ask(b"WR DM0 1\r") == b"OK\r\n"
        assert wire.ask(b"WR DM5 00005\r") == b"OK\r\n"
        assert wire.ask(b"RD DM5\r") == b"00005\r\n"
        assert wire.ask(b"ST 1905\r") == b"OK\r\n"
        assert wire.ask(b"RD 1915\r") == b"0\r\n"
        assert wire.ask(b"RD 1812\r") == b"1\r\n"  # plate on the shovel
        assert wire.ask(b"RD 1813\r") == b"0\r\n"
        clock.advance(14.9)
        assert wire.ask(b"RD 1915\r") == b"0\r\n"
        clock.advance(0.1)
        assert wire.ask(b"RD 1915\r") == b"1\r\n"
        assert wire.ask(b"RD 1813\r") == b"1\r\n"
        assert wire.ask(b"RD 1814\r") == b"0\r\n"
        assert wire.ask(b"ST 1903\r") == b"OK\r\n"
        assert sim.transfer_station == "P15" and sim.slots == {}

        assert wire.ask(b"WR DM0 2\r\n") == b"OK\r\n"  # CRLF requests are accepted too
        assert wire.ask(b"WR DM5 11\r") == b"OK\r\n"
        assert wire.ask(b"ST 1904\r") == b"OK\r\n"
        assert wire.ask(b"RD 1904\r") == b"1\r\n"
        clock.advance(15)
        assert wire.ask(b"RD 1915\r") == b"1\r\n"
        assert wire.ask(b"RD 1904\r") == b"0\r\n"
        assert sim.slots == {(2, 11): "P15"} and sim.transfer_station is None


def test_break_byte_closes_the_session_over_the_wire(clock: VirtualClock, link_kind: str) -> None:
    sim = LiconicSim(clock, LiconicConfig(require_break=True))
    with open_wire(link_kind, sim) as wire:
        assert wire.ask(b"CR\r") == b"E1\r\n"  # no BREAK seen yet
        wire.port.write(b"\x00")  # how a raw tty presents a received BREAK
        assert wire.ask(b"CR\r") == b"CC\r\n"
        assert wire.ask(b"RD 1915\r") == b"1\r\n"
        assert wire.ask(b"CR\r") == b"CC\r\n"  # CR on an open session
        assert wire.ask(b"RD 19\x0015\r") == b"E1\r\n"  # BREAK mid-line: closed again
        assert wire.ask(b"CR\r") == b"CC\r\n"


def test_error_replies_over_the_wire(clock: VirtualClock, link_kind: str) -> None:
    frames = [
        (b"RD 1999\r", b"E0\r\n"),
        (b"ST 1234\r", b"E0\r\n"),
        (b"RD DM10000\r", b"E0\r\n"),
        (b"WR DM10000 1\r", b"E0\r\n"),
        (b"rd 1915\r", b"E1\r\n"),
        (b"RD  1915\r", b"E1\r\n"),
        (b"RD 915\r", b"E1\r\n"),
        (b"RD 1915 \r", b"E1\r\n"),
        (b"WR DM0\r", b"E1\r\n"),
        (b"WR DM0 abc\r", b"E1\r\n"),
        (b"WR DM0 70000\r", b"E1\r\n"),
        (b"XX\r", b"E1\r\n"),
        (b"\r", b"E1\r\n"),
        (b"ST 1915\r", b"E4\r\n"),
        (b"RS 1814\r", b"E4\r\n"),
        (b"ST 1813\r", b"E4\r\n"),
        (b"WR DM982 370\r", b"E4\r\n"),
        (b"WR DM200 0\r", b"E4\r\n"),
    ]
    with open_wire(link_kind, open_sim(clock)) as wire:
        for frame, reply in frames:
            assert wire.ask(frame) == reply, frame


# -- session, relays and data memory ----------------------------------------------------------


def test_everything_before_cr_is_e1_and_break_closes(clock: VirtualClock) -> None:
    sim = LiconicSim(clock)
    assert ask_all(sim, "ST 1801", "RD DM0", "WR DM0 1", "garbage") == ["E1"] * 4
    assert sim.handle_line("CR") == "CC"
    sim.break_signal()
    assert sim.handle_line("RD 1915") == "E1"
    assert sim.handle_line("CR") == "CC"  # require_break=False: CR alone reopens


def test_data_memory_persists_and_pads(clock: VirtualClock) -> None:
    sim = open_sim(clock)
    assert sim.handle_line("RD DM23") == "00000"
    assert ask_all(sim, "WR DM23 1028", "RD DM23") == ["OK", "01028"]
    assert ask_all(sim, "WR DM10 -5", "RD DM10") == ["OK", "-0005"]
    assert ask_all(sim, "WR DM9999 65535", "RD DM9999") == ["OK", "65535"]
    assert sim.handle_line("RD DM200") == "00000"


def test_stored_flags(clock: VirtualClock) -> None:
    sim = open_sim(clock)
    assert ask_all(sim, "RD 1201", "RS 1201", "ST 1604", "RD 1604") == ["0", "OK", "OK", "1"]


def test_operations_need_ready_but_reset_does_not(clock: VirtualClock) -> None:
    sim = open_sim(clock)
    assert ask_all(sim, "WR DM0 1", "WR DM5 5", "ST 1905") == ["OK"] * 3
    assert ask_all(sim, "ST 1905", "ST 1904", "ST 1801", "ST 1903") == ["E1"] * 4
    assert ask_all(sim, "WR DM5 6", "RS 1905") == ["OK", "OK"]  # DM writes and RS still fine
    assert sim.slots == {(2, 3): "P23"}  # P15 is on the shovel
    assert sim.handle_line("ST 1900") == "OK"  # aborts: the plate is back in its slot
    assert ask_all(sim, "RD 1915", "RD 1812") == ["1", "0"]
    assert sim.slots == {(1, 5): "P15", (2, 3): "P23"}
    clock.advance(60)
    assert sim.transfer_station is None and sim.actions[1:] == ()


def test_every_relay_of_the_plc_answers(clock: VirtualClock) -> None:
    """A KV PLC answers for every relay it has, used by LiCONiC's program or not (PyLabRobot
    reads 1807/1912, sets 1901/1902/1911/1912/1913); E0 only outside its relay space."""
    sim = open_sim(clock)
    assert ask_all(sim, "RD 1807", "RD 1912", "RD 1914", "RD 1901") == ["0"] * 4
    assert ask_all(sim, "ST 1912", "RD 1912", "RS 1912", "RD 1912") == ["OK", "1", "OK", "0"]
    assert ask_all(sim, "ST 1911", "ST 1910", "RS 1910", "ST 1901", "ST 1902") == ["OK"] * 5
    assert ask_all(sim, "RD 1915", "RD 1812") == ["1", "0"]  # nothing moved for them
    assert ask_all(sim, "ST 1807", "RD 1916", "ST 3000", "RD 0099") == ["E4", "E0", "E0", "E0"]
    assert ask_all(sim, "RD DM25", "RD DM29") == ["00011", "00002"]  # levels, cassettes


def test_cq_ends_the_session(clock: VirtualClock) -> None:
    sim = open_sim(clock)
    assert ask_all(sim, "CQ", "RD 1915", "CQ", "CR", "RD 1915") == ["CF", "E1", "E1", "CC", "1"]


def test_shaker_relay_and_speed_register(clock: VirtualClock) -> None:
    sim = open_sim(clock)
    assert ask_all(sim, "WR DM39 00250", "ST 1913", "RD 1913", "RD DM39") == [
        "OK",
        "OK",
        "1",
        "00250",
    ]
    assert sim.shaking and sim.handle_line("RD 1915") == "1"  # shaking keeps it ready
    assert ask_all(sim, "RS 1913", "RD 1913") == ["OK", "0"]
    assert not sim.shaking
    sim.handle_line("ST 1913")
    sim.power_cycle()
    assert not sim.shaking


def test_pick_and_place_move_a_plate_between_slots(clock: VirtualClock, tmp_path: Path) -> None:
    log = tmp_path / "actions.jsonl"
    sim = open_sim(clock, action_log=log)
    assert ask_all(sim, "WR DM0 1", "WR DM5 5", "ST 1908") == ["OK"] * 3
    assert ask_all(sim, "RD 1915", "RD 1908", "RD 1812") == ["0", "1", "1"]
    assert sim.slots == {(2, 3): "P23"} and sim.shovel is None  # in motion
    clock.advance(sim.config.shovel_s)
    assert ask_all(sim, "RD 1915", "RD 1908", "RD 1812") == ["1", "0", "1"]
    assert sim.shovel == "P15"
    assert ask_all(sim, "WR DM0 2", "WR DM5 4", "ST 1909", "RD 1909") == ["OK"] * 3 + ["1"]
    clock.advance(sim.config.shovel_s)
    assert ask_all(sim, "RD 1915", "RD 1812", "ST 1903") == ["1", "0", "OK"]
    assert sim.slots == {(2, 3): "P23", (2, 4): "P15"} and sim.shovel is None
    assert [(a.action, a.command, a.slot, a.plate) for a in sim.actions] == [
        ("init", "ST 1801", None, None),
        ("pick", "ST 1908", 5, "P15"),
        ("place", "ST 1909", 15, "P15"),
    ]
    assert len(log.read_text().splitlines()) == 3


def test_reset_puts_a_moving_plate_back_and_a_picked_plate_stays_on_the_shovel(
    clock: VirtualClock,
) -> None:
    sim = open_sim(clock)
    assert ask_all(sim, "WR DM0 1", "WR DM5 5", "ST 1908", "ST 1900") == ["OK"] * 4
    assert sim.slots[(1, 5)] == "P15" and sim.shovel is None
    ask_all(sim, "ST 1908")
    clock.advance(sim.config.shovel_s)
    assert ask_all(sim, "WR DM5 6", "ST 1909", "ST 1900", "RD 1812") == ["OK"] * 3 + ["1"]
    assert sim.shovel == "P15" and (1, 6) not in sim.slots
    sim.power_cycle()
    assert sim.shovel == "P15"


@pytest.mark.parametrize(
    ("first", "then", "code"),
    [
        ([], ["WR DM5 7", "ST 1908"], "00316"),  # pick from an empty slot
        ([], ["WR DM5 7", "ST 1909"], "00516"),  # place with nothing on the shovel
        (["ST 1908"], ["WR DM0 2", "WR DM5 3", "ST 1908"], "00315"),  # shovel already full
        (["ST 1908"], ["WR DM0 2", "WR DM5 3", "ST 1909"], "00511"),  # slot occupied
        (["ST 1908"], ["WR DM5 7", "ST 1905"], "00015"),  # export with a plate on the shovel
    ],
)
def test_pick_and_place_errors(
    clock: VirtualClock, first: list[str], then: list[str], code: str
) -> None:
    sim = open_sim(clock)
    assert ask_all(sim, "WR DM0 1", "WR DM5 5", *first) == ["OK"] * (2 + len(first))
    clock.advance(sim.config.shovel_s)
    assert ask_all(sim, *then) == ["OK"] * len(then)
    clock.advance(sim.config.transfer_s)
    assert ask_all(sim, "RD 1915", "RD 1814", "RD DM200") == ["0", "1", code]
    assert sim.slots[(2, 3)] == "P23"  # nothing moved


# -- handling errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "lines", "code"),
    [
        # Codes of the real table (V0712 1.4 as PyLabRobot transcribes it), not 002xx/001xx
        # "phase + cause" codes: 001xx/002xx are the steps of an import/export.
        ("", ["WR DM0 1", "WR DM5 7", "ST 1905"], "00016"),  # export from empty slot
        ("PX", ["WR DM0 1", "WR DM5 5", "ST 1905"], "00013"),  # transfer station occupied
        ("", ["WR DM0 1", "WR DM5 7", "ST 1904"], "00016"),  # import, transfer station empty
        ("PX", ["WR DM0 2", "WR DM5 3", "ST 1904"], "00107"),  # import into occupied slot
    ],
)
def test_handling_errors_after_the_operation(
    clock: VirtualClock, setup: str, lines: list[str], code: str
) -> None:
    sim = open_sim(clock)
    if setup:
        sim.place_on_transfer_station(setup)
    assert ask_all(sim, *lines) == ["OK"] * 3
    assert ask_all(sim, "RD 1915", "RD 1814", "RD DM200") == ["0", "0", "00000"]
    clock.advance(15)
    assert ask_all(sim, "RD 1915", "RD 1814", "RD DM200") == ["0", "1", code]
    clock.advance(600)
    assert sim.handle_line("RD 1915") == "0"  # stays until reset
    assert sim.handle_line("ST 1904") == "E1"
    assert sim.handle_line("ST 1900") == "OK"
    assert ask_all(sim, "RD 1915", "RD 1814", "RD DM200") == ["1", "0", "00000"]
    assert sim.slots == {(1, 5): "P15", (2, 3): "P23"}
    assert sim.transfer_station == (setup or None)
    assert [a.action for a in sim.actions] == ["init"]


def test_immediate_handling_errors(clock: VirtualClock) -> None:
    sim = LiconicSim(clock, plates=[(1, 5)])
    assert ask_all(sim, "CR", "WR DM0 1", "WR DM5 5", "ST 1905") == ["CC", "OK", "OK", "OK"]
    assert ask_all(sim, "RD 1915", "RD 1814", "RD DM200") == ["0", "1", "00014"]  # no init
    assert ask_all(sim, "ST 1900", "ST 1801") == ["OK", "OK"]
    clock.advance(20)
    assert ask_all(sim, "WR DM0 3", "ST 1905", "RD DM200") == ["OK", "OK", "00011"]
    assert ask_all(sim, "ST 1900", "WR DM0 1", "WR DM5 12", "ST 1904") == ["OK"] * 4
    assert ask_all(sim, "RD 1814", "RD DM200") == ["1", "00012"]  # level beyond DM25


# -- climate -------------------------------------------------------------------------------


def test_climate_data_memory(clock: VirtualClock) -> None:
    sim = open_sim(clock, LiconicConfig(climate=ClimateConfig(humidity=90.0, o2=4.0)))
    assert ask_all(sim, "RD DM890", "RD DM982") == ["00370", "00370"]
    assert ask_all(sim, "RD DM893", "RD DM983") == ["00900", "00900"]
    assert ask_all(sim, "RD DM894", "RD DM984") == ["00500", "00500"]
    assert ask_all(sim, "RD DM895", "RD DM985") == ["00400", "00400"]
    assert ask_all(sim, "WR DM890 00300", "RD DM890", "RD DM982") == ["OK", "00300", "00370"]
    clock.advance(900)  # one time constant: 30 + 7/e degC
    assert sim.handle_line("RD DM982") == "00326"
    assert sim.handle_line("RD 1915") == "1"  # setpoint writes do not make it busy


def test_o2_channel_defaults_to_ambient(clock: VirtualClock) -> None:
    sim = open_sim(clock)
    assert ask_all(sim, "RD DM895", "RD DM985") == ["02100", "02100"]


# -- faults --------------------------------------------------------------------------------


def test_no_reply_and_garbled_reply(clock: VirtualClock, link_kind: str) -> None:
    faults = load_faults(
        "- {fault: no_reply, after_commands: 1}\n"
        "- {fault: garbled_reply, after_commands: 2, seed: 3}\n"
    )
    sim = LiconicSim(clock, faults=faults)
    with open_wire(link_kind, sim) as wire:
        assert wire.ask(b"CR\r") == b"CC\r\n"
        wire.port.write(b"ST 1801\r")  # lost: not executed, no reply
        garbled = wire.ask(b"RD 1915\r")
        assert garbled.endswith(b"\r\n") and garbled != b"1\r\n"
        assert b"\r" not in garbled[:-2] and b"\n" not in garbled[:-2]
        assert wire.ask(b"RD 1801\r") == b"0\r\n"  # the init never started


def test_error_code_fault_during_a_move(clock: VirtualClock) -> None:
    fault = Fault(FaultKind.ERROR_CODE, after_commands=0, code="00517")
    sim = open_sim(clock, faults=[fault])
    assert ask_all(sim, "WR DM0 1", "WR DM5 5", "ST 1905") == ["OK"] * 3
    assert sim.handle_line("RD 1812") == "0"  # the fault keeps the plate in place
    clock.advance(15)
    assert ask_all(sim, "RD 1915", "RD 1814", "RD DM200") == ["0", "1", "00517"]
    assert ask_all(sim, "ST 1900", "ST 1905") == ["OK", "OK"]  # one move was hit
    clock.advance(15)
    assert ask_all(sim, "RD 1814", "RD 1813") == ["0", "1"]


def test_door_open_fails_operations_at_once(clock: VirtualClock) -> None:
    at = T0 + timedelta(minutes=1)
    sim = open_sim(clock, faults=[Fault(FaultKind.DOOR_OPEN, at=at, duration_s=300)])
    clock.set(at)
    assert ask_all(sim, "WR DM0 1", "WR DM5 5", "ST 1905") == ["OK"] * 3
    assert ask_all(sim, "RD 1915", "RD 1814", "RD DM200") == ["0", "1", "00007"]
    assert ask_all(sim, "ST 1900", "ST 1801", "RD DM200") == ["OK", "OK", "00007"]
    clock.advance(300)
    assert ask_all(sim, "ST 1900", "ST 1905", "RD 1915") == ["OK", "OK", "0"]
    clock.advance(15)
    assert ask_all(sim, "RD 1915", "RD 1813") == ["1", "1"]


def test_co2_out_of_range(clock: VirtualClock) -> None:
    fault = Fault(FaultKind.CO2_OUT_OF_RANGE, after_commands=3, duration_s=600, co2_offset=2.0)
    sim = open_sim(clock, faults=[fault])  # open_sim sends three lines: window opens next
    assert sim.handle_line("RD DM984") == "00500"
    clock.advance(300)
    assert sim.handle_line("RD DM984") == "00626"
    clock.advance(600)
    assert sim.handle_line("RD DM984") == "00564"
    assert sim.handle_line("RD DM894") == "00500"


def test_liconic_rejects_a_code_of_the_wrong_shape(clock: VirtualClock) -> None:
    with pytest.raises(FaultSpecError, match="'code'"):
        LiconicSim(clock, faults=[Fault(FaultKind.ERROR_CODE, after_commands=0, code="0B")])


# -- action log ------------------------------------------------------------------------------


def test_action_log_exactly_once(clock: VirtualClock, tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    sim = LiconicSim(clock, name="inc-hyp", plates={(1, 5): "P15"}, action_log=path)
    ask_all(sim, "CR", "ST 1801")
    clock.advance(25)
    ask_all(sim, "RD 1915", "RD 1915", "WR DM0 1", "WR DM5 5", "ST 1905")
    clock.advance(15)
    ask_all(sim, "RD 1915", "ST 1903", "WR DM0 2", "WR DM5 1", "ST 1904")
    clock.advance(5)
    ask_all(sim, "ST 1900")  # aborted: never completes, never logged
    ask_all(sim, "ST 1904")
    clock.advance(30)
    ask_all(sim, "RD 1915")
    assert sim.transfer_station is None
    assert path.read_text().splitlines() == [
        '{"time": "2026-12-01T08:00:20+00:00", "device": "inc-hyp", "action": "init", '
        '"slot": null, "plate": null, "command": "ST 1801"}',
        '{"time": "2026-12-01T08:00:40+00:00", "device": "inc-hyp", "action": "retrieve", '
        '"slot": 5, "plate": "P15", "command": "ST 1905", "cassette": 1, "level": 5}',
        '{"time": "2026-12-01T08:01:00+00:00", "device": "inc-hyp", "action": "store", '
        '"slot": 12, "plate": "P15", "command": "ST 1904", "cassette": 2, "level": 1}',
    ]
    assert len(sim.actions) == 3


def test_physical_side(clock: VirtualClock) -> None:
    sim = open_sim(clock)
    with pytest.raises(DeviceError, match="empty"):
        sim.take_from_transfer_station()
    ask_all(sim, "WR DM0 1", "WR DM5 5", "ST 1905")
    with pytest.raises(DeviceError, match="not free"):
        sim.place_on_transfer_station("PX")
    clock.advance(15)
    assert sim.take_from_transfer_station() == "P15"
    assert sim.handle_line("RD 1813") == "0"
    assert sim.ready
