"""The run's locked protocol: its plan day by day, the schedule figure and the prep sheets,
always from the protocol text locked into the run (never the file)."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from labctl.errors import LabctlError, ProtocolError
from labctl.gui.models.common import float_or_none
from labctl.store import Store
from labctl.store.models import Run


@dataclass(frozen=True)
class PlanRow:
    day: int
    date: date
    time: str  # local HH:MM
    window: str
    kind: str
    title: str
    medium: str
    factors: str
    well: str  # effective concentrations in the well after the task
    volume_ul: float | None
    line: int


@dataclass(frozen=True)
class ProtocolInfo:
    run_id: int
    protocol_id: str
    version: str
    sha256: str
    title: str
    parameters: tuple[tuple[str, str], ...]
    start: datetime
    timezone: str
    plates: int
    rows: tuple[PlanRow, ...]
    diagram_png: bytes | None
    diagram_error: str | None
    source_text: str


def plan_of_text(
    text: str,
    parameters: Mapping[str, Any],
    plates: int,
    start: datetime,
    timezone: str,
    file: str = "<locked protocol>",
) -> tuple[Any, Any]:
    from labctl.plan.resolve import resolve
    from labctl.validate import load_text

    res = load_text(text, file)
    if not res.ok or res.protocol is None:
        raise ProtocolError(res.diagnostics)
    plan = resolve(
        res.protocol, dict(parameters), plates=plates, start=start, timezone=timezone, strict=False
    )
    return res.protocol, plan


def _plan_of_run(run: Run) -> tuple[Any, Any]:
    """(Protocol, Plan) of a run from its locked protocol text, parameters and start.

    Cached: a run's protocol, parameters and start never change, and resolving takes a
    good part of a second (the prep sheets of each day and the protocol view reuse it).
    """
    import json

    return _cached_plan(
        run.protocol_text,
        json.dumps(run.parameters, sort_keys=True, default=str),
        run.plates,
        run.start.isoformat(),
        run.timezone,
        f"run {run.id} (locked protocol)",
    )


@functools.lru_cache(maxsize=16)
def _cached_plan(
    text: str, parameters: str, plates: int, start: str, timezone: str, file: str
) -> tuple[Any, Any]:
    import json

    return plan_of_text(
        text, json.loads(parameters), plates, datetime.fromisoformat(start), timezone, file
    )


def _mix(parts: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for p in parts:
        f = float_or_none(p.get("fraction"))
        name = str(p.get("medium"))
        out.append(name if f is None or f >= 0.9999 else f"{name} {f * 100:.0f} %")
    return " + ".join(out)


def _conc(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{n} {v.get('text') if isinstance(v, dict) else v}" for n, v in d.items())


def plan_rows(plan: Any) -> tuple[PlanRow, ...]:
    """The plan's tasks day by day, with what goes in and what the well holds after."""
    from labctl.plan.resolve import plan_to_json

    data = plan_to_json(plan)
    rows = []
    for t in data["tasks"]:
        due = datetime.fromisoformat(t["due"])
        ws, we = datetime.fromisoformat(t["window_start"]), datetime.fromisoformat(t["window_end"])
        medium = factors = ""
        if "feed" in t:
            medium = f"{t['feed']['change']}: " + _mix(t["feed"]["medium"])
            factors = _conc(t["feed"]["factors"])
        elif "washout" in t:
            medium = "washout: " + _mix(t["washout"]["medium"])
            factors = _conc(t["washout"]["factors"])
        elif "addition" in t:
            a = t["addition"]
            factors = f"{a['compound']} {a['conc']['text']}"
        elif "event" in t:
            medium = t["event"]["kind"]
            gates = t["event"].get("qc") or []
            factors = "; ".join(f"QC {g['measure']}" for g in gates)
        elif "environment" in t:
            e = t["environment"]
            medium = f"{e['temperature_c']:g} °C, CO₂ {e['co2_pct']:g} %"
        well = t["well_after"]
        rows.append(
            PlanRow(
                day=int(t["day"]),
                date=due.date(),
                time=due.strftime("%H:%M"),
                window=f"{ws:%H:%M}-{we:%H:%M}"
                if ws.date() == we.date()
                else f"{ws:%d %b %H:%M}-{we:%d %b %H:%M}",
                kind=t["kind"],
                title=t["title"],
                medium=medium,
                factors=factors,
                well=_conc(well.get("conc") or {}),
                volume_ul=float_or_none(well.get("volume_ul")),
                line=int(t.get("line") or 0),
            )
        )
    return tuple(rows)


def diagram_png(protocol: Any, plan: Any) -> bytes:
    """The schedule figure (labctl.reports.diagram) as PNG bytes."""
    from labctl.reports.diagram import draw

    with tempfile.TemporaryDirectory(prefix="labctl-console-") as d:
        path = Path(d) / "diagram.png"
        draw(protocol, plan, path)
        return path.read_bytes()


def diagram_png_isolated(run: Run, *, timeout_s: float = 120.0) -> bytes:
    """The run's schedule figure drawn in a child process (labctl.gui.render_diagram).

    matplotlib holds Python's GIL while it renders; in a child process that cannot stall
    the console's GUI thread. Raises LabctlError with the child's message on failure.
    """
    import json
    import subprocess
    import sys

    request = {
        "text": run.protocol_text,
        "parameters": run.parameters,
        "plates": run.plates,
        "start": run.start.isoformat(),
        "timezone": run.timezone,
    }
    try:
        done = subprocess.run(  # noqa: S603 - our own module, no shell, fixed arguments
            [sys.executable, "-m", "labctl.gui.render_diagram"],
            input=json.dumps(request).encode("utf-8"),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabctlError(f"the diagram could not be drawn: {exc}") from None
    if done.returncode != 0 or not done.stdout.startswith(b"\x89PNG"):
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise LabctlError(f"the diagram could not be drawn: {why[-1] if why else 'no output'}")
    return done.stdout


def protocol_info(
    store: Store, run_id: int, *, diagram: bool = True, isolated: bool = True
) -> ProtocolInfo:
    """The run's plan from its locked protocol version (runs.protocol_text, never the file).

    The diagram is drawn in a child process unless ``isolated`` is False.
    """
    run = store.get_run(run_id)
    protocol, plan = _plan_of_run(run)
    png = err = None
    if diagram:
        try:
            png = diagram_png_isolated(run) if isolated else diagram_png(protocol, plan)
        except LabctlError as exc:
            err = exc.user_message()
    return ProtocolInfo(
        run_id=run.id,
        protocol_id=run.protocol_id,
        version=run.protocol_version,
        sha256=run.protocol_sha256,
        title=protocol.title,
        parameters=tuple((k, str(v)) for k, v in run.parameters.items()),
        start=run.start,
        timezone=run.timezone,
        plates=run.plates,
        rows=plan_rows(plan),
        diagram_png=png,
        diagram_error=err,
        source_text=run.protocol_text,
    )


def prep_html(store: Store, run_id: int, day: int) -> str:
    """Printable prep sheets (labctl.plan.prep) of ``day`` of the run, from its locked protocol."""
    from labctl.plan.prep import prep_sheets, render_html

    run = store.get_run(run_id)
    protocol, plan = _plan_of_run(run)
    sheets = prep_sheets(protocol, plan, day)
    page = render_html(protocol, plan, sheets)
    if not sheets:
        page = page.replace("</body>", f"<p><b>Nothing to prepare on day {day}.</b></p></body>", 1)
    return page
