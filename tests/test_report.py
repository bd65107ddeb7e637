"""The batch record: release, signatures, deviations with the signature that accepted each,
prompts and their answers in words, the audit chain's check and head, print CSS, escaping."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labctl import accounts
from labctl.accounts import Meaning, Role
from labctl.reports.batch import batch_record
from labctl.store.users import Signature
from tests.test_engine import SHORT, World

PW = "a-long-test-password"
HOSTILE = "<script>alert('x')</script> & \"quoted\""
PRINTED = datetime(2026, 12, 24, 15, 30, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """New password hashes with a small scrypt cost (checks read the cost from the hash)."""
    monkeypatch.setattr(accounts, "_SCRYPT_N", 2**8)


def sections(page: str) -> dict[str, str]:
    """The page's HTML under each <h2> heading, by heading."""
    parts = re.split(r"<h2>(.*?)</h2>", page)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


@dataclass
class Signed:
    """A production run with a release, signed skip, hold release and abort, and prompts."""

    world: World
    release: Signature
    skip: Signature
    unhold: Signature
    abort: Signature
    skipped_task: str
    qc_prompt: int


def people_and_release(w: World) -> Signature:
    """Accounts (an admin, supervisor sue, operator olle) and the release of the run's
    protocol text, signed by sue. Returns the release signature."""
    s, now = w.store, w.clock.now
    s.add_user("root", Role.ADMIN, PW, full_name="Root", actor="root", now=now())
    s.add_user("sue", Role.SUPERVISOR, PW, full_name="Sue Smith", actor="root", now=now())
    s.add_user("olle", Role.OPERATOR, PW, full_name="Olle <Ops> & Co", actor="root", now=now())
    run = s.get_run(w.run_id)
    release = s.sign(
        "sue", PW, meaning=Meaning.APPROVED, action="release-protocol",
        subject={"protocol": run.protocol_id, "version": run.protocol_version,
                 "sha256": run.protocol_sha256},
        reason="validated in three dry runs", now=now(),
    )  # fmt: skip
    s.release_protocol(
        run.protocol_id, run.protocol_version, run.protocol_text, signature=release, now=now()
    )
    return release


def queue_signed(
    w: World, verb: str, who: str, why: str, meaning: Meaning, action: str = "", **args: object
) -> Signature:
    """Sign as the CLI does (labctl.cli.operator_cmds.signed_queue) and queue ``verb`` with
    the signature's id. ``action``: the signed action when it is not the verb's name."""
    s, run = w.store, w.store.get_run(w.run_id)
    subject = {"action": action or verb, "run": w.run_id, "protocol_sha256": run.protocol_sha256,
               "args": args, "reason": why}  # fmt: skip
    sig = s.sign(who, PW, meaning=meaning, action=action or verb, subject=subject, reason=why,
                 now=w.clock.now(), run_id=w.run_id)  # fmt: skip
    s.insert_command(
        verb, actor=who, run_id=w.run_id, args={**args, "signature": sig.id}, reason=why
    )
    return sig


def signed_run(tmp_path: Path, reason: str = "contaminated well") -> Signed:
    w = World(tmp_path, text=SHORT + "\n# a comment with </pre><b>markup</b>\n")
    w.devices["operator"].qc_value = 10.0  # the day-1 sample fails its gate: the run holds
    s = w.store
    release = people_and_release(w)
    s.insert_command("start", actor="olle", run_id=w.run_id, reason="start")
    task = w.plan.feeds()[-1].key
    skip = queue_signed(w, "skip", "olle", reason, Meaning.PERFORMED, task=task, plate="P2")
    w.run_until(lambda: w.state == "holding", limit_days=3)
    unhold = queue_signed(w, "release", "sue", "QC counted again by hand: 85 %", Meaning.APPROVED)
    w.run_until(lambda: w.state == "running", limit_days=1)
    p = s.insert_prompt(
        w.run_id, kind="task", text="Count the cells of <P1>", actor="engine",
        choices=[{"measure": "density", "unit": "cells/mL", "min": 1e5}],
    )  # fmt: skip
    s.answer_prompt(
        p.id, {"qc": {"density": 2.5e5}, "lots": {"NB_B27": "LOT-7"}, "done": True},
        actor="olle", reason="counted on the hemocytometer",
    )  # fmt: skip
    abort = queue_signed(
        w, "abort", "olle", "incubator door left open overnight", Meaning.PERFORMED
    )
    w.run_until(lambda: w.state == "aborted", limit_days=1)
    return Signed(w, release, skip, unhold, abort, task, p.id)


def test_the_record_of_a_signed_run_shows_release_signatures_deviations_prompts(
    tmp_path: Path,
) -> None:
    r = signed_run(tmp_path)
    store, run = r.world.store, r.world.store.get_run(r.world.run_id)
    page = batch_record(store, run.id, printed_at=PRINTED)
    sec = sections(page)

    top = sec["Run and protocol"]
    assert run.protocol_id in top and run.protocol_version in top
    assert run.protocol_sha256 in top and "Registered by" in top
    rel = sec["Release of the protocol text"]
    for text in ("Sue Smith (sue)", "approved", "validated in three dry runs",
                 r.release.subject_sha256, "2026-11-30"):  # fmt: skip
        assert text in rel, text
    assert "NOT RELEASED" not in page

    sigs = sec["Signatures"]
    for sig in (r.release, r.skip, r.unhold, r.abort):
        assert f"#{sig.id}" in sigs and sig.subject_sha256 in sigs
    assert "Olle &lt;Ops&gt; &amp; Co (olle)" in sigs and "performed" in sigs
    assert f"skip: task {r.skipped_task}, plate P2, run {run.id}" in sigs
    assert "08:00:00 UTC<br>(09:00:00 CET)" in sigs  # UTC, then the run's zone

    dev = sec["Deviations"]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", dev)[1:]
    skipped = next(x for x in rows if f"{r.skipped_task}/P2 skipped" in x)
    assert "contaminated well" in skipped and f"signature #{r.skip.id}:" in skipped
    held = next(x for x in rows if "Run held" in x)
    assert "released by Sue Smith (sue)" in held and f"signature #{r.unhold.id}:" in held
    aborted = next(x for x in rows if "Run aborted" in x)
    assert f"signature #{r.abort.id}:" in aborted
    assert "incubator door left open overnight" in aborted
    assert "{" not in dev  # no Python dict shown to the reviewer

    prompts = sec["Prompts"]
    decision = next(x for x in re.findall(r"<tr>(.*?)</tr>", prompts) if "(decision)" in x)
    assert "Sue Smith (sue)" in decision and "&#x27;release&#x27;: release the run" in decision
    assert f"signature #{r.unhold.id}" in decision
    qc = next(x for x in re.findall(r"<tr>(.*?)</tr>", prompts) if f"#{r.qc_prompt} " in x)
    assert "Count the cells of &lt;P1&gt;" in qc and "Olle &lt;Ops&gt; &amp; Co (olle)" in qc
    assert "density = 250000 cells/mL (passes)" in qc and "NB_B27 lot LOT-7" in qc
    assert "counted on the hemocytometer" in qc

    head = store.head()
    assert head is not None
    audit = sec["Audit trail"]
    assert "Hash chain verified: intact" in audit and head[1] in audit
    assert f"<td>{head[0]}</td>" in audit


def test_a_step_left_out_at_a_recovery_prompt_shows_the_signature_that_accepted_it(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    people_and_release(w)
    w.devices["ot2-sim"].fail_next = 1  # the first dispense fails: the engine asks
    w.store.insert_command("start", actor="sue", run_id=w.run_id, reason="start")
    w.run_until(lambda: bool(w.store.open_prompts(w.run_id)), limit_days=2)
    (p,) = w.store.open_prompts(w.run_id)
    answer = {"choice": "skip"}
    sig = queue_signed(
        w, "answer", "sue", "the plate's lid cracked", Meaning.APPROVED,
        action="accept-deviation", prompt=p.id, answer=answer,
    )  # fmt: skip
    w.run_until(lambda: w.store.get_prompt(p.id).state == "answered", limit_days=0.5)
    sec = sections(batch_record(w.store, w.run_id, printed_at=PRINTED))
    (row,) = re.findall(r"<tr[^>]*>(.*?)</tr>", sec["Deviations"])[1:]
    assert "Step &#x27;lh_run&#x27; of" in row and "the plate&#x27;s lid cracked" in row
    assert f"signature #{sig.id}: Sue Smith (sue), approved" in row
    asked = next(x for x in re.findall(r"<tr>(.*?)</tr>", sec["Prompts"]) if f"#{p.id} " in x)
    assert "&#x27;skip&#x27;: leave the step out (a deviation)" in asked
    assert f"signature #{sig.id}:" in asked
    assert (
        f"accept-deviation: prompt {p.id}, answer &#x27;skip&#x27;: leave the step out"
        in sec["Signatures"]
    )


def test_every_printed_page_has_the_footer_and_a4_print_rules(tmp_path: Path) -> None:
    w = World(tmp_path)
    page = batch_record(w.store, w.run_id, printed_at=PRINTED)
    head = w.store.head()
    assert head is not None
    style = page[page.index("<style>") : page.index("</style>")]
    assert "size:A4 portrait" in style
    assert '@bottom-right{content:"page " counter(page) " of " counter(pages)' in style
    footer = re.search(r"@bottom-left\{content:\"(.*?)\"", style)
    assert footer is not None and f"Run {w.run_id}" in footer.group(1)
    assert f"#{head[0]} {head[1][:12]}" in footer.group(
        1
    ) and "2026-12-24 15:30 UTC" in footer.group(1)
    assert "thead{display:table-header-group}" in style and ".newpage{break-before:page" in style
    assert re.search(r"<thead><tr><th[^>]*>Task</th>", page)  # repeated on each printed page
    assert "<div class='newpage'>\n<h2>Tasks: plan against what happened</h2>" in page
    # Qt's rich text stops reading a style sheet at margin boxes: its HTML has none.
    qt = batch_record(w.store, w.run_id, printed_at=PRINTED, medium="qt")
    assert "@page" not in qt and "@media print" in qt


def test_a_practice_database_needs_no_release(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.store.set_kind("practice", actor="tester")
    page = batch_record(w.store, w.run_id, printed_at=PRINTED)
    assert "practice database: no release needed" in sections(page)["Run and protocol"]
    assert "Practice database: no release needed" in sections(page)["Release of the protocol text"]
    assert "NOT RELEASED" not in page


def test_an_unreleased_protocol_text_is_said_loudly(tmp_path: Path) -> None:
    w = World(tmp_path)
    run = w.store.get_run(w.run_id)
    page = batch_record(w.store, w.run_id, printed_at=PRINTED)
    assert "<div class='alarm'>PROTOCOL TEXT NOT RELEASED" in page
    assert "no release in this database" in page and run.protocol_sha256 in page
    # The same version released with another text is not a release of this one.
    w.store.add_user("sue", Role.SUPERVISOR, PW, full_name="Sue", actor="root", now=w.clock.now())
    other = run.protocol_text + "\n# changed after the run\n"
    import hashlib

    digest = hashlib.sha256(other.encode("utf-8")).hexdigest()
    sig = w.store.sign(
        "sue", PW, meaning=Meaning.APPROVED, action="release-protocol",
        subject={"protocol": run.protocol_id, "version": run.protocol_version, "sha256": digest},
        reason="r", now=w.clock.now(),
    )  # fmt: skip
    w.store.release_protocol(
        run.protocol_id, run.protocol_version, other, signature=sig, now=w.clock.now()
    )
    page = batch_record(w.store, w.run_id, printed_at=PRINTED)
    assert "was released with another text" in page and digest in page


def test_a_tampered_event_makes_the_record_say_the_chain_is_broken_there(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    w.command("start")
    w.engine.step()
    events = w.store.events(w.run_id, limit=None)
    seq = events[len(events) // 2].seq  # one in the middle of the trail
    assert 1 < seq < events[-1].seq
    assert "Hash chain verified" in batch_record(w.store, w.run_id, printed_at=PRINTED)
    raw = sqlite3.connect(tmp_path / "run.db")
    with raw:
        raw.execute("DROP TRIGGER events_no_update")
        raw.execute("UPDATE events SET reason = 'nothing happened' WHERE seq = ?", (seq,))
    raw.close()
    page = batch_record(w.store, w.run_id, printed_at=PRINTED)
    assert f"<div class='alarm'>AUDIT CHAIN BROKEN at event seq {seq}:" in page
    audit = sections(page)["Audit trail"]
    assert f"Hash chain BROKEN at event seq {seq}" in audit
    assert f"broken at event seq {seq} (edited)" in audit
    assert "Hash chain verified" not in page


def test_a_signature_changed_behind_the_triggers_back_is_said(tmp_path: Path) -> None:
    r = signed_run(tmp_path)
    page = batch_record(r.world.store, r.world.run_id, printed_at=PRINTED)
    assert "each agrees with the audit event recorded with it" in sections(page)["Audit trail"]
    raw = sqlite3.connect(tmp_path / "run.db")
    with raw:
        raw.execute("DROP TRIGGER signatures_no_update")
        raw.execute("UPDATE signatures SET meaning = 'approved' WHERE id = ?", (r.skip.id,))
    raw.close()
    page = batch_record(r.world.store, r.world.run_id, printed_at=PRINTED)
    said = f"signature {r.skip.id} differs from its audit event"
    assert f"<div class='alarm'>SIGNATURE RECORD ALTERED: {said}.</div>" in page
    assert said in sections(page)["Audit trail"]


def test_values_from_users_are_escaped(tmp_path: Path) -> None:
    r = signed_run(tmp_path, reason=HOSTILE)
    page = batch_record(r.world.store, r.world.run_id, printed_at=PRINTED)
    assert "<script" not in page and "<b>markup" not in page and "</pre><b>" not in page
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;"
    assert escaped in sections(page)["Deviations"] and escaped in sections(page)["Signatures"]
    assert (
        "# a comment with &lt;/pre&gt;&lt;b&gt;markup&lt;/b&gt;" in sections(page)["Protocol text"]
    )
    assert "Olle &lt;Ops&gt; &amp; Co" in page


def test_batch_record_sections_of_an_engine_run(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.devices["operator"].qc_value = 10.0  # the day-1 sample fails its gate
    w.command("start")
    task = w.plan.feeds()[-1].key
    w.command("skip", task=task, plate="P2", reason="<b>contaminated</b>")
    w.run_until(lambda: w.state == "holding", limit_days=3)
    page = batch_record(w.store, w.run_id)
    for title in ("Deviations", "QC values", "Reagent lots", "Alarms", "Audit trail"):
        assert f"<h2>{title}</h2>" in page
    assert "&lt;b&gt;contaminated&lt;/b&gt;" in page and "<b>contaminated" not in page
    assert "<td>FAIL</td>" in page  # the failed QC value
    assert "<td>hold</td>" in page  # the held run's alarm
    dev = sections(page)["Deviations"]
    assert f"{task}/P2 skipped" in dev and "not signed" in dev and "still held" in dev
    assert "<h2>Reagent lots</h2>\n<p>None recorded.</p>" in page


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"kind": "skipped", "task": "r1:d2-feed/P2"}, "Task r1:d2-feed/P2 skipped"),
        (
            {"kind": "skipped", "job": "r1:d2-feed/P2#3", "op": "lh_run"},
            "Step 'lh_run' of r1:d2-feed/P2#3 skipped",
        ),
        (
            {"kind": "out_of_incubator", "task": "r1:d3-feed/P1", "seconds": 2710.4},
            "Plate out of the incubator for 45 min during r1:d3-feed/P1",
        ),
        (
            {"kind": "qc", "measure": "pct", "value": 10.0, "on_fail": "continue"},
            "QC value pct = 10 outside its limits; the protocol's action: continue",
        ),
        (
            {"kind": "extended", "seconds": 86400, "tasks": 12},
            "Rest of the run moved 24 h later (12 tasks)",
        ),
        (
            {"kind": "door_open", "device": "inc-1", "open_s": 12.5},
            "Door open: device: inc-1; open s: 12.5",
        ),
    ],
)
def test_deviations_read_as_sentences(data: dict[str, object], words: str) -> None:
    from labctl.reports.words import deviation_words

    assert deviation_words(data) == words


def test_answers_read_as_words() -> None:
    from labctl.reports.words import answer_words

    gates = [{"measure": "pct", "unit": "%", "min": 60}]
    assert (
        answer_words({"qc": {"pct": 42.0}, "done": True}, gates) == "pct = 42 % (FAILS its limits)"
    )
    assert answer_words({"choice": "retry"}, ["retry", "skip"]) == "'retry': do the step again"
    assert answer_words({"done": True}, []) == "done"
    assert answer_words({"answer": ["a", 2.5, None]}, []) == "a, 2.5, -"
