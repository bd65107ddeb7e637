"""Simulated Brooks PreciseFlex PF400 arm on the TCP Command Server (DEVICES.md section 11).

:class:`PF400Simulator` serves two TCP ports on 127.0.0.1: the motion port (the robot
thread, default 10100) and the status port (default 10000), which answers queries while
the motion port waits for the arm. Commands end with LF (a CR before it is dropped);
replies are ``<code> <data>`` + CRLF in PC mode (the default, as the TCS starts): 0 is
success, a negative code an error followed by its text (``-1046 Power not enabled``;
``PF400Config(error_text=False)`` sends the bare code, as the TCS source does in PC mode).
Each port serves one client at a time (the TCS listener stops listening while it serves
one; here later clients wait in the backlog), one command at a time. Command names are
case-insensitive (GPL resolves ``Cmd_<name>`` case-insensitively).

Sources: PyLabRobot ``pylabrobot/arms/precise_flex/precise_flex_backend.py`` and
``error_codes.py``; the TCS's own GPL source in pharmbio/robotlab ``Tcp_cmd_server/``
(``Main.gpl``: framing, one client per port, the pending-error rule; ``Cmd.gpl``: the
reply of each standard command; ``Class_command.gpl``: parsing, unknown commands);
AD-SDL pf400_module ``src/pf400_interface/pf400.py`` and ``pf400_constants.py``
(sysState values, the TCS's -28xx codes, ``pd 2800``).

=======================  =============================================================
``version``              ``0 <version>`` (:attr:`PF400Config.version`, made up)
``mode [0]``             ``0 0`` / ``0``; ``mode 1`` (Telnet) is not simulated: -204
``hp [0|1 [wait_s]]``    ``0 1``/``0 0``; ``hp 1`` asks for power (on after
                         ``power_on_s``) and replies at once, ``hp 1 N`` waits up to N s
                         (-1: forever) else -1025; e-stop asserted: -1028; ``hp 0`` stops
                         any motion (-1600 pending for the motion port)
``attach [0|1]``         ``0 -1`` attached / ``0 0``; ``attach 1`` needs power (-1046);
                         on the status port -2808
``home``                 needs power and attach; replies when homed (``home_s``)
``sysState``             ``0 7`` power off, ``0 20`` power on, ``0 21`` attached
``wherec``               ``0 x y z yaw pitch roll 1`` (mm, deg, config 1 = righty), mid-move
                         too
``wherej``               ``0 z shoulder elbow wrist gripper`` (mm, deg x3, mm)
``GraspData [w s f]``    sets plate width mm, finger speed %, force N for the next pick;
                         no arguments: ``0 w s f``
``PickPlate s [hc t]``   waits for the arm to stop, travels, descends, grips: replies
                         ``0 -1`` (plate felt) or ``0 0`` (none); the retract stays queued
``PlacePlate s [hc t]``  replies ``0`` when queued; travel, descend, release, retract
``movetosafe``           ``0`` when queued; travel to the safe pose
``waitForEom``           ``0`` when the queued motion has ended, or the error that stopped it
``halt``                 stops now (power stays on); ``0``; a pick waiting for its grip -214
``nop`` / ``exit``       ``0`` / the server hangs up without a reply
=======================  =============================================================

Also answered (their drivers use them): ``state`` (0 power off, 1 stopped, 2 moving),
``pd 2800`` (homed 1/0), ``pd 234``, ``selectRobot [1]``, ``IsFullyClosed`` (``0 -1``
when the fingers closed on nothing). Anything else: ``-2805 Unknown command``.

Refusals, in this order (after a pending error, below): a command the status port may not run (motion, ``attach 1``,
``GraspData`` with values): -2808; missing / extra arguments -2801 / -2800; a value that is
not a number -717; station outside 1..N -2851; power off -1046; not attached -1009; not
homed -1021; ``PickPlate`` with a plate in the gripper -2852. A pick from an empty
station replies ``0 0``; a place onto an occupied station stops half-way down, plate
still gripped, with the collision error (``collision_code``, default -3122 Soft envelope
error) as the reply of the next motion-port command (``waitForEom``), which is then not
run: the TCS robot thread answers any command with an error the motion raised while no
command waited for it.

ASSUMPTIONS (not in the sources read): the version text; error texts without the
asterisks AD-SDL shows; ``PlacePlate`` queued without waiting (the release is a queued
gripper-axis move) while ``PickPlate`` must see its grip; the collision code and that
power stays on after it; that a halted pick replies -214; that ``hp 1`` is refused with
-1028 while the e-stop is asserted; that an e-stop leaves the arm attached and homed;
sysState 7 for power off by e-stop too; that the status port has robot 1 selected (the
real status thread starts with robot 0 until ``selectRobot 1``); the station poses,
the link lengths and the finger widths (``pf400_arm``).

Faults (methods): :meth:`~PF400Simulator.estop` / :meth:`~PF400Simulator.reset_estop`,
:meth:`~PF400Simulator.drop_connection` (the server hangs up on the motion port during a
``PickPlate`` / ``PlacePlate`` whose motion has begun; the arm completes it),
:meth:`~PF400Simulator.slip_next_pick` (the plate slips out during the retract after a
pick replied ``-1``), and :meth:`~PF400Simulator.put_plate` (a plate nobody told the
controller about: the next place there collides).

Run as a process (real time, or paced with ``--pace`` / a shared ``--epoch``)::

    python -m labctl.simulators.pf400 --port 10100 --status-port 10000 --stations 5 \\
        --state DIR --plate 1=P1 --plate 2=P2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from labctl.clock import Activity, Clock, Epoch, PacedClock, RealClock
from labctl.simulators.handover import Spot

from .pf400_arm import HARD_ESTOP, Arm, PF400Config
from .pf400_tcs import Hangup, Tcs

__all__ = ["PF400Config", "PF400Simulator", "main"]

log = logging.getLogger(__name__)

_TICK_S = 0.05  # real seconds between housekeeping updates (state file, action log)


class PF400Simulator(Tcs):
    """A PF400 on its TCP Command Server, driven by ``clock``; see the module docstring.

    ``plates``: the initial station occupancy, station -> plate id (or station numbers,
    plates then named ``plate-N``), used when ``state_dir`` holds no saved state.
    ``state_dir``: where the station map and the gripper are kept (``pf400_state.json``)
    and the action log is appended (``pf400_actions.jsonl``, unless ``action_log``); a
    simulator built on a folder with saved state starts as after a power cycle. The
    action log has one JSON object per physical action: ``time`` (ISO 8601, clock time),
    ``device``, ``command``, ``station``, ``plate``, ``result`` (``gripped``,
    ``no_plate``, ``slipped``, ``placed``, ``released_empty``, ``collision``, ``moved``,
    ``homed``, ``halted``, ``estop``, ``power_off``; ``put`` / ``taken`` for ``hand``).
    ``linked``: stations that are places another simulator owns (station -> :class:`Spot`,
    e.g. a :class:`~labctl.simulators.handover.TransferSpot` of the incubator simulator).
    Thread-safe.
    """

    def __init__(
        self,
        clock: Clock,
        config: PF400Config | None = None,
        *,
        name: str = "pf400",
        plates: Mapping[int, str] | Iterable[int] = (),
        state_dir: str | Path | None = None,
        action_log: str | Path | None = None,
        linked: Mapping[int, Spot] | None = None,
    ) -> None:
        labels = plates if isinstance(plates, Mapping) else {n: f"plate-{n}" for n in plates}
        arm = Arm(
            clock,
            config or PF400Config(),
            name=name,
            plates=labels,
            state_dir=state_dir,
            action_log=action_log,
            linked=linked,
        )
        super().__init__(arm)
        self._servers: list[_PortServer] = []
        self._tick_stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- serving -------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0, status_port: int = 0) -> PF400Simulator:
        """Listen on ``port`` (motion) and ``status_port`` (0: any free port); returns self."""
        if self._servers:
            return self
        self._closing = False
        motion = _PortServer(self, host, port, status=False)
        try:
            status = _PortServer(self, host, status_port, status=True)
        except OSError:
            motion.stop()
            raise
        self._servers = [motion.start(), status.start()]
        self._tick_stop.clear()
        self._ticker = threading.Thread(target=self._tick_loop, name="pf400-tick")
        self._ticker.start()
        return self

    def stop(self) -> None:
        """Hang up, stop listening, join every thread; the state is saved (idempotent)."""
        with self.arm.lock:
            self._closing = True
            self.arm.cond.notify_all()
        for server in self._servers:
            server.stop()
        self._servers = []
        self._tick_stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        self.tick()

    def __enter__(self) -> PF400Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The motion port (after :meth:`start`)."""
        return self._serving()[0].port

    @property
    def status_port(self) -> int:
        """The status port (after :meth:`start`)."""
        return self._serving()[1].port

    def _serving(self) -> list[_PortServer]:
        if not self._servers:
            raise RuntimeError("the PF400 simulator is not started")
        return self._servers

    def tick(self) -> None:
        """Bring the arm up to the clock's now (effects, the state file, the action log)."""
        with self.arm.lock:
            self.arm.update(self.clock.now())

    def _tick_loop(self) -> None:
        # Effects land in the state file and the log even when nobody asks the arm.
        while not self._tick_stop.wait(_TICK_S):
            self.tick()

    # -- faults --------------------------------------------------------------------------

    def estop(self) -> None:
        """Press the e-stop: power drops now and any motion stops where it is (a waiting
        or the next motion-port command gets -1028, later motion -1046)."""
        with self.arm.lock:
            now = self.clock.now()
            self.arm.estop = True
            self.arm.power_on_at = None
            self.arm.stop(now, "estop", HARD_ESTOP)
            self.arm.cond.notify_all()

    def reset_estop(self) -> None:
        """Release the e-stop; power stays off until ``hp 1``."""
        with self.arm.lock:
            self.arm.estop = False

    def drop_connection(self, command: str = "PickPlate", count: int = 1) -> None:
        """The next ``count`` ``command`` (``PickPlate`` or ``PlacePlate``) on the motion
        port start their motion, then the server hangs up without a reply."""
        if command.lower() not in ("pickplate", "placeplate"):
            raise ValueError(f"only PickPlate and PlacePlate lose their link, not {command!r}")
        with self.arm.lock:
            key = command.lower()
            self._drops[key] = self._drops.get(key, 0) + count

    def slip_next_pick(self, *, lost: bool = False) -> None:
        """The next pick that grips a plate (and replies ``-1``) lets it slip out during
        the retract: back onto its station, or off the deck if ``lost``."""
        with self.arm.lock:
            self.arm.slip_next = "lost" if lost else "source"

    def put_plate(self, station: int, plate: str) -> None:
        """A person puts ``plate`` on ``station`` (a place there then collides)."""
        with self.arm.lock:
            self.arm.update(self.clock.now())
            self.arm.put_plate(station, plate)

    def take_plate(self, station: int) -> str:
        """A person takes the plate from ``station``; returns its id."""
        with self.arm.lock:
            self.arm.update(self.clock.now())
            return self.arm.take_plate(station)

    def take_from_gripper(self) -> str | None:
        """A person takes the plate out of the gripper (the arm must be at rest)."""
        with self.arm.lock:
            self.arm.update(self.clock.now())
            return self.arm.take_from_gripper()

    # -- what the simulator knows (as of now) -----------------------------------------

    @property
    def stations(self) -> dict[int, str]:
        """Station -> plate id of every occupied station."""
        with self.arm.lock:
            self.tick()
            return dict(self.arm.stations)

    @property
    def gripper(self) -> str | None:
        """The plate in the gripper, if any."""
        with self.arm.lock:
            self.tick()
            return self.arm.gripper

    @property
    def picked_from(self) -> int | None:
        """The station the plate now in the gripper was picked from (None: none held)."""
        with self.arm.lock:
            self.tick()
            return self.arm.picked_from if self.arm.gripper is not None else None

    @property
    def lost(self) -> list[str]:
        """Plates that slipped off the deck."""
        with self.arm.lock:
            return list(self.arm.lost)

    @property
    def actions(self) -> list[dict[str, Any]]:
        """The action log entries written by this instance."""
        with self.arm.lock:
            self.tick()
            return list(self.arm.actions)

    @property
    def moving(self) -> bool:
        """Whether a motion is queued or in progress."""
        with self.arm.lock:
            self.tick()
            return not self.arm.idle()

    def quiet_since(self, since: datetime) -> bool:
        """Whether nothing the controller can read changed in ``[since, now]``: no motion
        queued, no physical action logged since ``since``, no e-stop (labctl's QuietWatch)."""
        with self.arm.lock:
            self.tick()
            if not self.arm.idle() or self.arm.estop:
                return False
            last = self.arm.actions[-1]["time"] if self.arm.actions else None
            return last is None or datetime.fromisoformat(last) < since

    def activity(self) -> Activity:
        """For a :class:`~labctl.clock.VirtualClock` gate: lines in hand, replies waiting,
        and the next moment the arm changes by itself (a motion step ends, power comes on)."""
        with self.arm.lock:
            now = self.clock.now()
            self.arm.update(now)
            # A reply whose condition holds is as good as in hand: it is about to go out.
            due = any(ready(now) for ready in self.waits)
            return Activity(
                busy=self.lines_busy > 0 or due,
                waiting=bool(self.waits),
                next_event=self.arm.next_event(now),
            )

    def moved(self) -> None:
        """The virtual clock moved: wake the replies that wait for it."""
        with self.arm.lock:
            self.arm.cond.notify_all()

    def next_change(self) -> datetime | None:
        """Now while a motion is queued (it changes the pose), else None: an idle arm
        changes only on a command."""
        with self.arm.lock:
            self.tick()
            return None if self.arm.idle() else self.clock.now()


class _PortServer:
    """One listening port: serves one client at a time, its lines in order."""

    def __init__(self, sim: PF400Simulator, host: str, port: int, *, status: bool) -> None:
        self._sim = sim
        self._status = status
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen()
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"pf400-port-{self.port}")

    def start(self) -> _PortServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        if self._thread.ident is not None:  # started
            self._thread.join()
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _readable(self, sock: socket.socket) -> bool:
        """Block until ``sock`` is readable (True) or the server stops (False)."""
        readable, _, _ = select.select([sock.fileno(), self._wake_r], [], [])
        return self._wake_r not in readable

    def _run(self) -> None:
        while self._readable(self._listener):
            conn, _ = self._listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self._serve(conn)
            except OSError:  # the client went away mid-reply
                pass
            except Exception:  # a simulator bug: hang up, keep listening
                log.exception("PF400 simulator failed on port %d", self.port)
            finally:
                conn.close()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        while self._readable(conn):
            data = conn.recv(4096)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.removesuffix(b"\r").decode("latin-1")
                try:
                    reply = self._sim.handle(line, status=self._status)
                except Hangup:
                    return
                if reply is None:  # stopping
                    return
                conn.sendall(reply.encode("latin-1") + b"\r\n")


def _plate(text: str) -> tuple[int, str]:
    """``1=P1`` -> (1, "P1"); ``1`` -> (1, "plate-1")."""
    station, _, plate = text.partition("=")
    try:
        n = int(station)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not STATION or STATION=PLATE") from None
    return n, plate or f"plate-{n}"


def _clock(args: argparse.Namespace) -> Clock:
    if args.epoch:
        text = args.epoch
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text(encoding="utf-8")
        return PacedClock.shared(Epoch.from_json(json.loads(text)))
    if args.pace:
        return PacedClock.shared(Epoch.now(args.pace))
    return RealClock()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a simulated PF400 until SIGTERM or Ctrl-C; prints its ports on one line."""
    p = argparse.ArgumentParser(
        prog="python -m labctl.simulators.pf400",
        description="Simulated PreciseFlex PF400 TCP Command Server (DEVICES.md section 11).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=10100, help="motion port (0: any free port)")
    p.add_argument("--status-port", type=int, default=10000, help="status port (0: any)")
    p.add_argument("--stations", type=int, default=5)
    p.add_argument("--state", type=Path, default=None, help="folder for the station map and log")
    p.add_argument("--action-log", type=Path, default=None)
    p.add_argument("--plate", type=_plate, action="append", default=[], metavar="STATION=PLATE")
    p.add_argument("--name", default="pf400")
    p.add_argument("--pace", type=float, default=None, help="virtual seconds per real second")
    p.add_argument("--epoch", default=None, help="shared clock epoch: JSON text or a file")
    for field, default in (("travel", 3.0), ("descend", 1.0), ("grip", 0.5), ("home", 15.0)):
        p.add_argument(f"--{field}-s", type=float, default=default, help="seconds")
    args = p.parse_args(argv)
    config = PF400Config(
        stations=args.stations,
        travel_s=args.travel_s,
        descend_s=args.descend_s,
        grip_s=args.grip_s,
        retract_s=args.descend_s,
        home_s=args.home_s,
    )
    sim = PF400Simulator(
        _clock(args),
        config,
        name=args.name,
        plates=dict(args.plate),
        state_dir=args.state,
        action_log=args.action_log,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim.start(args.host, args.port, args.status_port)
    print(f"pf400 simulator on {args.host} port {sim.port} status {sim.status_port}", flush=True)
    while not done.wait(0.5):
        pass
    sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
