"""An operator's commands: status, prompts, answer, and start / pause / resume / release /
skip / abort / confirm-store.

They are clients of the run database: they read it, or queue a command that the engine
applies (DESIGN.md: one place writes state). A queued command gets a verdict: the command
waits a few seconds for the engine and prints "applied" (exit 0) or "rejected: why" (exit
1); with no engine running it says so and the command stays queued (exit 3), to be applied
when an engine starts.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from labctl.accounts import SIGNED, Action
from labctl.cli.auth import add_sign_options, sign_if_needed, who
from labctl.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_QUEUED,
    UsageError,
    add_db_options,
    alarm_line,
    err,
    open_store,
    out,
    task_count,
)
from labctl.clock import RealClock
from labctl.errors import LabctlError, ParameterError
from labctl.store import Store
from labctl.store.models import Command, Prompt

VERDICT_WAIT_S = 10.0  # how long a command waits for the engine's verdict by default


def engine_line(store: Store, path: Path) -> tuple[bool, str]:
    """(whether an engine serves the database, one line saying so)."""
    from labctl.engine.presence import engine_status

    st = engine_status(path, store, RealClock().now())
    return st.running, st.text


def queue(
    store: Store,
    path: Path,
    verb: str,
    *,
    who: str,
    run_id: int | None,
    args: dict[str, Any],
    reason: str,
    wait_s: float,
) -> int:
    """Queue a command, wait for the engine's verdict; print it; return the exit code."""
    cmd = store.insert_command(verb, actor=who, run_id=run_id, args=args, reason=reason)
    running, engine = engine_line(store, path)
    what = f"{verb}" + (f" of run {run_id}" if run_id is not None else "")
    if not running:
        out(f"queued (command {cmd.id}, {what}); no engine is applying it now: {engine}")
        return EXIT_QUEUED
    wall = RealClock()
    deadline = wall.monotonic() + wait_s
    while True:
        done = store.get_command(cmd.id)
        if done.state != "pending":
            return _verdict(done, what)
        if wall.monotonic() >= deadline:
            out(
                f"queued (command {cmd.id}, {what}); the engine has not applied it within "
                f"{wait_s:g} s ({engine}); labctl status shows when it does"
            )
            return EXIT_QUEUED
        wall.sleep(0.2)


def _verdict(cmd: Command, what: str) -> int:
    if cmd.state == "rejected":
        why = (cmd.result or {}).get("reason") if isinstance(cmd.result, dict) else None
        err(f"rejected: {what}: {why or 'the engine gave no reason'}")
        return EXIT_INVALID
    result = cmd.result if isinstance(cmd.result, dict) else {}
    said = _said(result)
    out(f"applied: {what}" + (f": {said}" if said else ""))
    return EXIT_OK


def _said(result: dict[str, Any]) -> str:
    """The engine's result in words, never its raw record: 'the run is now paused',
    'skipped r1:d3-feed-0900/P1', 'the engine goes on (it was held: ...)'."""
    r = dict(result)
    parts = []
    if "state" in r:
        who = f"plate {r.pop('plate')}" if "plate" in r else "the run"
        parts.append(f"{who} is now {r.pop('state')}")
    if "skipped" in r:
        skipped = r.pop("skipped")
        names = ", ".join(str(x) for x in skipped) if isinstance(skipped, list) else skipped
        parts.append(f"skipped {names or 'nothing'}")
    if "answered" in r:
        parts.append(f"prompt {r.pop('answered')} answered")
    if "choice" in r:
        parts.append(f"choice {r.pop('choice')}")
    if r.pop("resumed", None):
        was = r.pop("was_held_for", None)
        parts.append("the engine goes on" + (f" (it was held: {was})" if was else ""))
    for k, v in r.items():  # anything newer, still said as words
        if isinstance(v, bool):
            v = "yes" if v else "no"
        elif isinstance(v, list):
            v = ", ".join(str(x) for x in v) or "none"
        elif isinstance(v, dict):
            continue
        parts.append(f"{k.replace('_', ' ')} {v}")
    return "; ".join(parts)


# ---- run commands ------------------------------------------------------------------------

NEEDS_REASON = ("pause", "abort", "skip", "release", "confirm-store")


#: The permission each run command needs (labctl.accounts).
ACTIONS = {
    "start": Action.START,
    "pause": Action.PAUSE,
    "resume": Action.RESUME,
    "release": Action.RELEASE_HOLD,
    "abort": Action.ABORT,
    "skip": Action.SKIP,
    "confirm-store": Action.CONFIRM_STORE,
}


def _run_command(args: argparse.Namespace, verb: str, extra: dict[str, Any] | None = None) -> int:
    if verb in NEEDS_REASON and not args.reason:
        raise UsageError(f"{verb} needs --reason (it goes into the audit trail)")
    store, path = open_store(args)
    with store:
        run_id: int | None = getattr(args, "run", None)
        if run_id is not None:
            store.get_run(run_id)  # fails clearly if there is no such run
            # What the engine would reject, refused now: with no engine running it would
            # otherwise wait in the queue (exit 3) for a verdict known already.
            _check_target(store, run_id, getattr(args, "plate", None), (extra or {}).get("task"))
        a = dict(extra or {})
        if getattr(args, "plate", None):
            a["plate"] = args.plate
        return signed_queue(store, path, args, verb, ACTIONS[verb], run_id, a, args.reason or "")


def _check_target(store: Store, run_id: int, plate: str | None, task: str | None) -> None:
    """ParameterError unless run ``run_id`` has plate ``plate`` and task key ``task``
    (as ``labctl status`` shows it: d12-feed-0900, with or without the run and plate)."""
    plates = [p.label for p in store.plates(run_id)]
    if plate is not None and plate not in plates:
        raise ParameterError(f"run {run_id} has no plate {plate} (its plates: {', '.join(plates)})")
    if task is None:
        return
    keys = {t.key.split(":", 1)[-1] for t in store.tasks(run_id)}
    bare = {k.split("/", 1)[0] for k in keys}
    name = task.split(":", 1)[-1]
    if name not in keys and name not in bare:
        near = sorted(k for k in bare if k.split("-", 1)[0] == name.split("-", 1)[0])[:4]
        hint = f"; on that day: {', '.join(near)}" if near else "; labctl status shows the next"
        raise ParameterError(f"run {run_id} has no task {task}{hint}")


def signed_queue(
    store: Store,
    path: Path,
    args: argparse.Namespace,
    verb: str,
    action: Action,
    run_id: int | None,
    a: dict[str, Any],
    reason: str,
) -> int:
    """Queue ``verb`` as the signed-in user, allowed to take ``action``, with their
    signature when the action needs one (its id goes with the command)."""
    actor = who(store, path, args, action, run_id)
    if action in SIGNED and not reason:
        raise UsageError(f"{verb} needs --reason (it goes into the signature)")
    subject = store.command_subject(action.value, run_id, a, reason)
    sig = sign_if_needed(store, actor, args, action, subject, reason=reason, run_id=run_id)
    if sig is not None:
        a = dict(a, signature=sig.id)
    return queue(
        store, path, verb, who=actor.name, run_id=run_id, args=a, reason=reason,
        wait_s=args.wait,
    )  # fmt: skip


def cmd_start(args: argparse.Namespace) -> int:
    return _run_command(args, "start")


def cmd_pause(args: argparse.Namespace) -> int:
    return _run_command(args, "pause")


def cmd_resume(args: argparse.Namespace) -> int:
    return _run_command(args, "resume")


def cmd_release(args: argparse.Namespace) -> int:
    return _run_command(args, "release")


def cmd_abort(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError("abort cannot be undone: add --yes to confirm")
    return _run_command(args, "abort")


def cmd_skip(args: argparse.Namespace) -> int:
    return _run_command(args, "skip", {"task": args.task})


def cmd_confirm_store(args: argparse.Namespace) -> int:
    return _run_command(args, "confirm-store")


# ---- prompts -------------------------------------------------------------------------------


def _choices(p: Prompt) -> tuple[list[str], list[dict[str, Any]]]:
    words = [c for c in p.choices if isinstance(c, str)]
    gates = [c for c in p.choices if isinstance(c, dict) and "measure" in c]
    return words, gates


def describe_prompt(p: Prompt, db: str = "") -> str:
    """The prompt and how to answer it, as ``labctl prompts`` prints it (``db``: the
    ``--db`` option to repeat in the answer lines, when one was given)."""
    words, gates = _choices(p)
    lines = [f"{p.id} run {p.run_id} [{p.kind}] {p.text}"]
    if words:
        default = (
            f"; default '{p.default_choice}' at {p.deadline:%Y-%m-%d %H:%M} UTC"
            if p.deadline and p.default_choice
            else ""
        )
        lines.append(f"    answer: labctl answer {p.id} {'|'.join(words)}{db}{default}")
    for g in gates:
        limits = " ".join(
            s for s in (f">= {g['min']:g}" if g.get("min") is not None else "",
                        f"<= {g['max']:g}" if g.get("max") is not None else "") if s
        )  # fmt: skip
        lines.append(
            f"    QC value: --value {g['measure']}=NUMBER ({g.get('unit') or 'no unit'}"
            + (f"; passes {limits}" if limits else "")
            + ")"
        )
    if not words and not gates:
        lines.append(f"    answer when done: labctl answer {p.id}{db}")
    return "\n".join(lines)


def cmd_prompts(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        who(store, path, args, Action.VIEW)
        if args.run is not None:
            store.get_run(args.run)  # no such run: say so, not "no open prompts"
        prompts = store.open_prompts(args.run)
        if not prompts:
            out("no open prompts")
        db = f" --db {args.db}" if getattr(args, "db", None) else ""
        for p in prompts:
            out(describe_prompt(p, db))
    return EXIT_OK


def build_answer(p: Prompt, args: argparse.Namespace) -> dict[str, Any]:
    """The answer to ``p`` from the command line, checked as the engine will check it."""
    from labctl.engine.prompts import check_qc_answer

    if p.state != "open":
        raise LabctlError(f"prompt {p.id} is {p.state}, not open")
    words, _gates = _choices(p)
    answer: dict[str, Any] = {}
    if args.choice:
        if words and args.choice not in words:
            raise ParameterError(
                f"'{args.choice}' is not an answer to prompt {p.id}: one of {', '.join(words)}"
            )
        answer["choice"] = args.choice
    elif words and p.kind in ("recovery", "interrupted", "decision", "in-doubt"):
        raise UsageError(f"prompt {p.id} needs a choice: one of {', '.join(words)}")
    if args.value:
        qc: dict[str, float] = {}
        for kv in args.value:
            k, _, v = kv.partition("=")
            try:
                qc[k.strip()] = float(v)
            except ValueError:
                raise ParameterError(f"--value {kv}: the value must be a number") from None
        answer["qc"] = qc
    try:
        check_qc_answer(p.choices, answer)
    except ValueError as exc:
        raise ParameterError(f"prompt {p.id}: {exc}") from None
    if args.lot:
        answer["lots"] = dict(x.partition("=")[::2] for x in args.lot)
    answer.setdefault("done", True)
    return answer


def cmd_answer(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        p = store.get_prompt(args.prompt)
        answer = build_answer(p, args)
        if p.kind == "decision":
            # A held run's decision is taken by releasing or aborting the run itself.
            verb = str(answer.get("choice"))
            if verb == "abort" and not args.reason:
                raise UsageError("aborting a run needs --reason")
            return signed_queue(
                store, path, args, verb, ACTIONS[verb], p.run_id, {},
                args.reason or f"prompt {p.id}: {verb}",
            )  # fmt: skip
        # Leaving a step out is a deviation: accepting it is signed.
        action = Action.ACCEPT_DEVIATION if answer.get("choice") == "skip" else Action.ANSWER
        reason = args.reason or ""
        if action is Action.ACCEPT_DEVIATION and not reason:
            raise UsageError(f"prompt {p.id}: 'skip' is a deviation: give --reason")
        return signed_queue(
            store, path, args, "answer", action, p.run_id,
            {"prompt": p.id, "answer": answer}, reason,
        )  # fmt: skip


# ---- status --------------------------------------------------------------------------------


def _counts(by_state: dict[str, int]) -> str:
    order = ("done", "active", "running", "pending", "ready", "failed", "interrupted", "skipped")
    keys = [k for k in order if by_state.get(k)] + sorted(k for k in by_state if k not in order)
    return ", ".join(f"{by_state[k]} {k}" for k in keys) or "none"


def cmd_status(args: argparse.Namespace) -> int:
    store, path = open_store(args)
    with store:
        who(store, path, args, Action.VIEW)
        runs = [store.get_run(args.run)] if args.run else store.list_runs()
        _running, engine = engine_line(store, path)
        out(f"{path}: {engine}")
        if not runs:
            out("no runs")
        now = store.clock.now()  # the runs' time: real, or a practice database's paced time
        for run in runs:
            _print_run(store, run.id, now)
        if not args.run:
            for a in store.active_alarms():
                if a.run_id is None:
                    out(f"workcell ALARM {alarm_line(a.code, a.device, a.message)}")
        pending = [c for c in store.pending_commands() if args.run in (None, c.run_id)]
        if pending:
            out(f"{len(pending)} command(s) waiting for the engine")
    return EXIT_OK


def _print_run(store: Store, run_id: int, now: datetime) -> None:
    from zoneinfo import ZoneInfo

    run = store.get_run(run_id)
    z = ZoneInfo(run.timezone)
    s = store.run_summary(run.id)
    out(
        f"run {run.id} '{run.name}': {run.state.upper()}; {run.protocol_id} "
        f"v{run.protocol_version}, {run.plates} plate(s), day 0 {run.start.astimezone(z):%Y-%m-%d} "
        f"({run.timezone})"
    )
    tasks = store.tasks(run.id)
    per_plate = len({t.key.split("/", 1)[0] for t in tasks})
    out(f"  tasks: {_counts(s.tasks_by_state)} of {task_count(len(tasks), per_plate, run.plates)}")
    out(f"  steps: {_counts(s.jobs_by_state)}")
    nxt = next((t for t in tasks if t.state == "pending"), None)
    if nxt:
        late = " LATE" if nxt.window_end is not None and nxt.window_end < now else ""
        out(f"  next: {nxt.key} due {nxt.due.astimezone(z):%a %d %b %H:%M %Z}{late}")
    if run.state not in ("completed", "aborted", "failed"):
        from labctl.reports.locations import plate_locations

        for loc in plate_locations(store, run.id):
            out(f"  plate {loc.text()}")
    for a in store.alarms_for_run(run.id, active_only=True):
        out(f"  ALARM {alarm_line(a.code, a.device, a.message)}")
    for p in store.open_prompts(run.id):
        out(f"  PROMPT {p.id} ({p.kind}): {p.text}")


# ---- the parser ----------------------------------------------------------------------------


def add_wait_option(p: argparse.ArgumentParser) -> None:
    """--wait: how long a queued command waits for the engine's verdict, seconds."""
    p.add_argument(
        "--wait",
        type=float,
        default=VERDICT_WAIT_S,
        metavar="S",
        help=f"seconds to wait for the engine's verdict (default {VERDICT_WAIT_S:g})",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add status, prompts, answer and the run commands to the parser."""
    p = sub.add_parser("status", help="the engine, runs, next tasks, alarms and prompts")
    p.add_argument("run", nargs="?", type=int, help="only this run")
    add_db_options(p)
    p.set_defaults(func=cmd_status)

    for verb, fn, h in (
        ("start", cmd_start, "start a registered run (labctl run starts it already)"),
        ("pause", cmd_pause, "pause a run (or one plate): nothing new begins"),
        ("resume", cmd_resume, "resume a paused run (or plate)"),
        ("release", cmd_release, "release a held run (after a QC failure or a fault)"),
        ("abort", cmd_abort, "abort a run (cannot be undone)"),
    ):
        p = sub.add_parser(verb, help=h)
        p.add_argument("run", type=int, help="run id (labctl status lists them)")
        p.add_argument("--reason", default="", help="why, for the audit trail")
        if verb in ("pause", "resume"):
            p.add_argument("--plate", help="only this plate (e.g. P3)")
        if verb == "abort":
            p.add_argument("--yes", action="store_true", help="confirm: abort cannot be undone")
        if ACTIONS[verb] in SIGNED:
            add_sign_options(p, ACTIONS[verb])
        add_wait_option(p)
        add_db_options(p)
        p.set_defaults(func=fn)

    p = sub.add_parser("skip", help="skip a task not yet begun (recorded as a deviation)")
    p.add_argument("run", type=int, help="run id")
    p.add_argument("task", help="task key, e.g. d12-feed-0900 (labctl status shows the next)")
    p.add_argument("--plate", help="only this plate (default: every plate)")
    p.add_argument("--reason", default="", help="why (required: it is a deviation)")
    add_sign_options(p, Action.SKIP)
    add_wait_option(p)
    add_db_options(p)
    p.set_defaults(func=cmd_skip)

    p = sub.add_parser(
        "confirm-store",
        help="let a held engine go on after its database went back (restored or rolled back)",
    )
    p.add_argument("--reason", default="", help="what was checked on the devices (required)")
    add_wait_option(p)
    add_db_options(p)
    p.set_defaults(func=cmd_confirm_store, run=None)

    p = sub.add_parser("prompts", help="open operator prompts and how to answer each")
    p.add_argument("--run", type=int, help="only this run's")
    add_db_options(p)
    p.set_defaults(func=cmd_prompts)

    p = sub.add_parser(
        "answer",
        help="answer an operator prompt (labctl prompts lists them, with their choices)",
        description="Answer prompt PROMPT. `labctl prompts` lists the open prompts, each with "
        "the exact `labctl answer` line it takes: its choices, and the QC values it needs.",
    )
    p.add_argument(
        "prompt", type=int, help="prompt id: the number labctl prompts shows first on its line"
    )
    p.add_argument(
        "choice",
        nargs="?",
        help="one of the prompt's choices, as labctl prompts lists them (retry, skip, done, "
        "hold, release, abort, ...); none for a prompt that only asks you to say it is done",
    )
    p.add_argument(
        "--value",
        action="append",
        metavar="MEASURE=NUMBER",
        help="a QC value, e.g. FOXA2_LMX1A_pct=72 (repeat for each measure labctl prompts names)",
    )
    p.add_argument(
        "--lot",
        action="append",
        metavar="REAGENT=LOT",
        help="a reagent lot used, e.g. CHIR99021=L2231 (repeat for each; kept in the batch record)",
    )
    p.add_argument(
        "--reason", default="", help="a note for the audit trail (needed to answer 'skip')"
    )
    add_sign_options(p, Action.ACCEPT_DEVIATION)
    add_wait_option(p)
    add_db_options(p)
    p.set_defaults(func=cmd_answer)
