"""The pipettes attached to the simulated robot, as robot-server shows and uses them.

A robot is given its pipettes per mount (``{"left": "p20_single_gen2", "right":
"p1000_single_gen2"}``; a pipette name, a Flex protocol load name such as
``flex_1channel_1000``, or a model such as ``p300_single_v1``; ``None`` leaves the mount empty).
From them come ``GET /instruments``, the legacy ``GET /pipettes`` and, in a run, the failure of
a ``loadPipette`` the mount cannot serve. Sources: notes/devices-opentrons-sim.md
(robot-server ``instruments/router.py``, opentrons 8.8.2's ``protocol_engine/execution/
equipment.py`` and its hardware simulator ``hardware_control/backends/simulator.py``).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from labctl.simulators.opentrons_wire import RobotName, error_occurrence, protocol_failure

MOUNTS = ("left", "right")

#: What each robot carries unless told otherwise: the pipettes labctl's generated protocols
#: load (drivers/opentrons_protocol.py ``_DEFAULTS``).
DEFAULT_INSTRUMENTS: Mapping[RobotName, Mapping[str, str]] = {
    "OT-2": {"left": "p20_single_gen2", "right": "p1000_single_gen2"},
    "Flex": {"left": "flex_1channel_50", "right": "flex_1channel_1000"},
}
#: The stock robot-server's simulated OT-2 (robot-server/simulators/test.json), which the
#: recordings in shared/reference/opentrons-http/ were made on.
STOCK_OT2_INSTRUMENTS: Mapping[str, str] = {"left": "p10_single_v1", "right": "p300_single_v1"}

InstrumentConfig = Mapping[str, str | None]


@dataclasses.dataclass(frozen=True)
class PipetteSpec:
    """One pipette type as opentrons 8.8.2 describes it: robot-server's ``instrumentName``
    (also ``loadPipette``'s ``pipetteName``), its newest model, channels, volume range in µL
    (default liquid class), the names it may stand in for, and its serial number's key."""

    name: str
    model: str
    channels: int
    min_volume: float
    max_volume: float
    back_compat: tuple[str, ...]
    serial_key: str
    robot: RobotName


def _spec(
    name: str, model: str, ch: int, lo: float, hi: float, key: str, *compat: str
) -> PipetteSpec:
    robot: RobotName = "Flex" if name.endswith("_flex") else "OT-2"
    return PipetteSpec(name, model, ch, lo, hi, tuple(compat), key, robot)


# Values from opentrons 8.8.2's hardware simulators (tests check them against opentrons).
PIPETTES: Mapping[str, PipetteSpec] = {
    s.name: s
    for s in (
        _spec("p10_single", "p10_single_v1.5", 1, 1.0, 10.0, "P10S"),
        _spec("p10_multi", "p10_multi_v1.6", 8, 1.0, 10.0, "P10M"),
        _spec("p50_single", "p50_single_v1.5", 1, 5.0, 50.0, "P50S"),
        _spec("p50_multi", "p50_multi_v1.5", 8, 5.0, 50.0, "P50M"),
        _spec("p300_single", "p300_single_v1.5", 1, 30.0, 300.0, "P3HS"),
        _spec("p300_multi", "p300_multi_v1.5", 8, 30.0, 300.0, "P3HM"),
        _spec("p1000_single", "p1000_single_v1.5", 1, 100.0, 1000.0, "P1KS"),
        _spec("p20_single_gen2", "p20_single_v2.2", 1, 1.0, 20.0, "P20S", "p10_single"),
        _spec("p20_multi_gen2", "p20_multi_v2.1", 8, 1.0, 20.0, "P20M", "p10_multi"),
        _spec("p300_single_gen2", "p300_single_v2.1", 1, 20.0, 300.0, "P3HS", "p300_single"),
        _spec("p300_multi_gen2", "p300_multi_v2.1", 8, 20.0, 300.0, "P3HM", "p300_multi"),
        _spec("p1000_single_gen2", "p1000_single_v2.2", 1, 100.0, 1000.0, "P1KS", "p1000_single"),
        _spec("p50_single_flex", "p50_single_v3.6", 1, 5.0, 50.0, "P50S"),
        _spec("p50_multi_flex", "p50_multi_v3.5", 8, 5.0, 50.0, "P50M"),
        _spec("p1000_single_flex", "p1000_single_v3.7", 1, 5.0, 1000.0, "P1KS"),
        _spec("p1000_multi_flex", "p1000_multi_v3.5", 8, 5.0, 1000.0, "P1KM"),
    )
}
#: The Flex protocol API's load names (``load_instrument("flex_1channel_1000", ...)``).
FLEX_LOAD_NAMES: Mapping[str, str] = {
    "flex_1channel_50": "p50_single_flex",
    "flex_8channel_50": "p50_multi_flex",
    "flex_1channel_1000": "p1000_single_flex",
    "flex_8channel_1000": "p1000_multi_flex",
}
# GEN1 "v1" pipettes carry the old barcode form (opentrons/tools/write_pipette_memory.py).
_V1_SERIAL_KEYS = {"P3HS": "P300S", "P3HM": "P300M", "P1KS": "P1000S"}
_MODEL = re.compile(r"^(p\d+_(?:single|multi))_v(\d+)(?:\.(\d+))?$")
_GENERATION_SUFFIX = {1: "", 2: "_gen2", 3: "_flex"}


@dataclasses.dataclass(frozen=True)
class AttachedPipette:
    """A pipette on a mount: its type, model (robot-server's ``instrumentModel``) and
    serial number (``serialNumber``, opentrons' ``pipette_id``)."""

    mount: str
    spec: PipetteSpec
    model: str
    serial: str

    def serves(self, pipette_name: str) -> bool:
        """Whether ``loadPipette`` of ``pipette_name`` loads this pipette: its own name or
        one it is back-compatible with (as opentrons' hardware simulator decides)."""
        return pipette_name == self.spec.name or pipette_name in self.spec.back_compat


def _pipette(robot: RobotName, mount: str, given: str) -> AttachedPipette:
    """The pipette a config names (name, Flex load name or model) on ``mount``."""
    name = FLEX_LOAD_NAMES.get(given, given)
    model: str | None = None
    match = _MODEL.match(given)
    if match is not None:
        generation = int(match.group(2))
        name = match.group(1) + _GENERATION_SUFFIX.get(generation, "?")
        model = given
    spec = PIPETTES.get(name)
    if spec is None:
        raise ValueError(f"{mount}: unknown pipette {given!r} (known: {', '.join(PIPETTES)})")
    if spec.robot != robot:
        raise ValueError(f"{mount}: {given!r} is not a pipette for the {robot}")
    model = model or spec.model
    version = model.rsplit("_v", 1)[1].split(".")
    number = f"20230101A0{MOUNTS.index(mount) + 1}"  # left A01, right A02
    if len(version) == 1:
        serial = _V1_SERIAL_KEYS.get(spec.serial_key, spec.serial_key) + number
    else:
        serial = f"{spec.serial_key}V{version[0]}{version[1]}{number}"
    return AttachedPipette(mount, spec, model, serial)


def attach(robot: RobotName, config: InstrumentConfig | None) -> dict[str, AttachedPipette]:
    """The pipettes per mount for ``config`` (None: :data:`DEFAULT_INSTRUMENTS`); a mount
    missing or ``None`` is empty. ValueError for an unknown mount or pipette, or a pipette
    of the other robot."""
    if config is None:
        config = DEFAULT_INSTRUMENTS[robot]
    unknown = set(config) - set(MOUNTS)
    if unknown:
        raise ValueError(f"unknown mount(s) {sorted(unknown)}: the mounts are left and right")
    return {
        mount: _pipette(robot, mount, given)
        for mount in MOUNTS
        if (given := config.get(mount)) is not None
    }


# --------------------------------------------------------------------------------------------
# What robot-server answers
# --------------------------------------------------------------------------------------------


def instruments_body(robot: RobotName, attached: Mapping[str, AttachedPipette]) -> dict[str, Any]:
    """``GET /instruments``: robot-server's ``Pipette`` models, left then right. A Flex adds
    the firmware version, calibration offset and tip sensor state (its simulation's values:
    firmware 1, default offset 0, no tip); on an OT-2 those are None, so not sent."""
    data = []
    for mount in MOUNTS:
        pipette = attached.get(mount)
        if pipette is None:
            continue
        item: dict[str, Any] = {
            "mount": mount,
            "instrumentType": "pipette",
            "instrumentModel": pipette.model,
            "serialNumber": pipette.serial,
            "subsystem": f"pipette_{mount}",
            "ok": True,
        }
        if robot == "Flex":
            item["firmwareVersion"] = "1"
        item["data"] = {
            "channels": pipette.spec.channels,
            "min_volume": pipette.spec.min_volume,
            "max_volume": pipette.spec.max_volume,
        }
        if robot == "Flex":
            item["data"]["calibratedOffset"] = {
                "offset": {"x": 0.0, "y": 0.0, "z": 0.0},
                "source": "default",
            }
        item["instrumentName"] = pipette.spec.name
        if robot == "Flex":
            item["state"] = {"tipDetected": False}
        data.append(item)
    return {"data": data, "meta": {"cursor": 0, "totalLength": len(data)}}


# Legacy /pipettes axis names (robot-server service/legacy/routers/pipettes.py).
_AXES: Mapping[RobotName, Mapping[str, tuple[str, str]]] = {
    "OT-2": {"left": ("z", "b"), "right": ("a", "c")},
    "Flex": {"left": ("z_l", "p_l"), "right": ("z_r", "p_r")},
}


def pipettes_body(robot: RobotName, attached: Mapping[str, AttachedPipette]) -> dict[str, Any]:
    """The legacy ``GET /pipettes``: every mount, nulls for an empty one (no tip: length 0)."""
    body = {}
    for mount in MOUNTS:
        pipette = attached.get(mount)
        mount_axis, plunger_axis = _AXES[robot][mount]
        body[mount] = {
            "model": pipette.model if pipette else None,
            "name": pipette.spec.name if pipette else None,
            "tip_length": 0.0 if pipette else None,
            "mount_axis": mount_axis,
            "plunger_axis": plunger_axis,
            "id": pipette.serial if pipette else None,
        }
    return body


# --------------------------------------------------------------------------------------------
# A run that loads a pipette the robot does not carry
# --------------------------------------------------------------------------------------------

_EPOCH = datetime.fromtimestamp(0, timezone.utc)  # templates: the run engine restamps them
_INNER_ID = "load-pipette-error"


def load_error(pipette_name: str, mount: str, attached: AttachedPipette | None) -> dict[str, Any]:
    """The error of a ``loadPipette`` of ``pipette_name`` on ``mount`` holding ``attached``
    that does not serve it (a template: the run engine gives it its id and time).

    Another pipette on the mount: opentrons' hardware raises RuntimeError("mount RIGHT:
    expected instrument ... but got <model>"), which the engine's equipment handler raises
    as FailedToLoadPipetteError (3010) -- the error robot-server's simulated robot gives.
    An empty mount: the handler reads ``pipette_id`` from the empty dict the hardware has for
    it, and the engine wraps that KeyError as a PythonException (4000). ASSUMPTION: read
    from opentrons 8.8.2's code, not seen on a robot; the traceback opentrons puts in
    errorInfo is left out."""
    if attached is not None:
        detail = (
            f"mount {mount.upper()}: expected instrument {pipette_name} but got {attached.model}"
        )
        return error_occurrence(
            "FailedToLoadPipetteError", "3010", detail, _EPOCH, error_id=_INNER_ID
        )
    info = {"args": "('pipette_id',)", "class": "KeyError"}
    return error_occurrence(
        "PythonException", "4000", "KeyError: 'pipette_id'", _EPOCH, error_id=_INNER_ID, info=info
    )


def load_instrument_lines(files: Sequence[tuple[str, bytes]]) -> list[int]:
    """The lines of the protocol's ``load_instrument(...)`` calls, in source order (the
    line opentrons names in a run error is the failing call's own line)."""
    lines: list[int] = []
    for name, data in files:
        if not name.endswith(".py"):
            continue
        try:
            tree = ast.parse(data)
        except (SyntaxError, ValueError):
            continue
        lines.extend(
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load_instrument"
        )
    return sorted(lines)


@dataclasses.dataclass(frozen=True)
class LoadFailure:
    """Where a run fails for want of a pipette: the index of its ``loadPipette`` command,
    that command's error and the run's error (templates)."""

    index: int
    command_error: dict[str, Any]
    run_error: dict[str, Any]


def load_failure(
    commands: Sequence[Mapping[str, Any]],
    attached: Mapping[str, AttachedPipette],
    files: Sequence[tuple[str, bytes]],
) -> LoadFailure | None:
    """The first ``loadPipette`` of ``commands`` (an analysis, which loads virtual pipettes
    and so never fails here) that the attached pipettes do not serve, or None. The n-th
    ``loadPipette`` is taken to come from the n-th ``load_instrument`` call in the source
    (true of protocols that load their pipettes once each, as labctl's do)."""
    loads = 0
    for index, command in enumerate(commands):
        if command.get("commandType") != "loadPipette":
            continue
        params: Mapping[str, Any] = command.get("params") or {}
        name, mount = str(params.get("pipetteName")), str(params.get("mount"))
        pipette = attached.get(mount)
        if pipette is None or not pipette.serves(name):
            inner = load_error(name, mount, pipette)
            lines = load_instrument_lines(files)
            line = lines[loads] if loads < len(lines) else None
            return LoadFailure(index, inner, protocol_failure(inner, _EPOCH, line))
        loads += 1
    return None
