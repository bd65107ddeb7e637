"""The physical side of the simulated PreciseFlex PF400 (the wire is :mod:`.pf400`).

What a real cell has, computed from the injected clock: the arm's pose and finger width,
a timeline of queued motion steps, which station holds which plate, the plate in the
gripper, power / attach / home state, an asynchronous error waiting for the motion
thread, the JSON-lines action log, and the station map kept in a folder so that a
restarted simulator finds the plates where they were.

Time: every step has a start and an end on the clock (``datetime``); :meth:`Arm.update`
applies the steps that have ended by ``now`` (and their effects: grip, release, slip,
collision) in order. Nothing here advances the clock or waits; :mod:`.pf400` waits.

Geometry (made up, consistent): station ``k`` of ``N`` is taught on an arc of radius 500
mm in front of the arm, 150 mm high, the tool pointing down (pitch 90, roll -180, yaw
along the arc); its approach pose is ``clearance_mm`` above it. The safe (park) pose is
(250, 0, 400). Joint angles come from a two-link arm of 302 + 289 mm (righty) on a Z
column: ``wherej`` is ``z shoulder elbow wrist gripper`` (mm, deg, deg, deg, mm).

Thread safety: callers hold :attr:`Arm.lock` (an RLock; :attr:`Arm.cond` is built on it).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from labctl.clock import Clock
from labctl.simulators.handover import Spot, Stations

__all__ = [
    "ERROR_TEXT",
    "HARD_ESTOP",
    "POWER_OFF_REQUESTED",
    "SAFE_POSE",
    "Arm",
    "Job",
    "PF400Config",
    "Pose",
    "approach_pose",
    "joint_angles",
    "station_pose",
]

Pose = tuple[float, float, float, float, float, float]
"""x, y, z (mm), yaw, pitch, roll (deg)."""

# Error numbers and texts: PyLabRobot pylabrobot/arms/precise_flex/error_codes.py, except
# the TCS's own -28xx codes, which are in AD-SDL pf400_module
# src/pf400_interface/pf400_constants.py (the TCS command-server errors, not in PyLabRobot).
ERROR_TEXT: dict[int, str] = {
    -204: "Not implemented",
    -214: "Cancelled",
    -717: "Invalid number format",
    -1000: "Invalid robot number",
    -1009: "No robot attached",
    -1021: "Robot not homed",
    -1025: "Timeout enabling power",
    -1028: "Hard E-Stop",
    -1046: "Power not enabled",
    -1501: "Unknown Data ID code",
    -1600: "Power off requested",
    -2800: "Warning Parameter Mismatch",
    -2801: "Warning No Parameters",
    -2805: "Unknown command",
    -2808: "Not allowed by this thread",
    -2851: "Invalid Station ID",
    -2852: "Invalid robot state to execute command",
    -3100: "Hard envelope error",
    -3122: "Soft envelope error",
    -3147: "Abnormal envelope error",
}
HARD_ESTOP = -1028
POWER_OFF_REQUESTED = -1600
SOFT_ENVELOPE = -3122

SAFE_POSE: Pose = (250.0, 0.0, 400.0, 0.0, 90.0, -180.0)
_LINK1_MM, _LINK2_MM = 302.0, 289.0
_CLOSED_MM = 10.0  # fingers fully closed on nothing
_OPEN_EXTRA_MM = 10.0  # fingers open this much wider than the plate before a grip
_STATE_FILE = "pf400_state.json"
_LOG_FILE = "pf400_actions.jsonl"


@dataclass(frozen=True)
class PF400Config:
    """The simulated arm: stations 1..``stations``, step durations in seconds of the clock,
    and reply details.

    A pick is travel + descend + grip (the reply) + retract; a place is travel + descend +
    release + retract (replied when queued); ``movetosafe`` is one travel; ``home`` takes
    ``home_s``; power comes on ``power_on_s`` after ``hp 1``. ``error_text``: error replies
    carry the text after the code (``-1046 Power not enabled``), else the bare code as the
    TCS source sends in PC mode. ``collision_code``: the error of a place onto an occupied
    station (a key of :data:`ERROR_TEXT`).
    """

    stations: int = 5
    travel_s: float = 3.0
    descend_s: float = 1.0
    grip_s: float = 0.5
    retract_s: float = 1.0
    home_s: float = 15.0
    power_on_s: float = 1.0
    clearance_mm: float = 50.0
    version: str = "TCS 3.0C1 (labctl simulator), PARobot (labctl simulator)"
    error_text: bool = True
    collision_code: int = SOFT_ENVELOPE

    def __post_init__(self) -> None:
        if not 1 <= self.stations <= 999:
            raise ValueError(f"stations must be 1..999, got {self.stations}")
        times = (self.travel_s, self.descend_s, self.grip_s, self.retract_s, self.home_s)
        if min(*times, self.power_on_s) < 0:
            raise ValueError("durations must be >= 0 s")
        if self.collision_code not in ERROR_TEXT:
            raise ValueError(f"collision_code {self.collision_code} is not a known error")


def station_pose(station: int, stations: int) -> Pose:
    """The taught pick/place pose of ``station`` (1..``stations``)."""
    yaw = -60.0 + 120.0 * (station - 1) / max(stations - 1, 1)
    a = math.radians(yaw)
    return (round(500.0 * math.cos(a), 3), round(500.0 * math.sin(a), 3), 150.0, yaw, 90.0, -180.0)


def approach_pose(station: int, stations: int, clearance_mm: float) -> Pose:
    """The pose ``clearance_mm`` above ``station``, where a pick or place starts and ends."""
    x, y, z, yaw, pitch, roll = station_pose(station, stations)
    return (x, y, z + clearance_mm, yaw, pitch, roll)


def joint_angles(pose: Pose, width_mm: float) -> tuple[float, float, float, float, float]:
    """``(z mm, shoulder deg, elbow deg, wrist deg, gripper mm)`` for ``pose`` (righty)."""
    x, y, z, yaw = pose[0], pose[1], pose[2], pose[3]
    c = (x * x + y * y - _LINK1_MM**2 - _LINK2_MM**2) / (2 * _LINK1_MM * _LINK2_MM)
    elbow = math.acos(max(-1.0, min(1.0, c)))
    shoulder = math.atan2(y, x) - math.atan2(
        _LINK2_MM * math.sin(elbow), _LINK1_MM + _LINK2_MM * math.cos(elbow)
    )
    sh, el = math.degrees(shoulder), math.degrees(elbow)
    return (z, sh, el, yaw - sh - el, width_mm)


def _lerp(a: Pose, b: Pose, f: float) -> Pose:
    p = [u + (v - u) * f for u, v in zip(a, b, strict=True)]
    return (p[0], p[1], p[2], p[3], p[4], p[5])


@dataclass
class Job:
    """One motion command as the arm carries it out.

    ``reached``: the moment its reply waits for has passed (a pick: the grip; home: the
    end). ``result``: a pick's ``-1`` (plate felt) or ``0``. ``cancelled``: stopped
    before its end (halt, e-stop, power off, collision).
    """

    command: str
    station: int | None = None
    result: str | None = None
    reached: bool = False
    cancelled: bool = False
    slip: str | None = None  # a pick whose plate will slip out: "source" or "lost"


@dataclass
class _Step:
    """The tool moves from its pose at ``t0`` to ``to`` by ``t1`` (the fingers to
    ``width`` unless None); ``then`` runs at ``t1``."""

    job: Job
    t0: datetime
    t1: datetime
    start: Pose
    to: Pose
    width: float | None = None
    then: Callable[[datetime], None] | None = None


class Arm:
    """State of one simulated PF400 and its plates (see the module docstring).

    ``plates`` (station -> plate id) is the initial occupancy, used only when
    ``state_dir`` holds no saved state. With ``state_dir``, the station map, the gripper
    and the pose are saved there after every change and reloaded on construction; the
    arm then starts as after a power cycle (power off, not attached, not homed).
    ``action_log`` defaults to ``state_dir/pf400_actions.jsonl``. ``linked`` stations
    are places another simulator owns (an incubator's transfer station): the arm reads and
    changes them through it and never saves them.
    """

    def __init__(
        self,
        clock: Clock,
        config: PF400Config,
        *,
        name: str,
        plates: Mapping[int, str],
        state_dir: str | Path | None,
        action_log: str | Path | None,
        linked: Mapping[int, Spot] | None = None,
    ) -> None:
        self.clock = clock
        self.config = config
        self.name = name
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._dir = Path(state_dir) if state_dir is not None else None
        if action_log is None and self._dir is not None:
            action_log = self._dir / _LOG_FILE
        self._log_path = Path(action_log) if action_log is not None else None
        self.actions: list[dict[str, Any]] = []
        self.stations = Stations(linked)  # linked: places another simulator owns
        self.gripper: str | None = None
        self.picked_from: int | None = None  # the station the plate in the gripper came from
        self.lost: list[str] = []
        self.pose: Pose = SAFE_POSE
        self.width = 85.0 + _OPEN_EXTRA_MM
        self.grasp = (85.0, 50.0, 10.0)  # width mm, finger speed %, force N (next pick)
        self.power_on_at: datetime | None = None
        self.attached = False
        self.homed = False
        self.estop = False
        self.pending: int | None = None  # async error for the next motion-port command
        self.slip_next: str | None = None
        self._steps: list[_Step] = []
        if not self._load():
            for station, plate in plates.items():
                self._check_station(station)
                self.stations[station] = plate
            self._save()

    # -- state -----------------------------------------------------------------------------

    def powered(self, now: datetime) -> bool:
        """Whether high power is on at ``now``."""
        return self.power_on_at is not None and now >= self.power_on_at

    def idle(self) -> bool:
        """No motion queued or in progress (as of the last :meth:`update`)."""
        return not self._steps

    def next_event(self, now: datetime) -> datetime | None:
        """The next moment after ``now`` the arm changes by itself: the current motion
        step ends or power comes on (None: nothing until a command)."""
        events = [s.t1 for s in self._steps[:1] if s.t1 > now]
        if self.power_on_at is not None and self.power_on_at > now:
            events.append(self.power_on_at)
        return min(events) if events else None

    def update(self, now: datetime) -> None:
        """Apply every step that has ended by ``now``, in order, with its effect."""
        while self._steps and self._steps[0].t1 <= now:
            step = self._steps.pop(0)
            self.pose = step.to
            if step.width is not None:
                self.width = step.width
            if step.then is not None:
                step.then(step.t1)
            if not self._steps:
                self._save()  # at rest: the pose a restart finds

    def pose_at(self, now: datetime) -> tuple[Pose, float]:
        """The tool pose and finger width (mm) at ``now``, mid-step included."""
        self.update(now)
        if not self._steps or self._steps[0].t0 >= now:
            return self.pose, self.width
        step = self._steps[0]
        span = (step.t1 - step.t0).total_seconds()
        f = (now - step.t0).total_seconds() / span if span > 0 else 1.0
        width = self.width if step.width is None else self.width + (step.width - self.width) * f
        return _lerp(step.start, step.to, f), width

    def fully_closed(self) -> bool:
        """The fingers are within 2 mm of fully closed (they hold nothing after a grip)."""
        return self.width <= _CLOSED_MM + 2.0

    # -- motions (the caller has checked power, attach and home) -----------------------

    def pick(self, station: int, now: datetime) -> Job:
        """Queue a pick at ``station``: travel, descend, grip (``reached``), retract."""
        job = Job("PickPlate", station)
        at, above = self._poses(station)
        opened = self.grasp[0] + _OPEN_EXTRA_MM
        c = self.config
        self._queue(
            job,
            now,
            [
                (c.travel_s, above, opened, None),
                (c.descend_s, at, None, None),
                (c.grip_s, at, None, lambda t: self._grip(job, t)),
                (c.retract_s, above, None, lambda t: self._retracted(job, t)),
            ],
        )
        return job

    def place(self, station: int, now: datetime) -> Job:
        """Queue a place at ``station``: travel, descend (a plate there stops it half-way:
        a collision), release, retract."""
        job = Job("PlacePlate", station)
        at, above = self._poses(station)
        c = self.config
        half = _lerp(above, at, 0.5)
        self._queue(
            job,
            now,
            [
                (c.travel_s, above, None, None),
                (c.descend_s / 2, half, None, lambda t: self._contact(job, t)),
                (c.descend_s / 2, at, None, None),
                (c.grip_s, at, self.grasp[0] + _OPEN_EXTRA_MM, lambda t: self._release(job, t)),
                (c.retract_s, above, None, lambda t: self._done(job, t, "done")),
            ],
        )
        return job

    def to_safe(self, now: datetime) -> Job:
        """Queue a move to the safe (park) pose."""
        job = Job("movetosafe")
        self._queue(
            job,
            now,
            [(self.config.travel_s, SAFE_POSE, None, lambda t: self._done(job, t, "moved"))],
        )
        return job

    def home(self, now: datetime) -> Job:
        """Queue homing (the tool stays where it is); ``reached`` when homed."""
        job = Job("home")

        def homed(t: datetime) -> None:
            self.homed = True
            self._done(job, t, "homed")

        self.update(now)
        end = self._steps[-1].to if self._steps else self.pose
        self._queue(job, now, [(self.config.home_s, end, None, homed)])
        return job

    def stop(self, now: datetime, reason: str, error: int | None) -> None:
        """Stop all motion at ``now`` (halt, e-stop, power off); ``error`` becomes the
        pending error of the motion port if a motion was stopped."""
        self.update(now)
        if self._steps:
            self._abort(now, reason, error)

    # -- the physical side (a person's hands) ------------------------------------------

    def put_plate(self, station: int, plate: str) -> None:
        """A person puts ``plate`` on ``station`` (unknown to the controller)."""
        self._check_station(station)
        if station in self.stations:
            raise ValueError(f"station {station} already holds {self.stations[station]}")
        self.stations[station] = plate
        self._record(self.clock.now(), "hand", station, plate, "put")

    def take_plate(self, station: int) -> str:
        """A person takes the plate from ``station``; returns its id."""
        plate = self.stations.pop(station, None)
        if plate is None:
            raise ValueError(f"station {station} is empty")
        self._record(self.clock.now(), "hand", station, plate, "taken")
        return plate

    def take_from_gripper(self) -> str | None:
        """A person takes the plate out of the stopped arm's gripper and opens the fingers;
        returns it (None: the gripper held none)."""
        plate, self.gripper = self.gripper, None
        self.width = self.grasp[0] + _OPEN_EXTRA_MM
        if plate is not None:
            self._record(self.clock.now(), "hand", None, plate, "taken")
        return plate

    # -- internals ---------------------------------------------------------------------

    def _check_station(self, station: int) -> None:
        if not 1 <= station <= self.config.stations:
            raise ValueError(f"station {station} is outside 1..{self.config.stations}")

    def _poses(self, station: int) -> tuple[Pose, Pose]:
        c = self.config
        return station_pose(station, c.stations), approach_pose(station, c.stations, c.clearance_mm)

    def _queue(
        self,
        job: Job,
        now: datetime,
        parts: list[tuple[float, Pose, float | None, Callable[[datetime], None] | None]],
    ) -> None:
        """Append ``parts`` (seconds, target pose, finger width, effect) after any queued
        motion: a motion command's motion is queued, not started over the current one."""
        self.update(now)
        t = self._steps[-1].t1 if self._steps else now
        pose = self._steps[-1].to if self._steps else self.pose
        for seconds, to, width, then in parts:
            t1 = t + timedelta(seconds=seconds)
            self._steps.append(_Step(job, t, t1, pose, to, width, then))
            t, pose = t1, to

    def _abort(self, t: datetime, reason: str, error: int | None) -> None:
        if self._steps and self._steps[0].t0 < t:
            self.pose, self.width = self.pose_at(t)
        job = self._steps[0].job
        for step in self._steps:
            step.job.cancelled = True
        self._steps.clear()
        if error is not None:
            self.pending = error
        self._record(t, job.command, job.station, self.gripper, reason)

    def _grip(self, job: Job, t: datetime) -> None:
        assert job.station is not None
        plate = self.stations.pop(job.station, None)
        if plate is None:
            self.width, job.result = _CLOSED_MM, "0"
        else:
            self.gripper, self.width, job.result = plate, self.grasp[0], "-1"
            self.picked_from = job.station
            job.slip, self.slip_next = self.slip_next, None  # a slip needs a plate to lose
        job.reached = True
        self._record(t, job.command, job.station, plate, "gripped" if plate else "no_plate")

    def _retracted(self, job: Job, t: datetime) -> None:
        if job.slip is None or self.gripper is None:
            return
        plate, self.gripper, self.width = self.gripper, None, _CLOSED_MM
        assert job.station is not None
        if job.slip == "source" and job.station not in self.stations:
            self.stations[job.station] = plate
        else:
            self.lost.append(plate)
        self._record(t, job.command, job.station, plate, "slipped")

    def _contact(self, job: Job, t: datetime) -> None:
        assert job.station is not None
        if job.station in self.stations:
            self._abort(t, "collision", self.config.collision_code)

    def _release(self, job: Job, t: datetime) -> None:
        assert job.station is not None
        plate = self.gripper
        if plate is not None:
            try:
                self.stations[job.station] = plate
            except ValueError:  # a linked place filled meanwhile (a plate coming out)
                self._abort(t, "collision", self.config.collision_code)
                return
        self.gripper = None
        self._record(t, job.command, job.station, plate, "placed" if plate else "released_empty")

    def _done(self, job: Job, t: datetime, result: str) -> None:
        job.reached = True
        if result != "done":
            self._record(t, job.command, job.station, self.gripper, result)

    def _record(
        self, t: datetime, command: str, station: int | None, plate: str | None, result: str
    ) -> None:
        """Append one physical action to the log (and save the state it changed)."""
        entry = {
            "time": t.isoformat(),
            "device": self.name,
            "command": command,
            "station": station,
            "plate": plate,
            "result": result,
        }
        self.actions.append(entry)
        if self._log_path is not None:
            # Opened per entry: a reader (or a killed process) never sees half a line.
            with self._log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        self._save()

    def _save(self) -> None:
        if self._dir is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        data = {
            "stations": {str(k): v for k, v in sorted(self.stations.own().items())},
            "gripper": self.gripper,
            "picked_from": self.picked_from,
            "lost": self.lost,
            "pose": list(self.pose),
            "width": self.width,
        }
        tmp = self._dir / (_STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self._dir / _STATE_FILE)  # atomic: a kill never leaves half a file

    def _load(self) -> bool:
        path = self._dir / _STATE_FILE if self._dir is not None else None
        if path is None or not path.exists():
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in data["stations"]:
            self._check_station(int(key))
        self.stations.restore({int(k): str(v) for k, v in data["stations"].items()})
        self.gripper = data["gripper"]
        self.picked_from = data.get("picked_from")
        self.lost = [str(p) for p in data.get("lost", [])]
        p = [float(v) for v in data["pose"]]
        self.pose = (p[0], p[1], p[2], p[3], p[4], p[5])
        self.width = float(data["width"])
        return True
