"""Concentration arithmetic: C1V1, mixing, half changes, top-ups, dose-to-well, spikes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labctl.plan import conc as cc
from labctl.units import Q_


def test_c1v1_stock_volume() -> None:
    # 10 uM from a 10 mM stock in 12 mL: 12 uL.
    assert cc.stock_volume(10e-6, 10e-3, 12000) == pytest.approx(12.0)


def test_full_change_replaces_everything() -> None:
    w = cc.exchange(cc.Well(2000, {"A": 5.0, "B": 1.0}), 2000, 2000, {"A": 1.0})
    assert w.volume == 2000 and w.conc == pytest.approx({"A": 1.0})


def test_half_change_averages() -> None:
    w = cc.exchange(cc.Well(2000, {"A": 4.0}), 1000, 1000, {"A": 2.0, "B": 6.0})
    assert w.volume == 2000
    assert w.conc == pytest.approx({"A": 3.0, "B": 3.0})


def test_top_up_dilutes_by_volume() -> None:
    w = cc.exchange(cc.Well(1000, {"A": 3.0}), 0, 500, {})
    assert w.volume == 1500 and w.conc["A"] == pytest.approx(2.0)


def test_repeated_half_changes_decay_geometrically() -> None:
    w = cc.Well(2000, {"A": 8.0})
    for _ in range(3):
        w = cc.exchange(w, 1000, 1000, {})
    assert w.conc["A"] == pytest.approx(1.0)


def test_dose_to_well_computes_fresh_concentration() -> None:
    # Well holds 2 uM in 2 mL; half change; target 3 uM in the well -> fresh must be 4 uM.
    fresh = cc.fresh_for_target(cc.Well(2000, {"A": 2.0}), 1000, 1000, {"A": 3.0})
    assert fresh["A"] == pytest.approx(4.0)
    after = cc.exchange(cc.Well(2000, {"A": 2.0}), 1000, 1000, fresh)
    assert after.conc["A"] == pytest.approx(3.0)


def test_dose_to_well_below_kept_medium_is_unreachable() -> None:
    with pytest.raises(cc.ConcError, match="A"):
        cc.fresh_for_target(cc.Well(2000, {"A": 10.0}), 1000, 1000, {"A": 2.0})


def test_spike_volume_counts_the_added_volume() -> None:
    v = cc.spike_volume(2000, 0.0, 10.0, 10000.0)  # 10 uM from 10 mM into 2 mL
    assert v == pytest.approx(2000 * 10 / 9990)
    w = cc.spike(cc.Well(2000, {"B": 1.0}), "A", v, 10000.0)
    assert w.conc["A"] == pytest.approx(10.0)
    assert w.conc["B"] == pytest.approx(2000 / (2000 + v))


def test_spike_refuses_target_at_or_above_stock() -> None:
    with pytest.raises(cc.ConcError):
        cc.spike_volume(2000, 0, 10.0, 10.0)


def test_molar_and_mass_need_mw() -> None:
    u = cc.CompoundUnits("molar", None, "uM")
    with pytest.raises(cc.ConcError, match="mw"):
        u.to_canonical(Q_(1, "ug/mL"))
    chir = cc.CompoundUnits("molar", 465.3, "uM")
    # 465.3 ng/mL of a 465.3 g/mol compound is 1 uM
    assert chir.to_canonical(Q_(465.3, "ng/mL")) == pytest.approx(1e-6)
    assert chir.to_display(1e-6).to("uM").magnitude == pytest.approx(1.0)


def test_blend_percentages_and_percent_concentrations() -> None:
    u = cc.CompoundUnits("fraction", None, "%")
    assert u.to_canonical(Q_(25, "percent")) == pytest.approx(0.25)


@given(
    v=st.floats(100, 5000),
    c=st.floats(0, 100),
    frac=st.floats(0.05, 1.0),
    fresh=st.floats(0, 100),
)
def test_exchange_conserves_mass(v: float, c: float, frac: float, fresh: float) -> None:
    remove = v * frac
    w = cc.exchange(cc.Well(v, {"A": c}), remove, remove, {"A": fresh})
    amount_before = c * (v - remove) + fresh * remove
    assert w.volume == pytest.approx(v)
    assert w.conc.get("A", 0.0) * w.volume == pytest.approx(amount_before, rel=1e-9, abs=1e-9)


@given(v=st.floats(100, 5000), c=st.floats(0, 10), t=st.floats(0, 50), frac=st.floats(0.1, 1.0))
def test_dose_to_well_reaches_its_target_when_reachable(
    v: float, c: float, t: float, frac: float
) -> None:
    remove = v * frac
    well = cc.Well(v, {"A": c})
    try:
        fresh = cc.fresh_for_target(well, remove, remove, {"A": t})
    except cc.ConcError:
        assert c * (v - remove) > t * v  # unreachable only when the kept medium already exceeds it
        return
    after = cc.exchange(well, remove, remove, fresh)
    assert after.conc.get("A", 0.0) == pytest.approx(t, rel=1e-9, abs=1e-12)
