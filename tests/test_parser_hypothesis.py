"""Property tests of the protocol loader: whatever the input, it answers with diagnostics.

(a) Random valid-shaped protocols (compounds with stocks, media, day sets, feeds, factors,
    parameters, additions, events) are dumped to YAML and loaded: the loader returns a
    LoadResult, and a protocol without errors resolves without raising.
(b) The shipped protocols and tests/data/format_example.yaml are mutated, as parsed data
    (delete or rename a key, replace a value, change a unit, swap days) and as text or bytes
    (delete, insert, replace characters and lines), then loaded: no exception escapes, and
    every diagnostic points at a line and column inside the text.

The runs are derandomized (the same examples every time). Set LABCTL_FUZZ_EXAMPLES=N to
fuzz with N random examples per test instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.errors import InputFileError
from labctl.plan.resolve import resolve
from labctl.validate import LoadResult, load_file, load_text

ROOT = Path(__file__).resolve().parent.parent
SEEDS = sorted((ROOT / "protocols").glob("*.yaml")) + [
    ROOT / "tests" / "data" / "format_example.yaml"
]
SEED_TEXT = {p.name: p.read_text(encoding="utf-8") for p in SEEDS}
SEED_DATA = {name: yaml.safe_load(text) for name, text in SEED_TEXT.items()}

_FUZZ = int(os.environ.get("LABCTL_FUZZ_EXAMPLES", "0"))


def _settings(n: int) -> settings:
    return settings(
        max_examples=_FUZZ or n,
        deadline=None,
        derandomize=not _FUZZ,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# PyYAML counts these as line breaks (a "\r\n" pair as one), so its marks do too.
_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def assert_located(res: LoadResult, text: str, file: str) -> None:
    """Every diagnostic names the file and a line:column inside ``text``."""
    assert isinstance(res, LoadResult)
    lines = _BREAKS.split(text)
    for d in res.diagnostics:
        assert d.file == file
        assert d.severity in ("error", "warning")
        assert d.message and "\n" not in d.message, d
        assert 1 <= d.line <= len(lines), (d, len(lines))
        assert 1 <= d.column <= len(lines[d.line - 1]) + 1, (d, lines[d.line - 1])
    if res.protocol is not None:
        assert not res.errors
    if not res.errors:
        assert res.protocol is not None


def load_and_check(text: str) -> LoadResult:
    res = load_text(text, "fuzz.yaml")
    assert_located(res, text, "fuzz.yaml")
    if res.ok:
        assert res.protocol is not None
        plan = resolve(res.protocol, None, strict=False)
        assert plan.protocol_id == res.protocol.id
    return res


# --- (a) generated protocols ---------------------------------------------------------------

# Stocks and the finals that suit them (same kind of unit, at least 1:1000: DMSO stays low).
STOCK_FINALS = {
    "10 mM": ["1 uM", "3 µM", "10 uM"],
    "1 mM": ["100 nM", "1 uM"],
    "100 uM": ["10 nM", "100 nM"],
    "100 ug/mL": ["20 ng/mL", "100 ng/mL"],
    "1 mg/mL": ["1 ug/mL", "500 ng/mL"],
}
# Anything goes in chaos mode: wrong kinds, finals above stocks, volumes that do not fit.
STOCKS = [*STOCK_FINALS, "5 µM", "10 ng/mL", "50%"]
FINALS = ["100 nM", "1 uM", "3 µM", "10 uM", "20 ng/mL", "100 ng/mL", "1 ug/mL", "0.5%", "2 mM"]
VOLUMES = ["2 mL", "1.5 mL", "500 uL", "300 µL", "100 uL", "5 uL", "20 mL"]
SOLVENTS = ["DMSO", "water", "PBS + 0.1% BSA", "ethanol", "dmso"]
LABWARE = {  # load name -> working volumes that fit its wells
    "corning_6_wellplate_16.8ml_flat": ["2 mL", "3 mL", "1.5 mL"],
    "corning_12_wellplate_6.9ml_flat": ["1 mL", "2 mL"],
    "corning_24_wellplate_3.4ml_flat": ["500 uL", "1 mL"],
    "corning_96_wellplate_360ul_flat": ["100 uL", "150 µL"],
}
COMPOUNDS = ["LDN193189", "SB431542", "CHIR99021", "SHH-C25II", "FGF8", "BDNF", "DAPT", "Y-27632"]
MEDIA = ["KSR", "N2", "NB_B27", "E8", "PBS"]
TIMES = ["08:00", "09:00", "13:30", "18:45"]

day = st.integers(min_value=-3, max_value=20)


@st.composite
def day_sets(draw: st.DrawFn, lo: int = -3, hi: int = 20) -> Any:
    """A day set within [lo, hi], in any of the format's forms."""
    kind = draw(st.sampled_from(["int", "range", "step", "list"]))
    a = draw(st.integers(lo, hi))
    if kind == "int":
        return a
    b = draw(st.integers(a, hi))
    if kind == "range":
        return f"{a}-{b}"
    if kind == "step":
        return f"{a}-{b}/{draw(st.integers(1, 4))}"
    return sorted(set(draw(st.lists(st.integers(lo, hi), min_size=1, max_size=5))))


@st.composite
def protocols(draw: st.DrawFn) -> dict[str, Any]:
    """A protocol as parsed YAML data: mostly consistent (so that many load without
    errors and go through the checks and the trial resolution), in chaos mode not."""
    chaos = draw(st.integers(0, 4)) == 0
    comp_names = draw(st.lists(st.sampled_from(COMPOUNDS), min_size=1, max_size=4, unique=True))
    media_names = draw(st.lists(st.sampled_from(MEDIA), min_size=1, max_size=3, unique=True))
    compounds: dict[str, Any] = {}
    finals: dict[str, list[str]] = {}
    for c in comp_names:
        stock = draw(st.sampled_from(STOCKS if chaos else list(STOCK_FINALS)))
        finals[c] = FINALS if chaos or stock not in STOCK_FINALS else STOCK_FINALS[stock]
        comp: dict[str, Any] = {"stock": stock, "solvent": draw(st.sampled_from(SOLVENTS))}
        if draw(st.booleans()):
            comp["mw"] = draw(st.sampled_from(["465.3 g/mol", "384.4 g/mol", "20 kg/mol"]))
        if draw(st.integers(0, 5)) == 0:
            comp["max_solvent"] = draw(st.sampled_from(["0.1%", "0.5%", "1%"]))
        compounds[c] = comp
    params: dict[str, Any] = {}
    if draw(st.booleans()):
        params["dose"] = {
            "default": draw(st.sampled_from(["3 uM", "1 uM"] + (["100 ng/mL"] if chaos else []))),
            "min": "0.5 uM",
            "max": draw(st.sampled_from(["6 uM", "10 uM"] + (["20 mM"] if chaos else []))),
        }
    molar = [c for c in comp_names if compounds[c]["stock"] == "10 mM"]
    labware = draw(st.sampled_from(sorted(LABWARE)))
    volume = draw(st.sampled_from(VOLUMES if chaos else LABWARE[labware]))
    first = draw(st.integers(-2, 2))
    last = first + draw(st.integers(2, 20))
    lo, hi = (first - 3, last + 3) if chaos else (first, last)
    # schedule.media: consecutive ranges covering first..last
    media_rules = []
    start = first
    while start <= last:
        end = min(last, start + draw(st.integers(0, 8)))
        if len(media_names) > 1 and draw(st.integers(0, 3)) == 0:
            medium: Any = {media_names[0]: "75%", media_names[1]: "25%"}
        else:
            medium = draw(st.sampled_from(media_names))
        media_rules.append({"days": f"{start}-{end}", "medium": medium})
        start = end + 1
    # feeds: day sets within the span; each at its own time so none collide
    feeds = []
    times = draw(st.permutations(TIMES))
    for i in range(draw(st.integers(1, 4))):
        feed: dict[str, Any] = {
            "days": draw(day_sets(lo, hi)) if i or chaos else f"{first}-{last}",
            "change": draw(st.sampled_from(["full", "half", 0.3, "top-up", "none"])),
            "at": times[i],
        }
        if feed["change"] == "top-up":
            feed["volume"] = draw(st.sampled_from(VOLUMES if chaos else ["10 uL", "20 uL"]))
        elif feed["change"] != "none" and draw(st.integers(0, 4)) == 0:
            feed["volume"] = volume
        if draw(st.integers(0, 7)) == 0:
            feed["dose"] = "well"
        if feed["change"] != "none" and draw(st.integers(0, 6)) == 0:
            feed["wash"] = {"medium": media_names[0], "times": draw(st.integers(1, 3))}
        feeds.append(feed)
    factors = []
    for c in draw(st.lists(st.sampled_from(comp_names), max_size=4, unique=not chaos)):
        conc = draw(st.sampled_from(finals[c]))
        if params and c in molar and draw(st.booleans()):
            conc = "$dose"
        factors.append({"compound": c, "conc": conc, "days": draw(day_sets(lo, hi))})
    schedule: dict[str, Any] = {"media": media_rules, "factors": factors, "feeds": feeds}
    if draw(st.booleans()):
        c = draw(st.sampled_from(comp_names))
        addition: dict[str, Any] = {
            "compound": c,
            "conc": draw(st.sampled_from(finals[c])),
            "days": draw(st.integers(lo, hi)),
            "at": "15:00",
        }
        if draw(st.booleans()):
            addition["pulse"] = draw(st.sampled_from(["1 h", "30 min", "12 h"]))
        schedule["additions"] = [addition]
    if draw(st.booleans()):
        schedule["environment"] = [{"days": draw(day_sets(lo, hi)), "o2": "4%"}]
    if draw(st.booleans()):
        new_lw = draw(st.sampled_from(sorted(LABWARE)))
        schedule["events"] = [
            {
                "days": draw(day_sets(lo, hi)),
                "kind": draw(st.sampled_from(["replate", "sample", "custom"])),
                "title": "Replate or stain",
                "culture": {
                    "labware": new_lw,
                    "volume": draw(st.sampled_from(VOLUMES if chaos else LABWARE[new_lw])),
                },
                "qc": [{"measure": "TH_pct", "unit": "%", "min": 50, "on_fail": "hold"}],
            }
        ]
    out: dict[str, Any] = {
        "labctl": 1,
        "id": "fuzz-protocol",
        "title": "Generated protocol",
        "version": "0.1.0",
        "compounds": compounds,
        "media": {m: {"description": f"{m} medium"} for m in media_names},
        "culture": {"labware": labware, "volume": volume},
        "timing": {"feed_at": "09:00", "window": "2 h"},
        "schedule": schedule,
    }
    if params:
        out["parameters"] = params
    return out


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)


@_settings(60)
@given(protocols())
def test_generated_protocols_load_and_resolve(data: dict[str, Any]) -> None:
    load_and_check(dump(data))


def test_generator_produces_valid_protocols() -> None:
    """The generator is not only a source of errors: a plain instance of it is valid."""
    data = {
        "labctl": 1,
        "id": "fuzz-protocol",
        "title": "Generated protocol",
        "version": "0.1.0",
        "compounds": {"SB431542": {"stock": "10 mM", "solvent": "DMSO"}},
        "media": {"KSR": {"description": "KSR medium"}},
        "culture": {"labware": "corning_6_wellplate_16.8ml_flat", "volume": "2 mL"},
        "timing": {"feed_at": "09:00", "window": "2 h"},
        "schedule": {
            "media": [{"days": "0-4", "medium": "KSR"}],
            "factors": [{"compound": "SB431542", "conc": "10 uM", "days": "0-4"}],
            "feeds": [{"days": "0-4", "change": "full"}],
        },
    }
    res = load_and_check(dump(data))
    assert res.ok and res.diagnostics == []


# --- (b) mutations of real protocols --------------------------------------------------------


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys and indexes) to a value inside parsed YAML data."""
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*path, i)))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for p in path[:-1]:
        data = data[p]
    return data


def _copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


UNITS = [
    "nM",
    "uM",
    "µM",
    "mM",
    "M",
    "ng/mL",
    "ug/mL",
    "mg/mL",
    "mL",
    "uL",
    "L",
    "%",
    "h",
    "min",
    "d",
    "degC",
    "g/mol",
    "kg",
    "",
    "uMol",
    "furlong",
]
quantities = st.builds(
    lambda x, u: f"{x:g} {u}",
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([0.0, -1.0, 1e-315, 1e-300, 1e300, 5e-324, 1.7976931348623157e308]),
    ),
    st.sampled_from(UNITS),
)
scalars = st.one_of(
    quantities,
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["", "$", "$chir", "$nope", "10:00", "25:00", "3-", "5-2", "1-10/0", "-5--1", "1e400 mL"]
    ),
    st.sampled_from(["0 mL", "-2 mL", "1e-30 nM", "2 mM", "3 furlongs", "100 %", "37 degC"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_QTY = re.compile(r"^(\s*[-+]?[\d.]+(?:[eE][-+]?\d+)?\s*)(\S.*)$")


@st.composite
def mutated_data(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(SEED_DATA)))
    data = _copy(SEED_DATA[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        key = path[-1]
        op = draw(
            st.sampled_from(["delete", "rename", "replace", "unit", "number", "days", "swap"])
        )
        if op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(st.text(max_size=12), st.just(str(key)[:-1]), st.just(f"{key}x")))
            parent[new] = parent.pop(key)
        elif op == "unit" and isinstance(parent[key], str) and _QTY.match(parent[key]):
            m = _QTY.match(parent[key])
            assert m is not None
            parent[key] = m.group(1) + draw(st.sampled_from(UNITS))
        elif op == "number" and isinstance(parent[key], str) and _QTY.match(parent[key]):
            m = _QTY.match(parent[key])
            assert m is not None
            parent[key] = draw(quantities).split(" ")[0] + " " + m.group(2)
        elif op == "days" and isinstance(parent, dict) and "days" in parent:
            parent["days"] = draw(
                st.one_of(day_sets(), st.sampled_from(["3-", "5-2", "1-10/0", "abc", "-5--1"]))
            )
        elif op == "swap" and isinstance(parent, list) and len(parent) > 1:
            other = draw(st.integers(0, len(parent) - 1))
            parent[key], parent[other] = parent[other], parent[key]
        else:
            parent[key] = draw(values)
    return dump(data)


@_settings(80)
@given(mutated_data())
def test_mutated_data_gives_diagnostics_not_exceptions(text: str) -> None:
    load_and_check(text)


YAML_BITS = st.sampled_from(
    [
        ":",
        ": ",
        "- ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a",
        "!!python/name:os.system ",
        "<<: ",
        "'",
        '"',
        "#",
        "|",
        ">",
        "\t",
        "\n",
        "  ",
        "---\n",
        "...",
        "%YAML 1.1\n",
        "$",
        "\\",
        "?",
        "@",
        "`",
        "\x00",
        "\x07",
        "\ufeff",
        "\u2028",
        "\x85",
        "\r",
        "é",
        "µ",
        "😀",
        "!!binary ",
        "!local ",
        "*undefined",
    ]
)


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    text = SEED_TEXT[draw(st.sampled_from(sorted(SEED_TEXT)))]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["del_chars", "insert", "replace", "del_line", "dup_line"]))
        pos = draw(st.integers(0, len(text)))
        if op == "del_chars":
            text = text[:pos] + text[pos + draw(st.integers(1, 8)) :]
        elif op in ("insert", "replace"):
            bit = draw(st.one_of(YAML_BITS, st.text(max_size=4)))
            cut = draw(st.integers(0, 3)) if op == "replace" else 0
            text = text[:pos] + bit + text[pos + cut :]
        else:
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "del_line":
                del lines[i]
            else:
                lines.insert(i, lines[i])
            text = "\n".join(lines)
    return text


@_settings(60)
@given(mutated_text())
def test_mutated_text_gives_located_diagnostics(text: str) -> None:
    load_and_check(text)


@_settings(60)
@given(st.data())
def test_mutated_bytes_through_load_file(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Byte damage (invalid UTF-8, NULs, BOMs) read from a file: diagnostics, or one
    InputFileError for a file that can't be read as text; nothing else."""
    name = data.draw(st.sampled_from(sorted(SEED_TEXT)))
    raw = bytearray(SEED_TEXT[name].encode("utf-8"))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw)))
        bad = data.draw(
            st.sampled_from(
                [b"\xff", b"\xc3", b"\x00", b"\x80\x80", b"\xe2\x80"]  # not UTF-8 text
                + [b"\xef\xbb\xbf", b"\xc3\xa9", b"\xe2\x80\xa8", b"\r\n", b"\xc2\x85"]  # valid
            )
        )
        raw[pos:pos] = bad
    path = tmp_path_factory.mktemp("bytes") / "damaged.yaml"
    path.write_bytes(bytes(raw))
    try:
        res = load_file(path)
    except InputFileError as exc:
        msg = str(exc)
        assert str(path) in msg and "\n" not in msg
        return
    assert_located(res, raw.decode("utf-8-sig"), str(path))
