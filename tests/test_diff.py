"""``labctl diff OLD NEW``: two protocol versions compared as a scientist reads them.

Pairs are built from the shipped protocols by editing their text (a concentration on a day
range, full to half changes, a compound added and one removed, a medium on some days, a
version bump) and the lines printed are asserted word for word. Also: identical files,
comment-only and wording-only changes (exit 0), an invalid or unreadable file (exit 2, one
located message), --json, and property tests on generated protocols (a protocol against
itself shows nothing; what OLD -> NEW reports added, NEW -> OLD reports removed).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.cli.main import main
from labctl.plan import diff as diff_module
from labctl.plan.diff import ProtocolDiff, comments, compare, days_text, render_text
from labctl.plan.resolve import Plan
from labctl.protocol.model import Protocol
from labctl.validate import load_text

ROOT = Path(__file__).resolve().parent.parent
KRIKS = ROOT / "protocols" / "kriks2011_da.yaml"
KRIKS_TEXT = KRIKS.read_text(encoding="utf-8")
NOLBRANT = ROOT / "protocols" / "nolbrant2017_vm.yaml"  # few feeds: quick to resolve
NOLBRANT_TEXT = NOLBRANT.read_text(encoding="utf-8")
EXAMPLE = ROOT / "tests" / "data" / "format_example.yaml"
EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")


@pytest.fixture(autouse=True, scope="module")
def _resolve_each_text_once() -> Iterator[None]:
    """The resolver takes ~0.2 s for Kriks (pint): resolve each protocol text once here."""
    real = diff_module.resolve
    plans: dict[tuple[str, str], Plan] = {}

    def once(p: Protocol, **kw: Any) -> Plan:
        key = (p.sha256, p.source_file)
        if key not in plans:
            plans[key] = real(p, **kw)
        return plans[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(diff_module, "resolve", once)
        yield


@functools.cache
def kriks() -> Protocol:
    return load(KRIKS_TEXT, str(KRIKS))


@functools.cache
def nolbrant() -> Protocol:
    return load(NOLBRANT_TEXT, str(NOLBRANT))


def diff_lines(new_text: str, old: Protocol | None = None) -> tuple[bool, list[str]]:
    """(same in substance, the lines printed after the heading) of ``old`` (Kriks) ->
    ``new_text``."""
    d = compare(old or kriks(), load(new_text, "new.yaml"))
    return d.same_in_substance, render_text(d).splitlines()[1:]


def edit(text: str, *changes: tuple[str, str]) -> str:
    """``text`` with each (old, new) replaced once; the old text must be there."""
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["diff", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def body(out: str) -> list[str]:
    """The printed lines after the heading line."""
    return out.splitlines()[1:]


def load(text: str, name: str = "p.yaml") -> Protocol:
    res = load_text(text, name)
    assert res.ok and res.protocol is not None, [d.format() for d in res.errors]
    return res.protocol


# --- edits of a shipped protocol, line by line --------------------------------------------

CHIR_3_7 = (
    '{compound: CHIR99021,     conc: $chir,     days: "3-12"}',
    '{compound: CHIR99021,     conc: 0.7 uM,    days: "3-7"}\n'
    '    - {compound: CHIR99021,     conc: $chir,     days: "8-12"}',
)
HALF_21_25 = ('{days: "21-25", change: full}', '{days: "21-25", change: half}')
ADD_Y27632 = (
    "  DAPT:          {stock: 10 mM, solvent: DMSO}                  # typical stock (SOURCES.md)\n",
    "  Y-27632:       {stock: 10 mM, solvent: water}\n",
)
USE_Y27632 = (
    '    - {compound: DAPT,          conc: 10 uM,     days: "11-25"}\n',
    "    - {compound: Y-27632,       conc: 10 uM,     days: 20}\n",
)
MEDIUM_7_8 = (
    '{days: "7-8",   medium: {KSR_medium: 50%, N2_medium: 50%}}',
    '{days: "7-8",   medium: N2_medium}',
)
BUMP = ("version: 1.0.0", "version: 1.1.0")


def test_a_concentration_on_a_day_range() -> None:
    same, lines = diff_lines(edit(KRIKS_TEXT, CHIR_3_7))
    assert not same
    assert lines == [
        "",
        "factors, by day:",
        "  days 3-7: CHIR99021 3 uM -> 0.7 uM",
        "  days 3-7: CHIR99021 dose set by $chir -> fixed",
        "",
        "2 differences in substance.",
    ]


def test_full_to_half_changes_on_some_days() -> None:
    same, lines = diff_lines(edit(KRIKS_TEXT, HALF_21_25))
    # The fresh medium is the same: nothing else differs.
    assert not same
    assert lines == [
        "",
        "feeds, by day:",
        "  days 21-25: feed full change, 2 mL/well -> half change, 1 mL/well",
        "",
        "1 difference in substance.",
    ]


def test_a_compound_added_and_one_removed() -> None:
    same, lines = diff_lines(edit(KRIKS_TEXT, ADD_Y27632, USE_Y27632))
    assert not same
    assert lines == [
        "",
        "compounds:",
        "  DAPT removed (was stock 10 mM in DMSO)",
        "  Y-27632 added: stock 10 mM in water",
        "",
        "factors, by day:",
        "  days 11-25: DAPT removed (was 10 uM)",
        "  day 20: Y-27632 added: 10 uM",
        "",
        "text (no effect on the cells):",
        "  comments changed (1 line removed, 0 added)",
        "",
        "4 differences in substance, 1 in text only.",
    ]


def test_the_medium_of_some_days() -> None:
    same, lines = diff_lines(edit(KRIKS_TEXT, MEDIUM_7_8))
    assert not same
    assert lines == [
        "",
        "base medium, by day:",
        "  days 7-8: medium KSR_medium 50% + N2_medium 50% -> N2_medium",
        "",
        "1 difference in substance.",
    ]


def test_a_version_bump_alone_is_text_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = write(tmp_path, "new.yaml", edit(KRIKS_TEXT, BUMP))
    code, out, _ = run(capsys, KRIKS, new)
    assert code == 0
    assert out.splitlines() == [
        f"{KRIKS} (kriks2011-da 1.0.0) -> {new} (kriks2011-da 1.1.0)",
        "",
        "metadata (text only):",
        "  version 1.0.0 -> 1.1.0",
        "",
        "No difference in what the cells receive; 1 difference in text only.",
    ]


def test_every_edit_at_once_reads_in_section_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = edit(KRIKS_TEXT, BUMP, CHIR_3_7, HALF_21_25, ADD_Y27632, USE_Y27632, MEDIUM_7_8)
    text = edit(
        text,
        ("min: 60, on_fail: hold}", "min: 70, on_fail: hold}"),
        (
            "    - {days: 20, change: full",
            "    - {days: 20, change: full, wash: {medium: NB_B27, times: 1}",
        ),
        (
            '{days: "11-25", medium: NB_B27}',
            '{days: "11-25", medium: NB_B27}\n  environment:\n    - {days: "0-10", o2: 5%}',
        ),
    )
    new = write(tmp_path, "kriks_v1.1.yaml", text)
    code, out, _ = run(capsys, KRIKS, new)
    assert code == 1
    assert body(out) == [
        "",
        "metadata (text only):",
        "  version 1.0.0 -> 1.1.0",
        "",
        "compounds:",
        "  DAPT removed (was stock 10 mM in DMSO)",
        "  Y-27632 added: stock 10 mM in water",
        "",
        "base medium, by day:",
        "  days 7-8: medium KSR_medium 50% + N2_medium 50% -> N2_medium",
        "",
        "factors, by day:",
        "  days 3-7: CHIR99021 3 uM -> 0.7 uM",
        "  days 3-7: CHIR99021 dose set by $chir -> fixed",
        "  days 11-25: DAPT removed (was 10 uM)",
        "  day 20: Y-27632 added: 10 uM",
        "",
        "feeds, by day:",
        "  day 20: wash before the feed none -> 1x NB_B27, 2 mL/well",
        "  days 21-25: feed full change, 2 mL/well -> half change, 1 mL/well",
        "",
        "incubator environment, by day:",
        "  days 0-10: O2 ambient -> 5%",
        "",
        "events:",
        "  day 11: sample 'FOXA2/LMX1A immunostaining (floor-plate patterning QC)' QC "
        "FOXA2_LMX1A_pct >= 60% (on fail: hold) -> >= 70% (on fail: hold)",
        "",
        "text (no effect on the cells):",
        "  comments changed (1 line removed, 0 added)",
        "",
        "11 differences in substance, 2 in text only.",
    ]


LAB_VARIANT = (  # kriks2011_da.yaml as the difftools lab runs it (its description says how)
    BUMP,
    (
        ADD_Y27632[0],
        ADD_Y27632[0]
        + "  Y-27632:       {stock: 10 mM, solvent: water}\n"
        + "  mitomycin-C:   {stock: 1 mg/mL, solvent: water}\n",
    ),
    (USE_Y27632[0], USE_Y27632[0] + USE_Y27632[1]),
    (
        '    - {days: "21-25", change: full}',
        "    - {days: [24, 25], change: full}\n"
        "    - {days: [21, 22, 23], change: none}\n"
        "  additions:\n"
        '    - {compound: mitomycin-C, conc: 1 ug/mL, days: 22, at: "09:00", pulse: 1 h}',
    ),
)


def test_the_lab_variant_of_kriks() -> None:
    """No feeds on days 21-23, ROCK inhibitor on day 20, a mitomycin C pulse on day 22."""
    same, lines = diff_lines(edit(KRIKS_TEXT, *LAB_VARIANT))
    assert not same
    assert lines == [
        "",
        "metadata (text only):",
        "  version 1.0.0 -> 1.1.0",
        "",
        "compounds:",
        "  Y-27632 added: stock 10 mM in water",
        "  mitomycin-C added: stock 1 mg/mL in water",
        "",
        "factors, by day:",
        "  day 20: Y-27632 added: 10 uM",
        "",
        "feeds, by day:",
        "  days 21-23: feed removed (was full change, 2 mL/well at 09:00)",
        "",
        "additions, by day:",
        "  day 22: mitomycin-C spike added: 1 ug/mL at 09:00 for 1 h "
        "(then 1x NB_B27 wash, then a full change)",
        "",
        "5 differences in substance, 1 in text only.",
    ]


def test_feeds_events_and_timing_that_move() -> None:
    text = edit(
        KRIKS_TEXT,
        (
            '{days: "21-25", change: full}',
            "{days: [22, 24, 25], change: full}\n    - {days: [21, 23], change: none}",
        ),
        ('{days: "0-19", change: full}', '{days: "0-19", change: full, at: "10:00"}'),
        ('    - days: 25\n      at: "13:00"', '    - days: 24\n      at: "13:00"'),
        ("      duration: 60 min\n      culture:", "      duration: 90 min\n      culture:"),
        ("max_out_of_incubator: 20 min", "max_out_of_incubator: 30 min"),
        ("  volume: 2 mL\n  coating: Matrigel", "  volume: 2000 uL\n  coating: Geltrex"),
    )
    same, lines = diff_lines(text)
    assert not same
    assert lines == [
        "",
        "culture:",
        "  coating Matrigel -> Geltrex",
        "",
        "timing:",
        "  max_out_of_incubator 20 min -> 30 min",
        "",
        "feeds, by day:",
        "  days 0-19: feed time 09:00 -> 10:00",
        "  days 21, 23: feed removed (was full change, 2 mL/well at 09:00)",
        "",
        "events:",
        "  day 20: replate 'Dissociate day-20 cells (Accutase) for replating on PO/la...' "
        "duration 60 min -> 90 min",
        "  custom 'Day-25 cells (graft stage) - harvest or continue maturation' "
        "moves from day 25 to day 24",
        "",
        "6 differences in substance.",
    ]


def test_additions_environment_wash_and_dose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = edit(
        EXAMPLE_TEXT,
        ('{days: "0-4", o2: 4%}', '{days: "0-6", o2: 5%}'),
        (
            '{compound: Y-27632, conc: 10 uM, days: 11, at: "15:00"}',
            '{compound: Y-27632, conc: 20 uM, days: 11, at: "16:00"}',
        ),
        ("days: 22, pulse: 1 h}", "days: 22, pulse: 2 h}"),
        ("volume: 1 mL, times: 2}", "volume: 1 mL, times: 3}"),
        ("{days: 3, change: half, dose: well}", "{days: 3, change: full}"),
    )
    new = write(tmp_path, "new.yaml", text)
    code, out, _ = run(capsys, EXAMPLE, new)
    assert code == 1
    assert body(out) == [
        "",
        "factors, by day:",
        # dose: well on a half change needed 6 uM fresh for 3 uM in the well
        "  day 3: CHIR99021 6 uM -> 3 uM",
        "",
        "feeds, by day:",
        "  day 3: feed half change, 1 mL/well -> full change, 2 mL/well",
        "  day 3: feed concentrations meant in the well after the change -> in the fresh medium",
        "  day 22: wash before the feed 2x PBS, 1 mL/well -> 3x PBS, 1 mL/well",
        "",
        "additions, by day:",
        "  day 11: Y-27632 spike 10 uM -> 20 uM",
        "  day 11: Y-27632 spike time 15:00 -> 16:00",
        "  day 22: mitomycin-C spike pulse 1 h -> 2 h",
        "",
        "incubator environment, by day:",
        "  days 0-4: O2 4% -> 5%",
        "  days 5-6: O2 ambient -> 5%",
        "",
        "9 differences in substance.",
    ]


def test_values_read_as_meant() -> None:
    """Float noise is no difference; a real change prints rounded, in the format's units."""
    sb = "{compound: SB431542,      conc: 10 uM,"
    noise = edit(NOLBRANT_TEXT, (sb, "{compound: SB431542, conc: 10.00000000001 uM,"))
    same, lines = diff_lines(noise, nolbrant())
    assert same
    assert "  written differently with the same meaning (e.g. units, day lists or x- keys)" in lines
    odd = edit(NOLBRANT_TEXT, (sb, "{compound: SB431542, conc: 0.30000000000000004 uM,"))
    same, lines = diff_lines(odd, nolbrant())
    assert not same
    # Days 0-8 as written; the cells get it on the feed days among them.
    assert "  days 0, 2, 4, 7: SB431542 10 uM -> 0.3 uM" in lines
    assert not re.search(r"\d\.\d{5,}", "\n".join(lines))
    assert "µ" not in "\n".join(lines)


# --- nothing (of substance) differs ---------------------------------------------------------


def test_identical_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = write(tmp_path, "copy.yaml", NOLBRANT_TEXT)
    code, out, err = run(capsys, NOLBRANT, copy)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{NOLBRANT} (nolbrant2017-vm 1.0.0) -> {copy} (nolbrant2017-vm 1.0.0)",
        "",
        "No difference in what the cells receive: the files are identical.",
    ]


def test_comments_layout_and_spelling_are_text_only() -> None:
    commented = edit(NOLBRANT_TEXT, ("labctl: 1\n", "labctl: 1  # format 1\n"))
    same, lines = diff_lines(commented, nolbrant())
    assert same
    assert lines[-3:] == [
        "  comments changed (0 lines removed, 1 added)",
        "",
        "No difference in what the cells receive; 1 difference in text only.",
    ]
    feeds = "{days: [2, 4, 7, 9, 14, 16], change: full}"
    spaced = edit(NOLBRANT_TEXT, (feeds, "{days: [ 2,4,7, 9, 14,16 ],   change: 'full'}"))
    same, lines = diff_lines(spaced, nolbrant())
    assert same
    assert "  layout only (spacing, line breaks, quoting or key order)" in lines
    respelled = edit(
        NOLBRANT_TEXT,
        ("{stock: 10 mM, solvent: DMSO}", "{stock: 10000 µM, solvent: DMSO}"),
        (feeds, "{days: [2, 4, 7], change: full}\n    - {days: [9, 14, 16], change: full}"),
    )
    same, lines = diff_lines(respelled, nolbrant())
    assert same
    assert "  written differently with the same meaning (e.g. units, day lists or x- keys)" in lines


def test_comments_are_found_between_tokens_only() -> None:
    text = 'a: "x # not a comment"  # one\nb: >-\n  # not one either\n# two\n'
    assert comments(text) == ["# one", "# two"]


# --- trouble: exit 2 with one located message ----------------------------------------------


def test_an_invalid_new_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", edit(KRIKS_TEXT, ('days: "3-12"}', 'days: "3-1x"}')))
    code, out, err = run(capsys, KRIKS, bad)
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert len(lines) == 1
    line = KRIKS_TEXT[: KRIKS_TEXT.index('days: "3-12"}')].count("\n") + 1
    assert lines[0].startswith(f"{bad}:{line}:")
    assert ": error: 'days' in schedule.factors #6: '3-1x' is not a day set" in lines[0]


def test_unreadable_and_broken_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    broken = write(tmp_path, "broken.yaml", "labctl: 1\nid: [\n")
    code, out, err = run(capsys, missing, broken)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{missing}: error: no such file",
        f"{broken}:3:1: error: YAML syntax: expected the node content, but found '<stream end>'",
    ]
    two = write(
        tmp_path,
        "two.yaml",
        edit(KRIKS_TEXT, ("change: full}", "change: ful}"), ("id: kriks2011-da", "id: Kriks!")),
    )
    code, _, err = run(capsys, KRIKS, two)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.rstrip().endswith(f"(and 1 more: labctl validate {two} lists them)")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(KRIKS)])
    assert exc.value.code == 2
    assert "the following arguments are required: NEW" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["diff", "--help"])
    out = capsys.readouterr().out
    assert "0   no difference in substance" in out
    assert "1   differences in substance" in out
    assert "2   trouble" in out


# --- --json ----------------------------------------------------------------------------------


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chir = (
        '{compound: CHIR99021,     conc: $chir,     days: "0-8"}',
        '{compound: CHIR99021,     conc: 0.6 uM,    days: "0-8"}',
    )
    new = write(tmp_path, "new.yaml", edit(NOLBRANT_TEXT, BUMP, chir))
    code, out, _ = run(capsys, NOLBRANT, new, "--json")
    assert code == 1
    data = json.loads(out)
    assert data["old"]["version"] == "1.0.0" and data["new"]["version"] == "1.1.0"
    assert data["same_in_substance"] is False and data["identical_files"] is False
    assert data["summary"] == "2 differences in substance, 1 in text only."
    assert data["differences"][0] == {
        "section": "metadata",
        "subject": "version",
        "change": "changed",
        "old": "1.0.0",
        "new": "1.1.0",
        "days": [],
        "substantive": False,
        "text": "version 1.0.0 -> 1.1.0",
    }
    changed = data["differences"][1]
    assert (changed["subject"], changed["old"], changed["new"], changed["days"]) == (
        "CHIR99021",
        "0.8 uM",
        "0.6 uM",
        [0, 2, 4, 7],
    )
    assert changed["text"] == "days 0, 2, 4, 7: CHIR99021 0.8 uM -> 0.6 uM"


def test_day_sets_read_as_written() -> None:
    assert days_text([5]) == "day 5"
    assert days_text([3, 4, 5, 6, 7]) == "days 3-7"
    assert days_text([21, 23]) == "days 21, 23"
    assert days_text([-5, -4, -3, 0, 1]) == "days -5 to -3, 0-1"


# --- properties on generated protocols -------------------------------------------------------

POOL = {  # compound -> (stock, solvent, finals that suit it)
    "LDN193189": ("1 mM", "DMSO", ["100 nM", "250 nM", "0.2 uM"]),
    "CHIR99021": ("10 mM", "DMSO", ["1 uM", "3 uM", "3000 nM"]),
    "SHH-C25II": ("100 ug/mL", "PBS", ["100 ng/mL", "200 ng/mL"]),
    "ascorbic_acid": ("200 mM", "water", ["0.2 mM", "200 uM"]),
}


@st.composite
def protocols(draw: st.DrawFn) -> str:
    """A small valid protocol over days 0-9: media, factors, feeds, environment, events."""
    names = draw(st.lists(st.sampled_from(sorted(POOL)), min_size=1, max_size=3, unique=True))
    split = draw(st.integers(1, 9))
    half_from = draw(st.integers(1, 10))
    factors = []
    for n in names:
        a = draw(st.integers(0, 9))
        b = draw(st.integers(a, 9))
        factors.append(
            {"compound": n, "conc": draw(st.sampled_from(POOL[n][2])), "days": f"{a}-{b}"}
        )
    second = draw(st.sampled_from(["N2", "KSR", {"KSR": "50%", "N2": "50%"}]))
    feeds: list[dict[str, Any]] = [{"days": f"0-{half_from - 1}", "change": "full"}]
    if half_from <= 9:
        feeds.append({"days": f"{half_from}-9", "change": draw(st.sampled_from(["half", "full"]))})
    data: dict[str, Any] = {
        "labctl": 1,
        "id": "generated",
        "title": "Generated",
        "version": draw(st.sampled_from(["1.0.0", "1.1.0"])),
        "compounds": {n: {"stock": POOL[n][0], "solvent": POOL[n][1]} for n in names},
        "media": {"KSR": {"description": "KSR medium"}, "N2": {"description": "N2 medium"}},
        "culture": {"labware": "corning_6_wellplate_16.8ml_flat", "volume": "2 mL"},
        "schedule": {
            "media": [
                {"days": f"0-{split - 1}", "medium": "KSR"},
                {"days": f"{split}-9", "medium": second},
            ],
            "factors": factors,
            "feeds": feeds,
        },
    }
    if draw(st.booleans()):
        data["schedule"]["environment"] = [{"days": f"0-{draw(st.integers(0, 9))}", "o2": "5%"}]
    if draw(st.booleans()):
        data["schedule"]["events"] = [
            {
                "days": draw(st.integers(0, 9)),
                "kind": "sample",
                "title": draw(st.sampled_from(["QC", "Stain"])),
                "qc": [
                    {
                        "measure": "FOXA2_pct",
                        "unit": "%",
                        "min": draw(st.sampled_from([50, 60])),
                        "on_fail": "hold",
                    }
                ],
            }
        ]
    return yaml.safe_dump(data, sort_keys=False)


FAST = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def per_day(d: ProtocolDiff, change: str) -> set[tuple[str, str, int | None]]:
    """(section, subject, day) of every difference of one kind, a day at a time."""
    out: set[tuple[str, str, int | None]] = set()
    for x in d.differences:
        if x.change == change and x.substantive:
            out.update((x.section, x.subject, day) for day in (x.days or (None,)))
    return out


@FAST
@given(protocols())
def test_a_protocol_against_itself_shows_nothing(text: str) -> None:
    p = load(text)
    d = compare(p, p)
    assert d.differences == () and d.identical_files and d.same_in_substance
    assert render_text(d).endswith(
        "No difference in what the cells receive: the files are identical."
    )


@FAST
@given(protocols(), protocols())
def test_what_one_way_adds_the_other_way_removes(a_text: str, b_text: str) -> None:
    a, b = load(a_text, "a.yaml"), load(b_text, "b.yaml")
    ab, ba = compare(a, b), compare(b, a)
    assert per_day(ab, "added") == per_day(ba, "removed")
    assert per_day(ab, "removed") == per_day(ba, "added")
    assert ab.same_in_substance == ba.same_in_substance
    # Changes are found on the same days both ways (an event's on the days OLD gives it).
    changed_ab = {(x.section, x.days) for x in ab.substantive if x.change == "changed"}
    changed_ba = {(x.section, x.days) for x in ba.substantive if x.change == "changed"}
    assert {c for c in changed_ab if c[0] != "events"} == {
        c for c in changed_ba if c[0] != "events"
    }
    assert {c[0] for c in changed_ab} == {c[0] for c in changed_ba}
