"""The shipped Kriks 2011 protocol, resolved, against the reference's day-by-day table.

Every day 0-25: the fresh medium (or blend, with its fractions), every factor and its
concentration, exactly as the reference lists them (tests/fixtures/kriks2011_reference.yaml,
a copy of shared/reference/kriks2011_da.yaml).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml

from labctl.plan.resolve import FeedSpec, TaskKind, resolve
from labctl.units import Q_
from labctl.validate import load_protocol

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = yaml.safe_load((ROOT / "tests/fixtures/kriks2011_reference.yaml").read_text())[
    "schedule"
]


@pytest.fixture(scope="module")
def plan():
    proto = load_protocol(ROOT / "protocols/kriks2011_da.yaml")
    return resolve(proto, plates=6, start=datetime(2026, 12, 1, 9, 0), timezone="Europe/Stockholm")


def _reference_day(entry: dict) -> tuple[dict[str, float], dict[str, object]]:
    if "medium_blend" in entry:
        media = {b["medium"]: float(b["fraction"]) for b in entry["medium_blend"]}
    else:
        media = {entry["medium"]: 1.0}
    factors = {a["factor"]: Q_(float(a["conc"]), a["unit"]) for a in entry["additions"]}
    return media, factors


@pytest.mark.parametrize("entry", REFERENCE, ids=lambda e: f"day{e['day']}")
def test_every_day_matches_the_reference(plan, entry: dict) -> None:
    day = entry["day"]
    feeds = [t for t in plan.tasks_on(day) if t.kind is TaskKind.FEED]
    assert len(feeds) == 1, f"day {day}: expected one feed, got {[t.key for t in feeds]}"
    spec = feeds[0].spec
    assert isinstance(spec, FeedSpec)
    media, factors = _reference_day(entry)
    assert dict(spec.recipe.parts) == pytest.approx(media)
    got = dict(spec.recipe.factors)
    assert set(got) == set(factors), f"day {day}: factors differ"
    for name, want in factors.items():
        assert got[name].to(want.units).magnitude == pytest.approx(want.magnitude, rel=1e-9), (
            f"day {day}: {name}"
        )


def test_reference_covers_days_0_to_25(plan) -> None:
    assert sorted(e["day"] for e in REFERENCE) == list(range(26))
    assert (plan.first_day, plan.last_day) == (min(plan.first_day, 0), 25)


def test_full_daily_changes_leave_the_fresh_medium_in_the_well(plan) -> None:
    # With full changes the effective in-well concentrations equal the fresh medium's.
    for t in plan.feeds():
        assert dict(t.well_after.conc).keys() == dict(t.spec.recipe.factors).keys()
        assert t.well_after.volume_ul == pytest.approx(2000.0)
