"""Simulated Opentrons robot-server (OT-2 or Flex) speaking the HTTP API of DEVICES.md section 1.

The simulator answers the way the recordings in shared/reference/opentrons-http/ do (robot-server
8.1, HTTP API 3/4): status codes, envelopes, camelCase keys, omitted ``None`` fields, 201 on
creation, error bodies ``{"errors": [{id, title, detail, errorCode}]}``, the legacy ``/health``
error shape, and the ``Opentrons-Version`` header being mandatory everywhere.

Protocols are read and analysed with the installed ``opentrons`` package (8.8.2), the same code
path ``python -m opentrons.cli analyze`` uses, so analyses hold real command objects. opentrons
runs in child processes forked from a fork server that imports it once (~2 s): one for analyses
a request waits for, two for analyses made ahead of need (:func:`speculate`), one for reading
uploaded files, so the controller and the other simulators keep this process to themselves.
Analyses are cached per content for the whole process (a small protocol analyses in ~0.1 s).

Run-time parameters (Protocol API 2.18+): values sent at upload (form field
``runTimeParameterValues``) are analysed with, and re-uploading the same files with other values
appends a new analysis, as robot-server does; values sent with ``POST /runs`` are the run's: it
echoes them in ``runTimeParameters`` and plays the protocol as opentrons runs it with them.
A controller that passes only the first unused tip as a parameter makes every job's file the
same, so the simulator does not run opentrons per value: once real analyses of a file have shown
that a parameter only moves one pipette's picks along its tip racks, analyses for new values
are derived from them (``_TipModel``); anything not shown so is analysed by opentrons.

Time: there are no background threads advancing state and nothing sleeps. Every request first
brings the current run up to ``clock.now()``: each analysed command takes an estimated duration
(robot seconds per ``commandType`` times ``time_scale``), commands start and finish one after
another, paused time does not count. With a :class:`~labctl.clock.VirtualClock` a test moves
the clock and the run progresses. Completed physical commands are written to the action log
exactly once, stamped with their simulated completion time; since the log is written lazily,
call :meth:`RobotSimulator.sync` (or :meth:`~RobotSimulator.action_entries`) before reading it
when no request has arrived since the clock moved.

Threading: the HTTP server runs in one daemon thread per connection (``ThreadingHTTPServer``);
all simulator state sits behind one lock. Analysis of a new protocol is handed to the analysis
process (serialised there: opentrons is not re-entrant); by default the upload waits for it, so
tests see deterministic results. What is served never depends on how far the analyses ahead
have got, only how soon it is served. A program that starts the simulator must guard its main
module (``if __name__ == "__main__":``), as the analysis processes re-import it.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import copy
import dataclasses
import email.parser
import email.policy
import enum
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
import queue
import re
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import parse_qs, urlsplit

from labctl.clock import Clock, RealClock
from labctl.errors import InputFileError

__all__ = [
    "COMMAND_DURATIONS_S",
    "PHYSICAL_COMMANDS",
    "Faults",
    "ProtocolAnalysis",
    "ProtocolSourceInfo",
    "RobotSimulator",
    "analyse_protocol",
    "main",
    "read_protocol",
    "speculate",
    "speculating",
    "start_analysers",
    "start_fork_server",
    "warm_up",
]

RobotName = Literal["OT-2", "Flex"]

#: robot-server's ``robot_model`` / ``robotType`` for each simulated robot.
ROBOT_TYPES: Mapping[str, str] = {"OT-2": "OT-2 Standard", "Flex": "OT-3 Standard"}
_USER_FACING = {"OT-2 Standard": ("OT-2", "an OT-2"), "OT-3 Standard": ("Flex", "a Flex")}

API_VERSION = 4  # robot_server/versioning.py
MIN_API_VERSION = 2
SOFTWARE_VERSION = "8.8.2"  # the opentrons package that analyses protocols here
MAX_PROTOCOL_API = (2, 27)  # opentrons 8.8.2 MAX_SUPPORTED_VERSION

#: Estimated duration of one command on a real robot, in seconds, before ``time_scale``.
#: ``waitForDuration`` uses its ``seconds`` parameter; unknown types take ``DEFAULT_DURATION_S``.
COMMAND_DURATIONS_S: Mapping[str, float] = {
    "home": 8.0,
    "comment": 0.05,
    "loadLabware": 0.1,
    "loadPipette": 0.1,
    "loadModule": 0.1,
    "loadLiquid": 0.1,
    "loadLid": 0.1,
    "loadLidStack": 0.1,
    "configureForVolume": 0.1,
    "configureNozzleLayout": 0.1,
    "setRailLights": 0.1,
    "pickUpTip": 5.0,
    "dropTip": 5.0,
    "dropTipInPlace": 3.0,
    "aspirate": 3.0,
    "aspirateInPlace": 2.0,
    "dispense": 3.0,
    "dispenseInPlace": 2.0,
    "blowout": 2.0,
    "blowOutInPlace": 1.0,
    "touchTip": 3.0,
    "airGapInPlace": 1.0,
    "prepareToAspirate": 1.0,
    "moveToWell": 2.0,
    "moveToCoordinates": 2.0,
    "moveRelative": 1.0,
    "moveToAddressableArea": 2.0,
    "moveToAddressableAreaForDropTip": 2.0,
    "moveLabware": 15.0,
    "liquidProbe": 5.0,
    "tryLiquidProbe": 5.0,
    "waitForResume": 0.0,
}
DEFAULT_DURATION_S = 1.0

#: Commands that physically touch liquid, tips or plates: each one that completes is logged.
PHYSICAL_COMMANDS = frozenset(
    {
        "aspirate",
        "aspirateInPlace",
        "dispense",
        "dispenseInPlace",
        "blowout",
        "blowOutInPlace",
        "airGapInPlace",
        "touchTip",
        "pickUpTip",
        "dropTip",
        "dropTipInPlace",
        "moveLabware",
        "liquidProbe",
        "tryLiquidProbe",
    }
)

# Recoverable ("defined") errors a Flex raises per command type: errorType, errorCode, detail.
_DEFINED_ERRORS: Mapping[str, tuple[str, str, str]] = {
    "pickUpTip": ("tipPhysicallyMissing", "3003", "No Tip Detected"),
    "aspirate": ("overpressure", "3006", "Pipette Overpressure"),
    "aspirateInPlace": ("overpressure", "3006", "Pipette Overpressure"),
    "dispense": ("overpressure", "3006", "Pipette Overpressure"),
    "dispenseInPlace": ("overpressure", "3006", "Pipette Overpressure"),
    "dropTip": ("tipPhysicallyAttached", "3004", "Tip Drop Failed"),
    "dropTipInPlace": ("tipPhysicallyAttached", "3004", "Tip Drop Failed"),
    "liquidProbe": ("liquidNotFound", "2017", "Liquid Not Found"),
}
_DEFAULT_DEFINED_ERROR = ("stallOrCollision", "2003", "Stall or Collision Detected")

_ACTION_TYPES = (
    "play",
    "pause",
    "stop",
    "resume-from-recovery",
    "resume-from-recovery-assuming-false-positive",
)
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TIME_KEYS = ("createdAt", "startedAt", "completedAt")

_log = logging.getLogger(__name__)


def _iso(dt: datetime) -> str:
    """robot-server's timestamp form: ``2026-11-26T20:07:27.407749+00:00``."""
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _new_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Faults:
    """Injected misbehaviour; change it at runtime with :meth:`RobotSimulator.set_faults`.

    - ``offline``: every connection is closed without a reply.
    - ``fail_at_command``: the run command with this 0-based index fails (undefined error
      ``fail_error_type``/``fail_error_code``/``fail_error_detail``) and the run fails.
    - ``awaiting_recovery_at_command`` (Flex): that command fails with a recoverable error and
      the run waits in ``awaiting-recovery`` for ``resume-from-recovery`` or ``stop``.
    - ``door_open`` (Flex): a running run becomes ``blocked-by-open-door``; ``play`` is refused
      while blocked. Closing the door leaves the run ``paused`` until ``play``.
    - ``estop`` (Flex): ``"not-attached"`` / ``"engaged"`` / ``"not-acknowledged"`` answer 403 on
      ``POST /runs`` and run actions; ``"engaged"`` also fails an active run at once.
    - ``analysis_extra_delay_s``: seconds added to the analysis time of new uploads (slow robot).
    - ``analysis_not_ok``: new analyses report ``result: "not-ok"`` with one injected error.
    """

    offline: bool = False
    fail_at_command: int | None = None
    fail_error_type: str = "TipNotAttachedError"
    fail_error_code: str = "3005"
    fail_error_detail: str = "Pipette should have a tip attached, but does not."
    awaiting_recovery_at_command: int | None = None
    door_open: bool = False
    estop: Literal["not-attached", "engaged", "not-acknowledged"] | None = None
    analysis_extra_delay_s: float = 0.0
    analysis_not_ok: bool = False


_FLEX_ONLY_FAULTS = ("awaiting_recovery_at_command", "door_open", "estop")
_ESTOP_ERRORS: Mapping[str, tuple[str, str, str, str]] = {
    "not-attached": (
        "EstopNotAttached",
        "There is no Estop attached",
        "An estop must be attached to access this endpoint",
        "3009",
    ),
    "engaged": (
        "EstopEngaged",
        "An Estop is physically engaged",
        "Endpoint access is not permitted while estop is engaged",
        "3008",
    ),
    "not-acknowledged": (
        "EstopNotAcknowledged",
        "Estop event must be acknowledged",
        "Must acknowledge estop event to access this endpoint",
        "3008",
    ),
}


# --------------------------------------------------------------------------------------------
# Reading and analysing protocols with opentrons 8.8.2 (lazy import, process-wide cache)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProtocolSourceInfo:
    """What robot-server learns from reading a protocol's files (before analysis)."""

    content_hash: str
    files: tuple[tuple[str, str], ...]  # (file name, role "main" | "labware" | "data")
    protocol_type: str  # "python" | "json"
    robot_type: str  # "OT-2 Standard" | "OT-3 Standard"
    metadata: Mapping[str, Any]
    api_level: str | None
    file_roles: tuple[tuple[str, str], ...] = ()  # (sha256 of contents, role), as in files


@dataclasses.dataclass(frozen=True)
class ProtocolAnalysis:
    """A completed analysis as robot-server serves it (JSON-ready; treat as read-only).

    Timestamps inside ``commands``/``errors`` are those of the analysis run; the simulator
    re-bases them onto its own clock when serving.
    """

    result: str  # "ok" | "not-ok" | "parameter-value-required"
    robot_type: str
    run_time_parameters: tuple[Mapping[str, Any], ...]
    commands: tuple[Mapping[str, Any], ...]
    labware: tuple[Mapping[str, Any], ...]
    pipettes: tuple[Mapping[str, Any], ...]
    modules: tuple[Mapping[str, Any], ...]
    liquids: tuple[Mapping[str, Any], ...]
    errors: tuple[Mapping[str, Any], ...]


_OT_LOCK = threading.Lock()  # guards the import and every call into opentrons (in a child)
_OT: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()
_READ_CACHE: dict[str, ProtocolSourceInfo | str] = {}  # source key -> info or invalid-files message
_ANALYSIS_CACHE: dict[str, ProtocolAnalysis] = {}  # files (see analyse_protocol) + values
_TIP_MODELS: dict[str, _TipModel] = {}  # file contents -> what their parameters do
_UNDER_WAY: collections.Counter[str] = collections.Counter()  # source key -> analyses running
_EXECUTOR: ThreadPoolExecutor | None = None
# opentrons runs in child processes forked from one fork server: "now" for analyses a
# request waits for, "ahead" (two, at a lower priority) for analyses the simulator makes
# ahead of need (see speculate), and "read" for reading uploaded files, which an upload's
# answer needs at once and must not wait behind an analysis. The controller and the other
# simulators keep this process's interpreter to themselves.
_POOLS: dict[str, ProcessPoolExecutor] = {}
_KINDS = ("now", "ahead", "read")
_SETTINGS = {"speculate": False}


def speculating() -> bool:
    """Whether analyses are made ahead of need (see :func:`speculate`)."""
    return _SETTINGS["speculate"]


def speculate(on: bool = True) -> None:
    """Analyse ahead of need: after the first analysis of new files, probe (in a second
    process) the parameter values that teach the tip model what each parameter does and
    where every tip rack sits, so later values are derived instead of analysed while a
    request waits. What is served does not change, only how soon; off by default, so tests
    count exactly the analyses they cause. Turning it off drops the analyses ahead still
    queued (the one under way finishes)."""
    _SETTINGS["speculate"] = on
    if not on:
        while True:
            try:
                _, _, future, _ = _AHEAD_QUEUE.get_nowait()
            except queue.Empty:
                break
            with _CACHE_LOCK:
                for key in [k for k, f in _IN_FLIGHT.items() if f is future]:
                    del _IN_FLIGHT[key]
            future.cancel()


def _content_hash(files: Sequence[tuple[str, bytes]]) -> str:
    """Hash of the file set, independent of upload order (names and contents)."""
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode("utf-8") + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _pool(kind: str) -> ProcessPoolExecutor:
    """The child process for ``kind`` (one of _KINDS), started on first use."""
    with _CACHE_LOCK:
        pool = _POOLS.get(kind)
        if pool is None:
            pool = ProcessPoolExecutor(
                max_workers=_workers(kind),
                mp_context=_mp_context(),
                initializer=_child_init,
                initargs=(kind,),
            )
            _POOLS[kind] = pool
        return pool


# Analyses ahead run in two processes: a day of feeds brings new files in pairs (one per
# deck position), and the next uploads of each wait for its probe (see _other_rack).
_AHEAD_PROCESSES = 2
_AHEAD_NICENESS = 10  # added to the "ahead" process's nice value: ~1/10 of a shared core
# What the fork server imports once, before it forks the analysis processes.
_PRELOAD = ["labctl.simulators.analysis_server"]  # runs prepare_fork_server()


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
    # Only heeded before the fork server starts (the first analysis process of a session).
    context.set_forkserver_preload(_PRELOAD)
    return context


def prepare_fork_server() -> None:
    """In the fork server only (its preload imports labctl.simulators.analysis_server):
    import opentrons and analyse a small protocol once, so every analysis process forked
    from it starts with opentrons loaded and warm; and end at once when the parent has gone
    (``os._exit`` at exit). Letting Python free opentrons' modules one by one took ~0.7 s,
    during which the server still held the parent's stdout and stderr: a caller reading
    them waited that long after labctl ended. (The forked processes end through
    ``os._exit`` anyway.)"""
    with _OT_LOCK:
        _import_opentrons_locked()
    try:
        _child_warm()
    except Exception:  # noqa: BLE001 - the server must come up: its children warm themselves
        _log.warning("warming the analysis fork server failed", exc_info=True)
    # A fork copies only the forking thread: nothing may be left running (anyio's worker
    # threads end with their event loop; wait for them).
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(timeout=5.0)
    atexit.register(_exit_now)


def start_fork_server() -> None:
    """Start importing opentrons for the analysis processes now, in the background, without
    starting them (see :func:`start_analysers`): a program that will need analyses calls
    this first thing, so the ~2 s import overlaps its own start-up. Nothing waits for it,
    and a program that ends before needing an analysis does not wait at exit either."""
    context = _mp_context()
    if context.get_start_method() == "forkserver":
        multiprocessing.forkserver.ensure_running()


def _workers(kind: str) -> int:
    """How many processes the ``kind`` pool has."""
    return _AHEAD_PROCESSES if kind == "ahead" else 1


def _in_child(kind: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the ``kind`` child, waited for; a child that died is replaced once."""
    for attempt in (1, 2):
        try:
            return _pool(kind).submit(fn, *args).result()
        except BrokenProcessPool:
            with _CACHE_LOCK:
                _POOLS.pop(kind, None)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def start_analysers() -> None:
    """Start the analysis processes without waiting for them: opentrons is imported and
    warmed on a small protocol (~2 s, once, in the fork server; in each process where there
    is none), so the first real analysis is as quick as the next ones. Returns at once:
    starting a process waits until the fork server is ready, so a thread does that."""

    def start() -> None:
        for kind in _KINDS:
            for _ in range(_workers(kind)):
                _pool(kind).submit(_child_warm)

    threading.Thread(target=start, name="ot-analysers-start", daemon=True).start()


def warm_up() -> None:
    """Start the analysis processes and warm them (see :func:`start_analysers`) now, instead
    of at the first upload. Sets ``OT_API_CONFIG_DIR`` to a fresh temporary directory if
    unset, so opentrons writes its config there and not into ``~/.opentrons``."""
    futures = [_pool(kind).submit(_child_warm) for kind in _KINDS for _ in range(_workers(kind))]
    for f in futures:
        f.result()


# ---- what runs in the child process --------------------------------------------------------


def _child_init(kind: str = "now") -> None:
    # Ctrl-C reaches the whole process group: the parent decides what stops, not the child.
    # (Also, asyncio.run would otherwise install and restore its own SIGINT handler on every
    # analysis, and restoring it formats the repr of the whole analysis task: 10% of its time.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if kind == "ahead":
        # Analyses ahead of need only save time later; one a request waits for, when both
        # share a core, should not run at half speed behind them.
        os.nice(_AHEAD_NICENESS)
    with _OT_LOCK:
        _import_opentrons_locked()
    # The child keeps nothing worth tearing down (results go back through the pipe, files
    # live in closed temporary directories): once it is told to stop, end it at once rather
    # than free opentrons' modules one by one, which kept the parent's exit waiting ~0.5 s.
    atexit.register(_exit_now)


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# A small protocol of the kind labctl generates (API level, run-time parameter, labware,
# pipette, liquid moves): analysing it once loads what opentrons loads lazily on a first
# analysis (~0.7 s), before any request waits for one.
_WARM_PROTOCOL = b"""from opentrons import protocol_api

requirements = {"robotType": "OT-2", "apiLevel": "2.18"}


def add_parameters(parameters):
    parameters.add_int(variable_name="first_tip", display_name="First tip", default=0,
                       minimum=0, maximum=95)


def run(ctx: protocol_api.ProtocolContext) -> None:
    plate = ctx.load_labware("corning_6_wellplate_16.8ml_flat", "1")
    medium = ctx.load_labware("nest_1_reservoir_195ml", "2")
    tips = ctx.load_labware("opentrons_96_filtertiprack_1000ul", "10")
    pip = ctx.load_instrument("p1000_single_gen2", "right", tip_racks=[tips])
    pip.starting_tip = tips.wells()[ctx.params.first_tip]
    pip.pick_up_tip()
    pip.aspirate(500, medium["A1"].bottom(1))
    pip.dispense(500, plate["A1"].top())
    pip.blow_out()
    pip.drop_tip()
"""


def _child_warm() -> bool:
    """Import opentrons and analyse :data:`_WARM_PROTOCOL` once (in a child, or in the fork
    server, whose children are then born warm)."""
    if _WARM:
        return bool(_OT)
    analysis = _child_analyse([("labctl_warm_up.py", _WARM_PROTOCOL)], {}, "OT-2 Standard")
    if analysis.result != "ok":  # only slower, never wrong: say so and go on
        _log.warning("warming the analysis process: %s", analysis.errors)
    _WARM.append(True)
    return bool(_OT)


_WARM: list[bool] = []  # [True] once this process has analysed the warm-up protocol


def _import_opentrons_locked() -> dict[str, Any]:
    if _OT:
        return _OT
    os.environ.setdefault("OT_API_CONFIG_DIR", tempfile.mkdtemp(prefix="labctl-ot-config-"))
    import anyio
    from opentrons.cli.analyze import _do_analyze
    from opentrons.protocol_reader import ProtocolFilesInvalidError, ProtocolReader

    ot_logger = logging.getLogger("opentrons")
    if not ot_logger.handlers:
        # A failing protocol makes opentrons log a traceback; without a handler Python's
        # last-resort handler would print it to stderr on every analysis.
        ot_logger.addHandler(logging.NullHandler())
    _OT.update(
        anyio=anyio,
        do_analyze=_do_analyze,
        reader=ProtocolReader,
        invalid=ProtocolFilesInvalidError,
    )
    return _OT


def _write_files(directory: Path, files: Sequence[tuple[str, bytes]]) -> list[Path]:
    paths = []
    for name, data in files:
        path = directory / Path(name).name  # never let a part's file name escape the dir
        path.write_bytes(data)
        paths.append(path)
    return paths


def _child_read(files: Sequence[tuple[str, bytes]]) -> ProtocolSourceInfo | str:
    """Run opentrons' ProtocolReader on the files: their info, or robot-server's
    ``ProtocolFilesInvalid`` detail if they are not a valid protocol."""
    with _OT_LOCK:
        ot = _import_opentrons_locked()
        with tempfile.TemporaryDirectory(prefix="labctl-ot-proto-") as tmp:
            paths = _write_files(Path(tmp), files)

            async def _read() -> Any:
                return await ot["reader"]().read_saved(files=paths, directory=None)

            try:
                source = ot["anyio"].run(_read)
            except ot["invalid"] as exc:
                return str(exc)
    config = source.config
    api = getattr(config, "api_version", None)
    sha_of = {Path(name).name: hashlib.sha256(data).hexdigest() for name, data in files}
    return ProtocolSourceInfo(
        content_hash=_content_hash(files),
        files=tuple((f.path.name, str(f.role.value)) for f in source.files),
        file_roles=tuple((sha_of[f.path.name], str(f.role.value)) for f in source.files),
        protocol_type=str(config.protocol_type.value),
        robot_type=str(source.robot_type),
        metadata=dict(sorted(source.metadata.items())),
        api_level=str(api) if api is not None else None,
    )


def _child_analyse(
    files: Sequence[tuple[str, bytes]], values: Mapping[str, Any], robot_type: str
) -> ProtocolAnalysis:
    """One opentrons analysis of readable files (see :func:`_analyse_locked_out`)."""
    with _OT_LOCK:
        ot = _import_opentrons_locked()
        with tempfile.TemporaryDirectory(prefix="labctl-ot-proto-") as tmp:
            paths = _write_files(Path(tmp), files)

            async def _analyse() -> Any:
                source = await ot["reader"]().read_saved(files=paths, directory=None)
                return await ot["do_analyze"](source, dict(values), {})

            try:
                run_result = ot["anyio"].run(_analyse)
            except Exception as exc:  # opentrons itself broke: report it as the robot would
                _log.exception("analysis of %s crashed", [n for n, _ in files])
                return _crashed(robot_type, str(exc) or type(exc).__name__)
    summary = run_result.state_summary
    errors = _dump(summary.errors)
    if not errors:
        result = "ok"
    elif any(_error_tree_has_code(e, "4005") for e in errors):  # RUNTIME_PARAMETER_VALUE_REQUIRED
        result = "parameter-value-required"
    else:
        result = "not-ok"
    return ProtocolAnalysis(
        result=result,
        robot_type=robot_type,
        run_time_parameters=_dump(run_result.parameters),
        commands=_dump(run_result.commands),
        labware=_dump(summary.labware),
        pipettes=_dump(summary.pipettes),
        modules=_dump(summary.modules),
        liquids=_dump(summary.liquids),
        errors=errors,
    )


def _crashed(robot_type: str, detail: str) -> ProtocolAnalysis:
    """The analysis robot-server reports when opentrons itself failed."""
    return ProtocolAnalysis(
        result="not-ok",
        robot_type=robot_type,
        run_time_parameters=(),
        commands=(),
        labware=(),
        pipettes=(),
        modules=(),
        liquids=(),
        errors=(
            _error_occurrence(
                "UnexpectedAnalysisError",
                "4000",
                detail,
                datetime.fromtimestamp(0, timezone.utc),
                error_id="analysis-setup-error",
            ),
        ),
    )


# ---- this process: caches, and the tip model --------------------------------------------------


def read_protocol(files: Sequence[tuple[str, bytes]]) -> ProtocolSourceInfo:
    """Read a protocol's files as robot-server does (cached per content, whatever the names).

    Raises InputFileError with robot-server's ``ProtocolFilesInvalid`` detail if the files are
    not a valid protocol (syntax error, no apiLevel, two main files, ...).
    """
    key = _source_key(files)
    with _CACHE_LOCK:
        cached = _READ_CACHE.get(key)
    if cached is None:
        cached = _in_child("read", _child_read, list(files))
        with _CACHE_LOCK:
            _READ_CACHE[key] = cached
    if isinstance(cached, str):
        raise InputFileError(cached)
    content_hash = _content_hash(files)
    if cached.content_hash == content_hash:
        return cached
    # The same contents under other names (jobs name their files): each read file's name is
    # the new one with its contents; the reader's order and roles stay.
    first = {hashlib.sha256(d).hexdigest(): [] for _, d in files}
    for name, data in files:
        first[hashlib.sha256(data).hexdigest()].append(name)
    return dataclasses.replace(
        cached,
        content_hash=content_hash,
        files=tuple((first[sha].pop(0), role) for sha, role in cached.file_roles),
    )


def _dump(models: Sequence[Any]) -> tuple[Mapping[str, Any], ...]:
    return tuple(m.model_dump(mode="json", exclude_none=True) for m in models)


def analyse_protocol(
    files: Sequence[tuple[str, bytes]],
    run_time_parameter_values: Mapping[str, Any] | None = None,
    *,
    derive: bool = True,
) -> ProtocolAnalysis:
    """Analyse a protocol in-process with opentrons, as a robot does, with these run-time
    parameter values (None or ``{}``: every parameter at its default).

    An exception in the protocol gives ``result == "not-ok"`` and ``errors[0]`` of type
    ``ExceptionInProtocolError``, never a raised exception; so do invalid parameter values
    (``errors[0].id == "analysis-setup-error"``). Raises InputFileError if the files cannot be
    read at all.

    Cached for the whole process per file contents and values: a clean analysis is shared by
    identical files uploaded under different names (jobs name their files), one with errors
    is not (its tracebacks name the file). With ``derive`` (the default), values that differ
    from an analysed set only in parameters seen to do nothing but move the pipettes' first
    tip give an analysis derived from the analysed one (see :class:`_TipModel`) instead of a
    new opentrons run; ``derive=False`` always gives opentrons' own analysis.
    """
    asked = dict(run_time_parameter_values or {})
    source = _source_key(files)
    named = _content_hash(files)
    # What the analyses ahead are finding out may be just what these values need: wait for
    # them once (they are under way) rather than start one more analysis.
    for may_wait in (True, False):
        with _CACHE_LOCK:
            model = _TIP_MODELS.get(source)
            values = model.normalise(asked) if model is not None else dict(asked)
            if model is not None:
                model.asked.update(values)
            vkey = _values_key(values)
            cached = _ANALYSIS_CACHE.get(f"{source}|{vkey}") or _ANALYSIS_CACHE.get(
                f"{named}|{vkey}"
            )
            if cached is not None:
                return cached
            if derive and model is not None:
                derived, unmapped = model.derive(values)
                if derived is not None:
                    return derived
            else:
                unmapped = ()
        if not (may_wait and derive and _wait_ahead(source)):
            break
    if model is None and _SETTINGS["speculate"]:
        # New files: while the values asked for are analysed, analyse each whole-number
        # parameter moved into another tip rack in the other process; together they show
        # what the parameter does and where a second rack sits, so the next values (the next
        # plates' tips, in either rack) can be derived.
        for name, value in values.items():
            if isinstance(value, int) and not isinstance(value, bool):
                probe = {**values, name: _other_rack(value)}
                _submit_ahead(files, probe, source, named, urgent=True)
    analysis = _analyse_and_learn(files, values, source, named)
    # A parameter whose effect is still unknown (it changed together with another one by the
    # same amount, say) is moved alone once, so that later values can be derived.
    for name in unmapped:
        with _CACHE_LOCK:
            model = _TIP_MODELS.get(source)
            probe = model.probe_values(name) if model is not None else None
        if probe is not None:
            vkey = _values_key(probe)
            with _CACHE_LOCK:
                seen = f"{source}|{vkey}" in _ANALYSIS_CACHE or f"{named}|{vkey}" in _ANALYSIS_CACHE
            if not seen:
                _analyse_and_learn(files, probe, source, named)
            if model is not None and analysis.result == "ok" and not analysis.errors:
                with _CACHE_LOCK:
                    model.learn(analysis)  # what the probe showed may settle the others
    return analysis


_RACK_TIPS = 96  # tips in an Opentrons tip rack (all of them, OT-2 and Flex)


def _other_rack(first_tip: int) -> int:
    """A first new file's probe of a tip parameter: the first tip of the second rack, or
    of the first if ``first_tip`` is past it. Moving it by one would show what the
    parameter does but no other rack, which then needs a probe of its own. Out of the
    parameter's range (one rack), or not a tip at all, the analysis fails and the probe
    moved by one follows."""
    return _RACK_TIPS if first_tip < _RACK_TIPS else 0


def _analyse_and_learn(
    files: Sequence[tuple[str, bytes]],
    values: Mapping[str, Any],
    source: str,
    named: str,
    *,
    pool: str = "now",
) -> ProtocolAnalysis:
    """Run opentrons on the files with ``values``; cache the analysis and learn from it."""
    with _CACHE_LOCK:
        _UNDER_WAY[source] += 1
    try:
        analysis = _analyse_locked_out(files, values, pool=pool)
    finally:
        with _CACHE_LOCK:
            _UNDER_WAY[source] -= 1
            if not _UNDER_WAY[source]:
                del _UNDER_WAY[source]
    clean = analysis.result == "ok" and not analysis.errors
    with _CACHE_LOCK:
        _ANALYSIS_CACHE.setdefault(f"{source if clean else named}|{_values_key(values)}", analysis)
        if clean:
            model = _TIP_MODELS.get(source)
            if model is None:
                _TIP_MODELS[source] = _TipModel(analysis)
            else:
                model.learn(analysis)
    if clean or pool == "ahead":
        # (A failed probe ahead taught nothing: what else to probe is asked again.)
        _ahead(files, source, named)
    return analysis


def _analyse_locked_out(
    files: Sequence[tuple[str, bytes]], values: Mapping[str, Any], *, pool: str = "now"
) -> ProtocolAnalysis:
    """One opentrons analysis, in the ``pool`` child process, waited for."""
    info = read_protocol(files)  # raises on invalid files, and fills the read cache
    try:
        return _in_child(pool, _child_analyse, list(files), dict(values), info.robot_type)
    except BrokenProcessPool as exc:  # the child died twice: report it as the robot would
        _log.error("analysis of %s: the analysis process died (%s)", [n for n, _ in files], exc)
        return _crashed(info.robot_type, f"analysis process died: {exc}")


def _executor() -> ThreadPoolExecutor:
    """The thread that waits for analyses in the background (``background_analysis``)."""
    global _EXECUTOR
    with _CACHE_LOCK:
        if _EXECUTOR is None:
            # Several: an analysis derived from the tip model must not queue behind one
            # waiting for opentrons (those queue for the "now" process anyway).
            _EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ot-analysis")
        return _EXECUTOR


def _ahead(files: Sequence[tuple[str, bytes]], source: str, named: str) -> None:
    """With :func:`speculate` on: analyse, in the "ahead" process, the next values the tip
    model of these files would learn from; each result is cached and learned from, and
    leads to the next (a rack not shown yet, a parameter not mapped yet)."""
    if not _SETTINGS["speculate"]:
        return
    with _CACHE_LOCK:
        model = _TIP_MODELS.get(source)
        # While another analysis of these files is under way (the one a request waits for,
        # when the probe moved by one finished first and became the reference), it will map
        # the parameters itself: a second probe moved by one would only repeat it.
        busy = _UNDER_WAY.get(source, 0) > 0
        probes = model.next_probes(mapping=not busy) if model is not None else []
        probes = [
            p
            for p in probes
            if f"{source}|{_values_key(p)}" not in _ANALYSIS_CACHE
            and f"{named}|{_values_key(p)}" not in _ANALYSIS_CACHE
        ]
    for values in probes:
        _submit_ahead(files, values, source, named)


_IN_FLIGHT: dict[str, Future[None]] = {}  # "source|values" queued or analysed ahead now
# Analyses ahead wait here for the "ahead" process, most urgent first: (priority, order,
# future, work). 0: what the next upload of new files will need; 1: the racks further on.
_AHEAD_QUEUE: queue.PriorityQueue[tuple[int, int, Future[None], Callable[[], None]]] = (
    queue.PriorityQueue()
)
_AHEAD_ORDER = itertools.count()
_AHEAD_THREAD: list[threading.Thread] = []


def _submit_ahead(
    files: Sequence[tuple[str, bytes]],
    values: Mapping[str, Any],
    source: str,
    named: str,
    *,
    urgent: bool = False,
) -> None:
    """Queue one analysis ahead of need, unless it is cached or already queued."""
    key = f"{source}|{_values_key(values)}"
    with _CACHE_LOCK:
        if key in _IN_FLIGHT or key in _ANALYSIS_CACHE:
            return

        def run() -> None:
            try:
                _analyse_ahead(files, values, source, named)
            finally:
                with _CACHE_LOCK:
                    _IN_FLIGHT.pop(key, None)

        future: Future[None] = Future()
        _IN_FLIGHT[key] = future
        _AHEAD_QUEUE.put((0 if urgent else 1, next(_AHEAD_ORDER), future, run))
    _ensure_ahead_worker()


def _ensure_ahead_worker() -> None:
    """Start the thread that feeds the "ahead" process, once."""
    with _CACHE_LOCK:
        while len(_AHEAD_THREAD) < _AHEAD_PROCESSES:
            thread = threading.Thread(target=_ahead_worker, name="ot-ahead", daemon=True)
            _AHEAD_THREAD.append(thread)
            thread.start()


def _ahead_worker() -> None:
    """Feed the "ahead" process one analysis at a time (a daemon thread)."""
    while True:
        _, _, future, work = _AHEAD_QUEUE.get()
        if not future.set_running_or_notify_cancel():
            continue  # a request needed the answer first and analysed it itself
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            future.set_exception(exc)
        else:
            future.set_result(None)


def _wait_ahead(source: str, timeout_s: float = 5.0) -> bool:
    """Wait for the analysis ahead of these files that is under way (at most ``timeout_s``
    real seconds: one takes a fraction of a second, and the request's client is waiting),
    and drop the queued ones: a request that needs an analysis now makes its own rather
    than wait behind others'. False if none was under way."""
    waited = False
    with _CACHE_LOCK:
        mine = [(k, f) for k, f in _IN_FLIGHT.items() if k.startswith(f"{source}|")]
        for key, future in mine:
            if future.cancel():
                _IN_FLIGHT.pop(key, None)
    for _, future in mine:
        if future.cancelled():
            continue
        waited = True
        try:
            future.result(timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a failed or slow probe only means no head start
            pass
    return waited


def _analyse_ahead(
    files: Sequence[tuple[str, bytes]], values: Mapping[str, Any], source: str, named: str
) -> None:
    try:
        _analyse_and_learn(files, values, source, named, pool="ahead")
    except Exception:  # noqa: BLE001 - ahead of need: a failure only means no head start
        _log.debug(
            "analysis ahead of %s with %s failed", [n for n, _ in files], values, exc_info=True
        )


def _source_key(files: Sequence[tuple[str, bytes]]) -> str:
    """Hash of the files' contents and kinds (extensions), not of their names."""
    digest = hashlib.sha256()
    for suffix, data in sorted(
        (Path(name).suffix.lower(), hashlib.sha256(content).digest()) for name, content in files
    ):
        digest.update(suffix.encode("utf-8") + b"\0" + data)
    return digest.hexdigest()


def _values_key(values: Mapping[str, Any]) -> str:
    """The run-time parameter values as a cache key part (1, 1.0 and True stay apart)."""
    return json.dumps(sorted((k, type(v).__name__, v) for k, v in values.items()))


def _rtp_values_match(parameters: Sequence[Mapping[str, Any]], values: Mapping[str, Any]) -> bool:
    """Whether an analysis or run whose ``runTimeParameters`` are ``parameters`` used ``values``
    (parameters not given count as their defaults).

    robot-server's rule for re-using an analysis (``matching_rtp_values_in_analysis``): every
    given name is a parameter of the protocol, and each parameter's value equals the given
    one or, when none is given, its default.
    """
    known = {str(p.get("variableName")): p for p in parameters}
    if not set(values) <= set(known):
        return False
    return all(
        _same_value(values.get(name, spec.get("default")), spec.get("value"))
        for name, spec in known.items()
    )


def _same_value(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _valid_values(specs: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any]) -> bool:
    """Names, types, ranges and choices of ``values`` as opentrons checks them."""
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            return False
        kind = spec.get("type")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not {
            "int": number and isinstance(value, int),
            "float": number,
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }.get(str(kind), False):
            return False
        choices = spec.get("choices")
        if isinstance(choices, list):
            if not any(isinstance(c, dict) and _same_value(c.get("value"), value) for c in choices):
                return False
        elif number:
            low, high = spec.get("min"), spec.get("max")
            if low is None or high is None or not low <= value <= high:
                return False
    return True


@dataclasses.dataclass(frozen=True)
class _Rack:
    """A tip rack of the reference analysis: wells in pick order (column by column) and the
    position of each well's top relative to the rack (mm)."""

    order: tuple[str, ...]
    tops: Mapping[str, tuple[float, float, float]]

    @classmethod
    def of(cls, definition: Mapping[str, Any]) -> _Rack | None:
        try:
            order = tuple(w for column in definition["ordering"] for w in column)
            wells = definition["wells"]
            tops = {
                w: (
                    float(wells[w]["x"]),
                    float(wells[w]["y"]),
                    float(wells[w]["z"]) + float(wells[w]["depth"]),
                )
                for w in order
            }
        except (KeyError, TypeError, ValueError):
            return None
        return cls(order, tops)


_PICK = "pickUpTip"
_TIMES_AND_ID = frozenset({"id", "createdAt", "startedAt", "completedAt"})


class _TipModel:
    """What opentrons' analyses of one protocol showed its run-time parameters do to its tips.

    Robots do not remember tips between runs, so a protocol takes the first unused tip of each
    pipette's racks as a run-time parameter and otherwise does the same thing every run. Running
    opentrons for every new value would make each run cost a full analysis; instead this model
    learns from real analyses of the same files and derives the analysis for new values when
    it can, and only then:

    - the first clean analysis is the reference. Each pipette's ``pickUpTip`` commands there
      take consecutive tips (column by column, rack after rack); a pipette whose picks do not
      is never derived;
    - a parameter is mapped to a pipette once an analysis with other values shows that
      changing it by ``k`` moved that pipette's picks, and only them, ``k`` tips on, every
      other command (parameters and results) staying identical;
    - every pick of a derived analysis lands in a rack position an analysis has shown (each
      observed pick pins where its rack sits in the pipette's tip order, and its position).

    Anything else (an unmapped parameter changed, a tip beyond the racks seen, invalid values)
    is left to opentrons, and an analysis contradicting the model stops all derivation for these
    files. Callers hold ``_CACHE_LOCK``.
    """

    def __init__(self, reference: ProtocolAnalysis) -> None:
        self.reference = reference
        self.specs = {str(p.get("variableName")): p for p in reference.run_time_parameters}
        self.ref_values = {name: spec.get("value") for name, spec in self.specs.items()}
        self.broken = False
        self.pipette_of: dict[str, str] = {}  # parameter -> pipette id it moves
        self.probed: set[str] = set()
        self.explored: set[tuple[str, int]] = set()  # (pipette, tip index) probed ahead
        # Parameters uploads have set (off their defaults): only these are probed ahead.
        self.asked: set[str] = {
            n for n, p in self.specs.items() if not _same_value(p.get("value"), p.get("default"))
        }
        self.racks: dict[str, _Rack] = {}
        for cmd in reference.commands:
            result = cmd.get("result") or {}
            definition = result.get("definition") or {}
            if cmd.get("commandType") == "loadLabware" and (definition.get("parameters") or {}).get(
                "isTiprack"
            ):
                rack = _Rack.of(definition)
                if rack is not None:
                    self.racks[str(result.get("labwareId"))] = rack
        self.picks: dict[str, list[int]] = {}  # pipette -> indexes of its pickUpTip commands
        for index, cmd in enumerate(reference.commands):
            if cmd.get("commandType") == _PICK:
                pipette = str((cmd.get("params") or {}).get("pipetteId"))
                self.picks.setdefault(pipette, []).append(index)
        self.first: dict[str, int] = {}  # pipette -> tip order index of its first reference pick
        self.bases: dict[str, dict[str, int]] = {}  # pipette -> rack -> order index of its A1
        self.origins: dict[tuple[str, str], tuple[float, float, float]] = {}
        for pipette, indexes in self.picks.items():
            first = self._pick(reference.commands[indexes[0]])
            rack = self.racks.get(first[0]) if first is not None else None
            if first is None or rack is None or first[1] not in rack.order:
                continue
            self.first[pipette] = rack.order.index(first[1])
            self.bases[pipette] = {first[0]: 0}
            if not self._pin(pipette, reference.commands, 0):
                del self.first[pipette], self.bases[pipette]  # not consecutive: never derived

    # ---- values ------------------------------------------------------------------------

    def normalise(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` without those equal to their parameter's default (same analysis)."""
        return {
            k: v
            for k, v in values.items()
            if k not in self.specs or not _same_value(v, self.specs[k].get("default"))
        }

    def _full(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {n: values.get(n, s.get("default")) for n, s in self.specs.items()}

    def _deltas(self, full: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters whose value differs from the reference's: name -> int difference, or
        None when it is not an int parameter."""
        out: dict[str, Any] = {}
        for name, value in full.items():
            ref = self.ref_values.get(name)
            if _same_value(value, ref):
                continue
            whole = self.specs[name].get("type") == "int" and isinstance(ref, int | float)
            out[name] = int(value) - int(ref) if whole else None
        return out

    def probe_values(self, name: str) -> dict[str, Any] | None:
        """The reference's values with ``name`` moved by one (once per parameter), or None."""
        spec = self.specs.get(name)
        if self.broken or name in self.pipette_of or name in self.probed or spec is None:
            return None
        self.probed.add(name)
        return self._moved(name, 1) or self._moved(name, -1)  # down only at the maximum

    def next_probes(self, *, mapping: bool = True) -> list[dict[str, Any]]:
        """Values worth analysing ahead of need: each parameter not mapped yet moved by one
        (unless ``mapping`` is False: another analysis under way may map them), and for each
        mapped one the first pick moved just past (or before) the tips the model has placed,
        to show the next rack. Each is offered once."""
        if self.broken:
            return []
        out = []
        for name in self.specs if mapping else ():
            # Only parameters uploads have set: moving another one (which may do more than
            # move tips) would end derivation for files that never change it.
            if name in self.asked and name not in self.pipette_of:
                probe = self.probe_values(name)
                if probe is not None:
                    out.append(probe)
        for name, pipette in self.pipette_of.items():
            bases = self.bases.get(pipette) or {}
            if pipette not in self.first or not bases:
                continue
            spans = [(b, b + len(self.racks[r].order)) for r, b in bases.items()]
            low, high = min(b for b, _ in spans), max(e for _, e in spans)
            # Indexes count from the reference's first rack: a rack before it is negative.
            for index in (high, low - 1):
                if (pipette, index) in self.explored:
                    continue
                self.explored.add((pipette, index))
                probe = self._moved(name, index - self.first[pipette])
                if probe is not None:
                    out.append(probe)
        return out

    def _moved(self, name: str, k: int) -> dict[str, Any] | None:
        """The reference's values with ``name`` moved by ``k``, if inside its limits."""
        spec, ref = self.specs[name], self.ref_values.get(name)
        if spec.get("type") != "int" or not isinstance(ref, int | float):
            return None
        value = int(ref) + k
        low, high = spec.get("min"), spec.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            return None
        full = {
            n: int(v) if self.specs[n].get("type") == "int" else v
            for n, v in self.ref_values.items()
        }
        full[name] = value
        return self.normalise(full)

    # ---- deriving ----------------------------------------------------------------------

    def derive(self, values: Mapping[str, Any]) -> tuple[ProtocolAnalysis | None, tuple[str, ...]]:
        """The analysis for ``values`` from the reference, or None and the changed parameters
        whose effect is not known yet."""
        if self.broken or not _valid_values(self.specs, values):
            return None, ()
        full = self._full(values)
        deltas = self._deltas(full)
        unmapped = tuple(n for n in deltas if n not in self.pipette_of)
        if unmapped:
            return None, unmapped
        commands = list(self.reference.commands)
        for name, k in deltas.items():
            pipette = self.pipette_of[name]
            for n, index in enumerate(self.picks[pipette]):
                cmd = commands[index]
                spot = self._locate(pipette, self.first[pipette] + n + k)
                where = json.dumps((cmd.get("params") or {}).get("wellLocation"), sort_keys=True)
                origin = self.origins.get((spot[0], where)) if spot is not None else None
                if spot is None or origin is None:
                    return None, ()
                rack_id, well = spot
                top = self.racks[rack_id].tops[well]
                params = dict(cmd.get("params") or {}, labwareId=rack_id, wellName=well)
                position = {a: round(o + t, 6) for a, o, t in zip("xyz", origin, top, strict=True)}
                result = dict(cmd.get("result") or {}, position=position)
                commands[index] = dict(cmd, params=params, result=result)
        parameters = tuple(
            dict(spec, value=_like(spec.get("value"), full[name]))
            for name, spec in self.specs.items()
        )
        return (
            dataclasses.replace(
                self.reference, commands=tuple(commands), run_time_parameters=parameters
            ),
            (),
        )

    def _locate(self, pipette: str, index: int) -> tuple[str, str] | None:
        for rack_id, base in self.bases.get(pipette, {}).items():
            order = self.racks[rack_id].order
            if base <= index < base + len(order):
                return rack_id, order[index - base]
        return None

    # ---- learning ----------------------------------------------------------------------

    @staticmethod
    def _pick(cmd: Mapping[str, Any]) -> tuple[str, str, str, tuple[float, float, float]] | None:
        """(rack id, well, wellLocation as JSON, position) of a pickUpTip command."""
        params = cmd.get("params") or {}
        position = (cmd.get("result") or {}).get("position") or {}
        try:
            xyz = (float(position["x"]), float(position["y"]), float(position["z"]))
        except (KeyError, TypeError, ValueError):
            return None
        where = json.dumps(params.get("wellLocation"), sort_keys=True)
        return str(params.get("labwareId")), str(params.get("wellName")), where, xyz

    def _pin(self, pipette: str, commands: Sequence[Mapping[str, Any]], k: int) -> bool:
        """Check the pipette's picks in ``commands`` (reference ids) against a shift of ``k``
        tips and record the racks and positions they show; False (nothing recorded) if they
        contradict the model."""
        bases = dict(self.bases[pipette])
        origins: dict[tuple[str, str], tuple[float, float, float]] = {}
        for n, index in enumerate(self.picks[pipette]):
            pick = self._pick(commands[index])
            if pick is None or pick[0] not in self.racks:
                return False
            rack_id, well, where, xyz = pick
            rack = self.racks[rack_id]
            if well not in rack.order:
                return False
            base = self.first[pipette] + n + k - rack.order.index(well)
            if bases.setdefault(rack_id, base) != base:
                return False
            for other, other_base in bases.items():
                size = len(self.racks[other].order)
                if (
                    other != rack_id
                    and base < other_base + size
                    and other_base < base + len(rack.order)
                ):
                    return False  # two racks cannot hold the same tip positions
            top = rack.tops[well]
            origin = tuple(round(p - t, 6) for p, t in zip(xyz, top, strict=True))
            known = origins.get((rack_id, where)) or self.origins.get((rack_id, where))
            if known is not None and any(
                abs(a - b) > 1e-3 for a, b in zip(known, origin, strict=True)
            ):
                return False
            origins.setdefault((rack_id, where), origin)  # type: ignore[arg-type]
        self.bases[pipette] = bases
        for key, origin in origins.items():
            self.origins.setdefault(key, origin)
        return True

    def learn(self, analysis: ProtocolAnalysis) -> None:
        """Check a clean analysis of the same files against the model and learn from it."""
        if self.broken:
            return
        commands = self._aligned(analysis)
        if commands is None:
            self.broken = True  # the parameters change more than tip positions
            return
        specs = {str(p.get("variableName")): p for p in analysis.run_time_parameters}
        if set(specs) != set(self.specs):
            self.broken = True
            return
        deltas = self._deltas({n: s.get("value") for n, s in specs.items()})
        driven = {p: n for n, p in self.pipette_of.items()}
        for pipette, indexes in self.picks.items():
            moved = any(
                self._pick(commands[i]) != self._pick(self.reference.commands[i]) for i in indexes
            )
            name = driven.get(pipette)
            if name is not None:
                k = deltas.get(name, 0)
                if k is None or not self._pin(pipette, commands, k):
                    self.broken = True
                    return
                continue
            if not moved:
                continue
            if pipette not in self.first:
                self.broken = True  # picks that do not follow the tip order moved
                return
            fitting = []
            for n, k in deltas.items():
                if not k or n in self.pipette_of:
                    continue
                saved = (dict(self.bases[pipette]), dict(self.origins))
                if self._pin(pipette, commands, k):
                    fitting.append(n)
                self.bases[pipette], self.origins = saved
            if not fitting:
                self.broken = True  # the picks moved, but by no parameter's change
                return
            if len(fitting) == 1:  # more: which one moved it is not known yet
                self.pipette_of[fitting[0]] = pipette
                self._pin(pipette, commands, deltas[fitting[0]])

    def _aligned(self, analysis: ProtocolAnalysis) -> list[Mapping[str, Any]] | None:
        """The analysis' commands with the reference's ids, if everything but the picks'
        rack, well and position is identical to the reference; else None."""
        ref = self.reference
        if len(analysis.commands) != len(ref.commands):
            return None
        ids: dict[str, str] = {}
        for mine, theirs in zip(ref.commands, analysis.commands, strict=True):
            if mine.get("commandType") != theirs.get("commandType"):
                return None
            a, b = mine.get("result") or {}, theirs.get("result") or {}
            for key in ("labwareId", "pipetteId", "moduleId"):
                if isinstance(a.get(key), str) and isinstance(b.get(key), str):
                    ids[b[key]] = a[key]
        out: list[Mapping[str, Any]] = []
        for mine, theirs in zip(ref.commands, analysis.commands, strict=True):
            cmd = _replace_ids(theirs, ids)
            a = {k: v for k, v in mine.items() if k not in _TIMES_AND_ID}
            b = {k: v for k, v in cmd.items() if k not in _TIMES_AND_ID}
            if mine.get("commandType") == _PICK:
                for side in (a, b):
                    side["params"] = {
                        k: v
                        for k, v in (side.get("params") or {}).items()
                        if k not in ("labwareId", "wellName")
                    }
                    side["result"] = {
                        k: v for k, v in (side.get("result") or {}).items() if k != "position"
                    }
            if a != b:
                return None
            out.append(cmd)
        for field in ("labware", "pipettes", "modules", "liquids"):
            if [_replace_ids(x, ids) for x in getattr(analysis, field)] != [
                dict(x) for x in getattr(ref, field)
            ]:
                return None
        return out


def _like(template: Any, value: Any) -> Any:
    """``value`` in the JSON type opentrons reports it in (numbers of int parameters are
    floats in ``runTimeParameters``)."""
    if isinstance(template, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _rtp_values_ok(values: object) -> bool:
    """A ``runTimeParameterValues`` object: names to numbers, booleans or strings."""
    return isinstance(values, dict) and all(
        isinstance(k, str)
        and isinstance(v, bool | int | str | float)
        and not (isinstance(v, float) and not math.isfinite(v))
        for k, v in values.items()
    )


def _error_tree_has_code(error: Mapping[str, Any], code: str) -> bool:
    if error.get("errorCode") == code:
        return True
    return any(_error_tree_has_code(e, code) for e in error.get("wrappedErrors", []))


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------


def _rebase_times(obj: Any, shift: timedelta) -> Any:
    """Copy of ``obj`` with every createdAt/startedAt/completedAt moved by ``shift``."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key in _TIME_KEYS and isinstance(value, str):
                out[key] = _iso(datetime.fromisoformat(value) + shift)
            else:
                out[key] = _rebase_times(value, shift)
        return out
    if isinstance(obj, list | tuple):
        return [_rebase_times(v, shift) for v in obj]
    return obj


def _rebase_commands(commands: Sequence[Mapping[str, Any]], shift: timedelta) -> list[dict]:
    """:func:`_rebase_times` for a command list, sharing what holds no times.

    A command's times are its own createdAt/startedAt/completedAt and those inside its
    ``error``; its params and result (most of an analysis) are shared, not copied: what is
    served is read-only.
    """
    out = []
    for cmd in commands:
        moved = dict(cmd)
        for key in _TIME_KEYS:
            value = moved.get(key)
            if isinstance(value, str):
                moved[key] = _iso(datetime.fromisoformat(value) + shift)
        if "error" in moved:
            moved["error"] = _rebase_times(moved["error"], shift)
        out.append(moved)
    return out


def _earliest_command_time(commands: Sequence[Mapping[str, Any]]) -> datetime | None:
    """The earliest createdAt/startedAt/completedAt of the commands (not their errors)."""
    times = [
        datetime.fromisoformat(cmd[key])
        for cmd in commands
        for key in _TIME_KEYS
        if isinstance(cmd.get(key), str)
    ]
    return min(times, default=None)


def _earliest_time(obj: Any) -> datetime | None:
    found: list[datetime] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            for key, value in o.items():
                if key in _TIME_KEYS and isinstance(value, str):
                    found.append(datetime.fromisoformat(value))
                else:
                    walk(value)
        elif isinstance(o, list | tuple):
            for v in o:
                walk(v)

    walk(obj)
    return min(found) if found else None


def _replace_ids(obj: Any, mapping: Mapping[str, str]) -> Any:
    """``obj`` with every string equal to a key of ``mapping`` replaced (tuples become lists).

    Dicts and lists in which nothing is replaced are returned as they are, not copied: the
    result shares them with ``obj``, so neither may be changed in place afterwards (commands
    are served through copies). A labware ``definition`` holds no ids and is never walked:
    copying the definitions was most of the cost of creating a run."""
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, dict):
        out: dict[str, Any] | None = None
        for key, value in obj.items():
            if key == "definition" or not isinstance(value, str | dict | list | tuple):
                continue
            new = _replace_ids(value, mapping)
            if new is not value:
                if out is None:
                    out = dict(obj)
                out[key] = new
        return obj if out is None else out
    if isinstance(obj, list | tuple):
        items = [_replace_ids(v, mapping) for v in obj]
        if isinstance(obj, list) and all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        return items
    return obj


def _error_occurrence(
    error_type: str,
    code: str,
    detail: str,
    at: datetime,
    *,
    error_id: str | None = None,
    defined: bool = False,
    wrapped: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """An ``ErrorOccurrence`` in robot-server's key order."""
    return {
        "id": error_id or _new_id(),
        "createdAt": _iso(at),
        "isDefined": defined,
        "errorType": error_type,
        "errorCode": code,
        "detail": detail,
        "errorInfo": {},
        "wrappedErrors": list(wrapped),
    }


def _protocol_failure(inner: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """Wrap a command error the way a Python protocol's run error is nested (recordings)."""
    outer_id = _new_id()
    text = f"{inner['errorType']}: {inner['detail']}"
    middle = _error_occurrence(
        "ProtocolCommandFailedError", "4000", text, at, error_id=outer_id, wrapped=[inner]
    )
    detail = (
        "ProtocolCommandFailedError: Error 4000 GENERAL_ERROR (ProtocolCommandFailedError): " + text
    )
    return _error_occurrence(
        "ExceptionInProtocolError", "4000", detail, at, error_id=outer_id, wrapped=[middle]
    )


# --------------------------------------------------------------------------------------------
# Run engine: state per run, advanced lazily from the clock
# --------------------------------------------------------------------------------------------


class _Queue(enum.Enum):
    """Protocol engine queue status (opentrons ``QueueStatus``)."""

    SETUP = "setup"
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING_RECOVERY = "awaiting-recovery"
    AWAITING_RECOVERY_PAUSED = "awaiting-recovery-paused"


class _Result(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


TERMINAL_STATUSES = frozenset({"succeeded", "failed", "stopped"})


@dataclasses.dataclass
class _Command:
    """One command of a run; ``template`` is the analysed command with this run's ids."""

    index: int
    id: str
    template: Mapping[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    status: str = "queued"
    error: dict[str, Any] | None = None
    remaining_s: float = 0.0  # simulated seconds of work left
    resumed_at: datetime | None = None  # when it last started progressing; None = frozen


@dataclasses.dataclass
class _Run:
    id: str
    protocol_id: str | None
    created_at: datetime
    templates: list[dict[str, Any]]
    analysis_errors: list[dict[str, Any]]
    labware: list[dict[str, Any]]
    pipettes: list[dict[str, Any]]
    modules: list[dict[str, Any]]
    liquids: list[dict[str, Any]]
    loaded_by_command: set[str]
    labware_offsets: list[dict[str, Any]]
    run_time_parameters: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    current: bool = True
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    commands: list[_Command] = dataclasses.field(default_factory=list)
    queue: _Queue = _Queue.SETUP
    door_blocking: bool = False
    result: _Result | None = None
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    started_at: datetime | None = None
    finish_at: datetime | None = None  # when the post-run home/drop-tip ends
    completed_at: datetime | None = None
    entered_recovery: bool = False
    recovery_target: int | None = None
    loaded: set[str] = dataclasses.field(default_factory=set)
    pipette_location: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    id_map: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def inflight(self) -> _Command | None:
        last = self.commands[-1] if self.commands else None
        return last if last is not None and last.status == "running" else None

    @property
    def status(self) -> str:
        """EngineStatus, derived like opentrons ``CommandView.get_status``."""
        if self.result is not None:
            if self.completed_at is not None:
                return self.result.value
            return "stop-requested" if self.result is _Result.STOPPED else "finishing"
        if self.queue is _Queue.RUNNING:
            return "running"
        if self.queue is _Queue.PAUSED:
            return "blocked-by-open-door" if self.door_blocking else "paused"
        if self.queue is _Queue.AWAITING_RECOVERY_PAUSED:
            if self.door_blocking:
                return "awaiting-recovery-blocked-by-open-door"
            return "awaiting-recovery-paused"
        if self.queue is _Queue.AWAITING_RECOVERY:
            return "awaiting-recovery"
        return "idle"

    @property
    def okay_to_clear(self) -> bool:
        """A new run may replace this one (idle, or fully finished)."""
        return self.completed_at is not None or self.status == "idle"


class _ActionNotAllowed(Exception):
    """A run action the engine refuses (becomes 409 RunActionNotAllowed)."""

    def __init__(self, engine_error: str, message: str) -> None:
        super().__init__(message)
        self.engine_error = engine_error
        self.message = message


@dataclasses.dataclass
class _Analysis:
    id: str
    requested_at: datetime
    ready_at: datetime
    not_ok: bool
    future: Future[ProtocolAnalysis]
    served: dict[str, Any] | None = None


@dataclasses.dataclass
class _Protocol:
    id: str
    created_at: datetime
    info: ProtocolSourceInfo
    files: list[tuple[str, bytes]]
    key: str | None
    kind: str
    analyses: list[_Analysis]


class _RunEngine:
    """The protocol engine of one simulated robot: run state changes, all at given times.

    Nothing here reads a clock: callers pass ``now`` (an action, a fault change) and
    :meth:`advance` plays a run forward to a moment. Durations are robot seconds times
    ``time_scale``; ``faults`` returns the simulator's current faults; ``emit`` writes the
    action log.
    """

    def __init__(
        self,
        robot: RobotName,
        *,
        time_scale: float,
        finishing_s: float,
        stop_s: float,
        durations_s: Mapping[str, float],
        faults: Callable[[], Faults],
        emit: Callable[..., None],
    ) -> None:
        self.robot = robot
        self.time_scale = time_scale
        self.finishing_s = finishing_s
        self.stop_s = stop_s
        self.durations_s = dict(durations_s)
        self.faults = faults
        self.emit = emit

    def apply_action(self, run: _Run, action_type: str, now: datetime) -> None:
        """Validate (like ``validate_action_allowed``) and apply one action at ``now``."""
        if run.result is not None:
            raise _ActionNotAllowed("RunStoppedError", "The run has already stopped.")
        if action_type == "play":
            if run.status in ("blocked-by-open-door", "awaiting-recovery-blocked-by-open-door"):
                raise _ActionNotAllowed(
                    "RobotDoorOpenError", "Front door or top window is currently open."
                )
            self._play(run, now)
        elif action_type == "pause":
            if run.queue is not _Queue.RUNNING:
                raise _ActionNotAllowed(
                    "PauseNotAllowedError", "Cannot pause a run that is not running."
                )
            self._freeze(run, now)
            run.queue = _Queue.PAUSED
        elif action_type == "stop":
            self._stop(run, now)
        else:  # resume-from-recovery[-assuming-false-positive]
            if run.queue is not _Queue.AWAITING_RECOVERY:
                raise _ActionNotAllowed(
                    "ResumeFromRecoveryNotAllowedError",
                    "Cannot resume from recovery if the run is not in recovery mode.",
                )
            target = run.recovery_target
            run.recovery_target = None
            run.queue = _Queue.RUNNING
            if action_type.endswith("false-positive") and target is not None:
                # The failed command did happen after all: it is a physical fact now.
                self._log_physical(run, run.commands[target], now, false_positive=True)
            self._issue_next(run, now)

    def _play(self, run: _Run, now: datetime) -> None:
        if run.queue is _Queue.SETUP:
            run.started_at = now
            run.queue = _Queue.PAUSED if run.door_blocking else _Queue.RUNNING
            self._issue_next(run, now)
        elif run.queue is _Queue.PAUSED:
            run.queue = _Queue.RUNNING
            self._resume(run, now)
        elif run.queue is _Queue.AWAITING_RECOVERY_PAUSED:
            run.queue = _Queue.AWAITING_RECOVERY
        # RUNNING / AWAITING_RECOVERY: play is a no-op (still recorded as an action)

    def _stop(self, run: _Run, now: datetime) -> None:
        if run.queue is _Queue.SETUP:
            run.result = _Result.STOPPED
            run.finish_at = now  # nothing to home: an un-started run stops at once
            return
        inflight = run.inflight
        if inflight is not None:
            inflight.status = "failed"
            inflight.completed_at = now
            inflight.error = _error_occurrence("RunStoppedError", "4000", "Run was cancelled", now)
        run.recovery_target = None
        run.queue = _Queue.PAUSED
        run.result = _Result.STOPPED
        run.finish_at = now + timedelta(seconds=self.stop_s * self.time_scale)

    def door_changed(self, run: _Run, is_open: bool, now: datetime) -> None:
        if run.result is not None:
            return
        run.door_blocking = is_open
        if is_open:
            if run.queue is _Queue.RUNNING:
                self._freeze(run, now)
                run.queue = _Queue.PAUSED
            elif run.queue is _Queue.AWAITING_RECOVERY:
                run.queue = _Queue.AWAITING_RECOVERY_PAUSED
        self.emit("door", now, runId=run.id, open=is_open, status=run.status)

    def estop_engaged(self, run: _Run, now: datetime) -> None:
        if run.result is not None or run.queue is _Queue.SETUP:
            return
        error = _error_occurrence("EStopActivatedError", "3008", "E-stop activated.", now)
        inflight = run.inflight
        if inflight is not None:
            inflight.status = "failed"
            inflight.completed_at = now
            inflight.error = dict(error, id=_new_id())
        run.errors = [error]
        run.queue = _Queue.PAUSED
        run.result = _Result.FAILED
        run.finish_at = now + timedelta(seconds=self.stop_s * self.time_scale)

    def _duration_s(self, template: Mapping[str, Any]) -> float:
        command_type = str(template.get("commandType"))
        if command_type == "waitForDuration":
            base = float((template.get("params") or {}).get("seconds", 0.0))
        else:
            base = self.durations_s.get(command_type, DEFAULT_DURATION_S)
        return max(0.0, base) * self.time_scale

    def _freeze(self, run: _Run, now: datetime) -> None:
        """Pause the in-flight command mid-way (the hardware pauses; paused time is not work)."""
        cmd = run.inflight
        if cmd is not None and cmd.resumed_at is not None:
            cmd.remaining_s = max(0.0, cmd.remaining_s - (now - cmd.resumed_at).total_seconds())
            cmd.resumed_at = None

    def _resume(self, run: _Run, now: datetime) -> None:
        """Continue after a pause: the frozen command goes on, or the queued one starts."""
        cmd = run.inflight
        if cmd is not None and cmd.resumed_at is None:
            cmd.resumed_at = now
        elif run.commands and run.commands[-1].status == "queued":
            self._start(run, run.commands[-1], now)

    def _issue_next(self, run: _Run, at: datetime) -> None:
        """The protocol issues its next command at ``at`` (or its run function returns)."""
        index = len(run.commands)
        if index < len(run.templates):
            template = run.templates[index]
            cmd = _Command(index=index, id=_new_id(), template=template, created_at=at)
            run.commands.append(cmd)
            if run.queue is _Queue.RUNNING:
                self._start(run, cmd, at)
            return
        if run.protocol_id is None:
            return  # a run without a protocol keeps running until stopped
        if run.analysis_errors:
            # The protocol raised after its last command (not a command failure).
            run.errors = [self._rebadge_error(run.analysis_errors[0], at, {})]
            run.result = _Result.FAILED
        else:
            run.result = _Result.SUCCEEDED
        run.queue = _Queue.PAUSED
        run.finish_at = at + timedelta(seconds=self.finishing_s * self.time_scale)

    def _start(self, run: _Run, cmd: _Command, at: datetime) -> None:
        cmd.status = "running"
        cmd.started_at = at
        cmd.remaining_s = self._duration_s(cmd.template)
        cmd.resumed_at = at
        if cmd.template.get("commandType") == "waitForResume":
            # protocol.pause(): the engine pauses until someone plays.
            run.queue = _Queue.PAUSED
            cmd.resumed_at = None

    @staticmethod
    def _rebadge_error(
        error: Mapping[str, Any], at: datetime, ids: dict[str, str]
    ) -> dict[str, Any]:
        """Copy of an analysis error with fresh ids (shared ids stay shared) stamped ``at``."""

        def walk(e: Mapping[str, Any]) -> dict[str, Any]:
            out = dict(e)
            old = str(e.get("id"))
            out["id"] = ids.setdefault(old, _new_id())
            out["createdAt"] = _iso(at)
            out["wrappedErrors"] = [walk(w) for w in e.get("wrappedErrors", [])]
            return out

        return walk(error)

    def advance(self, run: _Run, now: datetime) -> None:
        """Play the run forward to ``now``: finish due commands in order, start the next."""
        while True:
            if run.result is not None:
                if run.completed_at is None and run.finish_at is not None and run.finish_at <= now:
                    run.completed_at = run.finish_at
                    self.emit("run_finished", run.completed_at, runId=run.id, status=run.status)
                return
            cmd = run.inflight
            if cmd is None or cmd.resumed_at is None:
                return
            ends = cmd.resumed_at + timedelta(seconds=cmd.remaining_s)
            if ends > now:
                return
            cmd.remaining_s = 0.0
            cmd.resumed_at = None
            self._complete(run, cmd, ends)

    def _complete(self, run: _Run, cmd: _Command, at: datetime) -> None:
        faults = self.faults()
        template = cmd.template
        cmd.completed_at = at
        if self.robot == "Flex" and faults.awaiting_recovery_at_command == cmd.index:
            error_type, code, detail = _DEFINED_ERRORS.get(
                str(template.get("commandType")), _DEFAULT_DEFINED_ERROR
            )
            cmd.status = "failed"
            cmd.error = _error_occurrence(error_type, code, detail, at, defined=True)
            paused = run.queue is _Queue.PAUSED or run.door_blocking
            run.queue = _Queue.AWAITING_RECOVERY_PAUSED if paused else _Queue.AWAITING_RECOVERY
            run.recovery_target = cmd.index
            run.entered_recovery = True
            return
        if faults.fail_at_command == cmd.index:
            cmd.status = "failed"
            cmd.error = _error_occurrence(
                faults.fail_error_type, faults.fail_error_code, faults.fail_error_detail, at
            )
            self._fail_run(run, _protocol_failure(cmd.error, at), at)
            return
        if template.get("status") == "failed":
            # The analysis saw this command fail (e.g. no tip): so does the run.
            ids: dict[str, str] = {}
            analysed = template.get("error") or {}
            cmd.error = self._rebadge_error(analysed, at, ids)
            cmd.status = "failed"
            if run.analysis_errors:
                run_error = self._rebadge_error(run.analysis_errors[0], at, ids)
            else:
                run_error = _protocol_failure(cmd.error, at)
            self._fail_run(run, run_error, at)
            return
        cmd.status = "succeeded"
        result = template.get("result") or {}
        for key in ("labwareId", "pipetteId", "moduleId"):
            if key in result:
                run.loaded.add(str(result[key]))
        self._log_physical(run, cmd, at)
        self._issue_next(run, at)

    def _fail_run(self, run: _Run, error: dict[str, Any], at: datetime) -> None:
        run.errors = [error]
        run.result = _Result.FAILED
        run.queue = _Queue.PAUSED
        run.finish_at = at + timedelta(seconds=self.finishing_s * self.time_scale)

    def _log_physical(
        self, run: _Run, cmd: _Command, at: datetime, *, false_positive: bool = False
    ) -> None:
        """Track where each pipette is; log a completed physical command exactly once."""
        template = cmd.template
        command_type = str(template.get("commandType"))
        params: Mapping[str, Any] = template.get("params") or {}
        pipette_id = params.get("pipetteId")
        if pipette_id is not None:
            if "labwareId" in params:
                run.pipette_location[pipette_id] = {
                    "labwareId": params["labwareId"],
                    "well": params.get("wellName"),
                }
            elif "addressableAreaName" in params:
                run.pipette_location[pipette_id] = {
                    "addressableArea": params["addressableAreaName"]
                }
        if command_type not in PHYSICAL_COMMANDS:
            return
        entry: dict[str, Any] = {
            "runId": run.id,
            "protocolId": run.protocol_id,
            "index": cmd.index,
            "commandId": cmd.id,
            "commandKey": template.get("key"),
            "commandType": command_type,
        }
        if pipette_id is not None:
            entry["pipetteId"] = pipette_id
            pipette = next((p for p in run.pipettes if p.get("id") == pipette_id), None)
            if pipette is not None:
                entry["pipetteName"] = pipette.get("pipetteName")
                entry["mount"] = pipette.get("mount")
        location: Mapping[str, Any] = (
            {"labwareId": params["labwareId"], "well": params.get("wellName")}
            if "labwareId" in params and command_type != "moveLabware"
            else run.pipette_location.get(pipette_id, {})
            if pipette_id
            else {}
        )
        labware_id = location.get("labwareId")
        if labware_id is not None:
            entry["labwareId"] = labware_id
            labware = next((lw for lw in run.labware if lw.get("id") == labware_id), None)
            if labware is not None:
                entry["labware"] = labware.get("loadName")
                slot = (labware.get("location") or {}).get("slotName")
                if slot is not None:
                    entry["slot"] = slot
            if location.get("well") is not None:
                entry["well"] = location["well"]
        if location.get("addressableArea") is not None:
            entry["addressableArea"] = location["addressableArea"]
        if command_type == "moveLabware":
            entry["labwareId"] = params.get("labwareId")
            entry["newLocation"] = params.get("newLocation")
        if "volume" in params:
            entry["volume"] = params["volume"]
        if false_positive:
            entry["assumedFalsePositive"] = True
        self.emit("command", at, **entry)


# --------------------------------------------------------------------------------------------
# HTTP replies
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Reply:
    status: int
    body: Any
    compact: bool = False  # errors and /health are compact JSON, model bodies are not
    version_headers: tuple[tuple[str, str], ...] = ()  # sent before content-length
    trailing_headers: tuple[tuple[str, str], ...] = ()  # sent after content-type


_ERROR_VERSION_HEADERS = (
    ("opentrons-min-version", str(MIN_API_VERSION)),
    ("opentrons-version", str(API_VERSION)),
)


def _error(
    status: int,
    error_id: str,
    title: str,
    detail: str,
    *,
    code: str = "4000",
    source: Mapping[str, str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> _Reply:
    """robot-server's ErrorBody: ``{"errors": [ErrorDetails]}`` (key order id..errorCode)."""
    details: dict[str, Any] = {"id": error_id, "title": title, "detail": detail}
    if source is not None:
        details["source"] = dict(source)
    if meta is not None:
        details["meta"] = dict(meta)
    details["errorCode"] = code
    return _Reply(status, {"errors": [details]}, True, _ERROR_VERSION_HEADERS)


def _invalid_request(detail: str, source: Mapping[str, str]) -> _Reply:
    return _error(422, "InvalidRequest", "Invalid Request", detail, source=source)


def _run_not_found(run_id: str) -> _Reply:
    return _error(
        404,
        "RunNotFound",
        "Run Not Found",
        f"Error 4000 GENERAL_ERROR (RunNotFoundError): Run {run_id} was not found.",
    )


def _protocol_not_found(protocol_id: str, *, quoted: bool = True) -> _Reply:
    """robot-server words it two ways: a KeyError's text (quoted) or a plain sentence."""
    if quoted:
        detail = f"'Protocol {protocol_id} was not found.'"
    else:
        detail = f"Protocol {protocol_id} not found"
    return _error(404, "ProtocolNotFound", "Protocol Not Found", detail)


class _BadQuery(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _int_query(query: Mapping[str, list[str]], name: str, default: int | None) -> int | None:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError as exc:
        raise _BadQuery(name) from exc


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class RobotSimulator:
    """An Opentrons robot-server on 127.0.0.1 (OT-2 or Flex), driven by an injected clock.

    ``analysis_delay_s`` is how long (clock seconds) a new analysis stays ``pending``;
    ``time_scale`` multiplies every simulated duration (commands, finishing, stopping);
    ``finishing_s``/``stop_s`` are the robot seconds of the post-run home/drop-tip phase after
    a natural end or failure / after a stop. ``action_log`` is a file path (JSON lines are
    appended) or a callable receiving each entry as a dict. ``background_analysis=True``
    answers an upload at once and analyses on a worker thread (real-time use); the default
    analyses during the upload so virtual-time tests are deterministic. ``analysis_overlap=True``
    (dry runs in virtual time) also answers at once, but judges an analysis pending by the
    clock alone (``analysis_delay_s``) and, when a reply needs its result, waits for it: as
    deterministic as the default, while the analysis overlaps with whatever the client does
    until then (a protocol uploaded ahead of its job, say). Like robot-server, it
    keeps at most ``maximum_runs`` runs and ``maximum_unused_protocols`` protocols no run links
    to, deleting the oldest to make room for a new one (robot-server's defaults: 20 and 5).
    """

    def __init__(
        self,
        clock: Clock,
        robot: RobotName = "OT-2",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        analysis_delay_s: float = 0.0,
        faults: Faults | Mapping[str, Any] | None = None,
        action_log: str | Path | Callable[[dict[str, Any]], None] | None = None,
        time_scale: float = 1.0,
        finishing_s: float = 5.0,
        stop_s: float = 5.0,
        command_durations_s: Mapping[str, float] | None = None,
        background_analysis: bool = False,
        analysis_overlap: bool = False,
        name: str | None = None,
        maximum_runs: int = 20,
        maximum_unused_protocols: int = 5,
    ) -> None:
        if robot not in ROBOT_TYPES:
            raise ValueError(f"robot must be 'OT-2' or 'Flex', not {robot!r}")
        if time_scale < 0 or analysis_delay_s < 0:
            raise ValueError("time_scale and analysis_delay_s must not be negative")
        if maximum_runs < 1 or maximum_unused_protocols < 1:
            raise ValueError("maximum_runs and maximum_unused_protocols must be at least 1")
        self.maximum_runs = maximum_runs
        self.maximum_unused_protocols = maximum_unused_protocols
        self.clock = clock
        self.robot: RobotName = robot
        self.robot_type = ROBOT_TYPES[robot]
        self.host = host
        self.requested_port = port
        self.analysis_delay_s = analysis_delay_s
        self.time_scale = time_scale
        self.finishing_s = finishing_s
        self.stop_s = stop_s
        self.durations_s = {**COMMAND_DURATIONS_S, **(command_durations_s or {})}
        self.background_analysis = background_analysis
        self.analysis_overlap = analysis_overlap
        self.name = name or ("opentrons-dev" if robot == "OT-2" else "opentrons-dev-flex")
        self._faults = self._check_faults(self._as_faults(faults))
        self._action_log = action_log
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._log_file: TextIO | None = None  # the action log file, once written to
        self._log_entries: list[dict[str, Any]] = []
        self._protocols: dict[str, _Protocol] = {}
        self._runs: dict[str, _Run] = {}
        self._runs_created = 0  # ever, for faults on the n-th run (old runs are deleted)
        # run number (1-based, in creation order) -> command index at which it fails
        self.failing_runs: dict[int, int] = {}
        self._armed_by_scenario = False
        self._current_run_id: str | None = None
        self._changed_at: datetime | None = None  # last request or fault change that may act
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._engine = _RunEngine(
            robot,
            time_scale=time_scale,
            finishing_s=finishing_s,
            stop_s=stop_s,
            durations_s=self.durations_s,
            faults=lambda: self._faults,
            emit=self._emit,
        )

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> RobotSimulator:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.requested_port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"robot-sim-{self.robot}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (state is kept; the action log is brought up to date)."""
        self.sync()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._log_lock:
            log_file, self._log_file = self._log_file, None
            if log_file is not None:
                log_file.close()

    def __enter__(self) -> RobotSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the robot simulator is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        return f"http://{self.host}:{self.port}"

    # ---- faults and inspection --------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @staticmethod
    def _as_faults(faults: Faults | Mapping[str, Any] | None) -> Faults:
        if faults is None:
            return Faults()
        if isinstance(faults, Faults):
            return faults
        return Faults(**dict(faults))

    def _check_faults(self, faults: Faults) -> Faults:
        if self.robot == "OT-2":
            default = Faults()
            for name in _FLEX_ONLY_FAULTS:
                if getattr(faults, name) != getattr(default, name):
                    raise ValueError(f"fault {name!r} exists only on a Flex")
        if faults.estop is not None and faults.estop not in _ESTOP_ERRORS:
            raise ValueError(f"unknown estop state {faults.estop!r}")
        return faults

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
            base = self._as_faults(faults) if faults is not None else self._faults
            new = self._check_faults(dataclasses.replace(base, **changes))
            old, self._faults = self._faults, new
            self._changed_at = now
            run = self._current_run()
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

    def action_entries(self) -> list[dict[str, Any]]:
        """Every action-log entry so far (after :meth:`sync`), oldest first."""
        self.sync()
        with self._log_lock:
            return copy.deepcopy(self._log_entries)

    def quiet_since(self, since: datetime) -> bool:
        """Whether /health and the runs can only answer as they did at ``since``: no run
        under way, and no request but reads nor fault change since then (virtual-time
        dry runs use it to skip alarm checks; see labctl.devices.QuietWatch)."""
        with self._lock:
            # As of the last request: a run that has ended since only makes this answer
            # "not quiet" once more (the next request brings it up to date).
            run = self._current_run()
            if run is not None and run.status not in TERMINAL_STATUSES:
                return False
            return self._changed_at is None or self._changed_at < since

    def next_change(self) -> datetime | None:
        """Now while a run is under way (it changes as it goes), else None: without
        requests or fault changes the robot stays as it is."""
        with self._lock:
            run = self._current_run()  # as of the last request (see quiet_since)
            under_way = run is not None and run.status not in TERMINAL_STATUSES
            return self.clock.now() if under_way else None

    def run_status(self, run_id: str) -> str:
        """The run's status now (for tests and the GUI's dry-run view)."""
        with self._lock:
            self._sync_locked(self.clock.now())
            return self._runs[run_id].status

    # ---- action log -------------------------------------------------------------------------

    def _emit(self, event: str, at: datetime, **fields: Any) -> None:
        entry = {"event": event, "time": _iso(at), **fields}
        with self._log_lock:
            self._log_entries.append(entry)
            target = self._action_log
            if target is None:
                return
            if callable(target):
                target(copy.deepcopy(entry))
                return
            if self._log_file is None:
                # Kept open, line-buffered: each entry reaches the file whole as it is
                # written (a reader never sees half a line), without an open per command.
                self._log_file = open(target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            self._log_file.write(json.dumps(entry, separators=(",", ":")) + "\n")

    # ---- request handling -------------------------------------------------------------------

    def handle_request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> _Reply | None:
        """Answer one request; None means close the connection without a reply (offline)."""
        if method not in ("GET", "HEAD"):
            with self._lock:
                self._changed_at = self.clock.now()
        if self._faults.offline:
            return None
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query)
        route = _match_route(method, path)
        if route is None:
            return _error(404, "BadRequest", "Bad Request", "Not Found")
        if isinstance(route, str):
            return _error(405, "BadRequest", "Bad Request", "Method Not Allowed")
        handler_name, args = route
        legacy = handler_name == "_get_health"
        version = _requested_version(headers)
        if version is None:
            if legacy:
                return _Reply(
                    422,
                    {"message": "header.opentrons-version: field required", "errorCode": "4000"},
                    True,
                    _ERROR_VERSION_HEADERS,
                )
            return _invalid_request("field required", {"header": "opentrons-version"})
        if version == "invalid":
            if legacy:
                return _Reply(
                    422,
                    {
                        "message": "header.opentrons-version: value is not a valid integer",
                        "errorCode": "4000",
                    },
                    True,
                    _ERROR_VERSION_HEADERS,
                )
            return _invalid_request("value is not a valid integer", {"header": "opentrons-version"})
        used = API_VERSION if version == "*" else min(int(version), API_VERSION)
        if used < MIN_API_VERSION:
            return _error(
                400,
                "OutdatedAPIVersion",
                "Requested HTTP API version no longer supported",
                f"HTTP API version {used} is no longer supported. Please upgrade your Opentrons"
                " App or other client to a newer version.",
            )
        try:
            return getattr(self, handler_name)(
                *args, query=query, body=body, headers=headers, version=used
            )
        except _BadQuery as exc:
            return _invalid_request("value is not a valid integer", {"parameter": exc.name})

    # ---- /health ----------------------------------------------------------------------------

    def _get_health(self, *, version: int, **_: Any) -> _Reply:
        flex = self.robot == "Flex"
        logs = ["/logs/serial.log", "/logs/api.log", "/logs/server.log", "/logs/update_server.log"]
        links = {
            "apiLog": "/logs/api.log",
            "serialLog": "/logs/serial.log",
            "serverLog": "/logs/server.log",
        }
        if flex:
            logs.append("/logs/touchscreen.log")
            links["oddLog"] = "/logs/touchscreen.log"
        links.update(apiSpec="/openapi.json", systemTime="/system/time")
        body = {
            "name": self.name,
            "robot_model": self.robot_type,
            "api_version": SOFTWARE_VERSION,
            "fw_version": "0" if flex else "Virtual Smoothie",
            "board_revision": "UNKNOWN" if flex else "2.1",
            "logs": logs,
            "system_version": "0.0.0",
            "maximum_protocol_api_version": list(MAX_PROTOCOL_API),
            "minimum_protocol_api_version": [2, 15] if flex else [2, 0],
            "robot_serial": "simulator",
            "links": links,
        }
        return _Reply(
            200,
            body,
            compact=True,
            trailing_headers=(
                ("opentrons-version", str(version)),
                ("opentrons-min-version", str(MIN_API_VERSION)),
            ),
        )

    # ---- /protocols -------------------------------------------------------------------------

    def _post_protocols(self, *, headers: Mapping[str, str], body: bytes, **_: Any) -> _Reply:
        try:
            files, fields = _parse_multipart(headers.get("content-type", ""), body)
        except ValueError:
            files, fields = [], {}
        if not files:
            return _invalid_request("field required", {"pointer": "/files"})
        kind = fields.get("protocolKind") or "standard"
        if kind not in ("standard", "quick-transfer"):
            return _error(400, "BadRequest", "Bad Request", f"Invalid protocol_kind: {kind}")
        values: dict[str, Any] = {}
        if "runTimeParameterValues" in fields:
            # A JSON object in a form field (robot-server json.loads it as it is).
            try:
                parsed = json.loads(fields["runTimeParameterValues"])
            except ValueError as exc:
                return _error(500, "UnexpectedError", "Unexpected Internal Error", str(exc))
            if not _rtp_values_ok(parsed):
                return _invalid_request(
                    "runTimeParameterValues must be an object of numbers, booleans and strings",
                    {"parameter": "runTimeParameterValues"},
                )
            values = parsed
        content_hash = _content_hash(files)
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            existing = next(
                (p for p in self._protocols.values() if p.info.content_hash == content_hash), None
            )
            if existing is not None:
                last = existing.analyses[-1]
                if not self._analysis_done(last, now):
                    return _error(
                        503,
                        "LastAnalysisPending",
                        "Last Analysis Still Pending.",
                        f"Analysis {last.id} is still pending.",
                    )
                if _rtp_values_match(last.future.result().run_time_parameters, values):
                    self._emit_upload(now, existing, files, 200)
                    return _Reply(200, {"data": self._protocol_json(existing, now)})
        if existing is not None:
            # The same files with other parameter values: robot-server analyses them again.
            analysis = self._start_analysis(existing.files, values)
            with self._lock:
                now = self.clock.now()
                self._sync_locked(now)
                existing.analyses.append(analysis)
                self._emit_upload(now, existing, files, 200)
                data = self._protocol_json(existing, now)
                data["analysisSummaries"][-1] = {
                    "id": analysis.id,
                    "status": "pending",
                    "runTimeParameters": [],
                }
                return _Reply(200, {"data": data})
        try:
            info = read_protocol(files)  # outside the lock: may wait for the analysis process
        except InputFileError as exc:
            return _error(422, "ProtocolFilesInvalid", "Protocol File(s) Invalid", str(exc))
        except BrokenProcessPool as exc:
            return _error(
                500,
                "UnexpectedError",
                "Unexpected Internal Error",
                f"the analysis process died: {exc}",
            )
        if info.robot_type != self.robot_type:
            theirs = _USER_FACING.get(info.robot_type, (info.robot_type, info.robot_type))[0]
            ours = _USER_FACING[self.robot_type][1]
            return _error(
                422,
                "ProtocolRobotTypeMismatch",
                "Protocol For Different Robot Type",
                f"This protocol is for {theirs} robots. It can't be analyzed or run on this"
                f" robot, which is {ours}.",
            )
        analysis = self._start_analysis(files, values)
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            self._make_room_for_protocol()
            protocol = _Protocol(
                id=_new_id(),
                created_at=now,
                info=info,
                files=list(files),
                key=fields.get("key"),
                kind=kind,
                analyses=[analysis],
            )
            self._protocols[protocol.id] = protocol
            self._emit_upload(now, protocol, files, 201)
            data = self._protocol_json(protocol, now)
            # The creation answer shows the analysis as just started, like the robot's.
            data["analysisSummaries"][-1] = {
                "id": analysis.id,
                "status": "pending",
                "runTimeParameters": [],
            }
            return _Reply(201, {"data": data})

    def _emit_upload(
        self, now: datetime, protocol: _Protocol, files: Sequence[tuple[str, bytes]], status: int
    ) -> None:
        """Log an upload answered with ``status`` (201 new, 200 the stored ``protocol``)."""
        self._emit(
            "protocol_upload",
            now,
            protocolId=protocol.id,
            files=[n for n, _ in files],
            contentHash=protocol.info.content_hash,
            status=status,
        )

    def _start_analysis(
        self, files: Sequence[tuple[str, bytes]], values: Mapping[str, Any]
    ) -> _Analysis:
        """Start analysing ``files`` with run-time parameter ``values`` (on the analysis thread;
        waited for unless ``background_analysis``). Call without the lock."""
        future: Future[ProtocolAnalysis] = _executor().submit(
            analyse_protocol, list(files), dict(values)
        )
        if not (self.background_analysis or self.analysis_overlap):
            future.result()  # analysis errors are results, so this only waits
        with self._lock:
            now = self.clock.now()
            faults = self._faults
            delay = self.analysis_delay_s + faults.analysis_extra_delay_s
            return _Analysis(
                id=_new_id(),
                requested_at=now,
                ready_at=now + timedelta(seconds=delay),
                not_ok=faults.analysis_not_ok,
                future=future,
            )

    def _get_protocols(self, **_: Any) -> _Reply:
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            data = [self._protocol_json(p, now) for p in self._protocols.values()]
            return _Reply(200, {"data": data, "meta": {"cursor": 0, "totalLength": len(data)}})

    def _get_protocol(self, protocol_id: str, **_: Any) -> _Reply:
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            protocol = self._protocols.get(protocol_id)
            if protocol is None:
                return _protocol_not_found(protocol_id)
            runs = [r for r in self._runs.values() if r.protocol_id == protocol_id]
            links = {"referencingRuns": [{"id": r.id, "href": f"/runs/{r.id}"} for r in runs]}
            return _Reply(200, {"data": self._protocol_json(protocol, now), "links": links})

    def _delete_protocol(self, protocol_id: str, **_: Any) -> _Reply:
        with self._lock:
            if protocol_id not in self._protocols:
                return _protocol_not_found(protocol_id)
            if any(r.protocol_id == protocol_id for r in self._runs.values()):
                return _error(
                    409,
                    "ProtocolUsedByRun",
                    "Protocol Used by Run",
                    f"Protocol {protocol_id} is used by a run and cannot be deleted.",
                )
            del self._protocols[protocol_id]
            return _Reply(200, {})

    def _get_analyses(self, protocol_id: str, **_: Any) -> _Reply:
        with self._lock:
            now = self.clock.now()
            protocol = self._protocols.get(protocol_id)
            if protocol is None:
                return _protocol_not_found(protocol_id, quoted=False)
            data = [self._analysis_json(protocol, a, now) for a in protocol.analyses]
            return _Reply(200, {"data": data, "meta": {"cursor": 0, "totalLength": len(data)}})

    def _get_analysis(self, protocol_id: str, analysis_id: str, **_: Any) -> _Reply:
        with self._lock:
            now = self.clock.now()
            protocol = self._protocols.get(protocol_id)
            if protocol is None:
                return _protocol_not_found(protocol_id, quoted=False)
            analysis = next((a for a in protocol.analyses if a.id == analysis_id), None)
            if analysis is None:
                return _error(
                    404,
                    "AnalysisNotFound",
                    "Protocol Analysis Not Found",
                    f"'Analysis {analysis_id} was not found.'",
                )
            return _Reply(200, {"data": self._analysis_json(protocol, analysis, now)})

    def _analysis_done(self, analysis: _Analysis, now: datetime) -> bool:
        """Whether to report the analysis completed; with ``analysis_overlap`` the clock
        alone decides (whoever reads the result then waits for it)."""
        return now >= analysis.ready_at and (self.analysis_overlap or analysis.future.done())

    def _protocol_json(self, protocol: _Protocol, now: datetime) -> dict[str, Any]:
        summaries = []
        for analysis in protocol.analyses:
            if self._analysis_done(analysis, now):
                summaries.append({"id": analysis.id, "status": "completed"})
            else:
                summaries.append({"id": analysis.id, "status": "pending", "runTimeParameters": []})
        data: dict[str, Any] = {
            "id": protocol.id,
            "createdAt": _iso(protocol.created_at),
            "files": [{"name": n, "role": r} for n, r in protocol.info.files],
            "protocolType": protocol.info.protocol_type,
            "robotType": protocol.info.robot_type,
            "metadata": dict(protocol.info.metadata),
            "analyses": [],
            "analysisSummaries": summaries,
        }
        if protocol.key is not None:
            data["key"] = protocol.key
        data["protocolKind"] = protocol.kind
        return data

    def _analysis_json(self, protocol: _Protocol, analysis: _Analysis, now: datetime) -> dict:
        if not self._analysis_done(analysis, now):
            return {"id": analysis.id, "status": "pending", "runTimeParameters": []}
        if analysis.served is None:
            result = analysis.future.result()
            errors = [dict(e) for e in result.errors]
            outcome = result.result
            if analysis.not_ok and not errors:
                at = analysis.requested_at
                inner = _error_occurrence(
                    "PythonException", "4000", "RuntimeError: injected analysis failure", at
                )
                outer_id = _new_id()
                errors = [
                    _error_occurrence(
                        "ExceptionInProtocolError",
                        "4000",
                        "RuntimeError [line 1]: injected analysis failure (simulator fault)",
                        at,
                        error_id=outer_id,
                        wrapped=[inner],
                    )
                ]
                outcome = "not-ok"
            found = [
                t
                for t in (_earliest_command_time(result.commands), _earliest_time(errors))
                if t is not None
            ]
            shift = timedelta(0)
            if found:
                # Pretend the analysis ran right after the upload, on this simulator's clock.
                shift = analysis.requested_at + timedelta(milliseconds=1) - min(found)
            analysis.served = {
                "id": analysis.id,
                "status": "completed",
                "result": outcome,
                "robotType": result.robot_type,
                "runTimeParameters": [dict(p) for p in result.run_time_parameters],
                "commands": _rebase_commands(result.commands, shift),
                "labware": list(result.labware),
                "pipettes": list(result.pipettes),
                "modules": list(result.modules),
                "liquids": list(result.liquids),
                "errors": _rebase_times(errors, shift),
            }
        return analysis.served  # read-only: it is only ever serialised

    # ---- /runs ------------------------------------------------------------------------------

    def _current_run(self) -> _Run | None:
        return self._runs.get(self._current_run_id) if self._current_run_id else None

    def _estop_reply(self) -> _Reply | None:
        state = self._faults.estop
        if self.robot != "Flex" or state is None:
            return None
        error_id, title, detail, code = _ESTOP_ERRORS[state]
        return _error(403, error_id, title, detail, code=code)

    def _post_runs(self, *, body: bytes, **_: Any) -> _Reply:
        with self._lock:
            estop = self._estop_reply()
            if estop is not None:
                return estop
        data: Mapping[str, Any] = {}
        if body.strip():
            try:
                parsed = json.loads(body)
            except ValueError as exc:
                return _invalid_request(str(exc), {"pointer": "/"})
            if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), dict):
                return _invalid_request("field required", {"pointer": "/data"})
            data = parsed["data"]
        protocol_id = data.get("protocolId")
        values = data.get("runTimeParameterValues")
        if values is None:
            values = {}
        elif not _rtp_values_ok(values):
            return _invalid_request(
                "runTimeParameterValues must be an object of numbers, booleans and strings",
                {"pointer": "/data/runTimeParameterValues"},
            )
        analysis: ProtocolAnalysis | None = None
        if protocol_id is not None:
            with self._lock:
                protocol = self._protocols.get(protocol_id)
                if protocol is None:
                    return _protocol_not_found(str(protocol_id))
                future = protocol.analyses[-1].future
                files = list(protocol.files)
            # Outside the lock: a background analysis may still be running.
            analysis = future.result()
            if not _rtp_values_match(analysis.run_time_parameters, values):
                # The run executes the protocol with its own values (robot-server loads it
                # with them when the run is created).
                analysis = _executor().submit(analyse_protocol, files, dict(values)).result()
            setup = next(
                (e for e in analysis.errors if e.get("id") == "analysis-setup-error"), None
            )
            if setup is not None:
                # ASSUMPTION: robot-server lets the protocol's ParameterValueError (a plain
                # ValueError) escape run creation, which its handlers answer with a 500.
                return _error(
                    500, "UnexpectedError", "Unexpected Internal Error", str(setup.get("detail"))
                )
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            if protocol_id is not None and protocol_id not in self._protocols:
                return _protocol_not_found(str(protocol_id))
            current = self._current_run()
            if current is not None and not current.okay_to_clear:
                return _error(
                    409,
                    "RunAlreadyActive",
                    "Run Already Active",
                    "Current run is not idle or stopped.",
                    code="4001",
                )
            if current is not None:
                self._release(current, now)
            # A scenario may fail one particular run (the n-th created, from 1).
            self._runs_created += 1
            n = self._runs_created
            if n in self.failing_runs:
                self._faults = dataclasses.replace(
                    self._faults, fail_at_command=self.failing_runs[n]
                )
            elif self._armed_by_scenario:
                self._faults = dataclasses.replace(self._faults, fail_at_command=None)
            self._armed_by_scenario = n in self.failing_runs
            self._make_room_for_run()
            run = self._new_run(protocol_id, analysis, data, now)
            run.door_blocking = self.robot == "Flex" and self._faults.door_open
            self._runs[run.id] = run
            self._current_run_id = run.id
            extra = {"runTimeParameterValues": dict(values)} if values else {}
            self._emit("run_created", now, runId=run.id, protocolId=protocol_id, **extra)
            return _Reply(201, {"data": self._run_json(run)})

    def _new_run(
        self,
        protocol_id: str | None,
        analysis: ProtocolAnalysis | None,
        data: Mapping[str, Any],
        now: datetime,
    ) -> _Run:
        id_map: dict[str, str] = {}
        loaded_by_command: set[str] = set()
        if analysis is not None:
            # Each run loads its own labware and pipettes: new ids, same keys (as recorded).
            for group in (analysis.labware, analysis.pipettes, analysis.modules):
                for item in group:
                    if _UUID_RE.match(str(item.get("id", ""))):
                        id_map[item["id"]] = _new_id()
            for cmd in analysis.commands:
                result = cmd.get("result") or {}
                for key in ("labwareId", "pipetteId", "moduleId"):
                    if key in result and str(cmd.get("commandType", "")).startswith("load"):
                        loaded_by_command.add(id_map.get(result[key], result[key]))
        templates = [_replace_ids(c, id_map) for c in analysis.commands] if analysis else []
        offsets = []
        for offset in data.get("labwareOffsets") or []:
            if isinstance(offset, dict):
                offsets.append({"id": _new_id(), "createdAt": _iso(now), **offset})
        return _Run(
            id=_new_id(),
            protocol_id=protocol_id,
            created_at=now,
            templates=templates,
            analysis_errors=[_replace_ids(e, id_map) for e in analysis.errors] if analysis else [],
            labware=[_replace_ids(x, id_map) for x in analysis.labware] if analysis else [],
            pipettes=[_replace_ids(x, id_map) for x in analysis.pipettes] if analysis else [],
            modules=[_replace_ids(x, id_map) for x in analysis.modules] if analysis else [],
            liquids=[dict(x) for x in analysis.liquids] if analysis else [],
            loaded_by_command=loaded_by_command,
            labware_offsets=offsets,
            run_time_parameters=[dict(p) for p in analysis.run_time_parameters] if analysis else [],
            id_map=id_map,
        )

    def _make_room_for_run(self) -> None:
        """Delete the oldest runs so a new one keeps at most ``maximum_runs`` (robot-server's
        run auto-deleter: oldest first, whatever their protocol). Call with the lock."""
        excess = len(self._runs) - (self.maximum_runs - 1)
        for run_id in list(self._runs)[: max(0, excess)]:
            del self._runs[run_id]

    def _make_room_for_protocol(self) -> None:
        """Delete the oldest protocols no run links to, so that with a new one at most
        ``maximum_unused_protocols`` are unused (robot-server's protocol auto-deleter: a
        protocol a run links to is never deleted). Call with the lock."""
        used = {r.protocol_id for r in self._runs.values()}
        unused = [pid for pid in self._protocols if pid not in used]
        excess = len(unused) + 1 - self.maximum_unused_protocols
        for pid in unused[: max(0, excess)]:
            del self._protocols[pid]

    def _release(self, run: _Run, now: datetime) -> None:
        """Make ``run`` not current; an idle run is stopped (as the robot does)."""
        if run.status == "idle":
            run.result = _Result.STOPPED
            run.completed_at = now
            self._emit("run_finished", now, runId=run.id, status=run.status)
        run.current = False
        if self._current_run_id == run.id:
            self._current_run_id = None

    def _get_runs(self, *, query: Mapping[str, list[str]], **_: Any) -> _Reply:
        page_length = _int_query(query, "pageLength", None)
        with self._lock:
            self._sync_locked(self.clock.now())
            runs = list(self._runs.values())
            total = len(runs)
            cursor = 0
            if page_length is not None and page_length < total:
                cursor = max(0, total - page_length)
                runs = runs[cursor:]
            links: dict[str, Any] = {}
            if self._current_run_id is not None:
                links["current"] = {"href": f"/runs/{self._current_run_id}"}
            return _Reply(
                200,
                {
                    "data": [self._run_json(r) for r in runs],
                    "links": links,
                    "meta": {"cursor": cursor, "totalLength": total},
                },
            )

    def _get_run(self, run_id: str, **_: Any) -> _Reply:
        with self._lock:
            self._sync_locked(self.clock.now())
            run = self._runs.get(run_id)
            if run is None:
                return _run_not_found(run_id)
            return _Reply(200, {"data": self._run_json(run)})

    def _patch_run(self, run_id: str, *, body: bytes, **_: Any) -> _Reply:
        try:
            parsed = json.loads(body or b"null")
        except ValueError as exc:
            return _invalid_request(str(exc), {"pointer": "/"})
        data = parsed.get("data") if isinstance(parsed, dict) else None
        if not isinstance(data, dict):
            return _invalid_request("field required", {"pointer": "/data"})
        if "current" in data and data["current"] is not False:
            return _invalid_request(
                "unexpected value; permitted: False", {"pointer": "/data/current"}
            )
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            run = self._runs.get(run_id)
            if run is None:
                return _run_not_found(run_id)
            if not run.current:
                return _error(
                    409, "RunStopped", "Run Stopped", f"Run {run_id} is not the current run"
                )
            if data.get("current") is False:
                if not run.okay_to_clear:
                    return self._run_not_idle()
                self._release(run, now)
            return _Reply(200, {"data": self._run_json(run)})

    @staticmethod
    def _run_not_idle() -> _Reply:
        return _error(
            409,
            "RunNotIdle",
            "Run is not idle.",
            "Run is currently active. Allow the run to finish or stop it with a `stop` action"
            " before attempting to modify it.",
            code="4001",
        )

    def _delete_run(self, run_id: str, **_: Any) -> _Reply:
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            run = self._runs.get(run_id)
            if run is None:
                return _run_not_found(run_id)
            if run.current:
                if not run.okay_to_clear:
                    return self._run_not_idle()
                self._release(run, now)
            del self._runs[run_id]
            return _Reply(200, {})

    # ---- run actions ------------------------------------------------------------------------

    def _post_action(self, run_id: str, *, body: bytes, **_: Any) -> _Reply:
        try:
            parsed = json.loads(body or b"null")
        except ValueError as exc:
            return _invalid_request(str(exc), {"pointer": "/"})
        data = parsed.get("data") if isinstance(parsed, dict) else None
        if not isinstance(data, dict):
            return _invalid_request("field required", {"pointer": "/data"})
        action_type = data.get("actionType")
        if action_type is None:
            return _invalid_request("field required", {"pointer": "/data/actionType"})
        if action_type not in _ACTION_TYPES:
            permitted = ", ".join(f"'{a}'" for a in _ACTION_TYPES)
            return _invalid_request(
                f"value is not a valid enumeration member; permitted: {permitted}",
                {"pointer": "/data/actionType"},
            )
        with self._lock:
            now = self.clock.now()
            self._sync_locked(now)
            run = self._runs.get(run_id)
            if run is None:
                return _error(404, "RunNotFound", "Run Not Found", f"Run {run_id} not found.")
            if not run.current:
                return _error(
                    409, "RunStopped", "Run Stopped", f"Run {run_id} is not the current run"
                )
            estop = self._estop_reply()
            if estop is not None:
                return estop
            try:
                self._engine.apply_action(run, action_type, now)
            except _ActionNotAllowed as exc:
                meta = {
                    "type": "RunActionNotAllowedError",
                    "code": "3000",
                    "message": exc.message,
                    "detail": {},
                    "wrapping": [
                        {
                            "type": exc.engine_error,
                            "code": "4000",
                            "message": exc.message,
                            "detail": {},
                            "wrapping": [],
                        }
                    ],
                }
                return _error(
                    409,
                    "RunActionNotAllowed",
                    "Run Action Not Allowed",
                    exc.message,
                    code="3000",
                    meta=meta,
                )
            action = {"id": _new_id(), "createdAt": _iso(now), "actionType": action_type}
            run.actions.append(action)
            self._emit("run_action", now, runId=run.id, actionType=action_type, status=run.status)
            self._sync_locked(now)  # e.g. a zero-length command finishing at once
            return _Reply(201, {"data": action})

    def _sync_locked(self, now: datetime) -> None:
        run = self._current_run()
        if run is not None:
            self._engine.advance(run, now)

    # ---- run views --------------------------------------------------------------------------

    def _visible(self, run: _Run, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Loaded items: fixed ones from the start, the others once their load command ran."""
        return [
            copy.deepcopy(x)
            for x in items
            if x.get("id") not in run.loaded_by_command or x.get("id") in run.loaded
        ]

    def _run_json(self, run: _Run) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": run.id,
            "ok": True,
            "createdAt": _iso(run.created_at),
            "status": run.status,
            "current": run.current,
            "actions": copy.deepcopy(run.actions),
            "errors": copy.deepcopy(run.errors),
            "hasEverEnteredErrorRecovery": run.entered_recovery,
            "pipettes": self._visible(run, run.pipettes),
            "modules": self._visible(run, run.modules),
            "labware": self._visible(run, run.labware),
            "liquids": copy.deepcopy(run.liquids) if run.started_at else [],
            "labwareOffsets": copy.deepcopy(run.labware_offsets),
            "runTimeParameters": copy.deepcopy(run.run_time_parameters),
            "outputFileIds": [],
        }
        if run.protocol_id is not None:
            data["protocolId"] = run.protocol_id
        if run.completed_at is not None:
            data["completedAt"] = _iso(run.completed_at)
        if run.started_at is not None:
            data["startedAt"] = _iso(run.started_at)
        return data

    @staticmethod
    def _command_summary(cmd: _Command) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": cmd.id,
            "key": cmd.template.get("key"),
            "commandType": cmd.template.get("commandType"),
            "createdAt": _iso(cmd.created_at),
        }
        if cmd.started_at is not None:
            out["startedAt"] = _iso(cmd.started_at)
        if cmd.completed_at is not None:
            out["completedAt"] = _iso(cmd.completed_at)
        out["status"] = cmd.status
        if cmd.error is not None:
            out["error"] = copy.deepcopy(cmd.error)
        out["params"] = copy.deepcopy(cmd.template.get("params", {}))
        out["notes"] = []
        return out

    @staticmethod
    def _command_full(cmd: _Command) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": cmd.id,
            "createdAt": _iso(cmd.created_at),
            "commandType": cmd.template.get("commandType"),
            "key": cmd.template.get("key"),
            "status": cmd.status,
            "params": copy.deepcopy(cmd.template.get("params", {})),
        }
        if cmd.status == "succeeded" and "result" in cmd.template:
            out["result"] = copy.deepcopy(cmd.template["result"])
        if cmd.error is not None:
            out["error"] = copy.deepcopy(cmd.error)
        if cmd.started_at is not None:
            out["startedAt"] = _iso(cmd.started_at)
        if cmd.completed_at is not None:
            out["completedAt"] = _iso(cmd.completed_at)
        out["notes"] = []
        return out

    @staticmethod
    def _command_link(run: _Run, cmd: _Command) -> dict[str, Any]:
        return {
            "href": f"/runs/{run.id}/commands/{cmd.id}",
            "meta": {
                "runId": run.id,
                "commandId": cmd.id,
                "index": cmd.index,
                "key": cmd.template.get("key"),
                "createdAt": _iso(cmd.created_at),
            },
        }

    def _get_commands(self, run_id: str, *, query: Mapping[str, list[str]], **_: Any) -> _Reply:
        cursor = _int_query(query, "cursor", None)
        length = _int_query(query, "pageLength", 20) or 20
        with self._lock:
            self._sync_locked(self.clock.now())
            run = self._runs.get(run_id)
            if run is None:
                return _run_not_found(run_id)
            commands = run.commands
            total = len(commands)
            if cursor is None:
                # robot-server 8.1 (the recordings): around the running / last executed command.
                inflight = run.inflight
                queued = next((c for c in commands if c.status == "queued"), None)
                failed = next(
                    (c for c in reversed(commands) if c.status == "failed" and c.error), None
                )
                if inflight is not None:
                    cursor = inflight.index
                elif queued is not None:
                    cursor = queued.index - 1
                elif run.result is _Result.FAILED and failed is not None:
                    cursor = failed.index
                else:
                    cursor = total - length
            start = max(0, min(cursor, total - 1))
            page = commands[start : min(total, start + length)]
            links: dict[str, Any] = {}
            current = run.inflight or next(
                (c for c in reversed(commands) if c.status in ("succeeded", "failed")), None
            )
            if current is not None:
                links["current"] = self._command_link(run, current)
            if run.recovery_target is not None:
                links["currentlyRecoveringFrom"] = self._command_link(
                    run, commands[run.recovery_target]
                )
            return _Reply(
                200,
                {
                    "data": [self._command_summary(c) for c in page],
                    "links": links,
                    "meta": {"cursor": start, "totalLength": total},
                },
            )

    def _get_command(self, run_id: str, command_id: str, **_: Any) -> _Reply:
        with self._lock:
            self._sync_locked(self.clock.now())
            run = self._runs.get(run_id)
            if run is None:
                return _run_not_found(run_id)
            cmd = next((c for c in run.commands if c.id == command_id), None)
            if cmd is None:
                message = f"Command {command_id} does not exist"
                return _error(
                    404,
                    "CommandNotFound",
                    "Run Command Not Found",
                    message,
                    meta={
                        "type": "CommandDoesNotExistError",
                        "code": "4000",
                        "message": message,
                        "detail": {},
                        "wrapping": [],
                    },
                )
            return _Reply(200, {"data": self._command_full(cmd)})

    def _get_command_errors(
        self, run_id: str, *, query: Mapping[str, list[str]], **_: Any
    ) -> _Reply:
        cursor = _int_query(query, "cursor", 0) or 0
        length = _int_query(query, "pageLength", 20) or 20
        with self._lock:
            self._sync_locked(self.clock.now())
            run = self._runs.get(run_id)
            if run is None:
                return _run_not_found(run_id)
            errors = [copy.deepcopy(c.error) for c in run.commands if c.error is not None]
            total = len(errors)
            start = max(0, min(cursor, total - 1))
            return _Reply(
                200,
                {
                    "data": errors[start : min(total, start + length)],
                    "meta": {"cursor": start, "totalLength": total},
                },
            )


# --------------------------------------------------------------------------------------------
# Routing, headers, multipart
# --------------------------------------------------------------------------------------------

_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(pattern), name)
    for method, pattern, name in (
        ("GET", r"^/health$", "_get_health"),
        ("POST", r"^/protocols$", "_post_protocols"),
        ("GET", r"^/protocols$", "_get_protocols"),
        ("GET", r"^/protocols/([^/]+)$", "_get_protocol"),
        ("DELETE", r"^/protocols/([^/]+)$", "_delete_protocol"),
        ("GET", r"^/protocols/([^/]+)/analyses$", "_get_analyses"),
        ("GET", r"^/protocols/([^/]+)/analyses/([^/]+)$", "_get_analysis"),
        ("POST", r"^/runs$", "_post_runs"),
        ("GET", r"^/runs$", "_get_runs"),
        ("GET", r"^/runs/([^/]+)$", "_get_run"),
        ("PATCH", r"^/runs/([^/]+)$", "_patch_run"),
        ("DELETE", r"^/runs/([^/]+)$", "_delete_run"),
        ("POST", r"^/runs/([^/]+)/actions$", "_post_action"),
        ("GET", r"^/runs/([^/]+)/commands$", "_get_commands"),
        ("GET", r"^/runs/([^/]+)/commands/([^/]+)$", "_get_command"),
        ("GET", r"^/runs/([^/]+)/commandErrors$", "_get_command_errors"),
    )
)


def _match_route(method: str, path: str) -> tuple[str, tuple[str, ...]] | str | None:
    """(handler name, path args); "method" if the path exists for another method; None."""
    path_known = False
    for route_method, pattern, name in _ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        if route_method == method:
            return name, match.groups()
        path_known = True
    return "method" if path_known else None


def _requested_version(headers: Mapping[str, str]) -> str | None:
    """The Opentrons-Version header: "*", a number as text, "invalid", or None if missing."""
    value = headers.get("opentrons-version")
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return "*"
    return value if re.fullmatch(r"-?\d+", value) else "invalid"


def _parse_multipart(
    content_type: str, body: bytes
) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """Split a multipart/form-data body into its ``files`` parts and its text fields."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("not multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ValueError("no parts")
    files: list[tuple[str, bytes]] = []
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if name == "files" and filename:
            files.append((Path(filename).name, payload))
        elif isinstance(name, str):
            fields[name] = payload.decode("utf-8", errors="replace")
    return files, fields


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, sim: RobotSimulator) -> None:
        self.sim = sim
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; every answer carries content-length."""

    protocol_version = "HTTP/1.1"
    # Replies go out in several writes; without this, Nagle and the client's delayed ACK
    # stall every kept-alive request by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def handle(self) -> None:
        if self.server.sim.faults.offline:
            return  # accept, then close without a byte: the robot is not answering
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        _log.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        sim = self.server.sim
        try:
            reply = sim.handle_request(self.command, self.path, headers, body)
        except Exception:  # the robot answers 500 rather than dropping the connection
            _log.exception("robot simulator: unhandled error for %s %s", self.command, self.path)
            reply = _error(
                500,
                "UnexpectedError",
                "Unexpected Internal Error",
                "the simulated robot-server failed; see its log",
            )
        if reply is None:
            self.close_connection = True
            return
        if reply.compact:
            payload = json.dumps(reply.body, separators=(",", ":"), ensure_ascii=False)
        else:
            # FastAPI's model responses are pydantic v1 .json(): default separators, ASCII.
            payload = json.dumps(reply.body)
        data = payload.encode("utf-8")
        self.send_response_only(reply.status)
        self.send_header("date", format_datetime(sim.clock.now(), usegmt=True))
        self.send_header("server", "uvicorn")
        for key, value in reply.version_headers:
            self.send_header(key, value)
        self.send_header("content-length", str(len(data)))
        self.send_header("content-type", "application/json")
        for key, value in reply.trailing_headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a simulated robot in real time until interrupted (Ctrl-C)."""
    parser = argparse.ArgumentParser(
        prog="python -m labctl.simulators.opentrons_robot",
        description="Simulated Opentrons robot-server (HTTP API, DEVICES.md section 1).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=31950)
    parser.add_argument("--robot", choices=sorted(ROBOT_TYPES), default="OT-2")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply every simulated duration (0.01 = 100x faster)",
    )
    parser.add_argument(
        "--analysis-delay", type=float, default=2.0, help="seconds a new analysis stays pending"
    )
    parser.add_argument(
        "--action-log",
        type=Path,
        default=None,
        help="append completed physical commands here as JSON lines",
    )
    args = parser.parse_args(argv)
    clock = RealClock()
    sim = RobotSimulator(
        clock,
        args.robot,
        host=args.host,
        port=args.port,
        analysis_delay_s=args.analysis_delay,
        action_log=args.action_log,
        time_scale=args.time_scale,
        background_analysis=True,
    )
    warm_up()
    sim.start()
    print(f"simulated {args.robot} robot-server on {sim.url}", flush=True)
    try:
        while True:
            clock.sleep(3600.0)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
