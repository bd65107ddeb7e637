"""What the scheduler gives: a slot per job, a plan per chain (times are aware UTC)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["ChainPlan", "Schedule", "Slot"]


@dataclass(frozen=True)
class Slot:
    """When one job runs, on which device. ``deck_slot`` is the deck position the
    scheduler chose for the plate (TO_DECK, LH_RUN and TO_INCUBATOR jobs): it overrides
    ``params["deck_slot"]`` when the liquid handler has more than one plate position."""

    job_key: str
    device: str
    start: datetime
    end: datetime
    deck_slot: int | None = None
    deck_device: str | None = None


@dataclass(frozen=True)
class ChainPlan:
    """A chain's planned span and main start. ``slack_s`` = window_end - main_start in
    seconds (negative = late). ``due``/``window_*`` are the effective ones (moved with the
    actual time of the previous feed for tied chains)."""

    chain_key: str
    start: datetime
    end: datetime
    main_start: datetime
    slack_s: float
    due: datetime | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    late_reason: str = ""
    deck_slot: int | None = None


@dataclass(frozen=True)
class Schedule:
    slots: dict[str, Slot]
    chains: dict[str, ChainPlan]
    late: tuple[str, ...]  # chain keys that cannot meet their window
    warnings: tuple[str, ...] = ()  # e.g. a plate out of the incubator longer than allowed
