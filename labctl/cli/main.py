"""The ``labctl`` command line: the parser and the one place errors become messages.

Every command turns labctl's own errors into one clear message and an exit code (never a
traceback), one table for every command (:data:`EXIT_CODES`, printed by ``labctl --help``):
0 done, 1 invalid input, a rejected command or a failed operation, 2 a file that can't be
read or written or a usage error, 3 a command queued that no engine has applied yet, 70 a
labctl bug only (with a pointer to the log), never a user's mistake. The commands live in ``protocol_cmds`` (a
scientist's), ``run_cmds`` (setting a workcell going), ``operator_cmds`` (an operator's)
``simulate`` (dry runs) and ``simulators_cmd`` (a practice workcell); each module
registers its own, explicitly, from :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from labctl.cli import (
    device_action_cmd,
    operator_cmds,
    protocol_cmds,
    run_cmds,
    simulate,
    simulators_cmd,
    user_cmds,
    watchdog_cmd,
)
from labctl.cli.common import (
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    Parser,
    UsageError,
    err,
)
from labctl.errors import InputFileError, LabctlError, ProtocolError

EXIT_CODES = """exit codes (every command):
  0   done: the command did what it says (an operator's command: the engine applied it)
  1   invalid input (a value out of range, no such run, prompt or task, an invalid
      protocol, workcell or scenario), a command refused (your role, the engine's
      verdict), or an operation that failed (a dry run that did not end as expected)
  2   a file that cannot be read or written (missing, a folder, not a run database),
      or a usage error (an unknown option, a missing argument or a needed --reason or
      --yes, a word or number that is not one the option takes)
  3   waiting on the engine: the command is queued and no engine has applied it yet
      (it applies when one runs; labctl status shows it)
  70  a bug in labctl (never your mistake): the details are in the log file named
"""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand of every module."""
    from labctl import __version__

    parser = Parser(
        prog="labctl",
        description="Controller for automated stem-cell differentiation.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"labctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    protocol_cmds.register(sub)
    run_cmds.register(sub)
    operator_cmds.register(sub)
    simulate.register(sub)
    simulators_cmd.register(sub)
    user_cmds.register(sub)
    watchdog_cmd.register(sub)
    device_action_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_UNREADABLE
    try:
        return int(args.func(args))
    except ProtocolError as exc:
        for d in exc.diagnostics:
            err(d.format())
        return EXIT_INVALID
    except InputFileError as exc:
        err(f"labctl: error: {exc}")
        return EXIT_UNREADABLE
    except UsageError as exc:
        err(f"labctl: error: {exc}")
        return EXIT_USAGE
    except LabctlError as exc:
        err(f"labctl: error: {exc.user_message()}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        err("labctl: interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:
        if exc.filename is None:  # a socket, a pipe: not a file the user can fix
            return internal_error(exc)
        # A file or folder the system refused (one the user named, or labctl's own): one
        # sentence and exit 2, not a crash report. Commands check their paths first; this
        # is the net under them.
        err(f"labctl: error: {exc.filename}: {exc.strerror or exc}")
        return EXIT_UNREADABLE
    except Exception as exc:  # noqa: BLE001 - the user gets one line, the log the traceback
        return internal_error(exc)


def internal_error(exc: BaseException) -> int:
    """Log the traceback to the user's log folder; print one line naming it."""
    import traceback

    log = None
    try:
        from platformdirs import user_log_path

        d = user_log_path("labctl")
        d.mkdir(parents=True, exist_ok=True)
        log = d / "crash.log"
        with open(log, "a", encoding="utf-8") as fh:
            traceback.print_exception(exc, file=fh)
    except Exception:  # noqa: BLE001 - logging must never hide the real error
        log = None
    if os.environ.get("LABCTL_DEBUG"):
        traceback.print_exception(exc)
    where = f"; details in {log}" if log else ""
    err(f"labctl: internal error: {type(exc).__name__}: {exc}{where}")
    return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
