"""The batch record of a run, as a QA reviewer reads it: in HTML that prints well, or as PDF.

What it shows (read by :mod:`labctl.reports.record` in one snapshot of the store): the run
and the SHA-256 of the protocol text it used, that text's release (who, when, meaning,
the signature's subject hash), every signature of the run, every deviation with its reason
and the signature that accepted it, every prompt with its answer in words and who gave it,
the plan against what happened, QC values, plate places, reagent lots, alarms, the pages to
the person on call for them (sent or failed), the audit chain's check with its head hash (a
later copy of the database can be checked against the paper), and the protocol text itself.

Two renderings of one record: ``medium="browser"`` (self-contained HTML; print CSS for A4
portrait, with a page footer in ``@page`` margin boxes, printed by browsers that support
them: Chrome/Edge 131+, Safari 18.2+) and ``medium="qt"`` (the same body for the PDF
writer, labctl.gui.pdf: Qt's rich text stops reading a style sheet at ``@page`` margin
boxes, so that one has none and the writer draws the footer itself). Every value is
escaped here: names, reasons and protocol text come from users.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from labctl.clock import RealClock
from labctl.reports.record import BatchRecord, DeviationRow, PromptRow, read_record
from labctl.reports.words import plain, subject_words, when, when_local
from labctl.store import Store
from labctl.store.models import Task
from labctl.store.users import Signature

__all__ = ["Medium", "batch_record", "render_html"]

Medium = Literal["browser", "qt"]

# A section with more rows than this starts on a new printed page.
BIG_SECTION_ROWS = 12

_BASE_CSS = """
body{font-family:"DejaVu Sans",Arial,Helvetica,sans-serif;font-size:10pt;color:#111;margin:1.5em}
h1{font-size:16pt;margin:0 0 .3em}
h2{font-size:13pt;margin:1.2em 0 .3em;border-bottom:1px solid #888}
table{border-collapse:collapse;width:100%;margin:.3em 0 1em}
th,td{border:1px solid #999;padding:2px 4px;text-align:left;vertical-align:top;
 overflow-wrap:anywhere;word-break:break-word}
th{background:#e8e8e8}
table.kv th{width:26%}
code,.hash{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:90%}
.hash{word-break:break-all;overflow-wrap:anywhere}
.late{background:#ffe3b3}.bad{background:#f6c6c6}.ok{background:#d6f0d6}
.alarm{border:3px solid #b00000;background:#fde0e0;color:#600000;font-weight:bold;
 padding:6px;margin:.5em 0}
.fine{border:1px solid #6a6;background:#e6f4e6;padding:6px;margin:.5em 0}
.note{color:#555}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-family:"DejaVu Sans Mono",monospace;font-size:8pt;
 border:1px solid #bbb;padding:4px}
"""

_PRINT_CSS = """
@media print{
 body{margin:0}
 body,p,td,th,div{font-size:9pt}
 .newpage{break-before:page;page-break-before:always}
 thead{display:table-header-group}
 tr{break-inside:avoid;page-break-inside:avoid}
 h2{break-after:avoid;page-break-after:avoid}
 .screen{display:none}
 th,.bad,.ok,.late,.alarm,.fine{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


class _Safe(str):
    """Markup built here from escaped parts: put into a cell as is."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: object) -> str:
    return value if isinstance(value, _Safe) else _e(value)


def _hash(h: str) -> _Safe:
    return _Safe(f"<span class='hash'>{_e(h)}</span>")


def _stamp(dt: datetime | None, r: BatchRecord) -> _Safe:
    """A time for a table cell: UTC on one line, the run's zone under it."""
    text = when(dt, r.tz)
    utc, _, local = text.partition(" UTC (")
    if not local:
        return _Safe(_e(text))
    return _Safe(f"{_e(utc)} UTC<br>({_e(local)}")


def _css_string(text: str) -> str:
    """``text`` as a CSS string literal that cannot end the string or the style element."""
    out = []
    for ch in text:
        if ch.isalnum() or ch in " .:#-·,()":
            out.append(ch)
        else:
            out.append(f"\\{ord(ch):x} ")
    return '"' + "".join(out) + '"'


def _page_css(record: BatchRecord) -> str:
    """A4 portrait with the footer (run, audit head, printed at; page n of m)."""
    footer = _css_string(record.footer())
    return (
        "@page{size:A4 portrait;margin:14mm 12mm 16mm 12mm;"
        f"@bottom-left{{content:{footer};font-size:7.5pt;color:#444}}"
        '@bottom-right{content:"page " counter(page) " of " counter(pages);'
        "font-size:7.5pt;color:#444}}"
    )


class _Page:
    """The HTML being written: sections of headed tables."""

    def __init__(self) -> None:
        self.out: list[str] = []

    def add(self, *parts: str) -> None:
        self.out.extend(parts)

    def section(
        self,
        title: str,
        headers: Sequence[str],
        rows: Sequence[tuple[str, Sequence[object]]],
        *,
        empty: str = "None recorded.",
        intro: str = "",
        new_page: bool = False,
        widths: Sequence[int] = (),
    ) -> None:
        """A heading and a table (its header row repeated on each printed page), or
        ``empty``. Rows are (css class, cells); cells are escaped unless _Safe.
        ``widths``: each column's share of the page in percent (Qt's layout needs them to
        keep dates and names whole)."""
        big = new_page or len(rows) > BIG_SECTION_ROWS
        self.out.append("<div class='newpage'>" if big else "<div>")
        self.out.append(f"<h2>{_e(title)}</h2>")
        if intro:
            self.out.append(f"<p class='note'>{_cell(intro)}</p>")
        if not rows:
            self.out.append(f"<p>{_e(empty)}</p>\n</div>")
            return
        sized = zip(headers, [*widths, *[0] * len(headers)], strict=False)
        head = "".join(
            f"<th width='{w}%'>{_e(h)}</th>" if w else f"<th>{_e(h)}</th>" for h, w in sized
        )
        self.out.append(f"<table width='100%'><thead><tr>{head}</tr></thead><tbody>")
        for cls, cells in rows:
            attr = f" class='{cls}'" if cls else ""
            self.out.append(
                f"<tr{attr}>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>"
            )
        self.out.append("</tbody></table>\n</div>")

    def kv(self, pairs: Iterable[tuple[str, object]]) -> None:
        """A two-column table of names and values."""
        self.out.append("<table class='kv' width='100%'><tbody>")
        for k, v in pairs:
            self.out.append(f"<tr><th width='26%'>{_e(k)}</th><td>{_cell(v)}</td></tr>")
        self.out.append("</tbody></table>")


def batch_record(
    store: Store, run_id: int, *, printed_at: datetime | None = None, medium: Medium = "browser"
) -> str:
    """HTML of the batch record of ``run_id``. ``printed_at``: when it is made (wall-clock;
    default now)."""
    record = read_record(store, run_id, printed_at=printed_at or RealClock().now())
    return render_html(record, medium=medium)


def render_html(record: BatchRecord, *, medium: Medium = "browser") -> str:
    """The record as one self-contained HTML page (see the module text for ``medium``)."""
    run = record.run
    css = _BASE_CSS + _PRINT_CSS + (_page_css(record) if medium == "browser" else "")
    page = _Page()
    page.add(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Batch record: {_e(run.name)}</title>",
        f"<style>{css}</style></head><body>",
        f"<h1>Batch record: {_e(run.name)}</h1>",
        f"<p class='note'>{_e(record.footer())}</p>",
    )
    _warnings(page, record)
    _run_section(page, record)
    _release_section(page, record)
    _signatures(page, record)
    _deviations(page, record)
    _prompts(page, record)
    _tasks(page, record)
    _measurements(page, record)
    _pages(page, record)
    _audit(page, record)
    page.add(
        "<div class='newpage'><h2>Protocol text</h2>",
        f"<p class='note'>As the run stored it; SHA-256 {_e(record.text_sha256)}.</p>",
        f"<pre>{_e(run.protocol_text)}</pre></div>",
        "</body></html>",
    )
    return "\n".join(page.out)


# ---- the parts ---------------------------------------------------------------------------


def _warnings(page: _Page, r: BatchRecord) -> None:
    """Loud boxes at the top for what makes the record untrustworthy."""
    rep = r.chain.report
    if not rep.ok:
        page.add(
            f"<div class='alarm'>AUDIT CHAIN BROKEN at event seq {_e(rep.seq)}: "
            f"{_e(rep.message)}. The trail cannot be trusted from there on.</div>"
        )
    elif not rep.triggers_present:
        page.add(f"<div class='alarm'>Audit trail: {_e(rep.message)}.</div>")
    for problem in r.chain.signature_problems:
        page.add(f"<div class='alarm'>SIGNATURE RECORD ALTERED: {_e(problem)}.</div>")
    rel = r.release
    if rel.state == "unreleased":
        page.add(
            "<div class='alarm'>PROTOCOL TEXT NOT RELEASED: the text this run used (SHA-256 "
            f"{_e(r.run.protocol_sha256)}) has no release in this database.</div>"
        )
    elif rel.state == "other-text" and rel.other is not None:
        page.add(
            f"<div class='alarm'>PROTOCOL TEXT NOT RELEASED: {_e(r.run.protocol_id)} version "
            f"{_e(r.run.protocol_version)} was released with another text (SHA-256 "
            f"{_e(rel.other.sha256)}); the run used SHA-256 {_e(r.run.protocol_sha256)}.</div>"
        )
    for problem in rel.problems:
        page.add(f"<div class='alarm'>PROTOCOL TEXT: {_e(problem)}.</div>")


def _sig_ref(r: BatchRecord, s: Signature | None) -> str:
    """One line naming a signature (its full entry is in the Signatures table)."""
    if s is None:
        return "-"
    return f"signature #{s.id}: {r.who(s.user_name)}, {s.meaning.value}"


def _run_section(page: _Page, r: BatchRecord) -> None:
    run = r.run
    rel = r.release
    release_line = {
        "released": f"released ({_sig_ref(r, rel.signature)})",
        "practice": "practice database: no release needed",
        "unreleased": "NOT RELEASED",
        "other-text": "NOT RELEASED (this version was released with another text)",
    }[rel.state]
    params = ", ".join(f"{k} = {plain(v)}" for k, v in run.parameters.items()) or "defaults"
    page.add("<div><h2>Run and protocol</h2>")
    page.kv(
        [
            ("Run", f"{run.id}: {run.name} ({run.state})"),
            ("Protocol", f"{run.protocol_id} version {run.protocol_version}"),
            ("Protocol text SHA-256", _hash(run.protocol_sha256)),
            ("Release", release_line),
            ("Parameters", params),
            ("Plates", run.plates),
            ("Start (day 0)", when(run.start, r.tz)),
            ("Time zone", run.timezone),
            ("Workcell", run.workcell_name),
            ("Registered by", r.who(r.registered_by)),
            ("Database", "practice or dry run" if r.practice else "production"),
        ]
    )
    page.add("</div>")


def _release_section(page: _Page, r: BatchRecord) -> None:
    rel = r.release
    page.add("<div><h2>Release of the protocol text</h2>")
    if rel.state == "practice":
        page.add(
            "<p class='fine'>Practice database: no release needed (its runs drive simulated "
            "devices only).</p></div>"
        )
        return
    if rel.release is None or rel.signature is None:
        page.add(
            "<p class='alarm'>NOT RELEASED: no supervisor's signed release covers the "
            f"protocol text this run used (SHA-256 {_e(r.run.protocol_sha256)}).</p></div>"
        )
        return
    s = rel.signature
    page.kv(
        [
            ("Released", f"{rel.release.protocol_id} version {rel.release.version}"),
            ("Released by", r.who(s.user_name)),
            ("Released at", when(rel.release.released_at, r.tz)),
            ("Meaning", s.meaning.value),
            ("Reason", s.reason),
            ("Signature", f"#{s.id}, signed {when(s.signed_at, r.tz)}"),
            ("Signature subject SHA-256", _hash(s.subject_sha256)),
            ("Released text SHA-256", _hash(rel.release.sha256)),
        ]
    )
    page.add("</div>")


def _signatures(page: _Page, r: BatchRecord) -> None:
    rows = [
        (
            "",
            [
                f"#{s.id}",
                r.who(s.user_name),
                s.meaning.value,
                _stamp(s.signed_at, r),
                f"{s.action}: {subject_words(s.subject)}",
                s.reason,
                _hash(s.subject_sha256),
            ],
        )
        for s in r.signatures
    ]
    page.section(
        "Signatures",
        ["#", "Signed by", "Meaning", "Time", "Action", "Reason", "Subject SHA-256"],
        rows,
        widths=[5, 14, 11, 15, 16, 17, 22],
        intro="Electronic signatures (password given again) on this run, and the release "
        "of its protocol text. The subject hash is the SHA-256 of what was signed.",
    )


def _deviation_cells(r: BatchRecord, d: DeviationRow) -> list[object]:
    what = d.what
    if d.decision is not None:
        what += f"; {d.decided} by {r.who(d.decision.actor)} at {when(d.decision.time, r.tz)}" + (
            f" ({d.decision.reason})" if d.decision.reason else ""
        )
    elif d.what == "Run held":
        what += "; still held"
    signed = _sig_ref(r, d.signature) if d.signature else "not signed"
    return [_stamp(d.time, r), what, d.reason or "-", r.who(d.actor), signed]


def _deviations(page: _Page, r: BatchRecord) -> None:
    page.section(
        "Deviations",
        ["Time", "What", "Reason", "Recorded by", "Accepted by"],
        [("bad" if d.signature is None else "", _deviation_cells(r, d)) for d in r.deviations],
        widths=[15, 27, 22, 13, 23],
        intro="Steps left out, plates out of the incubator too long, QC values out of "
        "limits, holds and aborts, with the signature that accepted each.",
    )


def _prompt_cells(r: BatchRecord, row: PromptRow) -> list[object]:
    p = row.prompt
    how = row.reason or "-"
    if row.signature is not None:
        how += f"; {_sig_ref(r, row.signature)}"
    asked = _Safe(f"#{p.id} ({_e(p.kind)})<br>{_stamp(p.created_at, r)}")
    if p.state == "answered":
        by = _Safe(f"{_e(r.who(p.answered_by))}<br>{_stamp(p.answered_at, r)}")
    else:
        by = _Safe(f"<b>not answered</b> ({_e(p.state)})")
    return [asked, p.text, by, row.answer, how]


def _prompts(page: _Page, r: BatchRecord) -> None:
    page.section(
        "Prompts",
        ["Prompt, asked", "Question", "Answered by, when", "Answer", "Reason, signature"],
        [
            ("" if row.prompt.state == "answered" else "late", _prompt_cells(r, row))
            for row in r.prompts
        ],  # fmt: skip
        widths=[15, 30, 17, 20, 18],
    )


def _clock(dt: datetime | None, day: datetime | None, r: BatchRecord) -> str:
    """``09:15`` on the same day (run's zone) as ``day``, else the date and time."""
    if dt is None:
        return "-"
    text = when_local(dt, r.tz)
    same = day is not None and text[:10] == when_local(day, r.tz)[:10]
    return text[11:] if same else text


def _task_cells(r: BatchRecord, t: Task, late: bool) -> list[object]:
    window = ""
    if t.window_start is not None and t.window_end is not None:
        window = f" ({_clock(t.window_start, t.due, r)}-{_clock(t.window_end, t.due, r)})"
    actual = "-"
    if t.actual_start is not None:
        actual = f"{_clock(t.actual_start, t.due, r)}-{_clock(t.actual_end, t.actual_start, r)}"
    steps = [
        f"{j.op} on {j.device}: {j.state}"
        + (
            f" {_clock(j.started_at, t.due, r)}-{_clock(j.finished_at, j.started_at, r)}"
            if j.started_at
            else ""
        )
        for j in r.jobs.get(t.id, [])
    ]
    return [
        t.key,
        when_local(t.due, r.tz) + window,
        _clock(t.planned_start, t.due, r),
        actual,
        t.state + (" (late)" if late else ""),
        _Safe("<br>".join(_e(x) for x in steps) or "-"),
    ]


def _tasks(page: _Page, r: BatchRecord) -> None:
    rows = []
    for t in r.tasks:
        late = bool(t.actual_start and t.window_end and t.actual_start > t.window_end)
        cls = "late" if late else ("bad" if t.state == "skipped" else "")
        rows.append((cls, _task_cells(r, t, late)))
    page.section(
        "Tasks: plan against what happened",
        ["Task", "Due (window)", "Planned", "Actual", "State", "Steps"],
        rows,
        intro=f"Times in the run's zone, {r.run.timezone}; a time without a date is on the "
        "day the task was due.",
        new_page=True,
        widths=[16, 17, 10, 13, 9, 35],
    )


def _measurements(page: _Page, r: BatchRecord) -> None:
    def bound(x: float | None) -> str:
        return "" if x is None else f"{x:g}"

    page.section(
        "QC values",
        ["Measure", "Value", "Limits", "Result", "Recorded"],
        [
            (
                "ok" if q.passed else "bad",
                [
                    q.measure,
                    f"{q.value:g} {q.unit}",
                    f"{bound(q.min_value)} .. {bound(q.max_value)}",
                    "pass" if q.passed else "FAIL",
                    when_local(q.recorded_at, r.tz),
                ],
            )
            for q in r.qc
        ],
    )
    page.section(
        "Where each plate is",
        ["Plate", "Place", "Since", "Moving"],
        [
            (
                "" if loc.certain else "bad",
                [loc.plate, loc.where, when_local(loc.since, r.tz), loc.moving or ""],
            )
            for loc in r.locations
        ],  # fmt: skip
    )
    page.section(
        "Reagent lots",
        ["Reagent", "Lot", "Expiry"],
        [("", [lot.reagent, lot.lot, str(lot.expiry or "")]) for lot in r.lots],
    )
    page.section(
        "Alarms",
        ["Raised", "Device", "Code", "Message", "State"],
        [
            ("", [when_local(a.raised_at, r.tz), a.device or "", a.code, a.message, a.state])
            for a in r.alarms
        ],
        empty="None.",
    )


def _pages(page: _Page, r: BatchRecord) -> None:
    page.section(
        "Pages",
        ["Time", "Channel", "Recipients", "For the alarm", "Attempt", "Outcome"],
        [
            (
                "" if p.sent else "bad",
                [
                    _stamp(p.time, r),
                    p.channel,
                    p.recipients,
                    p.alarm,
                    "-" if p.attempt is None else p.attempt,
                    p.outcome,
                ],
            )
            for p in r.pages
        ],
        empty="No page was sent or tried.",
        widths=[15, 9, 18, 31, 7, 20],
        intro="The person on call paged, by e-mail or webhook, for the alarms above that "
        "needed a person; a failed page is tried again while its alarm stands active (not "
        "acknowledged, not cleared).",
    )


def _audit(page: _Page, r: BatchRecord) -> None:
    rep, head = r.chain.report, r.chain.head
    if rep.ok:
        verdict = f"Hash chain verified: intact ({rep.rows_checked} events)."
    else:
        verdict = f"Hash chain BROKEN at event seq {rep.seq}: {rep.message}."
    page.add(
        "<div><h2>Audit trail</h2>",
        f"<p class='{'ok' if rep.ok else 'bad'}'>{_e(verdict)}</p>",
    )
    page.kv(
        [
            ("Result", "intact" if rep.ok else f"broken at event seq {rep.seq} ({rep.problem})"),
            ("Events checked", rep.rows_checked),
            ("Events of this run", r.chain.run_events),
            ("Head event", head[0] if head else "-"),
            ("Head hash (SHA-256)", _hash(head[1]) if head else "-"),
            ("Append-only triggers", "present" if rep.triggers_present else "MISSING"),
            (
                "Signatures and releases",
                "; ".join(r.chain.signature_problems)
                or "each agrees with the audit event recorded with it",
            ),
            ("Checked at", when(r.printed_at, r.tz)),
        ]
    )
    page.add(
        "<p class='note'>Keep this page: a later copy of the database whose trail does not "
        "pass through this head hash at this event has been rewritten.</p></div>"
    )
