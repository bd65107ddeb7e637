"""Serial incubators (Cytomat, LiCONiC) as the engine's :class:`labctl.devices.Incubator`.

The serial devices do one thing at a time and have no operation ids or history: the
adapter keeps the current move (job key, kind, slot, start time) itself and answers
``poll`` from one cheap status read (Cytomat: ``ch:bs``; LiCONiC: three relay reads).
Op ids are ``"<device>:<job key>"``, so a retried job polls under the same id.

What the adapter decides, and why:

- Before a move the device is asked (one status read): a move is never started while it is
  busy (DeviceBusy) or initialising (DeviceInitializing: wait). Nor when the transfer
  station sensor contradicts it: the drivers raise PlaceConflict for a fetch onto an
  occupied station or a store from an empty one (the Cytomat refuses those itself, the
  LiCONiC driver reads the sensor first); the move may have happened already, and a person
  decides. A move this process started and saw succeed is not started again.
- A device is never initialised because a new process starts: only when it refuses a move
  as not initialised (after a power cycle) does the adapter start its initialisation,
  without waiting, and the start raises DeviceInitializing (nothing moved).
- A move the device no longer knows raises OperationLost from ``poll``: it initialises
  during the move (it was restarted), or it is idle with no error while the transfer
  station shows the move did not happen. Whether the plate moved cannot be told.
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
  reports ``offline``. A port that failed is opened again (the same path or URL) by the next
  call, so a device server or USB adapter that restarted is reached again.
- ``report`` says what the device shows now (the transfer station, busy or initialising)
  and what this process knows of the job's move.

Thread-safe: one lock serialises every call (the engine loop and a status check may share
an adapter). The adapter owns three helpers, each a module: the exchange with the driver
(incubator_link.py), the moves and their outcomes (incubator_moves.py, where the rules above
are applied) and the setpoints with the climate alarm (incubator_climate.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from labctl.clock import Clock
from labctl.devices import Climate, DeviceAlarm, NotKnown, OpState, OpStatus
from labctl.errors import DeviceError, DeviceFault

from .incubator_climate import CLIMATE_TOLERANCE, ClimateWatch
from .incubator_link import IncubatorLink, SerialIncubatorDriver
from .incubator_moves import MoveTracker
from .serial_io import IncubatorStatus

__all__ = ["CLIMATE_TOLERANCE", "SerialIncubator", "SerialIncubatorDriver"]

log = logging.getLogger(__name__)


class SerialIncubator:
    """A Cytomat or LiCONiC driver adapted to :class:`labctl.devices.Incubator`.

    ``setpoints`` are the workcell's climate setpoints (keys ``temperature`` degC, ``co2``
    and optionally ``o2`` in percent) that the climate alarm compares against.
    ``initialize``: start the handler's initialisation when the device refuses a move as
    not initialised (False: a person does it; the start fails). ``move_timeout_s`` (seconds, default
    the driver's) bounds a move and an unreachable spell during one. ``climate_check_s``:
    climate readings are reused for this long by :meth:`alarms`; ``climate_settle_s``: no
    climate alarm for this long after a setpoint change; ``status_max_age_s``: a status
    read by ``poll`` is reused by :meth:`alarms` for this long. ``history``: how many
    finished operations are remembered for ``poll``/``find_op``.

    The work is shared by three helpers it owns: an :class:`IncubatorLink` (the exchange
    with the driver), a :class:`MoveTracker` (the moves and their outcomes) and a
    :class:`ClimateWatch` (setpoints and the climate alarm).
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
        self._lock = threading.RLock()
        self._link = IncubatorLink(
            name, driver, clock, initialize=initialize, status_max_age_s=status_max_age_s
        )
        timeout = float(driver.move_timeout_s if move_timeout_s is None else move_timeout_s)
        self._moves = MoveTracker(name, self._link, clock, move_timeout_s=timeout, history=history)
        self._climate = ClimateWatch(
            name, self._link, clock, setpoints, check_s=climate_check_s, settle_s=climate_settle_s
        )

    # -- Incubator ---------------------------------------------------------------------

    def start_fetch(self, job_key: str, slot: int) -> str:
        """Start moving the plate in ``slot`` to the transfer station; returns the op id.

        Asks the device first (see the module docstring): raises DeviceBusy while another
        move runs, DeviceInitializing while the device initialises, PlaceConflict when the
        transfer station already holds a plate, and the driver's DeviceError when the device
        refuses or does not answer.
        """
        return self._start_move("fetch", job_key, slot)

    def start_store(self, job_key: str, slot: int) -> str:
        """Start moving the plate on the transfer station into ``slot``; returns the op id.

        As :meth:`start_fetch`; PlaceConflict when the transfer station holds no plate."""
        return self._start_move("store", job_key, slot)

    def start_gate(self, job_key: str, open_: bool) -> str:
        """Start opening (``open_``) or closing the automatic gate (lift door) at the
        transfer station; returns the op id. As :meth:`start_fetch`: refused while the
        device is busy or initialising; the driver's DeviceError when the device (or its
        protocol: a LiCONiC has no documented gate command) refuses. Succeeds when the gate
        sensor, where there is one, shows the gate as asked."""
        return self._start_move("gate-open" if open_ else "gate-close", job_key, 0)

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
            self._moves.forget(op_id)
            held = self._climate.targets.get("o2")
            if o2_pct is not None and (held is None or abs(held - o2_pct) > 0.05):
                err = DeviceFault(
                    self.name,
                    command,
                    f"cannot set O2 to {o2_pct:g} %: this incubator's serial protocol has no O2 "
                    "setpoint; set it at the device and declare it in the workcell "
                    f"(setpoints: {{o2: {o2_pct:g}%}})",
                )
                self._moves.record(op_id, OpStatus(OpState.FAILED, err.detail, err))
                return op_id
            self._climate.write(temperature_c, co2_pct, o2_pct)
            result = {"temperature_c": temperature_c, "co2_pct": co2_pct, "o2_pct": o2_pct}
            self._moves.record(
                op_id, OpStatus(OpState.SUCCEEDED, f"{command} written", result=result)
            )
        return op_id

    def poll(self, op_id: str) -> OpStatus:
        """State of ``op_id`` from one status read (see the module docstring).

        Raises OperationLost for a move the device no longer knows, and DeviceError when the
        device cannot be asked (until the move's time-out).
        """
        with self._lock:
            return self._moves.poll(op_id)

    def find_op(self, job_key: str) -> str | None:
        """The op id if this process started ``job_key``; otherwise raises NotKnown.

        The device keeps no history: a plate on the transfer station suggests a fetch
        happened but does not prove whose, so the operator decides (the message says what
        the sensor shows).
        """
        op_id = self._op_id(job_key)
        with self._lock:
            if self._moves.started(op_id):
                return op_id
            hint = ""
            try:
                st = self._link.read_status()
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

    def report(self, job_key: str) -> str:
        """What the device shows now and what this process knows of the job's move, e.g.
        "inc-1: the transfer station holds a plate; idle; its fetch slot 3 succeeded"
        (labctl.devices.Reports). Never raises: a device that cannot be asked says so."""
        with self._lock:
            known = self._moves.describe(self._op_id(job_key))
            try:
                shown = self._shows()
            except DeviceError as exc:
                shown = f"it could not be asked ({exc.detail})"
            except Exception as exc:  # a report must never stop the engine asking a person
                log.exception("%s: report on %s failed", self.name, job_key)
                shown = f"its answer could not be read ({exc})"
        return f"{self.name}: {shown}" + (f"; {known}" if known else "")

    def _shows(self) -> str:
        """The device's state in a few words (one or two reads)."""
        st = self._link.read_status()
        parts = []
        if st.transfer_station_occupied is not None:
            held = st.transfer_station_occupied
            parts.append(
                "the transfer station holds a plate" if held else "the transfer station is empty"
            )
        if st.busy:
            parts.append("initialising" if self._link.initializing() else "busy with a move")
        else:
            parts.append("idle")
        if st.error:
            parts.append("an error is latched")
        if st.door_open:
            parts.append("the door is open")
        return "; ".join(parts)

    def alarms(self) -> list[DeviceAlarm]:
        """``door`` (Cytomat device door open), ``climate`` (a value off its setpoint by
        more than :data:`CLIMATE_TOLERANCE`), ``offline`` (the device does not answer).

        Costs one status read (reused from ``poll`` when fresh) and, every
        ``climate_check_s`` seconds, one climate read.
        """
        out: list[DeviceAlarm] = []
        with self._lock:
            try:
                st = self._link.fresh_status()
                climate = self._climate.recent()
            except DeviceError as exc:
                return [DeviceAlarm(self.name, "offline", f"{self.name} does not answer: {exc}")]
            if st.door_open:
                out.append(
                    DeviceAlarm(
                        self.name, "door", f"{self.name}: the device door is open: close it"
                    )
                )
            message = self._climate.deviation(climate)
            if message:
                out.append(DeviceAlarm(self.name, "climate", message))
        return out

    def climate(self) -> Climate:
        """Actual climate read from the device now (degC, percent)."""
        with self._lock:
            return self._climate.read()

    # -- extras ------------------------------------------------------------------------

    @property
    def setpoints(self) -> dict[str, float]:
        """The climate setpoints alarms compare against (degC, percent)."""
        with self._lock:
            return dict(self._climate.targets)

    def device_status(self) -> IncubatorStatus:
        """Read the device's status now (connects if needed; does not initialize)."""
        with self._lock:
            return self._link.read_status()

    def close(self) -> None:
        """Close the serial port (it is reopened on the next call)."""
        with self._lock:
            self._link.close()

    # -- internals ---------------------------------------------------------------------

    def _op_id(self, job_key: str) -> str:
        return f"{self.name}:{job_key}"

    def _start_move(self, kind: str, job_key: str, slot: int) -> str:
        op_id = self._op_id(job_key)
        with self._lock:
            self._moves.start(kind, op_id, job_key, slot)
        return op_id

    def __repr__(self) -> str:
        return f"SerialIncubator({self.name!r}, {self.driver!r})"
