"""What an Opentrons robot has attached, and the deck's pipettes fitted to it.

A generated protocol loads each pipette on a mount; the robot refuses the load when that
mount holds another pipette (``FailedToLoadPipetteError``, error code 3010, at run time: the
robot's own analysis uses virtual pipettes and passes). So before a protocol is generated
the driver reads what is attached and loads each pipette where it is, or refuses the job.

The robot-server's routes (sources in notes/devices-opentrons-driver.md):

- ``GET /instruments`` (robot software 7.0 and later, OT-2 and Flex): ``{"data": [...],
  "meta": {...}}``. A pipette is ``{mount, instrumentType: "pipette", instrumentName,
  instrumentModel, serialNumber, ok: true, data: {channels, min_volume, max_volume}, ...}``
  (``instrumentName`` is the robot's pipette name: ``p20_single_gen2`` on an OT-2,
  ``p1000_single_flex`` on a Flex, whose protocols load it as ``flex_1channel_1000``); the
  Flex gripper is ``{mount: "extension", instrumentType: "gripper", instrumentModel}``; a
  Flex instrument that needs a firmware update is ``{instrumentType, subsystem:
  "pipette_left"|"pipette_right"|"gripper", status, update, ok: false}`` (no mount, name or
  model). On an OT-2 it lists the same cached reading ``/pipettes`` gives.
- ``GET /pipettes`` (every OT-2 software; also on a Flex), read when ``/instruments`` answers
  404: ``{"left": {model, name, id, tip_length, mount_axis, plunger_axis}, "right": {...}}``,
  ``model`` and ``name`` null on an empty mount. Never with ``refresh=true``: that disables
  the pipette motors and would disturb a run.
- ``GET /modules``: ``{"data": [{moduleModel, moduleType, serialNumber, moduleOffset: {slot,
  ...} | null, ...}], "meta"}``; with ``Opentrons-Version: 2`` the legacy ``{"modules":
  [{name, model, moduleModel, serial, ...}]}``.

A pipette is fitted only by the very model the deck names: another one has other volumes
(a p300 cannot move 2 mL in one go, nor a p1000 under 100 µL), takes other tips than the
deck's racks hold, and the protocol's volumes, splits and tip counts are planned for the
named model. A workcell with other pipettes says so in its deck (``pipette``,
``small_pipette``, with their ``tip_rack``/``small_tip_rack``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labctl.errors import DeviceCommunicationError, DeviceNeedsOperator

from .opentrons_http import NotFound, OpentronsClient
from .opentrons_protocol import PIPETTES, DeckLayout, DeckLayoutError, normalize_slot

__all__ = [
    "PIPETTE_ERROR_CODES",
    "AttachedInstruments",
    "AttachedModule",
    "AttachedPipette",
    "Instruments",
    "PipettesNotFitted",
    "check_words",
    "fit",
    "read_instruments",
    "read_modules",
    "robot_pipette_name",
]

log = logging.getLogger(__name__)

MOUNTS = ("left", "right")

#: Run error codes that say a pipette is not what the robot was told (opentrons_shared_data
#: errors/codes.py): 3010 PIPETTE_NOT_PRESENT (FailedToLoadPipetteError,
#: PipetteNotAttachedError), 3013 FIRMWARE_UPDATE_REQUIRED, 3016 INVALID_INSTRUMENT_DATA.
PIPETTE_ERROR_CODES = frozenset({"3010", "3013", "3016"})

# Protocol API load name -> the robot's pipette name where they differ (the Flex's), as in
# opentrons_shared_data/pipette/types.py PIPETTE_API_NAMES_MAP (8.8.2).
_ROBOT_NAMES = {"flex_1channel_1000": "p1000_single_flex", "flex_1channel_50": "p50_single_flex"}

# How long a reading is trusted when nothing else says it is stale (clock seconds): a person
# can change a pipette through the Opentrons App without a restart of the robot.
MAX_AGE_S = 900.0

# Words the refusal carries, so that ``attended`` knows what the operator dealt with.
FITTED_MARK = "the pipettes the deck names are not attached"


def robot_pipette_name(load_name: str) -> str:
    """The name the robot reports for a pipette a protocol loads as ``load_name``."""
    return _ROBOT_NAMES.get(load_name, load_name)


class PipettesNotFitted(DeviceNeedsOperator):
    """The robot does not carry the pipettes the workcell's deck names: nothing was started;
    a person fits them (or changes the workcell), then retries."""


@dataclass(frozen=True)
class AttachedPipette:
    """One pipette as the robot reports it. ``name`` is the robot's pipette name and
    ``model`` its model with version (``p20_single_v2.2``); both None, and ``ok`` False, for
    a Flex pipette that needs a firmware update."""

    mount: str
    name: str | None
    model: str | None = None
    serial: str | None = None
    channels: int | None = None
    ok: bool = True

    def describe(self) -> str:
        if not self.ok or self.name is None:
            return "a pipette that needs a firmware update"
        words = self.name + (f" ({self.model})" if self.model and self.model != self.name else "")
        if self.channels == 96:
            words += ", 96 channels on both mounts"
        return words


@dataclass(frozen=True)
class Instruments:
    """One reading of the robot's instruments: pipettes by mount (an empty mount is absent),
    the Flex gripper's model (or a word on it), and the request it came from. ``known`` is
    False when the robot serves neither ``/instruments`` nor ``/pipettes``."""

    pipettes: Mapping[str, AttachedPipette] = field(default_factory=dict)
    gripper: str | None = None
    source: str = "GET /instruments"
    known: bool = True

    def describe(self) -> str:
        """E.g. ``left p20_single_gen2 (p20_single_v2.2), right nothing``."""
        if not self.known:
            return "attached pipettes unknown (the robot serves neither /instruments nor /pipettes)"
        words = [
            f"{m} {p.describe() if (p := self.pipettes.get(m)) else 'nothing'}" for m in MOUNTS
        ]
        if self.gripper:
            words.append(f"gripper {self.gripper}")
        return ", ".join(words)


@dataclass(frozen=True)
class AttachedModule:
    """One module as ``GET /modules`` reports it; ``slot`` is where it was calibrated (Flex
    module calibration), None when the robot does not say."""

    model: str
    serial: str | None = None
    slot: str | None = None

    def describe(self) -> str:
        return self.model + (f" (calibrated in slot {self.slot})" if self.slot else "")


# ---------------------------------------------------------------------- reading


def read_instruments(client: OpentronsClient) -> Instruments:
    """The attached instruments: ``GET /instruments``, or ``GET /pipettes`` when the robot
    does not serve it (404). A robot that serves neither gives ``known=False``. Raises the
    client's DeviceError when the robot cannot be asked, DeviceCommunicationError for a
    reply of the wrong shape."""
    try:
        reply = client.get("/instruments")
    except NotFound:
        pass
    else:
        return _parsed(client, "GET /instruments", _from_instruments, reply)
    try:
        reply = client.get("/pipettes")
    except NotFound:
        return Instruments(source="", known=False)
    return _parsed(client, "GET /pipettes", _from_pipettes, reply)


def read_modules(client: OpentronsClient) -> list[AttachedModule] | None:
    """The attached modules (``GET /modules``, either shape); None if the robot does not
    serve the route. Raises as :func:`read_instruments`."""
    try:
        reply = client.get("/modules")
    except NotFound:
        return None
    return _parsed(client, "GET /modules", _modules, reply)


def _parsed(client: OpentronsClient, command: str, parse: Any, reply: Any) -> Any:
    try:
        return parse(reply)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise DeviceCommunicationError(
            client.name, command, f"unexpected reply: {exc or type(exc).__name__}"
        ) from None


def _from_instruments(reply: Any) -> Instruments:
    items = reply["data"]
    if not isinstance(items, list):
        raise ValueError("'data' is not a list")
    pipettes: dict[str, AttachedPipette] = {}
    gripper: str | None = None
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("an instrument is not an object")
        kind = item.get("instrumentType")
        # ok is absent from replies before the Flex's firmware-update flow (2023); False is a
        # BadPipette/BadGripper, which has a subsystem and no mount.
        ok = item.get("ok", True) is not False
        if kind == "gripper":
            gripper = _opt(item, "instrumentModel") if ok else "needs a firmware update"
            continue
        if kind != "pipette":
            continue  # something newer: not ours to judge
        mount = item.get("mount") if ok else str(item.get("subsystem", "")).removeprefix("pipette_")
        if mount not in MOUNTS:
            raise ValueError(f"pipette on an unknown mount {mount!r}")
        if not ok:
            pipettes[mount] = AttachedPipette(mount, None, ok=False)
            continue
        data = item.get("data")
        channels = data.get("channels") if isinstance(data, dict) else None
        pipettes[mount] = AttachedPipette(
            mount=mount,
            name=_req(item, "instrumentName"),
            model=_opt(item, "instrumentModel"),
            serial=_opt(item, "serialNumber"),
            channels=channels if isinstance(channels, int) else None,
        )
    return Instruments(pipettes, gripper, "GET /instruments")


def _from_pipettes(reply: Any) -> Instruments:
    pipettes: dict[str, AttachedPipette] = {}
    for mount in MOUNTS:
        entry = reply[mount]
        if not isinstance(entry, dict):
            raise ValueError(f"{mount!r} is not an object")
        name = _opt(entry, "name")
        if name is None:
            continue  # nothing there (or an uncommissioned pipette: unusable either way)
        pipettes[mount] = AttachedPipette(mount, name, _opt(entry, "model"), _opt(entry, "id"))
    return Instruments(pipettes, None, "GET /pipettes")


def _modules(reply: Any) -> list[AttachedModule]:
    items = reply["data"] if "data" in reply else reply["modules"]
    if not isinstance(items, list):
        raise ValueError("the module list is not a list")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a module is not an object")
        offset = item.get("moduleOffset")
        slot = offset.get("slot") if isinstance(offset, dict) else None
        out.append(
            AttachedModule(
                model=_req(item, "moduleModel"),
                serial=_opt(item, "serialNumber") or _opt(item, "serial"),
                slot=slot if isinstance(slot, str) and slot else None,
            )
        )
    return out


def _req(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} missing or not a string")
    return value


def _opt(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


# ---------------------------------------------------------------------- fitting


def fit(layout: DeckLayout, found: Instruments) -> DeckLayout | None:
    """``layout`` with each of its pipettes on the mount where the robot carries that very
    model (the main pipette keeps the right mount and the small one the left when the robot
    carries it on both); None when one is not attached. An unknown reading fits as it is."""
    if not found.known:
        return layout
    wanted = [(layout.pipette, "right")]
    if layout.small_pipette is not None:
        wanted.append((layout.small_pipette, "left"))
    chosen: list[str] = []
    for load_name, preferred in wanted:
        name = robot_pipette_name(load_name)
        order = (preferred, *(m for m in MOUNTS if m != preferred))
        mount = next(
            (
                m
                for m in order
                if m not in chosen and (p := found.pipettes.get(m)) and p.ok and p.name == name
            ),
            None,
        )
        if mount is None:
            return None
        chosen.append(mount)
    if len(chosen) == 1:
        chosen.append(next(m for m in MOUNTS if m != chosen[0]))
    return dataclasses.replace(layout, pipette_mount=chosen[0], small_pipette_mount=chosen[1])


def needed(layout: DeckLayout) -> str:
    """The pipettes the deck names, e.g. ``p1000_single_gen2 (main, 100-1000 µL) and
    p20_single_gen2 (small, 1-20 µL)``."""
    parts = []
    for load_name, role in ((layout.pipette, "main"), (layout.small_pipette, "small")):
        if load_name is None:
            continue
        m = PIPETTES[load_name]
        robot_name = robot_pipette_name(load_name)
        # A Flex reports p1000_single_flex for what protocols load as flex_1channel_1000.
        shown = load_name if robot_name == load_name else f"{load_name} = {robot_name}"
        parts.append(f"{shown} ({role}, {m.min_ul:g}-{m.max_ul:g} µL)")
    return " and ".join(parts)


def not_fitted_message(layout: DeckLayout, found: Instruments) -> str:
    """One sentence for a person: what the deck needs, what is attached on each mount, what
    to do."""
    return (
        f"{FITTED_MARK}: it needs {needed(layout)}, on either mount; attached: "
        f"{found.describe()}. Nothing was started: fit them, or name the fitted pipettes and "
        "their racks in the workcell's deck (pipette, small_pipette), then retry"
    )


class AttachedInstruments:
    """The robot's attached instruments, read once and kept (thread-safe).

    Read again after the link to the robot failed (it may have been restarted:
    ``client.link_losses`` grew), after :data:`MAX_AGE_S` on the client's clock, after
    :meth:`forget` (a run failed for a pipette, the robot forgot a run, a person fitted
    pipettes), and once more before refusing a job (the reading may predate a change).
    """

    def __init__(self, client: OpentronsClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._reading: Instruments | None = None
        self._read_at = 0.0  # clock.monotonic()
        self._losses = -1  # client.link_losses when read
        self._warned = False

    def read(self) -> Instruments:
        """The kept reading, or a new one when it is stale. Raises as
        :func:`read_instruments`."""
        return self._kept() or self._read_now()

    def forget(self) -> None:
        """Read the instruments again next time."""
        with self._lock:
            self._reading = None

    def fitted(self, layout: DeckLayout, command: str) -> DeckLayout:
        """``layout`` with its pipettes on the mounts where they are attached (see
        :func:`fit`). Raises PipettesNotFitted naming what the deck needs and what is
        attached, and the client's errors when the robot cannot be asked."""
        kept = self._kept()
        found = kept or self._read_now()
        out = fit(layout, found)
        if out is None and kept is not None:
            found = self._read_now()  # the kept reading may predate a pipette change
            out = fit(layout, found)
        if out is None:
            raise PipettesNotFitted(self.client.name, command, not_fitted_message(layout, found))
        return out

    def _kept(self) -> Instruments | None:
        """The kept reading while nothing says it is stale, else None."""
        with self._lock:
            if self._reading is None or self.client.link_losses != self._losses:
                return None
            if self.client.clock.monotonic() - self._read_at >= MAX_AGE_S:
                return None
            return self._reading

    def _read_now(self) -> Instruments:
        # The losses counted before the read: one during it leaves the reading stale.
        losses = self.client.link_losses
        now = self.client.clock.monotonic()
        reading = read_instruments(self.client)
        with self._lock:
            self._reading, self._read_at, self._losses = reading, now, losses
        if not reading.known and not self._warned:
            self._warned = True
            log.warning(
                "%s: the robot serves neither /instruments nor /pipettes: the pipettes are "
                "loaded where the deck says (main right, small left) unchecked",
                self.client.name,
            )
        return reading


# ---------------------------------------------------------------------- devices check


def check_words(client: OpentronsClient, layout: DeckLayout) -> tuple[bool, str]:
    """For ``labctl devices check``: (whether the robot fits the deck, words on its pipettes
    per mount, gripper and modules, and on what does not fit). Raises the client's
    DeviceError when the robot cannot be asked."""
    found = read_instruments(client)
    modules = read_modules(client)
    ok = fit(layout, found) is not None
    words = [f"pipettes: {found.describe()}"]
    if not ok:
        words.append(f"NOT the deck's: it needs {needed(layout)}")
    if modules is None:
        words.append("modules unknown (no /modules)")
    else:
        words.append("modules: " + (", ".join(m.describe() for m in modules) or "none"))
        roles = _deck_slots(layout)
        for m in modules:
            slot = _slot(m.slot, layout)
            if slot is not None and slot in roles:
                ok = False
                words.append(f"NOT the deck's: {m.model} sits in slot {slot}, the {roles[slot]}'s")
    return ok, "; ".join(words)


def _deck_slots(layout: DeckLayout) -> dict[str, str]:
    """Deck slot -> the role the workcell's deck gives it."""
    out: dict[str, str] = {}
    for role, slots in (
        ("plate", layout.plates),
        ("tips", layout.tips),
        ("small tips", layout.small_tips),
        ("medium", (layout.medium,)),
        ("wash", (layout.wash,)),
        ("waste", (layout.waste,)),
        ("stocks", (layout.stocks,)),
        ("trash", (layout.trash,) if layout.trash else ()),
    ):
        for slot in slots:
            out.setdefault(slot, role)
    return out


def _slot(value: str | None, layout: DeckLayout) -> str | None:
    if value is None:
        return None
    try:
        return normalize_slot(value, layout.robot)
    except DeckLayoutError:
        return None
