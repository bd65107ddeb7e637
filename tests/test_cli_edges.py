"""The command line's edges, as a new user meets them (issue 17).

One exit-code table for every command (``labctl --help`` prints it): 0 done, 1 invalid input
/ a refused command / a failed operation, 2 a file that cannot be read or written or a usage
error, 3 waiting on the engine, 70 only for a labctl bug. Each mistake below is tried as a
user would type it and must get its code and one clear line, never a traceback. A database
is made only by the commands that make one, never in a folder that does not exist, and never
as a side effect of a mistake. Every option and argument has a help text.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from labctl.cli.main import EXIT_CODES, build_parser, main
from tests.helpers import run_cli as run

ROOT = Path(__file__).resolve().parents[1]

SMALL = """\
labctl: 1
id: edge-small
title: a short protocol for the CLI's edges
version: 1.0.0
compounds:
  A: {stock: 10 mM, solvent: DMSO}
media:
  M1: {description: base one}
culture: {labware: corning_6_wellplate_16.8ml_flat, volume: 2 mL}
timing: {feed_at: "09:00", window: 2 h, max_out_of_incubator: 20 min}
schedule:
  media:
    - {days: "0-2", medium: M1}
  factors:
    - {compound: A, conc: 1 uM, days: "0-2"}
  feeds:
    - {days: "0-2", change: full}
"""


@pytest.fixture(autouse=True)
def _own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """labctl's data, config and log folders in the test's own (no $LABCTL_DB)."""
    for var, sub in (
        ("XDG_DATA_HOME", "data"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        monkeypatch.setenv(var, str(tmp_path / "home" / sub))
    monkeypatch.delenv("LABCTL_DB", raising=False)
    monkeypatch.delenv("LABCTL_SESSION", raising=False)


@pytest.fixture
def proto(tmp_path: Path) -> Path:
    p = tmp_path / "small.yaml"
    p.write_text(SMALL, encoding="utf-8")
    return p


def one_error_line(err: str) -> str:
    """The one line a mistake prints (no traceback, no crash report)."""
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("usage:")]
    assert "Traceback" not in err and "internal error" not in err, err
    assert lines and lines[-1].startswith("labctl: error: "), err
    return lines[-1]


@pytest.fixture
def practice(tmp_path: Path, proto: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A practice database with run 1 (2 plates) registered; no engine."""
    db = tmp_path / "practice.db"
    code, out, err = run(capsys, "run", proto, "--plates", 2, "--db", db, "--start", "2026-12-01")
    assert code == 0, err
    return db


# --- the table ---------------------------------------------------------------------------


def test_help_prints_one_exit_code_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    table = out[out.index("exit codes") :]
    assert table.strip() == EXIT_CODES.strip()
    starts = [line.split()[0] for line in table.splitlines()[1:] if line[:3].strip()]
    assert starts == ["0", "1", "2", "3", "70"]
    assert "waiting on the engine" in table and "never your mistake" in table


# --- run databases: which commands make one, and where -----------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["prompts"],
        ["answer", "1", "done"],
        ["pause", "1", "--reason", "x"],
        ["audit", "verify"],
        ["report", "1", "-o", "r.html"],
        ["whoami"],
        ["engine", "--once", "--workcell", str(ROOT / "docs" / "examples" / "hypoxic-bay.yaml")],
    ],
)
def test_a_missing_database_is_a_clear_error_and_is_not_made(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    typo = tmp_path / "typo.db"
    code, _, err = run(capsys, *argv, "--db", typo)
    assert code == 2, err
    assert one_error_line(err).startswith(f"labctl: error: no run database at {typo}: ")
    assert not typo.exists()


def test_status_on_a_typo_leaves_no_database_and_keeps_saying_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    typo = tmp_path / "typo.db"
    for _ in range(2):  # the first try must not have made it
        code, _, err = run(capsys, "status", "--db", typo)
        assert code == 2 and "no run database at" in err
    assert [p.name for p in tmp_path.iterdir() if p.name != "home"] == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_database_under_proc_is_one_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "--db", "/proc/x/labctl.db")
    assert code == 2
    assert one_error_line(err) == (
        "labctl: error: no run database at /proc/x/labctl.db: check the path (--db or "
        "$LABCTL_DB); a database is made by labctl run (a practice one), labctl simulate or "
        "labctl setup (for people)"
    )
    code, _, err = run(capsys, "run", "x.yaml", "--db", "/proc/x/labctl.db")
    assert code == 2  # the protocol file is missing: said first, nothing made


def test_run_never_makes_the_folder_of_a_database_it_was_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, proto: Path
) -> None:
    db = tmp_path / "no-such-folder" / "labctl.db"
    code, _, err = run(capsys, "run", proto, "--db", db)
    assert code == 2
    assert one_error_line(err) == (
        f"labctl: error: cannot make the run database {db}: the folder {db.parent} does not "
        f"exist; check the path, or make the folder first (mkdir -p {db.parent})"
    )
    assert not db.parent.exists()
    code, _, err = run(capsys, "run", proto, "--db", tmp_path)  # a folder, not a file
    assert code == 2 and f"{tmp_path} is a folder, not a run database" in err


def test_run_makes_the_default_database_in_labctls_own_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, proto: Path
) -> None:
    # No --db and no $LABCTL_DB: labctl's own data folder, which it may make.
    code, out, err = run(capsys, "run", proto, "--start", "2026-12-01")
    assert code == 0, err
    made = tmp_path / "home" / "data" / "labctl" / "labctl.db"
    assert f"registered in {made}" in out and made.is_file()


def test_a_mistake_in_a_new_run_leaves_no_empty_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, proto: Path
) -> None:
    db = tmp_path / "new.db"
    for bad in (
        ["--plates", "0"],
        ["--start", "someday"],
        ["--tz", "Mars/Olympus"],
        ["--param", "nope=1"],
    ):
        code, _, err = run(capsys, "run", proto, "--db", db, *bad)
        assert code == 1, (bad, err)
        one_error_line(err)
        assert not db.exists(), bad


def test_a_file_that_is_not_a_run_database_cannot_be_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    junk = tmp_path / "notes.db"
    junk.write_text("shopping list\n" * 100, encoding="utf-8")
    code, _, err = run(capsys, "status", "--db", junk)
    assert code == 2
    assert one_error_line(err).startswith(f"labctl: error: {junk} is not a usable labctl run")


# --- usage errors (2), invalid input (1), waiting on the engine (3) ------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["pause", "1"], "pause needs --reason"),
        (["release", "1"], "release needs --reason"),
        (["skip", "1", "d1-feed-0900"], "skip needs --reason"),
        (["abort", "1", "--reason", "x"], "abort cannot be undone: add --yes"),
        (["confirm-store"], "confirm-store needs --reason"),
        (["pause", "1", "--reason", "x", "--bogus"], "unrecognized arguments: --bogus"),
        (["answer", "twelve"], "invalid int value: 'twelve'"),
        (["report", "1"], "the following arguments are required: -o/--output"),
    ],
)
def test_a_missing_or_malformed_piece_of_the_command_line_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], practice: Path, argv: list[str], says: str
) -> None:
    code, out, err = run(capsys, *argv, "--db", practice)
    assert code == 2, err
    assert says in err and "queued" not in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["pause", "9", "--reason", "x"], "no run with id 9"),
        (
            ["pause", "1", "--plate", "P9", "--reason", "x"],
            "run 1 has no plate P9 (its plates: P1, P2)",
        ),
        (["skip", "1", "d9-feed-0900", "--reason", "x"], "run 1 has no task d9-feed-0900"),
        (["skip", "1", "d1-feed-0900", "--plate", "P7", "--reason", "x"], "run 1 has no plate P7"),
        (["prompts", "--run", "9"], "no run with id 9"),
        (["status", "9"], "no run with id 9"),
        (["answer", "99", "done"], "no prompt with id 99"),
        (["report", "9", "-o", "r.html"], "no run with id 9"),
    ],
)
def test_a_wrong_value_is_invalid_input_said_at_once(
    capsys: pytest.CaptureFixture[str], practice: Path, argv: list[str], says: str
) -> None:
    # Known before any engine could look: refused now (1), never queued to wait (3).
    extra = ["--wait", "0"] if argv[0] in ("pause", "skip") else []
    code, out, err = run(capsys, *argv, "--db", practice, *extra)
    assert code == 1, (out, err)
    assert says in one_error_line(err) and "queued" not in out


def test_the_engine_without_a_workcell_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], practice: Path
) -> None:
    code, _, err = run(capsys, "engine", "--db", practice, "--once")
    assert code == 2
    assert one_error_line(err).startswith("labctl: error: labctl engine needs --workcell FILE")


def test_the_console_without_a_display_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from labctl import plugins

    if not sys.platform.startswith("linux"):
        pytest.skip("a display is a Linux variable")
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    opened: list[str] = []
    monkeypatch.setattr(plugins, "load", lambda name: opened.append(name))
    code, _, err = run(capsys, "console")
    assert code == 1 and opened == []  # Qt never started: it would abort (exit 134)
    assert "the console is a window and there is no display here" in one_error_line(err)


def test_a_right_command_with_no_engine_waits_on_it(
    capsys: pytest.CaptureFixture[str], practice: Path
) -> None:
    code, out, _ = run(capsys, "skip", 1, "d2-feed-0900", "--plate", "P2", "--reason", "x",
                       "--db", practice, "--wait", "0")  # fmt: skip
    assert code == 3
    assert out.startswith("queued (command 2, skip of run 1); no engine is applying it now")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--robots", "7"], "--robots must be 1 to 4, not 7"),
        (["--batch", "3"], "--batch must be 1 or 2, not 3"),
        (["--grace-days", "-1"], "--grace-days must be 0 or more, not -1"),
        (["--pace", "0"], "--pace must be above 0 and at most 3600, not 0"),
        (["--plates", "0"], "plates must be between 1 and 1000, not 0"),
    ],
)
def test_simulate_numbers_out_of_range_are_invalid_input_before_anything_is_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, proto: Path, argv: list[str], says: str
) -> None:
    code, _, err = run(capsys, "simulate", proto, "--out", tmp_path / "out", *argv)
    assert code == 1 and says in err
    assert not (tmp_path / "out").exists()


def test_simulate_files_it_cannot_read_or_write_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, proto: Path
) -> None:
    out = tmp_path / "out"
    code, _, err = run(capsys, "simulate", proto, "--out", out, "--faults", tmp_path / "x.yaml")
    assert (
        code == 2 and one_error_line(err) == f"labctl: error: {tmp_path / 'x.yaml'}: no such file"
    )
    deep = tmp_path / "missing" / "out"
    code, _, err = run(capsys, "simulate", proto, "--out", deep)
    assert code == 2 and f"the folder {deep.parent} does not exist" in one_error_line(err)
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults: [\n", encoding="utf-8")
    code, _, err = run(capsys, "simulate", proto, "--out", out, "--faults", bad)
    assert code == 1 and one_error_line(err).startswith(f"labctl: error: {bad}:2:1: YAML syntax")
    assert not out.exists() and not deep.parent.exists()  # refused before anything was made


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_simulate_into_proc_is_not_an_internal_error(
    capsys: pytest.CaptureFixture[str], proto: Path
) -> None:
    code, _, err = run(capsys, "simulate", proto, "--out", "/proc/x")
    line = one_error_line(err)
    assert code == 2 and line.startswith("labctl: error: cannot make the output folder /proc/x")


def test_a_refused_file_reaching_main_is_exit_2_and_a_bug_is_70(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, practice: Path
) -> None:
    from labctl.cli import operator_cmds

    def refused(args: argparse.Namespace) -> int:
        raise PermissionError(13, "Permission denied", "/srv/labctl/bay1.db")

    monkeypatch.setattr(operator_cmds, "cmd_status", refused)
    monkeypatch.setattr(operator_cmds, "cmd_prompts", lambda args: 1 // 0)
    code, _, err = run(capsys, "status", "--db", practice)
    assert (code, one_error_line(err)) == (
        2,
        "labctl: error: /srv/labctl/bay1.db: Permission denied",
    )
    code, _, err = run(capsys, "prompts", "--db", practice)
    assert code == 70 and "internal error: ZeroDivisionError" in err


# --- the same units, the subject said once, words not records ----------------------------


def test_run_and_status_count_tasks_the_same_way(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, proto: Path
) -> None:
    db = tmp_path / "p.db"
    code, out, _ = run(capsys, "run", proto, "--plates", 2, "--db", db, "--start", "2026-12-01")
    assert code == 0
    assert out.splitlines()[0] == (
        f"run 1 registered in {db}: 6 tasks (3 per plate x 2 plates); its start is queued "
        "for the engine"
    )
    code, out, _ = run(capsys, "status", "--db", db)
    assert "  tasks: 6 pending of 6 tasks (3 per plate x 2 plates)" in out.splitlines()


def test_plan_counts_tasks_as_run_does(capsys: pytest.CaptureFixture[str], proto: Path) -> None:
    code, out, _ = run(capsys, "plan", proto, "--plates", 2, "--start", "2026-12-01")
    assert code == 0
    assert out.splitlines()[-1] == (
        "6 tasks (3 per plate x 2 plates, of which 3 feeds) from day 0 to day 2."
    )


def test_alarm_lines_say_their_subject_once(
    capsys: pytest.CaptureFixture[str], practice: Path
) -> None:
    from labctl.cli.common import alarm_line
    from labctl.clock import RealClock
    from labctl.store import Store

    with Store.open(practice, RealClock()) as store:
        for code, subject, message in (
            ("hold", "run 1", "run 1 'edge' is on hold: r1:d1-feed-0900/P1: time-out"),
            ("out-too-long", "plate P1", "plate P1 has been out of the incubator 25 min"),
            ("door", "inc-sim", "the device door is open: close it"),
        ):
            store.insert_alarm(severity="error", code=code, message=message, actor="engine",
                               run_id=1, device=subject)  # fmt: skip
    code, out, _ = run(capsys, "status", "--db", practice)
    alarms = [x.strip() for x in out.splitlines() if "ALARM" in x]
    assert alarms == [
        "ALARM [hold] run 1 'edge' is on hold: r1:d1-feed-0900/P1: time-out",
        "ALARM [out-too-long] plate P1 has been out of the incubator 25 min",
        "ALARM [door] inc-sim: the device door is open: close it",
    ]
    assert alarm_line("climate", "inc-sim", "inc-sim: CO2 7.6 %") == "[climate] inc-sim: CO2 7.6 %"
    assert alarm_line("held", "engine", "the engine starts nothing: x") == (
        "[held] the engine starts nothing: x"
    )


def test_a_verdict_is_said_in_words() -> None:
    from labctl.cli.operator_cmds import _said

    assert _said({"state": "paused"}) == "the run is now paused"
    assert _said({"plate": "P2", "state": "paused"}) == "plate P2 is now paused"
    assert _said({"skipped": ["r1:d3-feed-0900/P1", "r1:d3-feed-0900/P2"]}) == (
        "skipped r1:d3-feed-0900/P1, r1:d3-feed-0900/P2"
    )
    assert _said({"resumed": True, "was_held_for": "the database went back"}) == (
        "the engine goes on (it was held: the database went back)"
    )
    assert _said({"answered": 5}) == "prompt 5 answered"
    assert _said({"odd_thing": True, "nested": {"a": 1}}) == "odd thing yes"


# --- help ---------------------------------------------------------------------------------


def _actions(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            for name, sub in a.choices.items():
                found.append(
                    (
                        f"{path} {name} (the command)",
                        argparse.Action([], name, help=helps.get(name)),
                    )
                )
                found += _actions(sub, f"{path} {name}")
        else:
            found.append((f"{path} {'/'.join(a.option_strings) or a.dest}", a))
    return found


def test_every_command_option_and_argument_has_a_help_text() -> None:
    actions = _actions(build_parser(), "labctl")
    assert len(actions) > 150  # the walk reached every subcommand
    missing = [where for where, a in actions if not (a.help or "").strip()]
    assert missing == []


def test_answer_help_says_where_the_choices_are(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "answer", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert (
        "`labctl prompts` lists the open prompts, each with the exact `labctl answer` line" in text
    )
    assert "one of the prompt's choices, as labctl prompts lists them" in text
    for opt in ("--value", "--lot", "--reason", "prompt"):
        assert opt in text


def test_simulate_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "--plates PLATES number of plates (default 1)" in text
    assert "--param NAME=VALUE override a parameter" in text
    assert "file protocol YAML file" in text


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 2 and "exit codes" in out


def test_labctl_db_naming_a_missing_folder_is_refused_too(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    proto: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "srv" / "bay1.db"
    monkeypatch.setenv("LABCTL_DB", str(db))
    code, _, err = run(capsys, "run", proto)
    assert code == 2 and f"the folder {db.parent} does not exist" in err
    assert not db.parent.exists()
    os.makedirs(db.parent)
    code, _, err = run(capsys, "run", proto, "--start", "2026-12-01")
    assert code == 0 and db.is_file(), err


def test_setup_never_makes_the_folder_of_its_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    db = tmp_path / "srv" / "labctl" / "bay1.db"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    code, _, err = run(capsys, "setup", "--db", db, "--admin", "root", "--password-stdin")
    assert code == 2 and f"the folder {db.parent} does not exist" in one_error_line(err)
    assert not (tmp_path / "srv").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["schema", "-o", "{missing}/schema.json"],
        ["diagram", "{kriks}", "-o", "{missing}/d.png"],
        ["report", "1", "-o", "{missing}/r.html", "--db", "{missing}.db"],
    ],
)
def test_an_output_file_in_a_missing_folder_is_refused_and_no_folder_made(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:

    missing = tmp_path / "no" / "such"
    kriks = Path(__file__).resolve().parents[1] / "protocols" / "kriks2011_da.yaml"
    args = [a.format(missing=missing, kriks=kriks) for a in argv]
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
