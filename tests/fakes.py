"""In-memory (optionally file-backed) fake devices for engine tests.

Each fake implements the device interfaces of labctl.devices. An operation takes
``duration_s`` of clock time; when a poll sees it finished, the fake appends one line to its
physical-action log (the ground truth tests check: every action at most once). With a
``state_dir`` the fakes keep their operations on disk, so a restarted engine process finds
the device as it left it, as with real hardware.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from labctl.clock import Clock
from labctl.devices import Climate, DeviceAlarm, OpState, OpStatus
from labctl.errors import DeviceBusy, DeviceFault, DeviceNeedsOperator


class Killer:
    """Kills this process with SIGKILL at the Nth crash point (crash tests).

    Crash points are where a lost write matters: just before a device is told to act, just
    after it acted (before the engine learns the op id), and when a poll first reports an
    operation finished (before the engine records it). Polls of running operations are not
    crash points: nothing changes there.
    """

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.n = 0

    def tick(self) -> None:
        self.n += 1
        if self.at is not None and self.n == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class FakeDevice:
    name: str
    clock: Clock
    state_dir: Path | None = None
    killer: Killer = field(default_factory=lambda: Killer(None))
    durations: dict[str, float] = field(default_factory=dict)
    fail_next: int = 0  # the next N operations fail
    fail_job: tuple[str, ...] = ()  # the first operation of a job whose key holds all these fails
    partial_failures: bool = False  # failures happen after some liquid moved
    # As real drivers are (labctl.devices): a job it already holds, not failed, is answered
    # with that op instead of acting again. Off by default: the crash tests prove the engine
    # alone never repeats an action.
    idempotent: bool = False
    alarm: DeviceAlarm | None = None
    ops: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._done: set[str] = set()
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if self._state_file.exists():
                self.ops = json.loads(self._state_file.read_text())
            if self._log_file.exists():
                for line in self._log_file.read_text().splitlines():
                    if line.strip():
                        self._done.add(json.loads(line)["op"])

    @property
    def _state_file(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"{self.name}.ops.json"

    @property
    def _log_file(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / "actions.jsonl"

    def _save(self) -> None:
        if self.state_dir is None:
            return
        tmp = self._state_file.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(self.ops, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._state_file)

    def _begin(self, job_key: str, kind: str, detail: dict[str, Any]) -> str:
        self.killer.tick()  # a crash here: committed RUNNING, device never told
        if self.idempotent:
            for op_id, op in self.ops.items():
                if op["job"] == job_key and not op["fail"]:
                    return op_id
        op_id = f"{self.name}-{len(self.ops) + 1}"
        fail = self.fail_next > 0
        if fail:
            self.fail_next -= 1
        elif self.fail_job and all(part in job_key for part in self.fail_job):
            fail, self.fail_job = True, ()
        self.ops[op_id] = {
            "job": job_key,
            "kind": kind,
            "start": self.clock.now().isoformat(),
            "duration": self.durations.get(kind, 30.0),
            "fail": fail,
            "detail": detail,
        }
        self._save()
        self.killer.tick()  # a crash here: the device acts, the engine never learns the op id
        return op_id

    # --- Device ---------------------------------------------------------------------------

    def poll(self, op_id: str) -> OpStatus:
        op = self.ops.get(op_id)
        if op is None:
            raise DeviceFault(self.name, f"poll {op_id}", "unknown operation")
        end = datetime.fromisoformat(op["start"]) + timedelta(seconds=op["duration"])
        if self.clock.now() < end:
            return OpStatus(OpState.RUNNING, "busy")
        if op["fail"]:
            return OpStatus(
                OpState.FAILED,
                "injected failure",
                DeviceFault(self.name, op["kind"], "injected failure", device_code="99"),
                result={"liquid_moved": self.partial_failures},
            )
        self._log_once(op_id, op, end)
        self.killer.tick()  # a crash here: the device finished, the engine never recorded it
        return OpStatus(OpState.SUCCEEDED, "done", result={"op": op_id})

    def _log_once(self, op_id: str, op: dict[str, Any], end: datetime) -> None:
        if op_id in self._done:
            return
        self._done.add(op_id)
        line = json.dumps(
            {
                "op": op_id,
                "device": self.name,
                "job": op["job"],
                "kind": op["kind"],
                "time": end.isoformat(),
                **op["detail"],
            }
        )
        if self.state_dir is not None:
            with open(self._log_file, "a") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        self.actions.append(json.loads(line))

    @property
    def actions(self) -> list[dict[str, Any]]:
        if not hasattr(self, "_actions"):
            self._actions: list[dict[str, Any]] = []
        return self._actions

    def find_op(self, job_key: str) -> str | None:
        for op_id, op in self.ops.items():
            if op["job"] == job_key:
                return op_id
        return None

    def alarms(self) -> list[DeviceAlarm]:
        return [self.alarm] if self.alarm else []


class FakeLiquidHandler(FakeDevice):
    refuse_next: int = 0  # the next N starts are refused as busy (nothing happens)
    needs_tips_next: int = 0  # the next N starts are refused until a person refills tips

    def start_job(self, job_key: str, params: dict[str, Any]) -> str:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            raise DeviceBusy(self.name, f"start {job_key}", "another run holds the robot")
        if self.needs_tips_next > 0:
            self.needs_tips_next -= 1
            raise DeviceNeedsOperator(self.name, f"start {job_key}", "refill tips, then confirm")
        keep = {
            k: params.get(k)
            for k in (
                "kind",
                "labware",
                "add_ul",
                "remove_ul",
                "recipe",
                "compound",
                "deck_slot",
                "batch",
                "batch_plates",
            )
            if k in params
        }
        return self._begin(job_key, "lh_run", keep)

    def abort(self, op_id: str) -> None:
        self.ops[op_id]["fail"] = True
        self._save()


class FakeIncubator(FakeDevice):
    def start_fetch(self, job_key: str, slot: int) -> str:
        return self._begin(job_key, "fetch", {"slot": slot})

    def start_store(self, job_key: str, slot: int) -> str:
        return self._begin(job_key, "store", {"slot": slot})

    def start_setpoint(
        self, job_key: str, temperature_c: float, co2_pct: float, o2_pct: float | None
    ) -> str:
        return self._begin(
            job_key,
            "setpoint",
            {"temperature_c": temperature_c, "co2_pct": co2_pct, "o2_pct": o2_pct},
        )

    def climate(self) -> Climate:
        return Climate(37.0, 5.0, 95.0, None)


class FakeMover(FakeDevice):
    """A plate-moving arm: a move is one operation (pick, carry, place)."""

    def start_move(self, job_key: str, plate: str, source: str, destination: str) -> str:
        detail = {"plate": plate, "source": source, "destination": destination}
        return self._begin(job_key, "move", detail)


class FakeOperator(FakeDevice):
    """Answers every prompt after its duration, giving ``qc_value`` for every QC gate asked."""

    qc_value: float = 100.0

    def ask(self, job_key: str, prompt: dict[str, Any]) -> str:
        measures = [
            g["measure"]
            for g in prompt.get("choices", [])
            if isinstance(g, dict) and "measure" in g
        ]
        return self._begin(
            job_key, "prompt", {"text": str(prompt.get("text", ""))[:60], "measures": measures}
        )

    def poll(self, op_id: str) -> OpStatus:
        st = super().poll(op_id)
        if st.state is OpState.SUCCEEDED:
            measures = self.ops[op_id]["detail"].get("measures", [])
            return OpStatus(
                OpState.SUCCEEDED,
                "answered",
                result={"done": True, "qc": {m: self.qc_value for m in measures}},
            )
        return st


def fake_workcell(
    clock: Clock,
    state_dir: Path | None = None,
    killer: Killer | None = None,
    *,
    arm: bool = False,
    hypoxic: bool = False,
) -> dict[str, FakeDevice]:
    """The fakes of the simulated workcell; with ``arm``, also ``arm-sim`` (a plate mover);
    with ``hypoxic``, also ``inc-hyp`` (a second incubator)."""
    k = killer or Killer(None)
    movers: dict[str, FakeDevice] = (
        {"arm-sim": FakeMover("arm-sim", clock, state_dir, k, {"move": 25.0})} if arm else {}
    )
    if hypoxic:
        movers["inc-hyp"] = FakeIncubator(
            "inc-hyp", clock, state_dir, k, {"fetch": 15.0, "store": 15.0}
        )
    return movers | {
        "ot2-sim": FakeLiquidHandler("ot2-sim", clock, state_dir, k, {"lh_run": 600.0}),
        "inc-sim": FakeIncubator(
            "inc-sim", clock, state_dir, k, {"fetch": 20.0, "store": 20.0, "setpoint": 5.0}
        ),
        "operator": FakeOperator("operator", clock, state_dir, k, {"prompt": 120.0}),
    }
