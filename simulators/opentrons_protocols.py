"""The simulated robot's stored protocols and their analyses, as robot-server shows them.

An analysis is started on the analysis service when a protocol is uploaded; the record here
holds its future and when the robot's clock says it is done (``analysis_delay_s`` after the
upload, plus any injected delay).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Set
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta
from typing import Any

from labctl.errors import InputFileError
from labctl.simulators.opentrons_analysis import AnalysisService
from labctl.simulators.opentrons_analysis_data import (
    Files,
    ProtocolAnalysis,
    ProtocolSourceInfo,
    content_hash,
)
from labctl.simulators.opentrons_refusals import Refusal, Refused
from labctl.simulators.opentrons_runs import Faults
from labctl.simulators.opentrons_wire import (
    earliest_command_time,
    earliest_time,
    error_occurrence,
    iso,
    new_id,
    rebase_commands,
    rebase_times,
)


@dataclasses.dataclass
class AnalysisRecord:
    """One analysis of a stored protocol.

    ``overlap``: pending is judged by the clock alone (``ready_at``), and whoever reads the
    result waits for it; otherwise it is also pending until the analysis has really ended.
    ``served`` is the completed analysis as first served (read-only afterwards).
    """

    id: str
    requested_at: datetime
    ready_at: datetime
    not_ok: bool  # the analysis_not_ok fault was on when it was requested
    overlap: bool
    future: Future[ProtocolAnalysis]
    served: dict[str, Any] | None = None

    def done(self, now: datetime) -> bool:
        """Whether to report the analysis completed at ``now``."""
        return now >= self.ready_at and (self.overlap or self.future.done())

    def summary(self, now: datetime) -> dict[str, Any]:
        """The analysis as ``analysisSummaries`` lists it."""
        if self.done(now):
            return {"id": self.id, "status": "completed"}
        return self.pending()

    def pending(self) -> dict[str, Any]:
        return {"id": self.id, "status": "pending", "runTimeParameters": []}

    def json(self, now: datetime) -> dict[str, Any]:
        """The analysis as ``GET /protocols/{id}/analyses/{analysisId}`` shows it."""
        if not self.done(now):
            return self.pending()
        if self.served is None:
            self.served = self._completed()
        return self.served  # read-only: it is only ever serialised

    def _completed(self) -> dict[str, Any]:
        result = self.future.result()
        errors = [dict(e) for e in result.errors]
        outcome = result.result
        if self.not_ok and not errors:
            at = self.requested_at
            inner = error_occurrence(
                "PythonException", "4000", "RuntimeError: injected analysis failure", at
            )
            errors = [
                error_occurrence(
                    "ExceptionInProtocolError",
                    "4000",
                    "RuntimeError [line 1]: injected analysis failure (simulator fault)",
                    at,
                    error_id=new_id(),
                    wrapped=[inner],
                )
            ]
            outcome = "not-ok"
        found = [
            t
            for t in (earliest_command_time(result.commands), earliest_time(errors))
            if t is not None
        ]
        shift = timedelta(0)
        if found:
            # Pretend the analysis ran right after the upload, on this simulator's clock.
            shift = self.requested_at + timedelta(milliseconds=1) - min(found)
        return {
            "id": self.id,
            "status": "completed",
            "result": outcome,
            "robotType": result.robot_type,
            "runTimeParameters": [dict(p) for p in result.run_time_parameters],
            "commands": rebase_commands(result.commands, shift),
            "labware": list(result.labware),
            "pipettes": list(result.pipettes),
            "modules": list(result.modules),
            "liquids": list(result.liquids),
            "errors": rebase_times(errors, shift),
        }


@dataclasses.dataclass
class ProtocolRecord:
    """A stored protocol: its files as read, and its analyses (the last one is current)."""

    id: str
    created_at: datetime
    info: ProtocolSourceInfo
    files: list[tuple[str, bytes]]
    key: str | None
    kind: str  # "standard" | "quick-transfer"
    analyses: list[AnalysisRecord]

    def upload_entry(self, files: Files, status: int) -> dict[str, Any]:
        """The action-log fields of an upload of ``files`` answered with ``status`` (201: this
        new protocol, 200: this stored one)."""
        return {
            "protocolId": self.id,
            "files": [n for n, _ in files],
            "contentHash": self.info.content_hash,
            "status": status,
        }

    def json(self, now: datetime, *, just_started: bool = False) -> dict[str, Any]:
        """The protocol as ``GET /protocols/{id}`` shows it; ``just_started`` shows its last
        analysis as pending, as the answer to the upload that started it does."""
        summaries = [a.summary(now) for a in self.analyses]
        if just_started:
            summaries[-1] = self.analyses[-1].pending()
        data: dict[str, Any] = {
            "id": self.id,
            "createdAt": iso(self.created_at),
            "files": [{"name": n, "role": r} for n, r in self.info.files],
            "protocolType": self.info.protocol_type,
            "robotType": self.info.robot_type,
            "metadata": dict(self.info.metadata),
            "analyses": [],
            "analysisSummaries": summaries,
        }
        if self.key is not None:
            data["key"] = self.key
        data["protocolKind"] = self.kind
        return data


@dataclasses.dataclass(frozen=True)
class Upload:
    """The answer to an upload: ``created`` (201) or the stored protocol's (200)."""

    created: bool
    body: dict[str, Any]


class ProtocolStore:
    """The robot's protocols, oldest first, and their analyses (robot-server's protocol and
    analysis stores, with its protocol auto-deleter).

    Not thread-safe: the robot calls it with its lock held, except :meth:`read` and
    :meth:`analyse`, which wait for the analysis service and are called without the lock.
    ``analysis_delay_s``, ``background_analysis`` and ``analysis_overlap``: see Robot.
    """

    def __init__(
        self,
        analysis: AnalysisService,
        *,
        analysis_delay_s: float,
        background_analysis: bool,
        analysis_overlap: bool,
        maximum_unused: int,
    ) -> None:
        self.analysis = analysis
        self.analysis_delay_s = analysis_delay_s
        self.background_analysis = background_analysis
        self.analysis_overlap = analysis_overlap
        self.maximum_unused = maximum_unused
        self.by_id: dict[str, ProtocolRecord] = {}

    def get(self, protocol_id: str) -> ProtocolRecord:
        """The protocol (Refusal PROTOCOL_NOT_FOUND if there is none)."""
        protocol = self.by_id.get(protocol_id)
        if protocol is None:
            # (str: a client may send a number where an id belongs.)
            raise Refusal(Refused.PROTOCOL_NOT_FOUND, str(protocol_id))
        return protocol

    def with_files(self, files: Files) -> ProtocolRecord | None:
        """The stored protocol of the same files (names and contents), if any."""
        named = content_hash(files)
        return next((p for p in self.by_id.values() if p.info.content_hash == named), None)

    def read(self, files: Files) -> ProtocolSourceInfo:
        """The files as read (Refusal FILES_INVALID or ANALYSIS_PROCESS_DIED). No lock."""
        try:
            return self.analysis.read(files)
        except InputFileError as exc:
            raise Refusal(Refused.FILES_INVALID, str(exc)) from exc
        except BrokenProcessPool as exc:
            raise Refusal(Refused.ANALYSIS_PROCESS_DIED, str(exc)) from exc

    def analyse(self, files: Files, values: Mapping[str, Any]) -> Future[ProtocolAnalysis]:
        """Start analysing ``files`` with run-time parameter ``values``; waited for unless
        ``background_analysis`` or ``analysis_overlap``. No lock."""
        future = self.analysis.submit(files, values)
        if not (self.background_analysis or self.analysis_overlap):
            future.result()  # analysis errors are results, so this only waits
        return future

    def record(
        self, future: Future[ProtocolAnalysis], now: datetime, faults: Faults
    ) -> AnalysisRecord:
        """A new analysis, requested at ``now`` under ``faults``."""
        delay = self.analysis_delay_s + faults.analysis_extra_delay_s
        return AnalysisRecord(
            id=new_id(),
            requested_at=now,
            ready_at=now + timedelta(seconds=delay),
            not_ok=faults.analysis_not_ok,
            overlap=self.analysis_overlap,
            future=future,
        )

    def add(self, protocol: ProtocolRecord, in_use: Set[str | None]) -> None:
        """Store a new protocol, first deleting the oldest ones no run links to (``in_use``)
        so that at most ``maximum_unused`` are unused."""
        unused = [pid for pid in self.by_id if pid not in in_use]
        excess = len(unused) + 1 - self.maximum_unused
        for pid in unused[: max(0, excess)]:
            del self.by_id[pid]
        self.by_id[protocol.id] = protocol

    def delete(self, protocol_id: str, in_use: Set[str | None]) -> None:
        """Delete the protocol (refused while a run links to it: ``in_use``)."""
        self.get(protocol_id)
        if protocol_id in in_use:
            raise Refusal(Refused.PROTOCOL_USED_BY_RUN, protocol_id)
        del self.by_id[protocol_id]

    def list_body(self, now: datetime) -> dict[str, Any]:
        """``GET /protocols``."""
        data = [p.json(now) for p in self.by_id.values()]
        return {"data": data, "meta": {"cursor": 0, "totalLength": len(data)}}

    def analyses_body(self, protocol_id: str, now: datetime) -> dict[str, Any]:
        """``GET /protocols/{id}/analyses``."""
        data = [a.json(now) for a in self.get(protocol_id).analyses]
        return {"data": data, "meta": {"cursor": 0, "totalLength": len(data)}}

    def analysis_body(self, protocol_id: str, analysis_id: str, now: datetime) -> dict[str, Any]:
        """``GET /protocols/{id}/analyses/{analysisId}``."""
        protocol = self.get(protocol_id)
        analysis = next((a for a in protocol.analyses if a.id == analysis_id), None)
        if analysis is None:
            raise Refusal(Refused.ANALYSIS_NOT_FOUND, analysis_id)
        return {"data": analysis.json(now)}
