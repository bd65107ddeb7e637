"""Commands for the scientist's side: validate, plan (and start dates), prep, diagram, schema,
diff.

None of them needs a workcell's devices or a run database: each reads a protocol file,
checks or resolves it and prints (or writes) what a person reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path

from labctl.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNREADABLE,
    add_plan_options,
    check_output_path,
    err,
    load_or_fail,
    out,
    read_workcell,
    resolve_args,
)
from labctl.errors import InputFileError, ParameterError, PlanError, ProtocolError


def cmd_validate(args: argparse.Namespace) -> int:
    from labctl.validate import load_file

    workcell = read_workcell(args.workcell) if args.workcell else None
    worst = EXIT_OK
    for f in args.files:
        try:
            res = load_file(f, workcell=workcell)
        except InputFileError as exc:
            msg = str(exc)
            err(
                msg
                if ": error:" in msg
                else f"{msg.split(': ', 1)[0]}: error: {msg.split(': ', 1)[-1]}"
            )
            worst = EXIT_UNREADABLE
            continue
        for d in res.diagnostics:
            out(d.format())
        ne, nw = len(res.errors), len(res.warnings)
        if ne:
            out(f"{f}: {ne} error(s), {nw} warning(s)")
            worst = max(worst, EXIT_INVALID) if worst != EXIT_UNREADABLE else worst
        elif not args.quiet:
            out(f"{f}: valid" + (f" ({nw} warning(s))" if nw else ""))
    return worst


def cmd_plan(args: argparse.Namespace) -> int:
    from labctl.plan.resolve import plan_to_json
    from labctl.reports.plan_text import render_plan

    if args.suggest_start:
        return suggest_start(args)
    _proto, plan = resolve_args(args)
    if args.json:
        out(json.dumps(plan_to_json(plan, spelling="format"), indent=2, ensure_ascii=False))
    else:
        out(render_plan(plan, show_well=args.well))
    return EXIT_OK


def suggest_start(args: argparse.Namespace) -> int:
    """``labctl plan FILE --suggest-start --workcell W --weeks 4 --plates N``: a ranked table.

    Candidates are the next ``weeks`` x 7 days from tomorrow (in the run's time zone);
    "today" comes from the real clock. Operator hours are the workcell's, in its own zone.
    """
    from labctl.clock import RealClock
    from labctl.jobs import WorkcellRoles, climates
    from labctl.plan.resolve import Plan, parse_param_args, resolve, zone
    from labctl.schedule.suggest import hours_text, suggest_starts

    if not getattr(args, "workcell", None):
        raise ParameterError(
            "--suggest-start needs --workcell FILE (devices and operator hours come from it)"
        )
    weeks = int(getattr(args, "weeks", 4) or 4)
    if not 1 <= weeks <= 52:
        raise ParameterError(f"--weeks must be between 1 and 52, not {weeks}")
    n = int(getattr(args, "plates", 1) or 1)
    wc = read_workcell(args.workcell)
    tz = getattr(args, "tz", None) or wc.timezone
    z = zone(tz)
    proto = load_or_fail(args.file, wc)
    params = parse_param_args(getattr(args, "param", None) or [])
    plates = [f"P{i}" for i in range(1, n + 1)]
    mo = proto.timing.max_out_of_incubator
    max_out = float(mo.to("s").magnitude) if mo is not None else None
    today: date = RealClock().now().astimezone(z).date()
    candidates = [
        datetime.combine(today + timedelta(days=k), time(0, 0)) for k in range(1, weeks * 7 + 1)
    ]

    def factory(start: datetime) -> Plan:
        return resolve(proto, params, plates=n, start=start, timezone=tz, strict=True)

    # The climates a plan asks for do not depend on its start: any candidate's plan says.
    first = resolve(proto, params, plates=n, start=candidates[0], timezone=tz)
    roles = WorkcellRoles.from_workcell(wc, plates, climates=climates(first))
    scores = suggest_starts(
        factory, candidates, roles, wc.operator_calendar(), tz, max_out_s=max_out
    )
    w = sys.stdout.write
    w(
        f"Start dates for {proto.id} with {n} plate(s) on {wc.name} "
        f"(operator hours: {hours_text(wc.operator_hours)}, {wc.timezone}; run time zone {tz}), best first:\n\n"
    )
    w(f"{'rank':>4}  {'day 0':<15} {'penalty':>8} {'late LH':>8} {'manual out':>10}  notes\n")
    for r, s in enumerate(scores, 1):
        note = "everything fits" if s.ok else s.reasons[0]
        more = f" (+{len(s.reasons) - 1} more)" if len(s.reasons) > 1 else ""
        w(
            f"{r:>4}  {s.start.astimezone(z):%a %Y-%m-%d} {s.penalty:>8g} "
            f"{s.feeds_late:>8} {s.manual_outside:>10}  {note}{more}\n"
        )
    return EXIT_OK


def cmd_prep(args: argparse.Namespace) -> int:
    from labctl.plan.prep import (
        PrepSettings,
        forecast,
        prep_sheets,
        render_forecast,
        render_html,
        render_text,
    )

    proto, plan = resolve_args(args)
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
        out(f"wrote {args.html}")
        return EXIT_OK
    if not sheets:
        out(f"Nothing to prepare on day {args.day}.")
    else:
        out(render_text(proto, sheets))
    if fc is not None:
        out(render_forecast(fc))
    return EXIT_OK


def cmd_diagram(args: argparse.Namespace) -> int:
    from labctl.reports.diagram import draw  # matplotlib: imported only here

    check_output_path(Path(args.output))
    proto, plan = resolve_args(args)
    draw(proto, plan, args.output)
    out(f"wrote {args.output}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from labctl.protocol.schema import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.output:
        check_output_path(Path(args.output))
        Path(args.output).write_text(text, encoding="utf-8")
        out(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


DIFF_EXIT = """exit status (as diff(1)):
  0   no difference in substance: the files are identical, or differ only in text
      (id, title, version, description, reference, phases, parameter descriptions,
      comments, layout, or equal values written differently, e.g. 3000 nM for 3 uM)
  1   differences in substance: what the cells receive or how they are handled
      (media, stocks, doses, feeds, timing, culture, environment, events)
  2   trouble: a file cannot be read or is not a valid protocol (file:line:column)"""


def _load_for_diff(path: str) -> object:
    """The checked protocol in ``path``, or one line saying why it cannot be compared."""
    from labctl.validate import load_file

    try:
        res = load_file(path)
    except InputFileError as exc:
        msg = str(exc)
        return (
            msg
            if ": error:" in msg
            else f"{msg.split(': ', 1)[0]}: error: {msg.split(': ', 1)[-1]}"
        )
    if res.ok and res.protocol is not None:
        return res.protocol
    errors = res.errors
    if not errors:
        return f"{path}: error: not a valid protocol"
    more = (
        f" (and {len(errors) - 1} more: labctl validate {path} lists them)"
        if len(errors) > 1
        else ""
    )
    return errors[0].format() + more


def cmd_diff(args: argparse.Namespace) -> int:
    """``labctl diff OLD NEW``: 0 same in substance, 1 different, 2 trouble (DIFF_EXIT)."""
    from labctl.plan.diff import compare, diff_to_json, render_text
    from labctl.protocol.model import Protocol

    loaded = [_load_for_diff(args.old), _load_for_diff(args.new)]
    problems = [x for x in loaded if not isinstance(x, Protocol)]
    for msg in problems:
        err(str(msg))
    if problems:
        return EXIT_UNREADABLE
    old, new = loaded
    assert isinstance(old, Protocol) and isinstance(new, Protocol)
    try:
        d = compare(old, new)
    except (PlanError, ProtocolError) as exc:
        err(f"labctl: error: {exc}")
        return EXIT_UNREADABLE
    if args.json:
        out(json.dumps(diff_to_json(d), indent=2, ensure_ascii=False))
    else:
        out(render_text(d))
    return EXIT_OK if d.same_in_substance else EXIT_INVALID


def register(sub: argparse._SubParsersAction) -> None:
    """Add validate, plan, prep, diagram, schema and diff to the parser's subcommands."""
    p = sub.add_parser("validate", help="check protocol files (file:line:col messages)")
    p.add_argument("files", nargs="+", metavar="FILE", help="protocol YAML file(s) to check")
    p.add_argument("--workcell", help="also check environment setpoints against this workcell")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="resolve a protocol into a day-by-day plan")
    add_plan_options(p)
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
    add_plan_options(p)
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
    add_plan_options(p)
    p.add_argument("-o", "--output", required=True, help="output file, .png or .svg")
    p.set_defaults(func=cmd_diagram)

    p = sub.add_parser("schema", help="write the JSON Schema of the protocol format")
    p.add_argument("-o", "--output", help="output file (default: standard output)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser(
        "diff",
        help="what changed between two versions of a protocol, as a scientist reads it",
        description="Compare two protocol files: their declarations, and the schedule as "
        "resolved day by day (medium, factors, feeds, additions, environment, events).",
        epilog=DIFF_EXIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("old", metavar="OLD", help="the earlier protocol file")
    p.add_argument("new", metavar="NEW", help="the later protocol file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_diff)
