"""Driver for Thermo Fisher Cytomat automated incubators (2 C425/C450, 5C, 6000/6002), RS-232.

Written from shared DEVICES.md section 2, corrected where PyLabRobot's backend (written
against real Cytomats) and open-cytomat say otherwise (/work/notes/devices-cytomat.md);
tests/test_third_party_cytomat.py runs PyLabRobot against the simulator this driver is
tested on. Wire summary (9600 8N1, no handshake, ASCII; commands end with ``\\r``
(``\\r\\n`` on some models), replies end with ``\\r``):

==================  ========================================  ===================
command             meaning                                   reply
==================  ========================================  ===================
``ll:in``           initialize handler                        ``ok XX`` / ``er XX``
``mv:st NNN``       slot NNN -> transfer station (fetch)      ``ok XX`` / ``er XX``
``mv:ts NNN``       transfer station -> slot NNN (store)      ``ok XX`` / ``er XX``
``ch:bs``           overview register                         ``bs XX``
``ch:ba``           action register (target in the high bits)  ``ba XX``
``ch:be``           error register                            ``be XX``
``rs:be``           clear error register                      ``ok XX``
``ch:it|ic|ih|io``  temperature/CO2/humidity/O2               ``it <nominal> <actual>``
``ll:it TT.T``      set temperature (degC)                    ``ok XX``
``ll:ic CC.C``      set CO2 (%)                               ``ok XX``
==================  ========================================  ===================

``XX`` in ``ok XX`` is the overview register (one byte in hex: two digits, accepted with
four, either case), in ``er XX`` an immediate telegram error code (hex, :data:`TELEGRAM_ERRORS`).
Slots ``NNN`` are 1-based, three digits; a rack/site model (PyLabRobot's C2C_425) takes
``RR SS`` instead, rack and site counted from 0 (:data:`MODELS`, the ``model`` and
``racks`` arguments).

Operations are started, then polled (DESIGN.md): :meth:`CytomatDriver.start_fetch` returns as
soon as the device accepted the move; :meth:`CytomatDriver.poll` reads the status;
:meth:`CytomatDriver.wait_idle` polls until the move is done and turns a latched error into
a typed exception (read ``ch:be``, clear with ``rs:be``, raise).

Where the plate is: the Cytomat itself refuses ``mv:st`` onto an occupied transfer station
(``er 32``) and ``mv:ts`` from an empty one (``er 31``), reading its sensor as it takes the
command; the driver raises those as :class:`~labctl.errors.PlaceConflict` (the move may have
happened already: its record lost, a store restored from an older copy).

Initialisation: a move refused with ``er 11`` (handler in wrong position) raises
:class:`~labctl.drivers.serial_io.NotInitialized`, which is how a Cytomat that was powered on
and not yet initialised answers (an ASSUMPTION, DEVICES.md 2.4); :meth:`start_initialize`
starts ``ll:in`` without waiting, and :meth:`CytomatDriver.initializing` tells an
initialisation from a move while the device is busy (the action register's target is the
init position, 1).
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

from .serial_io import IncubatorStatus, NotInitialized, SerialLine, SerialSettings, poll_until

__all__ = [
    "ERROR_REGISTER",
    "MODELS",
    "TELEGRAM_ERRORS",
    "CytomatDriver",
    "decode_overview",
    "parse_climate_reply",
]

# Overview register bits (ch:bs and every ok XX); DEVICES.md 2.3.
BUSY = 0x01
READY = 0x02
WARNING = 0x04
ERROR = 0x08
HANDLER_OCCUPIED = 0x10
GATE_OPEN = 0x20
DOOR_OPEN = 0x40
TRANSFER_STATION_OCCUPIED = 0x80

# Immediate telegram errors (reply ``er XX``): the vendor's table as PyLabRobot
# (storage/cytomat/errors.py) and open-cytomat (errors.py) copied it; 61 only in the latter.
TELEGRAM_ERRORS: dict[str, str] = {
    "01": "device busy, new command not accepted",
    "02": "command unknown",
    "03": "telegram structure error",
    "04": "incorrect parameter in telegram",
    "05": "unknown location number",
    "11": "incorrect handler (start) position",
    "12": "command cannot be executed as the shovel is extended",
    "21": "handler already occupied",
    "22": "handler empty",
    "31": "transfer station empty",
    "32": "transfer station occupied",
    "33": "transfer station not in position",
    "41": "automatic lift door not configured",
    "42": "automatic lift door not open",
    "51": "error while accessing internal memory",
    "52": "incorrect password / unauthorised access",
    "61": "shaker not active",
}

# Error register (``ch:be``), latched during execution and flagged by overview bit 0x08
# (PyLabRobot constants.ErrorRegister; the shaker codes 0E-14 from open-cytomat status.py).
ERROR_REGISTER: dict[str, str] = {
    "00": "no error",
    "01": "communication with motor controllers interrupted",
    "02": "MTP not loaded on handler shovel",
    "03": "MTP not unloaded from handler shovel",
    "04": "shovel not extended (automatic unit position error)",
    "05": "process timeout",
    "06": "automatic lift door not open",
    "07": "automatic lift door not closed",
    "08": "shovel not retracted",
    "0A": "stepper motor controller temperature too high",
    "0B": "other stepper motor controller error",
    "0C": "transfer station not rotated",
    "0D": "communication with heating controllers and gas supply disturbed",
    "0E": "shaker communication disrupted",
    "0F": "shaker configuration out of order",
    "10": "shaker not started",
    "13": "shaker clamp not open",
    "14": "shaker clamp not closed",
    "FF": "fatal error during the error routine",
}

# The models PyLabRobot drives (its CytomatType names) and how each names a storage
# location: "slot" = one absolute 1-based number, three digits (``mv:st 005``);
# "rack_site" = rack and site, two digits each, both counted from 0 (``mv:st 00 04``).
MODELS: dict[str, str] = {
    "C6000": "slot",
    "C6002": "slot",
    "C2C_425": "rack_site",
    "C2C_450_SHAKE": "slot",
    "C5C": "slot",
}

# Telegram errors that mean "the link or the firmware did not understand us" rather than
# "the device refused on its merits".
_COMMUNICATION_CODES = frozenset({"02", "03"})
# A move refused with this code: the handler is not where a move starts from, as after a
# power cycle before ``ll:in``.
_NOT_INITIALIZED_CODE = "11"
# Moves refused because the transfer station contradicts them: (move, code) -> what the
# refusal may mean. The Cytomat's message ("transfer station occupied") ends the sentence.
_PLACE_CONFLICTS = {
    ("mv:st", "32"): "the plate may have been fetched already, so nothing was moved",
    ("mv:ts", "31"): "the plate may have been stored already, so nothing was moved",
}
# Action register (ch:ba) target of an initialisation: the init position (high 3 bits).
_TARGET_INIT_POSITION = 1

# A one-byte register in hex: two digits, or four with leading zeros (either case). The
# error code of "er X" or "er XX".
_BYTE = r"([0-9A-Fa-f]{2}|00[0-9A-Fa-f]{2})"
_ER = re.compile(r"er\s+([0-9A-Fa-f]{1,2})")
_NUMBER = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
# Two numbers, separated by blanks or by the second one's sign ("+37.0+36.9").
_CLIMATE = re.compile(rf"\s*({_NUMBER})(?:\s+|(?=[+-]))({_NUMBER})\s*")


def decode_overview(register: int) -> IncubatorStatus:
    """Decode the overview register (0-255) into an :class:`IncubatorStatus`."""
    return IncubatorStatus(
        busy=bool(register & BUSY),
        ready=bool(register & READY),
        warning=bool(register & WARNING),
        error=bool(register & ERROR),
        handler_occupied=bool(register & HANDLER_OCCUPIED),
        gate_open=bool(register & GATE_OPEN),
        door_open=bool(register & DOOR_OPEN),
        transfer_station_occupied=bool(register & TRANSFER_STATION_OCCUPIED),
        register=register,
    )


def parse_climate_reply(echo: str, reply: str) -> tuple[float, float] | None:
    """Parse ``'it +37.0 +36.9'`` into ``(nominal, actual)``; ``None`` if it has another shape.

    ``echo`` is the two-letter check command (``it``, ``ic``, ``ih``, ``io``). Signs, leading
    zeros and field widths are optional (the exact format is unverified, DEVICES.md 2.2).
    """
    if not reply.startswith(echo):
        return None
    m = _CLIMATE.fullmatch(reply[len(echo) :])
    if m is None:
        return None
    return float(m.group(1).replace(" ", "")), float(m.group(2).replace(" ", ""))


class CytomatDriver:
    """A Cytomat on a serial line: start moves, poll, read and set climate.

    ``name`` is the workcell's name for the device (used in every error message), ``url`` a
    pyserial URL, ``slots`` the number of plate slots (1-based, numbered rack after rack).
    ``model`` is PyLabRobot's name for it (:data:`MODELS`; None: a Cytomat that takes
    absolute slot numbers); a rack/site model (C2C_425) needs ``racks``, the sites per
    rack, adding up to ``slots``, and is sent ``RR SS`` (both from 0) for slot N. A wrong
    model or racks raise DeviceError (command ``configure``). Durations are seconds:
    ``poll_interval_s`` between status polls, ``move_timeout_s`` for a move to finish,
    ``init_timeout_s`` for ``ll:in``, ``reply_timeout_s`` per request. ``er 01`` (busy) and
    ``er 02`` (unknown) are retried ``busy_retries`` times, ``busy_retry_interval_s`` apart,
    because the device reports them spuriously right after a move (DEVICES.md 2.3). A check
    (``ch:``) whose reply is lost or garbled is asked again ``query_retries`` times; an
    action never is.

    Thread-safe: requests are serialised by the line's lock; one thread should own a move
    from start to :meth:`wait_idle`.
    """

    def __init__(
        self,
        name: str,
        url: str,
        clock: Clock,
        slots: int,
        *,
        terminator: str = "\r",
        poll_interval_s: float = 0.5,
        move_timeout_s: float = 120.0,
        init_timeout_s: float = 300.0,
        reply_timeout_s: float = 1.0,
        read_timeout_s: float = 0.02,
        busy_retries: int = 10,
        busy_retry_interval_s: float = 0.1,
        query_retries: int = 2,
        baudrate: int = 9600,
        model: str | None = None,
        racks: Sequence[int] | None = None,
    ) -> None:
        if slots < 1 or slots > 999:
            raise DeviceError(name, "configure", f"slots must be 1..999, not {slots}")
        self.name = name
        self.slots = slots
        self.model = model
        self.racks = _racks(name, model, racks, slots)
        self.poll_interval_s = poll_interval_s
        self.move_timeout_s = move_timeout_s
        self.init_timeout_s = init_timeout_s
        self.busy_retries = busy_retries
        self.busy_retry_interval_s = busy_retry_interval_s
        self.query_retries = query_retries
        self._clock = clock
        self._line = SerialLine(
            name,
            url,
            clock,
            SerialSettings(
                baudrate=baudrate,
                parity="N",
                rtscts=False,
                terminator=terminator,
                reply_terminator="\r",
            ),
            reply_timeout_s=reply_timeout_s,
            read_timeout_s=read_timeout_s,
        )
        # The operation whose completion wait_idle is waiting for; errors found while
        # polling are reported against it.
        self._operation: str | None = None

    # -- connection ----------------------------------------------------------------------

    def connect(self) -> None:
        """Open the serial port (9600 8N1, no handshake). Raises DeviceCommunicationError."""
        self._line.open()

    def close(self) -> None:
        """Close the serial port."""
        self._line.close()

    def __enter__(self) -> CytomatDriver:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations ----------------------------------------------------------------------

    def initialize(self, timeout_s: float | None = None) -> IncubatorStatus:
        """Initialize the handler (``ll:in``) and wait until idle.

        ``timeout_s`` in seconds (default ``init_timeout_s``). Returns the final status.
        """
        self.start_initialize()
        return self.wait_idle(self.init_timeout_s if timeout_s is None else timeout_s)

    def start_initialize(self) -> None:
        """Start initialising the handler (``ll:in``) without waiting; poll until idle."""
        self._start("ll:in")

    def initializing(self) -> bool:
        """Whether the busy device is initialising (``ch:ba``: its target is the init
        position) rather than moving a plate. Meaningful only while :meth:`poll` says busy."""
        register = self._byte("ch:ba", "ba", self._request("ch:ba"))
        return register >> 5 == _TARGET_INIT_POSITION

    def check_started(self) -> None:
        """Nothing to check: a Cytomat refuses a move it cannot do in its reply."""

    def start_fetch(self, slot: int) -> None:
        """Start moving the plate in ``slot`` (1-based) to the transfer station (``mv:st``).

        Returns once the device accepted the move; follow with :meth:`wait_idle`.
        """
        self._start(self._move("st", slot))

    def start_store(self, slot: int) -> None:
        """Start moving the plate on the transfer station into ``slot`` (1-based, ``mv:ts``).

        Returns once the device accepted the move; follow with :meth:`wait_idle`.
        """
        self._start(self._move("ts", slot))

    def start_gate(self, open_: bool) -> None:
        """Start opening (``ll:gp 002``) or closing (``ll:gp 001``) the automatic lift door
        (the gate between the transfer station and the inside). Returns once the device
        accepted it; the overview register's bit 0x20 says whether it is open."""
        self._start("ll:gp 002" if open_ else "ll:gp 001")

    def poll(self) -> IncubatorStatus:
        """Read the overview register (``ch:bs``) once. Does not raise on the error bit."""
        return decode_overview(self._byte("ch:bs", "bs", self._request("ch:bs")))

    def wait_idle(self, timeout_s: float | None = None) -> IncubatorStatus:
        """Poll every ``poll_interval_s`` until the busy bit clears; return that status.

        ``timeout_s`` in seconds (default ``move_timeout_s``), measured on the clock.
        Raises DeviceFault when the error bit is set (after reading ``ch:be`` and clearing
        it with ``rs:be``), DeviceNeedsOperator when the device door is open, DeviceTimeout
        when still busy at the deadline.
        """

        def check() -> IncubatorStatus | None:
            status = self.poll()
            if status.error:
                self._raise_error_register(status)
            if status.door_open:
                raise DeviceNeedsOperator(
                    self.name,
                    self._operation or "ch:bs",
                    "device door is open: close it, then resume",
                )
            if status.busy:
                return None
            self._operation = None
            return status

        return poll_until(
            self._clock,
            check,
            interval_s=self.poll_interval_s,
            timeout_s=self.move_timeout_s if timeout_s is None else timeout_s,
            on_timeout=lambda t: DeviceTimeout(
                self.name, self._operation or "ch:bs", f"still busy after {t:g} s"
            ),
        )

    # -- climate -------------------------------------------------------------------------

    def read_climate(self) -> Climate:
        """Actual climate: temperature degC, CO2 %, humidity %RH, O2 % (``None`` if absent)."""
        return self._climate(actual=True)

    def read_climate_setpoints(self) -> Climate:
        """Climate setpoints, same units as :meth:`read_climate`."""
        return self._climate(actual=False)

    def set_climate(
        self, *, temperature_c: float | None = None, co2_pct: float | None = None
    ) -> None:
        """Set the temperature setpoint (degC, ``ll:it TT.T``) and/or CO2 (%, ``ll:ic CC.C``).

        Humidity and O2 have no set command in the Cytomat protocol.
        """
        for code, value in (("it", temperature_c), ("ic", co2_pct)):
            if value is None:
                continue
            command = f"ll:{code} {value:04.1f}"
            if not 0.0 <= value <= 99.9:
                raise DeviceError(self.name, command, f"setpoint {value} is outside 0..99.9")
            self._action(command)

    # -- internals -----------------------------------------------------------------------

    def _move(self, code: str, slot: int) -> str:
        """The move telegram for ``slot`` (1-based): ``mv:st 005``, or ``mv:st 01 02`` on a
        rack/site model (slot 3 + 2 + 1 with racks [3, ...])."""
        if not 1 <= slot <= self.slots:
            raise DeviceError(
                self.name, f"mv:{code} {slot:03d}", f"slot {slot} is outside 1..{self.slots}"
            )
        if MODELS.get(self.model or "") != "rack_site":
            return f"mv:{code} {slot:03d}"
        rack, site = 0, slot - 1
        while site >= self.racks[rack]:
            site -= self.racks[rack]
            rack += 1
        return f"mv:{code} {rack:02d} {site:02d}"

    def _start(self, command: str) -> IncubatorStatus:
        with self._line.lock:
            status = self._action(command)
            self._operation = command
            return status

    def _action(self, command: str) -> IncubatorStatus:
        """Send an action telegram; expect ``ok XX`` and return the decoded register."""
        reply = self._request(command)
        return decode_overview(self._byte(command, "ok", reply))

    def _byte(self, command: str, echo: str, reply: str) -> int:
        """The one-byte register of a reply ``<echo> XX`` (two hex digits, or four with
        leading zeros; either case). Raises DeviceCommunicationError for another shape."""
        m = re.fullmatch(rf"{echo}\s+{_BYTE}", reply)
        if m is None:
            raise DeviceCommunicationError(
                self.name, command, f"unexpected reply {reply!r} (expected '{echo} XX')"
            )
        return int(m.group(1), 16)

    def _request(self, command: str, retry_codes: frozenset[str] = frozenset({"01", "02"})) -> str:
        """Send one telegram; raise the typed error for ``er XX`` (after the short retries)."""
        attempt = 0
        while True:
            # Checks (ch:) only read: a lost reply is asked for again. Actions are not.
            if command.startswith("ch:"):
                reply = self._line.query(command, self.query_retries)
            else:
                reply = self._line.transact(command)
            if not reply.startswith("er"):
                return reply
            m = _ER.fullmatch(reply)
            if m is None:
                raise DeviceCommunicationError(
                    self.name, command, f"unexpected reply {reply!r} (expected 'er XX')"
                )
            code = f"{int(m.group(1), 16):02X}"
            if code in retry_codes and attempt < self.busy_retries:
                attempt += 1
                self._clock.sleep(self.busy_retry_interval_s)
                continue
            raise self._telegram_error(command, code)

    def _telegram_error(self, command: str, code: str) -> DeviceError:
        meaning = TELEGRAM_ERRORS.get(code, "unknown telegram error")
        conflict = _PLACE_CONFLICTS.get((command[:5], code))
        if conflict is not None:
            return PlaceConflict(self.name, command, f"{conflict}: {meaning}", device_code=code)
        if code == _NOT_INITIALIZED_CODE and command.startswith("mv:"):
            return NotInitialized(
                self.name, command, f"{meaning}: not initialised", device_code=code
            )
        if code == "01":
            return DeviceBusy(self.name, command, meaning, device_code=code)
        if code in _COMMUNICATION_CODES:
            return DeviceCommunicationError(self.name, command, meaning, device_code=code)
        return DeviceFault(self.name, command, meaning, device_code=code)

    def _raise_error_register(self, status: IncubatorStatus) -> None:
        """Read the error register, clear it, and raise the matching typed error."""
        command = self._operation or "ch:bs"
        code = f"{self._byte('ch:be', 'be', self._request('ch:be')):02X}"
        meaning = ERROR_REGISTER.get(code, "unknown error")
        try:
            self._action("rs:be")
            note = "error register cleared with rs:be"
        except DeviceError as exc:
            note = f"clearing it with rs:be failed ({exc.detail})"
        self._operation = None
        if status.door_open:
            raise DeviceNeedsOperator(
                self.name,
                command,
                f"{meaning}; device door is open: close it, then re-initialize ({note})",
                device_code=code,
            )
        raise DeviceFault(self.name, command, f"{meaning} ({note})", device_code=code)

    def _climate(self, *, actual: bool) -> Climate:
        values: dict[str, float | None] = {}
        for field, code in (
            ("temperature_c", "it"),
            ("co2_pct", "ic"),
            ("humidity_pct", "ih"),
            ("o2_pct", "io"),
        ):
            command = f"ch:{code}"
            try:
                # Only busy is retried: "unknown command" here means the model lacks the
                # sensor, so it is reported as None, not retried.
                reply = self._request(command, retry_codes=frozenset({"01"}))
            except DeviceCommunicationError as exc:
                if exc.device_code == "02":
                    values[field] = None
                    continue
                raise
            pair = parse_climate_reply(code, reply)
            if pair is None:
                raise DeviceCommunicationError(
                    self.name,
                    command,
                    f"unexpected reply {reply!r} (expected '{code} <nominal> <actual>')",
                )
            values[field] = pair[1] if actual else pair[0]
        return Climate(**values)

    def __repr__(self) -> str:
        model = f", model={self.model!r}" if self.model else ""
        return f"CytomatDriver({self.name!r}, {self._line.url!r}, slots={self.slots}{model})"


def _racks(name: str, model: str | None, racks: Sequence[int] | None, slots: int) -> list[int]:
    """Sites per rack for ``model`` (one rack of ``slots`` when not given); raises
    DeviceError naming the device and the setting for an unknown model or racks that are
    missing (rack/site models) or do not add up to ``slots``."""
    if model is not None and model not in MODELS:
        raise DeviceError(
            name,
            "configure",
            f"model must be one of {', '.join(MODELS)} (PyLabRobot's names), not {model!r}",
        )
    if racks is None:
        if model is not None and MODELS[model] == "rack_site":
            raise DeviceError(
                name,
                "configure",
                f"model {model} names a location by rack and site: give racks, the sites of "
                "each rack in order (e.g. racks: [21, 21])",
            )
        return [slots]
    sizes = list(racks) if isinstance(racks, (list, tuple)) else []
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) for n in sizes):
        raise DeviceError(name, "configure", f"racks must list whole numbers, not {racks!r}")
    if any(not 1 <= n <= 99 for n in sizes) or len(sizes) > 99:
        raise DeviceError(name, "configure", f"racks must hold 1..99 sites each, not {sizes}")
    if sum(sizes) != slots:
        raise DeviceError(
            name, "configure", f"racks {sizes} hold {sum(sizes)} sites but slots is {slots}"
        )
    return sizes
