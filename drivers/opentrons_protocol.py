"""Opentrons Python protocols for labctl's liquid-handling jobs (feed, addition, washout).

:func:`plan_protocol` (and its short form :func:`generate`) turns an LH_RUN job's parameters
(labctl.jobs ``_lh_params``: kind, labware, wells, remove_ul, add_ul, wash, stock_ul, ...;
volumes in µL per well) into the source of an Opentrons Protocol API v2 protocol for one
culture plate on a :class:`DeckLayout` (or for several, ``batch``: the same steps on each
plate in turn), and counts the tips it uses.
:func:`check_locally` runs a protocol through the installed ``opentrons`` package's
simulator (8.8.2, DEVICES.md 1.7), once per distinct source.

How the cells are handled:

- Spent liquid (medium, wash) is aspirated slowly, off the well's centre, 1 mm above the
  bottom, with a new tip for every well (wells hold different cells), and dispensed into a
  waste reservoir.
- Fresh liquid (medium, wash) is dispensed slowly, high up and near the well wall, so it runs
  down the wall instead of onto the cells. The tip never touches the well's liquid, so one
  tip serves every well of a group.
- Wells are handled one plate column at a time (spent medium out, washes, fresh medium in),
  so no well stands dry while the rest of the plate is worked on.
- A stock (or an intermediate dilution of it) goes from a tube into each well's medium near
  the bottom, with a new tip per well, and is mixed in gently.
- Volumes above a pipette's capacity are split into equal parts; each volume is done by the
  pipette needing the fewest parts (the smaller pipette on a tie, for accuracy). Volumes are
  rounded to 0.1 µL.

The generated text is a fixed program whose only variable parts are literals: every value
taken from the job or the workcell enters the code through :func:`_lit` (``repr`` of a
validated str/int/float, or a list of those), so no label can change the program's
structure. It holds nothing per plate or per day (plate, task, title, day; the job key goes
into the uploaded file's name), so identical liquid handling gives identical bytes and
:func:`check_locally` answers a repeated protocol from its cache (the robot itself dedups an
upload only when name and content match, i.e. a retried job). Labels that name liquids
(recipe, compound, wash medium) are kept, for the run log.

The one run-dependent value, the first unused tip of each rack role (Opentrons robots do not
remember tips between runs), is not in the text: it is an integer run-time parameter
(Protocol API 2.18+, ``add_parameters``; :data:`TIP_PARAMETERS` names them) whose value the
controller sends when it creates the run (``runTimeParameterValues``, DEVICES.md 1.3).
:attr:`GeneratedProtocol.run_time_parameters` holds the values a job needs.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from labctl.errors import DeviceFault, LabctlError
from labctl.labware import LabwareNotFound, get_labware

__all__ = [
    "API_LEVEL",
    "PIPETTES",
    "TIP_PARAMETERS",
    "CheckResult",
    "DeckLayout",
    "DeckLayoutError",
    "GeneratedProtocol",
    "GenerationError",
    "OutOfTips",
    "PipetteModel",
    "check_locally",
    "generate",
    "plan_protocol",
]

Robot = Literal["OT-2", "Flex"]
ROBOTS: tuple[Robot, ...] = ("OT-2", "Flex")

# 2.18: the first level with run-time parameters (the first tip of each rack is one); it also
# has load_trash_bin (2.16, needed on a Flex). opentrons 8.8.2 runs up to 2.27; robot software
# 7.3 (2024-05) and later run 2.18.
API_LEVEL = "2.18"

#: The run-time parameter holding the first unused tip (0-based, across the role's racks in
#: slot order, column by column) of each rack role, and the protocol variable of its pipette.
TIP_PARAMETERS: dict[str, str] = {"tips": "first_tip", "small_tips": "first_small_tip"}
_TIP_LABELS = {
    "tips": ("First main tip", "first unused tip in the main pipette's racks"),
    "small_tips": ("First small tip", "first unused tip in the small pipette's racks"),
}

# Clearance above a well or tube bottom for aspirating and for submerged dispensing (mm).
CLEARANCE_MM = 1.0
# How often a spiked well is mixed, and with what share of its volume at most.
MIX_TIMES = 3
MIX_SHARE = 0.25


class GenerationError(LabctlError):
    """A job's parameters cannot be done as an Opentrons protocol on this deck."""

    code = 1010


class OutOfTips(GenerationError):
    """The racks do not hold enough unused tips for the job (refill, then try again).

    ``short`` maps a rack role to (tips needed, tips left).
    """

    def __init__(self, short: Mapping[str, tuple[int, int]]) -> None:
        self.short = dict(short)
        what = ", ".join(
            f"{need} {role.replace('_', ' ')} needed, {left} left"
            for role, (need, left) in short.items()
        )
        super().__init__(f"not enough tips: {what}")


class DeckLayoutError(LabctlError):
    """A workcell ``deck`` setting is invalid (unknown key, bad or colliding slot, ...)."""

    code = 1011


@dataclass(frozen=True)
class PipetteModel:
    """A single-channel pipette: volume range (µL) and flow rates (µL/s).

    ``normal_ul_s`` is used away from the cells (reservoirs, waste), ``gentle_in_ul_s`` for
    aspirating from a culture well and ``gentle_out_ul_s`` for dispensing into one.
    ``low_volume`` is the (min, max) µL of a low-volume mode (``configure_for_volume``).
    """

    name: str
    robot: Robot
    min_ul: float
    max_ul: float
    normal_ul_s: float
    gentle_in_ul_s: float
    gentle_out_ul_s: float
    low_volume: tuple[float, float] | None = None


# Volume ranges as opentrons 8.8.2 reports them (min_volume/max_volume); normal rates are
# its defaults (the Flex 1000 default of 716 µL/s is lowered to spare the reservoirs).
PIPETTES: dict[str, PipetteModel] = {
    p.name: p
    for p in (
        PipetteModel("p1000_single_gen2", "OT-2", 100.0, 1000.0, 274.7, 150.0, 100.0),
        PipetteModel("p300_single_gen2", "OT-2", 20.0, 300.0, 92.86, 46.0, 30.0),
        PipetteModel("p20_single_gen2", "OT-2", 1.0, 20.0, 7.56, 3.78, 3.78),
        PipetteModel("flex_1channel_1000", "Flex", 5.0, 1000.0, 400.0, 150.0, 100.0),
        # Below 5 µL the Flex 50 µL pipette switches to its low-volume mode (1-30 µL).
        PipetteModel("flex_1channel_50", "Flex", 5.0, 50.0, 35.0, 10.0, 10.0, (1.0, 30.0)),
    )
}

# ------------------------------------------------------------------------------ deck layout

# OT-2 slot numbers <-> Flex slot names (Opentrons accepts either form on both robots).
_FLEX_NAMES = ("D1", "D2", "D3", "C1", "C2", "C3", "B1", "B2", "B3", "A1", "A2", "A3")
_FLEX_TRASH_SLOTS = frozenset({"A1", "B1", "C1", "D1", "A3", "B3", "C3", "D3"})

# Per robot: default slot of each role, then the order in which free slots are taken when a
# default is already used by a slot the workcell set.
_DEFAULTS: dict[Robot, dict[str, Any]] = {
    "OT-2": {
        "plate": ["1"],
        "medium": "2",
        "waste": "3",
        "stocks": "4",
        "wash": "5",
        "small_tips": ["7"],
        "tips": ["10", "11"],
        "trash": None,  # the OT-2's fixed trash in slot 12
        "pool": ["2", "3", "5", "6", "4", "8", "9", "7", "1", "10", "11"],
        "medium_labware": "nest_1_reservoir_195ml",
        "wash_labware": "nest_1_reservoir_195ml",
        "waste_labware": "agilent_1_reservoir_290ml",
        "stocks_labware": "opentrons_24_tuberack_nest_1.5ml_snapcap",
        # Filter tips: aerosol barriers keep the pipette from contaminating sterile cultures.
        "pipette": "p1000_single_gen2",
        "tip_rack": "opentrons_96_filtertiprack_1000ul",
        "small_pipette": "p20_single_gen2",
        "small_tip_rack": "opentrons_96_filtertiprack_20ul",
    },
    "Flex": {
        # D1 is slot 1 in OT-2 numbering, the plate slot labctl assumes when none is set.
        "plate": ["D1"],
        "medium": "D2",
        "waste": "D3",
        "stocks": "C1",
        "wash": "C2",
        "small_tips": ["B2"],
        "tips": ["B3", "C3"],
        "trash": "A3",
        "pool": ["D2", "D3", "C2", "C1", "B1", "B2", "A2", "A1", "D1", "B3", "C3"],
        "medium_labware": "nest_1_reservoir_195ml",
        "wash_labware": "nest_1_reservoir_195ml",
        "waste_labware": "agilent_1_reservoir_290ml",
        "stocks_labware": "opentrons_24_tuberack_nest_1.5ml_snapcap",
        "pipette": "flex_1channel_1000",
        "tip_rack": "opentrons_flex_96_filtertiprack_1000ul",
        "small_pipette": "flex_1channel_50",
        "small_tip_rack": "opentrons_flex_96_filtertiprack_50ul",
    },
}

# Workcell deck keys: slot roles, then labware and pipette names. "reservoir" is the fresh
# medium's reservoir (DEVICES.md 10).
_SLOT_KEYS = ("plate", "medium", "wash", "waste", "stocks", "tips", "small_tips", "trash")
_NAME_KEYS = (
    "medium_labware",
    "wash_labware",
    "waste_labware",
    "stocks_labware",
    "pipette",
    "tip_rack",
    "small_pipette",
    "small_tip_rack",
)
_ALIASES = {"reservoir": "medium", "reservoir_labware": "medium_labware"}


def normalize_slot(value: object, robot: Robot) -> str:
    """A deck slot in the robot's own naming: ``"1"``..``"11"`` (OT-2), ``"A1"``..``"D3"`` (Flex).

    Accepts an int, a numeric string or a Flex name on either robot. Raises DeckLayoutError.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DeckLayoutError(f"deck slot {value!r} is not a slot number or name")
    text = str(value).strip().upper()
    if text.isdigit():
        number = int(text)
    elif text in _FLEX_NAMES:
        number = _FLEX_NAMES.index(text) + 1
    else:
        raise DeckLayoutError(f"deck slot {value!r} is not a slot of an {robot}")
    if not 1 <= number <= 12:
        raise DeckLayoutError(f"deck slot {value!r} is not a slot of an {robot}")
    if robot == "OT-2":
        if number == 12:
            raise DeckLayoutError("OT-2 slot 12 holds the fixed trash")
        return str(number)
    return _FLEX_NAMES[number - 1]


@dataclass(frozen=True)
class DeckLayout:
    """Where everything sits on one liquid handler's deck, and which pipettes it carries.

    Slots are in the robot's naming (:func:`normalize_slot`). ``plates`` are the culture
    plate positions (a job's ``deck_slot`` picks one; the first by default). One fresh
    medium per job sits in ``medium`` (loaded by the operator per the prep sheet), the wash
    medium in ``wash``, aspirated liquid goes to ``waste``, stocks and intermediates are in
    tube A1 of the rack in ``stocks``. ``tips`` feed ``pipette`` (on ``pipette_mount``),
    ``small_tips`` feed ``small_pipette`` (on ``small_pipette_mount``; None if the robot has
    none). The mounts default to right and left; the driver sets them to where the robot
    says each pipette is attached (drivers/opentrons_instruments.py).
    ``trash`` is the Flex trash bin's slot (None on an OT-2: fixed trash).
    """

    robot: Robot
    plates: tuple[str, ...]
    medium: str
    wash: str
    waste: str
    stocks: str
    tips: tuple[str, ...]
    small_tips: tuple[str, ...]
    trash: str | None
    medium_labware: str
    wash_labware: str
    waste_labware: str
    stocks_labware: str
    pipette: str
    tip_rack: str
    small_pipette: str | None
    small_tip_rack: str | None
    pipette_mount: str = "right"
    small_pipette_mount: str = "left"

    def __post_init__(self) -> None:
        if self.robot not in ROBOTS:
            raise DeckLayoutError(f"robot must be one of {', '.join(ROBOTS)}, not {self.robot!r}")
        if not self.plates:
            raise DeckLayoutError("the deck needs at least one culture plate slot")
        if not self.tips:
            raise DeckLayoutError("the deck needs at least one tip rack slot")
        mounts = (self.pipette_mount, self.small_pipette_mount)
        if any(m not in ("left", "right") for m in mounts) or len(set(mounts)) != 2:
            raise DeckLayoutError(f"pipette mounts must be left and right, not {mounts}")
        if self.small_pipette is not None and not self.small_tips:
            raise DeckLayoutError(f"{self.small_pipette} needs a small_tips slot")
        used: dict[str, str] = {}
        for role, slot in self._slots():
            if slot != normalize_slot(slot, self.robot):
                raise DeckLayoutError(f"{role}: slot {slot!r} is not in {self.robot} naming")
            if slot in used:
                raise DeckLayoutError(f"{role} and {used[slot]} are both in slot {slot}")
            used[slot] = role
        if self.robot == "Flex":
            if self.trash is None or self.trash not in _FLEX_TRASH_SLOTS:
                raise DeckLayoutError("a Flex needs its trash bin in column 1 or 3 (e.g. A3)")
        elif self.trash is not None:
            raise DeckLayoutError("an OT-2 uses its fixed trash: leave 'trash' unset")
        for role, name in (("pipette", self.pipette), ("small_pipette", self.small_pipette)):
            if name is None:
                continue
            model = PIPETTES.get(name)
            if model is None or model.robot != self.robot:
                known = ", ".join(n for n, p in PIPETTES.items() if p.robot == self.robot)
                raise DeckLayoutError(f"{role} {name!r} is not an {self.robot} pipette ({known})")
        for role in ("medium_labware", "wash_labware", "waste_labware", "stocks_labware"):
            _labware(getattr(self, role), role, tiprack=False)
        _labware(self.tip_rack, "tip_rack", tiprack=True)
        if self.small_pipette is not None:
            if self.small_tip_rack is None:
                raise DeckLayoutError(f"{self.small_pipette} needs a small_tip_rack")
            _labware(self.small_tip_rack, "small_tip_rack", tiprack=True)

    def _slots(self) -> list[tuple[str, str]]:
        out = [("plate", s) for s in self.plates]
        out += [("medium", self.medium), ("wash", self.wash), ("waste", self.waste)]
        out += [("stocks", self.stocks)] + [("tips", s) for s in self.tips]
        if self.small_pipette is not None:
            out += [("small_tips", s) for s in self.small_tips]
        if self.trash is not None:
            out.append(("trash", self.trash))
        return out

    @classmethod
    def default(cls, robot: Robot) -> DeckLayout:
        """The default deck of an OT-2 or a Flex."""
        return cls.from_deck(None, robot)

    @classmethod
    def from_deck(cls, deck: Mapping[str, Any] | None, robot: Robot) -> DeckLayout:
        """From a workcell device's ``deck`` mapping, e.g. ``{plate: 1, reservoir: 2,
        tips: [10, 11], stocks: 4}``; roles not given get the robot's defaults (moved to a
        free slot if the default is taken). ``small_pipette: null`` means none is fitted.
        """
        if robot not in ROBOTS:
            raise DeckLayoutError(f"robot must be one of {', '.join(ROBOTS)}, not {robot!r}")
        given: dict[str, Any] = {}
        for key, value in (deck or {}).items():
            name = _ALIASES.get(key, key)
            if name not in _SLOT_KEYS and name not in _NAME_KEYS:
                raise DeckLayoutError(f"unknown deck key {key!r}")
            if name in given:
                raise DeckLayoutError(f"deck key {key!r} given twice")
            given[name] = value
        d = _DEFAULTS[robot]

        def slots(key: str) -> tuple[str, ...]:
            value = given[key]
            values = value if isinstance(value, (list, tuple)) else [value]
            if not values:
                raise DeckLayoutError(f"deck key {key!r} lists no slot")
            return tuple(normalize_slot(v, robot) for v in values)

        chosen: dict[str, Any] = {}
        for key in ("plate", "tips", "small_tips"):
            if key in given:
                chosen[key] = slots(key)
        for key in ("medium", "wash", "waste", "stocks"):
            if key in given:
                chosen[key] = normalize_slot(given[key], robot)
        if "trash" in given:
            chosen["trash"] = (
                None if given["trash"] is None else normalize_slot(given["trash"], robot)
            )
        names = {k: given.get(k, d[k]) for k in _NAME_KEYS}
        for key, value in names.items():
            if value is None and key not in ("small_pipette", "small_tip_rack"):
                raise DeckLayoutError(f"deck key {key!r} cannot be empty")
            if value is not None and not isinstance(value, str):
                raise DeckLayoutError(f"deck key {key!r} must be a name, not {value!r}")
        if names["small_pipette"] is None:
            names["small_tip_rack"] = None
            chosen.setdefault("small_tips", ())

        taken = {s for v in chosen.values() if v for s in (v if isinstance(v, tuple) else (v,))}
        if "trash" not in chosen and d["trash"] is not None:
            chosen["trash"] = d["trash"]
            taken.add(d["trash"])

        def free(preferred: str) -> str:
            if preferred not in taken:
                return preferred
            for slot in d["pool"]:
                if slot not in taken:
                    return slot
            raise DeckLayoutError(f"no free {robot} deck slot left for a default")

        # Liquids before the small tips: they matter more near their default slots.
        for key in ("plate", "tips", "medium", "waste", "stocks", "wash", "small_tips"):
            if key in chosen:
                continue
            picked = []
            for preferred in d[key] if isinstance(d[key], list) else [d[key]]:
                picked.append(free(preferred))
                taken.add(picked[-1])
            chosen[key] = tuple(picked) if isinstance(d[key], list) else picked[0]
        chosen.setdefault("trash", None)
        return cls(
            robot=robot,
            plates=chosen["plate"],
            medium=chosen["medium"],
            wash=chosen["wash"],
            waste=chosen["waste"],
            stocks=chosen["stocks"],
            tips=chosen["tips"],
            small_tips=chosen["small_tips"],
            trash=chosen["trash"],
            **names,
        )

    def tip_capacity(self) -> dict[str, int]:
        """Tips held by full racks, per rack role (``"tips"``, ``"small_tips"``)."""
        out = {"tips": len(get_labware(self.tip_rack).wells) * len(self.tips)}
        if self.small_pipette is not None and self.small_tip_rack is not None:
            rack = get_labware(self.small_tip_rack)
            out["small_tips"] = len(rack.wells) * len(self.small_tips)
        return out

    def role_of_mount(self, mount: str) -> str | None:
        """The tip role of the pipette on ``mount`` ("tips" on ``pipette_mount``,
        "small_tips" on ``small_pipette_mount``)."""
        if mount == self.pipette_mount:
            return "tips"
        if mount == self.small_pipette_mount and self.small_pipette is not None:
            return "small_tips"
        return None


def _labware(name: str, role: str, *, tiprack: bool) -> Any:
    try:
        lw = get_labware(name)
    except LabwareNotFound:
        raise DeckLayoutError(f"{role}: unknown Opentrons labware {name!r}") from None
    if lw.is_tiprack != tiprack:
        kind = "a tip rack" if tiprack else "not a tip rack"
        raise DeckLayoutError(f"{role}: {name} must be {kind}")
    return lw


# ------------------------------------------------------------------------------ literals


def _lit(value: object) -> str:
    """``value`` as a Python literal: repr of a str, int or finite float, or a list of those.

    The ONLY way data enters generated code. Exact types are required (a bool or a str
    subclass with its own __repr__ is refused), and repr of these types is always a single
    literal token, whatever the text holds.
    """
    if type(value) is str or type(value) is int:
        return repr(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise GenerationError(f"not a finite number: {value!r}")
        return repr(value)
    if type(value) is list or type(value) is tuple:
        return "[" + ", ".join(_lit(v) for v in value) + "]"
    raise GenerationError(f"cannot put a {type(value).__name__} into a protocol")


def _ul(value: float) -> float:
    """A volume rounded to 0.1 µL (as a float, for a stable repr)."""
    return round(float(value), 1) + 0.0  # + 0.0 turns -0.0 into 0.0


# ------------------------------------------------------------------------------ parameters


def _num(params: Mapping[str, Any], key: str, *, default: float | None = None) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenerationError(f"{key} must be a number of µL, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise GenerationError(f"{key} must be a finite volume >= 0 µL, not {value!r}")
    return float(value)


def _text(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise GenerationError(f"{what} must be text, not {type(value).__name__}")
    # Labels only: keep them short and single-line in the run log (repr would escape
    # anything anyway; this is for the operator reading it).
    return " ".join(str(value).split())[:120]


@dataclass(frozen=True)
class _Wash:
    medium: str
    volume_ul: float
    times: int


def _wash(value: object) -> _Wash | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise GenerationError(f"wash must be a mapping or None, not {value!r}")
    times = value.get("times", 1)
    if isinstance(times, bool) or not isinstance(times, int) or not 0 <= times <= 10:
        raise GenerationError(f"wash times must be an integer 0..10, not {times!r}")
    volume = _num(value, "volume_ul")
    if times == 0 or volume == 0:
        return None
    return _Wash(_text(value.get("medium"), "wash medium"), volume, times)


def _wells(params: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
    wells = params.get("wells")
    if wells == "all" or wells is None:
        return names
    if not isinstance(wells, (list, tuple)) or not wells:
        raise GenerationError(f"wells must be a non-empty list of well names, not {wells!r}")
    out: list[str] = []
    for w in wells:
        if type(w) is not str or w not in names:
            raise GenerationError(f"well {w!r} is not a well of the plate")
        if w in out:
            raise GenerationError(f"well {w} is listed twice")
        out.append(w)
    return tuple(out)


def _column_groups(wells: Sequence[str]) -> list[list[str]]:
    """Wells grouped by plate column (the digits of the name), in order of first use."""
    groups: dict[str, list[str]] = {}
    for w in wells:
        m = re.fullmatch(r"[A-Z]+(\d+)", w)
        groups.setdefault(m.group(1) if m else w, []).append(w)
    return list(groups.values())


# ------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class _Pip:
    var: str  # variable in the generated code
    role: str  # tip rack role
    model: PipetteModel
    max_ul: float  # min(pipette, tip)
    min_ul: float
    low_volume: bool = False  # configured for its low-volume mode


def _split(volume: float, pip: _Pip) -> list[float] | None:
    """Equal parts of ``volume`` within ``pip``'s range (0.1 µL steps), None if impossible."""
    v = _ul(volume)
    if v <= 0:
        return []
    n = max(1, math.ceil(v / pip.max_ul - 1e-9))
    part = _ul(v / n)
    last = _ul(v - part * (n - 1))
    parts = [part] * (n - 1) + [last]
    if any(p < pip.min_ul - 1e-9 or p > pip.max_ul + 1e-9 for p in parts):
        return None
    return parts


def _choose(volume: float, pips: Sequence[_Pip], what: str) -> tuple[_Pip, list[float]]:
    """The pipette doing ``volume`` in the fewest parts (the smaller one on a tie)."""
    best: tuple[int, float, _Pip, list[float]] | None = None
    for pip in pips:
        parts = _split(volume, pip)
        if parts is None:
            continue
        key = (len(parts), pip.max_ul)
        if best is None or key < best[:2]:
            best = (len(parts), pip.max_ul, pip, parts)
    if best is None:
        ranges = ", ".join(f"{p.model.name} {p.min_ul:g}-{p.max_ul:g} µL" for p in pips)
        raise GenerationError(f"{what}: {_ul(volume):g} µL cannot be pipetted ({ranges})")
    return best[2], best[3]


@dataclass(frozen=True)
class GeneratedProtocol:
    """A generated protocol and what it needs.

    ``tips`` counts tips used per rack role (``"tips"``, ``"small_tips"``); ``first_tips``
    the rack positions it starts from. ``run_time_parameters`` are the values to send when
    the run is created (``runTimeParameterValues``): the first tip of each rack role the
    protocol uses, under its :data:`TIP_PARAMETERS` name. Volumes are totals over the plate
    in µL.
    """

    source: str
    kind: str
    wells: tuple[str, ...]
    tips: dict[str, int]
    first_tips: dict[str, int]
    medium_ul: float
    wash_ul: float
    stock_ul: float
    waste_ul: float
    run_time_parameters: dict[str, int] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


_KINDS = ("feed", "addition", "washout")


def generate(
    params: Mapping[str, Any],
    layout: DeckLayout,
    robot: Robot,
    *,
    first_tips: Mapping[str, int] | None = None,
) -> str:
    """The protocol source for one LH_RUN job (see :func:`plan_protocol`)."""
    return plan_protocol(params, layout, robot, first_tips=first_tips).source


def plan_protocol(
    params: Mapping[str, Any],
    layout: DeckLayout,
    robot: Robot,
    *,
    first_tips: Mapping[str, int] | None = None,
) -> GeneratedProtocol:
    """Generate the protocol of one LH_RUN job and count what it uses.

    ``first_tips`` gives, per rack role, the 0-based position (across that role's racks in
    slot order, column by column) of the first unused tip; default 0 (full racks). It does
    not change the source: it becomes the job's ``run_time_parameters``.
    Raises GenerationError when the job cannot be done on this deck.
    """
    if robot != layout.robot:
        raise GenerationError(f"the deck layout is for an {layout.robot}, not an {robot}")
    kind = params.get("kind")
    if kind not in _KINDS:
        raise GenerationError(f"kind must be one of {', '.join(_KINDS)}, not {kind!r}")
    load_name = params.get("labware")
    if type(load_name) is not str:
        raise GenerationError(f"labware must be an Opentrons load name, not {load_name!r}")
    try:
        plate_lw = get_labware(load_name)
    except LabwareNotFound:
        raise GenerationError(f"unknown Opentrons labware {load_name!r}") from None
    if plate_lw.is_tiprack:
        raise GenerationError(f"{load_name} is a tip rack, not a culture plate")
    wells = _wells(params, plate_lw.wells)
    plate_slots = _plate_slots(params, layout, robot)
    k = len(plate_slots)

    capacity = layout.tip_capacity()
    starts = {role: 0 for role in capacity}
    for role, index in (first_tips or {}).items():
        if role not in capacity:
            continue
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise GenerationError(f"first tip of {role} must be an integer >= 0")
        starts[role] = index

    big_model = PIPETTES[layout.pipette]
    big_max = min(big_model.max_ul, _tip_ul(layout.tip_rack))
    pips = [_Pip("big", "tips", big_model, big_max, big_model.min_ul)]
    if layout.small_pipette is not None and layout.small_tip_rack is not None:
        sm = PIPETTES[layout.small_pipette]
        sm_max = min(sm.max_ul, _tip_ul(layout.small_tip_rack))
        pips.append(_Pip("small", "small_tips", sm, sm_max, sm.min_ul))

    b = _Body()
    well_cap = plate_lw.capacity_ul
    n = len(wells)
    recipe = _text(params.get("recipe"), "recipe")
    if kind == "addition":
        compound = _text(params.get("compound"), "compound")
        title = f"labctl addition: {compound}"
        _plan_addition(b, params, wells, pips, well_cap)
        summary = f"add {b.stock_per_well:g} uL of {compound} per well, mixed gently"
    else:
        remove = params.get("remove_ul")
        if kind == "washout" and remove is None:
            raise GenerationError("a washout needs remove_ul: the well volume before it")
        remove_ul = _num(params, "remove_ul", default=0.0)
        add_ul = _num(params, "add_ul", default=0.0)
        wash = _wash(params.get("wash"))
        for label, v in (("remove_ul", remove_ul), ("add_ul", add_ul)):
            if v > well_cap:
                raise GenerationError(f"{label} {v:g} µL exceeds the well capacity {well_cap:g} µL")
        if wash is not None and wash.volume_ul > well_cap:
            raise GenerationError(f"wash volume {wash.volume_ul:g} µL exceeds the well capacity")
        if kind == "washout":
            if add_ul <= 0:
                raise GenerationError("a washout needs add_ul > 0: fresh medium after the washes")
            compound = _text(params.get("compound"), "compound")
            title = f"labctl washout: {compound} -> {recipe}"
        else:
            title = f"labctl feed: {recipe}"
        _plan_change(b, wells, pips, remove_ul, add_ul, wash)
        parts = [f"remove {_ul(remove_ul):g} uL"] if remove_ul > 0 else []
        if wash is not None:
            parts.append(f"wash {wash.times} x {_ul(wash.volume_ul):g} uL {wash.medium}")
        if add_ul > 0:
            parts.append(f"add {_ul(add_ul):g} uL {recipe}")
        summary = "; ".join(parts) + " per well" if parts else "nothing to do"

    if k > 1:
        # Every plate of a batch gets the same steps, one plate after the other: k times
        # the tips and liquids of one plate.
        b.tips = {role: used * k for role, used in b.tips.items()}
        b.medium_ul, b.wash_ul = b.medium_ul * k, b.wash_ul * k
        b.stock_ul, b.waste_ul = b.stock_ul * k, b.waste_ul * k
        b.lines = ["for plate in plates:", *("    " + line for line in b.lines)]
    for role, used in sorted(b.tips.items()):
        if used > capacity.get(role, 0):
            raise GenerationError(
                f"the job needs {used} tips from the {role} racks, which hold "
                f"{capacity.get(role, 0)} when full: add tip racks or split the job"
            )
    short = {
        role: (used, capacity[role] - starts[role])
        for role, used in sorted(b.tips.items())
        if starts[role] + used > capacity[role]
    }
    if short:
        raise OutOfTips(short)
    for label, total, lw_name in (
        ("fresh medium", b.medium_ul, layout.medium_labware),
        ("wash medium", b.wash_ul, layout.wash_labware),
        ("waste", b.waste_ul, layout.waste_labware),
    ):
        cap = get_labware(lw_name).capacity_ul
        if total > cap:
            raise GenerationError(f"{label}: {total:g} µL exceeds the {lw_name} ({cap:g} µL)")
    if b.stock_ul > get_labware(layout.stocks_labware).capacity_ul:
        raise GenerationError(f"stock: {b.stock_ul:g} µL does not fit one tube")

    on = f" on each of {k} plates" if k > 1 else ""
    source = _render(
        b,
        layout,
        robot,
        load_name,
        plate_slots,
        pips,
        title=title,
        description=f"{kind} of {n} well{'s' if n != 1 else ''}{on}: {summary}",
    )
    # Only the racks the protocol uses have a parameter (see _render).
    used_roles = [p.role for p in pips if p.var in b.used]
    return GeneratedProtocol(
        source=source,
        kind=str(kind),
        wells=wells,
        tips={r: b.tips.get(r, 0) for r in capacity},
        first_tips=starts,
        medium_ul=_ul(b.medium_ul),
        wash_ul=_ul(b.wash_ul),
        stock_ul=_ul(b.stock_ul),
        waste_ul=_ul(b.waste_ul),
        run_time_parameters={TIP_PARAMETERS[r]: starts[r] for r in sorted(used_roles)},
    )


def _plate_slots(params: Mapping[str, Any], layout: DeckLayout, robot: Robot) -> list[str]:
    """The culture plates' deck slots: ``batch`` (several plates that get the same steps,
    in that order: a list of deck slots), else ``deck_slot``, else the layout's first."""
    batch = params.get("batch")
    if batch is not None:
        if not isinstance(batch, list | tuple) or not batch:
            raise GenerationError(f"batch must list the plates' deck slots, not {batch!r}")
        wanted = list(batch)
    else:
        deck_slot = params.get("deck_slot")
        wanted = [layout.plates[0] if deck_slot is None else deck_slot]
    out: list[str] = []
    for deck_slot in wanted:
        try:
            slot = normalize_slot(deck_slot, robot)
        except DeckLayoutError as exc:
            raise GenerationError(str(exc)) from None
        if slot not in layout.plates:
            raise GenerationError(
                f"deck slot {deck_slot} is not a culture plate slot ({', '.join(layout.plates)})"
            )
        if slot in out:
            raise GenerationError(f"deck slot {deck_slot} is named twice in the batch")
        out.append(slot)
    return out


def _tip_ul(rack: str) -> float:
    return get_labware(rack).capacity_ul


@dataclass
class _Body:
    """Lines of ``run()`` after the loads, and the running counts."""

    lines: list[str] = field(default_factory=list)
    tips: dict[str, int] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)  # pipette variables and labware roles used
    medium_ul: float = 0.0
    wash_ul: float = 0.0
    stock_ul: float = 0.0
    waste_ul: float = 0.0
    stock_per_well: float = 0.0
    low_volume: dict[str, float] = field(default_factory=dict)  # pipette var -> µL

    def tip(self, pip: _Pip, count: int) -> None:
        self.tips[pip.role] = self.tips.get(pip.role, 0) + count
        self.used.add(pip.var)


def _plan_change(
    b: _Body,
    wells: tuple[str, ...],
    pips: Sequence[_Pip],
    remove_ul: float,
    add_ul: float,
    wash: _Wash | None,
) -> None:
    """Feed or washout: per plate column, spent medium out, washes, fresh medium in."""
    n = len(wells)
    rm = _choose(remove_ul, pips, "remove spent medium") if remove_ul > 0 else None
    ad = _choose(add_ul, pips, "add fresh medium") if add_ul > 0 else None
    wa = _choose(wash.volume_ul, pips, "wash") if wash is not None else None
    removes = rm is not None or wa is not None
    # Without removals nothing needs a new tip per well: one group, one tip.
    groups = _column_groups(wells) if removes else [list(wells)]
    b.lines.append(f"for group in {_lit([list(g) for g in groups])}:")
    body: list[str] = []
    if rm is not None:
        pip, parts = rm
        body.append(f"remove({pip.var}, {pip.var}_rates, group, {_lit(parts)})")
        b.tip(pip, n)
        b.waste_ul += sum(parts) * n
        b.used.add("waste")
    if wash is not None and wa is not None:
        pip, parts = wa
        body.append(f"for _ in range({_lit(wash.times)}):")
        body.append(f"    add({pip.var}, {pip.var}_rates, wash['A1'], group, {_lit(parts)})")
        body.append(f"    remove({pip.var}, {pip.var}_rates, group, {_lit(parts)})")
        b.tip(pip, wash.times * (len(groups) + n))
        b.wash_ul += sum(parts) * n * wash.times
        b.waste_ul += sum(parts) * n * wash.times
        b.used.update(("wash", "waste"))
    if ad is not None:
        pip, parts = ad
        body.append(f"add({pip.var}, {pip.var}_rates, medium['A1'], group, {_lit(parts)})")
        b.tip(pip, len(groups))
        b.medium_ul += sum(parts) * n
        b.used.add("medium")
    if not body:
        body.append("pass")
    b.lines += ["    " + line for line in body]


def _plan_addition(
    b: _Body,
    params: Mapping[str, Any],
    wells: tuple[str, ...],
    pips: Sequence[_Pip],
    well_cap: float,
) -> None:
    """Addition: stock (or an intermediate) from tube A1 into each well, mixed gently."""
    # An intermediate dilution (the prep sheet's, when the stock volume is too small to
    # pipette) replaces the stock volume when the job names it.
    inter = params.get("intermediate_ul")
    if inter is not None:
        per_well = _num(params, "intermediate_ul")
    else:
        per_well = _num(params, "stock_ul")
    if per_well <= 0:
        raise GenerationError("an addition needs stock_ul > 0")
    before = _num(params, "well_before_ul", default=0.0)
    if before + per_well > well_cap:
        raise GenerationError(
            f"{before:g} + {per_well:g} µL exceeds the well capacity {well_cap:g} µL"
        )
    try:
        pip, parts = _choose(per_well, pips, "add stock")
    except GenerationError as exc:
        # A pipette with a low-volume mode may still do it, in that mode for the whole job.
        low = [
            _Pip(p.var, p.role, p.model, min(p.max_ul, lv[1]), lv[0], low_volume=True)
            for p in pips
            if (lv := p.model.low_volume) is not None
        ]
        try:
            pip, parts = _choose(per_well, low, "add stock")
        except GenerationError:
            raise GenerationError(
                f"{exc}: use an intermediate dilution (intermediate_ul)"
            ) from None
        b.low_volume[pip.var] = min(parts)
        pips = [pip if p.var == pip.var else p for p in pips]
    n = len(wells)
    # Mix with the largest pipette that can move half the well's volume gently.
    after = before + per_well
    mixer: _Pip | None = None
    mix_ul = 0.0
    for cand in sorted(pips, key=lambda p: -p.max_ul):
        v = _ul(min(cand.max_ul, after * MIX_SHARE))
        if v >= cand.min_ul:
            mixer, mix_ul = cand, v
            break
    b.tip(pip, n)
    if mixer is not None and mixer is not pip:
        b.tip(mixer, n)
    b.stock_ul += sum(parts) * n
    b.stock_per_well = _ul(per_well)
    b.used.add("stocks")
    mix = f"{mixer.var}, {mixer.var}_rates" if mixer is not None else "None, None"
    b.lines.append(
        f"spike({pip.var}, {pip.var}_rates, stocks['A1'], {_lit(list(wells))}, {_lit(parts)}, "
        f"{mix}, {_lit(mix_ul)}, {_lit(MIX_TIMES if mixer is not None else 0)})"
    )


# ------------------------------------------------------------------------------ rendering

_PRELUDE = """\
# Generated by labctl for one liquid-handling job. labctl regenerates it for every job and
# identical jobs give identical files: do not edit it by hand.
from opentrons import protocol_api, types

metadata = {{
    "protocolName": {name},
    "author": "labctl",
    "description": {description},
}}
requirements = {{"robotType": {robot}, "apiLevel": {api}}}

# Positions inside a well as fractions of its half-width (x, y) and half-depth (z) from its
# centre; the API computes them from the labware definition.
OFF_CENTRE_BOTTOM = (0.5, 0.0, -1.0)  # spent liquid out, stock in: away from the centre
NEAR_WALL_HIGH = (0.7, 0.0, 0.8)  # fresh liquid in: high up, runs down the wall
CLEARANCE_MM = {clearance}


def spot(well, where, lift_mm=0.0):
    return types.Location(well.from_center_cartesian(*where) + types.Point(z=lift_mm), well)
"""

_HELPERS = '''\
    def remove(pip, rates, wells, parts):
        """Liquid from each well to waste: a new tip per well, slowly, near the bottom."""
        normal, gentle_in, gentle_out = rates
        for name in wells:
            pip.pick_up_tip()
            for volume in parts:
                pip.flow_rate.aspirate = gentle_in
                pip.aspirate(volume, spot(plate[name], OFF_CENTRE_BOTTOM, CLEARANCE_MM))
                pip.flow_rate.dispense = normal
                pip.flow_rate.blow_out = normal
                pip.dispense(volume, waste["A1"].top(z=-2.0))
                pip.blow_out()
            pip.drop_tip()

    def add(pip, rates, source, wells, parts):
        """Fresh liquid into each well, slowly, high up near the wall: the tip never touches
        the wells' liquid, so one tip serves them all."""
        normal, gentle_in, gentle_out = rates
        pip.pick_up_tip()
        for name in wells:
            target = spot(plate[name], NEAR_WALL_HIGH)
            for volume in parts:
                pip.flow_rate.aspirate = normal
                pip.aspirate(volume, source.bottom(z=CLEARANCE_MM))
                pip.flow_rate.dispense = gentle_out
                pip.flow_rate.blow_out = gentle_out
                pip.dispense(volume, target)
                pip.blow_out(target)
        pip.drop_tip()

    def spike(pip, rates, source, wells, parts, mixer, mixer_rates, mix_volume, mix_times):
        """Stock into each well's medium (a new tip per well), then mixed in gently."""
        for name in wells:
            target = spot(plate[name], OFF_CENTRE_BOTTOM, CLEARANCE_MM)
            pip.pick_up_tip()
            pip.flow_rate.aspirate = rates[1]
            pip.flow_rate.dispense = rates[2]
            for volume in parts:
                pip.aspirate(volume, source.bottom(z=CLEARANCE_MM))
                pip.dispense(volume, target)
            if mixer is not None and mixer is not pip:
                pip.mix(2, parts[0], target)  # rinse the stock out of the tip
                pip.drop_tip()
                mixer.pick_up_tip()
            if mixer is not None:
                mixer.flow_rate.aspirate = mixer_rates[1]
                mixer.flow_rate.dispense = mixer_rates[2]
                mixer.mix(mix_times, mix_volume, target)
                mixer.drop_tip()
            else:
                pip.drop_tip()

'''


def _render(
    b: _Body,
    layout: DeckLayout,
    robot: Robot,
    load_name: str,
    plate_slots: Sequence[str],
    pips: Sequence[_Pip],
    *,
    title: str,
    description: str,
) -> str:
    """The protocol text: fixed prelude, run-time parameters and helpers, then loads and steps
    of this job. Nothing in it depends on the tips used before (see :data:`TIP_PARAMETERS`)."""
    head = _PRELUDE.format(
        name=_lit(title),
        description=_lit(description),
        robot=_lit(robot),
        api=_lit(API_LEVEL),
        clearance=_lit(CLEARANCE_MM),
    )
    params: list[str] = []
    if len(plate_slots) == 1:
        lines = [
            f"plate = ctx.load_labware({_lit(load_name)}, {_lit(plate_slots[0])}, 'culture plate')"
        ]
    else:  # a batch: the steps below loop over the plates (the helpers read ``plate``)
        lines = [
            "plates = ["
            + ", ".join(
                f"ctx.load_labware({_lit(load_name)}, {_lit(slot)}, {_lit(f'culture plate {slot}')})"
                for slot in plate_slots
            )
            + "]"
        ]
    for role, label in _OTHER_LABWARE:
        if role in b.used:
            lw, slot = getattr(layout, f"{role}_labware"), getattr(layout, role)
            lines.append(f"{role} = ctx.load_labware({_lit(lw)}, {_lit(slot)}, {_lit(label)})")
        else:
            lines.append(f"{role} = None")
    if layout.trash is not None:
        lines.append(f"ctx.load_trash_bin({_lit(layout.trash)})")
    for var in ("big", "small"):
        pip = next((p for p in pips if p.var == var), None)
        if pip is None or var not in b.used:
            lines += [f"{var} = None", f"{var}_rates = None"]
            continue
        big = pip.role == "tips"
        slots = layout.tips if big else layout.small_tips
        rack = layout.tip_rack if big else layout.small_tip_rack
        assert rack is not None  # DeckLayout guarantees a rack for a fitted pipette
        per_rack = len(get_labware(rack).wells)
        name = TIP_PARAMETERS[pip.role]
        display, about = _TIP_LABELS[pip.role]
        params.append(
            _ADD_INT.format(
                name=_lit(name),
                display=_lit(display),
                description=_lit(about),
                maximum=_lit(per_rack * len(slots) - 1),
            )
        )
        m = pip.model
        mount = layout.pipette_mount if big else layout.small_pipette_mount
        lines += [
            f"{var}_racks = [ctx.load_labware({_lit(rack)}, s) for s in {_lit(list(slots))}]",
            f"{var} = ctx.load_instrument({_lit(m.name)}, {_lit(mount)}, tip_racks={var}_racks)",
            # The robot checks the value against the parameter's range before the run.
            f"{var}_first = ctx.params.{name}",
            f"{var}.starting_tip = {var}_racks[{var}_first // {_lit(per_rack)}]"
            f".wells()[{var}_first % {_lit(per_rack)}]",
            f"{var}_rates = {_lit([m.normal_ul_s, m.gentle_in_ul_s, m.gentle_out_ul_s])}",
        ]
        if var in b.low_volume:
            lines.append(f"{var}.configure_for_volume({_lit(b.low_volume[var])})")
    lines += ["", f"ctx.comment({_lit(description)})", *b.lines]
    add = "\n\ndef add_parameters(parameters):\n" + "".join(params) if params else ""
    run_head = "\n\ndef run(ctx: protocol_api.ProtocolContext) -> None:\n"
    body = "".join(f"    {line}\n" if line else "\n" for line in lines)
    return head + add + run_head + _HELPERS + body


# One int parameter per tip rack role: 0 = the racks are full.
_ADD_INT = """\
    parameters.add_int(
        variable_name={name},
        display_name={display},
        description={description},
        default=0,
        minimum=0,
        maximum={maximum},
    )
"""


_OTHER_LABWARE = (
    ("medium", "fresh medium"),
    ("wash", "wash medium"),
    ("waste", "waste"),
    ("stocks", "stocks"),
)


# ------------------------------------------------------------------------------ local check


@dataclass(frozen=True)
class CheckResult:
    """What the opentrons simulator ran: run-log entries (nested ones included) and tips
    picked up per mount ("left", "right")."""

    sha256: str
    commands: int
    tips: dict[str, int]

    @property
    def tips_total(self) -> int:
        return sum(self.tips.values())


@dataclass(frozen=True)
class _Failure:
    message: str


_CHECKS: dict[str, CheckResult | _Failure] = {}
# opentrons.simulate is not safe to run from two threads at once; the lock also makes a
# protocol checked by two threads run only once.
_CHECK_LOCK = threading.Lock()
_MAX_MESSAGE = 600


def check_locally(source: str, device: str = "opentrons") -> CheckResult:
    """Simulate ``source`` with the installed opentrons package (in-process, cached by the
    sha256 of the source, failures included: a protocol is deterministic).

    Imports opentrons on first use (~3 s), setting ``OT_API_CONFIG_DIR`` to a temporary
    directory if it is unset so nothing is written to ``~/.opentrons``. Raises DeviceFault
    naming ``device`` with the simulator's error if the protocol fails, or if opentrons is
    not installed.
    """
    digest = hashlib.sha256(source.encode()).hexdigest()
    command = "local protocol check"
    with _CHECK_LOCK:
        found = _CHECKS.get(digest)
        if found is None:
            simulate = _simulator(device, command)
            found = _simulate(simulate, source, digest)
            _CHECKS[digest] = found
    if isinstance(found, _Failure):
        raise DeviceFault(device, command, f"protocol fails in the simulator: {found.message}")
    return found


def _simulator(device: str, command: str) -> Any:
    if not os.environ.get("OT_API_CONFIG_DIR"):
        os.environ["OT_API_CONFIG_DIR"] = tempfile.mkdtemp(prefix="labctl-ot-config-")
    try:
        from opentrons.simulate import simulate
    except ImportError as exc:
        raise DeviceFault(
            device,
            command,
            f"the opentrons package is not installed ({exc}); install it or turn the check off",
        ) from exc
    return simulate


def _simulate(simulate: Any, source: str, digest: str) -> CheckResult | _Failure:
    try:
        runlog, _bundle = simulate(io.StringIO(source), file_name="protocol.py")
    except Exception as exc:  # noqa: BLE001 - the protocol's own code may raise anything
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        if len(text) > _MAX_MESSAGE:
            text = text[:_MAX_MESSAGE] + "..."
        return _Failure(text)
    tips: dict[str, int] = {}
    for entry in runlog:
        payload = entry.get("payload") or {}
        if str(payload.get("text", "")).startswith("Picking up tip"):
            mount = getattr(payload.get("instrument"), "mount", "unknown")
            tips[str(mount)] = tips.get(str(mount), 0) + 1
    return CheckResult(sha256=digest, commands=len(runlog), tips=tips)
