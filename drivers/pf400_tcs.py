"""The PreciseFlex TCP Command Server (TCS) wire, as :mod:`labctl.drivers.pf400` speaks it.

:class:`TcsLink` is one TCP connection to one TCS thread (port 10100 takes motion, port
10000 answers status while the arm moves; shared DEVICES.md 11.1). A command is an ASCII
line ending ``\\n``; its reply is one line ending ``\\r\\n``: ``<code> <data>``, code 0 for
success (``data`` may be empty), a negative code for an error whose text follows (the arm
writes it between asterisks: ``-1009 *No robot attached*``). One command at a time per
connection. Deadlines are measured on the injected :class:`~labctl.clock.Clock`; as a
virtual clock does not move while we wait for bytes, the real time spent in short socket
reads counts too (as in drivers/serial_io.py).

:func:`tcs_error` maps the arm's codes to labctl's typed errors. The numbers are those of
PyLabRobot's ``pylabrobot/arms/precise_flex/error_codes.py`` (collision set as in its
``brooks/precise_flex/errors.py``); TCS's own -28xx codes as Argonne's pf400_module lists
them. Codes not named here keep the arm's text and become a DeviceFault.

:class:`ArmSession` holds the arm's two connections and its session (power, attach, home,
position) for :class:`~labctl.drivers.pf400.PF400Arm`; :class:`Grasp` is how plates are
gripped and what a gripper opening says about a plate.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass

from labctl.clock import Clock
from labctl.errors import (
    DeviceBusy,
    DeviceCommunicationError,
    DeviceError,
    DeviceFault,
    DeviceNeedsOperator,
    DeviceTimeout,
)

__all__ = [
    "COLLISION",
    "LINK_ERRORS",
    "NOT_HOMED",
    "REFUSALS",
    "ArmNotReady",
    "ArmSession",
    "Grasp",
    "TcsLink",
    "parse_reply",
    "tcs_error",
]

log = logging.getLogger(__name__)

# E-stop: -1028 hard, -1045 soft, -1060 remote, -1602 external, -1623/-1624 channel stuck.
ESTOP = frozenset({-1028, -1045, -1060, -1602, -1623, -1624})
# Power: -1046 not enabled, -1600 off requested, -1605 unknown power off, -1025 timeout
# enabling, -1057 front-panel button not pressed (CAT-3), -1611 / -1044 switch on Manual.
POWER = frozenset({-1046, -1600, -1605, -1025, -1057, -1611, -1044})
# -1047 / -1048: a person jogs the arm from the web or hardware pendant.
MANUAL = frozenset({-1047, -1048})
NOT_ATTACHED = frozenset({-1009})
NOT_HOMED = frozenset({-1021, -1059})  # not homed; homed state lost (servo error)
# -3100 hard / -3122 soft envelope error, -3147 abnormal envelope (slow collision), -3101
# PID output saturated, -3105 motor stalled: the arm ran into something and stopped.
COLLISION = frozenset({-3100, -3101, -3105, -3122, -3147})
# -1006 robot attached by another thread, -1061 illegal while the robot moves.
BUSY = frozenset({-1006, -1061})
# -2851 invalid station id, -2814/-2820 invalid location/station index, -2816/-2821
# undefined location/station: the station was never taught.
STATION = frozenset({-2814, -2816, -2820, -2821, -2851})
# -714 / -2805 unknown command, -202 invalid / -205 missing argument, -712 invalid syntax.
SYNTAX = frozenset({-202, -205, -712, -714, -2805})
# Refused before anything moved: the command was not carried out at all.
REFUSALS = NOT_ATTACHED | NOT_HOMED | BUSY | STATION | SYNTAX

# The link failed: whether the command was carried out is unknown.
LINK_ERRORS = (DeviceTimeout, DeviceCommunicationError)

# Replies are a few dozen characters; a longer run without an end of line is noise.
REAL_GRACE_S = 1.0  # real seconds a reply is always given, whatever a virtual clock says
MAX_REPLY_BYTES = 4096


class ArmNotReady(DeviceFault):
    """The arm refused a motion command because it is not attached or not homed."""


def parse_reply(device: str, command: str, line: str) -> tuple[int, str]:
    """``(code, data)`` of one reply line; raises DeviceCommunicationError if it has no code."""
    head, _, rest = line.strip().partition(" ")
    try:
        code = int(head)
    except ValueError:
        raise DeviceCommunicationError(
            device, command, f"garbled reply {line!r} (no reply code)"
        ) from None
    return code, rest.strip()


def tcs_error(device: str, command: str, code: int, text: str) -> DeviceError:
    """The typed error for the arm's negative reply ``code`` with its ``text``."""
    said = text.strip().strip("*").strip() or f"error {code}"
    dc = str(code)
    if code in ESTOP:
        return DeviceNeedsOperator(
            device,
            command,
            f"{said}: the e-stop is engaged; release it, then retry",
            device_code=dc,
        )
    if code in POWER:
        return DeviceNeedsOperator(
            device,
            command,
            f"{said}: robot power is off (e-stop, fault or the Auto/Manual switch); check the "
            "cell, then retry (labctl enables power again)",
            device_code=dc,
        )
    if code in MANUAL:
        return DeviceNeedsOperator(
            device,
            command,
            f"{said}: someone is jogging the arm; put it back in computer control, then retry",
            device_code=dc,
        )
    if code in NOT_ATTACHED or code in NOT_HOMED:
        return ArmNotReady(
            device, command, f"{said}: the arm is not ready for motion", device_code=dc
        )
    if code in COLLISION:
        return DeviceFault(
            device,
            command,
            f"{said}: the arm ran into something (collision) and stopped; look at the cell "
            "before anything moves again",
            device_code=dc,
        )
    if code in BUSY:
        return DeviceBusy(device, command, f"{said}: the arm is in use", device_code=dc)
    if code in STATION:
        return DeviceFault(
            device,
            command,
            f"{said}: that station is not taught on the arm; teach it or fix the workcell's "
            "station numbers",
            device_code=dc,
        )
    return DeviceFault(device, command, said, device_code=dc)


class TcsLink:
    """One TCP connection to a TCS port: one command, one reply, typed errors.

    ``connect_timeout_s`` bounds connecting, ``reply_timeout_s`` (both seconds) is the
    default deadline for a reply; ``read_timeout_s`` is the short socket read the wait is
    made of. After a link failure (refused, closed by the arm, no complete reply in time,
    a garbled reply) the connection is closed, so no late reply can be taken for the next
    command's; the next :meth:`send` connects again and :attr:`fresh` tells the owner to
    set the new connection up. Thread-safe: one lock around each exchange.
    """

    def __init__(
        self,
        device: str,
        host: str,
        port: int,
        clock: Clock,
        *,
        connect_timeout_s: float = 5.0,
        reply_timeout_s: float = 5.0,
        read_timeout_s: float = 0.02,
    ) -> None:
        self.device = device
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.read_timeout_s = read_timeout_s
        self.fresh = False  # connected since the owner last set the connection up
        self._clock = clock
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._lock = threading.RLock()

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        """Connect if not connected (or if the arm hung up on an idle connection: it
        restarted; nothing was sent, so connecting again repeats nothing); raises
        DeviceCommunicationError when the arm cannot be reached."""
        with self._lock:
            if self._sock is not None and self._hung_up(self._sock):
                log.info("%s: the arm closed an idle connection: connecting again", self.device)
                self.close()
            if self._sock is not None:
                return
            try:
                sock = socket.create_connection(
                    (self.host, self.port), timeout=self.connect_timeout_s
                )
            except OSError as exc:
                raise DeviceCommunicationError(
                    self.device, "connect", f"cannot reach {self.host}:{self.port}: {exc}"
                ) from exc
            sock.settimeout(self.read_timeout_s)
            self._sock, self.fresh = sock, True
            self._buf.clear()
            log.debug("%s: connected to %s:%s", self.device, self.host, self.port)

    def _hung_up(self, sock: socket.socket) -> bool:
        """Whether the peer closed this connection while no command was under way (a
        non-blocking peek: unasked bytes are kept for ``_drop_stale``)."""
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(self.read_timeout_s)

    def close(self) -> None:
        """Close the connection (safe to call twice, and from another thread: a wait for a
        reply then ends with a DeviceCommunicationError)."""
        # Not under the lock: a thread waiting for a reply holds it, and must be woken.
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone
            sock.close()

    def send(self, command: str, timeout_s: float | None = None) -> str:
        """Send ``command``; return the reply's data when its code is 0 (or a positive
        warning). Connects first if needed. ``timeout_s`` (seconds, default
        ``reply_timeout_s``) bounds the wait for the reply.

        Raises :func:`tcs_error`'s error for a negative code; DeviceTimeout when no complete
        reply comes in time and DeviceCommunicationError when the link fails or the reply
        is garbled (both close the link: whether the command was carried out is unknown).
        """
        line = self.transact(command, timeout_s)
        code, data = parse_reply(self.device, command, line)
        if code < 0:
            raise tcs_error(self.device, command, code, data)
        if code > 0:
            log.warning("%s: %s: warning %d %s", self.device, command, code, data)
        return data

    def transact(self, command: str, timeout_s: float | None = None) -> str:
        """Send ``command`` + ``\\n`` and return the reply line without its end of line."""
        deadline_s = self.reply_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            self.open()
            sock = self._sock
            assert sock is not None
            try:
                self._drop_stale(sock)
                sock.sendall(command.encode("ascii") + b"\n")
                log.debug("%s >> %s", self.device, command)
                line = self._read_line(sock, command, deadline_s)
            except UnicodeError as exc:
                raise DeviceCommunicationError(self.device, command, f"not ASCII: {exc}") from exc
            except (DeviceTimeout, DeviceCommunicationError):
                self.close()
                raise
            except OSError as exc:
                self.close()
                raise DeviceCommunicationError(
                    self.device, command, f"connection to {self.host}:{self.port} lost: {exc}"
                ) from exc
        log.debug("%s << %s", self.device, line)
        return line

    def _drop_stale(self, sock: socket.socket) -> None:
        """Discard bytes that arrived unasked (nothing should: one command at a time)."""
        stale = bytes(self._buf)
        self._buf.clear()
        sock.setblocking(False)
        try:
            while len(stale) < MAX_REPLY_BYTES:
                chunk = sock.recv(4096)
                if not chunk:
                    break  # closed: the read that follows reports it
                stale += chunk
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            sock.settimeout(self.read_timeout_s)
        if stale:
            log.warning("%s: discarded unasked bytes %r", self.device, stale[:80])

    def _read_line(self, sock: socket.socket, command: str, deadline_s: float) -> str:
        start = self._clock.monotonic()
        waited = 0.0
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                raw = bytes(self._buf[:end])
                del self._buf[: end + 1]
                try:
                    return raw.decode("ascii").strip()
                except UnicodeDecodeError:
                    raise DeviceCommunicationError(
                        self.device, command, f"garbled reply {raw!r} (not ASCII)"
                    ) from None
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                waited += self.read_timeout_s
            else:
                if not chunk:
                    raise DeviceCommunicationError(
                        self.device, command, "the arm closed the connection"
                    )
                self._buf.extend(chunk)
                if len(self._buf) > MAX_REPLY_BYTES:
                    raise DeviceCommunicationError(
                        self.device, command, f"garbled reply: {len(self._buf)} bytes, no end"
                    )
            elapsed = self._clock.monotonic() - start
            # A virtual clock may jump ahead while a prompt reply is on its way: it
            # counts only once some real time has passed as well.
            if waited >= deadline_s or (
                elapsed >= deadline_s and waited >= min(deadline_s, REAL_GRACE_S)
            ):
                got = f" (got {bytes(self._buf)!r})" if self._buf else ""
                raise DeviceTimeout(self.device, command, f"no reply within {deadline_s:g} s{got}")

    def __repr__(self) -> str:
        return f"TcsLink({self.device!r}, {self.host}:{self.port}, open={self.is_open})"


@dataclass(frozen=True)
class Grasp:
    """How the gripper takes a plate. ``width_mm``: the plate's width where gripped (mm;
    an SBS plate across its short side); ``speed_pct``: finger speed (% of maximum);
    ``force_n``: grip force (N; negative grips by opening). ``compliance``: horizontal
    compliance while gripping and placing, keeping ``compliance_torque_pct`` (%) of the
    holding torque. A gripper opening within ``tolerance_mm`` of ``width_mm`` reads as
    holding a plate; wider is open, narrower is closed on nothing."""

    width_mm: float = 85.5
    speed_pct: float = 50.0
    force_n: float = 10.0
    compliance: bool = False
    compliance_torque_pct: int = 0
    tolerance_mm: float = 2.0

    def data_line(self) -> str:
        """``GraspData <width mm> <speed %> <force N>``."""
        return f"GraspData {self.width_mm:g} {self.speed_pct:g} {self.force_n:g}"

    def plate_line(self, verb: str, station: int) -> str:
        """``PickPlate``/``PlacePlate <station> <compliance 0|1> <torque %>``."""
        return f"{verb} {station} {int(self.compliance)} {self.compliance_torque_pct}"

    def reads(self, opening_mm: float | None) -> str:
        """What a gripper opening says: ``holding``, ``open``, ``closed`` or ``unknown``."""
        if opening_mm is None:
            return "unknown"
        if abs(opening_mm - self.width_mm) <= self.tolerance_mm:
            return "holding"
        return "open" if opening_mm > self.width_mm else "closed"

    def describe(self, opening_mm: float | None) -> str:
        """E.g. "gripper open: no plate (120 mm)"."""
        says = self.reads(opening_mm)
        if opening_mm is None:
            return "gripper opening unknown"
        what = {"holding": "at plate width: a plate", "open": "open: no plate"}
        return f"gripper {what.get(says, 'closed: no plate')} ({opening_mm:g} mm)"


class ArmSession:
    """The arm's connections and its session, for :class:`~labctl.drivers.pf400.PF400Arm`.

    ``motion`` (port 10100) carries motion; ``status`` (port 10000, optional) answers
    queries while the arm moves. A new connection is set up with ``mode 0`` (the status
    one also with ``selectRobot``); the session is ``hp 1 N`` (the arm waits up to
    ``power_timeout_s`` s for power), ``attach``, ``pd 2800`` (homed?), ``home`` if not
    homed (``motion_timeout_s`` s), ``wherec``. :attr:`ready` says a session stands; a
    new motion connection, a power or e-stop error or a refusal as not attached/homed
    clears it. Not locked beyond each exchange: the arm serialises its use.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        status_port: int | None,
        clock: Clock,
        *,
        robot: int = 1,
        power_timeout_s: int = 20,
        motion_timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        reply_timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self.robot = robot
        self.power_timeout_s = power_timeout_s
        self.motion_timeout_s = motion_timeout_s
        t = {"connect_timeout_s": connect_timeout_s, "reply_timeout_s": reply_timeout_s}
        self.motion = TcsLink(name, host, port, clock, **t)
        self.status = None if status_port is None else TcsLink(name, host, status_port, clock, **t)
        self.ready = False  # power on, attached and homed, as far as we know
        self.powered = False  # labctl enabled power once: power off since is unexpected
        self.position = ""  # the last ``wherec`` data, as the arm gave it

    def send(self, link: TcsLink, command: str, timeout_s: float | None = None) -> str:
        """``link.send``, setting a new connection up first."""
        link.open()
        if link.fresh:
            link.fresh = False
            if link is self.motion:
                self.ready = False
            try:
                link.send("mode 0")
            except DeviceError:
                link.close()  # set it up again on the next connection
                raise
            if link is self.status:
                try:
                    link.send(f"selectRobot {self.robot}")
                except LINK_ERRORS:
                    raise
                except DeviceError as exc:  # queries then go to the thread's default robot
                    log.warning("%s: %s", self.name, exc)
        try:
            return link.send(command, timeout_s)
        except (DeviceNeedsOperator, ArmNotReady):
            self.ready = False  # power, e-stop, pendant, detached: set it up again
            raise

    def move(self, command: str) -> str:
        """A motion command on the motion connection (``motion_timeout_s`` for its reply)."""
        return self.send(self.motion, command, self.motion_timeout_s)

    def ensure(self) -> None:
        """Set the session up unless one stands on the current motion connection."""
        self.motion.open()
        if self.motion.fresh or not self.ready:
            self.establish(force_home=False)

    def establish(self, *, force_home: bool) -> None:
        """``hp 1 N``, ``attach``, ``pd 2800``, ``home`` if not homed (or ``force_home``),
        ``wherec``. Raises the arm's typed errors."""
        self.ready = False
        self.send(self.motion, f"hp 1 {self.power_timeout_s}", self.power_timeout_s + 5.0)
        self.powered = True
        self.send(self.motion, f"attach {self.robot}")
        homed = False
        if not force_home:
            try:
                homed = self.send(self.motion, "pd 2800").strip() == "1"
            except LINK_ERRORS:
                raise
            except DeviceError as exc:
                # It cannot say: a motion it then refuses as not homed homes it (once).
                log.warning("%s: homed state unknown (%s): not homing now", self.name, exc)
                homed = True
        if not homed:
            self.move("home")
        self.position = self.send(self.motion, "wherec")
        self.ready = True

    def ask(self, command: str, *, motion_free: bool) -> str | None:
        """A query on the status connection, or on the motion one if ``motion_free`` (no
        move under way); None when it cannot be asked now."""
        if self.status is not None:
            return self.send(self.status, command)
        return self.send(self.motion, command) if motion_free else None

    def gripper(self, *, motion_free: bool) -> float | None:
        """The gripper opening (mm; ``wherej``'s 5th joint), None when the arm cannot say.
        Raises the link's errors."""
        try:
            data = self.ask("wherej", motion_free=motion_free)
        except LINK_ERRORS:
            raise
        except DeviceError as exc:
            log.warning("%s: wherej refused: %s", self.name, exc)
            return None
        try:
            return float((data or "").split()[4])
        except (IndexError, ValueError):
            return None

    def close(self) -> None:
        """Close both connections."""
        self.ready = False
        self.motion.close()
        if self.status is not None:
            self.status.close()
