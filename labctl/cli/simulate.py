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
    err,
    load_or_fail,
    out,
    start_time,
)
from labctl.clock import PacedClock, RealClock, VirtualClock
from labctl.plugins import load

# Paced runs: at most an hour a second. A serial exchange takes about a millisecond of real
# time; much faster than this and that is more than the drivers' one-second reply time-out.
MAX_PACE = 3600.0


def _out_dir(args: argparse.Namespace, protocol_id: str) -> Path:
    if args.out:
        return Path(args.out)
    from platformdirs import user_data_path

    stamp = RealClock().now().strftime("%Y%m%d-%H%M%S")
    return user_data_path("labctl") / "simulations" / f"{protocol_id}-{stamp}-{os.getpid()}"


def simulate(args: argparse.Namespace) -> int:
    if args.pace is not None and not 0 < args.pace <= MAX_PACE:
        err(
            f"labctl simulate: --pace must be above 0 and at most {MAX_PACE:g}, not {args.pace:g}:"
            " faster, the devices' reply time-outs (a second of device time) pass before a"
            " reply can cross the serial line (use virtual time: leave --pace out)"
        )
        return EXIT_INVALID
    # The simulated robot's slowest start (opentrons' import, ~2 s, in a process of its own)
    # first, so that it overlaps importing, reading and resolving everything else.
    load("start_robot_analysis")()
    SimulatedWorkcell = load("simulated_workcell")  # noqa: N806 - a class from a plugin
    from labctl.engine import Engine, EngineConfig, register_run
    from labctl.jobs import WorkcellRoles, climates, seeded_climate
    from labctl.plan.resolve import parse_param_args, resolve
    from labctl.reports.batch import batch_record
    from labctl.store import Store
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
    folder = _out_dir(args, proto.id)
    folder.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else folder / "run.db"
    first = min((t.window_start for t in plan.tasks), default=plan.start)
    t0 = min(first, plan.start.astimezone(first.tzinfo)) - timedelta(hours=1)
    clock: Any = PacedClock(t0, args.pace) if args.pace else VirtualClock(t0)
    scenario = load("load_scenario")(args.faults) if args.faults else None
    build_devices = load("build_devices")
    store = Store.open(db, clock, durable=False)  # a dry run need not survive a power cut
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
        last = max((t.window_end for t in plan.tasks), default=plan.start)
        give_up = last + timedelta(days=args.grace_days)
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
    _print_summary(summary, db, report, folder, wall_s)
    return EXIT_OK if summary["state"] == "completed" else EXIT_INVALID


def summarize(store: Any, run_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Figures of a finished (or stopped) run, from the store.

    ``now`` (the simulation's end) counts a plate still out of the incubator when the run
    stopped (fetched, not stored again) up to that moment; without it such a plate is left out.
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
    out_of_incubator: dict[str, list[float]] = defaultdict(list)
    still_out: set[str] = set()
    plates = {p.id: p.label for p in store.plates(run_id)}
    late = []
    for t in tasks:
        js = sorted(by_task[t.id], key=lambda j: j.seq)
        fetch = next((j for j in js if j.op == "fetch"), None)
        store_j = next((j for j in js if j.op == "store"), None)
        if fetch and fetch.finished_at and fetch.state == "done":
            returned = store_j is not None and store_j.started_at is not None
            back = store_j.started_at if store_j is not None and returned else now
            if back is not None:
                label = plates.get(t.plate_id, "?")
                out_of_incubator[label].append((back - fetch.finished_at).total_seconds())
                if not returned:
                    still_out.add(label)
        # The window bounds the start of the task's main job (the liquid handling, the
        # event, the setpoint), not of the plate's fetch before it.
        main_seq = int((t.spec or {}).get("main_seq", 0))
        main = next((j for j in js if j.seq == main_seq), None)
        started = main.started_at if main is not None and main.started_at else None
        if started and t.window_end and started > t.window_end:
            late.append(t)
    return {
        "state": run.state,
        "tasks": dict(by_state),
        "total": len(tasks),
        "late": len(late),
        "deviations": len(store.events(run_id, action="deviation", limit=None)),
        "alarms": [
            (a.code, a.device or "", a.message, a.state) for a in store.alarms_for_run(run_id)
        ],
        "open_prompts": [p.text for p in store.open_prompts(run_id)],
        "utilisation": {d: (b / span if span else 0.0) for d, b in sorted(busy.items())},
        "busy_h": {d: b / 3600 for d, b in sorted(busy.items())},
        "out_of_incubator": {
            p: (max(v), sum(v) / len(v), len(v)) for p, v in sorted(out_of_incubator.items())
        },
        "still_out": sorted(still_out),
        "audit_ok": store.verify_chain().ok,
        "span_days": span / 86400,
    }


def _print_summary(s: dict[str, Any], db: Path, report: Path, folder: Path, wall_s: float) -> None:
    done = s["tasks"].get("done", 0)
    out("")
    out(
        f"run {s['state']}: {done} of {s['total']} tasks done"
        + "".join(f", {n} {k}" for k, n in s["tasks"].items() if k != "done")
        + f"; {s['late']} started after their window; {s['deviations']} deviation(s)"
    )
    out(
        f"simulated {s['span_days']:.1f} days in {wall_s:.1f} s; audit chain {'verified' if s['audit_ok'] else 'BROKEN'}"
    )
    made, slept = s.get("alarm_checks", (0, 0))
    if slept:
        out(f"device alarm checks: {made} made, {slept} slept through (nothing could have changed)")
    out("device utilisation (busy time / run span):")
    for d, u in s["utilisation"].items():
        out(f"  {d:<10} {u * 100:5.1f}%  ({s['busy_h'][d]:.1f} h)")
    out("time out of the incubator per plate (longest, mean, times):")
    for p, (mx, mean, n) in s["out_of_incubator"].items():
        still = ", still out when the simulation stopped" if p in s.get("still_out", ()) else ""
        out(f"  {p:<4} longest {mx / 60:5.1f} min, mean {mean / 60:5.1f} min, {n} times{still}")
    if s["alarms"]:
        out(f"alarms ({len(s['alarms'])}):")
        for code, dev, msg, state in s["alarms"][:20]:
            out(f"  [{code}] {dev} {msg} ({state})")
    for text in s["open_prompts"][:5]:
        out(f"waiting for the operator: {text}")
    out(f"run database: {db}")
    out(f"batch record: {report}")
    out(f"device logs:  {folder / 'devices'}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="dry-run a protocol on the simulated workcell (virtual time)"
    )
    p.add_argument("file")
    p.add_argument("--plates", type=int, default=1)
    p.add_argument("--start", help="day 0, e.g. 2026-12-01T09:00 (default: tomorrow)")
    p.add_argument("--tz", help="IANA time zone (default UTC)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    p.add_argument("--faults", metavar="SCENARIO", help="fault scenario YAML")
    p.add_argument("--db", help="run database (default: in the output folder)")
    p.add_argument("--out", help="output folder (default: the user data dir)")
    p.add_argument("--name")
    p.add_argument(
        "--pace",
        type=float,
        help="real-time acceleration instead of virtual time (1440 = a day a minute; at most 3600)",
    )
    p.add_argument(
        "--robots",
        type=int,
        default=1,
        choices=range(1, 5),
        metavar="N",
        help="liquid handlers in the simulated workcell, 1-4 (default 1); the plates are "
        "shared between them",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        choices=range(1, 3),
        metavar="N",
        help="plates each robot feeds in one run, 1-2 (default 1): the plates of a feed that "
        "share a robot are fed two at a time by one generated protocol; the simulated deck "
        "then takes plates on four positions (1, 3, 6, 9), so the arm puts the next pair down "
        "while the robot feeds this one",
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
        help="stop this long after the last window if not done",
    )
    p.add_argument(
        "--check-alarms-always",
        action="store_true",
        help="read device alarms every 10 simulated minutes even while the simulators say "
        "nothing can have changed (slower; the result is the same)",
    )
    p.set_defaults(func=simulate)
