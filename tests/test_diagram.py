"""The schedule diagram: rows and segments computed from the plan, and the files drawn."""

from __future__ import annotations

import struct
from datetime import datetime
from pathlib import Path

import pytest

from labctl.errors import LabctlError
from labctl.plan.resolve import EnvSpec, resolve
from labctl.reports.diagram import (
    MarkKind,
    Row,
    RowKind,
    draw,
    env_label,
    segments,
    short_title,
)
from labctl.validate import load_protocol

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 12, 1, 9, 0)


def _plan(name: str, params: dict[str, str] | None = None, tz: str = "UTC"):  # noqa: ANN202
    path = ROOT / "tests/data/format_example.yaml" if name == "example" else ROOT / name
    proto = load_protocol(path)
    return proto, resolve(proto, params, plates=1, start=START, timezone=tz, strict=False)


def _row(rows: list[Row], kind: RowKind, name: str | None = None) -> Row:
    found = [r for r in rows if r.kind is kind and (name is None or r.name == name)]
    assert len(found) == 1, f"{kind} {name}: {[r.name for r in rows]}"
    return found[0]


def _bars(row: Row) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.label) for s in row.segments]


# --- segments -------------------------------------------------------------------------------


def test_kriks_compounds_cover_their_days_half_open() -> None:
    proto, plan = _plan("protocols/kriks2011_da.yaml")
    rows = segments(proto, plan)
    assert _bars(_row(rows, RowKind.COMPOUND, "SB431542")) == [(0, 5, "10 µM")]
    assert _bars(_row(rows, RowKind.COMPOUND, "CHIR99021")) == [(3, 13, "3 µM")]
    assert _bars(_row(rows, RowKind.COMPOUND, "SHH_C25II")) == [(1, 7, "100 ng/mL")]
    assert _bars(_row(rows, RowKind.COMPOUND, "DAPT")) == [(11, 26, "10 µM")]
    # compounds in the order they start, as papers list them
    names = [r.name for r in rows if r.kind is RowKind.COMPOUND]
    assert names[:6] == [
        "LDN193189",
        "SB431542",
        "SHH_C25II",
        "purmorphamine",
        "FGF8",
        "CHIR99021",
    ]


def test_kriks_medium_ramp_is_one_row_per_base_medium_with_shares() -> None:
    proto, plan = _plan("protocols/kriks2011_da.yaml")
    rows = segments(proto, plan)
    ksr = _row(rows, RowKind.MEDIUM, "KSR_medium")
    n2 = _row(rows, RowKind.MEDIUM, "N2_medium")
    assert [(s.start, s.end, s.label, s.fraction) for s in ksr.segments] == [
        (0, 5, "", 1.0),
        (5, 7, "75%", 0.75),
        (7, 9, "50%", 0.5),
        (9, 11, "25%", 0.25),
    ]
    assert [(s.start, s.end, s.fraction) for s in n2.segments] == [
        (5, 7, 0.25),
        (7, 9, 0.5),
        (9, 11, 0.75),
    ]
    assert _bars(_row(rows, RowKind.MEDIUM, "NB_B27")) == [(11, 26, "")]


def test_row_order_top_to_bottom() -> None:
    proto, plan = _plan("example")
    kinds = [r.kind for r in segments(proto, plan)]
    assert kinds == [
        RowKind.PHASES,
        RowKind.EVENTS,
        *[RowKind.MEDIUM] * 3,
        *[RowKind.COMPOUND] * 6,
        RowKind.ENVIRONMENT,
        RowKind.FEED,
    ]


def test_parameter_changes_the_concentration_drawn() -> None:
    proto, plan = _plan("protocols/kriks2011_da.yaml", {"chir": "1.5 uM"})
    chir = _row(segments(proto, plan), RowKind.COMPOUND, "CHIR99021")
    assert _bars(chir) == [(3, 13, "1.5 µM")]
    assert chir.segments[0].value is not None
    assert chir.segments[0].value.to("nM").magnitude == pytest.approx(1500)


def test_biphasic_dose_splits_into_two_segments() -> None:
    proto, plan = _plan("protocols/kim2021_da.yaml")
    chir = _row(segments(proto, plan), RowKind.COMPOUND, "CHIR99021")
    assert _bars(chir) == [(0, 4, "0.7 µM"), (4, 10, "7.5 µM")]
    proto, plan = _plan("protocols/kim2021_da.yaml", {"chir_low": "1 uM", "chir_boost": "3 uM"})
    chir = _row(segments(proto, plan), RowKind.COMPOUND, "CHIR99021")
    assert _bars(chir) == [(0, 4, "1 µM"), (4, 10, "3 µM")]


TWO_RULES = """
labctl: 1
id: two-rules
title: Two rules, one dose
version: 0.1.0
parameters:
  a: {default: 2 uM, min: 1 uM, max: 5 uM, description: "first days"}
compounds:
  CHIR99021: {stock: 10 mM, solvent: DMSO, mw: 465.3 g/mol}
media:
  M: {description: m}
culture: {labware: corning_6_wellplate_16.8ml_flat, wells: all, volume: 2 mL, coating: none}
timing: {feed_at: "09:00", window: 2 h}
schedule:
  media:
    - {days: "0-5", medium: M}
  factors:
    - {compound: CHIR99021, conc: $a, days: "0-1"}
    - {compound: CHIR99021, conc: 2000 nM, days: "2-3"}
    - {compound: CHIR99021, conc: 2 uM, days: "5"}
  feeds:
    - {days: "0-5", change: full}
"""


def test_equal_doses_merge_and_gaps_split() -> None:
    from labctl.validate import load_text

    res = load_text(TWO_RULES, "two.yaml")
    assert res.ok and res.protocol is not None, [d.format() for d in res.diagnostics]
    proto = res.protocol
    # Days 0-1 ($a = 2 uM) and 2-3 (2000 nM) hold one dose: one bar. Day 4 has none.
    plan = resolve(proto, None, plates=1, start=START, strict=False)
    chir = _row(segments(proto, plan), RowKind.COMPOUND, "CHIR99021")
    assert _bars(chir) == [(0, 4, "2 µM"), (5, 6, "2 µM")]
    plan = resolve(proto, {"a": "3 uM"}, plates=1, start=START, strict=False)
    chir = _row(segments(proto, plan), RowKind.COMPOUND, "CHIR99021")
    assert _bars(chir) == [(0, 2, "3 µM"), (2, 4, "2 µM"), (5, 6, "2 µM")]


def test_separate_days_give_separate_segments() -> None:
    proto, plan = _plan("protocols/nolbrant2017_vm.yaml")
    rows = segments(proto, plan)
    assert _bars(_row(rows, RowKind.COMPOUND, "Y-27632")) == [(0, 1, "10 µM"), (11, 12, "10 µM")]
    # change: none days are not feeds; the 8 real feeds are markers at their local times
    feeds = _row(rows, RowKind.FEED)
    assert [round(m.x, 4) for m in feeds.markers] == [
        0.375,
        2.375,
        4.375,
        7.375,
        9.375,
        11.4375,
        14.375,
        16.375,
    ]
    assert {m.kind for m in feeds.markers} == {MarkKind.FULL}


def test_feed_kinds_additions_pulses_and_environment() -> None:
    proto, plan = _plan("example")
    rows = segments(proto, plan)
    feeds = {round(m.x, 4): m.kind for m in _row(rows, RowKind.FEED).markers}
    assert feeds[0.375] is MarkKind.FULL
    assert feeds[3.375] is MarkKind.HALF
    assert feeds[11.4167] is MarkKind.HALF  # 10:00
    assert feeds[12.375] is MarkKind.TOP_UP
    assert feeds[22.375] is MarkKind.WASH  # washed feed
    assert feeds[22.4167] is MarkKind.WASH  # the pulse's wash-out an hour later
    assert len(feeds) == 22

    (add,) = _row(rows, RowKind.COMPOUND, "Y-27632").markers
    assert (add.kind, add.x, add.label) == (MarkKind.ADDITION, 11 + 15 / 24, "10 µM added")
    assert _row(rows, RowKind.COMPOUND, "Y-27632").segments == ()
    (pulse,) = _row(rows, RowKind.COMPOUND, "mitomycin-C").markers
    assert pulse.kind is MarkKind.PULSE
    assert pulse.label == "1 µg/mL, 1 h pulse"
    assert pulse.x == pytest.approx(22.375)
    assert pulse.end == pytest.approx(22.375 + 1 / 24)

    assert _bars(_row(rows, RowKind.ENVIRONMENT)) == [(0, 5, "4% O2")]
    assert _bars(_row(rows, RowKind.PHASES)) == [(0, 11, "patterning"), (11, 26, "maturation")]


def test_events_at_local_time_with_ranges() -> None:
    proto, plan = _plan("protocols/doi2014_kyoto_da.yaml", tz="Europe/Stockholm")
    events = _row(segments(proto, plan), RowKind.EVENTS).markers
    first = events[0]
    assert first.kind is MarkKind.EVENT
    assert first.x == pytest.approx(-4 + 9 / 24)  # 09:00 local, not UTC
    assert first.end == -1.0  # days -4 to -2: the window closes at the end of day -2
    assert first.label.startswith("seed: Plate hiPSCs")
    assert len(first.label) <= 34 and first.label.endswith("…")
    sort = next(m for m in events if m.label.startswith("sort:"))
    assert sort.x == pytest.approx(12 + 9 / 24)
    assert sort.end is None


def test_short_title_and_env_label() -> None:
    assert short_title("Seed cells") == "Seed cells"
    s = short_title("Dissociate day-20 cells (Accutase) for replating on PO/laminin/FN", 30)
    assert s == "Dissociate day-20 cells…"
    assert env_label(EnvSpec(37.0, 5.0, None)) == ""
    assert env_label(EnvSpec(32.0, 8.0, 4.0)) == "4% O2, 8% CO2, 32 °C"


# --- files ----------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def test_png_written(tmp_path: Path) -> None:
    proto, plan = _plan("protocols/kriks2011_da.yaml")
    out = tmp_path / "kriks.png"
    draw(proto, plan, out)
    w, h = _png_size(out.read_bytes())
    # 26 days at >= 0.3 in per day plus labels, at 150 dpi; 12 compounds + 3 media rows
    assert w > 26 * 0.3 * 150 and h > 15 * 0.3 * 150


def test_svg_has_names_and_concentrations_as_text(tmp_path: Path) -> None:
    proto, plan = _plan("protocols/kriks2011_da.yaml", {"chir": "1.5 uM"})
    out = tmp_path / "sub" / "kriks.svg"  # a missing folder is created
    draw(proto, plan, str(out))
    svg = out.read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml")
    for text in ("SB431542", "CHIR99021", "ascorbic_acid", ">10 µM<", ">1.5 µM<", ">0.2 mM<"):
        assert text in svg, text
    assert ">3 µM<" not in svg
    assert "kriks2011-da  v1.0.0" in svg
    assert ">75%<" in svg and ">full change<" in svg


def test_svg_is_reproducible(tmp_path: Path) -> None:
    proto, plan = _plan("example")
    draw(proto, plan, tmp_path / "a.svg")
    draw(proto, plan, tmp_path / "b.svg")
    a = (tmp_path / "a.svg").read_bytes()
    assert a == (tmp_path / "b.svg").read_bytes()
    for text in (">4% O2<", ">1 µg/mL, 1 h pulse<", ">top-up (nothing removed)<"):
        assert text in a.decode("utf-8"), text


@pytest.mark.parametrize("name", ["out.pdf", "out", "out.png.txt"])
def test_bad_extension_raises(tmp_path: Path, name: str) -> None:
    proto, plan = _plan("example")
    with pytest.raises(LabctlError, match=r"must end in \.png or \.svg"):
        draw(proto, plan, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_unwritable_path_raises(tmp_path: Path) -> None:
    proto, plan = _plan("example")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(LabctlError, match="cannot write the diagram"):
        draw(proto, plan, blocker / "out.png")  # parent is a file
    (tmp_path / "dir.svg").mkdir()
    with pytest.raises(LabctlError, match="cannot write the diagram"):
        draw(proto, plan, tmp_path / "dir.svg")  # a folder


def test_cli_diagram(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from labctl.cli.main import main

    out = tmp_path / "nolbrant.svg"
    rc = main(
        [
            "diagram",
            str(ROOT / "protocols/nolbrant2017_vm.yaml"),
            "--start",
            "2026-12-01T09:00",
            "--param",
            "chir=1.2uM",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert ">1.2 µM<" in out.read_text(encoding="utf-8")
