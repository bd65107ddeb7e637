"""The simulated robot's analysis service: reading and analysing protocols with opentrons.

Protocols are read and analysed with the installed ``opentrons`` package (8.8.2), the same code
path ``python -m opentrons.cli analyze`` uses, so analyses hold real command objects. opentrons
runs in child processes forked from a fork server that imports it once (~2 s): one for analyses
a request waits for, two for analyses made ahead of need (:meth:`AnalysisService.speculate`),
one for reading uploaded files, so the controller and the other simulators keep this process to
themselves. Analyses are cached per content for as long as the service lives (a small protocol
analyses in ~0.1 s).

A controller that passes only the first unused tip as a run-time parameter makes every job's
file the same, so the service does not run opentrons per value: once real analyses of a file
have shown that a parameter only moves one pipette's picks along its tip racks, analyses for new
values are derived from them (:class:`~labctl.simulators.opentrons_tip_model.TipModel`);
anything not shown so is analysed by opentrons.

One service per program is the rule (:func:`default_analysis`): its caches then serve every
simulated robot, and its processes are started once. A program that starts one must guard its
main module (``if __name__ == "__main__":``), as the analysis processes may re-import it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from labctl.errors import InputFileError
from labctl.simulators.opentrons_analysis_child import (
    child_analyse,
    child_init,
    child_read,
    child_warm,
    crashed,
)
from labctl.simulators.opentrons_analysis_data import (
    Files,
    ProtocolAnalysis,
    ProtocolSourceInfo,
    content_hash,
    source_key,
    values_key,
)
from labctl.simulators.opentrons_tip_model import TipModel

__all__ = [
    "AnalysisService",
    "analyse_protocol",
    "close_default_analysis",
    "default_analysis",
    "read_protocol",
    "speculating",
    "start_fork_server",
    "warm_up",
]

_log = logging.getLogger(__name__)

# The child processes, by the work they do: "now" for analyses a request waits for, "ahead"
# (at a lower priority) for analyses made ahead of need, and "read" for reading uploaded
# files, which an upload's answer needs at once and must not wait behind an analysis.
_KINDS = ("now", "ahead", "read")
# Analyses ahead run in two processes: a day of feeds brings new files in pairs (one per
# deck position), and the next uploads of each wait for its probe (see _other_rack).
_AHEAD_PROCESSES = 2
_AHEAD_NICENESS = 10  # added to the "ahead" processes' nice value: ~1/10 of a shared core
# What the fork server imports once, before it forks the analysis processes.
_PRELOAD = ["labctl.simulators.analysis_server"]  # runs prepare_fork_server()
_RACK_TIPS = 96  # tips in an Opentrons tip rack (all of them, OT-2 and Flex)
_AHEAD_WAIT_S = 5.0  # real seconds a request waits for analyses ahead of the same files


def _mp_context() -> multiprocessing.context.BaseContext:
    """How analysis processes start: forked from a fork server that has imported opentrons
    once (~2 s), so a second process costs a fork, not a second import. Never forked from
    this process, which has threads (servers, links) a fork would copy mid-flight. Where
    there is no fork server (Windows), spawned, each importing opentrons itself."""
    # opentrons writes its config on import: never into ~/.opentrons from here.
    os.environ.setdefault("OT_API_CONFIG_DIR", tempfile.mkdtemp(prefix="labctl-ot-config-"))
    try:
        context = multiprocessing.get_context("forkserver")
    except ValueError:  # pragma: no cover - no fork server on this platform
        return multiprocessing.get_context("spawn")
    # Only heeded before the fork server starts (the first analysis process of a program).
    context.set_forkserver_preload(_PRELOAD)
    return context


def _workers(kind: str) -> int:
    """How many processes the ``kind`` pool has."""
    return _AHEAD_PROCESSES if kind == "ahead" else 1


def _other_rack(first_tip: int) -> int:
    """A first new file's probe of a tip parameter: the first tip of the second rack, or
    of the first if ``first_tip`` is past it. Moving it by one would show what the
    parameter does but no other rack, which then needs a probe of its own. Out of the
    parameter's range (one rack), or not a tip at all, the analysis fails and the probe
    moved by one follows."""
    return _RACK_TIPS if first_tip < _RACK_TIPS else 0


class _ProcessPools:
    """One pool of child processes per kind (:data:`_KINDS`), each started on first use and
    replaced when its process has died. Thread-safe; closed for good by :meth:`close`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.executors: dict[str, ProcessPoolExecutor] = {}
        self._closed = False

    def get(self, kind: str) -> ProcessPoolExecutor:
        """The pool for ``kind``, started if it is not running."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the analysis service is closed")
            pool = self.executors.get(kind)
            if pool is None:
                pool = ProcessPoolExecutor(
                    max_workers=_workers(kind),
                    mp_context=_mp_context(),
                    initializer=child_init,
                    # The process ends with this one, even killed (SIGKILL).
                    initargs=(_AHEAD_NICENESS if kind == "ahead" else 0, os.getpid()),
                )
                self.executors[kind] = pool
            return pool

    def call(self, kind: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a ``kind`` process, waited for; a process that died is replaced
        once (BrokenProcessPool if the new one dies too)."""
        for attempt in (1, 2):
            try:
                return self.get(kind).submit(fn, *args).result()
            except BrokenProcessPool:
                with self._lock:
                    self.executors.pop(kind, None)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def warm(self) -> list[Future[bool]]:
        """Start every process and have each warm itself (see ``child_warm``)."""
        return [self.get(kind).submit(child_warm) for kind in _KINDS for _ in range(_workers(kind))]

    def close(self) -> None:
        """End every process (the work under way finishes; queued work is dropped)."""
        with self._lock:
            self._closed = True
            pools, self.executors = list(self.executors.values()), {}
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


def _stop() -> None:
    """Queued for each thread of an _AheadQueue that is closing: the thread ends."""


class _AheadQueue:
    """Analyses ahead of need, waiting for the "ahead" processes, most urgent first.

    ``queue`` holds (priority, order, future, work): priority 0 is what the next upload of new
    files will need, 1 the racks further on. ``in_flight`` maps "source|values" to the future
    of each analysis queued or under way; it is guarded by ``lock`` (the service's, which also
    guards the caches, so that "cached or queued?" is one decision). One thread per "ahead"
    process feeds them, started on first use.
    """

    def __init__(self, lock: threading.Lock, workers: int) -> None:
        self.lock = lock
        self.workers = workers
        self.in_flight: dict[str, Future[None]] = {}
        self.queue: queue.PriorityQueue[tuple[int, int, Future[None], Callable[[], None]]] = (
            queue.PriorityQueue()
        )
        self.order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def put(self, key: str, work: Callable[[], None], *, urgent: bool) -> None:
        """Queue ``work`` as the analysis ``key``. Call with ``lock`` held, for a new key."""

        def run() -> None:
            try:
                work()
            finally:
                with self.lock:
                    self.in_flight.pop(key, None)

        future: Future[None] = Future()
        self.in_flight[key] = future
        self.queue.put((0 if urgent else 1, next(self.order), future, run))

    def ensure_workers(self) -> None:
        """Start the threads that feed the "ahead" processes, once."""
        with self.lock:
            while len(self._threads) < self.workers and not self._closed:
                thread = threading.Thread(target=self._feed, name="ot-ahead", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _feed(self) -> None:
        """Hand queued analyses to an "ahead" process, one at a time, until closed."""
        while True:
            _, _, future, work = self.queue.get()
            if work is _stop:
                return
            if not future.set_running_or_notify_cancel():
                continue  # a request needed the answer first and analysed it itself
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(exc)
            else:
                future.set_result(None)

    def cancel_queued(self) -> None:
        """Drop the analyses still queued (those under way finish)."""
        while True:
            try:
                _, _, future, _ = self.queue.get_nowait()
            except queue.Empty:
                break
            with self.lock:
                for key in [k for k, f in self.in_flight.items() if f is future]:
                    del self.in_flight[key]
            future.cancel()

    def wait_for(self, prefix: str, timeout_s: float) -> bool:
        """Wait for the analyses under way whose key starts with ``prefix`` (at most
        ``timeout_s`` real seconds each) and drop the queued ones: a request that needs an
        analysis now makes its own rather than wait behind others'. False if none was under
        way."""
        waited = False
        with self.lock:
            mine = [(k, f) for k, f in self.in_flight.items() if k.startswith(prefix)]
            for key, future in mine:
                if future.cancel():
                    self.in_flight.pop(key, None)
        for _, future in mine:
            if future.cancelled():
                continue
            waited = True
            try:
                future.result(timeout=timeout_s)
            except Exception:  # noqa: BLE001 - a failed or slow probe only means no head start
                pass
        return waited

    def close(self, timeout_s: float = 60.0) -> None:
        """Drop what is queued, let each thread finish its analysis, and end the threads."""
        with self.lock:
            self._closed = True
            threads = list(self._threads)
        self.cancel_queued()
        for _ in threads:
            self.queue.put((-1, next(self.order), Future(), _stop))
        for thread in threads:
            thread.join(timeout_s)


class AnalysisService:
    """Reads and analyses protocols as a robot does, with opentrons in child processes, and
    keeps what it learnt (reads, analyses, tip models) per file contents while it lives.

    Life cycle: a new service runs nothing. :meth:`start_fork_server` (optional, first thing
    in a program) starts importing opentrons for the processes; :meth:`start` starts and
    warms them in the background (:meth:`warm_up` waits for that). :meth:`read`,
    :meth:`analyse` and :meth:`submit` start any process they need that is not running yet.
    :meth:`close` ends the processes and threads; a closed service refuses work
    (RuntimeError). Thread-safe: one lock guards the caches, held only briefly; opentrons
    runs outside it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools = _ProcessPools()
        self._ahead = _AheadQueue(self._lock, _AHEAD_PROCESSES)
        self._reads: dict[str, ProtocolSourceInfo | str] = {}  # source key -> info or detail
        self._analyses: dict[str, ProtocolAnalysis] = {}  # "files|values" (see analyse)
        self._tip_models: dict[str, TipModel] = {}  # source key -> what its parameters do
        self._under_way: collections.Counter[str] = collections.Counter()  # source key -> n
        self._waiters: ThreadPoolExecutor | None = None
        self._speculating = False
        self._closed = False

    # ---- life cycle ------------------------------------------------------------------------

    def start_fork_server(self) -> None:
        """Start importing opentrons for the analysis processes now, in the background,
        without starting them: a program that will need analyses calls this first thing, so
        the ~2 s import overlaps its own start-up. Nothing waits for it, and a program that
        ends before needing an analysis does not wait at exit either. (The fork server is
        multiprocessing's, one per program; it ends with the program.)"""
        context = _mp_context()
        if context.get_start_method() == "forkserver":
            multiprocessing.forkserver.ensure_running()

    def start(self) -> AnalysisService:
        """Start the analysis processes without waiting for them: opentrons is imported and
        warmed on a small protocol (~2 s, once, in the fork server; in each process where
        there is none), so the first real analysis is as quick as the next ones. Returns at
        once (starting a process waits until the fork server is ready: a thread does that)."""
        self._check_open()

        def warm() -> None:
            try:
                self._pools.warm()
            except RuntimeError:  # closed meanwhile: nothing left to warm
                pass

        threading.Thread(target=warm, name="ot-analysers-start", daemon=True).start()
        return self

    def warm_up(self) -> None:
        """Start the analysis processes and warm them (see :meth:`start`), and wait until
        they are. Sets ``OT_API_CONFIG_DIR`` to a fresh temporary directory if unset, so
        opentrons writes its config there and not into ``~/.opentrons``."""
        self._check_open()
        for future in self._pools.warm():
            future.result()

    def close(self) -> None:
        """Drop the analyses queued ahead, let those under way finish, and end the threads
        and processes. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiters, self._waiters = self._waiters, None
        self._ahead.close()
        if waiters is not None:
            waiters.shutdown(wait=True, cancel_futures=True)
        self._pools.close()

    def __enter__(self) -> AnalysisService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the analysis service is closed")

    # ---- analyses ahead of need ------------------------------------------------------------

    @property
    def speculating(self) -> bool:
        """Whether analyses are made ahead of need (see :meth:`speculate`)."""
        return self._speculating

    def speculate(self, on: bool = True) -> None:
        """Analyse ahead of need: after the first analysis of new files, probe (in another
        process) the parameter values that teach the tip model what each parameter does and
        where every tip rack sits, so later values are derived instead of analysed while a
        request waits. What is served does not change, only how soon; off by default, so
        tests count exactly the analyses they cause. Turning it off drops the analyses ahead
        still queued (those under way finish)."""
        self._speculating = on
        if not on:
            self._ahead.cancel_queued()

    # ---- reading and analysing -------------------------------------------------------------

    def read(self, files: Files) -> ProtocolSourceInfo:
        """Read a protocol's files as robot-server does (cached per content, whatever the
        names). Raises InputFileError with robot-server's ``ProtocolFilesInvalid`` detail if
        the files are not a valid protocol (syntax error, no apiLevel, two main files, ...)."""
        self._check_open()
        key = source_key(files)
        with self._lock:
            cached = self._reads.get(key)
        if cached is None:
            cached = self._pools.call("read", child_read, list(files))
            with self._lock:
                self._reads[key] = cached
        if isinstance(cached, str):
            raise InputFileError(cached)
        named = content_hash(files)
        if cached.content_hash == named:
            return cached
        # The same contents under other names (jobs name their files): each read file's name
        # is the new one with its contents; the reader's order and roles stay.
        first: dict[str, list[str]] = {}
        for name, data in files:
            first.setdefault(hashlib.sha256(data).hexdigest(), []).append(name)
        return dataclasses.replace(
            cached,
            content_hash=named,
            files=tuple((first[sha].pop(0), role) for sha, role in cached.file_roles),
        )

    def submit(self, files: Files, values: Mapping[str, Any]) -> Future[ProtocolAnalysis]:
        """:meth:`analyse` on a thread of the service: for a caller that must not wait."""
        self._check_open()
        with self._lock:
            if self._waiters is None:
                # Several: an analysis derived from the tip model must not queue behind one
                # waiting for opentrons (those queue for the "now" process anyway).
                self._waiters = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ot-analysis")
            waiters = self._waiters
        return waiters.submit(self.analyse, list(files), dict(values))

    def analyse(
        self,
        files: Files,
        run_time_parameter_values: Mapping[str, Any] | None = None,
        *,
        derive: bool = True,
    ) -> ProtocolAnalysis:
        """Analyse a protocol with opentrons, as a robot does, with these run-time parameter
        values (None or ``{}``: every parameter at its default).

        An exception in the protocol gives ``result == "not-ok"`` and ``errors[0]`` of type
        ``ExceptionInProtocolError``, never a raised exception; so do invalid parameter values
        (``errors[0].id == "analysis-setup-error"``). Raises InputFileError if the files cannot
        be read at all.

        Cached per file contents and values: a clean analysis is shared by identical files
        uploaded under different names (jobs name their files), one with errors is not (its
        tracebacks name the file). With ``derive`` (the default), values that differ from an
        analysed set only in parameters seen to do nothing but move the pipettes' first tip
        give an analysis derived from the analysed one (see TipModel) instead of a new
        opentrons run; ``derive=False`` always gives opentrons' own analysis.
        """
        self._check_open()
        asked = dict(run_time_parameter_values or {})
        source = source_key(files)
        named = content_hash(files)
        # What the analyses ahead are finding out may be just what these values need: wait
        # for them once (they are under way) rather than start one more analysis.
        for may_wait in (True, False):
            with self._lock:
                model = self._tip_models.get(source)
                values = model.normalise(asked) if model is not None else dict(asked)
                if model is not None:
                    model.asked.update(values)
                cached = self._cached(source, named, values)
                if cached is not None:
                    return cached
                if derive and model is not None:
                    derived, unmapped = model.derive(values)
                    if derived is not None:
                        return derived
                else:
                    unmapped = ()
            if not (may_wait and derive and self._ahead.wait_for(f"{source}|", _AHEAD_WAIT_S)):
                break
        if model is None and self._speculating:
            # New files: while the values asked for are analysed, analyse each whole-number
            # parameter moved into another tip rack in another process; together they show
            # what the parameter does and where a second rack sits, so the next values (the
            # next plates' tips, in either rack) can be derived.
            for name, value in values.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    probe = {**values, name: _other_rack(value)}
                    self._submit_ahead(files, probe, source, named, urgent=True)
        analysis = self._analyse_and_learn(files, values, source, named)
        # A parameter whose effect is still unknown (it changed together with another one by
        # the same amount, say) is moved alone once, so that later values can be derived.
        for name in unmapped:
            with self._lock:
                model = self._tip_models.get(source)
                alone = model.probe_values(name) if model is not None else None
            if alone is not None:
                with self._lock:
                    seen = self._cached(source, named, alone) is not None
                if not seen:
                    self._analyse_and_learn(files, alone, source, named)
                if model is not None and analysis.result == "ok" and not analysis.errors:
                    with self._lock:
                        model.learn(analysis)  # what the probe showed may settle the others
        return analysis

    def _cached(
        self, source: str, named: str, values: Mapping[str, Any]
    ) -> ProtocolAnalysis | None:
        """The cached analysis of these contents (clean) or files (with errors) and values.
        Call with the lock held."""
        vkey = values_key(values)
        return self._analyses.get(f"{source}|{vkey}") or self._analyses.get(f"{named}|{vkey}")

    def _analyse_and_learn(
        self,
        files: Files,
        values: Mapping[str, Any],
        source: str,
        named: str,
        *,
        pool: str = "now",
    ) -> ProtocolAnalysis:
        """Run opentrons on the files with ``values``; cache the analysis and learn from it."""
        with self._lock:
            self._under_way[source] += 1
        try:
            analysis = self._analyse_locked_out(files, values, pool=pool)
        finally:
            with self._lock:
                self._under_way[source] -= 1
                if not self._under_way[source]:
                    del self._under_way[source]
        clean = analysis.result == "ok" and not analysis.errors
        with self._lock:
            key = f"{source if clean else named}|{values_key(values)}"
            self._analyses.setdefault(key, analysis)
            if clean:
                model = self._tip_models.get(source)
                if model is None:
                    self._tip_models[source] = TipModel(analysis)
                else:
                    model.learn(analysis)
        if clean or pool == "ahead":
            # (A failed probe ahead taught nothing: what else to probe is asked again.)
            self._probe_ahead(files, source, named)
        return analysis

    def _analyse_locked_out(
        self, files: Files, values: Mapping[str, Any], *, pool: str = "now"
    ) -> ProtocolAnalysis:
        """One opentrons analysis in a ``pool`` process, waited for (outside the lock)."""
        info = self.read(files)  # raises on invalid files, and fills the read cache
        try:
            return self._pools.call(pool, child_analyse, list(files), dict(values), info.robot_type)
        except BrokenProcessPool as exc:  # the child died twice: report it as the robot would
            _log.error("analysis of %s: the analysis process died (%s)", [n for n, _ in files], exc)
            return crashed(info.robot_type, f"analysis process died: {exc}")

    def _probe_ahead(self, files: Files, source: str, named: str) -> None:
        """While speculating: analyse, in an "ahead" process, the next values the tip model
        of these files would learn from; each result is cached and learned from, and leads to
        the next (a rack not shown yet, a parameter not mapped yet)."""
        if not self._speculating:
            return
        with self._lock:
            model = self._tip_models.get(source)
            # While another analysis of these files is under way (the one a request waits
            # for, when the probe moved by one finished first and became the reference), it
            # will map the parameters itself: a second probe moved by one would only repeat it.
            busy = self._under_way.get(source, 0) > 0
            probes = model.next_probes(mapping=not busy) if model is not None else []
            probes = [p for p in probes if self._cached(source, named, p) is None]
        for values in probes:
            self._submit_ahead(files, values, source, named)

    def _submit_ahead(
        self,
        files: Files,
        values: Mapping[str, Any],
        source: str,
        named: str,
        *,
        urgent: bool = False,
    ) -> None:
        """Queue one analysis ahead of need, unless it is cached or already queued."""
        key = f"{source}|{values_key(values)}"
        with self._lock:
            if self._closed or key in self._ahead.in_flight or key in self._analyses:
                return

            def work() -> None:
                try:
                    self._analyse_and_learn(files, values, source, named, pool="ahead")
                except Exception:  # noqa: BLE001 - ahead of need: a failure only costs time
                    _log.debug(
                        "analysis ahead of %s with %s failed",
                        [n for n, _ in files],
                        values,
                        exc_info=True,
                    )

            self._ahead.put(key, work, urgent=urgent)
        self._ahead.ensure_workers()


# --------------------------------------------------------------------------------------------
# The process-wide service
# --------------------------------------------------------------------------------------------

_default_lock = threading.Lock()
_default: AnalysisService | None = None


def default_analysis() -> AnalysisService:
    """The program's service, created (not started) on first use; every simulated robot
    uses it unless given another. :func:`close_default_analysis` ends it."""
    global _default
    with _default_lock:
        if _default is None:
            _default = AnalysisService()
        return _default


def close_default_analysis() -> None:
    """Close the program's service, if there is one; the next use makes a new one."""
    global _default
    with _default_lock:
        service, _default = _default, None
    if service is not None:
        service.close()


def start_fork_server() -> None:
    """The ``start_robot_analysis`` plugin that ``labctl simulate`` calls first thing: see
    :meth:`AnalysisService.start_fork_server`."""
    default_analysis().start_fork_server()


def warm_up() -> None:
    """:meth:`AnalysisService.warm_up` of the program's service."""
    default_analysis().warm_up()


def speculating() -> bool:
    """Whether the program's service analyses ahead of need."""
    return default_analysis().speculating


def read_protocol(files: Files) -> ProtocolSourceInfo:
    """:meth:`AnalysisService.read` with the program's service."""
    return default_analysis().read(files)


def analyse_protocol(
    files: Files,
    run_time_parameter_values: Mapping[str, Any] | None = None,
    *,
    derive: bool = True,
) -> ProtocolAnalysis:
    """:meth:`AnalysisService.analyse` with the program's service."""
    return default_analysis().analyse(files, run_time_parameter_values, derive=derive)
