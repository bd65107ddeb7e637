"""The one place labctl reads the time or waits.

Everything else (core, drivers, simulators) takes a :class:`Clock` and asks it, so that
dry runs use virtual time and tests are deterministic. Times are timezone-aware UTC
``datetime`` objects; durations are seconds (float).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

__all__ = [
    "Activity",
    "Clock",
    "Epoch",
    "Gate",
    "PacedClock",
    "RealClock",
    "VirtualClock",
    "Work",
    "utc",
]

# At most this many real seconds are spent waiting for one gate to settle, so that a
# client that never pauses cannot stop virtual time.
GATE_MAX_WAIT_S = 1.0
_GATE_POLL_S = 0.0005


def utc(dt: datetime) -> datetime:
    """Return ``dt`` as an aware UTC datetime (naive input is taken to be UTC already)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


@dataclass(frozen=True)
class Activity:
    """What a simulated device in this process is doing, for :class:`VirtualClock`.

    ``busy``: a request is being handled in real time (the clock must not move under
    it). ``waiting``: a reply waits for virtual time to pass. ``next_event``: the earliest
    virtual moment the device changes by itself (a motion ends), or None.
    """

    busy: bool
    waiting: bool
    next_event: datetime | None


class Gate(Protocol):
    """A simulated device whose client runs on another thread, in real time (a driver's
    worker sending lines that block until the simulated motion ends)."""

    def activity(self) -> Activity:
        """What it is doing now."""
        ...

    def moved(self) -> None:
        """The virtual clock moved: wake replies waiting for virtual time."""
        ...


@runtime_checkable
class Clock(Protocol):
    """Source of time for one process (thread-safe)."""

    def now(self) -> datetime:
        """Current time, aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for deadlines and durations)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (virtual clocks advance instead of waiting)."""
        ...

    def sleep_until(self, when: datetime) -> None:
        """Wait until ``when`` (returns at once if it has passed)."""
        ...


class RealClock:
    """Wall-clock time; sleeping really waits."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def sleep_until(self, when: datetime) -> None:
        self.sleep((utc(when) - self.now()).total_seconds())


class VirtualClock:
    """Time that only moves when someone sleeps: it jumps straight to the wake-up moment.

    A 25-day run therefore takes no wall time waiting. ``monotonic()`` is the number of
    virtual seconds since the clock's start. Safe to share between threads (a simulator's
    server thread reads it while the engine advances it).

    Gates (:meth:`add_gate`) make it a small discrete-event scheduler for simulated
    devices served to clients on other threads: before each jump, ``sleep`` waits (in
    real time, bounded) until every gate has settled (no request in hand, and either a
    reply waiting for virtual time or no client holding a :class:`Work` token), and it
    stops at each gate's next event on the way, so a simulated arm's motion takes its own
    virtual seconds however fast the sleeper advances.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._start = utc(start or datetime(2026, 1, 1, tzinfo=timezone.utc))
        self._now = self._start
        self._lock = threading.Lock()
        self._gates: list[Gate] = []
        self._working = 0  # Work tokens held: clients at work on other threads
        self._changed = threading.Condition()  # poked when a gate's activity changes

    def add_gate(self, gate: Gate) -> None:
        """Settle ``gate`` before every jump (see the class docstring)."""
        with self._lock:
            self._gates.append(gate)

    def remove_gate(self, gate: Gate) -> None:
        with self._lock:
            if gate in self._gates:
                self._gates.remove(gate)

    def _settle(self, gate: Gate) -> Activity:
        """Wait (real time, at most GATE_MAX_WAIT_S) until ``gate`` has settled: no request
        in hand, and a reply waiting for virtual time or no client at :class:`Work`."""
        start = time.monotonic()
        while True:
            a = gate.activity()
            with self._lock:
                working = self._working
            if not a.busy and (a.waiting or working == 0):
                return a
            if time.monotonic() - start >= GATE_MAX_WAIT_S:
                return a
            with self._changed:  # woken by poke(); the timeout covers a poke just missed
                self._changed.wait(_GATE_POLL_S)

    def poke(self) -> None:
        """A gate's activity changed (a line answered, a reply began to wait): a sleeper
        waiting for it to settle looks again at once. Never blocks for long."""
        with self._changed:
            self._changed.notify_all()

    def _work(self, delta: int) -> None:
        with self._lock:
            self._working += delta
        self.poke()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return (self._now - self._start).total_seconds()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep_until(self.now() + timedelta(seconds=seconds))

    def sleep_until(self, when: datetime) -> None:
        when = utc(when)
        with self._lock:
            gates = list(self._gates)
        while True:
            now = self.now()
            if when <= now:
                return
            target = when
            for gate in gates:
                event = self._settle(gate).next_event
                if event is not None and now < event < target:
                    target = event
            with self._lock:
                if target > self._now:
                    self._now = target
            for gate in gates:
                gate.moved()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a virtual clock never goes backwards")
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        """Jump to ``when`` if it is later than now (tests use it to pin a moment)."""
        self.sleep_until(when)


class Work:
    """Real work on another thread that a :class:`VirtualClock` with gates waits for (a
    driver's worker carrying out a move line by line): held from when the work is handed
    over until :meth:`release`. Any other clock ignores it."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock if isinstance(clock, VirtualClock) else None
        if self._clock is not None:
            self._clock._work(+1)

    def release(self) -> None:
        """The work is over (idempotent)."""
        clock, self._clock = self._clock, None
        if clock is not None:
            clock._work(-1)


class PacedClock:
    """Accelerated real time for training: ``pace`` virtual seconds pass per real second.

    A pace of 1440 runs a protocol day in a real minute. Sleeping really waits, for the
    virtual span divided by the pace. Made with :meth:`shared`, the clock is a pure
    function of the wall clock and one epoch, so separate processes (the simulators, the
    engine daemon, the CLI) that share the epoch agree on the time.
    """

    def __init__(self, start: datetime, pace: float) -> None:
        if pace <= 0:
            raise ValueError("pace must be above zero")
        self._start = utc(start)
        self._pace = pace
        self._t0 = time.monotonic()
        self._wall0: datetime | None = None  # set by shared(): count from the wall clock

    @classmethod
    def shared(cls, epoch: Epoch) -> PacedClock:
        """A clock at ``epoch.start`` when the wall clock read ``epoch.wall``."""
        clock = cls(epoch.start, epoch.pace)
        clock._wall0 = utc(epoch.wall)
        return clock

    @property
    def pace(self) -> float:
        return self._pace

    def _elapsed(self) -> float:
        """Real seconds since the start."""
        if self._wall0 is not None:
            return (datetime.now(timezone.utc) - self._wall0).total_seconds()
        return time.monotonic() - self._t0

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed() * self._pace)

    def monotonic(self) -> float:
        return self._elapsed() * self._pace

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self._pace)

    def sleep_until(self, when: datetime) -> None:
        self.sleep((utc(when) - self.now()).total_seconds())


@dataclass(frozen=True)
class Epoch:
    """A paced time scale shared between processes: the virtual time ``start`` was the
    wall-clock time ``wall``, and ``pace`` virtual seconds pass per wall second."""

    wall: datetime
    start: datetime
    pace: float

    def to_json(self) -> dict[str, str | float]:
        return {
            "wall": utc(self.wall).isoformat(),
            "start": utc(self.start).isoformat(),
            "pace": self.pace,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Epoch:
        """Raises ValueError for anything that is not an epoch."""
        try:
            pace = float(str(data["pace"]))
            epoch = cls(
                datetime.fromisoformat(str(data["wall"])),
                datetime.fromisoformat(str(data["start"])),
                pace,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a clock epoch: {data!r}") from exc
        if not pace > 0 or epoch.wall.tzinfo is None or epoch.start.tzinfo is None:
            raise ValueError(f"not a clock epoch: {data!r}")
        return epoch

    @classmethod
    def now(cls, pace: float, start: datetime | None = None) -> Epoch:
        """An epoch beginning now (virtual time ``start``, default the wall time)."""
        wall = datetime.now(timezone.utc)
        return cls(wall, utc(start) if start is not None else wall, pace)
