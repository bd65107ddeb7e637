"""The corpus of malformed protocols: each tests/corpus/NN_name.yaml holds one (or a few)
deliberate mistakes, and NN_name.expected the exact diagnostics, one
``FILE:LINE:COL: severity: message`` line each, FILE being the bare file name.

A change of wording or position shows up here as a diff against the .expected file: update
the file only after checking that the new message is as good or better.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.cli.main import main
from labctl.errors import Diagnostic
from labctl.validate import load_file

CORPUS = Path(__file__).resolve().parent / "corpus"
CASES = sorted(CORPUS.glob("*.yaml"))

# Files that must load without errors (warnings allowed): the CLI exits 0 for them.
VALID = {
    "31_dmso_warning",
    "34_stock_volume_too_small",
    "39_factor_starts_on_no_feed_day",
    "53_x_keys_ignored",
}


def fmt(d: Diagnostic, name: str) -> str:
    return f"{name}:{d.line}:{d.column}: {d.severity}: {d.message}"


def expected(path: Path) -> list[str]:
    return path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()


def test_corpus_is_complete() -> None:
    assert len(CASES) >= 45
    for p in CASES:
        assert p.with_suffix(".expected").is_file(), f"{p.name} has no .expected file"
    names = {p.stem for p in CASES}
    assert VALID <= names
    # Every .expected has its .yaml (no stale expectations left behind).
    assert {p.stem for p in CORPUS.glob("*.expected")} == names


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_file_gives_exactly_the_expected_diagnostics(path: Path) -> None:
    res = load_file(path)
    got = [fmt(d, path.name) for d in res.diagnostics]
    assert got == expected(path)
    assert all(d.file == str(path) for d in res.diagnostics)
    if path.stem in VALID:
        assert res.ok and res.protocol is not None
    else:
        # Every mistake file is refused: at least one error, and no protocol.
        assert res.errors, "a corpus file with a mistake must give an error"
        assert res.protocol is None and not res.ok


def test_python_tag_is_refused_not_executed() -> None:
    marker = Path("/tmp/labctl-corpus-pwned")
    existed = marker.exists()
    res = load_file(CORPUS / "48_python_tag_refused.yaml")
    assert any("is not allowed" in d.message for d in res.errors)
    assert marker.exists() == existed  # os.system never ran


def _cli(capsys: pytest.CaptureFixture[str], *files: Path) -> tuple[int, str, str]:
    code = main(["validate", *map(str, files)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "stem",
    ["03_unknown_feed_key", "25_final_above_stock", "45_unclosed_bracket", "55_control_character"],
)
def test_cli_exits_1_and_prints_the_diagnostics(
    capsys: pytest.CaptureFixture[str], stem: str
) -> None:
    path = CORPUS / f"{stem}.yaml"
    code, out, err = _cli(capsys, path)
    assert code == 1
    lines = out.splitlines()
    want = [line.replace(path.name, str(path), 1) for line in expected(path)]
    assert lines[: len(want)] == want
    n = sum(": error: " in w for w in want)
    assert lines[len(want) :] == [f"{path}: {n} error(s), 0 warning(s)"]
    assert "Traceback" not in out + err


@pytest.mark.parametrize("stem", sorted(VALID))
def test_cli_exits_0_for_valid_files_with_warnings(
    capsys: pytest.CaptureFixture[str], stem: str
) -> None:
    path = CORPUS / f"{stem}.yaml"
    code, out, err = _cli(capsys, path)
    assert code == 0
    want = [line.replace(path.name, str(path), 1) for line in expected(path)]
    summary = f"{path}: valid" + (f" ({len(want)} warning(s))" if want else "")
    assert out.splitlines() == [*want, summary]
    assert err == ""


def test_cli_reports_every_file_of_the_corpus_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, *CASES)
    assert code == 1
    for p in CASES:
        for line in expected(p):
            assert line.replace(p.name, str(p), 1) in out
    assert "Traceback" not in out + err
