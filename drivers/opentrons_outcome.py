"""What a run on an Opentrons robot means for the operation that started it.

:func:`run_outcome` turns one :class:`~labctl.drivers.opentrons_http.RunStatus` into the
:class:`~labctl.devices.OpStatus` the engine acts on; for a failed run it asks the robot
which command failed and whether any liquid had moved (then some wells may be fed already,
and the engine must not run the program again by itself).
"""

from __future__ import annotations

from labctl.devices import OpState, OpStatus
from labctl.errors import DeviceError, DeviceFault, DeviceNeedsOperator

from .opentrons_http import OpentronsClient, RunPhase, RunStatus

__all__ = ["DOOR_STATUSES", "run_outcome"]

# Statuses of a run stopped by an open door (Flex), DEVICES.md 1.4.
DOOR_STATUSES = frozenset({"blocked-by-open-door", "awaiting-recovery-blocked-by-open-door"})


def run_outcome(client: OpentronsClient, device: str, op_id: str, st: RunStatus) -> OpStatus:
    """RUNNING (idle or running), NEEDS_OPERATOR (paused, door open, error recovery),
    SUCCEEDED with ``{commands, run_id}``, or FAILED with a DeviceFault carrying the robot's
    error detail and code and ``{commands_done, run_id, liquid_moved}`` (a stopped run is
    FAILED too)."""
    progress = f"command {st.commands_done} of {st.commands_total}"
    if st.phase in (RunPhase.PENDING, RunPhase.RUNNING):
        return OpStatus(OpState.RUNNING, f"{st.status}: {progress}")
    if st.phase is RunPhase.SUCCEEDED:
        return OpStatus(
            OpState.SUCCEEDED,
            f"run {op_id} succeeded ({st.commands_total} commands)",
            result={"commands": st.commands_total, "run_id": op_id},
        )
    if st.phase is RunPhase.NEEDS_OPERATOR:
        reason = _operator_reason(st)
        error = DeviceNeedsOperator(
            device,
            f"run {op_id}",
            reason,
            device_code=st.error.error_code if st.error else None,
        )
        return OpStatus(OpState.NEEDS_OPERATOR, reason, error=error)
    detail, fault = _failure(client, device, op_id, st)
    # Whether any liquid moved before it stopped: then some wells may be fed already,
    # and the engine must not run the program again by itself.
    return OpStatus(
        OpState.FAILED,
        detail,
        fault,
        result={
            "commands_done": st.commands_done,
            "run_id": op_id,
            "liquid_moved": _liquid_moved(client, op_id),
        },
    )


def _liquid_moved(client: OpentronsClient, op_id: str) -> bool:
    """True if the run completed any aspirate or dispense (True when it cannot tell)."""
    moved_types = {
        "aspirate",
        "dispense",
        "aspirateInPlace",
        "dispenseInPlace",
        "blowout",
        "blowOutInPlace",
    }
    cursor, total = 0, None
    try:
        while total is None or cursor < total:
            page = client.get(f"/runs/{op_id}/commands", {"cursor": cursor, "pageLength": 100})
            data = page.get("data") or []
            total = int((page.get("meta") or {}).get("totalLength", len(data)))
            for cmd in data:
                if cmd.get("commandType") in moved_types and cmd.get("status") == "succeeded":
                    return True
            if not data:
                break
            cursor += len(data)
    except (DeviceError, ValueError, TypeError, AttributeError):
        return True
    return False


def _operator_reason(st: RunStatus) -> str:
    if st.status in DOOR_STATUSES:
        reason = "the robot's door is open: close it, then resume the run"
    elif st.status.startswith("awaiting-recovery"):
        reason = "the run waits for error recovery on the robot"
    elif st.status == "paused":
        reason = "the run is paused on the robot"
    else:
        reason = f"the run is in an unknown state {st.status!r}"
    if st.error is not None:
        reason += f" ({_describe(st.error.root_detail, st.error.detail)})"
    return reason


def _failure(
    client: OpentronsClient, device: str, op_id: str, st: RunStatus
) -> tuple[str, DeviceError]:
    command = f"run {op_id}"
    if st.phase is RunPhase.STOPPED:
        message = "run stopped before the end (aborted)"
        return message, DeviceFault(device, command, message)
    error, code, where = st.error, None, ""
    try:
        failed = client.failed_command(op_id)
    except DeviceError:
        failed = None
    if failed is not None:
        error = error or failed.error
        if failed.command_type:
            where = f" at command {failed.index} ({failed.command_type})"
    if error is None:
        message = f"run failed{where}"
    else:
        code = error.error_code or error.outer_error_code or None
        kind = f"{error.error_type}: " if error.error_type else ""
        message = f"run failed{where}: {kind}{_describe(error.root_detail, error.detail)}"
    return message, DeviceFault(device, command, message, device_code=code)


def _describe(first: str, second: str) -> str:
    """``first``, plus ``second`` in brackets when it says something ``first`` does not."""
    if first and second and first not in second:
        return f"{first} ({second})"
    return first or second or "no detail"
