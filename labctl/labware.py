"""Labware facts (wells, capacities) read from the definition JSON files that the
``opentrons_shared_data`` package ships.

The files are read directly (found with importlib's spec lookup, without importing the
package), so ``labctl validate`` stays fast and the core never imports opentrons.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

MIN_ASPIRATE_UL = 10.0  # below this a well volume can't be aspirated/dispensed reliably

__all__ = ["Labware", "LabwareNotFound", "get_labware", "known_load_names"]


class LabwareNotFound(LookupError):
    """No definition with that load name."""


@dataclass(frozen=True)
class Labware:
    """One labware definition: wells in Opentrons' order (column by column).

    ``capacity_ul`` is each well's total liquid volume in microlitres; ``depth_mm`` its depth.
    """

    load_name: str
    display_name: str
    version: int
    wells: tuple[str, ...]
    capacity_ul: float
    depth_mm: float
    is_tiprack: bool
    category: str


def _definitions_dir() -> Path | None:
    spec = importlib.util.find_spec("opentrons_shared_data")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        d = Path(base) / "data" / "labware" / "definitions" / "2"
        if d.is_dir():
            return d
    return None


@lru_cache(maxsize=1)
def known_load_names() -> tuple[str, ...]:
    """Every load name with a definition (sorted); empty if the package is missing."""
    d = _definitions_dir()
    if d is None:
        return ()
    return tuple(sorted(p.name for p in d.iterdir() if p.is_dir()))


@lru_cache(maxsize=64)
def get_labware(load_name: str) -> Labware:
    """The latest definition of ``load_name``. Raises LabwareNotFound."""
    d = _definitions_dir()
    if d is None:
        raise LabwareNotFound(
            "opentrons_shared_data is not installed: labware definitions unavailable"
        )
    if load_name not in known_load_names():
        raise LabwareNotFound(load_name)
    versions = sorted(
        (int(p.stem) for p in (d / load_name).glob("*.json") if p.stem.isdigit()), reverse=True
    )
    if not versions:
        raise LabwareNotFound(load_name)
    data = json.loads((d / load_name / f"{versions[0]}.json").read_text(encoding="utf-8"))
    wells = tuple(w for col in data["ordering"] for w in col)
    first = data["wells"][wells[0]]
    return Labware(
        load_name=load_name,
        display_name=data["metadata"].get("displayName", load_name),
        version=versions[0],
        wells=wells,
        capacity_ul=min(float(data["wells"][w]["totalLiquidVolume"]) for w in wells),
        depth_mm=float(first.get("depth", 0.0)),
        is_tiprack=bool(data["parameters"].get("isTiprack", False)),
        category=data["metadata"].get("displayCategory", ""),
    )
