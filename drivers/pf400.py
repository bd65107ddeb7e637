"""Brooks PreciseFlex PF400 (and PF3400) as labctl's :class:`~labctl.devices.PlateMover`.

The arm is driven over its TCP Command Server (shared DEVICES.md 11; the wire is
drivers/pf400_tcs.py): motion commands on ``port`` (10100), queries on ``status_port``
(10000) while the arm moves. Stations are positions taught on the arm; the workcell file
names them (``inc-1/transfer: 1``) and labctl never computes coordinates.

Lines sent, exactly (replies are ``<code> <data>``; code 0 is success):

============================  =====================================  =========================
line                          reply data                             when
============================  =====================================  =========================
``mode 0``                                                           each new connection
``selectRobot 1``                                                    new status connection
``wherej``                    joints; the 5th is the gripper (mm)    before each move
``hp 1 20``                                                          session: power on, <= 20 s
``attach 1``                                                         session: take control
``pd 2800``                   ``1`` homed, ``0`` not (DataID 2800)   session
``home``                                                             session, if not homed
``wherec``                    ``x y z yaw pitch roll config``        session end: never assume
``GraspData 85.5 50 10``                                             each move: mm, %, N
``PickPlate 1 0 0``           ``-1`` gripped, ``0`` no plate felt    each move
``PlacePlate 3 0 0``                                                 each move
``waitForEom``                                                       each move: arm stopped
``sysState``                  15 hard e-stop, 3..7 power off         :meth:`alarms`
============================  =====================================  =========================

A session (``hp``, ``attach``, ``pd 2800``, ``home``, ``wherec``) is set up on the first
move and again after a reconnection, a power or e-stop error, or a move that did not
succeed: where the arm is is never assumed. ``start_move`` checks, then returns
at once; a worker thread carries the move out on the motion connection and ``poll`` reads
its progress (it never waits for the arm). Rules, each because a plate is weeks of work:

- Idempotent per job key: a move this process runs or ran to success is answered with its
  op id and nothing is sent. A failed or lost one is started anew (the operator chose
  retry), after the checks below.
- Where the plate is, as far as the arm can tell: a gripper that reads as holding a plate
  refuses the move (DeviceNeedsOperator); a plate this arm itself put on the destination
  refuses it with PlaceConflict (said once, then the arm's own sensing decides); a pick
  from an empty station (``PickPlate`` answers ``0``: nothing carried) ends the move with
  PlaceConflict, as the plate may already be where it should go.
- Nothing physical is repeated. A pick refused as "not attached" or "not homed" (the arm
  did nothing) re-establishes the session once and is sent once more; anything else ends
  the move. A failure after the pick leaves the plate in the gripper: the move FAILS with
  a DeviceNeedsOperator (DeviceFault after a collision) saying so and what to do, and no
  move starts until the gripper reads empty or the operator answered (:meth:`attended`).
- A lost connection or no reply during a move: its outcome is unknown, so ``poll`` raises
  OperationLost and a person decides. An op id this process does not know (after a
  restart): ``poll`` raises OperationLost and ``find_op`` NotKnown, each with what the arm
  shows (position, gripper).

Assumed, not yet seen on a real arm (the sources are PyLabRobot's precise_flex drivers and
Argonne's pf400_module): ``pd 2800`` answers the homed state (an arm that cannot say is
not homed now; a pick it refuses as not homed homes it); ``wherej``'s 5th value is the
gripper opening in mm, at the plate's width (within ``Grasp.tolerance_mm``) only while a
plate is held; ``sysState`` 15 is a hard e-stop and 3..7 power off.

Thread-safe: one lock guards the state; the worker holds it only to record progress.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from labctl.clock import Clock, Work
from labctl.devices import DeviceAlarm, NotKnown, OpState, OpStatus
from labctl.errors import (
    DeviceBusy,
    DeviceCommunicationError,
    DeviceError,
    DeviceFault,
    DeviceNeedsOperator,
    OperationLost,
    PlaceConflict,
)

from .pf400_tcs import (
    COLLISION,
    LINK_ERRORS,
    NOT_HOMED,
    REFUSALS,
    ArmNotReady,
    ArmSession,
    Grasp,
)

__all__ = ["Grasp", "PF400Arm"]

log = logging.getLogger(__name__)

HARD_ESTOP_STATE = 15  # sysState (DataID 234): power off, hard e-stop engaged
POWER_OFF_STATES = frozenset({3, 4, 5, 6, 7})  # powering off, off after a fault, off waiting


@dataclass
class _Move:
    """One move this process started."""

    op_id: str
    job_key: str
    plate: str
    source: str
    destination: str
    a: int  # source station number
    b: int  # destination station number
    phase: str = "grasp"  # grasp (nothing gripped yet), pick, place, settle
    status: OpStatus | None = None  # set when it ended
    lost: OperationLost | None = None  # set when its outcome is unknown

    @property
    def under_way(self) -> bool:
        return self.status is None and self.lost is None

    def says(self) -> str:
        what = (
            f"{self.plate} from {self.source} (station {self.a}) to {self.destination} "
            f"(station {self.b})"
        )
        if self.lost is not None:
            return f"the move of {what}: outcome unknown"
        if self.status is not None:
            return f"the move of {what}: {self.status.state.value}"
        return f"moving {what}: {self.phase}"


@dataclass(frozen=True)
class _Held:
    """A plate that is, or may be, in the gripper because a move stopped after its pick."""

    plate: str
    job_key: str
    source: str
    destination: str
    sure: bool

    def says(self) -> str:
        return (
            f"plate {self.plate} {'is' if self.sure else 'may be'} in the gripper (picked "
            f"from {self.source} for {self.job_key}, not placed on {self.destination})"
        )


class _Lost(Exception):
    """The worker's way out when a move's outcome became unknown."""

    def __init__(self, error: OperationLost) -> None:
        super().__init__(str(error))
        self.error = error


class PF400Arm:
    """One PF400 reached at ``host``:``port`` (motion) and, if given, ``status_port``.

    ``stations`` maps the workcell's station names to the numbers taught on the arm.
    ``grasp`` is how plates are gripped; ``robot`` the robot number (1). Timeouts in
    seconds: ``power_timeout_s`` the arm's own wait for power (``hp 1 N``),
    ``reply_timeout_s`` a query's reply, ``motion_timeout_s`` a motion command's reply
    (picks, places, ``waitForEom``, ``home``), ``connect_timeout_s`` connecting.
    ``history``: how many ended moves ``poll``/``find_op`` remember. Without a status
    port, queries share the motion connection and are not asked while a move runs.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        stations: Mapping[str, int],
        clock: Clock,
        *,
        status_port: int | None = None,
        grasp: Grasp | None = None,
        robot: int = 1,
        power_timeout_s: int = 20,
        reply_timeout_s: float = 5.0,
        motion_timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        history: int = 200,
    ) -> None:
        bad = {k: v for k, v in stations.items() if type(v) is not int or v < 1}
        if bad:
            raise ValueError(f"{name}: station numbers must be whole numbers from 1: {bad}")
        self.name = name
        self.stations = dict(stations)
        self.clock = clock
        self.grasp = grasp or Grasp()
        self.history = history
        self._arm = ArmSession(
            name,
            host,
            port,
            status_port,
            clock,
            robot=robot,
            power_timeout_s=power_timeout_s,
            motion_timeout_s=motion_timeout_s,
            connect_timeout_s=connect_timeout_s,
            reply_timeout_s=reply_timeout_s,
        )
        self._lock = threading.RLock()
        self._moves: OrderedDict[str, _Move] = OrderedDict()
        self._current: _Move | None = None
        self._held: _Held | None = None
        self._vouched = False  # the operator answered for the gripper (attended)
        self._placed: dict[str, tuple[str, str]] = {}  # plate -> (station name, job key)

    # -- PlateMover ----------------------------------------------------------------------

    def start_move(self, job_key: str, plate: str, source: str, destination: str) -> str:
        """Check, then start moving ``plate`` from station ``source`` to ``destination``
        (workcell names); returns the op id at once (see the module docstring).

        Raises DeviceFault for a station the workcell does not map, DeviceBusy while
        another move runs, PlaceConflict when this arm already put the plate there,
        DeviceNeedsOperator when the gripper holds (or may hold) a plate, and the link's
        errors when the arm cannot be reached. Power that cannot be enabled fails the
        move (nothing picked).
        """
        op_id = f"{self.name}:{job_key}"
        command = f"move {plate} {source} -> {destination}"
        a, b = self._station(source, command), self._station(destination, command)
        with self._lock:
            known = self._moves.get(op_id)
            if known is not None and (known.under_way or _succeeded(known)):
                return op_id  # under way or done: never again
            if self._current is not None:
                cur = self._current
                raise DeviceBusy(self.name, command, f"busy {cur.says()} for {cur.job_key}")
            put = self._placed.get(plate)
            if put is not None and put[0] == destination:
                del self._placed[plate]  # said once; then the arm's own sensing decides
                raise PlaceConflict(
                    self.name,
                    command,
                    f"{plate} is already on {destination}: this arm put it there for {put[1]} "
                    "and has not moved it since; nothing was moved",
                )
            self._check_gripper(command)
            # The session (power, attach, home) is set up by the worker: homing takes
            # up to motion_timeout_s and the caller (the engine's loop) must not wait.
            m = _Move(op_id, job_key, plate, source, destination, a, b)
            self._moves.pop(op_id, None)
            self._moves[op_id] = m
            self._current = m
            # The pick takes the plate from wherever this arm last put it: that memory no
            # longer says where it is (a move whose outcome was lost never updated it).
            self._placed.pop(plate, None)
            _forget_old(self._moves, self.history)
            # A virtual clock waits for the worker's lines (labctl.clock.Work); from here, so
            # no jump falls between this call and the worker's first line.
            work = Work(self.clock)
            worker = threading.Thread(target=self._run, args=(m, work), name=op_id, daemon=True)
            worker.start()
        log.info("%s: started %s for %s", self.name, command, job_key)
        return op_id

    def poll(self, op_id: str) -> OpStatus:
        """The move's state, from the worker's record (the arm is not asked). Raises
        OperationLost when its outcome is unknown (the link failed mid-move) or the op id
        is not one this process started."""
        with self._lock:
            m = self._moves.get(op_id)
            if m is not None:
                if m.lost is not None:
                    e = m.lost
                    raise OperationLost(e.device, e.command, e.detail, device_code=e.device_code)
                if m.status is not None:
                    return m.status
                return OpStatus(OpState.RUNNING, m.says())
            shows = self._shows()
        raise OperationLost(
            self.name,
            f"poll {op_id}",
            f"labctl has no record of {op_id} (it restarted?), so whether that move "
            f"happened cannot be told; the arm shows: {shows}. Look where the plate is",
        )

    def find_op(self, job_key: str) -> str | None:
        """The op id if this process started ``job_key``; otherwise raises NotKnown with
        what the arm shows (it keeps no record of moves)."""
        op_id = f"{self.name}:{job_key}"
        with self._lock:
            if op_id in self._moves:
                return op_id
            shows = self._shows()
        raise NotKnown(
            f"{self.name} keeps no record of moves, so it cannot tell whether {job_key} "
            f"happened; the arm shows: {shows}. Look where the plate is"
        )

    def alarms(self) -> list[DeviceAlarm]:
        """``estop`` (hard e-stop engaged), ``power-off`` (power dropped after labctl had
        enabled it; not blocking: the next move enables it again), ``offline`` (no
        answer). One ``sysState`` query; none without a status port while a move runs."""
        with self._lock:
            try:
                data = self._arm.ask("sysState", motion_free=self._current is None)
            except LINK_ERRORS as exc:
                return [DeviceAlarm(self.name, "offline", f"{self.name} does not answer: {exc}")]
            except DeviceError as exc:
                log.warning("%s: sysState refused: %s", self.name, exc)
                return []
            return _state_alarms(self.name, self._arm, data)

    def report(self, job_key: str) -> str:
        """A few words on the job's move, the gripper and the arm's position; never raises."""
        with self._lock:
            m = self._moves.get(f"{self.name}:{job_key}")
            parts = [m.says() if m is not None else f"no move of {job_key} since labctl started"]
            if self._held is not None:
                parts.append(self._held.says())
            try:
                parts.append(f"the arm shows: {self._shows()}")
            except Exception as exc:  # noqa: BLE001 - a report never raises
                parts.append(f"the arm could not be asked ({exc})")
        return "; ".join(parts)

    def attended(self, job_key: str, detail: str) -> None:
        """The operator dealt with what a DeviceNeedsOperator asked (took the plate out of
        the gripper, released the e-stop): the next move starts without the gripper
        refusal, after the session is set up again."""
        with self._lock:
            self._held = None
            self._vouched = True
            self._arm.ready = False
        log.info("%s: operator attended %s: %s", self.name, job_key, detail)

    def close(self) -> None:
        """Close both connections (a move under way then ends with its outcome unknown)."""
        with self._lock:
            self._arm.close()

    # -- checks --------------------------------------------------------------------------

    def _station(self, name: str, command: str) -> int:
        try:
            return self.stations[name]
        except KeyError:
            known = ", ".join(sorted(self.stations)) or "none"
            raise DeviceFault(
                self.name, command, f"no station '{name}' in the workcell (known: {known})"
            ) from None

    def _check_gripper(self, command: str) -> None:
        """Refuse while the gripper holds, or may hold, a plate (see the module docstring)."""
        opening = self._arm.gripper(motion_free=True)
        says = self.grasp.reads(opening)
        held, vouched = self._held, self._vouched
        self._vouched = False
        if vouched:
            self._held = None
            return
        if says == "holding":
            what = held.says() if held is not None else "the gripper holds a plate"
            raise DeviceNeedsOperator(
                self.name,
                command,
                f"{what} ({self.grasp.describe(opening)}): take it out and put it where it "
                "belongs, then retry",
            )
        if held is None:
            return
        if says in ("open", "closed"):
            log.info("%s: %s: %s no more", self.name, self.grasp.describe(opening), held.says())
            self._held = None
            return
        raise DeviceNeedsOperator(
            self.name,
            command,
            f"{held.says()}; the arm cannot tell ({self.grasp.describe(opening)}): take it "
            "out and put it where it belongs, then retry",
        )

    def _shows(self) -> str:
        """What the arm shows now (position, gripper), or why it could not be asked."""
        free = self._current is None
        try:
            position = self._arm.ask("wherec", motion_free=free)
            opening = self._arm.gripper(motion_free=free)
        except DeviceError as exc:
            return f"it could not be asked ({exc.detail})"
        if position is None:
            return f"it is busy {self._current.says() if self._current else 'moving'}"
        return (
            f"position {position} (x y z mm, yaw pitch roll deg, config); "
            f"{self.grasp.describe(opening)}"
        )

    # -- the worker ----------------------------------------------------------------------

    def _run(self, m: _Move, work: Work) -> None:
        """Carry ``m`` out and record how it ended (the worker thread's body); the line
        work is then over for the clock."""
        status: OpStatus | None = None
        lost: OperationLost | None = None
        try:
            status = self._carry(m)
        except _Lost as exc:
            lost = exc.error
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the move RUNNING
            log.exception("%s: move %s failed unexpectedly", self.name, m.op_id)
            err = DeviceFault(self.name, f"move {m.plate}", f"internal error: {exc!r}")
            if m.phase == "grasp":
                status = OpStatus(OpState.FAILED, err.detail, err)
            else:
                self._hold(m, sure=False)
                lost = self._lost(m, err, "the plate may be anywhere on the way")
        finally:
            work.release()
        with self._lock:
            if status is None or status.state is not OpState.SUCCEEDED:
                self._arm.ready = False  # never assume: the next move sets the session up again
            m.status, m.lost = status, lost
            if self._current is m:
                self._current = None
        outcome = lost.detail if lost is not None else status.state.value if status else "?"
        log.info("%s: %s: %s", self.name, m.op_id, outcome)

    def _carry(self, m: _Move) -> OpStatus:
        """GraspData, PickPlate, PlacePlate, waitForEom on the motion connection."""
        arm, g = self._arm, self.grasp
        renewed = False
        while True:
            m.phase = "grasp"  # nothing is gripped until PickPlate has been sent
            try:
                arm.ensure()  # nothing to do unless the connection was renewed since start
                arm.send(arm.motion, g.data_line())
                m.phase = "pick"
                got = arm.move(g.plate_line("PickPlate", m.a)).strip()
                break
            except ArmNotReady as exc:
                if renewed:
                    return self._failed(m, exc, "nothing was picked")
                # Refused before anything moved: set the session up again, ask once more.
                renewed = True
                log.warning("%s: %s; setting the session up again", self.name, exc)
                try:
                    arm.establish(force_home=_code(exc) in NOT_HOMED)
                except DeviceError as again:
                    return self._failed(m, again, "nothing was picked")
            except LINK_ERRORS as exc:
                if m.phase == "grasp":
                    return self._failed(m, exc, "nothing was picked")
                self._hold(m, sure=False)
                where = f"it may be in the gripper or still on {m.source}"
                raise _Lost(self._lost(m, exc, where)) from exc
            except DeviceError as exc:
                if m.phase == "grasp" or _code(exc) in REFUSALS:
                    return self._failed(m, exc, "nothing was picked")
                self._hold(m, sure=False)
                return self._failed(m, _person_needed(exc), self._still_held(m))
        if got == "0":
            return self._nothing_to_pick(m)
        if got != "-1":
            self._hold(m, sure=False)
            err = DeviceCommunicationError(
                self.name, g.plate_line("PickPlate", m.a), f"unexpected reply {got!r} (-1 or 0)"
            )
            return self._failed(m, _person_needed(err), self._still_held(m))
        self._hold(m, sure=True)
        slipped = self._slipped(m)
        if slipped is not None:
            return slipped
        for phase, line in (("place", g.plate_line("PlacePlate", m.b)), ("settle", "waitForEom")):
            m.phase = phase
            try:
                arm.move(line)
            except LINK_ERRORS as exc:
                self._hold(m, sure=False)
                where = f"it is in the gripper or on {m.destination}"
                raise _Lost(self._lost(m, exc, where)) from exc
            except DeviceError as exc:
                # PlacePlate's reply comes once the motion is queued: a failure seen by
                # waitForEom may have come before or after the release.
                self._hold(m, sure=phase == "place")
                return self._failed(m, _person_needed(exc), self._still_held(m))
        with self._lock:
            self._held = None
            self._placed[m.plate] = (m.destination, m.job_key)
        result = {"plate": m.plate, "source": m.source, "destination": m.destination}
        return OpStatus(OpState.SUCCEEDED, f"{m.plate} moved to {m.destination}", result=result)

    def _slipped(self, m: _Move) -> OpStatus | None:
        """After the pick's retract, the fingers must still hold the plate: a plate that
        slipped out is never 'placed' (the robot would then feed an empty deck slot).
        None: it is held; else the failed move, asking a person to find the plate."""
        arm = self._arm
        m.phase = "check"
        try:
            arm.move("waitForEom")
            opening = arm.gripper(motion_free=True)
        except LINK_ERRORS as exc:
            self._hold(m, sure=False)
            raise _Lost(self._lost(m, exc, f"it may be in the gripper or on {m.source}")) from exc
        except DeviceError as exc:
            return self._failed(m, _person_needed(exc), self._still_held(m))
        says = self.grasp.reads(opening)
        if says == "holding" or says == "unknown":
            return None  # an arm that cannot say is not taken to have dropped it
        with self._lock:
            self._held = None
        err = _slip_error(self.name, m, self.grasp.describe(opening))
        return OpStatus(OpState.FAILED, err.detail, err)

    def _nothing_to_pick(self, m: _Move) -> OpStatus:
        """``PickPlate`` felt no plate: the arm retracts empty; nothing was carried."""
        note = ""
        try:
            self._arm.move("waitForEom")
        except DeviceError as exc:
            note = f" (waiting for the arm to stop then failed: {exc.detail})"
        put = self._placed.get(m.plate)
        mine = f"; this arm last put {m.plate} on {put[0]} for {put[1]}" if put else ""
        err = PlaceConflict(
            self.name,
            self.grasp.plate_line("PickPlate", m.a),
            f"no plate felt on {m.source} (station {m.a}): nothing was carried{mine}; "
            f"{m.plate} may already be on {m.destination}: look{note}",
            device_code="0",
        )
        return OpStatus(OpState.FAILED, err.detail, err, {"plate": m.plate, "picked": False})

    def _hold(self, m: _Move, *, sure: bool) -> None:
        with self._lock:
            self._held = _Held(m.plate, m.job_key, m.source, m.destination, sure)

    def _still_held(self, m: _Move) -> str:
        held = self._held.says() if self._held is not None else f"{m.plate} may be in the gripper"
        return (
            f"{held}: take it out of the gripper and put it on {m.destination} (then answer "
            f"done) or back on {m.source} (then retry); the arm picks or places nothing by "
            "itself until then"
        )

    def _failed(self, m: _Move, exc: DeviceError, what: str) -> OpStatus:
        err = _with(exc, f"moving {m.plate} from {m.source} to {m.destination}: {what}")
        return OpStatus(OpState.FAILED, err.detail, err, {"plate": m.plate, "phase": m.phase})

    def _lost(self, m: _Move, exc: DeviceError, where: str) -> OperationLost:
        return OperationLost(
            self.name,
            exc.command,
            f"{exc.detail}: the link failed during the {m.phase} of {m.plate} ({m.source} -> "
            f"{m.destination}), so whether it happened is unknown: {where}; look, then say",
            device_code=exc.device_code,
        )

    def __repr__(self) -> str:
        return f"PF400Arm({self.name!r}, {self._arm.motion!r})"


def _forget_old(moves: OrderedDict[str, _Move], history: int) -> None:
    """Keep at most ``history`` ended moves (the oldest go first)."""
    ended = [k for k, m in moves.items() if not m.under_way]
    for k in ended[: max(0, len(moves) - history)]:
        del moves[k]


def _state_alarms(name: str, arm: ArmSession, data: str | None) -> list[DeviceAlarm]:
    """The alarms a ``sysState`` reply shows (see :meth:`PF400Arm.alarms`); a state that
    drops power marks the session for setting up again."""
    try:
        state = int((data or "").split()[0])
    except (ValueError, IndexError):
        return []
    if state == HARD_ESTOP_STATE:
        arm.ready = False
        text = f"{name}: the e-stop is engaged: check the cell, then release it"
        return [DeviceAlarm(name, "estop", text)]
    if state in POWER_OFF_STATES and arm.powered:
        arm.ready = False
        text = (
            f"{name}: robot power is off (system state {state}): check the cell; "
            "labctl enables power at the next move"
        )
        return [DeviceAlarm(name, "power-off", text)]
    return []


def _slip_error(name: str, m: _Move, gripper: str) -> DeviceNeedsOperator:
    return DeviceNeedsOperator(
        name,
        "wherej",
        f"{m.plate} was gripped on {m.source} but is not in the gripper after the retract "
        f"({gripper}): it slipped out. Find it (on {m.source}, or fallen), put it back on "
        f"{m.source}, then retry",
    )


def _succeeded(m: _Move) -> bool:
    return m.status is not None and m.status.state is OpState.SUCCEEDED


def _code(exc: DeviceError) -> int | None:
    try:
        return int(exc.device_code) if exc.device_code is not None else None
    except ValueError:
        return None


def _with(exc: DeviceError, more: str) -> DeviceError:
    """The same kind of error, with ``more`` said after the arm's own words."""
    return type(exc)(exc.device, exc.command, f"{exc.detail}; {more}", device_code=exc.device_code)


def _person_needed(exc: DeviceError) -> DeviceError:
    """A failure with the plate (maybe) in the gripper: a person must act (a collision
    stays a DeviceFault, anything else becomes a DeviceNeedsOperator)."""
    if isinstance(exc, DeviceNeedsOperator) or _code(exc) in COLLISION:
        return exc
    return DeviceNeedsOperator(exc.device, exc.command, exc.detail, device_code=exc.device_code)
