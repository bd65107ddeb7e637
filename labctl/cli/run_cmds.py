"""Commands that set a workcell going: run (register a run), engine (the daemon), devices
check, console, and the records: report, audit verify.

Every command except ``engine`` is a client of the store (DESIGN.md: one place writes
state); ``run`` registers a run and queues its start, which the engine applies.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from labctl.accounts import Action, AuthError, login_name
from labctl.cli import auth
from labctl.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    UsageError,
    add_db_options,
    check_db_path,
    check_output_path,
    db_path,
    err,
    load_or_fail,
    named_db,
    open_store,
    out,
    read_workcell,
    start_time,
    task_count,
)
from labctl.cli.operator_cmds import engine_line
from labctl.cli.user_cmds import require_released
from labctl.errors import InputFileError
from labctl.store import Store
from labctl.workcell import Workcell


def slots_in_use(store: Store, incubator: str) -> set[int]:
    """Incubator slots held by the plates of runs not yet finished (a new run's plates go
    elsewhere: two runs on one workcell never share a slot)."""
    taken: set[int] = set()
    for run in store.list_runs():
        if run.state in ("completed", "aborted", "failed"):
            continue
        for j in store.jobs(run.id):
            params = (j.spec or {}).get("params") or {}
            if j.device == incubator and j.op in ("fetch", "store") and "slot" in params:
                taken.add(int(params["slot"]))
    return taken


def cmd_run(args: argparse.Namespace) -> int:
    from labctl.clock import RealClock
    from labctl.engine import register_run
    from labctl.jobs import WorkcellRoles, climates, seeded_climate
    from labctl.plan.resolve import parse_param_args, resolve

    wc = read_workcell(args.workcell) if args.workcell else None
    tz = args.tz or (wc.timezone if wc else "UTC")
    proto = load_or_fail(args.file, wc)
    path = db_path(args)
    if not path.exists() and wc is not None:
        raise InputFileError(
            f"no run database at {path}: a run on a workcell goes into a database set up for "
            f"people first: labctl setup --db {path} --admin NAME"
        )
    practice_db = not path.exists()  # the embedded simulated workcell: a practice database
    if practice_db:
        check_db_path(path, create=True, named=named_db(args))
    # The plan is resolved before a new database is made: a mistake in the inputs (a
    # parameter, the plates, the start) leaves no empty database behind. An existing one
    # may keep a practice clock, which says what "tomorrow" is.
    existing = None if practice_db else open_store(args)[0]
    try:
        clock = existing.clock if existing is not None else RealClock()
        plan = resolve(
            proto,
            parse_param_args(args.param or []),
            plates=args.plates,
            start=start_time(args.start, tz, clock),
            timezone=tz,
        )
    except BaseException:
        if existing is not None:
            existing.close()
        raise
    store, path = (existing, path) if existing is not None else open_store(args, create=True)
    with store:
        if practice_db:
            store.set_kind("practice", actor=login_name())
        who = auth.who(store, path, args, Action.REGISTER_RUN).name
        require_released(store, proto.id, proto.version, proto.source_text, args.file)
        labels = [f"P{i + 1}" for i in range(args.plates)]
        if wc is not None:
            taken = {d.name: slots_in_use(store, d.name) for d in wc.incubators()}
            roles = WorkcellRoles.from_workcell(wc, labels, taken_in=taken, climates=climates(plan))
        else:
            roles = WorkcellRoles.simulated(labels)
        run_id = register_run(
            store,
            store.clock,
            proto,
            plan,
            roles,
            name=args.name or f"{proto.id} {plan.start:%Y-%m-%d}",
            workcell_name=wc.name if wc else "simulated",
            workcell_text=Path(args.workcell).read_text() if args.workcell else "",
            actor=who,
            operators=wc.operator_calendar() if wc else None,
        )
        store.insert_command("start", actor=who, run_id=run_id, reason="registered with labctl run")
        n_tasks = len(store.tasks(run_id))
        running, engine = engine_line(store, path)
    out(
        f"run {run_id} registered in {path}: "
        f"{task_count(n_tasks, len(plan.tasks), args.plates)}; its start is queued for the engine"
    )
    seeded = roles.incubator_for(seeded_climate(plan)) or roles.incubator
    if seeded is not None:
        where = ", ".join(f"{p} slot {roles.slot_in(seeded, p)}" for p in labels)
        out(f"  the plates start in {seeded}: {where}")
    if practice_db:
        out("  (a new practice database: no accounts, and simulated devices only)")
    out(f"  {engine}" if running else f"  {engine}: labctl engine --workcell ... --db {path}")
    return EXIT_OK


def real_devices(wc: Workcell) -> list[str]:
    """Devices of ``wc`` reached at an address that is not this machine (a network host,
    or a serial port that is not a pseudo-terminal): real ones, not simulators."""
    from urllib.parse import urlparse

    local_hosts = {"127.0.0.1", "localhost", "::1"}
    real = []
    for d in wc.devices.values():
        for key in ("url", "host", "port"):
            v = d.settings.get(key)
            if not isinstance(v, str):
                continue
            if key == "url":
                ok = (urlparse(v).hostname or "") in local_hosts
            elif key == "host":
                ok = v in local_hosts
            else:
                ok = v.startswith(("/dev/pts/", "loop://")) or (
                    v.startswith("socket://") and (urlparse(v).hostname or "") in local_hosts
                )
            if not ok:
                real.append(d.name)
                break
    return real


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the engine as Ctrl-C does: between steps, with its stop reason."""
    raise KeyboardInterrupt


def cmd_engine(args: argparse.Namespace) -> int:
    from labctl.clock import RealClock
    from labctl.engine import Engine, EngineConfig
    from labctl.engine.daemon import Daemon, DaemonConfig
    from labctl.engine.paging import Pager
    from labctl.engine.presence import EngineBusy
    from labctl.plugins import load

    if not args.workcell:
        raise UsageError(
            "labctl engine needs --workcell FILE: the workcell whose devices it drives (a "
            "practice one: the workcell.yaml labctl simulators up writes; a dry run on "
            "simulated devices: labctl simulate)"
        )
    build_devices = load("build_devices")  # the drivers layer builds devices by name
    wc = read_workcell(args.workcell)
    store, path = open_store(args)
    clock = store.clock  # real time, or the practice database's paced time
    with store:
        if wc is not None and store.is_practice():
            real = real_devices(wc)
            if real:
                raise AuthError(
                    f"{path} is a practice database, and {', '.join(real)} of {wc.name} are not "
                    "simulators on this machine: real devices are driven from a production "
                    "database (labctl setup), with accounts and released protocols"
                )
        started_by = auth.who(store, path, args, Action.RUN_ENGINE).name
        store.record(
            "engine-started-by", entity="engine", actor=started_by,
            reason=f"labctl engine on workcell {wc.name if wc else 'simulated'}",
        )  # fmt: skip
        devices = build_devices(wc, store, clock)
        engine = Engine(store, clock, devices, EngineConfig())
        pace = getattr(clock, "pace", 1.0)
        pager = Pager.for_workcell(wc, store, clock, db=path) if wc is not None else None
        daemon = Daemon(
            engine,
            path,
            RealClock(),
            workcell=wc.name if wc else "",
            config=DaemonConfig(pace=pace),
            pager=pager,
        )
        # SIGTERM stops it as Ctrl-C does from before the banner: a stop sent as soon as the
        # banner shows (a service manager, a test) ends it cleanly, not by the signal.
        signal.signal(signal.SIGTERM, _on_sigterm)
        steps = [0]

        def once() -> bool:
            steps[0] += 1
            return bool(args.once) and steps[0] > 1

        try:
            if pager is not None:
                out(f"paging: {pager.describe()}")
            out(
                f"engine on {path} with devices {', '.join(devices)}; Ctrl-C stops it (runs "
                "stay as they are)"
            )
            sys.stdout.flush()  # a log file or a pipe (a service manager) sees it at once
            reason = daemon.serve(once)
        except KeyboardInterrupt:  # before serve() took over its own Ctrl-C
            reason = "stopped by the operator (Ctrl-C or SIGTERM) as it started"
        except EngineBusy as exc:
            err(f"labctl: error: {exc}")
            return EXIT_INVALID
        finally:
            for d in devices.values():
                close = getattr(d, "close", None)
                if callable(close):
                    close()
    out(f"engine stopped: {reason}")
    return EXIT_INVALID if daemon.failed else EXIT_OK


def cmd_devices(args: argparse.Namespace) -> int:
    from labctl.plugins import load

    return int(load("devices_check")(args))


def cmd_console(args: argparse.Namespace) -> int:
    """The Qt operator console (a client of the run database)."""
    import os
    import sys

    from labctl.plugins import load

    if (
        sys.platform.startswith("linux")
        and not os.environ.get("QT_QPA_PLATFORM")
        and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    ):
        # Qt would abort the process (exit 134) with a page about platform plugins.
        err(
            "labctl: error: the console is a window and there is no display here ($DISPLAY "
            "and $WAYLAND_DISPLAY are unset): run it on the workcell's screen, or over ssh -X"
        )
        return EXIT_INVALID
    return int(load("console")(args.db))


def cmd_audit(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        auth.who(store, path, args, Action.VIEW)
        rep = store.verify_chain()
        signed = store.verify_signatures()
    if rep.ok and not signed:
        out(
            f"{path}: audit chain verified ({rep.rows_checked} events); signatures and releases match it"
        )
        return EXIT_OK
    if not rep.ok:
        err(f"{path}: audit chain BROKEN: {rep.message}")
    for problem in signed:
        err(f"{path}: BROKEN: {problem}")
    return EXIT_INVALID


def cmd_report(args: argparse.Namespace) -> int:
    """Write the batch record of a run: HTML, or PDF (by the file's extension or --format)
    through the console's PDF writer (the ``render_pdf`` plugin: the core never loads Qt)."""
    from labctl.plugins import load
    from labctl.reports.batch import render_html
    from labctl.reports.record import read_record

    output = Path(args.output)
    check_output_path(output)
    fmt = args.format or ("pdf" if output.suffix.lower() == ".pdf" else "html")
    render_pdf = load("render_pdf") if fmt == "pdf" else None  # fails before any work
    store, path = open_store(args)
    with store:
        auth.who(store, path, args, Action.VIEW)
        record = read_record(store, args.run, printed_at=auth.WALL.now())
    if render_pdf is not None:
        html = render_html(record, medium="qt")
        title = f"Batch record: {record.run.name}"
        pages = int(render_pdf(html, output, footer=record.footer(), title=title))
        out(f"wrote {output} ({pages} page{'s' if pages != 1 else ''})")
        return EXIT_OK
    tmp = output.with_name(output.name + ".part")
    try:
        # Written whole, then renamed: a reader never finds half a record.
        tmp.write_text(render_html(record, medium="browser"), encoding="utf-8")
        tmp.replace(output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        err(f"labctl: error: cannot write {output}: {exc.strerror or exc}")
        return EXIT_INVALID
    out(f"wrote {output}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add run, engine, devices, console, audit and report to the parser."""
    p = sub.add_parser("run", help="register a run of a protocol on a workcell")
    p.add_argument("file", help="protocol YAML file")
    p.add_argument("--workcell", help="workcell YAML (default: the simulated workcell)")
    p.add_argument("--plates", type=int, default=1, help="number of plates (default 1)")
    p.add_argument("--start", help="day 0, e.g. 2026-12-01T09:00 (default: tomorrow)")
    p.add_argument("--tz", help="IANA time zone of the run (default: the workcell's, else UTC)")
    p.add_argument("--name", help="a name for the run (default: protocol id and day 0)")
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="override a parameter, e.g. chir=0.8uM",
    )
    add_db_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("devices", help="device tools")
    p.add_argument("action", choices=["check"], help="check: reach each device once")
    p.add_argument("--workcell", required=True, help="workcell YAML file")
    add_db_options(p)
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("console", help="the operator console (Qt window)")
    add_db_options(p)
    p.set_defaults(func=cmd_console)

    p = sub.add_parser(
        "engine", help="the engine daemon: carries out the runs of a database on a workcell"
    )
    p.add_argument("--workcell", help="workcell YAML file (required: the devices it drives)")
    p.add_argument("--once", action="store_true", help="one pass of the loop, then exit")
    add_db_options(p)
    p.set_defaults(func=cmd_engine)

    p = sub.add_parser("audit", help="audit trail tools")
    p.add_argument("action", choices=["verify"], help="verify: check the hash chain")
    add_db_options(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("report", help="write the batch record of a run (HTML or PDF)")
    p.add_argument("run", type=int, help="run id")
    p.add_argument("-o", "--output", required=True, help="output file (.html or .pdf)")
    p.add_argument(
        "--format",
        choices=["html", "pdf"],
        help="html or pdf (default: from the output file's extension; html unless .pdf)",
    )
    add_db_options(p)
    p.set_defaults(func=cmd_report)
