"""CytomatDriver against a scripted peer that checks every frame the driver writes.

The peer is a tiny fake device (a TCP server on 127.0.0.1 reached through ``socket://``, or
a pseudo-terminal) that plays a script of (expected frame, reply) steps: any frame that
differs from the script, any missing step and any extra byte fails the test. Virtual time:
polling loops cost no wall time; only a silent-peer timeout waits a few tenths of a second.
"""

from __future__ import annotations

import socket
import termios
import threading
from collections.abc import Iterator, Sequence

import pytest

from labctl.clock import VirtualClock
from labctl.devices import Climate
from labctl.drivers.cytomat import CytomatDriver, decode_overview, parse_climate_reply
from labctl.drivers.serial_io import NotInitialized, SerialLine, SerialSettings
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


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def run(clock: VirtualClock) -> Iterator:
    """run(script, **driver_kwargs) -> (driver, peer); closes and checks the peer at the end.

    The peer sits on a pseudo-terminal by default (closing a ``socket://`` port costs 0.3 s
    of wall time inside pyserial); ``tcp=True`` puts it behind ``socket://`` instead.
    """
    started: list[tuple[CytomatDriver, ScriptedPeer]] = []

    def start(
        script: Sequence[Step], *, tcp: bool = False, frame_end: bytes = b"\r", **kwargs: object
    ) -> tuple[CytomatDriver, ScriptedPeer]:
        peer = ScriptedPeer(script, pty=not tcp, frame_end=frame_end)
        options: dict = {"reply_timeout_s": 0.3, "read_timeout_s": 0.01, **kwargs}
        driver = CytomatDriver("inc-1", peer.url, clock, 42, **options)
        driver.connect()
        started.append((driver, peer))
        return driver, peer

    yield start
    for driver, peer in started:
        driver.close()
        peer.finish()


def polls(*registers: str) -> list[Step]:
    return [(b"ch:bs\r", f"bs {r}\r".encode()) for r in registers]


# -- overview register ----------------------------------------------------------------------


def test_manual_example_0xc5_decodes_to_busy_warning_door_and_transfer_station() -> None:
    s = decode_overview(0xC5)
    assert (s.busy, s.ready, s.warning, s.error) == (True, False, True, False)
    assert (s.handler_occupied, s.gate_open, s.door_open) == (False, False, True)
    assert s.transfer_station_occupied is True
    assert s.register == 0xC5


@pytest.mark.parametrize(
    ("bit", "field"),
    [
        (0x01, "busy"),
        (0x02, "ready"),
        (0x04, "warning"),
        (0x08, "error"),
        (0x10, "handler_occupied"),
        (0x20, "gate_open"),
        (0x40, "door_open"),
        (0x80, "transfer_station_occupied"),
    ],
)
def test_each_overview_bit_sets_exactly_its_field(bit: int, field: str) -> None:
    fields = (
        "busy ready warning error handler_occupied gate_open door_open transfer_station_occupied"
    ).split()
    status = decode_overview(bit)
    assert [name for name in fields if getattr(status, name)] == [field]


# -- happy paths --------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["pty", "socket"])
def test_fetch_sends_mv_st_and_polls_until_not_busy(run, clock: VirtualClock, tcp: bool) -> None:
    driver, _ = run([(b"mv:st 005\r", b"ok 01\r"), *polls("11", "11", "80")], tcp=tcp)
    driver.start_fetch(5)
    t0 = clock.monotonic()
    status = driver.wait_idle()
    assert status.busy is False
    assert status.transfer_station_occupied is True
    assert status.register == 0x80
    # two busy polls, each followed by one poll interval of virtual time
    assert clock.monotonic() - t0 == pytest.approx(1.0)


def test_store_sends_mv_ts_with_three_digit_slot(run) -> None:
    driver, _ = run([(b"mv:ts 042\r", b"ok 81\r"), *polls("91", "00")])
    driver.start_store(42)
    status = driver.wait_idle()
    assert status.register == 0 and not status.transfer_station_occupied


def test_initialize_sends_ll_in_and_waits(run, clock: VirtualClock) -> None:
    driver, _ = run([(b"ll:in\r", b"ok 01\r"), *polls("01", "01", "01", "00")], poll_interval_s=1.0)
    t0 = clock.monotonic()
    assert driver.initialize().busy is False
    assert clock.monotonic() - t0 == pytest.approx(3.0)


def test_crlf_terminator_model(run) -> None:
    driver, _ = run(
        [(b"mv:st 001\r\n", b"ok 01\r"), (b"ch:bs\r\n", b"bs 00\r")],
        terminator="\r\n",
        frame_end=b"\r\n",
    )
    driver.start_fetch(1)
    assert driver.wait_idle().busy is False


def test_poll_accepts_lowercase_hex(run) -> None:
    driver, _ = run(polls("c5"))
    assert driver.poll().register == 0xC5


def test_registers_are_read_with_two_or_four_hex_digits(run) -> None:
    driver, _ = run(
        [
            (b"mv:st 005\r", b"ok 0011\r"),
            (b"ch:ba\r", b"ba 0065\r"),
            *polls("0088"),
            (b"ch:be\r", b"be 0002\r"),
            (b"rs:be\r", b"ok 0080\r"),
        ]
    )
    driver.start_fetch(5)
    assert driver.initializing() is False  # target 3: the stacker
    with pytest.raises(DeviceFault) as info:
        driver.wait_idle()
    assert info.value.device_code == "02"
    assert "MTP not loaded on handler shovel" in str(info.value)


@pytest.mark.parametrize("reply", [b"bs 01C5\r", b"bs 5\r", b"bs 0C5\r"])
def test_a_register_of_another_width_is_a_communication_error(run, reply: bytes) -> None:
    driver, _ = run([(b"ch:bs\r", reply)])
    with pytest.raises(DeviceCommunicationError, match=r"inc-1: ch:bs: unexpected reply"):
        driver.poll()


def test_initializing_reads_the_init_target_of_the_action_register(run) -> None:
    driver, _ = run([(b"ch:ba\r", b"ba 21\r"), (b"ch:ba\r", b"ba 85\r")])
    assert driver.initializing() is True
    assert driver.initializing() is False


# -- models and their location formats ------------------------------------------------------


@pytest.mark.parametrize(
    ("slot", "frame"),
    [(1, b"mv:st 00 00\r"), (21, b"mv:st 00 20\r"), (22, b"mv:st 01 00\r"), (42, b"mv:st 01 20\r")],
)
def test_c2c_425_is_sent_rack_and_site_from_zero(run, slot: int, frame: bytes) -> None:
    driver, _ = run([(frame, b"ok 01\r")], model="C2C_425", racks=[21, 21])
    driver.start_fetch(slot)


def test_slot_models_are_sent_three_digit_slots(run) -> None:
    driver, _ = run([(b"mv:ts 042\r", b"ok 81\r")], model="C6002")
    driver.start_store(42)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "C2C_50"}, "model must be one of C6000, C6002, C2C_425, C2C_450_SHAKE, C5C"),
        ({"model": "C2C_425"}, "model C2C_425 names a location by rack and site: give racks"),
        ({"model": "C2C_425", "racks": [21, 20]}, "racks [21, 20] hold 41 sites but slots is 42"),
        ({"racks": "21,21"}, "racks must list whole numbers, not '21,21'"),
        ({"racks": [42, 0]}, "racks must hold 1..99 sites each"),
    ],
)
def test_a_wrong_model_or_racks_is_refused_naming_the_device(
    clock: VirtualClock, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(DeviceError) as info:
        CytomatDriver("inc-1", "loop://", clock, 42, **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"inc-1: configure: {message}")


def test_the_workcell_model_setting_reaches_the_driver_or_fails_clearly(
    clock: VirtualClock, tmp_path
) -> None:
    from labctl.drivers.registry import build_devices
    from labctl.errors import ProtocolError
    from labctl.store import Store
    from labctl.workcell import parse_workcell

    def workcell(entry: str):
        return parse_workcell(f"name: bay-1\ntimezone: UTC\ndevices:\n  inc-1: {entry}\n", "w.yaml")

    store = Store.open(tmp_path / "runs.sqlite", clock)
    try:
        cytomat = "{driver: cytomat, port: /dev/null, slots: 42, model: C2C_425"
        devices = build_devices(workcell(cytomat + ", racks: [21, 21]}"), store, clock)
        driver = devices["inc-1"].driver  # type: ignore[attr-defined]
        assert (driver.model, driver.racks) == ("C2C_425", [21, 21])
        with pytest.raises(ProtocolError) as info:
            build_devices(workcell(cytomat + "}"), store, clock)
        assert [d.message for d in info.value.diagnostics] == [
            "inc-1: model C2C_425 names a location by rack and site: give racks, the sites of "
            "each rack in order (e.g. racks: [21, 21])"
        ]
    finally:
        store.close()


# -- immediate telegram errors ------------------------------------------------------------


def test_er_01_right_after_a_move_is_retried_on_the_clock(run, clock: VirtualClock) -> None:
    driver, _ = run(
        [(b"mv:st 005\r", b"er 01\r"), (b"mv:st 005\r", b"er 02\r"), (b"mv:st 005\r", b"ok 01\r")]
    )
    t0 = clock.monotonic()
    driver.start_fetch(5)
    assert clock.monotonic() - t0 == pytest.approx(0.2)  # two retries, 100 ms apart


def test_persistent_er_01_becomes_device_busy_after_the_retries(run) -> None:
    driver, peer = run([(b"mv:st 005\r", b"er 01\r")] * 4, busy_retries=3)
    with pytest.raises(DeviceBusy) as info:
        driver.start_fetch(5)
    assert (
        str(info.value)
        == "inc-1: mv:st 005: device busy, new command not accepted [device code 01]"
    )
    assert info.value.device_code == "01"


def test_transfer_station_occupied_is_a_place_conflict_named_after_device_and_command(
    run,
) -> None:
    driver, _ = run([(b"mv:st 005\r", b"er 32\r")])  # not retried: one frame only
    with pytest.raises(PlaceConflict) as info:
        driver.start_fetch(5)
    assert str(info.value) == (
        "inc-1: mv:st 005: the plate may have been fetched already, so nothing was moved: "
        "transfer station occupied [device code 32]"
    )
    assert (info.value.device, info.value.command) == ("inc-1", "mv:st 005")


def test_store_from_an_empty_transfer_station_is_a_place_conflict(run) -> None:
    driver, _ = run([(b"mv:ts 007\r", b"er 31\r")])
    with pytest.raises(PlaceConflict) as info:
        driver.start_store(7)
    assert str(info.value) == (
        "inc-1: mv:ts 007: the plate may have been stored already, so nothing was moved: "
        "transfer station empty [device code 31]"
    )


@pytest.mark.parametrize(
    ("code", "cls", "meaning"),
    [
        ("02", DeviceCommunicationError, "command unknown"),
        ("03", DeviceCommunicationError, "telegram structure error"),
        ("04", DeviceFault, "incorrect parameter in telegram"),
        ("05", DeviceFault, "unknown location number"),
        ("11", NotInitialized, "incorrect handler (start) position: not initialised"),
        ("21", DeviceFault, "handler already occupied"),
        ("12", DeviceFault, "command cannot be executed as the shovel is extended"),
        ("22", DeviceFault, "handler empty"),
        ("33", DeviceFault, "transfer station not in position"),
        ("42", DeviceFault, "automatic lift door not open"),
        ("61", DeviceFault, "shaker not active"),
        ("52", DeviceFault, "incorrect password / unauthorised access"),
        ("7E", DeviceFault, "unknown telegram error"),
    ],
)
def test_telegram_error_codes_map_to_typed_errors(run, code: str, cls: type, meaning: str) -> None:
    driver, _ = run([(b"mv:ts 007\r", f"er {code}\r".encode())], busy_retries=0)
    with pytest.raises(cls) as info:
        driver.start_store(7)
    assert type(info.value) is cls
    assert str(info.value) == f"inc-1: mv:ts 007: {meaning} [device code {code}]"


# -- errors found while polling -------------------------------------------------------------


def test_error_bit_reads_error_register_clears_it_and_raises_fault(run) -> None:
    driver, _ = run(
        [
            (b"mv:st 005\r", b"ok 01\r"),
            *polls("11", "09"),
            (b"ch:be\r", b"be 04\r"),
            (b"rs:be\r", b"ok 00\r"),
        ]
    )
    driver.start_fetch(5)
    with pytest.raises(DeviceFault) as info:
        driver.wait_idle()
    assert str(info.value) == (
        "inc-1: mv:st 005: shovel not extended (automatic unit position error) "
        "(error register cleared with rs:be) [device code 04]"
    )


@pytest.mark.parametrize(
    ("code", "meaning"),
    [("02", "MTP not loaded on handler shovel"), ("0C", "transfer station not rotated"),
     ("10", "shaker not started"), ("13", "shaker clamp not open"),
     ("FF", "fatal error during the error routine"), ("99", "unknown error")],
)  # fmt: skip
def test_error_register_codes_carry_their_meaning(run, code: str, meaning: str) -> None:
    driver, _ = run(
        [
            (b"mv:ts 001\r", b"ok 01\r"),
            *polls("08"),
            (b"ch:be\r", f"be {code}\r".encode()),
            (b"rs:be\r", b"ok 00\r"),
        ]
    )
    driver.start_store(1)
    with pytest.raises(DeviceFault) as info:
        driver.wait_idle()
    assert info.value.device_code == code
    assert info.value.detail.startswith(meaning + " (")


def test_failed_rs_be_still_reports_the_original_fault(run) -> None:
    driver, _ = run(
        [*polls("08"), (b"ch:be\r", b"be 05\r"), (b"rs:be\r", b"er 04\r")], busy_retries=0
    )
    with pytest.raises(DeviceFault) as info:
        driver.wait_idle()
    assert info.value.device_code == "05"
    assert "process timeout" in str(info.value) and "rs:be failed" in str(info.value)


def test_open_door_needs_the_operator(run) -> None:
    driver, _ = run([(b"mv:st 003\r", b"ok 01\r"), *polls("41")])
    driver.start_fetch(3)
    with pytest.raises(DeviceNeedsOperator) as info:
        driver.wait_idle()
    assert str(info.value) == "inc-1: mv:st 003: device door is open: close it, then resume"


def test_error_with_open_door_needs_the_operator_and_keeps_the_code(run) -> None:
    driver, _ = run(
        [
            (b"mv:st 003\r", b"ok 01\r"),
            *polls("48"),
            (b"ch:be\r", b"be 06\r"),
            (b"rs:be\r", b"ok 40\r"),
        ]
    )
    driver.start_fetch(3)
    with pytest.raises(DeviceNeedsOperator) as info:
        driver.wait_idle()
    assert info.value.device_code == "06"
    assert "lift door not open" in str(info.value)


def test_still_busy_at_the_deadline_times_out(run, clock: VirtualClock) -> None:
    driver, _ = run([(b"mv:st 005\r", b"ok 01\r"), *polls("01", "01", "01")])
    driver.start_fetch(5)
    with pytest.raises(DeviceTimeout) as info:
        driver.wait_idle(timeout_s=1.0)  # polls at 0, 0.5 and 1.0 s of virtual time
    assert str(info.value) == "inc-1: mv:st 005: still busy after 1 s"


# -- transport failures -----------------------------------------------------------------------


def test_silent_peer_raises_device_timeout(run) -> None:
    driver, _ = run([(b"ch:bs\r", None)], query_retries=0)
    with pytest.raises(DeviceTimeout) as info:
        driver.poll()
    assert str(info.value) == "inc-1: ch:bs: no reply within 0.3 s"


def test_reply_without_terminator_times_out_and_shows_the_partial_reply(run) -> None:
    driver, _ = run([(b"ch:bs\r", b"bs 0")], query_retries=0)
    with pytest.raises(DeviceTimeout, match=r"incomplete reply b'bs 0'"):
        driver.poll()


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"\xff\xfe\r", "not ASCII"),
        (b"bs\x0001\r", "control characters"),
        (b"bs ZZ\r", "unexpected reply 'bs ZZ'"),
        (b"it 01\r", "unexpected reply 'it 01'"),
        (b"er\r", "unexpected reply 'er'"),
        (b"x" * 1100, "without a terminator"),
    ],
)
def test_garbled_replies_are_communication_errors(run, reply: bytes, match: str) -> None:
    driver, _ = run([(b"ch:bs\r", reply)], query_retries=0)
    with pytest.raises(DeviceCommunicationError, match=match):
        driver.poll()


def test_garbled_move_acknowledgement(run) -> None:
    driver, _ = run([(b"mv:st 005\r", b"ok\r")])
    with pytest.raises(DeviceCommunicationError) as info:
        driver.start_fetch(5)
    assert str(info.value) == "inc-1: mv:st 005: unexpected reply 'ok' (expected 'ok XX')"


def test_link_dropped_is_opened_again_and_asked_again(run, caplog) -> None:
    # The peer drops the connection: the port is opened again at once and the read asked
    # again there; this peer answers nothing more, so it ends as "no reply".
    driver, _ = run([(b"ch:bs\r", CLOSE)], tcp=True)
    with pytest.raises(DeviceTimeout, match=r"^inc-1: ch:bs: no reply within 0.3 s"):
        driver.poll()
    assert "serial port socket://127.0.0.1" in caplog.text and "failed" in caplog.text


def test_stale_input_is_flushed_before_each_command(run) -> None:
    # A late or unsolicited line sits in the input buffer when the next request starts:
    # that request must not take it for its own reply.
    driver, peer = run([(b"ch:bs\r", b"bs 01\r"), (b"ch:bs\r", b"bs 00\r")])
    assert driver.poll().register == 0x01
    peer.inject(b"bs FF\r")
    port = driver._line._port
    waited = threading.Event()
    for _ in range(5000):  # until the stray line has reached the driver's input buffer
        if port.in_waiting:
            break
        waited.wait(0.001)
    assert port.in_waiting
    assert driver.poll().register == 0x00


def test_unreachable_port_is_a_communication_error(clock: VirtualClock) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    driver = CytomatDriver("inc-1", f"socket://127.0.0.1:{port}", clock, 42)
    with pytest.raises(DeviceCommunicationError, match=r"^inc-1: open: cannot open serial port"):
        driver.connect()


def test_command_before_connect_is_a_communication_error(clock: VirtualClock) -> None:
    driver = CytomatDriver("inc-1", "loop://", clock, 42)
    with pytest.raises(DeviceCommunicationError, match="not open"):
        driver.poll()


def test_slot_outside_the_configured_range_sends_nothing(run) -> None:
    driver, _ = run([])
    with pytest.raises(DeviceError, match=r"^inc-1: mv:st 043: slot 43 is outside 1\.\.42$"):
        driver.start_fetch(43)
    with pytest.raises(DeviceError, match="slot 0 is outside"):
        driver.start_store(0)


def test_requests_from_two_threads_never_interleave(run) -> None:
    driver, peer = run(polls(*["00"] * 40))
    results: list[int | None] = []

    def worker() -> None:
        for _ in range(20):
            results.append(driver.poll().register)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert results == [0] * 40
    assert peer.received == [b"ch:bs\r"] * 40


# -- climate ------------------------------------------------------------------------------------


def test_read_climate_parses_values_and_reports_missing_sensors_as_none(run) -> None:
    driver, _ = run(
        [
            (b"ch:it\r", b"it +37.0 +36.9\r"),
            (b"ch:ic\r", b"ic 05.0 4.8\r"),  # no sign
            (b"ch:ih\r", b"er 02\r"),  # model without a humidity sensor: not retried
            (b"ch:io\r", b"io +005.0 +04.7\r"),  # other width
        ]
    )
    assert driver.read_climate() == Climate(
        temperature_c=36.9, co2_pct=4.8, humidity_pct=None, o2_pct=4.7
    )


def test_read_climate_setpoints_takes_the_nominal_values(run) -> None:
    driver, _ = run(
        [
            (b"ch:it\r", b"it +37.0 +36.9\r"),
            (b"ch:ic\r", b"ic +05.0 +04.8\r"),
            (b"ch:ih\r", b"ih +95.0 +91.2\r"),
            (b"ch:io\r", b"er 02\r"),
        ]
    )
    assert driver.read_climate_setpoints() == Climate(
        temperature_c=37.0, co2_pct=5.0, humidity_pct=95.0
    )


def test_garbled_climate_reply(run) -> None:
    driver, _ = run([(b"ch:it\r", b"it +37.0\r")])
    with pytest.raises(DeviceCommunicationError, match=r"^inc-1: ch:it: unexpected reply"):
        driver.read_climate()


@pytest.mark.parametrize(
    ("reply", "pair"),
    [
        ("it +37.0 +36.9", (37.0, 36.9)),
        ("it 37.0 36.9", (37.0, 36.9)),
        ("it +37.0+36.9", (37.0, 36.9)),
        ("it 37 36", (37.0, 36.0)),
        ("it +037.0 -001.5", (37.0, -1.5)),
        ("it  + 37.0  + 36.9 ", (37.0, 36.9)),
        ("it +37.0", None),
        ("ic +5.0 +4.9", None),  # wrong echo
        ("it abc def", None),
    ],
)
def test_parse_climate_reply(reply: str, pair: tuple[float, float] | None) -> None:
    assert parse_climate_reply("it", reply) == pair


def test_set_climate_sends_tt_t_and_cc_c(run) -> None:
    driver, _ = run([(b"ll:it 37.0\r", b"ok 00\r"), (b"ll:ic 05.0\r", b"ok 00\r")])
    driver.set_climate(temperature_c=37.0, co2_pct=5.0)


def test_set_climate_out_of_range_sends_nothing(run) -> None:
    driver, _ = run([])
    with pytest.raises(DeviceError, match="outside 0..99.9"):
        driver.set_climate(temperature_c=120.0)


# -- real serial settings on a pseudo-terminal ----------------------------------------------------


def test_pty_port_is_configured_9600_8n1_without_handshake(run) -> None:
    driver, peer = run(polls("00"))
    assert driver.poll().register == 0
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(peer.slave_fd)
    assert ispeed == ospeed == termios.B9600
    assert cflag & termios.CSIZE == termios.CS8
    assert not cflag & termios.CSTOPB
    assert not cflag & termios.CRTSCTS
    # Linux ptys clear PARENB whatever is asked, so parity is checked on the port object.
    port = driver._line._port
    assert (port.parity, port.bytesize, port.stopbits, port.rtscts) == ("N", 8, 1, False)


def test_serial_line_over_loop_url_reads_to_the_terminator(clock: VirtualClock) -> None:
    # loop:// echoes what is written: a framing check of the bare transport.
    line = SerialLine("loop", "loop://", clock, SerialSettings(), read_timeout_s=0.01)
    line.open()
    try:
        assert line.transact("ch:bs") == "ch:bs"
        line.send_break(0.2)
        assert clock.monotonic() == pytest.approx(0.2)
    finally:
        line.close()


def _line_whose_drain_fails(clock: VirtualClock, errors: list[BaseException]) -> SerialLine:
    """A loop:// line whose port raises ``errors`` (in order) from flush(), then drains."""
    line = SerialLine("loop", "loop://", clock, SerialSettings(), read_timeout_s=0.01)
    line.open()
    port = line._port
    assert port is not None
    real_flush = port.flush

    def flush() -> None:
        if errors:
            raise errors.pop(0)
        real_flush()

    port.flush = flush  # type: ignore[method-assign]
    return line


def test_a_signal_during_the_drain_does_not_fail_the_exchange(clock: VirtualClock) -> None:
    # tcdrain interrupted by a signal raises termios.error(EINTR), which is not an OSError;
    # it once escaped the driver and stopped the engine. The bytes are queued: drain again.
    import errno

    eintr = termios.error(errno.EINTR, "Interrupted system call")
    line = _line_whose_drain_fails(clock, [eintr, eintr])
    try:
        assert line.transact("ch:bs") == "ch:bs"
    finally:
        line.close()


def test_a_failing_drain_is_a_communication_error_naming_device_and_command(
    clock: VirtualClock,
) -> None:
    import errno

    line = _line_whose_drain_fails(clock, [termios.error(errno.EIO, "Input/output error")])
    try:
        with pytest.raises(DeviceCommunicationError) as info:
            line.transact("ch:bs")
        assert info.value.device == "loop" and info.value.command == "ch:bs"
        assert "Input/output error" in str(info.value)
    finally:
        line.close()


def test_a_check_whose_reply_is_lost_is_asked_again(run) -> None:
    # A status read changes nothing on the device: one lost reply is not an outage.
    driver, _ = run([(b"ch:bs\r", None), (b"ch:bs\r", b"\xff\r"), *polls("02")])
    assert driver.poll().ready


def test_a_check_that_never_answers_fails_after_its_retries(run) -> None:
    driver, _ = run([(b"ch:bs\r", None)] * 3)
    with pytest.raises(DeviceTimeout, match="no reply within 0.3 s"):
        driver.poll()


def test_an_action_whose_reply_is_lost_is_never_sent_again(run) -> None:
    # Whether the plate moved is for the engine to find out (it asks the operator): sending
    # the move again could move a second plate. The peer would fail on a second request.
    driver, _ = run([(b"mv:st 005\r", None)])
    with pytest.raises(DeviceTimeout, match="mv:st 005: no reply"):
        driver.start_fetch(5)
