"""The typed, immutable Protocol model (format version 1, PROTOCOL_FORMAT.md).

Quantities are pint Quantities from :mod:`labctl.units`. A value that may come from a run
parameter is a :class:`ParamRef` until :func:`labctl.plan.resolve.resolve` binds it. Every
element keeps the :class:`Loc` of its YAML node, so later stages (resolution, prep
checks) can point their messages at the line that caused them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from enum import Enum

import pint


@dataclass(frozen=True)
class Loc:
    """Where an element was written: 1-based line and column.

    For a value reached through a YAML alias (``*name``) the line and column are the alias's
    (where the value is used) and ``via`` says where the anchored text is written: messages
    point at the use and mention the anchor. ``via`` takes no part in equality.
    """

    line: int
    col: int
    via: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ParamRef:
    """``$name``: a run parameter, bound at resolution."""

    name: str
    loc: Loc

    def __str__(self) -> str:
        return f"${self.name}"


Value = pint.Quantity | ParamRef


@dataclass(frozen=True)
class DaySet:
    """A set of protocol days (day 0 = the run's start day) and the text it was written as."""

    days: tuple[int, ...]
    text: str

    def __contains__(self, day: int) -> bool:
        return day in self.days

    @property
    def first(self) -> int:
        return self.days[0]

    @property
    def last(self) -> int:
        return self.days[-1]


@dataclass(frozen=True)
class Parameter:
    name: str
    default: pint.Quantity
    min: pint.Quantity | None
    max: pint.Quantity | None
    description: str
    loc: Loc


@dataclass(frozen=True)
class Compound:
    """A compound as the lab keeps it in stock. ``max_solvent`` is a fraction (0.005 = 0.5%)."""

    name: str
    stock: pint.Quantity
    solvent: str
    mw: pint.Quantity | None
    storage: str
    light_sensitive: bool
    max_solvent: float | None
    loc: Loc


@dataclass(frozen=True)
class Medium:
    name: str
    description: str
    shelf_life: pint.Quantity | None
    loc: Loc


@dataclass(frozen=True)
class Culture:
    """The culture vessel: an Opentrons labware load name, the wells used, working volume."""

    labware: str
    wells: tuple[str, ...] | None  # None = all wells of the labware
    volume: pint.Quantity
    coating: str
    loc: Loc


@dataclass(frozen=True)
class Timing:
    feed_at: time
    window: pint.Quantity
    max_out_of_incubator: pint.Quantity | None
    loc: Loc


@dataclass(frozen=True)
class MediumRule:
    """The base medium (or blend) of some days: parts as (medium name, fraction 0-1)."""

    days: DaySet
    parts: tuple[tuple[str, float], ...]
    loc: Loc


@dataclass(frozen=True)
class FactorRule:
    """A compound at a final concentration in the fresh medium on some days."""

    compound: str
    conc: Value
    days: DaySet
    loc: Loc


class Change(str, Enum):
    FULL = "full"
    HALF = "half"
    FRACTION = "fraction"
    TOP_UP = "top-up"
    NONE = "none"


class Dose(str, Enum):
    FRESH = "fresh"
    WELL = "well"


@dataclass(frozen=True)
class Wash:
    medium: str
    volume: Value | None  # None = the culture volume
    times: int
    loc: Loc


@dataclass(frozen=True)
class FeedRule:
    """How cells are fed on some days.

    ``fraction`` is the share of the well's medium replaced (1.0 full, 0.5 half, 0 top-up
    and none). ``volume`` is the volume added per well (None = the culture volume).
    """

    days: DaySet
    change: Change
    fraction: float
    volume: Value | None
    at: time | None
    window: pint.Quantity | None
    after_previous: pint.Quantity | None
    dose: Dose
    wash: Wash | None
    loc: Loc


@dataclass(frozen=True)
class Addition:
    """A compound spiked into the wells (final in-well concentration), optionally a pulse."""

    compound: str
    conc: Value
    days: DaySet
    at: time | None
    window: pint.Quantity | None
    pulse: pint.Quantity | None
    washout_medium: str | None  # None = the day's base medium
    washout_times: int
    loc: Loc


@dataclass(frozen=True)
class EnvRule:
    """Incubator setpoints on some days (None = the default for that quantity)."""

    days: DaySet
    temperature: pint.Quantity | None
    co2: pint.Quantity | None
    o2: pint.Quantity | None
    loc: Loc


class OnFail(str, Enum):
    HOLD = "hold"
    ABORT = "abort"
    EXTEND = "extend"
    NOTE = "note"


@dataclass(frozen=True)
class QCGate:
    measure: str
    unit: str
    min: float | None
    max: float | None
    on_fail: OnFail
    by: pint.Quantity | None  # for on_fail: extend
    loc: Loc


EVENT_KINDS = (
    "replate",
    "passage",
    "seed",
    "coat",
    "sort",
    "sample",
    "image",
    "freeze",
    "wash",
    "harvest",
    "custom",
)


@dataclass(frozen=True)
class CultureChange:
    """A new vessel or working volume from an event on (e.g. replating to 24-well plates)."""

    labware: str | None
    wells: tuple[str, ...] | None
    volume: pint.Quantity | None
    coating: str | None
    loc: Loc


@dataclass(frozen=True)
class Event:
    """A manual or device step other than feeding, due once within ``days``."""

    days: DaySet
    kind: str
    title: str
    instructions: str
    duration: pint.Quantity | None
    at: time | None
    culture: CultureChange | None
    qc: tuple[QCGate, ...]
    loc: Loc


@dataclass(frozen=True)
class Schedule:
    media: tuple[MediumRule, ...]
    factors: tuple[FactorRule, ...]
    feeds: tuple[FeedRule, ...]
    additions: tuple[Addition, ...]
    environment: tuple[EnvRule, ...]
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Reference:
    citation: str
    doi: str
    url: str


@dataclass(frozen=True)
class Phase:
    name: str
    days: DaySet


@dataclass(frozen=True)
class Protocol:
    """A loaded, checked protocol. ``sha256`` is the hash of the file's bytes as text."""

    id: str
    title: str
    version: str
    reference: Reference | None
    description: str
    phases: tuple[Phase, ...]
    parameters: dict[str, Parameter]
    compounds: dict[str, Compound]
    media: dict[str, Medium]
    culture: Culture
    timing: Timing
    schedule: Schedule
    source_file: str
    source_text: str
    sha256: str

    @property
    def first_day(self) -> int:
        return min(self.all_days(), default=0)

    @property
    def last_day(self) -> int:
        return max(self.all_days(), default=0)

    def all_days(self) -> set[int]:
        s = self.schedule
        days: set[int] = set()
        for group in (s.media, s.factors, s.feeds, s.additions, s.environment, s.events):
            for rule in group:
                days.update(rule.days.days)
        return days
