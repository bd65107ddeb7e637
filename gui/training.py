"""Training mode: a practice run on the simulated workcell, on a paced clock, watched by a
console window of its own.

The console never drives devices, so training starts the training simulation
(:mod:`labctl.gui.training_run`, the real engine and drivers on the built-in simulators) as
a separate process (no shell), in a process group of its own, on a fresh practice database
in a new temporary folder. The simulation chooses the clock's epoch (an hour before the
first task, at the chosen pace) and writes it to ``epoch.json`` beside the database;
:class:`TrainingClock` reads it, so every view of the training window counts days,
countdowns and the timeline's "now" on the simulation's clock. Prompts wait real minutes for
the trainee (``trainee_s``). :meth:`TrainingSession.stop` (the window closing) ends the
whole process group (the simulation, its analysis processes) and removes the folder.
Plain Python: no Qt here.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from labctl.cli.simulate import MAX_PACE
from labctl.clock import Clock, Epoch, PacedClock, RealClock
from labctl.errors import LabctlError

__all__ = [
    "DAY_A_MINUTE",
    "PACES",
    "TRAINEE_S",
    "TrainingClock",
    "TrainingConfig",
    "TrainingError",
    "TrainingLauncher",
    "TrainingSession",
    "pace_text",
]

DAY_A_MINUTE = 1440.0  # clock seconds per real second: 86 400 s of run in 60 s
#: The paces the training dialog offers: (clock seconds per real second, in words).
PACES: tuple[tuple[float, str], ...] = (
    (24.0, "a day an hour"),
    (144.0, "a day in 10 minutes"),
    (720.0, "a day in 2 minutes"),
    (DAY_A_MINUTE, "a day a minute"),
    (MAX_PACE, "an hour a second"),
)
TRAINEE_S = 300.0  # real seconds a trainee has for a prompt before its default or colleague
STOP_WAIT_S = 5.0  # real seconds the simulation has to end on SIGTERM before SIGKILL
_EPOCH_LOOK_S = 0.2  # real seconds between looks for the epoch file until it appears


class TrainingError(LabctlError):
    """The training simulation could not be started."""

    code = 1104


def pace_text(pace: float) -> str:
    """The pace in words: "a day a minute", else "1000x real time"."""
    return next((w for p, w in PACES if abs(p - pace) < 1e-9), f"{pace:g}x real time")


@dataclass(frozen=True)
class TrainingConfig:
    """One training session: which protocol, how many plates, which faults, at what pace,
    and how many real seconds a trainee has for a prompt."""

    protocol: Path
    plates: int = 2
    faults: str | None = None  # a fault scenario file, as `labctl simulate --faults` takes
    pace: float = DAY_A_MINUTE
    trainee_s: float = TRAINEE_S


class TrainingClock:
    """The training simulation's clock, as soon as it has written its epoch to ``path``.

    Until then (the first second or two, before the run exists) it reads the wall clock.
    Thread-safe: the console's worker thread and GUI thread both read it.
    """

    def __init__(self, path: Path, wall: Clock | None = None) -> None:
        self.path = path
        self.wall = wall or RealClock()
        self._lock = threading.Lock()
        self._clock: PacedClock | None = None
        self._looked = float("-inf")

    @property
    def epoch_known(self) -> bool:
        return self._paced() is not None

    def _paced(self) -> PacedClock | None:
        with self._lock:
            if self._clock is not None:
                return self._clock
            t = self.wall.monotonic()
            if t - self._looked < _EPOCH_LOOK_S:
                return None
            self._looked = t
            try:
                epoch = Epoch.from_json(json.loads(self.path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                return None  # not written yet (it is written whole, then renamed)
            self._clock = PacedClock.shared(epoch)
            return self._clock

    def now(self) -> datetime:
        paced = self._paced()
        return paced.now() if paced is not None else self.wall.now()

    def monotonic(self) -> float:
        paced = self._paced()
        return paced.monotonic() if paced is not None else self.wall.monotonic()

    def sleep(self, seconds: float) -> None:
        paced = self._paced()
        (paced or self.wall).sleep(seconds)

    def sleep_until(self, when: datetime) -> None:
        paced = self._paced()
        (paced or self.wall).sleep_until(when)


@dataclass
class TrainingSession:
    """A started training: its database, clock, process and log (all in ``folder``)."""

    config: TrainingConfig
    folder: Path
    db: Path
    argv: list[str]
    process: Any  # subprocess.Popen
    log: Path
    clock: TrainingClock
    owns_folder: bool = True
    stopped: bool = field(default=False, init=False)

    def running(self) -> bool:
        return self.process.poll() is None

    def describe(self) -> str:
        """One line for the training window's strip."""
        return (
            f"simulated workcell at {pace_text(self.config.pace)} · prompts wait "
            f"{self.config.trainee_s / 60:g} min for you · {self.db}"
        )

    def stop(self) -> None:
        """End the simulation and every process it started (its process group: the
        analysis processes too), then remove the training folder (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        pid = getattr(self.process, "pid", None)
        if not isinstance(pid, int) or pid <= 1:
            pid = None  # not a process of ours (a test's stand-in): never signal group 0 or 1
        if pid is not None and self.process.poll() is None:
            _signal_group(pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        if pid is not None:
            # Whatever is left in the group (a process that ignored SIGTERM) ends now.
            _signal_group(pid, signal.SIGKILL)
            if self.process.poll() is None:
                self.process.wait(timeout=STOP_WAIT_S)
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid`` (the session started for it)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


class TrainingLauncher:
    """Starts ``python -m labctl.gui.training_run FILE --plates N --db DB --epoch-file F
    --pace P --trainee-s S [--faults F]`` in a new temporary folder (or under ``folder``).

    ``python`` defaults to the interpreter running the console; ``popen`` is
    :class:`subprocess.Popen` (tests pass a fake). ``clock`` is the console's (unused by the
    session, which runs on its own clock; kept for the folder's name).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        python: str | None = None,
        popen: Callable[..., Any] = subprocess.Popen,
        folder: Path | None = None,
    ) -> None:
        self.clock = clock
        self.python = python or sys.executable
        self.popen = popen
        self.folder = folder
        self.sessions: list[TrainingSession] = []
        atexit.register(self.stop_all)  # a console that dies leaves no simulation behind

    def argv(self, cfg: TrainingConfig, folder: Path) -> list[str]:
        """The command line (a list: it is never given to a shell)."""
        if cfg.plates < 1:
            raise TrainingError(f"training needs at least one plate, not {cfg.plates}")
        if not 0 < cfg.pace <= MAX_PACE:
            raise TrainingError(
                f"the pace must be above 0 and at most {MAX_PACE:g} (an hour a second), "
                f"not {cfg.pace:g}"
            )
        if not cfg.trainee_s > 0:
            raise TrainingError(f"a trainee needs some time for a prompt, not {cfg.trainee_s:g} s")
        out: Sequence[str] = [
            self.python, "-m", "labctl.gui.training_run", str(cfg.protocol),
            "--plates", str(cfg.plates),
            "--db", str(folder / "training.db"),
            "--epoch-file", str(folder / "epoch.json"),
            "--pace", f"{cfg.pace:g}",
            "--trainee-s", f"{cfg.trainee_s:g}",
        ]  # fmt: skip
        if cfg.faults:
            out = [*out, "--faults", cfg.faults]
        return list(out)

    def _new_folder(self) -> Path:
        try:
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="labctl-training-", dir=self.folder))
        except OSError as exc:
            raise TrainingError(f"cannot make a training folder: {exc.strerror or exc}") from None

    def start(self, cfg: TrainingConfig) -> TrainingSession:
        """Start the simulation on a fresh practice database; its output goes to
        ``simulation.log`` beside it."""
        folder = self._new_folder()
        argv = self.argv(cfg, folder)
        log = folder / "simulation.log"
        _practice_database(folder / "training.db")
        try:
            fh = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
        except OSError as exc:
            raise TrainingError(f"cannot write {log}: {exc.strerror or exc}") from None
        try:
            proc = self.popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # A process group of its own: stop() ends it and everything it started.
                start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise TrainingError(f"cannot start the training simulation: {exc}") from None
        finally:
            fh.close()  # the child holds its own copy of the descriptor
        session = TrainingSession(
            cfg,
            folder,
            folder / "training.db",
            argv,
            proc,
            log,
            TrainingClock(folder / "epoch.json"),
        )
        self.sessions.append(session)
        return session

    def stop_all(self) -> None:
        for s in self.sessions:
            s.stop()


def _practice_database(db: Path) -> None:
    """Make the training database a practice one before any process opens it: the console
    and the simulation may open it in either order."""
    from labctl.store import Store

    try:
        with Store.open(db, RealClock(), create=True, durable=False) as store:
            store.claim_for("practice", actor="training")
    except LabctlError as exc:
        raise TrainingError(f"cannot make the training database {db}: {exc}") from None
