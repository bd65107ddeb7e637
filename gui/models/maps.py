"""Deck maps of the liquid handlers and slot maps of the incubators, with the plates on them.

Positions come from the workcell each live run was registered with (a robot's ``deck``
roles; an incubator's ``slots``), plates from :func:`labctl.reports.locations.plate_locations`
(the jobs the store recorded). A workcell that names no deck role gets the robot's default
slots, computed as the Opentrons driver does (:func:`deck_roles`: the console may not import
drivers; a test compares the two). Plain Python, no Qt; runs on the worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from labctl.errors import LabctlError
from labctl.reports.locations import PlateLocation, plate_locations
from labctl.store import Store
from labctl.workcell import INCUBATOR_DRIVERS, MOVER_DRIVERS, parse_workcell

__all__ = [
    "DeckMap",
    "DeckPosition",
    "Maps",
    "SlotMap",
    "deck_roles",
    "maps_of",
]

ENDED = ("completed", "aborted", "failed")
LIQUID_HANDLER_DRIVERS = ("opentrons",)
#: Deck slots in the order a person sees them from the front, top row first.
OT2_ROWS = (("10", "11", "12"), ("7", "8", "9"), ("4", "5", "6"), ("1", "2", "3"))
FLEX_ROWS = (("A1", "A2", "A3"), ("B1", "B2", "B3"), ("C1", "C2", "C3"), ("D1", "D2", "D3"))
_FLEX = tuple(s for row in reversed(FLEX_ROWS) for s in row)  # D1 = 1 ... A3 = 12
ROLE_NAMES = {
    "plate": "culture plate",
    "medium": "medium reservoir",
    "wash": "wash reservoir",
    "waste": "waste",
    "stocks": "stocks",
    "tips": "tips",
    "small_tips": "small tips",
    "trash": "trash",
}
# Each robot's default slot per role and the order free slots are taken in when a default
# is already used: drivers/opentrons_protocol.py _DEFAULTS (DeckLayout.from_deck).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "OT-2": {
        "plate": ["1"], "medium": "2", "waste": "3", "stocks": "4", "wash": "5",
        "small_tips": ["7"], "tips": ["10", "11"], "trash": "12",
        "pool": ["2", "3", "5", "6", "4", "8", "9", "7", "1", "10", "11"],
    },
    "Flex": {
        "plate": ["D1"], "medium": "D2", "waste": "D3", "stocks": "C1", "wash": "C2",
        "small_tips": ["B2"], "tips": ["B3", "C3"], "trash": "A3",
        "pool": ["D2", "D3", "C2", "C1", "B1", "B2", "A2", "A1", "D1", "B3", "C3"],
    },
}  # fmt: skip
_ALIASES = {"reservoir": "medium"}
_WHERE = re.compile(
    r"^(?P<dev>\S+) (?:deck position (?P<deck>\S+)|slot (?P<slot>\d+)|(?P<t>transfer station))$"
)


@dataclass(frozen=True)
class DeckPosition:
    """One slot of a deck: its role (a key of :data:`ROLE_NAMES`, "" for none), whether
    the workcell set it or it is the robot's default, and the plates on it now."""

    slot: str
    role: str
    default: bool
    plates: tuple[str, ...] = ()

    @property
    def role_text(self) -> str:
        return ROLE_NAMES.get(self.role, "")


@dataclass(frozen=True)
class DeckMap:
    """A liquid handler's deck, its slots in rows as seen from the front (top row first)."""

    device: str
    robot: str
    rows: tuple[tuple[DeckPosition, ...], ...]

    def position(self, slot: str) -> DeckPosition:
        return next(p for row in self.rows for p in row if p.slot == slot)


@dataclass(frozen=True)
class SlotMap:
    """An incubator: its slots (1..n) with the plate in each, and its transfer station."""

    device: str
    slots: int
    plates: Mapping[int, str]  # slot -> plate text
    transfer: tuple[str, ...] = ()
    moving: tuple[str, ...] = ()  # plates on their way in or out, in words


@dataclass(frozen=True)
class Maps:
    """Every deck and incubator of the live runs' workcells, and the plates elsewhere (in
    the arm's gripper, with the operator, or not known for certain)."""

    decks: tuple[DeckMap, ...]
    incubators: tuple[SlotMap, ...]
    elsewhere: tuple[str, ...]
    movers: tuple[tuple[str, tuple[str, ...]], ...] = ()  # plate movers and their stations


def deck_roles(deck: Mapping[str, Any] | None, robot: str) -> dict[str, tuple[str, bool]]:
    """Slot -> (role, set by the workcell) of a robot's deck, as the Opentrons driver lays it
    out (roles not given take their default slot, or the next free one)."""
    d = _DEFAULTS["Flex" if robot == "Flex" else "OT-2"]
    flex = robot == "Flex"
    given: dict[str, tuple[str, ...]] = {}
    for key, value in (deck or {}).items():
        role = _ALIASES.get(str(key), str(key))
        if role not in ROLE_NAMES or value is None:
            continue  # labware and pipette names, or "no small pipette"
        values = value if isinstance(value, (list, tuple)) else [value]
        given[role] = tuple(_slot(v, flex) for v in values)
    out: dict[str, tuple[str, bool]] = {}
    for role, slots in given.items():
        for s in slots:
            out[s] = (role, True)
    if "trash" not in given:
        out.setdefault(d["trash"], ("trash", False))
    for role in ("plate", "tips", "medium", "waste", "stocks", "wash", "small_tips"):
        if role in given:
            continue
        defaults = d[role] if isinstance(d[role], list) else [d[role]]
        for preferred in defaults:
            slot = (
                preferred
                if preferred not in out
                else next((s for s in d["pool"] if s not in out), None)
            )
            if slot is not None:
                out[slot] = (role, False)
    return out


def _slot(value: object, flex: bool) -> str:
    """A slot in the robot's own naming ("1".."12" on an OT-2, "A1".."D3" on a Flex)."""
    text = str(value).strip().upper()
    if text.isdigit() and flex and 1 <= int(text) <= 12:
        return _FLEX[int(text) - 1]
    if not text.isdigit() and not flex and text in _FLEX:
        return str(_FLEX.index(text) + 1)
    return text


def maps_of(store: Store) -> Maps:
    """The maps of every live run's workcell, with where each plate is now."""
    devices: dict[str, tuple[str, dict[str, Any]]] = {}  # name -> (driver, settings)
    located: list[tuple[str, PlateLocation]] = []  # (plate text, location)
    runs = [r for r in store.list_runs() if r.state not in ENDED]
    for run in runs:
        text = run.workcell_text or ""
        if text.strip():
            try:
                wc = parse_workcell(text, f"run {run.id}'s workcell")
            except LabctlError:
                wc = None
            for dev in wc.devices.values() if wc is not None else ():
                devices.setdefault(dev.name, (dev.driver, dict(dev.settings)))
        many = len(runs) > 1
        for loc in plate_locations(store, run.id):
            located.append((f"{loc.plate} · run {run.id}" if many else loc.plate, loc))
    return _build(devices, located)


def _build(
    devices: Mapping[str, tuple[str, dict[str, Any]]], located: Iterable[tuple[str, PlateLocation]]
) -> Maps:
    on_deck: dict[str, dict[str, list[str]]] = {}
    in_slot: dict[str, dict[int, str]] = {}
    transfer: dict[str, list[str]] = {}
    moving: dict[str, list[str]] = {}
    elsewhere: list[str] = []
    for text, loc in located:
        m = _WHERE.match(loc.where)
        doubt = "" if loc.certain else " (not certain)"
        if m is None:
            elsewhere.append(f"{text}: {loc.where}{doubt}")
        elif m["deck"] is not None:
            on_deck.setdefault(m["dev"], {}).setdefault(m["deck"], []).append(text + doubt)
        elif m["slot"] is not None:
            in_slot.setdefault(m["dev"], {})[int(m["slot"])] = text + doubt
        else:
            transfer.setdefault(m["dev"], []).append(text + doubt)
        if loc.moving:
            dev = m["dev"] if m is not None else ""
            moving.setdefault(dev, []).append(f"{text}: {loc.moving}")
    decks = []
    lh = {n for n, (drv, _) in devices.items() if drv in LIQUID_HANDLER_DRIVERS} | set(on_deck)
    for name in sorted(lh):
        settings = devices.get(name, ("", {}))[1]
        robot = "Flex" if str(settings.get("robot", "")) == "Flex" else "OT-2"
        roles = deck_roles(settings.get("deck"), robot)
        plates = on_deck.get(name, {})
        rows = tuple(
            tuple(
                DeckPosition(
                    s,
                    roles.get(s, ("", True))[0],
                    not roles.get(s, ("", True))[1],
                    tuple(plates.get(s, ())),
                )
                for s in row
            )
            for row in (FLEX_ROWS if robot == "Flex" else OT2_ROWS)
        )
        decks.append(DeckMap(name, robot, rows))
    incs = []
    inc_names = {n for n, (drv, _) in devices.items() if drv in INCUBATOR_DRIVERS}
    for name in sorted(inc_names | set(in_slot) | set(transfer)):
        settings = devices.get(name, ("", {}))[1]
        held = in_slot.get(name, {})
        incs.append(
            SlotMap(
                name, max(_slot_count(settings), max(held, default=0)), held,
                tuple(transfer.get(name, ())), tuple(moving.get(name, ())),
            )
        )  # fmt: skip
    movers = tuple(
        (n, tuple(str(k) for k in (st.get("stations") or {})))
        for n, (drv, st) in sorted(devices.items())
        if drv in MOVER_DRIVERS
    )
    return Maps(tuple(decks), tuple(incs), tuple(elsewhere + moving.get("", [])), movers)


def _slot_count(settings: Mapping[str, Any]) -> int:
    """An incubator's slots: Cytomat ``slots``, LiCONiC ``levels`` (per cassette) summed."""
    slots = settings.get("slots")
    if isinstance(slots, int):
        return slots
    levels = settings.get("levels")
    if isinstance(levels, list):
        return sum(int(x) for x in levels if isinstance(x, int))
    return 0
