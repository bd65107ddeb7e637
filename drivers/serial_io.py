"""A line-oriented, half-duplex serial transport, and the data the serial incubators report.

:class:`SerialLine` opens any pyserial URL (``/dev/ttyUSB0``, a pseudo-terminal path,
``socket://127.0.0.1:PORT``, ``loop://``; see shared DEVICES.md section 6) and speaks one
request, one reply: :meth:`SerialLine.transact` writes a command plus its terminator and
reads up to the reply terminator under an overall deadline taken from the injected
:class:`~labctl.clock.Clock`. It never sleeps on the wall clock itself and never does
fixed-size reads (PyLabRobot's ``read(128)`` makes every command cost a full timeout).
A port that fails (a USB adapter unplugged, a device server restarted) is closed and the
same port or URL opened again by the next request, so a link that comes back needs nothing
from the caller.

:class:`IncubatorStatus` is what both serial incubator drivers (``cytomat``, ``liconic``)
report when polled; it lives here so the two share one definition (their climate readings
use :class:`labctl.devices.Climate`).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import serial

from labctl.clock import Clock
from labctl.errors import DeviceCommunicationError, DeviceError, DeviceFault, DeviceTimeout

__all__ = ["IncubatorStatus", "NotInitialized", "SerialLine", "SerialSettings", "poll_until"]

log = logging.getLogger(__name__)

# Replies of these devices are a few dozen bytes (a 30-character barcode at most); a longer
# run without a terminator is line noise, and stopping it also bounds the read loop when
# bytes keep arriving (a virtual clock would not end it).
MAX_REPLY_BYTES = 1024

try:  # pyserial's POSIX back end raises termios.error (not an OSError) from tcdrain/tcflush
    import termios

    _TERMIOS_ERRORS: tuple[type[BaseException], ...] = (termios.error,)
except ImportError:  # pragma: no cover - Windows
    _TERMIOS_ERRORS = ()

# Everything a port operation can raise when the link or the OS fails.
PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, *_TERMIOS_ERRORS)
# Opening also refuses settings pyserial does not accept (ValueError).
_OPEN_ERRORS: tuple[type[BaseException], ...] = (*PORT_ERRORS, ValueError)

# A signal arriving while the kernel drains the output (tcdrain) interrupts it with EINTR;
# the bytes are already queued, so draining again is safe. Bounded, so a signal storm ends.
_DRAIN_TRIES = 5


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is an interrupted system call (EINTR), from termios or the OS."""
    if isinstance(exc, OSError):
        return exc.errno == errno.EINTR
    return bool(exc.args) and exc.args[0] == errno.EINTR


def _drain(port: serial.SerialBase) -> None:
    """Wait until the output is sent (``port.flush()``), again if a signal interrupts it."""
    for attempt in range(_DRAIN_TRIES):
        try:
            port.flush()
            return
        except PORT_ERRORS as exc:
            if not _interrupted(exc) or attempt == _DRAIN_TRIES - 1:
                raise


class NotInitialized(DeviceFault):
    """The incubator refused a move because its handler is not initialised (after a power
    cycle): nothing moved, and the move may be started again once it is initialised."""


@dataclass(frozen=True)
class IncubatorStatus:
    """One snapshot of an automated incubator's state.

    ``busy`` means an operation is executing (poll again); ``ready`` is the device's own
    ready flag (Cytomat overview bit 0x02, LiCONiC relay 1915). ``error`` means a handling
    error is latched on the device. Sensor fields are ``None`` where the device family does
    not report them in its status. ``register`` is the raw Cytomat overview register
    (0-255), ``None`` for other devices.
    """

    busy: bool
    ready: bool
    warning: bool
    error: bool
    handler_occupied: bool | None
    gate_open: bool | None
    door_open: bool | None
    transfer_station_occupied: bool | None
    register: int | None = None


@dataclass(frozen=True)
class SerialSettings:
    """Line settings of one device family.

    ``terminator`` is appended to each command; a reply is complete when
    ``reply_terminator`` has been read. ``baudrate`` in bit/s; ``parity`` is pyserial's
    letter (``"N"``, ``"E"``, ``"O"``); ``rtscts`` enables RTS/CTS hardware handshake.
    """

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    rtscts: bool = False
    terminator: str = "\r"
    reply_terminator: str = "\r"


class SerialLine:
    """One request, one reply over a pyserial URL, with deadlines on an injected clock.

    Thread-safe: a re-entrant lock (:attr:`lock`) serialises requests, so two threads never
    interleave their frames. A driver that must send several commands as one unit (set
    registers, then start) holds ``lock`` around them.

    A request that fails at the port closes it, and the next request opens the same
    ``url`` again (until :meth:`close` is called): a device server or USB adapter that
    restarted is reached again without the caller doing anything.

    ``reply_timeout_s`` (seconds) is the default overall deadline for one reply;
    ``read_timeout_s`` (seconds) is the short pyserial read timeout the read loop uses
    between deadline checks.
    """

    def __init__(
        self,
        device: str,
        url: str,
        clock: Clock,
        settings: SerialSettings | None = None,
        *,
        reply_timeout_s: float = 1.0,
        read_timeout_s: float = 0.02,
    ) -> None:
        self.device = device
        self.url = url
        self.settings = settings or SerialSettings()
        self.reply_timeout_s = reply_timeout_s
        self.read_timeout_s = read_timeout_s
        self._clock = clock
        self._port: serial.SerialBase | None = None
        self._lock = threading.RLock()
        self._reopen = False  # the port failed: open it again on the next request

    @property
    def lock(self) -> threading.RLock:
        """The lock held for each request; hold it to send several commands as one unit."""
        return self._lock

    @property
    def is_open(self) -> bool:
        """True while the port is open."""
        return self._port is not None and self._port.is_open

    def open(self) -> None:
        """Open the port with the device's settings (no-op if already open).

        Raises DeviceCommunicationError if the port cannot be opened.
        """
        with self._lock:
            if self.is_open:
                return
            s = self.settings
            try:
                self._port = serial.serial_for_url(
                    self.url,
                    baudrate=s.baudrate,
                    bytesize=s.bytesize,
                    parity=s.parity,
                    stopbits=s.stopbits,
                    rtscts=s.rtscts,
                    xonxoff=False,
                    timeout=self.read_timeout_s,
                    # With RTS/CTS and a device that never raises CTS a write would block
                    # forever: bound it by the reply deadline.
                    write_timeout=self.reply_timeout_s,
                    exclusive=True,
                )
            except _OPEN_ERRORS as exc:
                raise DeviceCommunicationError(
                    self.device, "open", f"cannot open serial port {self.url}: {exc}"
                ) from exc
            self._reopen = False
            log.debug("%s: opened %s (%s)", self.device, self.url, s)

    def close(self) -> None:
        """Close the port (safe to call twice); it stays closed until :meth:`open`."""
        with self._lock:
            self._reopen = False
            self._drop_port()

    def _drop_port(self) -> None:
        with self._lock:
            port, self._port = self._port, None
            if port is not None:
                try:
                    port.close()
                except PORT_ERRORS:  # closing a dead link is fine
                    log.debug("%s: error while closing %s", self.device, self.url, exc_info=True)

    def flush_input(self) -> None:
        """Discard any bytes already received (stale or late replies)."""
        with self._lock:
            port = self._require_port("flush")
            try:
                port.reset_input_buffer()
            except PORT_ERRORS as exc:
                raise self._port_failed("flush", exc) from exc

    def send_break(self, seconds: float) -> None:
        """Hold the line in BREAK for ``seconds`` (timed on the clock), then release it.

        On ``socket://`` and ``loop://`` the break is a no-op at the wire (pyserial ignores
        it) but the wait still happens on the clock.
        """
        with self._lock:
            port = self._require_port("break")
            try:
                port.break_condition = True
                try:
                    self._clock.sleep(seconds)
                finally:
                    port.break_condition = False
            except PORT_ERRORS as exc:
                raise self._port_failed("break", exc) from exc

    def transact(self, command: str, timeout_s: float | None = None) -> str:
        """Send ``command`` + terminator, return the reply without its terminator.

        Stale input is discarded first. The reply is stripped of surrounding whitespace.
        ``timeout_s`` (seconds, default ``reply_timeout_s``) bounds the whole exchange.

        Raises DeviceTimeout when no complete reply arrives in time, and
        DeviceCommunicationError when the port fails or the reply is not printable ASCII.
        """
        deadline_s = self.reply_timeout_s if timeout_s is None else timeout_s
        try:
            frame = (command + self.settings.terminator).encode("ascii")
        except UnicodeEncodeError as exc:
            raise DeviceError(self.device, command, "command is not ASCII") from exc
        end = self.settings.reply_terminator.encode("ascii")
        with self._lock:
            port = self._require_port(command)
            try:
                port.reset_input_buffer()
                port.write(frame)
                _drain(port)
                log.debug("%s >> %r", self.device, frame)
                raw = self._read_until(port, end, command, deadline_s)
            except serial.SerialTimeoutException as exc:
                raise DeviceTimeout(
                    self.device, command, f"could not write within {deadline_s:g} s ({exc})"
                ) from exc
            except PORT_ERRORS as exc:
                raise self._port_failed(command, exc) from exc
        log.debug("%s << %r", self.device, raw)
        try:
            reply = raw[: -len(end)].decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise DeviceCommunicationError(
                self.device, command, f"garbled reply {raw!r} (not ASCII)"
            ) from exc
        if not reply.isprintable():
            raise DeviceCommunicationError(
                self.device, command, f"garbled reply {raw!r} (control characters)"
            )
        return reply

    def query(self, command: str, retries: int = 2, timeout_s: float | None = None) -> str:
        """:meth:`transact` for a request that only reads (a status, a register, a sensor):
        a reply lost or garbled on the line is asked for again, up to ``retries`` more
        times, since asking twice changes nothing on the device. Never use it for commands
        that act: whether those happened is for the engine to find out, not to guess.
        """
        for attempt in range(retries + 1):
            try:
                return self.transact(command, timeout_s)
            except (DeviceTimeout, DeviceCommunicationError) as exc:
                if attempt == retries:
                    raise
                log.warning("%s; asking again (a read changes nothing)", exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_until(
        self, port: serial.SerialBase, end: bytes, command: str, deadline_s: float
    ) -> bytes:
        """Read until ``end`` with an overall deadline; returns bytes ending with ``end``.

        The deadline is measured on the injected clock. A virtual clock does not move while
        we wait for bytes, so the real time spent in timed-out pyserial reads (each at least
        ``read_timeout_s``) also counts towards the deadline; with a real clock both
        measures agree and the clock's fires first.
        """
        start = self._clock.monotonic()
        waited = 0.0
        buf = bytearray()
        while True:
            chunk = port.read(max(1, port.in_waiting))
            if chunk:
                buf.extend(chunk)
                idx = buf.find(end)
                if idx >= 0:
                    # Anything after the terminator is noise in a half-duplex exchange.
                    return bytes(buf[: idx + len(end)])
                if len(buf) > MAX_REPLY_BYTES:
                    raise DeviceCommunicationError(
                        self.device,
                        command,
                        f"garbled reply: {len(buf)} bytes without a terminator ({bytes(buf[:32])!r}...)",
                    )
            else:
                waited += self.read_timeout_s
            elapsed = max(self._clock.monotonic() - start, waited)
            if elapsed >= deadline_s:
                got = f"; incomplete reply {bytes(buf)!r}" if buf else ""
                raise DeviceTimeout(self.device, command, f"no reply within {deadline_s:g} s{got}")

    def _port_failed(self, command: str, exc: BaseException) -> DeviceCommunicationError:
        """The link itself failed: close the port, so the next request opens it anew."""
        self._drop_port()
        self._reopen = True
        return DeviceCommunicationError(
            self.device, command, f"serial port {self.url} failed: {exc}"
        )

    def _require_port(self, command: str) -> serial.SerialBase:
        if self._port is None and self._reopen:
            log.info("%s: opening %s again after it failed", self.device, self.url)
            self.open()
        if self._port is None or not self._port.is_open:
            raise DeviceCommunicationError(
                self.device, command, f"serial port {self.url} is not open (call connect first)"
            )
        return self._port

    def __repr__(self) -> str:
        return f"SerialLine({self.device!r}, {self.url!r}, open={self.is_open})"


def poll_until(
    clock: Clock,
    poll: Callable[[], IncubatorStatus | None],
    *,
    interval_s: float,
    timeout_s: float,
    on_timeout: Callable[[float], DeviceError],
) -> IncubatorStatus:
    """Call ``poll`` every ``interval_s`` (on the clock) until it returns a status.

    ``poll`` raises for device errors and returns None while the device is still busy.
    After ``timeout_s`` seconds the error made by ``on_timeout(timeout_s)`` is raised.
    """
    deadline = clock.monotonic() + timeout_s
    while True:
        status = poll()
        if status is not None:
            return status
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            raise on_timeout(timeout_s)
        clock.sleep(min(interval_s, remaining))
