"""The ``labctl`` command line.

Every command turns labctl's own errors into one clear message and an exit code (never a
traceback): 0 ok, 1 invalid input or failed operation, 2 a file that can't be read or a
usage error, 70 an internal error (with a pointer to the log). Heavy libraries (matplotlib,
Qt, opentrons) are imported only by the commands that need them, so ``validate`` is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from labctl.errors import InputFileError, LabctlError, ParameterError, PlanError, ProtocolError

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE, EXIT_INTERNAL = 0, 1, 2, 70


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


# --- validate -----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from labctl.protocol.loader import load_file

    workcell = _workcell(args.workcell) if args.workcell else None
    worst = EXIT_OK
    for f in args.files:
        try:
            res = load_file(f, workcell=workcell)
        except InputFileError as exc:
            msg = str(exc)
            _err(
                msg
                if ": error:" in msg
                else f"{msg.split(': ', 1)[0]}: error: {msg.split(': ', 1)[-1]}"
            )
            worst = EXIT_UNREADABLE
            continue
        for d in res.diagnostics:
            _out(d.format())
        ne, nw = len(res.errors), len(res.warnings)
        if ne:
            _out(f"{f}: {ne} error(s), {nw} warning(s)")
            worst = max(worst, EXIT_INVALID) if worst != EXIT_UNREADABLE else worst
        elif not args.quiet:
            _out(f"{f}: valid" + (f" ({nw} warning(s))" if nw else ""))
    return worst


# --- plan ---------------------------------------------------------------------------------


def _load_or_fail(path: str, workcell: object | None = None):  # noqa: ANN202 - Protocol
    from labctl.protocol.loader import load_file

    res = load_file(path, workcell=workcell)
    if not res.ok or res.protocol is None:
        raise ProtocolError(res.diagnostics)
    for w in res.warnings:
        _err(w.format())
    return res.protocol


def _workcell(path: str):  # noqa: ANN202 - Workcell
    from labctl.workcell import load_workcell

    return load_workcell(path)


def _start(text: str | None, tz: str) -> datetime:
    from zoneinfo import ZoneInfo

    from labctl.clock import RealClock
    from labctl.resolve import zone

    zone(tz)
    if text is None:
        # Default: tomorrow, in the run's time zone (the time of day comes from the protocol).
        now = RealClock().now().astimezone(ZoneInfo(tz))
        return datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ParameterError(
            f"--start '{text}' is not a date and time like 2026-12-01T09:00"
        ) from None
    return dt


def _resolve_args(args: argparse.Namespace):  # noqa: ANN202 - (Protocol, Plan)
    from labctl.resolve import parse_param_args, resolve

    wc = _workcell(args.workcell) if getattr(args, "workcell", None) else None
    tz = args.tz or (wc.timezone if wc is not None else "UTC")
    proto = _load_or_fail(args.file, wc)
    plan = resolve(
        proto,
        parse_param_args(args.param or []),
        plates=args.plates,
        start=_start(args.start, tz),
        timezone=tz,
        strict=False,
    )
    for i in plan.issues:
        _err(f"{args.file}:{i.loc.line}:{i.loc.col}: {i.severity}: {i.message}")
    if any(i.severity == "error" for i in plan.issues):
        raise PlanError("the protocol cannot be run with these parameters (see above)")
    return proto, plan


def cmd_plan(args: argparse.Namespace) -> int:
    from labctl.render import render_plan
    from labctl.resolve import plan_to_json

    if args.suggest_start:
        return _suggest_start(args)
    _proto, plan = _resolve_args(args)
    if args.json:
        _out(json.dumps(plan_to_json(plan), indent=2, ensure_ascii=False))
    else:
        _out(render_plan(plan, show_well=args.well))
    return EXIT_OK


def _suggest_start(args: argparse.Namespace) -> int:
    from labctl.scheduler import suggest_starts_cli

    return int(suggest_starts_cli(args))


# --- prep ---------------------------------------------------------------------------------


def cmd_prep(args: argparse.Namespace) -> int:
    from labctl.prep import (
        PrepSettings,
        forecast,
        prep_sheets,
        render_forecast,
        render_html,
        render_text,
    )

    proto, plan = _resolve_args(args)
    settings = PrepSettings(
        dead_volume_ul=args.dead_volume * 1000,
        overage=args.overage / 100,
        min_pipette_ul=args.min_pipette,
    )
    if args.day is not None and not plan.first_day <= args.day <= plan.last_day:
        raise ParameterError(
            f"--day {args.day} is outside the protocol's days {plan.first_day} to {plan.last_day}"
        )
    sheets = prep_sheets(proto, plan, args.day, settings)
    fc = forecast(proto, plan, settings) if args.day is None or args.forecast else None
    if args.html:
        Path(args.html).write_text(render_html(proto, plan, sheets, fc), encoding="utf-8")
        _out(f"wrote {args.html}")
        return EXIT_OK
    if not sheets:
        _out(f"Nothing to prepare on day {args.day}.")
    else:
        _out(render_text(proto, sheets))
    if fc is not None:
        _out(render_forecast(fc))
    return EXIT_OK


# --- diagram, schema ----------------------------------------------------------------------


def cmd_diagram(args: argparse.Namespace) -> int:
    from labctl.diagram import draw  # matplotlib: imported only here

    proto, plan = _resolve_args(args)
    draw(proto, plan, args.output)
    _out(f"wrote {args.output}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from labctl.protocol.schema import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
        _out(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------


def _plan_options(p: argparse.ArgumentParser) -> None:
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        _err(f"labctl: error: {message}")
        raise SystemExit(EXIT_UNREADABLE)


def build_parser() -> argparse.ArgumentParser:
    from labctl import __version__

    parser = _Parser(
        prog="labctl", description="Controller for automated stem-cell differentiation."
    )
    parser.add_argument("--version", action="version", version=f"labctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("validate", help="check protocol files (file:line:col messages)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--workcell", help="also check environment setpoints against this workcell")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="resolve a protocol into a day-by-day plan")
    _plan_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--well", action="store_true", help="show the concentrations in the well after each task"
    )
    p.add_argument(
        "--suggest-start", action="store_true", help="rank start dates (needs a workcell)"
    )
    p.add_argument(
        "--weeks", type=int, default=4, help="with --suggest-start: how far ahead to look"
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("prep", help="media prep sheets and the consumables forecast")
    _plan_options(p)
    p.add_argument("--day", type=int, help="only this protocol day (default: every day)")
    p.add_argument("--html", metavar="FILE", help="write a printable HTML page")
    p.add_argument(
        "--forecast", action="store_true", help="with --day: also print the whole-run forecast"
    )
    p.add_argument(
        "--dead-volume",
        type=float,
        default=5.0,
        metavar="ML",
        help="reservoir dead volume per batch, mL (default 5)",
    )
    p.add_argument(
        "--overage",
        type=float,
        default=10.0,
        metavar="PCT",
        help="extra medium per batch, percent (default 10)",
    )
    p.add_argument(
        "--min-pipette",
        type=float,
        default=1.0,
        metavar="UL",
        help="smallest accurate stock volume, uL (default 1)",
    )
    p.set_defaults(func=cmd_prep)

    p = sub.add_parser("diagram", help="draw the schedule as papers do (PNG or SVG)")
    _plan_options(p)
    p.add_argument("-o", "--output", required=True, help="output file, .png or .svg")
    p.set_defaults(func=cmd_diagram)

    p = sub.add_parser("schema", help="write the JSON Schema of the protocol format")
    p.add_argument("-o", "--output", help="output file (default: standard output)")
    p.set_defaults(func=cmd_schema)

    _register_more(sub)
    return parser


# Commands of later stages (engine, simulators, console) add themselves here.
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def _register_more(sub: argparse._SubParsersAction) -> None:
    from labctl import cli_run, simulate  # noqa: F401 - they register their commands

    for reg in EXTRA_COMMANDS:
        reg(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_UNREADABLE
    try:
        return int(args.func(args))
    except ProtocolError as exc:
        for d in exc.diagnostics:
            _err(d.format())
        return EXIT_INVALID
    except InputFileError as exc:
        _err(f"labctl: error: {exc}")
        return EXIT_UNREADABLE
    except LabctlError as exc:
        _err(f"labctl: error: {exc.user_message()}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        _err("labctl: interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the user gets one line, the log the traceback
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> int:
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
    _err(f"labctl: internal error: {type(exc).__name__}: {exc}{where}")
    return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
