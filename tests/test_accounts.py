"""Users, roles, signatures and released protocols: who may do what, and what the records
keep of it (21 CFR Part 11 / EU GMP Annex 11 in spirit)."""

from __future__ import annotations

import io
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from labctl.accounts import LOCK_AFTER, SESSION_IDLE_S, AuthError, Meaning, Role, allowed
from labctl.accounts import Action as A
from labctl.cli.main import main
from labctl.clock import RealClock
from labctl.engine import Engine, EngineConfig
from labctl.store import Store
from tests.fakes import fake_workcell
from tests.helpers import PASSWORD

ROOT = Path(__file__).resolve().parents[1]
KRIKS = ROOT / "protocols" / "kriks2011_da.yaml"
WALL = RealClock()
ROLES = ("operator", "developer", "supervisor", "admin")


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A production database set up by an admin, with one user of each role, Kriks
    released, and one run registered by the operator."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    path = tmp_path / "run.db"
    _stdin(monkeypatch, PASSWORD)
    assert main(["setup", "--db", str(path), "--admin", "root", "--password-stdin"]) == 0
    with Store.open(path, WALL) as s:
        for role in ROLES[:3]:
            s.add_user(
                role[:3], Role(role), PASSWORD, full_name=role.title(), actor="root", now=WALL.now()
            )
        s.add_user(
            "dev2", Role.DEVELOPER, PASSWORD, full_name="Dev Two", actor="root", now=WALL.now()
        )
    _as(monkeypatch, path, "sup")
    _stdin(monkeypatch, PASSWORD)
    assert main(["protocol", "release", str(KRIKS), "--reason", "QA approved", "--password-stdin", "--db", str(path)]) == 0  # fmt: skip
    _as(monkeypatch, path, "ope")
    assert main(["run", str(KRIKS), "--db", str(path), "--plates", "2"]) == 0
    return path


def _stdin(monkeypatch: pytest.MonkeyPatch, *lines: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{x}\n" for x in lines)))


def _as(monkeypatch: pytest.MonkeyPatch, db: Path, name: str) -> None:
    """Sign ``name`` in for the CLI (a session in $LABCTL_SESSION)."""
    with Store.open(db, WALL) as s:
        user = s.authenticate(name, PASSWORD, now=WALL.now(), what="signing in")
        monkeypatch.setenv("LABCTL_SESSION", s.open_session(user, client="cli", now=WALL.now()))


# ---- role checks on every command ---------------------------------------------------------

# (argv after the command's own words, the action it needs, whether it is signed)
COMMANDS: list[tuple[list[str], A]] = [
    (["status"], A.VIEW),
    (["prompts"], A.VIEW),
    (["audit", "verify"], A.VIEW),
    (["whoami"], A.VIEW),
    (["protocol", "list"], A.VIEW),
    (["users", "list"], A.VIEW),
    (["start", "1"], A.START),
    (["pause", "1", "--reason", "cleaning"], A.PAUSE),
    (["resume", "1"], A.RESUME),
    (["skip", "1", "d3-feed-0900", "--reason", "contaminated", "--password-stdin"], A.SKIP),
    (["abort", "1", "--yes", "--reason", "infection", "--password-stdin"], A.ABORT),
    (["release", "1", "--reason", "QC repeated", "--password-stdin"], A.RELEASE_HOLD),
    (["confirm-store", "--reason", "checked the deck"], A.CONFIRM_STORE),
    (["device-action", "inc-1", "open-gate", "--reason", "stuck plate"], A.DEVICE_ACTION),
    (["run", str(KRIKS), "--plates", "1"], A.REGISTER_RUN),
    (["users", "add", "newbie", "--role", "operator", "--password-stdin"], A.MANAGE_USERS),
    (["users", "disable", "dev2"], A.MANAGE_USERS),
]


@pytest.mark.parametrize("role", ROLES)
def test_every_command_is_allowed_exactly_to_the_roles_that_may_take_it(
    db: Path, role: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "root" if role == "admin" else role[:3]
    for argv, action in COMMANDS:
        _as(monkeypatch, db, name)
        _stdin(monkeypatch, PASSWORD, PASSWORD, PASSWORD)
        rc = main(
            [*argv, "--db", str(db), "--wait", "0"] if _waits(argv) else [*argv, "--db", str(db)]
        )
        text = capsys.readouterr()
        own = True if "1" in argv[1:2] else None  # run 1 is the operator's
        may = allowed(Role(role), action, own_run=False if role == "developer" and own else own)
        if may is None:
            assert rc in (0, 3), f"{role} {argv}: {rc} {text.err}"
        else:
            assert rc == 1 and ("may not" in text.err or "only" in text.err), (
                f"{role} {argv}: {rc} {text.err}"
            )


def _waits(argv: list[str]) -> bool:
    return argv[0] in (
        "start", "pause", "resume", "skip", "abort", "release", "confirm-store", "device-action"
    )  # fmt: skip


def test_a_developer_acts_only_on_the_runs_they_registered(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _as(monkeypatch, db, "dev")
    assert main(["run", str(KRIKS), "--db", str(db)]) == 0  # run 2, the developer's
    assert main(["pause", "2", "--reason", "mine", "--db", str(db), "--wait", "0"]) == 3
    assert main(["pause", "1", "--reason", "not mine", "--db", str(db), "--wait", "0"]) == 1
    assert "only on runs they registered" in capsys.readouterr().err
    _as(monkeypatch, db, "dev2")
    _stdin(monkeypatch, PASSWORD)
    argv = [
        "abort",
        "2",
        "--yes",
        "--reason",
        "x",
        "--password-stdin",
        "--db",
        str(db),
        "--wait",
        "0",
    ]
    assert main(argv) == 1  # another developer's run


def test_nobody_signed_in_and_an_ended_session_are_refused(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LABCTL_SESSION")
    assert main(["status", "--db", str(db)]) == 1
    assert "not signed in" in capsys.readouterr().err
    with Store.open(db, WALL) as s:
        user = s.authenticate("ope", PASSWORD, now=WALL.now(), what="x")
        token = s.open_session(
            user, client="cli", now=WALL.now() - timedelta(seconds=SESSION_IDLE_S + 5)
        )
        with pytest.raises(AuthError, match="session has ended"):
            s.session_user(token, now=WALL.now())
        with pytest.raises(AuthError, match="not signed in"):
            s.session_user(token, now=WALL.now())  # ended for good


def test_login_keeps_the_session_in_a_file_only_its_owner_reads(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from labctl.cli.auth import token_file

    monkeypatch.delenv("LABCTL_SESSION")
    _stdin(monkeypatch, PASSWORD)
    assert main(["login", "ope", "--password-stdin", "--db", str(db)]) == 0
    assert token_file(db).stat().st_mode & 0o077 == 0
    assert main(["whoami", "--db", str(db)]) == 0
    assert "ope (operator)" in capsys.readouterr().out
    assert main(["logout", "--db", str(db)]) == 0
    assert main(["whoami", "--db", str(db)]) == 1


# ---- signatures ---------------------------------------------------------------------------


def test_a_signed_abort_records_who_what_meaning_and_the_hash_of_what_was_signed(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labctl.store.users import subject_sha256

    _as(monkeypatch, db, "ope")
    _stdin(monkeypatch, PASSWORD)
    argv = ["abort", "1", "--yes", "--reason", "mycoplasma", "--meaning", "performed",
            "--password-stdin", "--db", str(db), "--wait", "0"]  # fmt: skip
    assert main(argv) == 3
    with Store.open(db, WALL) as s:
        (sig,) = s.signatures(1)
        (cmd,) = [c for c in s.pending_commands() if c.verb == "abort"]
        run = s.get_run(1)
        assert cmd.args["signature"] == sig.id and cmd.actor == "ope"
        assert (sig.user_name, sig.full_name, sig.meaning, sig.action) == (
            "ope", "Operator", Meaning.PERFORMED, "abort",
        )  # fmt: skip
        assert sig.subject["protocol_sha256"] == run.protocol_sha256
        assert subject_sha256(sig.subject)[1] == sig.subject_sha256
        signed = s.events(entity="signature", limit=None)
        assert signed[-1].data["subject_sha256"] == sig.subject_sha256


def test_a_wrong_password_never_signs_and_five_in_a_row_lock_the_account(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _as(monkeypatch, db, "ope")
    argv = [
        "abort",
        "1",
        "--yes",
        "--reason",
        "x",
        "--password-stdin",
        "--db",
        str(db),
        "--wait",
        "0",
    ]
    for _ in range(LOCK_AFTER):
        _stdin(monkeypatch, "not-the-password")
        assert main(argv) == 1
    assert "locked" in capsys.readouterr().err
    _stdin(monkeypatch, PASSWORD)
    assert main(argv) == 1  # the right password, but locked now
    with Store.open(db, WALL) as s:
        assert s.signatures() == [s.signatures()[0]]  # only the protocol's release
        assert not [c for c in s.pending_commands() if c.verb == "abort"]
        assert s.get_user("ope").locked_until is not None
        actions = [e.action for e in s.events(entity="user", limit=None)]
        assert actions.count("password-wrong") == LOCK_AFTER - 1 and "locked" in actions
    # an admin unlocks it
    with Store.open(db, WALL) as s:
        s.set_disabled("ope", False, actor="root", now=WALL.now())
    _stdin(monkeypatch, PASSWORD)
    assert main(argv) == 3


def test_skipping_a_step_when_answering_a_prompt_is_a_signed_deviation(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(db, WALL) as s:
        p = s.insert_prompt(1, kind="recovery", text="the feed failed", actor="engine",
                            choices=["retry", "skip", "hold"])  # fmt: skip
    _as(monkeypatch, db, "ope")
    assert main(["answer", str(p.id), "skip", "--db", str(db), "--wait", "0"]) == 2  # usage
    assert "deviation" in capsys.readouterr().err
    _stdin(monkeypatch, PASSWORD)
    argv = ["answer", str(p.id), "skip", "--reason", "plate discarded", "--password-stdin",
            "--db", str(db), "--wait", "0"]  # fmt: skip
    assert main(argv) == 3
    with Store.open(db, WALL) as s:
        (sig,) = [x for x in s.signatures(1) if x.action == "accept-deviation"]
        assert sig.meaning is Meaning.APPROVED and sig.reason == "plate discarded"


# ---- released protocols -------------------------------------------------------------------


def test_a_run_cannot_be_registered_from_an_unreleased_or_changed_file(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = tmp_path / "kriks.yaml"
    changed.write_text(
        KRIKS.read_text().replace('conc: 100 nM,    days: "0-10"', 'conc: 200 nM,    days: "0-10"')
    )
    assert changed.read_text() != KRIKS.read_text()
    _as(monkeypatch, db, "ope")
    assert main(["run", str(changed), "--db", str(db)]) == 1
    assert "has changed since it was released" in capsys.readouterr().err
    other = ROOT / "protocols" / "kim2021_da.yaml"
    assert main(["run", str(other), "--db", str(db)]) == 1
    assert "is not released" in capsys.readouterr().err
    # a supervisor cannot release the changed text under the released version
    _as(monkeypatch, db, "sup")
    _stdin(monkeypatch, PASSWORD)
    argv = [
        "protocol",
        "release",
        str(changed),
        "--reason",
        "x",
        "--password-stdin",
        "--db",
        str(db),
    ]
    assert main(argv) == 1
    assert "new version" in capsys.readouterr().err


def test_the_engine_does_not_start_a_run_whose_protocol_is_not_released(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run put into the database behind the CLI's back (its protocol never released)."""
    from labctl.engine import register_run
    from tests.test_batches import kriks

    with Store.open(db, WALL) as s:
        proto, plan = kriks(1)
        text = proto.source_text + "\n# edited after release\n"
        from dataclasses import replace

        proto = replace(proto, source_text=text)
        from labctl.jobs import WorkcellRoles

        rid = register_run(s, WALL, proto, plan, WorkcellRoles.simulated(["P1"]), name="sneaky",
                           workcell_name="bay", workcell_text="", actor="ope")  # fmt: skip
        cmd = s.insert_command("start", actor="ope", run_id=rid, reason="go")
        Engine(s, WALL, fake_workcell(WALL), EngineConfig()).step()
        done = s.get_command(cmd.id)
        assert done.state == "rejected" and "not released" in done.result["reason"]


# ---- the audit trail shows tampering ------------------------------------------------------


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "signature", "release"])
def test_audit_verify_finds_a_tampered_deleted_or_reordered_row(
    db: Path, tamper: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _as(monkeypatch, db, "sup")
    assert main(["audit", "verify", "--db", str(db)]) == 0
    con = sqlite3.connect(db)
    for t in ("events_no_update", "events_no_delete", "events_append_only"):
        con.execute(f"DROP TRIGGER {t}")
    if tamper == "edit":  # who signed the release
        con.execute("UPDATE events SET actor = 'mallory' WHERE entity = 'signature'")
    elif tamper == "delete":
        con.execute("DELETE FROM events WHERE seq = 5")
    elif tamper == "signature":  # a signature rewritten behind its triggers' back
        con.execute("DROP TRIGGER signatures_no_update")
        con.execute("UPDATE signatures SET user_name = 'mallory'")
    elif tamper == "release":  # the released text swapped for another
        con.execute("DROP TRIGGER releases_no_update")
        con.execute("UPDATE releases SET text = text || '# changed'")
    else:
        a, b = con.execute("SELECT seq FROM events WHERE seq IN (5, 6) ORDER BY seq").fetchall()
        con.execute("UPDATE events SET seq = -1 WHERE seq = 5")
        con.execute("UPDATE events SET seq = 5 WHERE seq = 6")
        con.execute("UPDATE events SET seq = 6 WHERE seq = -1")
    con.commit()
    con.close()
    assert main(["audit", "verify", "--db", str(db)]) == 1
    assert "BROKEN" in capsys.readouterr().err


# ---- practice and dry-run databases ---------------------------------------------------------


def test_a_practice_database_needs_no_account_and_a_simulation_never_uses_a_production_one(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LABCTL_SESSION", raising=False)
    practice = tmp_path / "practice.db"
    assert main(["run", str(KRIKS), "--db", str(practice)]) == 0  # no workcell: simulated
    assert main(["status", "--db", str(practice)]) == 0
    capsys.readouterr()
    rc = main(["simulate", str(KRIKS), "--db", str(db), "--out", str(tmp_path / "sim")])
    assert rc == 1 and "production database" in capsys.readouterr().err


def test_a_production_database_must_be_set_up_before_anything_runs_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LABCTL_SESSION", raising=False)
    wc = ROOT / "docs" / "examples" / "hypoxic-bay.yaml"
    assert main(["run", str(KRIKS), "--workcell", str(wc), "--db", str(tmp_path / "x.db")]) == 2
    assert "labctl setup" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_role_table_separates_duties() -> None:
    assert allowed(Role.ADMIN, A.ABORT) is not None  # an admin manages accounts only
    assert allowed(Role.OPERATOR, A.RELEASE_PROTOCOL) is not None
    assert allowed(Role.OPERATOR, A.AMEND_FINISHED) is not None
    assert allowed(Role.SUPERVISOR, A.MANAGE_USERS) is not None
    assert allowed(Role.DEVELOPER, A.ABORT, own_run=False) is not None
    assert allowed(Role.DEVELOPER, A.ABORT, own_run=True) is None


def test_passwords_are_scrypt_hashes_that_carry_their_cost() -> None:
    import labctl.accounts as acc

    h = acc.hash_password("correct horse battery")
    assert h.text().startswith("scrypt$") and h.n == acc._SCRYPT_N
    assert "correct horse" not in h.text()
    assert acc.verify_password("correct horse battery", acc.PasswordHash.parse(h.text()))
    assert not acc.verify_password("correct horse batterz", h)
    # the product's cost (tests run cheaper, tests/conftest.py): 16 MiB per guess
    source = Path(acc.__file__).read_text(encoding="utf-8")
    assert "_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 2**14, 8, 1, 32" in source


def test_setup_with_a_refused_password_leaves_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new.db"
    _stdin(monkeypatch, "short")
    assert main(["setup", "--db", str(path), "--admin", "root", "--password-stdin"]) == 1
    assert "at least" in capsys.readouterr().err and not path.exists()
