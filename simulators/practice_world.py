"""The practice workcell's physical world outside the devices, and what the devices' own
logs say happened.

:class:`PlateWorld` is where plates are when no device holds them (on the robot's deck) and
the hands that carry them between the incubator's transfer station and the deck. Each
carry is made safe against the simulators' process being killed half-way: what is about to
happen is written down first (with the plate's label), then done, then marked done, in a
state file; on a new start :meth:`PlateWorld.settle` looks at the incubator to see whether
an unfinished carry took place and finishes its record (or forgets it, if it did not). Each
carry is logged once in the operator's action log (one JSON line, with the job key).

:func:`robot_runs` reads the robot's action log for the runs of one job (what a person
would read in the robot's run history): whether each was played, whether it moved liquid,
how it ended.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.clock import Clock
from labctl.errors import DeviceError
from labctl.simulators.arm_faults import arm_busy, look_at_arm, put_back_from_gripper
from labctl.simulators.cytomat import CytomatSim
from labctl.simulators.pf400 import PF400Simulator
from labctl.simulators.state_file import load_json, save_json

__all__ = ["CannotCarry", "PlateWorld", "RobotRun", "robot_runs"]

_STATE_VERSION = 1
# Commands after which liquid has left a tip: the run fed some wells (or emptied some).
LIQUID_COMMANDS = frozenset(
    {"aspirate", "aspirateInPlace", "dispense", "dispenseInPlace", "blowout", "blowOutInPlace"}
)


class CannotCarry(Exception):
    """The plate is not where the carry starts, or its destination is taken."""


class PlateWorld:
    """The robot's deck (which run plate sits there, by the incubator's label for it) and
    the carries between it and ``incubator``'s transfer station. Thread-safe.

    ``state`` is the JSON file kept up to date; ``action_log`` gets one line per carry.
    Plates are named ``r<run>/<label>`` (a run's own label, e.g. ``r1/P2``): the incubator
    knows them by its own labels, which the deck map records.
    """

    def __init__(
        self,
        clock: Clock,
        incubator: CytomatSim,
        *,
        robot: str,
        state: Path,
        action_log: Path,
        name: str = "operator",
        arm: PF400Simulator | None = None,
        stations: Mapping[str, int] | None = None,
        incubator_log: Path | None = None,
    ) -> None:
        self.clock = clock
        self.incubator = incubator
        # A plate-moving arm (its stations by workcell name): it carries instead of hands.
        self.arm = arm
        self.stations = dict(stations or {})
        self._incubator_log = incubator_log
        self.robot = robot
        self.name = name
        self._path = state
        self._log = action_log
        self._lock = threading.RLock()
        data = load_json(state) or {}
        if data and data.get("version") != _STATE_VERSION:
            raise CannotCarry(f"{state}: not a state of version {_STATE_VERSION}")
        self._deck: dict[str, str] = dict(data.get("deck") or {})
        self._carries: dict[str, dict[str, Any]] = {
            # Records of a first version were keyed by the prompt alone.
            (k if "/" in k else _ck(int(k), str(v.get("job", "")))): v
            for k, v in dict(data.get("carries") or {}).items()
        }

    # ---- reading ----------------------------------------------------------------------------

    def on_deck(self) -> dict[str, str]:
        """Run plate -> the incubator's label of the plate on the robot's deck (a copy)."""
        with self._lock:
            return dict(self._deck)

    def label_of(self, slot: int) -> str | None:
        """The incubator's label of the plate whose home is ``slot``: the one there, or the
        one last taken out of it (the incubator's own log says which)."""
        here = self.incubator.slots.get(slot)
        if here is not None:
            return here
        path = self._incubator_log
        for e in reversed(_read_lines(path) if path is not None else []):
            if e.get("action") == "retrieve" and e.get("slot") == slot:
                return str(e.get("plate"))
        return None

    def _deck_station(self, label: str | None) -> str | None:
        """The name of the arm's station on the robot's deck that holds ``label``."""
        if self.arm is None or label is None:
            return None
        where = self.arm.stations
        return next(
            (n for n, k in self.stations.items() if n in self._arm_deck and where.get(k) == label),
            None,
        )

    @property
    def _arm_deck(self) -> set[str]:
        """The arm's stations on the robot's deck, by name."""
        return {n for n in self.stations if n.startswith(f"{self.robot}/")}

    def on_arm_deck(self, label: str | None) -> bool:
        """Whether the arm's stations on the robot's deck hold the plate ``label``."""
        return self._deck_station(label) is not None

    def deck_position(self, label: str | None) -> int | None:
        """The deck slot of the arm's station that holds plate ``label`` (None: none)."""
        slot = (self._deck_station(label) or "").rsplit("/", 1)[-1]
        return int(slot) if slot.isdigit() else None

    def clear_gripper(self) -> str:
        """A person puts a plate left in the stopped arm's gripper back where it was
        picked (a few words on it; empty when there was nothing to do)."""
        if self.arm is None or self.arm.gripper is None or arm_busy(self.arm):
            return ""
        plate = self.arm.gripper
        back = put_back_from_gripper(self.arm)
        if back is None:
            return f"plate {plate} is in the gripper and its station is taken"
        return f"plate {plate} was in the gripper: put back on station {back} by hand"

    def arm_truth(self, label: str | None, op: str) -> tuple[str, str]:
        """('happened' | 'not' | 'busy' | 'unknown', what shows it) for an arm move ``op``
        of plate ``label``, as a person sees it at the arm (see look_at_arm)."""
        if self.arm is None or label is None:
            return "unknown", "no arm, or the plate is not known"
        deck = {self.stations[n] for n in self._arm_deck}
        transfer = self.stations.get(f"{self.incubator.name}/transfer")
        return look_at_arm(self.arm, label, op, deck, transfer)

    def carried(self, prompt_id: int, job: str) -> bool:
        """Whether the carry asked by prompt ``prompt_id`` for ``job`` has been done (a
        database restored from an older copy numbers its prompts again: the job tells them
        apart)."""
        with self._lock:
            return bool(self._carries.get(_ck(prompt_id, job), {}).get("done"))

    # ---- carrying ---------------------------------------------------------------------------

    def carry(self, prompt_id: int, step: str, plate: str, job: str, where: str = "") -> str:
        """Carry run plate ``plate`` for prompt ``prompt_id``: ``to_deck`` takes the plate on
        the incubator's transfer station to the deck, ``to_incubator`` puts it back on the
        transfer station. Once per prompt (again: nothing more). Returns what was done, in
        a few words; raises CannotCarry when the plate is not where the carry starts or the
        transfer station is taken."""
        with self._lock:
            ck = _ck(prompt_id, job)
            done = self._carries.get(ck)
            if done is not None and done.get("done"):
                return str(done["said"])
            if step == "to_deck" and plate in self._deck:  # carried for an earlier prompt
                label = self._deck[plate]
                said = f"plate {label} is on the deck already"
                rec = {"step": step, "plate": plate, "label": label, "job": job, "said": said}
                self._carries[ck] = {**rec, "done": True}
                self._save()
                return said
            if step == "to_deck":
                there = self.incubator.transfer_station
                if there is None:
                    raise CannotCarry(f"the transfer station of {self.incubator.name} is empty")
                label = there
                said = f"took plate {label} from {self.incubator.name}'s transfer station to {where or self.robot}"
            elif step == "to_incubator":
                got = self._deck.get(plate)
                label = plate.rsplit("/", 1)[-1]
                back = (
                    self.incubator.transfer_station == label
                    or label in self.incubator.slots.values()
                )
                if got is None and back:  # carried back for an earlier prompt (or stored)
                    said = f"plate {label} is back in {self.incubator.name} already"
                    rec = {"step": step, "plate": plate, "label": label, "job": job, "said": said}
                    self._carries[ck] = {**rec, "done": True}
                    self._save()
                    return said
                if got is None:
                    raise CannotCarry(f"plate {plate} is not on the deck of {self.robot}")
                label = got
                said = f"put plate {label} from {where or self.robot} on {self.incubator.name}'s transfer station"
            else:
                raise CannotCarry(f"no carry is called {step!r}")
            rec = {"step": step, "plate": plate, "label": label, "job": job, "said": said}
            self._carries[ck] = {**rec, "done": False}
            self._save()  # first what is about to happen, so a kill half-way is found
            try:
                if step == "to_deck":
                    self.incubator.take_from_transfer_station()
                else:
                    self.incubator.place_on_transfer_station(label)
            except DeviceError as exc:
                del self._carries[ck]
                self._save()
                raise CannotCarry(exc.detail) from exc
            self._finish(ck)
            return said

    def settle(self) -> list[str]:
        """After a start: finish the record of each carry cut off by a kill, from where the
        plate is now (done: recorded and logged; not done: forgotten, to be asked again).
        Returns what was found, one line per carry."""
        found = []
        with self._lock:
            for ck, rec in list(self._carries.items()):
                if rec.get("done"):
                    continue
                label, ts = rec["label"], self.incubator.transfer_station
                if rec["step"] == "to_deck":
                    happened = ts != label
                else:  # on the transfer station, or stored already
                    happened = ts == label or label in self.incubator.slots.values()
                pid = ck.split("/", 1)[0]
                if happened:
                    self._finish(ck)
                    found.append(f"prompt {pid}: the carry cut off by the restart had happened")
                else:
                    del self._carries[ck]
                    found.append(f"prompt {pid}: the carry cut off by the restart had not happened")
            self._save()
        return found

    def _finish(self, ck: str) -> None:
        """The carry ``ck`` (prompt/job) happened: the deck, the record and the log say so."""
        rec = self._carries[ck]
        prompt_id = int(ck.split("/", 1)[0])
        if rec["step"] == "to_deck":
            self._deck[rec["plate"]] = rec["label"]
        else:
            self._deck.pop(rec["plate"], None)
        rec["done"] = True
        self._save()
        if not self._logged(prompt_id, rec["job"]):
            line = {
                "time": self.clock.now().isoformat(),
                "device": self.name,
                "action": "move",
                "step": rec["step"],
                "job": rec["job"],
                "plate": rec["plate"],
                "label": rec["label"],
                "prompt": prompt_id,
            }
            with self._log.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    def finish_by_hand(self, job: str, plate: str, wells: list[str], prompt_id: int) -> str:
        """A person fed ``wells`` of ``plate`` by hand for ``job`` (the robot's run stopped
        part-way or was lost): logged once per prompt, as a physical action."""
        with self._lock:
            if self._logged(prompt_id, job):
                return "already finished by hand"
            # Wells fed by hand for this job before (asked again after a restore): not again.
            before = {
                str(w)
                for e in _read_lines(self._log)
                if e.get("action") == "finish_by_hand" and e.get("job") == job
                for w in e.get("wells") or []
            }
            wells = [w for w in wells if w not in before]
            line = {
                "time": self.clock.now().isoformat(),
                "device": self.name,
                "action": "finish_by_hand",
                "job": job,
                "plate": plate,
                "wells": sorted(wells),
                "prompt": prompt_id,
            }
            with self._log.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        return f"fed {len(wells)} well(s) by hand" if wells else "no well left to feed by hand"

    def _logged(self, prompt_id: int, job: str) -> bool:
        if not self._log.exists():
            return False
        for line in self._log.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(line)
            except ValueError:  # a line cut short by a kill
                continue
            if e.get("prompt") == prompt_id and e.get("job") == job:
                return True
        return False

    def _save(self) -> None:
        save_json(
            self._path,
            {"version": _STATE_VERSION, "deck": self._deck, "carries": self._carries},
        )


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (a line cut short by a kill is left out)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _ck(prompt_id: int, job: str) -> str:
    """A carry's record key: the prompt and its job (prompt ids alone can come again)."""
    return f"{prompt_id}/{job}"


# ---- the robot's log ----------------------------------------------------------------------


@dataclass
class RobotRun:
    """One run of a job's protocol on the robot, as its action log tells it."""

    run_id: str
    played: bool = False
    moved_liquid: bool = False
    status: str | None = None  # how it ended (None: the log does not say it ended)
    fed: set[tuple[str, str]] = field(default_factory=set)  # (labware, well) dispensed into
    fed_at: set[tuple[str, str, str]] = field(default_factory=set)  # (labware, deck slot, well)
    finished_at: str | None = None  # ISO time of its run_finished event


def protocol_name_of(job_key: str) -> str:
    """The start of the file name a job's protocol is uploaded under (the controller names
    a protocol after its job, as a person would read it in the robot's app): the key with
    ``[A-Za-z0-9_.-]`` kept and every other character made ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_key).lstrip(".")


def robot_runs(log: Path, job_key: str, run_id: str | None = None) -> list[RobotRun]:
    """The runs made from the protocol of job ``job_key`` (by its file name), or run
    ``run_id``, in the order they were created, from the robot's action log."""
    name = protocol_name_of(job_key)
    protocols: set[str] = set()
    runs: dict[str, RobotRun] = {}
    if not log.exists():
        return []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        event, rid = e.get("event"), e.get("runId")
        if event == "protocol_upload":
            files = e.get("files") or []
            if any(f == f"{name}.py" or str(f).startswith(f"{name}.") for f in files):
                protocols.add(str(e.get("protocolId")))
        elif event == "run_created" and (e.get("protocolId") in protocols or rid == run_id):
            runs[rid] = RobotRun(rid)
        elif rid not in runs:
            continue
        elif event == "run_action" and e.get("actionType") == "play":
            runs[rid].played = True
        elif event == "command" and e.get("commandType") in LIQUID_COMMANDS:
            runs[rid].moved_liquid = True
            if e.get("commandType") in ("dispense", "dispenseInPlace"):
                runs[rid].fed.add((str(e.get("labware")), str(e.get("well"))))
                runs[rid].fed_at.add(
                    (str(e.get("labware")), str(e.get("slot")), str(e.get("well")))
                )
        elif event == "run_finished":
            runs[rid].status = str(e.get("status"))
            runs[rid].finished_at = str(e.get("time") or "") or None
    return list(runs.values())
