"""The simulated robot behind the HTTP API: its protocols, runs, faults and action log.

Each operation is one request's work on the robot, returning the JSON body robot-server
answers with, or raising a Refusal (:mod:`~labctl.simulators.opentrons_refusals`) that the
HTTP layer words as robot-server does. Nothing here knows of HTTP.

Time: there are no background threads advancing state and nothing sleeps. Every operation
first brings the current run up to ``clock.now()`` (see the run engine). Since the action log is written lazily, call :meth:`Robot.sync` (or
:meth:`~Robot.action_entries`) before reading it when no request has arrived since the clock
moved.

Threading: all state sits behind one lock; an analysis a request waits for is waited for
outside it. By default an upload waits for its analysis, so tests see deterministic results.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from labctl.clock import Clock
from labctl.simulators.opentrons_analysis import AnalysisService, default_analysis
from labctl.simulators.opentrons_analysis_data import Files, ProtocolAnalysis, rtp_values_match
from labctl.simulators.opentrons_instruments import InstrumentConfig, attach, load_failure
from labctl.simulators.opentrons_protocols import (
    AnalysisRecord,
    ProtocolRecord,
    ProtocolStore,
    Upload,
)
from labctl.simulators.opentrons_refusals import Refusal, Refused
from labctl.simulators.opentrons_run_engine import RunEngine
from labctl.simulators.opentrons_runs import (
    COMMAND_DURATIONS_S,
    TERMINAL_STATUSES,
    Faults,
    Run,
    RunResult,
    RunStore,
    checked_faults,
    fail_at_load,
    new_run,
)
from labctl.simulators.opentrons_views import (
    command_errors_page,
    command_full,
    commands_page,
    run_json,
    runs_page,
)
from labctl.simulators.opentrons_wire import ROBOT_TYPES, RobotName, iso, new_id

ActionLogTarget = str | Path | Callable[[dict[str, Any]], None] | None


class ActionLog:
    """What the robot did, one entry per event (completed physical commands, uploads, runs).

    ``target`` is a file path (JSON lines are appended) or a callable receiving each entry as
    a dict, or None (entries are only kept). Thread-safe.
    """

    def __init__(self, target: ActionLogTarget) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._file: TextIO | None = None  # the file, once written to
        self._entries: list[dict[str, Any]] = []

    def emit(self, event: str, at: datetime, **fields: Any) -> None:
        entry = {"event": event, "time": iso(at), **fields}
        with self._lock:
            self._entries.append(entry)
            target = self._target
            if target is None:
                return
            if callable(target):
                target(copy.deepcopy(entry))
                return
            if self._file is None:
                # Kept open, line-buffered: each entry reaches the file whole as it is
                # written (a reader never sees half a line), without an open per command.
                self._file = open(target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        """Every entry so far, oldest first (copies)."""
        with self._lock:
            return copy.deepcopy(self._entries)

    def close(self) -> None:
        """Close the file (a later entry opens it again)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Robot:
    """An Opentrons robot-server's state (OT-2 or Flex), driven by an injected clock.

    ``analysis_delay_s`` is how long (clock seconds) a new analysis stays ``pending``;
    ``time_scale`` multiplies every simulated duration (commands, finishing, stopping);
    ``finishing_s``/``stop_s`` are the robot seconds of the post-run home/drop-tip phase after
    a natural end or failure / after a stop. ``action_log``: see :class:`ActionLog`.
    ``background_analysis=True`` answers an upload at once and analyses on a worker thread
    (real-time use); the default analyses during the upload so virtual-time tests are
    deterministic. ``analysis_overlap=True`` (dry runs in virtual time) also answers at once,
    but judges an analysis pending by the clock alone (``analysis_delay_s``) and, when a reply
    needs its result, waits for it: as deterministic as the default, while the analysis
    overlaps with whatever the client does until then (a protocol uploaded ahead of its job,
    say). Like robot-server, it keeps at most ``maximum_runs`` runs and
    ``maximum_unused_protocols`` protocols no run links to, deleting the oldest to make room
    for a new one (robot-server's defaults: 20 and 5). ``analysis`` is the service that reads
    and analyses protocols (default: the program's, :func:`default_analysis`).
    ``instruments``: the pipette on each mount, e.g. ``{"left": "p20_single_gen2", "right":
    "p1000_single_gen2"}`` (None: what labctl's protocols load, see
    :mod:`~labctl.simulators.opentrons_instruments`); a run that loads a pipette they do not
    serve fails at that ``loadPipette`` as robot-server's does.
    """

    def __init__(
        self,
        clock: Clock,
        robot: RobotName = "OT-2",
        *,
        analysis_delay_s: float = 0.0,
        faults: Faults | Mapping[str, Any] | None = None,
        action_log: ActionLogTarget = None,
        time_scale: float = 1.0,
        finishing_s: float = 5.0,
        stop_s: float = 5.0,
        command_durations_s: Mapping[str, float] | None = None,
        background_analysis: bool = False,
        analysis_overlap: bool = False,
        name: str | None = None,
        maximum_runs: int = 20,
        maximum_unused_protocols: int = 5,
        analysis: AnalysisService | None = None,
        instruments: InstrumentConfig | None = None,
    ) -> None:
        if robot not in ROBOT_TYPES:
            raise ValueError(f"robot must be 'OT-2' or 'Flex', not {robot!r}")
        if time_scale < 0 or analysis_delay_s < 0:
            raise ValueError("time_scale and analysis_delay_s must not be negative")
        if maximum_runs < 1 or maximum_unused_protocols < 1:
            raise ValueError("maximum_runs and maximum_unused_protocols must be at least 1")
        self.clock = clock
        self.robot: RobotName = robot
        self.robot_type = ROBOT_TYPES[robot]
        self.instruments = attach(robot, instruments)  # mount -> pipette, fixed for life
        self.analysis_delay_s = analysis_delay_s
        self.time_scale = time_scale
        self.finishing_s = finishing_s
        self.stop_s = stop_s
        self.durations_s = {**COMMAND_DURATIONS_S, **(command_durations_s or {})}
        self.name = name or ("opentrons-dev" if robot == "OT-2" else "opentrons-dev-flex")
        self._faults = checked_faults(robot, faults)
        self.log = ActionLog(action_log)
        self._lock = threading.RLock()
        self.analysis = analysis if analysis is not None else default_analysis()
        self.protocols = ProtocolStore(
            self.analysis,
            analysis_delay_s=analysis_delay_s,
            background_analysis=background_analysis,
            analysis_overlap=analysis_overlap,
            maximum_unused=maximum_unused_protocols,
        )
        self.runs = RunStore(maximum_runs)
        self._runs_created = 0  # ever, for faults on the n-th run (old runs are deleted)
        # run number (1-based, in creation order) -> command index at which it fails
        self.failing_runs: dict[int, int] = {}
        self._armed_by_scenario = False
        self._changed_at: datetime | None = None  # last request or fault change that may act
        self._engine = RunEngine(
            robot,
            time_scale=time_scale,
            finishing_s=finishing_s,
            stop_s=stop_s,
            durations_s=self.durations_s,
            faults=lambda: self._faults,
            emit=self.log.emit,
        )

    # ---- faults and inspection --------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(
        self, faults: Faults | Mapping[str, Any] | None = None, **changes: Any
    ) -> Faults:
        """Replace the faults (``faults``) and/or change some fields (``changes``) now.

        The current run is first brought up to ``clock.now()`` so a door opening or an estop
        takes effect at this moment, not retroactively. Returns the new faults.
        """
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            base = checked_faults(self.robot, faults) if faults is not None else self._faults
            new = checked_faults(self.robot, dataclasses.replace(base, **changes))
            old, self._faults = self._faults, new
            self._changed_at = now
            run = self.runs.current()
            if run is not None:
                if new.door_open != old.door_open:
                    self._engine.door_changed(run, new.door_open, now)
                if new.estop == "engaged" and old.estop != "engaged":
                    self._engine.estop_engaged(run, now)
            return new

    def sync(self) -> None:
        """Bring the current run up to ``clock.now()`` (normally every request does this)."""
        with self._lock:
            self._sync_locked(self.clock.now())

    def _sync_locked(self, now: datetime) -> None:
        run = self.runs.current()
        if run is not None:
            self._engine.advance(run, now)

    def action_entries(self) -> list[dict[str, Any]]:
        """Every action-log entry so far (after :meth:`sync`), oldest first."""
        self.sync()
        return self.log.entries()

    def note_request(self, method: str) -> None:
        """A request arrived: one that may change something counts for :meth:`quiet_since`."""
        if method not in ("GET", "HEAD"):
            with self._lock:
                self._changed_at = self.clock.now()

    def quiet_since(self, since: datetime) -> bool:
        """Whether /health and the runs can only answer as they did at ``since``: no run
        under way, and no request but reads nor fault change since then (virtual-time
        dry runs use it to skip alarm checks; see labctl.devices.QuietWatch)."""
        with self._lock:
            # As of the last request: a run that has ended since only makes this answer
            # "not quiet" once more (the next request brings it up to date).
            run = self.runs.current()
            if run is not None and run.status not in TERMINAL_STATUSES:
                return False
            return self._changed_at is None or self._changed_at < since

    def next_change(self) -> datetime | None:
        """Now while a run is under way (it changes as it goes), else None: without
        requests or fault changes the robot stays as it is."""
        with self._lock:
            run = self.runs.current()  # as of the last request (see quiet_since)
            under_way = run is not None and run.status not in TERMINAL_STATUSES
            return self.clock.now() if under_way else None

    def run_status(self, run_id: str) -> str:
        """The run's status now (for tests and the GUI's dry-run view)."""
        with self._lock:
            self._sync_locked(self.clock.now())
            return self.runs.by_id[run_id].status

    # ---- protocols ---------------------------------------------------------------------------

    def upload(
        self, files: Files, values: Mapping[str, Any], *, key: str | None, kind: str
    ) -> Upload:
        """``POST /protocols``: store new files (and analyse them with ``values``), or answer
        with the stored protocol of the same files (analysed again if ``values`` differ from
        its last analysis')."""
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            existing = self.protocols.with_files(files)
            if existing is not None:
                last = existing.analyses[-1]
                if not last.done(now):
                    raise Refusal(Refused.ANALYSIS_PENDING, last.id)
                if rtp_values_match(last.future.result().run_time_parameters, values):
                    self.log.emit("protocol_upload", now, **existing.upload_entry(files, 200))
                    return Upload(False, {"data": existing.json(now)})
        if existing is not None:
            # The same files with other parameter values: robot-server analyses them again.
            analysis = self._start_analysis(existing.files, values)
            with self._lock:
                now = self.clock.now()
                self._sync_locked(now)
                existing.analyses.append(analysis)
                self.log.emit("protocol_upload", now, **existing.upload_entry(files, 200))
                return Upload(False, {"data": existing.json(now, just_started=True)})
        info = self.protocols.read(files)  # outside the lock: may wait for its process
        if info.robot_type != self.robot_type:
            raise Refusal(Refused.ROBOT_TYPE_MISMATCH, info.robot_type)
        analysis = self._start_analysis(files, values)
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            protocol = ProtocolRecord(new_id(), now, info, list(files), key, kind, [analysis])
            self.protocols.add(protocol, self.runs.protocol_ids())
            self.log.emit("protocol_upload", now, **protocol.upload_entry(files, 201))
            return Upload(True, {"data": protocol.json(now, just_started=True)})

    def _start_analysis(self, files: Files, values: Mapping[str, Any]) -> AnalysisRecord:
        """Start analysing (see ProtocolStore.analyse). Call without the lock."""
        future = self.protocols.analyse(files, values)
        with self._lock:
            return self.protocols.record(future, self.clock.now(), self._faults)

    def list_protocols(self) -> dict[str, Any]:
        """``GET /protocols``."""
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            return self.protocols.list_body(now)

    def protocol(self, protocol_id: str) -> dict[str, Any]:
        """``GET /protocols/{id}``, with links to the runs of the protocol."""
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            protocol = self.protocols.get(protocol_id)
            runs = [r for r in self.runs.by_id.values() if r.protocol_id == protocol_id]
            links = {"referencingRuns": [{"id": r.id, "href": f"/runs/{r.id}"} for r in runs]}
            return {"data": protocol.json(now), "links": links}

    def delete_protocol(self, protocol_id: str) -> None:
        """``DELETE /protocols/{id}`` (refused while a run links to it)."""
        with self._lock:
            self.protocols.delete(protocol_id, self.runs.protocol_ids())

    def analyses(self, protocol_id: str) -> dict[str, Any]:
        """``GET /protocols/{id}/analyses``."""
        with self._lock:
            return self.protocols.analyses_body(protocol_id, self.clock.now())

    def analysis_of(self, protocol_id: str, analysis_id: str) -> dict[str, Any]:
        """``GET /protocols/{id}/analyses/{analysisId}``."""
        with self._lock:
            return self.protocols.analysis_body(protocol_id, analysis_id, self.clock.now())

    # ---- runs --------------------------------------------------------------------------------

    def check_estop(self) -> None:
        """Refuse (ESTOP) while a Flex's estop is not attached, engaged or not acknowledged."""
        with self._lock:
            state = self._faults.estop
            if self.robot == "Flex" and state is not None:
                raise Refusal(Refused.ESTOP, state)

    def create_run(
        self,
        protocol_id: str | None,
        values: Mapping[str, Any],
        labware_offsets: Sequence[object],
    ) -> dict[str, Any]:
        """``POST /runs``: a new current run of the protocol with run-time parameter
        ``values`` (None: a run without a protocol)."""
        analysis: ProtocolAnalysis | None = None
        files: Files = []
        if protocol_id is not None:
            with self._lock:
                protocol = self.protocols.get(protocol_id)
                future = protocol.analyses[-1].future
                files = list(protocol.files)
            # Outside the lock: a background analysis may still be running.
            analysis = future.result()
            if not rtp_values_match(analysis.run_time_parameters, values):
                # The run executes the protocol with its own values (robot-server loads it
                # with them when the run is created).
                analysis = self.analysis.submit(files, values).result()
            setup = next(
                (e for e in analysis.errors if e.get("id") == "analysis-setup-error"), None
            )
            if setup is not None:
                raise Refusal(Refused.PARAMETER_VALUES, str(setup.get("detail")))
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            if protocol_id is not None:
                self.protocols.get(protocol_id)
            current = self.runs.current()
            if current is not None and not current.okay_to_clear:
                raise Refusal(Refused.RUN_ALREADY_ACTIVE)
            if current is not None:
                self._release(current, now)
            self._arm_scenario_faults()
            run = new_run(protocol_id, analysis, labware_offsets, now)
            # The analysis loads virtual pipettes; the run loads the robot's own.
            failure = load_failure(run.templates, self.instruments, files)
            if failure is not None:
                fail_at_load(run, failure)
            run.door_blocking = self.robot == "Flex" and self._faults.door_open
            self.runs.add(run)
            extra = {"runTimeParameterValues": dict(values)} if values else {}
            self.log.emit("run_created", now, runId=run.id, protocolId=protocol_id, **extra)
            return {"data": run_json(run)}

    def _arm_scenario_faults(self) -> None:
        """A scenario may fail one particular run (the n-th created, from 1): arm or disarm
        ``fail_at_command`` for the run being created. Call with the lock."""
        self._runs_created += 1
        n = self._runs_created
        if n in self.failing_runs:
            self._faults = dataclasses.replace(self._faults, fail_at_command=self.failing_runs[n])
        elif self._armed_by_scenario:
            self._faults = dataclasses.replace(self._faults, fail_at_command=None)
        self._armed_by_scenario = n in self.failing_runs

    def _release(self, run: Run, now: datetime) -> None:
        """Make ``run`` not current; an idle run is stopped (as the robot does)."""
        if run.status == "idle":
            run.result = RunResult.STOPPED
            run.completed_at = now
            self.log.emit("run_finished", now, runId=run.id, status=run.status)
        run.current = False
        if self.runs.current_id == run.id:
            self.runs.current_id = None

    def _run(self, run_id: str, now: datetime) -> Run:
        """The run, with the current run brought up to ``now``. Call with the lock."""
        self._sync_locked(now)
        return self.runs.get(run_id)

    def list_runs(self, page_length: int | None) -> dict[str, Any]:
        """``GET /runs``: the last ``page_length`` runs (None: all), oldest first."""
        with self._lock:
            self._sync_locked(self.clock.now())
            return runs_page(list(self.runs.by_id.values()), self.runs.current_id, page_length)

    def run(self, run_id: str) -> dict[str, Any]:
        """``GET /runs/{id}``."""
        with self._lock:
            return {"data": run_json(self._run(run_id, self.clock.now()))}

    def patch_run(self, run_id: str, current: bool | None) -> dict[str, Any]:
        """``PATCH /runs/{id}``: ``current=False`` makes the run not current (refused while it
        is active); None changes nothing. Like robot-server, any run but the current one,
        one that does not exist too, is refused as not current (409, not 404)."""
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            if self.runs.current_id != run_id:
                raise Refusal(Refused.UPDATE_NOT_CURRENT, run_id)
            run = self.runs.get(run_id)
            if current is False:
                if not run.okay_to_clear:
                    raise Refusal(Refused.UPDATE_NOT_IDLE)
                self._release(run, now)
            return {"data": run_json(run)}

    def delete_run(self, run_id: str) -> None:
        """``DELETE /runs/{id}`` (refused while it is the current, active run)."""
        with self._lock:
            now = self.clock.now()
            run = self._run(run_id, now)
            if run.current:
                if not run.okay_to_clear:
                    raise Refusal(Refused.RUN_NOT_IDLE)
                self._release(run, now)
            del self.runs.by_id[run_id]

    def act(self, run_id: str, action_type: str) -> dict[str, Any]:
        """``POST /runs/{id}/actions``: apply a run action now (ActionNotAllowed if the
        engine refuses it); the action as recorded."""
        with self._lock:
            now = self.clock.now()
            run = self._run(run_id, now)
            if not run.current:
                raise Refusal(Refused.RUN_NOT_CURRENT, run_id)
            self.check_estop()
            self._engine.apply_action(run, action_type, now)
            action = {"id": new_id(), "createdAt": iso(now), "actionType": action_type}
            run.actions.append(action)
            self.log.emit(
                "run_action", now, runId=run.id, actionType=action_type, status=run.status
            )
            self._sync_locked(now)  # e.g. a zero-length command finishing at once
            return {"data": action}

    def commands(self, run_id: str, cursor: int | None, length: int) -> dict[str, Any]:
        """``GET /runs/{id}/commands``."""
        with self._lock:
            return commands_page(self._run(run_id, self.clock.now()), cursor, length)

    def command(self, run_id: str, command_id: str) -> dict[str, Any]:
        """``GET /runs/{id}/commands/{commandId}``."""
        with self._lock:
            run = self._run(run_id, self.clock.now())
            cmd = next((c for c in run.commands if c.id == command_id), None)
            if cmd is None:
                raise Refusal(Refused.COMMAND_NOT_FOUND, command_id)
            return {"data": command_full(cmd)}

    def command_errors(self, run_id: str, cursor: int, length: int) -> dict[str, Any]:
        """``GET /runs/{id}/commandErrors``."""
        with self._lock:
            return command_errors_page(self._run(run_id, self.clock.now()), cursor, length)
