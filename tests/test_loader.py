"""Focused tests of the protocol loader: day sets, quantities, times, YAML details (merge
keys, duplicate keys, x- keys) and the model built from tests/data/format_example.yaml."""

from __future__ import annotations

import hashlib
from datetime import time
from pathlib import Path

import pytest
import yaml

from labctl.errors import Diagnostic, InputFileError, ProtocolError
from labctl.protocol import source
from labctl.protocol.diagnostics import Ctx, LoadResult, did_you_mean
from labctl.protocol.loader import get_time, parse_days
from labctl.protocol.model import Change, Dose, OnFail, ParamRef
from labctl.units import Q_, Dim, UnitParseError, parse_quantity
from labctl.validate import load_file, load_protocol, load_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "data" / "format_example.yaml"

MINIMAL = """\
labctl: 1
id: loader-test
title: Loader test
version: 0.1.0
compounds:
  SB431542: {stock: 20 mM, solvent: DMSO}
media:
  KSR: {description: "Knockout DMEM, 15% KSR"}
culture:
  labware: corning_6_wellplate_16.8ml_flat
  volume: 2 mL
schedule:
  media:
    - {days: "0-4", medium: KSR}
  factors:
    - {compound: SB431542, conc: 10 uM, days: "0-4"}
  feeds:
    - {days: "0-4", change: full}
"""


def msgs(res: LoadResult) -> list[str]:
    return [f"{d.line}:{d.column}: {d.severity}: {d.message}" for d in res.diagnostics]


def ok(text: str) -> LoadResult:
    res = load_text(text, "t.yaml")
    assert msgs(res) == []
    assert res.ok and res.protocol is not None
    return res


# --- day sets -------------------------------------------------------------------------------


def days_of(yaml_value: str) -> tuple[tuple[int, ...] | None, list[str]]:
    root, diags = source.parse(f"days: {yaml_value}\n", "d.yaml")
    assert diags == [] and isinstance(root, source.Map)
    ctx = Ctx("d.yaml")
    ds = parse_days(ctx, root.get("days"), "the test")
    return (ds.days if ds else None), [d.message for d in ctx.diags]


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("5", (5,)),
        ("0", (0,)),
        ('"0-11"', tuple(range(12))),
        ("0-3", (0, 1, 2, 3)),  # unquoted: YAML reads it as text too
        ("[0, 2, 4]", (0, 2, 4)),
        ("[4, 0, 2, 2]", (0, 2, 4)),  # sorted, each day once
        ('"11-25/2"', (11, 13, 15, 17, 19, 21, 23, 25)),
        ('"0-10/3"', (0, 3, 6, 9)),
        ('"5-5/7"', (5,)),
        ("-2", (-2,)),
        ('"-5--1"', (-5, -4, -3, -2, -1)),
        ('"-1-3"', (-1, 0, 1, 2, 3)),
        ('"-6--2/2"', (-6, -4, -2)),
        ('[-3, "0-2", "10-14/4"]', (-3, 0, 1, 2, 10, 14)),
        ('" 3 - 5 "', (3, 4, 5)),
        ("-100", (-100,)),
        ("1000", (1000,)),
    ],
)
def test_day_set_forms(text: str, days: tuple[int, ...]) -> None:
    assert days_of(text) == (days, [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '"3-"',
            "'days' in the test: '3-' is not a day set; write a day (5), a range (\"0-11\"), a list ([0, 2, 4]) or a step (\"11-25/2\")",
        ),
        ('"5-2"', "'days' in the test: range '5-2' ends before it starts"),
        ('"-1--5"', "'days' in the test: range '-1--5' ends before it starts"),
        ('"1-10/0"', "'days' in the test: the step in '1-10/0' must be at least 1"),
        (
            "abc",
            "'days' in the test: 'abc' is not a day set; write a day (5), a range (\"0-11\"), a list ([0, 2, 4]) or a step (\"11-25/2\")",
        ),
        (
            '"1-10/2/3"',
            "'days' in the test: '1-10/2/3' is not a day set; write a day (5), a range (\"0-11\"), a list ([0, 2, 4]) or a step (\"11-25/2\")",
        ),
        (
            "1.5",
            "'days' in the test: '1.5' is not a day set; write a day (5), a range (\"0-11\"), a list ([0, 2, 4]) or a step (\"11-25/2\")",
        ),
        (
            '"0-2000"',
            "'days' in the test: '0-2000' is outside days -100 to 1000, labctl's limit for a protocol day",
        ),
        (
            "-101",
            "'days' in the test: '-101' is outside days -100 to 1000, labctl's limit for a protocol day",
        ),
        ("[]", "'days' in the test is an empty list"),
        ("[1, [2]]", "'days' in the test: a list of days holds numbers or ranges, not a list"),
        (
            "{a: 1}",
            '\'days\' in the test must be a day (5), a range ("0-11"), a list ([0, 2]) or a step ("11-25/2"), not a mapping',
        ),
        (
            "null",
            '\'days\' in the test must be a day (5), a range ("0-11"), a list ([0, 2]) or a step ("11-25/2"), not nothing (null)',
        ),
    ],
)
def test_malformed_day_sets(text: str, message: str) -> None:
    assert days_of(text) == (None, [message])


def test_day_set_keeps_its_text() -> None:
    res = ok(MINIMAL.replace('{days: "0-4", change: full}', '{days: [0, "1-4"], change: full}'))
    assert res.protocol is not None
    feed = res.protocol.schedule.feeds[0]
    assert feed.days.text == "[0, 1-4]" and feed.days.first == 0 and feed.days.last == 4
    assert res.protocol.schedule.media[0].days.text == "0-4"


# --- quantities -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit", "value"),
    [
        ("3 uM", "uM", 3),
        ("3 µM", "uM", 3),  # micro sign U+00B5
        ("3 μM", "uM", 3),  # Greek mu U+03BC
        ("3uM", "uM", 3),
        ("100 nM", "uM", 0.1),
        ("10 mM", "uM", 10_000),
        ("100 ng/mL", "ug/mL", 0.1),
        ("1 ug/mL", "ng/mL", 1000),
        ("2 mL", "uL", 2000),
        ("500 uL", "mL", 0.5),
        ("500 µL", "mL", 0.5),
        ("20 min", "s", 1200),
        ("2 h", "min", 120),
        ("1.5 d", "h", 36),
        ("465.3 g/mol", "g/mol", 465.3),
        ("1e3 nM", "uM", 1),
    ],
)
def test_quantities(text: str, unit: str, value: float) -> None:
    assert parse_quantity(text).to(unit).magnitude == pytest.approx(value)


def test_percent_and_degrees() -> None:
    assert parse_quantity("25%", Dim.FRACTION).to("dimensionless").magnitude == pytest.approx(0.25)
    assert parse_quantity("0.1 %", Dim.CONCENTRATION).to(
        "dimensionless"
    ).magnitude == pytest.approx(0.001)
    assert parse_quantity("37 degC", Dim.TEMPERATURE).to("degC").magnitude == pytest.approx(37)
    assert parse_quantity("37 °C", Dim.TEMPERATURE).to("degC").magnitude == pytest.approx(37)
    assert parse_quantity("37 degC", Dim.TEMPERATURE).to("K").magnitude == pytest.approx(310.15)


@pytest.mark.parametrize(
    ("text", "dim", "message"),
    [
        (
            "10",
            Dim.CONCENTRATION,
            "'10' has no unit; expected a concentration (e.g. 100 nM, 10 ng/mL, 1%)",
        ),
        ("10 uMol", Dim.CONCENTRATION, "unknown unit 'uMol' in '10 uMol'"),
        (
            "2 mM",
            Dim.VOLUME,
            "'2 mM' is a molar concentration; expected a volume (e.g. 2 mL, 500 uL)",
        ),
        (
            "2 mL",
            Dim.CONCENTRATION,
            "'2 mL' is a volume; expected a concentration (e.g. 100 nM, 10 ng/mL, 1%)",
        ),
        ("4 mL", Dim.FRACTION, "'4 mL' is a volume; expected a percentage (e.g. 25%)"),
        (
            "uM",
            Dim.CONCENTRATION,
            "'uM' is not a number followed by a unit; expected a concentration (e.g. 100 nM, 10 ng/mL, 1%)",
        ),
        ("1e400 uM", Dim.CONCENTRATION, "'1e400 uM' is not a finite number"),
    ],
)
def test_bad_quantities(text: str, dim: Dim, message: str) -> None:
    with pytest.raises(UnitParseError) as exc:
        parse_quantity(text, dim)
    assert str(exc.value) == message


def test_quantities_in_a_protocol_are_checked_for_dimension() -> None:
    res = load_text(
        MINIMAL.replace("volume: 2 mL", "volume: 2 mM").replace("stock: 20 mM", "stock: 20 mL"),
        "t.yaml",
    )
    assert msgs(res) == [
        "6:21: error: 'stock' in compound 'SB431542': '20 mL' is a volume; expected a concentration (e.g. 100 nM, 10 ng/mL, 1%)",
        "11:11: error: 'volume' in culture: '2 mM' is a molar concentration; expected a volume (e.g. 2 mL, 500 uL)",
    ]


def test_micro_sign_and_u_give_the_same_protocol() -> None:
    a = ok(MINIMAL).protocol
    b = ok(MINIMAL.replace("conc: 10 uM", "conc: 10 µM")).protocol
    assert a is not None and b is not None
    assert a.schedule.factors[0].conc == b.schedule.factors[0].conc == Q_(10, "uM")


# --- times ----------------------------------------------------------------------------------


def time_of(yaml_value: str) -> tuple[time | None, list[str]]:
    root, diags = source.parse(f"at: {yaml_value}\n", "t.yaml")
    assert diags == [] and isinstance(root, source.Map)
    ctx = Ctx("t.yaml")
    return get_time(ctx, root, "at", "the test"), [d.message for d in ctx.diags]


def test_unquoted_time_stays_a_time_of_day() -> None:
    # YAML 1.1 (PyYAML's safe_load) reads 10:00 as the sexagesimal number 600 ...
    assert yaml.safe_load("at: 10:00") == {"at": 600}
    # ... the loader keeps the text and reads it as a time of day.
    assert time_of("10:00") == (time(10, 0), [])
    assert time_of('"10:00"') == (time(10, 0), [])
    assert time_of("9:30") == (time(9, 30), [])
    assert time_of("'23:59'") == (time(23, 59), [])
    assert time_of("00:00") == (time(0, 0), [])


def test_unquoted_time_in_a_protocol() -> None:
    res = ok(
        MINIMAL.replace('{days: "0-4", change: full}', '{days: "0-4", change: full, at: 10:00}')
    )
    assert res.protocol is not None and res.protocol.schedule.feeds[0].at == time(10, 0)


@pytest.mark.parametrize(
    "text", ["25:00", "24:00", "10:60", "9h", "0930", "9.30", "10:00:00", "noon", "-1:00"]
)
def test_bad_times(text: str) -> None:
    assert time_of(f'"{text}"') == (
        None,
        [f"'at' in the test: '{text}' is not a time of day; write HH:MM, e.g. \"09:30\""],
    )


def test_time_must_be_text_not_a_list() -> None:
    assert time_of("[9, 30]") == (
        None,
        ["'at' in the test must be a time of day like \"09:30\", not a list"],
    )


# --- YAML details: merge keys, duplicates, x- keys, tags ------------------------------------

MERGED = """\
labctl: 1
id: merge-test
title: Merge keys
version: 0.1.0
x-defaults:
  dmso: &dmso {solvent: DMSO, storage: -20 degC aliquots}
  water: &water {solvent: water}
compounds:
  SB431542: {<<: *dmso, stock: 20 mM}
  CHIR99021: {<<: *dmso, stock: 10 mM, solvent: ethanol}
  Y-27632:
    <<: [*water, *dmso]
    stock: 10 mM
media:
  KSR: {description: "Knockout DMEM, 15% KSR"}
culture: {labware: corning_6_wellplate_16.8ml_flat, volume: 2 mL}
schedule:
  media: [{days: "0-4", medium: KSR}]
  feeds: [{days: "0-4", change: full}]
"""


def test_merge_keys() -> None:
    p = ok(MERGED).protocol
    assert p is not None
    sb, chir, y = p.compounds["SB431542"], p.compounds["CHIR99021"], p.compounds["Y-27632"]
    assert (sb.solvent, sb.storage, sb.stock) == ("DMSO", "-20 degC aliquots", Q_(20, "mM"))
    assert chir.solvent == "ethanol"  # an explicit key wins over a merged one
    assert chir.storage == "-20 degC aliquots"
    assert y.solvent == "water"  # the first mapping of a merge list wins
    assert y.storage == "-20 degC aliquots"


def test_merge_of_a_non_mapping_is_an_error() -> None:
    res = load_text(
        MERGED.replace("{<<: *dmso, stock: 20 mM}", "{<<: [1, 2], stock: 20 mM}"), "t.yaml"
    )
    assert msgs(res) == [
        "9:13: error: compound 'SB431542' is missing the required key 'solvent'",
        "9:19: error: '<<' merges only mappings",
        "9:22: error: '<<' merges only mappings",
    ]


def test_duplicate_keys() -> None:
    text = MINIMAL.replace("  volume: 2 mL\n", "  volume: 2 mL\n  volume: 1 mL\n").replace(
        "{stock: 20 mM, solvent: DMSO}", "{stock: 20 mM, solvent: DMSO, stock: 10 mM}"
    )
    res = load_text(text, "t.yaml")
    assert msgs(res) == [
        "6:43: error: duplicate key 'stock' (first at line 6)",
        "12:3: error: duplicate key 'volume' (first at line 11)",
    ]
    assert res.protocol is None


def test_duplicate_top_level_section() -> None:
    res = load_text(MINIMAL + "media:\n  N2: {description: DMEM/F12}\n", "t.yaml")
    assert msgs(res) == ["19:1: error: duplicate key 'media' (first at line 7)"]


def test_x_keys_are_ignored_everywhere() -> None:
    text = (
        MINIMAL.replace("version: 0.1.0\n", "version: 0.1.0\nx-lab: {owner: jdoe, notes: [a, b]}\n")
        .replace(
            "{stock: 20 mM, solvent: DMSO}", "{stock: 20 mM, solvent: DMSO, x-vendor: Selleck}"
        )
        .replace("compounds:\n", "compounds:\n  x-comment: not a compound\n")
        .replace('{days: "0-4", change: full}', '{days: "0-4", change: full, x-robot: B}')
        .replace("  volume: 2 mL\n", "  volume: 2 mL\n  x-plate-barcode: 12345\n")
    )
    p = ok(text).protocol
    assert p is not None
    assert list(p.compounds) == ["SB431542"]
    assert p.compounds["SB431542"].stock == Q_(20, "mM")
    assert p.culture.volume == Q_(2, "mL") and len(p.schedule.feeds) == 1


def test_x_keys_change_nothing_but_the_hash() -> None:
    a = ok(MINIMAL).protocol
    b = ok(MINIMAL + "x-note: checked by jdoe\n").protocol
    assert a is not None and b is not None
    assert (a.compounds, a.media, a.culture, a.timing, a.schedule) == (
        b.compounds,
        b.media,
        b.culture,
        b.timing,
        b.schedule,
    )
    assert a.sha256 != b.sha256


def test_unknown_keys_have_suggestions() -> None:
    res = load_text(MINIMAL.replace("  volume: 2 mL\n", "  volum: 2 mL\n  wels: all\n"), "t.yaml")
    assert msgs(res) == [
        "10:3: error: culture is missing the required key 'volume'",
        "11:3: error: unknown key 'volum' in culture; did you mean 'volume'?",
        "12:3: error: unknown key 'wels' in culture; did you mean 'wells'?",
    ]


def test_comma_in_unquoted_flow_text_gets_a_hint() -> None:
    res = load_text(MINIMAL.replace('"Knockout DMEM, 15% KSR"', "Knockout DMEM, 15% KSR"), "t.yaml")
    assert msgs(res) == [
        "8:37: error: unknown key '15% KSR' in medium 'KSR'; if it belongs to the text before it, "
        "put that text in quotes (a comma inside {...} starts a new key)"
    ]


def test_tags_are_refused() -> None:
    res = load_text(
        MINIMAL.replace("id: loader-test", "id: !!python/name:os.system loader-test"), "t.yaml"
    )
    assert msgs(res) == [
        "2:5: error: tag 'tag:yaml.org,2002:python/name:os.system' is not allowed (protocols are plain data)"
    ]
    res = load_text(MINIMAL.replace("id: loader-test", "id: !custom loader-test"), "t.yaml")
    assert msgs(res) == ["2:5: error: tag '!custom' is not allowed (protocols are plain data)"]


def test_standard_tags_are_plain_data() -> None:
    p = ok(MINIMAL.replace("version: 0.1.0", "version: !!str 0.1.0")).protocol
    assert p is not None and p.version == "0.1.0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "1:1: error: the file is empty"),
        ("# only a comment\n", "1:1: error: the file is empty"),
        (
            "- a\n- b\n",
            "1:1: error: a protocol file must be a mapping (key: value lines), not a list",
        ),
        (
            "just text\n",
            "1:1: error: a protocol file must be a mapping (key: value lines), not the text 'just text'",
        ),
    ],
)
def test_not_a_protocol(text: str, message: str) -> None:
    assert msgs(load_text(text, "t.yaml")) == [message]


def test_newlines_in_keys_are_escaped_in_messages() -> None:
    res = load_text(MINIMAL + '"fee\\nds": 1\n', "t.yaml")
    assert msgs(res) == ["19:1: error: unknown key 'fee\\nds' in the protocol"]
    assert all("\n" not in d.format() for d in res.diagnostics)


def test_control_characters_are_located() -> None:
    res = load_text(MINIMAL.replace("title: Loader test", "title: Loader\x00test"), "t.yaml")
    assert msgs(res) == [
        "3:14: error: character U+0000 is not allowed in a protocol file (a control character); remove it"
    ]


def test_yaml_errors_are_located_and_say_where_a_bracket_opened() -> None:
    res = load_text(
        MINIMAL.replace('{days: "0-4", medium: KSR}', '{days: "0-4", medium: KSR'), "t.yaml"
    )
    # PyYAML reads the next line as more of the flow mapping and stops at its ':'.
    assert msgs(res) == [
        "15:10: error: YAML syntax: expected ',' or '}', but got ':' "
        "(in the flow mapping that starts at line 14, column 7)"
    ]


# --- the model of format_example.yaml --------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> LoadResult:
    return load_file(EXAMPLE)


def test_example_is_valid_with_only_warnings(example: LoadResult) -> None:
    assert example.ok and example.errors == []
    assert len(example.warnings) == 10
    assert example.warnings[0].format() == (
        f"{EXAMPLE}:42:7: warning: day 0: the fresh medium holds 0.2% DMSO (LDN193189, SB431542); "
        "the cells receive 0.2% after the full change, above 0.1%"
    )


def test_example_top_level(example: LoadResult) -> None:
    p = example.protocol
    assert p is not None
    text = EXAMPLE.read_text(encoding="utf-8")
    assert (p.id, p.title, p.version) == (
        "format-example",
        "The example of PROTOCOL_FORMAT.md",
        "1.2.0",
    )
    assert p.reference is not None
    assert (p.reference.citation, p.reference.doi) == (
        "Kriks S et al. Nature 480:547 (2011)",
        "10.1038/nature10648",
    )
    assert [(ph.name, ph.days.first, ph.days.last) for ph in p.phases] == [
        ("patterning", 0, 10),
        ("maturation", 11, 25),
    ]
    assert p.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert p.source_file == str(EXAMPLE) and p.source_text == text
    assert (p.first_day, p.last_day) == (0, 25)


def test_example_parameters_compounds_media(example: LoadResult) -> None:
    p = example.protocol
    assert p is not None
    chir = p.parameters["chir"]
    assert (chir.default, chir.min, chir.max) == (Q_(3, "uM"), Q_(0.5, "uM"), Q_(6, "uM"))
    assert chir.description == "CHIR99021 dose, titrate per line"
    assert list(p.compounds) == [
        "LDN193189",
        "SB431542",
        "SHH-C25II",
        "CHIR99021",
        "Y-27632",
        "mitomycin-C",
    ]
    assert p.compounds["LDN193189"].stock == Q_(100, "uM")
    assert p.compounds["SHH-C25II"].stock == Q_(100, "ug/mL")
    assert p.compounds["SHH-C25II"].solvent == "PBS + 0.1% BSA"
    assert p.compounds["CHIR99021"].mw == Q_(465.3, "g/mol")
    assert p.compounds["SB431542"].mw is None and p.compounds["SB431542"].max_solvent is None
    assert (p.compounds["CHIR99021"].loc.line, p.compounds["CHIR99021"].loc.col) == (14, 3)
    assert list(p.media) == ["KSR", "N2", "NB", "PBS"]
    assert p.media["KSR"].shelf_life == Q_(14, "d")
    assert (
        p.media["KSR"].description
        == "Knockout DMEM, 15% KSR, 2 mM L-glutamine, 10 uM 2-mercaptoethanol"
    )


def test_example_culture_and_timing(example: LoadResult) -> None:
    p = example.protocol
    assert p is not None
    c = p.culture
    assert (c.labware, c.wells, c.volume, c.coating) == (
        "corning_6_wellplate_16.8ml_flat",
        None,
        Q_(2, "mL"),
        "Matrigel",
    )
    t = p.timing
    assert (t.feed_at, t.window, t.max_out_of_incubator) == (time(9, 0), Q_(2, "h"), Q_(20, "min"))


def test_example_schedule(example: LoadResult) -> None:
    p = example.protocol
    assert p is not None
    s = p.schedule
    assert [(r.days.days, r.parts) for r in s.media] == [
        ((0, 1, 2, 3, 4), (("KSR", 1.0),)),
        (tuple(range(5, 11)), (("KSR", 0.75), ("N2", 0.25))),
        (tuple(range(11, 26)), (("NB", 1.0),)),
    ]
    assert [(f.compound, f.conc, f.days.text) for f in s.factors] == [
        ("LDN193189", Q_(100, "nM"), "0-11"),
        ("SB431542", Q_(10, "uM"), "0-4"),
        ("SHH-C25II", Q_(100, "ng/mL"), "1-6"),
        ("CHIR99021", ParamRef("chir", s.factors[3].conc.loc), "3-12"),  # type: ignore[union-attr]
    ]
    assert (s.factors[3].conc.loc.line, s.factors[3].conc.loc.col) == (40, 35)  # type: ignore[union-attr]
    feeds = s.feeds
    assert len(feeds) == 8
    assert [(f.change, f.fraction) for f in feeds] == [
        (Change.FULL, 1.0),
        (Change.FULL, 1.0),
        (Change.FULL, 1.0),
        (Change.HALF, 0.5),
        (Change.FULL, 1.0),
        (Change.HALF, 0.5),
        (Change.TOP_UP, 0.0),
        (Change.FULL, 1.0),
    ]
    assert (feeds[1].after_previous, feeds[1].window, feeds[1].at) == (
        Q_(24, "h"),
        Q_(30, "min"),
        None,
    )
    assert feeds[3].dose is Dose.WELL and feeds[0].dose is Dose.FRESH
    assert feeds[5].days.days == (11, 13, 15, 17, 19, 21, 23, 25) and feeds[5].at == time(10, 0)
    assert feeds[6].volume == Q_(1, "mL")
    w = feeds[7].wash
    assert w is not None and (w.medium, w.volume, w.times) == ("PBS", Q_(1, "mL"), 2)
    assert (feeds[0].loc.line, feeds[0].loc.col) == (42, 7)
    y, mito = s.additions
    assert (y.compound, y.conc, y.days.days, y.at, y.pulse) == (
        "Y-27632",
        Q_(10, "uM"),
        (11,),
        time(15, 0),
        None,
    )
    assert (mito.compound, mito.conc, mito.pulse, mito.washout_medium, mito.washout_times) == (
        "mitomycin-C",
        Q_(1, "ug/mL"),
        Q_(1, "h"),
        None,
        1,
    )
    (env,) = s.environment
    assert (env.days.days, env.o2, env.co2, env.temperature) == (
        (0, 1, 2, 3, 4),
        Q_(4, "percent"),
        None,
        None,
    )
    replate, sample = s.events
    assert (replate.kind, replate.days.days, replate.duration) == ("replate", (11,), Q_(90, "min"))
    assert replate.culture is not None
    assert (replate.culture.labware, replate.culture.volume) == (
        "corning_24_wellplate_3.4ml_flat",
        Q_(500, "uL"),
    )
    assert sample.title == "FOXA2/LMX1A immunostaining"
    (gate,) = sample.qc
    assert (gate.measure, gate.unit, gate.min, gate.max, gate.on_fail, gate.by) == (
        "FOXA2_LMX1A_pct",
        "%",
        60.0,
        None,
        OnFail.HOLD,
        None,
    )


# --- results, errors, helpers ---------------------------------------------------------------


def test_diagnostics_are_sorted_and_all_reported() -> None:
    text = (
        MINIMAL.replace("conc: 10 uM", "conc: 10")
        .replace("volume: 2 mL", "volume: 2")
        .replace("id: loader-test", "id: Loader Test")
    )
    res = load_text(text, "t.yaml")
    assert [(d.line, d.column) for d in res.diagnostics] == [(2, 5), (11, 11), (16, 34)]
    assert res.protocol is None and not res.ok


def test_load_protocol_raises_protocol_error_with_all_diagnostics(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(
        MINIMAL.replace("conc: 10 uM", "conc: 10").replace("volume: 2 mL", "volume: 2"),
        encoding="utf-8",
    )
    with pytest.raises(ProtocolError) as exc:
        load_protocol(p)
    assert len(exc.value.errors) == 2
    assert str(exc.value).startswith(f"{p}:11:11: error: 'volume' in culture")
    assert str(exc.value).endswith("(and 1 more)")
    q = tmp_path / "ok.yaml"
    q.write_text(MINIMAL, encoding="utf-8")
    assert load_protocol(q).id == "loader-test"


def test_load_file_raises_only_input_file_error_for_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        load_file(tmp_path / "missing.yaml")
    with pytest.raises(InputFileError, match="is a directory"):
        load_file(tmp_path)


def test_diagnostic_format() -> None:
    d = Diagnostic("a.yaml", 3, 7, "error", "something")
    assert d.format() == "a.yaml:3:7: error: something"


def test_did_you_mean() -> None:
    assert did_you_mean("volum", {"volume", "wells"}) == "; did you mean 'volume'?"
    assert did_you_mean("KSR", {"ksr"}) == "; did you mean 'ksr'?"
    assert did_you_mean("zzz", {"volume"}) == ""


def test_position_counts_lines_as_yaml_does() -> None:
    assert source.position("ab\ncd", 4) == (2, 2)
    assert source.position("a\r\nb", 3) == (2, 1)
    assert source.position("a\u2028b", 2) == (2, 1)
    assert source.position("abc", 0) == (1, 1)


def test_environment_checked_against_a_workcell() -> None:
    class Workcell:
        name = "bench-1"

        def incubator_capabilities(self) -> list[tuple[str, set[str]]]:
            return [("cytomat", {"temperature", "co2"})]

    text = MINIMAL + '  environment:\n    - {days: "0-4", o2: 4%}\n'
    assert msgs(load_text(text, "t.yaml")) == []
    res = load_text(text, "t.yaml", workcell=Workcell())
    assert msgs(res) == [
        "20:7: error: schedule.environment #1 sets o2 to 4%, but no incubator of workcell 'bench-1' controls o2"
    ]
