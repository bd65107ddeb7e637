"""What every command of the CLI shares: exit codes, output, and reading its inputs.

Heavy libraries (matplotlib, Qt, opentrons) are imported only by the commands that need
them, so ``validate`` is fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TextIO

from labctl.errors import InputFileError, LabctlError, ParameterError, PlanError, ProtocolError

if TYPE_CHECKING:
    from pathlib import Path

    from labctl.clock import Clock
    from labctl.plan.resolve import Plan
    from labctl.protocol.model import Protocol
    from labctl.store import Store
    from labctl.workcell import Workcell

# 0 done; 1 invalid input, a rejected command or a failed operation; 2 a file that cannot be
# read or written, or a usage error; 3 a command queued that no engine has applied yet;
# 70 a labctl bug. main.EXIT_CODES says the same to people.
EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE, EXIT_QUEUED, EXIT_INTERNAL = 0, 1, 2, 3, 70
EXIT_USAGE = EXIT_UNREADABLE


class UsageError(LabctlError):
    """The command line lacks something it needs (``--reason``, ``--yes``, a choice) or
    combines options that do not go together: exit 2, as argparse's own usage errors."""


def out(text: str = "") -> None:
    """A line on standard output."""
    _write(sys.stdout, text + "\n")


def err(text: str) -> None:
    """A line on standard error."""
    _write(sys.stderr, text + "\n")


def _write(stream: TextIO, text: str) -> None:
    # Names may hold Greek letters (TGF-β3) and units µ: on a terminal whose encoding cannot
    # show them, write them escaped (\u03b2) rather than fail the command.
    try:
        stream.write(text)
    except UnicodeEncodeError:
        enc = stream.encoding or "ascii"
        stream.write(text.encode(enc, "backslashreplace").decode(enc))


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with EXIT_UNREADABLE and one message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        err(f"labctl: error: {message}")
        raise SystemExit(EXIT_UNREADABLE)


def load_or_fail(path: str, workcell: Workcell | None = None) -> Protocol:
    """The protocol in ``path`` (its warnings printed), or ProtocolError with its errors."""
    from labctl.validate import load_file

    res = load_file(path, workcell=workcell)
    if not res.ok or res.protocol is None:
        raise ProtocolError(res.diagnostics)
    for w in res.warnings:
        err(w.format())
    return res.protocol


def read_workcell(path: str) -> Workcell:
    """The workcell file at ``path`` (WorkcellError with file:line:col if it is wrong)."""
    from labctl.workcell import load_workcell

    return load_workcell(path)


def start_time(text: str | None, tz: str, clock: Clock | None = None) -> datetime:
    """Day 0 from ``--start`` (naive: local time in ``tz``); default tomorrow at 00:00 by
    ``clock`` (the real one, or a practice database's paced one)."""
    from zoneinfo import ZoneInfo

    from labctl.clock import RealClock
    from labctl.plan.resolve import zone

    zone(tz)
    if text is None:
        # Default: tomorrow, in the run's time zone (the time of day comes from the protocol).
        now = (clock or RealClock()).now().astimezone(ZoneInfo(tz))
        return datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ParameterError(
            f"--start '{text}' is not a date and time like 2026-12-01T09:00"
        ) from None
    return dt


def resolve_args(args: argparse.Namespace) -> tuple[Protocol, Plan]:
    """The protocol and its plan from the options of ``add_plan_options`` (issues printed)."""
    from labctl.plan.resolve import parse_param_args, resolve

    wc = read_workcell(args.workcell) if getattr(args, "workcell", None) else None
    tz = args.tz or (wc.timezone if wc is not None else "UTC")
    proto = load_or_fail(args.file, wc)
    plan = resolve(
        proto,
        parse_param_args(args.param or []),
        plates=args.plates,
        start=start_time(args.start, tz),
        timezone=tz,
        strict=False,
    )
    for i in plan.issues:
        err(f"{args.file}:{i.loc.line}:{i.loc.col}: {i.severity}: {i.message}")
    if any(i.severity == "error" for i in plan.issues):
        raise PlanError("the protocol cannot be run with these parameters (see above)")
    return proto, plan


def add_plan_options(p: argparse.ArgumentParser) -> None:
    """The options that turn a protocol file into a plan (plan, prep, diagram)."""
    p.add_argument("file", help="protocol YAML file")
    p.add_argument("--plates", type=int, default=1, help="number of plates (default 1)")
    p.add_argument("--start", help="day 0, as 2026-12-01 or 2026-12-01T09:00 (default: tomorrow)")
    p.add_argument("--tz", help="IANA time zone of the run (default: the workcell's, else UTC)")
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="override a parameter, e.g. chir=0.8uM",
    )
    p.add_argument("--workcell", help="workcell YAML file")


def task_count(total: int, per_plate: int, plates: int) -> str:
    """'62 tasks (31 per plate x 2 plates)': how ``run``, ``status`` and ``simulate`` all
    count tasks (the store keeps one task per protocol task and plate)."""
    noun = "task" if total == 1 else "tasks"
    if plates > 0 and per_plate * plates == total:
        many = f"{per_plate} per plate x {plates} plates" if plates > 1 else "1 plate"
        return f"{total} {noun} ({many})"
    return f"{total} {noun} on {plates} plate{'s' if plates != 1 else ''}"


def alarm_line(code: str, subject: str | None, message: str) -> str:
    """'[door] inc-sim: the door is open': an alarm's subject said once (the engine's
    messages often begin with it already: 'run 1 ... is on hold', 'plate P1 has been out')."""
    subject = (subject or "").strip()
    said = not subject or message.startswith((subject, f"the {subject}"))
    return f"[{code}] {message}" if said else f"[{code}] {subject}: {message}"


def db_path(args: argparse.Namespace) -> Path:
    """The run database: ``--db``, else ``$LABCTL_DB``, else the user's data folder."""
    from pathlib import Path

    from labctl.store import Store

    return Path(args.db) if getattr(args, "db", None) else Store.default_path()


def named_db(args: argparse.Namespace) -> bool:
    """Whether the user named the database (``--db`` or ``$LABCTL_DB``), rather than
    taking labctl's default in its own data folder."""
    return bool(getattr(args, "db", None) or os.environ.get("LABCTL_DB"))


def check_db_path(path: Path, *, create: bool, named: bool = True) -> None:
    """Refuse a database path that cannot be used, with one clear sentence (InputFileError:
    exit 2). Without ``create`` the database must exist. With it, a new database's folder
    must exist too, unless it is labctl's own data folder (``named`` False): a folder is
    never created for a path the user typed, so a typo cannot leave a database (and runs
    registered in it) where nobody will look for it."""
    if path.is_dir():
        raise InputFileError(f"{path} is a folder, not a run database: name the file in it")
    if path.exists():
        return
    if not create:
        raise InputFileError(
            f"no run database at {path}: check the path (--db or $LABCTL_DB); a database is "
            "made by labctl run (a practice one), labctl simulate or labctl setup (for people)"
        )
    folder = path.parent
    if folder.is_dir():
        return
    if folder.exists():
        raise InputFileError(f"cannot make the run database {path}: {folder} is not a folder")
    if named:
        raise InputFileError(
            f"cannot make the run database {path}: the folder {folder} does not exist; check "
            f"the path, or make the folder first (mkdir -p {folder})"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(f"cannot make labctl's data folder {folder}: {exc.strerror}") from None


def check_output_path(path: Path) -> None:
    """Refuse an output file whose folder does not exist, or that is a folder
    (InputFileError: exit 2); no folder is made for a path the user typed."""
    if path.is_dir():
        raise InputFileError(f"{path} is a folder: name the file to write in it")
    folder = path.parent
    if not folder.is_dir():
        raise InputFileError(
            f"cannot write {path}: the folder {folder} does not exist; check the path, or make "
            f"the folder first (mkdir -p {folder})"
        )


def open_store(args: argparse.Namespace, *, create: bool = False) -> tuple[Store, Path]:
    """The run database of ``args`` and its path. Only a command that registers a run
    creates one (``create``); others fail clearly on a database that does not exist. A file
    that is not a (readable) run database is an InputFileError (exit 2)."""
    from labctl.clock import RealClock

    path = db_path(args)
    check_db_path(path, create=create, named=named_db(args))
    store = open_db(path, RealClock(), create=create)
    use_database_clock(store)
    return store, path


def open_db(path: Path, clock: Clock, *, create: bool = False, durable: bool = True) -> Store:
    """``Store.open`` with its refusals (not a labctl database, corrupt, unreadable, from
    a newer labctl) as InputFileError: a file the command cannot read, exit 2."""
    from labctl.errors import StoreError
    from labctl.store import Store

    try:
        return Store.open(path, clock, create=create, durable=durable)
    except StoreError as exc:
        raise InputFileError(str(exc)) from None


def use_database_clock(store: Store) -> None:
    """A practice database keeps its paced time scale: every client then agrees on 'now'."""
    from labctl.clock import PacedClock

    epoch = store.clock_epoch()
    if epoch is not None:
        store.clock = PacedClock.shared(epoch)


def add_db_options(p: argparse.ArgumentParser) -> None:
    """--db and --actor, for commands on a run database."""
    p.add_argument(
        "--db",
        default=os.environ.get("LABCTL_DB"),
        help="run database (default: $LABCTL_DB, else labctl.db in your data folder)",
    )
    p.add_argument("--actor", help="who is acting, for the audit trail (default: your login)")
