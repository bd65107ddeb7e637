"""How long does a whole dry run take? Run by hand: python bench/dry_run.py

Two wall times, measured in the same invocation:

- ``labctl simulate protocols/kriks2011_da.yaml --plates 6`` (day 0 fixed, virtual time): the
  whole 26-day protocol on 6 plates through the real engine and drivers against the
  simulated workcell, 156 liquid-handling runs each analysed by the simulated robot;
- ONE ``opentrons_simulate`` of ONE generated feed protocol (the day-0 feed of plate P1,
  generated with labctl.drivers.opentrons_protocol.generate from its job's parameters), the
  check a user would otherwise run by hand per protocol file.

It prints figures only; nothing is asserted. Both are measured ``--repeat`` times (default 3),
interleaved, and the medians compared. The last line reads
``dry run: N.Nx one opentrons_simulate`` (the whole dry run's wall time over the one call's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from labctl.cli.common import start_time as _start
from labctl.clock import RealClock
from labctl.drivers.opentrons_protocol import DeckLayout, generate
from labctl.jobs import Op, WorkcellRoles, expand
from labctl.plan.resolve import resolve
from labctl.validate import load_file

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocols" / "kriks2011_da.yaml"
PLATES = 6
START = "2026-12-01T09:00"
DECK = {"plate": [1, 3]}  # the simulated workcell's OT-2 deck (simulators/workcell.py)


def feed_protocol_source() -> tuple[str, str]:
    """(job key, protocol source) of the first feed job of the Kriks plan on 6 plates."""
    protocol = load_file(str(PROTOCOL)).protocol
    assert protocol is not None
    plan = resolve(protocol, plates=PLATES, start=_start(START, "UTC"), timezone="UTC")
    labels = [f"P{i + 1}" for i in range(PLATES)]
    for chain in expand(plan, labels, WorkcellRoles.simulated(labels)):
        for job in chain.jobs:
            if job.op is Op.LH_RUN and job.params.get("kind") == "feed":
                return job.key, generate(job.params, DeckLayout.from_deck(DECK, "OT-2"), "OT-2")
    raise SystemExit("the Kriks plan has no feed job")


def time_opentrons_simulate(source: str, work: Path) -> float:
    """Wall seconds of one ``opentrons_simulate`` call on ``source`` (config in a temp dir)."""
    path = work / "feed.py"
    path.write_text(source, encoding="utf-8")
    exe = Path(sys.executable).with_name("opentrons_simulate")
    env = dict(os.environ, OT_API_CONFIG_DIR=str(work / "ot-config"))
    clock = RealClock()
    t0 = clock.monotonic()
    done = subprocess.run(
        [str(exe), str(path)], env=env, capture_output=True, text=True, check=False
    )
    elapsed = clock.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"opentrons_simulate failed ({done.returncode}):\n{done.stderr[-2000:]}")
    steps = sum(1 for line in done.stdout.splitlines() if line.strip())
    print(f"opentrons_simulate of one feed protocol: {elapsed:.1f} s ({steps} lines of run log)")
    return elapsed


def time_labctl_simulate(work: Path) -> float:
    """Wall seconds of ``labctl simulate`` on the Kriks protocol, 6 plates, in a subprocess."""
    out = work / "simulate"
    cmd = [sys.executable, "-m", "labctl", "simulate", str(PROTOCOL), "--plates", str(PLATES),
           "--start", START, "--out", str(out)]  # fmt: skip
    env = dict(os.environ, OT_API_CONFIG_DIR=str(work / "ot-config"))
    clock = RealClock()
    t0 = clock.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = clock.monotonic() - t0
    status = next((x for x in done.stdout.splitlines() if x.startswith("run ")), "no summary")
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    log = out / "devices" / "robot_actions.jsonl"
    events = (
        [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
        if log.exists()
        else []
    )
    runs = sum(1 for e in events if e["event"] == "run_created")
    commands = sum(1 for e in events if e["event"] == "command")
    print(
        f"labctl simulate kriks2011_da, {PLATES} plates: {elapsed:.1f} s (exit {done.returncode})"
    )
    print(f"  {status}")
    print(
        f"  {runs} robot runs, {commands} physical robot commands; {elapsed / max(runs, 1):.2f} s per run"
    )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="measure both this many times, interleaved, and compare the medians (the "
        "machines this runs on are shared and their speed drifts by a third)",
    )
    args = parser.parse_args()
    key, source = feed_protocol_source()
    print(f"feed protocol: job {key}, {len(source.splitlines())} lines of Python")
    ones, wholes = [], []
    for _ in range(max(1, args.repeat)):
        with tempfile.TemporaryDirectory(prefix="labctl-dry-run-") as tmp:
            work = Path(tmp)
            ones.append(time_opentrons_simulate(source, work))
            wholes.append(time_labctl_simulate(work))
    one, whole = statistics.median(ones), statistics.median(wholes)
    if len(ones) > 1:
        print(
            f"medians of {len(ones)}: opentrons_simulate {one:.1f} s, labctl simulate {whole:.1f} s"
            f" (ratios {', '.join(f'{w / o:.1f}' for o, w in zip(ones, wholes, strict=True))})"
        )
    print(f"dry run: {whole / one:.1f}x one opentrons_simulate")


if __name__ == "__main__":
    main()
