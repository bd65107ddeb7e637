"""How many plates can one workcell feed on time? Run by hand: python bench/capacity.py

A workcell of one liquid handler (an OT-2 whose deck takes culture plates on slots 1 and 3),
one automated incubator and a plate-moving arm feeds a daily full-change protocol (6-well
plates, days 0-3, 09:00 +/- 2 h). The script finds, by binary search, the largest number
of plates N for which every feed starts inside its window:

- with labctl's scheduler (earliest deadline first, chains pipelined across devices);
- with a naive first-come scheduler (chains in due order, each one after the previous
  chain has ended, nothing interleaved), written below;

and sets both next to the bound the liquid handler's busy time allows.

Then it dry-runs the shipped Kriks protocol (26 feeds) on 24 and 48 plates on the default
simulated workcell (a Cytomat, an OT-2 with plates on slots 1 and 3, a PF400 arm: no person
carries) with one plate per robot run, and with two plates per run (``--batch 2``), and
reports the late tasks, the robot's busy time and the bound: in each feed window the robot's
runs must START inside the window, so a window of W s fits at most floor(W / run) + 1 runs
(of one plate, or of two); the plates beyond that are late whatever the scheduler does.
``late / bound`` near 1 means the schedule loses nothing beyond what the robot's runs make
unavoidable.

It prints figures only; nothing is asserted. The last line reads
``capacity: NN% of bound (two plates a run: P plates, Q on 4 positions) (first-come: MM%); Kriks 24/48 plates: late A/B (bound C/D); 48
plates on two robots: late E; two plates a run: late F/G (bound H/I), robot busy J h vs K h
at 48`` (``--robots 2`` and ``--batch 2`` of the simulated workcell).
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import sqlite3
import tempfile
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

from labctl.cli.main import main as labctl_main
from labctl.clock import RealClock
from labctl.jobs import Chain, Durations, WorkcellRoles, expand, lh_duration_s, natural_key
from labctl.plan.resolve import Plan, resolve
from labctl.schedule.scheduler import schedule
from labctl.validate import load_text
from labctl.workcell import parse_workcell

WINDOW_H = 2.0
DAYS = 4

PROTOCOL = f"""\
labctl: 1
id: bench-daily-full-change
title: Daily full change (capacity bench)
version: 1.0.0
compounds:
  LDN193189: {{stock: 1 mM, solvent: DMSO}}
media:
  M: {{description: any base medium}}
culture: {{labware: corning_6_wellplate_16.8ml_flat, volume: 2 mL}}
timing: {{feed_at: "09:00", window: {WINDOW_H:g} h, max_out_of_incubator: 20 min}}
schedule:
  media:
    - {{days: "0-{DAYS - 1}", medium: M}}
  factors:
    - {{compound: LDN193189, conc: 100 nM, days: "0-{DAYS - 1}"}}
  feeds:
    - {{days: "0-{DAYS - 1}", change: full}}
"""


def workcell_text(deck: str) -> str:
    """``deck``: the culture-plate positions, then ``x2`` for two plates a robot run."""
    plates, _, batch = deck.partition("x")
    more = f", batch: {batch}" if batch else ""
    return f"""\
name: bench
timezone: UTC
devices:
  ot2: {{driver: opentrons, url: "http://127.0.0.1:31950", deck: {{plate: {plates}, reservoir: 2}}{more}}}
  inc: {{driver: cytomat, port: /dev/null, slots: 400}}
  arm: {{driver: arm}}
"""


def make_plan(n: int) -> Plan:
    res = load_text(PROTOCOL, "bench.yaml")
    if res.protocol is None:
        raise SystemExit("\n".join(d.format() for d in res.diagnostics))
    return resolve(res.protocol, plates=n, start=datetime(2027, 1, 4), timezone="UTC")


def chains_for(n: int, deck: str) -> tuple[Plan, list[Chain]]:
    plan = make_plan(n)
    plates = [f"P{i}" for i in range(1, n + 1)]
    wc = parse_workcell(workcell_text(deck), "bench-workcell.yaml")
    roles = WorkcellRoles.from_workcell(wc, plates)
    return plan, expand(plan, plates, roles, max_out_s=20 * 60)


def labctl_ok(n: int, deck: str) -> bool:
    plan, chains = chains_for(n, deck)
    s = schedule(chains, now=plan.start - timedelta(days=1))
    return not s.late


def first_come_ok(n: int, deck: str) -> bool:
    """Chains in due order; each starts when the previous one has ended (or when its own
    main job may start, if later). No two chains ever overlap, so no device can clash."""
    plan, chains = chains_for(n, deck)
    order = sorted(chains, key=lambda c: (c.due, natural_key(c.key)))
    free = plan.start - timedelta(days=1)
    for c in order:
        lead = timedelta(seconds=sum(j.duration_s for j in c.jobs[: c.main_seq]))
        start = max(free, c.window_start - lead)
        if start + lead > c.window_end:
            return False
        free = start + timedelta(seconds=c.duration_s)
    return True


def largest(ok, deck: str, hi: int) -> int:  # noqa: ANN001 - a predicate
    """Largest n in [0, hi] with ok(n, deck), assuming ok is monotone in n."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid, deck):
            lo = mid
        else:
            hi = mid - 1
    return lo


def main() -> None:
    d = Durations()
    plan = make_plan(1)
    lh = lh_duration_s(plan.tasks[0], d)
    window = 2 * WINDOW_H * 3600
    bound = math.floor(window / lh) + 1
    print("Workcell: 1 liquid handler (deck plate slots 1 and 3), 1 incubator, 1 arm")
    print(
        f"Protocol: daily full change of 6-well plates, days 0-{DAYS - 1}, 09:00 +/- {WINDOW_H:g} h"
    )
    print(
        f"Durations: fetch {d.fetch:g} s, arm move {d.move_arm:g} s, LH run {lh:g} s per plate "
        f"({d.lh_overhead:g} s + 6 wells x {d.lh_per_well_full:g} s), store {d.store:g} s"
    )
    print(
        f"Bound: a feed is on time when its LH run STARTS inside the {window / 3600:g} h window; "
        f"LH runs cannot overlap, so at most floor({window:g} s / {lh:g} s) + 1 = {bound} "
        f"starts fit (one at each end of the window counts). "
        f"[floor(2 x window / LH) alone = {math.floor(window / lh)}]"
    )
    clock = RealClock()
    hi = 4 * bound
    t0 = clock.monotonic()
    n_sched = largest(labctl_ok, "[1, 3]", hi)
    elapsed = clock.monotonic() - t0
    n_naive = largest(first_come_ok, "[1, 3]", hi)
    n_one = largest(labctl_ok, "1", hi)
    n_pairs = largest(labctl_ok, "[1, 3]x2", hi)
    n_pairs4 = largest(labctl_ok, "[1, 3, 4, 6]x2", hi)
    plan_n, chains = chains_for(n_sched, "[1, 3]")
    t1 = clock.monotonic()
    schedule(chains, now=plan_n.start - timedelta(days=1))
    one_run = clock.monotonic() - t1
    print(
        f"labctl scheduler: {n_sched} plates on time ({len(chains)} chains scheduled in {one_run:.3f} s; binary search {elapsed:.2f} s)"
    )
    print(
        f"first-come scheduler: {n_naive} plates (each chain {lh + 2 * d.move_arm + d.fetch + d.store:g} s end to end, "
        "one at a time)"
    )
    chain_s = d.fetch + d.move_arm + lh + d.move_arm + d.store
    print(
        f"for comparison, a deck with one plate slot: labctl {n_one} plates. There the next "
        "plate can only be fetched once the previous one is back in the incubator (the "
        "transfer station holds one plate and the plate on the deck must pass through it), "
        f"so chains cannot overlap: floor({window:g} s / {chain_s:g} s) + 1 = "
        f"{math.floor(window / chain_s) + 1}"
    )
    print(
        f"two plates a robot run ({d.lh_overhead:g} s of overhead once per run): labctl "
        f"{n_pairs} plates on a deck of 2 culture positions (one batch on the deck at a "
        f"time), {n_pairs4} on a deck of 4 (the next batch is put down while the robot "
        "feeds this one)"
    )
    kriks = {n: kriks_dry_run(n) for n in (24, 48)}
    two = kriks_dry_run(48, robots=2)
    paired = {n: kriks_dry_run(n, batch=2) for n in (24, 48)}
    runs = [
        *(((n, 1, 1), k) for n, k in kriks.items()),
        ((48, 2, 1), two),
        *(((n, 1, 2), k) for n, k in paired.items()),
    ]
    for (n, robots, batch), k in runs:
        per = "one plate per robot run" if batch == 1 else f"{batch} plates per robot run"
        print(
            f"Kriks on {n} plates, {robots} robot(s) ({per}): "
            f"{k['late']} of {k['feeds']} feeds "
            f"late; robot busy {k['busy_h']:.1f} h; the bound makes {k['bound']} late "
            f"(windows that need more robot time than they hold: {k['tight']}); "
            f"late / bound = {k['late'] / max(1, k['bound']):.2f}; dry run {k['wall_s']:.0f} s"
        )
    print(
        f"capacity: {round(100 * n_sched / bound)}% of bound "
        f"(two plates a run: {n_pairs} plates, {n_pairs4} on 4 positions) "
        f"(first-come: {round(100 * n_naive / bound)}%); Kriks 24/48 plates: late "
        f"{kriks[24]['late']}/{kriks[48]['late']} (bound {kriks[24]['bound']}/{kriks[48]['bound']}); "
        f"48 plates on two robots: late {two['late']}; two plates a run: late "
        f"{paired[24]['late']}/{paired[48]['late']} (bound {paired[24]['bound']}/{paired[48]['bound']}), "
        f"robot busy {paired[48]['busy_h']:.0f} h vs {kriks[48]['busy_h']:.0f} h at 48"
    )


def kriks_dry_run(n: int, robots: int = 1, batch: int = 1) -> dict[str, float]:
    """``labctl simulate`` of the shipped Kriks protocol on ``n`` plates and ``robots``
    robots, ``batch`` plates per robot run, read back from its run database: late feeds,
    robot busy hours, and the late feeds the bound makes certain."""
    kriks = Path(__file__).resolve().parents[1] / "protocols" / "kriks2011_da.yaml"
    clock = RealClock()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = clock.monotonic()
        said = io.StringIO()
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            rc = labctl_main(
                ["simulate", str(kriks), "--plates", str(n), "--start", "2027-01-04T09:00",
                 "--out", tmp, "--robots", str(robots), "--batch", str(batch)]
            )  # fmt: skip
        wall = clock.monotonic() - t0
        if rc != 0:
            kept = Path(tempfile.mkdtemp(prefix=f"capacity-{n}-failed-"))
            shutil.copytree(tmp, kept, dirs_exist_ok=True)
            tail = "\n".join(said.getvalue().splitlines()[-15:])
            raise SystemExit(
                f"the {n}-plate dry run ended with exit code {rc} (its folder: {kept}):\n{tail}"
            )
        with sqlite3.connect(Path(tmp) / "run.db") as db:
            tasks = db.execute(
                "select key, window_start, window_end, actual_start from tasks "
                "where key like '%feed%'"
            ).fetchall()
            # a job that rode in another's robot run took no robot time of its own
            runs = db.execute(
                "select t.key, j.started_at, j.finished_at from jobs j join tasks t "
                "on t.id = j.task_id where j.op = 'lh_run' and j.state = 'done' "
                "and coalesce(j.device_op_id, '') not like 'ride:%'"
            ).fetchall()
    span = {k: (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
            for k, a, b in runs}  # fmt: skip
    groups: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for row in tasks:
        groups[row[0].rsplit("/", 1)[0]].append(row)
    late = bound = tight = 0
    for rows in groups.values():
        window = (
            datetime.fromisoformat(rows[0][2]) - datetime.fromisoformat(rows[0][1])
        ).total_seconds()
        mine = sorted(span[r[0]] for r in rows if r[0] in span)
        run_s = mine[len(mine) // 2]  # the median run
        fits = robots * batch * (math.floor(window / run_s) + 1)
        bound += max(0, len(rows) - fits)
        tight += len(rows) > fits
        late += sum(1 for r in rows if r[3] is not None and r[3] > r[2])
    return {
        "late": late,
        "feeds": len(tasks),
        "busy_h": sum(span.values()) / 3600,
        "bound": bound,
        "tight": tight,
        "wall_s": wall,
    }


if __name__ == "__main__":
    main()
