"""Serial incubators (Cytomat, LiCONiC) as the engine's :class:`labctl.devices.Incubator`.

The serial devices do one thing at a time and have no operation ids or history: the
adapter keeps the current move (job key, kind, slot, start time) itself and answers
``poll`` from one cheap status read (Cytomat: ``ch:bs``; LiCONiC: three relay reads).
Op ids are ``"<device>:<job key>"``, so a retried job polls under the same id.

What the adapter decides, and why:

- A device error latched during a move (Cytomat error register, LiCONiC DM200) is read and
  cleared by the driver and ends the move FAILED with the driver's typed error, the device
  code kept. Nothing is retried here: the engine asks the operator.
- Cytomat device door open (overview bit 0x40): NEEDS_OPERATOR while it is open, with a
  ``door`` alarm. If the move was refused because of the door (error latched), it is
  FAILED once the door is closed, as the plate never moved. LiCONiC has no door sensor in
  its protocol: a gate or user-access handling error ends the move FAILED with a
  :class:`~labctl.errors.DeviceNeedsOperator` (the engine then holds for a person).
- After a restart (a new adapter), the device cannot say whether an operation was
  received: :meth:`SerialIncubator.find_op` raises NotKnown, and polling an op id this
  process never started answers FAILED (needs the operator) once the device is idle.
- No answer: ``poll`` raises the DeviceError (the engine raises an "unreachable" alarm and
  polls again) until the move's time-out has passed, then reports FAILED; ``alarms``
  reports ``offline``.

Thread-safe: one lock serialises every call (the engine loop and a status check may share
an adapter).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from labctl.clock import Clock
from labctl.devices import Climate, DeviceAlarm, NotKnown, OpState, OpStatus
from labctl.errors import (
    DeviceBusy,
    DeviceCommunicationError,
    DeviceError,
    DeviceFault,
    DeviceNeedsOperator,
    DeviceTimeout,
)

from .serial_io import IncubatorStatus

__all__ = ["CLIMATE_TOLERANCE", "SerialIncubator", "SerialIncubatorDriver"]

log = logging.getLogger(__name__)

# Allowed deviation of an actual climate value from its setpoint before a "climate" alarm:
# degC for temperature, percentage points for CO2 and O2.
CLIMATE_TOLERANCE: dict[str, float] = {"temperature": 1.0, "co2": 1.0, "o2": 1.0}

_CLIMATE_LABELS = {"temperature": ("temperature", "degC"), "co2": ("CO2", "%"), "o2": ("O2", "%")}

# LiCONiC DM200 causes (code % 100) that mean a person is at, or must go to, the device:
# 7 gate open, 10 user access.
_LICONIC_DOOR_CAUSES = frozenset({7, 10})


def _is_liconic_door_code(code: str) -> bool:
    # DM200 codes are five digits; Cytomat codes are two hex digits.
    return len(code) == 5 and code.isdigit() and int(code) % 100 in _LICONIC_DOOR_CAUSES


class SerialIncubatorDriver(Protocol):
    """What the adapter uses of CytomatDriver / LiconicDriver (both fit as they are)."""

    name: str
    move_timeout_s: float

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def initialize(self, timeout_s: float | None = None) -> IncubatorStatus: ...

    def start_fetch(self, slot: int) -> None: ...

    def start_store(self, slot: int) -> None: ...

    def poll(self) -> IncubatorStatus: ...

    def wait_idle(self, timeout_s: float | None = None) -> IncubatorStatus: ...

    def read_climate(self) -> Climate: ...

    def set_climate(
        self, *, temperature_c: float | None = None, co2_pct: float | None = None
    ) -> None: ...


@dataclass
class _Move:
    """The move this process started and has not seen finish."""

    op_id: str
    job_key: str
    kind: str  # "fetch" | "store"
    slot: int
    started: float  # clock.monotonic() seconds
    fault: DeviceError | None = None  # latched device error: the move did not complete
    unreachable_since: float | None = None

    @property
    def command(self) -> str:
        return f"{self.kind} slot {self.slot}"


class SerialIncubator:
    """A Cytomat or LiCONiC driver adapted to :class:`labctl.devices.Incubator`.

    ``setpoints`` are the workcell's climate setpoints (keys ``temperature`` degC, ``co2``
    and optionally ``o2`` in percent) that the climate alarm compares against.
    ``initialize``: initialize the handler once before the first move (it blocks for the
    device's init time, up to minutes, on the clock). ``move_timeout_s`` (seconds, default
    the driver's) bounds a move and an unreachable spell during one. ``climate_check_s``:
    climate readings are reused for this long by :meth:`alarms`; ``climate_settle_s``: no
    climate alarm for this long after a setpoint change; ``status_max_age_s``: a status
    read by ``poll`` is reused by :meth:`alarms` for this long. ``history``: how many
    finished operations are remembered for ``poll``/``find_op``.
    """

    def __init__(
        self,
        name: str,
        driver: SerialIncubatorDriver,
        clock: Clock,
        *,
        setpoints: Mapping[str, float] | None = None,
        initialize: bool = True,
        move_timeout_s: float | None = None,
        climate_check_s: float = 60.0,
        climate_settle_s: float = 1800.0,
        status_max_age_s: float = 2.0,
        history: int = 200,
    ) -> None:
        self.name = name
        self.driver = driver
        self.clock = clock
        self.initialize = initialize
        self.move_timeout_s = float(
            driver.move_timeout_s if move_timeout_s is None else move_timeout_s
        )
        self.climate_check_s = climate_check_s
        self.climate_settle_s = climate_settle_s
        self.status_max_age_s = status_max_age_s
        self._targets: dict[str, float] = {
            k: float(v) for k, v in (setpoints or {}).items() if k in CLIMATE_TOLERANCE
        }
        self._history = history
        self._lock = threading.RLock()
        self._connected = False
        self._initialized = False
        self._move: _Move | None = None
        self._results: OrderedDict[str, OpStatus] = OrderedDict()
        self._foreign: dict[str, OpStatus] = {}  # op ids from before a restart, answered
        self._status: tuple[float, IncubatorStatus] | None = None
        self._climate: tuple[float, Climate] | None = None
        self._settle_until: float | None = None

    # -- Incubator ---------------------------------------------------------------------

    def start_fetch(self, job_key: str, slot: int) -> str:
        """Start moving the plate in ``slot`` to the transfer station; returns the op id.

        Raises DeviceBusy while another move of this adapter runs, and the driver's
        DeviceError when the device refuses or does not answer.
        """
        return self._start_move("fetch", job_key, slot)

    def start_store(self, job_key: str, slot: int) -> str:
        """Start moving the plate on the transfer station into ``slot``; returns the op id."""
        return self._start_move("store", job_key, slot)

    def start_setpoint(
        self, job_key: str, temperature_c: float, co2_pct: float, o2_pct: float | None
    ) -> str:
        """Write temperature (degC) and CO2 (%) setpoints; the op succeeds at once.

        Neither serial protocol can set O2: an O2 request FAILS with a DeviceFault, unless
        the workcell declares this incubator holds that O2 already (setpoints ``o2``, set
        at the device's panel), in which case nothing is written for it.
        """
        op_id = self._op_id(job_key)
        o2 = "" if o2_pct is None else f", {o2_pct:g} % O2"
        command = f"setpoint {temperature_c:g} degC, {co2_pct:g} % CO2{o2}"
        with self._lock:
            self._results.pop(op_id, None)
            self._foreign.pop(op_id, None)
            held = self._targets.get("o2")
            if o2_pct is not None and (held is None or abs(held - o2_pct) > 0.05):
                err = DeviceFault(
                    self.name,
                    command,
                    f"cannot set O2 to {o2_pct:g} %: this incubator's serial protocol has no O2 "
                    "setpoint; set it at the device and declare it in the workcell "
                    f"(setpoints: {{o2: {o2_pct:g}%}})",
                )
                self._remember(op_id, OpStatus(OpState.FAILED, err.detail, err))
                return op_id
            self._ensure_connected()
            try:
                self.driver.set_climate(temperature_c=temperature_c, co2_pct=co2_pct)
            except DeviceError as exc:
                self._link_failed(exc)
                raise
            self._targets["temperature"] = float(temperature_c)
            self._targets["co2"] = float(co2_pct)
            if o2_pct is not None:
                self._targets["o2"] = float(o2_pct)
            # The chamber takes a while to reach new setpoints: no climate alarm meanwhile.
            self._settle_until = self.clock.monotonic() + self.climate_settle_s
            self._climate = None
            result = {"temperature_c": temperature_c, "co2_pct": co2_pct, "o2_pct": o2_pct}
            self._remember(op_id, OpStatus(OpState.SUCCEEDED, f"{command} written", result=result))
        return op_id

    def poll(self, op_id: str) -> OpStatus:
        """State of ``op_id`` from one status read (see the module docstring).

        Raises DeviceError when the device cannot be asked (until the move's time-out).
        """
        with self._lock:
            done = self._results.get(op_id) or self._foreign.get(op_id)
            if done is not None:
                return done
            move = self._move
            if move is None or move.op_id != op_id:
                return self._poll_unknown(op_id)
            return self._poll_move(move)

    def find_op(self, job_key: str) -> str | None:
        """The op id if this process started ``job_key``; otherwise raises NotKnown.

        The device keeps no history: a plate on the transfer station suggests a fetch
        happened but does not prove whose, so the operator decides (the message says what
        the sensor shows).
        """
        op_id = self._op_id(job_key)
        with self._lock:
            if op_id in self._results or (self._move is not None and self._move.op_id == op_id):
                return op_id
            hint = ""
            try:
                st = self._read_status()
                if st.transfer_station_occupied is not None:
                    state = "occupied" if st.transfer_station_occupied else "empty"
                    hint = f"; the transfer station is {state} now"
                if st.busy:
                    hint += "; the device is busy"
            except DeviceError as exc:
                hint = f"; its status could not be read ({exc.detail})"
        raise NotKnown(
            f"{self.name} keeps no record of past operations, so it cannot tell whether "
            f"{job_key} was received{hint}: check the plate"
        )

    def alarms(self) -> list[DeviceAlarm]:
        """``door`` (Cytomat device door open), ``climate`` (a value off its setpoint by
        more than :data:`CLIMATE_TOLERANCE`), ``offline`` (the device does not answer).

        Costs one status read (reused from ``poll`` when fresh) and, every
        ``climate_check_s`` seconds, one climate read.
        """
        out: list[DeviceAlarm] = []
        with self._lock:
            try:
                st = self._fresh_status()
                climate = self._cached_climate()
            except DeviceError as exc:
                return [DeviceAlarm(self.name, "offline", f"{self.name} does not answer: {exc}")]
            if st.door_open:
                out.append(
                    DeviceAlarm(
                        self.name, "door", f"{self.name}: the device door is open: close it"
                    )
                )
            message = self._climate_deviation(climate)
            if message:
                out.append(DeviceAlarm(self.name, "climate", message))
        return out

    def climate(self) -> Climate:
        """Actual climate read from the device now (degC, percent)."""
        with self._lock:
            self._ensure_connected()
            try:
                climate = self.driver.read_climate()
            except DeviceError as exc:
                self._link_failed(exc)
                raise
            self._climate = (self.clock.monotonic(), climate)
            return climate

    # -- extras ------------------------------------------------------------------------

    @property
    def setpoints(self) -> dict[str, float]:
        """The climate setpoints alarms compare against (degC, percent)."""
        with self._lock:
            return dict(self._targets)

    def device_status(self) -> IncubatorStatus:
        """Read the device's status now (connects if needed; does not initialize)."""
        with self._lock:
            return self._read_status()

    def close(self) -> None:
        """Close the serial port (it is reopened on the next call)."""
        with self._lock:
            self._connected = False
            self.driver.close()

    # -- internals ---------------------------------------------------------------------

    def _op_id(self, job_key: str) -> str:
        return f"{self.name}:{job_key}"

    def _start_move(self, kind: str, job_key: str, slot: int) -> str:
        op_id = self._op_id(job_key)
        command = f"{kind} slot {slot}"
        with self._lock:
            current = self._move
            if current is not None:
                if current.op_id == op_id and current.kind == kind and current.slot == slot:
                    return op_id  # already under way: starting it again would repeat the move
                self._poll_move(current)  # it may have finished since the last poll
                if self._move is not None:
                    raise DeviceBusy(
                        self.name,
                        command,
                        f"busy with the {current.command} of {current.job_key}",
                    )
            self._ensure_ready()
            self._clear_stale_error(command)
            self._results.pop(op_id, None)
            self._foreign.pop(op_id, None)
            start = self.driver.start_fetch if kind == "fetch" else self.driver.start_store
            try:
                start(slot)
            except DeviceError as exc:
                self._link_failed(exc)
                raise
            self._move = _Move(op_id, job_key, kind, slot, self.clock.monotonic())
            self._status = None
            log.info("%s: started %s for %s", self.name, command, job_key)
        return op_id

    def _poll_move(self, move: _Move) -> OpStatus:
        now = self.clock.monotonic()
        first: IncubatorStatus | None = None
        try:
            st = first = self._read_status()
            if st.error:
                # The driver reads the error register / DM200, clears it and raises.
                st = self.driver.wait_idle(0.0)
        except DeviceNeedsOperator as exc:
            if exc.device_code is None:
                return OpStatus(OpState.NEEDS_OPERATOR, exc.detail, exc)
            # A latched error (cleared now): the move did not complete. While the Cytomat's
            # door stays open the operator is needed first; then the move counts as failed.
            move.fault = exc
            if first is not None and first.door_open:
                return OpStatus(OpState.NEEDS_OPERATOR, exc.detail, exc)
            return self._finish(move, OpStatus(OpState.FAILED, exc.detail, exc))
        except DeviceFault as exc:
            if exc.device_code is None or not _is_liconic_door_code(exc.device_code):
                return self._finish(move, OpStatus(OpState.FAILED, exc.detail, exc))
            err = DeviceNeedsOperator(
                self.name,
                exc.command,
                f"{exc.detail}: check the gate and that nobody is at the device, then retry",
                device_code=exc.device_code,
            )
            return self._finish(move, OpStatus(OpState.FAILED, err.detail, err))
        except DeviceError as exc:
            # Not an answer about the move: the link (or the reply) failed.
            self._link_failed(exc)
            if move.unreachable_since is None:
                move.unreachable_since = now
            if now - move.unreachable_since < self.move_timeout_s:
                raise
            err = DeviceTimeout(
                self.name,
                move.command,
                f"no answer for {now - move.unreachable_since:g} s during the {move.kind}: "
                f"whether it completed is unknown ({exc.detail})",
            )
            return self._finish(move, OpStatus(OpState.FAILED, err.detail, err))
        move.unreachable_since = None
        if st.door_open:
            err = move.fault or DeviceNeedsOperator(
                self.name, move.command, "the device door is open: close it"
            )
            return OpStatus(OpState.NEEDS_OPERATOR, err.detail, err)
        if move.fault is not None:
            return self._finish(move, OpStatus(OpState.FAILED, move.fault.detail, move.fault))
        if st.busy:
            if now - move.started > self.move_timeout_s:
                err = DeviceTimeout(
                    self.name, move.command, f"still busy {now - move.started:g} s after the start"
                )
                return self._finish(move, OpStatus(OpState.FAILED, err.detail, err))
            return OpStatus(OpState.RUNNING, f"{move.command} under way")
        return self._finish(move, self._outcome(move, st))

    def _outcome(self, move: _Move, st: IncubatorStatus) -> OpStatus:
        """A move ended without a device error: check the transfer station sensor agrees."""
        occupied = st.transfer_station_occupied
        result = {"slot": move.slot, "transfer_station_occupied": occupied}
        if move.kind == "fetch":
            if occupied is False:
                err = DeviceFault(
                    self.name,
                    move.command,
                    "the move ended but the transfer station sensor sees no plate",
                )
                return OpStatus(OpState.FAILED, err.detail, err, result)
            return OpStatus(
                OpState.SUCCEEDED,
                f"plate from slot {move.slot} is on the transfer station",
                result=result,
            )
        if occupied is True:
            err = DeviceFault(
                self.name,
                move.command,
                "the move ended but a plate is still on the transfer station",
            )
            return OpStatus(OpState.FAILED, err.detail, err, result)
        return OpStatus(OpState.SUCCEEDED, f"plate stored in slot {move.slot}", result=result)

    def _poll_unknown(self, op_id: str) -> OpStatus:
        """An op id this process did not start (the engine restarted): ask the device."""
        st = self._read_status()
        if st.busy and not st.error:
            return OpStatus(
                OpState.RUNNING, "the device is busy with an operation started before the restart"
            )
        note, code = "", None
        if st.error:
            try:
                self.driver.wait_idle(0.0)  # reads and clears the latched error
            except DeviceError as exc:
                self._link_failed(exc)
                note, code = f" (the device reported: {exc.detail})", exc.device_code
        err = DeviceNeedsOperator(
            self.name,
            f"poll {op_id}",
            "this operation was started before labctl restarted and the device keeps no "
            f"record of it, so whether it completed cannot be confirmed{note}: check the plate",
            device_code=code,
        )
        status = OpStatus(OpState.FAILED, err.detail, err)
        # Kept apart from the results of our own moves: find_op must not claim it.
        self._foreign[op_id] = status
        return status

    def _clear_stale_error(self, command: str) -> None:
        """Refuse to start over an error latched by an earlier operation, clearing it.

        Otherwise the new move would be blamed for it (Cytomat) or refused as not ready
        again and again (LiCONiC keeps its ready flag low until the error is reset).
        """
        st = self._read_status()
        if not st.error:
            return
        try:
            self.driver.wait_idle(0.0)
        except DeviceError as exc:
            self._link_failed(exc)
            raise DeviceFault(
                self.name,
                command,
                f"an error from an earlier operation was latched ({exc.detail}); it is cleared "
                "now: check the device and the plate, then retry",
                device_code=exc.device_code,
            ) from exc

    def _finish(self, move: _Move, status: OpStatus) -> OpStatus:
        self._move = None
        self._remember(move.op_id, status)
        log.info("%s: %s for %s: %s", self.name, move.command, move.job_key, status.state.value)
        return status

    def _remember(self, op_id: str, status: OpStatus) -> None:
        self._results[op_id] = status
        self._results.move_to_end(op_id)
        while len(self._results) > self._history:
            self._results.popitem(last=False)

    def _ensure_connected(self) -> None:
        if not self._connected:
            self.driver.connect()
            self._connected = True

    def _ensure_ready(self) -> None:
        self._ensure_connected()
        if self.initialize and not self._initialized:
            try:
                self.driver.initialize()
            except DeviceError as exc:
                self._link_failed(exc)
                raise
            self._initialized = True

    def _read_status(self) -> IncubatorStatus:
        self._ensure_connected()
        try:
            st = self.driver.poll()
        except DeviceError as exc:
            self._link_failed(exc)
            raise
        self._status = (self.clock.monotonic(), st)
        return st

    def _fresh_status(self) -> IncubatorStatus:
        if (
            self._status is not None
            and self.clock.monotonic() - self._status[0] <= self.status_max_age_s
        ):
            return self._status[1]
        return self._read_status()

    def _cached_climate(self) -> Climate:
        if (
            self._climate is not None
            and self.clock.monotonic() - self._climate[0] < self.climate_check_s
        ):
            return self._climate[1]
        return self.climate()

    def _climate_deviation(self, climate: Climate) -> str:
        if self._settle_until is not None and self.clock.monotonic() < self._settle_until:
            return ""
        actual = {
            "temperature": climate.temperature_c,
            "co2": climate.co2_pct,
            "o2": climate.o2_pct,
        }
        off = []
        for key, target in self._targets.items():
            value = actual.get(key)
            if value is None:
                continue  # the device does not measure it
            if abs(value - target) > CLIMATE_TOLERANCE[key]:
                label, unit = _CLIMATE_LABELS[key]
                off.append(
                    f"{label} {value:g} {unit} (setpoint {target:g} {unit} +- {CLIMATE_TOLERANCE[key]:g})"
                )
        return f"{self.name}: climate out of range: " + ", ".join(off) if off else ""

    def _link_failed(self, exc: DeviceError) -> None:
        """A broken link (not a device answer) is reopened on the next call."""
        if isinstance(exc, DeviceCommunicationError) and exc.device_code is None:
            self._connected = False
            try:
                self.driver.close()
            except DeviceError:  # closing a dead port is fine
                log.debug("%s: close after a link failure failed", self.name, exc_info=True)

    def __repr__(self) -> str:
        return f"SerialIncubator({self.name!r}, {self.driver!r})"
