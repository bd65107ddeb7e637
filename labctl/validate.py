"""Read a protocol file and check it completely: the format, then what its plan needs.

The order is the one a scientist fixes things in: structure (:mod:`labctl.protocol.loader`),
names and units, labware, days and stocks (:mod:`labctl.protocol.checks`,
:func:`labctl.plan.checks.stocks`); then a trial resolution with solvents and pipetting
volumes (:mod:`labctl.plan.checks`); and last, given a workcell, the environments its
incubators can hold.

One pass reports every problem it can: a mistake in one element does not hide the problems
of the others. Where an element is in error it is left out of the later steps (a factor
naming no compound is not dosed in the trial), and a later step says nothing more about an
element that already has an error (it would repeat the same mistake in other words). The
trial is skipped only where it cannot be sound: no usable culture, or a feed volume given by
a parameter that does not hold a volume. Nothing here raises for bad input: every problem is
a located diagnostic.
"""

from __future__ import annotations

from pathlib import Path

from labctl.errors import ProtocolError
from labctl.plan import checks as plan_checks
from labctl.protocol import checks as protocol_checks
from labctl.protocol import source
from labctl.protocol.diagnostics import Ctx, LoadResult
from labctl.protocol.loader import build
from labctl.protocol.model import Protocol

__all__ = ["LoadResult", "check", "load_file", "load_protocol", "load_text"]


def check(ctx: Ctx, p: Protocol, *, workcell: object | None = None) -> None:
    """Add every diagnostic across ``p``'s sections to ``ctx``, in the order above."""
    protocol_checks.names(ctx, p)
    if "culture" not in ctx.incomplete:
        errors = len(ctx.errors)
        protocol_checks.labware(ctx, p)
        if len(ctx.errors) > errors:
            ctx.incomplete.add("culture")  # a wrong vessel or volume: the trial would repeat it
    protocol_checks.days(ctx, p)
    plan_checks.parameter_bounds(ctx, p)
    failed = plan_checks.stocks(ctx, p)
    trial = plan_checks.trial_part(p, failed)
    # The trial follows each well through the whole schedule: a feed, medium, event or
    # culture left out for an error would change what it finds for everything after it.
    whole = not ctx.incomplete & {"culture", "schedule.media", "schedule.feeds", "schedule.events"}
    if trial is not None and whole:
        # The trial's findings about an element already in error are left out.
        taken = {(d.line, d.column) for d in ctx.errors}
        sub = Ctx(ctx.file)
        sub.value_locs = ctx.value_locs
        plan_checks.solvents_and_trial(sub, trial)
        ctx.diags.extend(d for d in sub.diags if (d.line, d.column) not in taken)
    if workcell is not None:
        protocol_checks.environment_vs_workcell(ctx, p, workcell)


def load_text(text: str, file: str = "<protocol>", *, workcell: object | None = None) -> LoadResult:
    """Parse, build and check a protocol held in ``text``. Never raises for bad input."""
    root, diags = source.parse(text, file)
    ctx = Ctx(file)
    ctx.diags.extend(diags)
    if root is None:
        return LoadResult(None, ctx.diags)
    proto = build(ctx, root, text)
    if proto is not None:
        check(ctx, proto, workcell=workcell)
    return LoadResult(proto if not ctx.has_errors else None, ctx.diags)


def load_file(path: str | Path, *, workcell: object | None = None) -> LoadResult:
    """Read and check a protocol file. Raises InputFileError only if it can't be read."""
    text = source.read_text(path)
    return load_text(text, str(path), workcell=workcell)


def load_protocol(path: str | Path, *, workcell: object | None = None) -> Protocol:
    """Load a protocol or raise ProtocolError with all of its diagnostics."""
    res = load_file(path, workcell=workcell)
    if not res.ok or res.protocol is None:
        raise ProtocolError(res.diagnostics)
    return res.protocol
