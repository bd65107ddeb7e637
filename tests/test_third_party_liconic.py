"""PyLabRobot's LiCONiC backend (software written against real STX units) against our simulator.

PyLabRobot 0.2.2's ``ExperimentalLiconicBackend`` opens a real pseudo-terminal at the STX's
settings (9600 8E1, RTS/CTS) and sends exactly what it sends to a unit; every exchange is
recorded on the simulator side and compared line by line. One backend is set up for the
module; each test puts a fresh simulator behind the same pty.

Time: the simulator runs on a virtual clock that each ready poll (``RD 1915``) moves on by
``STEP_S``, so an operation takes a fixed number of polls. Two things only change how long
the file takes, never what is sent or parsed: PyLabRobot reads each reply as ``read(128)``
with a 1 s timeout (on Linux that waits the whole second, every command, on a real unit
too), so the port's ``read`` here returns at the reply's CRLF; and the error tests give its
ready wait a 0.3 s deadline instead of 60 s (it polls until then, then reads 1814/DM200).
"""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from pylabrobot.resources import Plate, PlateCarrier, cor_96_wellplate_360uL_Fb
from pylabrobot.resources.barcode import Barcode
from pylabrobot.storage.liconic import ExperimentalLiconicBackend
from pylabrobot.storage.liconic.constants import LiconicType
from pylabrobot.storage.liconic.errors import (
    LiconicControllerCommandError,
    LiconicControllerRelayError,
    LiconicHandlerGeneralError,
)
from pylabrobot.storage.liconic.racks import liconic_rack_17mm_22

from labctl.clock import VirtualClock
from labctl.simulators.faults import ClimateConfig, Fault, FaultKind
from labctl.simulators.liconic import LiconicConfig, LiconicSim
from labctl.simulators.serial_link import PtyLink

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
STEP_S = 5.0  # virtual seconds per ready poll
# Two cassettes of 22 levels: PyLabRobot's liconic_rack_17mm_22 (DM23 788 steps, DM25 22).
CONFIG = LiconicConfig(
    cassettes=2,
    levels=22,
    transfer_s=10.0,
    init_s=10.0,
    shovel_s=5.0,
    climate=ClimateConfig(humidity=90.0, o2=4.0),
)
Exchange = tuple[str, str | None]
READY = ("RD 1915", "1")
BUSY = ("RD 1915", "0")


@dataclass
class Recorder:
    """The device behind the pty: forwards each line to the current simulator, records the
    exchange, and moves the virtual clock on by STEP_S before each ready poll."""

    clock: VirtualClock
    sim: LiconicSim
    exchanges: list[Exchange] = field(default_factory=list)
    terminator: bytes = b"\r\n"

    def handle_line(self, line: str) -> str | None:
        if line == "RD 1915":
            self.clock.advance(STEP_S)
        reply = self.sim.handle_line(line)
        self.exchanges.append((line, reply))
        return reply

    def break_signal(self) -> None:
        self.sim.break_signal()

    def take(self) -> list[Exchange]:
        taken, self.exchanges = self.exchanges, []
        return taken


@dataclass
class Bench:
    clock: VirtualClock
    recorder: Recorder
    backend: ExperimentalLiconicBackend
    setup_exchanges: list[Exchange]
    racks: list[PlateCarrier] = field(default_factory=list)

    def fresh(self, plates: dict[tuple[int, int], str] | None = None, **kw: object) -> LiconicSim:
        """A new simulator behind the pty (session open, handling initialised), new racks
        in the backend with PyLabRobot plates where ``plates`` are."""
        sim = LiconicSim(self.clock, CONFIG, plates=plates or {}, **kw)  # type: ignore[arg-type]
        assert sim.handle_line("CR") == "CC" and sim.handle_line("ST 1801") == "OK"
        self.clock.advance(CONFIG.init_s)
        assert sim.ready
        self.recorder.sim = sim
        self.recorder.exchanges.clear()
        self.racks = [liconic_rack_17mm_22(f"cassette_{i}") for i in (1, 2)]
        with warnings.catch_warnings():  # "racks need to be configured manually"
            warnings.simplefilter("ignore", UserWarning)
            asyncio.run(self.backend.set_racks(self.racks))
        for (cassette, level), label in (plates or {}).items():
            self.site(cassette, level).assign_child_resource(plate(label))
        return sim

    def site(self, cassette: int, level: int):  # noqa: ANN201 - a PyLabRobot PlateHolder
        return self.racks[cassette - 1].sites[level - 1]

    def run(self, coro_fn, *args: object, **kwargs: object) -> object:  # noqa: ANN001
        return asyncio.run(coro_fn(*args, **kwargs))


def plate(name: str) -> Plate:
    return cor_96_wellplate_360uL_Fb(name)


def read_to_crlf(ser) -> None:  # noqa: ANN001 - a pyserial Serial
    """Make ``ser.read(n)`` return once a CRLF-terminated reply is in (see module doc)."""
    single = ser.read

    def read(size: int = 1) -> bytes:
        data = bytearray()
        while len(data) < size:
            byte = single(1)
            if not byte:
                break
            data += byte
            if data.endswith(b"\r\n"):
                break
        return bytes(data)

    ser.read = read


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    clock = VirtualClock(T0)
    recorder = Recorder(clock, LiconicSim(clock, CONFIG))
    link = PtyLink(recorder).start()
    backend = ExperimentalLiconicBackend(LiconicType.STX44_IC, link.port)
    try:
        asyncio.run(backend.setup())
        read_to_crlf(backend.io._ser)
        setup_exchanges = recorder.take()
        asyncio.run(backend.initialize())
        setup_exchanges += recorder.take()
        yield Bench(clock, recorder, backend, setup_exchanges)
    finally:
        asyncio.run(backend.stop())
        link.stop()
    assert link.failures == []


@pytest.fixture
def short_wait(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyLabRobot's ready wait with a 0.3 s deadline (it waits 60 s before reading 1814)."""
    wait = functools.partial(ExperimentalLiconicBackend._wait_ready, bench.backend, timeout=0.3)
    monkeypatch.setattr(bench.backend, "_wait_ready", wait)


def position(cassette: int, level: int) -> list[Exchange]:
    """What PyLabRobot writes before each access to a site of liconic_rack_17mm_22."""
    return [
        (f"WR DM0 {cassette}", "OK"),
        ("WR DM23 788", "OK"),
        ("WR DM25 22", "OK"),
        (f"WR DM5 {level}", "OK"),
    ]


# -- setup -----------------------------------------------------------------------------------


def test_setup_and_initialize(bench: Bench) -> None:
    # setup(): BREAK (cannot reach a pty), CR -> CC, ST 1801, ready polls; initialize():
    # reset, ST 1801 again (10 s of initialisation: two polls of 5 s).
    assert bench.setup_exchanges == [
        ("CR", "CC"),
        ("ST 1801", "OK"),
        BUSY,
        READY,
        ("ST 1900", "OK"),
        ("ST 1801", "OK"),
        BUSY,
        READY,
    ]


# -- climate ---------------------------------------------------------------------------------


def test_climate_reads(bench: Bench) -> None:
    be = bench.backend
    bench.fresh()
    assert bench.run(be.get_temperature) == 37.0
    assert bench.run(be.get_target_temperature) == 37.0
    assert bench.run(be.get_humidity) == pytest.approx(0.9)
    assert bench.run(be.get_target_humidity) == pytest.approx(0.9)
    assert bench.run(be.get_co2_level) == pytest.approx(0.05)
    assert bench.run(be.get_target_co2_level) == pytest.approx(0.05)
    assert bench.run(be.get_n2_level) == pytest.approx(0.04)  # the O2 option: DM985
    assert bench.run(be.get_target_n2_level) == pytest.approx(0.04)
    assert bench.recorder.take() == [
        ("RD DM982", "00370"),
        ("RD DM890", "00370"),
        ("RD DM983", "00900"),
        ("RD DM893", "00900"),
        ("RD DM984", "00500"),
        ("RD DM894", "00500"),
        ("RD DM985", "00400"),
        ("RD DM895", "00400"),
    ]


def test_climate_writes(bench: Bench) -> None:
    be = bench.backend
    sim = bench.fresh()
    bench.run(be.set_temperature, 30.0)
    bench.run(be.set_humidity, 0.85)
    bench.run(be.set_co2_level, 0.07)
    bench.run(be.set_n2_level, 0.03)
    assert bench.recorder.take() == [
        ("WR DM890 00300", "OK"),
        READY,
        ("WR DM893 00850", "OK"),
        READY,
        ("WR DM894 00700", "OK"),
        READY,
        ("WR DM895 00300", "OK"),
        READY,
    ]
    setpoints = [sim.handle_line(f"RD DM{a}") for a in (890, 893, 894, 895)]
    assert setpoints == ["00300", "00850", "00700", "00300"]


# -- plates ----------------------------------------------------------------------------------


def test_fetch_plate_to_loading_tray(bench: Bench) -> None:
    sim = bench.fresh({(1, 5): "P15"})
    p15 = bench.site(1, 5).resource
    bench.run(bench.backend.fetch_plate_to_loading_tray, p15)
    assert bench.recorder.take() == [
        *position(1, 5),
        ("ST 1905", "OK"),
        BUSY,
        READY,
        ("ST 1903", "OK"),
    ]
    assert sim.transfer_station == "P15" and sim.slots == {}


def test_take_in_plate(bench: Bench) -> None:
    sim = bench.fresh()
    sim.place_on_transfer_station("P9")
    bench.run(bench.backend.take_in_plate, plate("P9"), bench.site(2, 3))
    assert bench.recorder.take() == [
        *position(2, 3),
        ("ST 1904", "OK"),
        BUSY,
        READY,
        ("ST 1903", "OK"),
    ]
    assert sim.slots == {(2, 3): "P9"} and sim.transfer_station is None


def test_move_position_to_position(bench: Bench) -> None:
    sim = bench.fresh({(1, 5): "P15"})
    p15 = bench.site(1, 5).resource
    bench.run(bench.backend.move_position_to_position, p15, bench.site(2, 7))
    assert (
        bench.recorder.take()
        == [
            ("WR DM0 1", "OK"),  # PyLabRobot writes the origin cassette twice
            *position(1, 5),
            ("ST 1908", "OK"),  # pick: slot -> shovel, 5 s
            READY,
            ("WR DM0 2", "OK"),
            *position(2, 7)[1:],
            ("ST 1909", "OK"),  # place: shovel -> slot
            READY,
            ("ST 1903", "OK"),
        ]
    )
    assert sim.slots == {(2, 7): "P15"} and sim.shovel is None
    assert [(a.action, a.cassette, a.level) for a in sim.actions[1:]] == [
        ("pick", 1, 5),
        ("place", 2, 7),
    ]


@dataclass
class FakeScanner:
    """What PyLabRobot needs of a barcode scanner: ``await scan()`` -> Barcode."""

    scanned: int = 0

    async def scan(self) -> Barcode:
        self.scanned += 1
        return Barcode(data="LC-0001", symbology="Code 128", position_on_resource="right")


def test_fetch_with_the_internal_barcode_reader(bench: Bench) -> None:
    sim = bench.fresh({(2, 1): "P21"})
    p21 = bench.site(2, 1).resource
    scanner = FakeScanner()
    bench.backend.barcode_scanner = scanner  # type: ignore[assignment]
    try:
        bench.run(bench.backend.fetch_plate_to_loading_tray, p21, read_barcode=True)
    finally:
        bench.backend.barcode_scanner = None
    assert bench.recorder.take() == [
        *position(2, 1),
        ("ST 1910", "OK"),  # lift to the barcode position
        READY,
        ("RS 1910", "OK"),
        READY,
        ("ST 1905", "OK"),
        BUSY,
        READY,
        ("ST 1903", "OK"),
    ]
    assert scanner.scanned == 1 and p21.barcode is not None
    assert sim.transfer_station == "P21"


# -- door, shaker, sensors, swap station -----------------------------------------------------


def test_open_and_close_door(bench: Bench) -> None:
    sim = bench.fresh({(1, 1): "P11"})
    bench.run(bench.backend.open_door)
    bench.run(bench.backend.close_door)
    assert bench.recorder.take() == [("ST 1901", "OK"), READY, ("ST 1902", "OK"), READY]
    # No source makes 1901/1902 a door: the PLC stores the bits, nothing moves.
    assert sim.handle_line("RD 1901") == "1"
    assert sim.slots == {(1, 1): "P11"} and [a.action for a in sim.actions] == ["init"]


def test_shaker(bench: Bench) -> None:
    be = bench.backend
    sim = bench.fresh()
    bench.run(be.start_shaking, 25.0)
    assert sim.shaking
    assert bench.run(be.get_shaker_speed) == 25.0
    bench.run(be.stop_shaking)
    assert not sim.shaking
    with pytest.raises(NotImplementedError):
        bench.run(be.shaker_status)  # PyLabRobot has no command for it; nothing is sent
    assert bench.recorder.take() == [
        ("WR DM39 00250", "OK"),  # PyLabRobot's 0.1 Hz units (untested there)
        ("ST 1913", "OK"),
        READY,
        ("RD DM39", "00250"),
        READY,
        ("RS 1913", "OK"),
        READY,
    ]


def test_sensors_and_swap_station(bench: Bench) -> None:
    be = bench.backend
    sim = bench.fresh()
    sim.place_on_transfer_station("PX")
    assert bench.run(be.check_transfer_sensor) is True
    assert bench.run(be.check_second_transfer_sensor) is False
    assert bench.run(be.check_shovel_sensor) is False
    bench.run(be.turn_swap_station, home=False)
    bench.run(be.turn_swap_station, home=True)
    assert bench.recorder.take() == [
        ("RD 1813", "1"),
        ("RD 1807", "0"),
        ("ST 1911", "OK"),
        ("RD 1812", "0"),
        ("RD 1912", "0"),
        ("ST 1912", "OK"),
        ("RD 1912", "1"),
        ("RS 1912", "OK"),
    ]


# -- errors ----------------------------------------------------------------------------------


def test_export_from_an_empty_slot_is_a_handling_error(bench: Bench, short_wait: None) -> None:
    sim = bench.fresh()
    bench.site(1, 7).assign_child_resource(plate("ghost"))  # PyLabRobot believes it is there
    with pytest.raises(LiconicHandlerGeneralError, match="no plate on the shovel"):
        bench.run(bench.backend.fetch_plate_to_loading_tray, bench.site(1, 7).resource)
    exchanges = bench.recorder.take()
    assert exchanges[:5] == [*position(1, 7), ("ST 1905", "OK")]
    polls = exchanges[5:-2]
    assert polls and set(polls) == {BUSY}  # ready stays 0 while the error is latched
    assert exchanges[-2:] == [("RD 1814", "1"), ("RD DM200", "00016")]
    bench.run(bench.backend.initialize)  # its reset clears the error
    assert bench.recorder.take() == [("ST 1900", "OK"), ("ST 1801", "OK"), BUSY, READY]
    assert sim.ready and sim.transfer_station is None


def test_export_onto_an_occupied_transfer_station(bench: Bench, short_wait: None) -> None:
    sim = bench.fresh({(2, 2): "P22"})
    sim.place_on_transfer_station("PX")
    with pytest.raises(LiconicHandlerGeneralError, match="plate is on transfer station"):
        bench.run(bench.backend.fetch_plate_to_loading_tray, bench.site(2, 2).resource)
    assert bench.recorder.take()[-2:] == [("RD 1814", "1"), ("RD DM200", "00013")]
    assert sim.slots == {(2, 2): "P22"} and sim.transfer_station == "PX"


def test_plc_errors_map_to_pylabrobot_errors(bench: Bench) -> None:
    sim = bench.fresh()
    with pytest.raises(LiconicControllerRelayError):
        bench.run(bench.backend._send_command, "RD 1999")  # no such relay
    sim.break_signal()  # the session is gone (a BREAK, a power cycle)
    with pytest.raises(LiconicControllerCommandError):
        bench.run(bench.backend.check_transfer_sensor)
    assert bench.recorder.take() == [("RD 1999", "E0"), ("RD 1813", "E1")]


def test_a_newer_firmware_code_is_unknown_to_pylabrobot(bench: Bench, short_wait: None) -> None:
    """06163 (0x1813) is what a real STX reported for a load into an occupied slot; it is
    not in PyLabRobot's table (our driver reads its cause byte, test_driver_liconic.py)."""
    fault = Fault(FaultKind.ERROR_CODE, after_commands=0, code="06163")
    sim = bench.fresh(faults=[fault])
    sim.place_on_transfer_station("P9")
    with pytest.raises(RuntimeError, match="unknown error state with memory showing 06163"):
        bench.run(bench.backend.take_in_plate, plate("P9"), bench.site(1, 2))
    assert bench.recorder.take()[-2:] == [("RD 1814", "1"), ("RD DM200", "06163")]
