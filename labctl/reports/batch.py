"""The batch record of a run: plan against what happened, QC, alarms, deviations, audit check.

A self-contained HTML page (print it to PDF from any browser). Every value comes from the
store; the audit chain is verified while the page is made and its head hash printed, so a
later copy of the database can be checked against the paper record.
"""

from __future__ import annotations

import html
from datetime import datetime
from zoneinfo import ZoneInfo

from labctl.reports.locations import plate_locations
from labctl.store import Store


def _t(dt: datetime | None, tz: ZoneInfo) -> str:
    return dt.astimezone(tz).strftime("%Y-%m-%d %H:%M") if dt else "-"


def batch_record(store: Store, run_id: int) -> str:
    """HTML of the batch record of ``run_id``."""
    e = html.escape
    run = store.get_run(run_id)
    tz = ZoneInfo(run.timezone)
    tasks = store.tasks(run_id)
    jobs = store.jobs(run_id)
    by_task: dict[int, list] = {}
    for j in jobs:
        by_task.setdefault(j.task_id, []).append(j)
    deviations = store.events(run_id, action="deviation", limit=None)
    qc = store.qc_values(run_id)
    lots = store.reagent_lots(run_id)
    alarms = store.alarms_for_run(run_id)
    report = store.verify_chain()
    head = store.head()
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Batch record: {e(run.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;color:#111}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:90%}"
        "td,th{border:1px solid #999;padding:3px 6px;text-align:left;vertical-align:top}th{background:#eee}"
        ".late{background:#ffe3b3}.bad{background:#f6c6c6}.ok{background:#d6f0d6}</style></head><body>",
        f"<h1>Batch record: {e(run.name)}</h1>",
        "<table>",
        f"<tr><th>Run</th><td>{run.id} ({e(run.state)})</td></tr>",
        f"<tr><th>Protocol</th><td>{e(run.protocol_id)} v{e(run.protocol_version)}; sha256 {e(run.protocol_sha256)}</td></tr>",
        f"<tr><th>Parameters</th><td>{e(', '.join(f'{k} = {v}' for k, v in run.parameters.items()) or 'defaults')}</td></tr>",
        f"<tr><th>Plates</th><td>{run.plates}</td></tr>",
        f"<tr><th>Start (day 0)</th><td>{_t(run.start, tz)} {e(run.timezone)}</td></tr>",
        f"<tr><th>Workcell</th><td>{e(run.workcell_name)}</td></tr>",
        "</table>",
        "<h2>Tasks: plan against what happened</h2>",
        "<table><tr><th>Task</th><th>Due</th><th>Window</th><th>Planned</th><th>Actual start</th><th>Actual end</th><th>State</th><th>Steps (device, op, state, by)</th></tr>",
    ]
    for t in tasks:
        late = (
            t.actual_start is not None
            and t.window_end is not None
            and t.actual_start > t.window_end
        )
        cls = " class='late'" if late else (" class='bad'" if t.state == "skipped" else "")
        steps = "<br>".join(
            f"{e(j.device)} {e(j.op)}: {e(j.state)}"
            + (f" ({_t(j.started_at, tz)}-{_t(j.finished_at, tz)[11:]})" if j.started_at else "")
            for j in by_task.get(t.id, [])
        )
        out.append(
            f"<tr{cls}><td>{e(t.key)}</td><td>{_t(t.due, tz)}</td><td>{_t(t.window_start, tz)[11:]}-{_t(t.window_end, tz)[11:]}</td>"
            f"<td>{_t(t.planned_start, tz)}</td><td>{_t(t.actual_start, tz)}</td><td>{_t(t.actual_end, tz)}</td><td>{e(t.state)}{' (late)' if late else ''}</td><td>{steps}</td></tr>"
        )
    out.append("</table>")
    out += _section(
        "Deviations",
        ["Time", "By", "What", "Reason"],
        [("", [_t(ev.time, tz), ev.actor, str(ev.data), ev.reason]) for ev in deviations],
    )
    out += _section(
        "QC values",
        ["Measure", "Value", "Limits", "Result"],
        [
            (
                "ok" if q.passed else "bad",
                [
                    q.measure,
                    f"{q.value:g} {q.unit}",
                    f"{'' if q.min_value is None else q.min_value} .. {'' if q.max_value is None else q.max_value}",
                    "pass" if q.passed else "FAIL",
                ],
            )
            for q in qc
        ],
    )
    out += _section(
        "Where each plate is",
        ["Plate", "Place", "Since", "Moving"],
        [
            (
                "" if loc.certain else "bad",
                [loc.plate, loc.where, _t(loc.since, tz), loc.moving or ""],
            )
            for loc in plate_locations(store, run_id)
        ],
    )
    out += _section(
        "Reagent lots",
        ["Reagent", "Lot", "Expiry"],
        [("", [lot.reagent, lot.lot, str(lot.expiry or "")]) for lot in lots],
    )
    out += _section(
        "Alarms",
        ["Raised", "Device", "Code", "Message", "State"],
        [("", [_t(a.raised_at, tz), a.device or "", a.code, a.message, a.state]) for a in alarms],
        empty="None.",
    )
    verdict = "verified" if report.ok else f"FAILED: {report.message}"
    out.append(
        f"<h2>Audit trail</h2><p class='{'ok' if report.ok else 'bad'}'>Hash chain {e(verdict)} ({report.rows_checked} events).</p>"
    )
    if head:
        out.append(f"<p>Head: event {head[0]}, hash <code>{e(head[1])}</code></p>")
    out.append("</body></html>")
    return "\n".join(out)


def _section(
    title: str, headers: list[str], rows: list[tuple[str, list[str]]], empty: str = "None recorded."
) -> list[str]:
    """An HTML heading and a table of plain-text cells (escaped here), or ``empty``."""
    e = html.escape
    out = [f"<h2>{e(title)}</h2>"]
    if not rows:
        return [*out, f"<p>{e(empty)}</p>"]
    out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>")
    for cls, cells in rows:
        attr = f" class='{cls}'" if cls else ""
        out.append(f"<tr{attr}>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return out
