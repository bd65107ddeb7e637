"""Read a protocol file and check it completely: the format, then what its plan needs.

The order is the one a scientist fixes things in: structure (:mod:`labctl.protocol.loader`),
names and units (:mod:`labctl.protocol.checks`); then, if those hold, labware, days and
stocks; then, if those hold too, a trial resolution with solvents and pipetting volumes
(:mod:`labctl.plan.checks`); and last, given a workcell, the environments its incubators
can hold. Later steps are skipped after errors: they would only repeat the same mistakes
in other words. Nothing here raises for bad input: every problem is a located diagnostic.
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
    if ctx.has_errors:
        return
    protocol_checks.labware(ctx, p)
    protocol_checks.days(ctx, p)
    plan_checks.stocks(ctx, p)
    if ctx.has_errors:
        return
    plan_checks.solvents_and_trial(ctx, p)
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
