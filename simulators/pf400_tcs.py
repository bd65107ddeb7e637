"""The command layer of the simulated PF400's TCP Command Server: one line in, the reply out.

:class:`Tcs` parses a command line, checks what the real arm checks, drives the
:class:`~labctl.simulators.pf400_arm.Arm` and formats the PC-mode reply ``<code> <data>``
(see :mod:`labctl.simulators.pf400` for the command table and its sources). A reply that
waits for the arm (a pick's grip, ``home``, ``waitForEom``, ``hp 1 N``) blocks the calling
thread: it re-reads the injected clock every few real milliseconds and never advances it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from labctl.clock import Clock

from .pf400_arm import (
    ERROR_TEXT,
    HARD_ESTOP,
    POWER_OFF_REQUESTED,
    Arm,
    Job,
    PF400Config,
    joint_angles,
)

__all__ = ["Hangup", "Tcs"]

_POLL_S = 0.02  # real seconds between re-reads of the clock while a reply waits

# Codes (texts in pf400_arm.ERROR_TEXT).
_CANCELLED = -214
_BAD_NUMBER = -717
_BAD_ROBOT = -1000
_NOT_ATTACHED = -1009
_NOT_HOMED = -1021
_POWER_TIMEOUT = -1025
_POWER_OFF = -1046
_UNKNOWN_DATA_ID = -1501
_PARAM_MISMATCH = -2800
_NO_PARAMETERS = -2801
_UNKNOWN_COMMAND = -2805
_NOT_THIS_THREAD = -2808
_BAD_STATION = -2851
_BAD_STATE = -2852


class Hangup(Exception):
    """The server closes the connection without replying (``exit``, or a dropped link)."""


class _Refusal(Exception):
    """The command fails with error ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


_Handler = Callable[[list[str], bool], "str | None"]


class Tcs:
    """The TCS commands over one arm. :meth:`handle` is thread-safe (the arm's lock)."""

    def __init__(self, arm: Arm) -> None:
        self.arm = arm
        self.config: PF400Config = arm.config
        self.clock: Clock = arm.clock
        self._closing = False  # set when the simulator stops: waiting replies give up
        self._drops: dict[str, int] = {}  # command (lower case) -> links still to drop
        # For a virtual clock's gate (PF400Simulator.activity): lines in hand, replies
        # waiting for virtual time (their conditions).
        self.lines_busy = 0
        # A virtual clock waiting for this arm to settle is told at once (else it polls).
        self._poke: Callable[[], None] = getattr(self.clock, "poke", lambda: None)
        self.waits: list[Callable[[datetime], bool]] = []  # ready(now) of each waiting reply
        self._commands: dict[str, _Handler] = {
            "version": lambda a, s: f"0 {self.config.version}",
            "mode": self._mode,
            "hp": self._hp,
            "attach": self._attach,
            "home": self._home,
            "sysstate": lambda a, s: f"0 {self._sys_state()}",
            "wherec": self._wherec,
            "wherej": self._wherej,
            "graspdata": self._grasp_data,
            "pickplate": self._pick_plate,
            "placeplate": self._place_plate,
            "movetosafe": self._move_to_safe,
            "waitforeom": self._wait_for_eom,
            "halt": self._halt,
            "nop": lambda a, s: "0",
            "exit": self._exit,
            # Beyond DEVICES.md 11.2, as PyLabRobot and AD-SDL's drivers use them:
            "state": lambda a, s: f"0 {self._traj_state()}",
            "pd": self._pd,
            "selectrobot": self._select_robot,
            "isfullyclosed": lambda a, s: "0 -1" if self.arm.fully_closed() else "0 0",
        }

    def handle(self, line: str, *, status: bool = False) -> str | None:
        """The reply (no terminator) to one command line (no terminator) received on the
        motion port, or on the status port if ``status``. Blocks while the reply waits for
        the arm. None: the simulator is stopping. Raises :class:`Hangup` to hang up."""
        with self.arm.lock:
            self.lines_busy += 1
            try:
                return self._dispatch(line, status)
            except _Refusal as r:
                text = ERROR_TEXT.get(r.code, "")
                return f"{r.code} {text}" if self.config.error_text and text else str(r.code)
            finally:
                self.lines_busy -= 1
                self._poke()

    def _dispatch(self, line: str, status: bool) -> str | None:
        # The TCS robot thread answers the next command with an error the motion raised
        # while no command was waiting for it, and does not run that command (RobMain).
        self._now()  # effects due by now (a collision, say) happen before the command
        if not status:
            self._raise_pending()
        words = line.split()
        handler = self._commands.get(words[0].lower() if words else "")
        if handler is None:
            raise _Refusal(_UNKNOWN_COMMAND)
        return handler(words[1:], status)

    # -- helpers -------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self.clock.now()
        self.arm.update(now)
        return now

    def _raise_pending(self) -> None:
        code, self.arm.pending = self.arm.pending, None
        if code is not None:
            raise _Refusal(code)

    def _wait(self, done: Callable[[datetime], bool], *, motion: bool) -> bool:
        """Wait (the lock released meanwhile) until ``done(now)``, or until an error is
        pending for the motion port if ``motion``. False: the simulator is stopping."""

        def ready(now: datetime) -> bool:
            return done(now) or (motion and self.arm.pending is not None)

        self.lines_busy -= 1
        self.waits.append(ready)
        self._poke()
        try:
            while True:
                now = self._now()
                if self._closing:
                    return False
                if ready(now):
                    return True
                self.arm.cond.wait(_POLL_S)
        finally:
            self.waits.remove(ready)
            self.lines_busy += 1

    def _await(self, job: Job) -> bool:
        """Wait for ``job`` to reach the moment its reply waits for; raises the error that
        stopped it. False: the simulator is stopping."""
        if not self._wait(lambda now: job.reached or job.cancelled, motion=True):
            return False
        self._raise_pending()
        if job.cancelled:
            raise _Refusal(_CANCELLED)
        return True

    def _wait_idle(self) -> bool:
        """Wait for the queued motion to end (a pending error is raised)."""
        if not self._wait(lambda now: self.arm.idle(), motion=True):
            return False
        self._raise_pending()
        return True

    @staticmethod
    def _numbers(args: list[str]) -> list[float]:
        try:
            values = [float(a) for a in args]
        except ValueError:
            raise _Refusal(_BAD_NUMBER) from None
        if not all(math.isfinite(v) for v in values):
            raise _Refusal(_BAD_NUMBER)
        return values

    def _station(self, args: list[str]) -> int:
        """The station of ``PickPlate s [hc [torque]]`` / ``PlacePlate ...``."""
        if not args:
            raise _Refusal(_NO_PARAMETERS)
        if len(args) > 3:
            raise _Refusal(_PARAM_MISMATCH)
        station = int(self._numbers(args)[0])
        if not 1 <= station <= self.config.stations:
            raise _Refusal(_BAD_STATION)
        return station

    @staticmethod
    def _motion_port(status: bool) -> None:
        # Motion belongs to the robot thread; the status thread cannot attach a robot.
        if status:
            raise _Refusal(_NOT_THIS_THREAD)

    def _ready(self, now: datetime, *, homed: bool = True) -> None:
        """Refuse motion as the arm does: power first, then attachment, then homing."""
        if not self.arm.powered(now):
            raise _Refusal(_POWER_OFF)
        if not self.arm.attached:
            raise _Refusal(_NOT_ATTACHED)
        if homed and not self.arm.homed:
            raise _Refusal(_NOT_HOMED)

    def _drop_link(self, command: str) -> None:
        if self._drops.get(command, 0) > 0:
            self._drops[command] -= 1
            raise Hangup(command)

    def _sys_state(self) -> int:
        """DataID 234: 15 hard e-stop asserted, 7 power off, 20 power on, 21 attached
        (AD-SDL pf400_constants.py; 15 from PyLabRobot's brooks/precise_flex backend, whose
        tests pin replies recorded from a real PF400: the driver's reading, found by the
        driver-simulator test)."""
        if self.arm.estop:
            return 15
        if not self.arm.powered(self._now()):
            return 7
        return 21 if self.arm.attached else 20

    def _traj_state(self) -> int:
        """Robot.TrajState: 0 power off, 1 stopped, 2 moving (AD-SDL pf400.py comments)."""
        now = self._now()
        if not self.arm.powered(now):
            return 0
        return 1 if self.arm.idle() else 2

    # -- commands ------------------------------------------------------------------------

    def _mode(self, args: list[str], status: bool) -> str:
        if not args:
            return "0 0"
        if self._numbers(args[:1])[0] != 0:
            raise _Refusal(-204)  # Telnet mode is not simulated
        return "0"

    def _hp(self, args: list[str], status: bool) -> str | None:
        now = self._now()
        if not args:
            return f"0 {int(self.arm.powered(now))}"
        values = self._numbers(args[:2])
        if values[0] == 0:
            self.arm.power_on_at = None
            self.arm.stop(now, "power_off", POWER_OFF_REQUESTED)
            return "0"
        if self.arm.estop:
            raise _Refusal(HARD_ESTOP)  # ASSUMPTION: refused at once while the loop is open
        if self.arm.power_on_at is None:
            self.arm.power_on_at = now + timedelta(seconds=self.config.power_on_s)
        limit = values[1] if len(values) > 1 else 0.0
        if limit == 0:
            return "0"  # do not wait for the power to come on
        deadline = now + timedelta(seconds=limit) if limit > 0 else None

        def done(t: datetime) -> bool:
            late = deadline is not None and t >= deadline
            return self.arm.powered(t) or self.arm.estop or late

        if not self._wait(done, motion=False):
            return None
        if self.arm.estop:
            raise _Refusal(HARD_ESTOP)
        if not self.arm.powered(self._now()):
            raise _Refusal(_POWER_TIMEOUT)
        return "0"

    def _attach(self, args: list[str], status: bool) -> str | None:
        if not args:
            return f"0 {-1 if self.arm.attached else 0}"
        if self._numbers(args[:1])[0] != 0:
            self._motion_port(status)
            if not self.arm.powered(self._now()):
                raise _Refusal(_POWER_OFF)
            self.arm.attached = True
        elif not status:
            # Releasing waits for the robot to stop (GPL's Robot.Attached does).
            if not self._wait_idle():
                return None
            self.arm.attached = False
        return "0"

    def _home(self, args: list[str], status: bool) -> str | None:
        self._motion_port(status)
        self._ready(self._now(), homed=False)
        if not self._wait_idle():
            return None
        job = self.arm.home(self._now())
        return "0" if self._await(job) else None

    def _wherec(self, args: list[str], status: bool) -> str:
        pose, _ = self.arm.pose_at(self._now())
        return "0 " + " ".join(f"{v:.3f}" for v in pose) + " 1"  # config 1: righty

    def _wherej(self, args: list[str], status: bool) -> str:
        pose, width = self.arm.pose_at(self._now())
        return "0 " + " ".join(f"{v:.3f}" for v in joint_angles(pose, width))

    def _grasp_data(self, args: list[str], status: bool) -> str:
        if not args:
            return "0 " + " ".join(f"{v:.3f}" for v in self.arm.grasp)
        if len(args) != 3:
            raise _Refusal(_PARAM_MISMATCH)
        self._motion_port(status)
        width, speed, force = self._numbers(args)
        self.arm.grasp = (width, speed, force)
        return "0"

    def _pick_plate(self, args: list[str], status: bool) -> str | None:
        self._motion_port(status)
        station = self._station(args)
        self._ready(self._now())
        # The plug-in grips only once the arm is still, and must know its fingers are free.
        if not self._wait_idle():
            return None
        self._ready(self._now())
        if self.arm.gripper is not None:
            raise _Refusal(_BAD_STATE)
        job = self.arm.pick(station, self._now())
        self._drop_link("pickplate")
        return f"0 {job.result}" if self._await(job) else None

    def _place_plate(self, args: list[str], status: bool) -> str:
        self._motion_port(status)
        station = self._station(args)
        self._ready(self._now())
        self.arm.place(station, self._now())
        self._drop_link("placeplate")
        return "0"

    def _move_to_safe(self, args: list[str], status: bool) -> str:
        self._motion_port(status)
        self._ready(self._now())
        self.arm.to_safe(self._now())
        return "0"

    def _wait_for_eom(self, args: list[str], status: bool) -> str | None:
        self._motion_port(status)
        return "0" if self._wait_idle() else None

    def _halt(self, args: list[str], status: bool) -> str:
        self.arm.stop(self._now(), "halted", None)
        return "0"

    def _exit(self, args: list[str], status: bool) -> str:
        raise Hangup("exit")

    def _pd(self, args: list[str], status: bool) -> str:
        if not args:
            raise _Refusal(_NO_PARAMETERS)
        data_id = self._numbers(args[:1])[0]
        if data_id == 2800:  # robot homed (AD-SDL pf400.py check_homed)
            return f"0 {int(self.arm.homed)}"
        if data_id == 234:
            return f"0 {self._sys_state()}"
        raise _Refusal(_UNKNOWN_DATA_ID)

    def _select_robot(self, args: list[str], status: bool) -> str:
        if not args:
            return "0 1"
        if self._numbers(args[:1])[0] != 1:
            raise _Refusal(_BAD_ROBOT)
        return "0"
