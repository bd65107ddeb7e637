"""Small protocol texts for tests."""

from __future__ import annotations

import textwrap
from typing import Any

BASE = """\
labctl: 1
id: t
title: test protocol
version: 1.0.0
compounds:
  A: {stock: 10 mM, solvent: DMSO}
  B: {stock: 100 ug/mL, solvent: PBS}
  Y: {stock: 10 mM, solvent: water}
media:
  M1: {description: base one}
  M2: {description: base two}
  PBS: {description: wash}
culture: {labware: corning_6_wellplate_16.8ml_flat, volume: 2 mL}
timing: {feed_at: "09:00", window: 1 h}
"""


def protocol_text(schedule: str, extra: str = "") -> str:
    """BASE plus ``extra`` top-level keys plus a ``schedule:`` block (indented for you)."""
    return (
        BASE
        + textwrap.dedent(extra)
        + "schedule:\n"
        + textwrap.indent(textwrap.dedent(schedule), "  ")
    )


def load(schedule: str, extra: str = ""):  # noqa: ANN201
    from labctl.validate import load_text

    return load_text(protocol_text(schedule, extra), "t.yaml")


# ---- accounts: a production database with people signed in -----------------------------

PASSWORD = "a-long-test-password"


def sign_in(db, monkeypatch, name: str = "sue", role: str = "supervisor") -> str:  # noqa: ANN001
    """Set ``db`` up with accounts (an admin and ``name`` with ``role``), release the
    protocol of every run in it, and sign ``name`` in for the CLI (``$LABCTL_SESSION``).
    Returns the session token."""
    from labctl.accounts import Meaning, Role
    from labctl.clock import RealClock
    from labctl.store import Store

    wall = RealClock()
    with Store.open(db, wall, create=True) as s:
        names = {u.name for u in s.users()}
        if "root" not in names:
            s.add_user("root", Role.ADMIN, PASSWORD, full_name="Root", actor="root", now=wall.now())
        if name not in names:
            s.add_user(
                name, Role(role), PASSWORD, full_name=name.title(), actor="root", now=wall.now()
            )
        if "qa" not in names:
            s.add_user(
                "qa", Role.SUPERVISOR, PASSWORD, full_name="Q. A.", actor="root", now=wall.now()
            )
        for run in s.list_runs():
            if s.release_of(run.protocol_sha256) is None:
                sig = s.sign(
                    "qa", PASSWORD, meaning=Meaning.APPROVED, action="release-protocol",
                    subject={"protocol": run.protocol_id, "version": run.protocol_version,
                             "sha256": run.protocol_sha256},
                    reason="released for the test", now=wall.now(),
                )  # fmt: skip
                s.release_protocol(
                    run.protocol_id,
                    run.protocol_version,
                    run.protocol_text,
                    signature=sig,
                    now=wall.now(),
                )
        token = s.open_session(s.get_user(name), client="cli", now=wall.now())
    monkeypatch.setenv("LABCTL_SESSION", token)
    return token


def run_cli(capsys: Any, *argv: object) -> tuple[int, str, str]:
    """``labctl ARGV`` in-process: (exit code, stdout, stderr). A usage error from argparse
    (SystemExit) counts as its code, as the shell sees it."""
    from labctl.cli.main import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
