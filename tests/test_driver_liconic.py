"""LiconicDriver against a scripted peer that checks every frame the driver writes.

The peer is a tiny fake PLC on a pseudo-terminal (or behind ``socket://``) that plays a
script of (expected frame, reply) steps: any frame that differs from the script, any missing
step and any extra byte fails the test. Virtual time: the BREAK, the settle wait and the
ready polling cost no wall time; only a silent-peer timeout waits a few tenths of a second.
(The peer is the same as in test_driver_cytomat.py, kept inline so each file stands alone.)
"""

from __future__ import annotations

import termios
from collections.abc import Iterator, Sequence

import pytest

from labctl.clock import VirtualClock
from labctl.devices import Climate
from labctl.drivers.liconic import LiconicDriver, describe_handling_error
from labctl.drivers.liconic_errors import handling_cause
from labctl.errors import (
    DeviceBusy,
    DeviceCommunicationError,
    DeviceError,
    DeviceFault,
    DeviceNeedsOperator,
    DeviceTimeout,
    PlaceConflict,
)
from tests.serial_peer import CLOSE, ScriptedPeer, Step  # noqa: E402,F401

LEVELS = (22, 22)
SESSION: list[Step] = [(b"CR\r", b"CC\r\n")]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def run(clock: VirtualClock) -> Iterator:
    """run(script, **driver_kwargs) -> (driver, peer) after connect(); the script starts
    with the session open. Closes the driver and checks the peer at the end."""
    started: list[tuple[LiconicDriver, ScriptedPeer]] = []

    def start(
        script: Sequence[Step], *, tcp: bool = False, **kwargs: object
    ) -> tuple[LiconicDriver, ScriptedPeer]:
        peer = ScriptedPeer(list(script), pty=not tcp)
        options: dict = {"reply_timeout_s": 0.3, "read_timeout_s": 0.01, **kwargs}
        driver = LiconicDriver("inc-hyp", peer.url, clock, LEVELS, **options)
        started.append((driver, peer))
        driver.connect()
        return driver, peer

    yield start
    for driver, peer in started:
        driver.close()
        peer.finish()


def poll(ready: str, error: str = "0", station: str = "0") -> list[Step]:
    """The three frames of one LiconicDriver.poll()."""
    return [
        (b"RD 1915\r", f"{ready}\r\n".encode()),
        (b"RD 1814\r", f"{error}\r\n".encode()),
        (b"RD 1813\r", f"{station}\r\n".encode()),
    ]


def access(cassette: int, level: int, relay: int) -> list[Step]:
    """Ready check, transfer station check (a plate to import, none before an export),
    position registers and start of an import (1904) or export (1905)."""
    return [
        (b"RD 1915\r", b"1\r\n"),
        (b"RD 1813\r", b"1\r\n" if relay == 1904 else b"0\r\n"),
        (f"WR DM0 {cassette}\r".encode(), b"OK\r\n"),
        (f"WR DM5 {level}\r".encode(), b"OK\r\n"),
        (f"ST {relay}\r".encode(), b"OK\r\n"),
    ]


# -- session ------------------------------------------------------------------------------------


def test_connect_sends_break_waits_and_opens_the_session(run, clock: VirtualClock) -> None:
    driver, peer = run(SESSION)
    # 0.2 s BREAK + 0.15 s pause, both on the virtual clock
    assert clock.monotonic() == pytest.approx(0.35)
    assert peer.received == [b"CR\r"]


def test_session_not_opened_is_a_communication_error(run) -> None:
    with pytest.raises(DeviceCommunicationError) as info:
        run([(b"CR\r", b"E1\r\n")])
    assert str(info.value) == "inc-hyp: CR: session not opened: reply 'E1' (expected 'CC')"


def test_e1_reopens_the_session_and_repeats_the_command(run, clock: VirtualClock) -> None:
    driver, _ = run(
        [*SESSION, (b"RD 1915\r", b"E1\r\n"), *SESSION, (b"RD 1915\r", b"1\r\n"),
         (b"RD 1814\r", b"0\r\n"), (b"RD 1813\r", b"1\r\n")]
    )  # fmt: skip
    t0 = clock.monotonic()
    status = driver.poll()
    assert status.ready and not status.error and status.transfer_station_occupied
    assert clock.monotonic() - t0 == pytest.approx(0.35)  # a second BREAK + pause


def test_e1_after_reopening_is_a_communication_error(run) -> None:
    driver, _ = run([*SESSION, (b"RD 1915\r", b"E1\r\n"), *SESSION, (b"RD 1915\r", b"E1\r\n")])
    with pytest.raises(DeviceCommunicationError) as info:
        driver.poll()
    assert info.value.device_code == "E1"
    assert str(info.value).startswith("inc-hyp: RD 1915: command error")


# -- slot mapping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slot", "position"), [(1, (1, 1)), (22, (1, 22)), (23, (2, 1)), (25, (2, 3)), (44, (2, 22))]
)
def test_slot_maps_to_cassette_and_level(clock: VirtualClock, slot: int, position: tuple) -> None:
    driver = LiconicDriver("inc-hyp", "loop://", clock, LEVELS)
    assert driver.slot_position(slot) == position
    assert driver.slot_of(*position) == slot


def test_uneven_cassettes_round_trip(clock: VirtualClock) -> None:
    driver = LiconicDriver("inc-hyp", "loop://", clock, (10, 5, 17))
    assert driver.slots == 32
    positions = [driver.slot_position(s) for s in range(1, 33)]
    assert positions[9:12] == [(1, 10), (2, 1), (2, 2)]
    assert positions[15] == (3, 1)
    assert [driver.slot_of(c, lv) for c, lv in positions] == list(range(1, 33))


@pytest.mark.parametrize("slot", [0, 45, -1])
def test_slot_outside_the_configuration_is_rejected(clock: VirtualClock, slot: int) -> None:
    driver = LiconicDriver("inc-hyp", "loop://", clock, LEVELS)
    with pytest.raises(DeviceError, match=f"slot {slot} is outside 1..44"):
        driver.slot_position(slot)


def test_bad_level_configuration_is_rejected(clock: VirtualClock) -> None:
    with pytest.raises(DeviceError, match="levels must list"):
        LiconicDriver("inc-hyp", "loop://", clock, (22, 0))


# -- happy paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["pty", "socket"])
def test_fetch_exports_and_polls_ready(run, clock: VirtualClock, tcp: bool) -> None:
    driver, _ = run(
        [*SESSION, *access(2, 3, 1905), *poll("0"), *poll("0"), *poll("1", station="1")], tcp=tcp
    )
    driver.start_fetch(25)
    t0 = clock.monotonic()
    status = driver.wait_idle()
    assert status.ready and not status.busy and not status.error
    assert status.transfer_station_occupied is True
    # settle 0.2 s before the first poll, then one 0.2 s interval after each busy poll
    assert clock.monotonic() - t0 == pytest.approx(0.6)


def test_store_imports_to_the_mapped_position(run) -> None:
    driver, _ = run([*SESSION, *access(1, 7, 1904), *poll("0", station="1"), *poll("1")])
    driver.start_store(7)
    status = driver.wait_idle()
    assert status.ready and status.transfer_station_occupied is False


def test_poll_waits_out_the_settle_time_after_a_start(run, clock: VirtualClock) -> None:
    driver, _ = run([*SESSION, *access(1, 1, 1905), *poll("0"), *poll("0")], settle_s=0.5)
    driver.start_fetch(1)
    t0 = clock.monotonic()
    driver.poll()
    assert clock.monotonic() - t0 == pytest.approx(0.5)
    driver.poll()  # settle already served: no further wait
    assert clock.monotonic() - t0 == pytest.approx(0.5)


def test_initialize_sends_st_1801_without_a_ready_check(run, clock: VirtualClock) -> None:
    driver, _ = run([*SESSION, (b"ST 1801\r", b"OK\r\n"), *poll("0"), *poll("0"), *poll("1")])
    t0 = clock.monotonic()
    assert driver.initialize().ready
    assert clock.monotonic() - t0 == pytest.approx(0.6)


# -- busy, handling errors, timeouts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "station", "expected"),
    [
        (
            "fetch",
            b"1",
            "inc-hyp: ST 1905: export of slot 25 (cassette 2, level 3) not started: the "
            "transfer station sensor (RD 1813) shows a plate; the plate may have been fetched "
            "already",
        ),
        (
            "store",
            b"0",
            "inc-hyp: ST 1904: import to slot 25 (cassette 2, level 3) not started: the "
            "transfer station sensor (RD 1813) shows no plate; the plate may have been stored "
            "already",
        ),
    ],
)
def test_a_move_the_transfer_station_contradicts_is_a_place_conflict_sending_nothing(
    run, start: str, station: bytes, expected: str
) -> None:
    driver, _ = run([*SESSION, (b"RD 1915\r", b"1\r\n"), (b"RD 1813\r", station + b"\r\n")])
    with pytest.raises(PlaceConflict) as info:
        getattr(driver, f"start_{start}")(25)
    assert str(info.value) == expected


def test_not_ready_refuses_to_start_and_sends_nothing_more(run) -> None:
    driver, _ = run([*SESSION, (b"RD 1915\r", b"0\r\n")])
    with pytest.raises(DeviceBusy) as info:
        driver.start_fetch(25)
    assert str(info.value) == (
        "inc-hyp: ST 1905: not ready for export of slot 25 (cassette 2, level 3) "
        "(RD 1915 = 0): an operation is running"
    )


def test_handling_error_reads_dm200_resets_and_raises_fault(run) -> None:
    driver, _ = run(
        [
            *SESSION,
            *access(2, 3, 1905),
            *poll("0"),
            *poll("0", error="1"),
            (b"RD DM200\r", b"00016\r\n"),
            (b"ST 1900\r", b"OK\r\n"),
        ]
    )
    driver.start_fetch(25)
    with pytest.raises(DeviceFault) as info:
        driver.wait_idle()
    assert str(info.value) == (
        "inc-hyp: ST 1905: no plate on shovel: no plate on the shovel to remove or place "
        "during export of slot 25 (cassette 2, level 3) (reset with ST 1900) "
        "[device code 00016]"
    )


def test_a_newer_firmware_code_is_read_from_its_hex_cause_byte(run) -> None:
    """06163 (0x1813) is what a real STX reported for a load into an occupied slot: not in
    V0712's table; its low byte 0x13 is "shovel OUT time out" (open-liconic-stx)."""
    driver, _ = run(
        [
            *SESSION,
            *access(1, 4, 1904),
            *poll("0", error="1"),
            (b"RD DM200\r", b"06163\r\n"),
            (b"ST 1900\r", b"OK\r\n"),
        ]
    )
    driver.start_store(4)
    with pytest.raises(DeviceFault) as info:
        driver.wait_idle()
    assert type(info.value) is DeviceFault and info.value.device_code == "06163"
    assert str(info.value) == (
        "inc-hyp: ST 1904: cause 0x13: shovel OUT time out: the shovel could not be extended "
        "during import to slot 4 (cassette 1, level 4) (reset with ST 1900) "
        "[device code 06163]"
    )


@pytest.mark.parametrize("code", ["00110", "00210", "00107", "00111"])
def test_import_and_export_steps_are_faults_not_causes(run, code: str) -> None:
    """001ss/002ss name the step that failed: 00110 is not "user access" (10) and 00111 is
    not "stacker slot" (11) nor a reason to initialise again."""
    driver, _ = run(
        [
            *SESSION,
            *access(1, 1, 1904),
            *poll("0", error="1"),
            (b"RD DM200\r", f"{code}\r\n".encode()),
            (b"ST 1900\r", b"OK\r\n"),
        ]
    )
    driver.start_store(1)
    with pytest.raises(DeviceFault) as info:
        driver.wait_idle()
    assert type(info.value) is DeviceFault and info.value.device_code == code
    assert "port failed: " in str(info.value)  # import or export step


@pytest.mark.parametrize("code", ["00010", "00310", "00017"])
def test_user_access_and_no_recovery_need_the_operator(run, code: str) -> None:
    driver, _ = run(
        [
            *SESSION,
            *access(1, 1, 1904),
            *poll("0", error="1"),
            (b"RD DM200\r", f"{code}\r\n".encode()),
            (b"ST 1900\r", b"OK\r\n"),
        ]
    )
    driver.start_store(1)
    with pytest.raises(DeviceNeedsOperator) as info:
        driver.wait_idle()
    assert info.value.device_code == code


def test_failed_reset_still_reports_the_handling_error(run) -> None:
    driver, _ = run(
        [*SESSION, *poll("1", error="1"), (b"RD DM200\r", b"00013\r\n"), (b"ST 1900\r", b"E3\r\n")]
    )
    with pytest.raises(DeviceFault) as info:
        driver.wait_idle()
    assert info.value.device_code == "00013"
    assert str(info.value) == (
        "inc-hyp: RD 1814: plate transfer detection error: export while a plate is on the "
        "transfer station (reset with ST 1900 failed: PLC hardware error (switch the "
        "controller off and on)) [device code 00013]"
    )


@pytest.mark.parametrize(
    ("code", "meaning", "cause"),
    [
        (1, "general handling error: the handling action could not be performed in time", 1),
        (7, "gate open error: the gate did not reach its upper position in time", 7),
        (
            10,
            "user access error: unauthorised user access with manual rotation of the carrousel",
            10,
        ),
        (13, "plate transfer detection error: export while a plate is on the transfer station", 13),
        (16, "no plate on shovel: no plate on the shovel to remove or place", 16),
        (17, "no recovery possible", 17),
        (100, "import failed: carrousel or lift could not reach the transfer position", None),
        (107, "import failed: shovel could not reach the stacker's front position", None),
        (111, "import failed: lift could not be initialised after the import", None),
        (201, "export failed: shovel could not reach the stacker's front position", None),
        (210, "export failed: lift could not reach zero position", None),
        (316, "plate remove: no plate on shovel: no plate on the shovel to remove or place", 16),
        (
            409,
            "barcode read: lift positioning error: the handler lift could not reach the "
            "level or does not move",
            9,
        ),
        (507, "place: gate open error: the gate did not reach its upper position in time", 7),
        (717, "get: no recovery possible", 17),
        (2, "cause 0x02: general time out after a previous time out", None),
        (19, "cause 0x13: shovel OUT time out: the shovel could not be extended", None),
        (6163, "cause 0x13: shovel OUT time out: the shovel could not be extended", None),
        (0x1807, "cause 0x07: gate open time out", 7),
        (99, "unknown handling error", None),
        (216, "unknown handling error", None),
        (750, "unknown handling error", None),
    ],
)
def test_handling_error_codes(code: int, meaning: str, cause: int | None) -> None:
    """V0712's table (as PyLabRobot transcribes it), then a newer firmware's hex cause byte."""
    assert describe_handling_error(code) == meaning
    assert handling_cause(code) == cause


def test_not_ready_at_the_deadline_times_out(run) -> None:
    driver, _ = run([*SESSION, *access(1, 2, 1905), *poll("0"), *poll("0")])
    driver.start_fetch(2)
    with pytest.raises(DeviceTimeout) as info:
        driver.wait_idle(timeout_s=0.4)  # polls at 0.2 s (after the settle wait) and 0.4 s
    assert str(info.value) == (
        "inc-hyp: ST 1905: export of slot 2 (cassette 1, level 2): not ready after 0.4 s "
        "(no error flag set)"
    )


@pytest.mark.parametrize(
    ("reply", "meaning"),
    [
        ("E0", "relay error: undefined relay, timer, counter or data memory address"),
        ("E2", "PLC program error (firmware lost)"),
        ("E3", "PLC hardware error (switch the controller off and on)"),
        ("E4", "write protected (unauthorised access)"),
        ("E5", "PLC base unit error (unauthorised access)"),
        ("E9", "unknown PLC error"),
    ],
)
def test_plc_errors_map_to_faults_with_their_code(run, reply: str, meaning: str) -> None:
    driver, _ = run(
        [
            *SESSION,
            (b"RD 1915\r", b"1\r\n"),
            (b"RD 1813\r", b"1\r\n"),
            (b"WR DM0 1\r", f"{reply}\r\n".encode()),
        ]
    )
    with pytest.raises(DeviceFault) as info:
        driver.start_store(3)
    assert str(info.value) == f"inc-hyp: WR DM0 1: {meaning} [device code {reply}]"


# -- transport failures -------------------------------------------------------------------------


def test_silent_peer_raises_device_timeout(run) -> None:
    driver, _ = run([*SESSION, (b"RD 1915\r", None)], query_retries=0)
    with pytest.raises(DeviceTimeout) as info:
        driver.poll()
    assert str(info.value) == "inc-hyp: RD 1915: no reply within 0.3 s"


def test_reply_ending_in_cr_only_is_incomplete(run) -> None:
    driver, _ = run([*SESSION, (b"RD 1915\r", b"1\r")], query_retries=0)
    with pytest.raises(DeviceTimeout, match=r"incomplete reply b'1\\r'"):
        driver.poll()


@pytest.mark.parametrize(
    ("frame", "reply", "match"),
    [
        (b"RD 1915\r", b"\x80\x81\r\n", "not ASCII"),
        (b"RD 1915\r", b"2\r\n", r"unexpected reply '2' \(expected '0' or '1'\)"),
        (b"RD 1915\r", b"OK\r\n", "unexpected reply 'OK'"),
    ],
)
def test_garbled_flag_replies(run, frame: bytes, reply: bytes, match: str) -> None:
    driver, _ = run([*SESSION, (frame, reply)], query_retries=0)
    with pytest.raises(DeviceCommunicationError, match=match):
        driver.poll()


def test_garbled_ok_and_dm_replies(run) -> None:
    driver, _ = run(
        [
            *SESSION,
            (b"RD 1915\r", b"1\r\n"),
            (b"RD 1813\r", b"0\r\n"),
            (b"WR DM0 1\r", b"0K\r\n"),
            (b"RD DM982\r", b"37.0\r\n"),
        ]
    )
    with pytest.raises(
        DeviceCommunicationError, match=r"^inc-hyp: WR DM0 1: unexpected reply '0K'"
    ):
        driver.start_fetch(1)
    with pytest.raises(DeviceCommunicationError, match=r"^inc-hyp: RD DM982: unexpected reply"):
        driver.read_climate()


def test_link_dropped_is_opened_again_and_asked_again(run, caplog) -> None:
    # The peer drops the connection: the port is opened again at once and the read asked
    # again there; this peer answers nothing more, so it ends as "no reply".
    driver, _ = run([*SESSION, (b"RD 1915\r", CLOSE)], tcp=True)
    with pytest.raises(DeviceTimeout, match=r"^inc-hyp: RD 1915: no reply within 0.3 s"):
        driver.poll()
    assert "serial port socket://127.0.0.1" in caplog.text and "failed" in caplog.text


# -- climate ---------------------------------------------------------------------------------------


def test_read_climate_scales_the_registers(run) -> None:
    driver, _ = run(
        [
            *SESSION,
            (b"RD DM982\r", b"00370\r\n"),
            (b"RD DM983\r", b"00955\r\n"),
            (b"RD DM984\r", b"00500\r\n"),  # DM985 is not read: its meaning is unverified
        ]
    )
    assert driver.read_climate() == Climate(
        temperature_c=37.0, humidity_pct=95.5, co2_pct=5.0, o2_pct=None
    )


def test_read_climate_o2_from_the_n2_register_when_configured(run) -> None:
    driver, _ = run(
        [
            *SESSION,
            (b"RD DM982\r", b"00371\r\n"),
            (b"RD DM983\r", b"E0\r\n"),  # no humidity register on this model
            (b"RD DM984\r", b"00498\r\n"),
            (b"RD DM985\r", b"00402\r\n"),
        ],
        n2_register_is_o2=True,
    )
    assert driver.read_climate() == Climate(
        temperature_c=37.1, humidity_pct=None, co2_pct=4.98, o2_pct=4.02
    )


def test_read_climate_setpoints(run) -> None:
    driver, _ = run(
        [
            *SESSION,
            (b"RD DM890\r", b"00365\r\n"),
            (b"RD DM893\r", b"00900\r\n"),
            (b"RD DM894\r", b"00750\r\n"),
            (b"RD DM895\r", b"00400\r\n"),
        ],
        n2_register_is_o2=True,
    )
    assert driver.read_climate_setpoints() == Climate(
        temperature_c=36.5, humidity_pct=90.0, co2_pct=7.5, o2_pct=4.0
    )


def test_climate_register_errors_other_than_e0_propagate(run) -> None:
    driver, _ = run([*SESSION, (b"RD DM982\r", b"E3\r\n")])
    with pytest.raises(DeviceFault, match=r"^inc-hyp: RD DM982: PLC hardware error"):
        driver.read_climate()


def test_set_climate_writes_five_digit_device_units(run) -> None:
    driver, _ = run(
        [
            *SESSION,
            (b"WR DM890 00370\r", b"OK\r\n"),
            (b"WR DM893 00900\r", b"OK\r\n"),
            (b"WR DM894 00500\r", b"OK\r\n"),
        ]
    )
    driver.set_climate(temperature_c=37.0, humidity_pct=90.0, co2_pct=5.0)


def test_set_climate_out_of_range_sends_nothing(run) -> None:
    driver, _ = run(SESSION)
    with pytest.raises(
        DeviceError, match=r"^inc-hyp: WR DM894 -0100: setpoint -1.0 is out of range"
    ):
        driver.set_climate(co2_pct=-1.0)


# -- real serial settings on a pseudo-terminal -----------------------------------------------------


def test_pty_port_is_configured_9600_8e1_with_rts_cts(run) -> None:
    driver, peer = run([*SESSION, *poll("1")])
    assert driver.poll().ready
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(peer.slave_fd)
    assert ispeed == ospeed == termios.B9600
    assert cflag & termios.CSIZE == termios.CS8
    assert not cflag & termios.CSTOPB
    assert cflag & termios.CRTSCTS
    # Linux ptys clear PARENB whatever is asked, so the parity request is checked on the
    # pyserial port object the driver configured.
    port = driver._line._port
    assert (port.parity, port.bytesize, port.stopbits, port.rtscts) == ("E", 8, 1, True)


def test_a_read_whose_reply_is_lost_is_asked_again(run) -> None:
    driver, _ = run([*SESSION, (b"RD 1915\r", None), *poll("1")])
    status = driver.poll()
    assert status is not None and status.ready
