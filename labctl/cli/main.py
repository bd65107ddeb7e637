"""The ``labctl`` command line: the parser and the one place errors become messages.

Every command turns labctl's own errors into one clear message and an exit code (never a
traceback): 0 ok, 1 invalid input, a rejected command or a failed operation, 2 a file that
can't be read or a usage error, 3 a command queued that no engine has applied yet, 70 an
internal error (with a pointer to the log). The commands live in ``protocol_cmds`` (a
scientist's), ``run_cmds`` (setting a workcell going), ``operator_cmds`` (an operator's)
``simulate`` (dry runs) and ``simulators_cmd`` (a practice workcell); each module
registers its own, explicitly, from :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from labctl.cli import (
    operator_cmds,
    protocol_cmds,
    run_cmds,
    simulate,
    simulators_cmd,
    user_cmds,
)
from labctl.cli.common import (
    EXIT_INTERNAL,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNREADABLE,
    Parser,
    err,
)
from labctl.errors import InputFileError, LabctlError, ProtocolError

EXIT_CODES = """exit codes:
  0   done (a command applied by the engine)
  1   invalid input, a command the engine rejected, or an operation that failed
  2   a file that cannot be read, or a usage error
  3   a command queued that no engine has applied yet (it applies when one runs)
  70  a labctl bug (the details are in the log file named)"""


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
    except LabctlError as exc:
        err(f"labctl: error: {exc.user_message()}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        err("labctl: interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK
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
