"""``labctl simulate`` end to end, checked against the simulators' OWN action logs.

The run database says what the engine believes; the devices' logs (robot commands, plate
moves of the incubator, the scripted operator's hands) say what physically happened. These
tests hold the second against the protocol: every well of every plate got each feed exactly
once with the right volume (and, for the shipped Kriks protocol, the right medium), and every
plate left the incubator and came back once per feed, in the order fetch, to deck, robot run,
back, store.

The log-reading helpers here are shared with tests/test_simulate_faults.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from labctl.cli.main import build_parser, main
from labctl.simulators.workcell import ARM_STATIONS, INCUBATOR, arm_stations

START = "2026-12-01T09:00"
KRIKS = Path(__file__).resolve().parents[1] / "protocols" / "kriks2011_da.yaml"

# Four days, two media and a medium mix, two factors: short enough for a fast test, varied
# enough that a feed given on the wrong day would show.
SMALL = """\
labctl: 1
id: sim-small
title: short protocol for the simulate tests
version: 1.0.0
compounds:
  A: {stock: 10 mM, solvent: DMSO}
  B: {stock: 100 ug/mL, solvent: PBS}
media:
  M1: {description: base one}
  M2: {description: base two}
culture: {labware: corning_6_wellplate_16.8ml_flat, volume: 2 mL}
timing: {feed_at: "09:00", window: 2 h, max_out_of_incubator: 20 min}
schedule:
  media:
    - {days: "0-1", medium: M1}
    - {days: "2-3", medium: {M1: 50%, M2: 50%}}
  factors:
    - {compound: A, conc: 1 uM, days: "0-2"}
    - {compound: B, conc: 100 ng/mL, days: "2-3"}
  feeds:
    - {days: "0-3", change: full}
"""


# --- running a simulation ------------------------------------------------------------------


def run_simulate(protocol: Path, out: Path, *extra: str, plates: int = 1) -> int:
    """``labctl simulate`` in-process, without the CLI's catch-all: a traceback fails the test."""
    from labctl.cli.simulate import simulate

    args = build_parser().parse_args(
        [
            "simulate",
            str(protocol),
            "--plates",
            str(plates),
            "--start",
            START,
            "--out",
            str(out),
            *extra,
        ]
    )
    return simulate(args)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of an action log ([] when the device never acted)."""
    if not path.exists():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- the run database, read directly (what the engine recorded) ----------------------------


@dataclass(frozen=True)
class DbJob:
    id: int
    key: str
    op: str
    state: str
    attempts: int
    params: dict[str, Any]
    task_key: str
    task_kind: str
    plate: str


def db_jobs(db: Path) -> list[DbJob]:
    """Every job of run 1 with its task's key and kind and its plate's label."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT jobs.id, jobs.op, jobs.state, jobs.attempts, jobs.spec, tasks.spec, tasks.kind,"
            " COALESCE(plates.label, '*') FROM jobs JOIN tasks ON tasks.id = jobs.task_id"
            " LEFT JOIN plates ON plates.id = tasks.plate_id WHERE tasks.run_id = 1 ORDER BY jobs.id"
        ).fetchall()
    finally:
        con.close()
    out = []
    for jid, op, state, attempts, jspec, tspec, kind, plate in rows:
        js, ts = json.loads(jspec), json.loads(tspec)
        out.append(
            DbJob(
                jid,
                js["key"],
                op,
                state,
                attempts,
                js.get("params", {}),
                ts["task_key"],
                kind,
                plate,
            )
        )
    return out


# --- the robot's log: which run fed which wells --------------------------------------------


@dataclass
class RobotRun:
    """One run on the simulated robot, matched to the engine's job by its protocol file name."""

    run_id: str
    file: str
    created: datetime
    job: DbJob | None = None
    status: str | None = None  # run_finished status (None: never finished)
    finished: datetime | None = None
    # well -> µL dispensed into / aspirated from the culture plate (labware = the job's labware)
    dispensed: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    aspirated: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    plate_slots: set[str] = field(default_factory=set)  # deck slots the culture plate sat on


def robot_runs(out: Path, log: str = "robot_actions.jsonl") -> list[RobotRun]:
    """Robot runs in creation order, each with its LH job and the volumes per culture well
    (``log``: the robot's action log in the devices folder)."""
    from labctl.drivers.opentrons_lh import protocol_filename

    jobs = {protocol_filename(j.key): j for j in db_jobs(out / "run.db") if j.op == "lh_run"}
    files: dict[str, str] = {}
    runs: dict[str, RobotRun] = {}
    for e in read_jsonl(out / "devices" / log):
        ev = e["event"]
        if ev == "protocol_upload" and e.get("status") in (200, 201):
            files[e["protocolId"]] = e["files"][0]
        elif ev == "run_created":
            f = files[e["protocolId"]]
            runs[e["runId"]] = RobotRun(e["runId"], f, _time(e["time"]), jobs.get(f))
        elif ev == "run_finished":
            runs[e["runId"]].status = e["status"]
            runs[e["runId"]].finished = _time(e["time"])
        elif ev == "command" and e["commandType"] in ("aspirate", "dispense"):
            r = runs[e["runId"]]
            culture = r.job.params.get("labware") if r.job else None
            if e.get("labware") != culture:
                continue  # reservoirs: the medium's, the waste
            r.plate_slots.add(str(e.get("slot")))
            target = r.dispensed if e["commandType"] == "dispense" else r.aspirated
            target[e["well"]] += float(e["volume"])
    return sorted(runs.values(), key=lambda r: r.created)


def feeds_per_well(runs: list[RobotRun]) -> Counter[tuple[str, str, str]]:
    """(plate, task key, well) -> how many robot runs dispensed medium into that well."""
    n: Counter[tuple[str, str, str]] = Counter()
    for r in runs:
        assert r.job is not None, f"robot run {r.run_id} ran {r.file}, which is no job of the run"
        for well, ul in r.dispensed.items():
            if ul > 0:
                n[(r.job.plate, r.job.task_key, well)] += 1
    return n


def assert_feeds_exact(out: Path, runs: list[RobotRun] | None = None) -> list[RobotRun]:
    """Each done feed job's wells got exactly add_ul once, and lost remove_ul once; no other well."""
    runs = robot_runs(out) if runs is None else runs
    counts = feeds_per_well(runs)
    doubled = {k: n for k, n in counts.items() if n > 1}
    assert not doubled, f"wells fed more than once: {doubled}"
    for j in db_jobs(out / "run.db"):
        if j.op != "lh_run" or j.params.get("kind") != "feed":
            continue
        mine = [r for r in runs if r.job is not None and r.job.id == j.id]
        if j.state == "done":
            ok = [r for r in mine if r.status == "succeeded"]
            assert len(ok) == 1, f"{j.key}: {len(ok)} succeeded robot runs, not 1"
            r = ok[0]
            assert len(r.plate_slots) == 1, f"{j.key}: culture plate on slots {r.plate_slots}"
            wells = list(j.params["wells"])
            assert sorted(r.dispensed) == sorted(wells), f"{j.key}: fed wells {sorted(r.dispensed)}"
            for w in wells:
                assert r.dispensed[w] == pytest.approx(j.params["add_ul"], abs=0.1), (j.key, w)
                assert r.aspirated[w] == pytest.approx(j.params["remove_ul"], abs=0.1), (j.key, w)
    return runs


# --- plate moves: incubator and operator logs, and the robot runs, per plate ---------------

TRANSFER_STATION = ARM_STATIONS[f"{INCUBATOR}/transfer"]
_RANK = {"retrieve": 0, "to_deck": 1, "run": 2, "to_incubator": 3, "store": 4}


def plate_timeline(out: Path, runs: list[RobotRun] | None = None) -> dict[str, list[str]]:
    """plate -> its physical steps in time order: retrieve, to_deck, run, to_incubator, store."""
    runs = robot_runs(out) if runs is None else runs
    steps: dict[str, list[tuple[datetime, int, str]]] = defaultdict(list)
    for e in read_jsonl(out / "devices" / "incubator_actions.jsonl"):
        if e["action"] in ("retrieve", "store"):
            steps[e["plate"]].append((_time(e["time"]), _RANK[e["action"]], e["action"]))
    hands = out / "devices" / "operator_actions.jsonl"
    for e in read_jsonl(hands) if hands.exists() else []:
        if e["action"] in ("to_deck", "to_incubator"):
            steps[e["plate"]].append((_time(e["time"]), _RANK[e["action"]], e["action"]))
    arm = out / "devices" / "arm_actions.jsonl"
    for e in read_jsonl(arm) if arm.exists() else []:
        # The arm's own log: a plate placed on the incubator's transfer station went back,
        # one placed anywhere else went to the deck.
        if e["command"] == "PlacePlate" and e["result"] == "placed":
            action = "to_incubator" if e["station"] == TRANSFER_STATION else "to_deck"
            steps[e["plate"]].append((_time(e["time"]), _RANK[action], action))
    for r in runs:
        if r.job is not None:
            steps[r.job.plate].append((r.created, _RANK["run"], "run"))
    return {p: [s for _, _, s in sorted(v)] for p, v in steps.items()}


def assert_moves_paired(timeline: dict[str, list[str]]) -> None:
    """No plate fetched twice without a store between, nor stored twice without a fetch."""
    for plate, steps in timeline.items():
        moves = [s for s in steps if s in ("retrieve", "store")]
        for a, b in zip(moves, moves[1:], strict=False):
            assert a != b, f"{plate}: {a} twice in a row in {moves}"
        if moves:
            assert moves[0] == "retrieve", f"{plate}: first move {moves[0]}"
        hands = [s for s in steps if s in ("to_deck", "to_incubator")]
        for a, b in zip(hands, hands[1:], strict=False):
            assert a != b, f"{plate}: {a} twice in a row in {hands}"


# --- (a) a small protocol ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    d = tmp_path_factory.mktemp("simulate-small")
    proto = d / "small.yaml"
    proto.write_text(SMALL, encoding="utf-8")
    out = d / "out"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["simulate", str(proto), "--plates", "2", "--start", START, "--out", str(out)])
    return rc, buf.getvalue(), out


def test_small_protocol_completes_and_prints_the_summary(small_run: tuple[int, str, Path]) -> None:
    rc, text, out = small_run
    assert rc == 0, text
    lines = text.splitlines()
    assert "run completed: 8 of 8 tasks done; 0 started after their window; 0 deviation(s)" in lines
    assert any(
        line.startswith("simulated 3.0 days in ") and line.endswith("audit chain verified")
        for line in lines
    )
    util = lines.index("device utilisation (busy time / run span):")
    # The default workcell is automated: the arm carries, no person is busy.
    assert [line.split()[0] for line in lines[util + 1 : util + 4]] == [
        "arm-sim",
        "inc-sim",
        "ot2-sim",
    ]
    assert all(line.strip().endswith(" h)") and "%" in line for line in lines[util + 1 : util + 4])
    outside = lines.index("time out of the incubator per plate (longest, mean, times):")
    assert [line.split()[0] for line in lines[outside + 1 : outside + 3]] == ["P1", "P2"]
    assert all(line.rstrip().endswith("4 times") for line in lines[outside + 1 : outside + 3])
    assert f"run database: {out / 'run.db'}" in lines
    assert f"batch record: {out / 'batch-record.html'}" in lines
    assert f"device logs:  {out / 'devices'}" in lines
    assert (out / "run.db").stat().st_size > 0
    assert "<html" in (out / "batch-record.html").read_text(encoding="utf-8").lower()
    assert "alarms (" not in text and "waiting for the operator" not in text


def test_small_protocol_every_well_fed_once_with_its_volume(
    small_run: tuple[int, str, Path],
) -> None:
    _, _, out = small_run
    runs = assert_feeds_exact(out)
    assert len(runs) == 8 and all(r.status == "succeeded" for r in runs)
    counts = feeds_per_well(runs)
    wells = ["A1", "A2", "A3", "B1", "B2", "B3"]
    expected = {(p, f"d{d}-feed-0900", w) for p in ("P1", "P2") for d in range(4) for w in wells}
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    # The robot only ever dispensed 2 mL per well into the culture plate, 1 mL at a time.
    for r in runs:
        assert dict(r.dispensed) == {w: 2000.0 for w in wells}


def test_small_protocol_every_plate_fetched_and_stored_once_per_feed(
    small_run: tuple[int, str, Path],
) -> None:
    _, _, out = small_run
    timeline = plate_timeline(out)
    one_feed = ["retrieve", "to_deck", "run", "to_incubator", "store"]
    assert timeline == {"P1": one_feed * 4, "P2": one_feed * 4}
    # The arm moved each plate once per move, between the transfer station and the deck,
    # and no person carried anything.
    arm = read_jsonl(out / "devices" / "arm_actions.jsonl")
    placed = Counter((e["plate"], e["station"]) for e in arm if e["result"] == "placed")
    picked = Counter((e["plate"], e["station"]) for e in arm if e["result"] == "gripped")
    transfer = TRANSFER_STATION
    for p in ("P1", "P2"):
        deck = {s for (q, s) in placed if q == p} - {transfer}
        assert len(deck) == 1, deck  # one deck position per plate here
        assert placed[(p, transfer)] == picked[(p, transfer)] == 4
        assert sum(placed[(p, d)] for d in deck) == sum(picked[(p, d)] for d in deck) == 4
    assert not any(e["result"] not in ("placed", "gripped", "homed") for e in arm), arm
    assert not (out / "devices" / "operator_actions.jsonl").exists()
    inits = [
        e for e in read_jsonl(out / "devices" / "incubator_actions.jsonl") if e["action"] == "init"
    ]
    assert len(inits) <= 1


def test_small_protocol_jobs_carry_the_planned_recipes(small_run: tuple[int, str, Path]) -> None:
    _, _, out = small_run
    recipes = {
        (j.plate, j.task_key): j.params["recipe"]
        for j in db_jobs(out / "run.db")
        if j.op == "lh_run"
    }
    for p in ("P1", "P2"):
        assert recipes[(p, "d0-feed-0900")] == "M1 with A 1 µM"
        assert recipes[(p, "d2-feed-0900")] == "M1 50% + M2 50% with A 1 µM, B 100 ng/mL"
        assert recipes[(p, "d3-feed-0900")] == "M1 50% + M2 50% with B 100 ng/mL"


# --- (b) the acceptance test: the shipped Kriks protocol on 6 plates -----------------------


@pytest.mark.slow
def test_kriks_six_plates_every_well_gets_every_feed_once_with_the_planned_medium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from labctl.cli.common import start_time as _start
    from labctl.plan.resolve import FeedSpec, resolve
    from labctl.units import format_quantity
    from labctl.validate import load_file

    out = tmp_path / "kriks"
    rc = run_simulate(KRIKS, out, plates=6)
    text = capsys.readouterr().out
    assert rc == 0, text
    # 26 feeds x 6 plates and the events, all on time: the arm hands plates between the
    # incubator and the deck while the robot feeds the plate before (issue: the operator
    # carried each plate 26 times and the day-20 feed started late).
    done = next(line for line in text.splitlines() if line.startswith("run "))
    assert done == (
        "run completed: 186 of 186 tasks done; 0 started after their window; 0 deviation(s)"
    )
    hands = out / "devices" / "operator_actions.jsonl"
    carried = [e for e in read_jsonl(hands) if e["action"] in ("to_deck", "to_incubator")]
    assert carried == []

    # The plan of the same protocol and start: each day's FeedSpec gives the medium.
    plan = resolve(
        load_file(str(KRIKS)).protocol, plates=6, start=_start(START, "UTC"), timezone="UTC"
    )
    planned = {t.key: t for t in plan.tasks if isinstance(t.spec, FeedSpec)}
    assert len(planned) == 26

    runs = assert_feeds_exact(out)
    assert len(runs) == 26 * 6 and all(r.status == "succeeded" for r in runs)
    counts = feeds_per_well(runs)
    plates = [f"P{i}" for i in range(1, 7)]
    for key, task in planned.items():
        for p in plates:
            for w in task.wells:
                assert counts[(p, key, w)] == 1, (p, key, w)
    assert sum(counts.values()) == 26 * 6 * 6

    # Each robot run's job carries its day's recipe, medium parts and factors, and the
    # volume the robot put into each well is the job's add_ul (checked above) = the plan's.
    for r in runs:
        assert r.job is not None
        task = planned[r.job.task_key]
        recipe, got = task.spec.recipe, r.job.params
        assert got["recipe"] == recipe.label(), r.job.key
        assert [(n, pytest.approx(f)) for n, f in got["medium"]] == list(recipe.parts), r.job.key
        assert got["factors"] == {n: format_quantity(q) for n, q in recipe.factors}, r.job.key
        assert got["add_ul"] == pytest.approx(task.spec.add_ul)
        assert list(r.dispensed.values()) == [pytest.approx(task.spec.add_ul, abs=0.1)] * 6
    day = {t.day: planned[t.key].spec.recipe.label() for t in planned.values()}
    assert day[0].startswith("KSR_medium with ") and "SB431542 10 µM" in day[0]
    assert day[11].startswith("NB_B27 with ") and "DAPT 10 µM" in day[11]

    one_feed = ["retrieve", "to_deck", "run", "to_incubator", "store"]
    timeline = plate_timeline(out, runs)
    assert {p: [s for s in v if s in one_feed] for p, v in timeline.items()} == {
        p: one_feed * 26 for p in plates
    }


def test_a_workcell_analyses_ahead_only_while_it_runs(tmp_path: Path) -> None:
    from labctl.clock import VirtualClock
    from labctl.simulators.opentrons_analysis import speculating
    from labctl.simulators.workcell import SimulatedWorkcell

    before = speculating()
    clock = VirtualClock(datetime(2026, 12, 1, tzinfo=UTC))
    with SimulatedWorkcell(clock, None, ["P1"], tmp_path / "devices"):
        assert speculating()
    assert speculating() == before


@pytest.mark.parametrize("pace", ["0", "86400"])
def test_a_pace_the_devices_cannot_keep_up_with_is_refused(
    tmp_path: Path, pace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run_simulate(KRIKS, tmp_path / "out", "--pace", pace)
    assert rc == 1
    err = capsys.readouterr().err
    assert f"--pace must be above 0 and at most 3600, not {pace}" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_where_each_plate_is_follows_the_deck_position_the_engine_chose(
    small_run: tuple[int, str, Path], tmp_path: Path
) -> None:
    """Plates alternate between the deck's two positions; the location a status shows for
    a plate on the deck is the one the arm put it on (its own log), not the plan's first."""
    import shutil

    from labctl.clock import VirtualClock
    from labctl.reports.locations import plate_locations
    from labctl.store import Store

    _, _, out = small_run
    arm = read_jsonl(out / "devices" / "arm_actions.jsonl")
    slot_of_station = {n: name.rsplit("/", 1)[-1] for name, n in ARM_STATIONS.items()}
    on3 = next(e for e in arm if e["result"] == "placed" and slot_of_station[e["station"]] == "3")
    db = tmp_path / "copy.db"
    shutil.copy(out / "run.db", db)
    # Wind that feed back to the moment its plate was put on the deck: later steps undone.
    with sqlite3.connect(db) as con:
        (task_id, seq) = con.execute(
            "select j.task_id, j.seq from jobs j join tasks t on t.id = j.task_id "
            "where j.op = 'to_deck' and t.key like ? and j.finished_at >= ? "
            "order by j.finished_at limit 1",
            (f"%/{on3['plate']}", on3["time"][:19]),
        ).fetchone()
        con.execute(
            "update jobs set state = 'pending', started_at = null, finished_at = null "
            "where (task_id = ? and seq > ?) or task_id > ?",
            (task_id, seq, task_id),
        )
    with Store.open(db, VirtualClock(datetime(2030, 1, 1, tzinfo=UTC)), create=False) as store:
        where = {loc.plate: loc.where for loc in plate_locations(store, 1)}
    assert where[on3["plate"]] == "ot2-sim deck position 3"


def test_two_robots_share_the_plates_each_well_fed_once(tmp_path: Path) -> None:
    """``--robots 2``: the second robot is a simulator of its own with its own log; each
    plate is fed by one robot all run long, every well once, judged from both logs."""
    proto = tmp_path / "small.yaml"
    proto.write_text(SMALL, encoding="utf-8")
    out = tmp_path / "out"
    assert run_simulate(proto, out, "--robots", "2", plates=2) == 0
    first, second = robot_runs(out), robot_runs(out, "ot2-sim-2_actions.jsonl")
    assert {r.job.plate for r in first if r.job} == {"P1"}
    assert {r.job.plate for r in second if r.job} == {"P2"}
    assert len(first) == len(second) == 4
    assert_feeds_exact(out, first + second)
    assert_moves_paired(plate_timeline(out, first + second))
    placed = [
        e for e in read_jsonl(out / "devices" / "arm_actions.jsonl") if e["result"] == "placed"
    ]
    stations = arm_stations(2)
    robot_of = {n: name.split("/")[0] for name, n in stations.items() if "/" in name}
    assert {robot_of[e["station"]] for e in placed if e["plate"] == "P2"} == {
        "ot2-sim-2",
        "inc-sim",
    }


def test_several_robots_need_the_arm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proto = tmp_path / "small.yaml"
    proto.write_text(SMALL, encoding="utf-8")
    rc = main(["simulate", str(proto), "--robots", "2", "--no-arm", "--out", str(tmp_path / "o")])
    assert rc != 0 and "several robots need the arm" in capsys.readouterr().err
