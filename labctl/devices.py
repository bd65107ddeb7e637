"""Devices as the engine sees them: small interfaces, one capability each (STYLE.md item 1).

Every operation is started and then polled, as real devices are driven: ``start_*`` returns
an operation id at once and ``poll(op_id)`` tells how it is going. The engine commits the
job's transition to the store before calling ``start_*`` and records the op id after, so a
crash between the two is found on restart and reconciled with ``find_op``.

``start_*`` is idempotent per job key where the device can tell: a driver first asks its
device whether it already holds an operation for ``job_key`` (the robot's runs of the job's
protocol, the plate's place for an incubator or an arm) and, if one exists that did not
fail, answers with its op id and does nothing again. So a store restored from an older copy
can never make a device act twice; a device that cannot tell relies on its interlocks (a
fetch onto an occupied transfer station is refused) and the engine asks the operator.

Implementations live in labctl.drivers (real devices and the simulated workcell) and in the
tests (in-memory fakes); the core imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from labctl.errors import DeviceError


class OpState(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NEEDS_OPERATOR = "needs_operator"  # paused by the device: door open, error recovery, estop


@dataclass(frozen=True)
class OpStatus:
    """One poll's answer. ``error`` is set when FAILED or NEEDS_OPERATOR; ``result`` is
    JSON-able data the operation produced (an operator's answer, a run's command count).
    ``check_at``, while RUNNING, is the device's own word on when the operation can next
    have changed (a scripted operator knows when it will answer); the engine polls again
    then instead of at its growing interval. Devices that cannot know leave it None."""

    state: OpState
    detail: str = ""
    error: DeviceError | None = None
    result: dict[str, Any] = field(default_factory=dict)
    check_at: datetime | None = None


@dataclass(frozen=True)
class Climate:
    """Incubator readings: degC and percent; None where the device does not measure it."""

    temperature_c: float | None = None
    co2_pct: float | None = None
    humidity_pct: float | None = None
    o2_pct: float | None = None


@dataclass(frozen=True)
class DeviceAlarm:
    """A standing condition on a device (door open, CO2 out of range, offline)."""

    device: str
    code: str
    message: str


class NotKnown(Exception):
    """``find_op`` cannot tell whether an operation was received (the operator must decide)."""


@runtime_checkable
class Device(Protocol):
    name: str

    def poll(self, op_id: str) -> OpStatus:
        """State of operation ``op_id`` (raises DeviceError if the device can't be asked)."""
        ...

    def find_op(self, job_key: str) -> str | None:
        """After a crash: the op id the device holds for ``job_key``, None if it has none.

        Raises NotKnown when the device cannot tell (then nothing is repeated automatically).
        """
        ...

    def alarms(self) -> list[DeviceAlarm]:
        """Standing alarm conditions (empty when all is well)."""
        ...


@runtime_checkable
class Attendable(Protocol):
    """A device that asks for a person (DeviceNeedsOperator) and is told when it was done."""

    def attended(self, job_key: str, detail: str) -> None:
        """The operator dealt with ``detail`` (e.g. put new tip racks in) before a retry."""
        ...


@runtime_checkable
class Reports(Protocol):
    """A device that can say, in a few words, what it knows of a job now (where the plate
    is, the state of the robot's run), for a prompt asking a person what happened."""

    def report(self, job_key: str) -> str:
        """E.g. "the transfer station holds a plate; slot 3 is empty", or "run 7f3a: failed
        after 12 of 30 commands". Never raises: a device that cannot be asked says so."""
        ...


@runtime_checkable
class Preparable(Protocol):
    """A device that can get ready for a job well before it starts (a liquid handler uploads
    the job's protocol, so the robot has analysed it by then)."""

    def prepare(self, job_key: str, params: dict[str, Any]) -> None:
        """Best effort, never required: ``start_job`` works without it and reports any
        problem itself. Must not act physically, and may be called more than once."""
        ...


@runtime_checkable
class LiquidHandler(Device, Protocol):
    def start_job(self, job_key: str, params: dict[str, Any]) -> str:
        """Start a liquid-handling program (feed, addition, washout) described by ``params``."""
        ...

    def abort(self, op_id: str) -> None: ...


@runtime_checkable
class Incubator(Device, Protocol):
    def start_fetch(self, job_key: str, slot: int) -> str:
        """Bring the plate in ``slot`` to the transfer position."""
        ...

    def start_store(self, job_key: str, slot: int) -> str:
        """Put the plate at the transfer position into ``slot``."""
        ...

    def start_setpoint(
        self, job_key: str, temperature_c: float, co2_pct: float, o2_pct: float | None
    ) -> str: ...

    def climate(self) -> Climate: ...


@runtime_checkable
class GatedIncubator(Incubator, Protocol):
    """An incubator whose automatic gate (lift door at the transfer station) can be opened
    and closed on command: a supervisor's manual action, never a job's."""

    def start_gate(self, job_key: str, open_: bool) -> str:
        """Open (``open_``) or close the gate; returns the op id (poll it)."""
        ...


@runtime_checkable
class PlateMover(Device, Protocol):
    def start_move(self, job_key: str, plate: str, source: str, destination: str) -> str: ...


@runtime_checkable
class Operator(Device, Protocol):
    def ask(self, job_key: str, prompt: dict[str, Any]) -> str:
        """Show a prompt (kind, text, choices, fields to fill); returns the prompt's op id.

        ``poll`` answers SUCCEEDED with ``result`` = the answer once the operator replied.
        """
        ...


@runtime_checkable
class QuietWatch(Protocol):
    """What a simulated workcell knows about its own devices in virtual time.

    Real devices can change at any moment, so the engine reads their alarms on a fixed
    cadence. Simulated ones change only at known moments (a fault window opening, a
    command, a climate still settling), so a dry run can skip the alarm checks that could
    only read what the previous check read. Both answers must be conservative: when in
    doubt, not quiet, and the next change is now.
    """

    def quiet(self, since: datetime, now: datetime) -> bool:
        """Whether nothing an alarm check reads can have changed in ``[since, now]``."""
        ...

    def next_change(self, now: datetime) -> datetime | None:
        """The earliest moment after ``now`` at which it could change on its own
        (``now`` while something is under way; None: not before a command)."""
        ...
