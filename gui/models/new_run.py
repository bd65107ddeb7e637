"""Registering a new run: the protocol file checked, start dates ranked, the run and its
start command written together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from labctl.accounts import Action
from labctl.clock import Clock
from labctl.errors import ProtocolError
from labctl.gui.auth import ConsoleUser, authorize
from labctl.gui.models.common import ConsoleInputError
from labctl.store import Store


@dataclass(frozen=True)
class ParamInfo:
    name: str
    default: str
    min: str
    max: str
    description: str


@dataclass(frozen=True)
class ProtocolCheck:
    """A protocol file as validated before a run is registered from it."""

    file: str
    text: str
    ok: bool
    diagnostics: tuple[Any, ...]  # labctl.errors.Diagnostic, errors and warnings
    protocol_id: str
    title: str
    version: str
    first_day: int
    last_day: int
    parameters: tuple[ParamInfo, ...]

    @property
    def errors(self) -> tuple[Any, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")


def check_protocol_text(text: str, file: str) -> ProtocolCheck:
    """Validate a protocol (labctl.protocol.loader.load_text); never raises for bad input."""
    from labctl.units import format_quantity
    from labctl.validate import load_text

    res = load_text(text, file)
    p = res.protocol
    params: tuple[ParamInfo, ...] = ()
    if p is not None:
        params = tuple(
            ParamInfo(
                n,
                format_quantity(v.default),
                format_quantity(v.min) if v.min is not None else "",
                format_quantity(v.max) if v.max is not None else "",
                v.description or "",
            )
            for n, v in p.parameters.items()
        )
    return ProtocolCheck(
        file=file,
        text=text,
        ok=res.ok,
        diagnostics=tuple(res.diagnostics),
        protocol_id=p.id if p else "",
        title=p.title if p else "",
        version=p.version if p else "",
        first_day=p.first_day if p else 0,
        last_day=p.last_day if p else 0,
        parameters=params,
    )


@dataclass(frozen=True)
class NewRunRequest:
    """What the operator chose in the new-run dialog. ``start`` is local wall time (naive)."""

    file: str
    text: str
    name: str
    plates: int
    start: datetime
    timezone: str
    parameters: Mapping[str, str]
    reason: str = ""
    workcell_file: str = ""  # "": the simulated workcell
    workcell_text: str = ""  # the workcell file's text as validated


@dataclass(frozen=True)
class WorkcellCheck:
    """A workcell file read and validated for the new-run dialog: its name, zone, devices
    and operator hours (``error`` says what is wrong, with file:line:col, when it is not)."""

    file: str
    text: str
    name: str = ""
    timezone: str = ""
    devices: tuple[str, ...] = ()
    operator_hours: Mapping[int, tuple[time, time]] | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def check_workcell(path: str) -> WorkcellCheck:
    """Read and validate the workcell file at ``path`` (never raises for a bad file)."""
    from labctl.errors import LabctlError
    from labctl.workcell import parse_workcell

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        return WorkcellCheck(path, "", error=f"cannot read {path}: {exc.strerror or exc}")
    try:
        wc = parse_workcell(text, path)
    except LabctlError as exc:
        return WorkcellCheck(path, text, error=exc.user_message())
    return WorkcellCheck(
        path,
        text,
        name=wc.name,
        timezone=wc.timezone,
        devices=tuple(wc.devices),
        operator_hours=dict(wc.operator_hours) or None,
    )


#: Operator hours used to rank start dates when no workcell file gives them: weekdays
#: 08:00-18:00 (Monday = 0). A weekend manual task then costs a start date points.
DEFAULT_OPERATOR_HOURS: dict[int, tuple[time, time]] = {
    d: (time(8, 0), time(18, 0)) for d in range(5)
}


@dataclass(frozen=True)
class StartSuggestion:
    start: datetime
    penalty: float
    ok: bool
    note: str


def _load_ok(text: str, file: str, workcell: Any = None) -> Any:
    from labctl.validate import load_text

    res = load_text(text, file, workcell=workcell)
    if not res.ok or res.protocol is None:
        raise ProtocolError(res.diagnostics)
    return res.protocol


def suggest_start_dates(
    text: str,
    file: str,
    *,
    plates: int,
    parameters: Mapping[str, str],
    timezone: str,
    first: date,
    days: int = 14,
    at: time = time(9, 0),
    operator_hours: Mapping[int, tuple[time, time]] | None = None,
) -> list[StartSuggestion]:
    """Rank the ``days`` start dates from ``first`` (at ``at`` local) with
    :func:`labctl.schedule.suggest.suggest_starts` on the simulated workcell, best first."""
    from labctl.jobs import WorkcellRoles
    from labctl.plan.resolve import resolve
    from labctl.schedule.suggest import suggest_starts
    from labctl.workcell import OperatorCalendar

    proto = _load_ok(text, file)
    labels = [f"P{i + 1}" for i in range(plates)]
    mo = proto.timing.max_out_of_incubator
    max_out = float(mo.to("s").magnitude) if mo is not None else None

    def factory(start: datetime) -> Any:
        return resolve(proto, dict(parameters), plates=plates, start=start, timezone=timezone)

    candidates = [datetime.combine(first + timedelta(days=k), at) for k in range(days)]
    hours = DEFAULT_OPERATOR_HOURS if operator_hours is None else operator_hours
    # The simulated workcell keeps the run's own zone (training and dry runs have no other).
    scores = suggest_starts(
        factory,
        candidates,
        WorkcellRoles.simulated(labels),
        OperatorCalendar(dict(hours), timezone),
        timezone,
        max_out_s=max_out,
    )
    return [
        StartSuggestion(
            s.start,
            s.penalty,
            s.ok,
            "everything fits"
            if s.ok
            else s.reasons[0] + (f" (+{len(s.reasons) - 1} more)" if len(s.reasons) > 1 else ""),
        )
        for s in scores
    ]


def register_new_run(
    store: Store, clock: Clock, req: NewRunRequest, *, who: ConsoleUser, now: datetime
) -> int:
    """Register the run (labctl.engine.register_run on the chosen workcell file's roles, else
    the simulated workcell's, the protocol checked against that workcell) as
    ``who`` and queue its ``start`` command for the engine. Returns the run id.

    As ``labctl run``: ``who`` must be allowed to register a run (AuthError,
    PermissionDenied), and on a production database the protocol text must be released as
    it is (:func:`labctl.cli.user_cmds.require_released`, the same refusal). Raises
    ProtocolError, ParameterError or PlanError when the protocol or the choices do not make
    a plan. Nothing is written then. ``now``: wall-clock time, for the session check.
    """
    from labctl.cli.user_cmds import require_released
    from labctl.plan.resolve import resolve

    if not 1 <= req.plates <= 96:
        raise ConsoleInputError(f"plates must be between 1 and 96, not {req.plates}")
    authorize(store, who, Action.REGISTER_RUN, None, now=now)
    wc = None
    if req.workcell_text:
        from labctl.workcell import parse_workcell

        wc = parse_workcell(req.workcell_text, req.workcell_file)
    proto = _load_ok(req.text, req.file, wc)
    require_released(store, proto.id, proto.version, req.text, req.file)
    plan = resolve(
        proto, dict(req.parameters), plates=req.plates, start=req.start, timezone=req.timezone
    )
    labels = [f"P{i + 1}" for i in range(req.plates)]
    name = req.name.strip() or f"{proto.id} {plan.start:%Y-%m-%d}"
    with store.atomic():  # the run and its start command exist together or not at all
        return _register(store, clock, proto, plan, labels, name, req, who.name)


def _register(
    store: Store,
    clock: Clock,
    proto: Any,
    plan: Any,
    labels: list[str],
    name: str,
    req: NewRunRequest,
    actor: str,
) -> int:
    from labctl.engine import register_run
    from labctl.jobs import WorkcellRoles, climates

    wc_name, operators = "simulated", None
    roles = WorkcellRoles.simulated(labels)
    if req.workcell_text:
        # As labctl run --workcell: the plates get incubator slots no unfinished run holds.
        from labctl.cli.run_cmds import slots_in_use
        from labctl.workcell import parse_workcell

        wc = parse_workcell(req.workcell_text, req.workcell_file)
        taken = {d.name: slots_in_use(store, d.name) for d in wc.incubators()}
        roles = WorkcellRoles.from_workcell(wc, labels, taken_in=taken, climates=climates(plan))
        wc_name, operators = wc.name, wc.operator_calendar()
    run_id = register_run(
        store,
        clock,
        proto,
        plan,
        roles,
        name=name,
        workcell_name=wc_name,
        workcell_text=req.workcell_text,
        actor=actor,
        operators=operators,
    )
    store.insert_command(
        "start",
        actor=actor,
        run_id=run_id,
        reason=req.reason.strip() or "registered on the console",
    )
    return run_id
