"""An incubator with no automation (Heracell-like, DEVICES.md section 4), driven by prompts.

Fetching, storing and changing setpoints become prompts to the operator through any
:class:`labctl.devices.Operator` (the run database's StoreOperator in a real workcell), so
the same engine runs a semi-automated bench: "take the plate out of inc-2 slot 3", the
operator confirms, the job succeeds. The answer ``{"choice": "problem"}`` (or
``{"done": false}``) fails the job with a DeviceFault carrying the operator's note.

Op ids are ``"<device>/<kind>/<operator op id>"``, so ``poll`` needs no memory and works
across restarts as long as the operator's ids do (prompt ids in the store do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from labctl.devices import Climate, DeviceAlarm, NotKnown, Operator, OpState, OpStatus
from labctl.errors import DeviceError, DeviceFault

__all__ = ["PROBLEM", "ManualIncubator"]

# The choice an operator picks when the step could not be done.
PROBLEM = "problem"
_KINDS = ("fetch", "store", "setpoint", "any")

JobContext = Callable[[str], Mapping[str, Any]]


class ManualIncubator:
    """A manual incubator: each operation is one operator prompt.

    ``operator`` shows the prompts. ``job_context``, when given, maps a job key to extra
    prompt fields the operator needs (StoreOperator needs ``run_id`` and ``job_id``); it
    may raise DeviceError when the job cannot be found. Climate is not measured (all
    readings None) and there are no alarms.
    """

    def __init__(
        self, name: str, operator: Operator, *, job_context: JobContext | None = None
    ) -> None:
        self.name = name
        self.operator = operator
        self.job_context = job_context

    def start_fetch(self, job_key: str, slot: int) -> str:
        """Ask the operator to take the plate out of ``slot``; returns the op id."""
        text = (
            f"{self.name}: take the plate out of slot {slot} and keep it ready for the next "
            "step. Confirm when it is out, or answer 'problem' if the slot is empty."
        )
        return self._ask("fetch", job_key, text, {"slot": slot})

    def start_store(self, job_key: str, slot: int) -> str:
        """Ask the operator to put the plate back into ``slot``; returns the op id."""
        text = (
            f"{self.name}: put the plate into slot {slot} and close the door. Confirm when it "
            "is in, or answer 'problem' if the slot is taken."
        )
        return self._ask("store", job_key, text, {"slot": slot})

    def start_setpoint(
        self, job_key: str, temperature_c: float, co2_pct: float, o2_pct: float | None
    ) -> str:
        """Ask the operator to set temperature (degC), CO2 (%) and O2 (%, if given)."""
        o2 = "" if o2_pct is None else f", O2 {o2_pct:g} %"
        text = (
            f"{self.name}: set the incubator to {temperature_c:g} degC, CO2 {co2_pct:g} %{o2}. "
            "Confirm when the display shows the new setpoints."
        )
        values = {"temperature_c": temperature_c, "co2_pct": co2_pct, "o2_pct": o2_pct}
        return self._ask("setpoint", job_key, text, values)

    def poll(self, op_id: str) -> OpStatus:
        """The prompt's state: RUNNING until answered, then SUCCEEDED (or FAILED on a problem)."""
        kind, inner = self._split(op_id)
        status = self.operator.poll(inner)
        if status.state is not OpState.SUCCEEDED:
            return status
        answer = dict(status.result)
        if answer.get("choice") == PROBLEM or answer.get("done") is False:
            note = answer.get("note") or answer.get("text") or answer.get("reason") or ""
            err = DeviceFault(
                self.name,
                kind,
                "the operator reported a problem" + (f": {note}" if note else ""),
            )
            return OpStatus(OpState.FAILED, err.detail, err, answer)
        return OpStatus(OpState.SUCCEEDED, status.detail or f"{kind} confirmed", result=answer)

    def find_op(self, job_key: str) -> str | None:
        """Whatever the operator device knows of ``job_key`` (may raise NotKnown)."""
        inner = self.operator.find_op(job_key)
        return None if inner is None else f"{self.name}/any/{inner}"

    def report(self, job_key: str) -> str:
        """What is known of the job: no sensor, only the operator's prompt about it
        (labctl.devices.Reports). Never raises."""
        head = f"{self.name}: a manual incubator, no sensors"
        try:
            inner = self.operator.find_op(job_key)
            if inner is None:
                return f"{head}; the operator was not asked about this job"
            status = self.operator.poll(inner)
        except (DeviceError, NotKnown) as exc:
            return f"{head}; the operator's prompts could not be read ({exc})"
        answered = "answered" if status.state is not OpState.RUNNING else "not answered yet"
        return f"{head}; the operator was asked about this job ({answered})"

    def alarms(self) -> list[DeviceAlarm]:
        return []

    def climate(self) -> Climate:
        """Not measured: every reading is None."""
        return Climate()

    def _ask(self, kind: str, job_key: str, text: str, values: Mapping[str, Any]) -> str:
        prompt: dict[str, Any] = {
            "kind": "task",
            "text": text,
            "choices": ["done", PROBLEM],
            "device": self.name,
            "operation": kind,
            **values,
        }
        if self.job_context is not None:
            prompt.update(self.job_context(job_key))
        inner = self.operator.ask(job_key, prompt)
        return f"{self.name}/{kind}/{inner}"

    def _split(self, op_id: str) -> tuple[str, str]:
        prefix = f"{self.name}/"
        kind, _, inner = op_id[len(prefix) :].partition("/")
        if not op_id.startswith(prefix) or kind not in _KINDS or not inner:
            raise DeviceError(self.name, f"poll {op_id}", "not an operation of this incubator")
        return kind, inner

    def __repr__(self) -> str:
        return f"ManualIncubator({self.name!r})"
