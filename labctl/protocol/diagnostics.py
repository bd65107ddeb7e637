"""Diagnostics of one protocol file: the collector (Ctx), the result, and name hints.

Below both the loader and the checks of the protocol and its plan, so each can report
located problems without importing the others.
"""

from __future__ import annotations

import difflib

from labctl.errors import Diagnostic
from labctl.protocol import names, source
from labctl.protocol.model import Loc, Protocol
from labctl.protocol.source import Map, Node


class LoadResult:
    """The protocol (None when there were errors) and every diagnostic, in file order."""

    def __init__(self, protocol: Protocol | None, diagnostics: list[Diagnostic]) -> None:
        self.protocol = protocol
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.line, d.column))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return self.protocol is not None and not self.errors


class Ctx:
    """Collects diagnostics for one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.diags: list[Diagnostic] = []
        # Names declared per section ("compounds", "media", "parameters"), including those
        # whose entry had errors: a reference to one of those is not also "unknown".
        self.declared: dict[str, set[str]] = {}
        self.well_locs: dict[tuple[Loc, str], Loc] = {}  # (culture's loc, well) -> well's loc
        self.value_locs: dict[tuple[Loc, str], Loc] = {}  # (element's loc, key) -> value's loc
        # Parts the loader had to stand in for (e.g. "culture" when missing or invalid): the
        # checks that need them are skipped, the others still run.
        self.incomplete: set[str] = set()

    def error(self, at: Node | Loc, msg: str) -> None:
        self._add(at, "error", msg)

    def warning(self, at: Node | Loc, msg: str) -> None:
        self._add(at, "warning", msg)

    def _add(self, at: Node | Loc, sev: str, msg: str) -> None:
        where = at if isinstance(at, Loc) else loc(at)
        if where.via:
            msg += f" ({where.via})"
        d = Diagnostic(self.file, where.line, where.col, sev, source.one_line(msg))
        if d not in self.diags:
            self.diags.append(d)

    def note_values(self, owner: Loc, m: Map) -> None:
        """Keep where each value of ``m`` is written, under (owner, key): see :meth:`at`."""
        for k, v in m.entries:
            self.value_locs.setdefault((owner, k.text), loc(v))

    def at(self, owner: Loc, key: str) -> Loc:
        """Where the value of ``key`` of the element at ``owner`` is written (else ``owner``):
        a message about one value points at that value, not at the line its element starts."""
        return self.value_locs.get((owner, key), owner)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diags)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diags if d.severity == "error"]


def loc(node: Node) -> Loc:
    return Loc(node.mark.line, node.mark.col, node.mark.via)


def did_you_mean(word: str, options: list[str] | set[str]) -> str:
    """' (did you mean 'x'?)' for the closest option, or ''. An option that looks the same
    (:mod:`labctl.protocol.names`) comes first, with the character that differs."""
    twin = names.lookalike(word, options)
    if twin is not None:
        diff = names.difference(word, twin)
        why = "" if diff == "only letter case" else f" (they differ in {diff})"
        return f"; did you mean '{twin}'?{why}"
    close = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f"; did you mean '{close[0]}'?" if close else ""
