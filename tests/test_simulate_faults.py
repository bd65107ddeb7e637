"""Fault scenarios on the simulated workcell: each run ends in a DEFINED state.

Each scenario of scenarios/ (one per fault kind, and the scripted operator's decisions) is
run on a short protocol: one plate, feeds on days 0 and 1, a QC'd sample on day 1 (two days:
the file must stay fast, and each simulated day costs about a second of polling). The faults
hit the day-1 feed (the scenarios' times assume day 0 = 2026-12-01). Every run must end
either completed (transient faults recovered by retry or by time) or holding with an open
prompt that says what is needed, never with a traceback; and the devices' own action logs
must show that nothing was done twice: no well fed twice, no plate fetched twice without a
store between.

Findings in the engine (labctl/engine, not this suite's to change) are pinned by
``xfail(strict=True)`` tests at the end, each with its reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from labctl.cli.main import main
from labctl.clock import VirtualClock
from labctl.store import Store
from tests.test_simulate import (
    RobotRun,
    assert_feeds_exact,
    assert_moves_paired,
    db_jobs,
    plate_timeline,
    read_jsonl,
    robot_runs,
    run_simulate,
)

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

PROTOCOL_TEMPLATE = """\
labctl: 1
id: sim-faults
title: short protocol for the fault scenarios
version: 1.0.0
compounds:
  A: {stock: 10 mM, solvent: DMSO}
media:
  M1: {description: base one}
culture: {labware: corning_6_wellplate_16.8ml_flat, volume: 2 mL}
timing: {feed_at: "09:00", window: 2 h, max_out_of_incubator: 20 min}
schedule:
  media:
    - {days: "0-LAST", medium: M1}
  factors:
    - {compound: A, conc: 1 uM, days: "0-LAST"}
  feeds:
    - {days: "0-LAST", change: full}
  events:
    - days: 1
      at: "13:00"
      kind: sample
      title: FOXA2/LMX1A staining of a sister well
      duration: 10 min
      qc:
        - {measure: FOXA2_LMX1A_pct, unit: "%", min: 60, on_fail: hold}
"""


def protocol(last_day: int = 1) -> str:
    """The short protocol, fed on days 0 to ``last_day`` (the QC'd sample stays on day 1)."""
    return PROTOCOL_TEMPLATE.replace("LAST", str(last_day))


PROTOCOL = protocol(1)
_DAY = re.compile(r"\bday (\d+) \d{1,2}:\d{2}")


def scenario_days(scenario: Path) -> int:
    """The last day a scenario's faults name (``at: day N HH:MM``), at least 1: the short
    protocol is fed up to that day, so every fault falls inside the run."""
    text = scenario.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return max([1, *(int(d) for d in _DAY.findall(body))])


def run_line(scenario: Path) -> tuple[int, list[str]]:
    """The plates and the --no-arm of the ``labctl simulate`` line a scenario documents."""
    text = scenario.read_text(encoding="utf-8")
    m = re.search(r"labctl simulate \S+ --plates (\d+)", text)
    assert m, f"{scenario.name}: no 'labctl simulate PROTOCOL --plates N' line"
    return int(m.group(1)), _extra(scenario)


ONE_FEED = ["retrieve", "to_deck", "run", "to_incubator", "store"]
FEED_KEYS = ["d0-feed-0900", "d1-feed-0900"]


@dataclass(frozen=True)
class Outcome:
    """What one simulation left behind."""

    rc: int
    text: str  # what it printed
    out: Path
    state: str
    tasks: dict[str, str]  # task key (without the run prefix) -> state
    alarms: list[tuple[str, str | None, str]]  # (code, device, state), oldest first
    open_prompts: list[Any]  # store Prompt rows
    answered: list[Any]  # recovery prompts of jobs, answered, oldest first
    summary: dict[str, Any]
    qc: list[Any]
    deviations: int

    def runs(self) -> list[RobotRun]:
        return robot_runs(self.out)


def _outcome(rc: int, text: str, out: Path) -> Outcome:
    from labctl.cli.simulate import summarize

    store = Store.open(out / "run.db", VirtualClock(datetime(2027, 1, 1, tzinfo=UTC)))
    with store:
        run = store.get_run(1)
        prompts = [p for j in store.jobs(1) for p in store.prompts_for_job(j.id)]
        return Outcome(
            rc,
            text,
            out,
            run.state,
            {t.key.split(":", 1)[1]: t.state for t in store.tasks(1)},
            [(a.code, a.device, a.state) for a in store.alarms_for_run(1)],
            store.open_prompts(1),
            sorted(
                (p for p in prompts if p.kind != "task" and p.state == "answered"),
                key=lambda p: p.id,
            ),
            summarize(store, 1),
            store.qc_values(1),
            len(store.events(1, action="deviation", limit=None)),
        )


def _extra(scenario: Path) -> list[str]:
    """A scenario about people carrying plates says --no-arm in its command."""
    return ["--no-arm"] if "--no-arm" in scenario.read_text(encoding="utf-8") else []


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Outcome]:
    """simulated(scenario file or path, plates=1) -> Outcome, on the short protocol fed up
    to the scenario's last day; each (scenario, plates) is simulated once per module."""
    root = tmp_path_factory.mktemp("faults")
    done: dict[tuple[str, int], Outcome] = {}

    def run(scenario: str | Path, plates: int = 1) -> Outcome:
        path = SCENARIOS / scenario if isinstance(scenario, str) else scenario
        key = (str(path), plates)
        if key not in done:
            days = scenario_days(path)
            proto = root / f"protocol-{days}.yaml"
            proto.write_text(protocol(days), encoding="utf-8")
            out = root / f"{path.stem}-{plates}"
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                # A held run stops 6 h after the last window: long enough for every
                # prompt default (15 min) to have applied.
                rc = run_simulate(
                    proto,
                    out,
                    "--faults",
                    str(path),
                    "--grace-days",
                    "0.25",
                    *_extra(path),
                    plates=plates,
                )
            done[key] = _outcome(rc, buf.getvalue(), out)
        return done[key]

    return run


def _nothing_twice(o: Outcome) -> list[RobotRun]:
    """The logs show no well fed twice and no plate moved twice in a row; returns the runs."""
    runs = assert_feeds_exact(o.out)
    assert_moves_paired(plate_timeline(o.out, runs))
    return runs


def _completed_cleanly(o: Outcome, timeline: list[str] = ONE_FEED * 2) -> None:
    assert (o.rc, o.state) == (0, "completed"), o.text
    assert o.open_prompts == [] and "still out" not in o.text
    runs = _nothing_twice(o)
    assert plate_timeline(o.out, runs) == {"P1": timeline}
    assert {k: v for k, v in o.tasks.items() if "feed" in k} == dict.fromkeys(
        (f"{k}/P1" for k in FEED_KEYS), "done"
    )


def _held_at_day1(o: Outcome, op: str, device: str) -> Any:
    """Holding at the day-1 feed's ``op``, with one open recovery prompt for it; returns it.
    (Exit 0: the shipped scenario expects the hold, and labctl simulate checked it.)"""
    assert (o.rc, o.state) == (0, "holding"), o.text
    assert "NOT as" not in o.text
    assert o.tasks["d0-feed-0900/P1"] == "done"
    assert o.tasks["d1-feed-0900/P1"] == "active"
    assert o.tasks["d1-sample-1300/P1"] == "pending"
    [p] = o.open_prompts
    if op == "lh_run":  # it had moved liquid: never run again by itself, a person finishes
        assert p.kind == "recovery" and p.choices == ["done", "skip"]
        assert (
            p.text
            == f"P1: {op} on {device} failed; the run is on hold. Finish it by hand and answer 'done', or 'skip' it."
        )
    else:
        assert p.kind == "recovery" and p.choices == ["retry", "skip", "done"]
        assert p.text == f"P1: {op} on {device} failed; the run is on hold. Retry or skip it."
    assert p.deadline is None and p.default_choice is None  # only a person decides now
    job = next(j for j in db_jobs(o.out / "run.db") if j.id == p.job_id)
    seq = {"fetch": 0, "lh_run": 2}[op]
    assert (job.key, job.op, job.state) == (f"r1:d1-feed-0900/P1/{seq}", op, "failed")
    # The first prompt, with a default, timed out into the hold.
    [first] = [a for a in o.answered if a.job_id == p.job_id]
    assert first.answer == {"choice": "hold", "by_default": True} and first.answered_by == "engine"
    assert f"waiting for the operator: {p.text}" in o.text.splitlines()
    return first


# --- incubator faults ----------------------------------------------------------------------


def test_incubator_no_reply_raises_offline_then_recovers_by_time(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("incubator_no_reply.yaml")
    _completed_cleanly(o)
    assert o.alarms == [("offline", "inc-sim", "cleared")]
    moves = [
        e
        for e in read_jsonl(o.out / "devices" / "incubator_actions.jsonl")
        if e["action"] == "retrieve"
    ]
    # The day-1 fetch waited for the incubator to answer again (the check after 08:50).
    assert moves[1]["time"].startswith("2026-12-02T09:")


def test_incubator_garbled_reply_during_a_fetch_holds_with_a_prompt(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("incubator_garbled_reply.yaml")
    first = _held_at_day1(o, "fetch", "inc-sim")
    assert "inc-sim: ch:bs: garbled reply" in first.text
    _nothing_twice(o)
    # The plate never left its slot on day 1: fetched and stored once, on day 0 only.
    assert plate_timeline(o.out) == {"P1": ONE_FEED}


def test_incubator_error_code_on_a_move_holds_with_a_prompt(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("incubator_error_code.yaml")
    first = _held_at_day1(o, "fetch", "inc-sim")
    assert "inc-sim: mv:st 001: process timeout" in first.text and "[device code 05]" in first.text
    _nothing_twice(o)
    assert plate_timeline(o.out) == {"P1": ONE_FEED}
    assert o.alarms == [("hold", "run 1", "active")]  # a held run pages someone


def test_incubator_door_open_blocks_moves_until_closed(simulated: Callable[..., Outcome]) -> None:
    o = simulated("incubator_door_open.yaml")
    _completed_cleanly(o)
    assert o.alarms == [("door", "inc-sim", "cleared")]
    fetches = [
        e
        for e in read_jsonl(o.out / "devices" / "incubator_actions.jsonl")
        if e["action"] == "retrieve"
    ]
    assert fetches[1]["time"] >= "2026-12-02T09:10"  # not while the door stood open


def test_incubator_co2_out_of_range_raises_a_climate_alarm_that_clears(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("incubator_co2_out_of_range.yaml")
    _completed_cleanly(o)
    assert o.alarms == [("climate", "inc-sim", "cleared")]
    assert "[climate] inc-sim: climate out of range: CO2" in o.text  # the subject said once


# --- robot faults --------------------------------------------------------------------------


def test_robot_run_fails_holds_with_the_plate_on_the_deck(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("robot_run_fails.yaml")
    first = _held_at_day1(o, "lh_run", "ot2-sim")
    assert "run failed at command 20" in first.text and "[device code 3005]" in first.text
    runs = _nothing_twice(o)
    assert [r.status for r in runs] == ["succeeded", "failed"]
    # Command 20 comes before any fresh medium: spent medium out of A1 and half of B1 only.
    assert runs[1].dispensed == {}
    assert dict(runs[1].aspirated) == {"A1": 2000.0, "B1": 1000.0}
    # The plate is still on the deck: fetched, moved, run started; not back. The summary
    # counts the trip that ended, and says apart since when the plate is out.
    assert plate_timeline(o.out, runs) == {"P1": ONE_FEED + ["retrieve", "to_deck", "run"]}
    [line] = [x for x in o.text.splitlines() if x.startswith("  P1   longest")]
    assert line.endswith(" 1 times")
    [still] = [x for x in o.text.splitlines() if "still out" in x]
    assert re.fullmatch(
        r"  P1   still out when the simulation stopped: out since day 1 0[89]:\d\d \(1\d\.\d h\)",
        still,
    ), still


def test_robot_offline_raises_offline_then_the_feed_runs(simulated: Callable[..., Outcome]) -> None:
    o = simulated("robot_offline.yaml")
    _completed_cleanly(o)
    # the plate waited on the deck through the outage: flagged, and cleared once stored
    assert o.alarms == [("offline", "ot2-sim", "cleared"), ("out-too-long", "plate P1", "cleared")]
    runs = o.runs()
    assert runs[1].created >= datetime(2026, 12, 2, 9, 25, tzinfo=UTC)  # after the outage
    # The plate fetched before the outage waited on the deck: out of the incubator that long.
    longest, _, times = o.summary["out_of_incubator"]["P1"]
    assert times == 2 and longest > 30 * 60


# --- the operator --------------------------------------------------------------------------


def test_operator_no_answer_delays_the_feed_without_repeating_anything(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("operator_no_answer.yaml")
    _completed_cleanly(o)
    ops = read_jsonl(o.out / "devices" / "operator_actions.jsonl")
    day1 = [e for e in ops if e["job"].startswith("r1:d1-feed")]
    assert [e["action"] for e in day1] == ["to_deck", "to_incubator"]
    assert all(e["time"] >= "2026-12-02T12:00" for e in day1)  # nobody before noon
    # The summary counts the day-1 feed as late (its robot run began after the window).
    assert o.summary["late"] == 1
    assert "; 1 started after their window; " in o.text
    assert o.summary["out_of_incubator"]["P1"][0] > 3 * 3600


def test_recovery_choice_retry_reruns_the_failed_step_and_completes(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("operator_recovery_retry.yaml")
    retried = ["retrieve", "to_deck", "run", "run", "to_incubator", "store"]
    _completed_cleanly(o, ONE_FEED + retried)
    runs = o.runs()
    assert [r.status for r in runs] == ["succeeded", "failed", "succeeded"]
    assert runs[1].job == runs[2].job  # the retry is the same job, started again
    job = next(j for j in db_jobs(o.out / "run.db") if j.key == "r1:d1-feed-0900/P1/2")
    assert (job.state, job.attempts) == ("done", 1)
    [p] = o.answered
    assert p.answer == {"choice": "retry"} and p.answered_by == "sim-operator"
    # The scripted operator decides after its reaction time (60 s), and the engine acts on
    # it then, not at its next periodic check: the plate is back within its 20-min limit.
    assert (p.answered_at - p.created_at).total_seconds() == pytest.approx(60, abs=1)
    assert o.deviations == 0


def test_recovery_choice_skip_records_a_deviation_and_feeds_nothing_again(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("operator_recovery_skip.yaml")
    assert (o.rc, o.state) == (0, "completed"), o.text
    assert o.deviations == 1 and "; 1 deviation(s)" in o.text
    runs = _nothing_twice(o)
    assert [r.status for r in runs] == ["succeeded", "failed"]
    # Failed at command 63: A1 and B1 had their fresh medium, A2 half of it; nothing more.
    assert dict(runs[1].dispensed) == {"A1": 2000.0, "B1": 2000.0, "A2": 1000.0}
    job = next(j for j in db_jobs(o.out / "run.db") if j.key == "r1:d1-feed-0900/P1/2")
    assert job.state == "skipped"
    # The plate still went home after the skipped liquid handling.
    assert plate_timeline(o.out, runs) == {"P1": ONE_FEED * 2}
    assert o.tasks["d1-feed-0900/P1"] == "done"


def test_operator_qc_fail_holds_the_run_for_a_decision(simulated: Callable[..., Outcome]) -> None:
    o = simulated("operator_qc_fail.yaml")
    assert (o.rc, o.state) == (0, "holding"), o.text  # as the scenario expects
    [qc] = o.qc
    assert (qc.measure, qc.value, qc.min_value, qc.passed) == ("FOXA2_LMX1A_pct", 40.0, 60.0, False)
    [p] = o.open_prompts
    assert (p.kind, p.choices) == ("decision", ["release", "abort"])
    assert p.text == (
        "QC FOXA2_LMX1A_pct = 40 outside its limits on P1: hold. Release the run to go on, or abort it."
    )
    # Both feeds were done before the QC; nothing is repeated while the run waits.
    assert o.tasks["d1-feed-0900/P1"] == "done" and o.tasks["d1-sample-1300/P1"] == "done"
    assert plate_timeline(o.out) == {"P1": ONE_FEED * 2}
    _nothing_twice(o)


def test_lost_reply_to_a_move_is_not_retried_blindly(
    simulated: Callable[..., Outcome], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst serial fault: the incubator moves the plate but its reply is lost.

    With the scripted operator answering 'retry', each retry is refused by the device
    (the transfer station is occupied: the plate is already there), so the plate is never
    fetched twice; after three scripted retries the operator leaves the prompt to a person
    and the run holds.
    """
    from labctl.simulators import cytomat

    handle = cytomat.CytomatSim.handle_line
    lost: list[str] = []

    def lose_day1_fetch_reply(self: cytomat.CytomatSim, line: str) -> str | None:
        reply = handle(self, line)
        if line.startswith("mv:st") and not lost and self._clock.now().day == 2:
            lost.append(line)
            return None  # executed, reply lost
        return reply

    monkeypatch.setattr(cytomat.CytomatSim, "handle_line", lose_day1_fetch_reply)
    scenario = tmp_path / "retry.yaml"
    scenario.write_text("faults:\n  - {device: operator, fault: recovery_choice, choice: retry}\n")
    o = simulated(scenario)
    assert lost == ["mv:st 001"]
    assert (o.rc, o.state) == (1, "holding"), o.text
    retrieves = [
        e
        for e in read_jsonl(o.out / "devices" / "incubator_actions.jsonl")
        if e["action"] == "retrieve"
    ]
    assert [e["time"][:10] for e in retrieves] == ["2026-12-01", "2026-12-02"]
    answers = [p for p in o.answered if p.job_id is not None]
    assert [p.answer for p in answers] == [{"choice": "retry"}] * 3 + [
        {"choice": "hold", "by_default": True}
    ]
    assert "no reply within" in answers[0].text
    assert all("transfer station occupied [device code 32]" in p.text for p in answers[1:])
    [p] = o.open_prompts
    assert p.text == "P1: fetch on inc-sim failed; the run is on hold. Retry or skip it."
    _nothing_twice(o)


# --- scenario files ------------------------------------------------------------------------


def test_every_shipped_scenario_loads_and_explains_itself() -> None:
    from labctl.simulators.workcell import load_scenario

    files = sorted(SCENARIOS.glob("*.yaml"))
    assert {f.stem for f in files} >= {
        "incubator_no_reply",
        "incubator_garbled_reply",
        "incubator_error_code",
        "incubator_door_open",
        "incubator_co2_out_of_range",
        "robot_run_fails",
        "robot_offline",
        "operator_no_answer",
        "operator_recovery_retry",
        "operator_recovery_skip",
        "operator_qc_fail",
        "combined",
        "arm_estop",
        "arm_link_lost",
        "arm_plate_slips",
        "arm_station_blocked",
    }
    day0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert text.startswith("# ") and "Shows" in text and "labctl simulate " in text, f.name
        assert "2026-" not in text, f"{f.name}: times relative to day 0, so any --start works"
        s = load_scenario(f, day0=day0)
        assert s.expect.get("state") in ("completed", "holding"), f"{f.name}: no expect: block"
        assert (
            s.incubator
            or s.robot
            or s.arm
            or s.operator.recovery_choice
            or s.operator.qc_values
            or s.operator.absent_from
        )
    combined = load_scenario(SCENARIOS / "combined.yaml", day0=day0)
    assert len(combined.incubator) == 4 and len(combined.robot) == 2
    assert combined.operator.recovery_choice == "retry"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{device: operator, fault: qc_value, measure: x}", "qc_value needs 'measure'"),
        (
            "{device: ot2-sim, fault: run_fails, run: '2', at_command: 5}",
            "'run' must be a whole number >= 1",
        ),
        (
            "{device: ot2-sim, fault: offline, at: 2026-12-02T08:55:00Z, durration: 5}",
            "unknown field 'durration'",
        ),
        (
            "{device: ot2-sim, fault: offline, at: 2026-12-02T08:55:00Z, duration: soon}",
            "field 'duration'",
        ),
        (
            "{device: inc-sim, fault: error_code, at: 2026-12-02T08:55:00Z}",
            "field 'code': required by error_code",
        ),
        (
            "{device: operator, fault: shout}",
            "operator faults are no_answer, recovery_choice, qc_value",
        ),
        ("{device: ot2-sim, fault: offline}", "offline needs 'at'"),
    ],
)
def test_a_bad_scenario_entry_is_named(tmp_path: Path, entry: str, message: str) -> None:
    from labctl.simulators.workcell import ScenarioError, load_scenario

    f = tmp_path / "bad.yaml"
    f.write_text(
        f"faults:\n  - {{device: inc-sim, fault: door_open, at: 2026-12-02T00:00:00Z}}\n  - {entry}\n"
    )
    with pytest.raises(ScenarioError) as err:
        load_scenario(f)
    assert str(err.value).startswith(f"{f}: fault #2: ")
    assert message in str(err.value)


def test_two_absences_are_refused_not_merged(tmp_path: Path) -> None:
    from labctl.simulators.workcell import ScenarioError, load_scenario

    f = tmp_path / "twice.yaml"
    f.write_text(
        "faults:\n"
        "  - {device: operator, fault: no_answer, at: 2026-12-02T00:00:00Z, duration: 1 h}\n"
        "  - {device: operator, fault: no_answer, at: 2026-12-03T00:00:00Z, duration: 1 h}\n"
    )
    with pytest.raises(ScenarioError, match="only one operator no_answer entry"):
        load_scenario(f)


def test_no_answer_without_a_time_means_absent_throughout(tmp_path: Path) -> None:
    from labctl.simulators.operator import SimulatedOperator
    from labctl.simulators.workcell import ScenarioError, load_scenario

    f = tmp_path / "away.yaml"
    f.write_text("faults:\n  - {device: operator, fault: no_answer}\n")
    script = load_scenario(f).operator
    op = SimulatedOperator(
        None, VirtualClock(datetime(2026, 12, 1, tzinfo=UTC)), None, script=script
    )  # type: ignore[arg-type]
    assert op.absent(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))  # compared without a TypeError
    assert op.absent(datetime(2027, 6, 1, tzinfo=UTC))
    f.write_text("faults:\n  - {device: operator, fault: no_answer, duration: 2 h}\n")
    with pytest.raises(ScenarioError, match="no_answer with a 'duration' needs 'at'"):
        load_scenario(f)


def test_robot_door_open_is_refused_on_the_ot2_workcell(tmp_path: Path) -> None:
    from labctl.simulators.workcell import ScenarioError, SimulatedWorkcell, load_scenario

    f = tmp_path / "door.yaml"
    f.write_text(
        "faults:\n  - {device: ot2-sim, fault: door_open, at: 2026-12-02T08:55:00Z, duration: 5 min}\n"
    )
    scenario = load_scenario(f)
    clock = VirtualClock(datetime(2026, 12, 1, tzinfo=UTC))
    with pytest.raises(
        ScenarioError, match="ot2-sim door_open needs a Flex; the simulated robot is an OT-2"
    ):
        SimulatedWorkcell(clock, None, ["P1"], tmp_path / "devices", scenario=scenario)


# --- findings in the engine (labctl/engine) ----------------------------------------------


def test_a_held_run_has_an_active_alarm(simulated: Callable[..., Outcome]) -> None:
    o = simulated("incubator_error_code.yaml")
    assert o.state == "holding"
    assert any(state == "active" for _, _, state in o.alarms)


@pytest.mark.parametrize("scenario", ["operator_no_answer.yaml", "robot_offline.yaml"])
def test_a_plate_out_of_the_incubator_too_long_is_flagged(
    simulated: Callable[..., Outcome], scenario: str
) -> None:
    o = simulated(scenario)
    assert o.summary["out_of_incubator"]["P1"][0] > 20 * 60  # the protocol's limit: 20 min
    # Some trace of it besides the device's own offline alarm: an alarm or a deviation.
    flagged = [code for code, _, _ in o.alarms if code != "offline"]
    assert flagged or o.deviations > 0


def test_no_retry_is_offered_after_a_partial_feed(
    simulated: Callable[..., Outcome], tmp_path: Path
) -> None:
    scenario = tmp_path / "partial-retry.yaml"
    scenario.write_text(
        "faults:\n"
        "  - {device: ot2-sim, fault: run_fails, run: 2, at_command: 65}\n"
        "  - {device: operator, fault: recovery_choice, choice: retry}\n"
    )
    o = simulated(scenario)
    # The run had moved liquid when it failed: 'retry' is never offered (it would feed the
    # wells already done a second time), so the script cannot retry and a person must decide.
    assert o.state == "holding", o.text
    [p] = o.open_prompts
    assert p.choices == ["done", "skip"]
    _nothing_twice(o)


# --- skipping quiet alarm checks changes nothing ---------------------------------------------


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _trace(out: Path) -> dict[str, Any]:
    """Everything a run did and when: alarms, jobs, prompts and the devices' action logs."""
    store = Store.open(out / "run.db", VirtualClock(datetime(2027, 1, 1, tzinfo=UTC)))
    with store:
        prompts = [p for j in store.jobs(1) for p in store.prompts_for_job(j.id)]
        return {
            "run": store.get_run(1).state,
            "alarms": [
                (a.device, a.code, a.state, a.raised_at, a.cleared_at)
                for a in store.alarms_for_run(1)
            ],
            "jobs": [
                (j.task_id, j.seq, j.op, j.state, j.started_at, j.finished_at, j.attempts)
                for j in store.jobs(1)
            ],
            "prompts": sorted(
                (
                    p.created_at,
                    p.kind,
                    _UUID.sub("<id>", p.text),
                    p.state,
                    p.answered_at,
                    str(p.answer),
                )
                for p in prompts
            ),
            "incubator": read_jsonl(out / "devices" / "incubator_actions.jsonl"),
            "operator": read_jsonl(out / "devices" / "operator_actions.jsonl"),
            "robot": [
                (e["event"], e["time"]) for e in read_jsonl(out / "devices" / "robot_actions.jsonl")
            ],
        }


@pytest.mark.parametrize("scenario", sorted(p.name for p in SCENARIOS.glob("*.yaml")))
def test_sleeping_through_quiet_alarm_checks_gives_the_same_run(
    scenario: str, simulated: Callable[..., Outcome], tmp_path: Path
) -> None:
    # In virtual time the engine skips the alarm checks during which the simulators say
    # nothing can have changed. A run that reads every check must come out the same, to
    # the second: same alarms raised and cleared, same jobs, prompts and physical actions.
    skipping = simulated(scenario)
    proto = tmp_path / "protocol.yaml"
    proto.write_text(protocol(scenario_days(SCENARIOS / scenario)), encoding="utf-8")
    out = tmp_path / "always"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = run_simulate(
            proto,
            out,
            "--faults",
            str(SCENARIOS / scenario),
            "--grace-days",
            "0.25",
            "--check-alarms-always",
            *_extra(SCENARIOS / scenario),
        )
    assert rc == skipping.rc
    always, skipped = _trace(out), _trace(skipping.out)
    for part in always:
        assert skipped[part] == always[part], part


def test_one_lost_reply_to_a_status_check_is_shrugged_off(
    simulated: Callable[..., Outcome], tmp_path: Path
) -> None:
    # A status read is asked for again (it changes nothing): one lost reply on the line is
    # neither an outage nor a reason to stop the feed. (incubator_no_reply.yaml loses three.)
    scenario = tmp_path / "one_lost.yaml"
    scenario.write_text(
        'faults:\n  - {device: inc-sim, fault: no_reply, at: "2026-12-02T08:50:00Z", count: 1}\n'
    )
    o = simulated(scenario)
    _completed_cleanly(o)
    assert o.alarms == []


# --- the arm ------------------------------------------------------------------------------------


def _arm_log(o: Outcome) -> list[dict[str, Any]]:
    return read_jsonl(o.out / "devices" / "arm_actions.jsonl")


def _arm_prompt(o: Outcome) -> Any:
    """The one recovery or interrupted prompt about an arm move, answered."""
    import sqlite3

    with sqlite3.connect(o.out / "run.db") as db:
        rows = db.execute(
            "select p.kind, p.text, p.answer, p.answered_by from prompts p join jobs j "
            "on j.id = p.job_id where j.device = 'arm-sim' and p.kind != 'task'"
        ).fetchall()
    [row] = rows
    return row


def test_an_arm_estop_mid_move_asks_a_person_who_puts_the_plate_back(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("arm_estop.yaml")
    _completed_cleanly(o)  # every well fed once; every fetch, carry and store paired
    log = _arm_log(o)
    [stop] = [e for e in log if e["result"] == "estop"]
    assert stop["plate"] == "P1"  # it stopped with the plate in the gripper
    hands = [(e["station"], e["result"]) for e in log if e["command"] == "hand"]
    assert hands == [(None, "taken"), (1, "put")]
    kind, text, answer, by = _arm_prompt(o)
    assert kind == "recovery" and "Hard E-Stop" in text and "P1 is in the gripper" in text
    assert (json.loads(answer), by) == ({"choice": "retry"}, "sim-operator")
    # The person waited for the e-stop's release (10 min) before retrying.
    assert min(e["time"] for e in log if e["command"] == "hand") >= "2026-12-02T09:09:35"


def test_a_link_lost_mid_place_is_left_to_a_person_never_moved_again(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("arm_link_lost.yaml")
    _completed_cleanly(o)
    kind, text, answer, _ = _arm_prompt(o)
    assert kind == "interrupted" and "the link failed during the place of P1" in text
    assert json.loads(answer) == {"choice": "done"}  # the plate was found on the deck
    assert not any(e["command"] == "hand" for e in _arm_log(o))


def test_a_plate_that_slips_is_never_placed_and_is_carried_on_retry(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("arm_plate_slips.yaml")
    _completed_cleanly(o)
    log = _arm_log(o)
    assert [e["result"] for e in log].count("slipped") == 1
    assert "released_empty" not in [e["result"] for e in log]
    kind, text, answer, _ = _arm_prompt(o)
    assert kind == "recovery" and "is not in the gripper after the retract" in text
    assert json.loads(answer) == {"choice": "retry"}


def test_a_collision_at_a_blocked_station_is_not_retried_blindly(
    simulated: Callable[..., Outcome],
) -> None:
    o = simulated("arm_station_blocked.yaml")
    _completed_cleanly(o)
    log = _arm_log(o)
    assert [e["result"] for e in log].count("collision") == 1
    hands = [(e["station"], e["plate"], e["result"]) for e in log if e["command"] == "hand"]
    assert hands == [
        (2, "stray-plate", "put"),
        (2, "stray-plate", "taken"),
        (None, "P1", "taken"),
        (1, "P1", "put"),
    ]
    kind, text, _, _ = _arm_prompt(o)
    assert kind == "recovery" and "collision" in text


def test_arm_faults_are_refused_without_the_arm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proto = tmp_path / "p.yaml"
    proto.write_text(PROTOCOL, encoding="utf-8")
    scenario = str(SCENARIOS / "arm_estop.yaml")
    rc = main(["simulate", str(proto), "--faults", scenario, "--no-arm", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and "arm faults need the arm (not --no-arm)" in err
    assert "Traceback" not in err


# --- each shipped scenario says how it ends, and ends so ----------------------------------


@pytest.mark.parametrize("scenario", sorted(p.name for p in SCENARIOS.glob("*.yaml")))
def test_each_shipped_scenario_ends_as_its_expect_block_says(
    scenario: str, simulated: Callable[..., Outcome]
) -> None:
    """Run as its file documents (its plates, --no-arm), on the short protocol fed up to
    the scenario's last day; the outcome is checked here, independently of simulate's own
    check, which must agree (exit 0, and it says so)."""
    import yaml

    path = SCENARIOS / scenario
    plates, _ = run_line(path)
    o = simulated(scenario, plates=plates)
    expect = yaml.safe_load(path.read_text(encoding="utf-8"))["expect"]
    assert o.state == expect["state"], o.text
    assert o.summary["late"] <= expect["late"], o.text
    assert o.deviations == expect["deviations"], o.text
    assert sorted(p.kind for p in o.open_prompts) == sorted(expect["open_prompts"]), o.text
    assert set(expect.get("alarms", [])) <= {code for code, _, _ in o.alarms}, o.alarms
    assert o.rc == 0 and f"as {path} expects (the run ends {expect['state']};" in o.text
    # Never a plate out of the incubator longer than the simulation lasted.
    simulated_s = o.summary["simulated_days"] * 86400
    assert all(mx <= simulated_s for mx, _, _ in o.summary["out_of_incubator"].values())


def test_a_run_that_ends_otherwise_than_expected_fails_and_says_how(
    simulated: Callable[..., Outcome], tmp_path: Path
) -> None:
    wrong = tmp_path / "door_expects_a_hold.yaml"
    wrong.write_text(
        (SCENARIOS / "incubator_door_open.yaml")
        .read_text(encoding="utf-8")
        .replace("expect: {state: completed,", "expect: {state: holding,"),
        encoding="utf-8",
    )
    o = simulated(wrong)
    assert (o.rc, o.state) == (1, "completed")
    assert f"NOT as {wrong} expects (the run ends holding;" in o.text
    assert "  the run ended completed, not holding" in o.text.splitlines()


def test_a_held_run_summary_says_where_the_days_went(simulated: Callable[..., Outcome]) -> None:
    # Held on day 1 with the plate on the deck, then watched until the simulation gave up:
    # the summary used to say "simulated 1.0 days" (the steps' span) beside a plate out of
    # the incubator for longer than that, counted as one trip.
    o = simulated("robot_run_fails.yaml")
    [line] = [x for x in o.text.splitlines() if x.startswith("simulated ")]
    m = re.match(r"simulated (\d+\.\d) days in ", line)
    assert m and float(m.group(1)) >= 1.4, line  # day 0 07:00 to day 1 22:00
    assert "(the last step ended on day 1 09:" in line
    assert re.search(
        r"the run stayed holding until the simulation stopped on day 1 2\d:\d\d: it gives up "
        r"--grace-days 0\.25 after the last task's window\); audit chain verified$",
        line,
    ), line
    [still] = [x for x in o.text.splitlines() if "still out" in x]
    hours = float(re.search(r"\((\d+\.\d) h\)$", still).group(1))  # type: ignore[union-attr]
    assert hours <= float(m.group(1)) * 24
    s = o.summary
    assert s["still_out"] == ["P1"] and s["out_of_incubator"]["P1"][2] == 1


# --- scenario times: relative to day 0, or refused where the run never is -------------------


def test_relative_times_land_on_the_runs_day_in_its_time_zone(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    from labctl.simulators.workcell import load_scenario

    f = tmp_path / "rel.yaml"
    f.write_text(
        "faults:\n"
        "  - {device: inc-sim, fault: door_open, at: day 2 08:50, duration: 20 min}\n"
        "  - {device: ot2-sim, fault: offline, at: 'day 3 08:55:30', duration: 5 min}\n"
        "  - {device: inc-sim, fault: no_reply, at: 2027-03-29T06:00:00Z, count: 1}\n"
    )
    z = ZoneInfo("Europe/Stockholm")
    day0 = datetime(2027, 3, 26, 9, 0, tzinfo=z)  # summer time begins on day 2 (March 28)
    s = load_scenario(f, day0=day0)
    assert s.incubator[0].at == datetime(2027, 3, 28, 6, 50, tzinfo=UTC)  # 08:50 CEST
    assert s.robot[0].at == datetime(2027, 3, 29, 6, 55, 30, tzinfo=UTC)
    assert s.incubator[1].at == datetime(2027, 3, 29, 6, 0, tzinfo=UTC)  # absolute: as written


@pytest.mark.parametrize(
    ("at", "says"),
    [
        ("2020-01-02T08:50:00Z", "before the simulation starts (day 0 06:00"),
        ("day 0 02:00", "before the simulation starts (day 0 06:00"),
        ("day 9 08:50", "after the simulation stops at the latest (day 1 21:00"),
        ("day 1 25:00", "no such time of day"),
        ("tomorrow", "'at' must be a time of the run like 'day 1 08:50'"),
    ],
)
def test_a_fault_the_run_never_reaches_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], at: str, says: str
) -> None:
    proto = tmp_path / "protocol.yaml"
    proto.write_text(PROTOCOL, encoding="utf-8")
    f = tmp_path / "never.yaml"
    f.write_text(
        f"faults:\n  - {{device: inc-sim, fault: door_open, at: '{at}', duration: 5 min}}\n"
    )
    out = tmp_path / "out"
    rc = main(["simulate", str(proto), "--start", "2026-12-01T09:00", "--out", str(out),
               "--faults", str(f), "--grace-days", "0.25"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and f"labctl: error: {f}: fault #1: 'at' " in err and says in err, err
    assert not out.exists()


def test_a_shipped_scenario_fires_without_start(tmp_path: Path) -> None:
    # Its times used to be absolute (2026-12-02): without --start day 0 is tomorrow, they
    # fell before it, and the fault silently never happened.
    from labctl.cli.main import build_parser
    from labctl.cli.simulate import simulate

    proto = tmp_path / "protocol.yaml"
    proto.write_text(PROTOCOL, encoding="utf-8")
    path = SCENARIOS / "incubator_door_open.yaml"
    argv = ["simulate", str(proto), "--out", str(tmp_path / "o"), "--faults", str(path),
            "--grace-days", "0.25"]  # fmt: skip
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = simulate(build_parser().parse_args(argv))
    assert rc == 0, buf.getvalue()
    assert "  [door] inc-sim: the device door is open: close it (cleared)" in buf.getvalue()
