"""What runs inside the analysis processes: opentrons 8.8.2 reading and analysing protocols.

These functions run in child processes forked from the analysis fork server (see
:mod:`labctl.simulators.opentrons_analysis`), each single-threaded: a process runs one call
at a time, which is also what opentrons needs (it is not re-entrant). Nothing here is
called in the simulator's own process, which keeps its interpreter to the controller.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import select
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from labctl.simulators.opentrons_analysis_data import (
    Files,
    ProtocolAnalysis,
    ProtocolSourceInfo,
    content_hash,
)
from labctl.simulators.opentrons_wire import error_occurrence, error_tree_has_code

_log = logging.getLogger(__name__)

# A small protocol of the kind labctl generates (API level, run-time parameter, labware,
# pipette, liquid moves): analysing it once loads what opentrons loads lazily on a first
# analysis (~0.7 s), before any request waits for one.
WARM_PROTOCOL = b"""from opentrons import protocol_api

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


class _Opentrons(NamedTuple):
    """The parts of opentrons used here (imported on first use)."""

    anyio: Any
    do_analyze: Any
    reader: Any
    invalid: type[Exception]


def _opentrons() -> _Opentrons:
    """Import opentrons (once per process: later calls find it in ``sys.modules``)."""
    # opentrons writes its config on import: never into ~/.opentrons from here.
    os.environ.setdefault("OT_API_CONFIG_DIR", tempfile.mkdtemp(prefix="labctl-ot-config-"))
    import anyio
    from opentrons.cli.analyze import _do_analyze
    from opentrons.protocol_reader import ProtocolFilesInvalidError, ProtocolReader

    ot_logger = logging.getLogger("opentrons")
    if not ot_logger.handlers:
        # A failing protocol makes opentrons log a traceback; without a handler Python's
        # last-resort handler would print it to stderr on every analysis.
        ot_logger.addHandler(logging.NullHandler())
    return _Opentrons(anyio, _do_analyze, ProtocolReader, ProtocolFilesInvalidError)


def prepare_fork_server() -> None:
    """In the fork server only (its preload imports labctl.simulators.analysis_server):
    import opentrons and analyse a small protocol once, so every analysis process forked
    from it starts with opentrons loaded and warm; and end at once when the parent has gone
    (``os._exit`` at exit). Letting Python free opentrons' modules one by one took ~0.7 s,
    during which the server still held the parent's stdout and stderr: a caller reading
    them waited that long after labctl ended. (The forked processes end through
    ``os._exit`` anyway.)"""
    _opentrons()
    try:
        child_warm()
    except Exception:  # noqa: BLE001 - the server must come up: its children warm themselves
        _log.warning("warming the analysis fork server failed", exc_info=True)
    # A fork copies only the forking thread: nothing may be left running (anyio's worker
    # threads end with their event loop; wait for them).
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(timeout=5.0)
    atexit.register(_exit_now)


def child_init(niceness: int = 0, owner: int | None = None) -> None:
    """A new analysis process: ignore Ctrl-C, lower its priority by ``niceness``, end when
    process ``owner`` (the program that uses it) ends, load opentrons, and end at once at
    exit."""
    # Ctrl-C reaches the whole process group: the parent decides what stops, not the child.
    # (Also, asyncio.run would otherwise install and restore its own SIGINT handler on every
    # analysis, and restoring it formats the repr of the whole analysis task: 10% of its time.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if owner is not None:
        _end_with(owner)
    if niceness:
        # Analyses ahead of need only save time later; one a request waits for, when both
        # share a core, should not run at half speed behind them.
        os.nice(niceness)
    _opentrons()
    # The child keeps nothing worth tearing down (results go back through the pipe, files
    # live in closed temporary directories): once it is told to stop, end it at once rather
    # than free opentrons' modules one by one, which kept the parent's exit waiting ~0.5 s.
    atexit.register(_exit_now)


def _end_with(owner: int) -> None:
    """End this process as soon as process ``owner`` has ended, however it ended.

    A program closing its analysis service ends its processes; one killed (SIGKILL) cannot.
    Nothing else would: this process is the fork server's child, not the owner's, and it
    holds the fork server's "owner alive" pipe open itself (multiprocessing passes it on so
    that children may fork too), so neither this process nor the fork server would ever
    learn that the owner is gone. A thread waits for the owner's end (a pidfd on Linux,
    else a check every second) and then ends the process at once."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(owner)
        except ProcessLookupError:
            os._exit(0)
        except (AttributeError, OSError):  # no pidfd here (macOS, old Linux): check
            pause = threading.Event()
            while _alive(owner):
                pause.wait(1.0)
        else:
            select.select([fd], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="end-with-owner", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: a new process under the same number
        return False
    return True


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def child_warm() -> bool:
    """Import opentrons and analyse :data:`WARM_PROTOCOL` once per process (in a child, or
    in the fork server, whose children are then born warm). True when done."""
    _warm_once()
    return True


@functools.cache
def _warm_once() -> None:
    # (Cached: a child forked from a warm fork server inherits the cache, and skips this.)
    analysis = child_analyse([("labctl_warm_up.py", WARM_PROTOCOL)], {}, "OT-2 Standard")
    if analysis.result != "ok":  # only slower, never wrong: say so and go on
        _log.warning("warming the analysis process: %s", analysis.errors)


def _write_files(directory: Path, files: Files) -> list[Path]:
    paths = []
    for name, data in files:
        path = directory / Path(name).name  # never let a part's file name escape the dir
        path.write_bytes(data)
        paths.append(path)
    return paths


def child_read(files: Files) -> ProtocolSourceInfo | str:
    """Run opentrons' ProtocolReader on the files: their info, or robot-server's
    ``ProtocolFilesInvalid`` detail if they are not a valid protocol."""
    ot = _opentrons()
    with tempfile.TemporaryDirectory(prefix="labctl-ot-proto-") as tmp:
        paths = _write_files(Path(tmp), files)

        async def _read() -> Any:
            return await ot.reader().read_saved(files=paths, directory=None)

        try:
            source = ot.anyio.run(_read)
        except ot.invalid as exc:
            return str(exc)
    config = source.config
    api = getattr(config, "api_version", None)
    sha_of = {Path(name).name: hashlib.sha256(data).hexdigest() for name, data in files}
    return ProtocolSourceInfo(
        content_hash=content_hash(files),
        files=tuple((f.path.name, str(f.role.value)) for f in source.files),
        file_roles=tuple((sha_of[f.path.name], str(f.role.value)) for f in source.files),
        protocol_type=str(config.protocol_type.value),
        robot_type=str(source.robot_type),
        metadata=dict(sorted(source.metadata.items())),
        api_level=str(api) if api is not None else None,
    )


def child_analyse(files: Files, values: Mapping[str, Any], robot_type: str) -> ProtocolAnalysis:
    """One opentrons analysis of readable files with run-time parameter ``values``, as
    ``python -m opentrons.cli analyze`` makes it; opentrons' own failure gives the analysis
    robot-server reports for it (:func:`crashed`)."""
    ot = _opentrons()
    with tempfile.TemporaryDirectory(prefix="labctl-ot-proto-") as tmp:
        paths = _write_files(Path(tmp), files)

        async def _analyse() -> Any:
            source = await ot.reader().read_saved(files=paths, directory=None)
            return await ot.do_analyze(source, dict(values), {})

        try:
            run_result = ot.anyio.run(_analyse)
        except Exception as exc:  # opentrons itself broke: report it as the robot would
            _log.exception("analysis of %s crashed", [n for n, _ in files])
            return crashed(robot_type, str(exc) or type(exc).__name__)
    summary = run_result.state_summary
    errors = _dump(summary.errors)
    if not errors:
        result = "ok"
    elif any(error_tree_has_code(e, "4005") for e in errors):  # RUNTIME_PARAMETER_VALUE_REQUIRED
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


def crashed(robot_type: str, detail: str) -> ProtocolAnalysis:
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
            error_occurrence(
                "UnexpectedAnalysisError",
                "4000",
                detail,
                datetime.fromtimestamp(0, timezone.utc),
                error_id="analysis-setup-error",
            ),
        ),
    )


def _dump(models: Sequence[Any]) -> tuple[Mapping[str, Any], ...]:
    return tuple(m.model_dump(mode="json", exclude_none=True) for m in models)
