"""Which device call starts which operation: one typed table, keyed by :class:`Op`.

Each operation lists the ways a device can do it, in order of preference: a plate move is
a plate mover's ``start_move``, or else a person carries it (an operator's ``ask``). Each way
names the device capability it needs (a :mod:`labctl.devices` protocol, checked with
``isinstance``) and a function typed for exactly that capability, so mypy checks every call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from labctl.devices import Device, Incubator, LiquidHandler, Operator, PlateMover
from labctl.engine.records import ChainRec, JobRec
from labctl.errors import DeviceError
from labctl.jobs import Op

D = TypeVar("D", bound=Device)


@dataclass(frozen=True)
class Way(Generic[D]):
    """A device of capability ``needs`` starts the operation with ``start``."""

    needs: type[D]
    start: Callable[[D, JobRec, ChainRec, dict[str, Any]], str]


def _lh_run(dev: LiquidHandler, j: JobRec, c: ChainRec, p: dict[str, Any]) -> str:
    return dev.start_job(j.key, p)


def _fetch(dev: Incubator, j: JobRec, c: ChainRec, p: dict[str, Any]) -> str:
    return dev.start_fetch(j.key, int(p["slot"]))


def _store(dev: Incubator, j: JobRec, c: ChainRec, p: dict[str, Any]) -> str:
    return dev.start_store(j.key, int(p["slot"]))


def _setpoint(dev: Incubator, j: JobRec, c: ChainRec, p: dict[str, Any]) -> str:
    o2 = p.get("o2_pct")
    return dev.start_setpoint(
        j.key,
        float(p.get("temperature_c", 37.0)),
        float(p.get("co2_pct", 5.0)),
        None if o2 is None else float(o2),
    )


def _move(dev: PlateMover, j: JobRec, c: ChainRec, p: dict[str, Any]) -> str:
    return dev.start_move(j.key, c.plate, str(p.get("source", "")), str(p.get("destination", "")))


def _ask(dev: Operator, j: JobRec, c: ChainRec, p: dict[str, Any]) -> str:
    """A person does it: the prompt carries the job's parameters and what to show."""
    prompt = {
        **p,
        "run_id": c.run_id,
        "job_id": j.id,
        "kind": "task",
        "text": p.get("text") or p.get("title") or j.op.value,
        "choices": p.get("qc") or [],
        "duration_s": j.duration_s,
    }
    return dev.ask(j.key, prompt)


_BY_HAND: Way[Operator] = Way(Operator, _ask)

WAYS: Mapping[Op, tuple[Way[Any], ...]] = {
    Op.LH_RUN: (Way(LiquidHandler, _lh_run),),
    Op.FETCH: (Way(Incubator, _fetch),),
    Op.STORE: (Way(Incubator, _store),),
    Op.SETPOINT: (Way(Incubator, _setpoint), _BY_HAND),
    Op.TO_DECK: (Way(PlateMover, _move), _BY_HAND),
    Op.TO_INCUBATOR: (Way(PlateMover, _move), _BY_HAND),
    Op.CARRY: (Way(PlateMover, _move), _BY_HAND),
    Op.PROMPT: (_BY_HAND,),
}


def start_op(dev: Device | None, j: JobRec, c: ChainRec, params: dict[str, Any]) -> str:
    """Start ``j`` on ``dev`` with ``params``; the device's op id. Raises DeviceError when
    the workcell has no such device or the device cannot do the operation."""
    if dev is None:
        raise DeviceError(j.device, j.op.value, "no such device in the workcell")
    for way in WAYS[j.op]:
        if isinstance(dev, way.needs):
            return way.start(dev, j, c, params)
    raise DeviceError(j.device, j.op.value, "this device cannot do that operation")
