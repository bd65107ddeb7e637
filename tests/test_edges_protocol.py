"""The protocol-side edges a scientist meets (issue 17): Unicode compound names, messages at
the value that is wrong, molar and mass units through mw, plan --json's units and numbers,
solvents in the fresh medium and in the well, stated limits, one validate pass, the format
version, and values reached through YAML aliases."""

from __future__ import annotations

import ast
import io
import json
import re
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from labctl.cli import common
from labctl.cli.main import main
from labctl.errors import ParameterError
from labctl.plan.prep import PrepSettings, prep_sheets
from labctl.plan.resolve import bind_parameters, plan_to_json, resolve
from labctl.protocol import source
from labctl.protocol.diagnostics import LoadResult
from labctl.units import Q_, UnitParseError, parse_quantity
from labctl.validate import load_file, load_text

ROOT = Path(__file__).resolve().parent.parent
KRIKS = ROOT / "protocols" / "kriks2011_da.yaml"
DOCS = ROOT / "docs" / "protocols.md"


def protocol(compounds: str, schedule: str, extra: str = "", culture: str = "") -> str:
    """A small protocol: ``compounds`` and ``schedule`` blocks (dedented, indented for you)."""
    return (
        "labctl: 1\nid: edges\ntitle: Edges\nversion: 1.0.0\n"
        + textwrap.dedent(extra)
        + "compounds:\n"
        + textwrap.indent(textwrap.dedent(compounds), "  ")
        + "media:\n  KSR: {description: base}\n  PBS: {description: wash}\n"
        + (
            textwrap.dedent(culture)
            or "culture:\n  labware: corning_6_wellplate_16.8ml_flat\n  volume: 2 mL\n"
        )
        + "schedule:\n"
        + textwrap.indent(textwrap.dedent(schedule), "  ")
    )


def lines(res: LoadResult) -> list[str]:
    return [f"{d.line}:{d.column}: {d.severity}: {d.message}" for d in res.diagnostics]


def where(text: str, needle: str, nth: int = 0) -> str:
    """'line:col' of the ``nth`` occurrence of ``needle`` in ``text`` (1-based)."""
    i = -1
    for _ in range(nth + 1):
        i = text.index(needle, i + 1)
    line = text.count("\n", 0, i) + 1
    return f"{line}:{i - (text.rfind(chr(10), 0, i) + 1) + 1}"


# --- 1. Unicode names ------------------------------------------------------------------------

GREEK = protocol(
    """\
    TGF-β3: {stock: 1 ug/mL, solvent: 4 mM HCl + 0.1% BSA}
    IFN-γ: {stock: 100 ug/mL, solvent: water}
    2′-deoxycytidine: {stock: 100 mM, solvent: water}
    "N6,2′-O-dibutyryl-cAMP": {stock: 100 mM, solvent: water}
    Neu5Ac: {stock: 100 mM, solvent: water}
    """,
    """\
    media: [{days: "0-2", medium: α-MEM}]
    factors:
      - {compound: TGF-β3, conc: 1 ng/mL, days: "0-2"}
      - {compound: IFN-γ, conc: 10 ng/mL, days: "0-2"}
      - {compound: 2′-deoxycytidine, conc: 100 uM, days: "0-2"}
      - {compound: "N6,2′-O-dibutyryl-cAMP", conc: 0.5 mM, days: "0-2"}
      - {compound: Neu5Ac, conc: 1 mM, days: "0-2"}
    feeds: [{days: "0-2", change: full}]
    additions: [{compound: TGF-β3, conc: 2 ng/mL, days: 1, at: "15:00"}]
    """,
).replace("media:\n  KSR:", "media:\n  α-MEM: {description: alpha MEM}\n  KSR:")


def test_greek_letters_primes_and_locant_commas_are_names() -> None:
    res = load_text(GREEK, "g.yaml")
    assert lines(res) == []
    assert res.protocol is not None
    assert set(res.protocol.compounds) == {
        "TGF-β3",
        "IFN-γ",
        "2′-deoxycytidine",
        "N6,2′-O-dibutyryl-cAMP",
        "Neu5Ac",
    }
    plan = resolve(res.protocol, start=datetime(2027, 1, 4), timezone="UTC")
    feed = plan.feeds()[0]
    assert "TGF-β3 1 ng/mL" in feed.spec.recipe.label().replace("µ", "u")  # type: ignore[union-attr]
    # Task keys that operators type are ASCII.
    add = next(t for t in plan.tasks if t.kind.value == "addition")
    assert add.key == "d1-add-TGF-beta3-1500"


def test_names_are_read_in_nfc() -> None:
    decomposed = "cafe\u0301ine"  # e + combining acute, as some keyboards type it
    text = protocol(
        f"{decomposed}: {{stock: 10 mM, solvent: water}}\n",
        """\
        media: [{days: 0, medium: KSR}]
        factors: [{compound: caféine, conc: 1 uM, days: 0}]
        feeds: [{days: 0, change: full}]
        """,
    )
    res = load_text(text, "n.yaml")
    assert lines(res) == []
    assert res.protocol is not None and list(res.protocol.compounds) == ["caféine"]


@pytest.mark.parametrize(
    ("first", "second", "differ"),
    [
        (
            "TGF-β3",
            "TGF-ß3",
            "'ß' (U+00DF LATIN SMALL LETTER SHARP S) where 'TGF-β3' has 'β' (U+03B2 GREEK SMALL LETTER BETA)",
        ),
        (
            "μ-conotoxin",
            "µ-conotoxin",
            "'µ' (U+00B5 MICRO SIGN) where 'μ-conotoxin' has 'μ' (U+03BC GREEK SMALL LETTER MU)",
        ),
        (
            "2′-deoxycytidine",
            "2'-deoxycytidine",
            "\"'\" (U+0027 APOSTROPHE) where '2′-deoxycytidine' has '′' (U+2032 PRIME)",
        ),
        (
            "SHH-C25II",
            "SHH‐C25II",
            "'‐' (U+2010 HYPHEN) where 'SHH-C25II' has '-' (U+002D HYPHEN-MINUS)",
        ),
        (
            "BDNF",
            "ΒDNF",
            "'Β' (U+0392 GREEK CAPITAL LETTER BETA) where 'BDNF' has 'B' (U+0042 LATIN CAPITAL LETTER B)",
        ),
        ("LDN193189", "ldn193189", "only letter case"),
    ],
)
def test_look_alike_duplicates_are_refused_naming_both_lines(
    first: str, second: str, differ: str
) -> None:
    text = protocol(
        f'"{first}": {{stock: 10 mM, solvent: water}}\n"{second}": {{stock: 1 mM, solvent: water}}\n',
        """\
        media: [{days: 0, medium: KSR}]
        feeds: [{days: 0, change: full}]
        """,
    )
    res = load_text(text, "d.yaml")
    assert lines(res) == [
        f"7:3: error: '{second}' in compounds looks the same as '{first}' (line 6): they "
        f"differ in {differ}; rename or remove one, so that no one can take one for the other"
    ]


def test_a_look_alike_reference_is_an_error_that_names_the_character() -> None:
    text = GREEK.replace("{compound: TGF-β3, conc: 1 ng/mL", "{compound: TGF-ß3, conc: 1 ng/mL")
    res = load_text(text, "r.yaml")
    assert lines(res) == [
        f"{where(text, 'TGF-ß3')}: error: schedule.factors #1 names compound 'TGF-ß3', which "
        "is not in compounds; did you mean 'TGF-β3'? (they differ in 'ß' (U+00DF LATIN SMALL "
        "LETTER SHARP S) where 'TGF-β3' has 'β' (U+03B2 GREEK SMALL LETTER BETA))"
    ]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("nb\u00a0sp", "(U+00A0 NO-BREAK SPACE) is not a plain space; use a space (U+0020)"),
        ("zero\u200bwidth", "(U+200B ZERO WIDTH SPACE) is invisible; remove it"),
        (
            "A, B",
            "a comma in a name sits between two characters (as in 1,25-dihydroxy), never before or after a space",
        ),
        ("two  spaces", "a name cannot hold two spaces in a row (they look like one)"),
        ("$x", "a name begins with a letter, a digit or '(', not '$' (U+0024 DOLLAR SIGN)"),
        ("a#b", "'#' (U+0023 NUMBER SIGN) is not allowed in a name"),
    ],
)
def test_names_that_cannot_be_told_apart_or_written_safely_are_refused(name: str, why: str) -> None:
    text = protocol(
        f'"{name}": {{stock: 10 mM, solvent: water}}\n',
        """\
        media: [{days: 0, medium: KSR}]
        feeds: [{days: 0, change: full}]
        """,
    )
    assert lines(load_text(text, "b.yaml")) == [
        f"6:3: error: '{name}' is not a valid name in compounds: {why}"
    ]


def test_a_name_cut_at_its_comma_in_a_flow_mapping_gets_the_fix() -> None:
    text = GREEK.replace(
        '{compound: "N6,2′-O-dibutyryl-cAMP", conc', "{compound: N6,2′-O-dibutyryl-cAMP, conc"
    )
    msgs = lines(load_text(text, "c.yaml"))
    assert (
        f"{where(text, 'N6,2′-O-dibutyryl-cAMP, conc')}: error: schedule.factors #4 names "
        "compound 'N6', which is not in compounds; did you mean 'N6,2′-O-dibutyryl-cAMP'? "
        "Inside {...} a comma ends the value: put the name in quotes "
        '("N6,2′-O-dibutyryl-cAMP")'
    ) in msgs


def test_a_unicode_name_survives_opentrons_generation() -> None:
    """The generated protocol carries the name as an escaped literal (drivers'
    _lit: repr), parses as Python, and the robot's simulator runs it."""
    from labctl.drivers.opentrons_protocol import DeckLayout, check_locally, generate
    from labctl.jobs import Op, WorkcellRoles, expand

    res = load_text(GREEK, "g.yaml")
    assert res.protocol is not None
    plan = resolve(res.protocol, plates=1, start=datetime(2027, 1, 4), timezone="UTC")
    roles = WorkcellRoles("ot2", "inc", "arm", "op", {"P1": 10})
    jobs = [j for c in expand(plan, ["P1"], roles) for j in c.jobs if j.op is Op.LH_RUN]
    add = next(j for j in jobs if j.params["kind"] == "addition")
    assert add.params["compound"] == "TGF-β3"
    source_text = generate(add.params, DeckLayout.default("OT-2"), "OT-2")
    texts = [
        n.value
        for n in ast.walk(ast.parse(source_text))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    assert any("TGF-β3" in t for t in texts)
    source_text.encode("utf-8")  # uploaded as UTF-8; ast.parse reads it so (PEP 3120)
    feed = next(j for j in jobs if j.params["kind"] == "feed")
    assert "IFN-γ" in feed.params["recipe"]
    assert check_locally(source_text).commands > 0


def test_cli_output_survives_a_terminal_that_cannot_show_beta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr("sys.stdout", stream)
    common.out("TGF-β3 at 1 µM")
    stream.flush()
    assert raw.getvalue() == b"TGF-\\u03b23 at 1 \\xb5M\n"


# --- 2. messages point at the value that is wrong ---------------------------------------------


def test_volume_over_capacity_points_at_the_volume_value() -> None:
    text = protocol(
        "A: {stock: 10 mM, solvent: water}\n",
        """\
        media: [{days: "0-6", medium: KSR}]
        feeds: [{days: "0-6", change: full, wash: {medium: PBS, volume: 3 mL}}]
        events:
          - days: 5
            kind: replate
            title: to 24 wells
            culture: {labware: corning_24_wellplate_3.4ml_flat, volume: 4 mL}
        """,
        culture="culture:\n  labware: corning_6_wellplate_16.8ml_flat\n  volume: 20 mL\n",
    )
    msgs = lines(load_text(text, "v.yaml"))
    assert (
        f"{where(text, '20 mL')}: error: culture: volume 20 mL is above the 16.8 mL capacity "
        "of a well of corning_6_wellplate_16.8ml_flat"
    ) in msgs
    assert (
        f"{where(text, '4 mL}')}: error: the culture change of 'to 24 wells': volume 4 mL is "
        "above the 3.4 mL capacity of a well of corning_24_wellplate_3.4ml_flat"
    ) in msgs


def test_wash_volume_and_unknown_labware_point_at_their_values() -> None:
    text = protocol(
        "A: {stock: 10 mM, solvent: water}\n",
        """\
        media: [{days: "0-1", medium: KSR}]
        feeds: [{days: "0-1", change: full, wash: {medium: PBS, volume: 30 mL}}]
        """,
    )
    assert (
        f"{where(text, '30 mL')}: error: the wash on day 0 uses 30 mL per well, above the well's capacity"
        in lines(load_text(text, "w.yaml"))
    )
    bad = text.replace("corning_6_wellplate_16.8ml_flat", "corning_6_wellplate_16.8_flat")
    assert lines(load_text(bad, "l.yaml"))[0].startswith(
        f"{where(bad, 'corning_6_wellplate_16.8_flat')}: error: culture: unknown labware"
    )


# --- 3. molar and mass through mw -------------------------------------------------------------

MW = protocol(
    """\
    CHIR99021: {stock: 10 mM, solvent: DMSO, mw: 465.3 g/mol}
    SB431542: {stock: 10 mM, solvent: DMSO}
    """,
    """\
    media: [{days: "0-2", medium: KSR}]
    factors:
      - {compound: CHIR99021, conc: $chir, days: "0-2"}
      - {compound: SB431542, conc: $sb, days: "0-2"}
    feeds: [{days: "0-2", change: full}]
    """,
    extra="""\
    parameters:
      chir: {default: 3 uM, min: 0.2 ug/mL, max: 2.8 ug/mL}
      sb: {default: 1 uM, min: 0.5 uM, max: 2 uM}
    """,
)


def test_a_mass_parameter_for_a_molar_default_converts_through_mw() -> None:
    res = load_text(MW, "mw.yaml")
    assert lines(res) == []  # bounds in ug/mL of a uM default: compared through mw
    assert res.protocol is not None
    values = bind_parameters(res.protocol, {"chir": "1.5ug/mL"})
    assert values["chir"].units == Q_(1, "uM").units
    assert values["chir"].magnitude == pytest.approx(1.5e-3 / 465.3 * 1e6)  # 3.2237 uM
    with pytest.raises(ParameterError) as exc:
        bind_parameters(res.protocol, {"chir": "2.9ug/mL"})
    assert str(exc.value) == (
        "parameter 'chir': 2.9ug/mL (6.233 µM) is above its maximum 2.8 µg/mL"
    )


def test_a_mass_value_without_mw_says_which_compound_needs_one() -> None:
    res = load_text(MW, "mw.yaml")
    assert res.protocol is not None
    with pytest.raises(ParameterError) as exc:
        bind_parameters(res.protocol, {"sb": "3 ug/mL"})
    assert str(exc.value) == (
        "parameter 'sb': 3 µg/mL is a mass concentration and its default 1 µM a molar one; "
        "converting needs the molar mass of SB431542, which has no 'mw' (add e.g. mw: "
        "465.3 g/mol to the compound), or give it in uM"
    )


def test_a_parameter_shared_by_compounds_of_different_mw_stays_in_its_kind() -> None:
    text = (
        MW.replace(
            "SB431542: {stock: 10 mM, solvent: DMSO}",
            "SB431542: {stock: 10 mM, solvent: DMSO, mw: 384.4 g/mol}",
        )
        .replace("conc: $sb", "conc: $chir")
        .replace("min: 0.2 ug/mL, max: 2.8 ug/mL", "min: 0.5 uM, max: 6 uM")
    )
    res = load_text(text, "two.yaml")
    assert res.protocol is not None, lines(res)
    with pytest.raises(ParameterError) as exc:
        bind_parameters(res.protocol, {"chir": "1 ug/mL"})
    assert str(exc.value) == (
        "parameter 'chir': 1 µg/mL is a mass concentration and its default 3 µM a molar one; "
        "$chir is used by compounds of different molar mass (CHIR99021 (465.3 g/mol), "
        "SB431542 (384.4 g/mol)), so it means a different dose for each: give it in uM"
    )
    # A bound in the other kind is refused for the same reason, at the bound.
    both = text.replace("default: 3 uM, min: 0.5 uM", "default: 3 uM, min: 0.2 ug/mL")
    assert lines(load_text(both, "two.yaml")) == [
        f"{where(both, '0.2 ug/mL')}: error: 'min' of parameter 'chir': 0.2 µg/mL is a mass "
        "concentration and its default 3 µM a molar one; $chir is used by compounds of "
        "different molar mass (CHIR99021 (465.3 g/mol), SB431542 (384.4 g/mol)), so it means "
        "a different dose for each: give it in uM"
    ]


def test_a_default_outside_bounds_given_in_the_other_kind_is_found() -> None:
    text = MW.replace("max: 2.8 ug/mL", "max: 1 ug/mL")  # 1 ug/mL = 2.149 uM < 3 uM
    assert lines(load_text(text, "b.yaml")) == [
        f"{where(text, '3 uM')}: error: default of parameter 'chir' (3 µM) is above its max "
        "(1 µg/mL = 2.149 µM)"
    ]


def test_the_cli_plans_with_a_mass_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", str(KRIKS), "--param", "chir=1.5ug/mL", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert data["parameters"]["chir"] == "3.22372662798 uM"  # 1.5 ug/mL / 465.3 g/mol


def test_a_mass_dose_of_a_molar_stock_is_mixed_through_mw() -> None:
    text = protocol(
        "CHIR99021: {stock: 10 mM, solvent: DMSO, mw: 465.3 g/mol}\n",
        """\
        media: [{days: 0, medium: KSR}]
        factors: [{compound: CHIR99021, conc: 1395.9 ng/mL, days: 0}]
        feeds: [{days: 0, change: full}]
        """,
    )
    res = load_text(text, "p.yaml")
    assert res.protocol is not None, lines(res)
    plan = resolve(res.protocol, start=datetime(2027, 1, 4), timezone="UTC")
    (sheet,) = prep_sheets(res.protocol, plan, 0, PrepSettings(dead_volume_ul=0, overage=0))
    (line,) = sheet.batches[0].stocks
    assert line.volume_ul == pytest.approx(12000 * 3e-6 / 10e-3)  # 3 uM of 10 mM in 12 mL


# --- 4. plan --json ---------------------------------------------------------------------------


def _quantities(x: object) -> list[dict]:
    if isinstance(x, dict):
        here = [x] if {"value", "unit", "text"} <= set(x) else []
        return here + [q for v in x.values() for q in _quantities(v)]
    if isinstance(x, list):
        return [q for v in x for q in _quantities(v)]
    return []


def _floats(x: object) -> list[float]:
    if isinstance(x, float):
        return [x]
    if isinstance(x, dict):
        return [f for v in x.values() for f in _floats(v)]
    if isinstance(x, list):
        return [f for v in x for f in _floats(v)]
    return []


def test_plan_json_writes_the_formats_units_and_meant_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", str(KRIKS), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    qs = _quantities(data)
    assert qs
    assert {q["unit"] for q in qs} == {"ng/mL", "uM", "mM", "nM"}
    for q in qs:
        assert parse_quantity(q["text"]).units == parse_quantity(f"1 {q['unit']}").units
        assert "µ" not in q["text"]
    assert data["parameters"] == {"chir": "3 uM"}
    for f in _floats(data):
        assert len(repr(f).replace("-", "").replace(".", "").lstrip("0")) <= 13, f
    bdnf = data["tasks"][-1]["well_after"]["conc"]["BDNF"]
    assert bdnf == {"value": 20.0, "unit": "ng/mL", "text": "20 ng/mL"}


def test_a_runs_parameter_keeps_its_digits() -> None:
    """register stores plan_to_json's parameters as the run's; the run is resolved again
    from them, so they keep what was given (not 4 digits)."""
    res = load_file(KRIKS)
    assert res.protocol is not None
    plan = resolve(res.protocol, {"chir": "1.23456789 uM"}, start=datetime(2027, 1, 4))
    assert plan_to_json(plan)["parameters"] == {"chir": "1.23456789 µM"}
    assert plan_to_json(plan, spelling="format")["parameters"] == {"chir": "1.23456789 uM"}


# --- 5. solvents: the fresh medium and what the cells receive ---------------------------------

HALF = protocol(
    """\
    A: {stock: 10 mM, solvent: DMSO}
    Z: {stock: 1 mM, solvent: DMSO}
    """,
    """\
    media: [{days: "0-3", medium: KSR}]
    factors:
      - {compound: A, conc: 16 uM, days: 3}
    feeds:
      - {days: "0-2", change: full}
      - {days: 3, change: half}
    """,
)


def test_a_half_change_warns_on_what_the_cells_receive() -> None:
    # 0.16% DMSO in the fresh medium, 0.08% in the well after the half change: no warning.
    assert lines(load_text(HALF, "h.yaml")) == []
    more = HALF.replace("conc: 16 uM", "conc: 24 uM")
    assert lines(load_text(more, "h.yaml")) == [
        f"{where(more, '{days: 3, change: half}')}: warning: day 3: the fresh medium holds "
        "0.24% DMSO (A); the cells receive 0.12% after the half change, above 0.1%"
    ]


def test_an_addition_brings_its_solvent_into_the_well() -> None:
    text = HALF + '  additions:\n    - {compound: Z, conc: 6 uM, days: 3, at: "15:00"}\n'
    assert lines(load_text(text, "a.yaml")) == [
        f"{where(text, '{compound: Z')}: error: day 3: the cells receive 0.68% DMSO after "
        "adding Z (A, Z), above the 0.5% limit"
    ]


# --- 6. limits, stated ------------------------------------------------------------------------


def test_a_5_mb_file_is_refused_with_its_size_and_the_limit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "big.yaml"
    p.write_bytes(b"# " + b"x" * (5 * 1024 * 1024) + b"\n")
    assert main(["validate", str(p)]) == 2
    assert capsys.readouterr().err == (
        f"{p}: error: the file is 5 MB, above labctl's limit of 2 MB for a protocol file; a "
        "protocol is a few kB of YAML: keep long texts, images and data tables in files of "
        "their own\n"
    )


def test_the_limits_are_stated_in_the_docs() -> None:
    from labctl.protocol import loader, names

    docs = DOCS.read_text(encoding="utf-8")
    limits = docs[docs.index("## Limits") :]
    assert (
        f"| file size | {source.MAX_BYTES // (1024 * 1024)} MB ({source.MAX_BYTES:,} bytes) |"
        in limits
    )
    assert f"| nesting | {source.MAX_DEPTH} levels" in limits
    assert f"| values | {source.MAX_NODES:,} " in limits
    assert f"| days | {loader.MIN_DAY} to {loader.MAX_DAY} |" in limits
    assert f"at most {loader.MAX_DURATION_DAYS} days" in limits
    assert f"1 to {names.MAX_NAME} characters" in limits
    assert f"{source.MAX_ALIAS_COPIES:,} values" in limits
    with pytest.raises(UnitParseError, match="at most 40 characters"):
        parse_quantity("1 " + "m" * 41)


# --- 7. one pass; the version -----------------------------------------------------------------

MANY = protocol(
    """\
    LDN193189: {stock: 1 mM, solvent: DMSO}
    SB431542: {stock: 10 mM, solvent: DMSO}
    """,
    """\
    media: [{days: "0-4", medium: KSR}]
    factors:
      - {compound: LDN19318, conc: 100 nM, days: "0-4"}
      - {compound: SB431542, conc: 60 uM, days: "0-4"}
    feeds: [{days: "0-4", change: full}]
    events:
      - {days: 2, kind: smaple, title: look}
    """,
).replace("labctl: 1\n", "labctl: '1'\n")


FEED_0_4 = '{days: "0-4", change: full}'


def test_validate_reports_every_problem_in_one_pass() -> None:
    assert lines(load_text(MANY, "m.yaml")) == [
        "1:9: error: 'labctl' is the format version, a whole number: write labctl: 1 (the "
        "number 1, without quotes or decimals), not the text '1'",
        f"{where(MANY, 'LDN19318,')}: error: schedule.factors #1 names compound 'LDN19318', "
        "which is not in compounds; did you mean 'LDN193189'?",
        f"{where(MANY, FEED_0_4)}: error: day 0: the fresh medium holds "
        "0.6% DMSO (SB431542); the cells receive 0.6% after the full change, above the 0.5% limit",
        f"{where(MANY, 'smaple')}: error: 'kind' in schedule.events #1: 'smaple' is not an event "
        "kind (one of replate, passage, seed, coat, sort, sample, image, freeze, wash, harvest, "
        "custom); did you mean 'sample'?",
    ]


def test_a_missing_culture_does_not_hide_the_schedules_problems() -> None:
    text = MANY.replace("labctl: '1'", "labctl: 1").replace(
        "culture:\n  labware: corning_6_wellplate_16.8ml_flat\n  volume: 2 mL\n", ""
    )
    msgs = lines(load_text(text, "c.yaml"))
    assert msgs[0] == "1:1: error: the protocol is missing the required key 'culture'"
    assert any("names compound 'LDN19318'" in m for m in msgs)
    assert any("'smaple' is not an event kind" in m for m in msgs)


@pytest.mark.parametrize("version", ["'1'", '"1"', "1.0"])
def test_a_version_that_is_not_the_number_1_says_how_to_write_it(version: str) -> None:
    text = MANY.replace("labctl: '1'", f"labctl: {version}")
    first = lines(load_text(text, "v.yaml"))[0]
    assert first.startswith(
        "1:9: error: 'labctl' is the format version, a whole number: write labctl: 1"
    )


def test_another_version_still_stops() -> None:
    text = MANY.replace("labctl: '1'", "labctl: 2")
    assert lines(load_text(text, "v.yaml")) == [
        "1:9: error: this labctl reads format version 1 ('labctl: 1'), not the number '2'"
    ]


# --- 8. aliases -------------------------------------------------------------------------------

ALIASED = protocol(
    "A: {stock: 10 mM, solvent: water}\n",
    """\
    media: [{days: "0-6", medium: KSR}]
    factors: [{compound: A, conc: *dose, days: "0-6"}]
    feeds: [{<<: *feed, days: "0-6"}]
    events:
      - days: 5
        kind: replate
        title: to 24 wells
        culture: {labware: corning_24_wellplate_3.4ml_flat, volume: *vol}
    """,
    extra="""\
    x-shared:
      dose: &dose 1 uMM
      vol: &vol 4 mL
      feed: &feed {change: full, window: 30 mn}
    """,
    culture="culture:\n  labware: corning_6_wellplate_16.8ml_flat\n  volume: *vol\n",
)


def test_a_value_through_an_alias_is_located_at_its_use() -> None:
    text = ALIASED
    assert lines(load_text(text, "a.yaml")) == [
        f"{where(text, '*dose')}: error: 'conc' in schedule.factors #1: unknown unit 'uMM' in "
        f"'1 uMM' (the value comes from the anchor &dose at line {where(text, '&dose').split(':')[0]})",
        f"{where(text, '*feed')}: error: 'window' in schedule.feeds #1: unknown unit 'mn' in "
        f"'30 mn' (written at line {where(text, '&feed').split(':')[0]}, in the anchor &feed at "
        f"line {where(text, '&feed').split(':')[0]})",
        # 4 mL fits the 6-well culture (its own use of *vol) but not the 24-well replate.
        f"{where(text, '*vol', 1)}: error: the culture change of 'to 24 wells': volume 4 mL is "
        "above the 3.4 mL capacity of a well of corning_24_wellplate_3.4ml_flat (the value "
        f"comes from the anchor &vol at line {where(text, '&vol').split(':')[0]})",
    ]


# --- and: units a scientist writes that labctl must not misread -------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1000 U/mL", "'U/mL' is read as units of activity"),
        ("100 u/mL", "for 'u' alone, as the atomic mass unit"),
        ("10 IU/mL", "'IU/mL' is read as units of activity"),
        ("1 x", "a 50x stock used at 1x is stock: 100%, conc: 2%"),
    ],
)
def test_activity_units_and_supplement_strengths_are_refused_with_what_to_write(
    text: str, says: str
) -> None:
    with pytest.raises(UnitParseError, match=re.escape(says)):
        parse_quantity(text)


def test_37_c_is_not_read_as_coulombs_silently() -> None:
    from labctl.units import Dim

    with pytest.raises(UnitParseError, match="C alone is the coulomb; degrees are written degC"):
        parse_quantity("37 C", Dim.TEMPERATURE)


def test_key_text_is_ascii() -> None:
    from labctl.protocol.names import key_text

    assert key_text("TGF-β3") == "TGF-beta3"
    assert key_text("µ-conotoxin") == "mu-conotoxin"
    assert key_text("N6,2′-O-dibutyryl-cAMP").isascii()


def test_a_fresh_medium_over_the_limit_is_an_error_even_if_the_well_is_under() -> None:
    # dose: well on a half change from a well without DMSO: the fresh medium carries twice
    # what the cells end with.
    text = HALF.replace("conc: 16 uM", "conc: 30 uM").replace(
        "{days: 3, change: half}", "{days: 3, change: half, dose: well}"
    )
    assert lines(load_text(text, "w.yaml")) == [
        f"{where(text, '{days: 3, change: half')}: error: day 3: the fresh medium holds 0.6% "
        "DMSO (A); the cells receive 0.3% after the half change; the fresh medium is above "
        "the 0.5% limit"
    ]
