"""Driver for LiCONiC StoreX STX automated incubators (PLC host-link protocol), RS-232.

Written from shared DEVICES.md section 3, checked against LiCONiC's "StoreX Series Remote
Operation V0712" and PyLabRobot 0.2.2's backend run against the simulator (see
notes/devices-liconic.md). Wire summary (9600 baud, 8E1, RTS/CTS, ASCII; commands end with
``\\r``, replies with ``\\r\\n``):

==================  ==============================================  ===============
command             meaning                                         reply
==================  ==============================================  ===============
BREAK, ``CR``       open the communication session                  ``CC``
``ST 1801``         initialize handling                             ``OK``
``RD 1915``         ready flag                                      ``0`` / ``1``
``RD 1801``         initialisation under way                        ``0`` / ``1``
``RD 1814``         handling-error flag                             ``0`` / ``1``
``RD 1813``         plate on transfer station                       ``0`` / ``1``
``RD DM200``        handling-error code                             ``00513``
``ST 1900``         reset (clears handling errors)                  ``OK``
``WR DM0 c``        cassette (stacker) for the next access          ``OK``
``WR DM5 l``        level for the next access                       ``OK``
``ST 1904``         import: transfer station -> cassette/level      ``OK``
``ST 1905``         export: cassette/level -> transfer station      ``OK``
``RD DM982..984``   actual temperature/humidity/CO2                 5 digits
``RD DM985``        actual N2 register (see ``n2_register_is_o2``)  5 digits
``WR DM890|3|4 v``  temperature/humidity/CO2 setpoints              ``OK``
==================  ==============================================  ===============

DM200 codes are read in both encodings real units use (V0712's decimal table and a newer
firmware's hex cause byte, e.g. ``06163``): :mod:`.liconic_errors`. Every error raised names
the device and the command, and carries the raw code as ``device_code``.

PLC errors ``E0``..``E5`` may answer any command. ``E1`` also means "session not open" (the
PLC lost it, e.g. after a power cycle), so the driver re-opens the session once and repeats
the command; a command answered ``E1`` was not executed, so repeating it is safe.

Slots are numbered 1..N across cassettes in order: with ``levels=(22, 22)`` slot 23 is
cassette 2, level 1.

Where the plate is: before an export (fetch) or import (store) the driver reads the
transfer station sensor (``RD 1813``) and raises :class:`~labctl.errors.PlaceConflict`
instead of starting an export onto an occupied station or an import from an empty one (the
PLC would accept either and fail it only after the transfer time; the move may have
happened already).

Initialisation: an import or export the PLC refuses as not initialised (DM200 cause 14,
lift initialisation) raises :class:`~labctl.drivers.serial_io.NotInitialized`;
:meth:`LiconicDriver.check_started`, called right after a move was accepted, looks for that
refusal once per session (a session opened anew may mean a power cycle);
:meth:`LiconicDriver.start_initialize` starts ``ST 1801`` without waiting, and
:meth:`LiconicDriver.initializing` reads relay 1801, set while it runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from labctl.clock import Clock
from labctl.devices import Climate
from labctl.errors import (
    DeviceBusy,
    DeviceCommunicationError,
    DeviceError,
    DeviceFault,
    DeviceNeedsOperator,
    DeviceTimeout,
    PlaceConflict,
)

from .liconic_errors import HANDLING_CAUSES, PLC_ERRORS, describe_handling_error, handling_cause
from .serial_io import IncubatorStatus, NotInitialized, SerialLine, SerialSettings, poll_until

__all__ = [
    "HANDLING_CAUSES",
    "PLC_ERRORS",
    "LiconicDriver",
    "no_gate_command",
    "describe_handling_error",
]

# DM200 causes a person has to clear at the device (someone is in it, or it cannot recover).
_OPERATOR_CAUSES = frozenset({10, 17})
# The cause a PLC gives for an access before ST 1801 (lift initialisation).
_NOT_INITIALIZED_CAUSE = 14

_PLC_ERROR = re.compile(r"E\d")
_DM_VALUE = re.compile(r"[+-]?\d{1,5}")


def no_gate_command(name: str, open_: bool) -> DeviceError:
    """Why a LiCONiC is not told to open or close its gate: no manual documents a gate
    command. PyLabRobot sends ``ST 1901`` / ``ST 1902`` as open / close, but the STX manual
    gives 1902 as "continue access" (docs/devices.md): it could resume a handling step."""
    return DeviceError(
        name,
        "ST 1901" if open_ else "ST 1902",
        "no documented gate command on a LiCONiC: open or close the gate from the device's "
        "own panel",
    )


class LiconicDriver:
    """A LiCONiC STX on a serial line: start imports/exports, poll, read and set climate.

    ``name`` is the workcell's name for the device (used in every error message), ``url`` a
    pyserial URL, ``levels`` the number of levels of each cassette in order (slot numbering
    follows it). Durations are seconds: ``poll_interval_s`` between ready polls (the manual
    asks for 0.1-0.2), ``settle_s`` minimum wait after starting an operation before the
    first poll (manual: at least 0.2), ``move_timeout_s`` per import/export,
    ``init_timeout_s`` for ``ST 1801``, ``reply_timeout_s`` per request, ``break_s`` and
    ``session_wait_s`` for the session-open BREAK and the pause after it.

    ``n2_register_is_o2``: the sources name DM895/DM985 "N2" without a unit. On hypoxia
    units the value shown is usually the O2 concentration; set this (after checking on the
    device) to report DM985 / DM895 as ``o2_pct`` in 0.01 % units. Off by default: O2 is
    then ``None`` and the register is not read.

    Thread-safe: requests are serialised by the line's lock; one thread should own an
    operation from start to :meth:`wait_idle`.
    """

    def __init__(
        self,
        name: str,
        url: str,
        clock: Clock,
        levels: Sequence[int],
        *,
        poll_interval_s: float = 0.2,
        settle_s: float = 0.2,
        move_timeout_s: float = 60.0,
        init_timeout_s: float = 120.0,
        reply_timeout_s: float = 1.0,
        read_timeout_s: float = 0.02,
        break_s: float = 0.2,
        session_wait_s: float = 0.15,
        baudrate: int = 9600,
        n2_register_is_o2: bool = False,
        query_retries: int = 2,
    ) -> None:
        self.levels = tuple(int(n) for n in levels)
        if not self.levels or any(n < 1 for n in self.levels):
            raise DeviceError(
                name, "configure", f"levels must list at least one cassette, each >= 1: {levels}"
            )
        self.name = name
        self.poll_interval_s = poll_interval_s
        self.settle_s = settle_s
        self.move_timeout_s = move_timeout_s
        self.init_timeout_s = init_timeout_s
        self.break_s = break_s
        self.session_wait_s = session_wait_s
        self.n2_register_is_o2 = n2_register_is_o2
        self.query_retries = query_retries  # a read (RD) whose reply is lost is asked again
        self._clock = clock
        self._line = SerialLine(
            name,
            url,
            clock,
            SerialSettings(
                baudrate=baudrate,
                bytesize=8,
                parity="E",
                stopbits=1,
                rtscts=True,
                terminator="\r",
                reply_terminator="\r\n",
            ),
            reply_timeout_s=reply_timeout_s,
            read_timeout_s=read_timeout_s,
        )
        # The running operation as (command, description); errors are reported against it.
        self._operation: tuple[str, str] | None = None
        self._started_at: float | None = None
        # No move accepted since the session was opened: the PLC may be freshly powered on.
        self._session_unproven = True

    @property
    def slots(self) -> int:
        """Total number of slots (sum of levels over cassettes)."""
        return sum(self.levels)

    # -- slot mapping --------------------------------------------------------------------

    def slot_position(self, slot: int) -> tuple[int, int]:
        """Map a 1-based slot to ``(cassette, level)``, both 1-based."""
        if not 1 <= slot <= self.slots:
            raise DeviceError(self.name, "slot", f"slot {slot} is outside 1..{self.slots}")
        remaining = slot
        for cassette, count in enumerate(self.levels, start=1):
            if remaining <= count:
                return cassette, remaining
            remaining -= count
        raise AssertionError("unreachable: slot range was checked")

    def slot_of(self, cassette: int, level: int) -> int:
        """Map ``(cassette, level)`` (1-based) back to a 1-based slot."""
        if not 1 <= cassette <= len(self.levels) or not 1 <= level <= self.levels[cassette - 1]:
            raise DeviceError(
                self.name, "slot", f"cassette {cassette} level {level} does not exist"
            )
        return sum(self.levels[: cassette - 1]) + level

    # -- connection ----------------------------------------------------------------------

    def connect(self) -> None:
        """Open the port (9600 8E1, RTS/CTS) and the PLC session (BREAK, ``CR`` -> ``CC``)."""
        self._line.open()
        self.open_session()

    def open_session(self) -> None:
        """BREAK for ``break_s``, wait ``session_wait_s`` (seconds, on the clock), flush,
        then ``CR`` and expect ``CC``. Raises DeviceCommunicationError otherwise."""
        with self._line.lock:
            self._line.send_break(self.break_s)
            self._clock.sleep(self.session_wait_s)
            self._line.flush_input()
            reply = self._line.transact("CR")
            if reply != "CC":
                raise DeviceCommunicationError(
                    self.name, "CR", f"session not opened: reply {reply!r} (expected 'CC')"
                )
            self._session_unproven = True

    def close(self) -> None:
        """Close the serial port."""
        self._line.close()

    def __enter__(self) -> LiconicDriver:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations ----------------------------------------------------------------------

    def initialize(self, timeout_s: float | None = None) -> IncubatorStatus:
        """Initialize handling (``ST 1801``) and wait until ready.

        ``timeout_s`` in seconds (default ``init_timeout_s``). Returns the final status.
        """
        self.start_initialize()
        return self.wait_idle(self.init_timeout_s if timeout_s is None else timeout_s)

    def start_initialize(self) -> None:
        """Start initialising handling (``ST 1801``) without waiting; poll until ready."""
        self._start("ST 1801", "initialization", setup=(), check_ready=False)

    def initializing(self) -> bool:
        """Whether the PLC is initialising: relay 1801 stays set while ``ST 1801`` runs (an
        ASSUMPTION, as a PLC relay set by ``ST`` and reset when its operation ends)."""
        return self._flag("RD 1801")

    def check_started(self) -> None:
        """Right after an import or export was accepted, once per session: raise
        NotInitialized (after resetting with ``ST 1900``) if the PLC refused it as not
        initialised. Any other handling error is left latched for :meth:`poll`. Waits out
        the settle time first (on the clock)."""
        if not self._session_unproven or self._operation is None:
            return
        self._settle()
        if self._flag("RD 1814"):
            if handling_cause(self._dm("RD DM200")) == _NOT_INITIALIZED_CAUSE:
                self._raise_handling_error()
            return
        self._session_unproven = False

    def start_gate(self, open_: bool) -> None:  # refused: see no_gate_command
        raise no_gate_command(self.name, open_)

    def start_fetch(self, slot: int) -> None:
        """Start exporting the plate in ``slot`` (1-based) to the transfer station: ``WR DM0
        <cassette>``, ``WR DM5 <level>``, ``ST 1905``. Raises DeviceBusy if the ready flag is
        not set, PlaceConflict (sending nothing more) if the transfer station holds a plate.
        Returns once started; follow with :meth:`wait_idle`."""
        self._access(slot, "ST 1905", "export of", station=False)

    def start_store(self, slot: int) -> None:
        """Start importing the plate on the transfer station into ``slot`` (1-based), as
        :meth:`start_fetch` but with ``ST 1904``; PlaceConflict if the station is empty."""
        self._access(slot, "ST 1904", "import to", station=True)

    def poll(self) -> IncubatorStatus:
        """Read ready (``RD 1915``), error (``RD 1814``) and transfer station (``RD 1813``).

        Within ``settle_s`` seconds of starting an operation it first waits out the rest
        (on the clock), as the manual requires. Does not raise on the error flag.
        """
        self._settle()
        ready = self._flag("RD 1915")
        error = self._flag("RD 1814")
        occupied = self._flag("RD 1813")
        return IncubatorStatus(
            busy=not ready,
            ready=ready,
            warning=False,
            error=error,
            handler_occupied=None,
            gate_open=None,
            door_open=None,
            transfer_station_occupied=occupied,
        )

    def wait_idle(self, timeout_s: float | None = None) -> IncubatorStatus:
        """Poll every ``poll_interval_s`` until ready; return that status.

        ``timeout_s`` in seconds (default ``move_timeout_s``), measured on the clock. On the
        error flag it reads ``DM200``, resets with ``ST 1900`` and raises DeviceFault (or
        DeviceNeedsOperator for user-access / no-recovery causes); DeviceTimeout when not
        ready at the deadline.
        """

        def check() -> IncubatorStatus | None:
            status = self.poll()
            if status.error:
                self._raise_handling_error()
            if not status.ready:
                return None
            self._operation = None
            self._started_at = None
            return status

        def timed_out(t: float) -> DeviceTimeout:
            command, what = self._operation or ("RD 1915", "waiting for ready")
            return DeviceTimeout(
                self.name, command, f"{what}: not ready after {t:g} s (no error flag set)"
            )

        return poll_until(
            self._clock,
            check,
            interval_s=self.poll_interval_s,
            timeout_s=self.move_timeout_s if timeout_s is None else timeout_s,
            on_timeout=timed_out,
        )

    # -- climate -------------------------------------------------------------------------

    def read_climate(self) -> Climate:
        """Actual climate: temperature degC (DM982, 0.1 degC units), humidity %RH (DM983,
        0.1 %), CO2 % (DM984, 0.01 %), O2 % (DM985, 0.01 %, only with ``n2_register_is_o2``).
        ``None`` where the PLC answers ``E0`` (no such register on this model)."""
        return self._climate(982, 983, 984, 985)

    def read_climate_setpoints(self) -> Climate:
        """Climate setpoints (DM890/893/894/895), same units and rules as read_climate."""
        return self._climate(890, 893, 894, 895)

    def set_climate(
        self,
        *,
        temperature_c: float | None = None,
        humidity_pct: float | None = None,
        co2_pct: float | None = None,
    ) -> None:
        """Set setpoints: temperature degC (DM890), humidity %RH (DM893), CO2 % (DM894).

        Values are written as 5-digit integers in the device units (0.1 degC, 0.1 %RH,
        0.01 %), e.g. 37.0 degC -> ``WR DM890 00370``.
        """
        for address, value, scale in (
            (890, temperature_c, 10),
            (893, humidity_pct, 10),
            (894, co2_pct, 100),
        ):
            if value is None:
                continue
            raw = round(value * scale)
            command = f"WR DM{address} {raw:05d}"
            if not 0 <= raw <= 99999:
                raise DeviceError(self.name, command, f"setpoint {value} is out of range")
            self._ok(command)

    # -- internals -----------------------------------------------------------------------

    def _access(self, slot: int, command: str, what: str, *, station: bool) -> None:
        cassette, level = self.slot_position(slot)
        where = f"slot {slot} (cassette {cassette}, level {level})"
        setup = (f"WR DM0 {cassette}", f"WR DM5 {level}")
        self._start(command, f"{what} {where}", setup=setup, station=station)

    def _start(
        self,
        command: str,
        description: str,
        *,
        setup: Sequence[str],
        check_ready: bool = True,
        station: bool | None = None,
    ) -> None:
        """Start an operation; ``station``: the plate the transfer station must (True) or
        must not (False) hold for it, read first (None: not read)."""
        with self._line.lock:
            if check_ready and not self._flag("RD 1915"):
                raise DeviceBusy(
                    self.name,
                    command,
                    f"not ready for {description} (RD 1915 = 0): an operation is running",
                )
            if station is not None and self._flag("RD 1813") is not station:
                raise _station_conflict(self.name, command, description, station)
            for step in setup:
                self._ok(step)
            self._ok(command)
            self._operation = (command, description)
            self._started_at = self._clock.monotonic()

    def _settle(self) -> None:
        """Wait out the rest of ``settle_s`` after the start of an operation (manual)."""
        if self._started_at is not None:
            wait = self._started_at + self.settle_s - self._clock.monotonic()
            if wait > 0:
                self._clock.sleep(wait)

    def _send(self, command: str) -> str:
        """One request; re-open the session once on ``E1``; raise typed errors for ``E0..E5``."""
        # Reads (RD) are asked for again if their reply is lost; writes and actions are not.
        if command.startswith("RD "):

            def send() -> str:
                return self._line.query(command, self.query_retries)
        else:

            def send() -> str:
                return self._line.transact(command)

        with self._line.lock:
            reply = send()
            if reply == "E1":
                self.open_session()
                reply = send()
                if reply == "E1":
                    raise DeviceCommunicationError(
                        self.name,
                        command,
                        PLC_ERRORS["E1"] + ", even after re-opening the session",
                        device_code="E1",
                    )
        if _PLC_ERROR.fullmatch(reply):
            meaning = PLC_ERRORS.get(reply, "unknown PLC error")
            raise DeviceFault(self.name, command, meaning, device_code=reply)
        return reply

    def _ok(self, command: str) -> None:
        reply = self._send(command)
        if reply != "OK":
            raise DeviceCommunicationError(
                self.name, command, f"unexpected reply {reply!r} (expected 'OK')"
            )

    def _flag(self, command: str) -> bool:
        reply = self._send(command)
        if reply not in ("0", "1"):
            raise DeviceCommunicationError(
                self.name, command, f"unexpected reply {reply!r} (expected '0' or '1')"
            )
        return reply == "1"

    def _dm(self, command: str) -> int:
        reply = self._send(command)
        if not _DM_VALUE.fullmatch(reply):
            raise DeviceCommunicationError(
                self.name, command, f"unexpected reply {reply!r} (expected a 5-digit number)"
            )
        return int(reply)

    def _raise_handling_error(self) -> None:
        """Read DM200, reset with ST 1900, raise the typed error for the code."""
        command, what = self._operation or ("RD 1814", "")
        code = self._dm("RD DM200")
        meaning = describe_handling_error(code) if code else "error flag set but DM200 is 0"
        try:
            self._ok("ST 1900")
            note = "reset with ST 1900"
        except DeviceError as exc:
            note = f"reset with ST 1900 failed: {exc.detail}"
        self._operation = None
        self._started_at = None
        during = f" during {what}" if what else ""
        cls = _handling_error_class(code)
        raise cls(self.name, command, f"{meaning}{during} ({note})", device_code=f"{code:05d}")

    def _climate(self, temperature: int, humidity: int, co2: int, gas: int) -> Climate:
        def read(address: int, scale: float) -> float | None:
            try:
                return self._dm(f"RD DM{address}") / scale
            except DeviceFault as exc:
                if exc.device_code == "E0":  # no such register on this model
                    return None
                raise

        return Climate(
            temperature_c=read(temperature, 10),
            humidity_pct=read(humidity, 10),
            co2_pct=read(co2, 100),
            o2_pct=read(gas, 100) if self.n2_register_is_o2 else None,
        )

    def __repr__(self) -> str:
        return f"LiconicDriver({self.name!r}, {self._line.url!r}, levels={self.levels})"


def _handling_error_class(code: int) -> type[DeviceError]:
    """The typed error for a DM200 code: a person's causes, not initialised, or a fault."""
    cause = handling_cause(code)
    if cause in _OPERATOR_CAUSES:
        return DeviceNeedsOperator
    if cause == _NOT_INITIALIZED_CAUSE:
        return NotInitialized
    return DeviceFault


def _station_conflict(device: str, command: str, description: str, wanted: bool) -> PlaceConflict:
    """The transfer station sensor contradicts an operation wanting a plate there (or none)."""
    shows, done = ("shows no plate", "stored") if wanted else ("shows a plate", "fetched")
    return PlaceConflict(
        device,
        command,
        f"{description} not started: the transfer station sensor (RD 1813) {shows}; the "
        f"plate may have been {done} already",
    )
