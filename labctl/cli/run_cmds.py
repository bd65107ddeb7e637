"""CLI commands of the run engine: run, engine, status, pause/resume/abort/skip, prompts,
answer, audit verify, report.

Every command except ``engine`` is a client of the store: it reads state, or queues an
operator command that the engine applies (DESIGN.md: one place writes state).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import Any

from labctl.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    err,
    load_or_fail,
    out,
    read_workcell,
    start_time,
)
from labctl.errors import LabctlError, ParameterError


def _actor(args: argparse.Namespace) -> str:
    if getattr(args, "actor", None):
        return args.actor
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "operator"


def open_store(args: argparse.Namespace, *, virtual: bool = False):  # noqa: ANN201 - (Store, Clock)
    from labctl.clock import RealClock
    from labctl.store import Store

    path = Path(args.db) if getattr(args, "db", None) else Store.default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return Store.open(path, RealClock()), path


def cmd_run(args: argparse.Namespace) -> int:
    from labctl.clock import RealClock
    from labctl.engine import register_run
    from labctl.jobs import WorkcellRoles
    from labctl.plan.resolve import parse_param_args, resolve

    wc = read_workcell(args.workcell) if args.workcell else None
    tz = args.tz or (wc.timezone if wc else "UTC")
    proto = load_or_fail(args.file, wc)
    plan = resolve(
        proto,
        parse_param_args(args.param or []),
        plates=args.plates,
        start=start_time(args.start, tz),
        timezone=tz,
    )
    labels = [f"P{i + 1}" for i in range(args.plates)]
    roles = WorkcellRoles.from_workcell(wc, labels) if wc else WorkcellRoles.simulated(labels)
    store, path = open_store(args)
    with store:
        run_id = register_run(
            store,
            RealClock(),
            proto,
            plan,
            roles,
            name=args.name or f"{proto.id} {plan.start:%Y-%m-%d}",
            workcell_name=wc.name if wc else "simulated",
            workcell_text=Path(args.workcell).read_text() if args.workcell else "",
            actor=_actor(args),
            operators=wc.operator_calendar() if wc else None,
        )
        store.insert_command(
            "start", actor=_actor(args), run_id=run_id, reason="registered with labctl run"
        )
    out(
        f"run {run_id} registered in {path}: {len(plan.tasks)} tasks on {args.plates} plate(s); the engine starts it (labctl engine)"
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        runs = [store.get_run(args.run)] if args.run else store.list_runs()
        if not runs:
            out(f"no runs in {path}")
            return EXIT_OK
        for run in runs:
            s = store.run_summary(run.id)
            tasks = store.tasks(run.id)
            nxt = next((t for t in tasks if t.state == "pending"), None)
            alarms = store.alarms_for_run(run.id, active_only=True)
            prompts = store.open_prompts(run.id)
            out(
                f"run {run.id} '{run.name}': {run.state}; {run.protocol_id} v{run.protocol_version}, {run.plates} plate(s), day 0 {run.start:%Y-%m-%d}"
            )
            out(
                f"  tasks: {json.dumps(getattr(s, 'tasks_by_state', {}))}; jobs: {json.dumps(getattr(s, 'jobs_by_state', {}))}"
            )
            if nxt:
                out(f"  next: {nxt.key} due {nxt.due:%Y-%m-%d %H:%M} UTC")
            for a in alarms:
                out(f"  ALARM [{a.code}] {a.device or ''}: {a.message}")
            for p in prompts:
                out(f"  PROMPT {p.id} ({p.kind}): {p.text}")
    return EXIT_OK


def _command(args: argparse.Namespace, verb: str, extra: dict[str, Any] | None = None) -> int:
    if verb in ("pause", "abort", "skip") and not args.reason:
        raise ParameterError(f"{verb} needs --reason (it goes into the audit trail)")
    store, _ = open_store(args)
    with store:
        store.get_run(args.run)  # fails clearly if there is no such run
        a = dict(extra or {})
        if getattr(args, "plate", None):
            a["plate"] = args.plate
        cmd = store.insert_command(
            verb, actor=_actor(args), run_id=args.run, args=a, reason=args.reason or ""
        )
    out(f"command {cmd.id} ({verb}) queued for run {args.run}; the engine applies it")
    return EXIT_OK


def cmd_pause(args: argparse.Namespace) -> int:
    return _command(args, "pause")


def cmd_resume(args: argparse.Namespace) -> int:
    return _command(args, "resume")


def cmd_abort(args: argparse.Namespace) -> int:
    if not args.yes:
        raise ParameterError("abort cannot be undone: add --yes to confirm")
    return _command(args, "abort")


def cmd_skip(args: argparse.Namespace) -> int:
    return _command(args, "skip", {"task": args.task})


def cmd_prompts(args: argparse.Namespace) -> int:
    store, _ = open_store(args)
    with store:
        prompts = store.open_prompts(args.run)
        if not prompts:
            out("no open prompts")
        for p in prompts:
            default = (
                f" default '{p.default_choice}' at {p.deadline:%H:%M} UTC"
                if p.deadline and p.default_choice
                else ""
            )
            choices = ", ".join(
                c if isinstance(c, str) else c.get("measure", str(c)) for c in p.choices
            )
            out(
                f"{p.id} run {p.run_id} [{p.kind}] {p.text}"
                + (f"\n    choices: {choices}{default}" if choices else "")
            )
    return EXIT_OK


def cmd_answer(args: argparse.Namespace) -> int:
    store, _ = open_store(args)
    with store:
        p = store.get_prompt(args.prompt)
        if p.state != "open":
            raise LabctlError(f"prompt {p.id} is {p.state}, not open")
        answer: dict[str, Any] = {}
        if args.choice:
            answer["choice"] = args.choice
        if args.value:
            qc = {}
            for kv in args.value:
                k, _, v = kv.partition("=")
                try:
                    qc[k.strip()] = float(v)
                except ValueError:
                    raise ParameterError(f"--value {kv}: the value must be a number") from None
            answer["qc"] = qc
        if args.lot:
            answer["lots"] = dict(x.partition("=")[::2] for x in args.lot)
        answer.setdefault("done", True)
        store.insert_command(
            "answer",
            actor=_actor(args),
            run_id=p.run_id,
            args={"prompt": p.id, "answer": answer},
            reason=args.reason or "",
        )
    out(f"answer to prompt {args.prompt} queued")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        rep = store.verify_chain()
    if rep.ok:
        out(f"{path}: audit chain verified ({rep.rows_checked} events)")
        return EXIT_OK
    err(f"{path}: audit chain BROKEN: {rep.message}")
    return EXIT_INVALID


def cmd_report(args: argparse.Namespace) -> int:
    from labctl.reports.batch import batch_record

    store, _ = open_store(args)
    with store:
        text = batch_record(store, args.run)
    Path(args.output).write_text(text, encoding="utf-8")
    out(f"wrote {args.output}")
    return EXIT_OK


def cmd_devices(args: argparse.Namespace) -> int:
    from labctl.plugins import load

    return int(load("devices_check")(args))


def cmd_console(args: argparse.Namespace) -> int:
    """The Qt operator console (a client of the run database)."""
    from labctl.plugins import load

    return int(load("console")(args.db))


def cmd_engine(args: argparse.Namespace) -> int:
    from labctl.clock import RealClock
    from labctl.engine import Engine, EngineConfig
    from labctl.plugins import load

    build_devices = load("build_devices")  # the drivers layer builds devices by name
    store, path = open_store(args)
    clock = RealClock()
    wc = read_workcell(args.workcell) if args.workcell else None
    devices = build_devices(wc, store, clock)
    eng = Engine(store, clock, devices, EngineConfig())
    out(
        f"engine on {path} with devices {', '.join(devices)}; Ctrl-C to stop (runs stay as they are)"
    )
    with store:
        # Wake at least every 2 s so operator commands from consoles apply promptly.
        eng.run(max_steps=1 if args.once else None, max_idle_s=2.0)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    def db(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            default=os.environ.get("LABCTL_DB"),
            help="run database (default: user data dir, or $LABCTL_DB)",
        )
        p.add_argument("--actor", help="who is acting (default: your user name)")

    p = sub.add_parser("run", help="register a run of a protocol on a workcell")
    p.add_argument("file")
    p.add_argument("--workcell", help="workcell YAML (default: the simulated workcell)")
    p.add_argument("--plates", type=int, default=1)
    p.add_argument("--start", help="day 0, e.g. 2026-12-01T09:00")
    p.add_argument("--tz")
    p.add_argument("--name")
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    db(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("devices", help="device tools")
    p.add_argument("action", choices=["check"])
    p.add_argument("--workcell", required=True)
    db(p)
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("console", help="the operator console (Qt window)")
    db(p)
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("engine", help="run the engine loop on the workcell")
    p.add_argument("--workcell")
    p.add_argument("--once", action="store_true", help="one pass of the loop, then exit")
    db(p)
    p.set_defaults(func=cmd_engine)

    p = sub.add_parser("status", help="state of runs")
    p.add_argument("run", nargs="?", type=int)
    db(p)
    p.set_defaults(func=cmd_status)

    for verb, fn, h in (
        ("pause", cmd_pause, "pause a run (or one plate)"),
        ("resume", cmd_resume, "resume a run (or one plate)"),
        ("abort", cmd_abort, "abort a run (cannot be undone)"),
    ):
        p = sub.add_parser(verb, help=h)
        p.add_argument("run", type=int)
        p.add_argument("--reason", default="")
        p.add_argument("--plate")
        if verb == "abort":
            p.add_argument("--yes", action="store_true", help="confirm")
        db(p)
        p.set_defaults(func=fn)

    p = sub.add_parser("skip", help="skip a task (recorded as a deviation)")
    p.add_argument("run", type=int)
    p.add_argument("task")
    p.add_argument("--plate")
    p.add_argument("--reason", default="")
    db(p)
    p.set_defaults(func=cmd_skip)

    p = sub.add_parser("prompts", help="open operator prompts")
    p.add_argument("--run", type=int)
    db(p)
    p.set_defaults(func=cmd_prompts)

    p = sub.add_parser("answer", help="answer an operator prompt")
    p.add_argument("prompt", type=int)
    p.add_argument("choice", nargs="?")
    p.add_argument("--value", action="append", metavar="MEASURE=NUMBER", help="a QC value")
    p.add_argument("--lot", action="append", metavar="REAGENT=LOT")
    p.add_argument("--reason", default="")
    db(p)
    p.set_defaults(func=cmd_answer)

    p = sub.add_parser("audit", help="audit trail tools")
    p.add_argument("action", choices=["verify"])
    db(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("report", help="write the batch record of a run (HTML)")
    p.add_argument("run", type=int)
    p.add_argument("-o", "--output", required=True)
    db(p)
    p.set_defaults(func=cmd_report)
