"""Media prep sheets: totals with dead volume and overage, C1V1 stock volumes, solvents,
intermediate dilutions, and the whole-run forecast."""

from __future__ import annotations

from datetime import datetime

import pytest

from labctl.cli.main import main
from labctl.plan.prep import PrepSettings, forecast, prep_sheets, render_html, render_text
from labctl.plan.resolve import resolve
from tests.helpers import load

SCHED = """
    media: [{days: 0, medium: {M1: 75%, M2: 25%}}, {days: 1, medium: M1}]
    factors:
      - {compound: A, conc: 10 uM, days: "0-1"}
      - {compound: B, conc: 5 ng/mL, days: 1}
    feeds: [{days: "0-1", change: full}]
"""


def setup(plates: int = 2, **kw):  # noqa: ANN201
    res = load(SCHED)
    assert res.ok, [d.format() for d in res.diagnostics]
    plan = resolve(res.protocol, plates=plates, start=datetime(2026, 12, 1, 9), timezone="UTC")
    return res.protocol, plan, prep_sheets(res.protocol, plan, kw.get("day"), kw.get("settings"))


def test_totals_include_dead_volume_and_overage() -> None:
    _, _, sheets = setup(plates=2, day=0, settings=PrepSettings(dead_volume_ul=5000, overage=0.10))
    (b,) = sheets[0].batches
    assert b.needed_ul == pytest.approx(2 * 6 * 2000)  # 2 plates x 6 wells x 2 mL
    assert b.total_ul == pytest.approx(31500)  # 24 mL x 1.1 + 5 mL = 31.4 mL, rounded up to 0.5 mL


def test_stock_volumes_by_c1v1_and_blend_split() -> None:
    _, _, sheets = setup(plates=2, day=0)
    (b,) = sheets[0].batches
    (a,) = b.stocks
    assert a.volume_ul == pytest.approx(31500 * 10e-6 / 10e-3)  # 31.5 uL of 10 mM for 10 uM
    base = dict(b.base)
    assert base["M1"] == pytest.approx((31500 - a.volume_ul) * 0.75)
    assert base["M2"] == pytest.approx((31500 - a.volume_ul) * 0.25)
    assert sum(base.values()) + a.volume_ul == pytest.approx(b.total_ul)
    assert b.solvents == (("DMSO", pytest.approx(0.001), 0.005),)


def test_small_stock_volume_gets_an_intermediate_dilution() -> None:
    _, _, sheets = setup(plates=1, day=1, settings=PrepSettings(dead_volume_ul=0, overage=0))
    (b,) = sheets[0].batches
    bstock = next(s for s in b.stocks if s.compound == "B")
    # 5 ng/mL from 100 ug/mL in 12 mL = 0.6 uL: below 1 uL, so 1:10 -> 6 uL of intermediate.
    assert bstock.volume_ul == pytest.approx(0.6)
    assert bstock.intermediate is not None and bstock.intermediate.factor == 10
    assert bstock.intermediate.add_ul == pytest.approx(6.0)
    assert bstock.intermediate.stock_ul >= 1.0
    assert any("intermediate" in n for n in b.notes)


def test_forecast_sums_every_feed() -> None:
    proto, plan, _ = setup(plates=1, settings=PrepSettings(dead_volume_ul=0, overage=0))
    f = forecast(proto, plan, PrepSettings(dead_volume_ul=0, overage=0))
    assert f.feeds == 2
    assert f.media_ul["M1"] + f.media_ul["M2"] + f.stocks_ul["A"] + 6.0 == pytest.approx(
        24000, rel=1e-3
    )


def test_render_text_and_html() -> None:
    proto, plan, sheets = setup(plates=2)
    text = render_text(proto, sheets)
    assert "M1 75% + M2 25% with A 10 µM" in text and "prepare 31.50 mL" in text
    html = render_html(proto, plan, sheets, forecast(proto, plan))
    assert html.startswith("<!doctype html>") and "Consumables over the run" in html


def test_prep_cli_day_and_html(tmp_path, capsys) -> None:
    out = tmp_path / "prep.html"
    assert (
        main(
            [
                "prep",
                "protocols/kriks2011_da.yaml",
                "--day",
                "3",
                "--plates",
                "6",
                "--start",
                "2026-12-01T09:00",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "Day 3, Fri 2026-12-04 09:00" in text and "CHIR99021" in text
    assert main(["prep", "protocols/kriks2011_da.yaml", "--plates", "6", "--html", str(out)]) == 0
    assert "Prep sheets" in out.read_text()
    assert main(["prep", "protocols/kriks2011_da.yaml", "--day", "99"]) == 1
