"""``labctl watchdog``: pages the person on call when the engine itself stops or hangs.

A separate small process beside ``labctl engine`` (see :mod:`labctl.engine.watchdog`), run
by systemd (``Restart=always``) or, with ``--once``, from cron every minute.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

from labctl.cli.common import EXIT_INVALID, EXIT_OK, UsageError, open_store, out, read_workcell
from labctl.errors import InputFileError, ProtocolError

if TYPE_CHECKING:
    from labctl.engine.paging import Pager
    from labctl.engine.watchdog import Verdict

DESCRIPTION = """\
Watch the engine of a run database from outside: when it has written nothing (its
heartbeat, every 5 s) for longer than --silent-after while a run depends on it (a run
running, or paused or held with a task due), raise one alarm (engine-silent, critical)
and page it as the workcell file's paging: section says, repeated as the engine repeats
its pages; when the engine writes again, clear it and send an all clear. An engine
stopped on purpose (Ctrl-C, SIGTERM) with no run running pages nobody.

Run it as its own service beside the engine, so that it outlives it: under systemd
(Restart=always; it stops on SIGTERM), or from cron with --once every minute."""

EPILOG = """\
exit codes: 0 all is well (--once) or stopped; 1 the alarm was raised or still stands
(--once), or the database could not be checked; 2 the workcell file or the database cannot
be used, or a usage error.

examples:
  labctl watchdog --workcell workcell.yaml --db /srv/labctl/bay1.db
  * * * * *  labctl watchdog --once --workcell /srv/labctl/workcell.yaml --db /srv/labctl/bay1.db"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``watchdog`` to the parser."""
    p = sub.add_parser(
        "watchdog",
        help="page someone when the engine stops or hangs (run it by systemd or cron)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--workcell", required=True, help="workcell YAML file (its paging: section is used)"
    )
    p.add_argument(
        "--db",
        default=os.environ.get("LABCTL_DB"),
        help="run database (default: $LABCTL_DB, else labctl.db in your data folder)",
    )
    p.add_argument(
        "--silent-after",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="page when the engine has written nothing for longer than this (default 120)",
    )
    p.add_argument(
        "--every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between two checks (default 30)",
    )
    p.add_argument(
        "--once", action="store_true", help="one check, then exit 0 (all well) or 1 (alarm)"
    )
    p.set_defaults(func=cmd_watchdog)


def cmd_watchdog(args: argparse.Namespace) -> int:
    from labctl.clock import RealClock
    from labctl.engine.paging import Pager
    from labctl.engine.watchdog import Watchdog

    if not args.silent_after >= 15:
        raise UsageError(
            f"--silent-after {args.silent_after:g} is too short: the engine writes its "
            "heartbeat every 5 s, so give it at least 15 s (three heartbeats)"
        )
    if not args.every > 0:
        raise UsageError(f"--every {args.every:g}: the seconds between checks must be above 0")
    try:
        wc = read_workcell(args.workcell)
    except ProtocolError as exc:  # exit 2, one line: a watchdog's 1 means "an alarm stands"
        first = exc.diagnostics[0].format() if exc.diagnostics else str(exc)
        more = len(exc.diagnostics) - 1
        tail = f" (and {more} more error{'s' if more > 1 else ''} in the file)" if more else ""
        raise InputFileError(f"the workcell file cannot be used: {first}{tail}") from None
    store, path = open_store(args)
    with store:
        pager = Pager.for_workcell(wc, store, store.clock, db=path, watchdog=True)
        dog = Watchdog(
            store,
            RealClock(),
            timezone=wc.timezone,
            pager=pager,
            db=path,
            silent_after_s=args.silent_after,
        )
        nobody = (
            "" if pager is not None else " (the workcell has no paging: section: nobody is paged)"
        )
        try:
            if args.once:
                v = dog.check()
                out(_line(v) + (nobody if v.raised else ""))
                return EXIT_OK if v.well else EXIT_INVALID
            signal.signal(signal.SIGTERM, _on_sigterm)  # a service manager's stop: as Ctrl-C
            out(
                f"watchdog on {path}: checks every {args.every:g} s for an engine silent over "
                f"{args.silent_after:g} s while a run depends on it; {_how(pager)}. Ctrl-C stops it"
            )
            sys.stdout.flush()
            said: list[str] = []

            def say(v: Verdict) -> None:
                line = _line(v)
                kind = "failed" if v.failed else "well" if v.alarm is None else v.alarm.state
                if not said or said[-1] != kind or v.raised or v.cleared:
                    out(line + (nobody if v.raised else ""))
                    sys.stdout.flush()
                said[:] = [kind]

            dog.run(args.every, say=say)
        except KeyboardInterrupt:
            out("watchdog stopped")
        finally:
            if pager is not None:
                pager.close()
    return EXIT_OK


def _how(pager: Pager | None) -> str:
    """Who is told, in words (with what would make its pages fail)."""
    if pager is None:
        return "nobody is paged: the workcell file has no paging: section"
    if pager.settings.quiet:
        return "paging is set quiet: nobody is paged"
    ways = " and ".join(
        f"{'e-mail to' if c.name == 'smtp' else 'webhook'} {', '.join(c.recipients())}"
        for c in pager.channels
    )
    problems = pager.problems()
    return f"its alarm is paged by {ways}" + (
        f"; WARNING: {'; '.join(problems)}" if problems else ""
    )


def _line(v: Verdict) -> str:
    """One line for a verdict: ``watchdog: ALARM 7 raised: The engine has written ...``."""
    if v.failed:
        return f"watchdog: {v.text}"
    if v.alarm is None:
        return f"watchdog: ok: {v.text}"
    if v.raised:
        return f"watchdog: ALARM {v.alarm.id} raised: {v.text}"
    return f"watchdog: ALARM {v.alarm.id} stands ({v.alarm.state}): {v.text}"


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # stops the loop as Ctrl-C does: pages under way are recorded
