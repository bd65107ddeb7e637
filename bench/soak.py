"""The long live soak: the practice workcell and the engine as separate OS processes, paced,
with engine SIGKILLs, device crashes (the robot forgets its runs) and database rollbacks
at random moments; lost and doubled physical actions counted from the devices' own logs
(the robot's runs and commands, the incubator's fetches and stores, the operator's carries
and hand feeds), never from labctl's store.

Run by hand (Linux):  python bench/soak.py [--trials 6] [--seed 1] [--feeds 6] ...

Each trial is a fresh workcell and database running a short protocol of ``--feeds`` full
changes, 3 h apart in practice time, at ``--pace`` (practice seconds per wall second).
Prints one line per trial, then the sums; the last line reads
``soak: N engine kills, N device crashes, N rollbacks, lost N, doubled N, prompts N``.
A trial that does not complete in ``--limit`` wall seconds counts its missing actions as
lost. Nothing is asserted: the figures are for reading.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import protocol_text  # noqa: E402
from tests.live_harness import WALL, LiveWorkcell, Tally, chaos, short_protocol  # noqa: E402


def trial(args: argparse.Namespace, seed: int, folder: Path) -> tuple[LiveWorkcell, Tally, str]:
    """One live trial in ``folder``: its workcell, its tally and the run's end state."""
    lines: list[str] = []
    say = print if args.verbose else lines.append
    live = LiveWorkcell(folder, plates=args.plates, pace=args.pace, seed=seed, say=say)
    state = "not started"
    try:
        live.start_simulators()
        proto, day0 = short_protocol(
            live.practice_now(), feeds=args.feeds, gap_h=3.0, text=protocol_text
        )
        live.register(proto, day0)
        live.start_engine()
        state = chaos(
            live,
            kills=args.kills,
            crashes=args.crashes,
            rollbacks=args.rollbacks,
            limit_s=args.limit,
        )
    finally:
        live.stop()
    t = live.tally()
    if t.lost or t.doubled or state != "completed":
        for line in [*lines, *t.lost, *t.doubled]:
            print(f"    | {line}")
    return live, t, state


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=6, help="fresh workcells, one after another")
    ap.add_argument("--seed", type=int, default=1, help="first trial's seed (then +1 each)")
    ap.add_argument("--plates", type=int, default=2, help="plates per trial")
    ap.add_argument("--feeds", type=int, default=6, help="full changes per plate, 3 h apart")
    ap.add_argument("--kills", type=int, default=5, help="engine SIGKILLs per trial")
    ap.add_argument("--crashes", type=int, default=2, help="simulator crashes per trial")
    ap.add_argument("--rollbacks", type=int, default=2, help="database rollbacks per trial")
    ap.add_argument("--pace", type=float, default=1440.0, help="practice s per wall s")
    ap.add_argument("--limit", type=float, default=400.0, help="wall seconds per trial at most")
    ap.add_argument("--keep", action="store_true", help="keep each trial's folder")
    ap.add_argument("--verbose", action="store_true", help="print the chaos as it happens")
    args = ap.parse_args()

    kills = crashes = rollbacks = lost = doubled = prompts = 0
    incomplete = 0
    t0 = WALL.monotonic()
    for i in range(args.trials):
        seed = args.seed + i
        folder = Path(tempfile.mkdtemp(prefix=f"labctl-soak-{seed}-"))
        started = WALL.monotonic()
        live, t, state = trial(args, seed, folder)
        took = WALL.monotonic() - started
        print(
            f"trial {i + 1}/{args.trials} seed {seed}: {state} in {took:.0f} s; "
            + t.line(live.kills, live.crashes, live.rollbacks)
            + ("" if not args.keep else f"  ({folder})"),
            flush=True,
        )
        kills += live.kills
        crashes += live.crashes
        rollbacks += live.rollbacks
        lost += len(t.lost)
        doubled += len(t.doubled)
        prompts += t.prompts
        incomplete += state != "completed"
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(
        f"{args.trials} trials, {args.trials * args.plates * args.feeds} feeds planned, "
        f"{incomplete} not completed, {WALL.monotonic() - t0:.0f} s wall"
    )
    print(
        f"soak: {kills} engine kills, {crashes} device crashes, {rollbacks} rollbacks, "
        f"lost {lost}, doubled {doubled}, prompts {prompts}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
