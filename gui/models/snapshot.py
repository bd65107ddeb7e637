"""A snapshot of everything the console shows, read from the store and kept up to date
from its change feed (the audit events after the last one seen), with whether an engine
carries the runs out (read at every poll: its heartbeat writes no audit event)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from labctl.clock import Clock, RealClock
from labctl.gui.models.alarms import worst_first
from labctl.gui.models.common import ACTIVE_RUN_STATES, RunData
from labctl.gui.models.devices import AlarmRow, ClimateReading, DeviceRow, climate_of, device_rows
from labctl.gui.models.engine import EngineView, engine_view, training_view
from labctl.gui.models.prompts import PromptView, prompt_view
from labctl.gui.models.runs import RunRow, TodayItem, run_row, today_items
from labctl.gui.models.timeline import Bar, run_bars
from labctl.store import Store
from labctl.store.models import Alarm, Command, Event, Prompt, Run


@dataclass(frozen=True)
class Snapshot:
    """Everything the console shows, read at ``now`` when the newest event was ``head_seq``.

    ``engine`` is read at every poll; a snapshot that differs from the previous one only
    in it keeps the previous ``data_version`` (views of runs need not be redrawn).
    ``finished_commands``: the watched commands the engine applied or rejected since the
    previous snapshot.
    """

    now: datetime
    head_seq: int | None
    runs: tuple[RunRow, ...]
    alarms: tuple[AlarmRow, ...]
    prompts: tuple[PromptView, ...]
    devices: tuple[DeviceRow, ...]
    bars: tuple[Bar, ...]
    today: tuple[TodayItem, ...]
    finished_commands: tuple[Command, ...] = ()
    pending_commands: int = 0
    engine: EngineView | None = None
    data_version: int = 0

    def same_data(self, other: Snapshot | None) -> bool:
        """Whether ``other`` shows the same runs, prompts and alarms (only the engine's
        reading may differ)."""
        return other is not None and other.data_version == self.data_version

    def run(self, run_id: int | None) -> RunRow | None:
        return next((r for r in self.runs if r.id == run_id), None)

    def zone(self, run_id: int | None) -> str:
        """The zone times are shown in: the run's, else the first listed run's, else UTC."""
        run = self.run(run_id)
        return run.timezone if run else (self.runs[0].timezone if self.runs else "UTC")

    def workcell_zone(self, run_id: int | None) -> str:
        """The zone of the workcell's clock: the workcell file's of the run (else of the
        first listed run), else that run's own zone, else UTC."""
        run = self.run(run_id) or (self.runs[0] if self.runs else None)
        if run is None:
            return "UTC"
        return run.workcell_zone or run.timezone


class SnapshotLoader:
    """Reads :class:`Snapshot` s from a store, re-reading only what changed.

    Every change to the store appends an audit event, so the events after the last one seen
    are a change feed: they name the runs, plates, tasks and jobs to read again (one row
    each), and carry the incubators' climate readings. The first read, and any read after
    more than :data:`FEED_LIMIT` events, loads every run whole. Keep one loader per store
    connection (not thread-safe: the console's worker thread owns it). Times come from
    ``clock``; the engine's heartbeat is read against ``wall`` (a real clock by default:
    heartbeats are wall-clock times even when the runs' clock is paced). ``simulating``,
    for a training database, says whether its simulation process still runs.
    """

    #: With nothing new in the store, a snapshot is re-derived (late flags, day numbers)
    #: at most this often; in between the previous snapshot object is returned as it is.
    REFRESH_S = 30.0
    #: More new events than this since the last read: reload everything instead of patching.
    FEED_LIMIT = 2000
    #: More changed rows than this in one run: reload the run instead of patching it.
    PATCH_LIMIT = 200

    def __init__(
        self,
        clock: Clock,
        wall: Clock | None = None,
        *,
        simulating: Callable[[], bool] | None = None,
    ) -> None:
        self.clock = clock
        self.wall = wall or RealClock()
        self.simulating = simulating
        self._runs: dict[int, RunData] = {}
        self._last: Snapshot | None = None
        self._seen: int | None = None  # the newest event already taken into account
        self._watch: set[int] = set()
        self._alarms: tuple[Alarm, ...] = ()
        self._prompts: tuple[Prompt, ...] = ()
        self._pending: tuple[Command, ...] = ()
        self._climate: dict[str, ClimateReading] = {}
        self._derived: dict[int, tuple[Any, tuple[Bar, ...], tuple[TodayItem, ...]]] = {}
        self._registered_by: dict[int, str | None] = {}  # never changes: read once a run
        self._version = 0
        self._data_version = 0
        self.full_reads = 0  # how many times everything was read (for tests and benches)

    def watch(self, command_id: int) -> None:
        """Report the command in ``finished_commands`` once the engine applied or rejected it."""
        self._watch.add(command_id)

    def engine(self, store: Store) -> EngineView:
        """Whether an engine carries the runs out now (see :mod:`.engine`)."""
        view = engine_view(Path(store.path), store, self.wall.now())
        return training_view(view, self.simulating()) if self.simulating else view

    def load(self, store: Store) -> Snapshot:
        """The current snapshot (the previous object itself when nothing changed)."""
        now = self.clock.now()
        engine = self.engine(store)
        head = store.head()
        head_seq = head[0] if head else None
        last = self._last
        if last is not None and head_seq == last.head_seq:
            if (now - last.now).total_seconds() < self.REFRESH_S:
                if engine != last.engine:
                    last = self._last = replace(last, engine=engine, finished_commands=())
                return last
            self._last = self._derive(now, head_seq, (), store, engine)
            return self._last
        self._read(store, head_seq)
        finished = []
        for cid in sorted(self._watch):
            c = store.get_command(cid)
            if c.state != "pending":
                finished.append(c)
                self._watch.discard(cid)
        self._last = self._derive(now, head_seq, tuple(finished), store, engine)
        return self._last

    # --- reading ------------------------------------------------------------------------------

    def _read(self, store: Store, head_seq: int | None) -> None:
        feed = None
        if self._seen is not None:
            feed = store.events(after_seq=self._seen, limit=self.FEED_LIMIT)
            if len(feed) >= self.FEED_LIMIT:
                feed = None
        if feed is None:
            self._read_all(store, head_seq)
        else:
            self._patch(store, feed)
            if feed:
                self._seen = feed[-1].seq
        self._alarms = tuple(store.active_alarms())
        self._prompts = tuple(store.open_prompts())
        self._pending = tuple(store.pending_commands())

    def _load_run(self, store: Store, run: Run) -> RunData:
        if run.id not in self._registered_by:
            self._registered_by[run.id] = store.registered_by(run.id)
        self._version += 1
        active = run.state in ACTIVE_RUN_STATES
        return RunData(
            run=run,
            plates=tuple(store.plates(run.id)),
            tasks=tuple(store.tasks(run.id)),
            # Finished runs need no jobs: they are not on the timeline any more.
            jobs=tuple(store.jobs(run.id)) if active else (),
            version=self._version,
        )

    def _read_all(self, store: Store, head_seq: int | None) -> None:
        self.full_reads += 1
        self._seen = head_seq or 0  # read before the rows: later changes come in the feed
        self._runs = {run.id: self._load_run(store, run) for run in store.list_runs()}
        self._climate = {}
        for ev in store.events(entity="device", action="climate", newest_first=True, limit=200):
            self._take_climate(ev)

    def _take_climate(self, ev: Event) -> None:
        dev = str(ev.data.get("device") or "")
        if dev and (dev not in self._climate or self._climate[dev].at <= ev.time):
            self._climate[dev] = climate_of(ev)

    def _patch(self, store: Store, feed: Sequence[Event]) -> None:
        """Apply the change feed: re-read each changed row, or a whole run if many changed."""
        dirty: dict[int, dict[str, set[int]]] = {}
        for ev in feed:
            if ev.entity == "device" and ev.action == "climate":
                self._take_climate(ev)
            if ev.run_id is None or ev.entity_id is None:
                continue
            if ev.entity in ("run", "plate", "task", "job"):
                dirty.setdefault(ev.run_id, {}).setdefault(ev.entity, set()).add(ev.entity_id)
        for run_id, kinds in dirty.items():
            d = self._runs.get(run_id)
            n = sum(len(ids) for ids in kinds.values())
            run = store.get_run(run_id) if (d is None or "run" in kinds) else d.run
            was_active = d is not None and d.run.state in ACTIVE_RUN_STATES
            if d is None or n > self.PATCH_LIMIT or was_active != (run.state in ACTIVE_RUN_STATES):
                self._runs[run_id] = self._load_run(store, run)
                continue
            plates, tasks, jobs = d.plates, d.tasks, d.jobs
            if "plate" in kinds:
                plates = _replace_rows(
                    plates, [store.get_plate(i) for i in kinds["plate"]], lambda p: p.id
                )
            if "task" in kinds:
                tasks = _replace_rows(
                    tasks, [store.get_task(i) for i in kinds["task"]], lambda t: (t.due, t.id)
                )
            if "job" in kinds and (run.state in ACTIVE_RUN_STATES):
                jobs = _replace_rows(
                    jobs, [store.get_job(i) for i in kinds["job"]], lambda j: (j.task_id, j.seq)
                )
            self._version += 1
            self._runs[run_id] = RunData(run, plates, tasks, jobs, self._version)

    def _bars_of(self, d: RunData, now: datetime) -> tuple[tuple[Bar, ...], tuple[TodayItem, ...]]:
        """A run's bars and today's items, computed once per change of the run and minute.

        Deriving them is the costly part of a snapshot (thousands of jobs); a run that did
        not change keeps its bars until the minute turns (planned bars follow now).
        """
        minute = now.replace(second=0, microsecond=0)
        key = (d.version, minute)
        hit = self._derived.get(d.run.id)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        bars = tuple(run_bars(d, minute))
        today = tuple(today_items(d, bars, minute))
        self._derived[d.run.id] = (key, bars, today)
        return bars, today

    def _derive(
        self,
        now: datetime,
        head_seq: int | None,
        finished: tuple[Command, ...],
        store: Store,
        engine: EngineView,
    ) -> Snapshot:
        self._data_version += 1
        datas = sorted(self._runs.values(), key=lambda d: d.run.id, reverse=True)
        starting = {c.run_id for c in self._pending if c.verb == "start"}
        rows = tuple(
            run_row(
                d,
                now,
                open_prompts=sum(1 for p in self._prompts if p.run_id == d.run.id),
                # Device alarms are the workcell's: they concern every run under way.
                active_alarms=sum(
                    1
                    for a in self._alarms
                    if a.run_id == d.run.id
                    or (a.run_id is None and d.run.state in ACTIVE_RUN_STATES)
                ),
                pending_commands=sum(1 for c in self._pending if c.run_id == d.run.id),
                registered_by=self._registered_by.get(d.run.id),
                start_pending=d.run.id in starting,
            )
            for d in datas
        )
        # A run that never started (planned with no start command waiting, or ended before
        # any task began) is carried out by nobody: no bars, no device work, no alarms.
        never = {r.id for r in rows if r.never_started}
        rows = tuple(replace(r, active_alarms=0) if r.id in never else r for r in rows)
        alarms = worst_first(
            AlarmRow.of(a) for a in self._alarms if a.run_id is None or a.run_id not in never
        )
        active = [d for d in datas if d.run.state in ACTIVE_RUN_STATES and d.run.id not in never]
        per_run = [self._bars_of(d, now) for d in active]
        bars = tuple(b for bs, _ in per_run for b in bs)
        today = tuple(
            sorted((i for _, ts in per_run for i in ts), key=lambda i: (i.when, i.run_id, i.plate))
        )
        return Snapshot(
            now=now,
            head_seq=head_seq,
            runs=rows,
            alarms=alarms,
            prompts=tuple(prompt_view(p, self._runs.get(p.run_id), store) for p in self._prompts),
            devices=device_rows(active, bars, alarms, self._prompts, self._climate, now),
            bars=bars,
            today=today,
            finished_commands=finished,
            pending_commands=len(self._pending),
            engine=engine,
            data_version=self._data_version,
        )


def _replace_rows(
    rows: Sequence[Any], fresh: Sequence[Any], order: Callable[[Any], Any]
) -> tuple[Any, ...]:
    """``rows`` with the rows of ``fresh`` put in by id (new ones added), sorted by ``order``."""
    by_id = {r.id: r for r in rows}
    for r in fresh:
        by_id[r.id] = r
    return tuple(sorted(by_id.values(), key=order))
