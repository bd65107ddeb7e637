"""One engine process of the crash test: run (or resume) a Kriks run on file-backed fakes.

Usage: python tests/crash_harness.py DB STATE_DIR KILL_AT PLATES [arm|hypoxic|batch]
With ``arm``, a plate-moving arm (arm-sim) carries the plates, not the operator. With
``hypoxic``, the arm also moves them between two incubators every day: a short protocol
asks for 4% O2 on even days, which a second incubator (inc-hyp) holds. With ``batch``,
the arm carries and the robot feeds two plates in one run (deck positions 1 and 3). Kills itself with SIGKILL at the KILL_AT-th device call (0 = never). Exits 0 when the run
has completed, 3 if it stopped for another reason.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labctl.clock import VirtualClock  # noqa: E402
from labctl.engine import Engine, EngineConfig, register_run  # noqa: E402
from labctl.jobs import WorkcellRoles  # noqa: E402
from labctl.plan.resolve import resolve  # noqa: E402
from labctl.roles import AMBIENT  # noqa: E402
from labctl.store import Store  # noqa: E402
from labctl.validate import load_protocol  # noqa: E402
from tests.fakes import Killer, fake_workcell  # noqa: E402

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)


class PersistentClock(VirtualClock):
    """Virtual time that survives the process: the world's time does not stop at a crash."""

    def __init__(self, path: Path, start: datetime) -> None:
        super().__init__(start)
        self.path = path

    def sleep_until(self, when: datetime) -> None:
        super().sleep_until(when)
        self.path.write_text(self.now().isoformat())

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        self.path.write_text(self.now().isoformat())


# Daily feeds, 4% O2 on even days: the plates change incubator every day.
HYPOXIC = """\
labctl: 1
id: crash-hypoxic
title: plates that change incubator every day
version: 1.0.0
compounds:
  A: {stock: 10 mM, solvent: DMSO}
media:
  M1: {description: base}
culture: {labware: corning_6_wellplate_16.8ml_flat, volume: 2 mL}
timing: {feed_at: "09:00", window: 2 h}
schedule:
  media:
    - {days: "0-7", medium: M1}
  factors:
    - {compound: A, conc: 1 uM, days: "0-7"}
  feeds:
    - {days: "0-7", change: full}
  environment:
    - {days: "0-7/2", o2: 4%}
"""


def roles(
    labels: list[str], arm: bool, hypoxic: bool = False, batch: bool = False
) -> WorkcellRoles:
    """The simulated workcell's roles; with ``arm``, arm-sim carries the plates; with
    ``hypoxic``, inc-hyp holds 4% O2 next to inc-sim; with ``batch``, two plates a run."""
    r = WorkcellRoles.simulated(labels)
    r = dataclasses.replace(r, mover="arm-sim") if arm or hypoxic or batch else r
    if batch:
        r = dataclasses.replace(r, deck_slots=(1, 3), batch={"ot2-sim": 2})
    if hypoxic:
        r = dataclasses.replace(
            r,
            climates=(("inc-sim", AMBIENT), ("inc-hyp", (37.0, 5.0, 4.0))),
            more_slots={"inc-hyp": {p: i + 1 for i, p in enumerate(labels)}},
        )
    return r


def main() -> int:
    db, state_dir, kill_at, plates = (
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    hypoxic = sys.argv[5:6] == ["hypoxic"]
    batch = sys.argv[5:6] == ["batch"]
    arm = sys.argv[5:6] == ["arm"] or hypoxic or batch
    state_dir.mkdir(parents=True, exist_ok=True)
    clock_file = state_dir / "clock.txt"
    clock = PersistentClock(clock_file, T0)
    store = Store.open(db, clock, durable=False)
    last = store.events(limit=1, newest_first=True)
    if last:
        clock.set(last[0].time)
    if clock_file.exists():
        clock.set(datetime.fromisoformat(clock_file.read_text()))
    # The restart itself takes a while: 10 s to a few minutes of downtime.
    clock.advance(10.0 + 20.0 * (kill_at % 10))
    if not store.list_runs():
        if hypoxic:
            (state_dir / "hypoxic.yaml").write_text(HYPOXIC, encoding="utf-8")
        proto = load_protocol(
            state_dir / "hypoxic.yaml" if hypoxic else ROOT / "protocols/kriks2011_da.yaml"
        )
        plan = resolve(
            proto, plates=plates, start=datetime(2026, 12, 1, 9, 0), timezone="Europe/Stockholm"
        )
        labels = [f"P{i + 1}" for i in range(plates)]
        with store.atomic():
            rid = register_run(
                store,
                clock,
                proto,
                plan,
                roles(labels, arm, hypoxic, batch),
                name="crash",
                workcell_name="fakes",
                workcell_text="",
                actor="harness",
            )
            store.insert_command("start", actor="harness", run_id=rid)
    run_id = store.list_runs()[0].id
    devices = fake_workcell(clock, state_dir, Killer(kill_at or None), arm=arm, hypoxic=hypoxic)
    engine = Engine(store, clock, devices, EngineConfig())
    engine.run(until=lambda: store.get_run(run_id).state in ("completed", "aborted", "failed"))
    return 0 if store.get_run(run_id).state == "completed" else 3


if __name__ == "__main__":
    raise SystemExit(main())
