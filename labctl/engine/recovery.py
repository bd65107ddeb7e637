"""After a start or a crash: reconcile every job found RUNNING with its device.

Nothing that may have happened is repeated automatically. A device that holds the job's
operation is polled as usual; one that confirms it never received it lets the job start
again; one that cannot tell leaves the job INTERRUPTED, and the operator decides.
"""

from __future__ import annotations

from collections.abc import Mapping

from labctl.clock import Clock
from labctl.devices import Device, NotKnown
from labctl.engine.machines import JobState
from labctl.engine.prompts import Prompts
from labctl.engine.records import ChainRec, Fire, JobRec, Picture, Transitions
from labctl.errors import DeviceError
from labctl.store import Store


def reconcile(
    store: Store,
    clock: Clock,
    picture: Picture,
    devices: Mapping[str, Device],
    transitions: Transitions,
    prompts: Prompts,
    fire: Fire,
) -> None:
    """Settle every RUNNING job of the (freshly loaded) picture with its device."""

    def interrupt(j: JobRec, c: ChainRec, why: str) -> None:
        fire(j, "interrupt", why)
        prompts.ask_interrupted(j, c, why)

    for j in list(picture.jobs.values()):
        if j.state is not JobState.RUNNING:
            continue
        dev = devices.get(j.device)
        c = picture.chain_of(j)
        if dev is None:
            interrupt(j, c, f"device {j.device} is not in this workcell")
            continue
        if j.op_id is None:
            try:
                op_id = dev.find_op(j.key)
            except NotKnown:
                interrupt(
                    j,
                    c,
                    f"{j.device} cannot tell whether {j.op.value} was received before the engine stopped",
                )
                continue
            except DeviceError as exc:
                interrupt(j, c, f"{j.device} could not be asked after the restart: {exc}")
                continue
            if op_id is None:
                # The device confirms it never received the operation: starting it now
                # repeats nothing. Record the finding, then make the job ready again.
                store.record(
                    "reconciled",
                    entity="job",
                    entity_id=j.id,
                    actor=transitions.actor,
                    reason=f"{j.device} has no record of {j.key}: it never started",
                )
                fire(j, "interrupt", "engine stopped before the device received it")
                fire(j, "retry", f"{j.device} confirms it never received {j.key}")
                continue
            transitions.set_op(j, op_id, "found on the device after a restart")
        j.next_poll = clock.now()
