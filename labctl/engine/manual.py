"""Manual device actions: a supervisor moves a device through the engine, on the record.

A client queues ``device-action`` with args ``{"device": NAME, "action": ACTION, ...}``
(:data:`DEVICE_ACTION`); the engine applies it here, in its own loop, so nothing else
drives the device meanwhile:

- an incubator's ``present`` ``{"slot": N}``: the plate in slot N to the transfer station
  (the driver's ``start_fetch``); ``put-away`` ``{"slot": N}``: the plate on the transfer
  station into slot N (``start_store``); ``open-gate`` / ``close-gate``: its automatic gate
  (lift door) at the transfer station, where the device has one it can be told to open
  (``start_gate``: a Cytomat's ``ll:gp``; a LiCONiC has no documented command and refuses);
- a plate mover's ``move`` ``{"source": STATION, "destination": STATION, "plate": LABEL}``
  (``start_move``; stations as the workcell names them, ``plate`` optional).

It is refused (the command is rejected with the reason) when the device is not one of the
engine's, cannot do that action, is running a job's operation, or is needed by a task under
way (a plate of a run is between the incubator and the deck: the job that brings it back
must find the device as the plan left it); when the arguments are missing; and, on a
database with accounts, when the actor's role may not
(:data:`labctl.accounts.Action.DEVICE_ACTION`: a supervisor's). An accepted action is started,
then polled every ``poll_s`` clock seconds until it ends (at most ``timeout_s``): the loop
waits for it, so no job can start on the device while it moves (a move takes a minute or
less). A ``device-action`` event records the outcome in the audit trail; an action that
failed or needs a person rejects the command saying so. The engine's plate records are not
changed: a supervisor who presents a plate puts it away again before the run needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from labctl.accounts import Action, allowed
from labctl.clock import Clock
from labctl.devices import Device, GatedIncubator, Incubator, OpState, PlateMover
from labctl.engine.machines import JobState, TaskState
from labctl.engine.records import Picture
from labctl.errors import DeviceError, LabctlError
from labctl.jobs import Op
from labctl.store import Store

__all__ = [
    "DEVICE_ACTION",
    "INCUBATOR_ACTIONS",
    "MOVER_ACTIONS",
    "ManualActionRefused",
    "ManualActions",
    "describe",
]

DEVICE_ACTION = "device-action"
INCUBATOR_ACTIONS = ("present", "put-away", "open-gate", "close-gate")
MOVER_ACTIONS = ("move",)
_UNFINISHED = (JobState.PENDING, JobState.READY, JobState.RUNNING)


class ManualActionRefused(LabctlError):
    """A manual device action was refused or did not succeed (the reason says which)."""

    code = 3010


@dataclass(frozen=True)
class _Started:
    """What the driver was asked to do: the op id and the action in words."""

    op_id: str
    words: str


def describe(args: Mapping[str, Any]) -> str:
    """A device action in words: "inc-1: present slot 3 at the transfer station"."""
    device, action = args.get("device", "?"), args.get("action", "?")
    if action == "present":
        return f"{device}: present slot {args.get('slot', '?')} at the transfer station"
    if action == "put-away":
        return f"{device}: put the plate on the transfer station into slot {args.get('slot', '?')}"
    if action in ("open-gate", "close-gate"):
        return f"{device}: {action.split('-')[0]} the gate at the transfer station"
    if action == "move":
        plate = f"{args['plate']} " if args.get("plate") else "the plate "
        return f"{device}: move {plate}from {args.get('source', '?')} to {args.get('destination', '?')}"
    return f"{device}: {action}"


class ManualActions:
    """Applies ``device-action`` commands on ``devices`` (the engine's) while ``picture``
    (the engine's live runs) shows no job on the device. ``poll_s`` and ``timeout_s`` are
    clock seconds."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        devices: Mapping[str, Device],
        picture: Picture,
        actor: str,
        *,
        poll_s: float = 1.0,
        timeout_s: float = 600.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.devices = devices
        self.picture = picture
        self.actor = actor
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._count = 0  # actions started by this engine: part of each one's job key

    # ---- the command ----------------------------------------------------------------------

    def apply(self, args: Mapping[str, Any], actor: str, reason: str) -> dict[str, Any]:
        """Check, start, follow and record one action; returns what happened. Raises
        ManualActionRefused (the command is rejected) when refused or unsuccessful."""
        self._check_role(actor)
        name = str(args.get("device") or "")
        dev = self.devices.get(name)
        if dev is None:
            known = ", ".join(sorted(self.devices)) or "none"
            raise ManualActionRefused(f"no device '{name}' in this workcell (devices: {known})")
        holder = self.holder(name)
        if holder is not None:
            raise ManualActionRefused(f"{name} is in use: {holder}; try again when it is free")
        try:
            started = self._start(dev, dict(args))
        except DeviceError as exc:
            raise ManualActionRefused(f"{describe(args)}: the device refused: {exc}") from None
        data = {**dict(args), "op_id": started.op_id}
        outcome, detail = self._follow(dev, started.op_id)
        self.store.record(
            DEVICE_ACTION,
            entity="device",
            actor=actor,
            reason=reason or started.words,
            data={**data, "outcome": outcome, "detail": detail},
        )
        if outcome != "succeeded":
            raise ManualActionRefused(
                f"{started.words}: started, then {outcome}: {detail}; check the device"
            )
        return {"device": name, "action": args.get("action"), "outcome": outcome, "detail": detail}

    def holder(self, device: str) -> str | None:
        """Why ``device`` is not free for a manual action (None: it is): a job running on
        it, or a task under way that still needs it."""
        for jid in sorted(self.picture.running):
            j = self.picture.jobs[jid]
            if j.device == device and j.op is not Op.PROMPT:
                return f"job {j.key} is running on it"
        for tid in sorted(self.picture.active):
            c = self.picture.chains[tid]
            if c.state is not TaskState.ACTIVE:
                continue
            if any(j.device == device and j.state in _UNFINISHED for j in c.jobs):
                return f"task {c.key} of run {c.run_id} is under way and still needs it"
        return None

    # ---- internals ------------------------------------------------------------------------

    def _check_role(self, actor: str) -> None:
        """On a database with accounts, only the roles that may confirm the store act."""
        if self.store.is_practice() or self.store.user_count() == 0:
            return
        try:
            role = self.store.get_user(actor).role
        except LabctlError:
            raise ManualActionRefused(f"'{actor}' has no account on this database") from None
        why = allowed(role, Action.DEVICE_ACTION)
        if why is not None:
            raise ManualActionRefused(f"{actor}: {why}")

    def _start(self, dev: Device, args: dict[str, Any]) -> _Started:
        action = str(args.get("action") or "")
        # A key of its own: a driver answers a key it already ran with that op, unmoved.
        self._count += 1
        key = f"manual/{self.clock.now():%Y%m%dT%H%M%S.%f}/{self._count}"
        words = describe(args)
        starts: dict[str, Callable[[], str]] = {}
        if isinstance(dev, Incubator):
            # The slot is checked only for the actions that use it (a lambda reads it).
            starts = {
                "present": lambda: dev.start_fetch(key, _int(args, "slot")),
                "put-away": lambda: dev.start_store(key, _int(args, "slot")),
            }
            if isinstance(dev, GatedIncubator):
                starts["open-gate"] = lambda: dev.start_gate(key, True)
                starts["close-gate"] = lambda: dev.start_gate(key, False)
        elif isinstance(dev, PlateMover):
            source, destination = _text(args, "source"), _text(args, "destination")
            if source == destination:
                raise ManualActionRefused("the source and the destination are the same station")
            plate = str(args.get("plate") or "plate")
            starts = {"move": lambda: dev.start_move(key, plate, source, destination)}
        if action not in starts:
            can = ", ".join(starts) or "no manual action"
            raise ManualActionRefused(f"{dev.name} cannot '{action}' (it can: {can})")
        return _Started(starts[action](), words)

    def _follow(self, dev: Device, op_id: str) -> tuple[str, str]:
        """Poll ``op_id`` until it ends: (outcome, detail); outcome is succeeded, failed,
        needs a person, or timed out."""
        end = self.clock.monotonic() + self.timeout_s
        while True:
            try:
                st = dev.poll(op_id)
            except DeviceError as exc:
                return "failed", str(exc)
            if st.state is OpState.SUCCEEDED:
                return "succeeded", st.detail
            if st.state is OpState.FAILED:
                return "failed", str(st.error or st.detail)
            if st.state is OpState.NEEDS_OPERATOR:
                return "needs a person", str(st.error or st.detail)
            if self.clock.monotonic() >= end:
                return "timed out", f"not done after {self.timeout_s:g} s"
            self.clock.sleep(self.poll_s)


def _int(args: Mapping[str, Any], key: str) -> int:
    try:
        value = int(args[key])
    except (KeyError, TypeError, ValueError):
        raise ManualActionRefused(f"'{key}' must be a whole number") from None
    if value < 1:
        raise ManualActionRefused(f"'{key}' must be 1 or more, not {value}")
    return value


def _text(args: Mapping[str, Any], key: str) -> str:
    value = str(args.get(key) or "").strip()
    if not value:
        raise ManualActionRefused(f"give '{key}' (a station the workcell names)")
    return value
