"""The acceptance test that matters most: SIGKILL the engine at random points (50 in CI) of a
25-day run, restart it each time, and check that no task was lost, no physical action
happened twice, and the audit chain verifies.

The engine runs in a subprocess on the virtual clock with file-backed fake devices that
log every physical action to their own file (the ground truth). Kill points are device
calls, drawn at random: just before a device is told to act (after the commit), just after
it acted (before the op id is recorded), and at polls.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labctl.clock import VirtualClock
from labctl.store import Store

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "crash_harness.py"
KILLS = 50


def _run(db: Path, state: Path, kill_at: int, plates: int, *extra: str) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    p = subprocess.run(
        [sys.executable, str(HARNESS), str(db), str(state), str(kill_at), str(plates), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if p.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"harness exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p.returncode


@pytest.mark.slow
@pytest.mark.parametrize(
    ("carrier", "kills_wanted"),
    [("operator", KILLS), ("arm", 30), ("hypoxic", 20), ("batch", 20)],
)
def test_sigkill_at_random_points_loses_nothing_and_repeats_nothing(
    tmp_path: Path, carrier: str, kills_wanted: int
) -> None:
    """With the operator carrying plates, with an arm (kills land between its pick and
    its place: after the move began, before the engine recorded its op id or end), and
    with an arm that also moves two plates between two incubators every day."""
    rng = random.Random(20261126)
    plates = 2 if carrier in ("hypoxic", "batch") else 1
    db, state = tmp_path / "run.db", tmp_path / "devices"
    extra = (carrier,) if carrier != "operator" else ()
    # A whole 1-plate Kriks run has about 420 crash points: spread the kills over it.
    kills = 0
    rc = None
    while kills < kills_wanted:
        rc = _run(db, state, rng.randint(1, 7), plates, *extra)
        if rc == 0:
            break
        kills += 1
    if rc != 0:
        rc = _run(db, state, 0, plates, *extra)  # let it finish
    assert rc == 0, "the run did not complete after the restarts"
    assert kills == kills_wanted, f"only {kills} kills happened before the run completed"

    store = Store.open(db, VirtualClock(datetime(2030, 1, 1, tzinfo=timezone.utc)))
    run = store.list_runs()[0]
    assert run.state == "completed"
    tasks = store.tasks(run.id)
    assert tasks and all(t.state == "done" for t in tasks), Counter(t.state for t in tasks)
    jobs = store.jobs(run.id)
    assert all(j.state == "done" for j in jobs), Counter(j.state for j in jobs)

    actions = [json.loads(x) for x in (state / "actions.jsonl").read_text().splitlines() if x]
    per_job = Counter(a["job"] for a in actions)
    twice = {k: n for k, n in per_job.items() if n > 1}
    assert not twice, f"physical actions done twice: {twice}"
    # every job happened exactly once on its device (a job that rode in another's robot
    # run happened in that run: below, every plate is fed once per feed)
    job_keys = {j.spec["key"] for j in jobs}
    rode = {j.spec["key"] for j in jobs if str(j.device_op_id or "").startswith("ride:")}
    assert set(per_job) == job_keys - rode
    fed = Counter(
        (a["job"].split("/")[0], plate)
        for a in actions
        if a["device"] == "ot2-sim"
        for plate in a.get("batch_plates") or [a["job"].split("/")[1]]
    )
    assert set(fed.values()) == {1}, {k: n for k, n in fed.items() if n != 1}
    # and no device ever received the same job twice (an op started twice is a doubled action)
    for f in state.glob("*.ops.json"):
        ops = json.loads(f.read_text())
        started = Counter(op["job"] for op in ops.values())
        assert not {k: n for k, n in started.items() if n > 1}, f"{f.name}: a job started twice"
    lh = [a for a in actions if a["device"] == "ot2-sim"]
    moves = [a for a in actions if a["device"] == "arm-sim"]
    if carrier == "hypoxic":  # 8 daily feeds, and a move to the other incubator each night
        assert len(lh) == 8 * plates
        assert len(moves) == (2 * 8 + 7) * plates
        _assert_slots_consistent(actions, seeded={"inc-hyp": {1, 2}})
        # and kills did land in the moves between incubators (reconciled after a restart)
        keys = {j.id: j.spec["key"] for j in jobs}
        settled = [
            e
            for e in store.events(run.id, entity="job", limit=None)
            if "environment" in keys.get(e.entity_id or 0, "")
            and ("restart" in (e.reason or "") or "never received" in (e.reason or ""))
        ]
        assert len(settled) >= 3, settled
    elif carrier == "batch":  # two plates fed in one robot run, mostly
        assert len(fed) == 26 * plates
        assert len(rode) >= 15, f"only {len(rode)} feeds rode in a shared robot run"
        assert len(moves) == 2 * 26 * plates
    else:
        assert len(lh) == 26 * plates
        assert len(moves) == (2 * 26 * plates if carrier == "arm" else 0)
    report = store.verify_chain()
    assert report.ok, report.message


def _assert_slots_consistent(actions: list[dict], seeded: dict[str, set[int]]) -> None:
    """Every incubator's own record, in time order: a slot is fetched from only while a
    plate is in it and stored into only while it is empty (``seeded``: the slots full at
    the start); at the end every plate is back in a slot."""
    full = {dev: set(slots) for dev, slots in seeded.items()}
    for a in sorted(actions, key=lambda a: a["time"]):
        if a["kind"] not in ("fetch", "store"):
            continue
        slots = full.setdefault(a["device"], set())
        if a["kind"] == "fetch":
            assert a["slot"] in slots, (
                f"{a['job']}: fetch from empty {a['device']} slot {a['slot']}"
            )
            slots.discard(a["slot"])
        else:
            assert a["slot"] not in slots, (
                f"{a['job']}: store into full {a['device']} slot {a['slot']}"
            )
            slots.add(a["slot"])
    assert sum(len(s) for s in full.values()) == sum(len(s) for s in seeded.values())
