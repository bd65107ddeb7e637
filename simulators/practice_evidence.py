"""What a person at the practice workcell can see of a job: the devices' own logs and
where the plates are (:class:`Evidence`). The practice operator
(:class:`~labctl.simulators.practice_bot.OperatorBot`) answers prompts from it.

- a fetch or store: where the plate is now (its slot, the transfer station, the deck);
- a liquid handling: the robot's action log (runs of the job's protocol, or of its batch
  leader's, read at the plate's own deck position: played? moved liquid? how did it end?);
- a carry: whether the plate is on the deck; an arm move: what the arm holds and where.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from labctl.simulators.practice_world import PlateWorld, RobotRun, robot_runs
from labctl.store import Store
from labctl.store.models import Job

__all__ = ["CARRIES", "Evidence", "carry_step", "job_key", "job_params", "job_plate"]

CARRIES = ("to_deck", "to_incubator")


class Evidence:
    """The devices' logs and the plates' places, read for one job at a time."""

    def __init__(
        self,
        store: Store,
        world: PlateWorld,
        robot_log: Path,
        robot_sync: Callable[[], None],
        robot_status: Callable[[str], str | None],
    ) -> None:
        self.store = store
        self.world = world
        self._robot_log = robot_log
        self._robot_sync = robot_sync
        self._robot_status = robot_status

    def lh_runs(self, job: Job) -> tuple[list[RobotRun], str | None]:
        """The robot runs that may have fed ``job``'s plate, and the deck slot to read them
        at (None: anywhere on the deck). A job of a batch (two plates in one run) is read at
        its own deck position, in its own runs and its leader's."""
        params = job_params(job)
        lead = params.get("rides")
        own_op = None if str(job.device_op_id or "").startswith("ride:") else job.device_op_id
        runs = robot_runs(self._robot_log, job_key(job), own_op)
        if not lead and not params.get("riders"):
            return runs, None
        if lead:
            runs += robot_runs(self._robot_log, str(lead))
        # Where the plate is on the deck, as a person sees it: on a deck with room for two
        # batches the engine chooses the positions as the plates arrive, not as planned.
        here = self.world.deck_position(self.world.label_of(self.slot_of(job)))
        return runs, str(here if here is not None else params.get("deck_slot"))

    def stored_since(self, job: Job) -> bool:
        """Whether the incubator's log shows ``job``'s plate stored in its slot after a robot
        run of ``job`` succeeded."""
        runs, _ = self.lh_runs(job)
        ends = [r.finished_at for r in runs if r.status == "succeeded" and r.finished_at]
        slot = self.slot_of(job)
        log = self._robot_log.parent / "incubator_actions.jsonl"
        if not ends or not slot or not log.exists():
            return False
        last = max(datetime.fromisoformat(t) for t in ends)
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(line)
                when = datetime.fromisoformat(str(e.get("time")))
            except ValueError:  # a line cut short by a kill
                continue
            if e.get("action") == "store" and e.get("slot") == slot and when > last:
                return True
        return False

    def plate_home(self, job: Job) -> tuple[bool, str]:
        """Whether the job's plate is in its incubator slot (and in which words)."""
        fetch = next(
            (
                j
                for j in self.store.jobs(self.run_of(job))
                if j.task_id == job.task_id and j.op == "fetch"
            ),
            None,
        )
        slot = int(job_params(fetch).get("slot", 0)) if fetch is not None else 0
        inc = self.world.incubator
        if slot and slot in inc.slots and not self.on_deck(job):
            return True, f"slot {slot} of {inc.name} holds plate {inc.slots[slot]}"
        return False, f"slot {slot} of {inc.name} is empty" if slot else "no slot is known"

    def slot_of(self, job: Job) -> int:
        """The incubator slot that is the home of ``job``'s plate (0: none known)."""
        fetch = next(
            (
                j
                for j in self.store.jobs(self.run_of(job))
                if j.task_id == job.task_id and j.op == "fetch"
            ),
            None,
        )
        return int(job_params(fetch).get("slot", 0)) if fetch is not None else 0

    def on_deck(self, job: Job) -> bool:
        """Whether ``job``'s plate is on the robot's deck (carried by hand or by the arm)."""
        if job_plate(job) in self.world.on_deck():
            return True
        return self.world.on_arm_deck(self.world.label_of(self.slot_of(job)))

    def run_of(self, job: Job) -> int:
        return int(self.store.get_task(job.task_id).run_id)

    # ---- deciding from what the devices show --------------------------------------------

    def truth(self, job: Job) -> tuple[str, str]:
        """('happened' | 'not' | 'busy' | 'unknown', what shows it) for ``job``."""
        params = (job.spec or {}).get("params") or {}
        inc = self.world.incubator
        if job.op in ("fetch", "store"):
            if inc.busy:
                return "busy", f"{inc.name} is moving a plate"
            slot = int(params.get("slot", 0))
            slots, ts = inc.slots, inc.transfer_station
            where = f"slot {slot} of {inc.name}"
            if job.op == "fetch":
                if slot in slots and self.task_fed(job):
                    # Back in its slot after the whole task: the database (put back to an
                    # older copy) lost the task, not the plate's trip.
                    return "happened", f"{where} holds its plate again and its feed is done"
                if slot in slots:
                    return (
                        "not",
                        f"{where} still holds plate {slots[slot]}: the fetch did not happen",
                    )
                if ts is not None or self.on_deck(job):
                    return "happened", f"{where} is empty and its plate is out: the fetch happened"
                return "unknown", f"{where} is empty and the transfer station too"
            if slot in slots and ts is None:
                return "happened", f"{where} holds plate {slots[slot]}: the store happened"
            if slot not in slots and ts is not None:
                return (
                    "not",
                    f"plate {ts} is still on the transfer station: the store did not happen",
                )
            return "unknown", f"{where} holds {slots.get(slot)}, the transfer station {ts}"
        if job.op == "lh_run":
            return self.liquid_truth(job)
        if job.op == "prompt" and carry_step(job) is not None:
            on = job_plate(job) in self.world.on_deck()
            happened = on if carry_step(job) == "to_deck" else not on
            what = f"plate {job_plate(job)} is {'on' if on else 'not on'} the deck"
            return ("happened" if happened else "not"), what
        if job.op in ("to_deck", "to_incubator") and self.world.arm is not None:
            fact, seen = self.world.arm_truth(self.world.label_of(self.slot_of(job)), job.op)
            home, where = self.plate_home(job)
            if fact == "unknown" and job.op == "to_incubator" and home:
                # Neither on the deck nor on the station: stored since, in time the
                # database lost (put back to an older copy). The move happened.
                return "happened", f"{seen}; {where}: it was carried back, and stored since"
            return fact, seen
        if job.op == "setpoint":
            return "not", "setting the incubator's setpoints again changes nothing"
        return "unknown", f"nothing shows whether {job.op} happened"

    def task_fed(self, job: Job) -> bool:
        """Whether the robot's log shows the liquid handling of ``job``'s task happened."""
        lh = next(
            (
                j
                for j in self.store.jobs(self.run_of(job))
                if j.task_id == job.task_id and j.op == "lh_run"
            ),
            None,
        )
        return lh is not None and self.liquid_truth(lh)[0] == "happened"

    def liquid_truth(self, job: Job) -> tuple[str, str]:
        self._robot_sync()
        runs, slot = self.lh_runs(job)
        for r in runs:
            if self._robot_status(r.run_id) in ("running", "finishing", "paused", "stop-requested"):
                return "busy", f"robot run {r.run_id} is under way"
        if slot is not None:  # a run of two plates fed this one only if it reached its slot
            runs = [
                r
                for r in runs
                if any(s == slot for _, s, _ in r.fed_at) or (r.played and r.status is None)
            ]
        done = [r for r in runs if r.status == "succeeded"]
        if done:
            return "happened", f"robot run {done[-1].run_id} of its protocol succeeded"
        moved = [r for r in runs if r.moved_liquid or (r.played and r.status is None)]
        if moved:
            r = moved[-1]
            how = "moved liquid" if r.moved_liquid else "was played and its end is unknown"
            return (
                "happened",
                f"robot run {r.run_id} of its protocol {how}: some wells may be fed, "
                "the rest done by hand",
            )
        n = len(runs)
        return "not", f"the robot's log shows no liquid moved for it ({n} run(s) of its protocol)"

    # ---- answering and saying -----------------------------------------------------------


def job_key(job: Job) -> str:
    return str((job.spec or {}).get("key") or job.id)


def job_params(job: Job) -> dict[str, Any]:
    return dict((job.spec or {}).get("params") or {})


def job_plate(job: Job) -> str:
    """The run plate a job is about, as ``r<run>/<label>`` (labels repeat across runs)."""
    key = job_key(job)
    run = key.split(":", 1)[0] if ":" in key else "r?"
    return f"{run}/{job_params(job).get('plate', '?')}"


def carry_step(job: Job | None) -> str | None:
    """``to_deck`` / ``to_incubator`` for a prompt asking to carry a plate between the
    incubator's transfer station and the deck; None for anything else."""
    if job is None or job.op != "prompt":
        return None
    params = job_params(job)
    step = params.get("step")
    ends = (str(params.get("source", "")), str(params.get("destination", "")))
    if step in CARRIES and any(e.endswith("/transfer") for e in ends):
        return str(step)
    return None
