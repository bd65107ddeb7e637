"""Starting work: due chains begin in planned order, chains under way take their next step.

A job starts when its device is free and not blocked by an alarm, its run lets it (a held
run starts no liquid handling, an aborted run none at all), and the places it needs are
free. Starting follows the rule that keeps runs safe: the job's move to RUNNING is
committed (with its audit entry) before the device hears anything, and the device's op
id is recorded after, so a restart can reconcile it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from labctl.devices import Device, NotKnown, Preparable
from labctl.engine.alarms import Alarms
from labctl.engine.batches import RIDE, Batches, riding
from labctl.engine.config import EngineConfig
from labctl.engine.machines import JobState, RunState, TaskState
from labctl.engine.ops import start_op
from labctl.engine.pace import Pace
from labctl.engine.places import Places
from labctl.engine.planner import Planner
from labctl.engine.prompts import Prompts
from labctl.engine.records import (
    FINISHED_TASK,
    ChainRec,
    Fire,
    JobRec,
    Picture,
    RunRec,
    Transitions,
    to_job_spec,
)
from labctl.errors import DeviceBusy, DeviceError, DeviceNeedsOperator, DeviceUnreachable
from labctl.jobs import Op, on_deck
from labctl.store import Store


class Dispatcher:
    """Begins due chains and advances chains under way, one step at a time."""

    def __init__(
        self,
        store: Store,
        cfg: EngineConfig,
        picture: Picture,
        devices: Mapping[str, Device],
        planner: Planner,
        places: Places,
        alarms: Alarms,
        prompts: Prompts,
        transitions: Transitions,
        pace: Pace,
        fire: Fire,
        batches: Batches,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.picture = picture
        self.devices = devices
        self.planner = planner
        self.places = places
        self.alarms = alarms
        self.prompts = prompts
        self.transitions = transitions
        self.pace = pace
        self.fire = fire
        self.batches = batches
        self._prepared: set[str] = set()  # keys of jobs offered to their device's prepare
        # Called after a job's RUNNING is committed and before its device hears of it (the
        # daemon marks the store's head there: labctl.engine.presence).
        self.before_act: list[Callable[[], None]] = []

    def dispatch(self, now: datetime) -> None:
        """Chains under way first (their next step), then due pending ones in planned order."""
        busy = {
            self.picture.jobs[i].device
            for i in self.picture.running
            # a person handles several prompts; a job riding in another's robot run holds
            # no device of its own (its leader, when running, holds the robot)
            if self.picture.jobs[i].op is not Op.PROMPT and riding(self.picture.jobs[i]) is None
        }
        for tid in sorted(self.picture.active):
            self._advance(self.picture.chains[tid], now, busy)
        # A rider whose plate reached the deck in this pass (its chain came after its
        # leader's) lets the waiting leader start now, not when its wait runs out.
        for tid in sorted(self.picture.active):
            c = self.picture.chains[tid]
            nxt = c.next_job()
            if nxt is not None and nxt.state is JobState.READY and self.batches.waiting(nxt):
                self._advance(c, now, busy)
        begun = False
        for c in self.planner.order:
            if self.planner.planned_start(c) > now:
                break  # sorted by planned start: nothing later is due
            r = self.picture.run_of(c)
            if (
                c.state is not TaskState.PENDING
                or r.state is not RunState.RUNNING
                or c.plate_id in self.picture.paused_plates
                or c.doubt_prompt is not None  # a person says first whether it was done
            ):
                continue
            if not self._previous_done(r, c) or self._plate_busy(r, c):
                continue
            if not self.batches.may_begin(c, self.places.taken):
                continue  # its batch takes the deck together
            first = c.jobs[0] if c.jobs else None
            if first is None or not self._device_free(first, busy):
                continue
            self.fire(c, "begin", "its planned time has come", updates={"actual_start": now})
            self._advance(c, now, busy)
            begun = True
        if begun:
            self.planner.order = [c for c in self.planner.order if c.state is TaskState.PENDING]

    def _device_free(self, j: JobRec, busy: set[str]) -> bool:
        return (j.op is Op.PROMPT or j.device not in busy) and not self.alarms.blocked(j.device)

    def _advance(self, c: ChainRec, now: datetime, busy: set[str]) -> None:
        """Start the chain's next step if it may start now."""
        if c.doubt_prompt is not None:
            return  # a person says first how far it got
        r = self.picture.run_of(c)
        nxt = c.next_job()
        if nxt is None:
            self.fire(c, "finish", "all jobs done", updates={"actual_end": now})
            return
        if nxt.state is JobState.PENDING:
            if r.state is RunState.ABORTED and nxt.op is Op.LH_RUN:
                self.fire(nxt, "skip", "run aborted")
                return
            self.fire(nxt, "ready", "previous step done")
        if nxt.state is not JobState.READY or not self._device_free(nxt, busy):
            return
        if nxt.not_before is not None and nxt.not_before > now:
            return  # its device refused it a moment ago (busy, initialising): not yet
        if r.state is RunState.HOLDING and nxt.op is Op.LH_RUN:
            return
        riders: list[tuple[ChainRec, JobRec]] = []
        if nxt.op is Op.LH_RUN and not nxt.in_doubt:
            if self.batches.rider_waits(nxt, c, now):
                return  # its leader will feed it with its own plate
            taken = self.batches.take(nxt, c, now)
            if taken is None:
                return  # a plate of its batch is on its way to the deck
            riders = [(rc, rj) for rc, rj in taken if self.places.deck_slot(rc) is not None]
        if not self.places.acquire(c, nxt, self.planner.scheduled_position):
            return  # the place it needs (deck position, transfer station) is taken: wait
        if self._start(nxt, c, now, riders) and nxt.op is not Op.PROMPT:
            busy.add(nxt.device)

    def _start(
        self,
        j: JobRec,
        c: ChainRec,
        now: datetime,
        riders: list[tuple[ChainRec, JobRec]] | None = None,
    ) -> bool:
        """Start ``j`` (a leader with the ``riders`` it takes into its robot run); False if
        the device refused it (busy: asked again later; else the job failed and a prompt
        asks)."""
        riders = riders or []
        # 1. commit RUNNING (with the audit entry) before the device hears anything; the
        # riders' too, in the same transaction: after a crash they are known to ride
        with self.store.atomic():
            self.fire(j, "start", f"dispatch to {j.device}", updates={"started_at": now})
            for rc, rj in riders:
                if rj.state is JobState.READY:
                    self.fire(rj, "start", f"rides in {j.key}", updates={"started_at": now})
                    rj.started_at = now
                    self.transitions.set_op(rj, RIDE + j.key, f"fed in the robot run of {j.key}")
                    if rj.seq == rc.main_seq:
                        rc.main_start = now
        j.started_at = now
        self.batches.forget(j)
        for _, rj in riders:
            self.batches.forget(rj)
        for hook in self.before_act:
            hook()
        if j.in_doubt:
            return self._settle_doubt(j, c, now)
        # 2. tell the device (one that already holds this job's operation answers with it
        # and does nothing again: labctl.devices, "idempotent per job key")
        params = self.params(c, j)
        if riders:  # one robot run for every plate of the batch on the deck, leader first
            params["batch"] = [self.places.deck_slot(c)] + [
                self.places.deck_slot(rc) for rc, _ in riders
            ]
            params["batch_plates"] = [c.plate] + [rc.plate for rc, _ in riders]
        try:
            op_id = start_op(self.devices.get(j.device), j, c, params)
        except (DeviceBusy, DeviceUnreachable) as exc:
            # Nothing happened (busy, initialising, or not reachable and nothing that
            # acts was delivered): ask again later, a person only after busy_give_up_s.
            if self._wait_for(j, exc, now):
                return False
            self._failed_to_start(j, c, exc, now)
            return False
        except DeviceError as exc:
            self._failed_to_start(j, c, exc, now)
            return False
        j.not_before = j.refused_since = None
        j.refusals = 0
        # 3. record its op id, so a restart can reconcile it
        self.transitions.set_op(j, op_id, f"{j.device} accepted {j.op.value}")
        # First poll a little before the expected end: polling only from the plan on would
        # measure no job as shorter than planned, and the learned pace could only grow.
        first = self.pace.planned(j) - 2 * self.cfg.poll_s
        j.next_poll = now + timedelta(seconds=max(first, 1.0) if j.op is not Op.PROMPT else 0)
        if j.seq == c.main_seq:
            c.main_start = now
        return True

    def _settle_doubt(self, j: JobRec, c: ChainRec, now: datetime) -> bool:
        """A job that may have run in the time the store lost: follow the device's own
        operation if it has one, else a person says what happened (never started again)."""
        dev = self.devices.get(j.device)
        try:
            op_id = dev.find_op(j.key) if dev is not None else None
        except (NotKnown, DeviceError):
            op_id = None
        self.store.record(
            "in-doubt-settled",
            entity="job",
            entity_id=j.id,
            actor=self.cfg.actor,
            reason=f"{j.device} has it: followed" if op_id else f"{j.device} cannot tell: asked",
        )
        j.in_doubt = False
        if op_id is not None:
            self.transitions.set_op(
                j, op_id, f"{j.device} already had {j.key}: followed, not repeated"
            )
            j.next_poll = now
            return True
        why = (
            "the run database was put back to an older copy after it may already have run, "
            f"and {j.device} keeps no record of it"
        )
        self.fire(j, "interrupt", why)
        self.prompts.ask_interrupted(j, c, why)
        return False

    def _wait_for(self, j: JobRec, exc: DeviceError, now: datetime) -> bool:
        """A device busy, initialising or unreachable refused ``j`` (nothing happened): make
        the job ready again and ask later, backing off, until ``busy_give_up_s``. False once
        given up."""
        since = j.refused_since or now
        if (now - since).total_seconds() >= self.cfg.busy_give_up_s:
            return False
        delay = min(self.cfg.busy_retry_max_s, self.cfg.busy_retry_s * 2**j.refusals)
        self.fire(j, "refused", f"{exc}; asking again in {delay:g} s", updates={"started_at": None})
        j.started_at = None
        j.refused_since, j.not_before = since, now + timedelta(seconds=delay)
        j.refusals += 1
        return True

    def next_retry(self) -> datetime | None:
        """When a job a busy device refused is next asked again."""
        times = [
            self.picture.jobs[j.id].not_before
            for tid in self.picture.active
            for j in self.picture.chains[tid].jobs
            if j.state is JobState.READY and j.not_before is not None
        ]
        return min((t for t in times if t is not None), default=None)

    def _failed_to_start(self, j: JobRec, c: ChainRec, exc: DeviceError, now: datetime) -> None:
        """The device refused ``j`` for good (or busy for too long): it fails, a person decides."""
        j.not_before = j.refused_since = None
        j.refusals = 0
        j.needs_operator = str(exc) if isinstance(exc, DeviceNeedsOperator) else None
        with self.store.atomic():
            # Nothing happened on the device: plates that were to ride in this run are on
            # the deck, not fed, and wait for its next try (or go alone).
            self._release_riders(j, c, f"{j.device} refused the run they were to ride in")
            self.fire(
                j,
                "fail",
                f"{exc}",
                data={"error": str(exc)},
                updates={"finished_at": now, "result": {"error": str(exc)}},
            )
        self.prompts.ask_recovery(j, c, exc, str(exc))

    def _release_riders(self, j: JobRec, c: ChainRec, why: str) -> None:
        """Jobs riding in ``j``'s run, which the device never started, are READY again."""
        for key in j.params.get("riders") or []:
            found = self.batches.find(c, str(key))
            if found is None:
                continue
            rj = found[1]
            if rj.state is JobState.RUNNING and riding(rj) == j.key:
                self.fire(rj, "refused", why, updates={"started_at": None, "device_op_id": None})
                rj.started_at, rj.op_id = None, None

    def params(self, c: ChainRec, j: JobRec, slot: int | None = None) -> dict[str, Any]:
        """The job's parameters with the deck position this chain holds (or ``slot``); a
        liquid handling's also say which attempt it is, so the device tells a retry the
        operator chose from a repeat it must refuse."""
        slot = self.places.deck_slot(c) if slot is None else slot
        params = j.params if slot is None else on_deck(to_job_spec(c, j), slot).params
        return {**params, "attempt": j.attempts} if j.op is Op.LH_RUN else params

    def _previous_done(self, r: RunRec, c: ChainRec) -> bool:
        if c.previous_key is None:
            return True
        prev = r.chains.get(f"{c.previous_key}/{c.plate}") or r.chains.get(c.previous_key)
        return prev is None or prev.state in FINISHED_TASK

    def _plate_busy(self, r: RunRec, c: ChainRec) -> bool:
        """A plate takes part in one chain at a time."""
        if c.plate == "*":
            return False
        return any(
            self.picture.chains[t].plate == c.plate and self.picture.chains[t].run_id == r.id
            for t in self.picture.active
            if t != c.task_id
        )

    # ---- getting devices ready ----------------------------------------------------------

    def prepare_ahead(self, now: datetime) -> None:
        """Let devices prepare the liquid-handling jobs of running runs planned to begin
        within ``prepare_ahead_s`` (each once), with the deck position the schedule gives.
        Never acts physically and never fails the run: start_job reports what prepare met."""
        horizon = now + timedelta(seconds=self.cfg.prepare_ahead_s)
        for c in self.planner.order:
            if self.planner.planned_start(c) > horizon:
                break  # sorted by planned start
            if (
                c.state is not TaskState.PENDING
                or self.picture.run_of(c).state is not RunState.RUNNING
            ):
                continue
            for j in c.jobs:
                if j.op is not Op.LH_RUN or j.key in self._prepared:
                    continue
                self._prepared.add(j.key)
                device = self.devices.get(j.device)
                if j.state is not JobState.PENDING or not isinstance(device, Preparable):
                    continue
                if j.params.get("rides"):
                    continue  # fed in its leader's run, which is prepared with it
                params = self.params(c, j, self._expected_deck_slot(c))
                riders = [self.batches.find(c, str(k)) for k in j.params.get("riders") or []]
                if riders:  # the run as it will most likely start: every plate of the batch
                    found = [(rc, self._expected_deck_slot(rc)) for rc, _ in filter(None, riders)]
                    params["batch"] = [params.get("deck_slot")] + [s for _, s in found]
                    params["batch_plates"] = [c.plate] + [rc.plate for rc, _ in found]
                try:
                    device.prepare(j.key, params)
                except Exception as exc:  # noqa: BLE001 - optional work must not stop feeding
                    self.store.record(
                        "prepare-failed",
                        entity="job",
                        entity_id=j.id,
                        actor=self.cfg.actor,
                        reason=f"{j.device} could not prepare {j.key}: {exc}",
                        data={"error": type(exc).__name__},
                    )

    def _expected_deck_slot(self, c: ChainRec) -> int | None:
        """The deck position the chain holds, or else the one it will most likely take (the
        schedule's choice, as ``Places.acquire`` prefers it, or the place's first position)."""
        held = self.places.deck_slot(c)
        if held is not None:
            return held
        for h in c.holds:
            if h.place.endswith(":deck") and h.positions:
                return self.planner.scheduled_position(c, h.place) or h.positions[0]
        return None
