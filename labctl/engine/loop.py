"""The run engine: carries out every live run in one store, writing every step first.

One loop (:meth:`Engine.step`) applies operator commands, polls running operations,
applies prompt defaults, watches the devices, re-plans when needed, starts due work and
completes runs. Jobs are started and then polled, so one thread interleaves all devices.

The rooms of the engine, in the order of a pass:

- ``records``: the picture of the runs, their transitions and the scheduler's view;
- ``commands``: operator commands (and ``prompts``: recovery questions and answers);
- ``polling``: running operations, finished jobs, QC values;
- ``watch``: device alarms, climate, plates out too long (``alarms`` keeps them);
- ``planner`` and ``pace``: the schedule and the durations it uses;
- ``dispatch`` with ``ops`` and ``places``: starting work on the devices;
- ``recovery``: reconciling jobs under way after a start or a crash.

Every transition goes through :meth:`Engine.fire`: committed first, then the picture, the
places, the alarms and the loop's own flags react to what changed, here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from labctl.clock import Clock
from labctl.devices import Device, QuietWatch
from labctl.engine.alarms import Alarms
from labctl.engine.batches import Batches
from labctl.engine.commands import Commands
from labctl.engine.config import EngineConfig
from labctl.engine.dispatch import Dispatcher
from labctl.engine.machines import JobState, RunState, TaskState
from labctl.engine.pace import Pace
from labctl.engine.places import Places
from labctl.engine.planner import Planner
from labctl.engine.polling import Poller
from labctl.engine.prompts import Prompts
from labctl.engine.records import (
    FINISHED_TASK,
    ChainRec,
    Changed,
    Picture,
    Record,
    RunRec,
    Transitions,
)
from labctl.engine.recovery import reconcile
from labctl.engine.watch import DeviceWatch
from labctl.errors import InvalidTransition
from labctl.jobs import Op
from labctl.store import Store


class Engine:
    """Drives every live run in one store. Not thread-safe: one engine per database."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        devices: Mapping[str, Device],
        config: EngineConfig | None = None,
        *,
        watch: QuietWatch | None = None,
    ) -> None:
        """``watch`` (a simulated workcell in virtual time) lets the engine skip alarm
        checks that could only read what the last one read; real runs pass none."""
        self.store = store
        self.clock = clock
        self.devices = dict(devices)
        self.cfg = config or EngineConfig()
        actor = self.cfg.actor
        self.picture = Picture()
        self.transitions = Transitions(store, actor)
        self.pace = Pace(self.cfg.learn_last, self.cfg.learn_first)
        self.alarms = Alarms(store, actor)
        self.places = Places(store, actor)
        self.planner = Planner(self.cfg, self.picture, self.pace, self.alarms)
        self.prompts = Prompts(
            store, clock, self.cfg, self.picture, self.devices, self.fire, self.places
        )
        self.commands = Commands(
            store, self.picture, self.transitions, self.prompts, self.fire, actor
        )
        self.watcher = DeviceWatch(store, self.cfg, self.devices, self.alarms, self.picture, watch)
        self.batches = Batches(self.picture, self.cfg, self.planner.planned_start)
        self.poller = Poller(
            store,
            self.cfg,
            self.picture,
            self.devices,
            self.alarms,
            self.prompts,
            self.planner,
            self.pace,
            self.fire,
            self.commands.abort,
            self.commands.extend,
            self.batches,
        )
        self.dispatcher = Dispatcher(
            store,
            self.cfg,
            self.picture,
            self.devices,
            self.planner,
            self.places,
            self.alarms,
            self.prompts,
            self.transitions,
            self.pace,
            self.fire,
            self.batches,
        )
        # Called at the start of every step with the current time (a simulated workcell
        # applies its timed faults and its scripted operator's decisions here).
        self.hooks: list[Callable[[datetime], None]] = []
        # Asked for the next moment something outside the engine will act (a simulated
        # workcell's scripted operator deciding); the loop wakes then.
        self.wakes: list[Callable[[datetime], datetime | None]] = []
        self.on_unhold: list[Callable[[], None]] = []  # the daemon re-marks the store's head
        self._maybe_complete = True
        self._blocked: set[str] = set()  # devices a blocking alarm stopped, at the last pass
        self._recovered = False
        # Why the engine starts no device operation now (None: it does). Set when its store
        # went backwards; running operations are still followed and commands applied.
        self.held: str | None = None
        # Why and until when the store was last found behind the devices (see doubt()).
        self._doubt: tuple[str, datetime] | None = None
        self.commands.engine_verbs["confirm-store"] = self._confirm_store

    # ---- every transition, and what reacts to it ----------------------------------------

    def fire(self, rec: Record, trigger: str, reason: str, **kw: Any) -> Changed:
        """Commit ``trigger`` on ``rec`` (store first), then let everything react to it."""
        ch = self.transitions.fire(rec, trigger, reason, **kw)
        self.picture.index(ch)
        self.places.react(ch, self.picture)
        self.alarms.react(ch)
        if isinstance(rec, RunRec):
            self.planner.invalidate()
            self._maybe_complete = True
        elif isinstance(rec, ChainRec) and rec.state in FINISHED_TASK:
            self._maybe_complete = True
            if self._doubt is not None and ch.before not in FINISHED_TASK:
                self._doubt_next(rec)
        return ch

    # ---- loading and recovery -------------------------------------------------------------

    def load(self) -> None:
        """Rebuild the engine's picture of every live run from the store."""
        self.picture.load(self.store)
        self.places.rebuild(self.picture)
        self.pace.relearn(self.picture.jobs.values())
        self.alarms.load()
        self.prompts.load()
        self._doubt = self.store.store_doubt()
        self.planner.invalidate()
        self._maybe_complete = True

    def recover(self) -> None:
        """After a start or a crash: load, then reconcile every job found RUNNING."""
        self.load()
        reconcile(
            self.store,
            self.clock,
            self.picture,
            self.devices,
            self.transitions,
            self.prompts,
            self.fire,
        )
        self._recovered = True

    # ---- the loop -----------------------------------------------------------------------

    def apply_commands(self) -> None:
        """Apply the operator commands queued in the store."""
        self.commands.apply_pending()
        if self.commands.replan_wanted:
            self.commands.replan_wanted = False
            self.planner.invalidate()

    def step(self) -> datetime | None:
        """One pass of the loop. Returns when it next needs to run (None: nothing to do)."""
        if not self._recovered:
            self.recover()
        now = self.clock.now()
        for hook in self.hooks:
            hook(now)
        self.apply_commands()
        self.poller.poll_due(now)
        self.prompts.apply_defaults(now)
        self.watcher.check(now)
        self.watcher.plates_out(now)
        blocked = {d for d in self.devices if self.alarms.blocked(d)}
        if blocked != self._blocked:
            self._blocked = blocked
            self.planner.invalidate()
        if self.planner.stale:
            self.planner.replan(now, blocked)
        if self.held is None:
            self.dispatcher.dispatch(now)
            self.dispatcher.prepare_ahead(now)
        self._complete_runs()
        return self._next_wake(now)

    def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        max_idle_s: float = 3600.0,
        max_steps: int | None = None,
    ) -> None:
        """Loop until no run is live (or ``until()``), sleeping on the clock between steps."""
        steps = 0
        while True:
            wake = self.step()
            steps += 1
            if until is not None and until():
                return
            if not any(True for _ in self.picture.live_runs()):
                return
            if max_steps is not None and steps >= max_steps:
                return
            now = self.clock.now()
            limit = now + timedelta(seconds=max_idle_s)
            self.clock.sleep_until(min(wake, limit) if wake is not None else limit)
            if self.clock.now() <= now:
                self.clock.sleep(min(self.cfg.poll_s, 1.0))

    # ---- holding: no new device operation until a person says so ------------------------

    def hold(self, reason: str) -> None:
        """Start no device operation until :meth:`unhold` (a 'confirm-store' command)."""
        if self.held is None:
            self.store.record("engine-held", entity="engine", actor=self.cfg.actor, reason=reason)
        self.held = reason
        self.alarms.raise_(None, "engine", "held", f"the engine starts nothing: {reason}")

    def doubt(self, reason: str, acted_until: datetime) -> int:
        """The store went back: the first task of each plate not done, with a liquid
        handling not done, whose window had opened by ``acted_until`` (when the engine last
        told a device to act) may have been done in the time the store lost. A task not
        begun waits for a person to say how far it got (an 'in-doubt' prompt); in one under
        way, the liquid handling is marked in doubt (in the trail, so a restart keeps it):
        the robot is asked before it starts, and where it cannot tell, a person decides.

        Only the first task of a plate is asked about: a plate's tasks run one after the
        other, so a later one cannot have begun before the first was done, and the place
        the plate is in says nothing of which task put it there. When that first task is
        done, the next is asked about in turn (:meth:`_doubt_next`; the doubt is kept in
        the store for an engine that restarts meanwhile). Returns how many tasks."""
        self.store.set_store_doubt(reason, acted_until)
        self._doubt = (reason, acted_until)
        n = 0
        for r in self.picture.live_runs():
            firsts: dict[str, ChainRec] = {}
            for c in sorted(r.chains.values(), key=lambda c: (c.window_start, c.due, c.task_id)):
                if c.state not in FINISHED_TASK:
                    firsts.setdefault(c.plate, c)
            n += sum(self._doubt_chain(c, reason, acted_until) for c in firsts.values())
        return n

    def _doubt_next(self, done: ChainRec) -> None:
        """``done`` is finished while the store is in doubt: the next task of its plate may
        have begun in the time the store lost; ask about it as :meth:`doubt` would."""
        if self._doubt is None:
            return
        r = self.picture.runs.get(done.run_id)
        if r is None:
            return
        later = sorted(
            (
                c
                for c in r.chains.values()
                if c.plate == done.plate and c.state not in FINISHED_TASK
            ),
            key=lambda c: (c.window_start, c.due, c.task_id),
        )
        if later:
            self._doubt_chain(later[0], *self._doubt)

    def _doubt_chain(self, c: ChainRec, reason: str, acted_until: datetime) -> bool:
        lh = next((j for j in c.jobs if j.op is Op.LH_RUN), None)
        if lh is None or lh.state not in (JobState.PENDING, JobState.READY):
            return False
        if c.window_start > acted_until or lh.in_doubt or c.doubt_prompt is not None:
            return False
        running = any(j.state is JobState.RUNNING for j in c.jobs)
        if c.state is TaskState.PENDING or (c.state is TaskState.ACTIVE and not running):
            # Between steps: a person says how far it really got.
            self.prompts.ask_in_doubt(c, lh, reason)
        elif c.state is TaskState.ACTIVE:
            # A step under way: its device says how it went; the robot is asked before it
            # feeds.
            self.store.record(
                "in-doubt", entity="job", entity_id=lh.id, actor=self.cfg.actor, reason=reason
            )
            lh.in_doubt = True
        else:
            return False
        return True

    def unhold(self, actor: str, reason: str) -> None:
        self.store.record("engine-resumed", entity="engine", actor=actor, reason=reason)
        self.held = None
        self.alarms.clear(None, "engine", "held")
        for hook in self.on_unhold:
            hook()

    def _confirm_store(self, actor: str, reason: str) -> dict[str, Any]:
        if self.held is None:
            raise InvalidTransition("the engine is not held: there is nothing to confirm")
        if not reason:
            raise ValueError("confirming the store needs a reason (it goes into the audit trail)")
        was = self.held
        self.unhold(actor, reason)
        return {"resumed": True, "was_held_for": was}

    def _complete_runs(self) -> None:
        if not self._maybe_complete:
            return
        self._maybe_complete = False
        for r in list(self.picture.runs.values()):
            if (
                r.state is RunState.RUNNING
                and r.chains
                and all(c.state in FINISHED_TASK for c in r.chains.values())
            ):
                self.fire(r, "complete", "every task is done or skipped")

    def _next_wake(self, now: datetime) -> datetime | None:
        """The next moment something is due: a poll, a chain's planned start, a deadline.

        Chains already due but blocked (device busy, plate busy) are not counted: what
        unblocks them is a running job finishing, which has its own poll time.
        """
        polls = (self.picture.jobs[i].next_poll for i in self.picture.running)
        times = [t for t in polls if t is not None]
        times += [
            t
            for t in (
                self.planner.next_start_after(now),
                self.prompts.next_deadline(),
                self.dispatcher.next_retry(),
                self.batches.next_wake(),
            )
            if t
        ]
        times += self.watcher.plates_out_wakes()
        times += [t for t in (wake(now) for wake in self.wakes) if t is not None and t > now]
        check = self.watcher.next_wake(now)
        if check is not None and times:
            times.append(check)
        return min(times) if times else None
