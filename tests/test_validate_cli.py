"""``labctl validate``: exit codes (0 valid, 1 invalid, 2 unreadable or usage), several files
in one run, and hostile or unreadable inputs that must give one clear message naming the
file, never a traceback. Also: validate stays light (no matplotlib, Qt or opentrons)."""

from __future__ import annotations

import codecs
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from labctl.cli.main import main
from labctl.protocol import source

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "data" / "format_example.yaml"
KRIKS = ROOT / "protocols" / "kriks2011_da.yaml"
CORPUS = ROOT / "tests" / "corpus"

VALID = """\
labctl: 1
id: cli-test
title: Floor-plate patterning, days 0-4
version: 1.0.0
compounds:
  LDN193189: {stock: 1 mM, solvent: DMSO}
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
    - {compound: LDN193189, conc: 100 nM, days: "0-4"}
    - {compound: SB431542, conc: 10 uM, days: "0-4"}
  feeds:
    - {days: "0-4", change: full}
"""


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["validate", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(data, str):
        p.write_text(data, encoding="utf-8")
    else:
        p.write_bytes(data)
    return p


# --- exit codes -----------------------------------------------------------------------------


def test_valid_file_exits_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = write(tmp_path, "ok.yaml", VALID)
    code, out, err = run(capsys, p)
    assert (code, out, err) == (0, f"{p}: valid\n", "")


def test_quiet_prints_nothing_for_a_valid_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = write(tmp_path, "ok.yaml", VALID)
    assert main(["validate", "-q", str(p)]) == 0
    assert capsys.readouterr() == ("", "")


def test_warnings_alone_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, EXAMPLE)
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == f"{EXAMPLE}: valid (10 warning(s))"
    assert all(": warning: " in line for line in lines[:-1]) and len(lines) == 11


def test_invalid_file_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = write(tmp_path, "bad.yaml", VALID.replace("volume: 2 mL", "volume: 2 mM"))
    code, out, err = run(capsys, p)
    assert code == 1
    assert out == (
        f"{p}:12:11: error: 'volume' in culture: '2 mM' is a molar concentration; "
        "expected a volume (e.g. 2 mL, 500 uL)\n"
        f"{p}: 1 error(s), 0 warning(s)\n"
    )
    assert err == ""


def test_no_file_is_a_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate"])
    assert exc.value.code == 2
    assert "labctl: error:" in capsys.readouterr().err


def test_several_files_report_all_problems_of_all_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok = write(tmp_path, "ok.yaml", VALID)
    bad1 = write(tmp_path, "bad1.yaml", VALID.replace("medium: KSR}", "medium: KRS}"))
    bad2 = write(
        tmp_path,
        "bad2.yaml",
        VALID.replace("conc: 10 uM", "conc: 10").replace(
            'days: "0-4", change', 'days: "4-0", change'
        ),
    )
    code, out, err = run(capsys, bad1, ok, bad2)
    assert code == 1
    assert out.splitlines() == [
        f"{bad1}:15:29: error: schedule.media #1 names medium 'KRS', which is not in media; did you mean 'KSR'?",
        f"{bad1}: 1 error(s), 0 warning(s)",
        f"{ok}: valid",
        f"{bad2}:18:34: error: 'conc' in schedule.factors #2: '10' has no unit; expected a concentration (e.g. 100 nM, 10 ng/mL, 1%)",
        f"{bad2}:20:14: error: 'days' in schedule.feeds #1: range '4-0' ends before it starts",
        f"{bad2}: 2 error(s), 0 warning(s)",
    ]
    assert err == ""


def test_unreadable_file_among_others_exits_2_and_the_rest_is_still_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = write(tmp_path, "bad.yaml", VALID.replace("labctl: 1", "labctl: 2"))
    missing = tmp_path / "missing.yaml"
    ok = write(tmp_path, "ok.yaml", VALID)
    code, out, err = run(capsys, missing, bad, ok)
    assert code == 2
    assert err == f"{missing}: error: no such file\n"
    assert f"{bad}:1:9: error: this labctl reads format version 1" in out
    assert out.endswith(f"{ok}: valid\n")


# --- inputs that can't be read ----------------------------------------------------------------


def unreadable(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    """Validate ``path``: exit 2 and exactly one message line, on stderr, naming the file."""
    code, out, err = run(capsys, path)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:")
    assert ": error: " in lines[0]
    return lines[0]


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "nope.yaml"
    assert unreadable(capsys, p) == f"{p}: error: no such file"


def test_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert unreadable(capsys, tmp_path) == f"{tmp_path}: error: is a directory, not a protocol file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = write(tmp_path, "locked.yaml", VALID)
    p.chmod(0)
    assert unreadable(capsys, p) == f"{p}: error: permission denied"


def test_binary_junk(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rng = random.Random(1234)
    data = bytes(rng.randrange(256) for _ in range(4096)) + b"\x00\x00"
    p = write(tmp_path, "junk.yaml", data)
    assert unreadable(capsys, p) == f"{p}: error: binary data, not a YAML text file"


def test_invalid_utf8_is_located(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = VALID.replace("Knockout DMEM", "Knockout D\u00c9MEM").encode("latin-1")
    p = write(tmp_path, "latin1.yaml", text)
    # line 9 is `  KSR: {description: "Knockout DÉMEM, 15% KSR"}`; É is byte 0xc9 at column 33
    assert unreadable(capsys, p) == (
        f"{p}:9:33: error: not UTF-8 text (byte 0xc9); save the file as UTF-8"
    )


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig", "utf-32"])
def test_bom_encodings_are_accepted_when_valid(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, encoding: str
) -> None:
    data = VALID.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    p = write(tmp_path, f"{encoding}.yaml", data)
    assert run(capsys, p) == (0, f"{p}: valid\n", "")


def test_utf16_with_bom_reports_problems_at_the_right_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = write(
        tmp_path, "u16.yaml", VALID.replace("conc: 100 nM", "conc: 100 nMol").encode("utf-16")
    )
    code, out, _ = run(capsys, p)
    assert code == 1
    assert out.splitlines()[0] == (
        f"{p}:17:35: error: 'conc' in schedule.factors #1: unknown unit 'nMol' in '100 nMol'"
    )


def test_truncated_utf16_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = write(tmp_path, "odd.yaml", VALID.encode("utf-16")[:-1])
    assert unreadable(capsys, p) == f"{p}: error: not valid UTF-16 text"


def test_50_mb_file_is_refused_as_too_large(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "huge.yaml"
    with open(p, "wb") as fh:
        fh.write(VALID.encode())
        chunk = b"# " + b"x" * (1024 * 1024 - 3) + b"\n"
        for _ in range(50):
            fh.write(chunk)
    assert p.stat().st_size > 50 * 1024 * 1024
    msg = unreadable(capsys, p)
    # The message states the file's size and labctl's limit (docs/protocols.md, Limits).
    assert msg == (
        f"{p}: error: the file is 50 MB, above labctl's limit of 2 MB for a protocol file; "
        "a protocol is a few kB of YAML: keep long texts, images and data tables in files of "
        "their own"
    )


# --- hostile YAML that can be read ------------------------------------------------------------

LAUGHS = "".join(
    f"{k}: &{k} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, k in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
)


def test_billion_laughs_finishes_with_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """9^9 leaves if expanded; aliases are shared, never expanded, so this is quick."""
    p = write(tmp_path, "laughs.yaml", LAUGHS)
    code, out, err = run(capsys, p)
    assert code == 1
    assert err == ""
    assert f"{p}:1:1: error: unknown key 'a' in the protocol" in out
    assert f"{p}:1:1: error: the protocol is missing the required key 'labctl'" in out


def test_billion_laughs_inside_a_protocol(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = VALID.replace(
        "version: 1.0.0\n",
        "version: 1.0.0\nx-bomb:\n"
        + "".join("  " + line + "\n" for line in LAUGHS.splitlines())
        + "description: *i\n",
    )
    p = write(tmp_path, "laughs2.yaml", text)
    code, out, _ = run(capsys, p)
    assert code == 1
    # The message points at the use of the alias (`description: *i`, line 15) and names the
    # anchor; the bomb's values are still shared, not expanded (this stays quick).
    assert out.splitlines() == [
        f"{p}:15:14: error: 'description' in the protocol must be text, not a list "
        "(the value comes from the anchor &i at line 14)",
        f"{p}: 1 error(s), 0 warning(s)",
    ]


def test_too_many_values_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted while composing (a 2 MB list would otherwise be built in full first); the
    limit is lowered here to keep the test quick."""
    monkeypatch.setattr(source, "MAX_NODES", 1000)
    p = write(tmp_path, "wide.yaml", "x: [" + "1, " * 5000 + "1]\n")
    code, out, err = run(capsys, p)
    assert code == 1 and err == ""
    # value 1001 is list item 998 (the mapping, its key and the list come first); item k
    # starts at column 5 + 3 * (k - 1)
    assert out.splitlines() == [
        f"{p}:1:{5 + 3 * 997}: error: document has more than 1000 values, labctl's limit for "
        "a protocol file (a protocol has a few thousand)",
        f"{p}: 1 error(s), 0 warning(s)",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        "a: " + "{b: " * 10_000 + "1" + "}" * 10_000,
        "- " * 10_000 + "x",
    ],
    ids=["flow-seq", "flow-map", "block-seq"],
)
def test_10000_deep_nesting(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str) -> None:
    p = write(tmp_path, "deep.yaml", text + "\n")
    code, out, err = run(capsys, p)
    assert code == 1
    assert err == ""
    first = out.splitlines()[0]
    assert first.startswith(f"{p}:")
    assert first.endswith(
        f"error: nesting deeper than {source.MAX_DEPTH} levels, labctl's limit for a protocol "
        "file (a protocol needs fewer than 10)"
    )


def test_huge_single_line_in_a_valid_protocol(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = VALID.replace(
        "version: 1.0.0\n", "version: 1.0.0\ndescription: " + "lorem ipsum " * 150_000 + "\n"
    )
    p = write(tmp_path, "longline.yaml", text)
    assert len(text) > 1_500_000 and text.count("\n") == VALID.count("\n") + 1
    assert run(capsys, p) == (0, f"{p}: valid\n", "")


def test_huge_single_line_with_an_error_after_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = "description: " + "x" * 1_500_000 + "\n" + VALID.replace("labctl: 1\n", "")
    p = write(tmp_path, "longline.yaml", text)
    code, out, _ = run(capsys, p)
    assert code == 1
    assert (
        out.splitlines()[0] == f"{p}:1:1: error: the protocol is missing the required key 'labctl'"
    )


def test_python_tag_is_not_executed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = VALID.replace(
        'description: "Knockout DMEM, 15% KSR"',
        f'description: !!python/object/apply:os.system ["touch {marker}"]',
    )
    p = write(tmp_path, "tag.yaml", text)
    code, out, _ = run(capsys, p)
    assert code == 1
    assert (
        f"{p}:9:22: error: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"
        in out
    )
    assert not marker.exists()


# --- validate stays light ---------------------------------------------------------------------

HEAVY = ("matplotlib", "PyQt6", "opentrons")


def test_validate_does_not_import_heavy_libraries() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "labctl", "validate", "-q", str(KRIKS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "labctl.protocol.loader" in imported  # the import log is really there
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == []


def test_validate_leaves_heavy_modules_out_of_sys_modules() -> None:
    code = (
        "import sys\n"
        "from labctl.cli.main import main\n"
        f"rc = main(['validate', '-q', {str(KRIKS)!r}])\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(rc, bad)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.stdout.splitlines()[-1] == "0 []", proc.stderr[-2000:]
