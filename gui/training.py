"""Training mode: a dry run on the simulated workcell at a day a minute, watched by a console.

The console never drives devices, so training starts ``labctl simulate`` as a separate
process (the same command a developer types; no shell) on a fresh database in the user's
data folder, and then opens a console window on that database. Operators practise the real
screens (prompts, recovery choices after injected faults, pause and skip) without touching
the production database. Plain Python: no Qt here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from labctl.cli.simulate import MAX_PACE
from labctl.clock import Clock
from labctl.errors import LabctlError

__all__ = ["DAY_A_MINUTE", "TrainingConfig", "TrainingLauncher", "TrainingSession"]

DAY_A_MINUTE = 1440.0  # simulated seconds per real second: 86 400 s of run in 60 s


class TrainingError(LabctlError):
    """The training simulation could not be started."""

    code = 1104


@dataclass(frozen=True)
class TrainingConfig:
    """One training session: which protocol, how many plates, which faults, at what pace."""

    protocol: Path
    plates: int = 2
    faults: str | None = None  # passed to `labctl simulate --faults` as given
    pace: float = DAY_A_MINUTE
    db: Path | None = None  # default: a new file under the user's data folder


@dataclass
class TrainingSession:
    config: TrainingConfig
    db: Path
    argv: list[str]
    process: Any  # subprocess.Popen
    log: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """End the simulation process (the database stays for review)."""
        if self.process.poll() is None:
            self.process.terminate()


class TrainingLauncher:
    """Builds and starts ``python -m labctl simulate FILE --plates N --db DB --pace P [--faults F]``.

    ``python`` defaults to the interpreter running the console; ``popen`` is
    :class:`subprocess.Popen` (tests pass a fake). ``clock`` names the database file.
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
        self.folder = folder or platformdirs.user_data_path("labctl") / "training"

    def database_for(self, cfg: TrainingConfig) -> Path:
        """The database the session writes: ``cfg.db`` or a new time-stamped file."""
        if cfg.db is not None:
            return cfg.db
        stamp = self.clock.now().strftime("%Y%m%d-%H%M%S")
        return self.folder / f"training-{stamp}.db"

    def argv(self, cfg: TrainingConfig, db: Path | None = None) -> list[str]:
        """The command line (a list: it is never given to a shell)."""
        if cfg.plates < 1:
            raise TrainingError(f"training needs at least one plate, not {cfg.plates}")
        if not 0 < cfg.pace <= MAX_PACE:
            raise TrainingError(
                f"the pace must be above 0 and at most {MAX_PACE:g} (an hour a second), "
                f"not {cfg.pace:g}"
            )
        out: Sequence[str] = [
            self.python,
            "-m",
            "labctl",
            "simulate",
            str(cfg.protocol),
            "--plates",
            str(cfg.plates),
            "--db",
            str(db or self.database_for(cfg)),
            "--pace",
            f"{cfg.pace:g}",
        ]
        if cfg.faults:
            out = [*out, "--faults", cfg.faults]
        return list(out)

    def start(self, cfg: TrainingConfig) -> TrainingSession:
        """Start the simulation; its output goes to ``<db>.log`` next to the database."""
        db = self.database_for(cfg)
        argv = self.argv(cfg, db)
        log = db.with_suffix(".log")
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
        except OSError as exc:
            raise TrainingError(f"cannot create the training folder {db.parent}: {exc}") from None
        try:
            proc = self.popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise TrainingError(f"cannot start the training simulation: {exc}") from None
        finally:
            fh.close()  # the child holds its own copy of the descriptor
        return TrainingSession(cfg, db, argv, proc, log)
