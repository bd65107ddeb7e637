"""The training simulation: ``python -m labctl.gui.training_run`` (started by the console).

Like ``labctl simulate --pace``, the real engine and drivers drive the built-in simulated
workcell on a paced clock, but for a person at the console rather than for a report:

- the clock is a shared epoch (:class:`labctl.clock.Epoch`), kept in the database and in
  ``--epoch-file`` (written once, before the run exists), so the console's training window
  counts days, countdowns and its timeline on the same clock as the engine;
- people get real minutes: a recovery prompt's default applies after ``--trainee-s`` real
  seconds (scaled by the pace into clock seconds), an unanswered task prompt raises its
  alarm no sooner, and the scripted operator (the trainee's colleague) takes a task prompt
  only when the trainee has left it that long, and never decides a recovery prompt;
- SIGTERM ends it cleanly (the simulators' threads, the robot's analysis processes), and
  the console also ends its whole process group, so nothing it started outlives the window.

Plain Python, no Qt. Exit 0 when the run ends (or the simulation is stopped).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from labctl.clock import Epoch, PacedClock
from labctl.engine.config import EngineConfig

__all__ = ["ACTOR", "engine_config", "main", "paced_workcell", "trainee_clock_s"]

ACTOR = "training"
REPLY_S = 0.5  # real seconds a serial reply may take on the wire, whatever the pace
GRACE_DAYS = 3.0  # the simulation stops this long after the last task's window


def trainee_clock_s(trainee_s: float, pace: float) -> float:
    """Clock seconds that give a person ``trainee_s`` real seconds at ``pace``."""
    return trainee_s * pace


def engine_config(pace: float, trainee_s: float) -> EngineConfig:
    """The engine's timing for training: people's deadlines in real minutes (never shorter
    than a real run's), alarms read every clock minute (a trainee may act at any moment)."""
    base = EngineConfig()
    person = trainee_clock_s(trainee_s, pace)
    return EngineConfig(
        alarm_check_s=60.0,
        recovery_timeout_s=max(base.recovery_timeout_s, person),
        answer_timeout_s=max(base.answer_timeout_s, person),
        busy_give_up_s=max(base.busy_give_up_s, person),
        actor=base.actor,
    )


def paced_workcell(text: str, pace: float) -> str:
    """The simulated workcell's file with its serial incubators' reply time-out scaled to
    the pace: the drivers measure it on the paced clock, the wire answers in real time
    (half a real second, as ``labctl simulators up`` gives it)."""
    wc = yaml.safe_load(text)
    for entry in (wc.get("devices") or {}).values():
        if isinstance(entry, dict) and entry.get("driver") in ("cytomat", "liconic"):
            entry.setdefault("reply_timeout_s", round(max(1.0, REPLY_S * pace), 3))
    return yaml.safe_dump(wc, sort_keys=False)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (the console's window closed) unwinds as Ctrl-C does: every ``with`` closes."""
    raise KeyboardInterrupt


def _write_epoch(path: Path, epoch: Epoch) -> None:
    """Written whole, then renamed: the console never reads half an epoch."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(epoch.to_json()), encoding="utf-8")
    tmp.replace(path)


def run(args: argparse.Namespace) -> int:
    """Simulate the protocol for a trainee until the run ends or SIGTERM."""
    from labctl.cli.common import load_or_fail, open_db, out, start_time
    from labctl.plugins import load

    load("start_robot_analysis")()  # opentrons' slow import starts first, in its own process
    simulated_workcell = load("simulated_workcell")
    from labctl.engine import Engine, register_run
    from labctl.jobs import WorkcellRoles, climates, seeded_climate
    from labctl.plan.resolve import resolve
    from labctl.workcell import parse_workcell

    tz = args.tz
    proto = load_or_fail(args.protocol)
    plan = resolve(proto, {}, plates=args.plates, start=start_time(None, tz), timezone=tz)
    labels = [f"P{i + 1}" for i in range(args.plates)]
    first = min((t.window_start for t in plan.tasks), default=plan.start)
    t0 = min(first, plan.start.astimezone(first.tzinfo)) - timedelta(hours=1)
    give_up = max((t.window_end for t in plan.tasks), default=plan.start) + timedelta(
        days=GRACE_DAYS
    )
    scenario = (
        load("load_scenario")(args.faults, day0=plan.start, span=(t0, give_up))
        if args.faults
        else load("load_scenario")(None)
    )
    # The trainee decides: the scripted colleague steps in on a task prompt only after the
    # trainee's minutes, and leaves recovery prompts to the trainee (or their default).
    scenario.operator.reaction_s = trainee_clock_s(args.trainee_s, args.pace)
    scenario.operator.recovery_choice = None
    epoch = Epoch.now(args.pace, t0)
    clock = PacedClock.shared(epoch)
    db = Path(args.db)
    folder = db.parent
    store = open_db(db, clock, create=True, durable=False)
    with store:
        store.claim_for("practice", actor=ACTOR)
        store.set_clock_epoch(epoch, actor=ACTOR)
        _write_epoch(Path(args.epoch_file), epoch)
        with simulated_workcell(
            clock,
            store,
            labels,
            folder / "devices",
            scenario=scenario,
            timezone=tz,
            climates=climates(plan),
            start=seeded_climate(plan),
        ) as sim:
            text = paced_workcell(sim.workcell_text(), args.pace)
            (folder / "workcell.yaml").write_text(text, encoding="utf-8")
            wc = parse_workcell(text, str(folder / "workcell.yaml"))
            roles = WorkcellRoles.from_workcell(wc, labels, climates=climates(plan))
            devices = load("build_devices")(wc, store, clock, sim=sim)
            run_id = register_run(
                store, clock, proto, plan, roles, name=f"training {proto.id}",
                workcell_name=wc.name, workcell_text=text, actor=ACTOR,
                operators=wc.operator_calendar(),
            )  # fmt: skip
            store.insert_command("start", actor=ACTOR, run_id=run_id, reason="training run")
            engine = Engine(store, clock, devices, engine_config(args.pace, args.trainee_s))
            engine.hooks.append(lambda now: sim.tick([run_id]))
            engine.wakes.append(sim.next_decision)
            out(f"training: {proto.id} on {args.plates} plate(s) at {args.pace:g}x, run {run_id}")
            try:
                engine.run(until=lambda: clock.now() > give_up, max_idle_s=30.0)
            finally:
                for d in devices.values():
                    close: Any = getattr(d, "close", None)
                    if callable(close):
                        close()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m labctl.gui.training_run", description=__doc__)
    p.add_argument("protocol", help="protocol YAML file")
    p.add_argument("--plates", type=int, default=2)
    p.add_argument("--db", required=True, help="the training database (its folder exists)")
    p.add_argument("--epoch-file", required=True, help="where the clock's epoch is written")
    p.add_argument("--pace", type=float, required=True, help="clock seconds per real second")
    p.add_argument(
        "--trainee-s", type=float, default=300.0, help="real seconds a person has for a prompt"
    )
    p.add_argument("--faults", help="fault scenario YAML")
    p.add_argument("--tz", default="UTC", help="IANA time zone of the run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    from labctl.errors import LabctlError

    try:
        return run(args)
    except KeyboardInterrupt:
        return 0
    except LabctlError as exc:
        print(f"training: {exc.user_message()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
