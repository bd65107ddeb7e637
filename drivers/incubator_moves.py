"""The moves of one serial incubator: which is under way and what became of it.

The serial devices do one thing at a time and keep no operation ids or history, so
:class:`MoveTracker` keeps the current move (job key, kind, slot, start time) and the last
outcomes itself, and judges a move from one status read. The rules are those of the
drivers/incubators.py docstring: the device is asked before a move starts (busy,
initialising, an error latched), a latched device error ends the move
FAILED (nothing is retried), an open Cytomat door holds it in NEEDS_OPERATOR, a LiCONiC gate
or user-access error ends it FAILED with a DeviceNeedsOperator, a move the device no longer
knows (it initialises, or is idle with the plate not where the move puts it) raises
OperationLost, an op id from before a restart is FAILED (needs the operator) once the device
is idle, and no answer is raised until the move's time-out has passed, then FAILED.

Not thread-safe by itself: the adapter calls it under its lock.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from labctl.clock import Clock
from labctl.devices import OpState, OpStatus
from labctl.errors import (
    DeviceBusy,
    DeviceError,
    DeviceFault,
    DeviceInitializing,
    DeviceNeedsOperator,
    DeviceTimeout,
    OperationLost,
)

from .incubator_link import GATE_KINDS, IncubatorLink
from .liconic_errors import GATE_OR_ACCESS_CAUSES, handling_cause
from .serial_io import IncubatorStatus, NotInitialized

__all__ = ["MoveTracker"]


def _command(kind: str, slot: int) -> str:
    """An operation in words for messages: "fetch slot 3", "open the gate"."""
    if kind in GATE_KINDS:
        return "open the gate" if kind == "gate-open" else "close the gate"
    return f"{kind} slot {slot}"


log = logging.getLogger(__name__)


def _is_liconic_door_code(code: str) -> bool:
    """A LiCONiC DM200 code whose cause means a person is at, or must go to, the device
    (gate open, user access). Not ``code % 100``: 00107/00110 are import steps."""
    # DM200 codes are five digits; Cytomat codes are two hex digits.
    return len(code) == 5 and code.isdigit() and handling_cause(int(code)) in GATE_OR_ACCESS_CAUSES


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
        return _command(self.kind, self.slot)


class MoveTracker:
    """The current move over ``link`` and the outcomes of the last ``history`` operations.

    ``move_timeout_s`` (seconds on ``clock``) bounds a move and an unreachable spell during
    one.
    """

    def __init__(
        self,
        name: str,
        link: IncubatorLink,
        clock: Clock,
        *,
        move_timeout_s: float,
        history: int = 200,
    ) -> None:
        self.name = name
        self.link = link
        self.clock = clock
        self.move_timeout_s = move_timeout_s
        self._history = history
        self._move: _Move | None = None
        self._results: OrderedDict[str, OpStatus] = OrderedDict()
        self._commands: dict[str, str] = {}  # op id -> the move's command, while in _results
        self._lost: OrderedDict[str, OperationLost] = OrderedDict()  # moves the device lost
        self._foreign: dict[str, OpStatus] = {}  # op ids from before a restart, answered

    def start(self, kind: str, op_id: str, job_key: str, slot: int) -> None:
        """Start a ``"fetch"`` or ``"store"`` of ``slot``; nothing if this very move is under
        way or has succeeded already (starting it again would repeat it).

        The device is asked first (one status read). Raises DeviceBusy while another move
        runs; DeviceInitializing while the device initialises, or when it refused the move
        as not initialised (nothing moved) and its initialisation has been started;
        DeviceFault over an error latched by an earlier operation (cleared now); and the
        driver's DeviceError when the device refuses or does not answer, PlaceConflict
        among them: the driver refuses a move the transfer station sensor contradicts (a
        fetch onto an occupied station, a store from an empty one: it may have happened).
        """
        command = _command(kind, slot)
        current = self._move
        if current is not None:
            if current.op_id == op_id and current.kind == kind and current.slot == slot:
                return  # already under way: starting it again would repeat the move
            self._poll_move(current)  # it may have finished since the last poll
            if self._move is not None:
                raise DeviceBusy(
                    self.name,
                    command,
                    f"busy with the {current.command} of {current.job_key}",
                )
        done = self._results.get(op_id)
        if done is not None and done.state is OpState.SUCCEEDED:
            if self._commands.get(op_id) == command:
                return
        st = self.link.read_status()
        if st.busy:
            if self.link.initializing():
                raise DeviceInitializing(
                    self.name, command, "the device is initialising: start again when it is done"
                )
            raise DeviceBusy(
                self.name,
                command,
                "the device is busy with an operation this controller did not start "
                "(from before a restart?)",
            )
        if st.error:
            self._clear_stale_error(command)
        self.forget(op_id)
        try:
            self.link.start(kind, slot)
        except NotInitialized as exc:
            raise self._initialize(command, exc, st) from exc
        self._move = _Move(op_id, job_key, kind, slot, self.clock.monotonic())
        try:
            self.link.check_started()
        except NotInitialized as exc:
            self._move = None  # refused at once: nothing moved
            raise self._initialize(command, exc, st) from exc
        except DeviceError as exc:
            # The device accepted the move: its polls will tell how it goes.
            log.warning("%s: %s: could not check the start: %s", self.name, command, exc)
        log.info("%s: started %s for %s", self.name, command, job_key)

    def poll(self, op_id: str) -> OpStatus:
        """State of ``op_id``: a remembered outcome, the current move, or one from before a
        restart. Raises OperationLost for a move the device no longer knows (every time it
        is asked), and DeviceError when the device cannot be asked (until the time-out)."""
        lost = self._lost.get(op_id)
        if lost is not None:
            raise lost
        done = self._results.get(op_id) or self._foreign.get(op_id)
        if done is not None:
            return done
        move = self._move
        if move is None or move.op_id != op_id:
            return self._poll_unknown(op_id)
        return self._poll_move(move)

    def started(self, op_id: str) -> bool:
        """True if this process started ``op_id`` (under way, its outcome remembered, or
        lost by the device)."""
        return (
            op_id in self._results
            or op_id in self._lost
            or (self._move is not None and self._move.op_id == op_id)
        )

    def describe(self, op_id: str) -> str:
        """What this process knows of ``op_id``, in a few words ("" if nothing)."""
        move = self._move
        if move is not None and move.op_id == op_id:
            return f"its {move.command} is under way"
        lost = self._lost.get(op_id)
        if lost is not None:
            return f"its {lost.command} was lost by the device"
        done = self._results.get(op_id)
        if done is None:
            return ""
        what = self._commands.get(op_id, "operation")
        return f"its {what} {done.state.value}" + (f" ({done.detail})" if done.detail else "")

    def record(self, op_id: str, status: OpStatus, command: str = "") -> None:
        """Remember the outcome of an operation (a setpoint ends at once); ``command`` is
        the move's, e.g. ``fetch slot 3``."""
        self._results[op_id] = status
        self._results.move_to_end(op_id)
        if command:
            self._commands[op_id] = command
        while len(self._results) > self._history:
            old, _ = self._results.popitem(last=False)
            self._commands.pop(old, None)

    def forget(self, op_id: str) -> None:
        """Drop any outcome remembered for ``op_id`` (it is started anew)."""
        self._results.pop(op_id, None)
        self._commands.pop(op_id, None)
        self._lost.pop(op_id, None)
        self._foreign.pop(op_id, None)

    def _poll_move(self, move: _Move) -> OpStatus:
        now = self.clock.monotonic()
        first: IncubatorStatus | None = None
        err: DeviceError
        try:
            st = first = self.link.read_status()
            if st.error:
                # The driver reads the error register / DM200, clears it and raises.
                st = self.link.clear_error()
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
            if self.link.initializing():
                raise self._lose(
                    move, "the device is initialising, so it was restarted and lost the move"
                )
            if now - move.started > self.move_timeout_s:
                err = DeviceTimeout(
                    self.name, move.command, f"still busy {now - move.started:g} s after the start"
                )
                return self._finish(move, OpStatus(OpState.FAILED, err.detail, err))
            return OpStatus(OpState.RUNNING, f"{move.command} under way")
        return self._finish(move, self._outcome(move, st))

    def _outcome(self, move: _Move, st: IncubatorStatus) -> OpStatus:
        """A move ended without a device error: the transfer station sensor must agree, or
        the device lost the move (it was power-cycled, say) and raises OperationLost."""
        if move.kind in GATE_KINDS:
            return self._gate_outcome(move, st)
        occupied = st.transfer_station_occupied
        result = {"slot": move.slot, "transfer_station_occupied": occupied}
        if move.kind == "fetch":
            if occupied is False:
                raise self._lose(
                    move, "the device is idle with no error but the transfer station is empty"
                )
            return OpStatus(
                OpState.SUCCEEDED,
                f"plate from slot {move.slot} is on the transfer station",
                result=result,
            )
        if occupied is True:
            raise self._lose(
                move, "the device is idle with no error but a plate is on the transfer station"
            )
        return OpStatus(OpState.SUCCEEDED, f"plate stored in slot {move.slot}", result=result)

    def _gate_outcome(self, move: _Move, st: IncubatorStatus) -> OpStatus:
        """A gate operation ended without a device error: the gate sensor (where the device
        has one) must show the gate as asked."""
        want = move.kind == "gate-open"
        result = {"gate_open": st.gate_open}
        if st.gate_open is not None and st.gate_open != want:
            err = DeviceFault(
                self.name,
                move.command,
                f"the device is idle with no error but its sensor shows the gate "
                f"{'closed' if want else 'open'}",
            )
            return OpStatus(OpState.FAILED, err.detail, err, result=result)
        return OpStatus(
            OpState.SUCCEEDED, f"the gate is {'open' if want else 'closed'}", result=result
        )

    def _lose(self, move: _Move, why: str) -> OperationLost:
        """The device no longer knows ``move``: end it, and answer every later poll of it
        with the same OperationLost."""
        err = OperationLost(
            self.name,
            move.command,
            f"{why}: the device no longer knows this {move.kind}, and whether the plate moved "
            "cannot be told from it; check the plate",
        )
        self._move = None
        self._lost[move.op_id] = err
        while len(self._lost) > self._history:
            self._lost.popitem(last=False)
        log.warning("%s: %s for %s lost: %s", self.name, move.command, move.job_key, why)
        return err

    def _initialize(self, command: str, exc: NotInitialized, st: IncubatorStatus) -> DeviceError:
        """The device refused a move as not initialised (nothing moved): start its
        initialisation if that is allowed and safe; the error to raise from the start."""
        if not self.link.initialize:
            return DeviceFault(
                self.name,
                command,
                f"{exc.detail}; labctl does not initialise it (initialize: false): initialise "
                "it at the device, then retry",
                device_code=exc.device_code,
            )
        if st.handler_occupied:
            return DeviceNeedsOperator(
                self.name,
                command,
                f"{exc.detail}, and a plate is on its handler: take it off, then retry",
                device_code=exc.device_code,
            )
        self.link.start_initialize()
        log.warning("%s: %s refused (%s): initialising it", self.name, command, exc.detail)
        return DeviceInitializing(
            self.name,
            command,
            f"{exc.detail}, so nothing moved; its initialisation has started: start again "
            "when it is done",
            device_code=exc.device_code,
        )

    def _poll_unknown(self, op_id: str) -> OpStatus:
        """An op id this process did not start (the engine restarted): ask the device."""
        st = self.link.read_status()
        note, code = "", None
        if st.busy and not st.error:
            if not self.link.initializing():
                return OpStatus(
                    OpState.RUNNING,
                    "the device is busy with an operation started before the restart",
                )
            note = " (the device is initialising now)"
        if st.error:
            try:
                self.link.clear_error()
            except DeviceError as exc:
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
        try:
            self.link.clear_error()
        except DeviceError as exc:
            raise DeviceFault(
                self.name,
                command,
                f"an error from an earlier operation was latched ({exc.detail}); it is cleared "
                "now: check the device and the plate, then retry",
                device_code=exc.device_code,
            ) from exc

    def _finish(self, move: _Move, status: OpStatus) -> OpStatus:
        self._move = None
        self.record(move.op_id, status, move.command)
        log.info("%s: %s for %s: %s", self.name, move.command, move.job_key, status.state.value)
        return status
