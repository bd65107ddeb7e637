"""``labctl simulate``: a whole protocol on the built-in simulated workcell, in virtual time.

The same engine and the same drivers as a real run talk over HTTP and a pseudo-terminal to
wire-level simulators (started here, found as plugins: the core imports neither drivers
nor simulators). The run database, the workcell file, the devices' action logs and the
batch record are written to one folder, printed at the end.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from labctl.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    alarm_line,
    check_db_path,
    err,
    load_or_fail,
    open_db,
    out,
    start_time,
)
from labctl.clock import PacedClock, RealClock, VirtualClock
from labctl.errors import InputFileError
from labctl.plugins import load

# Paced runs: at most an hour a second. A serial exchange takes about a millisecond of real
# time; much faster than this and that is more than the drivers' one-second reply time-out.
MAX_PACE = 3600.0
MAX_ROBOTS = 4  # the simulated workcell's robots (its arm has stations for four decks)
MAX_BATCH = 2  # plates a simulated robot feeds in one run (its deck takes two pairs)


def _out_dir(args: argparse.Namespace, protocol_id: str) -> Path:
    """The output folder, made now: ``--out`` (its parent must exist: a mistyped path is
    refused, not made), else a new one in labctl's own data folder."""
    if args.out:
        folder = Path(args.out)
        if folder.exists() and not folder.is_dir():
            raise InputFileError(f"--out {folder}: a file, not a folder")
        if not folder.parent.is_dir():
            raise InputFileError(
                f"--out {folder}: the folder {folder.parent} does not exist; check the path, "
                f"or make it first (mkdir -p {folder.parent})"
            )
        parents = False
    else:
        from platformdirs import user_data_path

        stamp = RealClock().now().strftime("%Y%m%d-%H%M%S")
        folder = user_data_path("labctl") / "simulations" / f"{protocol_id}-{stamp}-{os.getpid()}"
        parents = True
    try:
        folder.mkdir(parents=parents, exist_ok=True)
    except OSError as exc:
        raise InputFileError(f"cannot make the output folder {folder}: {exc.strerror}") from None
    return folder


def _number_out_of_range(args: argparse.Namespace) -> str | None:
    """What is wrong with a number of the command line (invalid input, exit 1), if any."""
    if args.pace is not None and not 0 < args.pace <= MAX_PACE:
        return (
            f"--pace must be above 0 and at most {MAX_PACE:g}, not {args.pace:g}: faster, the"
            " devices' reply time-outs (a second of device time) pass before a reply can cross"
            " the serial line (use virtual time: leave --pace out)"
        )
    if not 1 <= args.robots <= MAX_ROBOTS:
        return f"--robots must be 1 to {MAX_ROBOTS}, not {args.robots}"
    if not 1 <= args.batch <= MAX_BATCH:
        return f"--batch must be 1 or {MAX_BATCH}, not {args.batch}"
    if not args.grace_days >= 0:
        return f"--grace-days must be 0 or more, not {args.grace_days:g}"
    return None


def simulate(args: argparse.Namespace) -> int:
    wrong = _number_out_of_range(args)
    if wrong is not None:
        err(f"labctl simulate: {wrong}")  # before anything is written
        return EXIT_INVALID
    # The simulated robot's slowest start (opentrons' import, ~2 s, in a process of its own)
    # first, so that it overlaps importing, reading and resolving everything else.
    load("start_robot_analysis")()
    SimulatedWorkcell = load("simulated_workcell")  # noqa: N806 - a class from a plugin
    from labctl.engine import Engine, EngineConfig, register_run
    from labctl.jobs import WorkcellRoles, climates, seeded_climate
    from labctl.plan.resolve import parse_param_args, resolve
    from labctl.reports.batch import batch_record
    from labctl.workcell import parse_workcell

    tz = args.tz or "UTC"
    proto = load_or_fail(args.file)
    plan = resolve(
        proto,
        parse_param_args(args.param or []),
        plates=args.plates,
        start=start_time(args.start, tz),
        timezone=tz,
    )
    labels = [f"P{i + 1}" for i in range(args.plates)]
    first = min((t.window_start for t in plan.tasks), default=plan.start)
    t0 = min(first, plan.start.astimezone(first.tzinfo)) - timedelta(hours=1)
    last = max((t.window_end for t in plan.tasks), default=plan.start)
    give_up = last + timedelta(days=args.grace_days)
    # The scenario is read (and its times placed on this run) before anything is written: a
    # fault that could never fire is refused, not silently left out.
    scenario = (
        load("load_scenario")(args.faults, day0=plan.start, span=(t0, give_up))
        if args.faults
        else None
    )
    folder = _out_dir(args, proto.id)
    db = Path(args.db) if args.db else folder / "run.db"
    check_db_path(db, create=True)
    clock: Any = PacedClock(t0, args.pace) if args.pace else VirtualClock(t0)
    build_devices = load("build_devices")
    store = open_db(db, clock, create=True, durable=False)  # a dry run need not survive a power cut
    try:
        store.claim_for("dry-run", actor="simulate")
    except BaseException:
        store.close()
        raise
    with (
        store,
        SimulatedWorkcell(
            clock,
            store,
            labels,
            folder / "devices",
            scenario=scenario,
            timezone=tz,
            arm=not args.no_arm,
            robots=args.robots,
            batch=args.batch,
            climates=climates(plan),
            start=seeded_climate(plan),
        ) as sim,
    ):
        text = sim.workcell_text()
        (folder / "workcell.yaml").write_text(text, encoding="utf-8")
        wc = parse_workcell(text, str(folder / "workcell.yaml"))
        roles = WorkcellRoles.from_workcell(wc, labels, climates=climates(plan))
        devices = build_devices(wc, store, clock, sim=sim)
        run_id = register_run(
            store,
            clock,
            proto,
            plan,
            roles,
            name=args.name or f"dry run {proto.id}",
            workcell_name=wc.name,
            workcell_text=text,
            actor="simulate",
            operators=wc.operator_calendar(),
        )
        store.insert_command("start", actor="simulate", run_id=run_id, reason="labctl simulate")
        # In virtual time the simulators say when nothing can have changed, and the engine
        # sleeps through alarm checks that would only re-read the last one (paced runs,
        # where a trainee may act at any moment, check on the clock).
        engine = Engine(
            store,
            clock,
            devices,
            EngineConfig(alarm_check_s=600.0 if not args.pace else 60.0),
            watch=None if args.pace or args.check_alarms_always else sim,
        )
        engine.hooks.append(lambda now: sim.tick([run_id]))
        engine.wakes.append(sim.next_decision)  # the scripted operator answers on time
        out(
            f"simulating {proto.id} v{proto.version} on {args.plates} plate(s), day 0 = {plan.start:%Y-%m-%d}"
            + (f", faults from {args.faults}" if args.faults else "")
            + (f", pace {args.pace:g}x" if args.pace else ", virtual time")
        )
        wall = RealClock()
        t_start = wall.monotonic()
        engine.run(
            # The loop itself ends once the run is no longer active (the engine commits
            # every state change of its runs), so only the grace period is watched here.
            until=lambda: clock.now() > give_up,
            max_idle_s=3600.0 if not args.pace else 30.0,
        )
        wall_s = wall.monotonic() - t_start
        for d in devices.values():
            close = getattr(d, "close", None)
            if callable(close):
                close()
        report = folder / "batch-record.html"
        report.write_text(batch_record(store, run_id), encoding="utf-8")
        summary = summarize(store, run_id, clock.now())
        summary["alarm_checks"] = (engine.watcher.checks_made, engine.watcher.checks_skipped)
        summary["grace_days"] = args.grace_days
    missed = expectation_missed(scenario.expect, summary) if scenario is not None else None
    _print_summary(summary, db, report, folder, wall_s)
    if scenario is not None and scenario.expect:
        _print_expectation(scenario.expect, missed or [], args.faults)
        return EXIT_OK if not missed else EXIT_INVALID
    return EXIT_OK if summary["state"] == "completed" else EXIT_INVALID


def summarize(store: Any, run_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Figures of a finished (or stopped) run, from the store.

    ``now`` is the simulation's end. Time out of the incubator counts the trips that ended
    (fetched, then stored again); a plate still out when the run stopped is listed apart
    (``out_since``: since when), never folded into those figures as if it were one long
    trip. ``simulated_days`` runs from the first step to ``now`` (to the last step without
    it); ``span_days`` (which utilisation divides by) from the first step to the last one.
    """
    run = store.get_run(run_id)
    tasks = store.tasks(run_id)
    jobs = store.jobs(run_id)
    by_state: dict[str, int] = defaultdict(int)
    for t in tasks:
        by_state[t.state] += 1
    busy: dict[str, float] = defaultdict(float)
    first = min((j.started_at for j in jobs if j.started_at), default=None)
    last = max((j.finished_at for j in jobs if j.finished_at), default=None)
    by_task: dict[int, list[Any]] = defaultdict(list)
    for j in jobs:
        by_task[j.task_id].append(j)
        # A job that rode in another's robot run took no robot time of its own.
        if j.started_at and j.finished_at and not str(j.device_op_id or "").startswith("ride:"):
            busy[j.device] += (j.finished_at - j.started_at).total_seconds()
    span = (last - first).total_seconds() if first and last else 0.0
    end = max(now, last) if now is not None and last is not None else (now or last)
    simulated = (end - first).total_seconds() if first and end else 0.0
    out_of_incubator: dict[str, list[float]] = defaultdict(list)
    out_since: dict[str, datetime] = {}
    plates = {p.id: p.label for p in store.plates(run_id)}
    late = []
    for t in tasks:
        js = sorted(by_task[t.id], key=lambda j: j.seq)
        fetch = next((j for j in js if j.op == "fetch"), None)
        store_j = next((j for j in js if j.op == "store"), None)
        if fetch and fetch.finished_at and fetch.state == "done":
            label = plates.get(t.plate_id, "?")
            if store_j is not None and store_j.started_at is not None:
                seconds = (store_j.started_at - fetch.finished_at).total_seconds()
                out_of_incubator[label].append(seconds)
            else:
                out_since[label] = min(fetch.finished_at, out_since.get(label, fetch.finished_at))
        # The window bounds the start of the task's main job (the liquid handling, the
        # event, the setpoint), not of the plate's fetch before it.
        main_seq = int((t.spec or {}).get("main_seq", 0))
        main = next((j for j in js if j.seq == main_seq), None)
        started = main.started_at if main is not None and main.started_at else None
        if started and t.window_end and started > t.window_end:
            late.append(t)
    open_prompts = store.open_prompts(run_id)
    return {
        "state": run.state,
        "tasks": dict(by_state),
        "total": len(tasks),
        "per_plate": len({t.key.split("/", 1)[0] for t in tasks}),
        "plates": run.plates,
        "late": len(late),
        "deviations": len(store.events(run_id, action="deviation", limit=None)),
        "alarms": [
            (a.code, a.device or "", a.message, a.state) for a in store.alarms_for_run(run_id)
        ],
        "open_prompts": [p.text for p in open_prompts],
        "open_prompt_kinds": [p.kind for p in open_prompts],
        "utilisation": {d: (b / span if span else 0.0) for d, b in sorted(busy.items())},
        "busy_h": {d: b / 3600 for d, b in sorted(busy.items())},
        "out_of_incubator": {
            p: (max(v), sum(v) / len(v), len(v)) for p, v in sorted(out_of_incubator.items())
        },
        "still_out": sorted(out_since),
        "out_since": dict(sorted(out_since.items())),
        "audit_ok": store.verify_chain().ok,
        "span_days": span / 86400,
        "simulated_days": simulated / 86400,
        "last_step": last,
        "end": end,
        "day0": run.start,
        "timezone": run.timezone,
    }


def _day(s: dict[str, Any], when: datetime) -> str:
    """'day 3 09:25': a moment as the run's day and local time."""
    from zoneinfo import ZoneInfo

    z = ZoneInfo(s["timezone"])
    local = when.astimezone(z)
    day = (local.date() - s["day0"].astimezone(z).date()).days
    return f"day {day} {local:%H:%M}"


def _print_summary(s: dict[str, Any], db: Path, report: Path, folder: Path, wall_s: float) -> None:
    done = s["tasks"].get("done", 0)
    out("")
    out(
        # Tasks counted as labctl run and labctl status count them: one per plate.
        f"run {s['state']}: {done} of {s['total']} tasks done"
        + "".join(f", {n} {k}" for k, n in s["tasks"].items() if k != "done")
        + f"; {s['late']} started after their window; {s['deviations']} deviation(s)"
    )
    audit = f"audit chain {'verified' if s['audit_ok'] else 'BROKEN'}"
    sim = f"simulated {s['simulated_days']:.1f} days in {wall_s:.1f} s"
    if s["state"] != "completed" and s.get("last_step") is not None:
        # Say where the days went: a run that stopped moving is watched until the end of
        # the grace period, and nothing happened in those days.
        sim += (
            f" (the last step ended on {_day(s, s['last_step'])}; the run stayed {s['state']} "
            f"until the simulation stopped on {_day(s, s['end'])}: it gives up "
            f"--grace-days {s.get('grace_days', 0):g} after the last task's window)"
        )
    out(f"{sim}; {audit}")
    made, slept = s.get("alarm_checks", (0, 0))
    if slept:
        out(f"device alarm checks: {made} made, {slept} slept through (nothing could have changed)")
    out("device utilisation (busy time / run span):")
    for d, u in s["utilisation"].items():
        out(f"  {d:<10} {u * 100:5.1f}%  ({s['busy_h'][d]:.1f} h)")
    out("time out of the incubator per plate (longest, mean, times):")
    for p, (mx, mean, n) in s["out_of_incubator"].items():
        out(f"  {p:<4} longest {mx / 60:5.1f} min, mean {mean / 60:5.1f} min, {n} times")
    for p, since in s.get("out_since", {}).items():
        hours = (s["end"] - since).total_seconds() / 3600 if s.get("end") else 0.0
        out(
            f"  {p:<4} still out when the simulation stopped: out since {_day(s, since)} "
            f"({hours:.1f} h)"
        )
    if s["alarms"]:
        out(f"alarms ({len(s['alarms'])}):")
        for code, dev, msg, state in s["alarms"][:20]:
            out(f"  {alarm_line(code, dev, msg)} ({state})")
    for text in s["open_prompts"][:5]:
        out(f"waiting for the operator: {text}")
    out(f"run database: {db}")
    out(f"batch record: {report}")
    out(f"device logs:  {folder / 'devices'}")


# ---- a scenario's expected outcome -------------------------------------------------------


def expectation_missed(expect: dict[str, Any], s: dict[str, Any]) -> list[str]:
    """How the run's end differs from a scenario's ``expect:`` block (empty: as expected).

    Keys (each optional): ``state`` the run's final state; ``late`` at most this many tasks
    started after their window; ``deviations`` exactly this many; ``open_prompts`` the kinds
    of the prompts left open, e.g. ``[recovery]`` (``[]``: none); ``alarms`` codes of
    alarms that must have been raised (others may be too).
    """
    missed = []
    if "state" in expect and s["state"] != expect["state"]:
        missed.append(f"the run ended {s['state']}, not {expect['state']}")
    if "late" in expect and s["late"] > expect["late"]:
        missed.append(f"{s['late']} tasks started after their window, more than {expect['late']}")
    if "deviations" in expect and s["deviations"] != expect["deviations"]:
        missed.append(f"{s['deviations']} deviation(s), not {expect['deviations']}")
    if "open_prompts" in expect:
        kinds, want = sorted(s["open_prompt_kinds"]), sorted(expect["open_prompts"])
        if kinds != want:
            missed.append(
                f"open prompts {', '.join(kinds) or 'none'}, not {', '.join(want) or 'none'}"
            )
    raised = {code for code, _dev, _msg, _state in s["alarms"]}
    absent = [c for c in expect.get("alarms", []) if c not in raised]
    if absent:
        missed.append(f"no {', '.join(absent)} alarm raised")
    return missed


def _expected(expect: dict[str, Any]) -> str:
    """An ``expect:`` block in words."""
    words = {
        "state": lambda v: f"the run ends {v}",
        "late": lambda v: f"at most {v} task(s) late",
        "deviations": lambda v: f"{v} deviation(s)",
        "open_prompts": lambda v: f"open prompts: {', '.join(v) or 'none'}",
        "alarms": lambda v: f"alarms raised: {', '.join(v) or 'any'}",
    }
    return "; ".join(words[k](v) for k, v in expect.items() if k in words)


def _print_expectation(expect: dict[str, Any], missed: list[str], source: str) -> None:
    said = _expected(expect)
    if not missed:
        out(f"as {source} expects ({said})")
        return
    out(f"NOT as {source} expects ({said}):")
    for m in missed:
        out(f"  {m}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="dry-run a protocol on the simulated workcell (virtual time)",
        description="Run a protocol on simulated devices, in virtual time, with the real "
        "engine and drivers; print what happened. Exit 0 when the run completes (or ends "
        "as its --faults scenario expects), 1 when it does not.",
    )
    p.add_argument("file", help="protocol YAML file")
    p.add_argument("--plates", type=int, default=1, help="number of plates (default 1)")
    p.add_argument("--start", help="day 0, e.g. 2026-12-01T09:00 (default: tomorrow)")
    p.add_argument("--tz", help="IANA time zone (default UTC)")
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="override a parameter, e.g. chir=0.8uM (repeat for several)",
    )
    p.add_argument(
        "--faults",
        metavar="SCENARIO",
        help="fault scenario YAML (scenarios/ has one per fault; times as 'day 1 08:50')",
    )
    p.add_argument(
        "--db", help="run database (default: run.db in the output folder); its folder must exist"
    )
    p.add_argument(
        "--out",
        help="output folder, made if missing (its parent must exist; default: a new folder in "
        "labctl's data folder)",
    )
    p.add_argument("--name", help="a name for the run (default: 'dry run' and the protocol id)")
    p.add_argument(
        "--pace",
        type=float,
        help="real-time acceleration instead of virtual time (1440 = a day a minute; at most 3600)",
    )
    p.add_argument(
        "--robots",
        type=int,
        default=1,
        metavar="N",
        help=f"liquid handlers in the simulated workcell, 1-{MAX_ROBOTS} (default 1); the "
        "plates are shared between them",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help=f"plates each robot feeds in one run, 1-{MAX_BATCH} (default 1): the plates of a "
        "feed that share a robot are fed two at a time by one generated protocol; the "
        "simulated deck then takes plates on four positions (1, 3, 6, 9), so the arm puts the "
        "next pair down while the robot feeds this one",
    )
    p.add_argument(
        "--no-arm",
        action="store_true",
        help="leave the plate mover out: the scripted operator carries each plate between "
        "the incubator's transfer station and the robot's deck (a workcell without an arm)",
    )
    p.add_argument(
        "--grace-days",
        type=float,
        default=3.0,
        metavar="DAYS",
        help="stop this many days after the last task's window if the run is not done (default 3)",
    )
    p.add_argument(
        "--check-alarms-always",
        action="store_true",
        help="read device alarms every 10 simulated minutes even while the simulators say "
        "nothing can have changed (slower; the result is the same)",
    )
    p.set_defaults(func=simulate)
