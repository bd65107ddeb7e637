"""``labctl simulators up``: a practice workcell of simulated devices at fixed addresses,
for the real engine (``labctl engine``) to drive as it would drive real ones.

It writes a workcell file naming only real drivers, keeps the run database's clock (real
time, or ``--pace N`` times faster: an epoch in the database that the engine and every
client read too), and serves until Ctrl-C or SIGTERM, which end every thread and process
it started. Killed and started again with the same command, it comes back at the same
addresses with the devices' state restored from its folder; the database keeps its clock.
The devices live in the simulators plugin (``practice_workcell``): the core imports none.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from labctl.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    UsageError,
    check_db_path,
    err,
    open_db,
    out,
)
from labctl.clock import Epoch, PacedClock, RealClock, utc
from labctl.errors import InputFileError, ParameterError
from labctl.plugins import load
from labctl.store import Store

ACTOR = "simulators"
# As for `labctl simulate --pace`: a serial exchange takes about a millisecond of real time.
MAX_PACE = 3600.0
MAX_BATCH = 2  # plates the practice robot feeds in one run (its deck takes two)
ENDED = ("completed", "aborted", "failed")


def practice_epoch(
    store: Store, path: Path, pace: float | None, start: datetime | None
) -> Epoch | None:
    """The clock of the practice database ``store`` (None: real time), set in it.

    A database keeps its clock: restarted at the same pace, the simulators continue it
    (``start`` then only applies to a new clock). A new pace, or real time after a paced
    one, needs a database without live runs (their times were planned on the old clock):
    otherwise ParameterError says what to do.
    """
    current = store.clock_epoch()
    if pace is not None and current is not None and current.pace == pace:
        return current
    if current is None and pace is None:
        return None
    live = [r.id for r in store.list_runs() if r.state not in ENDED]
    if live:
        was = f"at pace {current.pace:g}" if current is not None else "in real time"
        keep = f"--pace {current.pace:g}" if current is not None else "no --pace"
        raise ParameterError(
            f"{path} holds live run(s) {', '.join(map(str, live))} planned {was}: start the "
            f"simulators with {keep}, or use another --db"
        )
    epoch = Epoch.now(pace, start) if pace is not None else None
    store.set_clock_epoch(epoch, actor=ACTOR)
    return epoch


def _out_folder(folder: Path) -> Path:
    """The --out folder, made if missing; never its missing parents (a typo is refused)."""
    if folder.exists() and not folder.is_dir():
        raise InputFileError(f"--out {folder}: a file, not a folder")
    if not folder.parent.is_dir():
        raise InputFileError(
            f"--out {folder}: the folder {folder.parent} does not exist; check the path, or "
            f"make it first (mkdir -p {folder.parent})"
        )
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise InputFileError(f"cannot make the folder {folder}: {exc.strerror}") from None
    return folder


def next_commands(workcell: str, db: str, plates: int) -> list[str]:
    """What to type next, exactly as README.md shows it (headings end with a colon)."""
    return [
        "next, in a second terminal (the engine keeps it):",
        f"  labctl run protocols/kriks2011_da.yaml --workcell {workcell} --db {db} --plates {plates}",
        f"  labctl engine --workcell {workcell} --db {db}",
        "then, in a third, to follow the run and answer the workcell:",
        f"  export LABCTL_DB={db}",
        "  labctl status",
        "  labctl prompts",
        "  labctl answer PROMPT CHOICE",
    ]


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the simulators as Ctrl-C does."""
    raise KeyboardInterrupt


def simulators_up(args: argparse.Namespace) -> int:
    """Serve the practice workcell until Ctrl-C or SIGTERM."""
    if args.pace is not None and not 0 < args.pace <= MAX_PACE:
        err(
            f"labctl simulators up: --pace must be above 0 and at most {MAX_PACE:g}, not "
            f"{args.pace:g}: faster, a serial reply takes longer on the clock than the devices allow"
        )
        return EXIT_INVALID
    if args.start and args.pace is None:
        raise UsageError("--start sets where a paced clock starts: give --pace too")
    try:
        start = utc(datetime.fromisoformat(args.start)) if args.start else None
    except ValueError:
        raise ParameterError(
            f"--start '{args.start}' is not a date and time like 2026-12-01T08:00"
        ) from None
    if args.plates < 1:
        raise ParameterError("--plates must be at least 1")
    if not 1 <= args.batch <= MAX_BATCH:
        raise ParameterError(f"--batch must be 1 or {MAX_BATCH}, not {args.batch}")
    if not 0 < args.port <= 65535 - 3:
        raise ParameterError(
            f"--port must be 1 to {65535 - 3} (four ports from it), not {args.port}"
        )
    # The robot's opentrons (~2 s, a process of its own) starts importing first.
    load("start_robot_analysis")()
    practice_workcell = load("practice_workcell")
    folder = _out_folder(Path(args.out))
    db = Path(args.db) if args.db else folder / "run.db"
    check_db_path(db, create=True)
    with open_db(db, RealClock(), create=True) as store:
        store.claim_for("practice", actor=ACTOR)
        epoch = practice_epoch(store, db, args.pace, start)
        clock: Any = PacedClock.shared(epoch) if epoch is not None else RealClock()
        store.clock = clock
        wc = practice_workcell(
            clock,
            store,
            folder=folder,
            port=args.port,
            plates=args.plates,
            pace=epoch.pace if epoch is not None else 1.0,
            answers=not args.no_answers,
            echo=_echo,
            arm=not args.no_arm,
            batch=args.batch,
        )
        # Ctrl-C even where the shell started us with SIGINT ignored (a background job).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            wc.start()  # PracticeError (a LabctlError) when an address is taken
            workcell = folder / "workcell.yaml"
            tmp = folder / ".workcell.yaml.tmp"
            tmp.write_text(wc.workcell_text(), encoding="utf-8")
            tmp.replace(workcell)
            _banner(wc, epoch, clock, workcell, db, args)
            wall = RealClock()
            while True:
                wall.sleep(3600.0)
        except KeyboardInterrupt:
            pass
        finally:
            # Stopping ends threads and processes: a second Ctrl-C must not cut it short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            out("stopping the simulators")
            wc.stop()
    out("simulators stopped")
    return EXIT_OK


def _echo(line: str) -> None:
    out(f"operator: {line}")


def _banner(wc: Any, epoch: Epoch | None, clock: Any, workcell: Path, db: Path, args: Any) -> None:
    if epoch is None:
        time = "real time"
    else:
        time = f"clock {epoch.pace:g}x, now {clock.now():%Y-%m-%d %H:%M} UTC on it"
    again = "restored" if wc.restored else f"{args.plates} plates in slots 1-{args.plates}"
    who = "you answer the prompts" if args.no_answers else "the simulated operator answers prompts"
    out(f"practice workcell up in {args.out} ({time}):")
    out(f"  ot2-sim   robot      {wc.robot_url}")
    out(f"  inc-sim   incubator  {wc.incubator_url} ({again})")
    if wc.arm is not None:
        out(f"  arm-sim   PF400 arm  127.0.0.1:{wc.arm.port} (status {wc.arm.status_port})")
    out(f"  operator  prompts in {db}; {who} (its log: {wc.folder / 'operator-bot.log'})")
    out(f"workcell file: {workcell}")
    out("")
    for line in next_commands(os.path.abspath(workcell), os.path.abspath(db), min(2, args.plates)):
        out(line)
    out("")
    out("Ctrl-C stops the simulators; the same command starts them again where they were.")
    sys.stdout.flush()  # a reader of a pipe (a test, a log) sees the banner at once


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``simulators up`` to the parser."""
    p = sub.add_parser(
        "simulators",
        help="a practice workcell: simulated devices for the real engine to drive",
        description="Start simulated devices at fixed addresses on 127.0.0.1 (an Opentrons "
        "robot, a Cytomat incubator) and a simulated operator, and write a workcell file "
        "for `labctl run` and `labctl engine`. Ctrl-C stops them.",
    )
    p.add_argument("action", choices=["up"], help="up: start the devices and serve until Ctrl-C")
    p.add_argument(
        "--out",
        default=".",
        help="folder for the workcell file, logs and state, made if missing (its parent must "
        "exist; default: .)",
    )
    p.add_argument(
        "--db",
        help="the run database (default: run.db in the --out folder); its folder must exist",
    )
    p.add_argument(
        "--port",
        type=int,
        default=31950,
        help="the robot's port; the incubator takes the next one and the arm the two after "
        "(default 31950)",
    )
    p.add_argument(
        "--pace",
        type=float,
        help="run the clock this many times faster (1440: a day a minute; at most 3600)",
    )
    p.add_argument(
        "--start",
        help="with --pace: the time the clock starts from, e.g. 2026-12-01T08:00 (UTC; "
        "default now); a database keeps its clock when the simulators start again",
    )
    p.add_argument("--plates", type=int, default=6, help="plates in the incubator (default 6)")
    p.add_argument(
        "--no-answers",
        action="store_true",
        help="the simulated operator answers nothing: you do (labctl prompts / answer); it "
        "still carries the plates you say you carried",
    )
    p.add_argument(
        "--no-arm",
        action="store_true",
        help="no plate-moving arm: the operator carries the plates between the incubator "
        "and the robot",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="plates the robot feeds in one run, 1-2 (default 1; its deck takes two)",
    )
    p.set_defaults(func=simulators_up)
